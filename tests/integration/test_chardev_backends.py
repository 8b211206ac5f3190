"""Character device commands across backends: chardev-send-break,
chardev-remove and the resources it frees, backends refused on purpose,
query-chardev-backends against what chardev-add accepts, the key=value
--chardev form of every backend, stdio, duplicate ids and missing paths.

The backends themselves are exercised with real peers in
test_chardev_sockets.py, test_chardev_fd_backends.py,
test_chardev_ringbuf.py and test_chardev_mux_hub.py.
"""

import os
import pty
import signal
import socket
import subprocess
import unittest

from chardev_helpers import (backend, chardevs, daemon_fds, fd_client, free_udp_port,
                             inet_addr, is_greeting, socket_server, tmpdir)
from daemon import VSTORD, Daemon, DaemonTestCase, free_port, monitor_args, two_monitors, \
    wait_for
from qmp import QMPClient

REFUSED = ("msmouse", "wctablet", "braille", "testdev", "vc")


def run_failing(args, timeout=10):
    """Runs vstord expecting it to stop at start-up; returns (rc, stderr)."""
    p = subprocess.run([VSTORD] + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stderr.decode(errors="replace")


def backend_kinds(client):
    """The ChardevBackend 'type' values, from query-qmp-schema."""
    schema = {e["name"]: e for e in client.ok("query-qmp-schema")}
    args = schema[schema["chardev-add"]["arg-type"]]
    union = schema[next(m["type"] for m in args["members"] if m["name"] == "backend")]
    tag = next(m for m in union["members"] if m["name"] == union["tag"])
    return schema[tag["type"]]["values"]


class SendBreak(DaemonTestCase):
    def test_unknown_and_existing(self):
        c = self.qmp()
        self.assertEqual(c.error("chardev-send-break", {"id": "x"})["desc"],
                         "Chardev 'x' not found")
        c.ok("chardev-add", {"id": "n", "backend": backend("null")})
        c.ok("chardev-add", {"id": "s", "backend": socket_server(self.daemon.path("s.sock"))})
        self.assertEqual(c.ok("chardev-send-break", {"id": "n"}), {})
        self.assertEqual(c.ok("chardev-send-break", {"id": "s"}), {})
        self.assertEqual(c.error("chardev-send-break", {})["desc"], "Parameter 'id' is missing")

    # A break must not reset a QMP session: QEMU's QMP monitor ignores
    # CHR_EVENT_BREAK.  (Regression test: vstord used to drop the client back
    # to capabilities negotiation; fixed in 635b067.  Also reached through
    # telnet IAC BRK and mux C-a b.)
    def test_break_keeps_the_monitor_session(self):
        d, a, b = two_monitors(self)
        self.assertEqual(a.ok("chardev-send-break", {"id": "m1"}), {})
        self.assertIn("qemu", b.ok("query-version"))


class Remove(DaemonTestCase):
    def test_busy_and_unknown(self):
        c = self.qmp()
        self.assertEqual(c.error("chardev-remove", {"id": "m0"})["desc"], "Chardev 'm0' is busy")
        self.assertEqual(c.error("chardev-remove", {"id": "nope"})["desc"],
                         "Chardev 'nope' not found")
        self.assertIn("qemu", c.ok("query-version"))

    def test_remove_releases_resources(self):
        c = self.qmp()
        d = self.daemon
        t = tmpdir(self)
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        os.mkfifo(os.path.join(t, "p.in"))
        os.mkfifo(os.path.join(t, "p.out"))
        sock, out, link = d.path("x.sock"), os.path.join(t, "out"), d.path("pty-link")
        n0 = d.fd_count()
        adds = {
            "sock": socket_server(sock),
            "file": backend("file", out=out),
            "pty": backend("pty", path=link),
            "pipe": backend("pipe", device=os.path.join(t, "p")),
            "udp": backend("udp", remote=inet_addr("127.0.0.1", free_udp_port())),
            "serial": backend("serial", device=os.ttyname(slave)),
            "ring": backend("ringbuf", size=1 << 16),
            "null": backend("null", logfile=os.path.join(t, "log")),
        }
        for id_, b in adds.items():
            c.ok("chardev-add", {"id": id_, "backend": b})
        peer = QMPClient.unix(sock)  # a client of the socket chardev
        self.addCleanup(peer.close)
        self.assertTrue(os.path.exists(sock))
        self.assertTrue(os.path.islink(link))
        self.assertIn(out, daemon_fds(d))
        self.assertGreater(d.fd_count(), n0 + 7)
        for id_ in adds:
            self.assertEqual(c.ok("chardev-remove", {"id": id_}), {})
        self.assertEqual(sorted(chardevs(c)), ["m0"])
        peer.expect_eof()
        self.assertFalse(os.path.exists(sock), "socket file removed")
        self.assertFalse(os.path.lexists(link), "pty link removed")
        with socket.socket(socket.AF_UNIX) as s, self.assertRaises(OSError):
            s.connect(sock)
        wait_for(lambda: d.fd_count() == n0, timeout=5, what="descriptors closed")
        self.assertNotIn(out, daemon_fds(d))
        # The ids are free again.
        c.ok("chardev-add", {"id": "sock", "backend": socket_server(sock)})
        self.assertTrue(os.path.exists(sock))


class Backends(DaemonTestCase):
    def test_refused_backends(self):
        c = self.qmp()
        for name in REFUSED:
            with self.subTest(backend=name):
                err = c.error("chardev-add", {"id": "x", "backend": backend(name)})
                self.assertEqual(err["class"], "GenericError")
                self.assertIn("'%s' is not a valid char driver name" % name, err["desc"])
                self.assertTrue(err["desc"].startswith("Failed to add chardev 'x': "))
        err = c.error("chardev-add", {"id": "x", "backend": backend("vc", width=80, rows=24)})
        self.assertIn("'vc' is not a valid char driver name", err["desc"])
        self.assertEqual(sorted(chardevs(c)), ["m0"])
        for name in REFUSED:
            with self.subTest(cli=name):
                rc, err = run_failing(["--chardev", "%s,id=x" % name])
                self.assertEqual(rc, 1)
                self.assertIn("'%s' is not a valid char driver name" % name, err)

    def test_listed_backends_are_exactly_the_accepted_ones(self):
        c = self.qmp()
        t = tmpdir(self)
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        os.mkfifo(os.path.join(t, "fifo"))
        c.ok("chardev-add", {"id": "base-mux", "backend": backend("null")})
        c.ok("chardev-add", {"id": "base-hub", "backend": backend("null")})
        valid = {
            "file": {"out": os.path.join(t, "file")},
            "serial": {"device": os.ttyname(slave)},
            # A real parallel port where the machine has one; else the
            # refusal must say why (checked below).
            "parallel": {"device": "/dev/parport0" if os.path.exists("/dev/parport0")
                         else "/dev/null"},
            "pipe": {"device": os.path.join(t, "fifo")},
            "socket": socket_server(os.path.join(t, "s.sock"))["data"],
            "udp": {"remote": inet_addr("127.0.0.1", free_udp_port())},
            "pty": {},
            "null": {},
            "mux": {"chardev": "base-mux"},
            "hub": {"chardevs": ["base-hub"]},
            "stdio": {},  # the daemon's stdin is /dev/null here
            "ringbuf": {"size": 64},
            "memory": {},
            "msmouse": {}, "wctablet": {}, "braille": {}, "testdev": {}, "vc": {},
        }
        kinds = backend_kinds(c)
        self.assertEqual(set(kinds), set(valid), "every schema backend is covered here")
        listed = [b["name"] for b in c.ok("query-chardev-backends")]
        self.assertEqual(len(listed), len(set(listed)), "no duplicates")
        self.assertLessEqual(set(listed), set(kinds))
        for kind in kinds:
            with self.subTest(backend=kind):
                r = c.cmd("chardev-add", {"id": "k-" + kind, "backend": backend(kind,
                                                                               **valid[kind])})
                if kind == "parallel" and not os.path.exists("/dev/parport0"):
                    self.assertIn("not a parallel port", r["error"]["desc"])
                elif kind in listed:
                    self.assertEqual(list(r), ["return"], r)
                else:
                    self.assertIn("error", r)
                    self.assertIn(kind, REFUSED)
        self.assertEqual(set(kinds) - set(listed), set(REFUSED))


class CommandLine(unittest.TestCase):
    def test_every_backend_in_key_value_form(self):
        t = tmpdir(self)
        os.mkfifo(os.path.join(t, "p.in"))
        os.mkfifo(os.path.join(t, "p.out"))
        ptys = [pty.openpty() for _ in range(2)]
        for m, s in ptys:
            self.addCleanup(os.close, m)
            self.addCleanup(os.close, s)
        tel = free_port()
        args = monitor_args() + [
            "--chardev", "file,id=f,path=%s/out,append=on" % t,
            "--chardev", "pipe,id=p,path=%s/p" % t,
            "--chardev", "pty,id=pt",
            "--chardev", "null,id=n",
            "--chardev", "ringbuf,id=rb,size=1024",
            "--chardev", "memory,id=mem",
            "--chardev", "udp,id=u,host=127.0.0.1,port=%d,localaddr=127.0.0.1,localport=%d"
            % (free_udp_port(), free_udp_port()),
            "--chardev", "serial,id=ser,path=" + os.ttyname(ptys[0][1]),
            "--chardev", "tty,id=tty,path=" + os.ttyname(ptys[1][1]),
            "--chardev", "socket,id=tel,host=127.0.0.1,port=%d,server=on,wait=off,telnet=on" % tel,
            "--chardev", "socket,id=mx,path=@DIR@/mx.sock,server=on,wait=off,mux=on",
            "--monitor", "mx",
            "--chardev", "unix,id=legacy,path=@DIR@/legacy.sock,server=on,wait=off",
            "--chardev", "null,id=hb",
            "--chardev", "hub,id=h,chardevs.0=hb",
            "--chardev", "stdio,id=io",
        ]
        d = Daemon(args)
        self.addCleanup(d.stop)
        c = d.qmp()
        self.addCleanup(c.close)
        info = chardevs(c)
        want = {"f": "file", "p": "pipe", "n": "null", "rb": "ringbuf", "mem": "memory",
                "u": "udp", "ser": "serial", "tty": "serial", "mx": "mux", "h": "hub",
                "hb": "null", "io": "stdio",
                "tel": "disconnected:telnet:127.0.0.1:%d,server=on" % tel,
                "mx-base": "disconnected:unix:%s,server=on" % d.path("mx.sock"),
                "legacy": "disconnected:unix:%s,server=on" % d.path("legacy.sock")}
        for id_, filename in want.items():
            self.assertEqual(info[id_]["filename"], filename, id_)
        self.assertRegex(info["pt"]["filename"], r"^pty:/dev/pts/\d+$")
        self.assertTrue(os.path.exists(os.path.join(t, "out")))
        # size= reached the ring.
        c.ok("ringbuf-write", {"device": "rb", "data": "y" * 3000})
        self.assertEqual(len(c.ok("ringbuf-read", {"device": "rb", "size": 5000})), 1024)
        # telnet=on reached the socket: negotiation comes first.
        with socket.create_connection(("127.0.0.1", tel), timeout=5) as s:
            self.assertTrue(s.recv(64).startswith(b"\xff\xfb"))
        # mux=on: a monitor on the mux answers.
        q = QMPClient.unix(d.path("mx.sock"))
        self.addCleanup(q.close)
        q.negotiate()
        self.assertIn("qemu", q.ok("query-version"))

    def test_monitor_on_stdio(self):
        p = subprocess.Popen([VSTORD, "--chardev", "stdio,id=io", "--monitor", "io"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)

        def stop():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            p.stdin.close()
            p.stdout.close()
        self.addCleanup(stop)
        q = fd_client(p.stdout.fileno(), p.stdin.fileno())
        self.assertTrue(is_greeting(q.greeting()))
        self.assertEqual(q.cmd("qmp_capabilities"), {"return": {}})
        self.assertEqual(q.cmd("query-chardev")["return"],
                         [{"label": "io", "filename": "stdio", "frontend-open": True}])
        self.assertEqual(q.cmd("quit"), {"return": {}})
        self.assertEqual(p.wait(5), 0)

    def test_two_stdio_refused(self):
        rc, err = run_failing(["--chardev", "stdio,id=a", "--chardev", "stdio,id=b"])
        self.assertEqual(rc, 1)
        self.assertIn("--chardev stdio,id=b: cannot use stdio by multiple character devices", err)
        d = Daemon(monitor_args())
        self.addCleanup(d.stop)
        c = d.qmp()
        self.addCleanup(c.close)
        c.ok("chardev-add", {"id": "a", "backend": backend("stdio")})
        self.assertEqual(c.error("chardev-add", {"id": "b", "backend": backend("stdio")})["desc"],
                         "Failed to add chardev 'b': cannot use stdio by multiple character "
                         "devices")

    def test_stdio_refused_with_daemonize(self):
        rc, err = run_failing(["--daemonize", "--chardev", "stdio,id=s"])
        self.assertEqual(rc, 1)
        self.assertIn("--chardev stdio,id=s: cannot use stdio with", err)

    def test_duplicate_ids(self):
        for args in (["--chardev", "null,id=a", "--chardev", "ringbuf,id=a"],
                     ["--chardev", "null,id=a,mux=on", "--chardev", "null,id=a-base"],
                     ["--chardev", "null,id=a-base", "--chardev", "null,id=a,mux=on"]):
            with self.subTest(args=args):
                rc, err = run_failing(args)
                self.assertEqual(rc, 1)
                self.assertIn("'a", err)
        d = Daemon(monitor_args())
        self.addCleanup(d.stop)
        c = d.qmp()
        self.addCleanup(c.close)
        t = tmpdir(self)
        c.ok("chardev-add", {"id": "a", "backend": backend("ringbuf")})
        for b in (backend("null"), backend("pty"), backend("file", out=os.path.join(t, "f")),
                  socket_server(os.path.join(t, "s.sock")), backend("ringbuf")):
            with self.subTest(backend=b["type"]):
                self.assertEqual(c.error("chardev-add", {"id": "a", "backend": b})["desc"],
                                 "Chardev with id 'a' already exists")
        self.assertFalse(os.path.exists(os.path.join(t, "s.sock")), "nothing was created")
        self.assertFalse(os.path.exists(os.path.join(t, "f")))
        self.assertEqual(chardevs(c)["a"]["filename"], "ringbuf")

    def test_missing_paths(self):
        d = Daemon(monitor_args())
        self.addCleanup(d.stop)
        c = d.qmp()
        self.addCleanup(c.close)
        t = tmpdir(self)
        gone = os.path.join(t, "no", "such")
        enoent = "Could not open '%s': No such file or directory" % gone
        cases = [
            (backend("file", out=gone), enoent),
            (backend("file", out=os.path.join(t, "o"), **{"in": gone}), enoent),
            (backend("pipe", device=gone), enoent),
            (backend("serial", device=gone), enoent),
            (backend("null", logfile=gone), "'%s'" % gone),
            (backend("pty", path=gone), "symlink"),
            (socket_server(gone), gone),
        ]
        for b, text in cases:
            with self.subTest(backend=b):
                err = c.error("chardev-add", {"id": "x", "backend": b})
                self.assertTrue(err["desc"].startswith("Failed to add chardev 'x': "), err)
                self.assertIn(text, err["desc"])
        self.assertEqual(sorted(chardevs(c)), ["m0"])
        self.assertEqual(os.listdir(t), ["o"])
        rc, err = run_failing(["--chardev", "file,id=f,path=" + gone])
        self.assertEqual((rc, enoent in err), (1, True), err)

    def test_size_suffixes(self):
        d = Daemon(monitor_args() + ["--chardev", "ringbuf,id=r,size=64k"])
        self.addCleanup(d.stop)
        c = d.qmp()
        self.addCleanup(c.close)
        c.ok("ringbuf-write", {"device": "r", "data": "z" * 70000})
        self.assertEqual(len(c.ok("ringbuf-read", {"device": "r", "size": 100000})), 65536)

    def test_negative_number_message(self):
        rc, err = run_failing(["--chardev", "ringbuf,id=r,size=-1"])
        self.assertEqual(rc, 1)
        self.assertIn("Parameter 'size' expects", err)


if __name__ == "__main__":
    unittest.main()
