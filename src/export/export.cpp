#include "export/export.hpp"

#include <algorithm>

#include "daemon/daemon.hpp"
#include "daemon/iothread.hpp"
#include "qapi-events.hpp"
#include "qapi/error.hpp"
#include "util/id.hpp"

namespace vstord {

BlockExport::BlockExport(ExportRegistry& registry, const qapi::BlockExportOptions& opts,
                         BlockUser user)
    : registry_(registry),
      id_(opts.id),
      type_(opts.type()),
      node_name_(opts.node_name),
      node_(user.node_ptr()),
      user_(std::move(user)),
      writable_(opts.writable.value_or(false)),
      writethrough_(opts.writethrough.value_or(false)),
      fixed_iothread_(opts.fixed_iothread.value_or(false)) {}

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
  // An export with an iothread moves its node (and every node connected
  // to it) there, unless another export holds them with fixed-iothread:
  // then a fixed-iothread export is refused and any other one stays where
  // the node is, as in QEMU.
  IoThread* move_to = nullptr;
  if (opts.iothread) {
    IoThread* want = daemon_.iothreads().find(*opts.iothread);
    if (!want) qapi::fail("iothread \"{}\" not found", *opts.iothread);
    if (want != node->home_iothread()) {
      if (!has_fixed_export(connected_nodes(*node))) {
        move_to = want;
      } else if (opts.fixed_iothread.value_or(false)) {
        qapi::fail("Cannot change iothread of active block backend");
      }
    }
  }
  bool writable = opts.writable.value_or(false);
  if (writable && node->read_only()) qapi::fail("Cannot export read-only node as writable");
  uint32_t need = perm::consistent_read | (writable ? perm::write : 0);
  auto user = BlockUser::attach(node, "", need, perm::all & ~drv->unshared);
  auto exp = co_await drv->create(daemon_, opts, std::move(user));
  if (move_to) {
    for (BlockNode* n : connected_nodes(*node)) n->set_home_iothread(move_to);
  }
  exports_.push_back(exp);
  co_return exp;
}

std::vector<BlockNode*> ExportRegistry::connected_nodes(BlockNode& node) {
  std::vector<BlockNode*> out{&node};
  for (size_t i = 0; i < out.size(); ++i) {
    auto visit = [&](BlockNode* n) {
      if (n && std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
    };
    for (const auto& c : out[i]->children()) visit(c->node.get());
    for (const BdrvChild* p : out[i]->parents()) visit(p->parent_node);
  }
  return out;
}

bool ExportRegistry::has_fixed_export(const std::vector<BlockNode*>& nodes) const {
  return std::any_of(exports_.begin(), exports_.end(), [&](const auto& e) {
    return e->fixed_iothread() && std::count(nodes.begin(), nodes.end(), &e->node());
  });
}

bool ExportRegistry::has_export(const std::vector<BlockNode*>& nodes) const {
  return std::any_of(exports_.begin(), exports_.end(), [&](const auto& e) {
    return std::count(nodes.begin(), nodes.end(), &e->node()) > 0;
  });
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
  // Nodes no export uses any more go back to the default threads, as
  // QEMU moves a node without users back to the main context.
  auto nodes = connected_nodes(keep->node());
  if (!has_export(nodes)) {
    for (BlockNode* n : nodes) n->set_home_iothread(nullptr);
  }
  qapi::qapi_event_send_block_export_deleted(keep->id());
}

}  // namespace vstord
