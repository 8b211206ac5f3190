// The daemon: the main io_context and the registries every subsystem
// reaches through it (character devices, monitors, fd sets), plus the
// shutdown sequence.
//
// Everything here runs on the main thread.  Subsystems get the Daemon from
// their CommandContext; nothing else is global.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "block/block.hpp"
#include "chardev/chardev.hpp"
#include "daemon/iothread.hpp"
#include "daemon/systemd.hpp"
#include "export/export.hpp"
#include "net/fdsets.hpp"
#include "openhook/client.hpp"
#include "qapi-types.hpp"

namespace vstord {

class Monitor;
namespace nbd {
class Server;
}

// The version the daemon reports, and the QEMU QAPI level whose wire
// behaviour it follows (see README).
struct DaemonVersion {
  static constexpr int qemu_major = 9;
  static constexpr int qemu_minor = 2;
  static constexpr int qemu_micro = 0;
  static const char* package();  // "vstord X.Y.Z"
};

class Daemon {
 public:
  explicit Daemon(boost::asio::io_context& io);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  boost::asio::io_context& io() { return io_; }
  FdSets& fdsets() { return fdsets_; }
  ChardevRegistry& chardevs() { return chardevs_; }
  BlockGraph& block() { return block_; }
  ExportRegistry& exports() { return exports_; }
  IoThreads& iothreads() { return iothreads_; }
  // The NBD server, when started.
  std::shared_ptr<nbd::Server> nbd_server() const { return nbd_server_; }
  void set_nbd_server(std::shared_ptr<nbd::Server> server) { nbd_server_ = std::move(server); }

  // Delegated opens (--open-hook-fd, open-hook-attach); null when off.
  openhook::OpenHook* open_hook() const { return open_hook_.get(); }
  // Turns delegated opens on (once); OPEN_HOOK_LOST is sent whenever the
  // broker is dropped.  The time-out is --open-hook-timeout's.
  openhook::OpenHook& enable_open_hook();
  void set_open_hook_timeout(std::chrono::milliseconds t) { open_hook_timeout_ = t; }

  // Socket activation and the service manager (systemd).
  ActivatedSockets& activated() { return activated_; }
  ServiceNotifier& notifier() { return notifier_; }

  // User-created objects (--object, object-add), by id.
  void add_object(qapi::ObjectOptions opts);
  const qapi::ObjectOptions* find_object(const std::string& id) const;

  // Monitors register themselves; events go to every one in command mode.
  void add_monitor(std::shared_ptr<Monitor> mon);
  const std::vector<std::shared_ptr<Monitor>>& monitors() const { return monitors_; }

  // Asks for a clean shutdown; the first cause wins.  Runs the shutdown
  // sequence on the io_context: SHUTDOWN event, output drained, listeners
  // closed, socket files and pidfile removed, io_context stopped.
  void request_shutdown(qapi::ShutdownCause cause);
  bool shutting_down() const { return shutdown_cause_.has_value(); }

  // Set with --daemonize: standard input and output are /dev/null.
  bool daemonized() const { return daemonized_; }
  void set_daemonized() { daemonized_ = true; }

  // Run at shutdown, in reverse order of registration.
  void at_shutdown(std::function<void()> fn) { shutdown_hooks_.push_back(std::move(fn)); }

 private:
  boost::asio::awaitable<void> shutdown_sequence();
  void close_block_layer();

  boost::asio::io_context& io_;
  FdSets fdsets_;
  ChardevRegistry chardevs_;
  // Declared so that teardown runs exports, then nodes, then threads.
  IoThreads iothreads_;
  BlockGraph block_{*this};
  ExportRegistry exports_{*this};
  std::shared_ptr<nbd::Server> nbd_server_;
  std::unique_ptr<openhook::OpenHook> open_hook_;
  ActivatedSockets activated_;
  ServiceNotifier notifier_{io_};
  std::chrono::milliseconds open_hook_timeout_ = std::chrono::seconds(10);
  std::vector<std::shared_ptr<Monitor>> monitors_;
  std::map<std::string, qapi::ObjectOptions> objects_;
  std::optional<qapi::ShutdownCause> shutdown_cause_;
  bool daemonized_ = false;
  std::vector<std::function<void()>> shutdown_hooks_;
};

}  // namespace vstord
