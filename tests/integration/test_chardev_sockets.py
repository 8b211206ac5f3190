"""The socket character device backend with real peers: socat and python
clients, IPv4/IPv6 loopback, one client at a time, client mode with
reconnection, telnet (python and the telnet program), the logfile
options, chardev-change, and peers that flood it with garbage.

Servers listen only on unix sockets in private directories or on
loopback.
"""

import json
import os
import random
import re
import select
import socket
import subprocess
import threading
import time
import unittest
from datetime import datetime, timezone

from chardev_helpers import (NOT_NEGOTIATED, ChardevTestCase, read_file, Peer, chardevs, ipv6_loopback, is_greeting, read_quiet, requires,
                             socket_server, tmpdir)
from daemon import Daemon, free_port, monitor_args, wait_for
from qmp import QMPClient

class Base(ChardevTestCase):
    def client(self, c):
        self.addCleanup(c.close)
        return c

    def listener(self, path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.bind(path)
        s.listen(4)
        s.settimeout(5)
        return s

    def accept(self, listener):
        conn, _ = listener.accept()
        self.addCleanup(conn.close)
        return QMPClient(conn)


class SocketServer(Base):
    @requires("socat")
    def test_unix_server_with_socat_client(self):
        d = self.start(["--chardev", "socket,id=s,path=@DIR@/s.sock,server=on,wait=off",
                        "--monitor", "s"])
        c = self.control(d)
        path = d.path("s.sock")
        self.assertEqual(chardevs(c)["s"]["filename"], "disconnected:unix:%s,server=on" % path)
        peer = Peer(["socat", "-", "UNIX-CONNECT:" + path])
        self.addCleanup(peer.stop)
        q = peer.client
        self.assertTrue(is_greeting(q.greeting()))
        self.assertEqual(q.cmd("qmp_capabilities"), {"return": {}})
        r = q.cmd("query-version", id="via-socat")
        self.assertEqual(r["id"], "via-socat")
        self.assertIn("qemu", r["return"])
        wait_for(lambda: chardevs(c)["s"]["filename"] == "unix:%s,server=on" % path,
                 timeout=5, what="connected filename")
        # socat ends when its input ends; the daemon sees the peer go.
        peer.close_input()
        peer.proc.wait(5)
        wait_for(lambda: chardevs(c)["s"]["filename"].startswith("disconnected:"),
                 timeout=5, what="disconnected filename")

    @requires("socat")
    def test_socat_half_close_gets_every_reply(self):
        d = self.start(["--chardev", "socket,id=s,path=@DIR@/s.sock,server=on,wait=off",
                        "--monitor", "s"])
        script = (b'{"execute":"qmp_capabilities"}\n'
                  + b"".join(b'{"execute":"query-version","id":%d}\n' % i for i in range(5)))
        p = subprocess.run(["socat", "-t", "5", "-", "UNIX-CONNECT:" + d.path("s.sock")],
                           input=script, capture_output=True, timeout=15)
        lines = [l for l in p.stdout.split(b"\r\n") if l]
        self.assertEqual(len(lines), 7, p.stdout)
        self.assertIn(b'"QMP"', lines[0])
        for i in range(5):
            self.assertIn(b'"id": %d' % i, lines[2 + i])

    def test_inet_ipv4_and_ipv6_loopback(self):
        p4 = free_port()
        args = ["--chardev", "socket,id=i4,host=127.0.0.1,port=%d,server=on,wait=off" % p4,
                "--monitor", "i4"]
        v6 = ipv6_loopback()
        if v6:
            p6 = free_port("::1")
            args += ["--chardev", "socket,id=i6,host=::1,port=%d,server=on,wait=off" % p6,
                     "--monitor", "i6"]
        d = self.start(args)
        c = self.control(d)
        a = self.client(QMPClient.inet("127.0.0.1", p4))
        a.negotiate()
        self.assertIn("qemu", a.ok("query-version"))
        local = a.sock.getsockname()[1]
        self.assertEqual(chardevs(c)["i4"]["filename"],
                         "tcp:127.0.0.1:%d,server=on <-> 127.0.0.1:%d" % (p4, local))
        if v6:
            b = self.client(QMPClient.inet("::1", p6))
            b.negotiate()
            self.assertIn("qemu", b.ok("query-version"))
            local = b.sock.getsockname()[1]
            self.assertEqual(chardevs(c)["i6"]["filename"],
                             "tcp:[::1]:%d,server=on <-> [::1]:%d" % (p6, local))

    def test_one_client_at_a_time(self):
        d = self.start(["--chardev", "socket,id=s,path=@DIR@/s.sock,server=on,wait=off",
                        "--monitor", "s"])
        path = d.path("s.sock")
        first = self.client(QMPClient.unix(path))
        first.negotiate()
        second = self.client(QMPClient.unix(path))  # waits in the listen backlog
        self.assertEqual(read_quiet(second, 0.3), b"", "no greeting while the first is there")
        self.assertIn("qemu", first.ok("query-version"))
        self.assertEqual(read_quiet(second, 0.1), b"")
        first.close()
        second.sock.settimeout(5)
        self.assertTrue(is_greeting(second.greeting()))
        self.assertEqual(second.cmd("query-version")["error"]["desc"], NOT_NEGOTIATED)
        self.assertEqual(second.cmd("qmp_capabilities"), {"return": {}})
        self.assertIn("qemu", second.ok("query-version"))


class SocketClient(Base):
    def test_client_mode_connects_to_listener(self):
        t = tmpdir(self)
        lpath = os.path.join(t, "l.sock")
        lst = self.listener(lpath)
        port = free_port()
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(tcp.close)
        tcp.bind(("127.0.0.1", port))
        tcp.listen(1)
        tcp.settimeout(5)
        d = self.start(["--chardev", "socket,id=cu,path=%s,server=off" % lpath, "--monitor", "cu",
                        "--chardev", "socket,id=ct,host=127.0.0.1,port=%d" % port,
                        "--monitor", "ct"])
        c = self.control(d)
        for q in (self.accept(lst), self.accept(tcp)):
            q.negotiate()
            self.assertIn("qemu", q.ok("query-version"))
        info = chardevs(c)
        # (For a connected unix client QEMU shows its own unnamed address,
        # "unix:"; vstord shows the path it connected to.)
        self.assertTrue(info["cu"]["filename"].startswith("unix:"), info["cu"]["filename"])
        self.assertTrue(info["ct"]["filename"].startswith("tcp:127.0.0.1:"),
                        info["ct"]["filename"])
        self.assertNotIn("server=on", info["ct"]["filename"])
        self.assertTrue(info["ct"]["frontend-open"])

    def test_client_filename_shows_local_and_peer(self):
        port = free_port()
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(tcp.close)
        tcp.bind(("127.0.0.1", port))
        tcp.listen(1)
        tcp.settimeout(5)
        d = self.start(["--chardev", "socket,id=ct,host=127.0.0.1,port=%d" % port])
        conn, peer = tcp.accept()
        self.addCleanup(conn.close)
        self.assertEqual(chardevs(self.control(d))["ct"]["filename"],
                         "tcp:127.0.0.1:%d <-> 127.0.0.1:%d" % (peer[1], port))

    def test_reconnect_ms(self):
        t = tmpdir(self)
        lpath = os.path.join(t, "l.sock")
        lst = self.listener(lpath)
        d = self.start(["--chardev", "socket,id=r,path=%s,reconnect-ms=100" % lpath,
                        "--monitor", "r"])
        c = self.control(d)
        q = self.accept(lst)
        q.negotiate()
        self.assertIn("qemu", q.ok("query-version"))
        q.close()
        # The daemon serves its other monitor meanwhile and comes back by itself.
        self.assertIn("qemu", c.ok("query-version"))
        q2 = self.accept(lst)
        self.assertTrue(is_greeting(q2.greeting()))
        self.assertEqual(q2.cmd("query-version")["error"]["desc"], NOT_NEGOTIATED,
                         "a reconnection is a new QMP session")
        self.assertEqual(q2.cmd("qmp_capabilities"), {"return": {}})
        self.assertIn("qemu", q2.ok("query-version"))
        self.assertIn("qemu", c.ok("query-version"))
        self.assertEqual(chardevs(c)["r"]["filename"], "unix:" + lpath)

    def test_reconnect_when_listener_appears_later(self):
        t = tmpdir(self)
        lpath = os.path.join(t, "later.sock")
        d = self.start(["--chardev", "socket,id=r,path=%s,reconnect-ms=100" % lpath,
                        "--monitor", "r"])
        c = self.control(d)
        self.assertEqual(chardevs(c)["r"]["filename"], "disconnected:unix:" + lpath)
        lst = self.listener(lpath)
        q = self.accept(lst)
        q.negotiate()
        self.assertIn("qemu", q.ok("query-version"))

    def test_deprecated_reconnect_seconds(self):
        t = tmpdir(self)
        lpath = os.path.join(t, "l.sock")
        lst = self.listener(lpath)
        d = self.start(["--chardev", "socket,id=r,path=%s,reconnect=1" % lpath, "--monitor", "r"])
        c = self.control(d)
        q = self.accept(lst)
        q.negotiate()
        q.close()
        q2 = self.accept(lst)
        self.assertTrue(is_greeting(q2.greeting()))
        self.assertEqual(q2.cmd("qmp_capabilities"), {"return": {}})
        self.assertIn("qemu", q2.ok("query-version"))
        # Option checks, in QEMU's words.
        data = {"addr": {"type": "unix", "data": {"path": lpath}}, "server": False,
                "reconnect": 1, "reconnect-ms": 5}
        self.assertIn("'reconnect' and 'reconnect-ms' are mutually exclusive",
                      c.error("chardev-add", {"id": "x", "backend": {"type": "socket",
                                                                     "data": data}})["desc"])
        self.assertIn("'reconnect' option is incompatible with socket in server listen mode",
                      c.error("chardev-add", {"id": "x", "backend": socket_server(
                          os.path.join(t, "s.sock"), reconnect=1)})["desc"])
        self.assertNotIn("x", chardevs(c))

    def _reconnect_delay(self, opt):
        t = tmpdir(self)
        lpath = os.path.join(t, "l.sock")
        lst = self.listener(lpath)
        self.start(["--chardev", "socket,id=r,path=%s,%s" % (lpath, opt), "--monitor", "r"])
        q = self.accept(lst)
        q.negotiate()
        t0 = time.monotonic()
        q.close()
        self.accept(lst)
        return time.monotonic() - t0

    def test_reconnect_waits_the_interval(self):
        self.assertGreaterEqual(self._reconnect_delay("reconnect-ms=600"), 0.5)

    def test_reconnect_seconds_waits_the_interval(self):
        self.assertGreaterEqual(self._reconnect_delay("reconnect=1"), 0.9)


class NoFrontend(Base):
    def test_server_without_frontend_sees_client_leave(self):
        d = self.start([])
        c = self.control(d)
        path = d.path("nf.sock")
        c.ok("chardev-add", {"id": "nf", "backend": socket_server(path)})
        s = socket.socket(socket.AF_UNIX)
        self.addCleanup(s.close)
        s.connect(path)
        wait_for(lambda: chardevs(c)["nf"]["filename"] == "unix:%s,server=on" % path,
                 timeout=5, what="connected")
        s.close()
        wait_for(lambda: chardevs(c)["nf"]["filename"].startswith("disconnected:"),
                 timeout=1.5, what="disconnected after the client left")


class WaitingServer(Base):
    def test_change_waiting_for_a_client_loses_to_remove(self):
        d = self.start(monitor_args("b.sock", "m1"))
        a, b = self.control(d), self.client(d.qmp("b.sock"))
        b.ok("chardev-add", {"id": "x", "backend": {"type": "null", "data": {}}})
        path = d.path("w.sock")
        a.send_raw(json.dumps({"execute": "chardev-change", "id": "chg", "arguments": {
            "id": "x", "backend": socket_server(path, wait=True)}}).encode())
        wait_for(lambda: os.path.exists(path), timeout=5, what="new listener")
        self.assertEqual(b.ok("chardev-remove", {"id": "x"}), {})
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            r = a.read_reply()
        self.assertEqual(r["error"]["desc"], "Chardev 'x' changed while its new backend started")
        self.assertNotIn("x", chardevs(b))
        self.assertFalse(os.path.exists(path))

    def test_add_waiting_for_a_client_then_removed(self):
        d = self.start(monitor_args("b.sock", "m1"))
        a, b = self.control(d), self.client(d.qmp("b.sock"))
        path = d.path("w.sock")
        a.send_raw(json.dumps({"execute": "chardev-add", "id": "add", "arguments": {
            "id": "y", "backend": socket_server(path, wait=True)}}).encode())
        wait_for(lambda: os.path.exists(path), timeout=5, what="listener")
        self.assertEqual(b.ok("chardev-remove", {"id": "y"}), {})
        r = a.read_reply()
        self.assertNotIn("y", chardevs(b))
        self.assertIn("error", r, "chardev-add succeeded for a removed device: %r" % r)


class Telnet(Base):
    def setUp(self):
        self.port = free_port()
        self.d = self.start(["--chardev", "socket,id=t,host=127.0.0.1,port=%d,server=on,"
                             "wait=off,telnet=on" % self.port, "--monitor", "t"])

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(s.close)
        return QMPClient(s)

    def test_negotiation_bytes_then_greeting(self):
        q = self.connect()
        raw = read_quiet(q, 0.3)
        # IAC WILL ECHO, IAC WILL SGA, IAC WILL BINARY, IAC DO BINARY, as QEMU sends.
        self.assertTrue(raw.startswith(b"\xff\xfb"), raw[:16])
        greeting_at = raw.index(b"{")
        self.assertTrue(all(b == 0xff for b in raw[:greeting_at:3]), raw[:greeting_at])
        self.assertTrue(raw.endswith(b"\r\n"))
        self.assertTrue(is_greeting(json.loads(raw[greeting_at:])))
        c = self.control(self.d)
        self.assertTrue(chardevs(c)["t"]["filename"].startswith(
            "telnet:127.0.0.1:%d,server=on <-> 127.0.0.1:" % self.port))

    def negotiated(self):
        """A telnet client past the negotiation and in QMP command mode."""
        q = self.connect()
        read_quiet(q, 0.3)
        q.send_raw(b'{"execute":"qmp_capabilities"}')
        self.assertEqual(q.read_reply(), {"return": {}})
        return q

    def test_iac_sequences_are_stripped(self):
        q = self.connect()
        read_quiet(q, 0.3)
        # IAC DO ECHO before the request, IAC SB TTYPE ... IAC SE between two
        # tokens, IAC WONT LINEMODE inside a string: all taken out.
        q.send_raw(b'\xff\xfd\x01{"execute":\xff\xfa\x18\x01xterm\xff\xf0"qmp_capabilities"}\r\n')
        self.assertEqual(q.read_reply(), {"return": {}})
        q.send_raw(b'{"execute":"query-version","id":"a\xff\xfc\x22b"}\r\n')
        self.assertEqual(q.read_reply()["id"], "ab")
        # A sequence split across reads is still taken out whole.
        for part in (b'{"execute":"query-version","id":"c\xff', b'\xfb', b'\x01d\xff\xfa',
                     b'\x18\x00vt100\xff', b'\xf0e"}\r\n'):
            q.send_raw(part)
            time.sleep(0.02)
        self.assertEqual(q.read_reply()["id"], "cde")

    def test_iac_iac_is_one_0xff_byte(self):
        # A raw 0xFF byte is never valid in QEMU's JSON: it resets the parser.
        # Through telnet, IAC IAC must reach it as exactly that one byte, so
        # the replies match those of a plain monitor given one 0xFF.
        plain = self.control(self.d)
        plain.send_raw(b'{"execute":\xff{"execute":"query-version","id":"ff"}')
        want = [plain.read_msg(), plain.read_msg()]
        q = self.negotiated()
        q.send_raw(b'{"execute":\xff\xff{"execute":"query-version","id":"ff"}')
        self.assertEqual([q.read_msg(), q.read_msg()], want)
        self.assertEqual(want[1]["id"], "ff")

    # IAC BRK is a break, which QMP ignores, as in qemu-storage-daemon 7.2.
    # (Regression test: it used to reset the session; fixed in 635b067.)
    def test_telnet_break_keeps_the_session(self):
        q = self.negotiated()
        q.send_raw(b'\xff\xf3{"execute":"query-version","id":"brk"}')
        self.assertIn("return", q.read_reply())

    @requires("telnet")
    def test_telnet_program(self):
        # The telnet program, its input a pipe: it negotiates, then sends
        # what it reads; stopped by its PID at the end.
        peer = Peer(["telnet", "127.0.0.1", str(self.port)])
        self.addCleanup(peer.stop)
        p = peer.proc
        out = b""
        sent = False
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and b'"id": "tv"' not in out:
            r, _, _ = select.select([p.stdout], [], [], 0.2)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
            if not sent and b'"QMP"' in out:
                p.stdin.write(b'{"execute":"qmp_capabilities"}\n'
                              b'{"execute":"query-version","id":"tv"}\n')
                p.stdin.flush()
                sent = True
        self.assertIn(b"Connected to 127.0.0.1", out)
        self.assertIn(b'{"return": {}}', out)
        m = re.search(rb'\{"return": \{"qemu".*"id": "tv"\}', out)
        self.assertIsNotNone(m, out)


class Logfile(Base):
    def _session(self, d, sock="s.sock"):
        q = self.client(QMPClient.unix(d.path(sock)))
        q.negotiate()
        q.ok("query-version", id="logged")
        return q

    def _log(self, path, needle=b'"id": "logged"'):
        wait_for(lambda: needle in read_file(path), timeout=5, what="log")
        return read_file(path)

    def test_log_gets_what_the_monitor_wrote(self):
        d = self.start(["--chardev", "socket,id=s,path=@DIR@/s.sock,server=on,wait=off,"
                        "logfile=@DIR@/s.log", "--monitor", "s"])
        self._session(d)
        log = self._log(d.path("s.log"))
        lines = log.split(b"\r\n")
        self.assertIn(b'"QMP"', lines[0])
        self.assertEqual(lines[1], b'{"return": {}}')
        self.assertIn(b'"id": "logged"', lines[2])
        self.assertNotIn(b"execute", log, "only output is logged")

    def test_logappend_keeps_earlier_content(self):
        t = tmpdir(self)
        log = os.path.join(t, "a.log")
        other = os.path.join(t, "t.log")
        for p in (log, other):
            with open(p, "wb") as f:
                f.write(b"EARLIER\n")
        d = self.start(["--chardev", "socket,id=s,path=@DIR@/s.sock,server=on,wait=off,"
                        "logfile=%s,logappend=on" % log, "--monitor", "s",
                        "--chardev", "socket,id=u,path=@DIR@/u.sock,server=on,wait=off,"
                        "logfile=%s,logappend=off" % other, "--monitor", "u"])
        self._session(d)
        self._session(d, "u.sock")
        content = self._log(log)
        self.assertTrue(content.startswith(b"EARLIER\n{"), content[:40])
        content = self._log(other)
        self.assertNotIn(b"EARLIER", content, "without logappend the log is truncated")

    def test_logtimestamp(self):
        before = datetime.now(timezone.utc).replace(microsecond=0)
        d = self.start(["--chardev", "socket,id=s,path=@DIR@/s.sock,server=on,wait=off,"
                        "logfile=@DIR@/s.log,logtimestamp=on", "--monitor", "s"])
        self._session(d)
        log = self._log(d.path("s.log"))
        lines = [l for l in log.split(b"\n") if l]
        self.assertEqual(len(lines), 3, log)
        stamp = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z) ")
        for line in lines:
            m = stamp.match(line)
            self.assertIsNotNone(m, line)
            when = datetime.fromisoformat(m.group(1).decode().replace("Z", "+00:00"))
            self.assertLessEqual(before, when)
            self.assertLess((when - before).total_seconds(), 60)
        self.assertTrue(lines[0][m.end():].startswith(b'{"QMP"'))


class ChardevChange(Base):
    def setUp(self):
        self.d = self.start(["--chardev", "socket,id=cc,path=@DIR@/a.sock,server=on,wait=off",
                             "--monitor", "cc"])
        self.c = self.control(self.d)
        self.a = self.client(QMPClient.unix(self.d.path("a.sock")))
        self.a.negotiate()

    def test_change_to_another_path(self):
        new = self.d.path("b.sock")
        self.assertEqual(self.c.ok("chardev-change", {"id": "cc", "backend": socket_server(new)}),
                         {})
        self.a.expect_eof()
        self.assertFalse(os.path.exists(self.d.path("a.sock")))
        s = socket.socket(socket.AF_UNIX)
        self.addCleanup(s.close)
        with self.assertRaises(OSError):
            s.connect(self.d.path("a.sock"))
        b = self.client(QMPClient.unix(new))
        self.assertTrue(is_greeting(b.greeting()))
        self.assertEqual(b.cmd("qmp_capabilities"), {"return": {}})
        self.assertIn("qemu", b.ok("query-version"))
        self.assertEqual(chardevs(self.c)["cc"], {
            "label": "cc", "filename": "unix:%s,server=on" % new, "frontend-open": True})

    def test_change_to_the_same_path(self):
        path = self.d.path("a.sock")
        self.assertEqual(self.c.ok("chardev-change", {"id": "cc", "backend": socket_server(path)}),
                         {})
        self.a.expect_eof()
        self.assertTrue(os.path.exists(path), "the new listener's socket file stays")
        b = self.client(QMPClient.unix(path))
        b.negotiate()
        self.assertIn("qemu", b.ok("query-version"))

    def test_failed_change_keeps_the_old_backend(self):
        err = self.c.error("chardev-change", {"id": "cc", "backend": socket_server(
            "/nonexistent/dir/x.sock")})
        self.assertIn("/nonexistent/dir/x.sock", err["desc"])
        # The connected client did not notice.
        self.assertIn("qemu", self.a.ok("query-version"))
        self.assertEqual(chardevs(self.c)["cc"]["filename"],
                         "unix:%s,server=on" % self.d.path("a.sock"))

    def test_change_errors(self):
        self.assertEqual(self.c.error("chardev-change", {"id": "x", "backend": {
            "type": "null", "data": {}}})["desc"], "Chardev 'x' does not exist")
        self.assertIn("qemu", self.a.ok("query-version"))


class Flood(Base):
    def test_garbage_floods_do_not_stall_other_monitors(self):
        d = self.start(monitor_args("f.sock", "f")
                       + ["--chardev", "socket,id=nf,path=@DIR@/nf.sock,server=on,wait=off"])
        c = self.control(d)
        rss0 = d.rss_kb()
        # Mostly long string tokens, with binary bytes, invalid UTF-8, NULs
        # and stray brackets between them: 1 MiB per round.
        rnd = random.Random(1)
        piece = b'["' + b"a" * 16000 + b'\x00\xff\xc3(' + rnd.randbytes(200) + b"}}]]"
        junk = (piece * (1 + (1 << 20) // len(piece)))[:1 << 20]
        stop = threading.Event()
        sent = {}

        def flood(path, key):
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.settimeout(0.05)
            n = 0
            # The daemon's replies to garbage are drained so it never stalls on us.
            try:
                while not stop.is_set() and n < 8 * len(junk):
                    r, w, _ = select.select([s], [s], [], 0.05)
                    if r:
                        if not s.recv(1 << 20):
                            break
                    if w:
                        try:
                            n += s.send(junk[n % len(junk):])
                        except (BlockingIOError, socket.timeout):
                            pass
            finally:
                sent[key] = n
                s.close()

        threads = [threading.Thread(target=flood, args=(d.path(p), p))
                   for p in ("f.sock", "nf.sock")]
        for t in threads:
            t.start()
        worst = 0.0
        deadline = time.monotonic() + 2.5
        try:
            while time.monotonic() < deadline and "f.sock" not in sent:
                t0 = time.monotonic()
                self.assertIn("qemu", c.ok("query-version"))
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.02)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        self.assertLess(worst, 1.0, "query-version took %.3fs during the flood" % worst)
        self.assertGreater(sent["f.sock"], 2 << 20, "the monitor took megabytes of garbage")
        # The flooded monitor serves its next client.
        q = self.client(QMPClient.unix(d.path("f.sock")))
        q.negotiate()
        self.assertIn("qemu", q.ok("query-version"))
        # (A sanitizer build keeps freed memory in quarantine.)
        with open("/proc/%d/maps" % d.pid) as f:
            sanitized = "libasan" in f.read()
        self.assertLess(d.rss_kb() - rss0, (512 if sanitized else 100) * 1024,
                        "memory stays bounded")

    def test_connection_churn(self):
        d = self.start(["--chardev", "socket,id=s,path=@DIR@/s.sock,server=on,wait=off",
                        "--monitor", "s",
                        "--chardev", "socket,id=t,path=@DIR@/t.sock,server=on,wait=off,"
                        "telnet=on", "--monitor", "t"])
        c = self.control(d)
        n0 = d.fd_count()
        # Clients that come and go at once, some after a request, some after
        # closing their sending side: each waits its turn in the backlog.
        for i in range(150):
            for name in ("s.sock", "t.sock"):
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(d.path(name))
                    if i % 3 == 0:
                        s.send(b'{"execute":"qmp_capabilities"}\n{"execute":"query-version"}')
                    if i % 5 == 0:
                        s.shutdown(socket.SHUT_WR)
        self.assertIn("qemu", c.ok("query-version"))
        # The last client is served once the ones queued before it are done
        # (its connect is retried while the listen backlog is full).
        q = None
        deadline = time.monotonic() + 10
        while q is None:
            try:
                q = self.client(QMPClient.unix(d.path("s.sock")))
            except BlockingIOError:
                self.assertLess(time.monotonic(), deadline, "the backlog never drained")
                time.sleep(0.05)
        q.negotiate()
        self.assertIn("qemu", q.ok("query-version"))
        q.close()
        wait_for(lambda: d.fd_count() == n0, timeout=10, what="every connection closed")


if __name__ == "__main__":
    unittest.main()
