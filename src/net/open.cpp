#include "net/open.hpp"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "daemon/daemon.hpp"
#include "qapi/error.hpp"

namespace vstord {

UniqueFd open_path(Daemon& daemon, const std::string& path, int flags, mode_t mode) {
  if (FdSets::is_fdset_path(path)) return daemon.fdsets().dup_for_open(path, flags);
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) qapi::fail("Could not open '{}': {}", path, std::strerror(errno));
  return UniqueFd(fd);
}

}  // namespace vstord
