"""mux (several monitors sharing one socket, with the C-a escapes) and hub
(one monitor behind several sockets), driven by real clients."""

import re
import unittest

from chardev_helpers import (Peer, backend, chardevs, is_greeting, read_quiet, requires,
                             socket_server)
from daemon import Daemon, monitor_args, wait_for
from qmp import QMPClient

NOT_NEGOTIATED = "Expecting capabilities negotiation with 'qmp_capabilities'"
STAMP = re.compile(rb"^\[\d\d:\d\d:\d\d\.\d{3}\] ")


class Base(unittest.TestCase):
    def start(self, args):
        d = Daemon(monitor_args() + args)
        self.addCleanup(d.stop)
        return d

    def connect(self, path):
        q = QMPClient.unix(path)
        self.addCleanup(q.close)
        return q


class MuxBase(Base):
    monitor_opts = ""

    def setUp(self):
        self.d = self.start(["--chardev", "socket,id=mx,path=@DIR@/mx.sock,server=on,wait=off,"
                             "mux=on", "--monitor", "mx" + self.monitor_opts,
                             "--monitor", "mx" + self.monitor_opts])
        self.c = self.d.qmp()
        self.addCleanup(self.c.close)

    def open_mux(self):
        """Connects; both monitors greet.  Returns the client, negotiated on
        the monitor that has the focus."""
        q = self.connect(self.d.path("mx.sock"))
        self.assertTrue(is_greeting(q.read_msg()))
        self.assertTrue(is_greeting(q.read_msg()))
        self.assertEqual(q.cmd("qmp_capabilities"), {"return": {}})
        return q


class Mux(MuxBase):
    def test_query_chardev_shows_mux_and_base(self):
        path = self.d.path("mx.sock")
        info = chardevs(self.c)
        self.assertEqual(info["mx"], {"label": "mx", "filename": "mux", "frontend-open": True})
        self.assertEqual(info["mx-base"], {"label": "mx-base", "frontend-open": True,
                                           "filename": "disconnected:unix:%s,server=on" % path})
        self.open_mux()
        self.assertEqual(chardevs(self.c)["mx-base"]["filename"], "unix:%s,server=on" % path)

    def test_ca_c_switches_monitor(self):
        q = self.open_mux()
        self.assertEqual(q.cmd("query-version", id=1)["id"], 1)
        # C-a c: the other monitor has input now, and is not negotiated yet.
        q.send_raw(b'\x01c{"execute":"query-version","id":2}\n')
        r = q.read_reply()
        self.assertEqual((r["id"], r["error"]["desc"]), (2, NOT_NEGOTIATED))
        self.assertEqual(q.cmd("qmp_capabilities"), {"return": {}})
        self.assertIn("return", q.cmd("query-version", id=3))
        # And back to the first, which kept its session.
        q.send_raw(b'\x01c{"execute":"query-version","id":4}\n')
        self.assertIn("return", q.read_reply())
        # The escape may be split from its command.
        q.send_raw(b"\x01")
        self.assertEqual(read_quiet(q, 0.1), b"")
        q.send_raw(b'c{"execute":"query-version","id":5}\n')
        self.assertIn("return", q.read_reply())

    def test_ca_ca_sends_one_ca(self):
        q = self.open_mux()
        # The C-a byte itself reaches the monitor, where it is a stray byte.
        q.send_raw(b'\x01\x01{"execute":"query-version","id":"after"}\n')
        err = q.read_msg()
        self.assertEqual(err["error"]["desc"], "JSON parse error, stray '\x01'")
        self.assertEqual(q.read_msg()["id"], "after")
        q.send_raw(b'\x01\x01\x01\x01{"execute":"query-version","id":"two"}\n')
        self.assertEqual([q.read_msg()["error"]["desc"] for _ in range(2)],
                         ["JSON parse error, stray '\x01'"] * 2)
        self.assertEqual(q.read_msg()["id"], "two")

    def test_ca_h_prints_help(self):
        q = self.open_mux()
        q.send_raw(b"\x01h")
        out = read_quiet(q, 0.3)
        for key in (b"C-a h", b"C-a x", b"C-a c", b"C-a t", b"C-a b", b"C-a C-a"):
            self.assertIn(key, out)
        self.assertIn("return", q.cmd("query-version"))

    def test_ca_t_toggles_timestamps(self):
        q = self.open_mux()
        q.send_raw(b'\x01t{"execute":"query-version","id":1}\n{"execute":"query-version","id":2}\n')
        # (QEMU leaves the first line after the toggle unstamped.)
        q.read_line()
        line = q.read_line()
        self.assertRegex(line, STAMP)
        self.assertIn(b'"id": 2', line)
        q.send_raw(b'\x01t{"execute":"query-version","id":3}\n')
        line = q.read_line()
        self.assertTrue(line.startswith(b'{"return"'), line)

    def test_ca_x_shuts_the_daemon_down(self):
        q = self.open_mux()
        q.send_raw(b"\x01x")
        self.assertEqual(self.d.wait(5), 0)
        self.assertTrue(read_quiet(q, 0.5).endswith(b"<EOF>"))

    # C-a b sends a break, which QMP ignores: the focused monitor stays
    # negotiated, as in qemu-storage-daemon 7.2.  (Regression test: fixed
    # in 635b067.)
    def test_ca_b_keeps_the_session(self):
        q = self.open_mux()
        q.send_raw(b'\x01b{"execute":"query-version","id":"brk"}\n')
        self.assertIn("return", q.read_reply())

    def test_change_refused(self):
        self.assertEqual(self.c.error("chardev-change", {"id": "mx", "backend": backend(
            "null")})["desc"], "Mux device hotswap not supported yet")
        self.assertEqual(chardevs(self.c)["mx"]["filename"], "mux")

    def test_mux_over_chardev_add(self):
        c = self.c
        c.ok("chardev-add", {"id": "n", "backend": backend("null")})
        self.assertEqual(c.ok("chardev-add", {"id": "m1", "backend": backend(
            "mux", chardev="n")}), {})
        self.assertEqual(chardevs(c)["m1"]["filename"], "mux")
        self.assertEqual(c.error("chardev-add", {"id": "m2", "backend": backend(
            "mux", chardev="n")})["desc"], "Failed to add chardev 'm2': Device 'n' is in use")
        self.assertEqual(c.error("chardev-add", {"id": "m2", "backend": backend(
            "mux", chardev="nope")})["desc"],
            "Failed to add chardev 'm2': mux: base chardev nope not found")
        self.assertEqual(c.error("chardev-remove", {"id": "n"})["desc"], "Chardev 'n' is busy")
        self.assertEqual(c.error("chardev-add", {"id": "m3", "backend": backend(
            "mux", chardev="mx-base")})["desc"],
            "Failed to add chardev 'm3': Device 'mx-base' is in use")


class MuxPretty(MuxBase):
    monitor_opts = ",pretty=on"

    def open_mux(self):
        q = self.connect(self.d.path("mx.sock"))
        self.assertTrue(is_greeting(q.read_value()[0]))
        self.assertTrue(is_greeting(q.read_value()[0]))
        q.send_raw(b'{"execute":"qmp_capabilities"}\n')
        self.assertEqual(q.read_value()[0], {"return": {}})
        return q

    # C-a t stamps every line, as qemu-storage-daemon 7.2 does, not just the
    # start of each write.  (Regression test: a pretty monitor's multi-line
    # reply used to get one timestamp; fixed in 635b067.)
    def test_ca_t_stamps_every_line(self):
        q = self.open_mux()
        q.send_raw(b'\x01t{"execute":"query-version","id":1}\n{"execute":"query-version","id":2}\n')
        out = read_quiet(q, 0.3)
        lines = out.split(b"\r\n")
        starts = [i for i, l in enumerate(lines) if re.match(rb"^(\[[0-9:.]+\] )?\{$", l)]
        self.assertEqual(len(starts), 2, out)
        start = starts[1]  # the second reply
        reply = [l for l in lines[start:] if l]
        self.assertGreater(len(reply), 5)
        for line in reply:
            self.assertRegex(line, STAMP)


class Hub(Base):
    def setUp(self):
        self.d = self.start(["--chardev", "socket,id=h1,path=@DIR@/h1.sock,server=on,wait=off",
                             "--chardev", "socket,id=h2,path=@DIR@/h2.sock,server=on,wait=off",
                             "--chardev", "hub,id=hub,chardevs.0=h1,chardevs.1=h2",
                             "--monitor", "hub"])
        self.c = self.d.qmp()
        self.addCleanup(self.c.close)

    @requires("socat")
    def test_output_to_both_input_from_either(self):
        info = chardevs(self.c)
        self.assertEqual(info["hub"], {"label": "hub", "filename": "hub", "frontend-open": True})
        self.assertTrue(info["h1"]["frontend-open"])
        peer = Peer(["socat", "-", "UNIX-CONNECT:" + self.d.path("h1.sock")])
        self.addCleanup(peer.stop)
        a = peer.client
        self.assertTrue(is_greeting(a.read_msg()))
        b = self.connect(self.d.path("h2.sock"))
        wait_for(lambda: not chardevs(self.c)["h2"]["filename"].startswith("disconnected:"),
                 timeout=5, what="second peer")
        read_quiet(a, 0.2)
        read_quiet(b, 0.2)
        a.send_raw(b'{"execute":"qmp_capabilities","id":"from-a"}\n')
        self.assertEqual(a.read_msg(), {"return": {}, "id": "from-a"})
        self.assertEqual(b.read_msg(), {"return": {}, "id": "from-a"})
        b.send_raw(b'{"execute":"query-version","id":"from-b"}\n')
        for q in (a, b):
            r = q.read_msg()
            self.assertEqual(r["id"], "from-b")
            self.assertIn("qemu", r["return"])

    # Only the first open and the last close reach the frontend, as in
    # QEMU's hub (hub_chr_event).  (Regression test: every backend's open
    # and close used to reset the monitor's session and greet again; fixed
    # in 635b067.)
    def test_second_peer_does_not_reset_the_session(self):
        a = self.connect(self.d.path("h1.sock"))
        a.negotiate()
        b = self.connect(self.d.path("h2.sock"))
        wait_for(lambda: not chardevs(self.c)["h2"]["filename"].startswith("disconnected:"),
                 timeout=5, what="second peer")
        b.close()
        a.send_raw(b'{"execute":"query-version","id":"still"}\n')
        r = a.read_msg()
        self.assertFalse(is_greeting(r), "greeted again")
        self.assertIn("return", r)

    def test_errors(self):
        c = self.c
        for i in range(5):
            c.ok("chardev-add", {"id": "s%d" % i, "backend": socket_server(
                self.d.path("s%d.sock" % i))})

        def hub(ids):
            return {"id": "hx", "backend": backend("hub", chardevs=ids)}
        self.assertEqual(c.error("chardev-add", hub(["s0", "s1", "s2", "s3", "s4"]))["desc"],
                         "Failed to add chardev 'hx': hub: too many backends, at most 4")
        self.assertEqual(c.error("chardev-add", hub(["s0", "h1"]))["desc"],
                         "Failed to add chardev 'hx': hub: chardev 'h1' is already in use")
        self.assertEqual(c.error("chardev-add", hub(["s0", "nope"]))["desc"],
                         "Failed to add chardev 'hx': hub: chardev 'nope' not found")
        self.assertEqual(c.error("chardev-add", hub(["s0", "s0"]))["desc"],
                         "Failed to add chardev 'hx': hub: chardev 's0' is listed twice")
        self.assertEqual(c.error("chardev-add", hub([]))["desc"],
                         "Failed to add chardev 'hx': hub: 'chardevs' list is empty")
        self.assertNotIn("hx", chardevs(c))
        # A hub cannot follow one of its backends to another.
        self.assertEqual(c.error("chardev-change", {"id": "h1", "backend": backend("null")})[
            "desc"], "Chardev user does not support chardev hotswap")
        # Four is fine; its backends are busy until the hub goes.
        self.assertEqual(c.ok("chardev-add", hub(["s0", "s1", "s2", "s3"])), {})
        self.assertEqual(c.error("chardev-remove", {"id": "s0"})["desc"], "Chardev 's0' is busy")
        self.assertEqual(c.error("chardev-add", {"id": "hy", "backend": backend(
            "hub", chardevs=["s3", "s4"])})["desc"],
            "Failed to add chardev 'hy': hub: chardev 's3' is already in use")
        c.ok("chardev-remove", {"id": "hx"})
        for i in range(5):
            c.ok("chardev-remove", {"id": "s%d" % i})
        self.assertEqual(sorted(chardevs(c)), ["h1", "h2", "hub", "m0"])


if __name__ == "__main__":
    unittest.main()
