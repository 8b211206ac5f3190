"""A small QMP client for tests: raw bytes in and out, messages parsed.

Deliberately independent of the daemon's code, so tests check the wire,
not our own assumptions about it.
"""

import json
import socket
import time


def connect_unix(path, timeout):
    """A connected unix stream socket (closed again if connecting fails)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except BaseException:
        s.close()
        raise
    return s


def connect_inet(host, port, timeout):
    """A connected TCP socket to host (IPv4 or IPv6) and port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, int(port)))
    except BaseException:
        s.close()
        raise
    return s


class QMPClient:
    def __init__(self, sock: socket.socket, timeout: float = 10.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""
        self.events = []

    # -- connecting -------------------------------------------------------
    @classmethod
    def unix(cls, path, timeout=10.0):
        return cls(connect_unix(path, timeout), timeout)

    @classmethod
    def inet(cls, host, port, timeout=10.0):
        return cls(connect_inet(host, port, timeout), timeout)

    @classmethod
    def abstract(cls, name, timeout=10.0):
        """Connects to a unix socket in the abstract namespace."""
        return cls.unix("\0" + name, timeout)

    def close(self):
        self.sock.close()

    # -- raw --------------------------------------------------------------
    def send_raw(self, data: bytes, fds=()):
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.sendall(data)

    def read_line(self) -> bytes:
        """One CRLF-terminated line, without the CRLF."""
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; pending: %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_msg(self):
        return json.loads(self.read_line())

    def read_value(self):
        """One JSON value that may span several lines (a pretty monitor).

        Returns (value, raw bytes of the value including its line ends)."""
        dec = json.JSONDecoder()
        while True:
            text = self.buf.lstrip(b" \t\r\n")
            skipped = len(self.buf) - len(text)
            # A complete value ends with a CRLF-terminated '}' line.
            end = text.find(b"}\r\n")
            while end >= 0:
                try:
                    value, n = dec.raw_decode(text[:end + 1].decode())
                except ValueError:
                    end = text.find(b"}\r\n", end + 1)
                    continue
                if n == end + 1:
                    raw = self.buf[:skipped + end + 3]
                    self.buf = self.buf[skipped + end + 3:]
                    return value, raw
                end = text.find(b"}\r\n", end + 1)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; pending: %r" % self.buf)
            self.buf += chunk

    def read_until(self, pred, limit=100):
        """Reads messages until one satisfies pred; returns (it, those before)."""
        before = []
        for _ in range(limit):
            msg = self.read_msg()
            if pred(msg):
                return msg, before
            before.append(msg)
        raise AssertionError("no matching message in %d: %r" % (limit, before[-5:]))

    def read_reply(self):
        """The next message that is not an event (events are kept)."""
        while True:
            msg = self.read_msg()
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    def read_event(self, name=None, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if name is None or ev["event"] == name:
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                raise TimeoutError("no event %s" % name)
            msg = self.read_msg()
            if "event" not in msg:
                raise AssertionError("unexpected reply while waiting for event: %r" % msg)
            self.events.append(msg)

    def expect_eof(self, timeout=5.0):
        self.sock.settimeout(timeout)
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            self.buf += chunk

    # -- protocol ---------------------------------------------------------
    def greeting(self):
        return self.read_msg()

    def cmd(self, name, args=None, id=None, oob=False, fds=()):
        req = {"exec-oob" if oob else "execute": name}
        if args is not None:
            req["arguments"] = args
        if id is not None:
            req["id"] = id
        self.send_raw(json.dumps(req).encode() + b"\n", fds)
        return self.read_reply()

    def negotiate(self, oob=False):
        g = self.greeting()
        assert "QMP" in g, g
        r = self.cmd("qmp_capabilities", {"enable": ["oob"]} if oob else None)
        assert r == {"return": {}}, r
        return g

    def ok(self, name, args=None, **kw):
        r = self.cmd(name, args, **kw)
        if "return" not in r:
            raise AssertionError("%s failed: %r" % (name, r))
        return r["return"]

    def error(self, name, args=None, **kw):
        r = self.cmd(name, args, **kw)
        if "error" not in r:
            raise AssertionError("%s unexpectedly succeeded: %r" % (name, r))
        return r["error"]
