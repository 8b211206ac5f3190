"""WebSocket and TN3270 socket chardevs, with real clients: the
python3-websocket client for websocket=on, a raw socket for tn3270."""

import socket
import unittest

from daemon import Daemon, free_port, monitor_args

try:
    import websocket  # Debian's python3-websocket
except ImportError:  # pragma: no cover - the set-up installs it
    websocket = None


def ws_chardev(port, extra=""):
    return ["--chardev", "socket,id=w,host=127.0.0.1,port=%d,server=on,wait=off,websocket=on%s"
            % (port, extra), "--monitor", "w"]


@unittest.skipIf(websocket is None, "python3-websocket is not installed")
class WebsocketMonitor(unittest.TestCase):
    def setUp(self):
        self.port = free_port()
        self.daemon = Daemon(monitor_args() + ws_chardev(self.port))
        self.addCleanup(self.daemon.stop)

    def connect(self, **kw):
        ws = websocket.create_connection("ws://127.0.0.1:%d/" % self.port, timeout=10, **kw)
        self.addCleanup(ws.close)
        return ws

    def test_qmp_over_websocket(self):
        ws = self.connect(subprotocols=["binary"])
        self.assertIn(b'"QMP"', ws.recv())
        ws.send_binary(b'{"execute":"qmp_capabilities"}')
        self.assertEqual(ws.recv(), b'{"return": {}}\r\n')
        ws.send(b'{"execute":"query-version","id":7}')
        self.assertIn(b'"id": 7', ws.recv())
        # query-chardev on the control monitor sees the connection.
        c = self.daemon.qmp()
        self.addCleanup(c.close)
        info = {i["label"]: i for i in c.ok("query-chardev")}
        self.assertTrue(info["w"]["filename"].startswith("tcp:127.0.0.1:%d,server=on <-> " % self.port))

    def test_client_without_subprotocol_is_accepted(self):
        ws = self.connect()
        self.assertIn(b'"QMP"', ws.recv())

    def test_client_asking_for_another_subprotocol_is_refused(self):
        with self.assertRaises(Exception):
            ws = websocket.create_connection("ws://127.0.0.1:%d/" % self.port, timeout=5,
                                             subprotocols=["chat"])
            ws.recv()
        # The daemon goes on serving.
        ws = self.connect(subprotocols=["binary"])
        self.assertIn(b'"QMP"', ws.recv())

    def test_plain_tcp_client_is_dropped_and_daemon_keeps_working(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not an upgrade
        s.settimeout(5)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        self.assertNotIn(b'"QMP"', data)
        ws = self.connect(subprotocols=["binary"])
        self.assertIn(b'"QMP"', ws.recv())

    def test_websocket_client_mode_is_refused(self):
        d = Daemon(["--chardev", "socket,id=x,host=127.0.0.1,port=%d,server=off,websocket=on"
                    % free_port()], wait_ready=False)
        self.addCleanup(d.stop)
        self.assertEqual(d.wait(10), 1)
        self.assertIn("Websocket client is not implemented", d.read_stderr())


class Tn3270(unittest.TestCase):
    def test_negotiation_then_qmp(self):
        port = free_port()
        d = Daemon(monitor_args() + ["--chardev", "socket,id=t,host=127.0.0.1,port=%d,server=on,"
                                     "wait=off,tn3270=on" % port, "--monitor", "t"])
        self.addCleanup(d.stop)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(s.close)
        data = b""
        while b'"QMP"' not in data:
            chunk = s.recv(4096)
            self.assertTrue(chunk, "connection closed before the greeting")
            data += chunk
        # IAC DO TERMINAL-TYPE comes first.
        self.assertTrue(data.startswith(b"\xff\xfd\x18"), data[:12])
        # The client's answers are stripped before QMP sees them.
        s.sendall(b"\xff\xfb\x18\xff\xfa\x18\x00IBM-3278-2\xff\xf0"
                  b'{"execute":"qmp_capabilities"}\n')
        data = b""
        while b"\r\n" not in data:
            data += s.recv(4096)
        self.assertEqual(data, b'{"return": {}}\r\n')


if __name__ == "__main__":
    unittest.main()
