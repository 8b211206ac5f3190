// QEMU's rule for user-given ids (node names, export ids): a letter, then
// letters, digits, '-', '.', '_' (util/id.c id_wellformed).
#pragma once

#include <algorithm>
#include <cctype>
#include <string>

namespace vstord {

inline bool id_wellformed(const std::string& id) {
  if (id.empty() || !std::isalpha(static_cast<unsigned char>(id[0]))) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
  });
}

}  // namespace vstord
