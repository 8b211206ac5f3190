"""Starting and stopping the daemon under test (and the reference daemon).

Every process is started here and stopped by its own PID.  Servers listen
on unix sockets in a private temporary directory or on loopback.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from qmp import QMPClient

VSTORD = os.environ.get("VSTORD", "vstord")
QSD = shutil.which("qemu-storage-daemon")


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise TimeoutError("timed out waiting for " + what)


class Daemon:
    """A running daemon with its temporary directory."""

    def __init__(self, args, binary=VSTORD, pidfile=True, pass_fds=(), env=None,
                 wait_ready=True):
        self.dir = tempfile.mkdtemp(prefix="vstord-test-")
        self.pidfile = os.path.join(self.dir, "pid") if pidfile else None
        argv = [binary] + [a.replace("@DIR@", self.dir) for a in args]
        if self.pidfile:
            argv += ["--pidfile", self.pidfile]
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.stderr, pass_fds=pass_fds, env=env)
        if wait_ready and self.pidfile:
            wait_for(lambda: os.path.exists(self.pidfile) or self.proc.poll() is not None,
                     what="pidfile")
            if self.proc.poll() is not None:
                msg = self.read_stderr()
                self.stop()
                raise RuntimeError("daemon exited early: %s" % msg)

    def path(self, name):
        return os.path.join(self.dir, name)

    def read_stderr(self):
        self.stderr.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def qmp(self, sock="qmp.sock", negotiate=True, oob=False):
        c = QMPClient.unix(self.path(sock))
        if negotiate:
            c.negotiate(oob=oob)
        return c

    @property
    def pid(self):
        return self.proc.pid

    def rss_kb(self):
        """The daemon's resident set size in KiB (from /proc)."""
        return proc_rss_kb(self.proc.pid)

    def fd_count(self):
        """How many descriptors the daemon has open."""
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def wait(self, timeout=10.0):
        return self.proc.wait(timeout)

    def stop(self):
        stop_process(self.proc)
        self.stderr.close()
        if self.proc.stdout:
            self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def stop_process(proc, timeout=10):
    """SIGTERM to a process the test started, SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def proc_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago on host."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def monitor_args(sock="qmp.sock", id="m0"):
    return ["--chardev", "socket,id=%s,path=@DIR@/%s,server=on,wait=off" % (id, sock),
            "--monitor", "chardev=" + id]


class DaemonTestCase(unittest.TestCase):
    """Starts a daemon with one QMP monitor before each test."""

    extra_args = []

    def setUp(self):
        self.daemon = Daemon(monitor_args() + self.extra_args)
        self.addCleanup(self.daemon.stop)

    def qmp(self, **kw):
        c = self.daemon.qmp(**kw)
        self.addCleanup(c.close)
        return c


def two_monitors(test):
    """A daemon with monitors on a.sock and b.sock, both negotiated, all
    cleaned up with the test.  Returns (daemon, client_a, client_b)."""
    d = Daemon(monitor_args("a.sock", "m0") + monitor_args("b.sock", "m1"))
    test.addCleanup(d.stop)
    a, b = d.qmp("a.sock"), d.qmp("b.sock")
    test.addCleanup(a.close)
    test.addCleanup(b.close)
    return d, a, b


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False
