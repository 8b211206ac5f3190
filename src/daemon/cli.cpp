#include "daemon/cli.hpp"

#include <fmt/format.h>
#include <getopt.h>

#include <climits>
#include <cstdlib>
#include <cstring>

#include "daemon/daemon.hpp"

namespace vstord {

namespace {
const char* g_program_name = "vstord";
}

const char* program_name() {
  return g_program_name;
}

void print_warning(const std::string& location, const std::string& message,
                   const std::string& hint) {
  fmt::print(stderr, "{}: {}: warning: {}\n", g_program_name, location, message);
  if (!hint.empty()) fmt::print(stderr, "{}\n", hint);
}

std::string help_text(const char* prog) {
  return fmt::format(
      "Usage: {} [options]\n"
      "vstord, a QMP-managed storage daemon (qemu-storage-daemon compatible)\n"
      "\n"
      "  -h, --help             display this help and exit\n"
      "  -V, --version          output version information and exit\n"
      "  --log-level <level>    trace, debug, info, warn (default), error or off\n"
      "\n"
      "  --blockdev [driver=]<driver>[,node-name=<N>][,discard=ignore|unmap]\n"
      "             [,cache.direct=on|off][,cache.no-flush=on|off]\n"
      "             [,read-only=on|off][,auto-read-only=on|off]\n"
      "             [,force-share=on|off][,detect-zeroes=on|off|unmap]\n"
      "             [,driver specific parameters...]\n"
      "                         configure a block backend\n"
      "\n"
      "  --chardev <options>    configure a character device backend\n"
      "                         (socket,id=<id>,path=<path>,server=on,wait=off;\n"
      "                         socket,id=<id>,host=<host>,port=<port>,server=on,wait=off)\n"
      "\n"
      "  --daemonize            daemonize the process, and have the parent exit\n"
      "                         once startup is complete\n"
      "\n"
      "  --export [type=]nbd,id=<id>,node-name=<node-name>[,name=<export-name>]\n"
      "           [,writable=on|off][,bitmap=<name>]\n"
      "                         export the specified block node over NBD\n"
      "                         (requires --nbd-server)\n"
      "\n"
      "  --monitor [chardev=]name[,mode=control][,pretty[=on|off]]\n"
      "                         configure a QMP monitor\n"
      "\n"
      "  --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>\n"
      "               [,tls-creds=<id>][,tls-authz=<id>][,max-connections=<n>]\n"
      "  --nbd-server addr.type=unix,addr.path=<path>\n"
      "               [,tls-creds=<id>][,tls-authz=<id>][,max-connections=<n>]\n"
      "                         start an NBD server for exporting block nodes\n"
      "\n"
      "  --object <type>[,<property>=<value>...]\n"
      "                         create a new object of type <type>, setting\n"
      "                         properties in the order they are specified. Note\n"
      "                         that the 'id' property must be set.\n"
      "\n"
      "  --pidfile <path>       write process ID to a file after startup\n"
      "\n"
      "  --open-hook-fd <fd>    ask the broker on unix socket <fd> to open every\n"
      "                         path instead of opening it (docs/open-hook.md)\n"
      "  --open-hook-timeout <seconds>\n"
      "                         how long to wait for the broker (default 10)\n"
      "\n"
      "Options other than -h, -V, --daemonize, --pidfile, --open-hook-* and\n"
      "--log-level are\n"
      "carried out in the order given: define things before referring to them.\n",
      prog);
}

CommandLine parse_command_line(int argc, char** argv) {
  enum {
    kBlockdev = 256,
    kChardev,
    kDaemonize,
    kExport,
    kMonitor,
    kNbdServer,
    kObject,
    kPidfile,
    kLogLevel,
    kOpenHookFd,
    kOpenHookTimeout,
  };
  static const option longopts[] = {
      {"blockdev", required_argument, nullptr, kBlockdev},
      {"chardev", required_argument, nullptr, kChardev},
      {"daemonize", no_argument, nullptr, kDaemonize},
      {"export", required_argument, nullptr, kExport},
      {"help", no_argument, nullptr, 'h'},
      {"log-level", required_argument, nullptr, kLogLevel},
      {"monitor", required_argument, nullptr, kMonitor},
      {"nbd-server", required_argument, nullptr, kNbdServer},
      {"object", required_argument, nullptr, kObject},
      {"open-hook-fd", required_argument, nullptr, kOpenHookFd},
      {"open-hook-timeout", required_argument, nullptr, kOpenHookTimeout},
      {"pidfile", required_argument, nullptr, kPidfile},
      {"version", no_argument, nullptr, 'V'},
      {nullptr, 0, nullptr, 0},
  };
  const char* prog = std::strrchr(argv[0], '/') ? std::strrchr(argv[0], '/') + 1 : argv[0];
  g_program_name = prog;
  CommandLine cl;
  bool help = false, version = false;
  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, "-hV", longopts, nullptr)) != -1) {
    auto add = [&](const char* name) {
      cl.options.push_back(CliOption{name, optarg, fmt::format("--{} {}", name, optarg)});
    };
    switch (c) {
      case 'h': help = true; break;
      case 'V': version = true; break;
      case kDaemonize: cl.daemonize = true; break;
      case kPidfile: cl.pidfile = optarg; break;
      case kLogLevel: cl.log_level = optarg; break;
      case kOpenHookFd: {
        char* end = nullptr;
        long fd = std::strtol(optarg, &end, 10);
        if (!*optarg || *end || fd < 0 || fd > INT_MAX) {
          fmt::print(stderr, "{}: --open-hook-fd {}: expected a descriptor number\n", prog, optarg);
          std::exit(1);
        }
        cl.open_hook_fd = int(fd);
        break;
      }
      case kOpenHookTimeout: {
        char* end = nullptr;
        double secs = std::strtod(optarg, &end);
        if (!*optarg || *end || !(secs >= 0.001) || secs > 3600) {
          fmt::print(stderr, "{}: --open-hook-timeout {}: expected seconds in [0.001, 3600]\n",
                     prog, optarg);
          std::exit(1);
        }
        cl.open_hook_timeout = secs;
        break;
      }
      case kBlockdev: add("blockdev"); break;
      case kChardev: add("chardev"); break;
      case kExport: add("export"); break;
      case kMonitor: add("monitor"); break;
      case kNbdServer: add("nbd-server"); break;
      case kObject: add("object"); break;
      case 1: fmt::print(stderr, "{}: {}: Unexpected argument\n", prog, optarg); std::exit(1);
      default:  // getopt printed why
        std::exit(1);
    }
  }
  if (help) {
    fmt::print("{}", help_text(prog));
    std::exit(0);
  }
  if (version) {
    fmt::print("{} version {} (QEMU QAPI level {}.{}.{})\n", prog, DaemonVersion::package() + 7,
               DaemonVersion::qemu_major, DaemonVersion::qemu_minor, DaemonVersion::qemu_micro);
    std::exit(0);
  }
  return cl;
}

}  // namespace vstord
