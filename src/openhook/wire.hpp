// Open-hook messages on the wire: framing and the XDR bodies, through the
// marshalling code rpcgen makes from open_hook.x.  Shared by the daemon
// (openhook/client.cpp) and the reference broker (tools/open-broker).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/unique_fd.hpp"

namespace vstord::openhook {

inline constexpr uint32_t kCommandOpen = 1;
inline constexpr size_t kHeaderSize = 12;
inline constexpr size_t kMessageMax = 8192;
inline constexpr size_t kPathMax = 4096;

struct Header {
  uint32_t length = 0;
  uint32_t command = 0;
  uint32_t serial = 0;
};

struct OpenRequest {
  uint32_t flags = 0;
  uint32_t mode = 0;
  std::string filename;
};

// Whole messages, the length field filled in.
std::vector<uint8_t> encode_open_request(uint32_t serial, const OpenRequest& req);
std::vector<uint8_t> encode_open_reply(uint32_t serial, int32_t result);

// The header of a whole message; false if it is not one (length outside
// [12, kMessageMax], not a multiple of 4, or not the message's size).
bool decode_header(const std::vector<uint8_t>& msg, Header& h);
// The body after the header; false if malformed or not exactly filling
// the message.
bool decode_open_request(const std::vector<uint8_t>& msg, OpenRequest& req);
bool decode_open_reply(const std::vector<uint8_t>& msg, int32_t& result);

// Sends one message, with fd attached (SCM_RIGHTS) unless it is -1.
// Returns 0 or -errno.
int send_message(int sock, const std::vector<uint8_t>& msg, int fd = -1);

enum class RecvStatus { ok, closed, malformed, timeout, error };
// Receives one message and any descriptors sent with it (close-on-exec).
// timeout_ms bounds the wait for each piece (-1: none).  On malformed the
// stream can no longer be trusted.
RecvStatus recv_message(int sock, std::vector<uint8_t>& msg, std::vector<UniqueFd>& fds,
                        int timeout_ms);

}  // namespace vstord::openhook
