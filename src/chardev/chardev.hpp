// Character devices: a backend moves bytes to and from something (a socket,
// a file, a ring buffer); a frontend attached to it consumes them.  In this
// daemon the frontend is a QMP monitor.
//
// Backends run on the main io_context.  Input flows backend -> frontend
// through chr_read(), paced by chr_can_read(): when the frontend says no,
// the backend stops reading until the frontend calls accept_input().
// Output goes through write(), which queues and never blocks.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/socket_address.hpp"
#include "qapi-types.hpp"
#include "qapi/member_order.hpp"
#include "util/unique_fd.hpp"

namespace vstord {

class Daemon;
class Chardev;

// What a backend tells its frontend besides data.  'break_' is a serial
// break (telnet IAC BRK, chardev-send-break, the mux escape C-a b).
enum class ChrEvent { opened, closed, break_ };

class ChardevFrontend {
 public:
  virtual ~ChardevFrontend() = default;
  virtual void chr_event(ChrEvent event) = 0;
  // 'fds' are the descriptors that came with these bytes (SCM_RIGHTS).
  virtual void chr_read(std::string_view data, std::vector<UniqueFd> fds) = 0;
  virtual bool chr_can_read() = 0;
  // False while input already received is still being worked on; a peer
  // that closes its sending side still gets the replies to what it sent.
  virtual bool chr_idle() { return true; }
  // chardev-change gives this frontend a new backend (with null: only asks
  // whether it can move); false when it cannot (QEMU: "does not support
  // chardev hotswap").
  virtual bool chr_be_change(const std::shared_ptr<Chardev>&) { return false; }
  // Whether this frontend counts as open in query-chardev (a mux only
  // while it has frontends of its own).
  virtual bool chr_fe_open() const { return true; }
};

class Chardev : public std::enable_shared_from_this<Chardev> {
 public:
  explicit Chardev(std::string id) : id_(std::move(id)) {}
  virtual ~Chardev() = default;
  Chardev(const Chardev&) = delete;
  Chardev& operator=(const Chardev&) = delete;

  const std::string& id() const { return id_; }

  // One frontend at a time; attaching a second is refused as QEMU refuses
  // it ("Device 'x' is in use").
  // (mux takes several frontends and overrides these.)
  virtual void attach(ChardevFrontend* fe);
  virtual void detach(ChardevFrontend* fe) {
    if (frontend_ == fe) frontend_ = nullptr;
  }
  // The frontend input goes to (for mux: the focused one).
  ChardevFrontend* frontend() const { return frontend_; }

  // Output from the frontend: copied to the logfile, then sent (queued;
  // dropped while there is no peer).
  void write(std::string data);

  // Starts the backend (listen, connect, open).  With a server that must
  // wait for its first client, completes once one is connected.  Throws
  // qapi::Error when the backend cannot start.
  virtual boost::asio::awaitable<void> open() { co_return; }
  // The frontend can take input again.
  virtual void accept_input() {}
  // Whether a peer is there (for sockets: a client is connected).
  virtual bool connected() const { return true; }
  // Bytes queued by write() and not yet sent.
  virtual size_t pending_output() const { return 0; }
  // QEMU's ChardevInfo 'filename', e.g. "disconnected:unix:/p,server=on".
  virtual std::string filename() const = 0;
  // Yank: drop the network connection at once (socket backends only).
  virtual bool yankable() const { return false; }
  virtual void yank() {}
  // Sends what is queued, waiting at most 'limit'.
  virtual boost::asio::awaitable<void> drain(std::chrono::milliseconds) { co_return; }
  // Stops for good: closes descriptors, removes files the backend created,
  // and gives back descriptors borrowed from fd sets.
  void close();
  // Whether chardev-change may replace this device (not a mux, as in QEMU).
  virtual bool replaceable() const { return true; }
  // What chardev-add returns (the pty path for 'pty').
  virtual qapi::ChardevReturn info() const { return {}; }
  // Tells the frontend of an event (also used by chardev-send-break).
  void send_event(ChrEvent event) {
    if (frontend_) frontend_->chr_event(event);
  }

  // The logfile options every backend takes (ChardevCommon).
  void open_log(Daemon& daemon, const qapi::ChardevCommon& common);

 protected:
  virtual void backend_write(std::string data) = 0;
  virtual void close_backend() {}

  ChardevFrontend* frontend_ = nullptr;

 private:
  void log(std::string_view data);

  std::string id_;
  UniqueFd logfd_;
  bool log_timestamps_ = false;
  bool log_at_line_start_ = true;
};

// The backends this build can create, for "--chardev help" and
// query-chardev-backends.
std::vector<std::string> chardev_backends_available();

// Creates a backend from its QAPI description.  'fds' decides how 'fd'
// socket addresses are resolved (command line or monitor command).
std::shared_ptr<Chardev> chardev_new(Daemon& daemon, const std::string& id,
                                     const qapi::ChardevBackend& backend, const FdContext& fds);

class ChardevRegistry {
 public:
  void add(std::shared_ptr<Chardev> chr);
  std::shared_ptr<Chardev> find(const std::string& id) const;
  bool contains(const std::string& id) const { return chardevs_.contains(id); }
  // Closes the device and forgets it.
  void remove(const std::string& id);
  // Puts 'chr' in the place of the device with its id (chardev-change).
  void replace(std::shared_ptr<Chardev> chr);
  // The devices in the order QEMU lists them (query-chardev): its QOM
  // container's hash table order, reversed.
  std::vector<std::shared_ptr<Chardev>> qemu_order() const;
  const std::map<std::string, std::shared_ptr<Chardev>>& all() const { return chardevs_; }
  void close_all();

 private:
  std::map<std::string, std::shared_ptr<Chardev>> chardevs_;
  qapi::GHashOrder order_;
};

}  // namespace vstord
