#include "policy.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace vstord::broker {

namespace {

// Flags a request may carry; anything else (O_PATH, O_TMPFILE, ...) is
// refused with EINVAL.
constexpr unsigned kAllowedFlags = O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_NONBLOCK |
                                   O_DSYNC | O_SYNC | O_DIRECT | O_NOCTTY | O_NOFOLLOW |
                                   O_LARGEFILE | O_NOATIME;

// Whether path is absolute and has no "." or ".." component.
bool plain_absolute(const std::string& path) {
  if (path.empty() || path[0] != '/') return false;
  std::stringstream parts(path);
  std::string part;
  while (std::getline(parts, part, '/')) {
    if (part == "." || part == "..") return false;
  }
  return true;
}

}  // namespace

Policy Policy::load(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error(fmt::format("{}: {}", file, std::strerror(errno)));
  Policy p;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    std::stringstream words(line);
    std::string verb, access, dir, extra;
    words >> verb;
    if (verb.empty() || verb[0] == '#') continue;
    words >> access >> dir >> extra;
    if (verb != "allow" || dir.empty() || !extra.empty() ||
        (access != "r" && access != "w" && access != "rw")) {
      throw std::runtime_error(fmt::format("{}:{}: expected 'allow r|w|rw DIRECTORY'", file, n));
    }
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    if (!plain_absolute(dir)) {
      throw std::runtime_error(
          fmt::format("{}:{}: '{}' is not an absolute path without . or ..", file, n, dir));
    }
    p.rules_.push_back(
        Rule{dir, access.find('r') != std::string::npos, access.find('w') != std::string::npos});
  }
  return p;
}

const Rule* Policy::rule_for(const std::string& path) const {
  const Rule* best = nullptr;
  for (const Rule& r : rules_) {
    bool inside = r.dir == "/"
                      ? path.size() > 1
                      : path.size() > r.dir.size() + 1 &&
                            path.compare(0, r.dir.size(), r.dir) == 0 && path[r.dir.size()] == '/';
    if (inside && (!best || r.dir.size() > best->dir.size())) best = &r;
  }
  return best;
}

bool Policy::grants(const Rule& rule, unsigned flags) {
  unsigned acc = flags & O_ACCMODE;
  bool need_read = acc != O_WRONLY;
  bool need_write = acc != O_RDONLY || (flags & (O_CREAT | O_TRUNC | O_APPEND));
  return (!need_read || rule.read) && (!need_write || rule.write);
}

Policy::Decision Policy::open(const std::string& path, unsigned flags, unsigned mode) const {
  Decision d;
  if (flags & ~kAllowedFlags) {
    d.error = EINVAL;
    d.why = "flags the broker does not grant";
    return d;
  }
  if (!plain_absolute(path)) {
    d.error = EACCES;
    d.why = "not an absolute path without . or ..";
    return d;
  }
  const Rule* best = rule_for(path);
  if (!best) {
    d.error = EACCES;
    d.why = "outside every allowed directory";
    return d;
  }
  if (!grants(*best, flags)) {
    d.error = EACCES;
    d.why = fmt::format("rule for {} allows {}{} only", best->dir, best->read ? "r" : "",
                        best->write ? "w" : "");
    return d;
  }
  int dirfd = ::open(best->dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) {
    d.error = errno;
    d.why = fmt::format("cannot open {}: {}", best->dir, std::strerror(errno));
    return d;
  }
  std::string rel = path.substr(best->dir == "/" ? 1 : best->dir.size() + 1);
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  // No set-user-ID, set-group-ID or sticky bits for the daemon's files.
  how.mode = (flags & O_CREAT) ? (mode & 0777) : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  long fd;
  do {
    fd = syscall(SYS_openat2, dirfd, rel.c_str(), &how, sizeof(how));
  } while (fd < 0 && errno == EINTR);
  int err = errno;
  ::close(dirfd);
  if (fd < 0) {
    d.error = err;
    d.why = fmt::format("rule for {}: {}", best->dir, std::strerror(err));
    return d;
  }
  // A symbolic link that stays beneath the directory may still lead into
  // a subdirectory with a stricter rule: judge the file where it is.
  char real[PATH_MAX + 1];
  ssize_t n = readlink(fmt::format("/proc/self/fd/{}", fd).c_str(), real, PATH_MAX);
  const Rule* where = n > 0 ? rule_for(std::string(real, size_t(n))) : nullptr;
  if (!where || !grants(*where, flags)) {
    ::close(int(fd));
    d.error = EACCES;
    d.why = n > 0 ? fmt::format("resolves to {}, which the policy does not grant",
                                std::string(real, size_t(n)))
                  : "cannot tell where it resolves to";
    return d;
  }
  d.fd = int(fd);
  d.why = fmt::format("rule for {}", best->dir);
  return d;
}

std::string describe_flags(unsigned flags) {
  static const struct {
    unsigned bit;
    const char* name;
  } names[] = {{O_CREAT, "O_CREAT"},       {O_EXCL, "O_EXCL"},         {O_TRUNC, "O_TRUNC"},
               {O_APPEND, "O_APPEND"},     {O_NONBLOCK, "O_NONBLOCK"}, {O_SYNC, "O_SYNC"},
               {O_DSYNC, "O_DSYNC"},       {O_DIRECT, "O_DIRECT"},     {O_NOCTTY, "O_NOCTTY"},
               {O_NOFOLLOW, "O_NOFOLLOW"}, {O_NOATIME, "O_NOATIME"}};
  unsigned acc = flags & O_ACCMODE;
  std::string out = acc == O_RDONLY ? "O_RDONLY" : acc == O_WRONLY ? "O_WRONLY" : "O_RDWR";
  unsigned rest = flags & ~unsigned(O_ACCMODE);
  for (const auto& n : names) {
    // O_SYNC includes O_DSYNC's bit: name it once.
    if ((rest & n.bit) == n.bit) {
      out += "|";
      out += n.name;
      rest &= ~n.bit;
    }
  }
  rest &= ~unsigned(O_LARGEFILE);
  if (rest) out += fmt::format("|{:#o}", rest);
  return out;
}

}  // namespace vstord::broker
