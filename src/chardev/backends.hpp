// Constructors of the character device backends, one file each, and the
// ring buffer access that ringbuf-read and ringbuf-write need.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "chardev/chardev.hpp"

namespace vstord {

std::shared_ptr<Chardev> chardev_socket_new(Daemon& daemon, const std::string& id,
                                            const qapi::ChardevSocket& opts, const FdContext& fds);
std::shared_ptr<Chardev> chardev_null_new(const std::string& id);
// 'memory' is the older name of 'ringbuf'; only the reported filename differs.
std::shared_ptr<Chardev> chardev_ringbuf_new(const std::string& id,
                                             const qapi::ChardevRingbuf& opts, bool memory);
std::shared_ptr<Chardev> chardev_file_new(Daemon& daemon, const std::string& id,
                                          const qapi::ChardevFile& opts);
std::shared_ptr<Chardev> chardev_pipe_new(Daemon& daemon, const std::string& id,
                                          const qapi::ChardevHostdev& opts);
std::shared_ptr<Chardev> chardev_serial_new(Daemon& daemon, const std::string& id,
                                            const qapi::ChardevHostdev& opts, bool parallel);
std::shared_ptr<Chardev> chardev_pty_new(Daemon& daemon, const std::string& id,
                                         const qapi::ChardevPty& opts);
std::shared_ptr<Chardev> chardev_stdio_new(Daemon& daemon, const std::string& id,
                                           const qapi::ChardevStdio& opts);
std::shared_ptr<Chardev> chardev_udp_new(Daemon& daemon, const std::string& id,
                                         const qapi::ChardevUdp& opts, const FdContext& fds);
std::shared_ptr<Chardev> chardev_mux_new(Daemon& daemon, const std::string& id,
                                         const qapi::ChardevMux& opts);
std::shared_ptr<Chardev> chardev_hub_new(Daemon& daemon, const std::string& id,
                                         const qapi::ChardevHub& opts);

// A ring buffer backend ('ringbuf' or 'memory').
class RingbufChardev : public Chardev {
 public:
  using Chardev::Chardev;
  // Appends bytes; when full, the oldest bytes are dropped.
  virtual void ring_write(std::string_view data) = 0;
  // Takes up to 'size' bytes.  For text, only whole UTF-8 characters are
  // taken (see ringbuf-read).
  virtual std::string ring_read(size_t size, bool text) = 0;
};

}  // namespace vstord
