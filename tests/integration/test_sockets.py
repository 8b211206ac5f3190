"""Monitors on every kind of socket the --chardev socket backend offers,
and its errors.

Servers listen only on unix sockets in a private directory, in the
abstract namespace under a random name, or on loopback.

vsock: QEMU's key=value --chardev syntax cannot name a vsock address (no
'cid' key; test_vsock_not_in_cli_syntax), and vstord follows it; vstord's
JSON form of --chardev (chardev-add's arguments) can.  A vsock listener
is checked by binding its port from here (EADDRINUSE); connecting needs
the vsock loopback transport (CID 1), which most machines lack, so that
part is skipped unless it works.
"""

import errno
import json
import os
import socket
import subprocess
import tempfile
import time
import unittest
import uuid

from daemon import VSTORD, Daemon, free_port, ipv6_loopback, monitor_args, wait_for
from qmp import QMPClient


def run_failing(args, pass_fds=(), timeout=10):
    """Runs vstord expecting it to fail at start-up; returns (rc, stderr)."""
    p = subprocess.run([VSTORD] + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, pass_fds=pass_fds, timeout=timeout)
    return p.returncode, p.stderr.decode(errors="replace")


def connect_fails(family, addr, timeout=2):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(addr)
        except OSError:
            return True
    return False


def chardev(opts):
    return ["--chardev", "socket,id=m0," + opts, "--monitor", "m0"]


class SocketTestCase(unittest.TestCase):
    def start(self, args, **kw):
        d = Daemon(args, **kw)
        self.addCleanup(d.stop)
        return d

    def tmpdir(self):
        t = tempfile.TemporaryDirectory(prefix="vstord-test-")
        self.addCleanup(t.cleanup)
        return t.name

    def use(self, client):
        """Negotiates and runs a command on a freshly connected client."""
        self.addCleanup(client.close)
        client.negotiate()
        self.assertIn("qemu", client.ok("query-version"))
        return client


class UnixSockets(SocketTestCase):
    def test_unix_path(self):
        d = self.start(monitor_args())
        path = d.path("qmp.sock")
        self.assertTrue(os.path.exists(path))
        self.use(QMPClient.unix(path))
        d.proc.terminate()
        self.assertEqual(d.wait(), 0)
        self.assertFalse(os.path.exists(path))

    def test_stale_socket_file_is_replaced(self):
        path = os.path.join(self.tmpdir(), "stale.sock")
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.close()  # leaves the file behind, with nobody listening
        self.assertTrue(os.path.exists(path))
        self.start(chardev("path=%s,server=on,wait=off" % path))
        self.use(QMPClient.unix(path))

    def test_unix_abstract(self):
        name = "vstord-test-%s" % uuid.uuid4().hex
        d = self.start(chardev("path=%s,abstract=on,server=on,wait=off" % name))
        self.use(QMPClient.abstract(name))
        # Nothing in the file system.
        self.assertEqual(sorted(os.listdir(d.dir)), ["pid", "stderr"])
        self.assertFalse(os.path.exists(name))

    def test_unix_abstract_not_tight(self):
        name = "vstord-test-%s" % uuid.uuid4().hex
        self.start(chardev("path=%s,abstract=on,tight=off,server=on,wait=off" % name))
        # Not tight: the address is the whole sun_path, padded with NULs.
        self.assertTrue(connect_fails(socket.AF_UNIX, "\0" + name))
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(b"\0" + name.encode() + b"\0" * (107 - len(name)))
        self.use(QMPClient(s))

    def test_one_client_at_a_time(self):
        d = self.start(monitor_args())
        first = self.use(d.qmp(negotiate=False))
        second = QMPClient.unix(d.path("qmp.sock"), timeout=0.3)
        self.addCleanup(second.close)
        # The second connection waits in the backlog: no greeting yet.
        with self.assertRaises(socket.timeout):
            second.greeting()
        first.close()
        second.sock.settimeout(5)
        self.use(second)

    def test_unix_path_too_long(self):
        path = os.path.join(self.tmpdir(), "x" * 120)
        rc, err = run_failing(chardev("path=%s,server=on,wait=off" % path))
        self.assertEqual(rc, 1)
        self.assertIn("UNIX socket path '%s' is too long" % path, err)

    def test_abstract_name_too_long(self):
        name = "n" * 108
        rc, err = run_failing(chardev("path=%s,abstract=on,server=on,wait=off" % name))
        self.assertEqual(rc, 1)
        self.assertIn("is too long", err)

    def test_abstract_name_of_107_bytes(self):
        name = ("vstord-test-%s-" % uuid.uuid4().hex).ljust(107, "n")
        self.start(chardev("path=%s,abstract=on,server=on,wait=off" % name))
        self.use(QMPClient.abstract(name))

    # sun_path holds 108 bytes and Linux accepts a path that fills it
    # without a terminating NUL; QEMU allows it (it refuses only paths
    # longer than 108 bytes).  vstord refuses a 108-byte path as too long.
    def test_unix_path_of_108_bytes(self):
        base = self.tmpdir()
        path = os.path.join(base, "p" * (108 - len(base) - 1))
        self.assertEqual(len(path), 108)
        self.start(chardev("path=%s,server=on,wait=off" % path))
        self.assertTrue(os.path.exists(path))
        # The socket API here needs room for a NUL: connect by a relative
        # name from the socket's directory.
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        cwd = os.getcwd()
        os.chdir(base)
        try:
            s.connect(os.path.basename(path))
        finally:
            os.chdir(cwd)
        self.use(QMPClient(s))

    def test_client_mode_unix(self):
        path = os.path.join(self.tmpdir(), "listen.sock")
        listener = socket.socket(socket.AF_UNIX)
        self.addCleanup(listener.close)
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(10)
        self.start(chardev("path=%s,server=off" % path))
        conn, _ = listener.accept()
        c = self.use(QMPClient(conn))
        self.assertEqual(c.ok("query-yank"), [{"type": "chardev", "id": "m0"}])

    def test_client_mode_connect_refused(self):
        path = os.path.join(self.tmpdir(), "nobody.sock")
        rc, err = run_failing(chardev("path=%s" % path))
        self.assertEqual(rc, 1)
        self.assertIn("Failed to connect to '%s': No such file or directory" % path, err)


class InetSockets(SocketTestCase):
    def test_ipv4_loopback(self):
        port = free_port()
        self.start(chardev("host=127.0.0.1,port=%d,server=on,wait=off" % port))
        self.use(QMPClient.inet("127.0.0.1", port))

    @unittest.skipUnless(ipv6_loopback(), "no IPv6 loopback")
    def test_ipv6_loopback(self):
        port = free_port("::1")
        self.start(chardev("host=::1,port=%d,server=on,wait=off" % port))
        self.use(QMPClient.inet("::1", port))

    @unittest.skipUnless(ipv6_loopback(), "no IPv6 loopback")
    def test_ipv6_only_refuses_ipv4(self):
        port = free_port("::1")
        self.start(chardev("host=::1,port=%d,ipv6=on,server=on,wait=off" % port))
        self.use(QMPClient.inet("::1", port))
        self.assertTrue(connect_fails(socket.AF_INET, ("127.0.0.1", port)))

    def test_reconnect_after_client_leaves(self):
        port = free_port()
        self.start(chardev("host=127.0.0.1,port=%d,server=on,wait=off,nodelay=on" % port))
        for _ in range(3):
            c = self.use(QMPClient.inet("127.0.0.1", port))
            c.close()

    def occupy_with_next_free(self, tries=20):
        """A listening socket on port P with P+1 free; returns (socket, P)."""
        for _ in range(tries):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind(("127.0.0.1", port + 1))
                return s, port
            except OSError:
                s.close()
        self.skipTest("no pair of adjacent free ports")

    def test_port_range_skips_busy_port(self):
        busy, port = self.occupy_with_next_free()
        self.addCleanup(busy.close)
        self.start(chardev("host=127.0.0.1,port=%d,to=%d,server=on,wait=off"
                           % (port, port + 1)))
        self.use(QMPClient.inet("127.0.0.1", port + 1))

    def test_port_range_all_busy(self):
        busy, port = self.occupy_with_next_free()
        self.addCleanup(busy.close)
        rc, err = run_failing(chardev("host=127.0.0.1,port=%d,to=%d,server=on,wait=off"
                                      % (port, port)))
        self.assertEqual(rc, 1)
        self.assertIn("Failed to find an available port: Address already in use", err)

    def test_same_port_twice(self):
        port = free_port()
        rc, err = run_failing(["--chardev", "socket,id=a,host=127.0.0.1,port=%d,server=on,wait=off"
                               % port,
                               "--chardev", "socket,id=b,host=127.0.0.1,port=%d,server=on,wait=off"
                               % port])
        self.assertEqual(rc, 1)
        self.assertIn("--chardev socket,id=b,host=127.0.0.1,port=%d,server=on,wait=off: " % port,
                      err)
        self.assertIn("Address already in use", err)
        self.assertIn("Failed to find an available port", err)

    def test_client_mode_inet(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(10)
        port = listener.getsockname()[1]
        self.start(chardev("host=127.0.0.1,port=%d" % port))
        conn, _ = listener.accept()
        c = self.use(QMPClient(conn))
        self.assertEqual(c.ok("query-yank"), [{"type": "chardev", "id": "m0"}])

    def test_client_mode_inet_refused(self):
        port = free_port()
        rc, err = run_failing(chardev("host=127.0.0.1,port=%d" % port))
        self.assertEqual(rc, 1)
        self.assertIn("Failed to connect to '127.0.0.1:%d': Connection refused" % port, err)

    def test_bind_to_address_not_here(self):
        # TEST-NET-1 is never assigned to this machine.
        rc, err = run_failing(chardev("host=192.0.2.1,port=%d,server=on,wait=off" % free_port()))
        self.assertEqual(rc, 1)
        self.assertIn("Failed to find an available port: Cannot assign requested address", err)

    def test_vsock_not_in_cli_syntax(self):
        rc, err = run_failing(chardev("cid=3,port=1234,server=on,wait=off"))
        self.assertEqual(rc, 1)
        self.assertIn("Invalid parameter 'cid'", err)


def json_chardev(addr, id="m0", **data):
    data["addr"] = addr
    return ["--chardev", json.dumps({"id": id, "backend": {"type": "socket", "data": data}}),
            "--monitor", id]


def vsock_available():
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
        return True
    except (OSError, AttributeError):
        return False


def vsock_free_port():
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as s:
        s.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
        return s.getsockname()[1]


class JsonChardev(SocketTestCase):
    def test_json_form_unix(self):
        d = Daemon(json_chardev({"type": "unix", "data": {"path": "@DIR@/qmp.sock"}},
                                server=True, wait=False))
        self.addCleanup(d.stop)
        self.use(d.qmp(negotiate=False))

    def test_json_form_inet(self):
        port = free_port()
        self.start(json_chardev({"type": "inet", "data": {"host": "127.0.0.1", "port": str(port)}},
                                server=True, wait=False))
        self.use(QMPClient.inet("127.0.0.1", port))

    def test_json_form_errors(self):
        cases = [
            ({"id": "m0"}, "Parameter 'backend' is missing"),
            ({"id": "m0", "backend": {"type": "nope", "data": {}}},
             "Parameter 'type' does not accept value 'nope'"),
            ({"id": "m0", "backend": {"type": "socket", "data": {
                "addr": {"type": "unix", "data": {}}}}},
             "Parameter 'backend.data.addr.data.path' is missing"),
            ({"id": "m0", "backend": {"type": "socket", "data": {
                "addr": {"type": "unix", "data": {"path": "/x"}}, "server": "yes"}}},
             "Invalid parameter type for 'backend.data.server', expected: boolean"),
        ]
        for opt, message in cases:
            with self.subTest(opt=opt):
                text = json.dumps(opt)
                rc, err = run_failing(["--chardev", text])
                self.assertEqual(rc, 1)
                self.assertIn("--chardev %s: %s" % (text, message), err)


@unittest.skipUnless(vsock_available(), "no AF_VSOCK")
class Vsock(SocketTestCase):
    def start_vsock(self):
        port = vsock_free_port()
        self.start(json_chardev({"type": "vsock",
                                 "data": {"cid": str(socket.VMADDR_CID_ANY), "port": str(port)}},
                                server=True, wait=False))
        return port

    def test_vsock_listener_holds_its_port(self):
        port = self.start_vsock()
        with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as s:
            with self.assertRaises(OSError) as cm:
                s.bind((socket.VMADDR_CID_ANY, port))
            self.assertEqual(cm.exception.errno, errno.EADDRINUSE)

    def test_vsock_monitor(self):
        port = self.start_vsock()
        s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        s.settimeout(1)
        try:
            s.connect((1, port))  # VMADDR_CID_LOCAL: the loopback transport
        except OSError:
            s.close()
            self.skipTest("no vsock loopback transport")
        s.settimeout(10)
        self.use(QMPClient(s))

    def test_vsock_bad_cid(self):
        rc, err = run_failing(json_chardev({"type": "vsock", "data": {"cid": "abc", "port": "1"}},
                                           server=True, wait=False))
        self.assertEqual(rc, 1)
        self.assertIn("abc", err)

    # QEMU (vsock_parse_vaddr_to_sockaddr): "Failed to parse cid 'abc'" and
    # "Failed to parse port 'xyz'" (qemu-storage-daemon 7.2 prints these
    # for --nbd-server addr.type=vsock); vstord says "Invalid CID: abc" and
    # "Invalid port: xyz".
    def test_vsock_bad_cid_qemu_message(self):
        rc, err = run_failing(json_chardev({"type": "vsock", "data": {"cid": "abc", "port": "1"}},
                                           server=True, wait=False))
        self.assertIn("Failed to parse cid 'abc'", err)

    def test_vsock_bad_port_qemu_message(self):
        rc, err = run_failing(json_chardev({"type": "vsock", "data": {"cid": "1", "port": "xyz"}},
                                           server=True, wait=False))
        self.assertIn("Failed to parse port 'xyz'", err)


class InheritedFds(SocketTestCase):
    def listening_unix(self, listen=True):
        path = os.path.join(self.tmpdir(), "inherited.sock")
        s = socket.socket(socket.AF_UNIX)
        self.addCleanup(s.close)
        s.bind(path)
        if listen:
            s.listen(4)
        return s, path

    def test_inherited_listening_socket(self):
        s, path = self.listening_unix()
        fd = s.fileno()
        self.start(chardev("fd=%d,server=on,wait=off" % fd), pass_fds=[fd])
        s.close()  # the daemon has its own copy
        self.use(QMPClient.unix(path))

    def test_inherited_bound_socket_not_yet_listening(self):
        s, path = self.listening_unix(listen=False)
        fd = s.fileno()
        self.start(chardev("fd=%d,server=on,wait=off" % fd), pass_fds=[fd])
        self.use(QMPClient.unix(path))

    def test_inherited_listening_tcp_socket(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        port = s.getsockname()[1]
        self.start(chardev("fd=%d,server=on,wait=off" % s.fileno()), pass_fds=[s.fileno()])
        self.use(QMPClient.inet("127.0.0.1", port))

    def test_inherited_connected_socket_as_client(self):
        mine, theirs = socket.socketpair()
        self.addCleanup(mine.close)
        self.addCleanup(theirs.close)
        self.start(chardev("fd=%d,server=off" % theirs.fileno()), pass_fds=[theirs.fileno()])
        theirs.close()
        c = self.use(QMPClient(mine))
        self.assertEqual(c.ok("query-yank"), [{"type": "chardev", "id": "m0"}])

    def test_fd_not_a_number(self):
        rc, err = run_failing(chardev("fd=NOT_A_NUMBER,server=on,wait=off"))
        self.assertEqual(rc, 1)
        self.assertIn("--chardev socket,id=m0,fd=NOT_A_NUMBER,server=on,wait=off: "
                      "Unable to parse FD number NOT_A_NUMBER", err)

    def test_fd_not_a_socket(self):
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        rc, err = run_failing(chardev("fd=%d,server=on,wait=off" % r), pass_fds=[r])
        self.assertEqual(rc, 1)
        self.assertIn("File descriptor '%d' is not a socket" % r, err)

    def test_fd_not_open_fails(self):
        rc, err = run_failing(chardev("fd=987,server=on,wait=off"))
        self.assertEqual(rc, 1)
        self.assertIn("File descriptor '987'", err)

    # QEMU checks fstat(S_ISSOCK) only, so a descriptor that is not open
    # gets "File descriptor '987' is not a socket" (qemu-storage-daemon 7.2
    # prints that); vstord says "... is not open".
    def test_fd_not_open_qemu_message(self):
        rc, err = run_failing(chardev("fd=987,server=on,wait=off"))
        self.assertIn("File descriptor '987' is not a socket", err)


class WaitOn(SocketTestCase):
    def test_wait_on_delays_startup_until_client(self):
        d = self.start(chardev("path=@DIR@/qmp.sock,server=on,wait=on"), wait_ready=False)
        wait_for(lambda: os.path.exists(d.path("qmp.sock")) or d.proc.poll() is not None,
                 what="socket")
        time.sleep(0.5)
        self.assertIsNone(d.proc.poll(), d.read_stderr())
        self.assertFalse(os.path.exists(d.pidfile))
        self.assertIn("waiting for connection on", d.read_stderr())
        c = QMPClient.unix(d.path("qmp.sock"))
        wait_for(lambda: os.path.exists(d.pidfile), timeout=5, what="pidfile")
        self.use(c)

    def test_server_defaults_to_wait(self):
        # As in QEMU, server=on without wait= waits for a client.
        d = self.start(chardev("path=@DIR@/qmp.sock,server=on"), wait_ready=False)
        wait_for(lambda: os.path.exists(d.path("qmp.sock")), what="socket")
        time.sleep(0.3)
        self.assertFalse(os.path.exists(d.pidfile))
        c = QMPClient.unix(d.path("qmp.sock"))
        wait_for(lambda: os.path.exists(d.pidfile), timeout=5, what="pidfile")
        self.use(c)

    def test_wait_on_client_mode_refused(self):
        rc, err = run_failing(chardev("host=127.0.0.1,port=1,wait=on"))
        self.assertEqual(rc, 1)
        self.assertIn("'wait' option is incompatible with socket in client connect mode", err)

    def test_sigterm_while_waiting(self):
        d = self.start(chardev("path=@DIR@/qmp.sock,server=on,wait=on"), wait_ready=False)
        wait_for(lambda: os.path.exists(d.path("qmp.sock")), what="socket")
        d.proc.terminate()
        self.assertEqual(d.wait(10), 0)
        self.assertFalse(os.path.exists(d.path("qmp.sock")))
        self.assertFalse(os.path.exists(d.pidfile))


if __name__ == "__main__":
    unittest.main()
