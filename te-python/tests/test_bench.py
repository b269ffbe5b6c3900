"""python -m te.bench runs (figures are not checked: no speed in tests)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_runs_and_prints_te_bench_rows():
    out = subprocess.run(
        [sys.executable, "-m", "te.bench", "--duration", "0.1", "--buffer", "8M", "--block-size", "4K,64K",
         "--op", "read,write", "--sync-overhead", "--json"],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    doc = json.loads(out)
    assert [(r["op"], r["block_bytes"], r["batch"]) for r in doc["results"]] == [
        ("read", 4096, 128), ("read", 65536, 128), ("write", 4096, 128), ("write", 65536, 128)]
    assert all(r["bytes"] > 0 for r in doc["results"])
    assert doc["sync_read_4k"]["calls"] > 0
    for r in doc["results"]:
        # The mean per operation only: no percentiles that are averages.
        assert r["op_latency_us"] == {"avg": r["batch_latency_us"]["avg"] / r["batch"], "amortized_over_batch": True}
        assert r["batch_latency_us"]["p50"] <= r["batch_latency_us"]["p99"] <= r["batch_latency_us"]["p999"]
    table = subprocess.run(
        [sys.executable, "-m", "te.bench", "--duration", "0.1", "--buffer", "8M", "--block-size", "4K",
         "--op", "read", "--path", "tcp", "--threads", "2"],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout.splitlines()
    assert table[1].startswith("op     block  batch thr regime")
    assert table[2].split()[:4] == ["read", "4K", "128", "2"]
    assert table[1].endswith("batch avg us  batch p50 us  batch p99 us  batch p99.9 us  op avg us")
    assert table[3].startswith("(latency: per batch")
