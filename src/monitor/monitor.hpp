// A QMP monitor: the frontend of a character device that speaks QMP.
//
// Input is parsed as it arrives (JsonStream).  Requests sent with
// 'exec-oob' run at once; everything else (in-band commands, and parse
// errors, which are answered in order) joins a queue that one coroutine
// works through, so in-band replies keep request order while out-of-band
// replies overtake them.  Replies and events go out through the chardev's
// write queue, one whole message at a time, so they never interleave.
//
// Input is paused (backpressure) while the in-band queue is full or too
// much output waits for a client that does not read.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "chardev/chardev.hpp"
#include "monitor/json_stream.hpp"
#include "net/socket_address.hpp"
#include "qapi-types.hpp"
#include "qapi/dispatch.hpp"
#include "util/unique_fd.hpp"

namespace vstord {

class Daemon;

class Monitor final : public ChardevFrontend, public std::enable_shared_from_this<Monitor> {
 public:
  // In-band requests queued at most; then input pauses (QEMU's
  // QMP_REQ_QUEUE_LEN_MAX).
  static constexpr size_t kMaxQueued = 8;
  // Output bytes waiting for the client before input pauses.
  static constexpr size_t kMaxPendingOutput = 4 << 20;

  Monitor(Daemon& daemon, std::shared_ptr<Chardev> chr, qapi::MonitorOptions opts);
  ~Monitor() override;

  // Attaches to the chardev and starts the dispatcher.
  void start();

  bool command_mode() const { return command_mode_; }
  bool oob_enabled() const { return oob_enabled_; }
  // Called by qmp_capabilities.
  void enter_command_mode(bool oob);

  void send(const qapi::Json& message);
  // Sends an event (built once for all monitors) if this monitor is in
  // command mode; events are not delivered during negotiation.
  void send_event(const qapi::Json& event);

  // Descriptors stored with getfd, by name; taking one removes it.
  void store_fd(const std::string& name, UniqueFd fd);
  UniqueFd take_fd(const std::string& name);
  void close_fd(const std::string& name);
  // A descriptor that came with the command being run (SCM_RIGHTS).
  UniqueFd take_received_fd();

  const std::string& chardev_id() const { return chr_->id(); }

  // ChardevFrontend
  void chr_event(ChrEvent event) override;
  void chr_read(std::string_view data, std::vector<UniqueFd> fds) override;
  bool chr_can_read() override;
  bool chr_idle() override { return queue_.empty() && !busy_; }
  bool chr_be_change(const std::shared_ptr<Chardev>& chr) override {
    if (chr) chr_ = chr;  // the session goes on; a new peer gets a new greeting
    return true;
  }

 private:
  // A parsed request (or parse error) and the descriptors sent with it.
  struct Request {
    JsonStream::Message message;
    std::vector<UniqueFd> fds;
  };

  void on_message(JsonStream::Message m);
  boost::asio::awaitable<std::optional<qapi::Json>> execute(Request& req);
  boost::asio::awaitable<void> dispatch_loop();
  void reset_session();

  Daemon& daemon_;
  std::shared_ptr<Chardev> chr_;
  qapi::MonitorOptions opts_;
  JsonStream stream_;
  bool command_mode_ = false;
  bool oob_enabled_ = false;
  std::deque<Request> queue_;
  std::vector<UniqueFd> arrived_fds_;             // not yet given to a request
  std::vector<UniqueFd>* current_fds_ = nullptr;  // of the running command
  boost::asio::steady_timer queue_wake_;
  std::map<std::string, UniqueFd> named_fds_;
  bool stopped_ = false;
  bool busy_ = false;  // an in-band command is running
};

// For SocketAddress 'fd' in a command: descriptors are looked up by name
// among those the command's monitor got with getfd (numbers are refused
// inside a monitor command).
FdContext monitor_fd_context(qapi::CommandContext& ctx);

}  // namespace vstord
