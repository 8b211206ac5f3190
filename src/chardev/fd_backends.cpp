// Backends on plain descriptors: 'file', 'pipe', 'serial', 'parallel',
// 'stdio' and 'pty'.  Each opens its descriptors when created (so errors
// reach chardev-add at once) and moves bytes with an FdStream.

#include <fcntl.h>
#include <linux/ppdev.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cerrno>
#include <cstring>

#include "chardev/backends.hpp"
#include "chardev/fd_stream.hpp"
#include "daemon/daemon.hpp"
#include "net/open.hpp"
#include "qapi/error.hpp"

namespace vstord {

namespace asio = boost::asio;

namespace {

// A backend whose bytes flow through one FdStream for its whole life.
class FdChardev : public Chardev {
 public:
  FdChardev(Daemon& daemon, const std::string& id, UniqueFd in, UniqueFd out, std::string filename)
      : Chardev(id),
        daemon_(daemon),
        in_(std::move(in)),
        out_(std::move(out)),
        filename_(std::move(filename)) {}
  ~FdChardev() override { close(); }

  asio::awaitable<void> open() override {
    start_stream();
    co_return;
  }
  std::string filename() const override { return filename_; }
  void accept_input() override {
    if (stream_) stream_->accept_input();
  }
  size_t pending_output() const override { return stream_ ? stream_->pending_output() : 0; }
  asio::awaitable<void> drain(std::chrono::milliseconds limit) override {
    if (stream_) co_await stream_->drain(limit);
  }
  void close_backend() override {
    if (stream_) stream_->close();
  }

 protected:
  void backend_write(std::string data) override {
    if (stream_) stream_->write(std::move(data));
  }

  void start_stream() {
    std::weak_ptr<Chardev> weak = weak_from_this();
    FdStream::Options o;
    o.frontend = [weak]() -> ChardevFrontend* {
      auto self = weak.lock();
      return self ? self->frontend() : nullptr;
    };
    stream_ = std::make_shared<FdStream>(daemon_.io(), std::move(in_), std::move(out_), o);
    stream_->start();
  }

  Daemon& daemon_;
  UniqueFd in_, out_;
  std::string filename_;
  std::shared_ptr<FdStream> stream_;
};

// Puts a terminal in raw mode; returns the settings to restore, if it is
// a terminal.
std::optional<termios> make_raw(int fd, bool keep_signals) {
  termios tio;
  if (tcgetattr(fd, &tio) < 0) return std::nullopt;  // not a terminal
  termios saved = tio;
  cfmakeraw(&tio);
  if (keep_signals) tio.c_lflag |= ISIG;
  tcsetattr(fd, TCSANOW, &tio);
  return saved;
}

// --- stdio: the daemon's own terminal, given back as it was found.
class StdioChardev final : public FdChardev {
 public:
  StdioChardev(Daemon& daemon, const std::string& id, UniqueFd in, UniqueFd out,
               std::optional<termios> saved)
      : FdChardev(daemon, id, std::move(in), std::move(out), "stdio"), saved_(saved) {}
  ~StdioChardev() override { close(); }
  void close_backend() override {
    FdChardev::close_backend();
    if (saved_) tcsetattr(0, TCSANOW, &*saved_);
    saved_.reset();
    in_use = false;
  }
  static inline bool in_use = false;

 private:
  std::optional<termios> saved_;
};

// --- pty: the master side; output is dropped while nobody has the slave
// open (QEMU does the same), and input starts when someone opens it.
class PtyChardev final : public FdChardev {
 public:
  PtyChardev(Daemon& daemon, const std::string& id, UniqueFd master, std::string slave,
             std::optional<std::string> link)
      : FdChardev(daemon, id, {}, {}, "pty:" + slave),
        master_(std::move(master)),
        slave_(std::move(slave)),
        link_(std::move(link)),
        poll_(daemon.io()) {}
  ~PtyChardev() override { close(); }

  qapi::ChardevReturn info() const override { return qapi::ChardevReturn{slave_}; }
  bool connected() const override { return stream_ && !stream_->closed(); }

  asio::awaitable<void> open() override {
    auto self = std::static_pointer_cast<PtyChardev>(shared_from_this());
    asio::co_spawn(daemon_.io(), watch(self), asio::detached);
    co_return;
  }

  void close_backend() override {
    closed_ = true;
    poll_.cancel();
    FdChardev::close_backend();
    master_.reset();
    if (link_) ::unlink(link_->c_str());
    link_.reset();
  }

 protected:
  void backend_write(std::string data) override {
    if (connected()) FdChardev::backend_write(std::move(data));
  }

 private:
  // A pty master reports HUP while no slave is open: poll until one opens,
  // serve it, and go back to polling when it closes.
  static asio::awaitable<void> watch(std::shared_ptr<PtyChardev> self) {
    while (!self->closed_) {
      if (!self->connected() && self->master_ && slave_open(self->master_.get())) {
        self->in_ = UniqueFd(fcntl(self->master_.get(), F_DUPFD_CLOEXEC, 0));
        self->start_stream();
        self->send_event(ChrEvent::opened);
      } else if (self->stream_ && self->stream_->closed() && self->was_connected_) {
        self->stream_.reset();
        self->send_event(ChrEvent::closed);
      }
      self->was_connected_ = self->connected();
      self->poll_.expires_after(std::chrono::milliseconds(100));
      co_await self->poll_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  static bool slave_open(int master) {
    pollfd p{master, POLLIN, 0};
    return ::poll(&p, 1, 0) >= 0 && !(p.revents & POLLHUP);
  }

  UniqueFd master_;
  std::string slave_;
  std::optional<std::string> link_;
  asio::steady_timer poll_;
  bool closed_ = false;
  bool was_connected_ = false;
};

}  // namespace

std::shared_ptr<Chardev> chardev_file_new(Daemon& daemon, const std::string& id,
                                          const qapi::ChardevFile& opts) {
  int flags = O_WRONLY | O_CREAT | (opts.append.value_or(false) ? O_APPEND : O_TRUNC);
  UniqueFd out = open_path(daemon, opts.out, flags, 0666);
  UniqueFd in;
  if (opts.in) in = open_path(daemon, *opts.in, O_RDONLY);
  return std::make_shared<FdChardev>(daemon, id, std::move(in), std::move(out), "file");
}

std::shared_ptr<Chardev> chardev_pipe_new(Daemon& daemon, const std::string& id,
                                          const qapi::ChardevHostdev& opts) {
  // PATH.in and PATH.out when both exist, else PATH itself both ways.
  // Opened without blocking for a peer (O_RDWR keeps a FIFO open).
  UniqueFd in, out;
  try {
    in = open_path(daemon, opts.device + ".in", O_RDWR | O_NONBLOCK);
    out = open_path(daemon, opts.device + ".out", O_RDWR | O_NONBLOCK);
  } catch (const qapi::Error&) {
    in.reset();
    out.reset();
    in = open_path(daemon, opts.device, O_RDWR | O_NONBLOCK);
  }
  return std::make_shared<FdChardev>(daemon, id, std::move(in), std::move(out), "pipe");
}

std::shared_ptr<Chardev> chardev_serial_new(Daemon& daemon, const std::string& id,
                                            const qapi::ChardevHostdev& opts, bool parallel) {
  UniqueFd fd = open_path(daemon, opts.device, O_RDWR | O_NONBLOCK | O_NOCTTY);
  if (parallel && ioctl(fd.get(), PPCLAIM) < 0) {
    qapi::fail("not a parallel port: {}", std::strerror(errno));
  }
  if (!parallel) make_raw(fd.get(), false);
  return std::make_shared<FdChardev>(daemon, id, std::move(fd), UniqueFd{},
                                     parallel ? "parallel" : "serial");
}

std::shared_ptr<Chardev> chardev_stdio_new(Daemon& daemon, const std::string& id,
                                           const qapi::ChardevStdio& opts) {
  if (StdioChardev::in_use) qapi::fail("cannot use stdio by multiple character devices");
  if (daemon.daemonized()) qapi::fail("cannot use stdio with -daemonize");
  // Our own copies, so closing the device leaves the process's stdio alone.
  UniqueFd in(fcntl(0, F_DUPFD_CLOEXEC, 0));
  UniqueFd out(fcntl(1, F_DUPFD_CLOEXEC, 0));
  if (!in || !out) qapi::fail("cannot use stdio: {}", std::strerror(errno));
  auto saved = make_raw(in.get(), opts.signal.value_or(true));
  StdioChardev::in_use = true;
  return std::make_shared<StdioChardev>(daemon, id, std::move(in), std::move(out), saved);
}

std::shared_ptr<Chardev> chardev_pty_new(Daemon& daemon, const std::string& id,
                                         const qapi::ChardevPty& opts) {
  int master = -1, slave = -1;
  char name[256];
  if (openpty(&master, &slave, name, nullptr, nullptr) < 0) {
    qapi::fail("Failed to create PTY: {}", std::strerror(errno));
  }
  UniqueFd m(master);
  fcntl(master, F_SETFD, FD_CLOEXEC);
  fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
  make_raw(slave, false);
  ::close(slave);  // until a reader opens it, the master sees HUP
  std::optional<std::string> link;
  if (opts.path) {
    if (::symlink(name, opts.path->c_str()) < 0) {
      qapi::fail("Failed to create symlink to PTY: {}", std::strerror(errno));
    }
    link = *opts.path;
  }
  spdlog::info("char device redirected to {} (label {})", name, id);
  return std::make_shared<PtyChardev>(daemon, id, std::move(m), name, std::move(link));
}

}  // namespace vstord
