"""The QMP monitor on the wire, against vstord alone.

Greeting, negotiation, ids, framing (split, batched and pipelined input),
malformed input and recovery, nesting limits, out-of-band execution,
pretty monitors, several monitors, events, argument errors in QEMU's
words, yank, and a client that never reads its replies.
"""

import json
import os
import select
import socket
import sys
import time
import unittest

from daemon import Daemon, DaemonTestCase, monitor_args, two_monitors
from qmp import QMPClient

NOT_NEGOTIATED = "Expecting capabilities negotiation with 'qmp_capabilities'"


def req(name, args=None, id=None, oob=False):
    r = {"exec-oob" if oob else "execute": name}
    if args is not None:
        r["arguments"] = args
    if id is not None:
        r["id"] = id
    return json.dumps(r).encode()


def quiet(sock, seconds):
    """True when nothing arrives on sock for that long."""
    r, _, _ = select.select([sock], [], [], seconds)
    return not r


def read_all_until_eof(client, timeout=10.0):
    """Every byte until the peer closes (bounded in time).  A reset (the
    peer closed with our requests unread) counts as the end too."""
    deadline = time.monotonic() + timeout
    client.sock.settimeout(timeout)
    data = client.buf
    client.buf = b""
    while time.monotonic() < deadline:
        try:
            chunk = client.sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise TimeoutError("no EOF; got %r" % data[-200:])


def crlf_lines(testcase, data):
    """Splits output into messages, checking every line ends in CRLF."""
    testcase.assertTrue(data == b"" or data.endswith(b"\r\n"), data[-50:])
    lines = data.split(b"\r\n")[:-1] if data else []
    for line in lines:
        testcase.assertNotIn(b"\n", line)
        testcase.assertNotIn(b"\r", line)
    return [json.loads(line) for line in lines]


class Greeting(DaemonTestCase):
    def test_greeting_shape(self):
        c = self.qmp(negotiate=False)
        line = c.read_line()  # up to the first CRLF
        self.assertNotIn(b"\n", line)
        g = json.loads(line)
        self.assertEqual(list(g), ["QMP"])
        self.assertEqual(sorted(g["QMP"]), ["capabilities", "version"])
        version = g["QMP"]["version"]
        self.assertEqual(sorted(version), ["package", "qemu"])
        self.assertEqual(sorted(version["qemu"]), ["major", "micro", "minor"])
        for k in ("major", "minor", "micro"):
            v = version["qemu"][k]
            self.assertIs(type(v), int)
            self.assertGreaterEqual(v, 0)
        self.assertRegex(version["package"], r"^vstord \d+\.\d+\.\d+")
        self.assertEqual(g["QMP"]["capabilities"], ["oob"])
        # Nothing else is sent before the client speaks.
        self.assertEqual(c.buf, b"")
        self.assertTrue(quiet(c.sock, 0.2))
        self.assertEqual(c.cmd("qmp_capabilities"), {"return": {}})
        self.assertEqual(c.ok("query-version"), version)

    def test_replies_end_in_crlf(self):
        c = self.qmp()
        c.send_raw(req("query-version", id=1) + req("nope", id=2) + b"}")
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"\r\n") < 3 and time.monotonic() < deadline:
            data += c.sock.recv(65536)
        msgs = crlf_lines(self, data)
        self.assertEqual(len(msgs), 3)
        self.assertEqual(msgs[0]["id"], 1)
        self.assertEqual(msgs[1]["error"]["class"], "CommandNotFound")
        self.assertEqual(msgs[2]["error"]["class"], "GenericError")


class Negotiation(DaemonTestCase):
    def test_commands_refused_before_negotiation(self):
        c = self.qmp(negotiate=False)
        c.greeting()
        self.assertEqual(c.cmd("query-version", id="x"),
                         {"id": "x", "error": {"class": "CommandNotFound",
                                               "desc": NOT_NEGOTIATED}})
        # An unknown command gets the same answer in this mode.
        self.assertEqual(c.cmd("nope"), {"error": {"class": "CommandNotFound",
                                                   "desc": NOT_NEGOTIATED}})
        # exec-oob is not known before oob is negotiated.
        e = c.error("query-yank", oob=True)
        self.assertEqual(e["desc"], "QMP input member 'exec-oob' is unexpected")
        self.assertEqual(c.cmd("qmp_capabilities", id=0), {"return": {}, "id": 0})
        self.assertIn("package", c.ok("query-version"))

    def test_capabilities_argument_errors_keep_negotiation_mode(self):
        c = self.qmp(negotiate=False)
        c.greeting()
        cases = [
            ({"enable": "oob"}, "Invalid parameter type for 'enable', expected: array"),
            ({"enable": ["bogus"]}, "Parameter 'null' does not accept value 'bogus'"),
            ({"enable": [1]}, "Invalid parameter type for 'enable[0]', expected: string"),
            ({"bogus": 1}, "Parameter 'bogus' is unexpected"),
        ]
        for args, desc in cases:
            with self.subTest(args=args):
                self.assertEqual(c.error("qmp_capabilities", args),
                                 {"class": "GenericError", "desc": desc})
        # Still negotiating.
        self.assertEqual(c.error("query-version")["desc"], NOT_NEGOTIATED)
        self.assertEqual(c.cmd("qmp_capabilities", {"enable": []}), {"return": {}})

    def test_negotiate_twice(self):
        c = self.qmp()
        self.assertEqual(c.error("qmp_capabilities"),
                         {"class": "CommandNotFound",
                          "desc": "Capabilities negotiation is already complete, command ignored"})
        self.assertIn("qemu", c.ok("query-version"))

    def test_reconnect_starts_a_new_session(self):
        c = self.daemon.qmp(oob=True)
        self.assertEqual(c.ok("query-yank", oob=True), [{"type": "chardev", "id": "m0"}])
        c.close()
        c2 = self.qmp(negotiate=False)
        self.assertIn("QMP", c2.greeting())
        self.assertEqual(c2.error("query-version")["desc"], NOT_NEGOTIATED)
        c2.cmd("qmp_capabilities")
        # oob was negotiated by the previous client only.
        self.assertEqual(c2.error("query-yank", oob=True)["desc"],
                         "QMP input member 'exec-oob' is unexpected")


IDS = ["abc", "", 42, 0, -7, 1.5, -1.5, 2 ** 53, True, False, None, {}, [],
       {"a": [1, 2], "b": {"c": None}}, [1, "x", None, [True]],
       "\u00e9\u20ac\U0001F600", 'quote " backslash \\ slash /']


def cmd_with_id(c, name, args, id):
    """Like c.cmd, but sends the id even when it is None (JSON null)."""
    r = {"execute": name, "id": id}
    if args is not None:
        r["arguments"] = args
    c.send_raw(json.dumps(r).encode())
    return c.read_reply()


class Ids(DaemonTestCase):
    def test_id_echoed_for_every_json_type(self):
        c = self.qmp()
        for id in IDS:
            with self.subTest(id=id):
                r = cmd_with_id(c, "query-version", None, id)
                self.assertIn("return", r)
                self.assertIn("id", r)
                self.assertEqual(r["id"], id)
                self.assertIs(type(r["id"]), type(id))

    def test_id_echoed_on_errors(self):
        c = self.qmp()
        for id in IDS:
            with self.subTest(id=id):
                r = cmd_with_id(c, "nope", None, id)
                self.assertEqual(r["error"]["class"], "CommandNotFound")
                self.assertEqual(r["id"], id)
                r = cmd_with_id(c, "getfd", {}, id)
                self.assertEqual(r["error"]["desc"], "Parameter 'fdname' is missing")
                self.assertEqual(r["id"], id)

    def test_output_is_ascii(self):
        c = self.qmp()
        c.send_raw(json.dumps({"execute": "query-version",
                               "id": "\u00e9\u20ac\U0001F600\x7f"}, ensure_ascii=False).encode())
        line = c.read_line()
        self.assertTrue(all(b < 0x80 for b in line), line)
        self.assertIn(b"\\u00e9", line.lower())
        self.assertIn(b"\\ud83d\\ude00", line.lower())
        self.assertEqual(json.loads(line)["id"], "\u00e9\u20ac\U0001F600\x7f")

    def test_no_id_no_id_member(self):
        c = self.qmp()
        self.assertNotIn("id", c.cmd("query-version"))
        self.assertNotIn("id", c.cmd("nope"))


class Framing(DaemonTestCase):
    def test_request_sent_byte_by_byte(self):
        c = self.qmp()
        data = ('{"execute": "query-version", "id": ["bytes", "\u00e9\u20ac\U0001F600",'
                ' -12.5e3, true, null, "esc\\u00e9\\"q"]}').encode()
        for i, b in enumerate(data[:-1]):
            c.sock.sendall(bytes([b]))
            if i % 8 == 0:
                time.sleep(0.002)
        # Nothing may be answered before the request is complete.
        self.assertTrue(quiet(c.sock, 0.2))
        c.sock.sendall(data[-1:])
        r = c.read_reply()
        self.assertIn("return", r)
        self.assertEqual(r["id"], ["bytes", "\u00e9\u20ac\U0001F600", -12500.0, True, None,
                                   "esc\u00e9\"q"])

    def test_request_split_at_every_position(self):
        c = self.qmp()
        data = b'{"execute":"query-version","id":[-12.5e3,true,null,"a\\u00e9\\"b",0,\'sq\']}'
        for i in range(1, len(data)):
            c.sock.sendall(data[:i])
            time.sleep(0.001)
            c.sock.sendall(data[i:])
        for i in range(1, len(data)):
            r = c.read_reply()
            self.assertEqual(r["id"], [-12500.0, True, None, "a\u00e9\"b", 0, "sq"], i)
            self.assertIn("return", r)

    def test_many_requests_per_write(self):
        c = self.qmp()
        seps = [b"", b" ", b"\n", b"\r\n", b"\t"]
        data = b"".join(req("query-version", id=i) + seps[i % len(seps)] for i in range(20))
        c.send_raw(data)
        for i in range(20):
            r = c.read_reply()
            self.assertEqual(r["id"], i)
            self.assertIn("return", r)

    def test_pipelined_200_in_order(self):
        c = self.qmp()
        c.send_raw(b"".join(req("query-version", id=i) for i in range(200)))
        ids = [c.read_reply()["id"] for _ in range(200)]
        self.assertEqual(ids, list(range(200)))
        self.assertTrue(quiet(c.sock, 0.1))

    def test_next_client_gets_none_of_previous_replies(self):
        # A client that queues many requests and goes away: the next client
        # on the same chardev starts with a greeting and sees only replies
        # to its own requests.
        for round in range(3):
            c = self.qmp()
            c.send_raw(b"".join(req("query-qmp-schema", id="old-%d" % i) for i in range(300)))
            c.close()
            n = self.qmp(negotiate=False)
            g = n.greeting()
            self.assertIn("QMP", g)
            n.send_raw(req("qmp_capabilities", id="neg") + req("query-version", id="new"))
            self.assertEqual(n.read_reply(), {"return": {}, "id": "neg"})
            self.assertEqual(n.read_reply()["id"], "new")
            self.assertTrue(quiet(n.sock, 0.2))
            n.close()

    def test_half_close_gets_every_reply(self):
        # A client that sends and shuts its sending side still gets all
        # its replies (docs/differences.md).
        c = self.qmp()
        c.send_raw(b"".join(req("query-version", id=i) for i in range(30)))
        c.sock.shutdown(socket.SHUT_WR)
        msgs = crlf_lines(self, read_all_until_eof(c))
        self.assertEqual([m["id"] for m in msgs], list(range(30)))


MALFORMED = [
    b'{"execute": }',
    b'}',
    b']',
    b'{"execute" "query-version"}',
    b'{1:2}',
    b'{"execute":"query-version",}',
    b'[1,2,]',
    b'@',
    b'{"execute":tru}',
    b'{"execute":"a\\qb"}',
    b'{"execute":"\\uD800"}',
    b'{"execute":"\xc3\x28"}',
    b'{"id":01}',
    b'{"execute":%d}',
    b'{"execute":"query-version","execute":"x"}',
    b'42 ',
    b'"str"',
    b'null ',
    b'[{"execute":"query-version"}]',
    b'{}',
    b'{"execute":1}',
    b'{"execute":"query-version","arguments":[]}',
    b'{"execute":"query-version","foo":1}',
]


class Malformed(DaemonTestCase):
    def check_recovers(self, c, bad, tag):
        c.send_raw(bad + req("query-version", id=tag))
        good, before = c.read_until(lambda m: m.get("id") == tag, limit=50)
        self.assertIn("return", good)
        self.assertGreaterEqual(len(before), 1, "no error for %r" % bad)
        for m in before:
            self.assertEqual(m["error"]["class"], "GenericError", m)
            self.assertNotIn("return", m)
        return before

    def test_malformed_then_good_request(self):
        c = self.qmp()
        for i, bad in enumerate(MALFORMED):
            with self.subTest(bad=bad):
                self.check_recovers(c, bad, "good-%d" % i)

    def test_parse_error_messages(self):
        c = self.qmp()
        cases = [
            (b'{"execute": }', "JSON parse error, expecting value"),
            (b'{1:2}', "JSON parse error, key is not a string in object"),
            (b'{"execute" "x"}', "JSON parse error, missing : in object pair"),
            (b'{"a":1,"a":2}', "JSON parse error, duplicate key"),
            (b'@', "JSON parse error, stray '@'"),
            (b'[]', "QMP input must be a JSON object"),
            (b'{}', "QMP input lacks member 'execute'"),
            (b'{"execute":1}', "QMP input member 'execute' must be a string"),
        ]
        for i, (bad, desc) in enumerate(cases):
            with self.subTest(bad=bad):
                before = self.check_recovers(c, bad, i)
                self.assertEqual(before[0]["error"]["desc"], desc)

    def test_control_character_resets_the_lexer(self):
        c = self.qmp()
        before = self.check_recovers(
            c, b'{"execute":"query-version","id":"half"\x01', "after-ctrl")
        self.assertTrue(all(m.get("id") != "half" for m in before))
        self.assertIn("stray", before[-1]["error"]["desc"])

    def test_0xff_resets_the_lexer(self):
        c = self.qmp()
        before = self.check_recovers(c, b'{"execute":"query-version","id":"half",\xff', "after-ff")
        self.assertTrue(all(m.get("id") != "half" for m in before))

    def test_newline_in_string_resets(self):
        c = self.qmp()
        self.check_recovers(c, b'{"execute":"abc\n', "after-nl")

    def test_large_request(self):
        c = self.qmp()
        big = "x" * (1 << 20)
        r = c.cmd("query-version", id=big)
        self.assertEqual(r["id"], big)


class Nesting(DaemonTestCase):
    def setUp(self):
        super().setUp()
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, 10000))
        self.addCleanup(sys.setrecursionlimit, old)

    def test_depth_1024_accepted(self):
        c = self.qmp()
        # The request object is one level; the id 1023 more.
        id = b"[" * 1023 + b"]" * 1023
        c.send_raw(b'{"execute":"query-version","id":' + id + b"}")
        r = c.read_reply()
        self.assertIn("return", r)
        depth, v = 0, r["id"]
        while isinstance(v, list):
            depth += 1
            v = v[0] if v else None
        self.assertEqual(depth, 1023)

    def test_depth_1025_refused_and_connection_works(self):
        c = self.qmp()
        id = b"[" * 1024 + b"]" * 1024
        c.send_raw(b'{"execute":"query-version","id":' + id + b"}"
                   + req("query-version", id="after"))
        good, before = c.read_until(lambda m: m.get("id") == "after", limit=3000)
        self.assertIn("return", good)
        self.assertEqual(before[0], {"error": {"class": "GenericError",
                                               "desc": "JSON nesting depth limit exceeded"}})
        self.assertTrue(all("error" in m for m in before))
        self.assertIn("qemu", c.ok("query-version"))

    def test_very_deep_input_does_not_crash(self):
        c = self.qmp()
        c.send_raw(b"[" * 200000 + b"\xff" + req("query-version", id="alive"))
        good, before = c.read_until(lambda m: m.get("id") == "alive", limit=1000)
        self.assertIn("return", good)
        self.assertGreaterEqual(len(before), 100)
        self.assertEqual(before[0]["error"]["desc"], "JSON nesting depth limit exceeded")
        self.assertIsNone(self.daemon.proc.poll())


class TokenLimits(DaemonTestCase):
    # QEMU's limits: at most 2M (2 << 20) tokens per value.  The request
    # below has 2n + 9 tokens: '{' "execute" ':' "query-version" ',' "id"
    # ':' '[' n numbers, n - 1 commas, ']' '}'.
    def request(self, n):
        return (b'{"execute":"query-version","id":[' + b",".join([b"1"] * n) + b"]}"
                + req("query-version", id="after"))

    def test_token_count_limit_exceeded(self):
        c = self.qmp()
        n = ((2 << 20) + 1 - 9) // 2  # the last token, '}', is one too many
        c.send_raw(self.request(n))
        self.assertEqual(c.read_reply(), {"error": {"class": "GenericError",
                                                    "desc": "JSON token count limit exceeded"}})
        self.assertEqual(c.read_reply()["id"], "after")

    def test_token_count_just_below_limit(self):
        c = self.qmp()
        n = ((2 << 20) + 1 - 9) // 2 - 1
        c.send_raw(self.request(n))
        r = c.read_reply()
        self.assertIn("return", r)
        self.assertEqual(len(r["id"]), n)
        self.assertEqual(c.read_reply()["id"], "after")


class OutOfBand(DaemonTestCase):
    def test_oob_overtakes_in_band(self):
        c = self.qmp(oob=True)
        n = 8
        data = b"".join(req("query-qmp-schema", id=i) for i in range(n))
        data += req("query-yank", id="oob", oob=True)
        c.send_raw(data)
        replies = [c.read_reply() for _ in range(n + 1)]
        order = [r["id"] for r in replies]
        self.assertEqual([i for i in order if i != "oob"], list(range(n)))
        self.assertLess(order.index("oob"), order.index(n - 1), order)
        oob = replies[order.index("oob")]
        self.assertEqual(oob["return"], [{"type": "chardev", "id": "m0"}])

    def test_exec_oob_of_command_without_allow_oob(self):
        c = self.qmp(oob=True)
        desc = "The command query-version does not support OOB"
        self.assertEqual(c.cmd("query-version", oob=True, id=5),
                         {"id": 5, "error": {"class": "GenericError", "desc": desc}})

    def test_exec_oob_unknown_command(self):
        c = self.qmp(oob=True)
        e = c.error("nope", oob=True)
        self.assertEqual(e, {"class": "CommandNotFound",
                             "desc": "The command nope has not been found"})

    def test_exec_oob_without_negotiating_oob(self):
        c = self.qmp()
        desc = "QMP input member 'exec-oob' is unexpected"
        self.assertEqual(c.cmd("query-yank", oob=True, id="o"),
                         {"id": "o", "error": {"class": "GenericError", "desc": desc}})

    def test_exec_oob_and_execute_clash(self):
        c = self.qmp(oob=True)
        c.send_raw(b'{"exec-oob":"query-yank","execute":"query-yank"}')
        self.assertEqual(c.read_reply()["error"]["desc"],
                         "QMP input member 'execute' clashes with 'exec-oob'")

    def test_oob_yank_nothing(self):
        c = self.qmp(oob=True)
        self.assertEqual(c.cmd("yank", {"instances": []}, oob=True, id=1), {"return": {}, "id": 1})


class SeveralMonitors(unittest.TestCase):
    def setUp(self):
        self.daemon = Daemon(monitor_args("plain.sock", "m0") + [
            "--chardev", "socket,id=m1,path=@DIR@/pretty.sock,server=on,wait=off",
            "--monitor", "chardev=m1,pretty=on"])
        self.addCleanup(self.daemon.stop)

    def connect(self, name):
        c = QMPClient.unix(self.daemon.path(name))
        self.addCleanup(c.close)
        return c

    def check_pretty(self, raw):
        self.assertTrue(raw.endswith(b"}\r\n"), raw[-20:])
        self.assertGreater(raw.count(b"\r\n"), 2, raw)
        self.assertEqual(raw.count(b"\n"), raw.count(b"\r\n"), "bare LF in %r" % raw)
        self.assertIn(b"\r\n    \"", raw)  # indented members

    def test_pretty_monitor(self):
        c = self.connect("pretty.sock")
        g, raw = c.read_value()
        self.check_pretty(raw)
        self.assertEqual(g["QMP"]["capabilities"], ["oob"])
        c.send_raw(req("qmp_capabilities"))
        v, raw = c.read_value()
        self.assertEqual(v, {"return": {}})
        c.send_raw(req("query-version", id=[1, "two"]))
        v, raw = c.read_value()
        self.check_pretty(raw)
        self.assertEqual(v["id"], [1, "two"])
        self.assertEqual(v["return"], g["QMP"]["version"])
        c.send_raw(req("getfd", {}))
        v, raw = c.read_value()
        self.check_pretty(raw)
        self.assertEqual(v["error"]["desc"], "Parameter 'fdname' is missing")
        c.send_raw(b"}")
        v, raw = c.read_value()
        self.assertEqual(v["error"]["class"], "GenericError")

    def test_two_monitors_at_once(self):
        a = self.connect("plain.sock")
        b = self.connect("pretty.sock")
        self.assertIn("QMP", a.greeting())
        self.assertIn("QMP", b.read_value()[0])
        a.cmd("qmp_capabilities")
        # b is still negotiating although a is not.
        b.send_raw(req("query-version", id="b1"))
        self.assertEqual(b.read_value()[0]["error"]["desc"], NOT_NEGOTIATED)
        b.send_raw(req("qmp_capabilities"))
        self.assertEqual(b.read_value()[0], {"return": {}})
        for i in range(10):
            a.send_raw(req("query-version", id="a%d" % i))
            b.send_raw(req("query-yank", id="b%d" % i))
        for i in range(10):
            self.assertEqual(a.read_reply()["id"], "a%d" % i)
            v = b.read_value()[0]
            self.assertEqual(v["id"], "b%d" % i)
            self.assertEqual(sorted(x["id"] for x in v["return"]), ["m0", "m1"])
        # Plain stays one line per message.
        a.send_raw(req("query-version"))
        line = a.read_line()
        self.assertIn(b'"return"', line)


class ShutdownEvent(unittest.TestCase):
    def setUp(self):
        self.daemon = Daemon(monitor_args("a.sock", "m0") + monitor_args("b.sock", "m1")
                             + monitor_args("c.sock", "m2"))
        self.addCleanup(self.daemon.stop)

    def check_event(self, ev, reason):
        self.assertEqual(sorted(ev), ["data", "event", "timestamp"])
        self.assertEqual(ev["event"], "SHUTDOWN")
        self.assertEqual(ev["data"], {"guest": False, "reason": reason})
        ts = ev["timestamp"]
        self.assertEqual(sorted(ts), ["microseconds", "seconds"])
        self.assertIs(type(ts["seconds"]), int)
        self.assertIs(type(ts["microseconds"]), int)
        self.assertTrue(0 <= ts["microseconds"] < 1000000)
        self.assertLess(abs(ts["seconds"] + ts["microseconds"] / 1e6 - time.time()), 60)

    def shutdown_and_collect(self, trigger, reason):
        a, b = self.daemon.qmp("a.sock"), self.daemon.qmp("b.sock")
        c = self.daemon.qmp("c.sock", negotiate=False)
        for x in (a, b, c):
            self.addCleanup(x.close)
        self.assertIn("QMP", c.greeting())
        # All three connections are served before the shutdown starts.
        self.assertIn("qemu", a.ok("query-version"))
        self.assertIn("qemu", b.ok("query-version"))
        trigger(a)
        out = [crlf_lines(self, read_all_until_eof(x)) for x in (a, b, c)]
        self.assertEqual(self.daemon.wait(10), 0)
        for name in ("a.sock", "b.sock", "c.sock"):
            self.assertFalse(os.path.exists(self.daemon.path(name)), name)
        self.assertFalse(os.path.exists(self.daemon.pidfile))
        return out

    def test_quit_sends_shutdown_to_negotiated_monitors(self):
        qa, qb, qc = self.shutdown_and_collect(lambda a: a.send_raw(req("quit", id="q")),
                                               "host-qmp-quit")
        self.assertEqual(len(qa), 2, qa)
        self.assertEqual(qa[0], {"return": {}, "id": "q"})
        self.check_event(qa[1], "host-qmp-quit")
        self.assertEqual(len(qb), 1, qb)
        self.check_event(qb[0], "host-qmp-quit")
        self.assertEqual(qa[1]["timestamp"], qb[0]["timestamp"])
        self.assertEqual(qc, [])

    # qemu-storage-daemon executes nothing after 'quit': requests already
    # queued behind it get no reply (the connection closes).  vstord goes
    # on executing the queued requests while it drains its output, and
    # sends their replies after the SHUTDOWN event; a command pipelined
    # after 'quit' (add-fd, remove-fd, yank, later blockdev-add...) still
    # takes effect during shutdown.
    def test_nothing_runs_after_quit(self):
        a = self.daemon.qmp("a.sock")
        self.addCleanup(a.close)
        a.send_raw(req("quit", id="q") + b"".join(req("query-version", id=i) for i in range(20)))
        msgs = crlf_lines(self, read_all_until_eof(a))
        self.assertEqual(self.daemon.wait(10), 0)
        self.assertEqual(msgs[0], {"return": {}, "id": "q"})
        self.assertEqual([m for m in msgs if "return" in m and m.get("id") != "q"], [])

    def test_sigterm_sends_shutdown_host_signal(self):
        qa, qb, qc = self.shutdown_and_collect(
            lambda a: self.daemon.proc.terminate(), "host-signal")
        self.assertEqual(len(qa), 1, qa)
        self.check_event(qa[0], "host-signal")
        self.assertEqual(len(qb), 1, qb)
        self.check_event(qb[0], "host-signal")
        self.assertEqual(qc, [])


ARG_ERRORS = [
    ("getfd", {}, "Parameter 'fdname' is missing"),
    ("getfd", {"fdname": 1}, "Invalid parameter type for 'fdname', expected: string"),
    ("getfd", {"fdname": None}, "Invalid parameter type for 'fdname', expected: string"),
    ("getfd", {"fdname": "x", "y": 1}, "Parameter 'y' is unexpected"),
    ("closefd", {"fdname": ["x"]}, "Invalid parameter type for 'fdname', expected: string"),
    ("remove-fd", {}, "Parameter 'fdset-id' is missing"),
    ("remove-fd", {"fdset-id": 1.5}, "Invalid parameter type for 'fdset-id', expected: integer"),
    ("remove-fd", {"fdset-id": "1"}, "Invalid parameter type for 'fdset-id', expected: integer"),
    ("remove-fd", {"fdset-id": 9223372036854775808},
     "Invalid parameter type for 'fdset-id', expected: integer"),
    ("remove-fd", {"fdset-id": 1, "fd": True},
     "Invalid parameter type for 'fd', expected: integer"),
    ("add-fd", {"opaque": 5}, "Invalid parameter type for 'opaque', expected: string"),
    ("yank", {}, "Parameter 'instances' is missing"),
    ("yank", {"instances": {}}, "Invalid parameter type for 'instances', expected: array"),
    ("yank", {"instances": [{"type": "chardev"}]}, "Parameter 'instances[0].id' is missing"),
    ("yank", {"instances": [{"type": "chardev", "id": "m0"}, {"type": "chardev"}]},
     "Parameter 'instances[1].id' is missing"),
    ("yank", {"instances": [{"type": "nope"}]}, "Parameter 'type' does not accept value 'nope'"),
    ("yank", {"instances": [{"id": "m0"}]}, "Parameter 'instances[0].type' is missing"),
    ("yank", {"instances": [{"type": "chardev", "id": "m0", "x": 1}]},
     "Parameter 'instances[0].x' is unexpected"),
    ("yank", {"instances": [3]}, "Invalid parameter type for 'instances[0]', expected: object"),
    ("query-version", {"x": 1}, "Parameter 'x' is unexpected"),
    ("query-qmp-schema", {"x": 1}, "Parameter 'x' is unexpected"),
    ("quit", {"x": 1}, "Parameter 'x' is unexpected"),
]


class ArgumentErrors(DaemonTestCase):
    def test_argument_errors(self):
        c = self.qmp()
        for name, args, desc in ARG_ERRORS:
            with self.subTest(name=name, args=args):
                self.assertEqual(c.error(name, args), {"class": "GenericError", "desc": desc})
        # None of them took effect: the daemon is still running.
        self.assertIn("qemu", c.ok("query-version"))

    def test_yank_unknown_instance(self):
        c = self.qmp()
        e = c.error("yank", {"instances": [{"type": "chardev", "id": "nope"}]})
        self.assertEqual(e["class"], "DeviceNotFound")
        self.assertEqual(e["desc"], "Instance not found")
        e = c.error("yank", {"instances": [{"type": "block-node", "node-name": "n"}]})
        self.assertEqual(e["class"], "DeviceNotFound")

    def test_yank_is_all_or_nothing(self):
        c = self.qmp()
        e = c.error("yank", {"instances": [{"type": "chardev", "id": "m0"},
                                           {"type": "chardev", "id": "nope"}]})
        self.assertEqual(e["class"], "DeviceNotFound")
        # m0 (this very connection) was not yanked.
        self.assertIn("qemu", c.ok("query-version"))


class QemuFidelity(DaemonTestCase):
    """Wording that differs from qemu-storage-daemon (checked against 7.2)."""

    # With several unexpected arguments QEMU names the first in its QDict
    # iteration order (hash buckets), the order vstord already uses for
    # the request envelope (qemu_member_order); vstord's argument checker
    # names the alphabetically first one instead.
    def test_which_unexpected_argument_is_named(self):
        c = self.qmp()
        cases = [({"a": 1, "b": 2}, "b"), ({"x": 1, "y": 2, "z": 3}, "z"),
                 ({"foo": 1, "bar": 2, "baz": 3}, "baz")]
        for args, name in cases:
            self.assertEqual(c.error("query-version", args)["desc"],
                             "Parameter '%s' is unexpected" % name)

    # QEMU quotes a truncated \u escape together with the character that
    # cut it short: JSON parse error, \u12" is not a valid Unicode
    # character.  vstord leaves out the closing quote.
    def test_truncated_unicode_escape_message(self):
        c = self.qmp()
        for esc in (b"\\u", b"\\u1", b"\\u123"):
            c.send_raw(b'{"execute":"query-version","id":"' + esc + b'"}')
            self.assertEqual(c.read_reply()["error"]["desc"],
                             "JSON parse error, %s\" is not a valid Unicode character"
                             % esc.decode())

    # A surrogate pair that encodes a noncharacter (U+1FFFE, U+10FFFF) is
    # refused by both; QEMU quotes the whole pair, vstord only its first
    # half.
    def test_noncharacter_surrogate_pair_message(self):
        c = self.qmp()
        for pair in ("\\uD83F\\uDFFE", "\\uDBFF\\uDFFF"):
            c.send_raw(('{"execute":"query-version","id":"%s"}' % pair).encode())
            self.assertEqual(c.read_reply()["error"]["desc"],
                             "JSON parse error, %s is not a valid Unicode character" % pair)


class Commands(DaemonTestCase):
    def test_query_commands_matches_schema(self):
        c = self.qmp()
        listed = [x["name"] for x in c.ok("query-commands")]
        self.assertEqual(len(listed), len(set(listed)))
        schema = {e["name"] for e in c.ok("query-qmp-schema") if e["meta-type"] == "command"}
        self.assertEqual(set(listed), schema)
        self.assertTrue({"qmp_capabilities", "query-version", "query-commands",
                         "query-qmp-schema", "quit", "getfd", "closefd", "add-fd",
                         "remove-fd", "query-fdsets", "yank", "query-yank"} <= schema)

    def test_query_yank_lists_monitor_chardev(self):
        c = self.qmp()
        self.assertEqual(c.ok("query-yank"), [{"type": "chardev", "id": "m0"}])

    def test_yank_own_chardev_drops_connection(self):
        c = self.qmp()
        c.send_raw(req("yank", {"instances": [{"type": "chardev", "id": "m0"}]}, id="y"))
        data = read_all_until_eof(c, timeout=5)
        # At most the reply got out before the connection went.
        for m in crlf_lines(self, data):
            self.assertEqual(m, {"return": {}, "id": "y"})
        c2 = self.qmp(negotiate=False)
        self.assertIn("QMP", c2.greeting())
        self.assertEqual(c2.error("query-version")["desc"], NOT_NEGOTIATED)
        c2.cmd("qmp_capabilities")
        self.assertEqual(c2.ok("query-yank"), [{"type": "chardev", "id": "m0"}])

    def test_oob_yank_own_chardev(self):
        c = self.qmp(oob=True)
        c.send_raw(req("yank", {"instances": [{"type": "chardev", "id": "m0"}]}, oob=True))
        read_all_until_eof(c, timeout=5)
        c2 = self.qmp()
        self.assertIn("qemu", c2.ok("query-version"))


class YankOther(unittest.TestCase):
    def test_yank_another_monitors_connection(self):
        d, a, b = two_monitors(self)
        self.assertEqual(a.cmd("yank", {"instances": [{"type": "chardev", "id": "m1"}]}),
                         {"return": {}})
        self.assertEqual(read_all_until_eof(b, timeout=5), b"")
        self.assertIn("qemu", a.ok("query-version"))
        b2 = d.qmp("b.sock")
        self.addCleanup(b2.close)
        self.assertIn("qemu", b2.ok("query-version"))


class NonReadingClient(unittest.TestCase):
    REQUESTS = 2000
    SEND_SECONDS = 5.0
    RSS_LIMIT_KB = 100 * 1024  # growth allowed while the client does not read

    def test_client_that_never_reads(self):
        d, greedy, other = two_monitors(self)
        rss_before = d.rss_kb()
        data = b"".join(req("query-qmp-schema", id=i) for i in range(self.REQUESTS))
        sock = greedy.sock
        sock.setblocking(False)
        sent, deadline = 0, time.monotonic() + self.SEND_SECONDS
        while sent < len(data) and time.monotonic() < deadline:
            try:
                sent += sock.send(data[sent:sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
        complete = data[:sent].count(b"}")  # one '}' per request
        self.assertGreater(complete, 100)
        # The other monitor is served promptly meanwhile.
        for i in range(5):
            t = time.monotonic()
            self.assertIn("qemu", other.ok("query-version"))
            self.assertLess(time.monotonic() - t, 2.0)
        time.sleep(0.5)
        rss_after = d.rss_kb()
        # Growth, not the absolute figure: a sanitizer build starts large.
        self.assertLess(rss_after - rss_before, self.RSS_LIMIT_KB,
                        "RSS %d KiB -> %d KiB" % (rss_before, rss_after))
        self.assertIsNone(d.proc.poll())
        # Reading now delivers every reply, in order.
        sock.settimeout(10)
        deadline = time.monotonic() + 60  # large replies under sanitizers on a loaded machine
        for i in range(complete):
            self.assertLess(time.monotonic(), deadline)
            self.assertEqual(greedy.read_reply()["id"], i)
        self.assertIn("qemu", other.ok("query-version"))

    def test_client_that_never_reads_then_disconnects(self):
        d = Daemon(monitor_args("a.sock", "m0") + monitor_args("b.sock", "m1"))
        self.addCleanup(d.stop)
        greedy, other = d.qmp("a.sock"), d.qmp("b.sock")
        self.addCleanup(other.close)
        greedy.sock.setblocking(False)
        data = b"".join(req("query-qmp-schema", id=i) for i in range(self.REQUESTS))
        sent, deadline = 0, time.monotonic() + 2
        while sent < len(data) and time.monotonic() < deadline:
            try:
                sent += greedy.sock.send(data[sent:sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
        greedy.close()
        # The monitor's chardev accepts a new client once the old one is gone.
        again = QMPClient.unix(d.path("a.sock"), timeout=10)
        self.addCleanup(again.close)
        again.negotiate()
        self.assertIn("qemu", again.ok("query-version"))
        self.assertIn("qemu", other.ok("query-version"))


if __name__ == "__main__":
    unittest.main()
