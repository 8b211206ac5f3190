"""Helpers shared by the character device backend tests (test_chardev_*.py).

QMPClient speaks through anything with settimeout/recv/sendall/close, so
FdSock lets the same client talk QMP through a pty, a FIFO pair or the
pipes of a helper process (socat, telnet).  Every wait is bounded.
"""

import errno
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from daemon import Daemon, ipv6_loopback, monitor_args  # noqa: F401 (re-exported)
from qmp import QMPClient


class FdSock:
    """A socket-like object over file descriptors (read side, write side)."""

    def __init__(self, rfd, wfd=None, owned=()):
        self.rfd = rfd
        self.wfd = rfd if wfd is None else wfd
        self.owned = list(owned)  # descriptors close() closes
        self.timeout = 10.0

    def settimeout(self, timeout):
        self.timeout = timeout

    def recv(self, n):
        r, _, _ = select.select([self.rfd], [], [], self.timeout)
        if not r:
            raise TimeoutError("no data within %.2fs" % self.timeout)
        try:
            return os.read(self.rfd, n)
        except BlockingIOError:
            return self.recv(n)
        except OSError as e:
            if e.errno == errno.EIO:  # a pty whose other side went away
                return b""
            raise

    def sendall(self, data):
        deadline = time.monotonic() + self.timeout
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("could not write within %.2fs" % self.timeout)
            _, w, _ = select.select([], [self.wfd], [], left)
            if not w:
                continue
            try:
                n = os.write(self.wfd, view)
            except BlockingIOError:
                continue
            view = view[n:]

    def close(self):
        for fd in self.owned:
            try:
                os.close(fd)
            except OSError:
                pass
        self.owned = []


def fd_client(rfd, wfd=None, owned=(), timeout=10.0):
    return QMPClient(FdSock(rfd, wfd, owned), timeout)


def requires(program):
    """Skips a test when a peer program (socat, telnet) is not installed."""
    return unittest.skipUnless(shutil.which(program), program + " is not installed")


class Peer:
    """A helper program (socat, telnet) whose stdin/stdout carry the bytes.

    Stopped by its own PID (Popen.kill) at cleanup."""

    def __init__(self, argv, stderr=subprocess.DEVNULL):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr)
        self.client = fd_client(self.proc.stdout.fileno(), self.proc.stdin.fileno())

    def close_input(self):
        self.proc.stdin.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def read_quiet(client, quiet=0.3, limit=5.0):
    """Whatever arrives until the peer is silent for 'quiet' seconds (at most
    'limit' seconds in all).  Returns bytes; b"<EOF>" is appended at EOF."""
    out = client.buf
    client.buf = b""
    deadline = time.monotonic() + limit
    client.sock.settimeout(quiet)
    try:
        while time.monotonic() < deadline:
            try:
                chunk = client.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            if not chunk:
                out += b"<EOF>"
                break
            out += chunk
    finally:
        client.sock.settimeout(10.0)
    return out


# -- QAPI values -------------------------------------------------------------

def backend(type_, **data):
    return {"type": type_, "data": data}


def unix_addr(path):
    return {"type": "unix", "data": {"path": path}}


def inet_addr(host, port):
    return {"type": "inet", "data": {"host": host, "port": str(port)}}


def socket_server(path, **opts):
    data = {"addr": unix_addr(path), "server": True, "wait": False}
    data.update(opts)
    return {"type": "socket", "data": data}


def chardevs(client):
    """query-chardev as {label: info}."""
    return {i["label"]: i for i in client.ok("query-chardev")}


def free_udp_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tmpdir(test):
    t = tempfile.TemporaryDirectory(prefix="vstord-chr-")
    test.addCleanup(t.cleanup)
    return t.name


def daemon_fds(daemon):
    """The targets of the daemon's open descriptors."""
    out = []
    base = "/proc/%d/fd" % daemon.pid
    for name in os.listdir(base):
        try:
            out.append(os.readlink(os.path.join(base, name)))
        except OSError:
            pass
    return out


def is_greeting(msg):
    return isinstance(msg, dict) and "QMP" in msg and "capabilities" in msg["QMP"]


NOT_NEGOTIATED = "Expecting capabilities negotiation with 'qmp_capabilities'"


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


class ChardevTestCase(unittest.TestCase):
    """A daemon with a control monitor per test, cleaned up with it."""

    def start(self, args, **kw):
        d = Daemon(monitor_args() + args, **kw)
        self.addCleanup(d.stop)
        return d

    def control(self, d):
        c = d.qmp()
        self.addCleanup(c.close)
        return c
