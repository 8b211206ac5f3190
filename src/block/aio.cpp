#include "block/aio.hpp"

#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>

namespace vstord {

namespace asio = boost::asio;

namespace {

asio::thread_pool& worker_pool() {
  // Blocking calls on a fast device take microseconds: a few more workers
  // than cores keeps them busy while some wait on a slow disk.
  static asio::thread_pool pool(std::max(4u, 2 * std::thread::hardware_concurrency()));
  return pool;
}

// One ring per thread that submits, completed through an eventfd the
// thread's io_context watches.  Submissions made while a handler runs are
// batched into one io_uring_enter at the end of it.
class Ring {
 public:
  explicit Ring(asio::any_io_executor ex) : ex_(ex), efd_(ex) {
    int ret = io_uring_queue_init(256, &ring_, 0);
    if (ret < 0) throw std::system_error(-ret, std::generic_category(), "io_uring_queue_init");
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    efd_.assign(fd);
    io_uring_register_eventfd(&ring_, fd);
    wait();
  }
  ~Ring() {
    efd_.close();
    io_uring_queue_exit(&ring_);
  }

  using Handler = asio::any_completion_handler<void(int)>;

  // Queues an operation; prep fills the sqe.
  template <class Prep>
  Task<int64_t> submit(Prep prep) {
    int res = co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(int)>(
        [this, &prep](auto handler) {
          io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
          if (!sqe) {
            io_uring_submit(&ring_);
            sqe = io_uring_get_sqe(&ring_);
          }
          prep(sqe);
          io_uring_sqe_set_data(sqe, new Handler(std::move(handler)));
          ++inflight_;
          if (!submit_scheduled_) {
            submit_scheduled_ = true;
            asio::post(ex_, [this] {
              submit_scheduled_ = false;
              io_uring_submit(&ring_);
            });
          }
        },
        asio::use_awaitable);
    co_return res;
  }

 private:
  void wait() {
    efd_.async_wait(asio::posix::stream_descriptor::wait_read,
                    [this](boost::system::error_code ec) {
                      if (ec) return;
                      uint64_t n;
                      [[maybe_unused]] ssize_t r = ::read(efd_.native_handle(), &n, sizeof n);
                      reap();
                      wait();
                    });
  }
  void reap() {
    io_uring_cqe* cqe;
    while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
      std::unique_ptr<Handler> h(static_cast<Handler*>(io_uring_cqe_get_data(cqe)));
      int res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      --inflight_;
      std::move (*h)(res);
    }
  }

  asio::any_io_executor ex_;
  io_uring ring_{};
  asio::posix::stream_descriptor efd_;
  bool submit_scheduled_ = false;
  size_t inflight_ = 0;
};

thread_local std::unique_ptr<Ring> tl_ring;

Task<Ring*> this_thread_ring() {
  if (!tl_ring) tl_ring = std::make_unique<Ring>(co_await asio::this_coro::executor);
  co_return tl_ring.get();
}

int64_t errno_result(ssize_t r) {
  return r < 0 ? -errno : r;
}

}  // namespace

Task<int64_t> run_in_worker(std::function<int64_t()> fn) {
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(int64_t)>(
      [&fn](auto handler) {
        auto ex = asio::get_associated_executor(handler);
        asio::post(worker_pool(), [fn = std::move(fn), handler = std::move(handler), ex]() mutable {
          int64_t r = fn();
          asio::post(ex, [handler = std::move(handler), r]() mutable { std::move(handler)(r); });
        });
      },
      asio::use_awaitable);
}

Task<int64_t> aio_preadv(AioEngine engine, int fd, IoVec iov, uint64_t offset) {
  if (engine == AioEngine::io_uring) {
    Ring* ring = co_await this_thread_ring();
    co_return co_await ring->submit(
        [&](io_uring_sqe* sqe) { io_uring_prep_readv(sqe, fd, iov.data(), iov.size(), offset); });
  }
  // A named job: GCC 12 destroys temporaries inside co_await twice.
  std::function<int64_t()> job = [&] {
    return errno_result(::preadv(fd, iov.data(), int(iov.size()), off_t(offset)));
  };
  co_return co_await run_in_worker(std::move(job));
}

Task<int64_t> aio_pwritev(AioEngine engine, int fd, IoVec iov, uint64_t offset, bool fua) {
  if (engine == AioEngine::io_uring) {
    Ring* ring = co_await this_thread_ring();
    co_return co_await ring->submit([&](io_uring_sqe* sqe) {
      io_uring_prep_writev(sqe, fd, iov.data(), iov.size(), offset);
      if (fua) sqe->rw_flags = RWF_DSYNC;
    });
  }
  // A named job: GCC 12 destroys temporaries inside co_await twice.
  std::function<int64_t()> job = [&] {
    return errno_result(
        ::pwritev2(fd, iov.data(), int(iov.size()), off_t(offset), fua ? RWF_DSYNC : 0));
  };
  co_return co_await run_in_worker(std::move(job));
}

Task<int64_t> aio_fdatasync(AioEngine engine, int fd) {
  if (engine == AioEngine::io_uring) {
    Ring* ring = co_await this_thread_ring();
    co_return co_await ring->submit(
        [&](io_uring_sqe* sqe) { io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC); });
  }
  // A named job: GCC 12 destroys temporaries inside co_await twice.
  std::function<int64_t()> job = [&] { return errno_result(::fdatasync(fd)); };
  co_return co_await run_in_worker(std::move(job));
}

bool io_uring_available(std::string* why) {
  io_uring ring;
  int ret = io_uring_queue_init(2, &ring, 0);
  if (ret < 0) {
    if (why) *why = std::strerror(-ret);
    return false;
  }
  io_uring_queue_exit(&ring);
  return true;
}

}  // namespace vstord
