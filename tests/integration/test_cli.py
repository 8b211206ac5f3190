"""The command line: help, version, option errors in QEMU's words, the
pidfile, signals and --daemonize.
"""

import os
import signal
import subprocess
import tempfile
import time
import unittest

from daemon import VSTORD, Daemon, monitor_args, wait_for
from qmp import QMPClient

OPTIONS = ["--blockdev", "--chardev", "--daemonize", "--export", "--monitor", "--nbd-server",
           "--object", "--pidfile", "--log-level"]


def run(args, timeout=10, cwd=None):
    p = subprocess.run([VSTORD] + args, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout, cwd=cwd)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def process_gone(pid):
    """True once pid has exited (a zombie not yet reaped counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


class CliTestCase(unittest.TestCase):
    def tmpdir(self):
        t = tempfile.TemporaryDirectory(prefix="vstord-test-")
        self.addCleanup(t.cleanup)
        return t.name

    def fails(self, args, message, **kw):
        rc, out, err = run(args, **kw)
        self.assertEqual(rc, 1, err)
        self.assertIn(message, err)
        return err


class HelpAndVersion(CliTestCase):
    def test_help(self):
        for flag in ("--help", "-h"):
            with self.subTest(flag=flag):
                rc, out, err = run([flag])
                self.assertEqual(rc, 0)
                self.assertEqual(err, "")
                self.assertTrue(out.startswith("Usage: vstord [options]"), out[:100])
                for opt in OPTIONS + ["--help", "--version"]:
                    self.assertIn(opt, out)

    def test_help_wins_over_other_options(self):
        rc, out, err = run(["--chardev", "nope,id=x", "--help"])
        self.assertEqual(rc, 0)
        self.assertIn("--monitor", out)

    def test_version(self):
        for flag in ("-V", "--version"):
            with self.subTest(flag=flag):
                rc, out, err = run([flag])
                self.assertEqual(rc, 0)
                self.assertRegex(out, r"^vstord version \d+\.\d+\.\d+ ")
                self.assertIn("9.2.0", out)

    def test_version_matches_qmp(self):
        rc, out, _ = run(["-V"])
        d = Daemon(monitor_args())
        self.addCleanup(d.stop)
        c = d.qmp()
        self.addCleanup(c.close)
        package = c.ok("query-version")["package"]  # "vstord X.Y.Z"
        self.assertTrue(package.startswith("vstord "), package)
        self.assertTrue(out.startswith("vstord version %s " % package.split()[1]), out)


class OptionErrors(CliTestCase):
    def test_unknown_option(self):
        err = self.fails(["--bogus"], "unrecognized option '--bogus'")
        self.assertEqual(len(err.strip().splitlines()), 1)

    def test_missing_argument(self):
        self.fails(["--chardev"], "option '--chardev' requires an argument")

    def test_non_option_argument(self):
        rc, out, err = run(["foo"])
        self.assertEqual(rc, 1)
        self.assertEqual(err, "vstord: foo: Unexpected argument\n")

    def test_monitor_unknown_chardev(self):
        self.fails(["--monitor", "chardev=x"], '--monitor chardev=x: chardev "x" not found')

    def test_monitor_before_its_chardev(self):
        # Options are carried out in order.
        d = self.tmpdir()
        self.fails(["--monitor", "m0", "--chardev",
                    "socket,id=m0,path=%s/s,server=on,wait=off" % d],
                   '--monitor m0: chardev "m0" not found')

    def test_monitor_readline(self):
        d = self.tmpdir()
        self.fails(["--chardev", "socket,id=m0,path=%s/s,server=on,wait=off" % d,
                    "--monitor", "m0,mode=readline"],
                   "--monitor m0,mode=readline: Only QMP is supported")

    def test_monitor_option_errors(self):
        d = self.tmpdir()
        chr = ["--chardev", "socket,id=m0,path=%s/s,server=on,wait=off" % d]
        cases = [
            ("m0,pretty=maybe", "Parameter 'pretty' expects 'on' or 'off'"),
            ("m0,mode=bogus", "Parameter 'mode' does not accept value 'bogus'"),
            ("m0,bogus=1", "Parameter 'bogus' is unexpected"),
            ('{"chardev":"m0","bogus":1}', "Parameter 'bogus' is unexpected"),
            ('{"pretty":true}', "Parameter 'chardev' is missing"),
            ('{"chardev":"m0","pretty":"on"}',
             "Invalid parameter type for 'pretty', expected: boolean"),
            ('{"chardev":"m0"', "JSON parse error, premature EOI"),
        ]
        for opt, message in cases:
            with self.subTest(opt=opt):
                rc, out, err = run(chr + ["--monitor", opt])
                self.assertEqual(rc, 1)
                self.assertIn("--monitor %s: " % opt, err)
                self.assertIn(message, err)

    def test_monitor_twice_on_one_chardev(self):
        d = self.tmpdir()
        self.fails(["--chardev", "socket,id=m0,path=%s/s,server=on,wait=off" % d,
                    "--monitor", "m0", "--monitor", "m0"],
                   "--monitor m0: Device 'm0' is in use")

    def test_chardev_errors(self):
        d = self.tmpdir()
        cases = [
            ("socket,path=%s/s,server=on,wait=off" % d, "chardev: no id specified"),
            ("socket,id=1a,path=%s/s,server=on,wait=off" % d,
             "Parameter 'id' expects an identifier"),
            ("socket,id=a b,path=%s/s" % d, "Parameter 'id' expects an identifier"),
            ("nope,id=a", "'nope' is not a valid char driver name"),
            ("socket,id=a,path=%s/s,bogus=1,server=on,wait=off" % d, "Invalid parameter 'bogus'"),
            ("socket,id=a,path=%s/s,server=maybe" % d, "Parameter 'server' expects 'on' or 'off'"),
            ("socket,id=a,host=127.0.0.1", "chardev: socket: no port given"),
            ("socket,id=a,host=127.0.0.1,port=1,path=%s/s" % d,
             "None or one of 'path', 'fd' or 'host' option required."),
        ]
        for opt, message in cases:
            with self.subTest(opt=opt):
                rc, out, err = run(["--chardev", opt])
                self.assertEqual(rc, 1)
                self.assertIn("--chardev %s: %s" % (opt, message), err)

    # Values the key=value parser passes through unchecked are checked
    # later against the QAPI type, and the error names the internal QAPI
    # path: "Parameter 'data.addr.data.to' expects integer".  QEMU names
    # the option as the user wrote it: "Parameter 'to' expects a number",
    # "Parameter 'abstract' expects 'on' or 'off'" (qemu-storage-daemon 7.2).
    def test_chardev_bad_number_names_the_option(self):
        self.fails(["--chardev", "socket,id=m0,host=127.0.0.1,port=1,server=on,wait=off,to=x"],
                   "Parameter 'to' expects a number")
        self.fails(["--chardev", "socket,id=m0,host=127.0.0.1,port=1,reconnect=x"],
                   "Parameter 'reconnect' expects a number")

    def test_chardev_bad_bool_names_the_option(self):
        d = self.tmpdir()
        for key in ("abstract", "tight"):
            self.fails(["--chardev", "socket,id=m0,path=%s/s,server=on,wait=off,%s=maybe"
                        % (d, key)],
                       "Parameter '%s' expects 'on' or 'off'" % key)
        self.fails(["--chardev", "socket,id=m0,host=127.0.0.1,port=1,server=on,wait=off,"
                    "ipv4=maybe"], "Parameter 'ipv4' expects 'on' or 'off'")

    def test_chardev_bad_values_fail(self):
        d = self.tmpdir()
        for opt in ("socket,id=m0,host=127.0.0.1,port=1,server=on,wait=off,to=x",
                    "socket,id=m0,path=%s/s,server=on,wait=off,abstract=maybe" % d,
                    "socket,id=m0,host=127.0.0.1,port=1,server=on,wait=off,ipv4=maybe"):
            with self.subTest(opt=opt):
                rc, out, err = run(["--chardev", opt])
                self.assertEqual(rc, 1)
                self.assertIn("--chardev %s: Parameter '" % opt, err)

    # qemu-storage-daemon: "--chardev help" lists the backend types and
    # exits 0; vstord reads "help" as the backend and fails with
    # "chardev: no id specified".
    def test_chardev_help(self):
        rc, out, err = run(["--chardev", "help"])
        self.assertEqual(rc, 0, err)
        self.assertIn("socket", out)

    # QEMU: "chardev: file: no filename given".
    def test_chardev_file_without_path_message(self):
        self.fails(["--chardev", "file,id=m0"],
                   "--chardev file,id=m0: chardev: file: no filename given")

    def test_chardev_duplicate_id(self):
        d = self.tmpdir()
        self.fails(["--chardev", "socket,id=m0,path=%s/a,server=on,wait=off" % d,
                    "--chardev", "socket,id=m0,path=%s/b,server=on,wait=off" % d],
                   "--chardev socket,id=m0,path=%s/b,server=on,wait=off: "
                   "attempt to add duplicate property 'm0' to object (type 'container')" % d)

    def test_failed_start_leaves_no_pidfile(self):
        d = self.tmpdir()
        pid = os.path.join(d, "pid")
        self.fails(["--pidfile", pid, "--chardev", "nope,id=a"], "not a valid char driver")
        self.assertFalse(os.path.exists(pid))

    def test_bad_log_level(self):
        self.fails(["--log-level", "loud"], "unknown level 'loud'")

    def test_log_level_info_logs(self):
        d = Daemon(monitor_args() + ["--log-level", "info"])
        d.proc.terminate()
        self.assertEqual(d.wait(), 0)
        err = d.read_stderr()
        d.stop()
        self.assertIn("ready", err)
        self.assertIn("shutting down (host-signal)", err)

    def test_chardev_bad_id_hint(self):
        # QEMU prints a hint under the error on the command line.
        self.fails(["--chardev", "socket,id=1a,path=/x"],
                   "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.")


class MonitorForms(CliTestCase):
    def check_pretty(self, monitor_opt, pretty):
        d = Daemon(["--chardev", "socket,id=m0,path=@DIR@/qmp.sock,server=on,wait=off",
                    "--monitor", monitor_opt])
        self.addCleanup(d.stop)
        c = QMPClient.unix(d.path("qmp.sock"))
        self.addCleanup(c.close)
        g, raw = c.read_value()
        self.assertIn("QMP", g)
        self.assertEqual(raw.count(b"\r\n") > 1, pretty, raw)
        c.send_raw(b'{"execute":"qmp_capabilities"}')
        self.assertEqual(c.read_value()[0], {"return": {}})

    def test_monitor_json_form(self):
        self.check_pretty('{"chardev":"m0","pretty":true}', True)
        self.check_pretty('{"chardev":"m0","pretty":false,"mode":"control","id":"mon0"}', False)

    def test_monitor_implied_key(self):
        self.check_pretty("m0", False)
        self.check_pretty("m0,pretty=on", True)
        self.check_pretty("chardev=m0,pretty=off", False)


class PidFile(CliTestCase):
    def test_pidfile_content(self):
        d = Daemon(monitor_args())
        self.addCleanup(d.stop)
        with open(d.pidfile) as f:
            self.assertEqual(f.read(), "%d\n" % d.pid)
        self.assertEqual(os.stat(d.pidfile).st_mode & 0o777, 0o600)

    def test_second_daemon_same_pidfile(self):
        first = Daemon(monitor_args())
        self.addCleanup(first.stop)
        other = self.tmpdir()
        rc, out, err = run(["--chardev", "socket,id=m0,path=%s/s,server=on,wait=off" % other,
                            "--monitor", "m0", "--pidfile", first.pidfile])
        self.assertEqual(rc, 1)
        self.assertIn("cannot create PID file: Cannot lock pid file", err)
        # The first daemon's pidfile is untouched and it still works.
        with open(first.pidfile) as f:
            self.assertEqual(f.read(), "%d\n" % first.pid)
        c = first.qmp()
        self.addCleanup(c.close)
        self.assertIn("qemu", c.ok("query-version"))

    def test_pidfile_in_missing_directory(self):
        self.fails(["--pidfile", os.path.join(self.tmpdir(), "no", "pid")],
                   "cannot create PID file")

    # qemu-storage-daemon: "cannot create PID file: Could not create
    # '/dir/no/pid': No such file or directory"; vstord leaves out the
    # "Could not create '...'" part.
    def test_pidfile_in_missing_directory_qemu_message(self):
        path = os.path.join(self.tmpdir(), "no", "pid")
        self.fails(["--pidfile", path],
                   "cannot create PID file: Could not create '%s': No such file or directory"
                   % path)

    def test_stale_pidfile_overwritten(self):
        d = self.tmpdir()
        pid = os.path.join(d, "pid")
        with open(pid, "w") as f:
            f.write("123456789012\n")
        proc = subprocess.Popen([VSTORD, "--pidfile", pid], stdin=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        def rewritten():
            with open(pid) as f:
                return f.read() == "%d\n" % proc.pid
        wait_for(rewritten, what="pidfile rewritten")
        proc.terminate()
        self.assertEqual(proc.wait(10), 0)
        self.assertFalse(os.path.exists(pid))

    def test_signals_remove_pidfile_and_socket(self):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with self.subTest(sig=sig.name):
                d = Daemon(monitor_args())
                self.addCleanup(d.stop)
                c = d.qmp()
                self.addCleanup(c.close)
                sock = d.path("qmp.sock")
                self.assertTrue(os.path.exists(sock))
                d.proc.send_signal(sig)
                self.assertEqual(d.wait(10), 0)
                self.assertFalse(os.path.exists(d.pidfile))
                self.assertFalse(os.path.exists(sock))
                ev = c.read_event("SHUTDOWN", timeout=5)
                self.assertEqual(ev["data"], {"guest": False, "reason": "host-signal"})

    def test_relative_pidfile(self):
        d = self.tmpdir()
        proc = subprocess.Popen([VSTORD, "--pidfile", "rel.pid"], cwd=d,
                                stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        wait_for(lambda: os.path.exists(os.path.join(d, "rel.pid")), what="pidfile")
        proc.terminate()
        self.assertEqual(proc.wait(10), 0)
        self.assertFalse(os.path.exists(os.path.join(d, "rel.pid")))

    def test_sigterm_with_a_client_that_does_not_read(self):
        d = Daemon(monitor_args())
        self.addCleanup(d.stop)
        c = d.qmp()
        self.addCleanup(c.close)
        c.sock.setblocking(False)
        data = b'{"execute":"query-qmp-schema"}' * 3000
        sent, deadline = 0, time.monotonic() + 3
        while sent < len(data) and time.monotonic() < deadline:
            try:
                sent += c.sock.send(data[sent:])
            except BlockingIOError:
                time.sleep(0.01)
        time.sleep(0.2)
        t = time.monotonic()
        d.proc.terminate()
        self.assertEqual(d.wait(10), 0)
        self.assertLess(time.monotonic() - t, 5)
        self.assertFalse(os.path.exists(d.pidfile))


class Daemonize(CliTestCase):
    def stop_daemon(self, pid, pidfile):
        if not process_gone(pid):
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: process_gone(pid), timeout=10, what="daemon exit")
        if pidfile:
            self.assertFalse(os.path.exists(pidfile))

    def start_daemonized(self, d, args, cwd=None):
        pidfile = os.path.join(d, "pid")
        t = time.monotonic()
        rc, out, err = run(args + ["--daemonize", "--pidfile", pidfile], cwd=cwd)
        self.assertEqual((rc, err), (0, ""))
        self.assertEqual(out, "")
        # Ready when the command returns: no waiting here.
        self.assertTrue(os.path.exists(pidfile))
        with open(pidfile) as f:
            content = f.read()
        self.assertRegex(content, r"^[0-9]+\n$")
        pid = int(content)
        self.addCleanup(lambda: process_gone(pid) or os.kill(pid, signal.SIGKILL))
        self.assertFalse(process_gone(pid))
        return pid, pidfile

    def test_daemonize(self):
        d = self.tmpdir()
        sock = os.path.join(d, "qmp.sock")
        pid, pidfile = self.start_daemonized(
            d, ["--chardev", "socket,id=m0,path=%s,server=on,wait=off" % sock,
                "--monitor", "m0"])
        c = QMPClient.unix(sock)
        self.addCleanup(c.close)
        c.negotiate()
        self.assertIn("qemu", c.ok("query-version"))
        # Still running a while later, in its own session.
        time.sleep(0.3)
        self.assertFalse(process_gone(pid))
        self.assertNotEqual(os.getsid(pid), os.getsid(0))
        self.stop_daemon(pid, pidfile)
        self.assertFalse(os.path.exists(sock))

    def test_daemonize_with_relative_pidfile(self):
        d = self.tmpdir()
        rc, out, err = run(["--daemonize", "--pidfile", "rel.pid"], cwd=d)
        self.assertEqual(rc, 0, err)
        pidfile = os.path.join(d, "rel.pid")
        with open(pidfile) as f:
            pid = int(f.read())
        self.addCleanup(lambda: process_gone(pid) or os.kill(pid, signal.SIGKILL))
        self.stop_daemon(pid, pidfile)

    # The daemon changes directory to / after start-up, and removes its
    # socket files by the path as given, so a relative socket path is not
    # removed at exit (qemu-storage-daemon 7.2 behaves the same; the
    # pidfile, by contrast, is resolved to an absolute path first).
    def test_daemonize_with_relative_socket_path(self):
        d = self.tmpdir()
        name = "rel-%d.sock" % os.getpid()
        pid, pidfile = self.start_daemonized(
            d, ["--chardev", "socket,id=m0,path=%s,server=on,wait=off" % name,
                "--monitor", "m0"], cwd=d)
        c = QMPClient.unix(os.path.join(d, name))
        self.addCleanup(c.close)
        c.negotiate()
        self.stop_daemon(pid, pidfile)
        self.assertFalse(os.path.exists(os.path.join(d, name)))

    def test_daemonize_bad_option_fails_quickly(self):
        d = self.tmpdir()
        pidfile = os.path.join(d, "pid")
        t = time.monotonic()
        rc, out, err = run(["--daemonize", "--pidfile", pidfile, "--chardev", "nope,id=a"])
        self.assertNotEqual(rc, 0)
        self.assertLess(time.monotonic() - t, 5)
        self.assertIn("'nope' is not a valid char driver name", err)
        self.assertFalse(os.path.exists(pidfile))

    def test_daemonize_bind_failure(self):
        d = self.tmpdir()
        rc, out, err = run(["--daemonize", "--chardev",
                            "socket,id=m0,path=%s/no/such/dir/s,server=on,wait=off" % d])
        self.assertNotEqual(rc, 0)
        self.assertIn("Failed to bind socket", err)

    def test_daemonize_pidfile_locked(self):
        first = Daemon(monitor_args())
        self.addCleanup(first.stop)
        rc, out, err = run(["--daemonize", "--pidfile", first.pidfile])
        self.assertNotEqual(rc, 0)
        self.assertIn("Cannot lock pid file", err)
        with open(first.pidfile) as f:
            self.assertEqual(f.read(), "%d\n" % first.pid)


if __name__ == "__main__":
    unittest.main()
