#include "net/open.hpp"

#include <fcntl.h>

#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cerrno>
#include <cstring>

#include "daemon/daemon.hpp"
#include "qapi/error.hpp"

namespace vstord {

namespace asio = boost::asio;

namespace {

openhook::Result open_here(const std::string& path, int flags, mode_t mode) {
  openhook::Result r;
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    r.error = errno;
    r.why = std::strerror(errno);
  }
  r.fd = UniqueFd(fd);
  return r;
}

UniqueFd fd_or_fail(const std::string& path, openhook::Result r) {
  if (!r.fd) qapi::fail("Could not open '{}': {}", path, r.why);
  return std::move(r.fd);
}

}  // namespace

openhook::Result try_open_path(Daemon& daemon, const std::string& path, int flags, mode_t mode) {
  if (FdSets::is_fdset_path(path)) {
    openhook::Result r;
    try {
      r.fd = daemon.fdsets().dup_for_open(path, flags);
    } catch (const qapi::Error& e) {
      r.error = EACCES;
      r.why = e.what();
    }
    return r;
  }
  if (openhook::OpenHook* hook = daemon.open_hook()) return hook->open_sync(path, flags, mode);
  return open_here(path, flags, mode);
}

UniqueFd open_path(Daemon& daemon, const std::string& path, int flags, mode_t mode) {
  if (FdSets::is_fdset_path(path)) return daemon.fdsets().dup_for_open(path, flags);
  return fd_or_fail(path, try_open_path(daemon, path, flags, mode));
}

Task<UniqueFd> open_path_async(Daemon& daemon, const std::string& path, int flags, mode_t mode) {
  openhook::OpenHook* hook = daemon.open_hook();
  if (!hook || FdSets::is_fdset_path(path)) co_return open_path(daemon, path, flags, mode);
  auto ex = co_await asio::this_coro::executor;
  // The hook answers on its own thread; the answer is posted back here.
  auto result = co_await asio::async_initiate<const asio::use_awaitable_t<>&,
                                              void(std::shared_ptr<openhook::Result>)>(
      [&](auto handler) {
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        hook->open(path, flags, mode, [h, ex](openhook::Result r) {
          auto shared = std::make_shared<openhook::Result>(std::move(r));
          asio::post(ex, [h, shared]() mutable { (*h)(std::move(shared)); });
        });
      },
      asio::use_awaitable);
  co_return fd_or_fail(path, std::move(*result));
}

}  // namespace vstord
