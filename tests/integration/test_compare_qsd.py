"""The same QMP transcript against vstord and qemu-storage-daemon.

Every step sends raw bytes and collects the reply lines until the daemon
goes quiet.  Replies are compared as JSON with member order kept, after
masking what legitimately differs: version strings, the command lists and
timestamps.  Skipped when qemu-storage-daemon is not installed.
"""

import json
import os
import socket
import subprocess
import time
import unittest

from daemon import QSD, VSTORD, Daemon, monitor_args
from qmp import QMPClient

QUIET = 0.15  # seconds without output that end a step

# (name, bytes).  A session is a list of steps on one connection.
NEGOTIATION = [
    ("before negotiation", b'{"execute":"query-version"}'),
    ("unknown before negotiation", b'{"execute":"nope","id":1}'),
    ("envelope error before negotiation", b'{"execute":"query-version","foo":1}'),
    ("bad enable type", b'{"execute":"qmp_capabilities","arguments":{"enable":"oob"}}'),
    ("bad enable value", b'{"execute":"qmp_capabilities","arguments":{"enable":["bogus"]}}'),
    ("unexpected argument", b'{"execute":"qmp_capabilities","arguments":{"bogus":1}}'),
    ("negotiate", b'{"execute":"qmp_capabilities","id":"neg"}'),
    ("negotiate again", b'{"execute":"qmp_capabilities"}'),
]

COMMANDS = [
    ("query-version", b'{"execute":"query-version"}'),
    ("id string", b'{"execute":"query-version","id":"abc"}'),
    ("id number", b'{"execute":"query-version","id":42}'),
    ("id float", b'{"execute":"query-version","id":-1.5}'),
    ("id object", b'{"execute":"query-version","id":{"a":[1,2]}}'),
    ("id array", b'{"execute":"query-version","id":[1,"x"]}'),
    ("id null", b'{"execute":"query-version","id":null}'),
    ("id bool", b'{"execute":"query-version","id":true}'),
    ("id first", b'{"id":7,"execute":"query-version"}'),
    ("unknown command", b'{"execute":"nope","id":2}'),
    ("non-object 42", b'42 '),
    ("non-object string", b'"str"'),
    ("non-object array", b'[1]'),
    ("non-object null", b'null '),
    ("empty object", b'{}'),
    ("execute not string", b'{"execute":1}'),
    ("arguments not object", b'{"execute":"query-version","arguments":[]}'),
    ("extra member", b'{"execute":"query-version","foo":1,"id":3}'),
    ("exec-oob without oob", b'{"exec-oob":"query-version","id":4}'),
    ("execute and exec-oob", b'{"execute":"query-version","exec-oob":"query-version"}'),
    ("arguments only", b'{"arguments":{}}'),
    ("arguments to no-arg command", b'{"execute":"query-version","arguments":{"x":1}}'),
    ("query-commands", b'{"execute":"query-commands"}'),
    # Argument checking, on commands both daemons have (qemu-storage-daemon
    # 7.2 has none of the fd commands; later subsystems add their commands
    # here).
    ("unexpected argument", b'{"execute":"query-qmp-schema","arguments":{"x":1}}'),
    ("bad capabilities list", b'{"execute":"query-version","arguments":{"enable":[]}}'),
    ("malformed: missing value", b'{"execute": }'),
    ("single quotes", b"{'execute':'query-version','id':'sq'}"),
    ("escaped quote", b"{'execute':'query-version','id':'it\\'s'}"),
    ("stray close brace", b'}'),
    ("stray close bracket", b']'),
    ("trailing comma", b'{"execute":"query-version",}'),
    ("missing colon", b'{"execute" "query-version"}'),
    ("non-string key", b'{1:2}'),
    ("duplicate key", b'{"execute":"query-version","execute":"x"}'),
    ("bad keyword", b'{"execute":tru}'),
    ("bad escape", b'{"execute":"a\\qb"}'),
    ("bad unicode escape", b'{"execute":"\\uD800"}'),
    ("invalid utf-8", b'{"execute":"\xc3\x28"}'),
    ("leading zero", b'{"id":01}'),
    ("big integers", b'{"execute":"query-version","id":[18446744073709551615,18446744073709551616,-9223372036854775809]}'),
    ("interpolation", b'{"execute":%d}'),
    ("stray byte then command", b'@{"execute":"query-version","id":"after"}'),
    ("control char resets", b'{"execute":"query-version"\x01{"execute":"query-version","id":"reset"}'),
    ("0xff resets", b'{"execute":\xff{"execute":"query-version","id":"ff"}'),
    ("unterminated string", b'{"execute":"abc\n{"execute":"query-version","id":"nl"}'),
    ("several per write", b'{"execute":"query-version","id":"a"}{"execute":"query-version","id":"b"}'),
    ("pretty input", b'{\n  "execute": "query-version",\n  "id": "p"\n}\n'),
    # Character devices (socket backend).
    ("chardev-add", b'{"execute":"chardev-add","arguments":{"id":"c1","backend":{"type":"socket",'
                    b'"data":{"addr":{"type":"unix","data":{"path":"@DIR@/c1.sock"}},"wait":false}}}}'),
    ("chardev-add duplicate", b'{"execute":"chardev-add","arguments":{"id":"c1","backend":'
                              b'{"type":"socket","data":{"addr":{"type":"unix","data":{"path":"@DIR@/c2.sock"}}}}}}'),
    ("chardev-add bind error", b'{"execute":"chardev-add","arguments":{"id":"c3","backend":'
                               b'{"type":"socket","data":{"addr":{"type":"unix","data":{"path":"/nonexistent/s"}}}}}}'),
    ("chardev-add connect error", b'{"execute":"chardev-add","arguments":{"id":"c3","backend":'
                                  b'{"type":"socket","data":{"addr":{"type":"unix","data":{"path":"@DIR@/none.sock"}},"server":false}}}}'),
    ("chardev-add missing member", b'{"execute":"chardev-add","arguments":{"id":"c3","backend":'
                                   b'{"type":"socket","data":{"addr":{"type":"unix","data":{}}}}}}'),
    ("chardev-add bad type", b'{"execute":"chardev-add","arguments":{"id":"c3","backend":{"type":"x","data":{}}}}'),
    ("query-chardev", b'{"execute":"query-chardev"}'),
    ("chardev-remove busy", b'{"execute":"chardev-remove","arguments":{"id":"m0"}}'),
    ("chardev-remove unknown", b'{"execute":"chardev-remove","arguments":{"id":"nope"}}'),
    ("chardev-remove", b'{"execute":"chardev-remove","arguments":{"id":"c1"}}'),
    ("query-chardev after remove", b'{"execute":"query-chardev"}'),
    ("unicode id", '{"execute":"query-version","id":"\u00e9\u20ac\U0001F600"}'.encode()),
    ("escaped unicode id", b'{"execute":"query-version","id":"\\u00e9\\ud83d\\ude00"}'),
]


def mask(obj):
    """Masks what legitimately differs between the two daemons."""
    if isinstance(obj, list) and obj and isinstance(obj[0], tuple):
        out = []
        for k, v in obj:
            if k in ("version", "qemu", "package"):
                v = "<masked>"
            elif k == "timestamp":
                v = "<masked>"
            out.append((k, mask(v)))
        return out
    if isinstance(obj, list):
        return [mask(v) for v in obj]
    return obj


def pairs(line):
    return json.loads(line, object_pairs_hook=lambda p: list(p))


class Transcript:
    def __init__(self, binary):
        self.daemon = Daemon(monitor_args(), binary=binary)
        self.client = QMPClient.unix(self.daemon.path("qmp.sock"))

    def collect(self):
        lines = []
        self.client.sock.settimeout(QUIET)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                lines.append(self.client.read_line())
            except (socket.timeout, TimeoutError):
                break
        return lines

    def step(self, data):
        # Paths in steps name the daemon's own directory as @DIR@.
        d = self.daemon.dir.encode()
        self.client.send_raw(data.replace(b"@DIR@", d))
        return [line.replace(d, b"@DIR@") for line in self.collect()]

    def close(self):
        self.client.close()
        self.daemon.stop()


def normalise(name, lines):
    out = []
    for line in lines:
        p = pairs(line)
        if name == "query-commands" or name == "query-version":
            # Compare shape only: the lists and versions differ by design.
            p = [(k, "<masked>" if k == "return" else v) for k, v in p]
        out.append(mask(p))
    return out


@unittest.skipIf(QSD is None, "qemu-storage-daemon is not installed")
class CompareWithQsd(unittest.TestCase):
    maxDiff = None

    def run_both(self, steps):
        ours, ref = Transcript(VSTORD), Transcript(QSD)
        self.addCleanup(ours.close)
        self.addCleanup(ref.close)
        g1, g2 = ours.collect(), ref.collect()
        self.assertEqual(normalise("greeting", g1), normalise("greeting", g2))
        for name, data in steps:
            a, b = ours.step(data), ref.step(data)
            with self.subTest(step=name):
                self.assertEqual(normalise(name, a), normalise(name, b),
                                 "\nvstord: %r\nqsd:    %r" % (a, b))

    def test_negotiation(self):
        self.run_both(NEGOTIATION)

    def test_commands_and_errors(self):
        self.run_both([NEGOTIATION[-2]] + COMMANDS)

    def test_command_list_covers_qsd_control_commands(self):
        # Every command qemu-storage-daemon has in the areas this daemon
        # implements must exist here too.
        ours, ref = Transcript(VSTORD), Transcript(QSD)
        self.addCleanup(ours.close)
        self.addCleanup(ref.close)
        lists = []
        for t in (ours, ref):
            t.collect()
            t.step(b'{"execute":"qmp_capabilities"}')
            (line,) = t.step(b'{"execute":"query-commands"}')
            lists.append({c["name"] for c in json.loads(line)["return"]})
        needed = {"qmp_capabilities", "query-version", "query-commands", "query-qmp-schema",
                  "quit"}
        self.assertTrue(needed <= lists[1], "reference lacks %s" % (needed - lists[1]))
        self.assertTrue(needed <= lists[0], "vstord lacks %s" % (needed - lists[0]))
        # Beyond the reference: descriptor passing and yank.
        self.assertTrue({"getfd", "closefd", "add-fd", "remove-fd", "query-fdsets", "yank",
                         "query-yank"} <= lists[0])


# Command lines that must fail the same way in both daemons: exit status 1
# and the same message, with the program name masked.
BAD_COMMAND_LINES = [
    ["--monitor", "chardev=nope"],
    ["--monitor", "m0,pretty"],
    ["--chardev", "socket,id=1x"],
    ["--chardev", "nope,id=x"],
    ["--chardev", "socket,id=x,bogus=1"],
    ["--chardev", "socket,path=/nonexistent/dir/s,server=on,wait=off"],
    ["--chardev", "socket,id=x,path=/nonexistent/dir/s,server=on,wait=off"],
    ["--chardev", "socket,id=x,host=127.0.0.1"],
    ["--chardev", "socket,id=x,path=/a,host=b,port=1"],
    ["--chardev", "socket,id=x,fd=notanumber,server=on,wait=off"],
    ["--chardev", "socket,id=x,path=/tmp/never,server=on,reconnect=1"],
    ["--object", "iothread,id=io0", "--object", "iothread,id=io0"],
    ["--object", "secret,id=s,format=hex"],
    ["--object", "nope,id=x"],
    ["--blockdev", "driver=qcow3,node-name=x"],
    ["--blockdev", "null-co,node-name=x,size=abc"],
    ["--blockdev", '{"driver":"null-co","size":1.5}'],
    ["--blockdev", "null-co,read-only=maybe"],
    ["--blockdev", "driver=raw,file.driver=file"],
    ["--blockdev", "raw,file.0=x"],
    ["--export", "nbd,id=e,node-name=n,bogus=1"],
    ["--export", "type=nope,id=e,node-name=n"],
    ["--nbd-server", "addr.type=unix,addr.path=/tmp/x,max-connections=-1"],
    ["--nbd-server", "addr.type=inet,addr.host=h"],
    ["--nbd-server", "{}"],
    ["--nbd-server", "{"],
    ["--monitor", "help"],
    ["extra-argument"],
]


@unittest.skipIf(QSD is None, "qemu-storage-daemon is not installed")
class CompareCommandLine(unittest.TestCase):
    def run_daemon(self, binary, args):
        p = subprocess.run([binary] + args, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=20)
        name = os.path.basename(binary)
        return p.returncode, p.stderr.decode().replace(name + ":", "PROG:")

    def test_bad_command_lines(self):
        for args in BAD_COMMAND_LINES:
            with self.subTest(args=args):
                ours = self.run_daemon(VSTORD, args)
                ref = self.run_daemon(QSD, args)
                self.assertEqual(ref[0], 1, "reference accepted %r" % args)
                self.assertEqual(ours, ref)


if __name__ == "__main__":
    unittest.main()
