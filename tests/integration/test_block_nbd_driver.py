"""The nbd block driver: a remote NBD export as a block node.

The daemon under test opens a node with driver=nbd on an upstream NBD
server and re-exports it over its own NBD server, where real clients
(nbdcopy, nbdinfo, libnbd) use it.  Upstream servers are nbdkit's memory
plugin (started here, stopped by its PID) and a second daemon exporting a
raw image file, so that what was written through the re-export can be
read back from the file itself.

Covered: unix and inet (loopback) servers, the node's drv and filename,
connection errors with and without open-timeout, an upstream that dies
with and without reconnect-delay, yank of the node, x-dirty-bitmap, and
blockdev-del (also while a request waits for a reconnect).

Every socket is in a private temporary directory, every wait is bounded
and every NBD request made here has a deadline.  qemu-storage-daemon 7.2
has no yank commands, so the yank tests are skipped against it.
"""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import unittest

from daemon import Daemon, free_port, monitor_args, wait_for
from nbd_tools import (KiB, MiB, NbdTestCase, is_qemu, make_image, merge, nbd, needs,
                       needs_libnbd, pattern, run, sha256_file)

SIZE = 8 * MiB  # the upstream image files
KIT_SIZE = 64 * MiB  # nbdkit's memory disk
GRAN = 64 * KiB


class Nbdkit:
    """nbdkit's memory plugin on a unix socket, in the foreground, stopped
    by its PID.  nbdkit does not leave on SIGTERM while a client is
    connected, and leaves its socket behind: it is stopped with SIGKILL
    (the upstream dies) and a stale socket is removed before a restart."""

    def __init__(self, sock, size="64M"):
        self.sock = sock
        self.size = size
        self.pidfile = sock + ".pid"
        self.proc = None

    def start(self):
        for p in (self.sock, self.pidfile):
            if os.path.exists(p):
                os.unlink(p)
        self.proc = subprocess.Popen(
            ["nbdkit", "-f", "--exit-with-parent", "-P", self.pidfile, "-U", self.sock,
             "memory", self.size],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # The pidfile is written once the socket listens.
        wait_for(lambda: (os.path.exists(self.pidfile) and os.path.getsize(self.pidfile) > 0)
                 or self.proc.poll() is not None, timeout=10, what="nbdkit")
        if self.proc.poll() is not None:
            raise RuntimeError("nbdkit exited: %s" % self.proc.stderr.read().decode())
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.proc:
            self.proc.stderr.close()

    stop = kill


def bounded(h, start, timeout=10.0):
    """Runs one libnbd aio command (start(h) returns its cookie) with a
    deadline; raises nbd.Error when it fails, TimeoutError when it does
    not finish."""
    cookie = start(h)
    deadline = time.monotonic() + timeout
    while not h.aio_command_completed(cookie):
        if time.monotonic() > deadline:
            raise TimeoutError("NBD command still running after %gs" % timeout)
        if h.aio_is_dead() or h.aio_is_closed():
            raise AssertionError("the connection to the re-export was lost")
        h.poll(100)
    return True


def pread(h, length, offset, timeout=10.0):
    buf = nbd.Buffer(length)
    bounded(h, lambda h: h.aio_pread(buf, offset), timeout)
    return buf.to_bytearray()


def pwrite(h, data, offset, timeout=10.0):
    buf = nbd.Buffer.from_bytearray(bytearray(data))
    bounded(h, lambda h: h.aio_pwrite(buf, offset), timeout)


class DriverTestCase(NbdTestCase):
    """A daemon under test (self.daemon, self.q) with an NBD server on a
    unix socket, and helpers for upstream servers."""

    def setUp(self):
        self.dir = self.tmpdir()
        self.daemon = Daemon(monitor_args() +
                             ["--nbd-server", "addr.type=unix,addr.path=@DIR@/nbd.sock"])
        self.addCleanup(self.daemon.stop)
        self.sock = self.daemon.path("nbd.sock")
        self.q = self.qmp()

    # -- upstream servers -------------------------------------------------
    def nbdkit(self, name="kit.sock", start=True):
        kit = Nbdkit(os.path.join(self.dir, name))
        self.addCleanup(kit.stop)
        return kit.start() if start else kit

    def upstream(self, image, inet_port=None, export="up", writable=True):
        """A second daemon exporting image (raw node r0) as export, on a
        unix socket in its directory or on 127.0.0.1:inet_port."""
        if inet_port is None:
            addr = "addr.type=unix,addr.path=@DIR@/up.sock"
        else:
            addr = "addr.type=inet,addr.host=127.0.0.1,addr.port=%d" % inet_port
        d = Daemon(monitor_args() + [
            "--blockdev", "driver=file,node-name=f0,filename=" + image,
            "--blockdev", "driver=raw,node-name=r0,file=f0",
            "--nbd-server", addr,
            "--export", "type=nbd,id=e0,node-name=r0,name=%s,writable=%s" % (
                export, "on" if writable else "off"),
        ])
        self.addCleanup(d.stop)
        d.sock = d.path("up.sock")
        return d

    # -- the node and its re-export -----------------------------------------
    def add_nbd(self, server, node="n0", export=None, **kw):
        args = {"driver": "nbd", "node-name": node, "server": server}
        if export is not None:
            args["export"] = export
        args.update(kw)
        return self.q.ok("blockdev-add", args)

    def reexport(self, node="n0", name="re", writable=True):
        self.add_export(self.q, "re-" + node, node, name, writable=writable)
        return self.uri(name)

    def connect(self, uri):
        h = nbd.NBD()
        h.connect_uri(uri)
        self.addCleanup(self.disconnect, h)
        return h

    @staticmethod
    def disconnect(h):
        try:
            if h.aio_is_ready():
                h.shutdown()
        except nbd.Error:
            pass

    def node_info(self, node="n0"):
        for n in self.q.ok("query-named-block-nodes"):
            if n["node-name"] == node:
                return n
        return None

    def assertAlive(self):
        """The daemon is still running and its monitor answers; if not,
        fails with the head of its stderr (where a sanitizer names the
        fault)."""
        try:
            version = self.q.ok("query-version")
        except (EOFError, OSError) as e:
            try:
                self.daemon.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            self.fail("the daemon's monitor is gone (%s), exit status %s:\n%s" % (
                e, self.daemon.proc.poll(), self.daemon.read_stderr()[:3000]))
        self.assertIn("qemu", version)
        self.assertIsNone(self.daemon.proc.poll())

    @staticmethod
    def unix(path):
        return {"type": "unix", "path": path}

    def nbdcopy(self, *args):
        run(["nbdcopy"] + list(args), timeout=30)

    def round_trip(self, uri, upstream_file, seed):
        """nbdcopy a file into the re-export and back out; both copies and
        the upstream's image file are the same bytes."""
        src = make_image(os.path.join(self.dir, "src-%d" % seed), SIZE,
                         [(0, pattern(seed, SIZE // 2)),
                          (SIZE // 2 + 4096, os.urandom(SIZE // 4))])
        out = os.path.join(self.dir, "out-%d" % seed)
        self.nbdcopy(src, uri)
        self.nbdcopy(uri, out)
        want = sha256_file(src)
        self.assertEqual(sha256_file(out), want)
        self.assertEqual(sha256_file(upstream_file), want)


# -- data through the node ----------------------------------------------------
@needs("nbdcopy")
class Transport(DriverTestCase):
    def test_unix_round_trip_and_node_info(self):
        img = make_image(os.path.join(self.dir, "up.img"), SIZE)
        up = self.upstream(img)
        self.add_nbd(self.unix(up.sock), export="up")
        uri = self.reexport()
        self.round_trip(uri, img, seed=1)

        info = self.node_info()
        want = "nbd+unix:///up?socket=" + up.sock
        self.assertEqual(info["drv"], "nbd")
        self.assertEqual(info["file"], want)
        self.assertEqual(info["image"]["filename"], want)
        self.assertEqual(info["image"]["format"], "nbd")
        self.assertEqual(info["image"]["virtual-size"], SIZE)
        self.assertFalse(info["ro"])

    def test_fd_address_by_name_in_a_monitor(self):
        """server type 'fd' in blockdev-add names a connected socket passed
        with getfd; a number is refused there."""
        img = make_image(os.path.join(self.dir, "up.img"), SIZE)
        up = self.upstream(img)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(up.sock)
        self.q.ok("getfd", {"fdname": "upstream"}, fds=[s.fileno()])
        s.close()
        err = self.q.error("blockdev-add", {"driver": "nbd", "node-name": "n1",
                                            "server": {"type": "fd", "str": "3"}})
        self.assertEqual(err["desc"], "File descriptor named '3' has not been found")
        self.add_nbd({"type": "fd", "str": "upstream"}, export="up")
        uri = self.reexport()
        self.round_trip(uri, img, seed=3)

    def test_fd_address_by_number_on_the_command_line(self):
        img = make_image(os.path.join(self.dir, "up.img"), SIZE)
        up = self.upstream(img)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(up.sock)
        d = Daemon(monitor_args() + [
            "--blockdev", "driver=nbd,node-name=n0,server.type=fd,server.str=%d,export=up"
            % s.fileno(),
            "--nbd-server", "addr.type=unix,addr.path=@DIR@/nbd.sock",
            "--export", "type=nbd,id=e0,node-name=n0,name=re,writable=on"],
            pass_fds=[s.fileno()])
        self.addCleanup(d.stop)
        s.close()
        out = os.path.join(self.dir, "out")
        self.nbdcopy("nbd+unix:///re?socket=" + d.path("nbd.sock"), out)
        self.assertEqual(sha256_file(out), sha256_file(img))

    def test_inet_round_trip_and_node_info(self):
        img = make_image(os.path.join(self.dir, "up.img"), SIZE)
        port = free_port()
        self.upstream(img, inet_port=port)
        self.add_nbd({"type": "inet", "host": "127.0.0.1", "port": str(port)}, export="up")
        uri = self.reexport()
        self.round_trip(uri, img, seed=2)
        info = self.node_info()
        self.assertEqual(info["drv"], "nbd")
        self.assertEqual(info["file"], "nbd://127.0.0.1:%d/up" % port)

    def test_read_only_node_of_a_read_only_export(self):
        img = make_image(os.path.join(self.dir, "up.img"), SIZE, [(MiB, pattern(3, 64 * KiB))])
        up = self.upstream(img, writable=False)
        # A writable node needs a writable export.
        err = self.q.error("blockdev-add", {"driver": "nbd", "node-name": "n0",
                                            "server": self.unix(up.sock), "export": "up"})
        self.assertEqual(err["class"], "GenericError")
        self.assertIsNone(self.node_info())
        self.add_nbd(self.unix(up.sock), export="up", **{"read-only": True})
        self.assertTrue(self.node_info()["ro"])
        out = os.path.join(self.dir, "out")
        self.nbdcopy(self.reexport(writable=False), out)
        self.assertEqual(sha256_file(out), sha256_file(img))

    @needs("nbdkit", "nbdinfo")
    def test_nbdkit_upstream_without_export_name(self):
        kit = self.nbdkit()
        self.add_nbd(self.unix(kit.sock))
        info = self.node_info()
        self.assertEqual(info["drv"], "nbd")
        self.assertEqual(info["image"]["virtual-size"], KIT_SIZE)
        # No export name: as QEMU's nbd_refresh_filename, no slash.
        self.assertEqual(info["file"], "nbd+unix://?socket=" + kit.sock)
        uri = self.reexport()
        self.assertEqual(self.nbdinfo("--size", uri).stdout.strip(), str(KIT_SIZE).encode())


# -- connecting ---------------------------------------------------------------
@needs("nbdkit")
class Connecting(DriverTestCase):
    def test_absent_unix_server_fails_at_once(self):
        path = os.path.join(self.dir, "absent.sock")
        t = time.monotonic()
        err = self.q.error("blockdev-add", {"driver": "nbd", "node-name": "n0",
                                            "server": self.unix(path)})
        self.assertLess(time.monotonic() - t, 2.0)
        self.assertEqual(err["class"], "GenericError")
        self.assertIn(path, err["desc"])
        self.assertIsNone(self.node_info())
        # The node name stays free.
        kit = self.nbdkit()
        self.add_nbd(self.unix(kit.sock))

    def test_refused_inet_server_fails_at_once(self):
        port = free_port()
        t = time.monotonic()
        err = self.q.error("blockdev-add", {"driver": "nbd", "node-name": "n0", "server": {
            "type": "inet", "host": "127.0.0.1", "port": str(port)}})
        self.assertLess(time.monotonic() - t, 2.0)
        self.assertIn("127.0.0.1:%d" % port, err["desc"])
        self.assertIsNone(self.node_info())

    def test_open_timeout_waits_for_the_server(self):
        kit = self.nbdkit(start=False)
        t = time.monotonic()
        self.q.send_raw(json.dumps({"execute": "blockdev-add", "id": "add", "arguments": {
            "driver": "nbd", "node-name": "n0", "server": self.unix(kit.sock),
            "open-timeout": 5}}).encode() + b"\n")
        time.sleep(1.0)
        kit.start()
        self.assertEqual(self.q.read_reply(), {"return": {}, "id": "add"})
        self.assertGreater(time.monotonic() - t, 0.9)
        self.assertEqual(self.node_info()["image"]["virtual-size"], KIT_SIZE)

    def test_open_timeout_expires(self):
        path = os.path.join(self.dir, "never.sock")
        t = time.monotonic()
        err = self.q.error("blockdev-add", {"driver": "nbd", "node-name": "n0",
                                            "server": self.unix(path), "open-timeout": 1})
        elapsed = time.monotonic() - t
        self.assertGreater(elapsed, 0.9)
        self.assertLess(elapsed, 4.0)
        self.assertIn(path, err["desc"])
        self.assertIsNone(self.node_info())


# -- an upstream that goes away ---------------------------------------------------
@needs("nbdkit")
@needs_libnbd
class LostConnection(DriverTestCase):
    def start_chain(self, **node_opts):
        """nbdkit -> node n0 -> re-export, and a client of the re-export
        that has read and written once."""
        self.kit = self.nbdkit()
        self.add_nbd(self.unix(self.kit.sock), **node_opts)
        self.h = self.connect(self.reexport())
        pwrite(self.h, b"\xa5" * 4096, 0)
        self.assertEqual(pread(self.h, 4096, 0), b"\xa5" * 4096)

    def test_read_fails_when_upstream_dies(self):
        self.start_chain()
        self.kit.kill()
        with self.assertRaises(nbd.Error) as cm:
            pread(self.h, 4096, 0)
        if is_qemu() and cm.exception.errnum == errno.ENOTCONN:
            # qemu-storage-daemon 7.2 drops the client instead when the
            # block status of a structured read fails; a new one it takes.
            self.h = self.connect(self.uri("re"))
        else:
            # QEMU's nbd driver fails requests with EIO once the
            # connection is gone; the re-export passes that on.
            self.assertEqual(cm.exception.errnum, errno.EIO, str(cm.exception))
        # A write too: a failure, not a hang.
        with self.assertRaises(nbd.Error) as cm:
            pwrite(self.h, b"x" * 512, 0)
        self.assertEqual(cm.exception.errnum, errno.EIO, str(cm.exception))
        self.assertAlive()
        self.assertEqual(self.node_info()["drv"], "nbd")

    def test_reconnect_delay_waits_for_restarted_upstream(self):
        self.start_chain(**{"reconnect-delay": 5})
        self.kit.kill()
        # A read while the upstream is down waits for the reconnect.
        buf = nbd.Buffer(4096)
        cookie = self.h.aio_pread(buf, 0)
        time.sleep(1.0)
        self.h.poll(0)
        self.assertFalse(self.h.aio_command_completed(cookie), "the read did not wait")
        self.kit.start()  # same socket, about 1 s later
        t = time.monotonic()
        deadline = t + 8
        while not self.h.aio_command_completed(cookie):  # raises if it failed
            self.assertLess(time.monotonic(), deadline, "the read never finished")
            self.h.poll(100)
        # The restarted memory disk is fresh: success is what counts.
        self.assertEqual(len(buf.to_bytearray()), 4096)
        pwrite(self.h, b"\x5a" * 4096, 8192)
        self.assertEqual(pread(self.h, 4096, 8192), b"\x5a" * 4096)
        self.assertAlive()

    def test_reconnect_delay_expires(self):
        self.start_chain(**{"reconnect-delay": 1})
        self.kit.kill()
        t = time.monotonic()
        with self.assertRaises(nbd.Error):
            pread(self.h, 4096, 0)
        self.assertLess(time.monotonic() - t, 4.0)
        self.assertAlive()


# -- yank -------------------------------------------------------------------------
@needs("nbdkit")
@needs_libnbd
@unittest.skipIf(is_qemu(), "qemu-storage-daemon 7.2 has no yank commands")
class Yank(DriverTestCase):
    def start_chain(self, **node_opts):
        self.kit = self.nbdkit()
        self.add_nbd(self.unix(self.kit.sock), **node_opts)
        self.h = self.connect(self.reexport())
        self.assertEqual(len(pread(self.h, 4096, 0)), 4096)

    def test_query_yank_lists_the_node(self):
        self.start_chain()
        img = make_image(os.path.join(self.dir, "plain.img"), MiB)
        self.add_node(self.q, "plain", img)
        got = self.q.ok("query-yank")
        self.assertIn({"type": "block-node", "node-name": "n0"}, got)
        # Only nbd nodes: not the file or raw nodes.
        nodes = [i["node-name"] for i in got if i["type"] == "block-node"]
        self.assertEqual(nodes, ["n0"])

    def test_yank_fails_requests(self):
        self.start_chain()
        self.assertEqual(self.q.ok("yank", {"instances": [
            {"type": "block-node", "node-name": "n0"}]}), {})
        with self.assertRaises(nbd.Error):
            pread(self.h, 4096, 0)
        with self.assertRaises(nbd.Error):
            pread(self.h, 4096, 0)
        self.assertAlive()
        # The node is still there (and still yankable) until it is deleted.
        self.assertIn({"type": "block-node", "node-name": "n0"}, self.q.ok("query-yank"))
        self.q.ok("yank", {"instances": [{"type": "block-node", "node-name": "n0"}]})

    def test_yank_with_reconnect_delay_recovers(self):
        self.start_chain(**{"reconnect-delay": 5})
        pwrite(self.h, b"\x77" * 4096, 0)
        self.q.ok("yank", {"instances": [{"type": "block-node", "node-name": "n0"}]})
        # nbdkit is still there: the node connects again, and the data
        # (kept by nbdkit) reads back.
        self.assertEqual(pread(self.h, 4096, 0, timeout=8), b"\x77" * 4096)
        self.assertAlive()

    def test_yank_unknown_instances(self):
        self.start_chain()
        img = make_image(os.path.join(self.dir, "plain.img"), MiB)
        self.add_node(self.q, "plain", img)
        for name in ("nope", "plain", "file-plain"):
            err = self.q.error("yank", {"instances": [{"type": "block-node", "node-name": name}]})
            self.assertEqual(err["class"], "DeviceNotFound", name)
        # All or nothing: n0 is not yanked when another instance is unknown.
        err = self.q.error("yank", {"instances": [{"type": "block-node", "node-name": "n0"},
                                                   {"type": "block-node", "node-name": "nope"}]})
        self.assertEqual(err["class"], "DeviceNotFound")
        self.assertEqual(len(pread(self.h, 4096, 0)), 4096)


# -- x-dirty-bitmap -----------------------------------------------------------------
@needs("nbdinfo")
@needs_libnbd
class DirtyBitmap(DriverTestCase):
    WRITES = [(1 * MiB, 64 * KiB), (4 * MiB + 100 * KiB, 10 * KiB), (SIZE - 4096, 4096)]

    def test_dirty_areas_read_as_not_data(self):
        img = make_image(os.path.join(self.dir, "up.img"), SIZE, fill=0x11)
        up = self.upstream(img, export="guest")
        uq = up.qmp()
        self.addCleanup(uq.close)
        uq.ok("block-dirty-bitmap-add", {"node": "r0", "name": "b0", "granularity": GRAN})
        g = self.connect("nbd+unix:///guest?socket=" + up.sock)
        for i, (off, length) in enumerate(self.WRITES):
            pwrite(g, pattern(10 + i, length), off)
        g.flush()
        # The backup view: the bitmap frozen, exported read-only with it.
        uq.ok("block-dirty-bitmap-disable", {"node": "r0", "name": "b0"})
        self.add_export(uq, "bk", "r0", "backup", bitmaps=["b0"])
        dirty = [(1 * MiB, 64 * KiB), (4 * MiB + 64 * KiB, 64 * KiB), (SIZE - GRAN, GRAN)]
        upstream_map = self.nbdinfo_map("nbd+unix:///backup?socket=" + up.sock,
                                        "qemu:dirty-bitmap:b0")
        self.assertEqual([e[:3] for e in upstream_map], expected(dirty, 1, 0))

        self.add_nbd(self.unix(up.sock), export="backup",
                     **{"x-dirty-bitmap": "qemu:dirty-bitmap:b0", "read-only": True})
        uri = self.reexport(writable=False)
        # Dirty reads as a hole (not data), clean as data.
        got = self.nbdinfo_map(uri)
        self.assertEqual([e[:2] + (e[2] & 1,) for e in got], expected(dirty, 1, 0))
        self.assertCovers(got, SIZE)
        if shutil.which("qemu-img"):
            out = json.loads(run(["qemu-img", "map", "--output=json", "-f", "raw", uri],
                                 timeout=30).stdout)
            data = merge((e["start"], e["length"], e["data"]) for e in out)
            self.assertEqual(data, expected(dirty, False, True))
        # The data itself is the image's.
        h = self.connect(uri)
        for i, (off, length) in enumerate(self.WRITES):
            self.assertEqual(pread(h, length, off), pattern(10 + i, length))
        self.assertEqual(pread(h, 4096, 0), b"\x11" * 4096)


def expected(dirty, dirty_kind, clean_kind, size=SIZE):
    """[(offset, length, kind)] over size: dirty ranges dirty_kind, the
    rest clean_kind."""
    out = []
    pos = 0
    for off, length in dirty:
        if off > pos:
            out.append((pos, off - pos, clean_kind))
        out.append((off, length, dirty_kind))
        pos = off + length
    if pos < size:
        out.append((pos, size - pos, clean_kind))
    return merge(out)


# -- blockdev-del -------------------------------------------------------------------
@needs("nbdkit")
@needs_libnbd
class Delete(DriverTestCase):
    def test_blockdev_del_after_export_removed(self):
        before = self.daemon.fd_count()
        kit = self.nbdkit()
        self.add_nbd(self.unix(kit.sock))
        h = self.connect(self.reexport())
        self.assertEqual(len(pread(h, 4096, 0)), 4096)
        self.disconnect(h)
        # In use by the export: refused.
        err = self.q.error("blockdev-del", {"node-name": "n0"})
        self.assertEqual(err["class"], "GenericError")
        self.assertIsNotNone(self.node_info())
        self.del_export(self.q, "re-n0")
        self.assertEqual(self.q.ok("blockdev-del", {"node-name": "n0"}), {})
        self.assertIsNone(self.node_info())
        if not is_qemu():
            self.assertNotIn({"type": "block-node", "node-name": "n0"}, self.q.ok("query-yank"))
        # The connection (and the node's own descriptors) are gone.
        wait_for(lambda: self.daemon.fd_count() <= before, timeout=5,
                 what="the node's descriptors to close")
        # The name can be used again.
        self.add_nbd(self.unix(kit.sock))
        self.assertEqual(self.node_info()["drv"], "nbd")
        self.assertAlive()

    def test_blockdev_del_while_a_request_waits_for_reconnect(self):
        kit = self.nbdkit()
        self.add_nbd(self.unix(kit.sock), **{"reconnect-delay": 3})
        h = self.connect(self.reexport())
        self.assertEqual(len(pread(h, 4096, 0)), 4096)
        kit.kill()
        # A read that waits (up to 3 s) for a reconnect that never comes.
        buf = nbd.Buffer(4096)
        cookie = h.aio_pread(buf, 0)
        time.sleep(0.3)
        h.poll(0)
        self.assertFalse(h.aio_command_completed(cookie), "the read did not wait")
        self.q.ok("block-export-del", {"id": "re-n0", "mode": "hard"})
        # qemu-storage-daemon keeps the export until the read is over.
        wait_for(lambda: not self.q.ok("query-block-exports"), timeout=8,
                 what="the export to go")
        self.assertEqual(self.q.ok("blockdev-del", {"node-name": "n0"}), {})
        self.assertIsNone(self.node_info())
        # The waiting read ends, and nothing uses the deleted node after
        # (the driver retries a waiting request every 100 ms).
        deadline = time.monotonic() + 8
        while not h.aio_is_closed() and not h.aio_is_dead():
            try:
                if h.aio_command_completed(cookie):
                    break
            except nbd.Error:
                break
            self.assertLess(time.monotonic(), deadline, "the read never ended")
            h.poll(100)
        time.sleep(0.5)
        self.assertAlive()


if __name__ == "__main__":
    unittest.main()
