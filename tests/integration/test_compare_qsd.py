"""The same QMP transcript against vstord and qemu-storage-daemon.

Every step sends raw bytes and collects the reply lines until the daemon
goes quiet.  Replies are compared as JSON with member order kept, after
masking what legitimately differs: version strings, the command lists,
timestamps and the random digits of automatic node names.  Skipped when
qemu-storage-daemon is not installed.
"""

import json
import os
import re
import socket
import subprocess
import tempfile
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

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


def _add(id_, type_, data):
    return json.dumps({"execute": "chardev-add", "arguments": {
        "id": id_, "backend": {"type": type_, "data": data}}}).encode()


def _cmd(name, **args):
    return json.dumps({"execute": name, "arguments": args}).encode()


# Character device backends other than sockets, ringbuf-read/-write, and
# the chardev command errors.  run_both's setup makes @DIR@/fifo.in,
# @DIR@/fifo.out and @DIR@/single (FIFOs) first.  Left out because vstord
# differs on purpose (docs/differences.md):
# - ringbuf size 0 (qemu-storage-daemon 7.2 accepts a ring with no room);
# - ringbuf-read of text that is not plain ASCII (vstord keeps a character
#   cut by 'size' for the next read, skips continuation bytes of a character
#   lost to overflow, returns NUL as U+0000);
# - msmouse, wctablet, braille, testdev, vc (vstord says why it refuses them);
# - chardev-change of a monitor's chardev (vstord's monitor moves to the new
#   backend; qemu-storage-daemon's refuse hotswap).
# Left out because they cannot match: pty (the /dev/pts number), hub and
# pty's 'path' (newer than QEMU 7.2), chardev-change to a backend that
# fails on a device without frontend (QEMU 7.2 removes the old device first
# and loses it; vstord keeps it, as qapi/char.json says), chardev-remove of
# an unused mux (QEMU 7.2 always calls a mux busy).
CHARDEVS = [
    ("add null", _add("n1", "null", {})),
    ("add ringbuf", _add("rb", "ringbuf", {"size": 16})),
    ("add memory", _add("mem", "memory", {})),
    ("add ringbuf size 3", _add("r3", "ringbuf", {"size": 3})),
    ("add memory size 100", _add("r3", "memory", {"size": 100})),
    ("add ringbuf size -8", _add("r3", "ringbuf", {"size": -8})),
    ("add ringbuf size string", _add("r3", "ringbuf", {"size": "16"})),
    ("add file", _add("f1", "file", {"out": "@DIR@/out.txt"})),
    ("add file append", _add("f2", "file", {"out": "@DIR@/out2.txt", "append": True})),
    ("add file missing input", _add("f3", "file", {"out": "@DIR@/o3", "in": "@DIR@/missing"})),
    ("add file on directory", _add("f3", "file", {"out": "@DIR@"})),
    ("add file missing out", _add("f3", "file", {})),
    ("add pipe pair", _add("p1", "pipe", {"device": "@DIR@/fifo"})),
    ("add pipe single", _add("p2", "pipe", {"device": "@DIR@/single"})),
    ("add pipe missing", _add("p3", "pipe", {"device": "@DIR@/missing"})),
    ("add serial missing", _add("s1", "serial", {"device": "@DIR@/missing"})),
    ("add udp", _add("u1", "udp", {"remote": {"type": "inet", "data": {
        "host": "127.0.0.1", "port": "9"}}})),
    ("add stdio", _add("io", "stdio", {})),
    ("add stdio again", _add("io2", "stdio", {})),
    ("add duplicate", _add("n1", "null", {})),
    ("ringbuf-write", _cmd("ringbuf-write", device="rb", data="hello")),
    ("ringbuf-read part", _cmd("ringbuf-read", device="rb", size=3)),
    ("ringbuf-read rest", _cmd("ringbuf-read", device="rb", size=100)),
    ("ringbuf-read empty", _cmd("ringbuf-read", device="rb", size=10)),
    ("ringbuf-write overflow", _cmd("ringbuf-write", device="rb", data="0123456789abcdefXYZ")),
    ("ringbuf-read after overflow", _cmd("ringbuf-read", device="rb", size=100)),
    ("ringbuf-write base64", _cmd("ringbuf-write", device="rb", data="aGVsbG8gd29ybGQ=",
                                  format="base64")),
    ("ringbuf-read base64", _cmd("ringbuf-read", device="rb", size=5, format="base64")),
    ("ringbuf-read utf8", _cmd("ringbuf-read", device="rb", size=100, format="utf8")),
    ("ringbuf-write invalid base64", _cmd("ringbuf-write", device="rb", data="!!!",
                                          format="base64")),
    ("ringbuf-write base64 crlf", _cmd("ringbuf-write", device="rb", data="YWJj\r\n",
                                       format="base64")),
    ("ringbuf-write bad format", _cmd("ringbuf-write", device="rb", data="x", format="hex")),
    ("ringbuf-write missing data", _cmd("ringbuf-write", device="rb")),
    ("ringbuf-read size 0", _cmd("ringbuf-read", device="rb", size=0)),
    ("ringbuf-read size -1", _cmd("ringbuf-read", device="rb", size=-1)),
    ("ringbuf-write memory", _cmd("ringbuf-write", device="mem", data="abc")),
    ("ringbuf-read memory", _cmd("ringbuf-read", device="mem", size=10)),
    ("ringbuf-write not a ringbuf", _cmd("ringbuf-write", device="n1", data="x")),
    ("ringbuf-read not a ringbuf", _cmd("ringbuf-read", device="f1", size=1)),
    ("ringbuf-write unknown", _cmd("ringbuf-write", device="nope", data="x")),
    ("ringbuf-read unknown", _cmd("ringbuf-read", device="nope", size=1)),
    ("send-break unknown", _cmd("chardev-send-break", id="nope")),
    ("send-break", _cmd("chardev-send-break", id="n1")),
    ("send-break ringbuf", _cmd("chardev-send-break", id="rb")),
    ("change unknown", _cmd("chardev-change", id="nope", backend={"type": "null", "data": {}})),
    ("change without frontend", _cmd("chardev-change", id="u1",
                                     backend={"type": "null", "data": {}})),
    ("query-chardev", b'{"execute":"query-chardev"}'),
    ("remove monitor chardev", _cmd("chardev-remove", id="m0")),
    ("remove unknown", _cmd("chardev-remove", id="nope")),
    ("remove file", _cmd("chardev-remove", id="f1")),
    ("remove pipe", _cmd("chardev-remove", id="p1")),
    ("remove ringbuf", _cmd("chardev-remove", id="rb")),
    ("remove ringbuf again", _cmd("chardev-remove", id="rb")),
    ("query-chardev after remove", b'{"execute":"query-chardev"}'),
    # (After the last query-chardev: see test_mux_base_frontend_open.)
    ("add mux", _add("mx1", "mux", {"chardev": "n1"})),
    ("add mux on busy base", _add("mx2", "mux", {"chardev": "n1"})),
    ("add mux unknown base", _add("mx2", "mux", {"chardev": "nope"})),
    ("change mux", _cmd("chardev-change", id="mx1", backend={"type": "null", "data": {}})),
    ("remove mux base", _cmd("chardev-remove", id="n1")),
]


def _q(name, args=None):
    req = {"execute": name}
    if args is not None:
        req["arguments"] = args
    return json.dumps(req).encode()


def _bd(**opts):
    """blockdev-add; node_name= stands for "node-name"."""
    if "node_name" in opts:
        opts["node-name"] = opts.pop("node_name")
    return _q("blockdev-add", opts)


def _file(path="@DIR@/img", **opts):
    return dict({"driver": "file", "filename": path}, **opts)


def _nbd_addr(path):
    return {"type": "unix", "data": {"path": path}}


# Block nodes: drivers, errors, queries, the graph and block_resize.
# run_both's setup makes @DIR@/img, @DIR@/img2 and @DIR@/img3 (1 MiB each,
# sparse).  Left out because vstord differs on purpose: null-co/null-aio
# with a negative size (qemu-storage-daemon 7.2 aborts) and aio=io_uring
# (not a vstord back end).  host_device on a loop device needs root and is
# in test_block_nodes.py.
BLOCKDEVS = [
    ("add file", _bd(node_name="f0", **_file())),
    ("add file again", _bd(node_name="f0", **_file())),
    ("add file missing", _bd(node_name="f1", **_file("@DIR@/missing"))),
    ("add file on directory", _bd(node_name="f1", **_file("@DIR@"))),
    ("add file without filename", _bd(driver="file", node_name="f1")),
    ("add file empty filename", _bd(node_name="f1", **_file(""))),
    ("add file on a char device", _bd(node_name="f1", **_file("/dev/null"))),
    ("add host_device on a file", _bd(node_name="h0", driver="host_device",
                                      filename="@DIR@/img2")),
    ("add host_device on a char device", _bd(node_name="h0", driver="host_device",
                                             filename="/dev/null")),
    ("add raw by reference", _bd(driver="raw", node_name="r0", file="f0")),
    ("resize file under raw", _q("block_resize", {"node-name": "f0", "size": 2097152})),
    ("resize raw", _q("block_resize", {"node-name": "r0", "size": 1048576})),
    ("add raw unknown child", _bd(driver="raw", node_name="r1", file="nope")),
    ("add raw without child", _bd(driver="raw", node_name="r1")),
    ("add raw inline child", _bd(driver="raw", node_name="r1", file=_file("@DIR@/img2"))),
    ("add raw named inline child", _bd(driver="raw", node_name="r2",
                                       file=_file("@DIR@/img3", **{"node-name": "c2"}))),
    ("add raw inline duplicate", _bd(driver="raw", node_name="r3",
                                     file=_file("@DIR@/img3", **{"node-name": "f0"}))),
    ("add raw window", _bd(driver="raw", node_name="w0", offset=4096, size=8192,
                           file=_file("@DIR@/img2", **{"read-only": True}))),
    ("add raw size only", _bd(driver="raw", node_name="w1", size=4096, file="f0")),
    ("add raw offset past end", _bd(driver="raw", node_name="w2", offset=1048577,
                                    file=_file("@DIR@/img2"))),
    ("add raw window past end", _bd(driver="raw", node_name="w2", offset=4096, size=1048576,
                                    file=_file("@DIR@/img2"))),
    ("add raw size not aligned", _bd(driver="raw", node_name="w2", size=1000,
                                     file=_file("@DIR@/img2"))),
    ("add raw negative offset", _bd(driver="raw", node_name="w2", offset=-1,
                                    file=_file("@DIR@/img2"))),
    ("add raw unaligned offset", _bd(driver="raw", node_name="w2", offset=1000,
                                     file=_file("@DIR@/img2"))),
    ("add null-co", _bd(driver="null-co", node_name="n0")),
    ("add null-aio", _bd(driver="null-aio", node_name="n1", size=1048576,
                         **{"read-zeroes": True})),
    ("add null-co sized", _bd(driver="null-co", node_name="n2", size=1000, **{"read-only": True})),
    ("add null-co latency", _bd(driver="null-co", node_name="n3", **{"latency-ns": 1000})),
    ("add null-co cache", _bd(driver="null-co", node_name="n4", discard="unmap",
                              cache={"direct": True, "no-flush": True},
                              **{"detect-zeroes": "unmap"})),
    ("add without node-name", _bd(driver="null-co")),
    ("add bad node-name", _bd(driver="null-co", node_name="1bad")),
    ("add automatic-looking node-name", _bd(driver="null-co", node_name="#block1")),
    ("add long node-name", _bd(driver="null-co", node_name="x" * 32)),
    ("add bad driver", _bd(driver="bogus", node_name="x")),
    ("add unexpected member", _bd(driver="null-co", node_name="x", bogus=1)),
    ("add force-share read-write", _bd(node_name="x", **_file("@DIR@/img3",
                                                            **{"force-share": True}))),
    ("add force-share read-only", _bd(node_name="fs", **_file("@DIR@/img3", **{
        "force-share": True, "read-only": True}))),
    ("add detect-zeroes unmap", _bd(node_name="x", **_file("@DIR@/img3",
                                                         **{"detect-zeroes": "unmap"}))),
    ("add aio native", _bd(node_name="x", **_file("@DIR@/img3", aio="native"))),
    ("add locking off", _bd(node_name="lk", **_file("@DIR@/img3", locking="off"))),
    ("add bad locking", _bd(node_name="x", **_file("@DIR@/img3", locking="bogus"))),
    ("query-named-block-nodes", _q("query-named-block-nodes")),
    ("query-named-block-nodes flat", _q("query-named-block-nodes", {"flat": True})),
    ("query-block", _q("query-block")),
    ("x-debug-query-block-graph", _q("x-debug-query-block-graph")),
    ("resize file beside a fixed-size raw", _q("block_resize", {"node-name": "f0",
                                                                "size": 2097152})),
    ("resize fixed-size raw", _q("block_resize", {"node-name": "w1", "size": 8192})),
    ("resize read-only", _q("block_resize", {"node-name": "fs", "size": 8192})),
    ("resize unknown node", _q("block_resize", {"node-name": "nope", "size": 4096})),
    ("resize unknown device", _q("block_resize", {"device": "nope", "size": 4096})),
    ("resize by device name", _q("block_resize", {"device": "f0", "size": 4096})),
    ("resize neither", _q("block_resize", {"size": 4096})),
    ("resize negative", _q("block_resize", {"node-name": "r0", "size": -1})),
    ("resize null", _q("block_resize", {"node-name": "n0", "size": 4096})),
    ("del child in use", _q("blockdev-del", {"node-name": "f0"})),
    ("del inline child", _q("blockdev-del", {"node-name": "c2"})),
    ("del unknown", _q("blockdev-del", {"node-name": "nope"})),
    ("del raw with inline child", _q("blockdev-del", {"node-name": "r2"})),
    ("del fixed-size raw", _q("blockdev-del", {"node-name": "w1"})),
    ("query-named-block-nodes after del", _q("query-named-block-nodes")),
    ("x-debug-query-block-graph after del", _q("x-debug-query-block-graph")),
]

# block_resize refused for a permission: a file node under a raw node that
# does not share resize, and a plain raw node beside it.
RESIZE_CONFLICTS = [
    ("add file", _bd(node_name="f0", **_file())),
    ("add fixed-size raw", _bd(driver="raw", node_name="w", size=4096, file="f0")),
    ("add raw", _bd(driver="raw", node_name="r", file="f0")),
    ("resize file", _q("block_resize", {"node-name": "f0", "size": 2097152})),
    ("resize raw beside", _q("block_resize", {"node-name": "r", "size": 2097152})),
    ("graph", _q("x-debug-query-block-graph")),
]

# Dirty bitmaps on a raw node over a file node, and on a small null node.
# Left out: block-dirty-bitmap-merge with an empty list (qemu-storage-daemon
# 7.2 crashes; vstord merges nothing).
BITMAPS = [
    ("add file", _bd(node_name="f0", **_file())),
    ("add raw", _bd(driver="raw", node_name="r0", file="f0")),
    ("add null", _bd(driver="null-co", node_name="n0", size=65536)),
    ("add", _q("block-dirty-bitmap-add", {"node": "r0", "name": "b0"})),
    ("add again", _q("block-dirty-bitmap-add", {"node": "r0", "name": "b0"})),
    ("add granularity 512", _q("block-dirty-bitmap-add", {"node": "r0", "name": "b1",
                                                          "granularity": 512})),
    ("add granularity 256", _q("block-dirty-bitmap-add", {"node": "r0", "name": "x",
                                                          "granularity": 256})),
    ("add granularity 1000", _q("block-dirty-bitmap-add", {"node": "r0", "name": "x",
                                                           "granularity": 1000})),
    ("add granularity 0", _q("block-dirty-bitmap-add", {"node": "r0", "name": "x",
                                                        "granularity": 0})),
    ("add granularity negative", _q("block-dirty-bitmap-add", {"node": "r0", "name": "x",
                                                               "granularity": -512})),
    ("add granularity 2^32", _q("block-dirty-bitmap-add", {"node": "r0", "name": "x",
                                                           "granularity": 4294967296})),
    ("add granularity 2^31", _q("block-dirty-bitmap-add", {"node": "r0", "name": "big",
                                                           "granularity": 2147483648})),
    ("add disabled", _q("block-dirty-bitmap-add", {"node": "r0", "name": "off",
                                                   "disabled": True})),
    ("add persistent", _q("block-dirty-bitmap-add", {"node": "r0", "name": "p",
                                                     "persistent": True})),
    ("add persistent on file", _q("block-dirty-bitmap-add", {"node": "f0", "name": "p",
                                                             "persistent": True})),
    ("add unknown node", _q("block-dirty-bitmap-add", {"node": "nope", "name": "x"})),
    ("add empty name", _q("block-dirty-bitmap-add", {"node": "r0", "name": ""})),
    ("add long name", _q("block-dirty-bitmap-add", {"node": "r0", "name": "y" * 1024})),
    ("add longest name", _q("block-dirty-bitmap-add", {"node": "r0", "name": "y" * 1023})),
    ("add on file", _q("block-dirty-bitmap-add", {"node": "f0", "name": "fb"})),
    ("add on null", _q("block-dirty-bitmap-add", {"node": "n0", "name": "nb"})),
    ("query-named-block-nodes", _q("query-named-block-nodes")),
    ("sha256", _q("x-debug-block-dirty-bitmap-sha256", {"node": "r0", "name": "b0"})),
    ("sha256 512", _q("x-debug-block-dirty-bitmap-sha256", {"node": "r0", "name": "b1"})),
    ("sha256 2^31", _q("x-debug-block-dirty-bitmap-sha256", {"node": "r0", "name": "big"})),
    ("sha256 null", _q("x-debug-block-dirty-bitmap-sha256", {"node": "n0", "name": "nb"})),
    ("sha256 unknown bitmap", _q("x-debug-block-dirty-bitmap-sha256",
                                 {"node": "r0", "name": "zz"})),
    ("sha256 unknown node", _q("x-debug-block-dirty-bitmap-sha256",
                               {"node": "zz", "name": "b0"})),
    ("remove", _q("block-dirty-bitmap-remove", {"node": "r0", "name": "b1"})),
    ("remove again", _q("block-dirty-bitmap-remove", {"node": "r0", "name": "b1"})),
    ("remove unknown node", _q("block-dirty-bitmap-remove", {"node": "zz", "name": "b1"})),
    ("clear", _q("block-dirty-bitmap-clear", {"node": "r0", "name": "b0"})),
    ("clear unknown", _q("block-dirty-bitmap-clear", {"node": "r0", "name": "zz"})),
    ("disable", _q("block-dirty-bitmap-disable", {"node": "r0", "name": "b0"})),
    ("disable again", _q("block-dirty-bitmap-disable", {"node": "r0", "name": "b0"})),
    ("clear disabled", _q("block-dirty-bitmap-clear", {"node": "r0", "name": "b0"})),
    ("enable", _q("block-dirty-bitmap-enable", {"node": "r0", "name": "b0"})),
    ("enable again", _q("block-dirty-bitmap-enable", {"node": "r0", "name": "b0"})),
    ("enable unknown", _q("block-dirty-bitmap-enable", {"node": "r0", "name": "zz"})),
    ("disable unknown node", _q("block-dirty-bitmap-disable", {"node": "zz", "name": "b0"})),
    ("merge", _q("block-dirty-bitmap-merge", {"node": "r0", "target": "off",
                                              "bitmaps": ["b0"]})),
    ("merge external", _q("block-dirty-bitmap-merge", {"node": "r0", "target": "off", "bitmaps": [
        "b0", "big", {"node": "f0", "name": "fb"}]})),
    ("merge into itself", _q("block-dirty-bitmap-merge", {"node": "r0", "target": "off",
                                                          "bitmaps": ["off"]})),
    ("merge unknown target", _q("block-dirty-bitmap-merge", {"node": "r0", "target": "zz",
                                                             "bitmaps": ["b0"]})),
    ("merge unknown source", _q("block-dirty-bitmap-merge", {"node": "r0", "target": "off",
                                                             "bitmaps": ["zz"]})),
    ("merge source of another node", _q("block-dirty-bitmap-merge", {
        "node": "r0", "target": "off", "bitmaps": ["fb"]})),
    ("merge external unknown node", _q("block-dirty-bitmap-merge", {
        "node": "r0", "target": "off", "bitmaps": [{"node": "zz", "name": "fb"}]})),
    ("merge external unknown bitmap", _q("block-dirty-bitmap-merge", {
        "node": "r0", "target": "off", "bitmaps": [{"node": "f0", "name": "zz"}]})),
    ("merge different sizes", _q("block-dirty-bitmap-merge", {
        "node": "r0", "target": "off", "bitmaps": [{"node": "n0", "name": "nb"}]})),
    ("merge unknown node", _q("block-dirty-bitmap-merge", {"node": "zz", "target": "off",
                                                           "bitmaps": ["b0"]})),
    ("query-named-block-nodes after", _q("query-named-block-nodes")),
]

# The NBD server and the export registry.  Left out because vstord differs
# on purpose: nbd-server-start with tls-creds (vstord refuses TLS for now),
# handshake-max-seconds (not in QEMU 7.2), an 'fd' address (vstord takes
# getfd names) and nbd-server-stop while a client negotiates (QEMU 7.2
# hangs).  fuse and vhost-user-blk appear only where the duplicate id is
# refused first.
EXPORTS = [
    ("add file", _bd(node_name="f0", **_file())),
    ("add raw", _bd(driver="raw", node_name="r0", file="f0")),
    ("add null", _bd(driver="null-co", node_name="n0", size=65536)),
    ("add ro", _bd(node_name="ro", **_file("@DIR@/img2", **{"read-only": True}))),
    ("add raw over ro", _bd(driver="raw", node_name="rro", file="ro")),
    ("export before the server", _q("block-export-add", {"type": "nbd", "id": "e0",
                                                         "node-name": "r0"})),
    ("nbd-server-add before the server", _q("nbd-server-add", {"device": "r0"})),
    ("stop before start", _q("nbd-server-stop")),
    ("start bind error", _q("nbd-server-start", {"addr": _nbd_addr("/nonexistent/dir/s")})),
    ("start flat address", _q("nbd-server-start", {"addr": {"type": "unix",
                                                            "path": "@DIR@/flat.sock"}})),
    ("start bad type", _q("nbd-server-start", {"addr": {"type": "bogus", "data": {}}})),
    ("start without addr", _q("nbd-server-start", {})),
    ("start bad max-connections", _q("nbd-server-start", {
        "addr": _nbd_addr("@DIR@/nbd.sock"), "max-connections": -1})),
    ("start", _q("nbd-server-start", {"addr": _nbd_addr("@DIR@/nbd.sock"),
                                      "max-connections": 10})),
    ("start again", _q("nbd-server-start", {"addr": _nbd_addr("@DIR@/nbd2.sock")})),
    ("query-block-exports empty", _q("query-block-exports")),
    ("export", _q("block-export-add", {"type": "nbd", "id": "e0", "node-name": "r0"})),
    ("export same id", _q("block-export-add", {"type": "nbd", "id": "e0", "node-name": "n0",
                                               "name": "x"})),
    ("export same id fuse", _q("block-export-add", {"type": "fuse", "id": "e0",
                                                    "node-name": "n0",
                                                    "mountpoint": "@DIR@/img3"})),
    ("export same id vhost-user-blk", _q("block-export-add", {
        "type": "vhost-user-blk", "id": "e0", "node-name": "n0",
        "addr": {"type": "unix", "path": "@DIR@/vu.sock"}})),
    ("export same name", _q("block-export-add", {"type": "nbd", "id": "e1", "node-name": "r0"})),
    ("export writable", _q("block-export-add", {"type": "nbd", "id": "e1", "node-name": "r0",
                                                "name": "other", "description": "hello",
                                                "writable": True, "writethrough": True})),
    ("export unknown node", _q("block-export-add", {"type": "nbd", "id": "e2",
                                                    "node-name": "nope"})),
    ("export bad id", _q("block-export-add", {"type": "nbd", "id": "bad id",
                                              "node-name": "n0"})),
    ("export empty id", _q("block-export-add", {"type": "nbd", "id": "", "node-name": "n0"})),
    ("export unknown bitmap", _q("block-export-add", {"type": "nbd", "id": "e2",
                                                      "node-name": "n0", "bitmaps": ["zz"]})),
    ("bitmap on null", _q("block-dirty-bitmap-add", {"node": "n0", "name": "nb"})),
    ("bitmap on file", _q("block-dirty-bitmap-add", {"node": "f0", "name": "fb",
                                                     "disabled": True})),
    ("export enabled bitmap read-only", _q("block-export-add", {
        "type": "nbd", "id": "e2", "node-name": "n0", "bitmaps": ["nb"]})),
    ("export bitmap of the child", _q("block-export-add", {
        "type": "nbd", "id": "e2", "node-name": "r0", "name": "x", "bitmaps": ["fb"]})),
    ("export external bitmap unknown node", _q("block-export-add", {
        "type": "nbd", "id": "e2", "node-name": "r0", "name": "x",
        "bitmaps": [{"node": "zz", "name": "fb"}]})),
    ("export external bitmap unknown", _q("block-export-add", {
        "type": "nbd", "id": "e2", "node-name": "r0", "name": "x",
        "bitmaps": [{"node": "f0", "name": "zz"}]})),
    ("export with bitmaps", _q("block-export-add", {
        "type": "nbd", "id": "e2", "node-name": "n0", "writable": True, "bitmaps": ["nb"],
        "allocation-depth": True})),
    ("export external bitmap", _q("block-export-add", {
        "type": "nbd", "id": "e3", "node-name": "r0", "name": "x3",
        "bitmaps": [{"node": "f0", "name": "fb"}]})),
    ("export busy bitmap", _q("block-export-add", {
        "type": "nbd", "id": "e4", "node-name": "n0", "name": "x4", "writable": True,
        "bitmaps": ["nb"]})),
    ("remove exported bitmap", _q("block-dirty-bitmap-remove", {"node": "n0", "name": "nb"})),
    ("disable exported bitmap", _q("block-dirty-bitmap-disable", {"node": "n0", "name": "nb"})),
    ("export name too long", _q("block-export-add", {"type": "nbd", "id": "e4",
                                                     "node-name": "n0", "name": "z" * 4097})),
    ("export description too long", _q("block-export-add", {
        "type": "nbd", "id": "e4", "node-name": "n0", "name": "x4", "description": "z" * 4097})),
    ("export unknown iothread", _q("block-export-add", {
        "type": "nbd", "id": "e4", "node-name": "n0", "name": "x4", "iothread": "nope"})),
    ("export unexpected member", _q("block-export-add", {
        "type": "nbd", "id": "e4", "node-name": "n0", "name": "x4", "bogus": 1})),
    ("export bad type", _q("block-export-add", {"type": "bogus", "id": "e4",
                                                "node-name": "n0"})),
    ("export read-only node writable", _q("block-export-add", {
        "type": "nbd", "id": "e4", "node-name": "ro", "writable": True})),
    ("export raw over read-only writable", _q("block-export-add", {
        "type": "nbd", "id": "e4", "node-name": "rro", "writable": True})),
    ("export empty name", _q("block-export-add", {"type": "nbd", "id": "e5", "node-name": "ro",
                                                  "name": "", "bitmaps": []})),
    ("query-block-exports", _q("query-block-exports")),
    ("query-named-block-nodes with exports", _q("query-named-block-nodes")),
    ("x-debug-query-block-graph with exports", _q("x-debug-query-block-graph")),
    ("query-block with exports", _q("query-block")),
    ("del exported node", _q("blockdev-del", {"node-name": "r0"})),
    ("resize exported node", _q("block_resize", {"node-name": "f0", "size": 2097152})),
    ("nbd-server-add name taken", _q("nbd-server-add", {"device": "n0"})),
    ("nbd-server-add", _q("nbd-server-add", {"device": "rro"})),
    ("nbd-server-add same id", _q("nbd-server-add", {"device": "rro"})),
    ("nbd-server-add id of another", _q("nbd-server-add", {"device": "n0", "name": "e0"})),
    ("nbd-server-add same name", _q("nbd-server-add", {"device": "r0", "name": "other"})),
    ("nbd-server-add everything", _q("nbd-server-add", {
        "device": "rro", "name": "nn", "description": "d", "writable": False})),
    ("nbd-server-add unknown device", _q("nbd-server-add", {"device": "zz"})),
    ("nbd-server-add unknown bitmap", _q("nbd-server-add", {"device": "ro", "name": "b",
                                                            "bitmap": "zz"})),
    ("nbd-server-remove by name", _q("nbd-server-remove", {"name": "other"})),
    ("nbd-server-remove", _q("nbd-server-remove", {"name": "rro"})),
    ("nbd-server-remove hard", _q("nbd-server-remove", {"name": "nn", "mode": "hard"})),
    ("nbd-server-remove unknown", _q("nbd-server-remove", {"name": "zz"})),
    ("nbd-server-remove bad mode", _q("nbd-server-remove", {"name": "e1", "mode": "bogus"})),
    ("del", _q("block-export-del", {"id": "e3"})),
    ("del again", _q("block-export-del", {"id": "e3"})),
    ("del hard", _q("block-export-del", {"id": "e5", "mode": "hard"})),
    ("del safe", _q("block-export-del", {"id": "e2", "mode": "safe"})),
    ("del bad mode", _q("block-export-del", {"id": "e1", "mode": "bogus"})),
    ("del unknown", _q("block-export-del", {"id": "zz"})),
    ("query-block-exports after del", _q("query-block-exports")),
    ("id reuse", _q("block-export-add", {"type": "nbd", "id": "e2", "node-name": "n0",
                                         "name": "again"})),
    ("stop with exports", _q("nbd-server-stop")),
    ("query-block-exports after stop", _q("query-block-exports")),
    ("stop again", _q("nbd-server-stop")),
    ("restart", _q("nbd-server-start", {"addr": _nbd_addr("@DIR@/nbd.sock")})),
    ("export after restart", _q("block-export-add", {"type": "nbd", "id": "e0",
                                                     "node-name": "r0"})),
    ("query-block-exports after restart", _q("query-block-exports")),
    ("del node after stop", _q("blockdev-del", {"node-name": "n0"})),
]

# Block commands vstord implements, all of which qemu-storage-daemon has.
BLOCK_COMMANDS = {
    "blockdev-add", "blockdev-del", "query-named-block-nodes", "query-block", "block_resize",
    "x-debug-query-block-graph", "block-dirty-bitmap-add", "block-dirty-bitmap-remove",
    "block-dirty-bitmap-clear", "block-dirty-bitmap-enable", "block-dirty-bitmap-disable",
    "block-dirty-bitmap-merge", "x-debug-block-dirty-bitmap-sha256", "nbd-server-start",
    "nbd-server-stop", "nbd-server-add", "nbd-server-remove", "block-export-add",
    "block-export-del", "query-block-exports",
}


# Exports with iothreads: the first export with an iothread moves its node
# (and the nodes connected to it) there; a fixed-iothread export pins it,
# so a later fixed one elsewhere is refused and a later non-fixed one stays
# with the node; once the node's exports are gone it can move again.
IOTHREAD_EXPORTS = [
    ("add file", _bd(node_name="f0", **_file())),
    ("add raw", _bd(driver="raw", node_name="r0", file="f0")),
    ("add null", _bd(driver="null-co", node_name="n0", size=65536)),
    ("start", _q("nbd-server-start", {"addr": _nbd_addr("@DIR@/nbd.sock")})),
    ("fixed in io0", _q("block-export-add", {"type": "nbd", "id": "e0", "node-name": "r0",
                                             "iothread": "io0", "fixed-iothread": True})),
    ("child in io1", _q("block-export-add", {"type": "nbd", "id": "e1", "node-name": "f0",
                                             "iothread": "io1"})),
    ("child fixed in io1", _q("block-export-add", {"type": "nbd", "id": "e2",
                                                   "node-name": "f0", "name": "x",
                                                   "iothread": "io1", "fixed-iothread": True})),
    ("same node fixed in io0", _q("block-export-add", {"type": "nbd", "id": "e2",
                                                       "node-name": "r0", "name": "y",
                                                       "iothread": "io0",
                                                       "fixed-iothread": True})),
    ("no iothread", _q("block-export-add", {"type": "nbd", "id": "e3", "node-name": "r0",
                                            "name": "z"})),
    ("other node fixed in io1", _q("block-export-add", {"type": "nbd", "id": "e4",
                                                        "node-name": "n0",
                                                        "iothread": "io1",
                                                        "fixed-iothread": True})),
    ("del", _q("block-export-del", {"id": "e0"})),
    ("del", _q("block-export-del", {"id": "e1"})),
    ("del", _q("block-export-del", {"id": "e2"})),
    ("del", _q("block-export-del", {"id": "e3"})),
    ("fixed in io1 once free", _q("block-export-add", {"type": "nbd", "id": "e5",
                                                       "node-name": "r0", "iothread": "io1",
                                                       "fixed-iothread": True})),
    ("query-block-exports", _q("query-block-exports")),
]


def make_images(d):
    for name in ("img", "img2", "img3"):
        with open(os.path.join(d, name), "wb") as f:
            f.truncate(1 << 20)


# QEMU names an inline child "#block" + a counter + two random digits; the
# random digits differ from run to run, so they are masked (the counter is
# compared).
AUTO_NODE_NAME = re.compile(r"^(#block\d+)\d\d$")


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
    if isinstance(obj, str):
        m = AUTO_NODE_NAME.match(obj)
        if m:
            return m.group(1) + "NN"
    return obj


def pairs(line):
    return json.loads(line, object_pairs_hook=lambda p: list(p))


class Transcript:
    def __init__(self, binary, extra_args=()):
        self.daemon = Daemon(monitor_args() + list(extra_args), binary=binary)
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

    def run_both(self, steps, setup=None, extra_args=()):
        ours, ref = Transcript(VSTORD, extra_args), Transcript(QSD, extra_args)
        self.addCleanup(ours.close)
        self.addCleanup(ref.close)
        if setup:
            setup(ours.daemon.dir)
            setup(ref.daemon.dir)
        # Both daemons take each step at the same time: a step ends only
        # after QUIET seconds of silence.
        pool = ThreadPoolExecutor(2)
        self.addCleanup(pool.shutdown)
        g1, g2 = pool.map(Transcript.collect, (ours, ref))
        self.assertEqual(normalise("greeting", g1), normalise("greeting", g2))
        for name, data in steps:
            a, b = pool.map(lambda t: t.step(data), (ours, ref))
            with self.subTest(step=name):
                self.assertEqual(normalise(name, a), normalise(name, b),
                                 "\nvstord: %r\nqsd:    %r" % (a, b))

    def test_negotiation(self):
        self.run_both(NEGOTIATION)

    def test_commands_and_errors(self):
        self.run_both([NEGOTIATION[-2]] + COMMANDS)

    def test_chardev_backends(self):
        def fifos(d):
            for name in ("fifo.in", "fifo.out", "single"):
                os.mkfifo(os.path.join(d, name))
        self.run_both([NEGOTIATION[-2]] + CHARDEVS, setup=fifos)

    def test_mux_base_frontend_open(self):
        self.run_both([NEGOTIATION[-2], ("add null", _add("n1", "null", {})),
                       ("add mux", _add("mx1", "mux", {"chardev": "n1"})),
                       ("query-chardev", b'{"execute":"query-chardev"}')])

    def test_block_nodes(self):
        self.run_both([NEGOTIATION[-2]] + BLOCKDEVS, setup=make_images)

    def test_resize_permission_conflicts(self):
        self.run_both([NEGOTIATION[-2]] + RESIZE_CONFLICTS, setup=make_images)

    def test_dirty_bitmaps(self):
        self.run_both([NEGOTIATION[-2]] + BITMAPS, setup=make_images)

    def test_exports(self):
        self.run_both([NEGOTIATION[-2]] + EXPORTS, setup=make_images)

    def test_exports_in_iothreads(self):
        self.run_both([NEGOTIATION[-2]] + IOTHREAD_EXPORTS, setup=make_images,
                      extra_args=["--object", "iothread,id=io0",
                                  "--object", "iothread,id=io1"])

    def test_block_options_on_the_command_line(self):
        self.run_both([NEGOTIATION[-2],
                       ("query-named-block-nodes", _q("query-named-block-nodes")),
                       ("query-block-exports", _q("query-block-exports")),
                       ("x-debug-query-block-graph", _q("x-debug-query-block-graph")),
                       ("start again", _q("nbd-server-start", {
                           "addr": _nbd_addr("@DIR@/nbd2.sock")})),
                       ("stop", _q("nbd-server-stop")),
                       ("query-block-exports after stop", _q("query-block-exports"))],
                      extra_args=[
                          "--blockdev", "driver=null-co,node-name=n0,size=1048576",
                          "--blockdev", "raw,node-name=r0,file=n0,offset=4096",
                          "--blockdev", '{"driver": "null-aio", "node-name": "n1", '
                                        '"read-zeroes": true}',
                          "--blockdev", "raw,node-name=r1,file.driver=null-co,file.size=65536",
                          "--nbd-server", "addr.type=unix,addr.path=@DIR@/nbd.sock,"
                                          "max-connections=5",
                          "--export", "type=nbd,id=e0,node-name=r0,name=disk,description=d,"
                                      "writable=on",
                          "--export", "nbd,id=e1,node-name=n1,allocation-depth=on",
                      ])

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
                  "quit"} | BLOCK_COMMANDS
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
    # Block nodes and exports (those that need no running NBD server).
    ["--blockdev", "driver=file,node-name=f0,filename=/nonexistent/img"],
    ["--blockdev", "driver=file,node-name=f0,filename=/dev/null"],
    ["--blockdev", "driver=file,node-name=f0"],
    ["--blockdev", "driver=host_device,node-name=h0,filename=/etc/passwd"],
    ["--blockdev", "driver=raw,node-name=r0,file=nope"],
    ["--blockdev", "driver=raw,node-name=r0"],
    ["--blockdev", "driver=null-co"],
    ["--blockdev", "driver=null-co,node-name=1bad"],
    ["--blockdev", "driver=null-co,node-name=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"],
    ["--blockdev", "null-co,node-name=n0", "--blockdev", "null-aio,node-name=n0"],
    ["--blockdev", "null-co,node-name=n0,size=1.5"],
    ["--blockdev", "null-co,node-name=n0,force-share=on"],
    ["--blockdev", "null-co,node-name=n0,detect-zeroes=unmap"],
    ["--blockdev", "null-co,node-name=n0,cache.direct=maybe"],
    ["--blockdev", "null-co,node-name=n0", "--blockdev", "raw,node-name=r0,file=n0,size=1000"],
    ["--blockdev", "null-co,node-name=n0,size=65536",
     "--blockdev", "raw,node-name=r0,file=n0,offset=65537"],
    ["--blockdev", "null-co,node-name=n0,size=65536",
     "--blockdev", "raw,node-name=r0,file=n0,offset=512,size=65536"],
    ["--blockdev", "null-co,node-name=n0", "--export", "type=nbd,id=e0,node-name=n0"],
    ["--export", "type=nbd,id=e0"],
    ["--export", "type=nbd,node-name=n0"],
    ["--export", "type=nbd,id=e0,node-name=n0,writable=maybe"],
    ["--nbd-server", "addr.type=unix,addr.path=/nonexistent/x.sock"],
    ["--nbd-server", "addr.type=unix,addr.path=/tmp/x,max-connections=abc"],
    ["--nbd-server", "addr.type=unix"],
    ["--nbd-server", "addr.type=bogus,addr.path=/tmp/x"],
]

# Command lines that fail only once an NBD server is running: @DIR@ is a
# fresh directory for each daemon (masked in the message).  Left out:
# --nbd-server with tls-creds or handshake-max-seconds (vstord differs on
# purpose, see test_block_nodes.py).
BAD_EXPORT_COMMAND_LINES = [
    ["--nbd-server", "addr.type=unix,addr.path=@DIR@/nbd.sock",
     "--export", "type=nbd,id=e0,node-name=nope"],
    ["--blockdev", "null-co,node-name=n0", "--nbd-server", "addr.type=unix,addr.path=@DIR@/s",
     "--export", "type=nbd,id=e0,node-name=n0", "--export", "type=nbd,id=e0,node-name=n0,name=x"],
    ["--blockdev", "null-co,node-name=n0", "--nbd-server", "addr.type=unix,addr.path=@DIR@/s",
     "--export", "type=nbd,id=e0,node-name=n0", "--export", "type=nbd,id=e1,node-name=n0"],
    ["--blockdev", "null-co,node-name=n0", "--nbd-server", "addr.type=unix,addr.path=@DIR@/s",
     "--export", "type=nbd,id=e0,node-name=n0,bitmaps.0=zz"],
    ["--blockdev", "null-co,node-name=n0", "--nbd-server", "addr.type=unix,addr.path=@DIR@/s",
     "--export", "type=nbd,id=bad/id,node-name=n0"],
    ["--blockdev", "null-co,node-name=n0,read-only=on",
     "--nbd-server", "addr.type=unix,addr.path=@DIR@/s",
     "--export", "type=nbd,id=e0,node-name=n0,writable=on"],
    ["--nbd-server", "addr.type=unix,addr.path=@DIR@/s",
     "--nbd-server", "addr.type=unix,addr.path=@DIR@/s2"],
    ["--blockdev", "driver=file,node-name=f0,filename=@DIR@/missing"],
]

# --chardev for the other backends.  Left out on purpose: msmouse & co.
# (vstord says why it refuses them), tls-creds (vstord: "TLS for character
# devices is not supported yet"), hub and pty's path (newer than QEMU 7.2),
# ringbuf size=0 (see CHARDEVS) and more than four monitors on a mux (the
# message changed after QEMU 7.2).
BAD_CHARDEV_COMMAND_LINES = [
    ["--chardev", "ringbuf,id=r,size=3"],
    ["--chardev", "memory,id=r,size=5"],
    ["--chardev", "file,id=f"],
    ["--chardev", "file,id=f,path=/nonexistent/x"],
    ["--chardev", "file,id=f,path=/tmp"],
    ["--chardev", "pipe,id=p"],
    ["--chardev", "pipe,id=p,path=/nonexistent/p"],
    ["--chardev", "parallel,id=p"],
    ["--chardev", "serial,id=s,path=/nonexistent/tty"],
    ["--chardev", "udp,id=u"],
    ["--chardev", "udp,id=u,host=127.0.0.1"],
    ["--chardev", "stdio,id=a", "--chardev", "stdio,id=b"],
    ["--chardev", "stdio,id=s,signal=maybe"],
    ["--chardev", "null,id=n,bogus=1"],
    ["--chardev", "null,id=n,append=maybe"],
    ["--chardev", "null"],
    ["--chardev", "id=x"],
    ["--chardev", "mux,id=m,chardev=nope"],
    ["--chardev", "ringbuf,id=r,size=3,mux=on"],
    ["--chardev", "null,id=n", "--monitor", "n", "--monitor", "n"],
    ["--chardev", "socket,id=s,host=127.0.0.1,port=1"],
    ["--chardev", "socket,id=s,host=127.0.0.1,port=1,server=off,websocket=on"],
]


@unittest.skipIf(QSD is None, "qemu-storage-daemon is not installed")
class CompareCommandLine(unittest.TestCase):
    def run_daemon(self, binary, args, timeout=20):
        p = subprocess.run([binary] + args, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout)
        name = os.path.basename(binary)
        return p.returncode, p.stderr.decode().replace(name + ":", "PROG:")

    def test_bad_command_lines(self):
        for args in BAD_COMMAND_LINES:
            with self.subTest(args=args):
                ours = self.run_daemon(VSTORD, args)
                ref = self.run_daemon(QSD, args)
                self.assertEqual(ref[0], 1, "reference accepted %r" % args)
                self.assertEqual(ours, ref)

    def test_bad_chardev_command_lines(self):
        for args in BAD_CHARDEV_COMMAND_LINES:
            with self.subTest(args=args):
                ours = self.run_daemon(VSTORD, args)
                ref = self.run_daemon(QSD, args)
                self.assertEqual(ref[0], 1, "reference accepted %r" % args)
                self.assertEqual(ours, ref)

    def run_in_dir(self, binary, args, timeout=20):
        with tempfile.TemporaryDirectory(prefix="vstord-test-") as d:
            rc, err = self.run_daemon(binary, [a.replace("@DIR@", d) for a in args], timeout)
            return rc, err.replace(d, "@DIR@")

    def test_bad_export_command_lines(self):
        for args in BAD_EXPORT_COMMAND_LINES:
            with self.subTest(args=args):
                ref = self.run_in_dir(QSD, args)
                self.assertEqual(ref[0], 1, "reference accepted %r" % args)
                try:
                    ours = self.run_in_dir(VSTORD, args, timeout=3)
                except subprocess.TimeoutExpired:
                    self.fail("vstord started with %r" % args)
                self.assertEqual(ours, ref)

    def same_failure(self, args):
        ref = self.run_daemon(QSD, args)
        try:
            ours = self.run_daemon(VSTORD, args, timeout=3)
        except subprocess.TimeoutExpired:
            self.fail("vstord started with %r" % args)
        self.assertEqual(ref[0], 1, "reference accepted %r" % args)
        self.assertEqual(ours, ref)

    # --chardev errors must be worded as qemu-storage-daemon words them.

    def test_duplicate_chardev_id(self):
        self.same_failure(["--chardev", "null,id=p", "--chardev", "null,id=p"])

    def test_serial_without_path(self):
        self.same_failure(["--chardev", "serial,id=s"])

    # qsd first warns "The alias \'tty\' is deprecated, use \'serial\' instead".
    def test_tty_alias_is_deprecated(self):
        self.same_failure(["--chardev", "tty,id=s"])

    def test_logfile_cannot_be_created(self):
        self.same_failure(["--chardev", "null,id=n,logfile=/nonexistent/log"])

    def test_mux_without_chardev(self):
        self.same_failure(["--chardev", "mux,id=m"])

    # 'size' is a QEMU size option: qsd says "Parameter 'size' expects a
    # non-negative number below 2^64" plus the suffix hint; vstord "expects
    # a number" ...
    def test_ringbuf_size_not_a_number(self):
        self.same_failure(["--chardev", "ringbuf,id=r,size=abc"])

    # ... and for -1 names an internal path: "Invalid parameter type for
    # 'data.size', expected: integer" ...
    def test_ringbuf_size_negative(self):
        self.same_failure(["--chardev", "ringbuf,id=r,size=-1"])

    # ... and "is too large" where qsd says "is out of range".
    def test_ringbuf_size_out_of_range(self):
        self.same_failure(["--chardev", "ringbuf,id=r,size=18446744073709551616"])

    def test_stdio_with_daemonize(self):
        self.same_failure(["--daemonize", "--chardev", "stdio,id=s"])

    def test_parallel_on_a_non_parallel_device(self):
        self.same_failure(["--chardev", "parallel,id=p,path=/dev/null"])


if __name__ == "__main__":
    unittest.main()
