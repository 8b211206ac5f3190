// The broker's policy: which directories a daemon may open files under,
// and how.  One rule per line of the policy file:
//
//   # comment
//   allow rw /srv/images
//   allow r  /etc/vstord
//
// A path is allowed by the rule with the longest directory that contains
// it (component by component); the open itself is resolved beneath that
// directory (openat2 RESOLVE_BENEATH), so neither ".." nor a symbolic link
// can lead out of it, and the file it reached is judged again by where it
// is, so a link cannot lead into a subdirectory with a stricter rule.
#pragma once

#include <string>
#include <vector>

namespace vstord::broker {

struct Rule {
  std::string dir;  // absolute, without a trailing slash
  bool read = false, write = false;
};

class Policy {
 public:
  // Throws std::runtime_error "FILE:LINE: why".
  static Policy load(const std::string& file);

  // The outcome of one request: a descriptor, or -errno; why says which
  // rule decided, for the log.
  struct Decision {
    int fd = -1;
    int error = 0;
    std::string why;
  };
  Decision open(const std::string& path, unsigned flags, unsigned mode) const;

  const std::vector<Rule>& rules() const { return rules_; }

 private:
  // The rule with the longest directory containing path, or null.
  const Rule* rule_for(const std::string& path) const;
  static bool grants(const Rule& rule, unsigned flags);

  std::vector<Rule> rules_;
};

// "O_RDWR|O_CREAT" for the log.
std::string describe_flags(unsigned flags);

}  // namespace vstord::broker
