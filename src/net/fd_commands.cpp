// Handlers for the descriptor-passing commands of qapi/misc.json.

#include <cctype>
#include <ranges>

#include "daemon/daemon.hpp"
#include "monitor/monitor.hpp"
#include "qapi-commands.hpp"
#include "qapi/error.hpp"

namespace qapi {

namespace {

vstord::Monitor& monitor_of(CommandContext& ctx) {
  if (!ctx.monitor) fail("This command is only available in a QMP monitor");
  return *ctx.monitor;
}

vstord::UniqueFd received_fd(vstord::Monitor& mon) {
  vstord::UniqueFd fd = mon.take_received_fd();
  if (!fd) fail("No file descriptor supplied via SCM_RIGHTS");
  return fd;
}

}  // namespace

void qmp_getfd(CommandContext& ctx, std::string fdname) {
  vstord::Monitor& mon = monitor_of(ctx);
  vstord::UniqueFd fd = received_fd(mon);
  if (!fdname.empty() && std::isdigit(static_cast<unsigned char>(fdname[0]))) {
    fail("Parameter 'fdname' expects a name not starting with a digit");
  }
  mon.store_fd(fdname, std::move(fd));
}

void qmp_closefd(CommandContext& ctx, std::string fdname) {
  monitor_of(ctx).close_fd(fdname);
}

AddfdInfo qmp_add_fd(CommandContext& ctx, std::optional<int64_t> fdset_id,
                     std::optional<std::string> opaque) {
  vstord::UniqueFd fd = received_fd(monitor_of(ctx));
  auto [set, num] = ctx.daemon.fdsets().add(fdset_id, std::move(fd), std::move(opaque));
  return AddfdInfo{set, num};
}

void qmp_remove_fd(CommandContext& ctx, int64_t fdset_id, std::optional<int64_t> fd) {
  ctx.daemon.fdsets().remove(fdset_id, fd);
}

std::vector<FdsetInfo> qmp_query_fdsets(CommandContext& ctx) {
  // Highest id first, as QEMU lists them.
  std::vector<FdsetInfo> out;
  for (const auto& [id, set] : std::ranges::reverse_view(ctx.daemon.fdsets().sets())) {
    FdsetInfo info;
    info.fdset_id = id;
    for (const auto& e : set.fds) info.fds.push_back(FdsetFdInfo{e.fd.get(), e.opaque});
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace qapi
