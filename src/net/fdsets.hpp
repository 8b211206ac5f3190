// fd sets: descriptors handed over with add-fd, found again through
// "/dev/fdset/N" paths.
//
// The rules follow QEMU's (9.1 and later): an open of "/dev/fdset/N" gets
// a duplicate of a descriptor of set N whose access mode and O_DIRECT
// match the open's, with the open's other flags applied (O_APPEND,
// O_NONBLOCK, ...; O_TRUNC truncates).  remove-fd closes the set's
// descriptor at once; the set itself lives while it has descriptors or a
// duplicate of one is still open, and is listed (with no fds) until then.
// Monitors disconnecting change nothing.
//
// Whether a duplicate is still open is asked of the kernel (is its number
// still open on the same file?), so owners need not report closing it,
// and a failed open cannot leave a set pinned.
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
  };
  struct Set {
    std::vector<Entry> fds;
    // Duplicates handed out, with the file they are open on (a duplicate
    // outlives its set descriptor after remove-fd).
    struct Dup {
      int fd;
      uint64_t dev, ino;
    };
    std::vector<Dup> dups;
  };

  // Adds fd to set 'id' (a new set, numbered after the highest, when
  // absent).  Returns {set id, fd number}.
  std::pair<int64_t, int> add(std::optional<int64_t> id, UniqueFd fd,
                              std::optional<std::string> opaque);
  // Removes one descriptor, or the whole set's when fd is absent.
  void remove(int64_t id, std::optional<int64_t> fd);
  // The sets, after dropping those no longer in use.
  const std::map<int64_t, Set>& sets();

  // Resolves "/dev/fdset/N" for an open with these O_ flags.  Throws
  // qapi::Error.
  UniqueFd dup_for_open(const std::string& path, int flags);

  static bool is_fdset_path(const std::string& path);

 private:
  void cleanup(int64_t id);
  std::map<int64_t, Set> sets_;
};

}  // namespace vstord
