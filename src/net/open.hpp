// Every path the daemon opens goes through open_path: "/dev/fdset/N"
// resolves to a duplicate of a descriptor passed with add-fd, anything
// else is opened (close-on-exec).  Delegated opens will hook in here.
#pragma once

#include <sys/types.h>

#include <string>

#include "util/unique_fd.hpp"

namespace vstord {

class Daemon;

// Throws qapi::Error: "Could not open 'PATH': REASON".
UniqueFd open_path(Daemon& daemon, const std::string& path, int flags, mode_t mode = 0666);

}  // namespace vstord
