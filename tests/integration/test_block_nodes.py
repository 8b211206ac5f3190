"""Block nodes, dirty bitmaps and the export registry over QMP.

blockdev-add (file, host_device, raw, null-co, null-aio) and its errors,
blockdev-del, query-named-block-nodes, query-block, block_resize,
x-debug-query-block-graph, image locking, the block-dirty-bitmap-*
commands, nbd-server-start/-stop/-add/-remove, block-export-add/-del,
query-block-exports, BLOCK_EXPORT_DELETED, and --blockdev, --nbd-server
and --export on the command line.  Error texts are qemu-storage-daemon's.

The tests also run against qemu-storage-daemon itself (VSTORD pointing at
it); the few where vstord differs on purpose say so and check each side.
"""

import errno
import fcntl
import hashlib
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import unittest

from daemon import QSD, VSTORD, Daemon, DaemonTestCase, monitor_args
from nbd_raw import INFO_DESCRIPTION, TF_READ_ONLY, NBDClient

MiB = 1 << 20
GiB = 1 << 30

# "#block" + a counter + two random digits, as QEMU names inline children.
AUTO_NAME = re.compile(r"^#block(\d+)\d\d$")

# Permission names as x-debug-query-block-graph lists them.
ALL_SHARED = ["resize", "write-unchanged", "write", "consistent-read"]
NO_RESIZE = ["write-unchanged", "write", "consistent-read"]

# QEMU's image lock bytes (file driver): 100 + bit while a permission is
# held, 200 + bit while it is not shared.  Bits: consistent-read 0,
# write 1, write-unchanged 2, resize 3.
LOCK_PERM_BASE = 100
LOCK_SHARED_BASE = 200
BIT_CONSISTENT_READ, BIT_WRITE, BIT_RESIZE = 0, 1, 3


def is_qemu():
    """True when the daemon under test is qemu-storage-daemon itself."""
    return "qemu" in os.path.basename(VSTORD)


def make_image(path, size=MiB):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def expected_sha256(size, granularity, dirty_ranges=()):
    """x-debug-block-dirty-bitmap-sha256 for a bitmap of a node of `size`
    bytes: SHA-256 over 64-bit little-endian words, one bit per chunk."""
    chunks = (size + granularity - 1) // granularity
    words = [0] * max((chunks + 63) // 64, 1)
    for start, length in dirty_ranges:
        for chunk in range(start // granularity, (start + length - 1) // granularity + 1):
            words[chunk // 64] |= 1 << (chunk % 64)
    return hashlib.sha256(b"".join(struct.pack("<Q", w) for w in words)).hexdigest()


def unix_legacy(path):
    """A SocketAddressLegacy (nbd-server-start's 'addr')."""
    return {"type": "unix", "data": {"path": path}}


def node_entry(name, drv, filename, size, fmt=None, ro=False, actual_size=0, dirty_flag=True,
               detect_zeroes="off", direct=False, no_flush=False, bitmaps=None):
    """A query-named-block-nodes entry as QEMU 7.2 reports it."""
    image = {"virtual-size": size, "filename": filename, "format": fmt or drv,
             "actual-size": actual_size}
    if dirty_flag:
        image["dirty-flag"] = False
    entry = {"iops_rd": 0, "detect_zeroes": detect_zeroes, "image": image, "iops_wr": 0,
             "ro": ro, "node-name": name, "backing_file_depth": 0, "drv": drv, "iops": 0,
             "bps_wr": 0, "write_threshold": 0, "encrypted": False, "bps": 0, "bps_rd": 0,
             "cache": {"no-flush": no_flush, "direct": direct, "writeback": True},
             "file": filename}
    if bitmaps is not None:
        entry["dirty-bitmaps"] = bitmaps
    return entry


def bitmap_entry(name, granularity=65536, count=0, recording=True, busy=False):
    return {"name": name, "recording": recording, "persistent": False, "busy": busy,
            "granularity": granularity, "count": count}


class BlockTestCase(DaemonTestCase):
    """A daemon with one negotiated monitor (self.c)."""

    def setUp(self):
        super().setUp()
        self.c = self.qmp()

    def image(self, name="img", size=MiB):
        return make_image(self.daemon.path(name), size)

    def add(self, **opts):
        self.assertEqual(self.c.ok("blockdev-add", opts), {})

    def add_error(self, **opts):
        return self.c.error("blockdev-add", opts)["desc"]

    def file_node(self, name="f0", image="img", **opts):
        path = self.daemon.path(image)
        if not os.path.exists(path):
            make_image(path)
        self.add(driver="file", **{"node-name": name}, filename=path, **opts)
        return path

    def node_list(self, **args):
        return self.c.ok("query-named-block-nodes", args or None)

    def nodes(self, **args):
        return {n["node-name"]: n for n in self.node_list(**args)}

    def names(self):
        return [n["node-name"] for n in self.node_list()]

    def graph(self):
        """(nodes {id: (name, type)}, edges {(parent, child, name): (perm, shared)})
        with parents and children given by name."""
        g = self.c.ok("x-debug-query-block-graph")
        nodes = {n["id"]: (n["name"], n["type"]) for n in g["nodes"]}
        edges = {}
        for e in g["edges"]:
            key = (nodes[e["parent"]][0], nodes[e["child"]][0], e["name"])
            self.assertNotIn(key, edges)
            edges[key] = (e["perm"], e["shared-perm"])
        return nodes, edges

    def start_nbd(self, sock="nbd.sock", **opts):
        args = {"addr": unix_legacy(self.daemon.path(sock))}
        args.update(opts)
        self.assertEqual(self.c.ok("nbd-server-start", args), {})
        return self.daemon.path(sock)

    def export(self, id, node, **opts):
        args = {"type": "nbd", "id": id, "node-name": node}
        args.update(opts)
        self.assertEqual(self.c.ok("block-export-add", args), {})

    def exports(self):
        return self.c.ok("query-block-exports")

    def nbd(self, sock="nbd.sock"):
        n = NBDClient.unix(self.daemon.path(sock))
        self.addCleanup(n.close)
        n.handshake()
        return n


# -- blockdev-add -----------------------------------------------------------

class BlockdevAddDrivers(BlockTestCase):
    def test_file_node(self):
        path = self.file_node()
        blocks = os.stat(path).st_blocks * 512
        self.assertEqual(self.node_list(),
                         [node_entry("f0", "file", path, MiB, actual_size=blocks)])

    def test_raw_over_file_by_reference(self):
        path = self.file_node()
        self.add(driver="raw", **{"node-name": "r0"}, file="f0")
        nodes = self.nodes()
        self.assertEqual(nodes["r0"], node_entry("r0", "raw", path, MiB,
                                                 actual_size=nodes["r0"]["image"]["actual-size"]))
        self.assertEqual(nodes["r0"]["image"]["format"], "raw")
        self.assertEqual(self.names(), ["r0", "f0"], "newest first")

    def test_raw_with_inline_child(self):
        path = self.image()
        self.add(driver="raw", **{"node-name": "r0"}, file={"driver": "file", "filename": path})
        names = self.names()
        self.assertEqual(len(names), 2, names)
        self.assertEqual(names[0], "r0")
        child = names[1]
        self.assertRegex(child, AUTO_NAME)
        node = self.nodes()[child]
        self.assertEqual((node["drv"], node["file"], node["ro"]), ("file", path, False))
        _, edges = self.graph()
        self.assertIn(("r0", child, "file"), edges)

    def test_automatic_names_count_up(self):
        path = self.image()
        counters = []
        for i in range(3):
            self.add(driver="raw", **{"node-name": "r%d" % i},
                     file={"driver": "file", "filename": path})
            child = self.names()[1]
            m = AUTO_NAME.match(child)
            self.assertIsNotNone(m, child)
            counters.append(int(m.group(1)))
        self.assertEqual(counters, sorted(set(counters)), "each inline child gets a new number")

    def test_inline_child_with_its_own_name(self):
        path = self.image()
        self.add(driver="raw", **{"node-name": "r0"},
                 file={"driver": "file", "filename": path, "node-name": "c0"})
        self.assertEqual(self.names(), ["r0", "c0"])
        _, edges = self.graph()
        self.assertEqual(set(edges), {("r0", "c0", "file")})

    def test_raw_window(self):
        path = self.image()
        self.add(driver="raw", **{"node-name": "w"}, offset=4096, size=8192,
                 file={"driver": "file", "filename": path})
        w = self.nodes()["w"]
        self.assertEqual(w["image"]["virtual-size"], 8192)
        # The json: pseudo-filename, keys in QEMU's QDict order.
        self.assertEqual(w["file"], 'json:{"offset": 4096, "driver": "raw", "size": 8192, '
                                    '"file": {"driver": "file", "filename": "%s"}}' % path)
        self.assertEqual(w["image"]["filename"], w["file"])

    def test_raw_window_size_only(self):
        path = self.file_node()
        self.add(driver="raw", **{"node-name": "w"}, size=4096, file="f0")
        w = self.nodes()["w"]
        self.assertEqual(w["image"]["virtual-size"], 4096)
        self.assertEqual(w["file"], 'json:{"driver": "raw", "size": 4096, '
                                    '"file": {"driver": "file", "filename": "%s"}}' % path)

    def test_raw_window_edges(self):
        path = self.image()
        f = {"driver": "file", "filename": path}
        self.add(driver="raw", **{"node-name": "end"}, offset=MiB, file=f)
        self.add(driver="raw", **{"node-name": "odd"}, offset=1000, file=f)
        self.add(driver="raw", **{"node-name": "tail"}, offset=4096, size=MiB - 4096, file=f)
        nodes = self.nodes()
        self.assertEqual(nodes["end"]["image"]["virtual-size"], 0)
        # Lengths are reported rounded up to 512 bytes.
        self.assertEqual(nodes["odd"]["image"]["virtual-size"], 1048064)
        self.assertEqual(nodes["tail"]["image"]["virtual-size"], MiB - 4096)

    def test_raw_window_errors(self):
        path = self.image()
        f = {"driver": "file", "filename": path}
        cases = [
            ({"offset": MiB + 1},
             "Offset (1048577) cannot be greater than size of the containing file (1048576)"),
            ({"offset": 4096, "size": MiB},
             "The sum of offset (4096) and size (1048576) has to be smaller or equal to the  "
             "actual size of the containing file (1048576)"),
            ({"size": MiB + 512},
             "The sum of offset (0) and size (1049088) has to be smaller or equal to the  "
             "actual size of the containing file (1048576)"),
            ({"size": 1000}, "Specified size is not multiple of 512"),
            ({"offset": -1}, "Parameter 'offset' expects a non-negative number below 2^64"),
            ({"size": -1}, "Parameter 'size' expects a non-negative number below 2^64"),
        ]
        for opts, desc in cases:
            with self.subTest(opts=opts):
                self.assertEqual(self.add_error(driver="raw", **{"node-name": "w"}, file=f,
                                                **opts), desc)
        # Nothing is left behind, not even the inline children.
        self.assertEqual(self.node_list(), [])

    def test_null_co_defaults(self):
        self.add(driver="null-co", **{"node-name": "n0"})
        self.assertEqual(self.node_list(),
                         [node_entry("n0", "null-co", "null-co://", GiB, dirty_flag=False)])

    def test_null_aio_options(self):
        self.add(driver="null-aio", **{"node-name": "n1"}, size=MiB, **{"read-zeroes": True})
        self.add(driver="null-aio", **{"node-name": "n2"})
        self.add(driver="null-co", **{"node-name": "n3"}, size=65536)
        self.add(driver="null-co", **{"node-name": "n4"}, **{"latency-ns": 1000})
        nodes = self.nodes()
        self.assertEqual(
            nodes["n1"],
            node_entry("n1", "null-aio",
                       'json:{"read-zeroes": true, "driver": "null-aio", "size": 1048576}',
                       MiB, dirty_flag=False))
        self.assertEqual(nodes["n2"]["file"], "null-aio://")
        self.assertEqual(nodes["n3"]["file"], 'json:{"driver": "null-co", "size": 65536}')
        self.assertEqual(nodes["n3"]["image"]["virtual-size"], 65536)
        self.assertEqual(nodes["n4"]["file"], "null-co://")

    def test_null_sizes(self):
        self.add(driver="null-co", **{"node-name": "zero"}, size=0)
        self.add(driver="null-aio", **{"node-name": "odd"}, size=1000, **{"read-only": True})
        nodes = self.nodes()
        self.assertEqual(nodes["zero"]["image"]["virtual-size"], 0)
        # Rounded up to 512 bytes.
        self.assertEqual(nodes["odd"]["image"]["virtual-size"], 1024)
        self.assertTrue(nodes["odd"]["ro"])

    def test_host_device_needs_a_device(self):
        path = self.image()
        self.assertEqual(self.add_error(driver="host_device", **{"node-name": "h"}, filename=path),
                         "'host_device' driver requires '%s' to be either a character or block "
                         "device" % path)
        self.assertEqual(self.add_error(driver="file", **{"node-name": "h"},
                                        filename="/dev/null"),
                         "'file' driver requires '/dev/null' to be a regular file")
        # A character device is accepted.
        self.add(driver="host_device", **{"node-name": "h"}, filename="/dev/null")
        self.assertEqual(self.nodes()["h"]["drv"], "host_device")

    def test_host_device_on_a_loop_device(self):
        if os.geteuid() != 0 or not shutil.which("losetup"):
            self.skipTest("loop devices need root and losetup")
        path = self.image(size=2 * MiB)
        p = subprocess.run(["losetup", "--find", "--show", path], capture_output=True,
                           text=True, timeout=20)
        if p.returncode != 0:
            self.skipTest("no loop device: " + p.stderr.strip())
        dev = p.stdout.strip()
        self.addCleanup(subprocess.run, ["losetup", "-d", dev], timeout=20)
        self.addCleanup(self.daemon.stop)  # before the device goes
        self.add(driver="host_device", **{"node-name": "h"}, filename=dev)
        self.add(driver="raw", **{"node-name": "r"}, file="h")
        nodes = self.nodes()
        self.assertEqual((nodes["h"]["drv"], nodes["h"]["file"]), ("host_device", dev))
        self.assertEqual(nodes["h"]["image"]["virtual-size"], 2 * MiB)
        self.assertEqual(nodes["r"]["image"]["virtual-size"], 2 * MiB)
        self.assertEqual(self.add_error(driver="file", **{"node-name": "x"}, filename=dev),
                         "'file' driver requires '%s' to be a regular file" % dev)


class BlockdevAddErrors(BlockTestCase):
    def test_duplicate_node_name(self):
        self.file_node()
        path = self.daemon.path("img")
        self.assertEqual(self.add_error(driver="file", **{"node-name": "f0"}, filename=path),
                         "Duplicate nodes with node-name='f0'")
        self.assertEqual(self.add_error(driver="null-co", **{"node-name": "f0"}),
                         "Duplicate nodes with node-name='f0'")
        # Also when the name is an inline child's.
        self.assertEqual(self.add_error(driver="raw", **{"node-name": "r0"},
                                        file={"driver": "file", "filename": path,
                                              "node-name": "f0"}),
                         "Duplicate nodes with node-name='f0'")
        self.assertEqual(self.names(), ["f0"])

    def test_bad_filenames(self):
        d = self.daemon.dir
        cases = [
            ({"filename": d + "/missing"},
             "Could not open '%s/missing': No such file or directory" % d),
            ({"filename": d}, "Could not open '%s': Is a directory" % d),
            ({}, "Parameter 'filename' is missing"),
            ({"filename": ""}, "The 'file' block driver requires a file name"),
        ]
        for opts, desc in cases:
            with self.subTest(opts=opts):
                self.assertEqual(self.add_error(driver="file", **{"node-name": "f"}, **opts), desc)
        self.assertEqual(self.node_list(), [])

    def test_bad_children(self):
        self.assertEqual(self.add_error(driver="raw", **{"node-name": "r"}, file="nope"),
                         "Cannot find device='nope' nor node-name='nope'")
        self.assertEqual(self.add_error(driver="raw", **{"node-name": "r"}),
                         "Parameter 'file' is missing")
        self.assertEqual(
            self.add_error(driver="raw", **{"node-name": "r"},
                           file={"driver": "file", "filename": self.daemon.path("missing")}),
            "Could not open '%s': No such file or directory" % self.daemon.path("missing"))
        self.assertEqual(self.node_list(), [])

    def test_node_names(self):
        self.assertEqual(self.add_error(driver="null-co"),
                         "'node-name' must be specified for the root node")
        for bad in ("1bad", "#block1", "a b", "-x"):
            with self.subTest(name=bad):
                self.assertEqual(self.add_error(driver="null-co", **{"node-name": bad}),
                                 "Invalid node-name: '%s'" % bad)
        self.assertEqual(self.add_error(driver="null-co", **{"node-name": "x" * 32}),
                         "Node name too long")
        for good in ("a", "A.b-c_d", "x" * 31):
            with self.subTest(name=good):
                self.add(driver="null-co", **{"node-name": good})

    def test_bad_driver_and_options(self):
        self.assertEqual(self.add_error(driver="bogus", **{"node-name": "x"}),
                         "Parameter 'driver' does not accept value 'bogus'")
        self.assertEqual(self.add_error(driver="null-co", **{"node-name": "x"}, bogus=1),
                         "Parameter 'bogus' is unexpected")
        self.assertEqual(self.add_error(driver="null-co", **{"node-name": "x",
                                                             "detect-zeroes": "bogus"}),
                         "Parameter 'detect-zeroes' does not accept value 'bogus'")
        path = self.image()
        self.assertEqual(self.add_error(driver="file", **{"node-name": "x"}, filename=path,
                                        locking="bogus"),
                         "Parameter 'locking' does not accept value 'bogus'")
        self.assertEqual(self.node_list(), [])


class NodeOptions(BlockTestCase):
    def test_read_only(self):
        path = self.file_node("ro", **{"read-only": True})
        self.add(driver="raw", **{"node-name": "r"}, file="ro")
        self.add(driver="raw", **{"node-name": "rro"}, file="ro", **{"read-only": True})
        nodes = self.nodes()
        self.assertTrue(nodes["ro"]["ro"])
        self.assertTrue(nodes["rro"]["ro"])
        # A raw node over a read-only child is not itself read-only.
        self.assertFalse(nodes["r"]["ro"])
        for node in ("ro", "rro"):
            self.assertEqual(self.c.error("block_resize", {"node-name": node, "size": 4096})
                             ["desc"], "Image is read-only")
        self.assertEqual(os.path.getsize(path), MiB)
        self.start_nbd()
        self.assertEqual(self.c.error("block-export-add", {
            "type": "nbd", "id": "e", "node-name": "ro", "writable": True})["desc"],
            "Cannot export read-only node as writable")
        self.assertEqual(self.c.error("block-export-add", {
            "type": "nbd", "id": "e", "node-name": "r", "writable": True})["desc"],
            "Block node is read-only")
        self.export("e", "ro")
        self.assertTrue(self.nbd().go("ro").flags & TF_READ_ONLY)

    def test_force_share_needs_read_only(self):
        path = self.image()
        self.assertEqual(self.add_error(driver="file", **{"node-name": "fs"}, filename=path,
                                        **{"force-share": True}),
                         "force-share=on can only be used with read-only images")
        self.add(driver="file", **{"node-name": "fs"}, filename=path,
                 **{"force-share": True, "read-only": True})
        self.assertTrue(self.nodes()["fs"]["ro"])

    def immutable_image(self):
        """An image no one may open for writing, root included."""
        path = self.image("immutable")
        if subprocess.run(["chattr", "+i", path], capture_output=True).returncode != 0:
            self.skipTest("cannot make a file immutable")
        # Cleanups run last-in first-out: this one before the daemon's
        # directory is removed.
        self.addCleanup(subprocess.run, ["chattr", "-i", path], capture_output=True)
        try:
            os.close(os.open(path, os.O_RDWR))
            self.skipTest("an immutable file opens for writing here")
        except OSError:
            pass
        return path

    def test_auto_read_only(self):
        path = self.immutable_image()
        self.assertEqual(self.add_error(driver="file", **{"node-name": "a"}, filename=path),
                         "Could not open '%s': Operation not permitted" % path)
        self.add(driver="file", **{"node-name": "a"}, filename=path, **{"auto-read-only": True})
        self.add(driver="raw", **{"node-name": "r"}, file="a")
        self.start_nbd()
        self.export("ro", "r")
        # Writing needs the file reopened read-write, which fails.
        self.assertEqual(self.c.error("block-export-add", {
            "type": "nbd", "id": "rw", "node-name": "r", "name": "rw", "writable": True})["desc"],
            "Could not open '%s': Operation not permitted" % path)
        # A writable image under auto-read-only is open read-only until a
        # writer comes, read-write while it is there, as in QEMU.
        other = self.image("other")
        self.add(driver="file", **{"node-name": "b"}, filename=other, **{"auto-read-only": True})
        self.assertFalse(self.nodes()["b"]["ro"])
        self.assertEqual(self.open_mode(other), os.O_RDONLY)
        self.export("wb", "b", writable=True)
        self.assertEqual(self.open_mode(other), os.O_RDWR)
        self.c.ok("block-export-del", {"id": "wb"})
        self.c.read_event("BLOCK_EXPORT_DELETED")
        self.assertEqual(self.open_mode(other), os.O_RDONLY)

    def open_mode(self, path):
        """The access mode the daemon has path open with (one descriptor)."""
        pid = self.daemon.pid
        modes = []
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != path:
                    continue
                with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                    flags = int(f.read().split("flags:")[1].split()[0], 8)
            except OSError:
                continue
            modes.append(flags & os.O_ACCMODE)
        self.assertEqual(len(set(modes)), 1, modes)
        return modes[0]

    def test_detect_zeroes(self):
        path = self.image()
        self.assertEqual(self.add_error(driver="file", **{"node-name": "dz"}, filename=path,
                                        **{"detect-zeroes": "unmap"}),
                         "setting detect-zeroes to unmap is not allowed without setting discard "
                         "operation to unmap")
        self.add(driver="file", **{"node-name": "dz"}, filename=path,
                 **{"detect-zeroes": "unmap", "discard": "unmap"})
        self.add(driver="null-co", **{"node-name": "on", "detect-zeroes": "on",
                                      "discard": "ignore"})
        nodes = self.nodes()
        self.assertEqual(nodes["dz"]["detect_zeroes"], "unmap")
        self.assertEqual(nodes["on"]["detect_zeroes"], "on")

    def test_cache_direct(self):
        # O_DIRECT works on most file systems (tmpfs only since Linux 6.6).
        base = "/dev/shm" if os.path.isdir("/dev/shm") else self.daemon.dir
        path = make_image(os.path.join(base, "vstord-test-%d-%d" % (os.getpid(), id(self))))
        self.addCleanup(os.unlink, path)
        try:
            os.close(os.open(path, os.O_RDWR | os.O_DIRECT))
            supported = True
        except OSError as e:
            self.assertEqual(e.errno, errno.EINVAL)
            supported = False
        opts = {"driver": "file", "node-name": "d", "filename": path, "cache": {"direct": True}}
        if supported:
            self.add(**opts)
            self.assertEqual(self.nodes()["d"]["cache"],
                             {"no-flush": False, "direct": True, "writeback": True})
        else:
            self.assertEqual(self.add_error(**opts),
                             "Could not open '%s': Invalid argument" % path)
        self.add(driver="null-co", **{"node-name": "n", "cache": {"direct": True,
                                                                   "no-flush": True}})
        self.assertEqual(self.nodes()["n"]["cache"],
                         {"no-flush": True, "direct": True, "writeback": True})

    def test_aio_native_needs_cache_direct(self):
        path = self.image()
        self.assertEqual(self.add_error(driver="file", **{"node-name": "a"}, filename=path,
                                        aio="native"),
                         "aio=native was specified, but it requires cache.direct=on, which was "
                         "not specified.")
        self.add(driver="file", **{"node-name": "a"}, filename=path, aio="threads")

    def test_locking_values(self):
        path = self.image()
        for i, value in enumerate(("on", "off", "auto")):
            self.add(driver="file", **{"node-name": "l%d" % i}, filename=path, locking=value)


# -- blockdev-del, queries --------------------------------------------------

class BlockdevDel(BlockTestCase):
    def test_unknown(self):
        self.assertEqual(self.c.error("blockdev-del", {"node-name": "nope"})["desc"],
                         "Failed to find node with node-name='nope'")

    def test_child_and_parent(self):
        self.file_node()
        self.add(driver="raw", **{"node-name": "r0"}, file="f0")
        self.assertEqual(self.c.error("blockdev-del", {"node-name": "f0"})["desc"],
                         "Block device f0 is in use")
        self.assertEqual(self.c.ok("blockdev-del", {"node-name": "r0"}), {})
        # A child given by reference stays.
        self.assertEqual(self.names(), ["f0"])
        self.assertEqual(self.c.ok("blockdev-del", {"node-name": "f0"}), {})
        self.assertEqual(self.node_list(), [])
        # The name can be used again.
        self.file_node()

    def test_inline_child_goes_with_its_parent(self):
        path = self.image()
        self.add(driver="raw", **{"node-name": "r0"},
                 file={"driver": "file", "filename": path, "node-name": "c0"})
        self.assertEqual(self.c.error("blockdev-del", {"node-name": "c0"})["desc"],
                         "Node c0 is not owned by the monitor")
        self.add(driver="raw", **{"node-name": "r1"}, file={"driver": "file", "filename": path})
        auto = self.names()[1]
        self.assertEqual(self.c.error("blockdev-del", {"node-name": auto})["desc"],
                         "Node %s is not owned by the monitor" % auto)
        self.assertEqual(self.c.ok("blockdev-del", {"node-name": "r0"}), {})
        self.assertEqual(self.c.ok("blockdev-del", {"node-name": "r1"}), {})
        self.assertEqual(self.node_list(), [])

    def test_exported_node(self):
        self.add(driver="null-co", **{"node-name": "n0"})
        self.start_nbd()
        self.export("e0", "n0")
        self.assertEqual(self.c.error("blockdev-del", {"node-name": "n0"})["desc"],
                         "Node n0 is in use")
        self.assertEqual(self.c.ok("block-export-del", {"id": "e0"}), {})
        self.c.read_event("BLOCK_EXPORT_DELETED")
        self.assertEqual(self.c.ok("blockdev-del", {"node-name": "n0"}), {})


class Queries(BlockTestCase):
    def test_query_block_is_empty(self):
        self.assertEqual(self.c.ok("query-block"), [])
        self.file_node()
        self.start_nbd()
        self.export("e", "f0")
        self.assertEqual(self.c.ok("query-block"), [])

    def test_flat(self):
        # QEMU 7.2's flat only drops backing-image chains from 'image';
        # these drivers have none, so both forms agree.
        path = self.image()
        self.add(driver="raw", **{"node-name": "r0"}, file={"driver": "file", "filename": path})
        self.add(driver="null-co", **{"node-name": "n0"})
        full = self.node_list()
        self.assertEqual(self.node_list(flat=True), full)
        self.assertEqual(self.node_list(flat=False), full)
        self.assertEqual(len(full), 3)

    def test_newest_first(self):
        for name in ("a", "b", "c"):
            self.add(driver="null-co", **{"node-name": name})
        self.assertEqual(self.names(), ["c", "b", "a"])
        self.c.ok("blockdev-del", {"node-name": "b"})
        self.add(driver="null-co", **{"node-name": "b"})
        self.assertEqual(self.names(), ["b", "c", "a"])

    def test_actual_size_follows_the_file(self):
        path = self.file_node()
        with open(path, "r+b") as f:
            f.write(b"x" * 65536)
            f.flush()
            os.fsync(f.fileno())
        blocks = os.stat(path).st_blocks * 512
        self.assertGreater(blocks, 0)
        self.assertEqual(self.nodes()["f0"]["image"]["actual-size"], blocks)


class BlockGraph(BlockTestCase):
    def test_raw_over_file(self):
        self.file_node()
        self.add(driver="raw", **{"node-name": "r0"}, file="f0")
        g = self.c.ok("x-debug-query-block-graph")
        self.assertEqual(g, {
            "edges": [{"name": "file", "parent": 2, "shared-perm": ALL_SHARED, "perm": [],
                       "child": 1}],
            "nodes": [{"name": "r0", "type": "block-driver", "id": 2},
                      {"name": "f0", "type": "block-driver", "id": 1}]})

    def test_fixed_size_raw_does_not_share_resize(self):
        self.file_node()
        self.add(driver="raw", **{"node-name": "w"}, file="f0", size=4096)
        _, edges = self.graph()
        self.assertEqual(edges, {("w", "f0", "file"): ([], NO_RESIZE)})

    def test_exports_appear_as_block_backends(self):
        self.file_node()
        self.add(driver="raw", **{"node-name": "r0"}, file="f0")
        self.start_nbd()
        self.export("ro", "r0")
        nodes, edges = self.graph()
        self.assertEqual(sorted(nodes.values()), [("", "block-backend"), ("f0", "block-driver"),
                                                  ("r0", "block-driver")])
        self.assertEqual(edges, {("", "r0", "root"): (["consistent-read"], NO_RESIZE),
                                 ("r0", "f0", "file"): (["consistent-read"], NO_RESIZE)})
        self.c.ok("block-export-del", {"id": "ro"})
        self.c.read_event("BLOCK_EXPORT_DELETED")
        self.export("rw", "r0", writable=True)
        nodes, edges = self.graph()
        self.assertEqual(edges, {("", "r0", "root"): (["write", "consistent-read"], NO_RESIZE),
                                 ("r0", "f0", "file"): (["write", "consistent-read"],
                                                        NO_RESIZE)})

    def test_empty(self):
        self.assertEqual(self.c.ok("x-debug-query-block-graph"), {"edges": [], "nodes": []})


# -- block_resize -----------------------------------------------------------

class BlockResize(BlockTestCase):
    def resize(self, size, **node):
        return self.c.cmd("block_resize", dict(node, size=size))

    def test_grow_and_shrink_a_file_node(self):
        path = self.file_node()
        self.assertEqual(self.resize(2 * MiB, **{"node-name": "f0"}), {"return": {}})
        self.assertEqual(os.path.getsize(path), 2 * MiB)
        self.assertEqual(self.nodes()["f0"]["image"]["virtual-size"], 2 * MiB)
        self.assertEqual(self.resize(4096, **{"node-name": "f0"}), {"return": {}})
        self.assertEqual(os.path.getsize(path), 4096)
        self.assertEqual(self.nodes()["f0"]["image"]["virtual-size"], 4096)
        # 'device' names devices, never nodes.
        self.assertEqual(self.resize(8192, device="f0")["error"]["desc"],
                         "Cannot find device='f0' nor node-name=''")
        self.assertEqual(os.path.getsize(path), 4096)

    def test_through_raw(self):
        path = self.file_node()
        self.add(driver="raw", **{"node-name": "r0"}, file="f0")
        self.assertEqual(self.resize(3 * MiB, **{"node-name": "r0"}), {"return": {}})
        self.assertEqual(os.path.getsize(path), 3 * MiB)
        # The file node under a plain raw node can be resized directly.
        self.assertEqual(self.resize(MiB, **{"node-name": "f0"}), {"return": {}})
        self.assertEqual(os.path.getsize(path), MiB)
        self.assertEqual(self.nodes()["r0"]["image"]["virtual-size"], MiB)

    def test_fixed_size_raw(self):
        path = self.file_node()
        self.add(driver="raw", **{"node-name": "w"}, file="f0", size=4096)
        self.assertEqual(self.resize(8192, **{"node-name": "w"})["error"]["desc"],
                         "Cannot resize fixed-size raw disks")
        self.assertEqual(self.resize(2 * MiB, **{"node-name": "f0"})["error"]["desc"],
                         "Permission conflict on node 'f0': permissions 'resize' are both "
                         "required by an unnamed block device (uses node 'f0' as 'root' child) "
                         "and unshared by node 'w' (uses node 'f0' as 'file' child).")
        self.assertEqual(os.path.getsize(path), MiB)
        # A plain raw node beside it asks for resize of the same child.
        self.add(driver="raw", **{"node-name": "r"}, file="f0")
        self.assertEqual(self.resize(2 * MiB, **{"node-name": "r"})["error"]["desc"],
                         "Permission conflict on node 'f0': permissions 'resize' are both "
                         "required by node 'r' (uses node 'f0' as 'file' child) and unshared "
                         "by node 'w' (uses node 'f0' as 'file' child).")

    def test_exported_node(self):
        self.file_node()
        self.start_nbd()
        self.export("e", "f0", writable=True)
        self.assertEqual(self.resize(2 * MiB, **{"node-name": "f0"})["error"]["desc"],
                         "Permission conflict on node 'f0': permissions 'resize' are both "
                         "required by an unnamed block device (uses node 'f0' as 'root' child) "
                         "and unshared by an unnamed block device (uses node 'f0' as 'root' "
                         "child).")

    def test_errors(self):
        self.add(driver="null-co", **{"node-name": "n"})
        cases = [
            ({"node-name": "nope"}, 4096, "Cannot find device='' nor node-name='nope'"),
            ({"device": "nope"}, 4096, "Cannot find device='nope' nor node-name=''"),
            ({}, 4096, "Cannot find device='' nor node-name=''"),
            ({"node-name": "n"}, -1, "Parameter 'size' expects a >0 size"),
            ({"node-name": "n"}, 4096, "Image format driver does not support resize"),
        ]
        for node, size, desc in cases:
            with self.subTest(node=node, size=size):
                self.assertEqual(self.resize(size, **node)["error"],
                                 {"class": "GenericError", "desc": desc})


# -- image locking ----------------------------------------------------------

class Locking(BlockTestCase):
    def shared_image(self):
        d = self.daemon.path("shared")
        os.mkdir(d)
        return make_image(os.path.join(d, "img"))

    def second_daemon(self, binary=VSTORD):
        d = Daemon(monitor_args(), binary=binary)
        self.addCleanup(d.stop)
        c = d.qmp()
        self.addCleanup(c.close)
        return d, c

    def hold_lock(self, path, byte):
        """Takes a shared lock on one lock byte, as another QEMU would.
        (A POSIX lock: it conflicts with QEMU's OFD locks all the same.)"""
        fd = os.open(path, os.O_RDWR)
        self.addCleanup(os.close, fd)
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, byte, os.SEEK_SET)

    def test_second_daemon_cannot_resize_an_exported_image(self):
        img = self.shared_image()
        self.add(driver="file", **{"node-name": "f"}, filename=img)
        self.start_nbd()
        self.export("e", "f", writable=True)
        d, c = self.second_daemon()
        c.ok("blockdev-add", {"driver": "file", "node-name": "g", "filename": img})
        self.assertEqual(c.error("block_resize", {"node-name": "g", "size": 2 * MiB})["desc"],
                         'Failed to get "resize" lock')
        c.ok("blockdev-add", {"driver": "file", "node-name": "h", "filename": img,
                              "locking": "on"})
        self.assertEqual(c.error("block_resize", {"node-name": "h", "size": 2 * MiB})["desc"],
                         'Failed to get "resize" lock')
        # Two daemons may export one image writable: exports share writes.
        c.ok("nbd-server-start", {"addr": unix_legacy(d.path("nbd.sock"))})
        c.ok("block-export-add", {"type": "nbd", "id": "e", "node-name": "g",
                                  "writable": True})
        self.assertEqual(os.path.getsize(img), MiB)

    def test_locking_off(self):
        img = self.shared_image()
        self.add(driver="file", **{"node-name": "f"}, filename=img)
        self.start_nbd()
        self.export("e", "f", writable=True)
        d, c = self.second_daemon()
        c.ok("blockdev-add", {"driver": "file", "node-name": "g", "filename": img,
                              "locking": "off"})
        self.assertEqual(c.ok("block_resize", {"node-name": "g", "size": 2 * MiB}), {})
        self.assertEqual(os.path.getsize(img), 2 * MiB)

    def test_write_lock_held_elsewhere(self):
        # Another process (say a VM whose disk does not share writes)
        # holds the "write is not shared" byte.
        img = self.shared_image()
        self.hold_lock(img, LOCK_SHARED_BASE + BIT_WRITE)
        self.add(driver="file", **{"node-name": "f"}, filename=img)
        self.add(driver="file", **{"node-name": "ro"}, filename=img, **{"read-only": True})
        self.start_nbd()
        self.assertEqual(self.c.error("block-export-add", {
            "type": "nbd", "id": "w", "node-name": "f", "writable": True})["desc"],
            'Failed to get "write" lock')
        self.export("r1", "f")
        self.export("r2", "ro")
        self.add(driver="file", **{"node-name": "nolock"}, filename=img, locking="off")
        self.export("w", "nolock", writable=True)

    def test_resize_held_elsewhere(self):
        img = self.shared_image()
        self.hold_lock(img, LOCK_PERM_BASE + BIT_RESIZE)
        self.add(driver="file", **{"node-name": "f"}, filename=img)
        self.start_nbd()
        # Exports do not share resize, and someone holds it.
        self.assertEqual(self.c.error("block-export-add", {
            "type": "nbd", "id": "e", "node-name": "f"})["desc"],
            'Failed to get shared "resize" lock')
        self.assertEqual(self.c.ok("block_resize", {"node-name": "f", "size": 2 * MiB}), {})

    def test_consistent_read_unshared_elsewhere(self):
        img = self.shared_image()
        self.hold_lock(img, LOCK_SHARED_BASE + BIT_CONSISTENT_READ)
        self.add(driver="file", **{"node-name": "f"}, filename=img)
        self.start_nbd()
        self.assertEqual(self.c.error("block-export-add", {
            "type": "nbd", "id": "e", "node-name": "f"})["desc"],
            'Failed to get "consistent read" lock')

    @unittest.skipIf(QSD is None, "qemu-storage-daemon is not installed")
    def test_locks_are_qemus(self):
        # The lock bytes are QEMU's: qemu-storage-daemon sees ours.
        if is_qemu():
            self.skipTest("both daemons are qemu-storage-daemon")
        img = self.shared_image()
        self.add(driver="file", **{"node-name": "f"}, filename=img)
        self.start_nbd()
        self.export("e", "f", writable=True)
        d, c = self.second_daemon(QSD)
        c.ok("blockdev-add", {"driver": "file", "node-name": "g", "filename": img})
        self.assertEqual(c.error("block_resize", {"node-name": "g", "size": 2 * MiB})["desc"],
                         'Failed to get "resize" lock')


# -- dirty bitmaps ----------------------------------------------------------

class DirtyBitmaps(BlockTestCase):
    def setUp(self):
        super().setUp()
        self.file_node()
        self.add(driver="raw", **{"node-name": "r0"}, file="f0")

    def bitmaps(self, node="r0"):
        return self.nodes()[node].get("dirty-bitmaps")

    def bm(self, cmd, node="r0", **args):
        return self.c.cmd("block-dirty-bitmap-" + cmd, dict(args, node=node))

    def sha(self, name, node="r0"):
        return self.c.ok("x-debug-block-dirty-bitmap-sha256", {"node": node, "name": name})

    def test_add_defaults_and_listing(self):
        self.assertNotIn("dirty-bitmaps", self.nodes()["r0"])
        self.assertEqual(self.bm("add", name="b0"), {"return": {}})
        self.assertEqual(self.bm("add", name="b1", granularity=512), {"return": {}})
        self.assertEqual(self.bm("add", name="off", disabled=True), {"return": {}})
        self.assertEqual(self.bitmaps(), [bitmap_entry("off", recording=False),
                                          bitmap_entry("b1", granularity=512),
                                          bitmap_entry("b0")])
        self.assertNotIn("dirty-bitmaps", self.nodes()["f0"])
        self.add(driver="null-co", **{"node-name": "n0"})
        self.assertEqual(self.bm("add", "n0", name="nb"), {"return": {}})
        self.assertEqual(self.bitmaps("n0"), [bitmap_entry("nb")])

    def test_add_errors(self):
        self.bm("add", name="b0")
        cases = [
            ({"name": "b0"}, "Bitmap already exists: b0"),
            ({"name": "g", "granularity": 256}, "Granularity must be power of 2 and at least 512"),
            ({"name": "g", "granularity": 1000},
             "Granularity must be power of 2 and at least 512"),
            ({"name": "g", "granularity": 0}, "Granularity must be power of 2 and at least 512"),
            ({"name": "g", "granularity": -512}, "Parameter 'granularity' expects uint32_t"),
            ({"name": "g", "granularity": 1 << 32}, "Parameter 'granularity' expects uint32_t"),
            ({"name": "p", "persistent": True},
             "Can't store persistent bitmaps to r0: Operation not supported"),
            ({"name": ""}, "Bitmap name cannot be empty"),
            ({"name": "x" * 1024}, "Bitmap name too long: " + "x" * 1024),
        ]
        for args, desc in cases:
            with self.subTest(args=args):
                self.assertEqual(self.bm("add", **args)["error"],
                                 {"class": "GenericError", "desc": desc})
        self.assertEqual(self.bm("add", "f0", name="p", persistent=True)["error"]["desc"],
                         "Can't store persistent bitmaps to f0: Operation not supported")
        self.assertEqual(self.bm("add", "nope", name="b")["error"]["desc"],
                         "Cannot find device='nope' nor node-name='nope'")
        self.assertEqual([b["name"] for b in self.bitmaps()], ["b0"])
        # The limits themselves are fine.
        self.assertEqual(self.bm("add", name="x" * 1023), {"return": {}})
        self.assertEqual(self.bm("add", name="big", granularity=1 << 31), {"return": {}})
        self.assertEqual(self.bitmaps()[0], bitmap_entry("big", granularity=1 << 31))

    def test_unknown_node_and_bitmap(self):
        for cmd in ("remove", "clear", "enable", "disable"):
            with self.subTest(cmd=cmd):
                self.assertEqual(self.bm(cmd, name="zz")["error"]["desc"],
                                 "Dirty bitmap 'zz' not found")
                self.assertEqual(self.bm(cmd, "zz", name="b")["error"]["desc"],
                                 "Node 'zz' not found")
        self.assertEqual(self.c.error("x-debug-block-dirty-bitmap-sha256",
                                      {"node": "r0", "name": "zz"})["desc"],
                         "Dirty bitmap 'zz' not found")
        self.assertEqual(self.c.error("x-debug-block-dirty-bitmap-sha256",
                                      {"node": "zz", "name": "b"})["desc"],
                         "Node 'zz' not found")

    def test_remove_enable_disable_clear(self):
        self.bm("add", name="b0")
        self.bm("add", name="b1")
        self.assertEqual(self.bm("disable", name="b0"), {"return": {}})
        self.assertEqual(self.bm("disable", name="b0"), {"return": {}})
        self.assertFalse(self.bitmaps()[1]["recording"])
        self.assertEqual(self.bm("clear", name="b0"), {"return": {}})
        self.assertEqual(self.bm("enable", name="b0"), {"return": {}})
        self.assertEqual(self.bm("enable", name="b0"), {"return": {}})
        self.assertTrue(self.bitmaps()[1]["recording"])
        self.assertEqual(self.bm("remove", name="b0"), {"return": {}})
        self.assertEqual(self.bm("remove", name="b0")["error"]["desc"],
                         "Dirty bitmap 'b0' not found")
        self.assertEqual([b["name"] for b in self.bitmaps()], ["b1"])
        self.assertEqual(self.bm("remove", name="b1"), {"return": {}})
        self.assertNotIn("dirty-bitmaps", self.nodes()["r0"])
        # A removed name can be added again.
        self.assertEqual(self.bm("add", name="b0", granularity=4096), {"return": {}})
        self.assertEqual(self.bitmaps(), [bitmap_entry("b0", granularity=4096)])

    def test_merge(self):
        self.bm("add", name="dst", disabled=True)
        self.bm("add", name="src")
        self.bm("add", name="fine", granularity=512)
        self.bm("add", "f0", name="fb")
        self.add(driver="null-co", **{"node-name": "small"}, size=65536)
        self.bm("add", "small", name="sb")
        ok = {"return": {}}
        self.assertEqual(self.bm("merge", target="dst", bitmaps=["src"]), ok)
        self.assertEqual(self.bm("merge", target="dst", bitmaps=[
            "src", "fine", {"node": "f0", "name": "fb"}]), ok)
        self.assertEqual(self.bm("merge", target="dst", bitmaps=["dst"]), ok)
        self.assertEqual(self.bm("merge", target="fine", bitmaps=["src"]), ok)
        errors = [
            ({"target": "zz", "bitmaps": ["src"]}, "Dirty bitmap 'zz' not found"),
            ({"target": "dst", "bitmaps": ["zz"]}, "Dirty bitmap 'zz' not found"),
            ({"target": "dst", "bitmaps": ["fb"]}, "Dirty bitmap 'fb' not found"),
            ({"target": "dst", "bitmaps": [{"node": "zz", "name": "fb"}]}, "Node 'zz' not found"),
            ({"target": "dst", "bitmaps": [{"node": "f0", "name": "zz"}]},
             "Dirty bitmap 'zz' not found"),
            ({"target": "dst", "bitmaps": [{"node": "small", "name": "sb"}]},
             "Bitmaps are of different sizes (destination size is 1048576, source size is "
             "65536) and can't be merged"),
        ]
        for args, desc in errors:
            with self.subTest(args=args):
                self.assertEqual(self.bm("merge", **args)["error"]["desc"], desc)
        self.assertEqual(self.bm("merge", "zz", target="dst", bitmaps=["src"])["error"]["desc"],
                         "Node 'zz' not found")

    @unittest.skipIf(is_qemu(), "qemu-storage-daemon 7.2 crashes on an empty list")
    def test_merge_nothing(self):
        self.bm("add", name="dst")
        self.assertEqual(self.bm("merge", target="dst", bitmaps=[]), {"return": {}})
        self.assertEqual(self.bitmaps(), [bitmap_entry("dst")])

    def test_sha256_of_empty_bitmaps(self):
        self.bm("add", name="b64k")
        self.bm("add", name="b512", granularity=512)
        self.bm("add", name="huge", granularity=1 << 31)
        self.assertEqual(self.sha("b64k"),
                         {"sha256": "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc"})
        self.assertEqual(self.sha("b64k")["sha256"], expected_sha256(MiB, 65536))
        self.assertEqual(self.sha("b512")["sha256"], expected_sha256(MiB, 512))
        self.assertEqual(self.sha("huge")["sha256"], expected_sha256(MiB, 1 << 31))
        self.add(driver="null-co", **{"node-name": "n"})
        self.bm("add", "n", name="nb", granularity=4096)
        self.assertEqual(self.sha("nb", "n")["sha256"], expected_sha256(GiB, 4096))

    def test_writes_through_an_export_dirty_the_bitmaps(self):
        self.bm("add", name="b64k")
        self.bm("add", name="b512", granularity=512)
        self.bm("add", name="off", disabled=True)
        self.bm("add", "f0", name="child", granularity=4096)
        self.start_nbd()
        self.export("e", "r0", writable=True)
        n = self.nbd()
        n.go("r0")
        writes = [(0, 1024), (3 * 65536 + 5, 1), (MiB - 512, 512)]
        for offset, length in writes:
            self.assertTrue(n.write(offset, b"x" * length).ok)
        self.assertTrue(n.flush().ok)
        b = {x["name"]: x for x in self.bitmaps()}
        self.assertEqual(b["b64k"]["count"], 3 * 65536)
        self.assertEqual(b["b512"]["count"], 4 * 512)
        self.assertEqual(b["off"]["count"], 0)
        self.assertEqual(self.bitmaps("f0")[0]["count"], 3 * 4096)
        self.assertEqual(self.sha("b64k")["sha256"], expected_sha256(MiB, 65536, writes))
        self.assertEqual(self.sha("b512")["sha256"], expected_sha256(MiB, 512, writes))
        self.assertEqual(self.sha("off")["sha256"], expected_sha256(MiB, 65536))
        self.assertEqual(self.sha("child", "f0")["sha256"], expected_sha256(MiB, 4096, writes))
        # merge and clear act on the bits.
        self.assertEqual(self.bm("merge", target="off", bitmaps=["b512"]), {"return": {}})
        self.assertEqual(self.sha("off")["sha256"], expected_sha256(MiB, 65536, writes))
        self.assertEqual(self.bm("clear", name="b64k"), {"return": {}})
        self.assertEqual(self.sha("b64k")["sha256"], expected_sha256(MiB, 65536))
        self.assertEqual({x["name"]: x["count"] for x in self.bitmaps()},
                         {"b64k": 0, "b512": 2048, "off": 3 * 65536})

    def test_bitmaps_in_use_by_an_export(self):
        self.bm("add", name="live")
        self.bm("add", name="off", disabled=True)
        self.bm("add", name="free")
        self.start_nbd()
        self.export("e", "r0", bitmaps=["off"], writable=True)
        self.export("e2", "r0", name="x", bitmaps=["live"], writable=True)
        b = {x["name"]: x for x in self.bitmaps()}
        self.assertTrue(b["off"]["busy"] and b["live"]["busy"])
        self.assertFalse(b["free"]["busy"])
        for name in ("off", "live"):
            busy = "Bitmap '%s' is currently in use by another operation and cannot be used" % name
            for cmd in ("remove", "clear", "enable", "disable"):
                with self.subTest(cmd=cmd, name=name):
                    self.assertEqual(self.bm(cmd, name=name)["error"]["desc"], busy)
            self.assertEqual(self.bm("merge", target=name, bitmaps=["free"])["error"]["desc"],
                             busy)
            self.assertEqual(self.bm("merge", target="free", bitmaps=[name])["error"]["desc"],
                             busy)
        self.assertEqual(self.c.ok("block-export-del", {"id": "e"}), {})
        self.c.read_event("BLOCK_EXPORT_DELETED")
        self.assertEqual(self.bm("remove", name="off"), {"return": {}})


# -- the NBD server -----------------------------------------------------------

class NbdServer(BlockTestCase):
    def test_start_stop(self):
        self.assertEqual(self.c.error("nbd-server-stop")["desc"], "NBD server not running")
        path = self.start_nbd()
        self.assertTrue(os.path.exists(path))
        self.assertEqual(self.c.error("nbd-server-start", {
            "addr": unix_legacy(self.daemon.path("other.sock"))})["desc"],
            "NBD server already running")
        n = self.nbd()
        exports, final = n.list_exports()
        self.assertEqual(exports, [])
        n.close()
        self.assertEqual(self.c.ok("nbd-server-stop"), {})
        self.assertEqual(self.c.error("nbd-server-stop")["desc"], "NBD server not running")
        # Restarting on the same path works.
        self.start_nbd()
        self.nbd()

    @unittest.skipIf(is_qemu(), "qemu-storage-daemon 7.2 hangs in nbd-server-stop while a "
                                "client is negotiating")
    def test_stop_with_a_client_negotiating(self):
        self.start_nbd()
        n = self.nbd()
        self.assertEqual(n.list_exports()[0], [])
        self.assertEqual(self.c.ok("nbd-server-stop"), {})
        self.assertTrue(n.is_closed_by_peer(), "the client is disconnected")
        self.start_nbd()

    def test_start_errors(self):
        cases = [
            ({"addr": unix_legacy("/nonexistent/dir/nbd.sock")},
             "Failed to bind socket to /nonexistent/dir/nbd.sock: No such file or directory"),
            ({"addr": {"type": "unix", "path": self.daemon.path("flat.sock")}},
             "Parameter 'addr.data' is missing"),
            ({"addr": {"type": "bogus", "data": {}}},
             "Parameter 'type' does not accept value 'bogus'"),
            ({}, "Parameter 'addr' is missing"),
            ({"addr": unix_legacy(self.daemon.path("n.sock")), "max-connections": -1},
             "Parameter 'max-connections' expects uint32_t"),
            ({"addr": unix_legacy(self.daemon.path("n.sock")), "bogus": 1},
             "Parameter 'bogus' is unexpected"),
        ]
        for args, desc in cases:
            with self.subTest(args=args):
                self.assertEqual(self.c.error("nbd-server-start", args)["desc"], desc)
        self.assertEqual(self.c.error("nbd-server-stop")["desc"], "NBD server not running")

    def test_inet_loopback(self):
        self.assertEqual(self.c.ok("nbd-server-start", {"addr": {
            "type": "inet", "data": {"host": "127.0.0.1", "port": "0"}}}), {})
        # Port 0: the kernel picks one; find it from the daemon's sockets.
        port = None
        for _ in range(100):
            port = listening_port(self.daemon.pid)
            if port:
                break
            time.sleep(0.05)
        self.assertIsNotNone(port, "no listening TCP socket")
        n = NBDClient.inet("127.0.0.1", port)
        self.addCleanup(n.close)
        n.handshake()
        self.assertEqual(n.list_exports()[0], [])

    def test_max_connections(self):
        self.add(driver="null-co", **{"node-name": "n0"})
        self.start_nbd(**{"max-connections": 2})
        self.export("e", "n0")
        a = self.nbd()
        self.nbd()
        # The third waits: no greeting while two are connected.
        s = socket.socket(socket.AF_UNIX)
        self.addCleanup(s.close)
        s.connect(self.daemon.path("nbd.sock"))
        s.settimeout(0.5)
        with self.assertRaises(socket.timeout):
            s.recv(1)
        a.close()
        s.settimeout(5)
        self.assertEqual(s.recv(8), b"NBDMAGIC")

    @unittest.skipIf(is_qemu(), "qemu-storage-daemon 7.2 has no handshake-max-seconds")
    def test_handshake_max_seconds(self):
        self.start_nbd(**{"handshake-max-seconds": 1})
        s = socket.socket(socket.AF_UNIX)
        self.addCleanup(s.close)
        s.connect(self.daemon.path("nbd.sock"))
        s.settimeout(10)
        start = time.monotonic()
        data = b""
        for _ in range(100):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        self.assertTrue(data.startswith(b"NBDMAGIC"), data)
        self.assertLess(time.monotonic() - start, 5, "a silent client is dropped after 1 s")

    @unittest.skipIf(is_qemu(), "vstord's default limit; qemu-storage-daemon 7.2 has none")
    def test_default_limits(self):
        # vstord: max-connections defaults to 100.
        self.start_nbd()
        socks = []
        self.addCleanup(lambda: [x.close() for x in socks])
        for _ in range(100):
            s = socket.socket(socket.AF_UNIX)
            socks.append(s)
            s.settimeout(5)
            s.connect(self.daemon.path("nbd.sock"))
            self.assertEqual(s.recv(8), b"NBDMAGIC")
        extra = socket.socket(socket.AF_UNIX)
        socks.append(extra)
        extra.connect(self.daemon.path("nbd.sock"))
        extra.settimeout(0.5)
        try:
            got = extra.recv(8)
        except socket.timeout:
            got = None
        self.assertIn(got, (None, b""), "the 101st client is not served")

    @unittest.skipIf(is_qemu(), "qemu-storage-daemon 7.2 refuses the option")
    def test_default_handshake_limit_is_ten_seconds(self):
        # Accepted explicitly with the default value; values are uint32.
        self.start_nbd(**{"handshake-max-seconds": 10})
        self.c.ok("nbd-server-stop")
        self.assertEqual(self.c.error("nbd-server-start", {
            "addr": unix_legacy(self.daemon.path("x.sock")), "handshake-max-seconds": -1})["desc"],
            "Parameter 'handshake-max-seconds' expects uint32_t")

    @unittest.skipUnless(is_qemu(), "vstord has handshake-max-seconds")
    def test_qemu_has_no_handshake_limit(self):
        self.assertEqual(self.c.error("nbd-server-start", {
            "addr": unix_legacy(self.daemon.path("n.sock")), "handshake-max-seconds": 5})["desc"],
            "Parameter 'handshake-max-seconds' is unexpected")

    def test_tls_creds(self):
        desc = self.c.error("nbd-server-start", {
            "addr": unix_legacy(self.daemon.path("n.sock")), "tls-creds": "nope"})["desc"]
        if is_qemu():
            self.assertEqual(desc, "No TLS credentials with id 'nope'")
        else:
            # vstord refuses TLS on the NBD server until it supports it.
            self.assertIn("TLS", desc)
        self.assertEqual(self.c.error("nbd-server-stop")["desc"], "NBD server not running")


def listening_port(pid):
    """The port of a TCP socket of process pid listening on 127.0.0.1."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and inode in inodes and local.startswith("0100007F:"):
                return int(local.split(":")[1], 16)
    return None


# -- exports ------------------------------------------------------------------

class Exports(BlockTestCase):
    def setUp(self):
        super().setUp()
        self.file_node()
        self.add(driver="raw", **{"node-name": "r0"}, file="f0")
        self.add(driver="null-co", **{"node-name": "n0"}, size=65536)

    def entry(self, id, node, type="nbd"):
        return {"node-name": node, "shutting-down": False, "type": type, "id": id}

    def test_needs_the_server(self):
        self.assertEqual(self.c.error("block-export-add", {
            "type": "nbd", "id": "e0", "node-name": "r0"})["desc"], "NBD server not running")
        self.assertEqual(self.c.error("nbd-server-add", {"device": "r0"})["desc"],
                         "NBD server not running")
        self.assertEqual(self.exports(), [])

    def test_add_query_delete(self):
        self.start_nbd()
        self.assertEqual(self.exports(), [])
        self.export("e0", "r0")
        self.export("e1", "r0", name="other", description="hello", writable=True)
        self.export("e2", "n0", name="")
        self.assertEqual(self.exports(), [self.entry("e2", "n0"), self.entry("e1", "r0"),
                                          self.entry("e0", "r0")])
        n = self.nbd()
        exports, _ = n.list_exports()
        self.assertEqual(sorted(exports), [("", ""), ("other", "hello"), ("r0", "")])
        info = n.go("other", [INFO_DESCRIPTION])
        self.assertEqual((info.size, info.description), (MiB, "hello"))
        self.assertFalse(info.flags & TF_READ_ONLY)
        self.assertEqual(self.c.ok("block-export-del", {"id": "e0"}), {})
        ev = self.c.read_event("BLOCK_EXPORT_DELETED")
        self.assertEqual(ev["data"], {"id": "e0"})
        self.assertEqual(self.exports(), [self.entry("e2", "n0"), self.entry("e1", "r0")])
        # The id and the name can be used again.
        self.export("e0", "n0", name="r0")
        self.assertEqual(self.exports()[0], self.entry("e0", "n0"))

    def test_raw_window_data_lands_in_place(self):
        path = self.daemon.path("img")
        with open(path, "r+b") as f:
            f.write(bytes(range(256)) * 64)
        self.add(driver="raw", **{"node-name": "w"}, offset=4096, size=8192, file="f0")
        self.start_nbd()
        self.export("e", "w", writable=True)
        n = self.nbd()
        self.assertEqual(n.go("w").size, 8192)
        r = n.read(0, 16)
        self.assertTrue(r.ok)
        self.assertEqual(r.data, bytes(range(16)))
        self.assertTrue(n.write(8192 - 5, b"hello").ok)
        self.assertTrue(n.flush().ok)
        with open(path, "rb") as f:
            f.seek(4096 + 8192 - 5)
            self.assertEqual(f.read(10), b"hello" + bytes(range(5)))
        self.assertFalse(n.write(8192 - 4, b"HELLO").ok, "no write past the window")
        with open(path, "rb") as f:
            f.seek(4096 + 8192 - 5)
            self.assertEqual(f.read(10), b"hello" + bytes(range(5)))

    def test_read_only_by_default(self):
        self.start_nbd()
        self.export("e0", "r0")
        n = self.nbd()
        info = n.go("r0")
        self.assertTrue(info.flags & TF_READ_ONLY)

    def test_event_precedes_the_reply_without_clients(self):
        self.start_nbd()
        self.export("e0", "r0")
        self.c.send_raw(b'{"execute": "block-export-del", "arguments": {"id": "e0"}, "id": 1}\n')
        ev = self.c.read_msg()
        self.assertEqual((ev.get("event"), ev.get("data")), ("BLOCK_EXPORT_DELETED", {"id": "e0"}))
        self.assertEqual(self.c.read_msg(), {"return": {}, "id": 1})

    def test_errors(self):
        self.start_nbd()
        self.export("e0", "r0")
        self.c.ok("block-dirty-bitmap-add", {"node": "n0", "name": "nb"})
        self.c.ok("block-dirty-bitmap-add", {"node": "f0", "name": "fb"})
        long = "x" * 4097
        cases = [
            ({"id": "e0", "node-name": "n0", "name": "x"}, "Block export id 'e0' is already in use"),
            ({"id": "e1", "node-name": "r0"}, "NBD server already has export named 'r0'"),
            ({"id": "e1", "node-name": "nope"}, "Cannot find device='' nor node-name='nope'"),
            ({"id": "bad id", "node-name": "n0"}, "Invalid block export id"),
            ({"id": "", "node-name": "n0"}, "Invalid block export id"),
            ({"id": "a/b", "node-name": "n0"}, "Invalid block export id"),
            ({"id": "1x", "node-name": "n0"}, "Invalid block export id"),
            ({"id": "e1", "node-name": "n0", "bitmaps": ["zz"]}, "Bitmap 'zz' is not found"),
            ({"id": "e1", "node-name": "r0", "name": "x", "bitmaps": ["fb"]},
             "Bitmap 'fb' is not found"),
            ({"id": "e1", "node-name": "n0", "bitmaps": ["nb"]},
             "Enabled bitmap 'nb' incompatible with readonly export"),
            ({"id": "e1", "node-name": "r0", "name": "x",
              "bitmaps": [{"node": "zz", "name": "fb"}]}, "Node 'zz' not found"),
            ({"id": "e1", "node-name": "r0", "name": "x",
              "bitmaps": [{"node": "f0", "name": "zz"}]}, "Dirty bitmap 'zz' not found"),
            ({"id": "e1", "node-name": "n0", "name": long}, "export name '%s' too long" % long),
            ({"id": "e1", "node-name": "n0", "name": "x", "description": long},
             "description '%s' too long" % long),
            ({"id": "e1", "node-name": "n0", "name": "x", "iothread": "nope"},
             'iothread "nope" not found'),
            ({"id": "e1", "node-name": "n0", "name": "x", "bogus": 1},
             "Parameter 'bogus' is unexpected"),
        ]
        for args, desc in cases:
            with self.subTest(args=args):
                args = dict(args, type="nbd")
                self.assertEqual(self.c.error("block-export-add", args)["desc"], desc)
        self.assertEqual(self.exports(), [self.entry("e0", "r0")])
        self.assertEqual(self.c.error("block-export-add", {
            "type": "bogus", "id": "e1", "node-name": "n0"})["desc"],
            "Parameter 'type' does not accept value 'bogus'")

    def test_duplicate_id_across_export_types(self):
        self.start_nbd()
        self.export("e0", "r0")
        self.assertEqual(self.c.error("block-export-add", {
            "type": "fuse", "id": "e0", "node-name": "n0",
            "mountpoint": self.daemon.path("img")})["desc"],
            "Block export id 'e0' is already in use")
        self.assertEqual(self.c.error("block-export-add", {
            "type": "vhost-user-blk", "id": "e0", "node-name": "n0",
            "addr": {"type": "unix", "path": self.daemon.path("vu.sock")}})["desc"],
            "Block export id 'e0' is already in use")
        # nbd-server-add's id is the export name.
        self.assertEqual(self.c.error("nbd-server-add", {"device": "n0", "name": "e0"})["desc"],
                         "Block export id 'e0' is already in use")
        self.assertEqual(self.c.ok("nbd-server-add", {"device": "n0"}), {})
        self.assertEqual(self.c.error("block-export-add", {
            "type": "nbd", "id": "n0", "node-name": "n0", "name": "y"})["desc"],
            "Block export id 'n0' is already in use")
        self.assertEqual(self.exports(), [self.entry("n0", "n0"), self.entry("e0", "r0")])

    def test_bitmaps_and_allocation_depth(self):
        self.c.ok("block-dirty-bitmap-add", {"node": "r0", "name": "b0"})
        self.c.ok("block-dirty-bitmap-add", {"node": "r0", "name": "dis", "disabled": True})
        self.c.ok("block-dirty-bitmap-add", {"node": "r0", "name": "dis2", "disabled": True})
        self.c.ok("block-dirty-bitmap-add", {"node": "f0", "name": "fb", "disabled": True})
        self.start_nbd()
        self.export("e0", "r0", writable=True, bitmaps=["b0", "dis"],
                    **{"allocation-depth": True})
        # A bitmap serves one export at a time.
        self.assertEqual(self.c.error("block-export-add", {
            "type": "nbd", "id": "e1", "node-name": "r0", "name": "ro", "bitmaps": ["dis"]})
            ["desc"], "Bitmap 'dis' is currently in use by another operation and cannot be used")
        self.export("e1", "r0", name="ro", bitmaps=["dis2", {"node": "f0", "name": "fb"}])
        self.export("e2", "r0", name="plain", bitmaps=[])
        n = self.nbd()
        ctx, final = n.list_meta_context("r0")
        self.assertEqual(sorted(ctx), ["base:allocation", "qemu:allocation-depth",
                                       "qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:dis"])
        ctx, final = n.list_meta_context("ro")
        self.assertEqual(sorted(ctx), ["base:allocation", "qemu:dirty-bitmap:dis2",
                                       "qemu:dirty-bitmap:fb"])
        ctx, final = n.list_meta_context("plain")
        self.assertEqual(sorted(ctx), ["base:allocation"])

    def test_nbd_server_add_and_remove(self):
        self.start_nbd()
        self.c.ok("block-dirty-bitmap-add", {"node": "r0", "name": "b0", "disabled": True})
        self.assertEqual(self.c.ok("nbd-server-add", {"device": "r0"}), {})
        self.assertEqual(self.c.ok("nbd-server-add", {
            "device": "n0", "name": "other", "description": "d", "writable": True}), {})
        self.assertEqual(self.c.ok("nbd-server-add", {"device": "r0", "name": "bm",
                                                      "bitmap": "b0"}), {})
        self.assertEqual(self.exports(), [self.entry("bm", "r0"), self.entry("other", "n0"),
                                          self.entry("r0", "r0")])
        self.assertEqual(self.c.error("nbd-server-add", {"device": "r0"})["desc"],
                         "Block export id 'r0' is already in use")
        self.assertEqual(self.c.error("nbd-server-add", {"device": "r0", "name": "bm"})["desc"],
                         "Block export id 'bm' is already in use")
        self.assertEqual(self.c.error("nbd-server-add", {"device": "zz"})["desc"],
                         "Cannot find device='zz' nor node-name='zz'")
        self.assertEqual(self.c.error("nbd-server-add", {"device": "n0", "name": "x",
                                                         "bitmap": "zz"})["desc"],
                         "Bitmap 'zz' is not found")
        n = self.nbd()
        self.assertEqual(sorted(n.list_exports()[0]),
                         [("bm", ""), ("other", "d"), ("r0", "")])
        self.assertEqual(sorted(n.list_meta_context("bm")[0]),
                         ["base:allocation", "qemu:dirty-bitmap:b0"])
        self.assertEqual(self.c.ok("nbd-server-remove", {"name": "r0"}), {})
        self.assertEqual(self.c.read_event("BLOCK_EXPORT_DELETED")["data"], {"id": "r0"})
        self.assertEqual(self.c.ok("nbd-server-remove", {"name": "other", "mode": "hard"}), {})
        self.assertEqual(self.c.read_event("BLOCK_EXPORT_DELETED")["data"], {"id": "other"})
        self.assertEqual(self.c.error("nbd-server-remove", {"name": "zz"})["desc"],
                         "Export 'zz' is not found")
        self.assertEqual(self.c.error("nbd-server-remove", {"name": "bm", "mode": "bogus"})
                         ["desc"], "Parameter 'mode' does not accept value 'bogus'")
        self.assertEqual(self.exports(), [self.entry("bm", "r0")])

    def test_nbd_server_remove_takes_the_export_id(self):
        self.start_nbd()
        self.export("e1", "r0", name="other")
        self.assertEqual(self.c.error("nbd-server-remove", {"name": "other"})["desc"],
                         "Export 'other' is not found")
        self.assertEqual(self.c.ok("nbd-server-remove", {"name": "e1"}), {})
        self.c.read_event("BLOCK_EXPORT_DELETED")
        self.assertEqual(self.exports(), [])

    def test_delete_errors(self):
        self.assertEqual(self.c.error("block-export-del", {"id": "zz"})["desc"],
                         "Export 'zz' is not found")
        self.start_nbd()
        self.export("e0", "r0")
        self.assertEqual(self.c.error("block-export-del", {"id": "e0", "mode": "bogus"})["desc"],
                         "Parameter 'mode' does not accept value 'bogus'")
        self.assertEqual(self.c.ok("block-export-del", {"id": "e0", "mode": "safe"}), {})
        self.c.read_event("BLOCK_EXPORT_DELETED")
        self.assertEqual(self.c.error("block-export-del", {"id": "e0"})["desc"],
                         "Export 'e0' is not found")

    def test_safe_and_hard_with_a_client(self):
        self.start_nbd()
        self.export("e0", "r0", writable=True)
        n = self.nbd()
        n.go("r0")
        for args in ({"id": "e0"}, {"id": "e0", "mode": "safe"}):
            self.assertEqual(self.c.error("block-export-del", args)["desc"],
                             "export 'e0' still in use")
        self.assertEqual(self.exports(), [self.entry("e0", "r0")])
        self.assertEqual(self.c.error("blockdev-del", {"node-name": "r0"})["desc"],
                         "Node r0 is in use")
        self.assertEqual(self.c.ok("block-export-del", {"id": "e0", "mode": "hard"}), {})
        self.assertEqual(self.c.read_event("BLOCK_EXPORT_DELETED")["data"], {"id": "e0"})
        self.assertEqual(self.exports(), [])
        self.assertTrue(n.is_closed_by_peer(), "the client is disconnected")
        # The id is free again.
        self.export("e0", "r0")
        self.assertEqual(self.exports(), [self.entry("e0", "r0")])

    def test_a_client_that_only_looks_does_not_hold_the_export(self):
        self.start_nbd()
        self.export("e0", "r0")
        n = self.nbd()
        self.assertEqual(n.list_exports()[0], [("r0", "")])
        self.assertEqual(self.c.ok("block-export-del", {"id": "e0"}), {})
        self.c.read_event("BLOCK_EXPORT_DELETED")

    def test_server_stop_deletes_nbd_exports(self):
        self.start_nbd()
        self.export("e0", "r0")
        self.export("e1", "n0")
        self.c.send_raw(b'{"execute": "nbd-server-stop", "id": "stop"}\n')
        msgs = [self.c.read_msg() for _ in range(3)]
        self.assertEqual([(m.get("event"), m.get("data")) for m in msgs[:2]],
                         [("BLOCK_EXPORT_DELETED", {"id": "e0"}),
                          ("BLOCK_EXPORT_DELETED", {"id": "e1"})])
        self.assertEqual(msgs[2], {"return": {}, "id": "stop"})
        self.assertEqual(self.exports(), [])
        self.assertEqual(self.c.error("block-export-add", {
            "type": "nbd", "id": "e0", "node-name": "r0"})["desc"], "NBD server not running")
        # Deleted nodes are free.
        self.assertEqual(self.c.ok("blockdev-del", {"node-name": "n0"}), {})


# -- the command line -----------------------------------------------------------

def run_daemon(args, timeout=20):
    p = subprocess.run([VSTORD] + args, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    return p.returncode, p.stderr.decode(errors="replace")


class CommandLine(unittest.TestCase):
    def setUp(self):
        t = tempfile.TemporaryDirectory(prefix="vstord-test-")
        self.addCleanup(t.cleanup)
        self.dir = t.name
        self.img = make_image(os.path.join(self.dir, "img"))

    def start(self, extra):
        d = Daemon(monitor_args() + extra)
        self.addCleanup(d.stop)
        c = d.qmp()
        self.addCleanup(c.close)
        return d, c

    def test_blockdev_nbd_server_export(self):
        d, c = self.start([
            "--blockdev", "driver=file,node-name=f0,filename=" + self.img,
            "--blockdev", "driver=raw,node-name=r0,file=f0",
            "--blockdev", '{"driver": "null-co", "node-name": "n0", "size": 65536}',
            "--nbd-server", "addr.type=unix,addr.path=@DIR@/nbd.sock,max-connections=4",
            "--export", "type=nbd,id=e0,node-name=r0,name=disk,writable=on,description=hi",
            "--export", "nbd,id=e1,node-name=n0",
        ])
        self.assertEqual([n["node-name"] for n in c.ok("query-named-block-nodes")],
                         ["n0", "r0", "f0"])
        self.assertEqual(c.ok("query-block-exports"), [
            {"node-name": "n0", "shutting-down": False, "type": "nbd", "id": "e1"},
            {"node-name": "r0", "shutting-down": False, "type": "nbd", "id": "e0"}])
        n = NBDClient.unix(d.path("nbd.sock"))
        self.addCleanup(n.close)
        n.handshake()
        self.assertEqual(sorted(n.list_exports()[0]), [("disk", "hi"), ("n0", "")])
        info = n.go("disk")
        self.assertFalse(info.flags & TF_READ_ONLY)
        self.assertTrue(n.write(0, b"hello").ok)
        self.assertTrue(n.flush().ok)
        with open(self.img, "rb") as f:
            self.assertEqual(f.read(5), b"hello")
        self.assertEqual(c.error("nbd-server-start", {
            "addr": unix_legacy(d.path("other.sock"))})["desc"], "NBD server already running")
        self.assertEqual(c.ok("nbd-server-stop"), {})
        self.assertEqual(c.ok("query-block-exports"), [])

    def test_bad_command_lines(self):
        name = os.path.basename(VSTORD)
        d, img = self.dir, self.img
        sock = "addr.type=unix,addr.path=%s/nbd.sock" % d
        null = ["--blockdev", "driver=null-co,node-name=n0"]
        cases = [
            (["--blockdev", "driver=file,node-name=f0,filename=%s/missing" % d],
             "Could not open '%s/missing': No such file or directory" % d),
            (["--blockdev", "driver=file,node-name=f0,filename=" + img,
              "--blockdev", "driver=file,node-name=f0,filename=" + img],
             "Duplicate nodes with node-name='f0'"),
            (["--blockdev", "driver=raw,node-name=r0,file=nope"],
             "Cannot find device='nope' nor node-name='nope'"),
            (["--blockdev", "driver=null-co"], "'node-name' must be specified for the root node"),
            (["--blockdev", "driver=file,node-name=f0,filename=%s,force-share=on" % img],
             "force-share=on can only be used with read-only images"),
            (["--blockdev", "driver=file,node-name=f0,filename=%s,detect-zeroes=unmap" % img],
             "setting detect-zeroes to unmap is not allowed without setting discard operation "
             "to unmap"),
            (["--blockdev", "driver=raw,node-name=r0,file.driver=file,file.filename=%s,size=1000"
              % img], "Specified size is not multiple of 512"),
            (null + ["--export", "type=nbd,id=e0,node-name=n0"], "NBD server not running"),
            (["--nbd-server", sock, "--export", "type=nbd,id=e0,node-name=nope"],
             "Cannot find device='' nor node-name='nope'"),
            (null + ["--nbd-server", sock, "--export", "type=nbd,id=e0,node-name=n0",
                     "--export", "type=nbd,id=e0,node-name=n0,name=x"],
             "Block export id 'e0' is already in use"),
            (null + ["--nbd-server", sock, "--export", "type=nbd,id=e0,node-name=n0,bitmaps.0=zz"],
             "Bitmap 'zz' is not found"),
            (["--nbd-server", sock, "--nbd-server", sock.replace("nbd.sock", "nbd2.sock")],
             "NBD server already running"),
            (["--nbd-server", "addr.type=unix,addr.path=/nonexistent/x.sock"],
             "Failed to bind socket to /nonexistent/x.sock: No such file or directory"),
            (["--nbd-server", sock + ",max-connections=abc"],
             "Parameter 'max-connections' expects integer"),
            (["--export", "type=nbd,id=e0"], "Parameter 'node-name' is missing"),
            (["--export", "type=nbd,node-name=n0"], "Parameter 'id' is missing"),
        ]
        for args, desc in cases:
            with self.subTest(args=args):
                rc, err = run_daemon(args)
                self.assertEqual((rc, err), (1, "%s: %s %s: %s\n" % (name, args[-2], args[-1],
                                                                      desc)))

    def test_handshake_max_seconds_option(self):
        sock = "addr.type=unix,addr.path=%s/nbd.sock,handshake-max-seconds=5" % self.dir
        if is_qemu():
            rc, err = run_daemon(["--nbd-server", sock])
            self.assertEqual((rc, err), (1, "%s: --nbd-server %s: Parameter "
                                            "'handshake-max-seconds' is unexpected\n"
                                         % (os.path.basename(VSTORD), sock)))
        else:
            d, c = self.start(["--nbd-server", sock])
            self.assertEqual(c.ok("nbd-server-stop"), {})


if __name__ == "__main__":
    unittest.main()
