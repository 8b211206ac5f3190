// Dirty bitmaps: one bit per granularity-sized chunk of a node, set by
// every write that reaches the node while the bitmap records.
//
// Marking runs on iothreads (atomic OR per 64-bit word); everything else
// runs on the main thread.  words_lock_ keeps the word array alive and its
// size fixed while a mark or a query runs; resize takes it exclusively.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>

#include "qapi-types.hpp"

namespace vstord {

class DirtyBitmap {
 public:
  DirtyBitmap(std::string name, uint32_t granularity, uint64_t node_size, bool recording);

  const std::string& name() const { return name_; }
  uint32_t granularity() const { return granularity_; }
  bool recording() const { return recording_.load(std::memory_order_relaxed); }
  void set_recording(bool on) { recording_.store(on, std::memory_order_relaxed); }
  // Held by an operation (an export reading it): no changes allowed.
  bool busy() const { return busy_.load() > 0; }
  void hold() { ++busy_; }
  void release() { --busy_; }

  // Data path.
  void mark(uint64_t offset, uint64_t bytes);
  // Whether offset is dirty, and how many bytes from offset (at most
  // bytes) share that state.
  std::pair<bool, uint64_t> run_at(uint64_t offset, uint64_t bytes) const;

  // Control.
  void clear();
  void resize(uint64_t node_size);
  void merge_from(const DirtyBitmap& other);
  // Dirty bytes: set bits times the granularity, as QEMU counts them.
  int64_t count() const;
  // SHA-256 (hex) of the words as little-endian bytes, as QEMU's
  // x-debug-block-dirty-bitmap-sha256 computes it.
  std::string sha256() const;
  qapi::BlockDirtyInfo info() const;

  // Throws qapi::Error unless the bitmap may be changed by a command.
  void check_modifiable() const;

 private:
  uint64_t bits() const { return nbits_; }
  // Sets bits whether or not the bitmap records (merges).
  void set_bits(uint64_t offset, uint64_t bytes);
  bool test(uint64_t bit) const;

  std::string name_;
  uint32_t granularity_;
  unsigned shift_;
  std::atomic<bool> recording_;
  std::atomic<int> busy_{0};
  mutable std::shared_mutex words_lock_;
  uint64_t node_size_;
  uint64_t nbits_;
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
};

}  // namespace vstord
