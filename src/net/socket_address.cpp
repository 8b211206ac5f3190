#include "net/socket_address.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstring>
#include <memory>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "qapi/error.hpp"

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

namespace vstord {

using qapi::SocketAddress;
using qapi::SocketAddressType;

namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

std::string absolute_path(const std::string& path) {
  char buf[PATH_MAX];
  if (!getcwd(buf, sizeof(buf))) return path;
  return std::string(buf) + "/" + path;
}

[[noreturn]] void fail_errno(int err, std::string_view what) {
  qapi::fail("{}: {}", what, errno_text(err));
}

bool parse_decimal(const std::string& s, long long& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  out = std::strtoll(s.c_str(), &end, 10);
  return errno == 0 && *end == '\0';
}

bool fd_is_socket(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

// ---- unix

struct UnixAddr {
  sockaddr_un sa{};
  socklen_t len = 0;
};

UnixAddr unix_sockaddr(const qapi::UnixSocketAddress& u) {
  UnixAddr a;
  a.sa.sun_family = AF_UNIX;
  bool abstract = u.abstract.value_or(false);
  bool tight = u.tight.value_or(true);
  // A path may fill sun_path completely (no terminating NUL); an abstract
  // name has one byte less, for the leading NUL.
  size_t max = sizeof(a.sa.sun_path) - (abstract ? 1 : 0);
  if (u.path.size() > max) qapi::fail("UNIX socket path '{}' is too long", u.path);
  if (abstract) {
    a.sa.sun_path[0] = '\0';
    std::memcpy(a.sa.sun_path + 1, u.path.data(), u.path.size());
    a.len = tight ? static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + u.path.size())
                  : static_cast<socklen_t>(sizeof(a.sa));
  } else {
    std::memcpy(a.sa.sun_path, u.path.data(), u.path.size());
    a.len = static_cast<socklen_t>(sizeof(a.sa));
  }
  return a;
}

// ---- inet

int inet_family(const qapi::InetSocketAddress& in) {
  bool has4 = in.ipv4.has_value(), has6 = in.ipv6.has_value();
  bool v4 = in.ipv4.value_or(false), v6 = in.ipv6.value_or(false);
  if (has4 && has6 && !v4 && !v6) qapi::fail("Cannot disable IPv4 and IPv6 at same time");
  if (has4 && has6 && v4 && v6) return AF_UNSPEC;
  if ((has6 && v6) || (has4 && !v4)) return AF_INET6;
  if ((has4 && v4) || (has6 && !v6)) return AF_INET;
  return AF_UNSPEC;
}

struct AddrInfoDeleter {
  void operator()(addrinfo* ai) const { freeaddrinfo(ai); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;

AddrInfoPtr inet_resolve(const qapi::InetSocketAddress& in, bool passive, const std::string& port) {
  addrinfo hints{};
  hints.ai_family = inet_family(in);
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = (passive ? AI_PASSIVE : 0) | AI_ADDRCONFIG;
  if (in.numeric.value_or(false)) hints.ai_flags |= AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const char* host = in.host.empty() ? nullptr : in.host.c_str();
  int rc = getaddrinfo(host, port.c_str(), &hints, &res);
  if (rc == EAI_BADFLAGS || (rc != 0 && (hints.ai_flags & AI_ADDRCONFIG))) {
    // Loopback-only machines have no "configured" address: retry without.
    hints.ai_flags &= ~AI_ADDRCONFIG;
    rc = getaddrinfo(host, port.c_str(), &hints, &res);
  }
  if (rc != 0) {
    qapi::fail("address resolution failed for {}:{}: {}", in.host, port, gai_strerror(rc));
  }
  return AddrInfoPtr(res);
}

void set_keepalive(int fd, const qapi::InetSocketAddress& in) {
  if (!in.keep_alive.value_or(false)) return;
  int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) < 0) {
    fail_errno(errno, "Unable to set keep-alive option on socket");
  }
  auto tune = [&](int opt, const std::optional<uint32_t>& v, const char* name) {
    if (!v) return;
    int val = static_cast<int>(*v);
    if (setsockopt(fd, IPPROTO_TCP, opt, &val, sizeof(val)) < 0) {
      fail_errno(errno, fmt::format("Unable to set {} option on socket", name));
    }
  };
  tune(TCP_KEEPCNT, in.keep_alive_count, "keep-alive-count");
  tune(TCP_KEEPIDLE, in.keep_alive_idle, "keep-alive-idle");
  tune(TCP_KEEPINTVL, in.keep_alive_interval, "keep-alive-interval");
}

std::string sockaddr_host(const sockaddr* sa, socklen_t len, std::string& port) {
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv),
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    port = "0";
    return "";
  }
  port = serv;
  return host;
}

// ---- vsock

sockaddr_vm vsock_sockaddr(const qapi::VsockSocketAddress& v) {
  long long cid, port;
  if (!parse_decimal(v.cid, cid) || cid < 0 || cid > UINT32_MAX) {
    qapi::fail("Failed to parse cid '{}'", v.cid);
  }
  if (!parse_decimal(v.port, port) || port < 0 || port > UINT32_MAX) {
    qapi::fail("Failed to parse port '{}'", v.port);
  }
  sockaddr_vm svm{};
  svm.svm_family = AF_VSOCK;
  svm.svm_cid = static_cast<unsigned>(cid);
  svm.svm_port = static_cast<unsigned>(port);
  return svm;
}

UniqueFd new_socket(int family, int type, int proto) {
  int fd = ::socket(family, type | SOCK_CLOEXEC, proto);
  if (fd < 0) fail_errno(errno, "Failed to create socket");
  return UniqueFd(fd);
}

}  // namespace

SocketAddress socket_address_flatten(const qapi::SocketAddressLegacy& legacy) {
  SocketAddress out;
  using K = qapi::SocketAddressLegacyKind;
  switch (legacy.type()) {
    case K::inet: out.emplace<SocketAddressType::inet>(legacy.get<K::inet>().data); break;
    case K::q_unix: out.emplace<SocketAddressType::q_unix>(legacy.get<K::q_unix>().data); break;
    case K::vsock: out.emplace<SocketAddressType::vsock>(legacy.get<K::vsock>().data); break;
    case K::fd: out.emplace<SocketAddressType::fd>(legacy.get<K::fd>().data); break;
  }
  return out;
}

UniqueFd socket_fd_from_address(const std::string& str, const FdContext& ctx) {
  UniqueFd fd;
  if (ctx.in_monitor()) {
    // Numbers are refused here: a monitor client must not reach descriptors
    // the daemon holds for other purposes.
    fd = ctx.take_named(str);
  } else {
    long long num;
    if (parse_decimal(str, num) && num >= 0 && num <= INT32_MAX) {
      fd = UniqueFd(static_cast<int>(num));
    } else if (ctx.take_activated && (fd = ctx.take_activated(str))) {
      // A socket systemd passed under that name (FileDescriptorName).
    } else {
      qapi::fail("Unable to parse FD number {}", str);
    }
  }
  if (!fd_is_socket(fd.get())) {
    if (!ctx.in_monitor()) fd.release();  // not ours to close
    qapi::fail("File descriptor '{}' is not a socket", str);
  }
  fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
  return fd;
}

ListeningSocket socket_listen(const SocketAddress& addr, const FdContext& ctx, int backlog) {
  ListeningSocket out;
  switch (addr.type()) {
    case SocketAddressType::q_unix: {
      const auto& u = addr.get<SocketAddressType::q_unix>();
      UnixAddr ua = unix_sockaddr(u);
      UniqueFd fd = new_socket(AF_UNIX, SOCK_STREAM, 0);
      if (!u.abstract.value_or(false)) {
        // As QEMU does: a stale socket file from an earlier run is replaced.
        if (unlink(u.path.c_str()) < 0 && errno != ENOENT) {
          fail_errno(errno, fmt::format("Failed to unlink socket {}", u.path));
        }
      }
      if (bind(fd.get(), reinterpret_cast<sockaddr*>(&ua.sa), ua.len) < 0) {
        fail_errno(errno, fmt::format("Failed to bind socket to {}", u.path));
      }
      if (listen(fd.get(), backlog) < 0) fail_errno(errno, "Failed to listen on socket");
      if (!u.abstract.value_or(false)) {
        // Absolute, so that it is found again after --daemonize's chdir.
        out.cleanup = u.path.starts_with('/') ? u.path : absolute_path(u.path);
      }
      out.fd = std::move(fd);
      out.bound = addr;
      return out;
    }
    case SocketAddressType::inet: {
      const auto& in = addr.get<SocketAddressType::inet>();
      long long port_lo = 0;
      bool numeric_port = parse_decimal(in.port, port_lo);
      int last = numeric_port && in.to ? *in.to : static_cast<int>(port_lo);
      if (in.to && !numeric_port) qapi::fail("Port '{}' must be numeric with 'to'", in.port);
      if (in.to && *in.to < port_lo) qapi::fail("Port range {}-{} is empty", in.port, *in.to);
      int saved = 0;
      for (long long p = port_lo; !numeric_port || p <= last; ++p) {
        std::string port = numeric_port ? std::to_string(p) : in.port;
        AddrInfoPtr res = inet_resolve(in, true, port);
        for (addrinfo* ai = res.get(); ai; ai = ai->ai_next) {
          bool mptcp = in.mptcp.value_or(false);
          int fdn = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                             mptcp ? IPPROTO_MPTCP : ai->ai_protocol);
          if (fdn < 0) {
            saved = errno;
            continue;
          }
          UniqueFd fd(fdn);
          int on = 1;
          setsockopt(fdn, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
          if (ai->ai_family == AF_INET6) {
            // Dual stack unless IPv4 was refused.
            int v6only = (in.ipv4 && !*in.ipv4) ? 1 : 0;
            setsockopt(fdn, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
          }
          if (bind(fdn, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fdn, backlog) < 0) {
            saved = errno;
            continue;
          }
          set_keepalive(fdn, in);
          out.bound = socket_local_address(fdn);
          // Keep the caller's options (keep-alive, ...) beside the real port.
          auto& b = out.bound.get<SocketAddressType::inet>();
          std::string real_port = b.port, real_host = b.host;
          b = in;
          b.port = real_port;
          if (in.host.empty()) b.host = real_host;
          out.fd = std::move(fd);
          return out;
        }
        if (!numeric_port) break;
      }
      fail_errno(saved, "Failed to find an available port");
    }
    case SocketAddressType::vsock: {
      sockaddr_vm svm = vsock_sockaddr(addr.get<SocketAddressType::vsock>());
      UniqueFd fd = new_socket(AF_VSOCK, SOCK_STREAM, 0);
      if (bind(fd.get(), reinterpret_cast<sockaddr*>(&svm), sizeof(svm)) < 0) {
        fail_errno(errno, "Failed to bind socket");
      }
      if (listen(fd.get(), backlog) < 0) fail_errno(errno, "Failed to listen on socket");
      out.fd = std::move(fd);
      out.bound = addr;
      return out;
    }
    case SocketAddressType::fd: {
      const auto& name = addr.get<SocketAddressType::fd>().str;
      UniqueFd fd = socket_fd_from_address(name, ctx);
      // An inherited socket may already listen (systemd); listen() again is
      // harmless and makes a merely bound socket usable.
      if (listen(fd.get(), backlog) < 0) {
        int err = errno;
        if (!ctx.in_monitor()) fd.release();
        fail_errno(err, "Failed to listen on fd socket");
      }
      out.fd = std::move(fd);
      out.bound = addr;
      return out;
    }
  }
  qapi::fail("unknown address type");
}

UniqueFd socket_connect(const SocketAddress& addr, const FdContext& ctx) {
  // The asynchronous connect, run to completion on a private loop.
  boost::asio::io_context io;
  UniqueFd out;
  std::exception_ptr error;
  boost::asio::co_spawn(io, socket_connect_async(io, addr, ctx),
                        [&](std::exception_ptr e, UniqueFd fd) {
                          error = e;
                          out = std::move(fd);
                        });
  io.run();
  if (error) std::rethrow_exception(error);
  return out;
}

namespace {

// Starts a non-blocking connect and waits for it on the loop.
boost::asio::awaitable<bool> connect_nonblocking(boost::asio::io_context& io, int fd,
                                                 const sockaddr* sa, socklen_t len, int& err) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (::connect(fd, sa, len) == 0) co_return true;
  if (errno != EINPROGRESS) {
    err = errno;
    co_return false;
  }
  boost::asio::posix::stream_descriptor sd(io, fd);
  auto [ec] = co_await sd.async_wait(boost::asio::posix::descriptor_base::wait_write,
                                     boost::asio::as_tuple(boost::asio::use_awaitable));
  sd.release();
  socklen_t elen = sizeof(err);
  if (ec) {
    err = ec.value();
    co_return false;
  }
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0) err = errno;
  co_return err == 0;
}

}  // namespace

boost::asio::awaitable<UniqueFd> socket_connect_async(boost::asio::io_context& io,
                                                      const SocketAddress& addr,
                                                      const FdContext& ctx) {
  int err = 0;
  switch (addr.type()) {
    case SocketAddressType::q_unix: {
      const auto& u = addr.get<SocketAddressType::q_unix>();
      UnixAddr ua = unix_sockaddr(u);
      UniqueFd fd = new_socket(AF_UNIX, SOCK_STREAM, 0);
      if (!co_await connect_nonblocking(io, fd.get(), reinterpret_cast<sockaddr*>(&ua.sa), ua.len,
                                        err)) {
        fail_errno(err, fmt::format("Failed to connect to '{}'", u.path));
      }
      co_return fd;
    }
    case SocketAddressType::inet: {
      const auto& in = addr.get<SocketAddressType::inet>();
      AddrInfoPtr res = inet_resolve(in, false, in.port);
      for (addrinfo* ai = res.get(); ai; ai = ai->ai_next) {
        bool mptcp = in.mptcp.value_or(false);
        int fdn = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                           mptcp ? IPPROTO_MPTCP : ai->ai_protocol);
        if (fdn < 0) {
          err = errno;
          continue;
        }
        UniqueFd fd(fdn);
        if (!co_await connect_nonblocking(io, fdn, ai->ai_addr, ai->ai_addrlen, err)) continue;
        set_keepalive(fdn, in);
        co_return fd;
      }
      fail_errno(err, fmt::format("Failed to connect to '{}:{}'", in.host, in.port));
    }
    case SocketAddressType::vsock: {
      sockaddr_vm svm = vsock_sockaddr(addr.get<SocketAddressType::vsock>());
      UniqueFd fd = new_socket(AF_VSOCK, SOCK_STREAM, 0);
      if (!co_await connect_nonblocking(io, fd.get(), reinterpret_cast<sockaddr*>(&svm),
                                        sizeof(svm), err)) {
        fail_errno(err, "Failed to connect to vsock server");
      }
      co_return fd;
    }
    case SocketAddressType::fd:
      co_return socket_fd_from_address(addr.get<SocketAddressType::fd>().str, ctx);
  }
  qapi::fail("unknown address type");
}

void socket_apply_options(int fd, const SocketAddress& addr) {
  if (addr.type() == SocketAddressType::inet) {
    set_keepalive(fd, addr.get<SocketAddressType::inet>());
  }
}

std::string socket_address_to_string(const SocketAddress& addr) {
  switch (addr.type()) {
    case SocketAddressType::inet: {
      const auto& in = addr.get<SocketAddressType::inet>();
      if (in.host.find(':') != std::string::npos)
        return fmt::format("tcp:[{}]:{}", in.host, in.port);
      return fmt::format("tcp:{}:{}", in.host, in.port);
    }
    case SocketAddressType::q_unix: return "unix:" + addr.get<SocketAddressType::q_unix>().path;
    case SocketAddressType::vsock: {
      const auto& v = addr.get<SocketAddressType::vsock>();
      return fmt::format("vsock:{}:{}", v.cid, v.port);
    }
    case SocketAddressType::fd: return "fd:" + addr.get<SocketAddressType::fd>().str;
  }
  return "";
}

namespace {

SocketAddress from_sockaddr(const sockaddr_storage& ss, socklen_t len) {
  SocketAddress out;
  switch (ss.ss_family) {
    case AF_INET:
    case AF_INET6: {
      qapi::InetSocketAddress in;
      in.host = sockaddr_host(reinterpret_cast<const sockaddr*>(&ss), len, in.port);
      out.emplace<SocketAddressType::inet>(std::move(in));
      break;
    }
    case AF_UNIX: {
      const auto* su = reinterpret_cast<const sockaddr_un*>(&ss);
      qapi::UnixSocketAddress u;
      size_t n = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
      if (n > 0 && su->sun_path[0] == '\0') {
        u.path.assign(su->sun_path + 1, n - 1);
        u.abstract = true;
      } else {
        u.path.assign(su->sun_path, strnlen(su->sun_path, n));
      }
      out.emplace<SocketAddressType::q_unix>(std::move(u));
      break;
    }
    case AF_VSOCK: {
      const auto* sv = reinterpret_cast<const sockaddr_vm*>(&ss);
      qapi::VsockSocketAddress v;
      v.cid = std::to_string(sv->svm_cid);
      v.port = std::to_string(sv->svm_port);
      out.emplace<SocketAddressType::vsock>(std::move(v));
      break;
    }
    default: qapi::fail("socket family {} unsupported", ss.ss_family);
  }
  return out;
}

}  // namespace

SocketAddress socket_local_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) {
    fail_errno(errno, "getsockname failed");
  }
  return from_sockaddr(ss, len);
}

SocketAddress socket_peer_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) {
    fail_errno(errno, "getpeername failed");
  }
  return from_sockaddr(ss, len);
}

}  // namespace vstord
