#!/usr/bin/python3
"""NBD data path: vstord beside qemu-storage-daemon and nbdkit's file plugin,
in one run, on one image in tmpfs.

Each server exports the same image over a unix socket.  Measured with
fio's nbd engine, each job --runtime seconds:
  randread  4k random read,  iodepth 32  (IOPS)
  randwrite 4k random write, iodepth 32  (IOPS)
  seqread   1 MiB sequential read, iodepth 8  (MiB/s)
and the wall time of `nbdcopy URI null:` over the whole image (MiB/s).
The servers are run in turn within each repetition (A B C A B C ...), each
in a fresh process, so the machine's noise falls on all alike; the table
quotes medians over the repetitions and the ratios vstord/qsd and
vstord/nbdkit.  A server that does not start, or fails or dies during a
job, is skipped from then on with a message (its table cells show "-").
Needs fio (with its nbd engine), nbdcopy and nbdinfo (libnbd), nbdkit and
qemu-storage-daemon.

vstord and qemu-storage-daemon get the same command line:
  --blockdev driver=file,node-name=f0,filename=IMG[,aio=AIO]
  --blockdev driver=raw,node-name=r0,file=f0
  --nbd-server addr.type=unix,addr.path=SOCK
  --export type=nbd,id=e0,node-name=r0,name=d,writable=on[,iothread=io0]
  [--object iothread,id=io0]
nbdkit runs as `nbdkit -f -U SOCK file IMG`.  qemu-storage-daemon 7.2
aborts when a client of an export in an iothread disconnects, so
--iothread=vstord compares vstord in an iothread with qemu-storage-daemon
in its main loop.

  bench/nbd_bench.py [--vstord PATH] [--runtime 5] [--reps 3] [--size 1G]
                     [--only vstord,qsd,nbdkit] [--iothread[=vstord]] [--aio io_uring]
                     [--vstord-arg=ARG ...] [--json FILE]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import add_daemon_options, running_daemon, status_kib

SERVERS = ("vstord", "qsd", "nbdkit")

# name, label, fio rw, block size, iodepth, unit
FIO_JOBS = (
    ("randread_4k_qd32", "4k random read, qd32", "randread", "4k", 32, "IOPS"),
    ("randwrite_4k_qd32", "4k random write, qd32", "randwrite", "4k", 32, "IOPS"),
    ("seqread_1M_qd8", "1M sequential read, qd8", "read", "1M", 8, "MiB/s"),
)
METRICS = [(name, label, unit) for name, label, _, _, _, unit in FIO_JOBS] + [
    ("nbdcopy_null", "nbdcopy image to null:", "MiB/s")]

# Fields of fio's terse output, version 3 (1-based, as awk counts them).
TERSE_READ_BW_KIB, TERSE_READ_IOPS, TERSE_WRITE_IOPS = 7, 8, 49


class Skip(Exception):
    """The server cannot be measured; the message says why."""


def parse_size(text):
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    size = int(m.group(1)) << (10 * " kmgt".index((m.group(2) or " ").lower()))
    if size <= 0 or size % (1 << 20):
        raise argparse.ArgumentTypeError("the size must be a positive multiple of 1 MiB")
    return size


def parse_only(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in SERVERS:
            raise argparse.ArgumentTypeError(f"unknown server {n!r}; choose from {', '.join(SERVERS)}")
    return names


def make_image(directory, size):
    """A file of random bytes, so that no server or client can skip zeroes
    or holes."""
    fd, path = tempfile.mkstemp(prefix="nbd-bench-", suffix=".img", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            chunk = 1 << 20
            for _ in range(size // chunk):
                f.write(os.urandom(chunk))
    except BaseException:
        os.unlink(path)
        raise
    return path


def qemu_style_args(image, aio, iothread, extra):
    def args(tmp):
        file_opts = f"driver=file,node-name=f0,filename={image}"
        if aio:
            file_opts += f",aio={aio}"
        export = "type=nbd,id=e0,node-name=r0,name=d,writable=on"
        out = []
        if iothread:
            out += ["--object", "iothread,id=io0"]
            export += ",iothread=io0"
        out += ["--blockdev", file_opts,
                "--blockdev", "driver=raw,node-name=r0,file=f0",
                "--nbd-server", f"addr.type=unix,addr.path={tmp}/nbd.sock",
                "--export", export]
        return out + [a.replace("{dir}", tmp) for a in extra]
    return args


def nbdkit_args(image, extra):
    def args(tmp):
        return (["-f", "-U", f"{tmp}/nbd.sock"] + [a.replace("{dir}", tmp) for a in extra]
                + ["file", image])
    return args


def run_tool(cmd, timeout):
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Skip(f"{os.path.basename(cmd[0])} did not finish within {timeout:.0f} s")
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip()[-400:]
        raise Skip(f"{os.path.basename(cmd[0])} failed with status {r.returncode}: {err}")
    return r.stdout.decode(errors="replace")


def fio_job(fio, uri, size, rw, bs, depth, runtime):
    out = run_tool([fio, "--name=j", "--ioengine=nbd", f"--uri={uri}", f"--rw={rw}",
                    f"--bs={bs}", f"--iodepth={depth}", f"--size={size}",
                    f"--runtime={runtime}", "--time_based",
                    "--output-format=terse", "--terse-version=3"], runtime + 60)
    for line in out.splitlines():
        f = line.split(";")
        if len(f) > 50 and f[0] == "3":
            if f[4] != "0":
                raise Skip(f"fio {rw} reported error {f[4]}")
            if rw == "randwrite":
                return float(f[TERSE_WRITE_IOPS - 1])
            if bs == "1M":
                return float(f[TERSE_READ_BW_KIB - 1]) / 1024
            return float(f[TERSE_READ_IOPS - 1])
    raise Skip(f"no terse result from fio {rw}")


def nbdcopy_mibps(nbdcopy, uri, size):
    t0 = time.perf_counter()
    run_tool([nbdcopy, uri, "null:"], 60 + size / (5 << 20))
    return size / (1 << 20) / (time.perf_counter() - t0)


def measure(binary, args_for_dir, export, tools, size, runtime):
    """One repetition on one server: start it, check the export, run every
    job, stop it."""
    with running_daemon(binary, args_for_dir) as (proc, tmp):
        try:
            return run_jobs(proc, tmp, export, tools, size, runtime)
        except Skip as e:
            if proc.poll() is not None:
                with open(f"{tmp}/stderr", errors="replace") as f:
                    tail = f.read().strip()[-300:]
                raise Skip(f"daemon exited with status {proc.returncode} ({e})"
                           + (f": {tail}" if tail else ""))
            raise


def run_jobs(proc, tmp, export, tools, size, runtime):
    """Waits for the socket, checks the export's size, runs the jobs."""
    sock = f"{tmp}/nbd.sock"
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise Skip("no NBD socket within 10 s")
        time.sleep(0.01)
    uri = f"nbd+unix:///{export}?socket={sock}"
    got = run_tool([tools["nbdinfo"], "--size", uri], 20).strip()
    if got != str(size):
        raise Skip(f"export size is {got!r}, expected {size}")
    result = {}
    for key, _, rw, bs, depth, _ in FIO_JOBS:
        result[key] = fio_job(tools["fio"], uri, size, rw, bs, depth, runtime)
        if proc.poll() is not None:
            raise Skip(f"while running {key}")
    result["nbdcopy_null"] = nbdcopy_mibps(tools["nbdcopy"], uri, size)
    if proc.poll() is not None:
        raise Skip("while running nbdcopy")
    result["peak_rss_mib"] = status_kib(proc.pid, "VmHWM") / 1024
    return result


def fmt(v):
    return "-" if v is None else f"{v:,.0f}"


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_daemon_options(ap)
    ap.add_argument("--nbdkit", default=shutil.which("nbdkit"))
    ap.add_argument("--runtime", type=int, default=5, help="seconds per fio job (default 5)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; medians are quoted (default 3)")
    ap.add_argument("--size", type=parse_size, default=parse_size("1G"),
                    help="image size, a multiple of 1 MiB: 64M, 256MiB, 1G (default 1G)")
    ap.add_argument("--dir", default="/dev/shm", help="where the image goes; tmpfs (default /dev/shm)")
    ap.add_argument("--only", type=parse_only, default=list(SERVERS), metavar="SERVER[,SERVER]",
                    help="servers to run, among vstord, qsd, nbdkit (default all)")
    ap.add_argument("--aio", choices=("threads", "io_uring"),
                    help="aio= of the file node, for vstord and qemu-storage-daemon")
    ap.add_argument("--iothread", nargs="?", const="vstord,qsd", default="", metavar="SERVER[,SERVER]",
                    help="run the export in an iothread (--object iothread,id=io0 and iothread=io0),\n"
                         "for vstord and qsd, or only those named")
    for s in SERVERS:
        ap.add_argument(f"--{s}-arg", action="append", default=[], metavar="ARG",
                        help=f"an extra argument for {s}; repeat for more; write --{s}-arg=--opt\n"
                             "for options; {dir} stands for the server's temporary directory")
    ap.add_argument("--json", metavar="FILE", help="also write every figure and the medians here")
    args = ap.parse_args()
    if args.reps < 1 or args.runtime < 1:
        ap.error("--reps and --runtime must be at least 1")
    iothread = [n.strip() for n in args.iothread.split(",") if n.strip()]
    if any(n not in ("vstord", "qsd") for n in iothread):
        ap.error("--iothread takes vstord and/or qsd")

    tools = {t: shutil.which(t) for t in ("fio", "nbdcopy", "nbdinfo")}
    missing = [t for t, p in tools.items() if not p]
    if missing:
        sys.exit(f"nbd_bench: not found: {', '.join(missing)}")

    binaries = {"vstord": args.vstord, "qsd": args.qsd, "nbdkit": args.nbdkit}
    servers = []
    for name in SERVERS:
        if name not in args.only:
            continue
        b = binaries[name]
        if not b or not os.access(b, os.X_OK):
            print(f"# skipping {name}: no executable {b or '(not found)'}", file=sys.stderr)
            continue
        servers.append(name)
    if not servers:
        sys.exit("nbd_bench: no server to run")

    image = make_image(args.dir, args.size)
    try:
        plans = {
            "vstord": (qemu_style_args(image, args.aio, "vstord" in iothread, args.vstord_arg), "d"),
            "qsd": (qemu_style_args(image, args.aio, "qsd" in iothread, args.qsd_arg), "d"),
            "nbdkit": (nbdkit_args(image, args.nbdkit_arg), ""),
        }
        runs = {n: [] for n in servers}
        skipped = {}
        for rep in range(args.reps):
            for name in servers:
                if name in skipped:
                    continue
                print(f"# rep {rep + 1}/{args.reps}: {name}", file=sys.stderr)
                args_for_dir, export = plans[name]
                try:
                    runs[name].append(measure(binaries[name], args_for_dir, export,
                                              tools, args.size, args.runtime))
                except (Skip, RuntimeError, OSError) as e:
                    skipped[name] = str(e)
                    print(f"# skipping {name}: {e}", file=sys.stderr)
    finally:
        os.unlink(image)

    med = {n: {k: statistics.median(r[k] for r in runs[n]) for k in runs[n][0]}
           for n in servers if n not in skipped and runs[n]}
    cols = list(SERVERS)
    get = lambda n, k: med[n][k] if n in med else None  # noqa: E731
    print(f"# NBD over a unix socket, {args.size >> 20} MiB image in {args.dir}, "
          f"fio {args.runtime} s per job, median of {args.reps} repetition(s)"
          + (f", aio={args.aio}" if args.aio else "") + (f", iothread for {'+'.join(iothread)}" if iothread else ""))
    head = f"{'metric':34s}" + "".join(f"{c:>12s}" for c in cols) + f"{'vstord/qsd':>12s}{'vstord/nbdkit':>15s}"
    print(head)
    for key, label, unit in METRICS:
        v = {c: get(c, key) for c in cols}
        print(f"{label + ' (' + unit + ')':34s}" + "".join(f"{fmt(v[c]):>12s}" for c in cols)
              + f"{ratio(v['vstord'], v['qsd']):>12s}{ratio(v['vstord'], v['nbdkit']):>15s}")
    for name, why in skipped.items():
        print(f"# {name} skipped: {why}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": args.size, "runtime": args.runtime, "reps": args.reps,
                       "aio": args.aio, "iothread": iothread,
                       "runs": {n: runs[n] for n in servers}, "median": med,
                       "skipped": skipped}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
