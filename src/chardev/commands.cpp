// Handlers for the character device commands of qapi/char.json.

#include "chardev/chardev.hpp"
#include "daemon/daemon.hpp"
#include "monitor/monitor.hpp"
#include "qapi-commands.hpp"
#include "qapi/error.hpp"

namespace qapi {

std::vector<ChardevInfo> qmp_query_chardev(CommandContext& ctx) {
  std::vector<ChardevInfo> out;
  for (const auto& [id, chr] : ctx.daemon.chardevs().all()) {
    out.push_back(ChardevInfo{id, chr->filename(), chr->frontend() != nullptr});
  }
  return out;
}

std::vector<ChardevBackendInfo> qmp_query_chardev_backends(CommandContext&) {
  std::vector<ChardevBackendInfo> out;
  for (auto& name : vstord::chardev_backends_available()) out.push_back(ChardevBackendInfo{name});
  return out;
}

boost::asio::awaitable<ChardevReturn> qmp_chardev_add(CommandContext& ctx, std::string id,
                                                      ChardevBackend backend) {
  if (ctx.daemon.chardevs().contains(id)) fail("Chardev with id '{}' already exists", id);
  // Descriptors are looked up by name among those this monitor got with
  // getfd (numbers are refused in a monitor command).
  vstord::FdContext fds;
  if (vstord::Monitor* mon = ctx.monitor) {
    fds.take_named = [mon](const std::string& name) { return mon->take_fd(name); };
  }
  std::shared_ptr<vstord::Chardev> chr;
  try {
    chr = vstord::chardev_new(ctx.daemon, id, backend, fds);
  } catch (const Error& e) {
    fail("Failed to add chardev '{}': {}", id, e.what());
  }
  ctx.daemon.chardevs().add(chr);
  co_await chr->open();
  co_return ChardevReturn{};
}

void qmp_chardev_remove(CommandContext& ctx, std::string id) {
  auto chr = ctx.daemon.chardevs().find(id);
  if (!chr) fail("Chardev '{}' not found", id);
  if (chr->frontend()) fail("Chardev '{}' is busy", id);
  ctx.daemon.chardevs().remove(id);
}

}  // namespace qapi
