#!/usr/bin/env python3
"""QMP monitor throughput: vstord beside qemu-storage-daemon, in one run.

N concurrent monitors each send M query-version requests, keeping a window
of W requests in flight per monitor (QEMU queues at most 8 in-band
requests per monitor).  Prints requests per second, p50/p99 latency and
the daemon's peak resident memory (VmHWM), for each daemon and the ratios.
The machine is noisy: each daemon is run ROUNDS times alternately and the
median is quoted.

  bench/qmp_bench.py [--vstord PATH] [--monitors 16] [--requests 2000]
                     [--window 8] [--rounds 3]
"""

import argparse
import selectors
import socket
import statistics
import time

from benchlib import add_daemon_options, running_daemon, status_kib

REQ = b'{"execute":"query-version"}\n'


def monitor_args(n):
    def args(tmp):
        out = []
        for i in range(n):
            out += ["--chardev", f"socket,id=m{i},path={tmp}/m{i}.sock,server=on,wait=off",
                    "--monitor", f"chardev=m{i}"]
        return out
    return args


class Conn:
    def __init__(self, path, total, window):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.buf = b""
        self.total = total
        self.window = window
        self.sent = 0
        self.done = 0
        self.sent_at = []
        self.lat = []
        # Greeting and negotiation, synchronously.
        self._line()
        self.sock.sendall(b'{"execute":"qmp_capabilities"}\n')
        self._line()
        self.sock.setblocking(False)

    def _line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def pump_send(self):
        n = min(self.window - (self.sent - self.done), self.total - self.sent)
        if n > 0:
            now = time.perf_counter()
            self.sock.sendall(REQ * n)
            self.sent_at += [now] * n
            self.sent += n

    def on_readable(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise RuntimeError("daemon closed the connection")
        self.buf += data
        now = time.perf_counter()
        while b"\r\n" in self.buf:
            line, self.buf = self.buf.split(b"\r\n", 1)
            if b'"return"' not in line:
                raise RuntimeError(f"unexpected reply {line[:200]!r}")
            self.lat.append(now - self.sent_at[self.done])
            self.done += 1


def run_once(binary, monitors, requests, window):
    with running_daemon(binary, monitor_args(monitors)) as (proc, tmp):
        conns = [Conn(f"{tmp}/m{i}.sock", requests, window) for i in range(monitors)]
        sel = selectors.DefaultSelector()
        for c in conns:
            sel.register(c.sock, selectors.EVENT_READ, c)
        t0 = time.perf_counter()
        for c in conns:
            c.pump_send()
        deadline = time.monotonic() + 300
        remaining = len(conns)
        while remaining:
            if time.monotonic() > deadline:
                raise RuntimeError("benchmark timed out")
            for key, _ in sel.select(timeout=5):
                c = key.data
                c.on_readable()
                if c.done == c.total:
                    sel.unregister(c.sock)
                    remaining -= 1
                else:
                    c.pump_send()
        elapsed = time.perf_counter() - t0
        lat = sorted(l for c in conns for l in c.lat)
        rss = status_kib(proc.pid, "VmHWM")
        for c in conns:
            c.sock.close()
        return {
            "rps": monitors * requests / elapsed,
            "p50_us": lat[len(lat) // 2] * 1e6,
            "p99_us": lat[int(len(lat) * 0.99)] * 1e6,
            "rss_mib": rss / 1024,
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_daemon_options(ap)
    ap.add_argument("--monitors", type=int, default=16)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    daemons = [("vstord", args.vstord)]
    if args.qsd:
        daemons.append(("qsd", args.qsd))
    results = {name: [] for name, _ in daemons}
    for _ in range(args.rounds):
        for name, binary in daemons:
            results[name].append(run_once(binary, args.monitors, args.requests, args.window))
    print(f"# {args.monitors} monitors x {args.requests} query-version, window {args.window}, "
          f"median of {args.rounds} rounds")
    med = {}
    for name, runs in results.items():
        med[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        m = med[name]
        print(f"{name:7s} requests_per_s {m['rps']:10.0f}  p50_us {m['p50_us']:8.0f}  "
              f"p99_us {m['p99_us']:8.0f}  peak_rss_mib {m['rss_mib']:6.1f}")
    if "qsd" in med:
        a, b = med["vstord"], med["qsd"]
        print(f"ratio   requests_per_s {a['rps'] / b['rps']:.2f}x  p50 {a['p50_us'] / b['p50_us']:.2f}x  "
              f"p99 {a['p99_us'] / b['p99_us']:.2f}x  rss {a['rss_mib'] / b['rss_mib']:.2f}x")


if __name__ == "__main__":
    main()
