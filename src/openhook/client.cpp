#include "openhook/client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <future>
#include <vector>

#include "openhook/wire.hpp"
#include "qapi/error.hpp"

namespace vstord::openhook {

namespace {

Result failure(int error, std::string why) {
  Result r;
  r.error = error;
  r.why = std::move(why);
  return r;
}

}  // namespace

OpenHook::OpenHook(std::chrono::milliseconds timeout)
    : timeout_(timeout), wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!wake_fd_) throw std::system_error(errno, std::generic_category(), "eventfd");
  thread_ = std::thread([this] { run(); });
}

OpenHook::~OpenHook() {
  {
    std::lock_guard guard(lock_);
    stopping_ = true;
  }
  wake();
  thread_.join();
  // Anything still waiting hears that the daemon is going away.
  for (auto& [serial, p] : pending_) {
    p.done(failure(ECANCELED, "open hook: the daemon is shutting down"));
  }
}

void OpenHook::check_socket(int sock) {
  int domain = 0, type = 0;
  socklen_t len = sizeof(int);
  if (getsockopt(sock, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX ||
      getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) {
    qapi::fail("The open hook needs a unix stream socket");
  }
}

void OpenHook::attach(UniqueFd sock) {
  check_socket(sock.get());
  // A broker that stops reading must not block the daemon for longer than
  // it may take to answer.
  timeval tv{long(timeout_.count() / 1000), long(timeout_.count() % 1000 * 1000)};
  setsockopt(sock.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  fcntl(sock.get(), F_SETFD, FD_CLOEXEC);
  {
    std::lock_guard guard(lock_);
    if (sock_) qapi::fail("An open-hook broker is attached already");
    sock_ = std::make_shared<UniqueFd>(std::move(sock));
    ++generation_;
  }
  wake();
  spdlog::info("open hook: broker attached");
}

bool OpenHook::attached() const {
  std::lock_guard guard(lock_);
  return bool(sock_);
}

size_t OpenHook::in_flight() const {
  std::lock_guard guard(lock_);
  return pending_.size();
}

std::optional<std::string> OpenHook::last_error() const {
  std::lock_guard guard(lock_);
  return last_error_;
}

void OpenHook::open(const std::string& path, int flags, mode_t mode, Done done) {
  std::unique_lock lock(lock_);
  if (!sock_) {
    std::string why = "open hook: no broker is attached";
    if (last_error_) why += " (" + *last_error_ + ")";
    lock.unlock();
    done(failure(ENOTCONN, why));
    return;
  }
  OpenRequest req{uint32_t(flags & ~O_CLOEXEC), uint32_t(mode), path};
  std::vector<uint8_t> msg = encode_open_request(next_serial_, req);
  if (msg.empty()) {
    lock.unlock();
    done(failure(ENAMETOOLONG, "File name too long"));
    return;
  }
  uint32_t serial = next_serial_++;
  if (next_serial_ == 0) next_serial_ = 1;
  pending_[serial] = Pending{path, std::chrono::steady_clock::now() + timeout_, std::move(done)};
  // Sent without the state lock, so that replies are read meanwhile; the
  // socket stays open while this holds it, even if the broker is dropped.
  std::shared_ptr<UniqueFd> sock = sock_;
  uint64_t generation = generation_;
  lock.unlock();
  wake();  // a new deadline
  int ret;
  {
    std::lock_guard sending(send_lock_);
    ret = send_message(sock->get(), msg);
  }
  if (ret < 0) {
    lock.lock();
    if (sock_ && generation == generation_) {
      lose(lock, fmt::format("sending to the broker failed: {}", std::strerror(-ret)));
    }
  }
}

Result OpenHook::open_sync(const std::string& path, int flags, mode_t mode) {
  auto promise = std::make_shared<std::promise<Result>>();
  std::future<Result> future = promise->get_future();
  open(path, flags, mode, [promise](Result r) { promise->set_value(std::move(r)); });
  return future.get();
}

void OpenHook::wake() {
  uint64_t one = 1;
  (void)!::write(wake_fd_.get(), &one, sizeof(one));
}

void OpenHook::run() {
  std::unique_lock lock(lock_);
  while (!stopping_) {
    int timeout_ms = -1;
    auto now = std::chrono::steady_clock::now();
    for (const auto& [serial, p] : pending_) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(p.deadline - now).count();
      timeout_ms = timeout_ms < 0 ? int(std::max<int64_t>(left, 0))
                                  : std::min(timeout_ms, int(std::max<int64_t>(left, 0)));
    }
    std::shared_ptr<UniqueFd> sock = sock_;
    uint64_t generation = generation_;
    pollfd fds[2] = {{wake_fd_.get(), POLLIN, 0}, {sock ? sock->get() : -1, POLLIN, 0}};
    lock.unlock();
    int n = ::poll(fds, 2, timeout_ms);
    lock.lock();
    if (n < 0) continue;  // EINTR; deadlines are checked again below
    if (fds[0].revents) {
      uint64_t count;
      (void)!::read(wake_fd_.get(), &count, sizeof(count));
    }
    if (sock && fds[1].revents) {
      // One reply at a time, read without the lock (a broker that stops
      // halfway holds up nobody but this thread); if the broker changed
      // meanwhile, what was read is dropped.
      std::vector<uint8_t> msg;
      std::vector<UniqueFd> got;
      lock.unlock();
      RecvStatus st = recv_message(sock->get(), msg, got, int(timeout_.count()));
      lock.lock();
      if (generation != generation_ || !sock_) continue;
      Header h;
      int32_t result = 0;
      if (st == RecvStatus::closed) {
        lose(lock, "the broker closed the connection");
      } else if (st == RecvStatus::timeout) {
        lose(lock, "the broker sent part of a reply and stopped");
      } else if (st != RecvStatus::ok || !decode_header(msg, h) || h.command != kCommandOpen ||
                 !decode_open_reply(msg, result)) {
        lose(lock, "the broker sent a malformed reply");
      } else if (auto it = pending_.find(h.serial); it == pending_.end()) {
        spdlog::warn("open hook: reply for unknown serial {} ignored", h.serial);
      } else {
        Pending p = std::move(it->second);
        pending_.erase(it);
        Result r;
        if (result == 0 && got.size() == 1) {
          r.fd = std::move(got[0]);
        } else if (result == 0) {
          r = failure(EPROTO, got.empty() ? "open hook: the broker reported success but sent no "
                                            "descriptor"
                                          : "open hook: the broker sent more than one descriptor");
        } else if (result < 0 && result > -4096) {
          r = failure(-result, std::strerror(-result));
        } else {
          r = failure(EPROTO, fmt::format("open hook: the broker answered {}", result));
        }
        lock.unlock();
        p.done(std::move(r));
        lock.lock();
      }
    }
    expire(lock);
  }
}

void OpenHook::expire(std::unique_lock<std::mutex>& lock) {
  auto now = std::chrono::steady_clock::now();
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (it->second.deadline > now) continue;
    Pending p = std::move(it->second);
    pending_.erase(it);
    auto secs = std::chrono::duration<double>(timeout_).count();
    uint64_t generation = generation_;
    lock.unlock();
    p.done(
        failure(ETIMEDOUT, fmt::format("open hook: the broker did not answer within {} s", secs)));
    lock.lock();
    // A broker that hangs would make every open wait as long: drop it
    // (unless a new one was attached meanwhile).
    if (sock_ && generation == generation_) {
      lose(lock, fmt::format("the broker did not answer within {} s", secs));
    }
    return;
  }
}

void OpenHook::lose(std::unique_lock<std::mutex>& lock, const std::string& reason) {
  // Wakes a sender blocked on a broker that does not read; the descriptor
  // closes once nobody holds it.
  if (sock_) ::shutdown(sock_->get(), SHUT_RDWR);
  sock_.reset();
  ++generation_;
  last_error_ = reason;
  std::map<uint32_t, Pending> failed = std::move(pending_);
  pending_.clear();
  spdlog::warn("open hook: broker dropped: {}", reason);
  lock.unlock();
  for (auto& [serial, p] : failed) p.done(failure(EPIPE, "open hook: " + reason));
  if (on_lost) on_lost(reason);
  lock.lock();
}

}  // namespace vstord::openhook
