"""A small raw NBD client for tests: bytes in and out, replies parsed.

Deliberately independent of the daemon's code and written from the NBD
protocol specification (doc/proto.md of the NetworkBlockDevice project,
with its EXTENDED_HEADERS extension), so tests check the wire, not our
own assumptions about it.  Nothing here hides protocol errors: hostile
tests use send_raw() and the low-level helpers to break the rules on
purpose.
"""

import socket
import struct
import time

from qmp import connect_inet, connect_unix

# -- handshake ----------------------------------------------------------
NBDMAGIC = 0x4E42444D41474943          # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054          # "IHAVEOPT"
OPT_REPLY_MAGIC = 0x0003E889045565A9

FLAG_FIXED_NEWSTYLE = 1 << 0           # handshake flags (server)
FLAG_NO_ZEROES = 1 << 1
FLAG_C_FIXED_NEWSTYLE = 1 << 0         # client flags
FLAG_C_NO_ZEROES = 1 << 1

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_PEEK_EXPORT = 4
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10
OPT_EXTENDED_HEADERS = 11

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_FLAG_ERROR = 1 << 31
REP_ERR_UNSUP = REP_FLAG_ERROR | 1
REP_ERR_POLICY = REP_FLAG_ERROR | 2
REP_ERR_INVALID = REP_FLAG_ERROR | 3
REP_ERR_PLATFORM = REP_FLAG_ERROR | 4
REP_ERR_TLS_REQD = REP_FLAG_ERROR | 5
REP_ERR_UNKNOWN = REP_FLAG_ERROR | 6
REP_ERR_SHUTDOWN = REP_FLAG_ERROR | 7
REP_ERR_BLOCK_SIZE_REQD = REP_FLAG_ERROR | 8
REP_ERR_TOO_BIG = REP_FLAG_ERROR | 9
REP_ERR_EXT_HEADER_REQD = REP_FLAG_ERROR | 10

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# -- transmission flags -------------------------------------------------
TF_HAS_FLAGS = 1 << 0
TF_READ_ONLY = 1 << 1
TF_SEND_FLUSH = 1 << 2
TF_SEND_FUA = 1 << 3
TF_ROTATIONAL = 1 << 4
TF_SEND_TRIM = 1 << 5
TF_SEND_WRITE_ZEROES = 1 << 6
TF_SEND_DF = 1 << 7
TF_CAN_MULTI_CONN = 1 << 8
TF_SEND_RESIZE = 1 << 9
TF_SEND_CACHE = 1 << 10
TF_SEND_FAST_ZERO = 1 << 11
TF_BLOCK_STATUS_PAYLOAD = 1 << 12

# -- requests and replies -----------------------------------------------
REQUEST_MAGIC = 0x25609513
EXTENDED_REQUEST_MAGIC = 0x21E41C71
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF
EXTENDED_REPLY_MAGIC = 0x6E8A278C

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7
CMD_RESIZE = 8

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4
CMD_FLAG_PAYLOAD_LEN = 1 << 5

REPLY_FLAG_DONE = 1 << 0

REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_BLOCK_STATUS_EXT = 6
REPLY_TYPE_ERROR = (1 << 15) | 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) | 2

EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108

STATE_HOLE = 1 << 0                    # base:allocation
STATE_ZERO = 1 << 1
STATE_DIRTY = 1 << 0                   # qemu:dirty-bitmap:NAME

ZERO_PAD = 124


class ProtocolError(Exception):
    """The server sent something the specification does not allow."""


def rep_name(t):
    names = {v: k for k, v in globals().items()
             if k.startswith("REP_") and isinstance(v, int) and k != "REP_FLAG_ERROR"}
    return names.get(t, "0x%x" % t)


# -- parsed objects -----------------------------------------------------
class OptionReply:
    def __init__(self, option, type, data):
        self.option = option
        self.type = type
        self.data = data

    @property
    def is_error(self):
        return bool(self.type & REP_FLAG_ERROR)

    @property
    def is_final(self):
        return self.type == REP_ACK or self.is_error

    def __repr__(self):
        return "OptionReply(opt=%d, %s, %r)" % (self.option, rep_name(self.type), self.data[:80])


class ExportInfo:
    """What INFO/GO (or EXPORT_NAME) told about an export."""

    def __init__(self):
        self.size = None
        self.flags = None
        self.name = None
        self.description = None
        self.block_size = None        # (minimum, preferred, maximum)
        self.info_types = []          # every NBD_INFO_* type seen, in order
        self.replies = []             # every OptionReply, the final one last

    @property
    def final(self):
        return self.replies[-1] if self.replies else None


class Chunk:
    """One structured or extended reply chunk, its payload parsed."""

    def __init__(self, flags, type, cookie, payload, offset=None, extended=False):
        self.flags = flags
        self.type = type
        self.cookie = cookie
        self.payload = payload
        self.header_offset = offset   # extended replies only
        self.extended = extended
        self.offset = None            # data/hole/error-offset chunks
        self.data = None
        self.hole_size = None
        self.context_id = None
        self.extents = None           # [(length, status)]
        self.error = None
        self.message = None
        self._parse()

    @property
    def done(self):
        return bool(self.flags & REPLY_FLAG_DONE)

    @property
    def is_error(self):
        return bool(self.type & (1 << 15))

    def _parse(self):
        p, t = self.payload, self.type
        if t == REPLY_TYPE_NONE:
            if p:
                raise ProtocolError("NONE chunk with %d payload bytes" % len(p))
            if not self.done:
                raise ProtocolError("NONE chunk without DONE")
        elif t == REPLY_TYPE_OFFSET_DATA:
            if len(p) < 9:
                raise ProtocolError("OFFSET_DATA chunk of length %d" % len(p))
            self.offset = struct.unpack(">Q", p[:8])[0]
            self.data = p[8:]
        elif t == REPLY_TYPE_OFFSET_HOLE:
            if len(p) != 12:
                raise ProtocolError("OFFSET_HOLE chunk of length %d" % len(p))
            self.offset, self.hole_size = struct.unpack(">QI", p)
            if self.hole_size == 0:
                raise ProtocolError("empty hole")
        elif t == REPLY_TYPE_BLOCK_STATUS:
            if len(p) < 12 or (len(p) - 4) % 8:
                raise ProtocolError("BLOCK_STATUS chunk of length %d" % len(p))
            self.context_id = struct.unpack(">I", p[:4])[0]
            self.extents = [struct.unpack(">II", p[i:i + 8]) for i in range(4, len(p), 8)]
        elif t == REPLY_TYPE_BLOCK_STATUS_EXT:
            if len(p) < 24 or (len(p) - 8) % 16:
                raise ProtocolError("BLOCK_STATUS_EXT chunk of length %d" % len(p))
            self.context_id, count = struct.unpack(">II", p[:8])
            self.extents = [struct.unpack(">QQ", p[i:i + 16]) for i in range(8, len(p), 16)]
            if count != len(self.extents):
                raise ProtocolError("BLOCK_STATUS_EXT count %d but %d descriptors"
                                    % (count, len(self.extents)))
        elif t & (1 << 15):
            if len(p) < 6:
                raise ProtocolError("error chunk of length %d" % len(p))
            self.error, mlen = struct.unpack(">IH", p[:6])
            if 6 + mlen > len(p):
                raise ProtocolError("error message length %d exceeds chunk" % mlen)
            self.message = p[6:6 + mlen].decode(errors="replace")
            rest = p[6 + mlen:]
            if t == REPLY_TYPE_ERROR_OFFSET:
                if len(rest) != 8:
                    raise ProtocolError("ERROR_OFFSET chunk with %d trailing bytes" % len(rest))
                self.offset = struct.unpack(">Q", rest)[0]
            if self.error == 0:
                raise ProtocolError("error chunk with error 0")
        else:
            raise ProtocolError("unknown chunk type %d" % t)

    def __repr__(self):
        return "Chunk(type=%d flags=%d cookie=%#x len=%d)" % (
            self.type, self.flags, self.cookie, len(self.payload))


class Reply:
    """A whole reply: one simple reply, or every chunk up to DONE."""

    def __init__(self, cookie, kind):
        self.cookie = cookie
        self.kind = kind              # "simple", "structured" or "extended"
        self.error = 0                # simple error, or the first error chunk's
        self.data = None              # READ: the bytes (holes filled with zeroes)
        self.chunks = []
        self.request = None           # (type, flags, offset, length)

    @property
    def ok(self):
        return self.error == 0

    @property
    def errors(self):
        return [c for c in self.chunks if c.is_error]

    @property
    def content_chunks(self):
        return [c for c in self.chunks
                if c.type in (REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE)]

    @property
    def holes(self):
        return [(c.offset, c.hole_size) for c in self.chunks if c.type == REPLY_TYPE_OFFSET_HOLE]

    @property
    def extents(self):
        """{context id: [(length, status)]} from the status chunks."""
        out = {}
        for c in self.chunks:
            if c.extents is not None:
                if c.context_id in out:
                    raise ProtocolError("two status chunks for context %d" % c.context_id)
                out[c.context_id] = c.extents
        return out

    def __repr__(self):
        return "Reply(%s cookie=%#x error=%d chunks=%r)" % (
            self.kind, self.cookie, self.error, self.chunks)


# -- the client ---------------------------------------------------------
class NBDClient:
    def __init__(self, sock, timeout=10.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.handshake_flags = None
        self.no_zeroes = False
        self.structured = False
        self.extended = False
        self.export = None            # ExportInfo after GO / EXPORT_NAME
        self.contexts = {}            # context name -> id (last SET_META_CONTEXT)
        self._cookie = 0x1000
        self._pending = {}            # cookie -> (type, flags, offset, length)
        self._partial = {}            # cookie -> Reply being assembled
        self._done = {}               # cookie -> finished Reply read early

    # connecting ---------------------------------------------------------
    @classmethod
    def unix(cls, path, timeout=10.0):
        return cls(connect_unix(path, timeout), timeout)

    @classmethod
    def inet(cls, host, port, timeout=10.0):
        return cls(connect_inet(host, port, timeout), timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # raw ----------------------------------------------------------------
    def send_raw(self, data):
        self.sock.sendall(data)

    def send_slowly(self, data, delay=0.005):
        """One byte at a time (len(data) sends, delay apart)."""
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            time.sleep(delay)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError("connection closed after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def recv_some(self, timeout=1.0):
        """Whatever arrives within timeout: bytes, b"" on EOF, None if nothing."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return b""
        finally:
            self.sock.settimeout(old)

    def is_closed_by_peer(self, timeout=5.0):
        """True if the server closes the connection within timeout; any
        bytes it sends first are read and dropped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                got = self.recv_some(min(left, 1.0))
            except OSError:
                return True
            if got == b"":
                return True

    # handshake ----------------------------------------------------------
    def read_greeting(self):
        magic, opt, flags = struct.unpack(">QQH", self.recv_exact(18))
        if magic != NBDMAGIC:
            raise ProtocolError("bad greeting magic %#x" % magic)
        if opt != IHAVEOPT:
            raise ProtocolError("not newstyle: %#x" % opt)
        self.handshake_flags = flags
        return flags

    def send_client_flags(self, flags):
        self.send_raw(struct.pack(">I", flags))

    def handshake(self, no_zeroes=False, client_flags=None):
        """Greeting plus client flags.  Returns the handshake flags."""
        flags = self.read_greeting()
        if client_flags is None:
            client_flags = FLAG_C_FIXED_NEWSTYLE
            if no_zeroes:
                if not flags & FLAG_NO_ZEROES:
                    raise ProtocolError("server lacks NO_ZEROES")
                client_flags |= FLAG_C_NO_ZEROES
        self.no_zeroes = bool(client_flags & FLAG_C_NO_ZEROES)
        self.send_client_flags(client_flags)
        return flags

    def send_option(self, option, data=b"", magic=IHAVEOPT, length=None):
        if length is None:
            length = len(data)
        self.send_raw(struct.pack(">QII", magic, option, length) + data)

    def read_option_reply(self):
        magic, option, rtype, length = struct.unpack(">QIII", self.recv_exact(20))
        if magic != OPT_REPLY_MAGIC:
            raise ProtocolError("bad option reply magic %#x" % magic)
        data = self.recv_exact(length) if length else b""
        return OptionReply(option, rtype, data)

    def option(self, option, data=b"", limit=10000):
        """Sends an option and reads replies up to the final one (ACK or an
        error).  Returns the list, final last."""
        self.send_option(option, data)
        return self.read_option_replies(option, limit)

    def read_option_replies(self, option, limit=10000):
        out = []
        for _ in range(limit):
            r = self.read_option_reply()
            if r.option != option:
                raise ProtocolError("reply for option %d to option %d" % (r.option, option))
            out.append(r)
            if r.is_final:
                return out
        raise ProtocolError("no final reply in %d" % limit)

    def abort(self):
        """NBD_OPT_ABORT; returns the reply, or None if the server just closed."""
        self.send_option(OPT_ABORT)
        try:
            return self.read_option_reply()
        except (EOFError, ConnectionResetError):
            return None

    def list_exports(self):
        """NBD_OPT_LIST: ([(name, description)], final reply)."""
        replies = self.option(OPT_LIST)
        out = []
        for r in replies[:-1]:
            if r.type != REP_SERVER:
                raise ProtocolError("unexpected %r in LIST" % r)
            (n,) = struct.unpack(">I", r.data[:4])
            if n > len(r.data) - 4:
                raise ProtocolError("REP_SERVER name length %d too long" % n)
            out.append((r.data[4:4 + n].decode(), r.data[4 + n:].decode()))
        return out, replies[-1]

    @staticmethod
    def info_data(name, requests=()):
        n = name.encode() if isinstance(name, str) else name
        return (struct.pack(">I", len(n)) + n + struct.pack(">H", len(requests))
                + b"".join(struct.pack(">H", r) for r in requests))

    def _info_go(self, option, name, requests):
        replies = self.option(option, self.info_data(name, requests))
        info = ExportInfo()
        info.replies = replies
        for r in replies[:-1]:
            if r.type != REP_INFO:
                raise ProtocolError("unexpected %r in INFO/GO" % r)
            if len(r.data) < 2:
                raise ProtocolError("short REP_INFO")
            (t,) = struct.unpack(">H", r.data[:2])
            info.info_types.append(t)
            body = r.data[2:]
            if t == INFO_EXPORT:
                if len(r.data) != 12:
                    raise ProtocolError("NBD_INFO_EXPORT of length %d" % len(r.data))
                info.size, info.flags = struct.unpack(">QH", body)
            elif t == INFO_NAME:
                info.name = body.decode()
            elif t == INFO_DESCRIPTION:
                info.description = body.decode()
            elif t == INFO_BLOCK_SIZE:
                if len(r.data) != 14:
                    raise ProtocolError("NBD_INFO_BLOCK_SIZE of length %d" % len(r.data))
                info.block_size = struct.unpack(">III", body)
        if info.final.type == REP_ACK and info.size is None:
            raise ProtocolError("ACK without NBD_INFO_EXPORT")
        return info

    def info(self, name, requests=()):
        return self._info_go(OPT_INFO, name, requests)

    def go(self, name, requests=(), check=True):
        """NBD_OPT_GO; on ACK the transmission phase begins.  With check,
        anything but success raises."""
        info = self._info_go(OPT_GO, name, requests)
        if info.final.type == REP_ACK:
            self.export = info
        elif check:
            raise ProtocolError("GO %r failed: %r" % (name, info.final))
        return info

    def export_name(self, name):
        """NBD_OPT_EXPORT_NAME: returns ExportInfo (size, flags)."""
        n = name.encode() if isinstance(name, str) else name
        self.send_option(OPT_EXPORT_NAME, n)
        size, flags = struct.unpack(">QH", self.recv_exact(10))
        if not self.no_zeroes:
            pad = self.recv_exact(ZERO_PAD)
            if pad != bytes(ZERO_PAD):
                raise ProtocolError("non-zero padding after EXPORT_NAME")
        info = ExportInfo()
        info.size, info.flags = size, flags
        self.export = info
        return info

    def structured_reply(self, data=b""):
        r = self.option(OPT_STRUCTURED_REPLY, data)[-1]
        if r.type == REP_ACK:
            self.structured = True
        return r

    def extended_headers(self, data=b""):
        r = self.option(OPT_EXTENDED_HEADERS, data)[-1]
        if r.type == REP_ACK:
            self.extended = True
        return r

    @staticmethod
    def meta_data(name, queries):
        n = name.encode() if isinstance(name, str) else name
        out = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
        for q in queries:
            q = q.encode() if isinstance(q, str) else q
            out += struct.pack(">I", len(q)) + q
        return out

    def _meta(self, option, name, queries, raw=None):
        replies = self.option(option, self.meta_data(name, queries) if raw is None else raw)
        contexts = {}
        for r in replies[:-1]:
            if r.type != REP_META_CONTEXT:
                raise ProtocolError("unexpected %r in meta context reply" % r)
            if len(r.data) < 4:
                raise ProtocolError("short REP_META_CONTEXT")
            (cid,) = struct.unpack(">I", r.data[:4])
            cname = r.data[4:].decode()
            if cname in contexts:
                raise ProtocolError("context %s listed twice" % cname)
            contexts[cname] = cid
        return contexts, replies[-1]

    def list_meta_context(self, name, queries=(), raw=None):
        """({context name: id}, final reply)."""
        return self._meta(OPT_LIST_META_CONTEXT, name, queries, raw)

    def set_meta_context(self, name, queries=(), raw=None):
        """({context name: id}, final reply); remembered on success."""
        contexts, final = self._meta(OPT_SET_META_CONTEXT, name, queries, raw)
        self.contexts = contexts if final.type == REP_ACK else {}
        return contexts, final

    def connect_export(self, name, structured=False, extended=False, meta=(),
                       no_zeroes=False, requests=()):
        """The usual negotiation, up to the transmission phase."""
        self.handshake(no_zeroes=no_zeroes)
        if extended:
            r = self.extended_headers()
            if r.type != REP_ACK:
                raise ProtocolError("EXTENDED_HEADERS refused: %r" % r)
        if structured:
            r = self.structured_reply()
            if r.type != REP_ACK:
                raise ProtocolError("STRUCTURED_REPLY refused: %r" % r)
        if meta:
            _, final = self.set_meta_context(name, meta)
            if final.type != REP_ACK:
                raise ProtocolError("SET_META_CONTEXT failed: %r" % final)
        return self.go(name, requests)

    # transmission -------------------------------------------------------
    def next_cookie(self):
        self._cookie += 1
        return self._cookie

    def request_bytes(self, type, flags=0, offset=0, length=0, cookie=0, extended=None,
                      magic=None):
        ext = self.extended if extended is None else extended
        if ext:
            return struct.pack(">IHHQQQ", EXTENDED_REQUEST_MAGIC if magic is None else magic,
                               flags, type, cookie, offset, length)
        return struct.pack(">IHHQQI", REQUEST_MAGIC if magic is None else magic,
                           flags, type, cookie, offset, length)

    def send_request(self, type, flags=0, offset=0, length=None, payload=b"", cookie=None,
                     extended=None):
        """Sends one request; returns its cookie.  length defaults to the
        payload's length.  In extended mode a WRITE gets PAYLOAD_LEN set
        automatically; other flags are sent exactly as given."""
        if cookie is None:
            cookie = self.next_cookie()
        ext = self.extended if extended is None else extended
        if ext and type == CMD_WRITE:
            flags |= CMD_FLAG_PAYLOAD_LEN
        if length is None:
            length = len(payload)
        self.send_raw(self.request_bytes(type, flags, offset, length, cookie, ext) + payload)
        if type != CMD_DISC:
            self._pending[cookie] = (type, flags, offset, length)
        return cookie

    def expect_reply(self, cookie, type, flags=0, offset=0, length=0):
        """Registers a request sent with send_raw, so its reply parses."""
        self._pending[cookie] = (type, flags, offset, length)

    def _read_message(self):
        """Reads one simple reply or one chunk; returns (cookie, Reply or
        Chunk)."""
        (magic,) = struct.unpack(">I", self.recv_exact(4))
        if magic == SIMPLE_REPLY_MAGIC:
            if self.extended:
                raise ProtocolError("simple reply after extended headers were negotiated")
            error, cookie = struct.unpack(">IQ", self.recv_exact(12))
            if cookie not in self._pending:
                raise ProtocolError("simple reply for unknown cookie %#x" % cookie)
            req = self._pending[cookie]
            if req[0] == CMD_READ and self.structured:
                raise ProtocolError("simple reply to READ with structured replies")
            r = Reply(cookie, "simple")
            r.error = error
            if req[0] == CMD_READ and error == 0:
                r.data = self.recv_exact(req[3])
            return cookie, r
        if magic == STRUCTURED_REPLY_MAGIC:
            if self.extended:
                raise ProtocolError("structured reply after extended headers were negotiated")
            if not self.structured:
                raise ProtocolError("structured reply without negotiation")
            flags, type, cookie, length = struct.unpack(">HHQI", self.recv_exact(16))
            payload = self.recv_exact(length) if length else b""
            return cookie, Chunk(flags, type, cookie, payload)
        if magic == EXTENDED_REPLY_MAGIC:
            if not self.extended:
                raise ProtocolError("extended reply without negotiation")
            flags, type, cookie, offset, length = struct.unpack(">HHQQQ", self.recv_exact(28))
            if length > (1 << 32):
                raise ProtocolError("extended reply length %d" % length)
            payload = self.recv_exact(length) if length else b""
            return cookie, Chunk(flags, type, cookie, payload, offset=offset, extended=True)
        raise ProtocolError("bad reply magic %#x" % magic)

    def read_reply(self, cookie=None, limit=100000):
        """The next complete reply (for cookie, if given; replies to other
        cookies that complete meanwhile are kept for later)."""
        if cookie is not None and cookie in self._done:
            return self._done.pop(cookie)
        if cookie is None and self._done:
            return self._done.pop(next(iter(self._done)))
        for _ in range(limit):
            ck, msg = self._read_message()
            if ck not in self._pending:
                raise ProtocolError("reply for unknown cookie %#x" % ck)
            if isinstance(msg, Reply):
                if ck in self._partial:
                    raise ProtocolError("simple reply in the middle of a structured one")
                reply = msg
            else:
                reply = self._partial.get(ck)
                if reply is None:
                    reply = self._partial[ck] = Reply(ck, "extended" if msg.extended else "structured")
                self._check_chunk(msg)
                reply.chunks.append(msg)
                if msg.is_error and reply.error == 0:
                    reply.error = msg.error
                if not msg.done:
                    continue
                del self._partial[ck]
            reply.request = self._pending.pop(ck)
            if reply.kind != "simple" and reply.request[0] == CMD_READ:
                self._assemble_read(reply)
            if cookie is None or ck == cookie:
                return reply
            self._done[ck] = reply
        raise ProtocolError("no complete reply in %d messages" % limit)

    def _check_chunk(self, c):
        req = self._pending[c.cookie]
        if c.extended and c.header_offset != req[2]:
            raise ProtocolError("extended reply offset %d for request offset %d"
                                % (c.header_offset, req[2]))
        if c.type == REPLY_TYPE_BLOCK_STATUS and self.extended:
            raise ProtocolError("BLOCK_STATUS chunk with extended headers")
        if c.type == REPLY_TYPE_BLOCK_STATUS_EXT and not self.extended:
            raise ProtocolError("BLOCK_STATUS_EXT chunk without extended headers")
        if c.type in (REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE) and req[0] != CMD_READ:
            raise ProtocolError("content chunk for command %d" % req[0])
        if c.extents is not None and req[0] != CMD_BLOCK_STATUS:
            raise ProtocolError("status chunk for command %d" % req[0])

    @staticmethod
    def _assemble_read(reply):
        """Reassembles READ content chunks; checks they lie inside the
        request, do not overlap and (on success) cover it all."""
        _, _, off, length = reply.request
        buf = bytearray(length)
        covered = []
        for c in reply.chunks:
            if c.type == REPLY_TYPE_OFFSET_DATA:
                start, n = c.offset, len(c.data)
            elif c.type == REPLY_TYPE_OFFSET_HOLE:
                start, n = c.offset, c.hole_size
            elif c.type == REPLY_TYPE_ERROR_OFFSET:
                if not off <= c.offset < off + length:
                    raise ProtocolError("error offset %d outside the request" % c.offset)
                continue
            else:
                continue
            if start < off or start + n > off + length:
                raise ProtocolError("chunk [%d, +%d) outside request [%d, +%d)"
                                    % (start, n, off, length))
            for s, e in covered:
                if start < e and s < start + n:
                    raise ProtocolError("overlapping read chunks")
            covered.append((start, start + n))
            if c.type == REPLY_TYPE_OFFSET_DATA:
                buf[start - off:start - off + n] = c.data
        if reply.error == 0:
            total = sum(e - s for s, e in covered)
            if total != length:
                raise ProtocolError("read chunks cover %d of %d bytes" % (total, length))
        reply.data = bytes(buf)

    def command(self, type, flags=0, offset=0, length=None, payload=b""):
        cookie = self.send_request(type, flags, offset, length, payload)
        return self.read_reply(cookie)

    def read(self, offset, length, flags=0):
        return self.command(CMD_READ, flags, offset, length)

    def write(self, offset, data, flags=0):
        return self.command(CMD_WRITE, flags, offset, payload=data)

    def flush(self, flags=0):
        return self.command(CMD_FLUSH, flags, 0, 0)

    def trim(self, offset, length, flags=0):
        return self.command(CMD_TRIM, flags, offset, length)

    def cache(self, offset, length, flags=0):
        return self.command(CMD_CACHE, flags, offset, length)

    def write_zeroes(self, offset, length, flags=0):
        return self.command(CMD_WRITE_ZEROES, flags, offset, length)

    def block_status(self, offset, length, flags=0, payload=b""):
        return self.command(CMD_BLOCK_STATUS, flags, offset, length if not payload else None,
                            payload)

    def disc(self):
        """NBD_CMD_DISC (no reply)."""
        self.send_request(CMD_DISC)

    @property
    def pending(self):
        return dict(self._pending)
