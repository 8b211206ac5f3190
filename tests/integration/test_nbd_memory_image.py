"""NBD with the image in memory (tmpfs).

Reads of 64 KiB and more from a file in memory go out by sendfile: the
reply's data is the file's pages, handed to the socket after the reply
header, instead of a copy in a buffer.  This file reruns the protocol and
client tests with the image in /dev/shm, so every reply shape (simple,
structured with hole chunks, DF, extended headers, errors) takes that path
too, and adds tests for what only that path can get wrong: replies of both
kinds interleaved on one connection, and data changed between requests.
"""

import os
import random
import unittest

import nbd_raw as nbd
import test_nbd_clients as clients
import test_nbd_protocol as protocol
from test_nbd_protocol import KiB, MiB

SHM = "/dev/shm"
HAVE_SHM = os.path.isdir(SHM) and os.access(SHM, os.W_OK)
need_shm = unittest.skipUnless(HAVE_SHM, "no writable /dev/shm")


@need_shm
class CommandsInMemory(protocol.Commands):
    image_dir = SHM


@need_shm
class OutOfRangeInMemory(protocol.OutOfRange):
    image_dir = SHM


@need_shm
class ReadOnlyExportInMemory(protocol.ReadOnlyExport):
    image_dir = SHM


@need_shm
class HostileInMemory(protocol.Hostile):
    image_dir = SHM


@need_shm
class DurabilityInMemory(protocol.Durability):
    image_dir = SHM


@need_shm
class ExtendedHeadersInMemory(protocol.ExtendedHeaders):
    image_dir = SHM


@need_shm
class ExtendedHeadersLargeInMemory(protocol.ExtendedHeadersLarge):
    image_dir = SHM


@need_shm
class NbdCopyInMemory(clients.NbdCopy):
    IMAGE_DIR = SHM


@need_shm
class LibNbdInMemory(clients.LibNbd):
    IMAGE_DIR = SHM


@need_shm
class QemuImgInMemory(clients.QemuImg):
    IMAGE_DIR = SHM


@need_shm
class FioInMemory(clients.Fio):
    IMAGE_DIR = SHM


@need_shm
class MixedReplies(protocol.NBDTestCase):
    """Large reads (file pages) and small ones (copies), with writes
    between them, pipelined on one connection in every reply mode."""

    image_dir = SHM

    def mirror(self):
        with open(self.img, "rb") as f:
            return bytearray(f.read())

    def run_mix(self, **mode):
        c = self.connected(**mode)
        chunked = mode.get("structured") or mode.get("extended")
        rng = random.Random(4)
        size = protocol.IMG_SIZE
        image = self.mirror()
        # Rounds of pipelined reads; writes go between rounds, so every
        # read has one right answer.
        for _ in range(6):
            reads = []
            for _ in range(24):
                length = rng.choice((512, 4 * KiB, 64 * KiB, 200 * KiB + 7, MiB))
                offset = rng.randrange(0, size - length + 1)
                flags = nbd.CMD_FLAG_DF if chunked and rng.random() < 0.3 else 0
                reads.append((c.send_request(nbd.CMD_READ, flags, offset, length), offset,
                              length))
            for cookie, offset, length in reads:
                r = c.read_reply(cookie)
                self.assertEqual(r.error, 0, r)
                self.assertEqual(r.data, bytes(image[offset:offset + length]),
                                 "read of %d at %d differs" % (length, offset))
            for _ in range(4):
                length = rng.choice((4 * KiB, 128 * KiB))
                offset = rng.randrange(0, size - length + 1)
                data = os.urandom(length)
                self.assertEqual(c.write(offset, data).error, 0)
                image[offset:offset + length] = data
        self.assertEqual(c.flush().error, 0)
        self.assertEqual(self.mirror(), image, "the image on disk differs from what was written")

    def test_simple_replies(self):
        self.run_mix()

    def test_structured_replies(self):
        self.run_mix(structured=True)

    def test_extended_headers(self):
        self.run_mix(extended=True)

    def test_write_then_read_on_another_connection(self):
        """A read on one connection sees what another connection wrote and
        had acknowledged (multi-conn), through the page path."""
        a = self.connected(structured=True)
        b = self.connected(structured=True)
        for i in range(8):
            data = os.urandom(256 * KiB)
            self.assertEqual(a.write(i * 256 * KiB, data).error, 0)
            self.assertEqual(b.read(i * 256 * KiB, 256 * KiB).data, data)

    def test_daemon_outlives_a_client_that_stops_reading(self):
        """Large replies pile up behind a client that never reads them;
        hanging up frees them and the daemon serves others."""
        c = self.connected(structured=True)
        for i in range(64):
            c.send_request(nbd.CMD_READ, 0, (i % 4) * MiB, MiB)
        c.close()
        self.assert_alive()
        d = self.connected(structured=True)
        self.assertEqual(d.read(0, MiB).data, bytes(self.mirror()[:MiB]))


if __name__ == "__main__":
    unittest.main()
