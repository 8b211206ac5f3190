#include "net/fdsets.hpp"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "qapi/error.hpp"

namespace vstord {

namespace {
constexpr std::string_view kPrefix = "/dev/fdset/";
}

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
    while (sets_.contains(set_id)) ++set_id;
  }
  int num = fd.get();
  sets_[set_id].fds.push_back(Entry{std::move(fd), std::move(opaque), false});
  return {set_id, num};
}

void FdSets::remove(int64_t id, std::optional<int64_t> fd) {
  auto it = sets_.find(id);
  bool found = false;
  if (it != sets_.end()) {
    for (auto& e : it->second.fds) {
      if (!fd || e.fd.get() == *fd) {
        e.removed = true;
        found = true;
      }
    }
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
  // Removed descriptors go once no duplicate of the set is in use.
  if (set.dups.empty()) {
    std::erase_if(set.fds, [](const Entry& e) { return e.removed; });
  }
  if (set.fds.empty() && set.dups.empty()) sets_.erase(it);
}

UniqueFd FdSets::dup_for_open(const std::string& path, int flags) {
  std::string num = path.substr(kPrefix.size());
  char* end = nullptr;
  errno = 0;
  long long id = std::strtoll(num.c_str(), &end, 10);
  if (num.empty() || *end != '\0' || errno != 0) qapi::fail("Could not parse fdset {}", num);
  auto it = sets_.find(id);
  if (it == sets_.end()) qapi::fail("Could not find fdset {}", id);
  int want = flags & O_ACCMODE;
  for (auto& e : it->second.fds) {
    if (e.removed) continue;
    int fl = fcntl(e.fd.get(), F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) != want) continue;
    int d = fcntl(e.fd.get(), F_DUPFD_CLOEXEC, 0);
    if (d < 0) qapi::fail("Failed to dup() file descriptor: {}", strerror(errno));
    it->second.dups.push_back(d);
    return UniqueFd(d);
  }
  qapi::fail("Failed to find file descriptor in fdset {} with matching access mode", id);
}

void FdSets::release_dup(int fd) {
  for (auto it = sets_.begin(); it != sets_.end(); ++it) {
    auto& dups = it->second.dups;
    auto d = std::find(dups.begin(), dups.end(), fd);
    if (d != dups.end()) {
      dups.erase(d);
      cleanup(it->first);
      return;
    }
  }
}

}  // namespace vstord
