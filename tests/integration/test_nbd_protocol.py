"""The NBD server on the wire: handshake and option haggling, every
command with every flag, structured and extended replies, metadata
contexts, hostile clients, connection limits, export removal and
durability.

Everything goes through the raw client in nbd_raw.py against a daemon
serving a sparse raw image on a unix socket in a private directory.  The
expectations come from the NBD protocol specification (doc/proto.md of
the NetworkBlockDevice project and its EXTENDED_HEADERS extension) and
QEMU's description of its "qemu:" metadata contexts.

Where vstord deliberately follows the specification more closely than
qemu-storage-daemon does (error codes), the test is skipped when the
binary under test is QEMU's (skip_on_qemu); where it offers what the
reference QEMU 7.2 lacks (extended headers, handshake-max-seconds, default
connection limits), it is skipped for QEMU versions without the feature
(skip_on_qemu_before).
"""

import functools
import os
import re
import socket
import struct
import subprocess
import tempfile
import time
import unittest

import nbd_raw as nbd
from daemon import VSTORD, Daemon, monitor_args, wait_for
from nbd_raw import NBDClient

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

IMG_SIZE = 4 * MiB
DATA_LEN = 64 * KiB                      # the image's only allocated data, at 0
PATTERN = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(DATA_LEN))
SPARSE_AT = 1 * MiB                      # well inside the hole


def is_qemu():
    return "qemu" in os.path.basename(VSTORD)


@functools.lru_cache(maxsize=None)
def qemu_version():
    """(major, minor) of the QEMU binary under test."""
    out = subprocess.run([VSTORD, "--version"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, timeout=10).stdout.decode()
    m = re.search(r"version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def skip_on_qemu(why):
    """vstord follows the specification where QEMU does not."""
    return unittest.skipIf(is_qemu(), "qemu-storage-daemon differs: " + why)


def skip_on_qemu_before(version, why):
    """Features QEMU gained in a later version than the reference 7.2."""
    old = is_qemu() and qemu_version() < version
    return unittest.skipIf(old, "qemu-storage-daemon before %d.%d: %s" % (version + (why,)))


# proto.md: writes past the end SHOULD fail with ENOSPC; QEMU says EINVAL
# (checked strictly in OutOfRange.test_writes_past_end_enospc).
WRITE_PAST_END = (nbd.EINVAL, nbd.ENOSPC) if is_qemu() else (nbd.ENOSPC,)


def make_image(path, size=IMG_SIZE, data=PATTERN):
    with open(path, "wb") as f:
        f.truncate(size)
        f.write(data)
    return path


def nbd_args(img, export_opts="writable=on", server_opts="", name="d", file_opts=""):
    return ["--blockdev", "driver=file,node-name=f0,filename=" + img + file_opts,
            "--blockdev", "driver=raw,node-name=r0,file=f0",
            "--nbd-server", "addr.type=unix,addr.path=@DIR@/nbd.sock" + server_opts,
            "--export", "type=nbd,id=e0,node-name=r0,name=%s%s"
            % (name, "," + export_opts if export_opts else "")]


def is_pow2(n):
    return n > 0 and n & (n - 1) == 0


class NBDTestCase(unittest.TestCase):
    """A daemon exporting a sparse raw image as "d" (writable unless a
    subclass says otherwise), its QMP monitor on qmp.sock."""

    export_opts = "writable=on"
    server_opts = ""
    image_size = IMG_SIZE
    image_dir = None  # where the image lives (None: the default temporary directory)
    file_opts = ""    # more ",key=value" options of the file node

    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="vstord-test-img-", dir=self.image_dir)
        self.addCleanup(tmp.cleanup)
        self.img = make_image(os.path.join(tmp.name, "img"), self.image_size)
        self.daemon = Daemon(monitor_args() + nbd_args(self.img, self.export_opts,
                                                       self.server_opts,
                                                       file_opts=self.file_opts))
        self.addCleanup(self.daemon.stop)
        self.sock = self.daemon.path("nbd.sock")

    # -- helpers ----------------------------------------------------------
    def client(self, timeout=10.0):
        c = NBDClient.unix(self.sock, timeout)
        self.addCleanup(c.close)
        return c

    def connected(self, name="d", **kw):
        c = self.client()
        c.connect_export(name, **kw)
        return c

    def qmp(self):
        """The test's one QMP session (a chardev monitor serves one client
        at a time)."""
        if getattr(self, "_qmp", None) is None:
            self._qmp = self.daemon.qmp()
            self.addCleanup(self._qmp.close)
        return self._qmp

    def file_bytes(self, offset, length):
        with open(self.img, "rb") as f:
            return os.pread(f.fileno(), length, offset)

    def assert_closed(self, c, timeout=5.0, what="the server to close the connection"):
        self.assertTrue(c.is_closed_by_peer(timeout), "expected " + what)

    def assert_alive(self):
        """The daemon still runs, answers QMP and serves a new client."""
        self.assertIsNone(self.daemon.proc.poll(), "daemon exited: " + self.daemon.read_stderr())
        q = self.qmp()
        self.assertIn("qemu", q.ok("query-version"))
        c = self.connected()
        r = c.read(0, 512)
        self.assertEqual(r.error, 0)
        self.assertEqual(r.data, PATTERN[:512])
        c.disc()

    def assert_error(self, reply, *codes):
        self.assertIn(reply.error, codes, "reply %r, expected one of %r" % (reply, codes))

    def check_extents(self, extents, offset, length, req_one=False, size=None):
        """The rules proto.md sets for one context's descriptors."""
        self.assertGreaterEqual(len(extents), 1)
        for n, _ in extents:
            self.assertGreater(n, 0, "zero-length extent in %r" % extents)
        if req_one:
            self.assertEqual(len(extents), 1, extents)
            self.assertLessEqual(extents[0][0], length)
        else:
            self.assertLess(sum(n for n, _ in extents[:-1]), length, extents)
        total = sum(n for n, _ in extents)
        self.assertLessEqual(offset + total, self.image_size if size is None else size)

    @staticmethod
    def status_at(extents, start, offset):
        """The status of the extent (starting at start) covering offset."""
        pos = start
        for n, flags in extents:
            if pos <= offset < pos + n:
                return flags
            pos += n
        raise AssertionError("offset %d not covered by %r" % (offset, extents))


# =======================================================================
class Handshake(NBDTestCase):
    def test_greeting(self):
        c = self.client()
        raw = c.recv_exact(18)
        magic, opt, flags = struct.unpack(">QQH", raw)
        self.assertEqual(magic, nbd.NBDMAGIC)
        self.assertEqual(opt, nbd.IHAVEOPT)
        self.assertTrue(flags & nbd.FLAG_FIXED_NEWSTYLE)
        self.assertTrue(flags & nbd.FLAG_NO_ZEROES)
        self.assertEqual(flags & ~3, 0, "server set undefined handshake flags")
        self.assertIsNone(c.recv_some(0.3), "server sent more than the greeting")

    def test_list(self):
        c = self.client()
        c.handshake()
        exports, final = c.list_exports()
        self.assertEqual(final.type, nbd.REP_ACK)
        self.assertEqual(final.data, b"")
        self.assertEqual([n for n, _ in exports], ["d"])

    def test_list_with_data_is_invalid(self):
        c = self.client()
        c.handshake()
        r = c.option(nbd.OPT_LIST, b"junk")
        self.assertEqual([x.type for x in r], [nbd.REP_ERR_INVALID])
        c.go("d")                                   # haggling goes on

    def test_option_reply_echoes_option(self):
        c = self.client()
        c.handshake()
        for opt in (nbd.OPT_LIST, nbd.OPT_STRUCTURED_REPLY, 0x1234):
            for r in c.option(opt):
                self.assertEqual(r.option, opt)

    def test_info_export(self):
        c = self.client()
        c.handshake()
        info = c.info("d", [nbd.INFO_BLOCK_SIZE])
        self.assertEqual(info.final.type, nbd.REP_ACK)
        self.assertEqual(info.size, IMG_SIZE)
        f = info.flags
        self.assertTrue(f & nbd.TF_HAS_FLAGS)
        self.assertFalse(f & nbd.TF_READ_ONLY)
        for flag in (nbd.TF_SEND_FLUSH, nbd.TF_SEND_FUA, nbd.TF_SEND_TRIM,
                     nbd.TF_SEND_WRITE_ZEROES, nbd.TF_SEND_CACHE):
            self.assertTrue(f & flag, "flag %#x missing from %#x" % (flag, f))
        self.assertFalse(f & nbd.TF_SEND_DF, "DF without structured replies")
        self.assertFalse(f & nbd.TF_BLOCK_STATUS_PAYLOAD, "needs extended headers")
        if f & nbd.TF_SEND_FAST_ZERO:
            self.assertTrue(f & nbd.TF_SEND_WRITE_ZEROES)
        self.assertEqual(info.info_types.count(nbd.INFO_EXPORT), 1)

    def test_info_block_size(self):
        c = self.client()
        c.handshake()
        info = c.info("d", [nbd.INFO_BLOCK_SIZE])
        self.assertIsNotNone(info.block_size, "block size requested but not sent")
        mn, pref, mx = info.block_size
        self.assertTrue(is_pow2(mn) and mn <= 64 * KiB, info.block_size)
        self.assertTrue(is_pow2(pref) and pref >= max(mn, 512), info.block_size)
        self.assertGreaterEqual(mx, pref)
        self.assertEqual(IMG_SIZE % mn, 0)

    def test_info_ignores_unknown_requests(self):
        c = self.client()
        c.handshake()
        info = c.info("d", [0x7777, nbd.INFO_NAME, nbd.INFO_DESCRIPTION])
        self.assertEqual(info.final.type, nbd.REP_ACK)
        self.assertEqual(info.size, IMG_SIZE)
        self.assertNotIn(0x7777, info.info_types)
        if info.name is not None:
            self.assertEqual(info.name, "d")

    def test_info_then_go_same_information(self):
        c = self.client()
        c.handshake()
        a = c.info("d", [nbd.INFO_BLOCK_SIZE])
        b = c.go("d", [nbd.INFO_BLOCK_SIZE])
        self.assertEqual((a.size, a.flags, a.block_size), (b.size, b.flags, b.block_size))
        self.assertEqual(c.read(0, 512).data, PATTERN[:512])

    def test_info_unknown_export(self):
        c = self.client()
        c.handshake()
        info = c.info("nope")
        self.assertEqual(info.final.type, nbd.REP_ERR_UNKNOWN)
        self.assertEqual(len(info.replies), 1, "REP_INFO for an unknown export")
        c.go("d")

    def test_go_unknown_export(self):
        c = self.client()
        c.handshake()
        info = c.go("nope", check=False)
        self.assertEqual(info.final.type, nbd.REP_ERR_UNKNOWN)
        c.go("d")                                   # still negotiating
        self.assertEqual(c.read(0, 16).data, PATTERN[:16])

    def test_go_then_transmission_without_padding(self):
        c = self.client()
        c.handshake(no_zeroes=False)
        info = c.go("d")
        self.assertEqual(info.size, IMG_SIZE)
        self.assertIsNone(c.recv_some(0.3), "bytes after the GO acknowledgement")
        self.assertEqual(c.read(0, 512).data, PATTERN[:512])

    def test_go_malformed(self):
        c = self.client()
        c.handshake()
        for data in (b"",                                       # shorter than 6
                     struct.pack(">I", 100) + b"d" + struct.pack(">H", 0),
                     c.info_data("d", [nbd.INFO_BLOCK_SIZE])[:-1]):
            r = c.option(nbd.OPT_GO, data)
            self.assertEqual([x.type for x in r], [nbd.REP_ERR_INVALID], data)
        c.go("d")

    def test_go_name_too_long(self):
        c = self.client()
        c.handshake()
        final = c.option(nbd.OPT_GO, c.info_data("a" * 5000))[-1]
        self.assertTrue(final.is_error, final)
        c.go("d")

    def test_unknown_option(self):
        c = self.client()
        c.handshake()
        for opt in (0x1234, nbd.OPT_PEEK_EXPORT, 0x7FFFFFFF):
            r = c.option(opt, b"some data")
            self.assertEqual([x.type for x in r], [nbd.REP_ERR_UNSUP], opt)
        c.go("d")

    def test_large_unknown_option_is_skipped(self):
        c = self.client()
        c.handshake()
        r = c.option(0x4242, bytes(64 * KiB))
        self.assertEqual([x.type for x in r], [nbd.REP_ERR_UNSUP])
        c.go("d")

    def test_starttls_refused(self):
        c = self.client()
        c.handshake()
        r = c.option(nbd.OPT_STARTTLS)
        self.assertEqual(len(r), 1)
        self.assertIn(r[0].type, (nbd.REP_ERR_POLICY, nbd.REP_ERR_UNSUP))
        r = c.option(nbd.OPT_STARTTLS, b"x")
        self.assertTrue(r[-1].is_error)
        c.go("d")                                   # the session goes on in clear

    def test_export_name(self):
        c = self.client()
        c.handshake()
        info = c.export_name("d")                   # reads and checks 124 zeroes
        self.assertEqual(info.size, IMG_SIZE)
        self.assertTrue(info.flags & nbd.TF_HAS_FLAGS)
        self.assertFalse(info.flags & nbd.TF_SEND_DF)
        self.assertIsNone(c.recv_some(0.3))
        self.assertEqual(c.read(0, 512).data, PATTERN[:512])

    def test_export_name_no_zeroes(self):
        c = self.client()
        c.handshake(no_zeroes=True)
        info = c.export_name("d")
        self.assertEqual(info.size, IMG_SIZE)
        self.assertIsNone(c.recv_some(0.3), "zero padding despite NO_ZEROES")
        self.assertEqual(c.read(0, 512).data, PATTERN[:512])

    def test_export_name_unknown_closes(self):
        c = self.client()
        c.handshake()
        c.send_option(nbd.OPT_EXPORT_NAME, b"nope")
        self.assert_closed(c)
        self.assert_alive()

    def test_abort(self):
        c = self.client()
        c.handshake()
        r = c.abort()
        if r is not None:
            self.assertEqual((r.option, r.type), (nbd.OPT_ABORT, nbd.REP_ACK))
        self.assert_closed(c)

    def test_abort_with_data(self):
        c = self.client()
        c.handshake()
        c.send_option(nbd.OPT_ABORT, b"ignored")
        r = c.read_option_reply()
        self.assertEqual(r.type, nbd.REP_ACK)
        self.assert_closed(c)

    def test_abort_without_waiting(self):
        """The client may send ABORT and close at once."""
        c = self.client()
        c.handshake()
        c.send_option(nbd.OPT_ABORT)
        c.close()
        self.assert_alive()

    def test_structured_reply_option(self):
        c = self.client()
        c.handshake()
        self.assertEqual(c.option(nbd.OPT_STRUCTURED_REPLY, b"x")[-1].type, nbd.REP_ERR_INVALID)
        self.assertEqual(c.structured_reply().type, nbd.REP_ACK)
        again = c.structured_reply()
        self.assertIn(again.type, (nbd.REP_ACK, nbd.REP_ERR_INVALID))
        info = c.go("d")
        self.assertTrue(info.flags & nbd.TF_SEND_DF)
        self.assertTrue(c.structured)

    def test_slow_client(self):
        """Every message split into single bytes."""
        c = self.client()
        c.read_greeting()
        go = c.info_data("d")
        msg = (struct.pack(">I", nbd.FLAG_C_FIXED_NEWSTYLE)
               + struct.pack(">QII", nbd.IHAVEOPT, nbd.OPT_GO, len(go)) + go)
        c.send_slowly(msg, 0.005)
        self.assertEqual(c.read_option_replies(nbd.OPT_GO)[-1].type, nbd.REP_ACK)
        c.expect_reply(77, nbd.CMD_READ, 0, 0, 512)
        c.send_slowly(c.request_bytes(nbd.CMD_READ, 0, 0, 512, 77), 0.005)
        self.assertEqual(c.read_reply(77).data, PATTERN[:512])


class ExportDescription(NBDTestCase):
    def test_description_in_list_and_info(self):
        q = self.qmp()
        q.ok("block-export-add", {"type": "nbd", "id": "e1", "node-name": "r0",
                                  "name": "described", "description": "some text"})
        c = self.client()
        c.handshake()
        exports, _ = c.list_exports()
        self.assertIn(("described", "some text"), exports)
        info = c.info("described", [nbd.INFO_DESCRIPTION, nbd.INFO_NAME])
        self.assertEqual(info.final.type, nbd.REP_ACK)
        self.assertEqual(info.description, "some text")
        self.assertEqual(info.size, IMG_SIZE)


# =======================================================================
class MetaContexts(NBDTestCase):
    def test_set_before_structured_reply(self):
        c = self.client()
        c.handshake()
        _, final = c.set_meta_context("d", ["base:allocation"])
        self.assertEqual(final.type, nbd.REP_ERR_INVALID)

    def test_list(self):
        c = self.client()
        c.handshake()
        c.structured_reply()
        for queries in ([], ["base:"], ["base:allocation"]):
            ctx, final = c.list_meta_context("d", queries)
            self.assertEqual(final.type, nbd.REP_ACK)
            self.assertIn("base:allocation", ctx, queries)
        ctx, final = c.list_meta_context("d", ["x-unknown:thing"])
        self.assertEqual((ctx, final.type), ({}, nbd.REP_ACK))
        ctx, final = c.list_meta_context("d", ["qemu:"])
        self.assertEqual((ctx, final.type), ({}, nbd.REP_ACK),
                         "qemu: contexts offered without allocation-depth or bitmaps")

    def test_set(self):
        c = self.client()
        c.handshake()
        c.structured_reply()
        ctx, final = c.set_meta_context("d", ["base:allocation"])
        self.assertEqual(final.type, nbd.REP_ACK)
        self.assertEqual(list(ctx), ["base:allocation"])
        # Ignored: unknown namespaces, unknown base: leaves, the base: wildcard.
        for q in (["x-unknown:thing"], ["base:nothing"], ["base:"], []):
            ctx, final = c.set_meta_context("d", q)
            self.assertEqual((ctx, final.type), ({}, nbd.REP_ACK), q)

    def test_set_unknown_export(self):
        c = self.client()
        c.handshake()
        c.structured_reply()
        _, final = c.set_meta_context("nope", ["base:allocation"])
        self.assertTrue(final.is_error, final)

    def test_truncated_query_is_invalid(self):
        c = self.client()
        c.handshake()
        c.structured_reply()
        raw = c.meta_data("d", ["base:allocation"])
        for opt in (c.set_meta_context, c.list_meta_context):
            _, final = opt("d", raw=raw[:-3])
            self.assertEqual(final.type, nbd.REP_ERR_INVALID)
            _, final = opt("d", raw=raw[:6])
            self.assertEqual(final.type, nbd.REP_ERR_INVALID)
        c.go("d")

    def test_block_status_without_context(self):
        c = self.connected(structured=True)
        self.assert_error(c.block_status(0, 4096), nbd.EINVAL)
        c = self.connected()
        self.assert_error(c.block_status(0, 4096), nbd.EINVAL)

    def test_failed_set_clears_selection(self):
        """SET_META_CONTEXT replaces the selection even when it fails."""
        c = self.client()
        c.handshake()
        c.structured_reply()
        c.set_meta_context("d", ["base:allocation"])
        _, final = c.set_meta_context("nope", ["base:allocation"])
        self.assertTrue(final.is_error)
        c.go("d")
        self.assert_error(c.block_status(0, 4096), nbd.EINVAL)

    def test_base_allocation(self):
        c = self.connected(structured=True, meta=["base:allocation"])
        cid = c.contexts["base:allocation"]
        r = c.block_status(0, IMG_SIZE)
        self.assertEqual(r.error, 0)
        self.assertEqual(list(r.extents), [cid])
        ext = r.extents[cid]
        self.check_extents(ext, 0, IMG_SIZE)
        self.assertFalse(self.status_at(ext, 0, 0) & nbd.STATE_HOLE)
        self.assertFalse(self.status_at(ext, 0, DATA_LEN - 1) & nbd.STATE_ZERO)
        self.assertEqual(self.status_at(ext, 0, SPARSE_AT) & 3,
                         nbd.STATE_HOLE | nbd.STATE_ZERO)
        self.assertTrue(r.chunks[-1].done)

    def test_base_allocation_unaligned_and_middle(self):
        c = self.connected(structured=True, meta=["base:allocation"])
        cid = c.contexts["base:allocation"]
        for off, n in ((1, 100), (DATA_LEN - 10, 20), (SPARSE_AT + 3, 1000),
                       (IMG_SIZE - 512, 512)):
            r = c.block_status(off, n)
            self.assertEqual(r.error, 0, (off, n))
            self.check_extents(r.extents[cid], off, n)

    def test_req_one(self):
        c = self.connected(structured=True, meta=["base:allocation"])
        cid = c.contexts["base:allocation"]
        for off, n in ((0, IMG_SIZE), (0, 100), (DATA_LEN // 2, IMG_SIZE - DATA_LEN),
                       (SPARSE_AT, 4096)):
            r = c.block_status(off, n, nbd.CMD_FLAG_REQ_ONE)
            self.assertEqual(r.error, 0)
            self.check_extents(r.extents[cid], off, n, req_one=True)
        r = c.block_status(0, IMG_SIZE, nbd.CMD_FLAG_REQ_ONE)
        self.assertEqual(r.extents[cid], [(DATA_LEN, r.extents[cid][0][1])])

    def test_status_follows_writes(self):
        c = self.connected(structured=True, meta=["base:allocation"])
        cid = c.contexts["base:allocation"]
        self.assertEqual(c.write(SPARSE_AT, b"\x01" * 4096).error, 0)
        ext = c.block_status(SPARSE_AT, 4096).extents[cid]
        self.assertFalse(self.status_at(ext, SPARSE_AT, SPARSE_AT) & nbd.STATE_ZERO)


class AllocationDepth(NBDTestCase):
    export_opts = "writable=on,allocation-depth=on"

    def test_list_and_set(self):
        c = self.client()
        c.handshake()
        c.structured_reply()
        ctx, _ = c.list_meta_context("d")
        self.assertEqual(set(ctx), {"base:allocation", "qemu:allocation-depth"})
        ctx, _ = c.list_meta_context("d", ["qemu:"])
        self.assertEqual(set(ctx), {"qemu:allocation-depth"})
        ctx, _ = c.list_meta_context("d", ["qemu:dirty-bitmap:"])
        self.assertEqual(ctx, {})
        ctx, final = c.set_meta_context("d", ["qemu:allocation-depth", "base:allocation"])
        self.assertEqual(final.type, nbd.REP_ACK)
        self.assertEqual(set(ctx), {"qemu:allocation-depth", "base:allocation"})
        self.assertEqual(len(set(ctx.values())), 2, "context ids not unique")

    def test_block_status(self):
        c = self.connected(structured=True, meta=["base:allocation", "qemu:allocation-depth"])
        depth_id = c.contexts["qemu:allocation-depth"]
        alloc_id = c.contexts["base:allocation"]
        r = c.block_status(0, IMG_SIZE)
        self.assertEqual(r.error, 0)
        self.assertEqual(sorted(r.extents), sorted([depth_id, alloc_id]))
        depth = r.extents[depth_id]
        self.check_extents(depth, 0, IMG_SIZE)
        self.assertEqual(self.status_at(depth, 0, 0), 1, "data in the active layer")
        for _, d in depth:
            self.assertIn(d, (0, 1), "no backing chain, depth %d" % d)
        r = c.block_status(0, IMG_SIZE, nbd.CMD_FLAG_REQ_ONE)
        for cid in (depth_id, alloc_id):
            self.check_extents(r.extents[cid], 0, IMG_SIZE, req_one=True)


class DirtyBitmap(NBDTestCase):
    def setUp(self):
        super().setUp()
        q = self.qmp()
        q.ok("block-dirty-bitmap-add", {"node": "r0", "name": "b0"})
        q.ok("block-export-add", {"type": "nbd", "id": "e1", "node-name": "r0", "name": "bm",
                                  "writable": True, "bitmaps": ["b0"]})

    def test_list(self):
        c = self.client()
        c.handshake()
        c.structured_reply()
        ctx, _ = c.list_meta_context("bm")
        self.assertEqual(set(ctx), {"base:allocation", "qemu:dirty-bitmap:b0"})
        ctx, _ = c.list_meta_context("bm", ["qemu:"])
        self.assertEqual(set(ctx), {"qemu:dirty-bitmap:b0"})
        ctx, _ = c.list_meta_context("bm", ["qemu:dirty-bitmap:"])
        self.assertEqual(set(ctx), {"qemu:dirty-bitmap:b0"})
        ctx, _ = c.list_meta_context("bm", ["qemu:dirty-bitmap:other", "qemu:allocation-depth"])
        self.assertEqual(ctx, {})
        ctx, _ = c.list_meta_context("d", ["qemu:dirty-bitmap:b0"])
        self.assertEqual(ctx, {}, "bitmap offered on an export without it")

    def test_dirty_extents(self):
        c = self.connected("bm", structured=True,
                           meta=["qemu:dirty-bitmap:b0", "base:allocation"])
        bid = c.contexts["qemu:dirty-bitmap:b0"]
        self.assertEqual(len(c.contexts), 2)
        r = c.block_status(0, IMG_SIZE)
        self.assertEqual(r.error, 0)
        self.assertEqual(len(r.extents), 2)
        clean = r.extents[bid]
        self.check_extents(clean, 0, IMG_SIZE)
        self.assertTrue(all(f & nbd.STATE_DIRTY == 0 for _, f in clean), clean)
        w = 2 * MiB + 4096
        self.assertEqual(c.write(w, b"\x55" * 512).error, 0)
        r = c.block_status(0, IMG_SIZE)
        dirty = r.extents[bid]
        self.check_extents(dirty, 0, IMG_SIZE)
        self.assertTrue(self.status_at(dirty, 0, w) & nbd.STATE_DIRTY)
        self.assertTrue(self.status_at(dirty, 0, w + 511) & nbd.STATE_DIRTY)
        self.assertFalse(self.status_at(dirty, 0, 0) & nbd.STATE_DIRTY)
        self.assertFalse(self.status_at(dirty, 0, IMG_SIZE - 1) & nbd.STATE_DIRTY)
        r = c.block_status(w, 512, nbd.CMD_FLAG_REQ_ONE)
        self.check_extents(r.extents[bid], w, 512, req_one=True)
        self.assertTrue(r.extents[bid][0][1] & nbd.STATE_DIRTY)


# =======================================================================
class Commands(NBDTestCase):
    """Every command with every flag it takes, in simple and structured
    mode."""

    def test_simple_read_write(self):
        c = self.connected()
        self.assertEqual(c.read(0, DATA_LEN).data, PATTERN)
        data = os.urandom(12345)
        self.assertEqual(c.write(SPARSE_AT + 3, data).error, 0)
        r = c.read(SPARSE_AT + 3, len(data))
        self.assertEqual((r.kind, r.error, r.data), ("simple", 0, data))
        self.assertEqual(c.read(SPARSE_AT + 3 + len(data), 100).data, bytes(100))

    def test_structured_read_write(self):
        c = self.connected(structured=True)
        data = os.urandom(3 * 4096 + 17)
        self.assertEqual(c.write(100, data).error, 0)
        r = c.read(0, 2 * DATA_LEN)
        self.assertEqual(r.kind, "structured")
        self.assertEqual(r.error, 0)
        expect = bytearray(PATTERN + bytes(DATA_LEN))
        expect[100:100 + len(data)] = data
        self.assertEqual(r.data, bytes(expect))
        self.assertTrue(r.chunks[-1].done)
        self.assertFalse(any(ch.done for ch in r.chunks[:-1]))

    def test_structured_read_of_hole(self):
        c = self.connected(structured=True)
        r = c.read(SPARSE_AT, MiB)
        self.assertEqual(r.error, 0)
        self.assertEqual(r.data, bytes(MiB))
        self.assertTrue(r.holes, "no hole chunk for a sparse region: %r" % r.chunks)
        r = c.read(0, 2 * DATA_LEN)                 # data then hole
        self.assertEqual(r.data, PATTERN + bytes(DATA_LEN))
        kinds = {ch.type for ch in r.content_chunks}
        self.assertIn(nbd.REPLY_TYPE_OFFSET_DATA, kinds)

    def test_read_df(self):
        c = self.connected(structured=True)
        self.assertTrue(c.export.flags & nbd.TF_SEND_DF)
        r = c.read(0, 2 * DATA_LEN, nbd.CMD_FLAG_DF)
        self.assertEqual(r.error, 0)
        self.assertEqual(len(r.content_chunks), 1, r.chunks)
        self.assertEqual(r.content_chunks[0].type, nbd.REPLY_TYPE_OFFSET_DATA,
                         "data and hole under DF must be one data chunk")
        self.assertEqual(r.data, PATTERN + bytes(DATA_LEN))
        r = c.read(SPARSE_AT, 64 * KiB, nbd.CMD_FLAG_DF)
        self.assertEqual(r.error, 0)
        self.assertEqual(len(r.content_chunks), 1)
        self.assertEqual(r.data, bytes(64 * KiB))

    def test_write_fua(self):
        c = self.connected()
        data = os.urandom(8192)
        self.assertEqual(c.write(8192, data, nbd.CMD_FLAG_FUA).error, 0)
        self.assertEqual(self.file_bytes(8192, 8192), data)
        self.assertEqual(c.read(8192, 8192).data, data)

    def test_flush(self):
        c = self.connected()
        self.assertEqual(c.flush().error, 0)
        self.assertEqual(c.flush(nbd.CMD_FLAG_FUA).error, 0)
        c = self.connected(structured=True)
        self.assertEqual(c.flush().error, 0)

    def test_trim(self):
        for structured in (False, True):
            c = self.connected(structured=structured)
            self.assertEqual(c.trim(SPARSE_AT, 64 * KiB).error, 0)
            self.assertEqual(c.trim(SPARSE_AT + 1, 1000, nbd.CMD_FLAG_FUA).error, 0)
            self.assertEqual(c.trim(0, 4096).error, 0)
            self.assertEqual(c.write(0, PATTERN[:4096]).error, 0)
            self.assertEqual(c.read(0, 4096).data, PATTERN[:4096])

    def test_cache(self):
        for structured in (False, True):
            c = self.connected(structured=structured)
            self.assertTrue(c.export.flags & nbd.TF_SEND_CACHE)
            self.assertEqual(c.cache(0, DATA_LEN).error, 0)
            self.assertEqual(c.cache(SPARSE_AT, MiB, nbd.CMD_FLAG_FUA).error, 0)
            self.assertEqual(c.read(0, 512).data, PATTERN[:512])

    def test_write_zeroes(self):
        c = self.connected(structured=True)
        f = c.export.flags
        self.assertTrue(f & nbd.TF_SEND_WRITE_ZEROES)
        for i, flags in enumerate((0, nbd.CMD_FLAG_FUA, nbd.CMD_FLAG_NO_HOLE,
                                   nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)):
            off = i * 8192 + 100
            self.assertEqual(c.write_zeroes(off, 4000, flags).error, 0, flags)
            expect = bytearray(PATTERN[off - 100:off + 4100])
            expect[100:4100] = bytes(4000)
            self.assertEqual(c.read(off - 100, 4200).data, bytes(expect), flags)
        # The last one carried FUA: it is in the file already.
        self.assertEqual(self.file_bytes(3 * 8192 + 100, 4000), bytes(4000))

    def test_write_zeroes_fast_zero(self):
        c = self.connected(structured=True)
        if not c.export.flags & nbd.TF_SEND_FAST_ZERO:
            self.skipTest("FAST_ZERO not advertised")
        for flags in (nbd.CMD_FLAG_FAST_ZERO, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE):
            r = c.write_zeroes(0, 4096, flags)
            self.assert_error(r, 0, nbd.ENOTSUP)
            if r.error == nbd.ENOTSUP:
                self.assertEqual(c.read(0, 4096).data, PATTERN[:4096],
                                 "ENOTSUP fast zero changed the export")
            else:
                self.assertEqual(c.read(0, 4096).data, bytes(4096))
            c.write(0, PATTERN[:4096])

    def test_inapplicable_flags(self):
        """A flag not documented for a command, or unknown, is EINVAL; the
        stream stays in step (WRITE's payload is still consumed)."""
        c = self.connected(structured=True, meta=["base:allocation"])
        bad = [
            (nbd.CMD_READ, nbd.CMD_FLAG_NO_HOLE), (nbd.CMD_READ, nbd.CMD_FLAG_REQ_ONE),
            (nbd.CMD_READ, nbd.CMD_FLAG_FAST_ZERO), (nbd.CMD_READ, 0x8000),
            (nbd.CMD_WRITE, nbd.CMD_FLAG_NO_HOLE), (nbd.CMD_WRITE, nbd.CMD_FLAG_DF),
            (nbd.CMD_WRITE, nbd.CMD_FLAG_REQ_ONE), (nbd.CMD_WRITE, 0x8000),
            (nbd.CMD_WRITE, nbd.CMD_FLAG_PAYLOAD_LEN),
            (nbd.CMD_WRITE_ZEROES, nbd.CMD_FLAG_DF), (nbd.CMD_WRITE_ZEROES, 0x4000),
            (nbd.CMD_TRIM, nbd.CMD_FLAG_DF), (nbd.CMD_TRIM, 0x8000),
            (nbd.CMD_FLUSH, 0x8000),
            (nbd.CMD_BLOCK_STATUS, nbd.CMD_FLAG_DF), (nbd.CMD_BLOCK_STATUS, 0x8000),
        ]
        for cmd, flags in bad:
            payload = b"\xee" * 512 if cmd == nbd.CMD_WRITE else b""
            length = 0 if cmd == nbd.CMD_FLUSH else 512
            cookie = c.send_request(cmd, flags, 0, length, payload)
            r = c.read_reply(cookie)
            self.assert_error(r, nbd.EINVAL)
            self.assertEqual(c.read(0, 512).data, PATTERN[:512], (cmd, flags))

    def test_df_without_structured_replies(self):
        c = self.connected()
        self.assertFalse(c.export.flags & nbd.TF_SEND_DF)
        r = c.read(0, 512, nbd.CMD_FLAG_DF)
        self.assert_error(r, nbd.EINVAL)
        self.assertIsNone(r.data)
        self.assertEqual(c.read(0, 512).data, PATTERN[:512])

    def test_fua_on_every_command(self):
        """With SEND_FUA, FUA is accepted on every command."""
        c = self.connected(structured=True, meta=["base:allocation"])
        self.assertTrue(c.export.flags & nbd.TF_SEND_FUA)
        fua = nbd.CMD_FLAG_FUA
        self.assertEqual(c.read(0, 512, fua).data, PATTERN[:512])
        self.assertEqual(c.write(0, PATTERN[:512], fua).error, 0)
        self.assertEqual(c.flush(fua).error, 0)
        self.assertEqual(c.trim(SPARSE_AT, 4096, fua).error, 0)
        self.assertEqual(c.cache(0, 4096, fua).error, 0)
        self.assertEqual(c.write_zeroes(SPARSE_AT, 4096, fua).error, 0)
        self.assertEqual(c.block_status(0, 4096, fua).error, 0)

    def test_unknown_command(self):
        for structured in (False, True):
            c = self.connected(structured=structured)
            for cmd in (nbd.CMD_RESIZE, 99, 0xFFFF):
                r = c.command(cmd, 0, 0, 0)
                self.assert_error(r, nbd.EINVAL)
                self.assertEqual(c.read(0, 512).data, PATTERN[:512])

    def test_zero_length_requests_keep_the_connection(self):
        c = self.connected(structured=True, meta=["base:allocation"])
        for cmd in (nbd.CMD_READ, nbd.CMD_WRITE, nbd.CMD_TRIM, nbd.CMD_WRITE_ZEROES,
                    nbd.CMD_CACHE, nbd.CMD_BLOCK_STATUS):
            c.command(cmd, 0, 4096, 0)              # any answer, no disconnect
            self.assertEqual(c.read(0, 512).data, PATTERN[:512], cmd)

    def test_cookies_echoed(self):
        c = self.connected()
        cookies = [0, 0xFFFFFFFFFFFFFFFF, 0x0123456789ABCDEF, 1 << 63]
        for ck in cookies:
            c.send_request(nbd.CMD_READ, 0, 0, 512, cookie=ck)
        got = set()
        for _ in cookies:
            r = c.read_reply()
            self.assertEqual(r.data, PATTERN[:512])
            got.add(r.cookie)
        self.assertEqual(got, set(cookies))

    def test_pipelined_requests(self):
        """Many requests in flight at once; every one answered once, with
        its own cookie and data."""
        c = self.connected(structured=True)
        blocks = {i: os.urandom(4096) for i in range(32)}
        cookies = {}
        for i, data in blocks.items():
            cookies[c.send_request(nbd.CMD_WRITE, 0, SPARSE_AT + i * 4096, payload=data)] = i
        for _ in blocks:
            r = c.read_reply()
            self.assertEqual(r.error, 0)
            del cookies[r.cookie]
        self.assertEqual(cookies, {})
        reads = {c.send_request(nbd.CMD_READ, 0, SPARSE_AT + i * 4096, 4096): i for i in blocks}
        for _ in blocks:
            r = c.read_reply()
            self.assertEqual(r.data, blocks[reads.pop(r.cookie)])

    def test_disc(self):
        c = self.connected()
        c.disc()
        self.assert_closed(c)
        self.assert_alive()


class DirectIO(NBDTestCase):
    """cache.direct=on: O_DIRECT wants aligned offsets, lengths and
    buffers.  The export advertises the file system's alignment as its
    minimum block size and still serves requests that ignore it, as QEMU
    does: reads around them, writes of whole blocks, one read-modify-write
    at a time over a block, so that no byte written is lost."""

    file_opts = ",cache.direct=on"

    @skip_on_qemu("7.2 advertises 1 for a raw node over a cache.direct file")
    def test_minimum_block_size_is_the_direct_alignment(self):
        c = self.client()
        c.handshake()
        m = c.info("d", [nbd.INFO_BLOCK_SIZE]).block_size[0]
        self.assertTrue(is_pow2(m) and 512 <= m <= 4096, m)

    @skip_on_qemu("7.2 advertises 1 for a raw node over a cache.direct file")
    def test_info_asks_for_block_sizes_go_does_not(self):
        c = self.client()
        c.handshake()
        # INFO without asking for block sizes is told to ask; GO is
        # served anyway (unaligned requests work).
        info = c.info("d")
        self.assertEqual(info.final.type, nbd.REP_ERR_BLOCK_SIZE_REQD)
        c.go("d")
        self.assertEqual(c.write(1, b"abc").error, 0)
        self.assertEqual(c.read(0, 5).data[1:4], b"abc")

    def test_unaligned_writes_and_reads(self):
        c = self.connected(structured=True)
        image = bytearray(self.file_bytes(0, IMG_SIZE))
        # Inside one block, over a head edge, over a tail edge, over both
        # edges of several blocks, and whole aligned blocks.
        for offset, length in ((3, 10), (500, 30), (4000, 5000), (8191, 2), (12288, 4096),
                               (SPARSE_AT + 7, 70000), (IMG_SIZE - 5, 5)):
            data = os.urandom(length)
            self.assertEqual(c.write(offset, data).error, 0, (offset, length))
            image[offset:offset + length] = data
        for offset, length in ((0, 9000), (1, 1), (4001, 4999), (SPARSE_AT, 80000),
                               (IMG_SIZE - 100, 100)):
            r = c.read(offset, length)
            self.assertEqual(r.error, 0)
            self.assertEqual(r.data, bytes(image[offset:offset + length]), (offset, length))
        self.assertEqual(c.flush().error, 0)
        self.assertEqual(self.file_bytes(0, IMG_SIZE), bytes(image))

    def test_pipelined_writes_into_one_block_lose_nothing(self):
        """Many one-byte writes into the same block in flight at once, on
        two connections: each read-modify-write must see the ones before
        it."""
        a = self.connected()
        b = self.connected()
        base = 2 * 4096
        cookies = []
        for i in range(0, 256, 2):
            cookies.append((a, a.send_request(nbd.CMD_WRITE, 0, base + i, payload=bytes([i]))))
            cookies.append((b, b.send_request(nbd.CMD_WRITE, 0, base + i + 1,
                                              payload=bytes([i + 1]))))
        for c, cookie in cookies:
            self.assertEqual(c.read_reply(cookie).error, 0)
        self.assertEqual(a.read(base, 256).data, bytes(range(256)))
        self.assertEqual(self.file_bytes(base, 256), bytes(range(256)))

    def test_file_not_a_multiple_of_the_block_keeps_its_size(self):
        """A 1000-byte file shows as 1024 bytes; writes into its last,
        partial block go through whole blocks but leave the file 1000
        bytes long unless they reach past it."""
        path = os.path.join(os.path.dirname(self.img), "short")
        with open(path, "wb") as f:
            f.write(b"s" * 1000)
        q = self.qmp()
        q.ok("blockdev-add", {"driver": "file", "node-name": "short", "filename": path,
                              "cache": {"direct": True}})
        q.ok("block-export-add", {"type": "nbd", "id": "short", "node-name": "short",
                                  "writable": True})
        c = self.connected("short")
        self.assertEqual(c.export.size, 1024)
        self.assertEqual(c.write(900, b"x" * 50).error, 0)
        self.assertEqual(c.write(10, b"y" * 10).error, 0)
        self.assertEqual(c.flush().error, 0)
        self.assertEqual(os.path.getsize(path), 1000)
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(data, b"s" * 10 + b"y" * 10 + b"s" * 880 + b"x" * 50 + b"s" * 50)
        self.assertEqual(c.read(1000, 24).data, bytes(24))
        self.assertEqual(c.write(1010, b"z" * 4).error, 0)
        self.assertEqual(os.path.getsize(path), 1014)

    def test_unaligned_write_zeroes_and_trim(self):
        c = self.connected()
        self.assertEqual(c.write(0, b"\xff" * 8192).error, 0)
        self.assertEqual(c.write_zeroes(100, 1000).error, 0)
        self.assertEqual(c.trim(5000, 10).error, 0)
        r = c.read(0, 8192).data
        self.assertEqual(r[:100], b"\xff" * 100)
        self.assertEqual(r[100:1100], bytes(1000))
        self.assertEqual(r[1100:5000], b"\xff" * 3900)
        self.assertEqual(r[5010:], b"\xff" * (8192 - 5010))


class OutOfRange(NBDTestCase):
    def test_read_past_end(self):
        for structured in (False, True):
            c = self.connected(structured=structured)
            for off, n in ((IMG_SIZE, 512), (IMG_SIZE - 512, 1024), (IMG_SIZE + MiB, 1)):
                r = c.read(off, n)
                self.assert_error(r, nbd.EINVAL)
                if not structured:
                    self.assertIsNone(r.data)       # no payload with an error
                else:
                    self.assertEqual(r.content_chunks, [])
                    self.assertTrue(r.chunks[-1].done)
            self.assertEqual(c.read(IMG_SIZE - 512, 512).error, 0)

    def test_trim_block_status_past_end(self):
        c = self.connected(structured=True, meta=["base:allocation"])
        self.assert_error(c.trim(IMG_SIZE - 512, 1024), nbd.EINVAL)
        self.assert_error(c.block_status(IMG_SIZE, 512), nbd.EINVAL)
        self.assert_error(c.block_status(IMG_SIZE - 512, 1024, nbd.CMD_FLAG_REQ_ONE), 0,
                          nbd.EINVAL)
        self.assertNotEqual(c.cache(IMG_SIZE, 512).error, 0)

    def test_writes_past_end_fail(self):
        c = self.connected(structured=True)
        last = self.file_bytes(IMG_SIZE - 512, 512)
        self.assertNotEqual(c.write(IMG_SIZE - 512, b"\x11" * 1024).error, 0)
        self.assertNotEqual(c.write(IMG_SIZE, b"\x11" * 512).error, 0)
        self.assertNotEqual(c.write_zeroes(IMG_SIZE - 512, 1024).error, 0)
        self.assertEqual(c.read(IMG_SIZE - 512, 512).data, last)
        self.assertEqual(os.path.getsize(self.img), IMG_SIZE, "the image grew")

    @skip_on_qemu("it answers EINVAL to every request it rejects before running it")
    def test_writes_past_end_enospc(self):
        """proto.md: a write past the end SHOULD fail with ENOSPC."""
        for structured in (False, True):
            c = self.connected(structured=structured)
            self.assert_error(c.write(IMG_SIZE - 512, b"\x11" * 1024), nbd.ENOSPC)
            self.assert_error(c.write(IMG_SIZE, b"\x11" * 512), nbd.ENOSPC)
            self.assert_error(c.write_zeroes(IMG_SIZE - 512, 1024), nbd.ENOSPC)
            self.assert_error(c.write_zeroes(IMG_SIZE, 512), nbd.ENOSPC)

    def test_offset_overflow(self):
        for structured in (False, True):
            c = self.connected(structured=structured)
            top = (1 << 64) - 512
            self.assert_error(c.read(top, 1024), nbd.EINVAL)
            self.assertNotEqual(c.write(top, b"\x22" * 1024).error, 0)
            self.assert_error(c.trim(top, 1024), nbd.EINVAL)
            self.assertNotEqual(c.write_zeroes(top, 1024).error, 0)
        self.assert_alive()


class ReadOnlyExport(NBDTestCase):
    export_opts = "writable=off"

    def test_flags(self):
        c = self.client()
        c.handshake()
        info = c.info("d")
        self.assertTrue(info.flags & nbd.TF_READ_ONLY)
        self.assertTrue(info.flags & nbd.TF_HAS_FLAGS)

    def test_writes_fail_and_change_nothing(self):
        c = self.connected(structured=True, meta=["base:allocation"])
        for r in (c.write(0, b"\x33" * 512), c.write(0, b"\x33" * 512, nbd.CMD_FLAG_FUA),
                  c.trim(0, 4096), c.write_zeroes(0, 4096),
                  c.write_zeroes(0, 4096, nbd.CMD_FLAG_NO_HOLE)):
            self.assertNotEqual(r.error, 0, r)
        self.assertEqual(c.read(0, DATA_LEN).data, PATTERN)
        self.assertEqual(self.file_bytes(0, DATA_LEN), PATTERN)
        self.assertEqual(c.flush().error, 0)
        self.assertEqual(c.block_status(0, IMG_SIZE).error, 0)

    @skip_on_qemu("it answers EINVAL ('Export is read-only')")
    def test_writes_fail_with_eperm(self):
        """proto.md: a write or trim on a read-only export SHOULD fail with
        EPERM (and write zeroes likewise)."""
        for structured in (False, True):
            c = self.connected(structured=structured)
            self.assert_error(c.write(0, b"\x33" * 512), nbd.EPERM)
            self.assert_error(c.trim(0, 4096), nbd.EPERM)
            self.assert_error(c.write_zeroes(0, 4096), nbd.EPERM)
            self.assertEqual(c.read(0, 512).data, PATTERN[:512])


# =======================================================================
class Hostile(NBDTestCase):
    """Clients that break the rules: the server drops them or answers with
    an error, and keeps serving everyone else."""

    def test_unknown_client_flags(self):
        for flags in (1 << 2, 0xFFFFFFFF, 1 << 31):
            c = self.client()
            c.read_greeting()
            c.send_client_flags(flags)
            self.assert_closed(c)
        self.assert_alive()

    def test_wrong_option_magic(self):
        c = self.client()
        c.handshake()
        c.send_option(nbd.OPT_LIST, magic=0x1122334455667788)
        self.assert_closed(c)
        self.assert_alive()

    def test_oversized_option_length(self):
        for opt in (0x1234, nbd.OPT_GO, nbd.OPT_SET_META_CONTEXT):
            c = self.client()
            c.handshake()
            c.send_option(opt, b"abc", length=0xFFFFFFFF)
            self.assert_closed(c)
        self.assert_alive()

    def test_request_before_go(self):
        c = self.client()
        c.handshake()
        c.send_raw(c.request_bytes(nbd.CMD_READ, 0, 0, 512, 1, extended=False))
        self.assert_closed(c)
        self.assert_alive()

    def test_wrong_request_magic(self):
        for magic in (0x12560953, nbd.EXTENDED_REQUEST_MAGIC, 0):
            c = self.connected()
            c.send_raw(c.request_bytes(nbd.CMD_READ, 0, 0, 512, 1, magic=magic, extended=False))
            self.assert_closed(c)
        self.assert_alive()

    def _oversized_write(self, c, length):
        """Only the header of a write too big to take: the server closes
        the connection, perhaps after an error reply; the data are never
        sent."""
        cookie = c.send_request(nbd.CMD_WRITE, 0, 0, length)
        c.sock.settimeout(5)
        try:
            r = c.read_reply(cookie)
        except (EOFError, ConnectionResetError):
            return
        self.assertNotEqual(r.error, 0, "oversized write acknowledged")

    def test_oversized_write_length(self):
        for structured in (False, True):
            c = self.connected(structured=structured)
            self._oversized_write(c, 0xFFFFFFFF)
            c.close()
        self.assert_alive()
        self.assertEqual(self.file_bytes(0, DATA_LEN), PATTERN)

    def test_write_above_max_payload(self):
        c = self.client()
        c.handshake()
        c.structured_reply()
        info = c.go("d", [nbd.INFO_BLOCK_SIZE])
        mx = info.block_size[2] if info.block_size else 32 * MiB
        if mx >= 0xFFFFFFFF:
            self.skipTest("no maximum payload")
        self._oversized_write(c, mx + 1)
        c.close()
        self.assert_alive()

    def test_half_a_write_then_disconnect(self):
        c = self.connected()
        c.send_request(nbd.CMD_WRITE, 0, 0, 64 * KiB, b"\x44" * 1000, cookie=5)
        c.close()
        c = self.connected()
        c.send_raw(c.request_bytes(nbd.CMD_WRITE, 0, 0, 512, 6)[:10])
        c.close()
        self.assert_alive()
        self.assertEqual(self.connected().read(0, DATA_LEN).data, PATTERN,
                         "a write whose payload never arrived changed the image")

    def test_requests_after_disc_ignored(self):
        c = self.connected()
        c.disc()
        try:
            c.send_raw(c.request_bytes(nbd.CMD_WRITE, 0, 0, 512, 9) + b"\x66" * 512)
        except OSError:
            pass
        self.assert_closed(c)
        self.assertEqual(self.connected().read(0, 512).data, PATTERN[:512])

    def test_garbage_handshake(self):
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(64), b"\x00"):
            c = self.client()
            c.read_greeting()
            try:
                c.send_raw(junk)
            except OSError:
                pass
            c.sock.settimeout(5)
            # Four bytes or more make client flags with undefined bits:
            # closed.  A single byte leaves the server waiting for more.
            if len(junk) >= 4:
                self.assert_closed(c)
            c.close()
        self.assert_alive()

    def test_abandoned_connections_are_released(self):
        """Clients vanishing at every stage leave no descriptors behind."""
        base = self.daemon.fd_count()
        for i in range(20):
            c = NBDClient.unix(self.sock)
            stage = i % 4
            if stage >= 1:
                c.handshake()
            if stage >= 2:
                c.send_option(nbd.OPT_GO, c.info_data("d")[:3], length=20)
            if stage == 3:
                c2 = NBDClient.unix(self.sock)
                c2.connect_export("d")
                c2.send_request(nbd.CMD_READ, 0, 0, MiB)
                c2.close()
            c.close()
        wait_for(lambda: self.daemon.fd_count() <= base, timeout=10,
                 what="descriptors to return to %d" % base)
        self.assert_alive()

    def test_client_never_reads_replies(self):
        """A client pipelining reads without ever reading the replies: the
        server stops reading from it rather than buffering without bound,
        and stays responsive to QMP and other clients."""
        c = self.connected()
        rss0 = self.daemon.rss_kb()
        batch = b"".join(c.request_bytes(nbd.CMD_READ, 0, 0, MiB, i) for i in range(64))
        c.sock.settimeout(0.5)
        sent = 0
        deadline = time.monotonic() + 20
        for _ in range(64):                          # at most 4096 MiB of replies asked
            if time.monotonic() > deadline:
                break
            try:
                c.sock.sendall(batch)
            except socket.timeout:
                break
            sent += 64
        self.assertGreater(sent, 16)
        time.sleep(1)
        grown_mib = (self.daemon.rss_kb() - rss0) / 1024
        self.assertLess(grown_mib, 256, "buffered %.0f MiB for a client that reads nothing"
                        % grown_mib)
        q = self.qmp()
        t0 = time.monotonic()
        self.assertIn("qemu", q.ok("query-version"))
        other = self.connected()
        self.assertEqual(other.read(0, DATA_LEN).data, PATTERN)
        self.assertLess(time.monotonic() - t0, 5)
        c.close()
        self.assert_alive()

    def test_client_writes_without_reading_replies(self):
        """A client streaming writes faster than they are done and never
        reading a reply: the server takes requests in as it completes them
        instead of queueing every payload in memory."""
        c = self.connected()
        rss0 = self.daemon.rss_kb()
        payload = b"\x5a" * (256 * KiB)
        batch = b"".join(c.request_bytes(nbd.CMD_WRITE, 0, SPARSE_AT, len(payload), i) + payload
                         for i in range(16))
        c.sock.settimeout(0.5)
        deadline = time.monotonic() + 10
        peak = 0
        for _ in range(128):                         # at most 512 MiB of writes
            if time.monotonic() > deadline:
                break
            try:
                c.sock.sendall(batch)
            except socket.timeout:                   # the server holds back
                break
            finally:
                peak = max(peak, self.daemon.rss_kb() - rss0)
        self.assertLess(peak / 1024, 256, "grew %.0f MiB taking in writes" % (peak / 1024))
        q = self.qmp()
        self.assertIn("qemu", q.ok("query-version"))
        other = self.connected()
        self.assertEqual(other.read(0, DATA_LEN).data, PATTERN)
        c.close()
        self.assert_alive()


# =======================================================================
class MaxConnections(NBDTestCase):
    server_opts = ",max-connections=2"

    def test_third_client_not_served(self):
        a = self.connected()
        b = self.connected()
        c = self.client(timeout=3)
        got = c.recv_some(1.5)
        self.assertIn(got, (None, b""), "a third client was greeted: %r" % got)
        c.close()
        self.assertEqual(a.read(0, 512).data, PATTERN[:512])
        a.disc()
        self.assert_closed(a)
        # A slot is free again: a new client gets in (bounded retries while
        # the server notices the departure).
        deadline = time.monotonic() + 10
        while True:
            d = self.client(timeout=3)
            got = d.recv_some(1.0)
            if got:
                break
            d.close()
            self.assertLess(time.monotonic(), deadline, "no slot after a client left")
        self.assertTrue(got.startswith(struct.pack(">Q", nbd.NBDMAGIC)))
        self.assertEqual(b.read(0, 512).data, PATTERN[:512])
        q = self.qmp()
        self.assertIn("qemu", q.ok("query-version"))


@skip_on_qemu_before((9, 1), "no handshake-max-seconds")
class HandshakeTimeout(NBDTestCase):
    server_opts = ",handshake-max-seconds=1"

    def test_idle_client_dropped(self):
        c = self.client()
        t0 = time.monotonic()
        self.assert_closed(c, timeout=6)
        self.assertGreater(time.monotonic() - t0, 0.5)

    def test_slow_negotiation_dropped(self):
        """The limit covers the whole handshake, not each message."""
        c = self.client()
        c.handshake()
        closed = False
        for _ in range(30):                          # 30 x 0.2 s at most
            try:
                c.option(nbd.OPT_LIST)
            except (EOFError, ConnectionResetError, BrokenPipeError):
                closed = True
                break
            time.sleep(0.2)
        self.assertTrue(closed, "a client haggling for 6 s was not dropped")

    def test_negotiated_client_kept(self):
        c = self.connected()
        time.sleep(2)
        self.assertEqual(c.read(0, 512).data, PATTERN[:512])


@skip_on_qemu_before((9, 1), "no handshake-max-seconds")
class NoHandshakeTimeout(NBDTestCase):
    server_opts = ",handshake-max-seconds=0"

    def test_zero_means_no_limit(self):
        c = self.client()
        c.handshake()
        time.sleep(2.5)
        c.go("d")
        self.assertEqual(c.read(0, 512).data, PATTERN[:512])


@skip_on_qemu_before((9, 1), "no default max-connections 100, handshake-max-seconds 10")
class DefaultLimits(NBDTestCase):
    def test_default_max_connections(self):
        clients = []
        for _ in range(100):
            c = self.client(timeout=5)
            c.read_greeting()
            clients.append(c)
        extra = self.client(timeout=3)
        got = extra.recv_some(1.5)
        self.assertIn(got, (None, b""), "client 101 was greeted")
        extra.close()
        clients[0].close()
        deadline = time.monotonic() + 10
        while True:
            d = self.client(timeout=3)
            got = d.recv_some(1.0)
            if got:
                break
            d.close()
            self.assertLess(time.monotonic(), deadline, "no slot after a client left")
        self.assertTrue(got.startswith(struct.pack(">Q", nbd.NBDMAGIC)))

    def test_default_handshake_limit(self):
        c = self.client(timeout=20)
        c.handshake()
        t0 = time.monotonic()
        self.assert_closed(c, timeout=16, what="an idle negotiation dropped after 10 s")
        self.assertGreater(time.monotonic() - t0, 7)


# =======================================================================
class ExportRemoval(NBDTestCase):
    def test_safe_delete_with_client_fails(self):
        c = self.connected()
        q = self.qmp()
        for args in ({"id": "e0"}, {"id": "e0", "mode": "safe"}):
            q.error("block-export-del", args)
        self.assertEqual([e["id"] for e in q.ok("query-block-exports")], ["e0"])
        self.assertEqual(c.read(0, 512).data, PATTERN[:512])

    def test_hard_delete_drops_client(self):
        c = self.connected(structured=True)
        q = self.qmp()
        q.ok("block-export-del", {"id": "e0", "mode": "hard"})
        self.assert_closed(c)
        ev = q.read_event("BLOCK_EXPORT_DELETED")
        self.assertEqual(ev["data"], {"id": "e0"})
        self.assertEqual(q.ok("query-block-exports"), [])
        n = self.client()
        n.handshake()
        self.assertEqual(n.go("d", check=False).final.type, nbd.REP_ERR_UNKNOWN)
        self.assertEqual(n.list_exports()[0], [])

    def test_contexts_do_not_follow_a_name_to_a_new_export(self):
        """Contexts chosen for an export do not apply to a new export that
        took its name: the session gets EINVAL, and the daemon lives."""
        q = self.qmp()
        for b in ("b0", "b1"):
            q.ok("block-dirty-bitmap-add", {"node": "r0", "name": b})
            q.ok("block-dirty-bitmap-disable", {"node": "r0", "name": b})
        q.ok("block-export-add", {"type": "nbd", "id": "e1", "node-name": "r0", "name": "bm",
                                  "bitmaps": ["b0", "b1"]})
        c = self.client()
        c.handshake()
        self.assertEqual(c.structured_reply().type, nbd.REP_ACK)
        _, final = c.set_meta_context("bm", ["qemu:dirty-bitmap:b1"])
        self.assertEqual(final.type, nbd.REP_ACK)
        q.ok("block-export-del", {"id": "e1"})
        q.read_event("BLOCK_EXPORT_DELETED")
        q.ok("block-export-add", {"type": "nbd", "id": "e2", "node-name": "r0", "name": "bm"})
        c.go("bm")
        r = c.block_status(0, 4096)
        self.assertEqual(r.error, nbd.EINVAL)
        self.assert_alive()

    def test_safe_delete_without_clients(self):
        c = self.connected()
        c.disc()
        self.assert_closed(c)
        q = self.qmp()
        deadline = time.monotonic() + 5
        while "error" in q.cmd("block-export-del", {"id": "e0"}):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        q.read_event("BLOCK_EXPORT_DELETED")
        self.assertEqual(q.ok("query-block-exports"), [])


# =======================================================================
class Durability(NBDTestCase):
    """What was acknowledged is there: after FLUSH in the image file, after
    a clean shutdown in the file, on a fresh connection always."""

    def _write_blocks(self, c, base, n, size=64 * KiB):
        data = {}
        cookies = []
        for i in range(n):
            data[base + i * size] = os.urandom(size)
            cookies.append(c.send_request(nbd.CMD_WRITE, 0, base + i * size,
                                          payload=data[base + i * size]))
        for ck in cookies:
            self.assertEqual(c.read_reply(ck).error, 0)
        return data

    def test_flush_reaches_the_file(self):
        c = self.connected()
        data = self._write_blocks(c, SPARSE_AT, 16)
        self.assertEqual(c.flush().error, 0)
        for off, d in data.items():
            self.assertEqual(self.file_bytes(off, len(d)), d, off)

    def test_acknowledged_writes_survive(self):
        c = self.connected(structured=True)
        data = self._write_blocks(c, SPARSE_AT, 16)
        c.close()                                     # no flush, no DISC
        r = self.connected()
        for off, d in data.items():
            self.assertEqual(r.read(off, len(d)).data, d)
        r.close()
        self.daemon.proc.terminate()
        self.assertEqual(self.daemon.wait(), 0)
        for off, d in data.items():
            self.assertEqual(self.file_bytes(off, len(d)), d, "lost at shutdown: %d" % off)

    def test_visible_to_other_connections(self):
        a = self.connected()
        b = self.connected(structured=True)
        data = os.urandom(8192)
        self.assertEqual(a.write(SPARSE_AT, data).error, 0)
        self.assertEqual(a.flush().error, 0)
        self.assertEqual(b.read(SPARSE_AT, 8192).data, data)
        self.assertEqual(b.write(SPARSE_AT, data[::-1], nbd.CMD_FLAG_FUA).error, 0)
        self.assertEqual(a.read(SPARSE_AT, 8192).data, data[::-1])

    def test_disc_completes_outstanding_writes(self):
        c = self.connected()
        data = {SPARSE_AT + i * 4096: os.urandom(4096) for i in range(16)}
        for off, d in data.items():
            c.send_request(nbd.CMD_WRITE, 0, off, payload=d)
        c.disc()
        self.assert_closed(c)
        r = self.connected()
        for off, d in data.items():
            self.assertEqual(r.read(off, len(d)).data, d, off)


# =======================================================================
@skip_on_qemu_before((8, 2), "no extended headers")
class ExtendedHeaders(NBDTestCase):
    def ext_client(self, meta=(), structured_first=False):
        c = self.client()
        c.handshake()
        if structured_first:
            self.assertEqual(c.structured_reply().type, nbd.REP_ACK)
        self.assertEqual(c.extended_headers().type, nbd.REP_ACK)
        if meta:
            _, final = c.set_meta_context("d", list(meta))
            self.assertEqual(final.type, nbd.REP_ACK)
        c.go("d", [nbd.INFO_BLOCK_SIZE])
        return c

    def test_negotiation(self):
        c = self.client()
        c.handshake()
        self.assertEqual(c.option(nbd.OPT_EXTENDED_HEADERS, b"x")[-1].type, nbd.REP_ERR_INVALID)
        self.assertEqual(c.extended_headers().type, nbd.REP_ACK)
        self.assertEqual(c.structured_reply().type, nbd.REP_ERR_EXT_HEADER_REQD)
        info = c.go("d")
        self.assertTrue(info.flags & nbd.TF_SEND_DF)

    def test_after_structured_replies(self):
        c = self.ext_client(structured_first=True)
        self.assertEqual(c.flush().kind, "extended")

    def test_meta_context_without_structured_replies(self):
        c = self.client()
        c.handshake()
        c.extended_headers()
        ctx, final = c.list_meta_context("d")
        self.assertEqual(final.type, nbd.REP_ACK)
        self.assertIn("base:allocation", ctx)
        ctx, final = c.set_meta_context("d", ["base:allocation"])
        self.assertEqual((list(ctx), final.type), (["base:allocation"], nbd.REP_ACK))

    def test_every_reply_is_extended(self):
        c = self.ext_client(meta=["base:allocation"])
        data = os.urandom(5000)
        for r in (c.write(SPARSE_AT + 7, data), c.write(0, PATTERN[:512], nbd.CMD_FLAG_FUA),
                  c.flush(), c.trim(2 * MiB, 4096), c.cache(0, 4096),
                  c.write_zeroes(2 * MiB, 4096), c.write_zeroes(2 * MiB, 4096, nbd.CMD_FLAG_NO_HOLE),
                  c.block_status(0, IMG_SIZE)):
            self.assertEqual(r.kind, "extended", r)   # never a simple reply
            self.assertEqual(r.error, 0, r)
            self.assertTrue(r.chunks[-1].done)
        r = c.read(SPARSE_AT + 7, len(data))
        self.assertEqual((r.kind, r.data), ("extended", data))
        r = c.read(0, 2 * DATA_LEN, nbd.CMD_FLAG_DF)
        self.assertEqual(len(r.content_chunks), 1)
        self.assertEqual(r.data, PATTERN + bytes(DATA_LEN))

    def test_sparse_read(self):
        c = self.ext_client()
        r = c.read(SPARSE_AT, MiB)
        self.assertEqual(r.data, bytes(MiB))
        self.assertTrue(r.holes)

    def test_errors(self):
        c = self.ext_client()
        for r in (c.read(IMG_SIZE, 512), c.trim(IMG_SIZE, 512), c.command(99, 0, 0, 0),
                  c.block_status(0, 512)):
            self.assertEqual(r.kind, "extended")
            self.assert_error(r, nbd.EINVAL)
            self.assertTrue(r.errors)
        self.assert_error(c.write(IMG_SIZE, b"x" * 512), *WRITE_PAST_END)

    def test_block_status_ext(self):
        c = self.ext_client(meta=["base:allocation"])
        cid = c.contexts["base:allocation"]
        r = c.block_status(0, IMG_SIZE)
        self.assertEqual([ch.type for ch in r.chunks if ch.extents is not None],
                         [nbd.REPLY_TYPE_BLOCK_STATUS_EXT])
        ext = r.extents[cid]
        self.check_extents(ext, 0, IMG_SIZE)
        for _, status in ext:
            self.assertEqual(status >> 32, 0, "base:allocation status wider than 32 bits")
        self.assertFalse(self.status_at(ext, 0, 0) & nbd.STATE_HOLE)
        self.assertTrue(self.status_at(ext, 0, SPARSE_AT) & nbd.STATE_ZERO)
        r = c.block_status(0, IMG_SIZE, nbd.CMD_FLAG_REQ_ONE)
        self.check_extents(r.extents[cid], 0, IMG_SIZE, req_one=True)

    def test_payload_on_a_command_without_one(self):
        """PAYLOAD_LEN where the command takes none: the payload is consumed
        and the command fails with EINVAL; the stream stays in step."""
        c = self.ext_client()
        r = c.command(nbd.CMD_FLUSH, nbd.CMD_FLAG_PAYLOAD_LEN, 0, payload=b"\x00" * 8)
        self.assert_error(r, nbd.EINVAL)
        r = c.command(nbd.CMD_READ, nbd.CMD_FLAG_PAYLOAD_LEN, 0, payload=b"\x00" * 16)
        self.assert_error(r, nbd.EINVAL)
        self.assertEqual(c.read(0, 512).data, PATTERN[:512])

    def test_block_status_payload(self):
        c = self.client()
        c.handshake()
        c.extended_headers()
        c.set_meta_context("d", ["base:allocation"])
        info = c.go("d")
        if not info.flags & nbd.TF_BLOCK_STATUS_PAYLOAD:
            self.skipTest("BLOCK_STATUS_PAYLOAD not advertised")
        cid = c.contexts["base:allocation"]
        payload = struct.pack(">QI", IMG_SIZE, cid)
        r = c.block_status(0, 0, nbd.CMD_FLAG_PAYLOAD_LEN, payload=payload)
        self.assertEqual(r.error, 0)
        self.assertEqual(list(r.extents), [cid])
        r = c.block_status(0, 0, nbd.CMD_FLAG_PAYLOAD_LEN,
                           payload=struct.pack(">QI", IMG_SIZE, cid + 1000))
        self.assert_error(r, nbd.EINVAL)
        self.assertEqual(c.read(0, 512).data, PATTERN[:512])

    def test_compact_request_is_a_violation(self):
        """A 28-byte compact header (padded to the 32 an extended one takes,
        so the server has a whole header to look at) has the wrong magic."""
        c = self.ext_client()
        c.send_raw(c.request_bytes(nbd.CMD_READ, 0, 0, 512, 1, extended=False) + bytes(4))
        self.assert_closed(c)
        self.assert_alive()

    def test_payload_above_maximum_disconnects(self):
        c = self.ext_client()
        c.send_raw(c.request_bytes(nbd.CMD_WRITE, nbd.CMD_FLAG_PAYLOAD_LEN, 0, 1 << 40, 3))
        self.assert_closed(c)
        self.assert_alive()


@skip_on_qemu_before((8, 2), "no extended headers")
class ExtendedHeadersLarge(NBDTestCase):
    """64-bit effect lengths on an 8 GiB sparse image."""

    image_size = 8 * GiB

    def test_64bit_lengths(self):
        c = self.client()
        c.handshake()
        self.assertEqual(c.extended_headers().type, nbd.REP_ACK)
        c.set_meta_context("d", ["base:allocation"])
        info = c.go("d")
        self.assertEqual(info.size, 8 * GiB)
        cid = c.contexts["base:allocation"]
        big = 6 * GiB
        r = c.block_status(0, big)
        self.assertEqual(r.error, 0)
        ext = r.extents[cid]
        self.check_extents(ext, 0, big)
        self.assertGreater(sum(n for n, _ in ext), 1 << 32,
                           "a 6 GiB query over one hole answered within 32 bits: %r" % ext)
        marks = [1 * GiB, 3 * GiB + 5, 7 * GiB - 512]
        for m in marks:
            self.assertEqual(c.write(m, b"\x77" * 512).error, 0)
        self.assertEqual(c.write_zeroes(GiB - 512, 5 * GiB + 1024).error, 0)
        for m in marks[:2]:
            self.assertEqual(c.read(m, 512).data, bytes(512), m)
        self.assertEqual(c.read(marks[2], 512).data, b"\x77" * 512)
        self.assertEqual(c.read(0, 512).data, PATTERN[:512])
        self.assertEqual(c.trim(GiB, 5 * GiB).error, 0)
        r = c.block_status(GiB, 5 * GiB, nbd.CMD_FLAG_REQ_ONE)
        self.check_extents(r.extents[cid], GiB, 5 * GiB, req_one=True)
        self.assert_error(c.write_zeroes(GiB, 8 * GiB), *WRITE_PAST_END)
        self.assert_error(c.block_status(GiB, 8 * GiB), nbd.EINVAL)


if __name__ == "__main__":
    unittest.main()
