// Byte ranges held by a node's requests in flight, so that the few
// requests that must not overlap others (a read-modify-write of the
// partial blocks at the edges of an unaligned O_DIRECT write) run alone
// over their blocks, as QEMU's serialising requests do.
//
// Every request takes its range in arrival order: a shared one waits for
// overlapping exclusive ones that came before it, an exclusive one for
// every overlapping one that came before it.  Waits are rare (clients
// mostly honour the advertised block size), so a waiter polls on a short
// timer instead of keeping a queue of wake-ups across threads.
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <utility>

#include "block/block.hpp"

namespace vstord {

class RangeLock {
  struct Range {
    uint64_t begin, end;
    bool exclusive;
  };

 public:
  // A held range, released on destruction.
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& o) noexcept : lock_(std::exchange(o.lock_, nullptr)), it_(o.it_) {}
    Hold& operator=(Hold&& o) noexcept {
      if (this != &o) {
        release();
        lock_ = std::exchange(o.lock_, nullptr);
        it_ = o.it_;
      }
      return *this;
    }
    ~Hold() { release(); }
    void release();

   private:
    friend class RangeLock;
    Hold(RangeLock* lock, std::list<Range>::iterator it) : lock_(lock), it_(it) {}
    RangeLock* lock_ = nullptr;
    std::list<Range>::iterator it_;
  };

  // Takes [begin, end), waiting for conflicting earlier holders.
  Task<Hold> acquire(uint64_t begin, uint64_t end, bool exclusive);

 private:
  bool must_wait(std::list<Range>::iterator self);

  std::mutex lock_;
  std::list<Range> held_;  // in arrival order
};

}  // namespace vstord
