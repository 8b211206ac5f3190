// Handlers of qapi/open-hook.json.

#include "daemon/daemon.hpp"
#include "monitor/monitor.hpp"
#include "qapi-commands.hpp"
#include "qapi/error.hpp"

namespace qapi {

OpenHookInfo qmp_query_open_hook(CommandContext& ctx) {
  vstord::openhook::OpenHook* hook = ctx.daemon.open_hook();
  if (!hook) fail("The open hook is not in use (start with --open-hook-fd)");
  OpenHookInfo info;
  info.attached = hook->attached();
  info.requests_in_flight = int64_t(hook->in_flight());
  info.timeout = std::chrono::duration<double>(hook->timeout()).count();
  info.last_error = hook->last_error();
  return info;
}

void qmp_open_hook_attach(CommandContext& ctx, std::string fdname) {
  if (!ctx.monitor) fail("This command is only available in a QMP monitor");
  vstord::UniqueFd fd = ctx.monitor->take_fd(fdname);
  // Checked first: a wrong descriptor must not turn delegated opens on.
  vstord::openhook::OpenHook::check_socket(fd.get());
  ctx.daemon.enable_open_hook().attach(std::move(fd));
}

}  // namespace qapi
