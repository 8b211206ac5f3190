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
#include "util/unique_fd.hpp"

namespace vstord {

class Daemon;

enum class ChrEvent { opened, closed };

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
  void attach(ChardevFrontend* fe);
  void detach() { frontend_ = nullptr; }
  ChardevFrontend* frontend() const { return frontend_; }

  // Starts the backend (listen, connect, open).  With a server that must
  // wait for its first client, completes once one is connected.
  virtual boost::asio::awaitable<void> open() = 0;
  // Queues data for the peer; dropped when there is no peer.
  virtual void write(std::string data) = 0;
  // The frontend can take input again.
  virtual void accept_input() {}
  virtual bool connected() const = 0;
  // Bytes queued by write() and not yet sent.
  virtual size_t pending_output() const { return 0; }
  // QEMU's ChardevInfo 'filename', e.g. "disconnected:unix:/p,server=on".
  virtual std::string filename() const = 0;
  // Yank: drop the network connection at once (socket backends only).
  virtual bool yankable() const { return false; }
  virtual void yank() {}
  // Sends what is queued, waiting at most 'limit'.
  virtual boost::asio::awaitable<void> drain(std::chrono::milliseconds limit) = 0;
  // Stops for good: closes sockets, removes files the backend created.
  virtual void close() = 0;

 protected:
  ChardevFrontend* frontend_ = nullptr;

 private:
  std::string id_;
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
  const std::map<std::string, std::shared_ptr<Chardev>>& all() const { return chardevs_; }
  void close_all();

 private:
  std::map<std::string, std::shared_ptr<Chardev>> chardevs_;
};

}  // namespace vstord
