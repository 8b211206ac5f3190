// fd sets: descriptors handed over with add-fd, found again through
// "/dev/fdset/N" paths.
//
// The rules follow QEMU's: a set lives while it has descriptors; remove-fd
// marks descriptors removed, but one that a device still uses (a duplicate
// is open) stays until that duplicate is released; a descriptor added by a
// monitor that disconnects is removed unless a duplicate is in use.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "util/unique_fd.hpp"

namespace vstord {

class FdSets {
 public:
  struct Entry {
    UniqueFd fd;
    std::optional<std::string> opaque;
    bool removed = false;
  };
  struct Set {
    std::vector<Entry> fds;
    std::vector<int> dups;  // duplicates handed out and still open
  };

  // Adds fd to set 'id' (a new set, numbered after the highest, when
  // absent).  Returns {set id, fd number}.
  std::pair<int64_t, int> add(std::optional<int64_t> id, UniqueFd fd,
                              std::optional<std::string> opaque);
  // Removes one descriptor, or the whole set when fd is absent.
  void remove(int64_t id, std::optional<int64_t> fd);
  const std::map<int64_t, Set>& sets() const { return sets_; }

  // Resolves "/dev/fdset/N" for an open with these O_ flags: a duplicate of
  // a descriptor in set N whose access mode matches.  Throws qapi::Error.
  UniqueFd dup_for_open(const std::string& path, int flags);
  // A duplicate from dup_for_open is being closed.
  void release_dup(int fd);

  static bool is_fdset_path(const std::string& path);

 private:
  void cleanup(int64_t id);
  std::map<int64_t, Set> sets_;
};

}  // namespace vstord
