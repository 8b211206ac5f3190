// Every path the daemon opens goes through here: "/dev/fdset/N" resolves
// to a duplicate of a descriptor passed with add-fd; with an open hook
// (--open-hook-fd, openhook/client.hpp) any other path is asked of the
// broker; otherwise it is opened.  Descriptors are close-on-exec.
#pragma once

#include <sys/types.h>

#include <string>

#include "block/block.hpp"
#include "openhook/client.hpp"
#include "util/unique_fd.hpp"

namespace vstord {

class Daemon;

// Throws qapi::Error: "Could not open 'PATH': REASON".
UniqueFd open_path(Daemon& daemon, const std::string& path, int flags, mode_t mode = 0666);

// The same without the exception: a descriptor, or the errno and REASON.
openhook::Result try_open_path(Daemon& daemon, const std::string& path, int flags,
                               mode_t mode = 0666);

// For coroutines: while the broker answers, the caller's thread goes on
// with other work, and other opens may be in flight.
Task<UniqueFd> open_path_async(Daemon& daemon, const std::string& path, int flags,
                               mode_t mode = 0666);

}  // namespace vstord
