#include "daemon/systemd.hpp"

#include <fcntl.h>
#include <systemd/sd-daemon.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>

namespace vstord {

void ActivatedSockets::take_from_environment() {
  char** names = nullptr;
  int n = sd_listen_fds_with_names(1, &names);
  if (n < 0) {
    spdlog::warn("socket activation: {}", strerror(-n));
    return;
  }
  for (int i = 0; i < n; ++i) {
    int fd = SD_LISTEN_FDS_START + i;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    std::string name = names && names[i] ? names[i] : "unknown";
    if (by_name_.contains(name)) {
      // An address names one socket: the others of that name stay unused.
      spdlog::warn(
          "socket activation: several sockets are named '{}'; fd {} can only be used "
          "by number",
          name, fd);
    }
    by_name_.emplace(name, fd);
    spdlog::info("socket activation: fd {} named '{}'", fd, name);
  }
  if (names) {
    for (int i = 0; i < n; ++i) std::free(names[i]);
    std::free(names);
  }
}

UniqueFd ActivatedSockets::take(const std::string& name) {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return UniqueFd();
  int fd = it->second;
  by_name_.erase(it);
  return UniqueFd(fd);
}

void ServiceNotifier::status(const std::string& text) {
  sd_notifyf(0, "STATUS=%s", text.c_str());
}

void ServiceNotifier::ready(const std::string& status) {
  sd_notifyf(0, "READY=1\nSTATUS=%s", status.c_str());
  if (sd_watchdog_enabled(0, &watchdog_usec_) > 0 && watchdog_usec_ > 0) ping();
}

void ServiceNotifier::stopping(const std::string& status) {
  watchdog_.cancel();
  sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status.c_str());
}

void ServiceNotifier::ping() {
  sd_notify(0, "WATCHDOG=1");
  watchdog_.expires_after(std::chrono::microseconds(watchdog_usec_ / 2));
  watchdog_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) ping();
  });
}

}  // namespace vstord
