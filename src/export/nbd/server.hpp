// The NBD server: one listener (nbd-server-start / --nbd-server), the NBD
// exports by name, and the client connections.
//
// Threads: the listener accepts on the main thread and hands each client
// to an iothread (the default pool, round robin) where its whole session
// runs; a session that selects an export with its own iothread moves
// there.  The name table and the connection list are read from iothreads,
// under exports_lock_ and conns_lock_.
#pragma once

#include <boost/asio/posix/stream_descriptor.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "export/export.hpp"
#include "net/socket_address.hpp"

namespace vstord {

class DirtyBitmap;
class IoThread;

namespace nbd {

class Connection;
class Server;

class Export final : public BlockExport {
 public:
  Export(ExportRegistry& registry, const qapi::BlockExportOptions& opts, BlockUser user,
         std::shared_ptr<Server> server);
  ~Export() override;

  const std::string& name() const { return name_; }
  const std::optional<std::string>& description() const { return description_; }
  bool allocation_depth() const { return allocation_depth_; }
  // Bitmaps offered as "qemu:dirty-bitmap:NAME", in the order given.
  const std::vector<std::shared_ptr<DirtyBitmap>>& bitmaps() const { return bitmaps_; }
  uint16_t transmission_flags() const;
  uint32_t min_block_size() const { return node().request_alignment(); }

  // A session selected this export; false once it is shutting down.
  bool attach(const std::shared_ptr<Connection>& conn);
  void detach(Connection* conn);

  size_t clients() const override;
  void shutdown() override;

 private:
  std::shared_ptr<Server> server_;
  std::string name_;
  std::optional<std::string> description_;
  bool allocation_depth_;
  std::vector<std::shared_ptr<DirtyBitmap>> bitmaps_;
  // Guards clients_ and closing_: sessions attach and detach from
  // iothreads.
  mutable std::mutex clients_lock_;
  std::vector<std::weak_ptr<Connection>> clients_;
  bool closing_ = false;
};

struct ServerOptions {
  qapi::SocketAddress addr;
  uint32_t max_connections = 100;
  uint32_t handshake_max_seconds = 10;
};

class Server : public std::enable_shared_from_this<Server> {
 public:
  Server(Daemon& daemon, ServerOptions opts);
  ~Server();

  // Binds and starts accepting; throws qapi::Error.
  void start(const FdContext& fds);
  // Stops accepting and drops every session.
  void stop();

  Daemon& daemon() { return daemon_; }
  const ServerOptions& options() const { return opts_; }

  void add_export(const std::shared_ptr<Export>& exp);
  void remove_export(const std::string& name);
  std::shared_ptr<Export> find_export(const std::string& name) const;
  std::vector<std::shared_ptr<Export>> exports() const;

  // A session ended (any thread).
  void connection_closed(Connection* conn);

 private:
  void accept_next();
  std::shared_ptr<Connection> admit(UniqueFd client);
  // Whether max-connections sessions are running.
  bool full();

  Daemon& daemon_;
  ServerOptions opts_;
  ListeningSocket listening_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> listener_;
  bool stopped_ = false;
  bool paused_ = false;  // not accepting: at max-connections

  mutable std::mutex exports_lock_;
  std::vector<std::shared_ptr<Export>> exports_;  // in creation order

  std::mutex conns_lock_;
  std::vector<std::weak_ptr<Connection>> conns_;
};

// Registers the NBD export type and the nbd-server-* commands' state.
void register_export_driver(Daemon& daemon);

// --nbd-server and nbd-server-start.
void server_start(Daemon& daemon, const qapi::NbdServerOptions& opts, const FdContext& fds);

}  // namespace nbd
}  // namespace vstord
