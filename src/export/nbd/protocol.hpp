// NBD wire constants (NetworkBlockDevice doc/proto.md, with the extended
// headers extension) and big-endian helpers.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace vstord::nbd {

constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;  // "NBDMAGIC"
constexpr uint64_t kOptMagic = 0x49484156454F5054ull;  // "IHAVEOPT"
constexpr uint64_t kRepMagic = 0x0003e889045565a9ull;
constexpr uint32_t kRequestMagic = 0x25609513;
constexpr uint32_t kExtRequestMagic = 0x21e41c71;
constexpr uint32_t kSimpleReplyMagic = 0x67446698;
constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;
constexpr uint32_t kExtReplyMagic = 0x6e8a278c;

// Handshake flags (server) and client flags.
constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
constexpr uint16_t kFlagNoZeroes = 1 << 1;
constexpr uint32_t kClientFixedNewstyle = 1 << 0;
constexpr uint32_t kClientNoZeroes = 1 << 1;

// Options.
enum Opt : uint32_t {
  kOptExportName = 1,
  kOptAbort = 2,
  kOptList = 3,
  kOptStartTls = 5,
  kOptInfo = 6,
  kOptGo = 7,
  kOptStructuredReply = 8,
  kOptListMetaContext = 9,
  kOptSetMetaContext = 10,
  kOptExtendedHeaders = 11,
};

// Option replies.
constexpr uint32_t kRepAck = 1;
constexpr uint32_t kRepServer = 2;
constexpr uint32_t kRepInfo = 3;
constexpr uint32_t kRepMetaContext = 4;
constexpr uint32_t kRepErr = 1u << 31;
constexpr uint32_t kRepErrUnsup = kRepErr | 1;
constexpr uint32_t kRepErrPolicy = kRepErr | 2;
constexpr uint32_t kRepErrInvalid = kRepErr | 3;
constexpr uint32_t kRepErrUnknown = kRepErr | 6;
constexpr uint32_t kRepErrShutdown = kRepErr | 7;
constexpr uint32_t kRepErrBlockSizeReqd = kRepErr | 8;
constexpr uint32_t kRepErrTooBig = kRepErr | 9;
constexpr uint32_t kRepErrExtHeaderReqd = kRepErr | 10;

// NBD_INFO_*.
constexpr uint16_t kInfoExport = 0;
constexpr uint16_t kInfoName = 1;
constexpr uint16_t kInfoDescription = 2;
constexpr uint16_t kInfoBlockSize = 3;

// Transmission flags.
constexpr uint16_t kFlagHasFlags = 1 << 0;
constexpr uint16_t kFlagReadOnly = 1 << 1;
constexpr uint16_t kFlagSendFlush = 1 << 2;
constexpr uint16_t kFlagSendFua = 1 << 3;
constexpr uint16_t kFlagRotational = 1 << 4;
constexpr uint16_t kFlagSendTrim = 1 << 5;
constexpr uint16_t kFlagSendWriteZeroes = 1 << 6;
constexpr uint16_t kFlagSendDf = 1 << 7;
constexpr uint16_t kFlagCanMultiConn = 1 << 8;
constexpr uint16_t kFlagSendCache = 1 << 10;
constexpr uint16_t kFlagSendFastZero = 1 << 11;

// Commands and their flags.
enum Cmd : uint16_t {
  kCmdRead = 0,
  kCmdWrite = 1,
  kCmdDisc = 2,
  kCmdFlush = 3,
  kCmdTrim = 4,
  kCmdCache = 5,
  kCmdWriteZeroes = 6,
  kCmdBlockStatus = 7,
};
constexpr uint16_t kCmdFlagFua = 1 << 0;
constexpr uint16_t kCmdFlagNoHole = 1 << 1;
constexpr uint16_t kCmdFlagDf = 1 << 2;
constexpr uint16_t kCmdFlagReqOne = 1 << 3;
constexpr uint16_t kCmdFlagFastZero = 1 << 4;
constexpr uint16_t kCmdFlagPayloadLen = 1 << 5;

// Structured reply chunks.
constexpr uint16_t kReplyFlagDone = 1 << 0;
constexpr uint16_t kReplyNone = 0;
constexpr uint16_t kReplyOffsetData = 1;
constexpr uint16_t kReplyOffsetHole = 2;
constexpr uint16_t kReplyBlockStatus = 5;
constexpr uint16_t kReplyBlockStatusExt = 6;
constexpr uint16_t kReplyError = (1 << 15) + 1;

// Errors on the wire.
constexpr uint32_t kEperm = 1;
constexpr uint32_t kEio = 5;
constexpr uint32_t kEnomem = 12;
constexpr uint32_t kEinval = 22;
constexpr uint32_t kEnospc = 28;
constexpr uint32_t kEoverflow = 75;
constexpr uint32_t kEnotsup = 95;
constexpr uint32_t kEshutdown = 108;

// base:allocation and qemu:dirty-bitmap bits.
constexpr uint32_t kStateHole = 1 << 0;
constexpr uint32_t kStateZero = 1 << 1;
constexpr uint32_t kStateDirty = 1 << 0;

// Limits: the largest payload (as QEMU's NBD_MAX_BUFFER_SIZE), the
// longest string, the largest option we read.
constexpr uint32_t kMaxPayload = 32u << 20;
constexpr uint32_t kMaxString = 4096;
constexpr uint32_t kMaxOptionLength = 1u << 20;

// Maps a negative errno to an NBD error, as QEMU's
// system_errno_to_nbd_errno.
uint32_t errno_to_nbd(int err);

// Big-endian append and read.
inline void put16(std::vector<uint8_t>& b, uint16_t v) {
  b.push_back(uint8_t(v >> 8));
  b.push_back(uint8_t(v));
}
inline void put32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}
inline void put64(std::vector<uint8_t>& b, uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}
inline void put_bytes(std::vector<uint8_t>& b, const std::string& s) {
  b.insert(b.end(), s.begin(), s.end());
}
inline uint16_t get16(const uint8_t* p) {
  return uint16_t(p[0] << 8 | p[1]);
}
inline uint32_t get32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline uint64_t get64(const uint8_t* p) {
  return uint64_t(get32(p)) << 32 | get32(p + 4);
}

}  // namespace vstord::nbd
