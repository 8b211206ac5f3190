// The 'socket' backend: a stream socket as server (one client at a time;
// further clients wait in the listen backlog, as in QEMU) or as client
// (optionally reconnecting).  Each connection is an FdStream; descriptors
// passed with SCM_RIGHTS travel with the bytes they came with.  With
// 'telnet', IAC sequences are taken out of the input (IAC BRK becomes a
// break) and 0xFF bytes of output are escaped.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "chardev/backends.hpp"
#include "chardev/fd_stream.hpp"
#include "chardev/websocket.hpp"
#include "daemon/daemon.hpp"
#include "qapi/error.hpp"

namespace vstord {

namespace asio = boost::asio;
using asio::use_awaitable;
using qapi::SocketAddressType;

namespace {

constexpr unsigned char IAC = 255, SB = 250, SE = 240, BRK = 243, WILL = 251, WONT = 252, DO = 253,
                        DONT = 254;

// Strips telnet commands from input, keeping state across reads.
class TelnetFilter {
 public:
  std::string filter(std::string_view in, bool& got_break) {
    std::string out;
    for (char ch : in) {
      auto c = static_cast<unsigned char>(ch);
      switch (state_) {
        case State::data:
          if (c == IAC) {
            state_ = State::iac;
          } else {
            out.push_back(ch);
          }
          break;
        case State::iac:
          if (c == IAC) {
            out.push_back(ch);  // an escaped 0xFF
            state_ = State::data;
          } else if (c == SB) {
            state_ = State::sub;
          } else if (c == WILL || c == WONT || c == DO || c == DONT) {
            state_ = State::option;
          } else {
            if (c == BRK) got_break = true;
            state_ = State::data;
          }
          break;
        case State::option: state_ = State::data; break;
        case State::sub:
          if (c == IAC) state_ = State::sub_iac;
          break;
        case State::sub_iac: state_ = c == SE ? State::data : State::sub; break;
      }
    }
    return out;
  }

 private:
  enum class State { data, iac, option, sub, sub_iac } state_ = State::data;
};

std::string telnet_escape(std::string data) {
  if (data.find('\xff') == std::string::npos) return data;
  std::string out;
  out.reserve(data.size() + 8);
  for (char c : data) {
    out.push_back(c);
    if (static_cast<unsigned char>(c) == IAC) out.push_back(c);
  }
  return out;
}

class SocketChardev final : public Chardev {
 public:
  SocketChardev(Daemon& daemon, std::string id, const qapi::ChardevSocket& opts,
                const FdContext& fds)
      : Chardev(std::move(id)),
        daemon_(daemon),
        opts_(opts),
        addr_(socket_address_flatten(opts.addr)),
        server_(opts.server.value_or(true)),
        wake_(daemon.io()) {
    wake_.expires_at(asio::steady_timer::time_point::max());
    validate();
    if (opts.reconnect_ms) {
      reconnect_ = std::chrono::milliseconds(*opts.reconnect_ms);
    } else if (opts.reconnect) {
      reconnect_ = std::chrono::seconds(*opts.reconnect);
    }
    if (server_) {
      ListeningSocket ls = socket_listen(addr_, fds);
      listen_cleanup_ = ls.cleanup;
      struct stat st;
      if (ls.cleanup && ::stat(ls.cleanup->c_str(), &st) == 0)
        socket_file_ = {st.st_dev, st.st_ino};
      addr_ = ls.bound;
      listener_.emplace(daemon.io(), ls.fd.release());
    } else if (addr_.type() == SocketAddressType::fd) {
      // A passed descriptor is taken now, while the monitor command that
      // named it runs.
      connect_fd_ = socket_connect(addr_, fds);
    }
  }

  ~SocketChardev() override { close(); }

  asio::awaitable<void> open() override {
    auto self = std::static_pointer_cast<SocketChardev>(shared_from_this());
    if (!server_) {
      if (!connect_fd_ && reconnect_.count() == 0) {
        // Without reconnection the first connection must work, as in QEMU;
        // it is made without blocking the daemon.
        connect_fd_ = co_await socket_connect_async(daemon_.io(), addr_, FdContext{});
      }
      if (connect_fd_) start_session(connect_fd_.release());
      if (reconnect_.count() > 0)
        asio::co_spawn(daemon_.io(), reconnect_loop(self), asio::detached);
      co_return;
    }
    asio::co_spawn(daemon_.io(), accept_loop(self), asio::detached);
    if (opts_.wait.value_or(false)) {
      fmt::print(stderr, "vstord: info: waiting for connection on: {}\n", filename());
      asio::steady_timer t(daemon_.io());
      while (!session_ && !closed_) {
        t.expires_after(std::chrono::milliseconds(20));
        co_await t.async_wait(asio::as_tuple(use_awaitable));
      }
    }
  }

  void accept_input() override {
    if (session_) session_->accept_input();
  }
  bool connected() const override { return session_ && !session_->closed(); }
  size_t pending_output() const override { return session_ ? session_->pending_output() : 0; }

  std::string filename() const override {
    std::string addr = socket_address_to_string(addr_);
    if (opts_.telnet.value_or(false) && addr.starts_with("tcp:")) addr = "telnet:" + addr.substr(4);
    std::string srv = server_ ? ",server=on" : "";
    if (!connected()) return "disconnected:" + addr + srv;
    if (addr_.type() == SocketAddressType::inet) {
      // A client shows its own end first, as QEMU does.
      std::string here =
          server_ ? addr : (opts_.telnet.value_or(false) ? "telnet:" : "tcp:") + local_;
      return here + srv + " <-> " + peer_;
    }
    return addr + srv;
  }

  bool yankable() const override { return true; }
  void yank() override {
    if (session_) session_->close();
  }

  asio::awaitable<void> drain(std::chrono::milliseconds limit) override {
    if (session_) co_await session_->drain(limit);
  }

  void close_backend() override {
    if (closed_) return;
    closed_ = true;
    if (session_) session_->close();
    if (listener_) {
      boost::system::error_code ec;
      listener_->close(ec);
    }
    wake_.cancel();
    // Remove the socket file only if it is still ours: chardev-change may
    // have bound a new socket at the same path.
    struct stat st;
    if (listen_cleanup_ && ::stat(listen_cleanup_->c_str(), &st) == 0 &&
        std::pair(st.st_dev, st.st_ino) == socket_file_) {
      ::unlink(listen_cleanup_->c_str());
    }
  }

 protected:
  void backend_write(std::string data) override {
    if (!connected()) return;
    if (opts_.telnet.value_or(false) || opts_.tn3270.value_or(false)) {
      data = telnet_escape(std::move(data));
    }
    session_->write(std::move(data));
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
    if ((opts_.reconnect && *opts_.reconnect < 0) ||
        (opts_.reconnect_ms && *opts_.reconnect_ms < 0)) {
      qapi::fail("'reconnect' must not be negative");
    }
    if (opts_.tls_creds) qapi::fail("TLS for character devices is not supported yet");
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<SocketChardev> self) {
    while (!self->closed_) {
      // One client at a time: wait while a session is open.
      while (self->connected() && !self->closed_) {
        co_await self->wake_.async_wait(asio::as_tuple(use_awaitable));
        self->wake_.expires_at(asio::steady_timer::time_point::max());
      }
      if (self->closed_) break;
      auto [ec] = co_await self->listener_->async_wait(asio::posix::descriptor_base::wait_read,
                                                       asio::as_tuple(use_awaitable));
      if (self->closed_) break;
      if (ec) continue;
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

  // A client that reconnects: try, serve while connected, wait, repeat.
  static asio::awaitable<void> reconnect_loop(std::shared_ptr<SocketChardev> self) {
    bool reported = false;
    bool was_connected = self->connected();
    asio::steady_timer t(self->daemon_.io());
    while (!self->closed_) {
      if (was_connected && !self->connected()) {
        // Lost: wait the whole interval before trying again.
        was_connected = false;
        t.expires_after(self->reconnect_);
        co_await t.async_wait(asio::as_tuple(use_awaitable));
        continue;
      }
      if (!self->connected()) {
        std::string error;
        try {
          UniqueFd fd = co_await socket_connect_async(self->daemon_.io(), self->addr_, FdContext{});
          if (self->closed_) break;
          self->start_session(fd.release());
          was_connected = true;
          reported = false;
        } catch (const qapi::Error& e) {
          error = e.what();
        }
        // Said once per outage, not at every attempt.
        if (!error.empty() && !reported) spdlog::warn("chardev '{}': {}", self->id(), error);
        if (!error.empty()) reported = true;
      }
      t.expires_after(self->connected() ? std::chrono::milliseconds(50) : self->reconnect_);
      co_await t.async_wait(asio::as_tuple(use_awaitable));
    }
  }

  void start_session(int fd) {
    if (opts_.nodelay.value_or(false)) {
      int on = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    }
    peer_.clear();
    local_.clear();
    try {
      if (addr_.type() == SocketAddressType::inet) {
        peer_ = socket_address_to_string(socket_peer_address(fd)).substr(4);
        local_ = socket_address_to_string(socket_local_address(fd)).substr(4);
      }
    } catch (const qapi::Error&) {
    }
    std::weak_ptr<SocketChardev> weak = std::static_pointer_cast<SocketChardev>(shared_from_this());
    FdStream::Options o;
    o.recv_fds = addr_.type() == SocketAddressType::q_unix || addr_.type() == SocketAddressType::fd;
    o.frontend = [weak]() -> ChardevFrontend* {
      auto self = weak.lock();
      return self ? self->frontend_ : nullptr;
    };
    if (opts_.telnet.value_or(false) || opts_.tn3270.value_or(false)) {
      auto telnet = std::make_shared<TelnetFilter>();
      o.filter_input = [weak, telnet](std::string_view in) {
        bool brk = false;
        std::string out = telnet->filter(in, brk);
        if (auto self = weak.lock(); self && brk) self->send_event(ChrEvent::break_);
        return out;
      };
    }
    std::shared_ptr<ByteStream> stream;
    if (opts_.websocket.value_or(false)) {
      stream = websocket_stream_new(daemon_.io(), UniqueFd(fd), o);
    } else {
      stream = std::make_shared<FdStream>(daemon_.io(), UniqueFd(fd), UniqueFd{}, o);
    }
    session_ = stream;
    stream->set_on_end([weak, stream_weak = std::weak_ptr<ByteStream>(stream)] {
      auto self = weak.lock();
      if (self) self->end_session(stream_weak.lock());
    });
    stream->start();
    if (opts_.tn3270.value_or(false)) {
      // TN3270: terminal type, end-of-record and binary mode (RFC 1576).
      static const char kTn3270[] = {'\xff', '\xfd', '\x18', '\xff', '\xfa', '\x18', '\x01',
                                     '\xff', '\xf0', '\xff', '\xfd', '\x19', '\xff', '\xfb',
                                     '\x19', '\xff', '\xfd', '\x00', '\xff', '\xfb', '\x00'};
      stream->write(std::string(kTn3270, sizeof(kTn3270)));
    } else if (opts_.telnet.value_or(false)) {
      // Ask the client to leave echo and line editing to us, as QEMU does.
      static const char kTelnet[] = {'\xff', '\xfb', '\x01', '\xff', '\xfb', '\x03',
                                     '\xff', '\xfb', '\x00', '\xff', '\xfd', '\x00'};
      stream->write(std::string(kTelnet, sizeof(kTelnet)));
    }
    send_event(ChrEvent::opened);
  }

  void end_session(const std::shared_ptr<ByteStream>& s) {
    if (!s || session_ != s) return;
    session_.reset();
    if (!closed_) send_event(ChrEvent::closed);
    wake_.cancel();
  }

  Daemon& daemon_;
  qapi::ChardevSocket opts_;
  qapi::SocketAddress addr_;
  bool server_;
  std::chrono::milliseconds reconnect_{0};
  std::optional<asio::posix::stream_descriptor> listener_;
  std::optional<std::string> listen_cleanup_;
  std::pair<dev_t, ino_t> socket_file_{};
  UniqueFd connect_fd_;
  std::shared_ptr<ByteStream> session_;
  std::string peer_, local_;
  asio::steady_timer wake_;
  bool closed_ = false;
};

}  // namespace

std::shared_ptr<Chardev> chardev_socket_new(Daemon& daemon, const std::string& id,
                                            const qapi::ChardevSocket& opts, const FdContext& fds) {
  return std::make_shared<SocketChardev>(daemon, id, opts, fds);
}

}  // namespace vstord
