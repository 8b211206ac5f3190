// The 'socket' backend: a stream socket as server (one client at a time,
// further clients wait in the listen backlog, as in QEMU) or as client.
//
// A connection is a Session: a reader coroutine that feeds the frontend
// (using recvmsg so descriptors passed with SCM_RIGHTS are kept for getfd
// and add-fd) and a writer coroutine that drains the output queue.  When
// the reader ends, the session closes and, for a server, accepting resumes.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <deque>

#include "chardev/chardev.hpp"
#include "chardev/socket.hpp"
#include "daemon/daemon.hpp"

namespace vstord {

namespace asio = boost::asio;
using asio::use_awaitable;
using qapi::SocketAddressType;

namespace {

// Descriptors accepted with one message; more are closed at once (QEMU's
// limit for socket chardevs).
constexpr size_t kMaxFdsPerMessage = 16;
constexpr size_t kReadChunk = 64 * 1024;

struct Session {
  explicit Session(asio::io_context& io, int fd) : sock(io, fd), write_wake(io), input_wake(io) {
    write_wake.expires_at(asio::steady_timer::time_point::max());
    input_wake.expires_at(asio::steady_timer::time_point::max());
  }
  asio::posix::stream_descriptor sock;
  asio::steady_timer write_wake;
  asio::steady_timer input_wake;
  std::deque<std::string> out;
  size_t out_bytes = 0;
  std::string peer;  // for filename()
  bool closed = false;

  void close() {
    if (closed) return;
    closed = true;
    boost::system::error_code ec;
    sock.close(ec);
    write_wake.cancel();
    input_wake.cancel();
  }
};

class SocketChardev final : public Chardev {
 public:
  SocketChardev(Daemon& daemon, std::string id, const qapi::ChardevSocket& opts,
                const FdContext& fds)
      : Chardev(std::move(id)),
        daemon_(daemon),
        opts_(opts),
        addr_(socket_address_flatten(opts.addr)),
        server_(opts.server.value_or(true)),
        accept_wake_(daemon.io()) {
    accept_wake_.expires_at(asio::steady_timer::time_point::max());
    validate();
    if (server_) {
      ListeningSocket ls = socket_listen(addr_, fds);
      listen_cleanup_ = ls.cleanup;
      addr_ = ls.bound;
      listener_.emplace(daemon.io(), ls.fd.release());
    } else {
      connect_fd_ = socket_connect(addr_, fds);
    }
  }

  ~SocketChardev() override { close(); }

  asio::awaitable<void> open() override {
    auto self = std::static_pointer_cast<SocketChardev>(shared_from_this());
    if (!server_) {
      start_session(connect_fd_.release());
      co_return;
    }
    asio::co_spawn(daemon_.io(), accept_loop(self), asio::detached);
    if (opts_.wait.value_or(false)) {
      spdlog::info("waiting for connection on: {}", filename());
      fmt::print(stderr, "vstord: info: waiting for connection on: {}\n", filename());
      asio::steady_timer t(daemon_.io());
      while (!session_ && !closed_) {
        t.expires_after(std::chrono::milliseconds(20));
        co_await t.async_wait(asio::as_tuple(use_awaitable));
      }
    }
  }

  void write(std::string data) override {
    if (!session_ || session_->closed) return;
    session_->out_bytes += data.size();
    session_->out.push_back(std::move(data));
    session_->write_wake.cancel_one();
  }

  void accept_input() override {
    if (session_) session_->input_wake.cancel();
  }

  bool connected() const override { return session_ && !session_->closed; }

  size_t pending_output() const override { return session_ ? session_->out_bytes : 0; }

  std::string filename() const override {
    std::string addr = socket_address_to_string(addr_);
    if (opts_.telnet.value_or(false) && addr.starts_with("tcp:")) addr = "telnet:" + addr.substr(4);
    std::string srv = server_ ? ",server=on" : "";
    if (!connected()) return "disconnected:" + addr + srv;
    if (addr_.type() == SocketAddressType::inet) return addr + srv + " <-> " + session_->peer;
    return addr + srv;
  }

  asio::awaitable<void> drain(std::chrono::milliseconds limit) override {
    asio::steady_timer t(daemon_.io());
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (session_ && !session_->closed && !session_->out.empty() &&
           std::chrono::steady_clock::now() < deadline) {
      t.expires_after(std::chrono::milliseconds(5));
      co_await t.async_wait(asio::as_tuple(use_awaitable));
    }
  }

  bool yankable() const override { return true; }

  void yank() override {
    if (session_) session_->close();
  }

  void close() override {
    if (closed_) return;
    closed_ = true;
    if (session_) session_->close();
    if (listener_) {
      boost::system::error_code ec;
      listener_->close(ec);
    }
    accept_wake_.cancel();
    if (listen_cleanup_) ::unlink(listen_cleanup_->c_str());
  }

 private:
  void validate() const {
    if (addr_.type() == SocketAddressType::fd && (opts_.reconnect || opts_.reconnect_ms)) {
      qapi::fail("'reconnect' option is incompatible with 'fd' address type");
    }
    if (opts_.reconnect && opts_.reconnect_ms) {
      qapi::fail("'reconnect' and 'reconnect-ms' are mutually exclusive");
    }
    if (server_ && (opts_.reconnect || opts_.reconnect_ms)) {
      qapi::fail("'reconnect' option is incompatible with socket in server listen mode");
    }
    if (!server_ && opts_.websocket.value_or(false)) {
      qapi::fail("Websocket client is not implemented");
    }
    if (!server_ && opts_.wait) {
      qapi::fail("'wait' option is incompatible with socket in client connect mode");
    }
    if (opts_.tls_authz && !opts_.tls_creds) {
      qapi::fail("'tls_authz' option requires 'tls_creds' option");
    }
    if (opts_.tls_creds) qapi::fail("TLS for character devices is not supported yet");
    if (opts_.telnet.value_or(false) || opts_.tn3270.value_or(false) ||
        opts_.websocket.value_or(false)) {
      qapi::fail("telnet, tn3270 and websocket character devices are not supported yet");
    }
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<SocketChardev> self) {
    while (!self->closed_) {
      // One client at a time: wait while a session is open.
      while (self->session_ && !self->session_->closed && !self->closed_) {
        co_await self->accept_wake_.async_wait(asio::as_tuple(use_awaitable));
        self->accept_wake_.expires_at(asio::steady_timer::time_point::max());
      }
      if (self->closed_) break;
      auto [ec] = co_await self->listener_->async_wait(asio::posix::descriptor_base::wait_read,
                                                       asio::as_tuple(use_awaitable));
      if (self->closed_) break;
      if (ec) {
        spdlog::warn("chardev '{}': accept: {}", self->id(), ec.message());
        continue;
      }
      int fd = ::accept4(self->listener_->native_handle(), nullptr, nullptr,
                         SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
          spdlog::warn("chardev '{}': accept: {}", self->id(), strerror(errno));
          // Out of descriptors or memory: back off instead of spinning.
          asio::steady_timer t(self->daemon_.io());
          t.expires_after(std::chrono::milliseconds(100));
          co_await t.async_wait(asio::as_tuple(use_awaitable));
        }
        continue;
      }
      socket_apply_options(fd, self->addr_);
      self->start_session(fd);
    }
  }

  void start_session(int fd) {
    if (opts_.nodelay.value_or(false)) {
      int on = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    }
    auto s = std::make_shared<Session>(daemon_.io(), fd);
    try {
      if (addr_.type() == SocketAddressType::inet) {
        s->peer = socket_address_to_string(socket_peer_address(fd)).substr(4);
      }
    } catch (const qapi::Error&) {
    }
    session_ = s;
    auto self = std::static_pointer_cast<SocketChardev>(shared_from_this());
    asio::co_spawn(daemon_.io(), writer(self, s), asio::detached);
    asio::co_spawn(daemon_.io(), reader(self, s), asio::detached);
    if (frontend_) frontend_->chr_event(ChrEvent::opened);
  }

  static asio::awaitable<void> reader(std::shared_ptr<SocketChardev> self,
                                      std::shared_ptr<Session> s) {
    std::vector<char> buf(kReadChunk);
    while (!s->closed) {
      if (self->frontend_ && !self->frontend_->chr_can_read()) {
        co_await s->input_wake.async_wait(asio::as_tuple(use_awaitable));
        s->input_wake.expires_at(asio::steady_timer::time_point::max());
        continue;
      }
      auto [ec] = co_await s->sock.async_wait(asio::posix::descriptor_base::wait_read,
                                              asio::as_tuple(use_awaitable));
      if (ec || s->closed) break;
      iovec iov{buf.data(), buf.size()};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t n = ::recvmsg(s->sock.native_handle(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      // The kernel never joins bytes sent with descriptors to bytes sent
      // before them, so these descriptors belong to the first request that
      // these bytes complete.
      std::vector<UniqueFd> fds;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); n >= 0 && c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const int* data = reinterpret_cast<const int*>(CMSG_DATA(c));
        for (size_t i = 0; i < count; ++i) {
          UniqueFd fd(data[i]);
          if (fds.size() < kMaxFdsPerMessage) fds.push_back(std::move(fd));
        }
      }
      if (n == 0) {
        // The peer closed its sending side: finish what it asked for and
        // send the replies before closing (bounded, in case it never reads).
        co_await self->finish_after_eof(s);
        break;
      }
      if (n < 0) break;
      if (self->frontend_) {
        self->frontend_->chr_read(std::string_view(buf.data(), size_t(n)), std::move(fds));
      }
    }
    self->end_session(s);
  }

  static asio::awaitable<void> writer(std::shared_ptr<SocketChardev> self,
                                      std::shared_ptr<Session> s) {
    while (!s->closed) {
      if (s->out.empty()) {
        co_await s->write_wake.async_wait(asio::as_tuple(use_awaitable));
        s->write_wake.expires_at(asio::steady_timer::time_point::max());
        continue;
      }
      auto [ec, n] = co_await asio::async_write(s->sock, asio::buffer(s->out.front()),
                                                asio::as_tuple(use_awaitable));
      if (ec) break;
      s->out_bytes -= s->out.front().size();
      s->out.pop_front();
      // Output drained a little: a frontend pausing input for backpressure
      // may be able to read again.
      s->input_wake.cancel();
    }
    self->end_session(s);
  }

  asio::awaitable<void> finish_after_eof(std::shared_ptr<Session> s) {
    asio::steady_timer t(daemon_.io());
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!s->closed && std::chrono::steady_clock::now() < deadline &&
           ((frontend_ && !frontend_->chr_idle()) || !s->out.empty())) {
      t.expires_after(std::chrono::milliseconds(2));
      co_await t.async_wait(asio::as_tuple(use_awaitable));
    }
  }

  void end_session(const std::shared_ptr<Session>& s) {
    if (session_ != s) return;
    s->close();
    session_.reset();
    if (frontend_ && !closed_) frontend_->chr_event(ChrEvent::closed);
    accept_wake_.cancel();
  }

  Daemon& daemon_;
  qapi::ChardevSocket opts_;
  qapi::SocketAddress addr_;
  bool server_;
  std::optional<asio::posix::stream_descriptor> listener_;
  std::optional<std::string> listen_cleanup_;
  UniqueFd connect_fd_;
  std::shared_ptr<Session> session_;
  asio::steady_timer accept_wake_;
  bool closed_ = false;
};

}  // namespace

std::shared_ptr<Chardev> chardev_socket_new(Daemon& daemon, const std::string& id,
                                            const qapi::ChardevSocket& opts, const FdContext& fds) {
  return std::make_shared<SocketChardev>(daemon, id, opts, fds);
}

}  // namespace vstord
