"""yank runs out of band: it works while an in-band command of the same
monitor is still running."""

import os
import socket
import unittest

from daemon import DaemonTestCase, wait_for


class YankWhileHung(DaemonTestCase):
    def test_yank_while_chardev_add_waits(self):
        c = self.qmp(oob=True)
        path = self.daemon.path("w.sock")
        # An in-band command that does not finish: a server that waits for
        # its first client.
        c.send_raw(b'{"execute": "chardev-add", "id": "hung", "arguments": {"id": "w", '
                   b'"backend": {"type": "socket", "data": {"addr": {"type": "unix", '
                   b'"data": {"path": "' + path.encode() + b'"}}, "wait": true}}}}\n')
        wait_for(lambda: os.path.exists(path), what="listening socket")
        # Queued behind it, in band: not answered yet.
        c.send_raw(b'{"execute": "query-version", "id": "queued"}\n')
        # Out of band: answered at once.
        r = c.cmd("yank", {"instances": [{"type": "chardev", "id": "w"}]}, id="yank", oob=True)
        self.assertEqual(r, {"return": {}, "id": "yank"})
        r = c.cmd("query-yank", id="qy", oob=True)
        self.assertIn({"type": "chardev", "id": "w"}, r["return"])
        # A client arrives: the hung command ends, then the queued one.
        s = socket.socket(socket.AF_UNIX)
        self.addCleanup(s.close)
        s.connect(path)
        self.assertEqual(c.read_reply(), {"return": {}, "id": "hung"})
        self.assertEqual(c.read_reply()["id"], "queued")
        # Yank drops the client's connection; the device waits for another.
        c.ok("yank", {"instances": [{"type": "chardev", "id": "w"}]})
        s.settimeout(5)
        self.assertEqual(s.recv(1), b"")

    def test_yank_unknown_instance_is_device_not_found(self):
        c = self.qmp(oob=True)
        r = c.cmd("yank", {"instances": [{"type": "chardev", "id": "nope"}]}, oob=True, id=1)
        self.assertEqual(r["error"]["class"], "DeviceNotFound")


if __name__ == "__main__":
    unittest.main()
