#!/usr/bin/env bash
# bench/scale.sh - what te's speed and memory do as a target holds more regions and connections,
# and as transfers grow (issue 15, target 5). Loopback TCP, target in a child process of te bench.
#
#   regions       4 KiB reads, batch 1 (round trip p50) and batch 128 (GB/s), hot, while the target
#                 holds 1, 100, 10,000 and 100,000 registered regions (te bench --target-regions N),
#                 event loops sleeping and busy-polling (--busy-poll)
#   connections   the same while 0, 10, 100 and 1,000 idle peer engines hold a connection to the
#                 target (te bench --idle-peers N), with the target's resident memory per connection
#   memory        one read and one write of 4 KiB, 1 MiB, 64 MiB and 1 GiB blocks (batch 1, 1 GiB
#                 buffer): the peak resident memory of both processes
#
# Each row runs --reps times (medians); the tables go to stdout and into docs/PERFORMANCE.md between
# <!-- scale:begin --> and <!-- scale:end -->.
#
# Usage: bash bench/scale.sh [--reps N] [--duration S] [--no-build] [--no-doc]
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=3
DURATION=2
BUILD=1
WRITE_DOC=1
CMDLINE="bash bench/scale.sh${*:+ $*}"
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-doc) WRITE_DOC=0; shift ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "scale.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || { echo "scale.sh: --reps must be a positive integer, got '$REPS'" >&2; exit 2; }
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || { echo "scale.sh: --duration must be a positive integer, got '$DURATION'" >&2; exit 2; }

TE=$ROOT/target/release/te
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -q -p te-cli) || { echo "scale.sh: build failed" >&2; exit 1; }
fi
[ -x "$TE" ] || { echo "scale.sh: no binary at $TE" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RESULTS=$WORK/results.jsonl
log() { printf '[scale %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

run() { # kind value mode(sleep|busy) rep te-bench-args...: one te bench --json run, appended to RESULTS
    local kind=$1 value=$2 mode=$3 rep=$4 busy=()
    shift 4
    [ "$mode" = busy ] && busy=(--busy-poll)
    log "$kind=$value $mode (rep $rep): te bench ${busy[*]} $*"
    if ! "$TE" bench --json --path tcp "${busy[@]}" "$@" > "$WORK/out" 2> "$WORK/err"; then
        tail -c 300 "$WORK/err" | python3 -c '
import json, sys
print(json.dumps({"kind": sys.argv[1], "value": int(sys.argv[2]), "mode": sys.argv[3], "rep": int(sys.argv[4]),
                  "error": sys.stdin.read()}))
' "$kind" "$value" "$mode" "$rep" >> "$RESULTS"
        return
    fi
    python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(json.dumps({"kind": sys.argv[2], "value": int(sys.argv[3]), "mode": sys.argv[4], "rep": int(sys.argv[5]),
                  "results": d["results"], "memory": d["settings"].get("memory")}))
' "$WORK/out" "$kind" "$value" "$mode" "$rep" >> "$RESULTS"
}

START_DATE=$(date -u +'%Y-%m-%d %H:%M UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
SMALL=(--op read --block-size 4K --batch "1,128" --hot --duration "$DURATION" --buffer 64M)
for ((rep = 1; rep <= REPS; rep++)); do
    for mode in sleep busy; do
        for n in 1 100 10000 100000; do run regions "$n" "$mode" "$rep" "${SMALL[@]}" --target-regions "$n"; done
        for n in 0 10 100 1000; do run connections "$n" "$mode" "$rep" "${SMALL[@]}" --idle-peers "$n"; done
    done
    for b in 4096 1048576 67108864 1073741824; do
        run memory "$b" sleep "$rep" --op read,write --block-size "$b" --batch 1 --buffer 1G --duration "$DURATION"
    done
done

export RESULTS CMDLINE START_DATE LOAD_START REPS DURATION
TE_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
MODEL=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
NCPU=$(nproc)
KERNEL=$(uname -r)
export TE_REV MODEL NCPU KERNEL
python3 - "$WORK/section.md" <<'EOF'
import json, os, statistics, sys
from collections import defaultdict

E = os.environ
runs = [json.loads(l) for l in open(E["RESULTS"]) if l.strip()]
errors = [r for r in runs if "error" in r]
by = defaultdict(list)
for r in runs:
    if "error" not in r:
        by[(r["kind"], r["value"], r["mode"])].append(r)

def med(v): return statistics.median(v) if v else None
def cell(v, fmt="{:.1f}"):
    if not v: return "—"
    m = med(v)
    return (fmt.format(m) + f" ({fmt.format(min(v))}–{fmt.format(max(v))})") if len(v) > 1 else fmt.format(m)
def row(rs, batch, op="read"):
    return [x for r in rs for x in r["results"] if x["batch"] == batch and x["op"] == op]
def mib(b): return b / 1048576
def size(b):
    for unit, n in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if b >= n and b % n == 0: return f"{b // n}{unit}"
    return str(b)

out = []
p = out.append
p(f"Measured {E['START_DATE']} with `{E['CMDLINE']}` ({E['REPS']} repetitions, {E['DURATION']} s per "
  f"configuration; load average at start {E['LOAD_START']}). Machine: {E['MODEL']}, "
  f"{E['NCPU']} cores, Linux {E['KERNEL']}; te at {E['TE_REV']}. Loopback TCP, target in a child process. "
  "Medians of the repetitions (min–max).")
p("")
checks = []
MODES = (("sleep", "sleeping"), ("busy", "busy-polling"))
def lat(rs): return [x["batch_latency_us"]["p50"] for x in row(rs, 1)]
def gbs(rs): return [x["gb_per_s"] for x in row(rs, 128)]
def flat(kind, values, label):
    for mode, name in MODES:
        base = by.get((kind, values[0], mode), [])
        b1, b128 = med(lat(base)), med(gbs(base))
        for v in values[1:]:
            rs = by.get((kind, v, mode), [])
            l, g = med(lat(rs)), med(gbs(rs))
            if l and b1:
                checks.append((f"{label} {v:,}, {name}: 4K round trip p50 {l:.1f} µs against {b1:.1f} µs at {values[0]:,}", l / b1, 1.2, "≤"))
            if g and b128:
                checks.append((f"{label} {v:,}, {name}: 4K batch 128 {g:.2f} GB/s against {b128:.2f} GB/s at {values[0]:,}", g / b128, 1 / 1.2, "≥"))
def head(first, extra=""):
    p(f"| {first} | round trip p50 µs, sleeping | busy-polling | batch 128 GB/s, sleeping | busy-polling |{extra}")
    p("|---|---|---|---|---|" + ("---|" if extra else ""))
def cells(kind, n):
    s, b = by.get((kind, n, "sleep"), []), by.get((kind, n, "busy"), [])
    return f"{cell(lat(s))} | {cell(lat(b))} | {cell(gbs(s), '{:.2f}')} | {cell(gbs(b), '{:.2f}')}"

p("4 KiB reads, hot, by the regions the target holds and by the idle peer connections it holds:")
p("")
head("regions at the target")
for n in (1, 100, 10000, 100000):
    p(f"| {n:,} | {cells('regions', n)} |")
flat("regions", [1, 100, 10000, 100000], "regions")
p("")
head("idle peer connections", " target memory per idle connection |")
for n in (0, 10, 100, 1000):
    rs = by.get(("connections", n, "sleep"), []) + by.get(("connections", n, "busy"), [])
    per = [r["memory"]["idle_peers"]["target_bytes_per_connection"] / 1024 for r in rs
           if r.get("memory") and r["memory"].get("idle_peers") and r["memory"]["idle_peers"].get("target_bytes_per_connection") is not None]
    p(f"| {n:,} | {cells('connections', n)} | {cell(per, '{:.0f}') + ' KiB' if per else '—'} |")
flat("connections", [0, 10, 100, 1000], "idle connections")
p("")
p("| block (batch 1, 1 GiB buffer) | initiator peak resident, MiB | target peak resident, MiB |")
p("|---|---|---|")
peaks = []
for b in (4096, 1048576, 67108864, 1073741824):
    rs = by.get(("memory", b, "sleep"), [])
    ini = [mib(r["memory"]["initiator"]["peak_bytes"]) for r in rs if r.get("memory") and r["memory"].get("initiator")]
    tgt = [mib(r["memory"]["target"]["peak_bytes"]) for r in rs if r.get("memory") and r["memory"].get("target")]
    peaks.append((b, med(ini), med(tgt)))
    p(f"| {size(b)} | {cell(ini, '{:.0f}')} | {cell(tgt, '{:.0f}')} |")
small = [x for x in peaks if x[1] and x[2]]
if len(small) >= 2:
    (b0, i0, t0), (b1, i1, t1) = small[0], small[-1]
    checks.append((f"memory: initiator peak {i1:.0f} MiB at {size(b1)} against {i0:.0f} MiB at {size(b0)}", i1 / i0, 1.2, "≤"))
    checks.append((f"memory: target peak {t1:.0f} MiB at {size(b1)} against {t0:.0f} MiB at {size(b0)}", t1 / t0, 1.2, "≤"))
p("")
p("Targets of issue 15, scale (flat = within 20 % of the first row):")
p("")
for name, r, want, sense in checks:
    ok = r <= want if sense == "≤" else r >= want
    p(f"- {name}: {r:.2f}× ({'met' if ok else 'missed'})")
if errors:
    p("")
    p("Failures in this run:")
    p("")
    for r in errors:
        p(f"- {r['kind']}={r['value']} {r['mode']} (rep {r['rep']}): `{' '.join(r['error'].replace('`', chr(39)).split())[:300]}`")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
EOF

cat "$WORK/section.md"
if [ "$WRITE_DOC" = 1 ]; then
    python3 "$ROOT/bench/write_section.py" "$ROOT/docs/PERFORMANCE.md" "$WORK/section.md" scale \
        "Scale: regions, connections, transfer size"
    log "wrote the tables into docs/PERFORMANCE.md"
fi
