#include "export/nbd/server.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/post.hpp>

#include <algorithm>

#include "block/bitmap.hpp"
#include "daemon/daemon.hpp"
#include "daemon/iothread.hpp"
#include "export/nbd/connection.hpp"
#include "export/nbd/protocol.hpp"
#include "qapi/error.hpp"

namespace vstord::nbd {

namespace asio = boost::asio;

// ---- Export -------------------------------------------------------------------

Export::Export(ExportRegistry& registry, const qapi::BlockExportOptions& opts, BlockUser user,
               std::shared_ptr<Server> server)
    : BlockExport(registry, opts, std::move(user)), server_(std::move(server)) {
  const auto& o = opts.get<qapi::BlockExportType::nbd>();
  name_ = o.name.value_or(opts.node_name);
  description_ = o.description;
  allocation_depth_ = o.allocation_depth.value_or(false);
  if (name_.size() > kMaxString) qapi::fail("export name '{}' too long", name_);
  if (description_ && description_->size() > kMaxString) {
    qapi::fail("description '{}' too long", *description_);
  }
  if (server_->find_export(name_)) qapi::fail("NBD server already has export named '{}'", name_);

  // Bitmaps: of the exported node by name, or of any node.
  Daemon& daemon = server_->daemon();
  bool readonly = !writable();
  for (const auto& b : o.bitmaps.value_or(std::vector<qapi::BlockDirtyBitmapOrStr>{})) {
    std::shared_ptr<DirtyBitmap> bm;
    std::string bm_name;
    if (b.kind() == qapi::BlockDirtyBitmapOrStr::Kind::local) {
      bm_name = std::get<0>(b.u);
      bm = node().find_bitmap(bm_name);
      if (!bm) qapi::fail("Bitmap '{}' is not found", bm_name);
    } else {
      const auto& ext = *std::get<1>(b.u);
      bm = daemon.block().find_bitmap(ext.node, ext.name);
      bm_name = ext.name;
    }
    // A read-only export promises a stable view: a bitmap that still
    // records writes (made through other exports) breaks that.
    if (readonly && !node().read_only() && bm->recording()) {
      qapi::fail("Enabled bitmap '{}' incompatible with readonly export", bm_name);
    }
    bm->check_modifiable();
    bitmaps_.push_back(bm);
  }
  for (auto& bm : bitmaps_) bm->hold();
}

Export::~Export() {
  for (auto& bm : bitmaps_) bm->release();
}

uint16_t Export::transmission_flags() const {
  uint16_t f = kFlagHasFlags | kFlagSendFlush | kFlagSendFua | kFlagSendCache;
  if (writable()) {
    f |= kFlagSendTrim | kFlagSendWriteZeroes | kFlagSendFastZero;
  } else {
    f |= kFlagReadOnly;
  }
  // Every connection sees the same node, and flushes reach the same
  // file: safe for clients to spread over several connections.
  if (server_->options().max_connections != 1 && node().can_multi_conn()) f |= kFlagCanMultiConn;
  if (node().is_rotational()) f |= kFlagRotational;
  return f;
}

bool Export::attach(const std::shared_ptr<Connection>& conn) {
  std::lock_guard lock(clients_lock_);
  if (closing_) return false;
  clients_.push_back(conn);
  return true;
}

void Export::detach(Connection* conn) {
  bool last;
  {
    std::lock_guard lock(clients_lock_);
    std::erase_if(clients_, [&](const std::weak_ptr<Connection>& w) {
      auto c = w.lock();
      return !c || c.get() == conn;
    });
    last = closing_ && clients_.empty();
  }
  if (last) {
    auto self = std::static_pointer_cast<Export>(shared_from_this());
    asio::post(server_->daemon().io(), [self] { self->finished(); });
  }
}

size_t Export::clients() const {
  std::lock_guard lock(clients_lock_);
  size_t n = 0;
  for (const auto& w : clients_) n += !w.expired();
  return n;
}

void Export::shutdown() {
  server_->remove_export(name_);
  std::vector<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard lock(clients_lock_);
    closing_ = true;
    for (const auto& w : clients_) {
      if (auto c = w.lock()) conns.push_back(c);
    }
    if (conns.empty()) clients_.clear();
  }
  if (conns.empty()) {
    // Nobody to wait for: gone before the command returns, as in QEMU.
    finished();
    return;
  }
  for (auto& c : conns) c->close();
}

// ---- Server -------------------------------------------------------------------

Server::Server(Daemon& daemon, ServerOptions opts) : daemon_(daemon), opts_(std::move(opts)) {}

Server::~Server() {
  if (listening_.cleanup) ::unlink(listening_.cleanup->c_str());
}

void Server::start(const FdContext& fds) {
  listening_ = socket_listen(opts_.addr, fds);
  daemon_.iothreads().start_default_pool();
  listener_ =
      std::make_unique<asio::posix::stream_descriptor>(daemon_.io(), listening_.fd.release());
  accept_next();
}

void Server::accept_next() {
  if (stopped_) return;
  listener_->async_wait(asio::posix::stream_descriptor::wait_read,
                        [self = shared_from_this()](boost::system::error_code ec) {
                          if (ec || self->stopped_) return;
                          while (!self->full()) {
                            int fd = ::accept4(self->listener_->native_handle(), nullptr, nullptr,
                                               SOCK_NONBLOCK | SOCK_CLOEXEC);
                            if (fd < 0) break;
                            UniqueFd client(fd);
                            socket_apply_options(fd, self->opts_.addr);
                            auto conn = self->admit(std::move(client));
                            conn->start();
                            if (self->full()) {
                              // As QEMU: stop accepting at the limit; the
                              // next client waits in the backlog until a
                              // session ends.
                              self->paused_ = true;
                              return;
                            }
                          }
                          self->accept_next();
                        });
}

bool Server::full() {
  std::lock_guard lock(conns_lock_);
  std::erase_if(conns_, [](const auto& w) { return w.expired(); });
  return opts_.max_connections && conns_.size() >= opts_.max_connections;
}

std::shared_ptr<Connection> Server::admit(UniqueFd client) {
  std::lock_guard lock(conns_lock_);
  auto conn = std::make_shared<Connection>(shared_from_this(), daemon_.iothreads().next_default(),
                                           std::move(client));
  conns_.push_back(conn);
  return conn;
}

void Server::stop() {
  stopped_ = true;
  if (listener_) {
    boost::system::error_code ec;
    listener_->close(ec);
  }
  if (listening_.cleanup) {
    ::unlink(listening_.cleanup->c_str());
    listening_.cleanup.reset();
  }
  std::vector<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard lock(conns_lock_);
    for (const auto& w : conns_) {
      if (auto c = w.lock()) conns.push_back(c);
    }
  }
  for (auto& c : conns) c->close();
}

void Server::add_export(const std::shared_ptr<Export>& exp) {
  std::lock_guard lock(exports_lock_);
  exports_.push_back(exp);
}

void Server::remove_export(const std::string& name) {
  std::lock_guard lock(exports_lock_);
  std::erase_if(exports_, [&](const auto& e) { return e->name() == name; });
}

std::shared_ptr<Export> Server::find_export(const std::string& name) const {
  std::lock_guard lock(exports_lock_);
  for (const auto& e : exports_) {
    if (e->name() == name) return e;
  }
  return nullptr;
}

std::vector<std::shared_ptr<Export>> Server::exports() const {
  std::lock_guard lock(exports_lock_);
  return exports_;
}

void Server::connection_closed(Connection* conn) {
  {
    std::lock_guard lock(conns_lock_);
    std::erase_if(conns_, [&](const auto& w) {
      auto c = w.lock();
      return !c || c.get() == conn;
    });
  }
  // A slot is free: accept again if we had stopped.
  asio::post(daemon_.io(), [self = shared_from_this()] {
    if (self->paused_ && !self->stopped_) {
      self->paused_ = false;
      self->accept_next();
    }
  });
}

// ---- the export driver and the server's commands --------------------------------------

void register_export_driver(Daemon& daemon) {
  ExportDriver drv;
  drv.type = qapi::BlockExportType::nbd;
  // Clients were told the size: it must not change under them.
  drv.unshared = perm::resize;
  drv.create = [](Daemon& d, const qapi::BlockExportOptions& opts,
                  BlockUser user) -> Task<std::shared_ptr<BlockExport>> {
    auto server = d.nbd_server();
    if (!server) qapi::fail("NBD server not running");
    auto exp = std::make_shared<Export>(d.exports(), opts, std::move(user), server);
    server->add_export(exp);
    co_return exp;
  };
  daemon.exports().register_driver(std::move(drv));
}

void server_start(Daemon& daemon, const qapi::NbdServerOptions& opts, const FdContext& fds) {
  if (daemon.nbd_server()) qapi::fail("NBD server already running");
  if (opts.tls_creds) qapi::fail("No TLS credentials with id '{}'", *opts.tls_creds);
  if (opts.tls_authz) {
    qapi::fail("'tls-authz' needs TLS, which this version of vstord does not support");
  }
  ServerOptions so;
  so.addr = opts.addr;
  so.max_connections = opts.max_connections.value_or(100);
  so.handshake_max_seconds = opts.handshake_max_seconds.value_or(10);
  auto server = std::make_shared<Server>(daemon, std::move(so));
  server->start(fds);
  daemon.set_nbd_server(server);
}

}  // namespace vstord::nbd
