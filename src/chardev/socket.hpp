// The 'socket' character device backend.
#pragma once

#include "chardev/chardev.hpp"

namespace vstord {

std::shared_ptr<Chardev> chardev_socket_new(Daemon& daemon, const std::string& id,
                                            const qapi::ChardevSocket& opts, const FdContext& fds);

}  // namespace vstord
