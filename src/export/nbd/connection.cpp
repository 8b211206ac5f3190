#include "export/nbd/connection.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <climits>

#include "block/bitmap.hpp"
#include "daemon/iothread.hpp"
#include "export/nbd/protocol.hpp"
#include "export/nbd/server.hpp"

namespace vstord::nbd {

namespace asio = boost::asio;

namespace {

constexpr size_t kReadBuffer = 64 * 1024;
// In-flight limits per session: enough to keep a fast device busy, small
// enough that a client which stops reading costs little.
constexpr size_t kMaxInflight = 128;
constexpr size_t kMaxInflightBytes = 64u << 20;
// Reads at least this long look for holes first (a block-status call per
// read would cost small random reads more than it saves).
constexpr uint64_t kSparseReadMin = 64 * 1024;
// Reads at least this long from a file in memory go out by sendfile: the
// socket takes references to the file's pages instead of two copies.
// Smaller ones are copied, so that many replies share one sendmsg.
constexpr uint64_t kSendfileReadMin = 64 * 1024;
// Extents per block-status reply.
constexpr size_t kMaxExtents = 64 * 1024;

}  // namespace

// Bytes a request holds while in flight: a read's reply or a write's
// payload.
size_t budget_cost(const Connection::Request& req) {
  return (req.type == kCmdRead || req.type == kCmdWrite) ? req.length : 0;
}

uint32_t errno_to_nbd(int err) {
  switch (-err) {
    case EPERM:
    case EROFS:
    case EACCES: return kEperm;
    case EIO:
    case ENOTCONN:  // a remote node's connection is gone
    case EPIPE:
    case ECONNRESET:
    case ECONNABORTED:
    case ETIMEDOUT: return kEio;
    case ENOMEM: return kEnomem;
    case ENOSPC:
    case EDQUOT:
    case EFBIG: return kEnospc;
    case EOVERFLOW: return kEoverflow;
    case ENOTSUP:
#if EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
      return kEnotsup;
    case ESHUTDOWN: return kEshutdown;
    default: return kEinval;
  }
}

Connection::Connection(std::shared_ptr<Server> server, IoThread& thread, UniqueFd fd)
    : server_(std::move(server)),
      thread_(&thread),
      stream_(std::make_unique<asio::posix::stream_descriptor>(thread.io(), fd.release())),
      rbuf_(kReadBuffer) {}

Connection::~Connection() {
  server_->connection_closed(this);
}

// Spawned coroutines hold a reference to their session from the moment
// they are created (parameters live in the coroutine frame), not only from
// when they first run.
template <class Fn>
void Connection::spawn(asio::any_io_executor ex, Fn fn) {
  asio::co_spawn(ex, keep_alive(shared_from_this(), fn), asio::detached);
}

template <class Fn>
Task<void> Connection::keep_alive(std::shared_ptr<Connection> self, Fn fn) {
  co_await fn(*self);
}

void Connection::start() {
  spawn(thread_->executor(), [](Connection& c) { return c.run(); });
}

void Connection::close() {
  IoThread* thread;
  {
    std::lock_guard lock(thread_lock_);
    thread = thread_;
  }
  asio::post(thread->executor(), [self = shared_from_this(), thread] {
    {
      // The session moved to its export's iothread meanwhile: close there.
      std::lock_guard lock(self->thread_lock_);
      if (self->thread_ != thread) {
        self->close();
        return;
      }
    }
    self->closed_ = true;
    boost::system::error_code ec;
    self->stream_->close(ec);
    if (self->room_) self->room_->cancel();
  });
}

// ---- I/O helpers --------------------------------------------------------------

Task<void> Connection::read_exact(void* dst, size_t n) {
  auto* out = static_cast<uint8_t*>(dst);
  while (n > 0) {
    if (rpos_ < rend_) {
      size_t k = std::min(n, rend_ - rpos_);
      std::memcpy(out, rbuf_.data() + rpos_, k);
      rpos_ += k;
      out += k;
      n -= k;
      continue;
    }
    if (n >= rbuf_.size() / 4) {
      // Big payloads go straight to their buffer.
      co_await asio::async_read(*stream_, asio::buffer(out, n), asio::use_awaitable);
      co_return;
    }
    rpos_ = 0;
    rend_ = co_await stream_->async_read_some(asio::buffer(rbuf_), asio::use_awaitable);
  }
}

Task<void> Connection::write_all(const std::vector<uint8_t>& data) {
  co_await asio::async_write(*stream_, asio::buffer(data), asio::use_awaitable);
}

// ---- the session ----------------------------------------------------------------

Task<void> Connection::run() {
  auto self = shared_from_this();
  // A client gets handshake-max-seconds to select an export (QEMU's
  // answer to CVE-2024-7409: idle handshakes must not hold slots).
  asio::steady_timer deadline(stream_->get_executor());
  uint32_t limit = server_->options().handshake_max_seconds;
  if (limit) {
    deadline.expires_after(std::chrono::seconds(limit));
    deadline.async_wait([self](boost::system::error_code ec) {
      if (!ec && !self->handshake_done_) {
        spdlog::info("nbd: client did not finish the handshake in time");
        boost::system::error_code ignored;
        self->stream_->close(ignored);
      }
    });
  }
  bool selected = false;
  try {
    selected = co_await negotiate();
  } catch (const std::exception& e) {
    spdlog::debug("nbd: handshake ended: {}", e.what());
  }
  handshake_done_ = true;
  deadline.cancel();
  if (!selected) co_return;

  // The export may live on an iothread of its own: move there.
  IoThread* want = exp_->iothread();
  if (want && want != thread_) {
    int fd = stream_->release();
    stream_ = std::make_unique<asio::posix::stream_descriptor>(want->io(), fd);
    {
      std::lock_guard lock(thread_lock_);
      thread_ = want;
    }
    spawn(want->executor(), [](Connection& c) { return c.transmission(); });
    co_return;
  }
  co_await transmission();
}

Task<bool> Connection::negotiate() {
  std::vector<uint8_t> greet;
  put64(greet, kNbdMagic);
  put64(greet, kOptMagic);
  put16(greet, kFlagFixedNewstyle | kFlagNoZeroes);
  co_await write_all(greet);

  uint8_t cf[4];
  co_await read_exact(cf, 4);
  uint32_t client_flags = get32(cf);
  if (client_flags & ~(kClientFixedNewstyle | kClientNoZeroes)) {
    spdlog::info("nbd: unknown client flags {:#x}, disconnecting", client_flags);
    co_return false;
  }
  no_zeroes_ = client_flags & kClientNoZeroes;

  for (;;) {
    uint8_t hdr[16];
    co_await read_exact(hdr, 16);
    if (get64(hdr) != kOptMagic) {
      spdlog::info("nbd: bad option magic, disconnecting");
      co_return false;
    }
    uint32_t opt = get32(hdr + 8);
    uint32_t len = get32(hdr + 12);
    if (len > kMaxOptionLength) {
      spdlog::info("nbd: option {} with {} bytes of data, disconnecting", opt, len);
      co_return false;
    }
    std::vector<uint8_t> data(len);
    if (len) co_await read_exact(data.data(), len);

    switch (opt) {
      case kOptExportName: co_return co_await handle_export_name(data);
      case kOptAbort: co_await send_option_reply(opt, kRepAck, {}); co_return false;
      case kOptList: {
        if (len) {
          co_await send_option_error(opt, kRepErrInvalid, "NBD_OPT_LIST takes no data");
          break;
        }
        for (const auto& e : server_->exports()) {
          std::vector<uint8_t> d;
          put32(d, uint32_t(e->name().size()));
          put_bytes(d, e->name());
          if (e->description()) put_bytes(d, *e->description());
          co_await send_option_reply(opt, kRepServer, d);
        }
        co_await send_option_reply(opt, kRepAck, {});
        break;
      }
      case kOptStartTls:
        co_await send_option_error(opt, kRepErrPolicy, "TLS not configured");
        break;
      case kOptInfo:
      case kOptGo:
        if (co_await handle_info_go(opt, data)) co_return true;
        break;
      case kOptStructuredReply:
        if (len) {
          co_await send_option_error(opt, kRepErrInvalid, "option takes no data");
        } else if (extended_) {
          co_await send_option_error(opt, kRepErrExtHeaderReqd,
                                     "extended headers already negotiated");
        } else if (structured_) {
          co_await send_option_error(opt, kRepErrInvalid, "structured reply already negotiated");
        } else {
          structured_ = true;
          co_await send_option_reply(opt, kRepAck, {});
        }
        break;
      case kOptExtendedHeaders:
        if (len) {
          co_await send_option_error(opt, kRepErrInvalid, "option takes no data");
        } else if (extended_) {
          co_await send_option_error(opt, kRepErrInvalid, "extended headers already negotiated");
        } else {
          extended_ = structured_ = true;
          co_await send_option_reply(opt, kRepAck, {});
        }
        break;
      case kOptListMetaContext:
      case kOptSetMetaContext: co_await handle_meta_context(opt, data); break;
      default:
        co_await send_option_error(opt, kRepErrUnsup, fmt::format("Unsupported option {}", opt));
        break;
    }
  }
}

Task<void> Connection::send_option_reply(uint32_t opt, uint32_t type,
                                         const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b;
  b.reserve(20 + data.size());
  put64(b, kRepMagic);
  put32(b, opt);
  put32(b, type);
  put32(b, uint32_t(data.size()));
  b.insert(b.end(), data.begin(), data.end());
  co_await write_all(b);
}

Task<void> Connection::send_option_error(uint32_t opt, uint32_t type, const std::string& message) {
  std::vector<uint8_t> d(message.begin(), message.end());
  co_await send_option_reply(opt, type, d);
}

bool Connection::select_export(const std::shared_ptr<Export>& exp) {
  if (!exp->attach(shared_from_this())) return false;
  exp_ = exp;
  // Contexts chosen for another export do not carry over.
  // (The same export, not one that has since replaced it under its name.)
  if (meta_export_ != exp) contexts_.clear();
  return true;
}

Task<bool> Connection::handle_export_name(const std::vector<uint8_t>& data) {
  std::string name(data.begin(), data.end());
  auto exp = server_->find_export(name);
  // No error reply exists for NBD_OPT_EXPORT_NAME: the session ends.
  if (!exp || extended_ || !select_export(exp)) co_return false;
  std::vector<uint8_t> b;
  put64(b, uint64_t(exp->node().size()));
  uint16_t flags = exp->transmission_flags() | (structured_ ? kFlagSendDf : 0);
  put16(b, flags);
  if (!no_zeroes_) b.resize(b.size() + 124, 0);
  co_await write_all(b);
  co_return true;
}

Task<bool> Connection::handle_info_go(uint32_t opt, const std::vector<uint8_t>& data) {
  // u32 name length, name, u16 count, count x u16 info type.
  if (data.size() < 6 || get32(data.data()) > data.size() - 6) {
    co_await send_option_error(opt, kRepErrInvalid, "malformed request");
    co_return false;
  }
  uint32_t namelen = get32(data.data());
  std::string name(data.begin() + 4, data.begin() + 4 + namelen);
  const uint8_t* p = data.data() + 4 + namelen;
  uint16_t n = get16(p);
  if (data.size() != 6 + namelen + 2 * size_t(n)) {
    co_await send_option_error(opt, kRepErrInvalid, "malformed request");
    co_return false;
  }
  bool want_name = false, want_desc = false, want_block_size = false;
  for (uint16_t i = 0; i < n; ++i) {
    switch (get16(p + 2 + 2 * i)) {
      case kInfoName: want_name = true; break;
      case kInfoDescription: want_desc = true; break;
      case kInfoBlockSize: want_block_size = true; break;
      default: break;  // unknown requests are ignored
    }
  }
  auto exp = server_->find_export(name);
  if (!exp) {
    co_await send_option_error(opt, kRepErrUnknown, fmt::format("export '{}' not present", name));
    co_return false;
  }
  // As QEMU: INFO without a block-size request, on an export that has a
  // minimum, is told to ask; GO is served whatever the client asks, since
  // unaligned requests are served too.
  if (opt == kOptInfo && !want_block_size && exp->min_block_size() > 1) {
    co_await send_option_error(opt, kRepErrBlockSizeReqd,
                               "request NBD_INFO_BLOCK_SIZE to use this export");
    co_return false;
  }
  if (want_name) {
    std::vector<uint8_t> d;
    put16(d, kInfoName);
    put_bytes(d, exp->name());
    co_await send_option_reply(opt, kRepInfo, d);
  }
  if (want_desc && exp->description()) {
    std::vector<uint8_t> d;
    put16(d, kInfoDescription);
    put_bytes(d, *exp->description());
    co_await send_option_reply(opt, kRepInfo, d);
  }
  {
    // Always sent: the minimum is what the node can do without
    // read-modify-write, the maximum what one request may carry.
    uint32_t min = exp->min_block_size();
    std::vector<uint8_t> d;
    put16(d, kInfoBlockSize);
    put32(d, min);
    put32(d, std::max<uint32_t>(4096, min));
    put32(d, kMaxPayload);
    co_await send_option_reply(opt, kRepInfo, d);
  }
  {
    std::vector<uint8_t> d;
    put16(d, kInfoExport);
    put64(d, uint64_t(exp->node().size()));
    put16(d, exp->transmission_flags() | (structured_ ? kFlagSendDf : 0));
    co_await send_option_reply(opt, kRepInfo, d);
  }
  if (opt == kOptInfo) {
    co_await send_option_reply(opt, kRepAck, {});
    co_return false;
  }
  if (!select_export(exp)) {
    co_await send_option_error(opt, kRepErrShutdown, "export is shutting down");
    co_return false;
  }
  co_await send_option_reply(opt, kRepAck, {});
  co_return true;
}

// NBD_REP_META_CONTEXT's payload: the context id, then its name.
static std::vector<uint8_t> meta_context_reply(uint32_t id, const std::string& name) {
  std::vector<uint8_t> d;
  d.reserve(4 + name.size());
  put32(d, id);
  put_bytes(d, name);
  return d;
}

Task<void> Connection::handle_meta_context(uint32_t opt, const std::vector<uint8_t>& data) {
  bool set = opt == kOptSetMetaContext;
  if (set) contexts_.clear();  // replaced, even on failure
  // Listing is harmless before structured replies (QEMU allows it);
  // selecting needs them.
  if (set && !structured_) {
    co_await send_option_error(opt, kRepErrInvalid,
                               "request option when structured reply is not negotiated");
    co_return;
  }
  // u32 export name length, name, u32 query count, queries (u32 length,
  // string).
  size_t pos = 0;
  auto need = [&](size_t n) { return data.size() - pos >= n; };
  std::vector<std::string> queries;
  std::string name;
  bool ok = need(4);
  if (ok) {
    uint32_t len = get32(data.data() + pos);
    pos += 4;
    ok = need(len) && len <= kMaxString;
    if (ok) {
      name.assign(data.begin() + pos, data.begin() + pos + len);
      pos += len;
    }
  }
  ok = ok && need(4);
  if (ok) {
    uint32_t count = get32(data.data() + pos);
    pos += 4;
    for (uint32_t i = 0; ok && i < count; ++i) {
      ok = need(4);
      if (!ok) break;
      uint32_t len = get32(data.data() + pos);
      pos += 4;
      ok = need(len) && len <= kMaxString;
      if (ok) {
        queries.emplace_back(data.begin() + pos, data.begin() + pos + len);
        pos += len;
      }
    }
    ok = ok && pos == data.size();
  }
  if (!ok) {
    co_await send_option_error(opt, kRepErrInvalid, "malformed meta context request");
    co_return;
  }
  auto exp = server_->find_export(name);
  if (!exp) {
    co_await send_option_error(opt, kRepErrUnknown, fmt::format("export '{}' not present", name));
    co_return;
  }

  // Which of the export's contexts the queries select.
  const auto& bitmaps = exp->bitmaps();
  bool base = false, depth = false;
  std::vector<bool> bms(bitmaps.size(), false);
  bool all = !set && queries.empty();
  for (const auto& q : queries) {
    if (q == "base:allocation" || (!set && q == "base:")) base = true;
    if (exp->allocation_depth() && (q == "qemu:allocation-depth" || (!set && q == "qemu:"))) {
      depth = true;
    }
    for (size_t i = 0; i < bitmaps.size(); ++i) {
      std::string full = "qemu:dirty-bitmap:" + bitmaps[i]->name();
      if (q == full || (!set && (q == "qemu:" || q == "qemu:dirty-bitmap:"))) bms[i] = true;
    }
  }
  if (all) {
    base = true;
    depth = exp->allocation_depth();
    std::fill(bms.begin(), bms.end(), true);
  }
  std::vector<MetaContext> chosen;
  // LIST answers with id 0; GCC 12 wants no temporaries inside co_await.
  std::vector<uint8_t> reply;
  if (base) {
    chosen.push_back({0, MetaContext::base_allocation, 0});
    reply = meta_context_reply(0, "base:allocation");
    co_await send_option_reply(opt, kRepMetaContext, reply);
  }
  if (depth) {
    chosen.push_back({1, MetaContext::allocation_depth, 0});
    reply = meta_context_reply(set ? 1 : 0, "qemu:allocation-depth");
    co_await send_option_reply(opt, kRepMetaContext, reply);
  }
  for (size_t i = 0; i < bitmaps.size(); ++i) {
    if (!bms[i]) continue;
    uint32_t id = uint32_t(2 + i);
    chosen.push_back({id, MetaContext::dirty_bitmap, i});
    reply = meta_context_reply(set ? id : 0, "qemu:dirty-bitmap:" + bitmaps[i]->name());
    co_await send_option_reply(opt, kRepMetaContext, reply);
  }
  if (set) {
    contexts_ = std::move(chosen);
    meta_export_ = exp;
  }
  reply.clear();
  co_await send_option_reply(opt, kRepAck, reply);
}

// ---- transmission ------------------------------------------------------------

Task<bool> Connection::read_request(Request& req) {
  uint8_t h[32];
  co_await read_exact(h, 4);
  uint32_t magic = get32(h);
  if (magic != (extended_ ? kExtRequestMagic : kRequestMagic)) {
    spdlog::info("nbd: bad request magic {:#x}, disconnecting", magic);
    co_return false;
  }
  size_t rest = extended_ ? 28 : 24;
  co_await read_exact(h + 4, rest);
  req.flags = get16(h + 4);
  req.type = get16(h + 6);
  req.cookie = get64(h + 8);
  req.offset = get64(h + 16);
  req.length = extended_ ? get64(h + 24) : get32(h + 24);
  co_return true;
}

uint32_t Connection::validate_request(const Request& req, bool& disconnect) const {
  disconnect = false;
  const uint64_t size = uint64_t(exp_->node().size());
  uint16_t allowed = kCmdFlagFua;
  switch (req.type) {
    case kCmdRead:
      if (structured_) allowed |= kCmdFlagDf;
      if (req.length > kMaxPayload) return kEinval;
      break;
    case kCmdWrite:
      if (extended_) allowed |= kCmdFlagPayloadLen;
      if (req.length > kMaxPayload) {
        // The payload cannot be skipped safely: hang up.
        disconnect = true;
        return kEinval;
      }
      break;
    case kCmdWriteZeroes: allowed |= kCmdFlagNoHole | kCmdFlagFastZero; break;
    case kCmdBlockStatus:
      allowed |= kCmdFlagReqOne;
      if (contexts_.empty() || req.length == 0) return kEinval;
      break;
    case kCmdCache:
      // As READ: no more than one payload's worth at a time.
      if (req.length > kMaxPayload) return kEinval;
      break;
    case kCmdFlush:
    case kCmdTrim: break;
    default: return kEinval;
  }
  if (req.flags & ~allowed) return kEinval;
  bool changes = req.type == kCmdWrite || req.type == kCmdWriteZeroes || req.type == kCmdTrim;
  if (changes && !exp_->writable()) return kEperm;
  if (req.type == kCmdFlush) return 0;
  // Past the end: a write is out of space, anything else invalid.
  if (req.offset > size || req.length > size - req.offset) {
    return (req.type == kCmdWrite || req.type == kCmdWriteZeroes) ? kEnospc : kEinval;
  }
  // Requests not aligned to the minimum block size are served, as QEMU
  // does (the spec allows EINVAL): the node reads around them and writes
  // whole blocks.
  if ((req.flags & kCmdFlagDf) && req.length > kMaxPayload) return kEoverflow;
  return 0;
}

Task<void> Connection::transmission() {
  room_ = std::make_unique<asio::steady_timer>(stream_->get_executor());
  try {
    while (!closed_) {
      co_await wait_for_room();
      if (closed_) break;
      Request req;
      if (!co_await read_request(req)) break;
      if (req.type == kCmdDisc) break;
      bool disconnect = false;
      uint32_t err = validate_request(req, disconnect);
      if (disconnect) {
        spdlog::info("nbd: request of {} bytes is too large, disconnecting", req.length);
        break;
      }
      IoBuffer payload;
      // A write's payload always follows; in extended mode any command
      // may carry one (PAYLOAD_LEN), which we read and refuse.
      bool has_payload = req.type == kCmdWrite || (extended_ && (req.flags & kCmdFlagPayloadLen));
      if (has_payload) {
        if (req.length > kMaxPayload) break;
        payload = make_io_buffer(req.length);
        co_await read_exact(payload.get(), req.length);
        if (req.type != kCmdWrite && !err) err = kEinval;
      }
      if (err) {
        Reply r;
        error_reply(r, req, err);
        ++inflight_;
        send(std::move(r));
        continue;
      }
      ++inflight_;
      inflight_bytes_ += budget_cost(req);
      auto shared = std::make_shared<IoBuffer>(std::move(payload));
      spawn(stream_->get_executor(),
            [req, shared](Connection& c) { return c.handle_request(req, std::move(*shared)); });
    }
  } catch (const std::exception& e) {
    spdlog::debug("nbd: session ended: {}", e.what());
  }
  // Let requests in flight finish and their replies go out (DISC asks for
  // that), then hang up.  Even when the socket is gone, the requests are
  // waited for: they use the export's node, which the export releases
  // once its last session detaches.
  while (inflight_ > 0) {
    room_->expires_at(asio::steady_timer::time_point::max());
    co_await room_->async_wait(asio::as_tuple(asio::use_awaitable));
  }
  closed_ = true;
  boost::system::error_code ec;
  stream_->close(ec);
  if (exp_) exp_->detach(this);
}

Task<void> Connection::wait_for_room() {
  while (!closed_ && (inflight_ >= kMaxInflight || inflight_bytes_ >= kMaxInflightBytes)) {
    room_->expires_at(asio::steady_timer::time_point::max());
    co_await room_->async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

void Connection::wake_reader() {
  if (room_) room_->cancel();
}

void Connection::chunk_header(Reply& r, const Request& req, uint16_t flags, uint16_t type,
                              uint64_t length) {
  if (extended_) {
    put32(r.head, kExtReplyMagic);
    put16(r.head, flags);
    put16(r.head, type);
    put64(r.head, req.cookie);
    put64(r.head, req.offset);
    put64(r.head, length);
  } else {
    put32(r.head, kStructuredReplyMagic);
    put16(r.head, flags);
    put16(r.head, type);
    put64(r.head, req.cookie);
    put32(r.head, uint32_t(length));
  }
}

void Connection::simple_reply(Reply& r, const Request& req, uint32_t error) {
  size_t from = r.head.size();
  put32(r.head, kSimpleReplyMagic);
  put32(r.head, error);
  put64(r.head, req.cookie);
  r.add_head(from);
}

void Connection::error_reply(Reply& r, const Request& req, uint32_t error) {
  // Structured replies are needed for reads and block status once
  // negotiated, and for everything with extended headers.
  bool chunked =
      extended_ || (structured_ && (req.type == kCmdRead || req.type == kCmdBlockStatus));
  if (!chunked) {
    simple_reply(r, req, error);
    return;
  }
  size_t from = r.head.size();
  chunk_header(r, req, kReplyFlagDone, kReplyError, 6);
  put32(r.head, error);
  put16(r.head, 0);
  r.add_head(from);
}

void Connection::done_reply(Reply& r, const Request& req) {
  if (!extended_) {
    simple_reply(r, req, 0);
    return;
  }
  size_t from = r.head.size();
  chunk_header(r, req, kReplyFlagDone, kReplyNone, 0);
  r.add_head(from);
}

Task<void> Connection::handle_request(Request req, IoBuffer payload) {
  Reply reply;
  reply.cost = budget_cost(req);
  std::shared_ptr<BlockNode> hold = exp_->node_ptr();
  BlockNode& node = *hold;
  bool ro = !exp_->writable();
  uint32_t fua = (req.flags & kCmdFlagFua) || exp_->writethrough() ? uint32_t(kReqFua) : 0;
  int ret = 0;
  switch (req.type) {
    case kCmdRead:
      co_await handle_read(req, reply);
      send(std::move(reply));
      co_return;
    case kCmdBlockStatus:
      co_await handle_block_status(req, reply);
      send(std::move(reply));
      co_return;
    case kCmdWrite: {
      if (ro) {
        ret = -EPERM;
        break;
      }
      iovec v{payload.get(), size_t(req.length)};
      ret = req.length ? co_await node.write(req.offset, IoVec(&v, 1), fua) : 0;
      break;
    }
    case kCmdFlush: ret = co_await node.flush(); break;
    case kCmdTrim:
      if (ro) {
        ret = -EPERM;
        break;
      }
      ret = co_await node.discard(req.offset, req.length);
      if (ret == 0 && fua) ret = co_await node.flush();
      break;
    case kCmdCache: ret = co_await node.cache(req.offset, req.length); break;
    case kCmdWriteZeroes: {
      if (ro) {
        ret = -EPERM;
        break;
      }
      uint32_t f = fua;
      if (!(req.flags & kCmdFlagNoHole)) f |= kReqMayUnmap;
      if (req.flags & kCmdFlagFastZero) {
        if (!node.can_write_zeroes_fast()) {
          ret = -ENOTSUP;
          break;
        }
        f |= kReqNoFallback;
      }
      ret = co_await node.write_zeroes(req.offset, req.length, f);
      break;
    }
  }
  if (ret < 0) {
    error_reply(reply, req, errno_to_nbd(ret));
  } else {
    done_reply(reply, req);
  }
  send(std::move(reply));
}

// A read that fails before anything is sent replaces its reply with the
// error.
void Connection::fail_read(Reply& r, const Request& req, int ret) {
  r.head.clear();
  r.pieces.clear();
  r.data.reset();
  r.file.reset();
  error_reply(r, req, errno_to_nbd(ret));
}

Task<void> Connection::handle_read(const Request& req, Reply& r) {
  BlockNode& node = exp_->node();
  std::optional<BlockNode::MemorySpan> span;
  if (req.length >= kSendfileReadMin) span = node.memory_span(req.offset, req.length);
  bool sparse = structured_ && !(req.flags & kCmdFlagDf) && req.length >= kSparseReadMin;
  if (!sparse) {
    size_t from = r.head.size();
    if (!structured_) {
      simple_reply(r, req, 0);
    } else if (req.length == 0) {
      // A structured read always ends with a chunk: NONE, done.
      chunk_header(r, req, kReplyFlagDone, kReplyNone, 0);
      r.add_head(from);
      co_return;
    } else {
      chunk_header(r, req, kReplyFlagDone, kReplyOffsetData, 8 + req.length);
      put64(r.head, req.offset);
      r.add_head(from);
    }
    int ret = req.length ? co_await read_payload(req, r, span, 0, req.length) : 0;
    if (ret < 0) fail_read(r, req, ret);
    co_return;
  }

  // Holes become OFFSET_HOLE chunks; data is read where it is.
  uint64_t pos = 0;
  while (pos < req.length) {
    BlockStatus st = co_await node.block_status(req.offset + pos, req.length - pos);
    uint64_t len = std::min<uint64_t>(st.bytes, req.length - pos);
    len = std::min<uint64_t>(len, 0xffffffffu);
    bool last = pos + len == req.length;
    uint16_t flags = last ? kReplyFlagDone : 0;
    size_t from = r.head.size();
    if (st.flags & kStatusZero) {
      chunk_header(r, req, flags, kReplyOffsetHole, 12);
      put64(r.head, req.offset + pos);
      put32(r.head, uint32_t(len));
      r.add_head(from);
    } else {
      chunk_header(r, req, flags, kReplyOffsetData, 8 + len);
      put64(r.head, req.offset + pos);
      r.add_head(from);
      int ret = co_await read_payload(req, r, span, pos, len);
      if (ret < 0) {
        fail_read(r, req, ret);
        co_return;
      }
    }
    pos += len;
  }
}

// Adds the bytes [pos, pos + len) of the read to the reply: a file piece
// when the node has them in a memory span, else read into the reply's
// buffer.
Task<int> Connection::read_payload(const Request& req, Reply& r,
                                   const std::optional<BlockNode::MemorySpan>& span, uint64_t pos,
                                   uint64_t len) {
  if (span) {
    r.file = span->fd;
    r.add_file(span->offset + pos, len);
    co_return 0;
  }
  if (!r.data) r.data = make_io_buffer(req.length);
  iovec v{r.data.get() + pos, size_t(len)};
  int ret = co_await exp_->node().read(req.offset + pos, IoVec(&v, 1));
  if (ret >= 0) r.add_data(pos, len);
  co_return ret;
}

Task<void> Connection::handle_block_status(const Request& req, Reply& r) {
  BlockNode& node = exp_->node();
  bool one = req.flags & kCmdFlagReqOne;
  uint64_t end = req.offset + req.length;
  for (size_t c = 0; c < contexts_.size(); ++c) {
    const MetaContext& ctx = contexts_[c];
    // Extents of (length, flags), merged where flags repeat.
    std::vector<std::pair<uint64_t, uint64_t>> extents;
    uint64_t pos = req.offset;
    while (pos < end && extents.size() < kMaxExtents) {
      uint64_t len = 0, flags = 0;
      if (ctx.kind == MetaContext::dirty_bitmap) {
        auto [dirty, n] = exp_->bitmaps()[ctx.bitmap]->run_at(pos, end - pos);
        len = n;
        flags = dirty ? kStateDirty : 0;
      } else {
        BlockStatus st = co_await node.block_status(pos, end - pos);
        len = st.bytes;
        if (ctx.kind == MetaContext::base_allocation) {
          flags = ((st.flags & kStatusData) ? 0 : kStateHole) |
                  ((st.flags & kStatusZero) ? kStateZero : 0);
        } else {
          flags = st.depth;
        }
      }
      // 32-bit descriptors cap each extent below 4 GiB.
      if (!extended_) len = std::min<uint64_t>(len, 0x80000000u);
      if (!extents.empty() && extents.back().second == flags &&
          (extended_ || extents.back().first + len <= 0x80000000u)) {
        extents.back().first += len;
      } else {
        if (one && !extents.empty()) break;
        extents.emplace_back(len, flags);
      }
      pos += len;
    }
    if (req.length == 0) extents.clear();
    bool last = c + 1 == contexts_.size();
    size_t from = r.head.size();
    if (extended_) {
      chunk_header(r, req, last ? kReplyFlagDone : 0, kReplyBlockStatusExt,
                   8 + 16 * extents.size());
      put32(r.head, ctx.id);
      put32(r.head, uint32_t(extents.size()));
      for (auto [len, flags] : extents) {
        put64(r.head, len);
        put64(r.head, flags);
      }
    } else {
      chunk_header(r, req, last ? kReplyFlagDone : 0, kReplyBlockStatus, 4 + 8 * extents.size());
      put32(r.head, ctx.id);
      for (auto [len, flags] : extents) {
        put32(r.head, uint32_t(len));
        put32(r.head, uint32_t(flags));
      }
    }
    r.add_head(from);
  }
}

Task<boost::system::error_code> Connection::write_gathered(std::vector<asio::const_buffer>& bufs,
                                                           bool more) {
  // sendmsg straight from the buffers, waiting only when the socket is
  // full.  (asio::async_write caps each call at 64 KiB, which costs a
  // wake-up of the reader per 64 KiB of a large read.)  MORE tells the
  // socket that a file's pages follow.
  std::vector<iovec> iov(bufs.size());
  for (size_t i = 0; i < bufs.size(); ++i) {
    iov[i] = {const_cast<void*>(bufs[i].data()), bufs[i].size()};
  }
  size_t first = 0;
  while (first < iov.size()) {
    msghdr msg{};
    msg.msg_iov = iov.data() + first;
    msg.msg_iovlen = std::min<size_t>(iov.size() - first, IOV_MAX);
    ssize_t r = ::sendmsg(stream_->native_handle(), &msg, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN)
        co_return boost::system::error_code(errno, boost::system::system_category());
      auto [ec] = co_await stream_->async_wait(asio::posix::stream_descriptor::wait_write,
                                               asio::as_tuple(asio::use_awaitable));
      if (ec) co_return ec;
      continue;
    }
    size_t done = size_t(r);
    while (first < iov.size() && done >= iov[first].iov_len) done -= iov[first++].iov_len;
    if (first < iov.size()) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + done;
      iov[first].iov_len -= done;
    }
  }
  co_return boost::system::error_code{};
}

// Sends length bytes of a memory-backed file: the socket takes references
// to its pages.  A file that shrank underneath leaves zeroes, as a read
// past its end would.
Task<boost::system::error_code> Connection::send_file(int fd, uint64_t offset, uint64_t length) {
  off_t pos = off_t(offset);
  while (length > 0) {
    ssize_t r =
        ::sendfile(stream_->native_handle(), fd, &pos, std::min<uint64_t>(length, 1u << 30));
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        spdlog::warn("nbd: sending file data failed: {}", strerror(errno));
        co_return boost::system::error_code(errno, boost::system::system_category());
      }
      auto [ec] = co_await stream_->async_wait(asio::posix::stream_descriptor::wait_write,
                                               asio::as_tuple(asio::use_awaitable));
      if (ec) co_return ec;
      continue;
    }
    if (r == 0) break;
    length -= uint64_t(r);
  }
  static const std::vector<uint8_t> zeroes(64 * 1024);
  std::vector<asio::const_buffer> pad;
  while (length > 0) {
    uint64_t n = std::min<uint64_t>(length, zeroes.size());
    pad.assign(1, asio::const_buffer(zeroes.data(), n));
    boost::system::error_code ec = co_await write_gathered(pad, true);
    if (ec) co_return ec;
    length -= n;
  }
  co_return boost::system::error_code{};
}

void Connection::send(Reply reply) {
  if (closed_) {
    --inflight_;
    inflight_bytes_ -= reply.cost;
    wake_reader();
    return;
  }
  queue_.push_back(std::move(reply));
  if (!writing_) {
    writing_ = true;
    spawn(stream_->get_executor(), [](Connection& c) { return c.writer(); });
  }
}

Task<void> Connection::writer() {
  std::vector<asio::const_buffer> bufs;
  while (!queue_.empty() && !closed_) {
    // Gather as many queued replies as fit in one sendmsg; a file piece
    // sends what is gathered, then itself.  Replies queued meanwhile join
    // in (a deque keeps its elements in place when it grows at the back).
    size_t n = 0;
    bufs.clear();
    boost::system::error_code ec;
    while (n < queue_.size() && !ec) {
      Reply& r = queue_[n];
      if (bufs.size() + r.pieces.size() > 256 && n > 0) break;
      ++n;
      for (const auto& p : r.pieces) {
        if (p.kind == Reply::Piece::file) {
          ec = co_await write_gathered(bufs, true);
          bufs.clear();
          if (!ec) ec = co_await send_file(r.file->get(), p.offset, p.length);
          if (ec) break;
          continue;
        }
        const uint8_t* base = p.kind == Reply::Piece::data ? r.data.get() : r.head.data();
        bufs.emplace_back(base + p.offset, p.length);
      }
    }
    if (!ec) ec = co_await write_gathered(bufs, false);
    for (size_t i = 0; i < n; ++i) {
      inflight_bytes_ -= queue_.front().cost;
      --inflight_;
      queue_.pop_front();
    }
    wake_reader();
    if (ec) {
      closed_ = true;
      boost::system::error_code ignored;
      stream_->close(ignored);
    }
  }
  // Replies that can no longer go out still release their budget.
  while (!queue_.empty()) {
    inflight_bytes_ -= queue_.front().cost;
    --inflight_;
    queue_.pop_front();
  }
  wake_reader();
  writing_ = false;
}

}  // namespace vstord::nbd
