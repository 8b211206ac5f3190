// The WebSocket side of a socket backend with websocket=on (RFC 6455,
// server only, through Boost.Beast): the HTTP upgrade, then binary
// frames both ways.
#pragma once

#include "chardev/fd_stream.hpp"

namespace vstord {

// 'fd' is an accepted connection; input goes to opts.frontend().
std::shared_ptr<ByteStream> websocket_stream_new(boost::asio::io_context& io, UniqueFd fd,
                                                 FdStream::Options opts);

}  // namespace vstord
