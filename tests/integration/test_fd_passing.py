"""Descriptor passing over a unix monitor: getfd, closefd, add-fd,
remove-fd, query-fdsets, and the bound on descriptors sent but never
claimed.

Whether the daemon holds a descriptor is checked from outside: a socket
pair end is sent and closed here, so its peer sees EOF exactly when the
daemon's copy closes; a regular file sent to the daemon shows up under
/proc/PID/fd with its path.
"""

import json
import os
import select
import socket
import time
import unittest

from daemon import Daemon, DaemonTestCase, free_port, monitor_args, wait_for, two_monitors
from qmp import QMPClient


def peer_sees_eof(peer, timeout=2.0):
    r, _, _ = select.select([peer], [], [], timeout)
    return bool(r) and peer.recv(1) == b""


def send_cmd(c, name, args=None, fds=(), id=None):
    r = {"execute": name}
    if args is not None:
        r["arguments"] = args
    if id is not None:
        r["id"] = id
    c.send_raw(json.dumps(r).encode(), fds=fds)
    return c.read_reply()


class FdTestCase(DaemonTestCase):
    def pair(self):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        return a, b

    def tmpfile(self, name):
        path = self.daemon.path(name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        return fd, path

    def daemon_fd_target(self, num):
        return os.readlink("/proc/%d/fd/%d" % (self.daemon.pid, num))


class GetfdClosefd(FdTestCase):
    def test_getfd_and_closefd(self):
        c = self.qmp()
        mine, peer = self.pair()
        self.assertEqual(send_cmd(c, "getfd", {"fdname": "x"}, fds=[mine.fileno()]),
                         {"return": {}})
        mine.close()
        # The daemon holds the only other copy now.
        self.assertFalse(peer_sees_eof(peer, 0.2))
        self.assertEqual(c.cmd("closefd", {"fdname": "x"}), {"return": {}})
        self.assertTrue(peer_sees_eof(peer))
        self.assertEqual(c.error("closefd", {"fdname": "x"}),
                         {"class": "GenericError", "desc": "File descriptor named 'x' not found"})

    def test_closefd_unknown(self):
        c = self.qmp()
        self.assertEqual(c.error("closefd", {"fdname": "never"})["desc"],
                         "File descriptor named 'never' not found")

    def test_getfd_without_descriptor(self):
        c = self.qmp()
        self.assertEqual(c.error("getfd", {"fdname": "x"}),
                         {"class": "GenericError",
                          "desc": "No file descriptor supplied via SCM_RIGHTS"})

    def test_getfd_name_starting_with_digit(self):
        c = self.qmp()
        mine, peer = self.pair()
        r = send_cmd(c, "getfd", {"fdname": "1x"}, fds=[mine.fileno()])
        desc = "Parameter 'fdname' expects a name not starting with a digit"
        self.assertEqual(r, {"error": {"class": "GenericError", "desc": desc}})
        mine.close()
        # The refused descriptor is not kept.
        self.assertTrue(peer_sees_eof(peer))
        self.assertEqual(c.error("closefd", {"fdname": "1x"})["desc"],
                         "File descriptor named '1x' not found")

    def test_getfd_same_name_replaces_and_closes_old(self):
        c = self.qmp()
        a, a_peer = self.pair()
        b, b_peer = self.pair()
        self.assertIn("return", send_cmd(c, "getfd", {"fdname": "x"}, fds=[a.fileno()]))
        self.assertIn("return", send_cmd(c, "getfd", {"fdname": "x"}, fds=[b.fileno()]))
        a.close()
        b.close()
        self.assertTrue(peer_sees_eof(a_peer))
        self.assertFalse(peer_sees_eof(b_peer, 0.2))
        c.ok("closefd", {"fdname": "x"})
        self.assertTrue(peer_sees_eof(b_peer))

    def test_named_fds_are_per_monitor_and_survive_reconnect(self):
        d = Daemon(monitor_args("a.sock", "m0") + monitor_args("b.sock", "m1"))
        self.addCleanup(d.stop)
        a, b = d.qmp("a.sock"), d.qmp("b.sock")
        self.addCleanup(b.close)
        mine, peer = self.pair()
        self.assertIn("return", send_cmd(a, "getfd", {"fdname": "x"}, fds=[mine.fileno()]))
        mine.close()
        self.assertEqual(b.error("closefd", {"fdname": "x"})["desc"],
                         "File descriptor named 'x' not found")
        a.close()
        self.assertFalse(peer_sees_eof(peer, 0.2))
        a2 = d.qmp("a.sock")
        self.addCleanup(a2.close)
        self.assertEqual(a2.cmd("closefd", {"fdname": "x"}), {"return": {}})
        self.assertTrue(peer_sees_eof(peer))

    def test_add_fd_stores_the_descriptor_sent_with_it(self):
        c = self.qmp()
        fd, path = self.tmpfile("file-a")
        self.assertIn("return", send_cmd(c, "add-fd", {"fdset-id": 3}, fds=[fd]))
        info = c.ok("query-fdsets")
        num = info[0]["fds"][0]["fd"]
        self.assertEqual(self.daemon_fd_target(num), path)

    # QEMU keeps only the descriptors that came with the latest message
    # that carried any (tcp_chr_recv closes older ones), so a command gets
    # the descriptor sent with it.  vstord queues up to 16 unclaimed
    # descriptors and hands out the oldest: after a command that failed
    # before claiming its descriptor (here an argument error), the next
    # getfd/add-fd silently gets the previous command's descriptor.
    def test_descriptor_of_failed_command_not_handed_to_next(self):
        c = self.qmp()
        fd_a, path_a = self.tmpfile("file-a")
        fd_b, path_b = self.tmpfile("file-b")
        r = send_cmd(c, "add-fd", {"fdset-id": "wrong"}, fds=[fd_a])
        self.assertEqual(r["error"]["desc"],
                         "Invalid parameter type for 'fdset-id', expected: integer")
        r = send_cmd(c, "add-fd", {"fdset-id": 1}, fds=[fd_b])
        self.assertEqual(self.daemon_fd_target(r["return"]["fd"]), path_b)


class FdSets(FdTestCase):
    def test_add_fd_and_query(self):
        c = self.qmp()
        fd, path = self.tmpfile("f")
        r = send_cmd(c, "add-fd", {"fdset-id": 7, "opaque": "my text"}, fds=[fd])
        self.assertEqual(sorted(r["return"]), ["fd", "fdset-id"])
        self.assertEqual(r["return"]["fdset-id"], 7)
        num = r["return"]["fd"]
        self.assertIsInstance(num, int)
        self.assertEqual(self.daemon_fd_target(num), path)
        self.assertEqual(c.ok("query-fdsets"),
                         [{"fdset-id": 7, "fds": [{"fd": num, "opaque": "my text"}]}])
        # A second descriptor in the same set, without opaque.
        r2 = send_cmd(c, "add-fd", {"fdset-id": 7}, fds=[fd])
        num2 = r2["return"]["fd"]
        self.assertNotEqual(num, num2)
        sets = c.ok("query-fdsets")
        self.assertEqual(len(sets), 1)
        fds = sorted(sets[0]["fds"], key=lambda x: x["fd"])
        self.assertEqual(fds, sorted([{"fd": num, "opaque": "my text"}, {"fd": num2}],
                                     key=lambda x: x["fd"]))

    def test_add_fd_picks_lowest_free_id(self):
        c = self.qmp()
        fd, _ = self.tmpfile("f")
        for want in (0, 2, 3):
            self.assertEqual(send_cmd(c, "add-fd", {"fdset-id": want}, fds=[fd])
                             ["return"]["fdset-id"], want)
        self.assertEqual(send_cmd(c, "add-fd", {}, fds=[fd])["return"]["fdset-id"], 1)
        self.assertEqual(send_cmd(c, "add-fd", None, fds=[fd])["return"]["fdset-id"], 4)
        self.assertEqual(sorted(s["fdset-id"] for s in c.ok("query-fdsets")), [0, 1, 2, 3, 4])
        c.ok("remove-fd", {"fdset-id": 0})
        self.assertEqual(send_cmd(c, "add-fd", {}, fds=[fd])["return"]["fdset-id"], 0)

    def test_add_fd_without_descriptor(self):
        c = self.qmp()
        self.assertEqual(c.error("add-fd", {"fdset-id": 1})["desc"],
                         "No file descriptor supplied via SCM_RIGHTS")
        self.assertEqual(c.ok("query-fdsets"), [])

    def test_add_fd_negative_id_refused(self):
        c = self.qmp()
        fd, _ = self.tmpfile("f")
        r = send_cmd(c, "add-fd", {"fdset-id": -1}, fds=[fd])
        self.assertEqual(r["error"]["class"], "GenericError")
        self.assertIn("fdset-id", r["error"]["desc"])
        self.assertEqual(c.ok("query-fdsets"), [])

    # QEMU: error_setg(errp, "Parameter '%s' expects %s", "fdset-id",
    # "a non-negative value") -- vstord spells it with a lower-case 'p'.
    def test_add_fd_negative_id_message(self):
        c = self.qmp()
        fd, _ = self.tmpfile("f")
        r = send_cmd(c, "add-fd", {"fdset-id": -1}, fds=[fd])
        self.assertEqual(r["error"]["desc"], "Parameter 'fdset-id' expects a non-negative value")

    # QEMU's qmp_query_fdsets prepends each set to the list it builds from
    # its id-ordered set list, so sets come out in descending id order
    # (and each set's descriptors oldest first).  vstord lists sets in
    # ascending order.  Clients should not depend on it, but vstord
    # otherwise reproduces QEMU's output byte for byte.
    def test_query_fdsets_order_as_qemu(self):
        c = self.qmp()
        fd, _ = self.tmpfile("f")
        for set_id in (1, 3, 2):
            send_cmd(c, "add-fd", {"fdset-id": set_id}, fds=[fd])
        self.assertEqual([s["fdset-id"] for s in c.ok("query-fdsets")], [3, 2, 1])

    def test_remove_one_fd_then_set_disappears(self):
        c = self.qmp()
        mine, peer = self.pair()
        r = send_cmd(c, "add-fd", {"fdset-id": 5}, fds=[mine.fileno()])
        mine.close()
        num = r["return"]["fd"]
        self.assertFalse(peer_sees_eof(peer, 0.2))
        self.assertEqual(c.cmd("remove-fd", {"fdset-id": 5, "fd": num}), {"return": {}})
        self.assertEqual(c.ok("query-fdsets"), [])
        # Not in use by anything: the descriptor is closed at once.
        self.assertTrue(peer_sees_eof(peer))

    def test_remove_whole_set(self):
        c = self.qmp()
        fd, _ = self.tmpfile("f")
        for _ in range(3):
            send_cmd(c, "add-fd", {"fdset-id": 2}, fds=[fd])
        send_cmd(c, "add-fd", {"fdset-id": 4}, fds=[fd])
        before = self.daemon.fd_count()
        self.assertEqual(c.cmd("remove-fd", {"fdset-id": 2}), {"return": {}})
        self.assertEqual([s["fdset-id"] for s in c.ok("query-fdsets")], [4])
        self.assertEqual(self.daemon.fd_count(), before - 3)

    def test_remove_unknown(self):
        c = self.qmp()
        self.assertEqual(c.error("remove-fd", {"fdset-id": 9}),
                         {"class": "GenericError",
                          "desc": "File descriptor named 'fdset-id:9' not found"})
        fd, _ = self.tmpfile("f")
        num = send_cmd(c, "add-fd", {"fdset-id": 9}, fds=[fd])["return"]["fd"]
        self.assertEqual(c.error("remove-fd", {"fdset-id": 9, "fd": num + 1000})["desc"],
                         "File descriptor named 'fdset-id:9, fd:%d' not found" % (num + 1000))
        self.assertEqual(c.error("remove-fd", {"fdset-id": 8, "fd": num})["desc"],
                         "File descriptor named 'fdset-id:8, fd:%d' not found" % num)
        # The set is untouched by the failed removals.
        self.assertEqual(c.ok("query-fdsets"), [{"fdset-id": 9, "fds": [{"fd": num}]}])

    def test_fdsets_are_shared_between_monitors(self):
        d, a, b = two_monitors(self)
        mine, peer = self.pair()
        num = send_cmd(a, "add-fd", {"fdset-id": 1}, fds=[mine.fileno()])["return"]["fd"]
        self.assertEqual(b.ok("query-fdsets"), [{"fdset-id": 1, "fds": [{"fd": num}]}])
        b.ok("remove-fd", {"fdset-id": 1})
        self.assertEqual(a.ok("query-fdsets"), [])


class UnclaimedDescriptors(FdTestCase):
    def test_unclaimed_fds_are_bounded(self):
        # Descriptors sent with bytes that complete no request wait for the
        # next request; each new batch replaces the one before, so a client
        # cannot make the daemon hoard them.
        c = self.qmp()
        base = self.daemon.fd_count()
        fd, _ = self.tmpfile("f")
        for _ in range(100):
            socket.send_fds(c.sock, [b" "], [fd])
        # The next request gets the last batch.
        self.assertIn("return", send_cmd(c, "getfd", {"fdname": "x"}))
        held = self.daemon.fd_count() - base
        self.assertEqual(held, 1, "daemon holds %d descriptors" % held)
        # A request completed after a batch takes it; unclaimed ones close.
        socket.send_fds(c.sock, [b" "], [fd])
        self.assertIn("qemu", c.ok("query-version"))
        self.assertEqual(self.daemon.fd_count() - base, 1)
        self.assertEqual(send_cmd(c, "getfd", {"fdname": "y"})["error"]["desc"],
                         "No file descriptor supplied via SCM_RIGHTS")
        # All go when the client goes.
        c.close()
        c2 = self.qmp()
        c2.ok("closefd", {"fdname": "x"})
        wait_for(lambda: self.daemon.fd_count() <= base, timeout=5, what="descriptors closed")

    def test_too_many_fds_in_one_message(self):
        c = self.qmp()
        base = self.daemon.fd_count()
        fd, _ = self.tmpfile("f")
        socket.send_fds(c.sock, [b" "], [fd] * 40)
        self.assertIn("qemu", c.ok("query-version"))
        self.assertLessEqual(self.daemon.fd_count() - base, 20)
        c.close()
        c2 = self.qmp()
        wait_for(lambda: self.daemon.fd_count() <= base, timeout=5, what="descriptors closed")
        self.assertIn("qemu", c2.ok("query-version"))

    def test_several_fds_in_one_message(self):
        c = self.qmp()
        base = self.daemon.fd_count()
        pairs = [self.pair() for _ in range(4)]
        send_cmd(c, "getfd", {"fdname": "x"}, fds=[p[0].fileno() for p in pairs])
        for p in pairs:
            p[0].close()
        c.close()
        c2 = self.qmp()
        c2.ok("closefd", {"fdname": "x"})
        # Every descriptor, used or not, is closed now.
        for _, peer in pairs:
            self.assertTrue(peer_sees_eof(peer))
        self.assertEqual(self.daemon.fd_count(), base)


class ConnectionChurn(FdTestCase):
    def connect(self):
        # Connections queue in the listen backlog while the daemon serves
        # one client at a time; a full backlog refuses with EAGAIN.
        for _ in range(500):
            try:
                return QMPClient.unix(self.daemon.path("qmp.sock"))
            except BlockingIOError:
                time.sleep(0.01)
        self.fail("could not connect")

    def test_churn_leaks_no_descriptors(self):
        c = self.qmp()
        base = self.daemon.fd_count()
        c.close()
        fd, _ = self.tmpfile("f")
        for i in range(300):
            s = self.connect().sock
            if i % 3 == 0:
                socket.send_fds(s, [b'{"execute":"qmp_capabilities"}'], [fd, fd, fd])
            elif i % 3 == 1:
                s.sendall(b'{"execute":"qmp_capabilities"}{"execute":"query-qmp-schema"}' * 10)
            else:
                s.sendall(b'{"execute":')
            s.close()
        c = self.connect()
        self.addCleanup(c.close)
        c.negotiate()
        self.assertIn("qemu", c.ok("query-version"))
        wait_for(lambda: self.daemon.fd_count() <= base, timeout=5, what="descriptors closed")


class InetMonitor(unittest.TestCase):
    def test_no_fd_passing_over_tcp(self):
        port = free_port()
        d = Daemon(["--chardev", "socket,id=m0,host=127.0.0.1,port=%d,server=on,wait=off" % port,
                    "--monitor", "m0"])
        self.addCleanup(d.stop)
        c = QMPClient.inet("127.0.0.1", port)
        self.addCleanup(c.close)
        c.negotiate()
        self.assertEqual(c.error("getfd", {"fdname": "x"})["desc"],
                         "No file descriptor supplied via SCM_RIGHTS")


if __name__ == "__main__":
    unittest.main()
