// Carries out command-line options, in order, on the running io_context.
#pragma once

#include <boost/asio/awaitable.hpp>

#include "daemon/cli.hpp"

namespace vstord {

class Daemon;

// Throws qapi::Error when an option fails; the caller reports it with the
// option as given.
boost::asio::awaitable<void> run_option(Daemon& daemon, const CliOption& opt);

}  // namespace vstord
