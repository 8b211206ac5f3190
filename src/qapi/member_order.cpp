#include "qapi/member_order.hpp"

#include <algorithm>
#include <cstdint>
#include <optional>

namespace qapi {

namespace {

uint32_t tdb_hash(std::string_view key) {
  uint32_t v = 0x238F13AFu * static_cast<uint32_t>(key.size());
  for (size_t i = 0; i < key.size(); ++i) {
    v += static_cast<uint32_t>(static_cast<unsigned char>(key[i])) << ((i * 5) % 24);
  }
  return 1103515243u * v + 12345u;
}

// GLib's g_str_hash (djb2 over signed chars).
uint32_t g_str_hash(std::string_view key) {
  uint32_t h = 5381;
  for (char c : key)
    h = (h << 5) + h + static_cast<uint32_t>(static_cast<int32_t>(static_cast<signed char>(c)));
  return h;
}

}  // namespace

namespace {
// GLib's table sizes are powers of two; the hash is reduced modulo the
// prime below each.
constexpr uint32_t kPrimeMod[] = {
    1,    2,    3,     7,     13,    31,     61,     127,    251,     509,     1021,    2039,
    4093, 8191, 16381, 32749, 65521, 131071, 262139, 524287, 1048573, 2097143, 4194301, 8388593};

uint32_t real_hash(std::string_view key) {
  uint32_t h = g_str_hash(key);
  return h < 2 ? 2 : h;  // 0 and 1 mark unused and deleted slots
}
}  // namespace

void GHashOrder::set_shift(unsigned shift) {
  size_ = 1u << shift;
  mod_ = kPrimeMod[shift];
  mask_ = size_ - 1;
}

void GHashOrder::insert(const std::string& key) {
  if (hashes_.empty()) {
    hashes_.assign(size_, 0);
    keys_.assign(size_, {});
  }
  uint32_t h = real_hash(key);
  uint32_t i = index_of(h), step = 0;
  std::optional<uint32_t> tombstone;
  while (hashes_[i] != 0) {
    if (hashes_[i] == h && keys_[i] == key) return;
    if (hashes_[i] == 1 && !tombstone) tombstone = i;
    i = (i + ++step) & mask_;
  }
  if (tombstone) i = *tombstone;
  bool was_unused = hashes_[i] == 0;
  hashes_[i] = h;
  keys_[i] = key;
  ++nnodes_;
  if (was_unused) {
    ++noccupied_;
    maybe_resize();
  }
}

void GHashOrder::remove(const std::string& key) {
  if (hashes_.empty()) return;
  uint32_t h = real_hash(key);
  uint32_t i = index_of(h), step = 0;
  while (hashes_[i] != 0) {
    if (hashes_[i] == h && keys_[i] == key) {
      hashes_[i] = 1;
      keys_[i].clear();
      --nnodes_;
      maybe_resize();
      return;
    }
    i = (i + ++step) & mask_;
  }
}

std::vector<std::string> GHashOrder::keys() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < hashes_.size(); ++i) {
    if (hashes_[i] >= 2) out.push_back(keys_[i]);
  }
  return out;
}

void GHashOrder::maybe_resize() {
  if ((size_ > nnodes_ * 4 && size_ > 8) || size_ <= noccupied_ + noccupied_ / 16) resize();
}

// Rehashes in place as GLib does: entries move in old-slot order, and an
// entry that lands on one not yet moved evicts it, which moves next.
void GHashOrder::resize() {
  uint32_t old_size = size_;
  unsigned shift = 0;
  for (auto n = static_cast<size_t>(static_cast<double>(nnodes_) * 1.333); n; n >>= 1) ++shift;
  set_shift(std::max(shift, 3u));
  if (size_ > old_size) {
    hashes_.resize(size_, 0);
    keys_.resize(size_);
  }
  std::vector<bool> moved(std::max(size_, old_size), false);
  for (uint32_t i = 0; i < old_size; ++i) {
    uint32_t h = hashes_[i];
    if (h < 2) {
      hashes_[i] = 0;
      continue;
    }
    if (moved[i]) continue;
    hashes_[i] = 0;
    std::string key = std::move(keys_[i]);
    keys_[i].clear();
    for (;;) {
      uint32_t j = index_of(h), step = 0;
      while (moved[j]) j = (j + ++step) & mask_;
      moved[j] = true;
      uint32_t replaced = hashes_[j];
      std::string replaced_key = std::move(keys_[j]);
      hashes_[j] = h;
      keys_[j] = std::move(key);
      if (replaced < 2) break;
      h = replaced;
      key = std::move(replaced_key);
    }
  }
  if (size_ < old_size) {
    hashes_.resize(size_);
    keys_.resize(size_);
  }
  noccupied_ = nnodes_;
}

std::string qemu_first_leftover(const Json& object, const std::vector<std::string_view>& consumed) {
  // QEMU fills a table with the members in QDict order, removes each as
  // it is visited, and names the first one left.
  GHashOrder table;
  for (const std::string& key : qemu_member_order(object)) table.insert(key);
  for (std::string_view key : consumed) table.remove(std::string(key));
  auto left = table.keys();
  return left.empty() ? std::string() : left.front();
}

std::vector<std::string> qemu_member_order(const Json& object) {
  struct Key {
    uint32_t bucket;
    size_t index;
    const std::string* name;
  };
  std::vector<Key> keys;
  keys.reserve(object.size());
  size_t i = 0;
  for (auto it = object.begin(); it != object.end(); ++it, ++i) {
    keys.push_back(Key{tdb_hash(it.key()) % 512, i, &it.key()});
  }
  std::sort(keys.begin(), keys.end(), [](const Key& a, const Key& b) {
    return a.bucket != b.bucket ? a.bucket < b.bucket : a.index > b.index;
  });
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const Key& k : keys) out.push_back(*k.name);
  return out;
}

}  // namespace qapi
