// Handlers for yank and query-yank (qapi/yank.json).  Yankable instances
// are the socket character devices now; block nodes join with the nbd
// driver.

#include "daemon/daemon.hpp"
#include "qapi-commands.hpp"
#include "qapi/error.hpp"

namespace qapi {

namespace {

std::shared_ptr<vstord::Chardev> find_instance(CommandContext& ctx, const YankInstance& inst) {
  if (inst.type() == YankInstanceType::chardev) {
    auto chr = ctx.daemon.chardevs().find(inst.get<YankInstanceType::chardev>().id);
    if (chr && chr->yankable()) return chr;
  }
  fail(ErrorClass::DeviceNotFound, "Instance not found");
}

}  // namespace

void qmp_yank(CommandContext& ctx, std::vector<YankInstance> instances) {
  // All or nothing: check every instance before yanking any.
  std::vector<std::shared_ptr<vstord::Chardev>> found;
  for (const auto& inst : instances) found.push_back(find_instance(ctx, inst));
  for (const auto& chr : found) chr->yank();
}

std::vector<YankInstance> qmp_query_yank(CommandContext& ctx) {
  std::vector<YankInstance> out;
  for (const auto& [id, chr] : ctx.daemon.chardevs().all()) {
    if (!chr->yankable()) continue;
    YankInstance inst;
    inst.emplace<YankInstanceType::chardev>(YankInstanceChardev{id});
    out.push_back(std::move(inst));
  }
  return out;
}

}  // namespace qapi
