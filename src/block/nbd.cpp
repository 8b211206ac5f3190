// The nbd driver: a remote NBD export as a node, through libnbd.
//
// Each node has a thread of its own where every libnbd call happens: a
// poll() loop over the handle's socket (level-triggered, in the directions
// libnbd asks for) and an eventfd that wakes it for new work.  Requests
// from iothreads are queued for it; completions are posted back to each
// requester's executor.  libnbd does the protocol (structured replies, meta
// contexts); this file does the event loop, the connection's life
// (open-timeout, reconnect-delay, yank) and the mapping to BlockNode.

#include <libnbd.h>
#include <poll.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cerrno>
#include <chrono>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "block/block.hpp"
#include "daemon/daemon.hpp"
#include "daemon/iothread.hpp"
#include "net/socket_address.hpp"
#include "qapi/error.hpp"

namespace vstord {

namespace asio = boost::asio;

namespace {

using Clock = std::chrono::steady_clock;

class NbdNode final : public BlockNode {
 public:
  NbdNode(qapi::BlockdevOptions options, std::string name)
      : BlockNode(std::move(options), std::move(name)) {
    const auto& o = options_.get<qapi::BlockdevDriver::nbd>();
    addr_ = o.server;
    export_ = o.q_export.value_or("");
    bitmap_context_ = o.x_dirty_bitmap;
    reconnect_delay_ = std::chrono::seconds(o.reconnect_delay.value_or(0));
    open_timeout_ = std::chrono::seconds(o.open_timeout.value_or(0));
    if (o.tls_creds) qapi::fail("No TLS credentials with id '{}'", *o.tls_creds);
    wake_fd_ = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    loop_ = std::thread([this] { run_loop(); });
  }

  ~NbdNode() override { close(); }

  // An 'fd' server address names a connected socket: taken now, in the
  // context of the command or option (a monitor's name, a number on the
  // command line), and used for the first connection.
  void take_fd_address(const FdContext& fds) {
    if (addr_.type() != qapi::SocketAddressType::fd) return;
    given_fd_ = socket_fd_from_address(addr_.get<qapi::SocketAddressType::fd>().str, fds);
  }

  // Connects (retrying until open-timeout); throws qapi::Error.
  Task<void> open() {
    std::string error;
    auto deadline = Clock::now() + open_timeout_;
    for (;;) {
      // Connecting blocks: it runs on the node's own thread.
      error = co_await on_loop<std::string>([this] { return connect_once(); });
      // A passed descriptor cannot be tried twice: its first error stands.
      if (error.empty() || Clock::now() >= deadline ||
          addr_.type() == qapi::SocketAddressType::fd) {
        break;
      }
      asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::seconds(1));
      co_await t.async_wait(asio::use_awaitable);
    }
    if (!error.empty()) qapi::fail("{}", error);
    set_size(size_at_connect_);
    if (read_only_server_ && !read_only_) {
      if (options_.auto_read_only.value_or(false)) {
        read_only_ = true;
      } else {
        qapi::fail("Block node is read-only");
      }
    }
  }

  // ---- data path ---------------------------------------------------------------
  Task<int> do_read(uint64_t offset, IoVec iov, uint32_t) override {
    // libnbd reads into one buffer: a request from an export has one.
    uint64_t done = 0;
    for (const auto& v : iov) {
      char* buf = static_cast<char*>(v.iov_base);
      size_t len = v.iov_len;
      uint64_t off = offset + done;
      // A named job: GCC 12 destroys temporaries inside co_await twice.
      Submit job = [=](nbd_handle* h, nbd_completion_callback cb) {
        return nbd_aio_pread(h, buf, len, off, cb, 0);
      };
      int r = co_await command(std::move(job));
      if (r < 0) co_return r;
      done += len;
    }
    co_return 0;
  }

  Task<int> do_write(uint64_t offset, IoVec iov, uint32_t flags) override {
    uint64_t done = 0;
    uint32_t f = (flags & kReqFua) ? LIBNBD_CMD_FLAG_FUA : 0;
    for (const auto& v : iov) {
      const char* buf = static_cast<const char*>(v.iov_base);
      size_t len = v.iov_len;
      uint64_t off = offset + done;
      // A named job: GCC 12 destroys temporaries inside co_await twice.
      Submit job = [=](nbd_handle* h, nbd_completion_callback cb) {
        return nbd_aio_pwrite(h, buf, len, off, cb, f);
      };
      int r = co_await command(std::move(job));
      if (r < 0) co_return r;
      done += len;
    }
    co_return 0;
  }

  Task<int> do_flush() override {
    // A named job: GCC 12 destroys temporaries inside co_await twice.
    Submit job = [](nbd_handle* h, nbd_completion_callback cb) { return nbd_aio_flush(h, cb, 0); };
    co_return co_await command(std::move(job));
  }

  Task<int> do_discard(uint64_t offset, uint64_t bytes) override {
    if (!can_trim_) co_return 0;
    // A named job: GCC 12 destroys temporaries inside co_await twice.
    Submit job = [=](nbd_handle* h, nbd_completion_callback cb) {
      return nbd_aio_trim(h, bytes, offset, cb, 0);
    };
    co_return co_await command(std::move(job));
  }

  Task<int> do_write_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
    if (!can_zero_) co_return co_await BlockNode::do_write_zeroes(offset, bytes, flags);
    uint32_t f = ((flags & kReqFua) ? LIBNBD_CMD_FLAG_FUA : 0) |
                 ((flags & kReqMayUnmap) ? 0 : LIBNBD_CMD_FLAG_NO_HOLE) |
                 ((flags & kReqNoFallback) ? LIBNBD_CMD_FLAG_FAST_ZERO : 0);
    // A named job: GCC 12 destroys temporaries inside co_await twice.
    Submit job = [=](nbd_handle* h, nbd_completion_callback cb) {
      return nbd_aio_zero(h, bytes, offset, cb, f);
    };
    co_return co_await command(std::move(job));
  }

  Task<int> do_cache(uint64_t offset, uint64_t bytes) override {
    if (!can_cache_) co_return 0;
    // A named job: GCC 12 destroys temporaries inside co_await twice.
    Submit job = [=](nbd_handle* h, nbd_completion_callback cb) {
      return nbd_aio_cache(h, bytes, offset, cb, 0);
    };
    co_return co_await command(std::move(job));
  }

  Task<BlockStatus> do_block_status(uint64_t offset, uint64_t bytes) override {
    BlockStatus st{kStatusData | kStatusAllocated, bytes, 1};
    if (!has_context_) co_return st;
    // The first extent is all we need.  With x-dirty-bitmap, a dirty area
    // reads as "no data" (bit 0), as QEMU's nbd driver reports it.
    struct Extent {
      bool got = false;
      uint64_t len = 0;
      uint32_t flags = 0;
    };
    auto ext = std::make_shared<Extent>();
    uint64_t count = std::min<uint64_t>(bytes, 0x80000000u);
    // A named job: GCC 12 destroys temporaries inside co_await twice.
    Submit job = [=](nbd_handle* h, nbd_completion_callback cb) {
      auto* holder = new std::shared_ptr<Extent>(ext);
      nbd_extent_callback ecb{
          [](void* data, const char*, uint64_t, uint32_t* entries, size_t n, int*) {
            auto& e = **static_cast<std::shared_ptr<Extent>*>(data);
            if (!e.got && n >= 2) {
              e.got = true;
              e.len = entries[0];
              e.flags = entries[1];
            }
            return 0;
          },
          holder, [](void* data) { delete static_cast<std::shared_ptr<Extent>*>(data); }};
      return nbd_aio_block_status(h, count, offset, ecb, cb, LIBNBD_CMD_FLAG_REQ_ONE);
    };
    int r = co_await command(std::move(job));
    if (r < 0 || !ext->got) co_return st;
    st.bytes = std::max<uint64_t>(1, std::min<uint64_t>(ext->len, bytes));
    st.flags = uint32_t(kStatusAllocated) | ((ext->flags & 1) ? 0u : uint32_t(kStatusData)) |
               ((ext->flags & 2) ? uint32_t(kStatusZero) : 0u);
    co_return st;
  }

  bool can_discard() const override { return discard_unmap_ && can_trim_; }
  bool can_write_zeroes_fast() const override { return can_fast_zero_; }
  bool can_multi_conn() const override { return can_multi_conn_; }

  std::string filename() const override {
    // As QEMU: nbd+unix:///EXPORT?socket=PATH or nbd://HOST:PORT/EXPORT.
    if (addr_.type() == qapi::SocketAddressType::q_unix) {
      return fmt::format("nbd+unix://{}{}?socket={}", export_.empty() ? "" : "/", export_,
                         addr_.get<qapi::SocketAddressType::q_unix>().path);
    }
    if (addr_.type() == qapi::SocketAddressType::inet) {
      const auto& in = addr_.get<qapi::SocketAddressType::inet>();
      return fmt::format("nbd://{}:{}{}{}", in.host, in.port, export_.empty() ? "" : "/", export_);
    }
    return BlockNode::filename();
  }

  bool yankable() const override { return true; }
  void yank() override {
    // Drop the connection at once; requests fail (or wait for a
    // reconnect, with reconnect-delay).
    post([this] {
      if (h_ && nbd_aio_get_fd(h_) >= 0) ::shutdown(nbd_aio_get_fd(h_), SHUT_RDWR);
    });
  }

  void close() override {
    if (closed_.exchange(true)) return;
    wake();
    if (loop_.joinable()) loop_.join();
    if (h_) nbd_close(h_);
    h_ = nullptr;
  }

 private:
  using Submit = std::function<int64_t(nbd_handle*, nbd_completion_callback)>;

  // Queues fn (which may be move-only) for the loop thread.
  template <class Fn>
  void post(Fn fn) {
    auto shared = std::make_shared<Fn>(std::move(fn));
    {
      std::lock_guard lock(queue_lock_);
      queue_.push_back([shared] { (*shared)(); });
    }
    wake();
  }
  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(wake_fd_.get(), &one, sizeof one);
  }

  // Runs fn on the loop thread and resumes the caller, on its own
  // executor, with fn's result.
  template <class T, class Fn>
  Task<T> on_loop(Fn fn) {
    co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(T)>(
        [this, &fn](auto handler) {
          auto ex = asio::get_associated_executor(handler);
          post([fn = std::move(fn), h = std::move(handler), ex]() mutable {
            T result = fn();
            asio::post(ex, [h = std::move(h), result = std::move(result)]() mutable {
              std::move(h)(std::move(result));
            });
          });
        },
        asio::use_awaitable);
  }

  // One command, 0 or -errno.  With reconnect-delay, a command that finds
  // the connection down waits for it to come back.
  Task<int> command(Submit submit) {
    auto give_up = Clock::now() + reconnect_delay_;
    for (;;) {
      int r = co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(int)>(
          [this, &submit](auto handler) {
            auto ex = asio::get_associated_executor(handler);
            post([this, submit, h = std::move(handler), ex]() mutable {
              issue(submit, std::move(h), ex);
            });
          },
          asio::use_awaitable);
      if (r != -ENOTCONN || Clock::now() >= give_up) co_return r;
      asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(100));
      co_await t.async_wait(asio::use_awaitable);
    }
  }

  // On the loop thread: hands a command to libnbd.  libnbd calls the free
  // function exactly once, after the callback or instead of it (a command
  // that could not be issued), so the requester is answered exactly once.
  template <class Handler>
  void issue(const Submit& submit, Handler handler, asio::any_io_executor ex) {
    struct Pending {
      asio::any_completion_handler<void(int)> handler;
      asio::any_io_executor ex;
      int result = -ENOTCONN;
    };
    if (!h_ || !connected_) {
      if (reconnect_delay_.count() > 0) reconnect_wanted_ = true;
      asio::post(ex, [h = std::move(handler)]() mutable { std::move(h)(-ENOTCONN); });
      return;
    }
    auto* p = new Pending{std::move(handler), ex};
    nbd_completion_callback cb{[](void* data, int* error) {
                                 static_cast<Pending*>(data)->result = *error ? -*error : 0;
                                 return 1;  // retire the command
                               },
                               p,
                               [](void* data) {
                                 auto* p = static_cast<Pending*>(data);
                                 asio::post(p->ex, [h = std::move(p->handler),
                                                    r = p->result]() mutable { std::move(h)(r); });
                                 delete p;
                               }};
    submit(h_, cb);
  }

  void run_loop() {
    pthread_setname_np(pthread_self(), ("nbd-" + name_).substr(0, 15).c_str());
    auto next_attempt = Clock::now();
    while (!closed_) {
      std::deque<std::function<void()>> work;
      {
        std::lock_guard lock(queue_lock_);
        work.swap(queue_);
      }
      for (auto& fn : work) fn();

      if (h_ && connected_ && (nbd_aio_is_dead(h_) || nbd_aio_is_closed(h_))) {
        connected_ = false;
        spdlog::warn("nbd node {}: connection lost", name_);
        if (reconnect_delay_.count() > 0) reconnect_wanted_ = true;
      }
      if (reconnect_wanted_ && !connected_ && Clock::now() >= next_attempt) {
        std::string err = connect_once();
        if (err.empty()) {
          reconnect_wanted_ = false;
          spdlog::info("nbd node {}: reconnected", name_);
        } else {
          next_attempt = Clock::now() + std::chrono::seconds(1);
        }
      }

      pollfd fds[2] = {{wake_fd_.get(), POLLIN, 0}, {-1, 0, 0}};
      if (h_ && connected_) {
        unsigned dir = nbd_aio_get_direction(h_);
        fds[1].fd = nbd_aio_get_fd(h_);
        fds[1].events = short(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                              ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0));
      }
      int timeout = reconnect_wanted_ ? 200 : -1;
      if (::poll(fds, fds[1].fd >= 0 ? 2 : 1, timeout) < 0 && errno != EINTR) break;
      if (fds[0].revents & POLLIN) {
        uint64_t n;
        [[maybe_unused]] ssize_t r = ::read(wake_fd_.get(), &n, sizeof n);
      }
      if (fds[1].fd >= 0 && h_) {
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) nbd_aio_notify_read(h_);
        if (fds[1].revents & POLLOUT) nbd_aio_notify_write(h_);
      }
    }
  }

  // On the loop thread: opens a socket to the server and negotiates
  // (blocking); "" or the error.
  std::string connect_once() {
    if (h_) nbd_close(h_);
    connected_ = false;
    h_ = nbd_create();
    if (!h_) return fmt::format("nbd: {}", nbd_get_error());
    nbd_set_export_name(h_, export_.c_str());
    nbd_add_meta_context(h_, bitmap_context_ ? bitmap_context_->c_str() : "base:allocation");
    UniqueFd fd;
    if (addr_.type() == qapi::SocketAddressType::fd) {
      // A passed descriptor serves one connection; there is nothing to
      // reconnect to once it is gone.
      if (!given_fd_) return "Cannot reconnect: the server address is a file descriptor";
      fd = std::move(given_fd_);
    } else {
      try {
        fd = socket_connect(addr_, FdContext{});
      } catch (const qapi::Error& e) {
        return std::string(e.what());
      }
    }
    if (nbd_connect_socket(h_, fd.release()) < 0) {
      return fmt::format("Failed to connect to '{}': {}", socket_address_to_string(addr_),
                         nbd_get_error());
    }
    can_trim_ = nbd_can_trim(h_) > 0;
    can_zero_ = nbd_can_zero(h_) > 0;
    can_fast_zero_ = nbd_can_fast_zero(h_) > 0;
    can_cache_ = nbd_can_cache(h_) > 0;
    can_multi_conn_ = nbd_can_multi_conn(h_) > 0;
    has_context_ = nbd_can_meta_context(
                       h_, bitmap_context_ ? bitmap_context_->c_str() : "base:allocation") > 0;
    size_at_connect_ = nbd_get_size(h_);
    read_only_server_ = nbd_is_read_only(h_) > 0;
    connected_ = true;
    return "";
  }

  qapi::SocketAddress addr_;
  UniqueFd given_fd_;  // an 'fd' address's socket, until the first connect
  std::string export_;
  std::optional<std::string> bitmap_context_;
  std::chrono::seconds reconnect_delay_{0};
  std::chrono::seconds open_timeout_{0};

  std::thread loop_;
  UniqueFd wake_fd_;
  // Guards queue_: work handed to the loop thread from any thread.
  std::mutex queue_lock_;
  std::deque<std::function<void()>> queue_;
  std::atomic<bool> closed_{false};

  // On the loop thread only (and read by open() once it has connected).
  nbd_handle* h_ = nullptr;
  bool connected_ = false;
  bool reconnect_wanted_ = false;
  int64_t size_at_connect_ = 0;
  bool read_only_server_ = false;

  // Fixed per connection (read from any thread).
  std::atomic<bool> can_trim_{false}, can_zero_{false}, can_fast_zero_{false}, can_cache_{false},
      can_multi_conn_{false}, has_context_{false};
};

}  // namespace

Task<std::shared_ptr<BlockNode>> open_nbd_node(NodeOpenContext& ctx,
                                               const qapi::BlockdevOptions& opts) {
  auto node = std::make_shared<NbdNode>(opts, ctx.name);
  node->take_fd_address(ctx.fds);
  co_await node->open();
  co_return node;
}

}  // namespace vstord
