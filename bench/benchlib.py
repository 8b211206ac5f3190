"""What the benchmarks share: starting a daemon (vstord or an anchor) in a
temporary directory and stopping it by its PID, reading its memory use,
and the common command-line options."""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time


@contextlib.contextmanager
def running_daemon(binary, args_for_dir):
    """Starts binary with args_for_dir(tmpdir) plus a pidfile; yields
    (process, tmpdir) once the pidfile exists; stops it afterwards.  If it
    does not start, the RuntimeError carries the end of its stderr."""
    tmp = tempfile.mkdtemp(prefix="vstord-bench-")
    pidfile = os.path.join(tmp, "pid")
    errlog = os.path.join(tmp, "stderr")
    proc = None
    try:
        with open(errlog, "wb") as err:
            proc = subprocess.Popen([binary] + args_for_dir(tmp) + ["--pidfile", pidfile],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err)
        deadline = time.monotonic() + 10
        while not os.path.exists(pidfile):
            if proc.poll() is not None or time.monotonic() > deadline:
                how = (f"exited with status {proc.returncode}" if proc.poll() is not None
                       else "wrote no pidfile within 10 s")
                with open(errlog, errors="replace") as f:
                    tail = f.read()[-500:].strip()
                raise RuntimeError(f"{binary} did not start: {how}" + (f": {tail}" if tail else ""))
            time.sleep(0.01)
        yield proc, tmp
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def status_kib(pid, field):
    """A memory figure from /proc/PID/status (VmRSS, VmHWM, ...), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def add_daemon_options(ap):
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--vstord", default=os.path.join(here, "..", "build", "release", "vstord"))
    ap.add_argument("--qsd", default=shutil.which("qemu-storage-daemon"))
