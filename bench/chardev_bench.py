#!/usr/bin/env python3
"""Character device management and ring buffer throughput: vstord beside
qemu-storage-daemon, in one run.

For each backend kind: chardev-add of N devices then chardev-remove of all,
as fast as one monitor answers (8 requests in flight), with the daemon's
resident memory at N devices.  Then ringbuf-write and ringbuf-read bytes
per second on a 1 MiB ring.  Medians of ROUNDS alternating runs.

  bench/chardev_bench.py [--vstord PATH] [--count 1000] [--rounds 3] [--ring-mib 4]
"""

import argparse
import base64
import json
import os
import socket
import statistics
import time

from benchlib import add_daemon_options, running_daemon, status_kib

KINDS = {
    "null": lambda d, i: {"type": "null", "data": {}},
    "ringbuf": lambda d, i: {"type": "ringbuf", "data": {"size": 4096}},
    "memory": lambda d, i: {"type": "memory", "data": {"size": 4096}},
    "file": lambda d, i: {"type": "file", "data": {"out": f"{d}/f{i}.log"}},
    "socket": lambda d, i: {"type": "socket", "data": {
        "addr": {"type": "unix", "data": {"path": f"{d}/s{i}.sock"}},
        "server": True, "wait": False}},
    "pty": lambda d, i: {"type": "pty", "data": {}},
}


class Monitor:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.buf = b""
        self.line()
        self.call("qmp_capabilities")

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("daemon closed the monitor")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return json.loads(line)

    def call(self, name, args=None):
        req = {"execute": name}
        if args is not None:
            req["arguments"] = args
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        r = self.line()
        if "return" not in r:
            raise RuntimeError(f"{name}: {r}")
        return r["return"]

    def pipelined(self, requests, window=8):
        """Sends requests keeping 'window' in flight; returns seconds."""
        t0 = time.perf_counter()
        sent = done = 0
        while done < len(requests):
            while sent < len(requests) and sent - done < window:
                self.sock.sendall(json.dumps(requests[sent]).encode() + b"\n")
                sent += 1
            r = self.line()
            if "return" not in r:
                raise RuntimeError(f"{requests[done]['execute']}: {r}")
            done += 1
        return time.perf_counter() - t0


def run_once(binary, count, ring_mib):
    monitor = lambda tmp: ["--chardev", f"socket,id=m0,path={tmp}/m.sock,server=on,wait=off",
                           "--monitor", "m0"]
    with running_daemon(binary, monitor) as (proc, tmp):
        mon = Monitor(f"{tmp}/m.sock")
        out = {}
        for kind, backend in KINDS.items():
            adds = [{"execute": "chardev-add", "arguments": {"id": f"{kind}{i}",
                                                              "backend": backend(tmp, i)}}
                    for i in range(count)]
            t_add = mon.pipelined(adds)
            rss = status_kib(proc.pid, "VmRSS")
            removes = [{"execute": "chardev-remove", "arguments": {"id": f"{kind}{i}"}}
                       for i in range(count)]
            t_remove = mon.pipelined(removes)
            out[kind] = {"add_per_s": count / t_add, "remove_per_s": count / t_remove,
                         "rss_mib": rss / 1024}
        # Ring buffer throughput: 64 KiB writes into a 1 MiB ring and reads
        # of 64 KiB, alternating, ring_mib MiB each way.
        mon.call("chardev-add", {"id": "rb", "backend": {"type": "ringbuf",
                                                          "data": {"size": 1 << 20}}})
        chunk = base64.b64encode(os.urandom(64 * 1024)).decode()
        reqs = []
        for _ in range(ring_mib * 16):
            reqs.append({"execute": "ringbuf-write",
                         "arguments": {"device": "rb", "data": chunk, "format": "base64"}})
            reqs.append({"execute": "ringbuf-read",
                         "arguments": {"device": "rb", "size": 65536, "format": "base64"}})
        t = mon.pipelined(reqs, window=2)
        out["ringbuf_io"] = {"mib_per_s": ring_mib * 2 / t}
        mon.sock.close()
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_daemon_options(ap)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ring-mib", type=int, default=4,
                    help="MiB written and read through the ring buffer")
    args = ap.parse_args()
    daemons = [("vstord", args.vstord)] + ([("qsd", args.qsd)] if args.qsd else [])
    runs = {name: [] for name, _ in daemons}
    for _ in range(args.rounds):
        for name, binary in daemons:
            runs[name].append(run_once(binary, args.count, args.ring_mib))
    med = {}
    for name, rs in runs.items():
        med[name] = {k: {m: statistics.median(r[k][m] for r in rs) for m in rs[0][k]}
                     for k in rs[0]}
    print(f"# {args.count} chardevs per kind, median of {args.rounds} rounds")
    print(f"{'kind':10s} " + "  ".join(f"{n:>28s}" for n in med) +
          ("   ratio add/remove/rss" if "qsd" in med else ""))
    for kind in KINDS:
        cells = [f"{m[kind]['add_per_s']:7.0f}/s {m[kind]['remove_per_s']:7.0f}/s "
                 f"{m[kind]['rss_mib']:5.1f}MiB" for m in med.values()]
        line = f"{kind:10s} " + "  ".join(f"{c:>28s}" for c in cells)
        if "qsd" in med:
            a, b = med["vstord"][kind], med["qsd"][kind]
            line += (f"   {a['add_per_s'] / b['add_per_s']:.2f}x {a['remove_per_s'] / b['remove_per_s']:.2f}x"
                     f" {a['rss_mib'] / b['rss_mib']:.2f}x")
        print(line)
    line = "ringbuf io " + "  ".join(f"{m['ringbuf_io']['mib_per_s']:>24.1f}MiB/s" for m in med.values())
    if "qsd" in med:
        line += f"   {med['vstord']['ringbuf_io']['mib_per_s'] / med['qsd']['ringbuf_io']['mib_per_s']:.2f}x"
    print(line)


if __name__ == "__main__":
    main()
