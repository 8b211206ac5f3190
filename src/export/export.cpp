#include "export/export.hpp"

#include <algorithm>

#include "daemon/daemon.hpp"
#include "daemon/iothread.hpp"
#include "qapi-events.hpp"
#include "qapi/error.hpp"
#include "util/id.hpp"

namespace vstord {

BlockExport::BlockExport(ExportRegistry& registry, const qapi::BlockExportOptions& opts,
                         BlockUser user, IoThread* iothread)
    : registry_(registry),
      id_(opts.id),
      type_(opts.type()),
      node_name_(opts.node_name),
      node_(user.node_ptr()),
      user_(std::move(user)),
      writable_(opts.writable.value_or(false)),
      writethrough_(opts.writethrough.value_or(false)),
      iothread_(iothread) {}

BlockExport::~BlockExport() = default;

void BlockExport::finished() {
  registry_.finished(*this);
}

void ExportRegistry::register_driver(ExportDriver driver) {
  drivers_.push_back(std::move(driver));
}

Task<std::shared_ptr<BlockExport>> ExportRegistry::add(const qapi::BlockExportOptions& opts) {
  if (!id_wellformed(opts.id)) qapi::fail("Invalid block export id");
  if (find(opts.id)) qapi::fail("Block export id '{}' is already in use", opts.id);
  auto drv = std::find_if(drivers_.begin(), drivers_.end(),
                          [&](const ExportDriver& d) { return d.type == opts.type(); });
  if (drv == drivers_.end()) qapi::fail("No driver found for the requested export type");
  auto node = daemon_.block().find(opts.node_name);
  if (!node) qapi::fail("Cannot find device='' nor node-name='{}'", opts.node_name);
  IoThread* iothread = nullptr;
  if (opts.iothread) {
    iothread = daemon_.iothreads().find(*opts.iothread);
    if (!iothread) qapi::fail("iothread \"{}\" not found", *opts.iothread);
  }
  bool writable = opts.writable.value_or(false);
  if (writable && node->read_only()) qapi::fail("Cannot export read-only node as writable");
  uint32_t need = perm::consistent_read | (writable ? perm::write : 0);
  auto user = BlockUser::attach(node, "", need, perm::all & ~drv->unshared);
  auto exp = co_await drv->create(daemon_, opts, std::move(user), iothread);
  exports_.push_back(exp);
  co_return exp;
}

void ExportRegistry::del(const std::string& id, qapi::BlockExportRemoveMode mode) {
  auto exp = find(id);
  if (!exp) qapi::fail("Export '{}' is not found", id);
  if (exp->shutting_down_) qapi::fail("Export '{}' is already shutting down", id);
  if (mode == qapi::BlockExportRemoveMode::safe && exp->clients() > 0) {
    throw qapi::Error(qapi::ErrorClass::GenericError, fmt::format("export '{}' still in use", id),
                      "Use mode='hard' to force client disconnect");
  }
  exp->shutting_down_ = true;
  exp->shutdown();
}

std::shared_ptr<BlockExport> ExportRegistry::find(const std::string& id) const {
  for (const auto& e : exports_) {
    if (e->id() == id) return e;
  }
  return nullptr;
}

std::vector<qapi::BlockExportInfo> ExportRegistry::query() const {
  std::vector<qapi::BlockExportInfo> out;
  for (const auto& e : exports_) {
    out.push_back(qapi::BlockExportInfo{e->id(), e->type(), e->node_name(), e->shutting_down()});
  }
  return out;
}

void ExportRegistry::shutdown_all(std::optional<qapi::BlockExportType> type) {
  auto copy = exports_;
  for (const auto& e : copy) {
    if (type && e->type() != *type) continue;
    if (e->shutting_down_) continue;
    e->shutting_down_ = true;
    e->shutdown();
  }
}

void ExportRegistry::finished(BlockExport& exp) {
  auto it = std::find_if(exports_.begin(), exports_.end(),
                         [&](const auto& e) { return e.get() == &exp; });
  if (it == exports_.end()) return;
  auto keep = *it;  // alive until the event is out
  exports_.erase(it);
  keep->user_.reset();
  qapi::qapi_event_send_block_export_deleted(keep->id());
}

}  // namespace vstord
