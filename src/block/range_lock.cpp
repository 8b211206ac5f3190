#include "block/range_lock.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>

namespace vstord {

namespace asio = boost::asio;

void RangeLock::Hold::release() {
  if (!lock_) return;
  std::lock_guard guard(lock_->lock_);
  lock_->held_.erase(it_);
  lock_ = nullptr;
}

bool RangeLock::must_wait(std::list<Range>::iterator self) {
  for (auto it = held_.begin(); it != self; ++it) {
    bool overlap = it->begin < self->end && self->begin < it->end;
    if (overlap && (self->exclusive || it->exclusive)) return true;
  }
  return false;
}

Task<RangeLock::Hold> RangeLock::acquire(uint64_t begin, uint64_t end, bool exclusive) {
  std::list<Range>::iterator self;
  bool wait;
  {
    std::lock_guard guard(lock_);
    self = held_.insert(held_.end(), Range{begin, end, exclusive});
    wait = must_wait(self);
  }
  // Owned from here on, so that a cancelled wait gives the range back.
  Hold hold(this, self);
  if (wait) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    for (;;) {
      timer.expires_after(std::chrono::microseconds(50));
      co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
      std::lock_guard guard(lock_);
      if (!must_wait(self)) break;
    }
  }
  co_return hold;
}

}  // namespace vstord
