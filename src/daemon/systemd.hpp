// systemd integration through libsystemd: readiness and status
// (sd_notify), the watchdog, and socket activation
// (sd_listen_fds_with_names).  Without NOTIFY_SOCKET and LISTEN_FDS in the
// environment every call here does nothing.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <map>
#include <memory>
#include <string>

#include "util/unique_fd.hpp"

namespace vstord {

// Sockets passed by socket activation, by FileDescriptorName.  Taken at
// start-up (LISTEN_FDS and LISTEN_PID are consumed and removed from the
// environment); the descriptors are close-on-exec from then on.  They
// also remain reachable by number (3, 4, ...) as any inherited descriptor.
class ActivatedSockets {
 public:
  void take_from_environment();
  // The socket named name, once; null if there is none by that name.
  UniqueFd take(const std::string& name);
  bool empty() const { return by_name_.empty(); }

 private:
  std::multimap<std::string, int> by_name_;
};

// The service manager's view of the daemon.
class ServiceNotifier {
 public:
  explicit ServiceNotifier(boost::asio::io_context& io) : watchdog_(io) {}
  // STATUS=text.
  void status(const std::string& text);
  // READY=1 with a status; starts the watchdog pings if WatchdogSec= is
  // set (WATCHDOG=1 at half the interval, from the main loop, so a stuck
  // loop stops them).
  void ready(const std::string& status);
  // STOPPING=1 with a status.
  void stopping(const std::string& status);

 private:
  void ping();
  boost::asio::steady_timer watchdog_;
  uint64_t watchdog_usec_ = 0;
};

}  // namespace vstord
