#include "qapi/member_order.hpp"

#include <algorithm>
#include <cstdint>

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

std::vector<std::string> qemu_leftover_order(const Json& object) {
  std::vector<std::string> keys = qemu_member_order(object);
  if (keys.size() > 7) return keys;
  // A GHashTable of 8 slots (modulus 7), quadratic probing, filled in
  // QDict order; iteration walks the slots in index order.
  constexpr uint32_t kSize = 8, kMod = 7;
  std::vector<const std::string*> slots(kSize, nullptr);
  for (const std::string& k : keys) {
    uint32_t h = g_str_hash(k);
    if (h < 2) h = 2;  // 0 and 1 mark unused and deleted slots
    uint32_t index = (h * 11) % kMod, step = 0;
    while (slots[index]) index = (index + ++step) & (kSize - 1);
    slots[index] = &k;
  }
  std::vector<std::string> out;
  for (const std::string* k : slots) {
    if (k) out.push_back(*k);
  }
  return out;
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
