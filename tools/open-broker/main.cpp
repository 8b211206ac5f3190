// vstord-open-broker: the reference broker for delegated opens.
//
//   vstord-open-broker --policy FILE [--log FILE] --fd N
//       answers the daemon on the inherited unix socket N
//   vstord-open-broker --policy FILE [--log FILE] -- COMMAND [ARG...]
//       runs COMMAND (vstord ... --open-hook-fd 3) with its end of a new
//       socket pair as descriptor 3, answers it, and exits with its status
//
// Every request is checked against the policy (policy.hpp), every decision
// logged one line each; refusals are answered -EACCES (or -EINVAL for flags
// the broker does not grant).  Requests are answered one at a time, in
// order.  The protocol is src/openhook/open_hook.x (docs/open-hook.md).

#include <fcntl.h>
#include <getopt.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "openhook/wire.hpp"
#include "policy.hpp"

using namespace vstord;
using namespace vstord::openhook;

namespace {

FILE* g_log = stderr;

template <class... Args>
void log(fmt::format_string<Args...> f, Args&&... args) {
  fmt::print(g_log, "vstord-open-broker: {}\n", fmt::format(f, std::forward<Args>(args)...));
  std::fflush(g_log);
}

[[noreturn]] void usage() {
  std::fputs(
      "usage: vstord-open-broker --policy FILE [--log FILE] --fd N\n"
      "       vstord-open-broker --policy FILE [--log FILE] -- COMMAND [ARG...]\n",
      stderr);
  std::exit(2);
}

// Answers requests until the daemon hangs up.  Returns false on a
// protocol error.
bool serve(int sock, const broker::Policy& policy) {
  for (;;) {
    std::vector<uint8_t> msg;
    std::vector<UniqueFd> fds;  // a daemon sends none; they are closed
    RecvStatus st = recv_message(sock, msg, fds, -1);
    if (st == RecvStatus::closed) return true;
    Header h;
    if (st != RecvStatus::ok || !decode_header(msg, h)) {
      log("malformed message from the daemon; hanging up");
      return false;
    }
    int32_t result;
    UniqueFd opened;
    OpenRequest req;
    if (h.command != kCommandOpen) {
      log("serial {}: unknown command {}: -ENOSYS", h.serial, h.command);
      result = -ENOSYS;
    } else if (!decode_open_request(msg, req)) {
      log("serial {}: malformed OPEN request: -EINVAL", h.serial);
      result = -EINVAL;
    } else {
      broker::Policy::Decision d = policy.open(req.filename, req.flags, req.mode);
      opened.reset(d.fd);
      result = d.fd >= 0 ? 0 : -d.error;
      log("serial {}: {} {} {} mode {:04o}: {}{}", h.serial, d.fd >= 0 ? "allow" : "deny",
          req.filename, broker::describe_flags(req.flags), req.mode, d.why,
          d.fd >= 0 ? "" : fmt::format(" (-{})", strerrorname_np(d.error) ?: "?"));
    }
    int ret = send_message(sock, encode_open_reply(h.serial, result), opened.get());
    if (ret < 0) {
      log("cannot answer the daemon: {}", std::strerror(-ret));
      return false;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string policy_file, log_file;
  int fd = -1;
  static const option longopts[] = {{"policy", required_argument, nullptr, 'p'},
                                    {"log", required_argument, nullptr, 'l'},
                                    {"fd", required_argument, nullptr, 'f'},
                                    {"help", no_argument, nullptr, 'h'},
                                    {nullptr, 0, nullptr, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "+h", longopts, nullptr)) != -1) {
    switch (c) {
      case 'p': policy_file = optarg; break;
      case 'l': log_file = optarg; break;
      case 'f': fd = std::atoi(optarg); break;
      default: usage();
    }
  }
  char** command = optind < argc ? argv + optind : nullptr;
  if (policy_file.empty() || (fd < 0) == !command) usage();
  if (!log_file.empty()) {
    g_log = std::fopen(log_file.c_str(), "ae");
    if (!g_log) {
      fmt::print(stderr, "vstord-open-broker: {}: {}\n", log_file, std::strerror(errno));
      return 1;
    }
  }
  broker::Policy policy;
  try {
    policy = broker::Policy::load(policy_file);
  } catch (const std::exception& e) {
    log("{}", e.what());
    return 1;
  }
  log("policy {}: {} rule(s)", policy_file, policy.rules().size());

  if (fd >= 0) return serve(fd, policy) ? 0 : 1;

  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
    log("socketpair: {}", std::strerror(errno));
    return 1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    log("fork: {}", std::strerror(errno));
    return 1;
  }
  if (pid == 0) {
    // dup2 clears close-on-exec on the copy; a descriptor already at 3
    // needs it cleared by hand.
    if (pair[1] == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(pair[1], 3) < 0) _exit(127);
    execvp(command[0], command);
    fmt::print(stderr, "vstord-open-broker: {}: {}\n", command[0], std::strerror(errno));
    _exit(127);
  }
  ::close(pair[1]);
  bool ok = serve(pair[0], policy);
  ::close(pair[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!ok) return 1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
