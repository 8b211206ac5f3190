// The order in which QEMU iterates an object's members: its QDict hash
// buckets (512 of them, keyed by tdb_hash), newest member first within a
// bucket.  Replies are written in this order so that they match QEMU's byte
// for byte, and input is checked in it so that a request with several
// faults gets the same error as from QEMU.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "qapi/visit.hpp"

namespace qapi {

std::vector<std::string> qemu_member_order(const Json& object);

// A model of GLib's GHashTable with string keys: which slot each key
// lands in, so that iterating gives GLib's order.  QEMU iterates such
// tables where clients see the order: the members a struct did not
// consume (the first is named in the error), and QOM children (the order
// of query-chardev).
class GHashOrder {
 public:
  GHashOrder() { set_shift(3); }
  void insert(const std::string& key);
  void remove(const std::string& key);
  // Keys in slot order, as g_hash_table_iter walks them.
  std::vector<std::string> keys() const;

 private:
  void set_shift(unsigned shift);
  void maybe_resize();
  void resize();
  uint32_t index_of(uint32_t hash) const { return (hash * 11) % mod_; }

  std::vector<uint32_t> hashes_;  // 0 unused, 1 deleted, else the hash
  std::vector<std::string> keys_;
  uint32_t size_ = 0, mod_ = 0, mask_ = 0;
  size_t nnodes_ = 0, noccupied_ = 0;
};

// The first member of 'object' not among 'consumed' (in the order they
// were consumed), as QEMU's input visitor finds it; empty if none.
std::string qemu_first_leftover(const Json& object, const std::vector<std::string_view>& consumed);

}  // namespace qapi
