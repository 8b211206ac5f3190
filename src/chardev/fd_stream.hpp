// Byte streams over file descriptors for character device backends: a
// reader that feeds the frontend at the pace it accepts, and a queue of
// output drained by a writer, so that a slow peer never blocks the loop.
//
// Descriptors that poll (sockets, FIFOs, terminals) are read and written
// asynchronously.  Regular files do not poll: output to them is written at
// once (the page cache takes it), and input is read in chunks that yield to
// the loop between them.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "chardev/chardev.hpp"
#include "util/unique_fd.hpp"

namespace vstord {

// A connection as a socket backend sees it: bytes out through a queue,
// bytes in to the frontend, and an end.
class ByteStream {
 public:
  virtual ~ByteStream() = default;
  virtual void start() = 0;
  virtual void set_on_end(std::function<void()> fn) = 0;
  virtual void write(std::string data) = 0;
  virtual size_t pending_output() const = 0;
  virtual void accept_input() = 0;
  virtual bool closed() const = 0;
  virtual void close() = 0;
  virtual boost::asio::awaitable<void> drain(std::chrono::milliseconds limit) = 0;
};

class FdStream : public ByteStream, public std::enable_shared_from_this<FdStream> {
 public:
  // 'in' and 'out' may be the same descriptor (pass out as -1 then), or
  // either may be absent.  'recv_fds' reads with recvmsg to take
  // descriptors passed with SCM_RIGHTS (unix sockets).
  struct Options {
    bool recv_fds = false;
    // Where input goes; looked up on every read so a frontend can change.
    std::function<ChardevFrontend*()> frontend;
    // Called once when the stream ends (EOF, error or close()).
    std::function<void()> on_end;
    // Rewrites input before the frontend sees it (telnet, websocket);
    // may answer the peer through the stream.
    std::function<std::string(std::string_view)> filter_input;
  };

  FdStream(boost::asio::io_context& io, UniqueFd in, UniqueFd out, Options opts);
  ~FdStream();

  void start() override;
  void set_on_end(std::function<void()> fn) override { opts_.on_end = std::move(fn); }
  void write(std::string data) override;
  size_t pending_output() const override { return out_bytes_; }
  void accept_input() override;
  bool closed() const override { return closed_; }
  void close() override;
  boost::asio::awaitable<void> drain(std::chrono::milliseconds limit) override;

 private:
  static boost::asio::awaitable<void> reader(std::shared_ptr<FdStream> self);
  static boost::asio::awaitable<void> writer(std::shared_ptr<FdStream> self);
  boost::asio::awaitable<void> finish_after_eof();
  void end();

  boost::asio::io_context& io_;
  Options opts_;
  std::optional<boost::asio::posix::stream_descriptor> in_;
  std::optional<boost::asio::posix::stream_descriptor> out_;
  UniqueFd in_file_;   // a regular file read without polling
  UniqueFd out_file_;  // a regular file written at once
  bool same_fd_ = false;
  boost::asio::steady_timer write_wake_;
  boost::asio::steady_timer input_wake_;
  std::deque<std::string> out_queue_;
  size_t out_bytes_ = 0;
  bool closed_ = false;
  bool ended_ = false;
};

}  // namespace vstord
