"""Shared pieces of the tests that drive real NBD clients (libnbd's
nbdinfo, nbdcopy, nbdsh and Python bindings; qemu-img, qemu-io; fio)
against the daemon's NBD server.

The daemon exports raw images kept in a private temporary directory; the
NBD server listens on a unix socket in the daemon's own directory.  Every
client runs with a timeout.
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from daemon import VSTORD, Daemon, monitor_args, wait_for

try:
    import nbd  # python3-libnbd
except ImportError:  # not every interpreter has the bindings
    nbd = None

KiB = 1 << 10
MiB = 1 << 20

# nbdinfo --can/--is: 0 when true, 2 when false, 1 on error.
TRUE, FALSE = 0, 2


def is_qemu():
    """True when the daemon under test is the reference, qemu-storage-daemon."""
    return "qemu" in os.path.basename(VSTORD)


def needs(*tools):
    """Skips a test or class unless every tool is on PATH."""
    missing = [t for t in tools if shutil.which(t) is None]
    return unittest.skipIf(missing, "not installed: " + ", ".join(missing))


needs_libnbd = unittest.skipIf(
    nbd is None, "python3-libnbd (module nbd) is not importable by this interpreter")


def run(argv, timeout=60, check=True, input=None, cwd=None):
    """Runs a client; returns the CompletedProcess (bytes).  With check,
    a non-zero exit fails the test with the client's output."""
    p = subprocess.run(argv, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, cwd=cwd)
    if check and p.returncode != 0:
        raise AssertionError("%s exited with %d\nstdout: %s\nstderr: %s" % (
            " ".join(argv), p.returncode, p.stdout.decode(errors="replace")[-2000:],
            p.stderr.decode(errors="replace")[-2000:]))
    return p


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def pattern(seed, length):
    """length bytes that differ from one seed to another and along the way."""
    block = hashlib.sha256(b"%d" % seed).digest() * 128  # 4 KiB
    return (block * (length // len(block) + 1))[:length]


def make_image(path, size, extents=(), fill=None):
    """A raw image of size bytes, sparse (or every byte fill), with each
    (offset, bytes) of extents written over it.  Returns path."""
    with open(path, "wb") as f:
        if fill is None:
            f.truncate(size)
        else:
            chunk = bytes([fill]) * MiB
            for off in range(0, size, MiB):
                f.write(chunk[:min(MiB, size - off)])
        for off, data in extents:
            f.seek(off)
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def image_bytes(size, extents=(), fill=None):
    """What make_image(size, extents, fill) reads as, in memory."""
    buf = bytearray(size) if fill is None else bytearray([fill]) * size
    for off, data in extents:
        buf[off:off + len(data)] = data
    return buf


def file_map(path):
    """The file's data and holes as the file system reports them
    (SEEK_DATA/SEEK_HOLE): [(offset, length, is_data)], merged."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                data = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                data = size
            if data > off:
                out.append((off, data - off, False))
            if data >= size:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
            out.append((data, hole - data, True))
            off = hole
    finally:
        os.close(fd)
    return out


def reports_holes(path):
    return any(not is_data for _, _, is_data in file_map(path))


def merge(extents):
    """Merges neighbouring (offset, length, kind...) extents of one kind."""
    out = []
    for e in extents:
        if out and out[-1][2:] == tuple(e[2:]) and out[-1][0] + out[-1][1] == e[0]:
            out[-1] = (out[-1][0], out[-1][1] + e[1]) + tuple(e[2:])
        else:
            out.append(tuple(e))
    return out


def dirty_extents(size, written, granularity):
    """What a dirty bitmap of granularity shows after writes to each
    (offset, length) of written: [(offset, length, 1 dirty / 0 clean)]."""
    clusters = set()
    for off, length in written:
        if length:
            clusters.update(range(off // granularity, (off + length - 1) // granularity + 1))
    out = []
    for c in range((size + granularity - 1) // granularity):
        start = c * granularity
        out.append((start, min(granularity, size - start), 1 if c in clusters else 0))
    return merge(out)


def dirty_ranges(extents):
    return [(off, length) for off, length, kind in extents if kind]


class NbdTestCase(unittest.TestCase):
    """Helpers to start a daemon exporting an image over NBD."""

    SIZE = 64 * MiB
    IMAGE_DIR = None  # where images live (None: the default temporary directory)
    FILE_OPTS = ""    # more ",key=value" options of the file node start() makes

    def tmpdir(self, parent=None):
        t = tempfile.TemporaryDirectory(prefix="vstord-test-", dir=parent)
        self.addCleanup(t.cleanup)
        return t.name

    def image(self, size=None, extents=(), fill=None, name="img"):
        if not hasattr(self, "_imgdir"):
            self._imgdir = self.tmpdir(self.IMAGE_DIR)
        return make_image(os.path.join(self._imgdir, name), self.SIZE if size is None else size,
                          extents, fill)

    def start(self, image, export="", server="", extra=(), file_opts=None):
        """A daemon exporting image (file node f0, raw node r0) as "d",
        writable, on a unix socket; export and server are extra
        ",key=value" options of --export and --nbd-server."""
        if file_opts is None:
            file_opts = self.FILE_OPTS
        args = monitor_args() + [
            "--blockdev", "driver=file,node-name=f0,filename=%s%s" % (image, file_opts),
            "--blockdev", "driver=raw,node-name=r0,file=f0",
            "--nbd-server", "addr.type=unix,addr.path=@DIR@/nbd.sock" + server,
            "--export", "type=nbd,id=e0,node-name=r0,name=d,writable=on" + export,
        ] + list(extra)
        self.daemon = Daemon(args)
        self.addCleanup(self.daemon.stop)
        self.sock = self.daemon.path("nbd.sock")
        return self.daemon

    def uri(self, name="d"):
        return "nbd+unix:///%s?socket=%s" % (name, self.sock)

    def qmp(self):
        c = self.daemon.qmp()
        self.addCleanup(c.close)
        return c

    @staticmethod
    def add_node(qmp, node, image, file_node=None):
        file_node = file_node or "file-" + node
        qmp.ok("blockdev-add", {"driver": "file", "node-name": file_node, "filename": image})
        qmp.ok("blockdev-add", {"driver": "raw", "node-name": node, "file": file_node})

    @staticmethod
    def add_export(qmp, id, node, name, writable=False, **kw):
        args = {"type": "nbd", "id": id, "node-name": node, "name": name, "writable": writable}
        args.update(kw)
        return qmp.ok("block-export-add", args)

    @staticmethod
    def del_export(qmp, id):
        qmp.ok("block-export-del", {"id": id})
        wait_for(lambda: id not in [e["id"] for e in qmp.ok("query-block-exports")],
                 what="export %s to go" % id)

    # -- nbdinfo ------------------------------------------------------------
    def nbdinfo(self, *args, check=True):
        return run(["nbdinfo"] + list(args), timeout=30, check=check)

    def nbdinfo_map(self, uri, context=None):
        """nbdinfo --map --json: [(offset, length, type, description)], merged."""
        opt = "--map" if context is None else "--map=" + context
        out = json.loads(self.nbdinfo(opt, "--json", uri).stdout)
        return merge((e["offset"], e["length"], e["type"], e["description"]) for e in out)

    def assertCovers(self, extents, size):
        """Extents are consecutive from 0 and cover exactly size bytes."""
        pos = 0
        for e in extents:
            self.assertEqual(e[0], pos, extents)
            self.assertGreater(e[1], 0, extents)
            pos += e[1]
        self.assertEqual(pos, size, extents)


# -- libnbd ---------------------------------------------------------------
def connect(uri, contexts=(), strict=True, full_info=False):
    """A libnbd handle connected to uri, asking for the metadata contexts.
    strict=False turns off libnbd's own checks, so that bad requests reach
    the server; full_info asks for the export's name and description."""
    h = nbd.NBD()
    if not strict:
        h.set_strict_mode(0)
    if full_info:
        h.set_full_info(True)
    for c in contexts:
        h.add_meta_context(c)
    h.connect_uri(uri)
    return h


def disconnect(h):
    """Ends a libnbd connection politely if it is still up."""
    try:
        if h.aio_is_ready():
            h.shutdown()
    except nbd.Error:
        pass


def block_status(h, length, offset, flags=0):
    """One NBD_CMD_BLOCK_STATUS: {context: [(length, flags), ...]}."""
    out = {}

    def cb(context, off, entries, err):
        out.setdefault(context, []).extend(zip(entries[0::2], entries[1::2]))
        return 0

    h.block_status(length, offset, cb, flags)
    return out


def full_status(h, context, size, step=None):
    """The whole export's extents in context, asking as often as needed:
    [(offset, length, flags)], merged."""
    out = []
    off = 0
    limit = 100000  # bound on the number of requests
    while off < size and limit:
        limit -= 1
        n = min(size - off, step or size)
        got = block_status(h, n, off).get(context)
        if not got:
            raise AssertionError("no extents for %s at %d" % (context, off))
        for length, flags in got:
            length = min(length, size - off)
            out.append((off, length, flags))
            off += length
            if off >= size:
                break
    return merge(out)
