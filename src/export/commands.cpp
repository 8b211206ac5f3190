// Handlers for the export commands of qapi/block-export.json.

#include "daemon/daemon.hpp"
#include "export/export.hpp"
#include "export/nbd/server.hpp"
#include "monitor/monitor.hpp"
#include "net/socket_address.hpp"
#include "qapi-commands.hpp"
#include "qapi/error.hpp"

namespace qapi {

boost::asio::awaitable<void> qmp_block_export_add(CommandContext& ctx, BlockExportOptions arg) {
  co_await ctx.daemon.exports().add(arg);
}

void qmp_block_export_del(CommandContext& ctx, std::string id,
                          std::optional<BlockExportRemoveMode> mode) {
  ctx.daemon.exports().del(id, mode.value_or(BlockExportRemoveMode::safe));
}

std::vector<BlockExportInfo> qmp_query_block_exports(CommandContext& ctx) {
  auto out = ctx.daemon.exports().query();
  std::reverse(out.begin(), out.end());  // newest first, as QEMU
  return out;
}

void qmp_nbd_server_start(CommandContext& ctx, NbdServerOptionsLegacy arg) {
  NbdServerOptions opts;
  static_cast<NbdServerOptionsBase&>(opts) = arg;
  opts.addr = vstord::socket_address_flatten(arg.addr);
  vstord::nbd::server_start(ctx.daemon, opts, vstord::monitor_fd_context(ctx));
}

void qmp_nbd_server_stop(CommandContext& ctx) {
  auto server = ctx.daemon.nbd_server();
  if (!server) fail("NBD server not running");
  // The NBD exports go first (their BLOCK_EXPORT_DELETED events come
  // before the reply when no client holds them), then the listener.
  ctx.daemon.exports().shutdown_all(BlockExportType::nbd);
  server->stop();
  ctx.daemon.set_nbd_server(nullptr);
}

boost::asio::awaitable<void> qmp_nbd_server_add(CommandContext& ctx, NbdServerAddOptions arg) {
  if (!ctx.daemon.nbd_server()) fail("NBD server not running");
  auto node = ctx.daemon.block().find(arg.device);
  if (!node) fail("Cannot find device='{}' nor node-name='{}'", arg.device, arg.device);
  BlockExportOptions opts;
  auto& nbd = opts.emplace<BlockExportType::nbd>();
  nbd.name = arg.name.value_or(arg.device);
  nbd.description = arg.description;
  if (arg.bitmap)
    nbd.bitmaps = std::vector<BlockDirtyBitmapOrStr>{BlockDirtyBitmapOrStr{*arg.bitmap}};
  opts.id = *nbd.name;
  opts.node_name = arg.device;
  opts.writable = arg.writable;
  co_await ctx.daemon.exports().add(opts);
}

void qmp_nbd_server_remove(CommandContext& ctx, std::string name,
                           std::optional<BlockExportRemoveMode> mode) {
  if (!ctx.daemon.nbd_server()) fail("NBD server not running");
  auto exp = ctx.daemon.exports().find(name);
  if (!exp) fail("Export '{}' is not found", name);
  if (exp->type() != BlockExportType::nbd) fail("Block export '{}' is not an NBD export", name);
  ctx.daemon.exports().del(name, mode.value_or(BlockExportRemoveMode::safe));
}

}  // namespace qapi
