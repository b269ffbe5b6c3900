"""``python -m te.bench``: te's loopback benchmark, through Python.

Starts a target engine in a child Python process on loopback (or uses
``--target``), then measures batches of reads and writes from this process
through the native API -- the same measurement as ``te bench`` (Rust), with
its table and JSON, so that the two can be compared side by side. With
``--sync-overhead`` it also measures the per-call cost of one synchronous
4 KiB read (``Engine.transfer_sync_read``).

Example::

    python -m te.bench --path shm --block-size 4K,64K,1M --batch 128
    python -m te.bench --path tcp --threads 4
    python -m te.bench --sync-overhead
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import te

HEADER = ("op     block  batch thr regime      GB/s       ops/s  time s  "
          "batch avg us  batch p50 us  batch p99 us  batch p99.9 us  op avg us")
LATENCY_NOTE = ("latency: per batch, from submission until its last operation completed (nearest-rank "
                "percentiles); op avg = batch avg / operations per batch (amortized)")


def parse_size(s: str) -> int:
    """``4K``, ``64K``, ``1M``, ``512M``, ``1G`` or a number of bytes."""
    s = s.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    n = int(s[:-1] if mult > 1 else s)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"size {s!r} must be positive")
    return n * mult


def show(v: int) -> str:
    """Bytes as ``te bench`` shows them (``4K``, ``1M``)."""
    for unit, m in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if v >= m and v % m == 0:
            return f"{v // m}{unit}"
    return str(v)


@dataclass
class Row:
    """What one configuration measured."""

    op: str
    block: int
    batch: int
    threads: int
    regime: str
    bytes: int = 0
    ops: int = 0
    seconds: float = 0.0
    batch_us: list[float] = field(default_factory=list)

    def gbps(self) -> float:
        """Gigabytes (1e9) per second."""
        return self.bytes / self.seconds / 1e9 if self.seconds else 0.0

    def ops_per_s(self) -> float:
        """Transfers per second."""
        return self.ops / self.seconds if self.seconds else 0.0

    def batch_pct(self, q: float) -> float:
        """The q-quantile of the batch latencies, in µs."""
        if not self.batch_us:
            return 0.0
        i = round((len(self.batch_us) - 1) * q)
        return self.batch_us[min(i, len(self.batch_us) - 1)]

    def batch_avg(self) -> float:
        """The mean batch latency, in µs (0 when none)."""
        return sum(self.batch_us) / len(self.batch_us) if self.batch_us else 0.0

    def op_avg(self) -> float:
        """Latency per transfer, the batch's mean amortized over its transfers."""
        return self.batch_avg() / self.batch

    def line(self) -> str:
        """The row as ``te bench`` prints it."""
        return (
            f"{self.op:<5} {show(self.block):>6} {self.batch:>6} {self.threads:>3} {self.regime:<6} "
            f"{self.gbps():>9.3f} {self.ops_per_s():>11.0f} {self.seconds:>7.2f} {self.batch_avg():>13.1f} "
            f"{self.batch_pct(0.5):>13.1f} {self.batch_pct(0.99):>13.1f} {self.batch_pct(0.999):>15.1f} "
            f"{self.op_avg():>10.2f}"
        )

    def json(self) -> dict:
        """The row as ``te bench --json`` prints it."""
        return {
            "op": self.op, "block_bytes": self.block, "batch": self.batch, "threads": self.threads,
            "regime": self.regime, "bytes": self.bytes, "ops": self.ops, "seconds": self.seconds,
            "gb_per_s": self.gbps(), "ops_per_s": self.ops_per_s(),
            "batch_latency_us": {"avg": self.batch_avg(), "p50": self.batch_pct(0.5), "p99": self.batch_pct(0.99),
                                 "p999": self.batch_pct(0.999), "samples": len(self.batch_us)},
            "op_latency_us": {"avg": self.op_avg(), "amortized_over_batch": True},
        }


TARGET = """
import sys, te
e = te.Engine(path=sys.argv[1], busy_poll=sys.argv[3] == "1")
m = e.alloc(int(sys.argv[2]))
print(e.segment_name, m.addr, flush=True)
sys.stdin.read()
e.finalize()
"""


def start_target(buffer: int, path: str, busy_poll: bool) -> tuple[subprocess.Popen, str, int]:
    """A target engine with ``buffer`` bytes in a child process."""
    p = subprocess.Popen(
        [sys.executable, "-c", TARGET, "tcp" if path == "tcp" else "auto", str(buffer), "1" if busy_poll else "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert p.stdout
    line = p.stdout.readline().split()
    if len(line) != 2:
        p.kill()
        raise te.RuntimeError(f"the benchmark target did not start (exit {p.wait()})")
    return p, line[0], int(line[1])


def measure(e: te.Engine, seg: int, path: str | None, op: str, local: int, remote: int, share: int,
            block: int, batch: int, threads: int, duration: float, hot: bool) -> Row:
    """Batches of ``batch`` blocks from ``threads`` threads for ``duration`` seconds."""
    slots = 1 if hot else max(share // block, 1)
    results: list[tuple[int, int, list[float]]] = [(0, 0, [])] * threads
    start = time.perf_counter()

    def worker(t: int) -> None:
        base = t * share
        # The request lists of every position of the cursor, built once.
        lists: dict[int, list[tuple]] = {}
        cursor, moved, ops, lat = 0, 0, 0, []
        o = op
        rnd = 0
        while time.perf_counter() - start < duration:
            if op == "mix":
                o = "read" if rnd % 2 == 0 else "write"
            rnd += 1
            key = cursor if op != "mix" else (cursor, o)
            reqs = lists.get(key)
            if reqs is None:
                reqs = [(o, local + base + ((cursor + i) % slots) * block, seg,
                         remote + base + ((cursor + i) % slots) * block, block) for i in range(batch)]
                lists[key] = reqs
            cursor = (cursor + batch) % slots
            t0 = time.perf_counter()
            b = e.allocate_batch(batch)
            e.submit(b, reqs, path=path)
            st = e.wait_batch(b, 120)
            e.free_batch(b)
            lat.append((time.perf_counter() - t0) * 1e6)
            if not st.ok:
                raise te.RuntimeError(f"batch ended {st.state}: {st.completed} of {st.total} tasks completed")
            moved += block * batch
            ops += batch
        results[t] = (moved, ops, lat)

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    seconds = time.perf_counter() - start
    row = Row(op, block, batch, threads, "hot" if hot else "cold", seconds=seconds)
    for moved, ops, lat in results:
        row.bytes += moved
        row.ops += ops
        row.batch_us += lat
    row.batch_us.sort()
    return row


def sync_overhead(e: te.Engine, target: str, local: int, remote: int, duration: float) -> dict:
    """Per-call cost of one synchronous 4 KiB read (the same 4 KiB each time)."""
    lat = []
    start = time.perf_counter()
    while time.perf_counter() - start < duration:
        t0 = time.perf_counter()
        e.transfer_sync_read(target, local, remote, 4096)
        lat.append((time.perf_counter() - t0) * 1e6)
    lat.sort()
    pick = lambda q: lat[min(round((len(lat) - 1) * q), len(lat) - 1)]  # noqa: E731
    return {"calls": len(lat), "mean_us": sum(lat) / len(lat), "p50_us": pick(0.5), "p99_us": pick(0.99)}


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark with command-line arguments ``argv``."""
    ap = argparse.ArgumentParser(prog="python -m te.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", help="target segment host:port (default: a child process on loopback)")
    ap.add_argument("--op", default="read,write", help="read, write, mix (comma-separated)")
    ap.add_argument("--block-size", default="4K,64K,1M", help="block sizes (comma-separated)")
    ap.add_argument("--batch", type=int, default=128, help="blocks per batch")
    ap.add_argument("--threads", type=int, default=1, help="threads submitting at once")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per configuration")
    ap.add_argument("--buffer", type=parse_size, default=parse_size("512M"), help="buffer cycled through on each side")
    ap.add_argument("--hot", action="store_true", help="reuse one block per thread")
    ap.add_argument("--path", default="auto", choices=["auto", "tcp", "shm"], help="path to the target")
    ap.add_argument("--busy-poll", action="store_true", help="busy-poll event loops")
    ap.add_argument("--sync-overhead", action="store_true", help="also measure one synchronous 4 KiB read per call")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = ap.parse_args(argv)
    child = None
    if a.target:
        target, remote = a.target, None
    else:
        child, target, remote = start_target(a.buffer, a.path, a.busy_poll)
    try:
        e = te.Engine(path="tcp" if a.path == "tcp" else "auto", busy_poll=a.busy_poll)
        seg = e.open_segment(target)
        path = e.segment_path(seg) if a.path == "auto" else a.path
        if remote is None:
            regions = [r for r in e.segment_info(seg) if r.perm == "remote_read_write" and r.location == "cpu"]
            if not regions:
                raise te.RuntimeError(f"segment {target} has no read-write host region")
            best = max(regions, key=lambda r: r.length)
            remote, buffer = best.addr, min(a.buffer, best.length)
        else:
            buffer = a.buffer
        share = buffer // a.threads
        local = e.alloc(buffer, perm="local_only")
        if not a.json:
            print(f"te.bench (Python): target {target}, path {path}, {show(buffer)} buffer "
                  f"({'hot: one block reused' if a.hot else 'cold: cycling'}), {a.threads} thread(s), "
                  f"{a.duration:g} s per configuration{', busy-polling' if a.busy_poll else ''}")
            print(HEADER)
        rows = []
        for op in a.op.split(","):
            for block in (parse_size(s) for s in a.block_size.split(",")):
                if block > share:
                    print(f"te.bench: skipping {show(block)} blocks: larger than each thread's share", file=sys.stderr)
                    continue
                batch = min(a.batch, max(share // block, 1))
                row = measure(e, seg, None if a.path == "auto" else a.path, op, local.addr, remote, share,
                              block, batch, a.threads, a.duration, a.hot)
                rows.append(row)
                if not a.json:
                    print(row.line(), flush=True)
        if rows and not a.json:
            print(f"({LATENCY_NOTE})")
        overhead = None
        if a.sync_overhead:
            overhead = sync_overhead(e, target, local.addr, remote, a.duration)
            if not a.json:
                print(f"sync read 4K, one call at a time: {overhead['calls']} calls, mean {overhead['mean_us']:.1f} us, "
                      f"p50 {overhead['p50_us']:.1f} us, p99 {overhead['p99_us']:.1f} us")
        if a.json:
            print(json.dumps({"target": target, "path": path, "results": [r.json() for r in rows],
                              "sync_read_4k": overhead}))
        local.free()
        e.finalize()
    finally:
        if child is not None:
            assert child.stdin
            child.stdin.close()
            child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
