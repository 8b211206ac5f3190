"""systemd integration, checked with systemd's own tools: the unit files
pass `systemd-analyze verify`; `systemd-socket-activate` starts the daemon
with inherited QMP and NBD sockets, found by number and by
FileDescriptorName; a NOTIFY_SOCKET of the test's own sees STATUS=, then
READY=1 only once the start-up exports answer, WATCHDOG=1 pings and
STOPPING=1.  Every socket is in a private directory; every wait is
bounded."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from daemon import VSTORD, stop_process, wait_for
from qmp import QMPClient

UNIT_DIR = os.path.join(os.path.dirname(VSTORD), "systemd")
ACTIVATE = shutil.which("systemd-socket-activate")
ANALYZE = shutil.which("systemd-analyze")
IS_VSTORD = os.path.basename(VSTORD) == "vstord"


def connect_when_listening(path, timeout=10.0):
    """A connection to path, retried while the socket file exists but is
    not listening yet (bind comes before listen)."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            return s
        except (ConnectionRefusedError, FileNotFoundError):
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def nbd_read(sock_path, name):
    p = subprocess.run(["nbdcopy", "nbd+unix:///%s?socket=%s" % (name, sock_path), "-"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    return p


class SystemdTestCase(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="vstord-test-sd-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.img = os.path.join(self.dir, "disk.img")
        self.data = os.urandom(256 * 1024)
        with open(self.img, "wb") as f:
            f.write(self.data)

    def path(self, name):
        return os.path.join(self.dir, name)

    def spawn(self, argv, env=None):
        err = open(self.path("stderr"), "wb")
        self.addCleanup(err.close)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=err, env=env)
        self.addCleanup(stop_process, p)
        return p

    def stderr(self):
        with open(self.path("stderr"), errors="replace") as f:
            return f.read()

    def export_args(self):
        return ["--blockdev", "driver=file,node-name=f0,filename=" + self.img,
                "--export", "type=nbd,id=e0,node-name=f0,name=d"]


# ===========================================================================
@unittest.skipUnless(ACTIVATE and IS_VSTORD, "needs systemd-socket-activate and vstord")
class SocketActivation(SystemdTestCase):
    def activate(self, qmp_fd, nbd_fd):
        qmp, nbd = self.path("qmp.sock"), self.path("nbd.sock")
        argv = [ACTIVATE, "-l", qmp, "-l", nbd, "--fdname=qmp:nbd", VSTORD,
                "--chardev", "socket,id=m,fd=%s,server=on,wait=off" % qmp_fd,
                "--monitor", "chardev=m",
                "--nbd-server", "addr.type=fd,addr.str=%s" % nbd_fd] + self.export_args()
        self.proc = self.spawn(argv)
        wait_for(lambda: os.path.exists(qmp) and os.path.exists(nbd) or
                 self.proc.poll() is not None, what="the activation sockets")
        self.assertIsNone(self.proc.poll(), self.stderr())
        # The first connection starts the daemon, which accepts it.
        q = QMPClient(connect_when_listening(qmp))
        self.addCleanup(q.close)
        q.negotiate()
        return q, nbd

    def check(self, q, nbd):
        self.assertIn("qemu", q.ok("query-version"))
        p = nbd_read(nbd, "d")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, self.data)
        # The daemon took the sockets: close-on-exec from then on, so
        # nothing it might start inherits them.
        for fd in (3, 4):
            with open("/proc/%d/fdinfo/%d" % (self.proc.pid, fd)) as f:
                flags = int(f.read().split("flags:")[1].split()[0], 8)
            self.assertTrue(flags & os.O_CLOEXEC, "fd %d flags %o" % (fd, flags))

    def test_sockets_by_name(self):
        q, nbd = self.activate("qmp", "nbd")
        self.check(q, nbd)

    def test_sockets_by_number(self):
        q, nbd = self.activate("3", "4")
        self.check(q, nbd)

    def test_unknown_name(self):
        argv = [ACTIVATE, "-l", self.path("qmp.sock"), "--fdname=qmp", VSTORD,
                "--nbd-server", "addr.type=fd,addr.str=nope"]
        p = self.spawn(argv)
        c = connect_when_listening(self.path("qmp.sock"))
        self.addCleanup(c.close)
        self.assertEqual(p.wait(20), 1)
        self.assertIn("Unable to parse FD number nope", self.stderr())


# ===========================================================================
@unittest.skipUnless(IS_VSTORD, "vstord only")
class Notify(SystemdTestCase):
    def setUp(self):
        super().setUp()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(self.notify.close)
        self.notify.bind(self.path("notify"))
        self.messages = []

    def env(self, **extra):
        env = dict(os.environ, NOTIFY_SOCKET=self.path("notify"))
        env.update(extra)
        return env

    def receive(self, want, timeout=10.0):
        """Messages until one has the field want; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                msg = self.notify.recv(4096).decode()
            except socket.timeout:
                break
            self.messages.append(msg)
            if want in msg.split("\n") or any(l.startswith(want) for l in msg.split("\n")):
                return msg
        self.fail("no %s in %r" % (want, self.messages))

    def test_ready_only_after_start_up(self):
        """A chardev server with wait=on holds start-up until a client
        comes: no READY=1 before; once it comes, the exports named after
        it answer the moment READY=1 arrives."""
        argv = [VSTORD, "--chardev",
                "socket,id=w,path=%s,server=on,wait=on" % self.path("wait.sock"),
                "--nbd-server", "addr.type=unix,addr.path=%s" % self.path("nbd.sock")
                ] + self.export_args()
        self.spawn(argv, env=self.env())
        status = self.receive("STATUS=Starting: --chardev")
        self.assertNotIn("READY=1", status)
        # The option's name only: arguments may hold secrets.
        self.assertIn("STATUS=Starting: --chardev\n", status + "\n")
        self.notify.settimeout(0.5)
        try:
            early = self.notify.recv(4096).decode()
        except socket.timeout:
            early = ""
        self.assertNotIn("READY=1", early)
        self.assertFalse(os.path.exists(self.path("nbd.sock")))
        c = connect_when_listening(self.path("wait.sock"))
        self.addCleanup(c.close)
        ready = self.receive("READY=1")
        p = nbd_read(self.path("nbd.sock"), "d")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, self.data)
        self.assertIn("STATUS=Running: 1 chardev(s), 1 block export(s)", ready)
        seen = "\n".join(self.messages)
        self.assertLess(seen.index("STATUS=Starting: --export"), seen.index("READY=1"))

    def test_stopping_and_status(self):
        proc = self.spawn([VSTORD] + self.export_args()[:2], env=self.env())
        self.receive("READY=1")
        proc.terminate()
        msg = self.receive("STOPPING=1")
        self.assertIn("STATUS=Shutting down (host-signal)", msg)
        self.assertEqual(proc.wait(10), 0)

    def test_watchdog(self):
        self.spawn([VSTORD], env=self.env(WATCHDOG_USEC="200000"))
        self.receive("READY=1")
        t = time.monotonic()
        for _ in range(3):
            self.receive("WATCHDOG=1", timeout=2)
        # Pings come at half the interval (100 ms), not all at once.
        self.assertGreater(time.monotonic() - t, 0.15)

    def test_no_watchdog_without_watchdog_usec(self):
        self.spawn([VSTORD], env=self.env())
        self.receive("READY=1")
        self.notify.settimeout(0.5)
        with self.assertRaises(socket.timeout):
            self.notify.recv(4096)


# ===========================================================================
@unittest.skipUnless(ANALYZE and os.path.isdir(UNIT_DIR), "needs systemd-analyze and built units")
class UnitFiles(SystemdTestCase):
    def units(self):
        """The built units in a directory of their own, ExecStart pointing
        at the binary under test, with an instance of each template."""
        out = self.path("units")
        os.mkdir(out)
        names = sorted(os.listdir(UNIT_DIR))
        for name in names:
            with open(os.path.join(UNIT_DIR, name)) as f:
                text = f.read()
            start = [l for l in text.splitlines() if l.startswith("ExecStart=")]
            if start:
                binary = start[0][len("ExecStart="):].split()[0]
                text = text.replace(binary, VSTORD)
            with open(os.path.join(out, name), "w") as f:
                f.write(text)
            if "@." in name:
                os.symlink(name, os.path.join(out, name.replace("@.", "@test.")))
        return out, names

    def test_expected_units(self):
        _, names = self.units()
        self.assertEqual(names, ["vstord-nbd.socket", "vstord-nbd@.socket", "vstord.service",
                                 "vstord.socket", "vstord@.service", "vstord@.socket"])

    def test_systemd_analyze_verify(self):
        out, _ = self.units()
        files = sorted(os.path.join(out, n) for n in os.listdir(out) if "@." not in n)
        p = subprocess.run([ANALYZE, "verify", "--man=no"] + files, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60,
                           env=dict(os.environ, SYSTEMD_UNIT_PATH=out + ":"))
        text = p.stdout.decode()
        # Complaints about this host's own units are not ours.
        ours = [l for l in text.splitlines() if "vstord" in l]
        self.assertEqual(p.returncode, 0, text)
        self.assertEqual(ours, [], text)

    def test_service_contract(self):
        with open(os.path.join(UNIT_DIR, "vstord.service")) as f:
            text = f.read()
        for line in ("Type=notify", "WatchdogSec=30s", "ProtectSystem=strict", "PrivateTmp=yes",
                     "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_SYS_ADMIN",
                     "Requires=vstord.socket vstord-nbd.socket"):
            self.assertIn(line + "\n", text)
        self.assertIn("fd=qmp", text)
        self.assertIn("addr.str=nbd", text)
        with open(os.path.join(UNIT_DIR, "vstord-nbd@.socket")) as f:
            text = f.read()
        self.assertIn("ListenStream=/run/vstord/%i/nbd.sock\n", text)
        self.assertIn("Service=vstord@%i.service\n", text)


if __name__ == "__main__":
    unittest.main()
