"""The NBD server driven by real clients: nbdinfo, nbdcopy, the libnbd
Python bindings, qemu-img, qemu-io and fio's nbd engine.

Each test starts a daemon exporting a raw image (file node f0, raw node
r0) as "d" on a unix socket.  Tests of a client are skipped when it is not
installed; the libnbd tests need an interpreter with python3-libnbd.

Where qemu-storage-daemon 7.2 departs from the NBD specification the
expectation depends on is_qemu(): qemu answers every request it refuses
before running it (beyond the end of the export, a write to a read-only
export) with EINVAL, while the specification asks for ENOSPC for writes
beyond the end and EPERM for writes to a read-only export, which is what
vstord sends.
"""

import errno
import json
import os
import threading
import unittest

from nbd_tools import (FALSE, KiB, MiB, TRUE, NbdTestCase, block_status, connect, disconnect,
                       file_map, full_status, image_bytes, is_qemu, merge, nbd, needs,
                       needs_libnbd, pattern, reports_holes, run, sha256, sha256_file)

SIZE = 64 * MiB

# A sparse image with data at known places, every extent a multiple of
# 64 KiB so that any file system block size keeps them apart.
LAYOUT = [
    (1 * MiB, pattern(1, 64 * KiB)),
    (5 * MiB, pattern(2, 192 * KiB)),
    (20 * MiB, pattern(3, 1 * MiB)),
    (SIZE - 128 * KiB, pattern(4, 128 * KiB)),
]


def layout_map(layout=LAYOUT, size=SIZE):
    """[(offset, length, is_data)] of a sparse image with layout written."""
    out = []
    pos = 0
    for off, data in sorted(layout):
        if off > pos:
            out.append((pos, off - pos, False))
        out.append((off, len(data), True))
        pos = off + len(data)
    if pos < size:
        out.append((pos, size - pos, False))
    return merge(out)


def beyond_end_write_error():
    """The errno a write beyond the end of the export gets."""
    return errno.EINVAL if is_qemu() else errno.ENOSPC


def read_only_error():
    """The errno a write, zero or trim on a read-only export gets."""
    return errno.EINVAL if is_qemu() else errno.EPERM


class ClientTestCase(NbdTestCase):
    SIZE = SIZE

    def start_sparse(self, **kw):
        """A daemon exporting the LAYOUT image; skips when the file system
        does not report that image's holes as the layout has them."""
        self.img = self.image(extents=LAYOUT)
        if file_map(self.img) != layout_map():
            self.skipTest("the file system does not report the image's holes exactly")
        return self.start(self.img, **kw)


# -- nbdinfo --------------------------------------------------------------
@needs("nbdinfo")
class NbdInfo(ClientTestCase):
    def can(self, what, uri):
        return self.nbdinfo("--can", what, uri, check=False).returncode

    def test_list_shows_every_export(self):
        img = self.image()
        other = self.image(size=8 * MiB, name="other")
        self.start(img, export=",description=the first export")
        q = self.qmp()
        self.add_export(q, "e1", "r0", "ro", description="read-only view")
        self.add_node(q, "r1", other)
        self.add_export(q, "e2", "r1", "other", writable=True, **{"allocation-depth": True})
        out = json.loads(self.nbdinfo("--list", "--json", self.uri("")).stdout)
        self.assertEqual(out["protocol"], "newstyle-fixed")
        self.assertTrue(out["structured"])
        exports = out["exports"]
        # In the order they were added.
        self.assertEqual([e["export-name"] for e in exports], ["d", "ro", "other"])
        d, ro, oth = exports
        self.assertEqual(d["description"], "the first export")
        self.assertEqual(ro["description"], "read-only view")
        self.assertNotIn("description", oth)
        self.assertEqual([e["export-size"] for e in exports], [SIZE, SIZE, 8 * MiB])
        self.assertEqual([e["is_read_only"] for e in exports], [False, True, False])
        self.assertEqual(d["contexts"], ["base:allocation"])
        self.assertEqual(oth["contexts"], ["base:allocation", "qemu:allocation-depth"])
        for e in exports:
            self.assertEqual(e["block_size_minimum"], 1)
            self.assertEqual(e["block_size_preferred"], 4096)
            self.assertEqual(e["block_size_maximum"], 32 * MiB)
        # A removed export is no longer listed.
        self.del_export(q, "e1")
        out = json.loads(self.nbdinfo("--list", "--json", self.uri("")).stdout)
        self.assertEqual([e["export-name"] for e in out["exports"]], ["d", "other"])

    def test_unknown_export(self):
        self.start(self.image())
        p = self.nbdinfo(self.uri("nope"), check=False)
        self.assertEqual(p.returncode, 1)
        # NBD_REP_ERR_UNKNOWN, which libnbd reports as ENOENT.
        self.assertIn(b"No such file or directory for export: nope", p.stderr)

    def test_writable_export_flags(self):
        self.start(self.image())
        uri = self.uri()
        for what in ("connect", "read", "write", "flush", "trim", "zero", "fua", "multi-conn",
                     "cache", "df", "fast-zero", "structured-reply"):
            self.assertEqual(self.can(what, uri), TRUE, what)
        self.assertEqual(self.nbdinfo("--is", "read-only", uri, check=False).returncode, FALSE)
        self.assertEqual(self.nbdinfo("--is", "rotational", uri, check=False).returncode, FALSE)
        self.assertEqual(self.nbdinfo("--size", uri).stdout.strip(), str(SIZE).encode())

    def test_read_only_export_flags(self):
        self.start(self.image(), export=",writable=off")
        uri = self.uri()
        for what in ("write", "trim", "zero", "fast-zero"):
            self.assertEqual(self.can(what, uri), FALSE, what)
        # Flush and FUA stay (harmless without writes), as in qemu.
        for what in ("read", "flush", "fua", "multi-conn", "cache", "df"):
            self.assertEqual(self.can(what, uri), TRUE, what)
        self.assertEqual(self.nbdinfo("--is", "read-only", uri, check=False).returncode, TRUE)

    def test_read_only_export_added_by_qmp(self):
        self.start(self.image())
        self.add_export(self.qmp(), "e1", "r0", "ro")
        self.assertEqual(self.can("write", self.uri("ro")), FALSE)
        self.assertEqual(self.can("write", self.uri("d")), TRUE)

    def test_no_multi_conn_with_one_connection(self):
        # Multi-conn is advertised unless the server takes one connection
        # at a time (both daemons' defaults allow several).
        self.start(self.image(), server=",max-connections=1")
        self.add_export(self.qmp(), "e1", "r0", "ro")
        self.assertEqual(self.can("multi-conn", self.uri("d")), FALSE)
        self.assertEqual(self.can("multi-conn", self.uri("ro")), FALSE)

    def test_map_base_allocation(self):
        self.start_sparse()
        want = [(off, length, 0, "data") if is_data else (off, length, 3, "hole,zero")
                for off, length, is_data in layout_map()]
        self.assertEqual(self.nbdinfo_map(self.uri()), want)
        self.assertEqual(self.nbdinfo_map(self.uri(), "base:allocation"), want)
        # The context must be offered by the export.
        p = self.nbdinfo("--map=qemu:allocation-depth", self.uri(), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b'server does not support metadata context "qemu:allocation-depth"',
                      p.stderr)

    def test_map_totals(self):
        self.start_sparse()
        out = json.loads(self.nbdinfo("--map", "--totals", "--json", self.uri()).stdout)
        data = sum(len(d) for _, d in LAYOUT)
        got = {e["type"]: e["size"] for e in out}
        self.assertEqual(got, {0: data, 3: SIZE - data})

    def test_map_allocation_depth(self):
        # A raw image on a file: every byte is in the top image.
        self.start_sparse(export=",allocation-depth=on")
        self.assertEqual(self.nbdinfo_map(self.uri(), "qemu:allocation-depth"),
                         [(0, SIZE, 1, "local")])
        want = [(off, length, 0 if is_data else 3) for off, length, is_data in layout_map()]
        self.assertEqual([e[:3] for e in self.nbdinfo_map(self.uri())], want)

    @needs("qemu-io")
    def test_map_dirty_bitmap(self):
        self.start(self.image())
        q = self.qmp()
        q.ok("block-dirty-bitmap-add", {"node": "r0", "name": "b0", "granularity": 64 * KiB})
        # A writable export may carry an enabled bitmap: its map follows
        # the writes as they happen.
        self.add_export(q, "e1", "r0", "live", writable=True, bitmaps=["b0"])
        uri = self.uri("live")
        self.assertEqual(self.nbdinfo_map(uri, "qemu:dirty-bitmap:b0"),
                         [(0, SIZE, 0, "clean")])
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 100k 10k",
             "-c", "write -P 0x5b %d 2" % (3 * MiB - 1), "-c", "write -z 8M 64k",
             "-c", "write -P 0x5c %d 64k" % (SIZE - 64 * KiB), self.uri("d")], timeout=30)
        self.assertEqual(self.nbdinfo_map(uri, "qemu:dirty-bitmap:b0"), [
            (0, 64 * KiB, 0, "clean"),
            (64 * KiB, 64 * KiB, 1, "dirty"),
            (128 * KiB, 3 * MiB - 192 * KiB, 0, "clean"),
            (3 * MiB - 64 * KiB, 128 * KiB, 1, "dirty"),
            (3 * MiB + 64 * KiB, 5 * MiB - 64 * KiB, 0, "clean"),
            (8 * MiB, 64 * KiB, 1, "dirty"),
            (8 * MiB + 64 * KiB, SIZE - 8 * MiB - 128 * KiB, 0, "clean"),
            (SIZE - 64 * KiB, 64 * KiB, 1, "dirty"),
        ])
        # The export offers exactly the contexts it was given.
        info = json.loads(self.nbdinfo("--json", uri).stdout)["exports"][0]
        self.assertEqual(info["contexts"], ["base:allocation", "qemu:dirty-bitmap:b0"])
        p = self.nbdinfo("--map=qemu:dirty-bitmap:b0", self.uri("d"), check=False)
        self.assertEqual(p.returncode, 1)


# -- nbdcopy --------------------------------------------------------------
@needs("nbdcopy")
class NbdCopy(ClientTestCase):
    def copy(self, src, dst, *opts):
        return run(["nbdcopy"] + list(opts) + [src, dst], timeout=60)

    def test_file_to_export_to_file(self):
        src = self.image(extents=LAYOUT, name="src")
        img = self.image()
        self.start(img)
        self.copy(src, self.uri(), "--flush")
        self.assertEqual(sha256_file(img), sha256_file(src))
        out = os.path.join(self.tmpdir(), "out")
        self.copy(self.uri(), out)
        self.assertEqual(sha256_file(out), sha256_file(src))
        if reports_holes(src):
            self.assertEqual(file_map(out), file_map(src))

    def test_holes_reported_by_the_export_stay_holes(self):
        # With zero detection off (--sparse=0), only the export's
        # base:allocation tells nbdcopy where the holes are (the data is
        # copied in whole requests, as large as the data extents are aligned).
        self.start_sparse()
        tmp = self.tmpdir()
        out = os.path.join(tmp, "out")
        self.copy(self.uri(), out, "--sparse=0", "--request-size=65536")
        self.assertEqual(sha256_file(out), sha256_file(self.img))
        self.assertEqual(file_map(out), layout_map())
        # Without asking for extents every byte is copied.
        out2 = os.path.join(tmp, "out2")
        self.copy(self.uri(), out2, "--sparse=0", "--no-extents")
        self.assertEqual(sha256_file(out2), sha256_file(self.img))
        self.assertEqual(file_map(out2), [(0, SIZE, True)])

    def test_file_over_filled_export(self):
        # Holes of the source must be written as zeroes over old data.
        src = self.image(extents=LAYOUT, name="src")
        old = self.image(fill=0x11, name="old")
        img = self.image(fill=0xee)
        self.start(img)
        for opts in (["--flush"],
                     ["--flush", "--connections=1", "--synchronous", "--request-size=65536"]):
            self.copy(src, self.uri(), *opts)
            self.assertEqual(sha256_file(img), sha256_file(src), opts)
            p = run(["nbdcopy", self.uri(), "-"], timeout=60)
            self.assertEqual(sha256(p.stdout), sha256_file(src), opts)
            self.copy(old, self.uri(), "--flush")  # old data again for the next round
            self.assertEqual(sha256_file(img), sha256_file(old))

    def test_export_to_export(self):
        src = self.image(extents=LAYOUT, name="src")
        dst = self.image(fill=0x33, name="dst")
        self.start(src, export=",writable=off")
        q = self.qmp()
        self.add_node(q, "r1", dst)
        self.add_export(q, "e1", "r1", "dst", writable=True)
        self.copy(self.uri("d"), self.uri("dst"), "--flush")
        self.assertEqual(sha256_file(dst), sha256_file(src))
        p = run(["nbdcopy", self.uri("dst"), "-"], timeout=60)
        self.assertEqual(sha256(p.stdout), sha256_file(src))


# -- libnbd ---------------------------------------------------------------
@needs_libnbd
class LibNbd(ClientTestCase):
    def setUp(self):
        self.img = self.image(extents=LAYOUT)
        self.start(self.img)

    def handle(self, name="d", contexts=(), strict=True, full_info=False):
        h = connect(self.uri(name), contexts, strict, full_info)
        self.addCleanup(disconnect, h)
        return h

    def assertErrno(self, want, fn, *args):
        with self.assertRaises(nbd.Error) as cm:
            fn(*args)
        self.assertEqual(cm.exception.errnum, want,
                         "%s: %s" % (errno.errorcode.get(cm.exception.errnum), cm.exception))

    def test_handshake(self):
        h = self.handle(contexts=["base:allocation"], full_info=True)
        self.assertEqual(h.get_size(), SIZE)
        self.assertTrue(h.get_structured_replies_negotiated())
        self.assertEqual(h.get_protocol(), "newstyle-fixed")
        self.assertEqual(h.get_canonical_export_name(), "d")
        self.assertTrue(h.can_meta_context("base:allocation"))
        self.assertEqual(h.get_block_size(nbd.SIZE_MINIMUM), 1)
        self.assertEqual(h.get_block_size(nbd.SIZE_PREFERRED), 4096)
        self.assertEqual(h.get_block_size(nbd.SIZE_MAXIMUM), 32 * MiB)
        for can in (h.can_flush, h.can_fua, h.can_trim, h.can_zero, h.can_fast_zero,
                    h.can_df, h.can_multi_conn, h.can_cache):
            self.assertTrue(can(), can.__name__)
        self.assertFalse(h.is_read_only())
        self.assertFalse(h.is_rotational())
        self.add_export(self.qmp(), "e1", "r0", "described", description="a description")
        h = self.handle("described", full_info=True)
        self.assertEqual(h.get_canonical_export_name(), "described")
        self.assertEqual(h.get_export_description(), "a description")

    def test_read_write_flush_fua(self):
        h = self.handle()
        model = image_bytes(SIZE, LAYOUT)
        self.assertEqual(h.pread(2 * MiB, 0), model[:2 * MiB])
        writes = [(12345, pattern(10, 100000), 0),
                  (3 * MiB - 7, pattern(11, 4096 + 14), nbd.CMD_FLAG_FUA),
                  (SIZE - 513, pattern(12, 513), nbd.CMD_FLAG_FUA),
                  (21 * MiB - 1, b"\x01\x02", 0)]
        for off, data, flags in writes:
            h.pwrite(data, off, flags)
            model[off:off + len(data)] = data
        h.flush()
        for off, data, _ in writes:
            self.assertEqual(h.pread(len(data), off), data)
        # FUA on a read is accepted (clients are known to send it), though
        # libnbd sends it only when not strict.
        loose = self.handle(strict=False)
        self.assertEqual(loose.pread(4096, 1 * MiB, nbd.CMD_FLAG_FUA), model[MiB:MiB + 4096])
        # After a flush the data is in the file.
        self.assertEqual(sha256_file(self.img), sha256(bytes(model)))
        # A second connection sees it all.
        other = self.handle()
        self.assertEqual(sha256(other.pread(SIZE // 2, 0)), sha256(bytes(model[:SIZE // 2])))

    def test_read_data_and_holes(self):
        h = self.handle()
        model = image_bytes(SIZE, LAYOUT)

        def chunks(length, off, flags=0):
            got = []

            def cb(buf, offset, status, error):
                got.append((offset, len(buf), status))
                return 0

            data = h.pread_structured(length, off, cb, flags)
            return data, sorted(got)

        # Reads across data and holes: structured replies may send holes
        # as hole chunks; the chunks cover the request exactly once.
        for off, length in ((0, 6 * MiB), (MiB - 1, 64 * KiB + 2), (5 * MiB + 100, 4 * MiB),
                            (SIZE - 300 * KiB, 300 * KiB), (19 * MiB, 3 * MiB)):
            self.assertEqual(h.pread(length, off), model[off:off + length], (off, length))
            data, got = chunks(length, off)
            self.assertEqual(data, model[off:off + length], (off, length))
            pos = off
            for c_off, c_len, status in got:
                self.assertEqual(c_off, pos, got)
                self.assertIn(status, (nbd.READ_DATA, nbd.READ_HOLE))
                pos += c_len
            self.assertEqual(pos, off + length)
            # Don't fragment: one data chunk with the zeroes written out.
            data, got = chunks(length, off, nbd.CMD_FLAG_DF)
            self.assertEqual(data, model[off:off + length])
            self.assertEqual(got, [(off, length, nbd.READ_DATA)])
        self.assertEqual(h.pread(32 * MiB, 0), model[:32 * MiB])

    def test_write_zeroes(self):
        h = self.handle()
        model = image_bytes(SIZE, LAYOUT)
        fill = pattern(20, 8 * MiB)
        h.pwrite(fill, 8 * MiB)
        model[8 * MiB:16 * MiB] = fill
        cases = [(8 * MiB + 100, 1000, 0),
                 (9 * MiB, 256 * KiB, 0),
                 (10 * MiB, 256 * KiB, nbd.CMD_FLAG_NO_HOLE),
                 (11 * MiB - 3, 128 * KiB + 7, nbd.CMD_FLAG_FUA),
                 (12 * MiB, 64 * KiB, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)]
        for off, length, flags in cases:
            h.zero(length, off, flags)
            model[off:off + length] = bytes(length)
        # Fast zero: done quickly or refused with ENOTSUP, nothing else.
        for off, length, flags in ((13 * MiB, 1 * MiB, nbd.CMD_FLAG_FAST_ZERO),
                                   (14 * MiB + 512, 64 * KiB,
                                    nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)):
            try:
                h.zero(length, off, flags)
            except nbd.Error as e:
                self.assertEqual(e.errnum, errno.ENOTSUP, str(e))
                continue
            model[off:off + length] = bytes(length)
        h.flush()
        self.assertEqual(h.pread(8 * MiB, 8 * MiB), model[8 * MiB:16 * MiB])
        self.assertEqual(sha256_file(self.img), sha256(bytes(model)))
        # A zero far larger than the largest read or write.
        h.zero(SIZE, 0)
        self.assertEqual(h.pread(32 * MiB, 32 * MiB), bytes(32 * MiB))

    def test_trim(self):
        # A trim may discard or do nothing; data beside it stays.
        h = self.handle()
        model = image_bytes(SIZE, LAYOUT)
        h.trim(64 * KiB, 20 * MiB + 256 * KiB)
        h.trim(128 * KiB, 20 * MiB + 512 * KiB, nbd.CMD_FLAG_FUA)
        h.trim(SIZE, 0)  # larger than any read or write
        h.flush()
        for off, length in ((20 * MiB, 256 * KiB), (20 * MiB + 320 * KiB, 192 * KiB)):
            self.assertEqual(h.pread(length, off), model[off:off + length])
        # Writing after a trim gives the data back.
        h.pwrite(b"\x42" * 4096, 20 * MiB + 256 * KiB)
        self.assertEqual(h.pread(4096, 20 * MiB + 256 * KiB), b"\x42" * 4096)

    def test_cache(self):
        h = self.handle()
        h.cache(MiB, 0)
        h.cache(1, SIZE - 1)
        h.cache(32 * MiB, 0)
        ro = self.add_export(self.qmp(), "e1", "r0", "ro")
        self.assertEqual(ro, {})
        self.handle("ro").cache(64 * KiB, 5 * MiB)

    def test_block_status(self):
        h = self.handle(contexts=["base:allocation"])
        want = [(off, length, 0 if is_data else 3) for off, length, is_data in layout_map()]
        if not reports_holes(self.img):
            self.skipTest("the file system reports no holes")
        self.assertEqual(full_status(h, "base:allocation", SIZE), want)
        # The same in small steps (each reply within its request).
        self.assertEqual(full_status(h, "base:allocation", SIZE, step=3 * MiB + 4096), want)
        # Unaligned requests: the lengths never add up past the request.
        for off, length in ((MiB - 1, 64 * KiB + 2), (5 * MiB + 1, 100), (100, 7 * MiB)):
            got = block_status(h, length, off)["base:allocation"]
            self.assertLessEqual(sum(n for n, _ in got), length)
            self.assertGreater(got[0][0], 0)

    def test_block_status_req_one(self):
        self.add_export(self.qmp(), "e1", "r0", "ad", **{"allocation-depth": True})
        h = self.handle("ad", contexts=["base:allocation", "qemu:allocation-depth"])
        for off, length in ((0, SIZE), (MiB, 8 * MiB), (MiB + 4096, 100), (5 * MiB - 1, 2),
                            (SIZE - 200 * KiB, 200 * KiB)):
            full = block_status(h, length, off)
            one = block_status(h, length, off, nbd.CMD_FLAG_REQ_ONE)
            self.assertEqual(sorted(one), ["base:allocation", "qemu:allocation-depth"])
            for ctx, got in one.items():
                self.assertEqual(len(got), 1, (ctx, got))
                n, flags = got[0]
                self.assertGreater(n, 0)
                self.assertLessEqual(n, length)
                first_n, first_flags = full[ctx][0]
                self.assertEqual(flags, first_flags, ctx)
                self.assertEqual(n, min(first_n, length), ctx)

    def test_beyond_the_end(self):
        h = self.handle(contexts=["base:allocation"], strict=False)
        for fn, args in ((h.pread, (4096, SIZE - 2048)), (h.pread, (1, SIZE)),
                         (h.pread, (512, SIZE + 4096)), (h.trim, (4096, SIZE - 2048)),
                         (h.cache, (4096, SIZE - 2048)),
                         (block_status, (h, 4096, SIZE - 2048)), (block_status, (h, 1, SIZE))):
            self.assertErrno(errno.EINVAL, fn, *args)
        # The specification asks for ENOSPC on writes beyond the end.
        want = beyond_end_write_error()
        self.assertErrno(want, h.pwrite, b"x" * 4096, SIZE - 2048)
        self.assertErrno(want, h.pwrite, b"x" * 512, SIZE + 4096)
        self.assertErrno(want, h.zero, 4096, SIZE - 2048)
        # The connection goes on, nothing was written.
        self.assertEqual(h.pread(2048, SIZE - 2048), image_bytes(SIZE, LAYOUT)[-2048:])

    def test_request_size_limits(self):
        h = self.handle(strict=False)
        top = h.get_block_size(nbd.SIZE_MAXIMUM)
        self.assertEqual(len(h.pread(top, 0)), top)
        self.assertErrno(errno.EINVAL, h.pread, top + 1, 0)
        self.assertErrno(errno.EINVAL, h.cache, top + 1, 0)
        h.zero(top + 4096, 0)  # zero and trim carry no payload: no limit
        h.trim(top + 4096, 0)
        self.assertEqual(h.pread(16, 0), bytes(16))

    def test_zero_length_requests(self):
        h = self.handle(contexts=["base:allocation"], strict=False)
        self.assertEqual(h.pread(0, 0), b"")
        self.assertEqual(h.pread(0, SIZE), b"")
        h.pwrite(b"", 0)
        h.pwrite(b"", SIZE)
        h.zero(0, MiB)
        h.trim(0, MiB)
        h.flush()
        self.assertErrno(errno.EINVAL, block_status, h, 0, 0)
        self.assertEqual(h.pread(64 * KiB, MiB), LAYOUT[0][1])

    def test_unsupported_flags(self):
        h = self.handle(strict=False)
        self.assertErrno(errno.EINVAL, h.pwrite, b"x", 0, nbd.CMD_FLAG_DF)
        self.assertErrno(errno.EINVAL, h.pwrite, b"x", 0, nbd.CMD_FLAG_FAST_ZERO)
        self.assertErrno(errno.EINVAL, h.pread, 1, 0, nbd.CMD_FLAG_REQ_ONE)
        self.assertErrno(errno.EINVAL, h.trim, 4096, 0, nbd.CMD_FLAG_NO_HOLE)
        self.assertEqual(h.pread(1, 0), b"\0")

    def test_read_only_export(self):
        self.add_export(self.qmp(), "e1", "r0", "ro")
        h = self.handle("ro", strict=False)
        self.assertTrue(h.is_read_only())
        want = read_only_error()
        self.assertErrno(want, h.pwrite, b"x" * 4096, 0)
        self.assertErrno(want, h.pwrite, b"x" * 4096, 0, nbd.CMD_FLAG_FUA)
        self.assertErrno(want, h.pwrite, b"x" * 4096, SIZE)  # read-only comes first
        self.assertErrno(want, h.zero, 4096, 0)
        self.assertErrno(want, h.trim, 4096, 0)
        # Reading, flushing and caching work; the connection survived.
        h.flush()
        h.cache(4096, MiB)
        self.assertEqual(h.pread(64 * KiB, MiB, nbd.CMD_FLAG_FUA), LAYOUT[0][1])
        self.assertEqual(sha256_file(self.img), sha256(bytes(image_bytes(SIZE, LAYOUT))))
        # libnbd itself refuses when left strict.
        strict = self.handle("ro")
        self.assertErrno(errno.EPERM, strict.pwrite, b"x", 0)

    def test_concurrent_connections(self):
        n, region, chunk = 4, 8 * MiB, 256 * KiB
        errors = []

        def writer(i):
            try:
                h = connect(self.uri())
                try:
                    for k in range(region // chunk):
                        off = i * region + k * chunk
                        h.pwrite(pattern(100 + i * 1000 + k, chunk), off,
                                 nbd.CMD_FLAG_FUA if k % 8 == 0 else 0)
                    h.flush()
                finally:
                    disconnect(h)
            except Exception as e:  # reported below
                errors.append((i, e))

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertFalse([t for t in threads if t.is_alive()], "writers hung")
        self.assertEqual(errors, [])
        # Multi-conn: a flush on any connection covers every connection's
        # completed writes; a new connection sees all of them.
        h = self.handle()
        h.flush()
        for i in range(n):
            got = h.pread(region, i * region)
            want = b"".join(pattern(100 + i * 1000 + k, chunk) for k in range(region // chunk))
            self.assertEqual(sha256(got), sha256(want), "region %d" % i)
        model = image_bytes(SIZE, LAYOUT)
        self.assertEqual(h.pread(SIZE - n * region, n * region), model[n * region:])

    def test_pipelined_requests(self):
        h = self.handle()
        chunk, count = 64 * KiB, 64
        cookies = []
        for k in range(count):
            buf = nbd.Buffer.from_bytearray(bytearray(pattern(500 + k, chunk)))
            cookies.append(h.aio_pwrite(buf, 32 * MiB + k * chunk))
        cookies.append(h.aio_flush())
        self.wait_all(h, cookies)
        reads = [(k, nbd.Buffer(chunk)) for k in reversed(range(count))]
        cookies = [h.aio_pread(buf, 32 * MiB + k * chunk) for k, buf in reads]
        self.wait_all(h, cookies)
        for k, buf in reads:
            self.assertEqual(buf.to_bytearray(), pattern(500 + k, chunk), k)

    def wait_all(self, h, cookies):
        for _ in range(10000):  # bounded; each poll waits for the socket
            if h.aio_in_flight() == 0:
                break
            h.poll(5000)
        self.assertEqual(h.aio_in_flight(), 0)
        for c in cookies:
            self.assertTrue(h.aio_command_completed(c))


# -- qemu-img and qemu-io -------------------------------------------------
@needs("qemu-img")
class QemuImg(ClientTestCase):
    def test_info(self):
        self.start(self.image())
        info = json.loads(run(["qemu-img", "info", "--output=json", self.uri()]).stdout)
        self.assertEqual(info["virtual-size"], SIZE)
        self.assertEqual(info["format"], "raw")
        info = json.loads(run(["qemu-img", "info", "--output=json", "--image-opts",
                               "driver=nbd,server.type=unix,server.path=%s,export=d"
                               % self.sock]).stdout)
        self.assertEqual(info["virtual-size"], SIZE)

    def test_map_json(self):
        self.start_sparse()
        got = json.loads(run(["qemu-img", "map", "--output=json", "-f", "raw", self.uri()]).stdout)
        want = [{"start": off, "length": length, "depth": 0, "present": True,
                 "zero": not is_data, "data": is_data} for off, length, is_data in layout_map()]
        self.assertEqual([{k: e[k] for k in ("start", "length", "depth", "present", "zero", "data")}
                          for e in got], want)

    def test_convert_and_compare(self):
        src = self.image(extents=LAYOUT, name="src")
        img = self.image(fill=0xee)
        self.start(img)
        uri = self.uri()
        run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, uri])
        self.assertEqual(sha256_file(img), sha256_file(src))
        p = run(["qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri])
        self.assertIn(b"Images are identical", p.stdout)
        tmp = self.tmpdir()
        for fmt in ("raw", "qcow2"):
            out = os.path.join(tmp, "out." + fmt)
            run(["qemu-img", "convert", "-f", "raw", "-O", fmt, uri, out])
            run(["qemu-img", "compare", "-f", "raw", "-F", fmt, src, out])
        self.assertEqual(sha256_file(os.path.join(tmp, "out.raw")), sha256_file(src))
        # A changed byte is found where it is.
        with open(src, "r+b") as f:
            f.seek(7 * MiB)
            f.write(b"\x01")
        p = run(["qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri], check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(b"Content mismatch at offset %d!" % (7 * MiB), p.stdout)


@needs("qemu-io")
class QemuIo(ClientTestCase):
    def io(self, uri, *cmds, read_only=False, check=True):
        argv = ["qemu-io", "-f", "raw"] + (["-r"] if read_only else [])
        for c in cmds:
            argv += ["-c", c]
        p = run(argv + [uri], check=check, timeout=60)
        return p

    def test_pattern_write_read(self):
        img = self.image()
        self.start(img)
        p = self.io(self.uri(),
                    "write -P 0xab 0 64k", "read -P 0xab 0 64k",
                    "write -f -P 0x22 1M 64k", "read -P 0x22 1M 64k",
                    "write -z 1M 4k", "read -P 0 1M 4k", "read -P 0x22 1052672 60k",
                    "write -z -u 2M 1M", "read -P 0 2M 1M",
                    "aio_write -P 0xcd 4M 1M", "aio_write -P 0xce 5M 1M", "aio_flush",
                    "readv -P 0xcd 4M 512k 512k", "read -P 0xce 5M 1M",
                    "writev -P 0x11 9M 4k 4k", "readv -P 0x11 9M 4k 4k",
                    "write -P 0x33 %d 512" % (SIZE - 512), "read -P 0x33 %d 512" % (SIZE - 512),
                    "discard 16M 1M", "flush")
        self.assertNotIn(b"failed", p.stdout + p.stderr)
        model = image_bytes(SIZE, [(0, b"\xab" * 64 * KiB), (MiB, b"\x22" * 64 * KiB),
                                   (MiB, bytes(4 * KiB)), (4 * MiB, b"\xcd" * MiB),
                                   (5 * MiB, b"\xce" * MiB), (9 * MiB, b"\x11" * 8 * KiB),
                                   (SIZE - 512, b"\x33" * 512)])
        self.assertEqual(sha256_file(img), sha256(bytes(model)))
        # A wrong pattern is noticed.
        p = self.io(self.uri(), "read -P 0xac 0 64k", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"Pattern verification failed at offset 0, 65536 bytes", p.stdout)

    def test_read_only_export(self):
        self.start(self.image(extents=[(0, b"\x77" * 64 * KiB)]), export=",writable=off")
        # qemu's client will not open a read-only export for writing.
        p = self.io(self.uri(), "read -P 0x77 0 64k", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"Permission denied", p.stderr)
        self.io(self.uri(), "read -P 0x77 0 64k", "read -P 0 64k 64k", read_only=True)


# -- fio ------------------------------------------------------------------
@needs("fio")
class Fio(ClientTestCase):
    def test_verify_job(self):
        self.start(self.image())
        tmp = self.tmpdir()
        out = os.path.join(tmp, "fio.json")
        # Two jobs, two connections, each writing and verifying its own 16M.
        run(["fio", "--name=verify", "--ioengine=nbd", "--uri=" + self.uri(),
             "--rw=randwrite", "--bs=64k", "--size=16M", "--numjobs=2", "--offset_increment=16M",
             "--iodepth=8", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
             "--verify_state_save=0", "--runtime=40", "--output-format=json",
             "--output=" + out], timeout=90, cwd=tmp)
        with open(out) as f:
            jobs = json.load(f)["jobs"]
        self.assertEqual(len(jobs), 2)
        for job in jobs:
            self.assertEqual(job["error"], 0)
            self.assertEqual(job["write"]["io_bytes"], 16 * MiB)
            self.assertEqual(job["read"]["io_bytes"], 16 * MiB)  # the verify pass


# -- cache.direct=on ------------------------------------------------------
# O_DIRECT under the export: the clients' requests meet the file system's
# alignment rules, through aligned buffers or read-modify-write.
class NbdCopyDirect(NbdCopy):
    FILE_OPTS = ",cache.direct=on"


class QemuIoDirect(QemuIo):
    FILE_OPTS = ",cache.direct=on"

    def test_unaligned_patterns(self):
        img = self.image()
        self.start(img)
        p = self.io(self.uri(), "write -P 0x5a 100 1000", "write -P 0x5b 4000 5000",
                    "read -P 0x5a 100 1000", "read -P 0x5b 4000 5000", "read -P 0 9000 1000",
                    "flush")
        self.assertNotIn(b"failed", p.stdout + p.stderr)
        model = image_bytes(SIZE, [(100, b"\x5a" * 1000), (4000, b"\x5b" * 5000)])
        self.assertEqual(sha256_file(img), sha256(bytes(model)))


@needs("fio")
class FioDirect(Fio):
    FILE_OPTS = ",cache.direct=on"


if __name__ == "__main__":
    unittest.main()
