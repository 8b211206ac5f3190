// The command line: qemu-storage-daemon's options, plus --log-level.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace vstord {

struct CliOption {
  std::string name;  // "chardev", "monitor", ...
  std::string arg;
  std::string as_given;  // "--chardev socket,id=m0" for error messages
};

struct CommandLine {
  std::vector<CliOption> options;  // carried out in this order
  std::optional<std::string> pidfile;
  std::optional<int> open_hook_fd;          // --open-hook-fd
  std::optional<double> open_hook_timeout;  // --open-hook-timeout, seconds
  bool daemonize = false;
  std::string log_level = "warn";
};

// Parses argv.  Prints help or the version and exits for -h / -V; prints
// an error and exits 1 for unknown options and missing arguments.
CommandLine parse_command_line(int argc, char** argv);

std::string help_text(const char* prog);

// The name the daemon was started as (argv[0] without its directory), for
// messages in QEMU's "PROG: LOCATION: message" form.
const char* program_name();

// Prints "PROG: LOCATION: warning: MESSAGE" and the hint, as QEMU does.
void print_warning(const std::string& location, const std::string& message,
                   const std::string& hint = {});

}  // namespace vstord
