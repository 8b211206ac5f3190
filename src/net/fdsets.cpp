#include "net/fdsets.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "qapi/error.hpp"

namespace vstord {

namespace {

constexpr std::string_view kPrefix = "/dev/fdset/";

// Whether descriptor fd is open on the file (dev, ino).  A number reused
// for another open of the same file counts as in use: the set then lives
// until that closes too.
bool open_on(int fd, uint64_t dev, uint64_t ino) {
  struct stat st;
  return fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

}  // namespace

bool FdSets::is_fdset_path(const std::string& path) {
  return path.starts_with(kPrefix);
}

std::pair<int64_t, int> FdSets::add(std::optional<int64_t> id, UniqueFd fd,
                                    std::optional<std::string> opaque) {
  if (id && *id < 0) qapi::fail("Parameter 'fdset-id' expects a non-negative value");
  int64_t set_id = 0;
  if (id) {
    set_id = *id;
  } else {
    // The lowest id not in use, as QEMU picks it.
    sets();
    while (sets_.contains(set_id)) ++set_id;
  }
  int num = fd.get();
  sets_[set_id].fds.push_back(Entry{std::move(fd), std::move(opaque)});
  return {set_id, num};
}

void FdSets::remove(int64_t id, std::optional<int64_t> fd) {
  auto it = sets_.find(id);
  bool found = false;
  if (it != sets_.end()) {
    found =
        std::erase_if(it->second.fds, [&](const Entry& e) { return !fd || e.fd.get() == *fd; }) > 0;
  }
  if (!found) {
    if (fd) qapi::fail("File descriptor named 'fdset-id:{}, fd:{}' not found", id, *fd);
    qapi::fail("File descriptor named 'fdset-id:{}' not found", id);
  }
  cleanup(id);
}

void FdSets::cleanup(int64_t id) {
  auto it = sets_.find(id);
  if (it == sets_.end()) return;
  Set& set = it->second;
  // A duplicate whose number is closed, or now names another file, is
  // gone.
  std::erase_if(set.dups, [](const Set::Dup& d) { return !open_on(d.fd, d.dev, d.ino); });
  if (set.fds.empty() && set.dups.empty()) sets_.erase(it);
}

const std::map<int64_t, FdSets::Set>& FdSets::sets() {
  std::vector<int64_t> ids;
  for (const auto& [id, set] : sets_) ids.push_back(id);
  for (int64_t id : ids) cleanup(id);
  return sets_;
}

UniqueFd FdSets::dup_for_open(const std::string& path, int flags) {
  std::string num = path.substr(kPrefix.size());
  char* end = nullptr;
  errno = 0;
  long long id = std::strtoll(num.c_str(), &end, 10);
  if (num.empty() || *end != '\0' || errno != 0) qapi::fail("Could not parse fdset {}", num);
  cleanup(id);
  auto it = sets_.find(id);
  if (it == sets_.end()) qapi::fail("Could not find fdset {}", id);
  // Access mode and O_DIRECT must match (QEMU 9.1): a descriptor opened
  // without O_DIRECT would quietly give cached I/O to cache.direct=on.
  const int match = O_ACCMODE | O_DIRECT;
  for (auto& e : it->second.fds) {
    int fl = fcntl(e.fd.get(), F_GETFL);
    if (fl < 0 || (fl & match) != (flags & match)) continue;
    UniqueFd d(fcntl(e.fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!d) qapi::fail("Failed to dup() file descriptor: {}", strerror(errno));
    // The open's other flags apply to the duplicate (and so to the open
    // file it shares), as qemu_dup_flags does.
    const int settable = O_APPEND | O_NONBLOCK | O_NOATIME | O_ASYNC;
    if (fcntl(d.get(), F_SETFL, (fl & ~settable) | (flags & settable)) < 0 ||
        ((flags & O_TRUNC) && ftruncate(d.get(), 0) < 0)) {
      qapi::fail("Could not set up a descriptor of fdset {}: {}", id, strerror(errno));
    }
    struct stat st;
    if (fstat(d.get(), &st) < 0) qapi::fail("Could not stat fdset {}: {}", id, strerror(errno));
    it->second.dups.push_back(Set::Dup{d.get(), uint64_t(st.st_dev), uint64_t(st.st_ino)});
    return d;
  }
  qapi::fail("Failed to find file descriptor with matching flags={:#x}", flags);
}

}  // namespace vstord
