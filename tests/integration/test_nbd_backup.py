"""Pull-mode incremental backup over NBD, as libvirt drives it.

A daemon holds an image node; a dirty bitmap on it records the guest's
writes (made here through a writable NBD export with libnbd); a second,
read-only export of the same node carries the bitmap, and the backup
application reads the dirty extents from its qemu:dirty-bitmap:NAME
metadata context (nbdinfo --map, qemu-img map with x-dirty-bitmap, libnbd
block status) and then the data at those extents.

Besides: disabling, enabling, clearing, merging and removing bitmaps, and
x-debug-block-dirty-bitmap-sha256, whose value is the SHA-256 of the
bitmap's bits (bit n for granularity-sized cluster n, least significant
bit first, in 64-bit little-endian words), so it is computed here too.

The libnbd parts need an interpreter with python3-libnbd.
"""

import hashlib
import json

from daemon import Daemon, monitor_args
from nbd_tools import (KiB, MiB, NbdTestCase, block_status, connect, dirty_extents,
                       dirty_ranges, disconnect, full_status, image_bytes, merge,
                       nbd, needs, needs_libnbd, pattern, run, sha256)

SIZE = 64 * MiB
GRAN = 64 * KiB

# What the image holds before the guest writes.
BASE = [(0, pattern(1, 256 * KiB)), (30 * MiB, pattern(2, 2 * MiB))]

# The guest's writes: (offset, length); some straddle cluster boundaries.
WRITES_A = [(100 * KiB, 10 * KiB), (3 * MiB - 1, 2), (8 * MiB, 200 * KiB),
            (20 * MiB + 4096, MiB), (SIZE - 4096, 4096)]
WRITES_B = [(40 * MiB, 64 * KiB), (100 * KiB + 1, 1), (45 * MiB + 32 * KiB, 64 * KiB)]
WRITES_C = [(50 * MiB, 3 * 64 * KiB + 1)]


def bitmap_sha256(size, written, granularity=GRAN):
    """The x-debug-block-dirty-bitmap-sha256 of a bitmap after written."""
    nbits = (size + granularity - 1) // granularity
    words = [0] * ((nbits + 63) // 64)
    for off, length, kind in dirty_extents(size, written, granularity):
        if kind:
            for c in range(off // granularity, (off + length - 1) // granularity + 1):
                words[c // 64] |= 1 << (c % 64)
    return hashlib.sha256(b"".join(w.to_bytes(8, "little") for w in words)).hexdigest()


def dirty_bytes(size, written, granularity=GRAN):
    return sum(n for _, n in dirty_ranges(dirty_extents(size, written, granularity)))


@needs_libnbd
class BackupTestCase(NbdTestCase):
    SIZE = SIZE

    def setUp(self):
        """A daemon with the image node r0 and an NBD server started over
        QMP; the guest writes through the writable export "guest"."""
        self.img = self.image(extents=BASE)
        self.daemon = Daemon(monitor_args() + [
            "--blockdev", "driver=file,node-name=f0,filename=" + self.img,
            "--blockdev", "driver=raw,node-name=r0,file=f0"])
        self.addCleanup(self.daemon.stop)
        self.sock = self.daemon.path("nbd.sock")
        self.q = self.qmp()
        self.q.ok("nbd-server-start", {"addr": {"type": "unix", "data": {"path": self.sock}}})
        self.add_export(self.q, "guest", "r0", "guest", writable=True)
        self.guest = connect(self.uri("guest"))
        self.addCleanup(disconnect, self.guest)
        self.model = image_bytes(SIZE, BASE)

    # -- the guest ----------------------------------------------------------
    def write(self, writes, seed=0):
        for i, (off, length) in enumerate(writes):
            data = pattern(seed * 100 + i + 7, length)
            self.guest.pwrite(data, off)
            self.model[off:off + length] = data
        self.guest.flush()

    # -- bitmaps ------------------------------------------------------------
    def add_bitmap(self, name, **kw):
        args = {"node": "r0", "name": name, "granularity": GRAN}
        args.update(kw)
        self.q.ok("block-dirty-bitmap-add", args)

    def bitmap_info(self, name):
        for node in self.q.ok("query-named-block-nodes", {"flat": True}):
            if node["node-name"] == "r0":
                for b in node.get("dirty-bitmaps", []):
                    if b["name"] == name:
                        return b
        raise AssertionError("no bitmap %s on r0" % name)

    def bitmap_sha(self, name):
        r = self.q.ok("x-debug-block-dirty-bitmap-sha256", {"node": "r0", "name": name})
        return r["sha256"]

    def assertBitmap(self, name, written, recording=True):
        info = self.bitmap_info(name)
        self.assertEqual(info["count"], dirty_bytes(SIZE, written), name)
        self.assertEqual(info["recording"], recording, name)
        self.assertEqual(info["granularity"], GRAN)
        self.assertEqual(self.bitmap_sha(name), bitmap_sha256(SIZE, written), name)

    # -- the backup application ---------------------------------------------
    def export_backup(self, bitmaps, name="backup", **kw):
        self.add_export(self.q, name, "r0", name, bitmaps=bitmaps, **kw)
        self.addCleanup(self.remove_export, name)

    def remove_export(self, name):
        if name in [e["id"] for e in self.q.ok("query-block-exports")]:
            self.del_export(self.q, name)

    def nbdinfo_dirty(self, bitmap, export="backup"):
        return [(off, n, kind) for off, n, kind, desc in
                self.nbdinfo_map(self.uri(export), "qemu:dirty-bitmap:" + bitmap)]

    def libnbd_dirty(self, bitmap, export="backup"):
        ctx = "qemu:dirty-bitmap:" + bitmap
        h = connect(self.uri(export), [ctx])
        try:
            return full_status(h, ctx, SIZE)
        finally:
            disconnect(h)

    def read_extents(self, extents, export="backup"):
        h = connect(self.uri(export))
        try:
            return [bytes(h.pread(n, off)) for off, n in extents]
        finally:
            disconnect(h)


class PullBackup(BackupTestCase):
    @needs("nbdinfo", "qemu-img")
    def test_backup_of_changed_extents(self):
        self.add_bitmap("b0")
        self.assertBitmap("b0", [])
        self.assertFalse(self.bitmap_info("b0")["busy"])
        self.write(WRITES_A)
        self.guest.zero(64 * KiB, 12 * MiB)  # write zeroes dirties too
        self.model[12 * MiB:12 * MiB + 64 * KiB] = bytes(64 * KiB)
        written = WRITES_A + [(12 * MiB, 64 * KiB)]
        self.assertBitmap("b0", written)

        # A read-only export takes only a bitmap that no longer records.
        err = self.q.error("block-export-add", {"type": "nbd", "id": "backup", "node-name": "r0",
                                                "name": "backup", "bitmaps": ["b0"]})
        self.assertEqual(err, {"class": "GenericError",
                               "desc": "Enabled bitmap 'b0' incompatible with readonly export"})
        self.q.ok("block-dirty-bitmap-disable", {"node": "r0", "name": "b0"})
        self.export_backup(["b0"])
        info = self.bitmap_info("b0")
        self.assertTrue(info["busy"])
        self.assertFalse(info["recording"])

        want = dirty_extents(SIZE, written, GRAN)
        self.assertEqual(dirty_ranges(want), [
            (64 * KiB, 64 * KiB), (3 * MiB - 64 * KiB, 128 * KiB), (8 * MiB, 256 * KiB),
            (12 * MiB, 64 * KiB), (20 * MiB, MiB + 64 * KiB), (SIZE - 64 * KiB, 64 * KiB)])

        # The dirty extents, three ways.
        self.assertEqual(self.nbdinfo_dirty("b0"), want)
        out = json.loads(self.nbdinfo_json_map("b0"))
        descriptions = {(e["type"], e["description"]) for e in out}
        self.assertEqual(descriptions, {(0, "clean"), (1, "dirty")})
        self.assertEqual(self.libnbd_dirty("b0"), want)
        # qemu-img map shows a dirty extent as not present and not data
        # (the bitmap's bit lands where NBD_STATE_HOLE would be).
        got = self.qemu_img_map("backup", "b0")
        self.assertEqual([(e["start"], e["length"], 0 if e["data"] else 1) for e in got], want)
        for e in got:
            dirty = not e["data"]
            self.assertEqual((e["present"], e["zero"]), (not dirty, False), e)

        # The backup: data read at the dirty extents is what was written.
        extents = dirty_ranges(want)
        for (off, n), data in zip(extents, self.read_extents(extents)):
            self.assertEqual(sha256(data), sha256(bytes(self.model[off:off + n])), (off, n))

        # The bitmap is in use while exported.
        for cmd in ("block-dirty-bitmap-clear", "block-dirty-bitmap-remove",
                    "block-dirty-bitmap-enable"):
            err = self.q.error(cmd, {"node": "r0", "name": "b0"})
            self.assertEqual(err["desc"], "Bitmap 'b0' is currently in use by another operation"
                             " and cannot be used", cmd)

        # The guest keeps writing; a disabled bitmap does not notice.
        self.write(WRITES_B, seed=1)
        self.assertEqual(self.nbdinfo_dirty("b0"), want)
        self.assertBitmap("b0", written, recording=False)

        # The backup is over.
        self.remove_export("backup")
        self.assertFalse(self.bitmap_info("b0")["busy"])
        self.q.ok("block-dirty-bitmap-remove", {"node": "r0", "name": "b0"})
        names = [b["name"] for n in self.q.ok("query-named-block-nodes", {"flat": True})
                 for b in n.get("dirty-bitmaps", [])]
        self.assertEqual(names, [])

    def nbdinfo_json_map(self, bitmap, export="backup"):
        return self.nbdinfo("--map=qemu:dirty-bitmap:" + bitmap, "--json", self.uri(export)).stdout

    def qemu_img_map(self, export, bitmap):
        opts = ("driver=nbd,server.type=unix,server.path=%s,export=%s,"
                "x-dirty-bitmap=qemu:dirty-bitmap:%s" % (self.sock, export, bitmap))
        return json.loads(run(["qemu-img", "map", "--output=json", "--image-opts", opts]).stdout)

    def test_all_contexts_in_one_request(self):
        self.add_bitmap("b0")
        self.write(WRITES_A)
        self.q.ok("block-dirty-bitmap-disable", {"node": "r0", "name": "b0"})
        self.export_backup(["b0"], **{"allocation-depth": True})
        contexts = ["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0"]
        h = connect(self.uri("backup"), contexts)
        self.addCleanup(disconnect, h)
        for c in contexts:
            self.assertTrue(h.can_meta_context(c), c)
        want = dirty_extents(SIZE, WRITES_A, GRAN)
        for off, length in ((0, SIZE), (3 * MiB - 100, 200), (8 * MiB + 1, 300 * KiB)):
            got = block_status(h, length, off)
            self.assertEqual(sorted(got), sorted(contexts))
            self.assertEqual(got["qemu:allocation-depth"][0][1], 1)  # local
            dirty = []
            pos = off
            for n, flags in got["qemu:dirty-bitmap:b0"]:
                dirty.append((pos, n, flags))
                pos += n
            self.assertLessEqual(pos, off + length)
            self.assertEqual(merge(dirty), clip(want, off, pos))
            one = block_status(h, length, off, nbd.CMD_FLAG_REQ_ONE)
            self.assertEqual({c: len(e) for c, e in one.items()}, {c: 1 for c in contexts})
        # A context the export does not have is not offered.
        h2 = connect(self.uri("guest"), ["qemu:dirty-bitmap:b0", "base:allocation"])
        self.addCleanup(disconnect, h2)
        self.assertFalse(h2.can_meta_context("qemu:dirty-bitmap:b0"))
        self.assertTrue(h2.can_meta_context("base:allocation"))

    def test_libvirt_scratch_bitmap(self):
        """libvirt keeps the checkpoint's bitmap recording and exports a
        disabled copy made for the backup with block-dirty-bitmap-merge."""
        self.add_bitmap("checkpoint")
        self.write(WRITES_A)
        self.add_bitmap("backup-vda", disabled=True)
        self.assertBitmap("backup-vda", [], recording=False)
        self.q.ok("block-dirty-bitmap-merge",
                  {"node": "r0", "target": "backup-vda", "bitmaps": ["checkpoint"]})
        self.export_backup(["backup-vda"])
        self.write(WRITES_B, seed=1)  # during the backup
        self.assertBitmap("checkpoint", WRITES_A + WRITES_B)
        self.assertBitmap("backup-vda", WRITES_A, recording=False)
        want = dirty_extents(SIZE, WRITES_A, GRAN)
        self.assertEqual(self.libnbd_dirty("backup-vda"), want)
        extents = dirty_ranges(want)
        for (off, n), data in zip(extents, self.read_extents(extents)):
            self.assertEqual(data, bytes(self.model[off:off + n]), (off, n))
        self.remove_export("backup")
        self.q.ok("block-dirty-bitmap-remove", {"node": "r0", "name": "backup-vda"})
        self.assertBitmap("checkpoint", WRITES_A + WRITES_B)


class Bitmaps(BackupTestCase):
    def test_disable_and_enable(self):
        self.add_bitmap("b0")
        self.write(WRITES_A)
        self.q.ok("block-dirty-bitmap-disable", {"node": "r0", "name": "b0"})
        self.assertBitmap("b0", WRITES_A, recording=False)
        self.write(WRITES_B, seed=1)  # not recorded
        self.assertBitmap("b0", WRITES_A, recording=False)
        self.q.ok("block-dirty-bitmap-enable", {"node": "r0", "name": "b0"})
        self.write(WRITES_C, seed=2)
        self.assertBitmap("b0", WRITES_A + WRITES_C)
        self.q.ok("block-dirty-bitmap-disable", {"node": "r0", "name": "b0"})
        self.export_backup(["b0"])
        self.assertEqual(self.libnbd_dirty("b0"), dirty_extents(SIZE, WRITES_A + WRITES_C, GRAN))

    def test_clear(self):
        self.add_bitmap("b0")
        empty = self.bitmap_sha("b0")
        self.assertEqual(empty, bitmap_sha256(SIZE, []))
        self.write(WRITES_A)
        self.assertNotEqual(self.bitmap_sha("b0"), empty)
        self.q.ok("block-dirty-bitmap-clear", {"node": "r0", "name": "b0"})
        self.assertEqual(self.bitmap_sha("b0"), empty)
        self.assertBitmap("b0", [])
        self.write(WRITES_B, seed=1)  # recorded again after the clear
        self.assertBitmap("b0", WRITES_B)
        # A disabled bitmap can be cleared too.
        self.q.ok("block-dirty-bitmap-disable", {"node": "r0", "name": "b0"})
        self.q.ok("block-dirty-bitmap-clear", {"node": "r0", "name": "b0"})
        self.assertBitmap("b0", [], recording=False)

    def test_merge_two_bitmaps(self):
        self.add_bitmap("b1")
        self.write(WRITES_A)
        self.q.ok("block-dirty-bitmap-disable", {"node": "r0", "name": "b1"})
        self.add_bitmap("b2")
        self.write(WRITES_B, seed=1)
        self.q.ok("block-dirty-bitmap-disable", {"node": "r0", "name": "b2"})
        self.add_bitmap("union", disabled=True)
        # Sources by name on the target's node, or by node and name.
        self.q.ok("block-dirty-bitmap-merge", {"node": "r0", "target": "union",
                                               "bitmaps": ["b1", {"node": "r0", "name": "b2"}]})
        self.assertBitmap("b1", WRITES_A, recording=False)
        self.assertBitmap("b2", WRITES_B, recording=False)
        self.assertBitmap("union", WRITES_A + WRITES_B, recording=False)
        # Merging is idempotent.
        self.q.ok("block-dirty-bitmap-merge", {"node": "r0", "target": "union", "bitmaps": ["b2"]})
        self.assertBitmap("union", WRITES_A + WRITES_B, recording=False)
        # One export, three bitmaps, three contexts.
        self.export_backup(["b1", "b2", "union"])
        for name, written in (("b1", WRITES_A), ("b2", WRITES_B),
                              ("union", WRITES_A + WRITES_B)):
            self.assertEqual(self.libnbd_dirty(name), dirty_extents(SIZE, written, GRAN), name)
        # Into an enabled bitmap, which goes on recording.
        self.remove_export("backup")
        self.add_bitmap("live")
        self.q.ok("block-dirty-bitmap-merge", {"node": "r0", "target": "live", "bitmaps": ["b1"]})
        self.write(WRITES_C, seed=2)
        self.assertBitmap("live", WRITES_A + WRITES_C)

    def test_sha256_follows_writes(self):
        self.add_bitmap("b0")
        self.add_bitmap("b1")
        self.assertEqual(self.bitmap_sha("b0"), bitmap_sha256(SIZE, []))
        before = self.bitmap_sha("b0")
        self.write([(5 * MiB + 10, 10)])
        after = self.bitmap_sha("b0")
        self.assertNotEqual(after, before)
        self.assertEqual(after, bitmap_sha256(SIZE, [(5 * MiB, 1)]))
        self.assertEqual(self.bitmap_sha("b1"), after)  # same writes, same bits
        self.write([(5 * MiB + 60 * KiB, 4 * KiB)])  # the same cluster again
        self.assertEqual(self.bitmap_sha("b0"), after)
        self.write([(5 * MiB + 60 * KiB, 8 * KiB)])  # and the next one
        self.assertEqual(self.bitmap_sha("b0"), bitmap_sha256(SIZE, [(5 * MiB, 128 * KiB)]))
        # Granularity changes the bits.
        self.add_bitmap("fine", granularity=4 * KiB)
        self.write([(7 * MiB + 100, 5000)])
        self.assertEqual(self.bitmap_sha("fine"),
                         bitmap_sha256(SIZE, [(7 * MiB + 100, 5000)], 4 * KiB))
        self.assertEqual(self.bitmap_info("fine")["count"], 8 * KiB)

    def test_trim_when_discard_is_ignored(self):
        # Discard requests are dropped on a node opened with the default
        # discard=ignore: nothing changes, so nothing is dirty.
        self.add_bitmap("b0")
        self.guest.trim(MiB, 30 * MiB)
        self.guest.flush()
        self.assertBitmap("b0", [])
        self.assertEqual(bytes(self.guest.pread(MiB, 30 * MiB)),
                         bytes(self.model[30 * MiB:31 * MiB]))

    def test_defaults_and_errors(self):
        self.q.ok("block-dirty-bitmap-add", {"node": "r0", "name": "dflt"})
        info = self.bitmap_info("dflt")
        self.assertEqual(info, {"name": "dflt", "recording": True, "persistent": False,
                                "busy": False, "granularity": 64 * KiB, "count": 0})
        self.add_bitmap("b1", disabled=True)
        self.add_bitmap("b2")
        # Newest first.
        names = [b["name"] for n in self.q.ok("query-named-block-nodes", {"flat": True})
                 if n["node-name"] == "r0" for b in n["dirty-bitmaps"]]
        self.assertEqual(names, ["b2", "b1", "dflt"])
        errors = [
            ("block-dirty-bitmap-add", {"node": "r0", "name": "b1"}, "Bitmap already exists: b1"),
            ("block-dirty-bitmap-add", {"node": "nonode", "name": "x"},
             "Cannot find device='nonode' nor node-name='nonode'"),
            ("block-dirty-bitmap-add", {"node": "r0", "name": "x", "granularity": 1000},
             "Granularity must be power of 2 and at least 512"),
            ("block-dirty-bitmap-add", {"node": "r0", "name": "x", "granularity": 256},
             "Granularity must be power of 2 and at least 512"),
            ("block-dirty-bitmap-remove", {"node": "r0", "name": "nope"},
             "Dirty bitmap 'nope' not found"),
            ("block-dirty-bitmap-clear", {"node": "r0", "name": "nope"},
             "Dirty bitmap 'nope' not found"),
            ("x-debug-block-dirty-bitmap-sha256", {"node": "r0", "name": "nope"},
             "Dirty bitmap 'nope' not found"),
            ("block-dirty-bitmap-merge", {"node": "r0", "target": "b1", "bitmaps": ["nope"]},
             "Dirty bitmap 'nope' not found"),
            ("block-export-add", {"type": "nbd", "id": "x", "node-name": "r0", "name": "x",
                                  "bitmaps": ["nope"]}, "Bitmap 'nope' is not found"),
        ]
        for cmd, args, desc in errors:
            self.assertEqual(self.q.error(cmd, args), {"class": "GenericError", "desc": desc},
                             (cmd, args))
        self.assertEqual(self.q.ok("query-block-exports"), [
            {"node-name": "r0", "shutting-down": False, "type": "nbd", "id": "guest"}])

    def test_odd_sized_image(self):
        # The last cluster is partial and bits run past a 64-bit word.
        size = 10 * MiB + 512
        img = self.image(size=size, name="odd")
        self.add_node(self.q, "odd", img)
        self.q.ok("block-dirty-bitmap-add", {"node": "odd", "name": "b", "granularity": GRAN})
        self.add_export(self.q, "odd-w", "odd", "odd-w", writable=True)
        h = connect(self.uri("odd-w"))
        self.addCleanup(disconnect, h)
        h.pwrite(b"\x01" * 512, size - 512)
        h.pwrite(b"\x02", 4 * MiB)
        h.flush()
        written = [(size - 512, 512), (4 * MiB, 1)]
        sha = self.q.ok("x-debug-block-dirty-bitmap-sha256", {"node": "odd", "name": "b"})
        self.assertEqual(sha["sha256"], bitmap_sha256(size, written))
        self.q.ok("block-dirty-bitmap-disable", {"node": "odd", "name": "b"})
        self.add_export(self.q, "odd-r", "odd", "odd-r", bitmaps=["b"])
        ctx = "qemu:dirty-bitmap:b"
        r = connect(self.uri("odd-r"), [ctx])
        self.addCleanup(disconnect, r)
        self.assertEqual(full_status(r, ctx, size), dirty_extents(size, written, GRAN))


def clip(extents, start, end):
    """extents (offset, length, kind) cut to [start, end)."""
    out = []
    for off, n, kind in extents:
        a, b = max(off, start), min(off + n, end)
        if a < b:
            out.append((a, b - a, kind))
    return out


if __name__ == "__main__":
    import unittest
    unittest.main()
