// Sockets from QAPI SocketAddress values: listening, connecting, and the
// rules for addresses of type 'fd'.
//
// Every function here is synchronous and quick (bind, listen, a non-blocking
// connect started); name resolution for inet addresses uses getaddrinfo,
// which callers keep off hot paths.  Errors are qapi::Error with QEMU's
// wording where QEMU has one.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <functional>
#include <optional>
#include <string>

#include "qapi-types.hpp"
#include "util/unique_fd.hpp"

namespace vstord {

// Where an 'fd' address is being resolved.  Outside a monitor command only
// decimal descriptor numbers are allowed (the command line, inherited
// sockets); inside one only names stored with getfd, looked up (and taken)
// through 'take_named'.
struct FdContext {
  std::function<UniqueFd(const std::string& name)> take_named;  // empty outside monitors
  // On the command line: sockets passed by socket activation, by their
  // FileDescriptorName (null if none has the name).
  std::function<UniqueFd(const std::string& name)> take_activated;
  bool in_monitor() const { return static_cast<bool>(take_named); }
};

qapi::SocketAddress socket_address_flatten(const qapi::SocketAddressLegacy& legacy);

// A descriptor for an 'fd' address, checked to be a socket.
UniqueFd socket_fd_from_address(const std::string& str, const FdContext& ctx);

struct ListeningSocket {
  UniqueFd fd;
  qapi::SocketAddress bound;           // the address actually bound (port filled in)
  std::optional<std::string> cleanup;  // unix socket file to remove on close
};

// Binds and listens.  For inet with 'to', tries ports port..to in turn; for
// a host that resolves to several addresses, binds the first that works
// (QEMU's inet_listen behaves the same for a single socket).
ListeningSocket socket_listen(const qapi::SocketAddress& addr, const FdContext& ctx,
                              int backlog = 16);

// Opens a socket and connects it (blocking, bounded by the kernel's connect
// timeout; callers that must not block use socket_connect_async).
UniqueFd socket_connect(const qapi::SocketAddress& addr, const FdContext& ctx);

// The same without blocking the loop: the connect completes in the
// background.  Name resolution is still synchronous (getaddrinfo).
boost::asio::awaitable<UniqueFd> socket_connect_async(boost::asio::io_context& io,
                                                      const qapi::SocketAddress& addr,
                                                      const FdContext& ctx);

// Applies per-connection options of an inet address (keep-alive and its
// tuning) to an accepted or connected socket.
void socket_apply_options(int fd, const qapi::SocketAddress& addr);

// A human-readable description, as QEMU's SocketAddress_to_str ("unix:PATH",
// "tcp:HOST:PORT", "vsock:CID:PORT", "fd:NAME").
std::string socket_address_to_string(const qapi::SocketAddress& addr);

// The address a connected or listening socket has (getsockname / getpeername).
qapi::SocketAddress socket_local_address(int fd);
qapi::SocketAddress socket_peer_address(int fd);

}  // namespace vstord
