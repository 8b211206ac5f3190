"""Character device backends on plain descriptors and datagrams, each with
a real peer: file (with input, append, and /dev/fdset/N through add-fd),
pipe (a FIFO pair and a single FIFO), pty (the slave opened raw, the path
symlink), serial (on a pty slave while the test holds the master), null
and udp (python and socat peers)."""

import errno
import json
import os
import pty
import socket
import time
import tty
import unittest

from chardev_helpers import (NOT_NEGOTIATED, ChardevTestCase, read_file, Peer, backend, chardevs, daemon_fds, fd_client, free_udp_port,
                             is_greeting, requires, tmpdir)
from daemon import Daemon, monitor_args, wait_for
from qmp import QMPClient

class Base(ChardevTestCase):
    def talk(self, q, id_):
        """Negotiates and runs query-version on a freshly greeted client."""
        self.assertTrue(is_greeting(q.greeting()))
        self.assertEqual(q.cmd("qmp_capabilities"), {"return": {}})
        r = q.cmd("query-version", id=id_)
        self.assertEqual(r["id"], id_)
        self.assertIn("qemu", r["return"])


class File(Base):
    def test_monitor_reads_input_file_and_writes_out_file(self):
        t = tmpdir(self)
        inp, out = os.path.join(t, "in"), os.path.join(t, "out")
        with open(inp, "wb") as f:
            f.write(b'{"execute":"qmp_capabilities"}\n{"execute":"query-version","id":"last"}\n')
        d = self.start(["--chardev", "file,id=f,path=%s,input-path=%s" % (out, inp),
                        "--monitor", "f"])
        wait_for(lambda: b'"last"' in read_file(out), timeout=5, what="replies in the out file")
        lines = read_file(out).split(b"\r\n")
        self.assertTrue(is_greeting(json.loads(lines[0])))
        self.assertEqual(json.loads(lines[1]), {"return": {}})
        self.assertEqual(json.loads(lines[2])["id"], "last")
        self.assertEqual(lines[3:], [b""])
        self.assertEqual(chardevs(self.control(d))["f"],
                         {"label": "f", "filename": "file", "frontend-open": True})

    def test_append(self):
        t = tmpdir(self)
        kept, cut = os.path.join(t, "kept"), os.path.join(t, "cut")
        for p in (kept, cut):
            with open(p, "wb") as f:
                f.write(b"OLD\n")
        self.start(["--chardev", "file,id=a,path=%s,append=on" % kept, "--monitor", "a",
                    "--chardev", "file,id=b,path=%s" % cut, "--monitor", "b"])
        wait_for(lambda: b"QMP" in read_file(kept) and b"QMP" in read_file(cut), timeout=5,
                 what="greetings")
        self.assertTrue(read_file(kept).startswith(b'OLD\n{"QMP"'))
        self.assertTrue(read_file(cut).startswith(b'{"QMP"'))

    def test_out_through_fdset(self):
        # The file is opened here, passed with add-fd, and named /dev/fdset/N.
        # A monitor whose chardev is changed to it writes its reply there.
        d = self.start(monitor_args("w.sock", "w"))
        c = self.control(d)
        w = d.qmp("w.sock")
        self.addCleanup(w.close)
        path = os.path.join(tmpdir(self), "passed")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        self.assertEqual(c.ok("add-fd", {"fdset-id": 7}, fds=[fd])["fdset-id"], 7)
        w.send_raw(json.dumps({"execute": "chardev-change", "id": "moved", "arguments": {
            "id": "w", "backend": backend("file", out="/dev/fdset/7")}}).encode())
        wait_for(lambda: b'"moved"' in read_file(path), timeout=5, what="reply in the file")
        lines = [json.loads(l) for l in read_file(path).split(b"\r\n") if l]
        self.assertEqual(lines[-1], {"return": {}, "id": "moved"})
        self.assertTrue(all(is_greeting(l) for l in lines[:-1]), lines)
        self.assertEqual(chardevs(c)["w"]["filename"], "file")
        # The access mode must match.
        self.assertIn("matching flags", c.error("chardev-add", {
            "id": "r", "backend": backend("file", out=path, **{"in": "/dev/fdset/7"})})["desc"])

    # Closing the duplicate lets remove-fd free the set, as in QEMU.
    # (Regression test: the duplicate used to stay registered, the set stayed
    # listed and the file open for good; fixed in 635b067.)
    def test_fdset_released_after_remove(self):
        d = self.start([])
        c = self.control(d)
        path = os.path.join(tmpdir(self), "passed")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        c.ok("add-fd", {"fdset-id": 3}, fds=[fd])
        os.close(fd)
        c.ok("chardev-add", {"id": "ff", "backend": backend("file", out="/dev/fdset/3")})
        c.ok("chardev-remove", {"id": "ff"})
        c.ok("remove-fd", {"fdset-id": 3})
        self.assertEqual(c.ok("query-fdsets"), [])
        self.assertNotIn(path, daemon_fds(d))


class Pipe(Base):
    def test_fifo_pair(self):
        base = os.path.join(tmpdir(self), "p")
        os.mkfifo(base + ".in")
        os.mkfifo(base + ".out")
        d = self.start(["--chardev", "pipe,id=p,path=" + base, "--monitor", "p"])
        # The daemon holds both FIFOs open, so neither open blocks.
        rfd = os.open(base + ".out", os.O_RDONLY | os.O_NONBLOCK)
        wfd = os.open(base + ".in", os.O_WRONLY | os.O_NONBLOCK)
        q = fd_client(rfd, wfd, owned=(rfd, wfd))
        self.addCleanup(q.close)
        self.talk(q, "through-fifos")
        self.assertEqual(chardevs(self.control(d))["p"]["filename"], "pipe")

    def test_single_fifo(self):
        d = self.start([])
        c = self.control(d)
        fifo = os.path.join(tmpdir(self), "one")
        os.mkfifo(fifo)
        n0 = d.fd_count()
        self.assertEqual(c.ok("chardev-add", {"id": "p", "backend": backend("pipe", device=fifo)}),
                         {})
        self.assertEqual(chardevs(c)["p"]["filename"], "pipe")
        # The daemon reads it: a writer can open it without waiting.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        c.ok("chardev-remove", {"id": "p"})
        with self.assertRaises(OSError) as cm:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        self.assertEqual(cm.exception.errno, errno.ENXIO, "no reader left")
        wait_for(lambda: d.fd_count() == n0, timeout=5, what="descriptors closed")

    def test_missing_pipe(self):
        c = self.control(self.start([]))
        path = os.path.join(tmpdir(self), "none")
        self.assertEqual(c.error("chardev-add", {"id": "p", "backend": backend(
            "pipe", device=path)})["desc"],
            "Failed to add chardev 'p': Could not open '%s': No such file or directory" % path)


def open_slave(path):
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    return fd


class Pty(Base):
    def test_chardev_add_returns_the_pty(self):
        d = self.start([])
        c = self.control(d)
        n0 = d.fd_count()
        r = c.ok("chardev-add", {"id": "p", "backend": backend("pty")})
        self.assertRegex(r["pty"], r"^/dev/pts/\d+$")
        self.assertTrue(os.path.exists(r["pty"]))
        self.assertEqual(chardevs(c)["p"], {"label": "p", "filename": "pty:" + r["pty"],
                                            "frontend-open": False})
        c.ok("chardev-remove", {"id": "p"})
        self.assertNotIn("p", chardevs(c))
        wait_for(lambda: d.fd_count() == n0, timeout=5, what="pty master closed")

    def test_monitor_on_pty_from_command_line(self):
        d = self.start(["--chardev", "pty,id=p", "--monitor", "p"])
        c = self.control(d)
        filename = chardevs(c)["p"]["filename"]
        self.assertTrue(filename.startswith("pty:/dev/pts/"), filename)
        slave = filename[4:]
        fd = open_slave(slave)
        q = fd_client(fd, owned=(fd,))
        self.addCleanup(q.close)
        self.talk(q, "over-pty")
        # Closed and opened again: a new session with its own greeting.
        q.close()
        time.sleep(0.3)  # the daemon polls the master for the slave's state
        fd = open_slave(slave)
        q = fd_client(fd, owned=(fd,))
        self.addCleanup(q.close)
        self.assertTrue(is_greeting(q.greeting()))
        self.assertEqual(q.cmd("query-version")["error"]["desc"], NOT_NEGOTIATED)

    def test_path_symlink(self):
        d = self.start([])
        c = self.control(d)
        link = d.path("console")
        r = c.ok("chardev-add", {"id": "p", "backend": backend("pty", path=link)})
        self.assertEqual(os.readlink(link), r["pty"])
        # An existing path is not replaced.
        err = c.error("chardev-add", {"id": "q", "backend": backend("pty", path=link)})
        self.assertIn("q", err["desc"])
        self.assertEqual(os.readlink(link), r["pty"])
        self.assertNotIn("q", chardevs(c))
        c.ok("chardev-remove", {"id": "p"})
        self.assertFalse(os.path.lexists(link), "the link goes with the chardev")

    def test_serial_on_pty_slave(self):
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        name = os.ttyname(slave)
        d = self.start(["--chardev", "serial,id=s,path=" + name, "--monitor", "s"])
        q = fd_client(master)
        self.talk(q, "over-serial")
        c = self.control(d)
        self.assertEqual(chardevs(c)["s"]["filename"], "serial")
        # chardev-add of the same kind, while we hold the master.
        m2, s2 = pty.openpty()
        self.addCleanup(os.close, m2)
        self.addCleanup(os.close, s2)
        self.assertEqual(c.ok("chardev-add", {"id": "s2", "backend": backend(
            "serial", device=os.ttyname(s2))}), {})
        self.assertEqual(chardevs(c)["s2"]["filename"], "serial")
        c.ok("chardev-remove", {"id": "s2"})


class Null(Base):
    def test_null(self):
        # A monitor behind a hub of null and a socket: what it writes goes
        # to both, null drops its copy, and the socket client is served.
        d = self.start(["--chardev", "null,id=n",
                        "--chardev", "socket,id=s,path=@DIR@/s.sock,server=on,wait=off",
                        "--chardev", "hub,id=h,chardevs.0=n,chardevs.1=s", "--monitor", "h"])
        c = self.control(d)
        self.assertEqual(chardevs(c)["n"], {"label": "n", "filename": "null",
                                            "frontend-open": True})
        q = QMPClient.unix(d.path("s.sock"))
        self.addCleanup(q.close)
        self.talk(q, "null-too")
        for i in range(200):
            q.send_raw(b'{"execute":"query-qmp-schema","id":%d}\n' % i)
            self.assertEqual(q.read_reply()["id"], i)
        self.assertEqual(c.ok("chardev-add", {"id": "n2", "backend": backend("null")}), {})
        self.assertEqual(chardevs(c)["n2"], {"label": "n2", "filename": "null",
                                             "frontend-open": False})
        self.assertEqual(c.ok("chardev-send-break", {"id": "n2"}), {})
        self.assertEqual(c.ok("chardev-remove", {"id": "n2"}), {})
        self.assertNotIn("n2", chardevs(c))


class Udp(Base):
    def udp(self, port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", port))
        s.settimeout(5)
        return s

    def test_python_peer(self):
        here, there = free_udp_port(), free_udp_port()
        s = self.udp(here)  # bound first: the greeting, sent at start-up, arrives
        d = self.start(["--chardev", "udp,id=u,host=127.0.0.1,port=%d,localaddr=127.0.0.1,"
                        "localport=%d" % (here, there), "--monitor", "u"])
        s.connect(("127.0.0.1", there))
        q = QMPClient(s)
        self.talk(q, "by-datagram")
        self.assertEqual(chardevs(self.control(d))["u"],
                         {"label": "u", "filename": "udp", "frontend-open": True})
        # Each reply is one datagram.
        s.send(b'{"execute":"query-version","id":1}\n')
        data = s.recv(65536)
        self.assertTrue(data.endswith(b"\r\n") and data.count(b"\r\n") == 1, data)

    @requires("socat")
    def test_socat_peer(self):
        here, there = free_udp_port(), free_udp_port()
        peer = Peer(["socat", "-", "UDP-DATAGRAM:127.0.0.1:%d,bind=127.0.0.1:%d" % (there, here)])
        self.addCleanup(peer.stop)

        def bound():
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind(("127.0.0.1", here))
                return False
            except OSError:
                return True
        wait_for(bound, timeout=5, what="socat bound")
        self.start(["--chardev", "udp,id=u,host=127.0.0.1,port=%d,localaddr=127.0.0.1,"
                    "localport=%d" % (here, there), "--monitor", "u"])
        self.talk(peer.client, "socat-udp")


if __name__ == "__main__":
    unittest.main()
