// Handlers for yank and query-yank (qapi/yank.json).  Yankable instances
// are socket character devices and nbd block nodes.

#include "daemon/daemon.hpp"
#include "qapi-commands.hpp"
#include "qapi/error.hpp"

namespace qapi {

namespace {

std::function<void()> find_instance(CommandContext& ctx, const YankInstance& inst) {
  if (inst.type() == YankInstanceType::chardev) {
    auto chr = ctx.daemon.chardevs().find(inst.get<YankInstanceType::chardev>().id);
    if (chr && chr->yankable()) return [chr] { chr->yank(); };
  }
  if (inst.type() == YankInstanceType::block_node) {
    auto node = ctx.daemon.block().find(inst.get<YankInstanceType::block_node>().node_name);
    if (node && node->yankable()) return [node] { node->yank(); };
  }
  fail(ErrorClass::DeviceNotFound, "Instance not found");
}

}  // namespace

void qmp_yank(CommandContext& ctx, std::vector<YankInstance> instances) {
  // All or nothing: check every instance before yanking any.
  std::vector<std::function<void()>> found;
  for (const auto& inst : instances) found.push_back(find_instance(ctx, inst));
  for (const auto& yank : found) yank();
}

std::vector<YankInstance> qmp_query_yank(CommandContext& ctx) {
  std::vector<YankInstance> out;
  for (const auto& [id, chr] : ctx.daemon.chardevs().all()) {
    if (!chr->yankable()) continue;
    YankInstance inst;
    inst.emplace<YankInstanceType::chardev>(YankInstanceChardev{id});
    out.push_back(std::move(inst));
  }
  // QEMU lists block nodes first.
  std::vector<YankInstance> nodes;
  for (const auto& n : ctx.daemon.block().nodes()) {
    if (!n->yankable()) continue;
    YankInstance inst;
    inst.emplace<YankInstanceType::block_node>(YankInstanceBlockNode{n->name()});
    nodes.push_back(std::move(inst));
  }
  out.insert(out.begin(), nodes.begin(), nodes.end());
  return out;
}

}  // namespace qapi
