"""Delegated opens: --open-hook-fd, the XDR protocol of open_hook.x, the
reference broker (vstord-open-broker) and brokers that misbehave.

The fake brokers here speak the protocol from the specification, encoded
by hand with struct, so the daemon's rpcgen-made marshalling is checked
against the bytes docs/open-hook.md describes.  Every fake broker runs on
one end of a socket pair in a thread of the test; every wait is bounded.
"""

import errno
import os
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
import unittest

from daemon import VSTORD, Daemon, monitor_args, stop_process, wait_for
from qmp import QMPClient

BROKER = os.path.join(os.path.dirname(VSTORD), "vstord-open-broker")
TIMEOUT = 1  # --open-hook-timeout for the hostile brokers

O_RDONLY, O_RDWR, O_CREAT = os.O_RDONLY, os.O_RDWR, os.O_CREAT


# -- the wire format, from the specification --------------------------------
def xdr_string(text):
    b = text.encode()
    return struct.pack(">I", len(b)) + b + b"\0" * (-len(b) % 4)


def request_bytes(serial, flags, mode, path):
    body = struct.pack(">II", flags, mode) + xdr_string(path)
    return struct.pack(">III", 12 + len(body), 1, serial) + body


def reply_bytes(serial, result, command=1):
    return struct.pack(">IIIi", 16, command, serial, result)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


class Request:
    def __init__(self, raw):
        self.raw = raw
        self.length, self.command, self.serial, self.flags, self.mode, n = \
            struct.unpack(">IIIIII", raw[:24])
        self.path = raw[24:24 + n].decode()


class FakeBroker(threading.Thread):
    """Answers requests on sock.  handler(broker, request) does the
    answering (broker.reply, broker.open_and_reply, ...); the default
    opens the path here and sends the descriptor."""

    def __init__(self, sock, handler=None):
        super().__init__(daemon=True)
        self.sock = sock
        self.sock.settimeout(30)
        self.handler = handler or (lambda b, r: b.open_and_reply(r))
        self.requests = []
        self.start()

    def run(self):
        try:
            while True:
                head = recv_exact(self.sock, 4)
                (length,) = struct.unpack(">I", head)
                req = Request(head + recv_exact(self.sock, length - 4))
                self.requests.append(req)
                self.handler(self, req)
        except (EOFError, OSError):
            pass

    def reply(self, serial, result, fd=None, command=1):
        data = reply_bytes(serial, result, command)
        if fd is None:
            self.sock.sendall(data)
        else:
            socket.send_fds(self.sock, [data], [fd])

    def open_and_reply(self, req):
        try:
            fd = os.open(req.path, req.flags, req.mode)
        except OSError as e:
            self.reply(req.serial, -e.errno)
            return
        try:
            self.reply(req.serial, 0, fd)
        finally:
            os.close(fd)


class OpenHookTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="vstord-test-hook-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.img = os.path.join(self.tmp, "target.img")
        with open(self.img, "wb") as f:
            f.write(b"\x5a" * 65536)

    def start(self, handler=None, extra=(), timeout=TIMEOUT):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(ours.close)
        self.broker = FakeBroker(ours, handler)
        args = monitor_args() + ["--open-hook-fd", str(theirs.fileno()),
                                 "--open-hook-timeout", str(timeout)] + list(extra)
        self.daemon = Daemon(args, pass_fds=[theirs.fileno()])
        theirs.close()
        self.addCleanup(self.daemon.stop)
        self.qmp = self.daemon.qmp()
        self.addCleanup(self.qmp.close)

    def add_file(self, name, path=None, **kw):
        args = {"driver": "file", "node-name": name, "filename": path or self.img}
        args.update(kw)
        return self.qmp.cmd("blockdev-add", args)

    def assert_alive(self):
        self.assertIsNone(self.daemon.proc.poll(), self.daemon.read_stderr())
        self.assertIn("qemu", self.qmp.ok("query-version"))


# ===========================================================================
class Protocol(OpenHookTestCase):
    def test_requests_are_the_documented_bytes(self):
        self.start()
        self.assertEqual(self.add_file("f0"), {"return": {}})
        # First the pidfile (at start-up), then the image.
        pid, img = self.broker.requests
        self.assertEqual(pid.raw, request_bytes(1, os.O_WRONLY | O_CREAT, 0o600,
                                                self.daemon.pidfile))
        self.assertEqual(img.raw, request_bytes(2, O_RDWR, 0o666, self.img))
        self.assertEqual(len(img.raw) % 4, 0)
        # The descriptor the broker sent is the one the node uses.
        with open(self.daemon.pidfile) as f:
            self.assertEqual(int(f.read()), self.daemon.pid)
        info = self.qmp.ok("query-open-hook")
        self.assertEqual(info, {"attached": True, "requests-in-flight": 0, "timeout": TIMEOUT})

    def test_chardev_paths_go_to_the_broker(self):
        self.start()
        out = os.path.join(self.tmp, "out.log")
        log = os.path.join(self.tmp, "null.log")
        self.qmp.ok("chardev-add", {"id": "c0", "backend": {"type": "file",
                                                           "data": {"out": out}}})
        self.qmp.ok("chardev-add", {"id": "c1", "backend": {"type": "null",
                                                           "data": {"logfile": log}}})
        paths = [r.path for r in self.broker.requests]
        self.assertIn(out, paths)
        self.assertIn(log, paths)
        self.assertTrue(os.path.exists(out) and os.path.exists(log))
        # A refused path fails chardev-add with the broker's errno.
        self.broker.handler = lambda b, r: b.reply(r.serial, -errno.EPERM)
        e = self.qmp.error("chardev-add", {"id": "c2", "backend": {
            "type": "file", "data": {"out": os.path.join(self.tmp, "no.log")}}})
        self.assertIn("Operation not permitted", e["desc"])
        self.assert_alive()

    def test_read_only_node_asks_for_read_only(self):
        self.start()
        self.assertEqual(self.add_file("f0", **{"read-only": True}), {"return": {}})
        self.assertEqual(self.broker.requests[-1].flags, O_RDONLY)

    def test_refusal_names_the_path(self):
        def deny(b, r):
            if r.path == self.img:
                b.reply(r.serial, -errno.EACCES)
            else:
                b.open_and_reply(r)
        self.start(deny)
        r = self.add_file("f0")
        self.assertEqual(r["error"]["desc"],
                         "Could not open '%s': Permission denied" % self.img)
        # A refusal is an answer: the broker stays.
        self.assertTrue(self.qmp.ok("query-open-hook")["attached"])
        self.assert_alive()

    def test_concurrent_requests_match_by_serial(self):
        """Two blockdev-adds from two monitors in flight at once; the
        broker answers the second first."""
        held = []
        other = os.path.join(self.tmp, "other.img")
        shutil.copy(self.img, other)

        def reverse(b, r):
            if r.path not in (self.img, other):
                b.open_and_reply(r)
                return
            held.append(r)
            if len(held) == 2:
                for req in reversed(held):
                    b.open_and_reply(req)
        self.start(reverse, extra=monitor_args("qmp2.sock", "m1"), timeout=10)
        q2 = self.daemon.qmp("qmp2.sock")
        self.addCleanup(q2.close)
        self.qmp.send_raw(b'{"execute":"blockdev-add","arguments":{"driver":"file",'
                          b'"node-name":"a","filename":"%s"}}\n' % self.img.encode())
        wait_for(lambda: len(held) == 1, what="the first request")
        self.assertEqual(q2.cmd("blockdev-add", {"driver": "file", "node-name": "b",
                                                 "filename": other}), {"return": {}})
        self.assertEqual(self.qmp.read_reply(), {"return": {}})
        self.assertNotEqual(held[0].serial, held[1].serial)
        names = {n["node-name"] for n in self.qmp.ok("query-named-block-nodes")}
        self.assertEqual(names, {"a", "b"})


# ===========================================================================
class HostileBrokers(OpenHookTestCase):
    """Each kind of misbehaviour: the one open fails with an error naming
    the path, the daemon goes on, and (where the broker is dropped)
    OPEN_HOOK_LOST tells, later opens fail at once, and open-hook-attach
    brings a new broker."""

    def misbehave(self, action):
        def handler(b, r):
            if r.path == self.img:
                action(b, r)
            else:
                b.open_and_reply(r)
        self.start(handler)

    def expect_failure(self, words):
        t = time.monotonic()
        r = self.add_file("f0")
        self.assertLess(time.monotonic() - t, TIMEOUT + 5)
        desc = r["error"]["desc"]
        self.assertTrue(desc.startswith("Could not open '%s': " % self.img), desc)
        self.assertIn(words, desc)
        self.assert_alive()

    def expect_dropped(self, reason):
        ev = self.qmp.read_event("OPEN_HOOK_LOST")
        self.assertIn(reason, ev["data"]["reason"])
        info = self.qmp.ok("query-open-hook")
        self.assertFalse(info["attached"])
        self.assertIn(reason, info["last-error"])
        # Later opens fail at once.
        t = time.monotonic()
        r = self.add_file("f1", os.path.join(self.tmp, "later.img"))
        self.assertLess(time.monotonic() - t, 0.5)
        self.assertIn("no broker is attached", r["error"]["desc"])
        self.reattach()

    def reattach(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(ours.close)
        FakeBroker(ours)
        r = self.qmp.cmd("getfd", {"fdname": "broker"}, fds=[theirs.fileno()])
        theirs.close()
        self.assertEqual(r, {"return": {}})
        self.assertEqual(self.qmp.cmd("open-hook-attach", {"fdname": "broker"}),
                         {"return": {}})
        self.assertEqual(self.add_file("f2"), {"return": {}})
        self.assertTrue(self.qmp.ok("query-open-hook")["attached"])

    def test_unknown_serial(self):
        self.misbehave(lambda b, r: b.reply(r.serial + 1000, 0))
        self.expect_failure("did not answer within")
        self.expect_dropped("did not answer within")

    def test_malformed_reply(self):
        self.misbehave(lambda b, r: b.sock.sendall(struct.pack(">III", 13, 1, r.serial) + b"x"))
        self.expect_failure("malformed reply")
        self.expect_dropped("malformed reply")

    def test_reply_of_the_wrong_command(self):
        self.misbehave(lambda b, r: b.reply(r.serial, 0, command=7))
        self.expect_failure("malformed reply")
        self.expect_dropped("malformed reply")

    def test_success_without_a_descriptor(self):
        self.misbehave(lambda b, r: b.reply(r.serial, 0))
        self.expect_failure("reported success but sent no descriptor")
        # The stream is still in step: the broker stays.
        self.assertTrue(self.qmp.ok("query-open-hook")["attached"])

    def test_positive_result(self):
        self.misbehave(lambda b, r: b.reply(r.serial, 5))
        self.expect_failure("the broker answered 5")

    def test_broker_hangs(self):
        self.misbehave(lambda b, r: None)
        self.expect_failure("did not answer within %d s" % TIMEOUT)
        self.expect_dropped("did not answer within")

    def test_broker_stops_halfway_through_a_reply(self):
        """Half a reply, then silence: the open fails after the time-out,
        and meanwhile the daemon serves other monitors."""
        def half(b, r):
            if r.path == self.img:
                b.sock.sendall(reply_bytes(r.serial, 0)[:6])
            else:
                b.open_and_reply(r)
        self.start(half, extra=monitor_args("qmp2.sock", "m1"))
        q2 = self.daemon.qmp("qmp2.sock")
        self.addCleanup(q2.close)
        self.qmp.send_raw(b'{"execute":"blockdev-add","arguments":{"driver":"file",'
                          b'"node-name":"f0","filename":"%s"}}\n' % self.img.encode())
        wait_for(lambda: any(r.path == self.img for r in self.broker.requests),
                 what="the request")
        t = time.monotonic()
        self.assertIn("qemu", q2.ok("query-version"))
        self.assertLess(time.monotonic() - t, 0.5)
        desc = self.qmp.read_reply()["error"]["desc"]
        self.assertIn("sent part of a reply and stopped", desc)
        self.assertTrue(desc.startswith("Could not open '%s'" % self.img), desc)
        self.assert_alive()

    def test_broker_dies(self):
        self.misbehave(lambda b, r: b.sock.shutdown(socket.SHUT_RDWR))
        self.expect_failure("closed the connection")
        self.expect_dropped("closed the connection")

    def test_attach_needs_a_stream_socket(self):
        self.start()
        with open(self.img, "rb") as f:
            self.qmp.ok("getfd", {"fdname": "file"}, fds=[f.fileno()])
        e = self.qmp.error("open-hook-attach", {"fdname": "file"})
        self.assertEqual(e["desc"], "The open hook needs a unix stream socket")
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.qmp.ok("getfd", {"fdname": "second"}, fds=[theirs.fileno()])
        theirs.close()
        e = self.qmp.error("open-hook-attach", {"fdname": "second"})
        self.assertEqual(e["desc"], "An open-hook broker is attached already")
        self.assert_alive()


# ===========================================================================
class CommandLine(unittest.TestCase):
    def run_daemon(self, *args, pass_fds=()):
        return subprocess.run([VSTORD] + list(args), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20,
                              pass_fds=pass_fds)

    def test_fd_not_open(self):
        p = self.run_daemon("--open-hook-fd", "987")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"--open-hook-fd 987: not an open file descriptor", p.stderr)

    def test_fd_not_a_socket(self):
        with tempfile.TemporaryFile() as f:
            p = self.run_daemon("--open-hook-fd", str(f.fileno()), pass_fds=[f.fileno()])
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"The open hook needs a unix stream socket", p.stderr)

    def test_bad_numbers(self):
        for args in (["--open-hook-fd", "x"], ["--open-hook-timeout", "0"],
                     ["--open-hook-timeout", "soon"]):
            p = self.run_daemon(*args)
            self.assertEqual(p.returncode, 1, args)
            self.assertIn(args[0].encode(), p.stderr)

    def test_query_without_a_hook(self):
        d = Daemon(monitor_args())
        self.addCleanup(d.stop)
        q = d.qmp()
        self.addCleanup(q.close)
        e = q.error("query-open-hook")
        self.assertEqual(e["desc"], "The open hook is not in use (start with --open-hook-fd)")
        # A wrong descriptor given to open-hook-attach turns nothing on.
        with tempfile.TemporaryFile() as f:
            q.ok("getfd", {"fdname": "file"}, fds=[f.fileno()])
        self.assertEqual(q.error("open-hook-attach", {"fdname": "file"})["desc"],
                         "The open hook needs a unix stream socket")
        self.assertIn("not in use", q.error("query-open-hook")["desc"])
        img = d.path("local.img")
        with open(img, "wb") as f:
            f.truncate(65536)
        q.ok("blockdev-add", {"driver": "file", "node-name": "f0", "filename": img})


# ===========================================================================
@unittest.skipUnless(os.path.exists(BROKER), "vstord-open-broker not built")
class ReferenceBroker(unittest.TestCase):
    """vstord-open-broker with a policy file, in front of a daemon."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="vstord-test-broker-")
        os.chmod(self.tmp, 0o711)  # the run directory inside must be reachable
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.images = os.path.join(self.tmp, "images")
        os.mkdir(self.images, 0o700)
        self.img = os.path.join(self.images, "disk.img")
        self.data = os.urandom(1 << 20)
        with open(self.img, "wb") as f:
            f.write(self.data)
        # The daemon's own directory (sockets, pidfile) may be anybody's.
        self.run_dir = os.path.join(self.tmp, "run")
        os.mkdir(self.run_dir)
        os.chmod(self.run_dir, 0o777)
        self.policy = os.path.join(self.tmp, "policy")
        with open(self.policy, "w") as f:
            f.write("# test policy\nallow rw %s\nallow rw %s\n" % (self.images, self.run_dir))
        self.log = os.path.join(self.tmp, "broker.log")

    def start(self, unprivileged=False, broker=True):
        argv = [VSTORD,
                "--chardev", "socket,id=m,path=%s/qmp.sock,server=on,wait=off" % self.run_dir,
                "--monitor", "chardev=m",
                "--nbd-server", "addr.type=unix,addr.path=%s/nbd.sock" % self.run_dir,
                "--pidfile", "%s/pid" % self.run_dir]
        if unprivileged:
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + argv
        pass_fds = []
        if broker:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.broker = subprocess.Popen(
                [BROKER, "--policy", self.policy, "--log", self.log, "--fd",
                 str(ours.fileno())], pass_fds=[ours.fileno()], stdin=subprocess.DEVNULL)
            self.addCleanup(stop_process, self.broker)
            ours.close()
            argv += ["--open-hook-fd", str(theirs.fileno())]
            pass_fds = [theirs.fileno()]
        err = open(os.path.join(self.tmp, "stderr"), "wb")
        self.addCleanup(err.close)
        self.daemon = subprocess.Popen(argv, pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                                       stderr=err)
        self.addCleanup(stop_process, self.daemon)
        if broker:
            theirs.close()
        wait_for(lambda: os.path.exists("%s/pid" % self.run_dir) or
                 self.daemon.poll() is not None, what="pidfile")
        self.assertIsNone(self.daemon.poll(), open(os.path.join(self.tmp, "stderr")).read())
        self.qmp = QMPClient.unix("%s/qmp.sock" % self.run_dir)
        self.addCleanup(self.qmp.close)
        self.qmp.negotiate()

    def broker_log(self):
        with open(self.log) as f:
            return f.read()

    def add(self, name, path, **kw):
        args = {"driver": "file", "node-name": name, "filename": path}
        args.update(kw)
        return self.qmp.cmd("blockdev-add", args)

    def export_and_read(self):
        self.qmp.ok("block-export-add", {"type": "nbd", "id": "e0", "node-name": "f0"})
        uri = "nbd+unix:///f0?socket=%s/nbd.sock" % self.run_dir
        p = subprocess.run(["nbdcopy", uri, "-"], stdout=subprocess.PIPE, timeout=60,
                           check=True)
        return p.stdout

    def test_export_through_the_broker(self):
        self.start()
        self.assertEqual(self.add("f0", self.img), {"return": {}})
        self.assertEqual(self.export_and_read(), self.data)
        log = self.broker_log()
        self.assertIn("allow %s O_RDWR" % self.img, log)
        self.assertIn("allow %s/pid O_WRONLY|O_CREAT" % self.run_dir, log)

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"),
                         "needs root and setpriv to run the daemon as another user")
    def test_unprivileged_daemon_exports_through_the_broker(self):
        """As nobody the daemon cannot open the image (its directory is
        root's, mode 0700); through the broker it exports it."""
        self.start(unprivileged=True, broker=False)
        r = self.add("f0", self.img)
        self.assertEqual(r["error"]["desc"], "Could not open '%s': Permission denied" % self.img)
        self.qmp.close()
        stop_process(self.daemon)
        os.unlink("%s/pid" % self.run_dir) if os.path.exists("%s/pid" % self.run_dir) else None
        self.start(unprivileged=True)
        status = open("/proc/%d/status" % self.daemon.pid).read()
        self.assertIn("Uid:\t65534", status)
        self.assertEqual(self.add("f0", self.img), {"return": {}})
        self.assertEqual(self.export_and_read(), self.data)

    def test_policy_refusals(self):
        outside = os.path.join(self.tmp, "outside.img")
        with open(outside, "wb") as f:
            f.write(b"secret" * 100)
        os.symlink(outside, os.path.join(self.images, "link.img"))
        with open(self.policy, "a") as f:
            f.write("allow r %s\n" % os.path.join(self.tmp, "ro"))
        os.mkdir(os.path.join(self.tmp, "ro"))
        ro_img = os.path.join(self.tmp, "ro", "r.img")
        shutil.copy(self.img, ro_img)
        # A link beneath the rw directory into a stricter subdirectory.
        sub = os.path.join(self.images, "sub")
        os.mkdir(sub)
        shutil.copy(self.img, os.path.join(sub, "s.img"))
        os.symlink("sub/s.img", os.path.join(self.images, "into-sub.img"))
        with open(self.policy, "a") as f:
            f.write("allow r %s\n" % sub)
        self.start()
        cases = [
            (outside, "Permission denied"),
            (self.images + "/../outside.img", "Permission denied"),
            (os.path.join(self.images, "link.img"), "Invalid cross-device link"),
            (ro_img, "Permission denied"),  # writable open under an r rule
            (os.path.join(self.images, "into-sub.img"), "Permission denied"),
        ]
        for i, (path, words) in enumerate(cases):
            r = self.add("n%d" % i, path)
            self.assertEqual(r["error"]["desc"], "Could not open '%s': %s" % (path, words), path)
        # Read-only is what the r rule grants.
        self.assertEqual(self.add("ro", ro_img, **{"read-only": True}), {"return": {}})
        log = self.broker_log()
        self.assertIn("deny %s O_RDWR" % outside, log)
        self.assertIn("outside every allowed directory", log)
        self.assertIn("not an absolute path without . or ..", log)
        self.assertIn("allow %s O_RDONLY" % ro_img, log)
        self.assertIn("resolves to %s/s.img, which the policy does not grant" % sub, log)
        self.assertIsNone(self.daemon.poll())

    def test_command_mode_runs_the_daemon(self):
        """vstord-open-broker -- vstord ... --open-hook-fd 3: the broker
        starts the daemon and ends with it."""
        argv = [BROKER, "--policy", self.policy, "--log", self.log, "--", VSTORD,
                "--chardev", "socket,id=m,path=%s/qmp.sock,server=on,wait=off" % self.run_dir,
                "--monitor", "chardev=m", "--pidfile", "%s/pid" % self.run_dir,
                "--blockdev", "driver=file,node-name=f0,filename=%s" % self.img,
                "--open-hook-fd", "3"]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        self.addCleanup(stop_process, p)
        wait_for(lambda: os.path.exists("%s/pid" % self.run_dir) or p.poll() is not None,
                 what="pidfile")
        self.assertIsNone(p.poll())
        q = QMPClient.unix("%s/qmp.sock" % self.run_dir)
        q.negotiate()
        q.ok("quit")
        q.close()
        self.assertEqual(p.wait(20), 0)
        self.assertIn("allow %s O_RDWR" % self.img, self.broker_log())


if __name__ == "__main__":
    unittest.main()
