// RangeLock: shared ranges run together, an exclusive range waits for
// every overlapping range taken before it and holds back overlapping ones
// taken after it, and ranges that do not overlap never wait.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <optional>
#include <vector>

#include "block/range_lock.hpp"

namespace vstord {
namespace {

namespace asio = boost::asio;

class RangeLockTest : public ::testing::Test {
 protected:
  // Takes a range in a coroutine; the hold lands in holds_[slot] once
  // granted.
  void take(size_t slot, uint64_t begin, uint64_t end, bool exclusive) {
    if (holds_.size() <= slot) holds_.resize(slot + 1);
    asio::co_spawn(io_, lock_.acquire(begin, end, exclusive),
                   [this, slot](std::exception_ptr e, RangeLock::Hold hold) {
                     ASSERT_FALSE(e);
                     holds_[slot].emplace(std::move(hold));
                   });
  }
  // Runs the loop long enough for pollers to notice a change.
  void settle() {
    io_.restart();
    io_.run_for(std::chrono::milliseconds(5));
  }
  bool granted(size_t slot) const { return slot < holds_.size() && holds_[slot].has_value(); }
  void release(size_t slot) { holds_[slot].reset(); }

  asio::io_context io_;
  RangeLock lock_;
  std::vector<std::optional<RangeLock::Hold>> holds_;
};

TEST_F(RangeLockTest, SharedRangesRunTogether) {
  take(0, 0, 4096, false);
  take(1, 0, 4096, false);
  settle();
  EXPECT_TRUE(granted(0));
  EXPECT_TRUE(granted(1));
}

TEST_F(RangeLockTest, ExclusiveWaitsForEarlierOverlap) {
  take(0, 0, 4096, false);
  take(1, 2048, 8192, true);
  settle();
  EXPECT_TRUE(granted(0));
  EXPECT_FALSE(granted(1));
  release(0);
  settle();
  EXPECT_TRUE(granted(1));
}

TEST_F(RangeLockTest, LaterSharedWaitsForWaitingExclusive) {
  // Arrival order decides: a shared range after a waiting exclusive one
  // must not slip past it (the exclusive one would starve).
  take(0, 0, 4096, false);
  take(1, 0, 4096, true);
  take(2, 0, 4096, false);
  settle();
  EXPECT_FALSE(granted(1));
  EXPECT_FALSE(granted(2));
  release(0);
  settle();
  EXPECT_TRUE(granted(1));
  EXPECT_FALSE(granted(2));
  release(1);
  settle();
  EXPECT_TRUE(granted(2));
}

TEST_F(RangeLockTest, DisjointRangesNeverWait) {
  take(0, 0, 4096, true);
  take(1, 4096, 8192, true);
  take(2, 8192, 12288, false);
  settle();
  EXPECT_TRUE(granted(0));
  EXPECT_TRUE(granted(1));
  EXPECT_TRUE(granted(2));
}

}  // namespace
}  // namespace vstord
