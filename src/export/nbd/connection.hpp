// One NBD client session: the option haggling, then the transmission
// phase, as two coroutines that read top to bottom.
//
// Transmission keeps many requests in flight: the reader parses a request
// (and a write's payload), checks it (validate_request, the one place
// where wire fields are judged), and starts a coroutine for it; each
// finished request queues its reply; one writer sends queued replies
// gathered into few writev calls.  The reader stops taking requests while
// too many, or too many bytes, are in flight, so a client that never reads
// its replies costs a bounded amount of memory.
#pragma once

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "block/block.hpp"
#include "block/io_buffer.hpp"
#include "util/unique_fd.hpp"

namespace vstord {

class IoThread;

namespace nbd {

class Export;
class Server;

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<Server> server, IoThread& thread, UniqueFd fd);
  ~Connection();

  // Starts the session on its iothread.
  void start();
  // Drops the session (any thread).
  void close();

  struct Request {
    uint16_t flags = 0;
    uint16_t type = 0;
    uint64_t cookie = 0;
    uint64_t offset = 0;
    uint64_t length = 0;
  };

 private:
  // A reply: pieces of head (headers, small payloads), of data (a read's
  // buffer) and of file (a read's bytes still in a memory-backed file,
  // sent by sendfile), in the order they go out.
  struct Reply {
    struct Piece {
      enum Kind : uint8_t { head, data, file } kind;
      uint64_t offset, length;
    };
    std::vector<uint8_t> head;
    IoBuffer data;
    std::shared_ptr<const UniqueFd> file;
    std::vector<Piece> pieces;
    size_t cost = 0;  // bytes charged against the in-flight budget
    void add_head(size_t from) { pieces.push_back({Piece::head, from, head.size() - from}); }
    void add_data(size_t off, size_t len) { pieces.push_back({Piece::data, off, len}); }
    void add_file(uint64_t off, uint64_t len) { pieces.push_back({Piece::file, off, len}); }
  };
  // A selected metadata context.
  struct MetaContext {
    uint32_t id;
    enum Kind { base_allocation, allocation_depth, dirty_bitmap } kind;
    size_t bitmap = 0;  // index into the export's bitmaps
  };

  template <class Fn>
  void spawn(boost::asio::any_io_executor ex, Fn fn);
  template <class Fn>
  static Task<void> keep_alive(std::shared_ptr<Connection> self, Fn fn);

  Task<void> run();
  Task<bool> negotiate();
  Task<void> transmission();

  // Handshake pieces.
  Task<void> send_option_reply(uint32_t opt, uint32_t type, const std::vector<uint8_t>& data);
  Task<void> send_option_error(uint32_t opt, uint32_t type, const std::string& message);
  Task<bool> handle_info_go(uint32_t opt, const std::vector<uint8_t>& data);
  Task<void> handle_meta_context(uint32_t opt, const std::vector<uint8_t>& data);
  Task<bool> handle_export_name(const std::vector<uint8_t>& data);
  bool select_export(const std::shared_ptr<Export>& exp);

  // Transmission pieces.
  Task<bool> read_request(Request& req);
  uint32_t validate_request(const Request& req, bool& disconnect) const;
  Task<void> handle_request(Request req, IoBuffer payload);
  Task<void> handle_read(const Request& req, Reply& reply);
  Task<int> read_payload(const Request& req, Reply& r,
                         const std::optional<BlockNode::MemorySpan>& span, uint64_t pos,
                         uint64_t len);
  void fail_read(Reply& r, const Request& req, int ret);
  Task<void> handle_block_status(const Request& req, Reply& reply);
  void chunk_header(Reply& r, const Request& req, uint16_t flags, uint16_t type, uint64_t length);
  void simple_reply(Reply& r, const Request& req, uint32_t error);
  void error_reply(Reply& r, const Request& req, uint32_t error);
  void done_reply(Reply& r, const Request& req);
  void send(Reply reply);
  Task<void> writer();
  Task<boost::system::error_code> write_gathered(std::vector<boost::asio::const_buffer>& bufs,
                                                 bool more);
  Task<boost::system::error_code> send_file(int fd, uint64_t offset, uint64_t length);
  Task<void> wait_for_room();
  void wake_reader();

  // Buffered input.
  Task<void> read_exact(void* dst, size_t n);
  Task<void> write_all(const std::vector<uint8_t>& data);

  std::shared_ptr<Server> server_;
  // Guards thread_, which changes once if the session moves to its
  // export's iothread, against close() from other threads.
  std::mutex thread_lock_;
  IoThread* thread_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> stream_;
  std::vector<uint8_t> rbuf_;
  size_t rpos_ = 0, rend_ = 0;
  bool closed_ = false;
  bool handshake_done_ = false;

  // Negotiated.
  bool no_zeroes_ = false;
  bool structured_ = false;
  bool extended_ = false;
  std::shared_ptr<Export> exp_;
  std::shared_ptr<Export> meta_export_;  // the export SET_META_CONTEXT chose for
  std::vector<MetaContext> contexts_;

  // Transmission state (on the session's thread only).
  size_t inflight_ = 0;
  size_t inflight_bytes_ = 0;
  std::deque<Reply> queue_;
  bool writing_ = false;
  std::unique_ptr<boost::asio::steady_timer> room_;  // the reader waits here
};

}  // namespace nbd
}  // namespace vstord
