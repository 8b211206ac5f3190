// One QMP request in, one reply out: the envelope checks, the command
// lookup, argument unmarshalling, the call and the reply, in QEMU's order
// and with QEMU's messages.  Free of sockets, so tests drive it directly.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <optional>

#include "qapi/visit.hpp"

namespace vstord {

class Daemon;
class Monitor;

struct DispatchMode {
  bool negotiation = false;  // only qmp_capabilities exists
  bool oob_enabled = false;  // 'exec-oob' is a known member
};

// True when the request asks for out-of-band execution: an object with
// 'exec-oob' and no 'execute'.  Such requests skip the in-band queue.
bool qmp_is_oob(const qapi::Json& request);

// The reply, or nothing for a command that sends none.  Never throws for
// bad input: every failure becomes an error reply.
boost::asio::awaitable<std::optional<qapi::Json>> qmp_dispatch(Daemon& daemon, Monitor* mon,
                                                               const qapi::Json& request,
                                                               DispatchMode mode);

qapi::Json qmp_error_reply(const qapi::Error& err);

}  // namespace vstord
