// Handlers for the commands of qapi/control.json and qapi/introspect.json.

#include "daemon/daemon.hpp"
#include "monitor/monitor.hpp"
#include "qapi-commands.hpp"
#include "qapi/error.hpp"
#include "qapi/introspect.hpp"

namespace qapi {

void qmp_qmp_capabilities(CommandContext& ctx, std::optional<std::vector<QMPCapability>> enable) {
  vstord::Monitor* mon = ctx.monitor;
  if (!mon || mon->command_mode()) {
    fail(ErrorClass::CommandNotFound,
         "Capabilities negotiation is already complete, command ignored");
  }
  bool oob = false;
  for (QMPCapability cap : enable.value_or(std::vector<QMPCapability>{})) {
    if (cap == QMPCapability::oob) oob = true;  // every monitor offers oob
  }
  mon->enter_command_mode(oob);
}

VersionInfo qmp_query_version(CommandContext&) {
  VersionInfo info;
  info.qemu.q_major = vstord::DaemonVersion::qemu_major;
  info.qemu.q_minor = vstord::DaemonVersion::qemu_minor;
  info.qemu.micro = vstord::DaemonVersion::qemu_micro;
  info.package = vstord::DaemonVersion::package();
  return info;
}

std::vector<CommandInfo> qmp_query_commands(CommandContext&) {
  std::vector<CommandInfo> out;
  for (const CommandDef& def : qmp_command_table())
    out.push_back(CommandInfo{std::string(def.name)});
  return out;
}

Json qmp_marshal_query_qmp_schema(CommandContext&, const Json& args) {
  Input in;
  in.start_struct(nullptr, args);
  in.end_struct(args);
  return qmp_schema_introspection();
}

void qmp_quit(CommandContext& ctx) {
  ctx.daemon.request_shutdown(ShutdownCause::host_qmp_quit);
}

}  // namespace qapi
