// The command table the generator emits, and what a handler receives.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <string_view>

#include "qapi/visit.hpp"

namespace vstord {
class Daemon;
class Monitor;
}  // namespace vstord

namespace qapi {

// Where a command runs.  'monitor' is the QMP monitor that sent it, or null
// when the command line runs the command (the context rules for SocketAddress
// 'fd' and for getfd depend on which).
struct CommandContext {
  vstord::Daemon& daemon;
  vstord::Monitor* monitor = nullptr;
};

struct CommandDef {
  enum Flags : unsigned {
    kAllowOob = 1u << 0,
    kAllowPreconfig = 1u << 1,
    kNoSuccessResponse = 1u << 2,
    kDeprecated = 1u << 3,
    kUnstable = 1u << 4,
  };
  using SyncFn = Json (*)(CommandContext&, const Json&);
  using CoroFn = boost::asio::awaitable<Json> (*)(CommandContext&, Json);

  std::string_view name;
  SyncFn fn;    // set for ordinary commands
  CoroFn coro;  // set for 'coroutine': true commands
  unsigned flags;

  bool allow_oob() const { return flags & kAllowOob; }
};

// Looks a command up in the generated table; null when there is none.
const CommandDef* find_command(std::string_view name);

}  // namespace qapi
