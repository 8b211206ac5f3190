#include "openhook/wire.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

extern "C" {
#include "open_hook.h"
}

namespace vstord::openhook {

namespace {

static_assert(OPEN_HOOK_OPEN == kCommandOpen);
static_assert(OPEN_HOOK_MESSAGE_MAX == kMessageMax);
static_assert(OPEN_HOOK_PATH_MAX == kPathMax);

// An XDR stream over a buffer, destroyed with the object.
class XdrMem {
 public:
  XdrMem(uint8_t* data, size_t size, xdr_op op) {
    xdrmem_create(&xdr_, reinterpret_cast<char*>(data), unsigned(size), op);
  }
  ~XdrMem() { xdr_destroy(&xdr_); }
  XDR* get() { return &xdr_; }
  unsigned pos() { return xdr_getpos(&xdr_); }

 private:
  XDR xdr_;
};

// Encodes the header and body, then the header again with the length.
template <class Body>
std::vector<uint8_t> encode(uint32_t command, uint32_t serial, bool_t (*xdr_body)(XDR*, Body*),
                            Body& body) {
  std::vector<uint8_t> buf(kMessageMax);
  open_hook_header h{0, command, serial};
  XdrMem x(buf.data(), buf.size(), XDR_ENCODE);
  if (!xdr_open_hook_header(x.get(), &h) || !xdr_body(x.get(), &body)) return {};
  buf.resize(x.pos());
  h.length = uint32_t(buf.size());
  XdrMem head(buf.data(), kHeaderSize, XDR_ENCODE);
  xdr_open_hook_header(head.get(), &h);
  return buf;
}

}  // namespace

std::vector<uint8_t> encode_open_request(uint32_t serial, const OpenRequest& req) {
  if (req.filename.size() > kPathMax) return {};
  open_hook_open_request body{req.flags, req.mode, const_cast<char*>(req.filename.c_str())};
  return encode(OPEN_HOOK_OPEN, serial, xdr_open_hook_open_request, body);
}

std::vector<uint8_t> encode_open_reply(uint32_t serial, int32_t result) {
  open_hook_open_reply body{result};
  return encode(OPEN_HOOK_OPEN, serial, xdr_open_hook_open_reply, body);
}

bool decode_header(const std::vector<uint8_t>& msg, Header& h) {
  if (msg.size() < kHeaderSize) return false;
  open_hook_header raw{};
  XdrMem x(const_cast<uint8_t*>(msg.data()), kHeaderSize, XDR_DECODE);
  if (!xdr_open_hook_header(x.get(), &raw)) return false;
  h = {raw.length, raw.command, raw.serial};
  return h.length >= kHeaderSize && h.length <= kMessageMax && h.length % 4 == 0 &&
         h.length == msg.size();
}

bool decode_open_request(const std::vector<uint8_t>& msg, OpenRequest& req) {
  open_hook_open_request raw{};
  XdrMem x(const_cast<uint8_t*>(msg.data()) + kHeaderSize, msg.size() - kHeaderSize, XDR_DECODE);
  bool ok = xdr_open_hook_open_request(x.get(), &raw) && x.pos() == msg.size() - kHeaderSize;
  if (ok) {
    req.flags = raw.flags;
    req.mode = raw.mode;
    req.filename = raw.filename ? raw.filename : "";
    // XDR strings may carry a NUL; a path cannot.
    ok = req.filename.size() == std::strlen(raw.filename ? raw.filename : "");
    if (ok && raw.filename) {
      // The padding must be zeroes (RFC 4506 4.11).
      size_t end = kHeaderSize + 12 + req.filename.size();
      for (size_t i = end; i < msg.size(); ++i) ok = ok && msg[i] == 0;
    }
  }
  xdr_free(reinterpret_cast<xdrproc_t>(xdr_open_hook_open_request), reinterpret_cast<char*>(&raw));
  return ok;
}

bool decode_open_reply(const std::vector<uint8_t>& msg, int32_t& result) {
  open_hook_open_reply raw{};
  XdrMem x(const_cast<uint8_t*>(msg.data()) + kHeaderSize, msg.size() - kHeaderSize, XDR_DECODE);
  if (!xdr_open_hook_open_reply(x.get(), &raw) || x.pos() != msg.size() - kHeaderSize) {
    return false;
  }
  result = raw.result;
  return true;
}

int send_message(int sock, const std::vector<uint8_t>& msg, int fd) {
  size_t done = 0;
  while (done < msg.size()) {
    iovec iov{const_cast<uint8_t*>(msg.data()) + done, msg.size() - done};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    if (fd >= 0 && done == 0) {
      std::memset(control, 0, sizeof(control));
      mh.msg_control = control;
      mh.msg_controllen = sizeof(control);
      cmsghdr* c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    ssize_t n = ::sendmsg(sock, &mh, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    done += size_t(n);
  }
  return 0;
}

namespace {

// Reads exactly n bytes into dst, collecting descriptors.
RecvStatus recv_exact(int sock, uint8_t* dst, size_t n, std::vector<UniqueFd>& fds, int timeout_ms,
                      bool first) {
  size_t done = 0;
  while (done < n) {
    pollfd p{sock, POLLIN, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return RecvStatus::error;
    if (r == 0) return RecvStatus::timeout;
    iovec iov{dst + done, n - done};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    mh.msg_control = control;
    mh.msg_controllen = sizeof(control);
    ssize_t got = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got < 0) return RecvStatus::error;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.emplace_back(fd);
      }
    }
    if (mh.msg_flags & MSG_CTRUNC) return RecvStatus::malformed;
    if (got == 0) return (first && done == 0) ? RecvStatus::closed : RecvStatus::malformed;
    done += size_t(got);
  }
  return RecvStatus::ok;
}

}  // namespace

RecvStatus recv_message(int sock, std::vector<uint8_t>& msg, std::vector<UniqueFd>& fds,
                        int timeout_ms) {
  msg.assign(4, 0);
  RecvStatus st = recv_exact(sock, msg.data(), 4, fds, timeout_ms, true);
  if (st != RecvStatus::ok) return st;
  uint32_t length =
      uint32_t(msg[0]) << 24 | uint32_t(msg[1]) << 16 | uint32_t(msg[2]) << 8 | msg[3];
  if (length < kHeaderSize || length > kMessageMax || length % 4) return RecvStatus::malformed;
  msg.resize(length);
  st = recv_exact(sock, msg.data() + 4, length - 4, fds, timeout_ms, false);
  return st == RecvStatus::closed ? RecvStatus::malformed : st;
}

}  // namespace vstord::openhook
