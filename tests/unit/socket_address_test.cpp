#include "net/socket_address.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

namespace vstord {
namespace {

using qapi::SocketAddress;
using qapi::SocketAddressType;

SocketAddress unix_addr(const std::string& path) {
  SocketAddress a;
  a.emplace<SocketAddressType::q_unix>().path = path;
  return a;
}

SocketAddress inet_addr(const std::string& host, const std::string& port) {
  SocketAddress a;
  auto& in = a.emplace<SocketAddressType::inet>();
  in.host = host;
  in.port = port;
  return a;
}

std::string error_of(auto fn) {
  try {
    fn();
  } catch (const qapi::Error& e) {
    return e.what();
  }
  return "<ok>";
}

TEST(SocketAddress, UnixListenConnectAndCleanup) {
  auto dir = std::filesystem::temp_directory_path() / ("vstord-sa-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::string path = (dir / "s").string();
  ListeningSocket ls = socket_listen(unix_addr(path), FdContext{});
  EXPECT_EQ(ls.cleanup, path);
  UniqueFd c = socket_connect(unix_addr(path), FdContext{});
  EXPECT_TRUE(c);
  std::filesystem::remove_all(dir);
}

TEST(SocketAddress, UnixPathTooLong) {
  EXPECT_EQ(error_of([] { socket_listen(unix_addr(std::string(109, 'a')), FdContext{}); }),
            "UNIX socket path '" + std::string(109, 'a') + "' is too long");
  SocketAddress abstract = unix_addr(std::string(108, 'a'));
  abstract.get<SocketAddressType::q_unix>().abstract = true;
  EXPECT_EQ(error_of([&] { socket_listen(abstract, FdContext{}); }),
            "UNIX socket path '" + std::string(108, 'a') + "' is too long");
}

TEST(SocketAddress, AbstractUnix) {
  SocketAddress a = unix_addr("vstord-test-abstract-" + std::to_string(getpid()));
  a.get<SocketAddressType::q_unix>().abstract = true;
  ListeningSocket ls = socket_listen(a, FdContext{});
  EXPECT_FALSE(ls.cleanup);
  EXPECT_TRUE(socket_connect(a, FdContext{}));
}

TEST(SocketAddress, InetEphemeralPortReported) {
  ListeningSocket ls = socket_listen(inet_addr("127.0.0.1", "0"), FdContext{});
  const auto& in = ls.bound.get<SocketAddressType::inet>();
  EXPECT_NE(in.port, "0");
  EXPECT_TRUE(socket_connect(inet_addr("127.0.0.1", in.port), FdContext{}));
  EXPECT_EQ(socket_address_to_string(ls.bound), "tcp:127.0.0.1:" + in.port);
}

TEST(SocketAddress, InetPortRangeSkipsBusyPort) {
  ListeningSocket first = socket_listen(inet_addr("127.0.0.1", "0"), FdContext{});
  int port = std::stoi(first.bound.get<SocketAddressType::inet>().port);
  if (port >= 65535) GTEST_SKIP();
  SocketAddress range = inet_addr("127.0.0.1", std::to_string(port));
  range.get<SocketAddressType::inet>().to = static_cast<uint16_t>(port + 1);
  // The first port is taken unless the kernel lets SO_REUSEADDR share it.
  try {
    ListeningSocket second = socket_listen(range, FdContext{});
    EXPECT_EQ(second.bound.get<SocketAddressType::inet>().port, std::to_string(port + 1));
  } catch (const qapi::Error& e) {
    EXPECT_STREQ(e.what(), "Failed to find an available port: Address already in use");
  }
  ListeningSocket busy = socket_listen(inet_addr("127.0.0.1", "0"), FdContext{});
  try {
    socket_listen(inet_addr("127.0.0.1", busy.bound.get<SocketAddressType::inet>().port),
                  FdContext{});
  } catch (const qapi::Error& e) {
    EXPECT_STREQ(e.what(), "Failed to find an available port: Address already in use");
  }
}

TEST(SocketAddress, InetBothFamiliesDisabled) {
  SocketAddress a = inet_addr("127.0.0.1", "0");
  a.get<SocketAddressType::inet>().ipv4 = false;
  a.get<SocketAddressType::inet>().ipv6 = false;
  EXPECT_EQ(error_of([&] { socket_listen(a, FdContext{}); }),
            "Cannot disable IPv4 and IPv6 at same time");
}

TEST(SocketAddress, FdRules) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  // Outside a monitor: numbers only.
  EXPECT_EQ(error_of([] { socket_fd_from_address("name", FdContext{}); }),
            "Unable to parse FD number name");
  UniqueFd fd = socket_fd_from_address(std::to_string(sv[0]), FdContext{});
  EXPECT_EQ(fd.get(), sv[0]);
  // Inside a monitor: names only, looked up through the monitor.
  FdContext mon;
  mon.take_named = [&](const std::string& name) -> UniqueFd {
    if (name == "good") return UniqueFd(sv[1]);
    qapi::fail("File descriptor named '{}' has not been found", name);
  };
  EXPECT_EQ(error_of([&] { socket_fd_from_address("3", mon); }),
            "File descriptor named '3' has not been found");
  EXPECT_EQ(socket_fd_from_address("good", mon).get(), sv[1]);
  // Not a socket.
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  EXPECT_EQ(error_of([&] { socket_fd_from_address(std::to_string(p[0]), FdContext{}); }),
            "File descriptor '" + std::to_string(p[0]) + "' is not a socket");
  EXPECT_EQ(fcntl(p[0], F_GETFD) >= 0, true) << "a refused inherited fd stays open";
  close(p[0]);
  close(p[1]);
}

TEST(SocketAddress, ActivatedSocketsByName) {
  // On the command line a name that is not a number may be a socket that
  // systemd passed with that FileDescriptorName.
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  close(sv[1]);
  FdContext cli;
  cli.take_activated = [&](const std::string& name) {
    return name == "nbd" ? UniqueFd(sv[0]) : UniqueFd();
  };
  EXPECT_EQ(socket_fd_from_address("nbd", cli).get(), sv[0]);
  EXPECT_EQ(error_of([&] { socket_fd_from_address("qmp", cli); }), "Unable to parse FD number qmp");
}

TEST(SocketAddress, VsockWithoutKernelSupportIsAClearError) {
  SocketAddress a;
  auto& v = a.emplace<SocketAddressType::vsock>();
  v.cid = "1";
  v.port = "1234";
  std::string e = error_of([&] { socket_listen(a, FdContext{}); });
  if (e == "<ok>") GTEST_SKIP() << "this kernel has vsock";
  EXPECT_TRUE(e.starts_with("Failed to create socket: ") ||
              e.starts_with("Failed to bind socket: "))
      << e;
  v.cid = "x";
  EXPECT_EQ(error_of([&] { socket_listen(a, FdContext{}); }), "Failed to parse cid 'x'");
}

}  // namespace
}  // namespace vstord

namespace vstord {
namespace {

TEST(SocketAddress, KeepAliveAndTuning) {
  SocketAddress a = inet_addr("127.0.0.1", "0");
  auto& in = a.get<SocketAddressType::inet>();
  in.keep_alive = true;
  in.keep_alive_count = 3;
  in.keep_alive_idle = 17;
  in.keep_alive_interval = 5;
  ListeningSocket ls = socket_listen(a, FdContext{});
  int fd = ls.fd.get();
  int v = 0;
  socklen_t len = sizeof(v);
  ASSERT_EQ(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len), 0);
  EXPECT_EQ(v, 1);
  ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, &len), 0);
  EXPECT_EQ(v, 3);
  ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len), 0);
  EXPECT_EQ(v, 17);
  ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, &len), 0);
  EXPECT_EQ(v, 5);
  // Accepted sockets inherit the options (Linux), and connecting applies them.
  UniqueFd c = socket_connect(
      [&] {
        SocketAddress b = a;
        b.get<SocketAddressType::inet>().port = ls.bound.get<SocketAddressType::inet>().port;
        return b;
      }(),
      FdContext{});
  ASSERT_EQ(getsockopt(c.get(), IPPROTO_TCP, TCP_KEEPIDLE, &v, &len), 0);
  EXPECT_EQ(v, 17);
}

TEST(SocketAddress, MptcpListensOrFailsClearly) {
  SocketAddress a = inet_addr("127.0.0.1", "0");
  a.get<SocketAddressType::inet>().mptcp = true;
  try {
    ListeningSocket ls = socket_listen(a, FdContext{});
    int proto = 0;
    socklen_t len = sizeof(proto);
    ASSERT_EQ(getsockopt(ls.fd.get(), SOL_SOCKET, SO_PROTOCOL, &proto, &len), 0);
    EXPECT_EQ(proto, 262);  // IPPROTO_MPTCP
  } catch (const qapi::Error& e) {
    // A kernel without MPTCP: the error says why.
    EXPECT_TRUE(std::string_view(e.what()).starts_with("Failed to find an available port: "))
        << e.what();
  }
}

TEST(SocketAddress, Ipv6Loopback) {
  SocketAddress a = inet_addr("::1", "0");
  ListeningSocket ls;
  try {
    ls = socket_listen(a, FdContext{});
  } catch (const qapi::Error&) {
    GTEST_SKIP() << "no IPv6 loopback here";
  }
  EXPECT_EQ(socket_address_to_string(ls.bound),
            "tcp:[::1]:" + ls.bound.get<SocketAddressType::inet>().port);
}

}  // namespace
}  // namespace vstord
