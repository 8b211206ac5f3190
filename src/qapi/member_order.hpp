// The order in which QEMU iterates an object's members: its QDict hash
// buckets (512 of them, keyed by tdb_hash), newest member first within a
// bucket.  Replies are written in this order so that they match QEMU's byte
// for byte, and input is checked in it so that a request with several
// faults gets the same error as from QEMU.
#pragma once

#include <string>
#include <vector>

#include "qapi/visit.hpp"

namespace qapi {

std::vector<std::string> qemu_member_order(const Json& object);

// The order in which QEMU's input visitor looks for members a struct did
// not consume: a GLib hash table filled in QDict order.  Exact for up to
// seven keys (the table's first size); beyond that, QDict order.
std::vector<std::string> qemu_leftover_order(const Json& object);

}  // namespace qapi
