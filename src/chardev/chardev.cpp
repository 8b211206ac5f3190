#include "chardev/chardev.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>

#include "chardev/backends.hpp"
#include "daemon/daemon.hpp"
#include "net/open.hpp"
#include "qapi/error.hpp"

namespace vstord {

void Chardev::attach(ChardevFrontend* fe) {
  if (frontend_ && frontend_ != fe) qapi::fail("Device '{}' is in use", id_);
  frontend_ = fe;
  accept_input();  // input that waited for a frontend can flow now
}

void Chardev::write(std::string data) {
  if (logfd_) log(data);
  backend_write(std::move(data));
}

void Chardev::close() {
  close_backend();
  logfd_.reset();
}

void Chardev::open_log(Daemon& daemon, const qapi::ChardevCommon& common) {
  if (!common.logfile) return;
  int flags = O_WRONLY | O_CREAT | (common.logappend.value_or(false) ? O_APPEND : O_TRUNC);
  try {
    logfd_ = open_path(daemon, *common.logfile, flags, 0666);
  } catch (const qapi::Error& e) {
    // QEMU words it as creating the log.
    std::string msg = e.what();
    if (msg.starts_with("Could not open")) msg.replace(0, 14, "Could not create");
    throw qapi::Error(msg);
  }
  log_timestamps_ = common.logtimestamp.value_or(false);
}

// Everything the frontend sends is copied to the log, as QEMU logs it; with
// logtimestamp each line starts with an ISO 8601 UTC time.
void Chardev::log(std::string_view data) {
  std::string out;
  if (!log_timestamps_) {
    out = data;
  } else {
    for (char c : data) {
      if (log_at_line_start_) {
        auto now = std::chrono::system_clock::now();
        std::time_t t = std::chrono::system_clock::to_time_t(now);
        auto us =
            std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() %
            1000000;
        std::tm tm{};
        gmtime_r(&t, &tm);
        char buf[40];
        std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
        out += fmt::format("{}.{:06}Z ", buf, us);
        log_at_line_start_ = false;
      }
      out.push_back(c);
      if (c == '\n') log_at_line_start_ = true;
    }
  }
  const char* p = out.data();
  size_t left = out.size();
  while (left > 0) {
    ssize_t n = ::write(logfd_.get(), p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a full disk loses log lines, never device output
    p += n;
    left -= static_cast<size_t>(n);
  }
}

std::vector<std::string> chardev_backends_available() {
  return {"file", "serial", "parallel", "pipe",  "socket",  "udp",   "pty",
          "null", "mux",    "hub",      "stdio", "ringbuf", "memory"};
}

std::shared_ptr<Chardev> chardev_new(Daemon& daemon, const std::string& id,
                                     const qapi::ChardevBackend& backend, const FdContext& fds) {
  using K = qapi::ChardevBackendKind;
  std::shared_ptr<Chardev> chr;
  const qapi::ChardevCommon* common = nullptr;
  // Each branch's options derive from ChardevCommon.
  auto make = [&](auto&& created, const qapi::ChardevCommon& c) {
    chr = std::move(created);
    common = &c;
  };
  switch (backend.type()) {
    case K::socket: {
      const auto& o = backend.get<K::socket>().data;
      make(chardev_socket_new(daemon, id, o, fds), o);
      break;
    }
    case K::null: {
      const auto& o = backend.get<K::null>().data;
      make(chardev_null_new(id), o);
      break;
    }
    case K::ringbuf:
    case K::memory: {
      const auto& o = backend.type() == K::ringbuf ? backend.get<K::ringbuf>().data
                                                   : backend.get<K::memory>().data;
      make(chardev_ringbuf_new(id, o, backend.type() == K::memory), o);
      break;
    }
    case K::file: {
      const auto& o = backend.get<K::file>().data;
      make(chardev_file_new(daemon, id, o), o);
      break;
    }
    case K::pipe: {
      const auto& o = backend.get<K::pipe>().data;
      make(chardev_pipe_new(daemon, id, o), o);
      break;
    }
    case K::serial: {
      const auto& o = backend.get<K::serial>().data;
      make(chardev_serial_new(daemon, id, o, false), o);
      break;
    }
    case K::parallel: {
      const auto& o = backend.get<K::parallel>().data;
      make(chardev_serial_new(daemon, id, o, true), o);
      break;
    }
    case K::pty: {
      const auto& o = backend.get<K::pty>().data;
      make(chardev_pty_new(daemon, id, o), o);
      break;
    }
    case K::stdio: {
      const auto& o = backend.get<K::stdio>().data;
      make(chardev_stdio_new(daemon, id, o), o);
      break;
    }
    case K::udp: {
      const auto& o = backend.get<K::udp>().data;
      make(chardev_udp_new(daemon, id, o, fds), o);
      break;
    }
    case K::mux: {
      const auto& o = backend.get<K::mux>().data;
      make(chardev_mux_new(daemon, id, o), o);
      break;
    }
    case K::hub: {
      const auto& o = backend.get<K::hub>().data;
      make(chardev_hub_new(daemon, id, o), o);
      break;
    }
    default:
      // Backends for a guest or a display (msmouse, wctablet, braille,
      // testdev, vc) have nothing to attach to in a storage daemon.
      qapi::fail("'{}' is not a valid char driver name for vstord: it needs a guest or a display",
                 qapi::enum_name(backend.type()));
  }
  chr->open_log(daemon, *common);
  return chr;
}

void ChardevRegistry::add(std::shared_ptr<Chardev> chr) {
  if (chardevs_.contains(chr->id())) qapi::fail("Duplicate ID '{}' for chardev", chr->id());
  std::string id = chr->id();
  order_.insert(id);
  chardevs_.emplace(std::move(id), std::move(chr));
}

void ChardevRegistry::replace(std::shared_ptr<Chardev> chr) {
  chardevs_[chr->id()] = std::move(chr);
}

std::vector<std::shared_ptr<Chardev>> ChardevRegistry::qemu_order() const {
  std::vector<std::shared_ptr<Chardev>> out;
  auto keys = order_.keys();
  for (auto it = keys.rbegin(); it != keys.rend(); ++it) out.push_back(chardevs_.at(*it));
  return out;
}

std::shared_ptr<Chardev> ChardevRegistry::find(const std::string& id) const {
  auto it = chardevs_.find(id);
  return it == chardevs_.end() ? nullptr : it->second;
}

void ChardevRegistry::remove(const std::string& id) {
  auto it = chardevs_.find(id);
  if (it == chardevs_.end()) return;
  it->second->close();
  chardevs_.erase(it);
  order_.remove(id);
}

void ChardevRegistry::close_all() {
  for (auto& [id, chr] : chardevs_) chr->close();
}

}  // namespace vstord
