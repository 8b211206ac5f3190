"""chardev-add, chardev-remove, query-chardev and query-chardev-backends,
and the SocketAddress 'fd' rule inside monitor commands."""

import os
import socket
import unittest

from daemon import Daemon, DaemonTestCase, monitor_args, wait_for, two_monitors
from qmp import QMPClient


def socket_backend(addr, **opts):
    data = {"addr": addr}
    data.update(opts)
    return {"type": "socket", "data": data}


def unix_addr(path):
    return {"type": "unix", "data": {"path": path}}


def fd_addr(name):
    return {"type": "fd", "data": {"str": name}}


class ChardevCommands(DaemonTestCase):
    def test_add_query_remove(self):
        c = self.qmp()
        path = self.daemon.path("extra.sock")
        self.assertEqual(c.ok("chardev-add", {"id": "extra", "backend": socket_backend(
            unix_addr(path), server=True, wait=False)}), {})
        self.assertTrue(os.path.exists(path))
        info = {i["label"]: i for i in c.ok("query-chardev")}
        self.assertEqual(info["extra"], {"label": "extra", "frontend-open": False,
                                         "filename": "disconnected:unix:%s,server=on" % path})
        self.assertTrue(info["m0"]["frontend-open"])
        self.assertEqual(info["m0"]["filename"],
                         "unix:%s,server=on" % self.daemon.path("qmp.sock"))
        self.assertEqual(c.ok("chardev-remove", {"id": "extra"}), {})
        self.assertFalse(os.path.exists(path), "the socket file goes with the device")
        self.assertEqual([i["label"] for i in c.ok("query-chardev")], ["m0"])

    def test_errors(self):
        c = self.qmp()
        path = self.daemon.path("x.sock")
        backend = socket_backend(unix_addr(path), server=True, wait=False)
        c.ok("chardev-add", {"id": "x", "backend": backend})
        self.assertEqual(c.error("chardev-add", {"id": "x", "backend": backend})["desc"],
                         "Chardev with id 'x' already exists")
        self.assertEqual(c.error("chardev-remove", {"id": "m0"})["desc"], "Chardev 'm0' is busy")
        self.assertEqual(c.error("chardev-remove", {"id": "nope"})["desc"],
                         "Chardev 'nope' not found")
        self.assertEqual(
            c.error("chardev-add", {"id": "y", "backend": socket_backend(
                unix_addr("/nonexistent/dir/s"))})["desc"],
            "Failed to add chardev 'y': Failed to bind socket to /nonexistent/dir/s: "
            "No such file or directory")
        self.assertEqual(
            c.error("chardev-add", {"id": "y", "backend": {"type": "socket", "data": {}}})["desc"],
            "Parameter 'backend.data.addr' is missing")
        self.assertEqual(
            c.error("chardev-add", {"id": "y", "backend": {"type": "bogus", "data": {}}})["desc"],
            "Parameter 'type' does not accept value 'bogus'")
        # A failed add leaves nothing behind.
        self.assertEqual(sorted(i["label"] for i in c.ok("query-chardev")), ["m0", "x"])

    def test_backends_listed_are_the_ones_that_work(self):
        c = self.qmp()
        names = [b["name"] for b in c.ok("query-chardev-backends")]
        self.assertIn("socket", names)
        for i, name in enumerate(names):
            # Each listed backend is accepted (or fails for its options,
            # never as unsupported).
            r = c.cmd("chardev-add", {"id": "b%d" % i, "backend": {"type": name, "data": {}}})
            if "error" in r:
                self.assertNotIn("not supported", r["error"]["desc"])

    def test_client_chardev_connects(self):
        # A client chardev added over QMP connects to our listener.
        c = self.qmp()
        path = self.daemon.path("peer.sock")
        listener = socket.socket(socket.AF_UNIX)
        self.addCleanup(listener.close)
        listener.bind(path)
        listener.listen(1)
        c.ok("chardev-add", {"id": "cl", "backend": socket_backend(unix_addr(path),
                                                                   server=False)})
        listener.settimeout(5)
        conn, _ = listener.accept()
        conn.close()
        info = {i["label"]: i for i in c.ok("query-chardev")}
        self.assertIn("cl", info)


class FdRuleInMonitor(DaemonTestCase):
    """SocketAddress 'fd': names only inside monitor commands."""

    def test_named_fd_from_getfd(self):
        c = self.qmp()
        listener = socket.socket(socket.AF_UNIX)
        self.addCleanup(listener.close)
        path = self.daemon.path("passed.sock")
        listener.bind(path)
        listener.listen(1)
        c.ok("getfd", {"fdname": "lsock"}, fds=[listener.fileno()])
        c.ok("chardev-add", {"id": "p", "backend": socket_backend(fd_addr("lsock"),
                                                                  server=True, wait=False)})
        # The daemon serves on the socket it was given.
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(path)
        s.close()
        # getfd's name was consumed.
        self.assertEqual(c.error("closefd", {"fdname": "lsock"})["desc"],
                         "File descriptor named 'lsock' not found")

    def test_numbers_refused_in_monitor(self):
        c = self.qmp()
        err = c.error("chardev-add", {"id": "n", "backend": socket_backend(fd_addr("0"))})
        self.assertEqual(err["desc"],
                         "Failed to add chardev 'n': File descriptor named '0' has not been found")

    def test_unknown_name_and_not_a_socket(self):
        c = self.qmp()
        err = c.error("chardev-add", {"id": "n", "backend": socket_backend(fd_addr("nope"))})
        self.assertEqual(err["desc"],
                         "Failed to add chardev 'n': File descriptor named 'nope' has not been found")
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        c.ok("getfd", {"fdname": "pipe"}, fds=[r])
        err = c.error("chardev-add", {"id": "n", "backend": socket_backend(fd_addr("pipe"))})
        self.assertEqual(err["desc"], "Failed to add chardev 'n': File descriptor 'pipe' is not a socket")

    def test_names_are_per_monitor(self):
        d, a, b = two_monitors(self)
        listener = socket.socket(socket.AF_UNIX)
        self.addCleanup(listener.close)
        listener.bind(d.path("l.sock"))
        listener.listen(1)
        a.ok("getfd", {"fdname": "mine"}, fds=[listener.fileno()])
        err = b.error("chardev-add", {"id": "n", "backend": socket_backend(fd_addr("mine"))})
        self.assertIn("File descriptor named 'mine' has not been found", err["desc"])


class WaitingServerDoesNotStall(DaemonTestCase):
    def test_chardev_add_with_wait_replies_after_first_client(self):
        # qemu-storage-daemon blocks entirely here; vstord answers the
        # command once a client connects and serves other monitors meanwhile.
        d, a, b = two_monitors(self)
        path = d.path("w.sock")
        a.send_raw(b'{"execute": "chardev-add", "id": "add", "arguments": {"id": "w", '
                   b'"backend": {"type": "socket", "data": {"addr": {"type": "unix", '
                   b'"data": {"path": "' + path.encode() + b'"}}, "wait": true}}}}\n')
        wait_for(lambda: os.path.exists(path), what="listening socket")
        self.assertIn("qemu", b.ok("query-version"))
        s = socket.socket(socket.AF_UNIX)
        self.addCleanup(s.close)
        s.connect(path)
        self.assertEqual(a.read_reply(), {"return": {}, "id": "add"})


if __name__ == "__main__":
    unittest.main()
