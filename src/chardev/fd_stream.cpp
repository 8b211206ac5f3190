#include "chardev/fd_stream.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace vstord {

namespace asio = boost::asio;
using asio::use_awaitable;

namespace {

constexpr size_t kReadChunk = 64 * 1024;
// Descriptors accepted with one message; more are closed at once (QEMU's
// limit for socket chardevs).
constexpr size_t kMaxFdsPerMessage = 16;

bool is_regular(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

void set_max(asio::steady_timer& t) {
  t.expires_at(asio::steady_timer::time_point::max());
}

}  // namespace

FdStream::FdStream(asio::io_context& io, UniqueFd in, UniqueFd out, Options opts)
    : io_(io), opts_(std::move(opts)), write_wake_(io), input_wake_(io) {
  set_max(write_wake_);
  set_max(input_wake_);
  same_fd_ = in && !out;
  if (in) {
    if (is_regular(in.get())) {
      in_file_ = std::move(in);
      same_fd_ = false;
    } else {
      in_.emplace(io, in.release());
    }
  }
  if (out) {
    if (is_regular(out.get())) {
      out_file_ = std::move(out);
    } else {
      out_.emplace(io, out.release());
    }
  }
}

FdStream::~FdStream() {
  close();
}

void FdStream::start() {
  auto self = shared_from_this();
  if (in_ || in_file_) asio::co_spawn(io_, reader(self), asio::detached);
  if (out_ || same_fd_) asio::co_spawn(io_, writer(self), asio::detached);
}

void FdStream::write(std::string data) {
  if (closed_) return;
  if (out_file_) {
    // A regular file: the write does not wait for a peer.
    const char* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      ssize_t n = ::write(out_file_.get(), p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        spdlog::warn("character device output: {}", strerror(errno));
        return;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    return;
  }
  if (!out_ && !same_fd_) return;  // no output side: dropped
  out_bytes_ += data.size();
  out_queue_.push_back(std::move(data));
  write_wake_.cancel_one();
}

void FdStream::accept_input() {
  input_wake_.cancel();
}

void FdStream::close() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ec;
  if (in_) in_->close(ec);
  if (out_) out_->close(ec);
  in_file_.reset();
  out_file_.reset();
  write_wake_.cancel();
  input_wake_.cancel();
  end();
}

void FdStream::end() {
  if (ended_) return;
  ended_ = true;
  if (opts_.on_end) {
    // Not from inside a handler that may be tearing this stream down.
    asio::post(io_, [self = shared_from_this()] { self->opts_.on_end(); });
  }
}

asio::awaitable<void> FdStream::drain(std::chrono::milliseconds limit) {
  // The owner may drop the stream while this waits (the peer hangs up).
  auto self = shared_from_this();
  asio::steady_timer t(io_);
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!closed_ && !out_queue_.empty() && std::chrono::steady_clock::now() < deadline) {
    t.expires_after(std::chrono::milliseconds(5));
    co_await t.async_wait(asio::as_tuple(use_awaitable));
  }
}

asio::awaitable<void> FdStream::finish_after_eof() {
  // The peer stopped sending: finish what it asked for and send the
  // replies before closing (bounded, in case it never reads them).
  asio::steady_timer t(io_);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  auto busy = [&] {
    ChardevFrontend* fe = opts_.frontend ? opts_.frontend() : nullptr;
    return (fe && !fe->chr_idle()) || !out_queue_.empty();
  };
  while (!closed_ && std::chrono::steady_clock::now() < deadline && busy()) {
    t.expires_after(std::chrono::milliseconds(2));
    co_await t.async_wait(asio::as_tuple(use_awaitable));
  }
}

asio::awaitable<void> FdStream::reader(std::shared_ptr<FdStream> self) {
  std::vector<char> buf(kReadChunk);
  while (!self->closed_) {
    ChardevFrontend* fe = self->opts_.frontend ? self->opts_.frontend() : nullptr;
    // With no frontend at all, input is read and dropped, so that a peer
    // that leaves is noticed (a regular input file waits instead); a
    // frontend that cannot take input now makes the reader wait until told.
    if ((fe && !fe->chr_can_read()) || (!fe && self->in_file_)) {
      co_await self->input_wake_.async_wait(asio::as_tuple(use_awaitable));
      set_max(self->input_wake_);
      continue;
    }
    ssize_t n;
    std::vector<UniqueFd> fds;
    if (self->in_file_) {
      n = ::read(self->in_file_.get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // end of the input file: output goes on
      co_await asio::post(self->io_, use_awaitable);
    } else {
      auto [ec] = co_await self->in_->async_wait(asio::posix::descriptor_base::wait_read,
                                                 asio::as_tuple(use_awaitable));
      if (ec || self->closed_) break;
      int fd = self->in_->native_handle();
      if (self->opts_.recv_fds) {
        iovec iov{buf.data(), buf.size()};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
        n = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        // The kernel never joins bytes sent with descriptors to bytes sent
        // before them, so these descriptors belong to the first request
        // that these bytes complete.
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); n >= 0 && c; c = CMSG_NXTHDR(&msg, c)) {
          if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
          size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          const int* data = reinterpret_cast<const int*>(CMSG_DATA(c));
          for (size_t i = 0; i < count; ++i) {
            UniqueFd received(data[i]);
            if (fds.size() < kMaxFdsPerMessage) fds.push_back(std::move(received));
          }
        }
      } else {
        n = ::read(fd, buf.data(), buf.size());
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n == 0) {
        co_await self->finish_after_eof();
        break;
      }
      if (n < 0) break;
    }
    std::string_view data(buf.data(), static_cast<size_t>(n));
    std::string filtered;
    if (self->opts_.filter_input) {
      filtered = self->opts_.filter_input(data);
      data = filtered;
    }
    fe = self->opts_.frontend ? self->opts_.frontend() : nullptr;
    if (fe && (!data.empty() || !fds.empty())) fe->chr_read(data, std::move(fds));
  }
  // A regular input file that ended leaves the output working.
  if (!self->in_file_ || self->closed_) self->close();
}

asio::awaitable<void> FdStream::writer(std::shared_ptr<FdStream> self) {
  auto& sd = self->same_fd_ ? *self->in_ : *self->out_;
  while (!self->closed_) {
    if (self->out_queue_.empty()) {
      co_await self->write_wake_.async_wait(asio::as_tuple(use_awaitable));
      set_max(self->write_wake_);
      continue;
    }
    auto [ec, n] = co_await asio::async_write(sd, asio::buffer(self->out_queue_.front()),
                                              asio::as_tuple(use_awaitable));
    if (ec) break;
    self->out_bytes_ -= self->out_queue_.front().size();
    self->out_queue_.pop_front();
    // A frontend pausing input for backpressure may read again.
    self->input_wake_.cancel();
  }
  self->close();
}

}  // namespace vstord
