"""The ringbuf backend and its older name 'memory': sizes, overflow,
ringbuf-read and ringbuf-write in both formats, UTF-8 edge cases, binary
and invalid data, and a monitor writing into a ring."""

import base64
import random
import unittest

from chardev_helpers import backend, chardevs
from daemon import DaemonTestCase, Daemon, monitor_args

POW2 = "size of ringbuf chardev must be power of two"


def b64(data):
    return base64.b64encode(data).decode()


class Ringbuf(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.c = self.qmp()

    def add(self, id_, type_="ringbuf", **data):
        return self.c.ok("chardev-add", {"id": id_, "backend": backend(type_, **data)})

    def write(self, dev, data, fmt=None):
        args = {"device": dev, "data": data}
        if fmt:
            args["format"] = fmt
        return self.c.cmd("ringbuf-write", args)

    def read(self, dev, size, fmt=None):
        args = {"device": dev, "size": size}
        if fmt:
            args["format"] = fmt
        r = self.c.cmd("ringbuf-read", args)
        if "return" not in r:
            raise AssertionError("ringbuf-read failed: %r" % r)
        return r["return"]

    def write_bytes(self, dev, data):
        self.assertEqual(self.write(dev, b64(data), "base64"), {"return": {}})

    def read_bytes(self, dev, size):
        return base64.b64decode(self.read(dev, size, "base64"))

    # -- sizes ----------------------------------------------------------------
    def test_default_size_is_65536(self):
        for type_ in ("ringbuf", "memory"):
            self.add(type_, type_)
            self.write(type_, "x" * 70000)
            self.assertEqual(len(self.read(type_, 100000)), 65536)
            self.assertEqual(self.read(type_, 10), "")
        info = chardevs(self.c)
        self.assertEqual(info["ringbuf"]["filename"], "ringbuf")
        self.assertEqual(info["memory"]["filename"], "memory")

    def test_sizes_must_be_powers_of_two(self):
        for size in (1, 2, 8, 4096, 1 << 20):
            self.add("r%d" % size, size=size)
            self.write_bytes("r%d" % size, b"\xaa" * (size + 3))
            self.assertEqual(self.read_bytes("r%d" % size, size + 10), b"\xaa" * size)
        for type_ in ("ringbuf", "memory"):
            for size in (0, 3, -8, 100, 65535):
                with self.subTest(type=type_, size=size):
                    err = self.c.error("chardev-add", {"id": "bad", "backend": backend(
                        type_, size=size)})
                    self.assertEqual(err["desc"], "Failed to add chardev 'bad': " + POW2)
        self.assertNotIn("bad", chardevs(self.c))

    # Sizes above the limit are refused for what they are.  (Regression test:
    # 2^40 used to be refused as "must be power of two"; fixed in 635b067.)
    def test_too_large_size_says_so(self):
        err = self.c.error("chardev-add", {"id": "big", "backend": backend(
            "ringbuf", size=1 << 40)})
        self.assertNotIn("power of two", err["desc"])

    # An empty ring costs no resident memory, as with QEMU's g_malloc.
    # (Regression test: the ring used to be zero-filled at chardev-add, a
    # 256 MiB ring raising the RSS from 5 MiB to 262 MiB; fixed in 635b067.)
    def test_large_ring_does_not_commit_memory_up_front(self):
        rss0 = self.daemon.rss_kb()
        self.add("big", size=1 << 26)
        grown = self.daemon.rss_kb() - rss0
        self.c.ok("chardev-remove", {"id": "big"})
        self.assertLess(grown, 16 * 1024, "RSS grew by %d KiB for an empty 64 MiB ring" % grown)

    # -- reading and writing --------------------------------------------------
    def test_overflow_drops_the_oldest(self):
        self.add("r", size=8)
        self.write("r", "0123456789AB")
        self.assertEqual(self.read("r", 100), "456789AB")
        self.write("r", "abc")
        self.write("r", "defghij")
        self.assertEqual(self.read("r", 3), "cde")
        self.assertEqual(self.read("r", 100), "fghij")

    def test_read_size_must_be_positive(self):
        self.add("r")
        for size in (0, -1, -(1 << 62)):
            r = self.c.cmd("ringbuf-read", {"device": "r", "size": size})
            self.assertEqual(r["error"]["desc"], "size must be greater than zero")

    def test_base64_round_trip_of_every_byte(self):
        self.add("r", size=1024)
        every = bytes(range(256))
        self.write_bytes("r", every)
        self.assertEqual(self.read("r", 1000, "base64"), b64(every))
        # In pieces, and binary that is not text at all.
        data = random.Random(7).randbytes(1000)
        self.write_bytes("r", data)
        got = b"".join(self.read_bytes("r", 97) for _ in range(11))
        self.assertEqual(got, data)
        self.assertEqual(self.read("r", 10, "base64"), "")

    def test_invalid_base64_refused(self):
        self.add("r")
        for bad in ("!!!", "YW Jj", "a\u00e9bc", "YWJj\r\n"):
            with self.subTest(data=bad):
                self.assertEqual(self.write("r", bad, "base64")["error"]["desc"],
                                 "Base64 data contains invalid characters")
        self.assertEqual(self.read("r", 10), "", "nothing was written")
        self.assertEqual(self.write("r", "", "base64"), {"return": {}})

    # -- UTF-8 ----------------------------------------------------------------
    def test_character_split_by_size_stays_for_next_read(self):
        self.add("r", size=64)
        self.write("r", "a\u20acb")  # 61 E2 82 AC 62
        self.assertEqual(self.read("r", 2), "a")
        self.assertEqual(self.read("r", 2), "")
        self.assertEqual(self.read("r", 3), "\u20ac")
        self.assertEqual(self.read("r", 3), "b")
        self.write("r", "\U0001F600z")  # four bytes, then one
        self.assertEqual(self.read("r", 3), "")
        self.assertEqual(self.read("r", 4), "\U0001F600")
        self.assertEqual(self.read("r", 4), "z")

    def test_after_overflow_lost_continuation_bytes_are_skipped(self):
        self.add("r", size=4)
        self.write("r", "\u20acxy")  # E2 82 AC 78 79: E2 is dropped
        self.assertEqual(self.read("r", 10), "xy")
        self.write("r", "ab\u20ac")  # 'a' dropped, the euro sign is whole
        self.assertEqual(self.read("r", 10), "b\u20ac")
        # Without a loss a continuation byte at the start is just invalid.
        self.write_bytes("r", b"\x80ab")
        self.assertEqual(self.read("r", 10), "\ufffdab")

    def test_invalid_utf8_reads_back_as_replacement(self):
        self.add("r")
        self.write_bytes("r", b"a\xffb\xc3(c\xed\xa0\x80d")
        text = self.read("r", 100)
        self.assertTrue(text.startswith("a\ufffdb\ufffd(c"), repr(text))
        self.assertTrue(text.endswith("d"))
        self.assertNotIn("\udc80", text)

    def test_nul(self):
        self.add("r")
        self.write("r", "a\u0000b")
        self.assertEqual(self.read("r", 100), "a\u0000b")
        # Stored as C0 80, as QEMU stores it.
        self.write("r", "\u0000")
        self.assertEqual(self.read_bytes("r", 10), b"\xc0\x80")
        # A raw NUL byte reads back as U+0000 too.
        self.write_bytes("r", b"x\x00y")
        self.assertEqual(self.read("r", 100), "x\u0000y")

    # -- errors ---------------------------------------------------------------
    def test_not_a_ringbuf_and_unknown_device(self):
        self.assertEqual(self.write("m0", "x")["error"]["desc"], "m0 is not a ringbuf device")
        self.assertEqual(self.c.error("ringbuf-read", {"device": "m0", "size": 1})["desc"],
                         "m0 is not a ringbuf device")
        self.assertEqual(self.write("nope", "x")["error"]["desc"], "Device 'nope' not found")
        self.assertEqual(self.c.error("ringbuf-read", {"device": "nope", "size": 1})["desc"],
                         "Device 'nope' not found")
        self.add("n", "null")
        self.assertEqual(self.write("n", "x")["error"]["desc"], "n is not a ringbuf device")

    def test_bad_format(self):
        self.add("r")
        err = self.c.error("ringbuf-write", {"device": "r", "data": "x", "format": "hex"})
        self.assertEqual(err["desc"], "Parameter 'format' does not accept value 'hex'")


class MonitorOnRing(unittest.TestCase):
    def test_monitor_writes_into_the_ring(self):
        d = Daemon(monitor_args() + ["--chardev", "ringbuf,id=rb,size=1024", "--monitor", "rb",
                                     "--chardev", "memory,id=mem", "--monitor", "mem"])
        self.addCleanup(d.stop)
        c = d.qmp()
        self.addCleanup(c.close)
        for dev in ("rb", "mem"):
            text = c.ok("ringbuf-read", {"device": dev, "size": 4096})
            self.assertTrue(text.startswith('{"QMP": {"version"'), text)
            self.assertTrue(text.endswith("}\r\n"))
        # ringbuf-write adds to the ring (output), it is not monitor input.
        c.ok("ringbuf-write", {"device": "rb", "data": '{"execute":"quit"}\n'})
        self.assertEqual(c.ok("ringbuf-read", {"device": "rb", "size": 100}),
                         '{"execute":"quit"}\n')
        self.assertIn("qemu", c.ok("query-version"))
        info = chardevs(c)
        self.assertEqual(info["rb"], {"label": "rb", "filename": "ringbuf", "frontend-open": True})
        self.assertEqual(info["mem"]["filename"], "memory")


if __name__ == "__main__":
    unittest.main()
