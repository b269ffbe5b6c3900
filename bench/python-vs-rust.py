#!/usr/bin/env python3
"""Runs `te bench` and `python -m te.bench` alternately and prints both, side by side.

    python3 bench/python-vs-rust.py [--reps 3] [--duration 2] [--threads 1,4]
                                    [--path shm,tcp] [--block-size 4K,64K,1M]
                                    [--te target/release/te]

Needs `cargo build --release -p te-cli` and the te package installed
(`pip install ./te-python` or `te-python/run-tests`). For each path, thread
count and repetition it runs the Rust tool, then the same configurations
through Python (batches of 128, cold: both cycle a 512 MiB buffer), so the two
see the same machine state. It prints one Markdown table of medians over the
repetitions with the range of each, the Python / Rust ratio of the medians, and,
with more than one thread count, how the aggregate scales against one thread.
Finally it measures the per-call cost of one synchronous 4 KiB read on each path,
with the event loops sleeping and busy-polling (which takes the wake-up out).
"""

import argparse
import json
import statistics
import subprocess
import sys


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def bench_args(path, sizes, threads, duration):
    return [
        "--path", path, "--block-size", sizes, "--batch", "128", "--op", "read,write",
        "--threads", str(threads), "--duration", str(duration), "--json",
    ]


def collect(results, into):
    for row in results["results"]:
        into.setdefault((row["op"], row["block_bytes"]), []).append(row["gb_per_s"])


def fmt_size(n):
    for unit, div in (("M", 1 << 20), ("K", 1 << 10)):
        if n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def spread(values):
    med = statistics.median(values)
    return med, f"{med:.2f} ({min(values):.2f}-{max(values):.2f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="0: only the per-call table")
    ap.add_argument("--duration", default="2")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--path", default="shm,tcp")
    ap.add_argument("--block-size", default="4K,64K,1M")
    ap.add_argument("--te", default="target/release/te")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    rust, py = {}, {}
    for path in args.path.split(","):
        for t in threads:
            for rep in range(args.reps):
                print(f"# {path}, {t} thread(s), repetition {rep + 1}", file=sys.stderr)
                a = bench_args(path, args.block_size, t, args.duration)
                collect(run_json([args.te, "bench", *a]), rust.setdefault((path, t), {}))
                collect(run_json([sys.executable, "-m", "te.bench", *a]), py.setdefault((path, t), {}))
    if args.reps > 0:
        throughput_table(args, threads, rust, py)
    per_call_table(args)


def throughput_table(args, threads, rust, py):
    print(f"GB/s, median (min-max) of {args.reps} runs, batches of 128, cold\n")
    head = "| path | threads | op | block | Rust | Python | Python / Rust |"
    if len(threads) > 1:
        head += f" Rust, Python vs {threads[0]} thread(s) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for (path, t), cells in rust.items():
        for (op, block), r in cells.items():
            p = py[(path, t)][(op, block)]
            rm, rs = spread(r)
            pm, ps = spread(p)
            line = f"| {path} | {t} | {op} | {fmt_size(block)} | {rs} | {ps} | {pm / rm:.2f} |"
            if len(threads) > 1:
                r1 = statistics.median(rust[(path, threads[0])][(op, block)])
                p1 = statistics.median(py[(path, threads[0])][(op, block)])
                line += f" {rm / r1:.2f}, {pm / p1:.2f} |"
            print(line)


def per_call_table(args):
    print("\nOne synchronous 4 KiB read per call (p50 µs, calls/s), sleeping and busy-polling\n")
    print("| path | mode | Rust allocate-submit-wait-free | Python same | Python `transfer_sync_read` |")
    print("|---|---|---|---|---|")
    for path in args.path.split(","):
        for mode, extra in (("sleeping", []), ("busy-poll", ["--busy-poll"])):
            one = ["--path", path, "--block-size", "4K", "--batch", "1", "--hot", "--op", "read",
                   "--duration", args.duration, "--json", *extra]
            r = run_json([args.te, "bench", *one])["results"][0]
            p = run_json([sys.executable, "-m", "te.bench", *one, "--sync-overhead"])
            pr, s = p["results"][0], p["sync_read_4k"]
            print(f"| {path} | {mode} | {r['batch_latency_us']['p50']:.1f}, {r['ops_per_s']:.0f} "
                  f"| {pr['batch_latency_us']['p50']:.1f}, {pr['ops_per_s']:.0f} "
                  f"| {s['p50_us']:.1f}, {s['calls'] / float(args.duration):.0f} |")

if __name__ == "__main__":
    main()
