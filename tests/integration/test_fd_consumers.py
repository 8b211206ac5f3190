"""File descriptors end to end: every consumer of a SocketAddress 'fd' and
every path opener with /dev/fdset/N, and the life of fd sets.

SocketAddress 'fd': on the command line the string is a descriptor number
the daemon inherited; inside a monitor command it is a name given to getfd
on that monitor, and numbers are refused (QEMU's socket_get_fd with a
current monitor).  Consumers: QMP monitors (--chardev socket,fd=N, covered
in test_sockets.InheritedFds), socket chardevs (server and client, from
--chardev, chardev-add and chardev-change), udp chardevs (which, as in QEMU,
take no 'fd' address at all) and the NBD server (--nbd-server and
nbd-server-start).  The nbd block driver is left to its own tests.

/dev/fdset/N: file (out and in), pipe, serial and parallel chardevs,
chardev logfiles, file and host_device block nodes (opening and reopening
read-write).  QEMU's rules (monitor/fds.c, util/osdep.c, QEMU 9.1+):
  - a descriptor is picked only if its access mode equals the open's
    (O_RDONLY, O_WRONLY and O_RDWR each need their own; an O_RDWR
    descriptor does not serve a read-only open), and, since 9.1, only if
    O_DIRECT matches too;
  - the duplicate gets the open's flags: F_SETFL (O_APPEND, O_NONBLOCK,
    O_DIRECT) and O_TRUNC truncates (qemu_dup_flags);
  - remove-fd closes the descriptor at once; the set stays, listed with no
    descriptors, while a duplicate of it is in use, and goes when the last
    duplicate is closed (qemu_close -> monitor_fdset_dup_fd_remove);
  - since 9.1 ("monitor: Stop removing non-duplicated fds") a monitor
    disconnecting leaves the sets alone.

qemu-storage-daemon 7.2 has no getfd/add-fd and stubs descriptor passing
out ("only QEMU supports file descriptor passing"); the tests that need it
are skipped there, the others run against it too (VSTORD pointing at it).
"""

import json
import os
import pty
import select
import socket
import subprocess
import tempfile
import tty
import unittest

from chardev_helpers import backend, chardevs, daemon_fds, fd_client, read_file
from daemon import VSTORD, Daemon, monitor_args, wait_for
from nbd_raw import NBDClient
from qmp import QMPClient


def is_qemu():
    return "qemu" in os.path.basename(VSTORD)


needs_fd_passing = unittest.skipIf(
    is_qemu(), "qemu-storage-daemon 7.2 has no getfd/add-fd and resolves neither getfd names "
               "nor /dev/fdset ('only QEMU supports file descriptor passing'); vstord does as "
               "QEMU's system emulator (docs/differences.md)")


def fd_addr(s):
    return {"type": "fd", "data": {"str": s}}


def socket_chardev(addr, **opts):
    return backend("socket", addr=addr, **opts)


def peer_sees_eof(peer, timeout=2.0):
    r, _, _ = select.select([peer], [], [], timeout)
    return bool(r) and peer.recv(1) == b""


def run_failing(args, pass_fds=()):
    p = subprocess.run([VSTORD] + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, pass_fds=pass_fds, timeout=10)
    return p.returncode, p.stderr.decode(errors="replace")


class FdTestCase(unittest.TestCase):
    def start(self, args=(), **kw):
        d = Daemon(monitor_args() + list(args), **kw)
        self.addCleanup(d.stop)
        self.d = d
        self.c = self.client()
        return d

    def client(self, sock="qmp.sock"):
        c = self.d.qmp(sock)
        self.addCleanup(c.close)
        return c

    def tmp_dir(self):
        if not hasattr(self, "_tmp"):
            t = tempfile.TemporaryDirectory(prefix="vstord-fdc-")
            self.addCleanup(t.cleanup)
            self._tmp = t.name
        return self._tmp

    def tmp(self, name, data=b""):
        path = os.path.join(self.tmp_dir(), name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def open(self, path, flags):
        fd = os.open(path, flags)
        self.addCleanup(os.close, fd)
        return fd

    def pair(self):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        return a, b

    def unix_listener(self, name, listen=True):
        s = socket.socket(socket.AF_UNIX)
        self.addCleanup(s.close)
        path = os.path.join(self.tmp_dir(), name)
        s.bind(path)
        if listen:
            s.listen(4)
        return s, path

    def add_fd(self, set_id, fd, opaque=None):
        args = {"fdset-id": set_id}
        if opaque is not None:
            args["opaque"] = opaque
        r = self.c.ok("add-fd", args, fds=[fd])
        self.assertEqual(r["fdset-id"], set_id)
        return r["fd"]

    def sets(self):
        return {s["fdset-id"]: s["fds"] for s in self.c.ok("query-fdsets")}


# -- SocketAddress 'fd' on the command line -----------------------------------

class CommandLineNumbers(FdTestCase):
    def test_nbd_server_on_inherited_listener(self):
        s, path = self.unix_listener("nbd.sock")
        n = s.fileno()
        self.start(["--nbd-server", "addr.type=fd,addr.str=%d" % n], pass_fds=[n])
        s.close()  # the daemon serves on its own copy
        nbd = NBDClient.unix(path)
        self.addCleanup(nbd.close)
        nbd.handshake()
        self.assertEqual(nbd.list_exports()[0], [])

    def test_nbd_server_names_and_non_sockets_refused(self):
        rc, err = run_failing(["--nbd-server", "addr.type=fd,addr.str=nbdsock"])
        self.assertEqual(rc, 1)
        self.assertIn("--nbd-server addr.type=fd,addr.str=nbdsock: Unable to parse FD number "
                      "nbdsock", err)
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        rc, err = run_failing(["--nbd-server", "addr.type=fd,addr.str=%d" % r], pass_fds=[r])
        self.assertEqual(rc, 1)
        self.assertIn("File descriptor '%d' is not a socket" % r, err)

    # QEMU closes a listening unix socket by unlinking the path it is bound
    # to (qio_channel_socket_close -> socket_listen_cleanup), also when the
    # socket was passed in: qemu-storage-daemon 7.2 removes the file on
    # chardev-remove and nbd-server-stop.
    @unittest.skipUnless(is_qemu(), "vstord leaves the socket file of a passed listener: its "
                         "owner (a manager, systemd's socket unit) made it and may still "
                         "listen on it (docs/differences.md)")
    def test_passed_unix_listener_path_removed_on_close(self):
        cs, cpath = self.unix_listener("chr.sock")
        ns, npath = self.unix_listener("nbd.sock")
        self.start(["--chardev", "socket,id=s,fd=%d,server=on,wait=off" % cs.fileno(),
                    "--nbd-server", "addr.type=fd,addr.str=%d" % ns.fileno()],
                   pass_fds=[cs.fileno(), ns.fileno()])
        self.c.ok("chardev-remove", {"id": "s"})
        self.c.ok("nbd-server-stop")
        self.assertEqual([p for p in (cpath, npath) if os.path.exists(p)], [])


# -- SocketAddress 'fd' inside monitor commands --------------------------------

class MonitorNames(FdTestCase):
    @needs_fd_passing
    def test_nbd_server_start_on_named_listener(self):
        self.start()
        s, path = self.unix_listener("nbd.sock", listen=False)  # the daemon listens
        self.c.ok("getfd", {"fdname": "nbdsock"}, fds=[s.fileno()])
        s.close()
        self.assertEqual(self.c.ok("nbd-server-start", {"addr": fd_addr("nbdsock")}), {})
        nbd = NBDClient.unix(path)
        self.addCleanup(nbd.close)
        nbd.handshake()
        self.assertEqual(nbd.list_exports()[0], [])
        # The name was taken by the command.
        self.assertEqual(self.c.error("closefd", {"fdname": "nbdsock"})["desc"],
                         "File descriptor named 'nbdsock' not found")

    @needs_fd_passing
    def test_client_chardev_on_named_socket(self):
        self.start()
        mine, theirs = self.pair()
        self.c.ok("getfd", {"fdname": "conn"}, fds=[theirs.fileno()])
        theirs.close()
        self.assertEqual(self.c.ok("chardev-add", {"id": "cl", "backend": socket_chardev(
            fd_addr("conn"), server=False)}), {})
        self.assertFalse(chardevs(self.c)["cl"]["filename"].startswith("disconnected:"))
        self.assertFalse(peer_sees_eof(mine, 0.2), "the daemon holds the passed socket")
        self.c.ok("chardev-remove", {"id": "cl"})
        self.assertTrue(peer_sees_eof(mine), "closed with the chardev")
        self.assertEqual(self.c.error("closefd", {"fdname": "conn"})["desc"],
                         "File descriptor named 'conn' not found")

    @needs_fd_passing
    def test_chardev_change_onto_named_socket(self):
        # The monitor on w.sock moves onto a socket passed with getfd and
        # speaks QMP there.
        self.start(monitor_args("w.sock", "w"))
        mine, theirs = self.pair()
        self.c.ok("getfd", {"fdname": "conn"}, fds=[theirs.fileno()])
        theirs.close()
        self.assertEqual(self.c.ok("chardev-change", {"id": "w", "backend": socket_chardev(
            fd_addr("conn"), server=False)}), {})
        q = QMPClient(mine)
        q.negotiate()
        self.assertIn("qemu", q.ok("query-version"))

    def test_numbers_refused(self):
        # The numbers name real sockets the daemon inherited: still refused.
        listener, _ = self.unix_listener("l.sock")
        mine, theirs = self.pair()
        ln, cn = listener.fileno(), theirs.fileno()
        self.start(["--chardev", "null,id=spare"], pass_fds=[ln, cn])
        cases = [
            ("nbd-server-start", {"addr": fd_addr(str(ln))}, ln, ""),
            ("chardev-add", {"id": "srv", "backend": socket_chardev(fd_addr(str(ln)),
                                                                    server=True, wait=False)},
             ln, "Failed to add chardev 'srv': "),
            ("chardev-add", {"id": "cl", "backend": socket_chardev(fd_addr(str(cn)),
                                                                   server=False)},
             cn, "Failed to add chardev 'cl': "),
            ("chardev-change", {"id": "spare", "backend": socket_chardev(fd_addr(str(cn)),
                                                                         server=False)},
             cn, None),
        ]
        for cmd, args, num, prefix in cases:
            with self.subTest(cmd=cmd, args=args):
                desc = self.c.error(cmd, args)["desc"]
                if is_qemu():
                    self.assertIn("only QEMU supports file descriptor passing", desc)
                elif prefix is not None:
                    self.assertEqual(desc, prefix + "File descriptor named '%d' has not been "
                                     "found" % num)
                else:
                    self.assertIn("File descriptor named '%d' has not been found" % num, desc)
        self.assertEqual(self.c.error("nbd-server-stop")["desc"], "NBD server not running")
        info = chardevs(self.c)
        self.assertEqual([i for i in ("srv", "cl") if i in info], [])
        if not is_qemu():  # qemu-storage-daemon 7.2 drops a chardev whose change failed
            self.assertEqual(info["spare"]["filename"], "null")
        self.assertFalse(peer_sees_eof(mine, 0.1))

    def test_udp_takes_no_fd_address(self):
        # QEMU's socket_dgram handles inet only, with or without a monitor.
        self.start()
        if not is_qemu():
            theirs = self.pair()[1]
            self.c.ok("getfd", {"fdname": "dgram"}, fds=[theirs.fileno()])
        for remote in ("dgram", "3"):
            with self.subTest(remote=remote):
                self.assertIn("Failed to add chardev 'u': ", self.c.error("chardev-add", {
                    "id": "u", "backend": backend("udp", remote=fd_addr(remote))})["desc"])
        self.assertNotIn("u", chardevs(self.c))
        if not is_qemu():
            # Never looked up, so not taken.
            self.assertEqual(self.c.ok("closefd", {"fdname": "dgram"}), {})

    # QEMU's words (socket_dgram).
    def test_udp_fd_address_qemu_message(self):
        self.start()
        self.assertEqual(self.c.error("chardev-add", {
            "id": "u", "backend": backend("udp", remote=fd_addr("x"))})["desc"],
            "Failed to add chardev 'u': socket type unsupported for datagram")


# -- /dev/fdset/N wherever a path is opened -------------------------------------

@needs_fd_passing
class FdsetOpeners(FdTestCase):
    def test_file_chardev_in_and_out(self):
        # The monitor on w.sock moves onto a file chardev whose input and
        # output are both passed descriptors: it reads the commands from
        # one and writes its replies to the other.
        self.start(monitor_args("w.sock", "w"))
        inp = self.tmp("in", b'{"execute":"qmp_capabilities"}\n'
                             b'{"execute":"query-version","id":"last"}\n')
        out = self.tmp("out")
        self.add_fd(1, self.open(inp, os.O_RDONLY))
        self.add_fd(2, self.open(out, os.O_WRONLY))
        self.c.ok("chardev-change", {"id": "w", "backend": backend(
            "file", **{"in": "/dev/fdset/1", "out": "/dev/fdset/2"})})
        wait_for(lambda: b'"last"' in read_file(out), timeout=5, what="replies in the out file")
        lines = [json.loads(l) for l in read_file(out).split(b"\r\n") if l]
        self.assertIn("QMP", lines[0])
        self.assertEqual(lines[1], {"return": {}})
        self.assertEqual(lines[2]["id"], "last")

    def test_pipe_chardev(self):
        # Any O_RDWR descriptor serves a pipe chardev; a socket pair lets
        # the test speak QMP to the monitor moved onto it.
        self.start(monitor_args("w.sock", "w"))
        mine, theirs = self.pair()
        self.add_fd(1, theirs.fileno())
        theirs.close()
        self.c.ok("chardev-change", {"id": "w", "backend": backend("pipe",
                                                                    device="/dev/fdset/1")})
        q = QMPClient(mine)
        q.negotiate()
        self.assertIn("qemu", q.ok("query-version"))
        self.assertEqual(chardevs(self.c)["w"]["filename"], "pipe")

    def test_serial_chardev(self):
        self.start(monitor_args("w.sock", "w"))
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        tty.setraw(slave)
        self.add_fd(1, slave)
        os.close(slave)
        self.c.ok("chardev-change", {"id": "w", "backend": backend("serial",
                                                                    device="/dev/fdset/1")})
        q = fd_client(master)
        q.negotiate()
        self.assertIn("qemu", q.ok("query-version"))
        self.assertEqual(chardevs(self.c)["w"]["filename"], "serial")

    def test_logfile(self):
        # A null backend with a log: what the monitor writes is in the log.
        self.start(monitor_args("w.sock", "w"))
        log = self.tmp("log")
        self.add_fd(1, self.open(log, os.O_WRONLY))
        self.c.ok("chardev-change", {"id": "w", "backend": backend("null",
                                                                    logfile="/dev/fdset/1")})
        wait_for(lambda: b"\r\n" in read_file(log), timeout=5, what="greeting in the log")
        self.assertIn("QMP", json.loads(read_file(log).split(b"\r\n")[0]))

    def test_parallel_chardev(self):
        # No parallel port here: the right access mode gets as far as the
        # PPCLAIM ioctl, the wrong one stops at the fd set.
        self.start()
        path = self.tmp("lp")
        self.add_fd(1, self.open(path, os.O_RDONLY))
        self.add_fd(2, self.open(path, os.O_RDWR))
        self.assertIn("matching", self.c.error("chardev-add", {"id": "p", "backend": backend(
            "parallel", device="/dev/fdset/1")})["desc"])
        self.assertIn("not a parallel port", self.c.error("chardev-add", {
            "id": "p", "backend": backend("parallel", device="/dev/fdset/2")})["desc"])

    def test_chardev_access_modes_must_match(self):
        # Each open needs a descriptor of exactly its access mode.
        self.start()
        path = self.tmp("f")
        self.add_fd(1, self.open(path, os.O_RDONLY))
        self.add_fd(2, self.open(path, os.O_WRONLY))
        self.add_fd(3, self.open(path, os.O_RDWR))
        cases = [  # (backend, set that lacks the mode)
            (backend("file", out="/dev/fdset/3"), "out needs O_WRONLY"),
            (backend("file", out="/dev/fdset/1"), "out needs O_WRONLY"),
            (backend("file", out=path, **{"in": "/dev/fdset/3"}), "in needs O_RDONLY"),
            (backend("pipe", device="/dev/fdset/2"), "pipe needs O_RDWR"),
            (backend("serial", device="/dev/fdset/1"), "serial needs O_RDWR"),
            (backend("null", logfile="/dev/fdset/3"), "logfile needs O_WRONLY"),
            (backend("file", out="/dev/fdset/9"), "no such set"),
        ]
        for i, (be, why) in enumerate(cases):
            with self.subTest(why=why, backend=be):
                desc = self.c.error("chardev-add", {"id": "c%d" % i, "backend": be})["desc"]
                self.assertIn("fdset" if why == "no such set" else "matching", desc)
        self.assertEqual(sorted(chardevs(self.c)), ["m0"])

    def test_file_node_access_modes(self):
        self.start()
        img = self.tmp("img", b"\0" * 65536)
        self.add_fd(1, self.open(img, os.O_RDONLY))
        self.add_fd(2, self.open(img, os.O_RDWR))
        self.add_fd(3, self.open(img, os.O_RDONLY))
        self.add_fd(3, self.open(img, os.O_RDWR))

        def add(name, set_id, **opts):
            return self.c.cmd("blockdev-add", dict(driver="file", filename="/dev/fdset/%d" % set_id,
                                                   locking="off", **{"node-name": name}, **opts))
        self.assertIn("matching", add("rw1", 1)["error"]["desc"])
        self.assertIn("matching", add("ro2", 2, **{"read-only": True})["error"]["desc"])
        self.assertEqual(add("ro1", 1, **{"read-only": True}), {"return": {}})
        self.assertEqual(add("rw2", 2), {"return": {}})
        self.assertEqual(add("ro3", 3, **{"read-only": True}), {"return": {}})
        self.assertEqual(add("rw3", 3), {"return": {}})
        nodes = {n["node-name"]: n for n in self.c.ok("query-named-block-nodes")}
        self.assertEqual({k: nodes[k]["ro"] for k in nodes},
                         {"ro1": True, "rw2": False, "ro3": True, "rw3": False})
        self.assertEqual(nodes["rw2"]["file"], "/dev/fdset/2")

    def test_auto_read_only_node_reopens_through_fdset(self):
        # Only a read-only descriptor: auto-read-only opens read-only.  An
        # O_RDWR one added later serves the reopen a writable export needs.
        self.start()
        img = self.tmp("img", b"\0" * 65536)
        self.add_fd(1, self.open(img, os.O_RDONLY))
        self.c.ok("blockdev-add", {"driver": "file", "node-name": "f", "locking": "off",
                                   "filename": "/dev/fdset/1", "auto-read-only": True})
        self.c.ok("blockdev-add", {"driver": "raw", "node-name": "r", "file": "f"})
        self.c.ok("nbd-server-start", {"addr": {"type": "unix", "data": {
            "path": self.d.path("nbd.sock")}}})
        self.assertIn("matching", self.c.error("block-export-add", {
            "type": "nbd", "id": "e", "node-name": "r", "writable": True})["desc"])
        self.add_fd(1, self.open(img, os.O_RDWR))
        self.c.ok("block-export-add", {"type": "nbd", "id": "e", "node-name": "r",
                                       "writable": True})
        nbd = NBDClient.unix(self.d.path("nbd.sock"))
        self.addCleanup(nbd.close)
        nbd.connect_export("r")
        self.assertTrue(nbd.write(512, b"W" * 512).ok)
        self.assertTrue(nbd.flush().ok)
        self.assertEqual(read_file(img)[512:1024], b"W" * 512)

    # QEMU's file-posix (raw_parse_flags, "dynamic auto-read-only" since
    # 4.0) opens an auto-read-only node O_RDONLY whatever the file allows
    # and reopens it O_RDWR only when a writer attaches, so a set holding
    # only an O_RDWR descriptor does not serve it.
    def test_auto_read_only_opens_read_only_first(self):
        self.start()
        img = self.tmp("img", b"\0" * 65536)
        self.add_fd(1, self.open(img, os.O_RDWR))
        r = self.c.cmd("blockdev-add", {"driver": "file", "node-name": "f", "locking": "off",
                                        "filename": "/dev/fdset/1", "auto-read-only": True})
        self.assertIn("matching", r.get("error", {}).get("desc", "accepted: %r" % r))

    def test_host_device_node(self):
        self.start()
        self.add_fd(1, self.open("/dev/null", os.O_RDONLY))
        self.add_fd(2, self.open("/dev/null", os.O_RDWR))
        self.add_fd(3, self.open(self.tmp("regular"), os.O_RDWR))
        add = lambda name, set_id: self.c.cmd("blockdev-add", {  # noqa: E731
            "driver": "host_device", "node-name": name, "filename": "/dev/fdset/%d" % set_id})
        self.assertIn("matching", add("h1", 1)["error"]["desc"])
        self.assertIn("character or block device", add("h3", 3)["error"]["desc"])
        self.assertEqual(add("h2", 2), {"return": {}})
        nodes = {n["node-name"]: n for n in self.c.ok("query-named-block-nodes")}
        self.assertEqual((nodes["h2"]["drv"], nodes["h2"]["file"]), ("host_device", "/dev/fdset/2"))

    # QEMU 9.1+ (monitor_fdset_flags_match) also matches O_DIRECT: a
    # cache.direct=on node needs an O_DIRECT descriptor in the set.
    def test_cache_direct_needs_o_direct_descriptor(self):
        self.start()
        img = self.tmp("img", b"\0" * 65536)
        self.add_fd(1, self.open(img, os.O_RDWR))
        self.add_fd(2, self.open(img, os.O_RDWR))
        self.add_fd(2, self.open(img, os.O_RDWR | os.O_DIRECT))

        def add(name, set_id):
            return self.c.cmd("blockdev-add", {"driver": "file", "node-name": name,
                                               "locking": "off", "cache": {"direct": True},
                                               "filename": "/dev/fdset/%d" % set_id})
        self.assertEqual(add("d2", 2), {"return": {}})
        r = add("d1", 1)
        self.assertIn("matching", r.get("error", {}).get("desc", "accepted: %r" % r))

    # qemu_dup_flags: the duplicate gets the open's flags: O_TRUNC truncates
    # the file (file chardev without append, chardev logs without
    # logappend), O_APPEND is set on it with append=on.
    def test_open_flags_applied_to_duplicate(self):
        self.start(monitor_args("w.sock", "w"))
        out, log = self.tmp("out", b"X" * 500), self.tmp("log", b"Y" * 500)
        self.add_fd(1, self.open(out, os.O_WRONLY))
        self.add_fd(2, self.open(log, os.O_WRONLY))
        self.c.ok("chardev-add", {"id": "f", "backend": backend("file", out="/dev/fdset/1")})
        self.c.ok("chardev-add", {"id": "l", "backend": backend("null", logfile="/dev/fdset/2")})
        with self.subTest("O_TRUNC"):
            self.assertEqual((read_file(out), read_file(log)), (b"", b""))
        with self.subTest("O_APPEND"):
            app = self.tmp("app", b"OLD\n")
            self.add_fd(3, self.open(app, os.O_WRONLY))
            self.c.ok("chardev-change", {"id": "w", "backend": backend(
                "file", out="/dev/fdset/3", append=True)})
            wait_for(lambda: b"\r\n" in read_file(app), timeout=5, what="greeting")
            self.assertTrue(read_file(app).startswith(b'OLD\n{"QMP"'), read_file(app)[:40])


# -- the life of fd sets -------------------------------------------------------

@needs_fd_passing
class FdsetLifetime(FdTestCase):
    def openers(self):
        """(name, target, access mode, (command, arguments for a set path),
        (command, arguments)) for every opener QMP can open and close."""
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        tty.setraw(slave)
        fifo = os.path.join(self.tmp_dir(), "fifo")
        os.mkfifo(fifo)

        def chardev(id, type_, **data):
            # "@" stands for the set's path.
            return (("chardev-add", lambda p: {"id": id, "backend": backend(
                        type_, **{k: p if v == "@" else v for k, v in data.items()})}),
                    ("chardev-remove", {"id": id}))

        def node(id, driver, **opts):
            return (("blockdev-add", lambda p: dict(opts, driver=driver, filename=p,
                                                     **{"node-name": id})),
                    ("blockdev-del", {"node-name": id}))
        return [
            ("file out", self.tmp("out1"), os.O_WRONLY, *chardev("c1", "file", out="@")),
            ("file in", self.tmp("in2"), os.O_RDONLY,
             *chardev("c2", "file", out=self.tmp("out2"), **{"in": "@"})),
            ("pipe", fifo, os.O_RDWR | os.O_NONBLOCK, *chardev("c3", "pipe", device="@")),
            ("serial", os.ttyname(slave), os.O_RDWR | os.O_NOCTTY,
             *chardev("c4", "serial", device="@")),
            ("logfile", self.tmp("log5"), os.O_WRONLY, *chardev("c5", "null", logfile="@")),
            ("file node", self.tmp("img6", b"\0" * 65536), os.O_RDWR,
             *node("n6", "file", locking="off")),
            ("read-only file node", self.tmp("img7", b"\0" * 65536), os.O_RDONLY,
             *node("n7", "file", **{"read-only": True})),
            ("host_device node", "/dev/zero", os.O_RDWR, *node("n8", "host_device")),
        ]

    def test_set_lives_while_in_use_and_goes_with_its_user(self):
        self.start()
        for set_id, (name, target, mode, (open_cmd, open_args), (close_cmd, close_args)) \
                in enumerate(self.openers(), 10):
            with self.subTest(opener=name):
                fd = os.open(target, mode)
                num = self.add_fd(set_id, fd, opaque=name)
                os.close(fd)
                self.c.ok(open_cmd, open_args("/dev/fdset/%d" % set_id))
                self.assertEqual(self.sets().get(set_id), [{"fd": num, "opaque": name}])
                self.c.ok("remove-fd", {"fdset-id": set_id})
                self.assertIn(set_id, self.sets(), "a set in use stays")
                self.c.ok(close_cmd, close_args)
                self.assertNotIn(set_id, self.sets(), "gone with its last user")
                self.assertNotIn(os.path.realpath(target), daemon_fds(self.d))

    # QEMU 9.1+ (qmp_remove_fd -> monitor_fdset_fd_free): remove-fd closes
    # the descriptor at once; the set stays listed, with no descriptors,
    # until the duplicate in use is closed.
    def test_remove_fd_closes_the_descriptor_at_once(self):
        self.start()
        path = self.tmp("out")
        num = self.add_fd(1, self.open(path, os.O_WRONLY))
        self.c.ok("chardev-add", {"id": "f", "backend": backend("file", out="/dev/fdset/1")})
        self.assertEqual(daemon_fds(self.d).count(path), 2, "the set's and the duplicate")
        self.c.ok("remove-fd", {"fdset-id": 1, "fd": num})
        self.assertEqual(self.sets(), {1: []})
        self.assertEqual(daemon_fds(self.d).count(path), 1, "the duplicate stays open")
        self.assertIn("matching", self.c.error("chardev-add", {
            "id": "g", "backend": backend("file", out="/dev/fdset/1")})["desc"])
        self.c.ok("chardev-remove", {"id": "f"})
        self.assertEqual(self.sets(), {})
        self.assertEqual(daemon_fds(self.d).count(path), 0)

    def test_failed_open_keeps_no_duplicate(self):
        # An open that fails after a duplicate was made gives it back
        # (QEMU: qemu_close on the error paths), so remove-fd frees the set.
        self.start()
        out, img = self.tmp("out"), self.tmp("img", b"\0" * 65536)
        cases = [  # (name, the set's file and mode, command, arguments, error)
            ("file chardev whose 'in' fails", out, os.O_WRONLY, "chardev-add",
             {"id": "f", "backend": backend("file", out="/dev/fdset/1",
                                            **{"in": "/dev/fdset/9"})}, "matching"),
            ("file node on a device", "/dev/null", os.O_RDWR, "blockdev-add",
             {"driver": "file", "node-name": "n", "filename": "/dev/fdset/2"}, "regular file"),
            ("host_device node on a file", img, os.O_RDWR, "blockdev-add",
             {"driver": "host_device", "node-name": "h", "filename": "/dev/fdset/3"},
             "character or block device"),
        ]
        self.add_fd(9, self.open(out, os.O_WRONLY))  # no O_RDONLY one for 'in'
        for set_id, (name, target, mode, cmd, args, error) in enumerate(cases, 1):
            with self.subTest(name):
                self.add_fd(set_id, self.open(target, mode))
                self.assertIn(error, self.c.error(cmd, args)["desc"])
                self.c.ok("remove-fd", {"fdset-id": set_id})
                self.assertNotIn(set_id, self.sets())
        self.c.ok("remove-fd", {"fdset-id": 9})
        self.assertEqual([p for p in (out, img) if p in daemon_fds(self.d)], [])

    # Since QEMU 9.1 a disconnecting monitor leaves every set as it is (up
    # to 9.0, sets with no duplicate in use were emptied when the last
    # monitor disconnected).
    def test_sets_survive_monitor_disconnect(self):
        self.start()
        a, b = self.tmp("a"), self.tmp("b")
        na = self.add_fd(1, self.open(a, os.O_WRONLY), opaque="idle")
        nb = self.add_fd(2, self.open(b, os.O_WRONLY))
        self.c.ok("chardev-add", {"id": "f", "backend": backend("file", out="/dev/fdset/2")})
        self.c.close()
        self.c = self.client()
        self.assertEqual(self.sets(), {1: [{"fd": na, "opaque": "idle"}], 2: [{"fd": nb}]})
        self.assertIn(a, daemon_fds(self.d))
        self.c.ok("remove-fd", {"fdset-id": 1})
        self.c.ok("chardev-remove", {"id": "f"})
        self.c.ok("remove-fd", {"fdset-id": 2})
        self.assertEqual(self.sets(), {})
        fds = daemon_fds(self.d)
        self.assertEqual([p for p in (a, b) if p in fds], [])


if __name__ == "__main__":
    unittest.main()
