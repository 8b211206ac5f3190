// The 'udp' backend: each write is one datagram to 'remote'; each
// datagram received is input.

#include <sys/socket.h>

#include <netdb.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <deque>

#include "chardev/backends.hpp"
#include "daemon/daemon.hpp"
#include "qapi/error.hpp"

namespace vstord {

namespace asio = boost::asio;
using qapi::SocketAddressType;

namespace {

// A datagram socket bound to 'local' (if given) and connected to 'remote'.
UniqueFd udp_socket(const qapi::SocketAddress& remote,
                    const std::optional<qapi::SocketAddress>& local) {
  if (remote.type() != SocketAddressType::inet) qapi::fail("socket type unsupported for datagram");
  const auto& r = remote.get<SocketAddressType::inet>();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(r.host.empty() ? "localhost" : r.host.c_str(), r.port.c_str(), &hints, &res);
  if (rc != 0)
    qapi::fail("address resolution failed for {}:{}: {}", r.host, r.port, gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, freeaddrinfo);
  UniqueFd fd(::socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) qapi::fail("Failed to create socket: {}", std::strerror(errno));
  if (local) {
    if (local->type() != SocketAddressType::inet)
      qapi::fail("socket type unsupported for datagram");
    const auto& l = local->get<SocketAddressType::inet>();
    addrinfo lh{};
    lh.ai_family = res->ai_family;
    lh.ai_socktype = SOCK_DGRAM;
    lh.ai_flags = AI_PASSIVE;
    addrinfo* lres = nullptr;
    rc = getaddrinfo(l.host.empty() ? nullptr : l.host.c_str(), l.port.c_str(), &lh, &lres);
    if (rc != 0)
      qapi::fail("address resolution failed for {}:{}: {}", l.host, l.port, gai_strerror(rc));
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> lguard(lres, freeaddrinfo);
    int on = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(fd.get(), lres->ai_addr, lres->ai_addrlen) < 0) {
      qapi::fail("Failed to bind socket: {}", std::strerror(errno));
    }
  }
  if (connect(fd.get(), res->ai_addr, res->ai_addrlen) < 0) {
    qapi::fail("Failed to connect socket: {}", std::strerror(errno));
  }
  return fd;
}

class UdpChardev final : public Chardev {
 public:
  UdpChardev(Daemon& daemon, const std::string& id, UniqueFd fd)
      : Chardev(id), daemon_(daemon), sock_(daemon.io(), fd.release()), input_wake_(daemon.io()) {
    input_wake_.expires_at(asio::steady_timer::time_point::max());
  }
  ~UdpChardev() override { close(); }

  asio::awaitable<void> open() override {
    asio::co_spawn(daemon_.io(), reader(std::static_pointer_cast<UdpChardev>(shared_from_this())),
                   asio::detached);
    co_return;
  }
  std::string filename() const override { return "udp"; }
  void accept_input() override { input_wake_.cancel(); }
  void close_backend() override {
    closed_ = true;
    boost::system::error_code ec;
    sock_.close(ec);
    input_wake_.cancel();
  }

 protected:
  void backend_write(std::string data) override {
    // A datagram is sent whole or not at all; a full socket buffer drops it,
    // as a network would.
    if (!closed_) ::send(sock_.native_handle(), data.data(), data.size(), MSG_DONTWAIT);
  }

 private:
  static asio::awaitable<void> reader(std::shared_ptr<UdpChardev> self) {
    std::vector<char> buf(65536);
    while (!self->closed_) {
      if (!self->frontend_ || !self->frontend_->chr_can_read()) {
        co_await self->input_wake_.async_wait(asio::as_tuple(asio::use_awaitable));
        self->input_wake_.expires_at(asio::steady_timer::time_point::max());
        continue;
      }
      auto [ec] = co_await self->sock_.async_wait(asio::posix::descriptor_base::wait_read,
                                                  asio::as_tuple(asio::use_awaitable));
      if (ec || self->closed_) break;
      ssize_t n = ::recv(self->sock_.native_handle(), buf.data(), buf.size(), MSG_DONTWAIT);
      if (n <= 0) continue;  // ECONNREFUSED from an absent peer is not fatal
      if (self->frontend_) self->frontend_->chr_read(std::string_view(buf.data(), size_t(n)), {});
    }
  }

  Daemon& daemon_;
  asio::posix::stream_descriptor sock_;
  asio::steady_timer input_wake_;
  bool closed_ = false;
};

}  // namespace

std::shared_ptr<Chardev> chardev_udp_new(Daemon& daemon, const std::string& id,
                                         const qapi::ChardevUdp& opts, const FdContext&) {
  std::optional<qapi::SocketAddress> local;
  if (opts.local) local = socket_address_flatten(*opts.local);
  UniqueFd fd = udp_socket(socket_address_flatten(opts.remote), local);
  return std::make_shared<UdpChardev>(daemon, id, std::move(fd));
}

}  // namespace vstord
