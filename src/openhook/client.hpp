// Delegated opens: the daemon's side of the open hook.  With
// --open-hook-fd every path the daemon would open() (net/open.hpp) is
// asked of a broker process over a unix stream socket, in the messages of
// open_hook.x; the broker answers with a result and, on success, the
// opened descriptor.
//
// Requests may be in flight together: each has a serial, and replies are
// matched by it in any order.  One thread of the hook's own reads the
// replies and keeps the deadlines.  A broker that breaks the protocol,
// stops answering (the time-out) or goes away is dropped: the requests in
// flight fail, the loss is reported (on_lost), and later opens fail at
// once until a new connection is attached (open-hook-attach).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "util/unique_fd.hpp"

namespace vstord::openhook {

// The outcome of one delegated open: a descriptor, or an errno with the
// words for "Could not open 'PATH': WORDS".
struct Result {
  UniqueFd fd;
  int error = 0;
  std::string why;
};

class OpenHook {
 public:
  using Done = std::function<void(Result)>;

  explicit OpenHook(std::chrono::milliseconds timeout);
  ~OpenHook();
  OpenHook(const OpenHook&) = delete;
  OpenHook& operator=(const OpenHook&) = delete;

  // Takes a connection to a broker, replacing a lost one.  Throws
  // qapi::Error if sock is not a unix stream socket or a broker is
  // attached already.
  void attach(UniqueFd sock);
  // Throws qapi::Error unless sock is a unix stream socket.
  static void check_socket(int sock);

  // Asks the broker to open path.  done runs exactly once, on the hook's
  // thread or (when no broker is attached) at once on the caller's.
  void open(const std::string& path, int flags, mode_t mode, Done done);
  // The same, waiting for the answer (at most the time-out).
  Result open_sync(const std::string& path, int flags, mode_t mode);

  bool attached() const;
  size_t in_flight() const;
  std::chrono::milliseconds timeout() const { return timeout_; }
  // Why the last broker was dropped, if one was.
  std::optional<std::string> last_error() const;

  // Called on the hook's thread when a broker is dropped, with the reason.
  std::function<void(const std::string&)> on_lost;

 private:
  struct Pending {
    std::string path;
    std::chrono::steady_clock::time_point deadline;
    Done done;
  };

  void run();
  // Fails the first request past its deadline and drops the broker.
  void expire(std::unique_lock<std::mutex>& lock);
  // Drops the broker; fails every request in flight.  Called with lock_
  // held; releases it while running callbacks.
  void lose(std::unique_lock<std::mutex>& lock, const std::string& reason);
  void wake();

  const std::chrono::milliseconds timeout_;
  mutable std::mutex lock_;         // the state below
  std::mutex send_lock_;            // one request on the socket at a time
  std::shared_ptr<UniqueFd> sock_;  // the broker, while attached
  UniqueFd wake_fd_;                // eventfd: a new broker, or stop
  uint32_t next_serial_ = 1;
  uint64_t generation_ = 0;  // brokers attached so far
  std::map<uint32_t, Pending> pending_;
  std::optional<std::string> last_error_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace vstord::openhook
