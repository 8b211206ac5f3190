// vstord: start-up, daemonizing, the pidfile, signals, and the main loop.

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <csignal>
#include <cstring>

#include "daemon/cli.hpp"
#include "daemon/daemon.hpp"
#include "daemon/startup.hpp"
#include "net/open.hpp"
#include "qapi/error.hpp"
#include "util/unique_fd.hpp"

namespace asio = boost::asio;
using namespace vstord;

namespace {

const char* g_prog = "vstord";

[[noreturn]] void die(const std::string& where, const std::string& msg,
                      const std::string& hint = {}) {
  if (where.empty()) {
    fmt::print(stderr, "{}: {}\n", g_prog, msg);
  } else {
    fmt::print(stderr, "{}: {}: {}\n", g_prog, where, msg);
  }
  if (!hint.empty()) fmt::print(stderr, "{}\n", hint);
  std::fflush(stderr);
  _exit(1);
}

// The pidfile: created, locked for the daemon's whole life (a second
// instance with the same pidfile fails), and removed at exit.
class PidFile {
 public:
  void create(Daemon& daemon, const std::string& path) {
    openhook::Result r = try_open_path(daemon, path, O_WRONLY | O_CREAT, 0600);
    if (!r.fd) {
      die("", fmt::format("cannot create PID file: Could not create '{}': {}", path, r.why));
    }
    UniqueFd fd = std::move(r.fd);
    struct flock lk {};
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    if (fcntl(fd.get(), F_SETLK, &lk) < 0) {
      die("",
          fmt::format("cannot create PID file: Cannot lock pid file: {}", std::strerror(errno)));
    }
    std::string pid = fmt::format("{}\n", getpid());
    if (ftruncate(fd.get(), 0) < 0 ||
        ::write(fd.get(), pid.data(), pid.size()) != ssize_t(pid.size())) {
      die("", "cannot create PID file: Failed to write pid file");
    }
    char* real = realpath(path.c_str(), nullptr);
    path_ = real ? real : path;
    std::free(real);
    fd_ = std::move(fd);
  }
  ~PidFile() {
    if (fd_) ::unlink(path_.c_str());
  }

 private:
  std::string path_;
  UniqueFd fd_;
};

// --daemonize: the parent waits for one byte that says start-up succeeded;
// if the daemon dies first, the pipe closes empty and the parent exits 1.
int daemonize_begin() {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) die("", "cannot create pipe");
  pid_t pid = fork();
  if (pid < 0) die("", "fork failed");
  if (pid > 0) {
    ::close(p[1]);
    char status = 1;
    ssize_t n;
    do {
      n = ::read(p[0], &status, 1);
    } while (n < 0 && errno == EINTR);
    _exit(n == 1 && status == 0 ? 0 : 1);
  }
  ::close(p[0]);
  setsid();
  pid = fork();
  if (pid < 0) _exit(1);
  if (pid > 0) _exit(0);
  umask(027);
  return p[1];
}

void daemonize_finish(int fd) {
  if (chdir("/") < 0) {
    // Not fatal: the daemon keeps working in its old directory.
  }
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    ::close(null);
  }
  char ok = 0;
  if (::write(fd, &ok, 1) != 1) _exit(1);
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* slash = std::strrchr(argv[0], '/')) g_prog = slash + 1;
  CommandLine cl = parse_command_line(argc, argv);

  auto level = spdlog::level::from_str(cl.log_level);
  if (level == spdlog::level::off && cl.log_level != "off") {
    die("", fmt::format("--log-level: unknown level '{}'", cl.log_level));
  }
  auto logger = spdlog::stderr_color_mt("vstord");
  spdlog::set_default_logger(logger);
  spdlog::set_level(level);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  std::signal(SIGPIPE, SIG_IGN);

  int ready_fd = cl.daemonize ? daemonize_begin() : -1;

  asio::io_context io;
  Daemon daemon(io);
  if (cl.daemonize) daemon.set_daemonized();
  daemon.activated().take_from_environment();
  if (cl.open_hook_timeout) {
    daemon.set_open_hook_timeout(std::chrono::milliseconds(int64_t(*cl.open_hook_timeout * 1000)));
  }
  if (cl.open_hook_fd) {
    std::string where = fmt::format("--open-hook-fd {}", *cl.open_hook_fd);
    if (fcntl(*cl.open_hook_fd, F_GETFD) < 0) die(where, "not an open file descriptor");
    try {
      openhook::OpenHook::check_socket(*cl.open_hook_fd);
      daemon.enable_open_hook().attach(UniqueFd(*cl.open_hook_fd));
    } catch (const qapi::Error& e) {
      die(where, e.what());
    }
  }
  PidFile pidfile;

  asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (!ec) daemon.request_shutdown(qapi::ShutdownCause::host_signal);
  });

  // Options run in order; the pidfile is written once all of them are
  // done and before any client is served, so scripts can wait for it.
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (const CliOption& opt : cl.options) {
          // The option's name only: its arguments may hold secrets.
          daemon.notifier().status("Starting: --" + opt.name);
          try {
            co_await run_option(daemon, opt);
          } catch (const qapi::Error& e) {
            die(opt.as_given, e.what(), e.hint());
          }
        }
        if (cl.pidfile) pidfile.create(daemon, *cl.pidfile);
        if (ready_fd >= 0) daemonize_finish(ready_fd);
        // Every listener, chardev, node and export of the command line is
        // up: the service manager may start what depends on them.
        daemon.notifier().ready(fmt::format("Running: {} chardev(s), {} block export(s)",
                                            daemon.chardevs().all().size(),
                                            daemon.exports().query().size()));
        spdlog::info("ready");
      },
      [](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          die("", ex.what());
        }
      });
  io.run();
  signals.cancel();
  return 0;
}
