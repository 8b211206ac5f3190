#include "monitor/qmp_dispatch.hpp"

#include <spdlog/spdlog.h>

#include "monitor/json_stream.hpp"
#include "qapi-commands.hpp"
#include "qapi/dispatch.hpp"

namespace vstord {

using qapi::Json;

bool qmp_is_oob(const Json& request) {
  return request.is_object() && request.contains("exec-oob") && !request.contains("execute");
}

Json qmp_error_reply(const qapi::Error& err) {
  Json e = Json::object();
  e["class"] = std::string(qapi::error_class_name(err.error_class()));
  e["desc"] = std::string(err.desc());
  Json reply = Json::object();
  reply["error"] = std::move(e);
  return reply;
}

namespace {

// Checks the request's members the way QEMU does, in QEMU's member order
// (which decides which error a request with several faults gets).
// Returns the command name; sets 'oob' when it came as 'exec-oob'.
std::string check_envelope(const Json& request, bool oob_enabled, bool& oob) {
  const char* exec_key = nullptr;
  for (const std::string& key : qapi::qemu_member_order(request)) {
    const Json& v = request[key];
    if (key == "execute" || (key == "exec-oob" && oob_enabled)) {
      if (!v.is_string()) qapi::fail("QMP input member '{}' must be a string", key);
      if (exec_key) qapi::fail("QMP input member '{}' clashes with '{}'", key, exec_key);
      exec_key = key == "execute" ? "execute" : "exec-oob";
    } else if (key == "arguments") {
      if (!v.is_object()) qapi::fail("QMP input member 'arguments' must be an object");
    } else if (key != "id") {
      qapi::fail("QMP input member '{}' is unexpected", key);
    }
  }
  if (!exec_key) qapi::fail("QMP input lacks member 'execute'");
  oob = std::string_view(exec_key) == "exec-oob";
  return request[exec_key].get<std::string>();
}

}  // namespace

boost::asio::awaitable<std::optional<Json>> qmp_dispatch(Daemon& daemon, Monitor* mon,
                                                         const Json& request, DispatchMode mode) {
  if (!request.is_object()) {
    co_return qmp_error_reply(qapi::Error("QMP input must be a JSON object"));
  }
  std::optional<Json> reply;
  try {
    bool oob = false;
    std::string name = check_envelope(request, mode.oob_enabled, oob);
    const qapi::CommandDef* cmd = qapi::find_command(name);
    if (!cmd || (mode.negotiation && name != "qmp_capabilities")) {
      qapi::fail(qapi::ErrorClass::CommandNotFound, "The command {} has not been found", name);
    }
    if (oob && !cmd->allow_oob()) qapi::fail("The command {} does not support OOB", name);
    static const Json empty = Json::object();
    auto it = request.find("arguments");
    const Json& args = it != request.end() ? *it : empty;
    qapi::CommandContext ctx{daemon, mon};
    // (No co_await inside a conditional expression: GCC 12 miscompiles it.)
    Json ret;
    if (cmd->fn) {
      ret = cmd->fn(ctx, args);
    } else {
      ret = co_await cmd->coro(ctx, args);
    }
    if (cmd->flags & qapi::CommandDef::kNoSuccessResponse) co_return std::nullopt;
    reply = Json::object();
    (*reply)["return"] = std::move(ret);
  } catch (const qapi::Error& e) {
    reply = qmp_error_reply(e);
  } catch (const std::exception& e) {
    // A handler bug must not take the daemon down; report it.
    spdlog::error("command failed unexpectedly: {}", e.what());
    reply = qmp_error_reply(qapi::Error(fmt::format("internal error: {}", e.what())));
  }
  if (auto id = request.find("id"); id != request.end()) (*reply)["id"] = *id;
  co_return reply;
}

}  // namespace vstord
