#include "block/bitmap.hpp"

#include <openssl/evp.h>

#include <bit>
#include <mutex>
#include <vector>

#include "qapi/error.hpp"

namespace vstord {

namespace {

// QEMU's bitmaps always have at least one word (its SHA-256 of an empty
// node hashes eight zero bytes).
uint64_t words_for(uint64_t nbits) {
  return std::max<uint64_t>(1, (nbits + 63) / 64);
}

}  // namespace

DirtyBitmap::DirtyBitmap(std::string name, uint32_t granularity, uint64_t node_size, bool recording)
    : name_(std::move(name)),
      granularity_(granularity),
      shift_(std::countr_zero(granularity)),
      recording_(recording),
      node_size_(node_size),
      nbits_((node_size + granularity - 1) >> shift_),
      words_(new std::atomic<uint64_t>[words_for(nbits_)]()) {}

void DirtyBitmap::mark(uint64_t offset, uint64_t bytes) {
  if (!recording()) return;
  set_bits(offset, bytes);
}

void DirtyBitmap::set_bits(uint64_t offset, uint64_t bytes) {
  if (bytes == 0) return;
  std::shared_lock lock(words_lock_);
  uint64_t first = offset >> shift_;
  uint64_t last = std::min((offset + bytes - 1) >> shift_, nbits_ ? nbits_ - 1 : 0);
  if (first >= nbits_) return;
  for (uint64_t w = first / 64; w <= last / 64; ++w) {
    uint64_t lo = w == first / 64 ? first % 64 : 0;
    uint64_t hi = w == last / 64 ? last % 64 : 63;
    uint64_t mask = (hi == 63 ? ~0ull : ((1ull << (hi + 1)) - 1)) & ~((1ull << lo) - 1);
    words_[w].fetch_or(mask, std::memory_order_relaxed);
  }
}

bool DirtyBitmap::test(uint64_t bit) const {
  return (words_[bit / 64].load(std::memory_order_relaxed) >> (bit % 64)) & 1;
}

std::pair<bool, uint64_t> DirtyBitmap::run_at(uint64_t offset, uint64_t bytes) const {
  std::shared_lock lock(words_lock_);
  uint64_t bit = offset >> shift_;
  if (bit >= nbits_) return {false, bytes};
  bool dirty = test(bit);
  uint64_t end = offset + bytes;
  uint64_t pos = (bit + 1) << shift_;  // end of this chunk
  ++bit;
  while (pos < end && bit < nbits_) {
    // Skip whole words of the same state quickly.
    if (bit % 64 == 0) {
      uint64_t word = words_[bit / 64].load(std::memory_order_relaxed);
      if (word == (dirty ? ~0ull : 0ull) && bit + 64 <= nbits_) {
        bit += 64;
        pos += uint64_t(64) << shift_;
        continue;
      }
    }
    if (test(bit) != dirty) break;
    ++bit;
    pos += granularity_;
  }
  return {dirty, std::min(pos, end) - offset};
}

void DirtyBitmap::clear() {
  std::shared_lock lock(words_lock_);
  for (uint64_t w = 0; w < words_for(nbits_); ++w) words_[w].store(0, std::memory_order_relaxed);
}

void DirtyBitmap::resize(uint64_t node_size) {
  std::unique_lock lock(words_lock_);
  uint64_t nbits = (node_size + granularity_ - 1) >> shift_;
  std::unique_ptr<std::atomic<uint64_t>[]> words(new std::atomic<uint64_t>[words_for(nbits)]());
  for (uint64_t b = 0; b < std::min(nbits, nbits_); ++b) {
    if (test(b)) words[b / 64].fetch_or(1ull << (b % 64), std::memory_order_relaxed);
  }
  words_ = std::move(words);
  nbits_ = nbits;
  node_size_ = node_size;
}

void DirtyBitmap::merge_from(const DirtyBitmap& other) {
  // Granularities may differ: copy the source's dirty runs.
  uint64_t size;
  {
    std::shared_lock lock(other.words_lock_);
    size = other.node_size_;
  }
  uint64_t offset = 0;
  while (offset < size) {
    auto [dirty, len] = other.run_at(offset, size - offset);
    if (dirty) set_bits(offset, len);
    offset += len;
  }
}

int64_t DirtyBitmap::count() const {
  std::shared_lock lock(words_lock_);
  int64_t bits = 0;
  for (uint64_t w = 0; w < words_for(nbits_); ++w) {
    bits += std::popcount(words_[w].load(std::memory_order_relaxed));
  }
  return bits << shift_;
}

std::string DirtyBitmap::sha256() const {
  std::shared_lock lock(words_lock_);
  std::vector<uint8_t> bytes;
  bytes.reserve(words_for(nbits_) * 8);
  for (uint64_t w = 0; w < words_for(nbits_); ++w) {
    uint64_t v = words_[w].load(std::memory_order_relaxed);
    for (int i = 0; i < 8; ++i) bytes.push_back(uint8_t(v >> (8 * i)));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

qapi::BlockDirtyInfo DirtyBitmap::info() const {
  qapi::BlockDirtyInfo out;
  out.name = name_;
  out.count = count();
  out.granularity = granularity_;
  out.recording = recording();
  out.busy = busy();
  out.persistent = false;
  return out;
}

void DirtyBitmap::check_modifiable() const {
  if (busy()) {
    qapi::fail("Bitmap '{}' is currently in use by another operation and cannot be used", name_);
  }
}

}  // namespace vstord
