#!/usr/bin/env bash
# bench/compare.sh - te side by side with Mooncake TE, UCX, libfabric and iperf3 on loopback TCP.
#
# One run measures, alternating the contenders inside every repetition:
#   te          target/release/te bench --json --path tcp (target in a child process), read and write,
#               4K/64K/1M/16M, batch 128, threads 1 and 2, cold (cycling 512 MiB) and --hot, and
#               --hot --busy-poll with 1 thread (UCX and libfabric spin in their progress loops);
#               plus a 4 KiB read with batch 1 (round-trip latency), sleeping and --busy-poll, and
#               te tcp-pingpong (raw-TCP 4 KiB ping-pong, blocking and busy-polling) as its floor
#   Mooncake    transfer_engine_bench from the PyPI wheel mooncake-transfer-engine-non-cuda,
#               --protocol=tcp, --metadata_server=P2PHANDSHAKE (no etcd), same blocks/batch/threads
#   UCX         ucx_perftest -t tag_bw, UCX_TLS=tcp UCX_NET_DEVICES=lo, same blocks, 1 thread
#   libfabric   fi_pingpong -p tcp -e msg, FI_TCP_IFACE=lo: 4K (latency), 64K, 1M, 16M
#   iperf3      -l 4K/64K/1M (iperf3 caps -l at 1 MiB), and -l 1M -P 2
#   same host   te bench --path shm (1 thread, cold and --hot) beside te memcpy (one thread copying
#               the same blocks, cold and hot) and UCX shared memory (ucx_perftest ucp_put_bw and
#               ucp_get, UCX_TLS=sm, hot)
#   peers       many peers over TCP and the same-host path, 64K and 1M reads, cold: 8 te bench
#               processes reading from one te serve at once (fan-in: the sum and each one's share),
#               one te bench reading from 8 te serve processes (fan-out: --target A,...,H), beside
#               one pair of the same shape
# All traffic goes to 127.0.0.1. Before each run the script waits until the machine is idle
# (< --idle-busy % busy over 1 s, at most --idle-cap s), records the CPU that other processes used
# during the run (machine busy time from /proc/stat minus the CPU of the processes this script
# started), repeats everything --reps times and reports medians with min-max spread.
# The table goes to stdout and into docs/PERFORMANCE.md between <!-- compare:begin --> and
# <!-- compare:end --> (a notes block <!-- compare:notes:begin -->...<!-- compare:notes:end -->
# inside it is kept from run to run).
#
# Usage: bash bench/compare.sh [--reps N] [--duration S] [--idle-cap S] [--idle-busy PCT]
#                              [--no-install] [--no-build] [--no-doc]
#                              [--only te,mooncake,ucx,libfabric,iperf3,shm,peers]
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=3
DURATION=2          # seconds per te configuration and per Mooncake run
IPERF_SECS=3
IDLE_CAP=10         # seconds at most waiting for an idle machine before a run
IDLE_BUSY=10        # percent busy (whole machine, over 1 s) that counts as idle
INSTALL=1
BUILD=1
WRITE_DOC=1
ONLY="te,mooncake,ucx,libfabric,iperf3,shm,peers"
VENV=${TE_COMPARE_VENV:-$HOME/.cache/te-compare/venv}
BLOCKS=(4096 65536 1048576 16777216)
THREADS=(1 2)
BATCH=128
BUFFER=$((512 << 20))   # te's default buffer; Mooncake gets the same size
CMDLINE="bash bench/compare.sh${*:+ $*}"

usage() { sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --idle-cap) IDLE_CAP=$2; shift 2 ;;
        --idle-busy) IDLE_BUSY=$2; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --no-doc) WRITE_DOC=0; shift ;;
        --only) ONLY=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
for v in REPS DURATION IDLE_CAP IDLE_BUSY; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
        echo "compare.sh: --$(echo "$v" | tr 'A-Z_' 'a-z-') must be a positive integer, got '${!v}'" >&2
        exit 2
    fi
done
wants() { [[ ",$ONLY," == *",$1,"* ]]; }

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

WORK=$(mktemp -d /tmp/te-compare.XXXXXX)
RESULTS=$WORK/results.tsv     # contender op block threads regime rep gbps other_cpu_pct idle_wait_s lat_us run
FAILURES=$WORK/failures.txt
: > "$RESULTS"
: > "$FAILURES"
KEEP=$ROOT/target/compare     # raw results of the last run are copied here
trap 'mkdir -p "$KEEP" && cp "$WORK"/*.tsv "$WORK"/*.txt "$WORK"/*.md "$KEEP"/ 2>/dev/null; rm -rf "$WORK"' EXIT

fail() { # contender, message
    log "FAILED $1: $2"
    printf '%s\t%s\n' "$1" "$2" >> "$FAILURES"
}

# ---------------------------------------------------------------- install (idempotent)
install_deps() {
    local pkgs=(ucx-utils libfabric-bin iperf3 libibverbs1 libnuma1 libcurl4 python3-venv shellcheck)
    local missing=() p
    for p in "${pkgs[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
            log "apt-get install failed for some of: ${missing[*]}"
    fi
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import mooncake' 2>/dev/null; then
        log "pip install mooncake-transfer-engine-non-cuda into $VENV"
        if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q mooncake-transfer-engine-non-cuda; }; then
            log "pip install mooncake-transfer-engine-non-cuda failed"
        fi
    fi
}

[ "$INSTALL" = 1 ] && install_deps

TARGET_DIR=${CARGO_TARGET_DIR:-target}     # where cargo builds, relative to the root unless absolute
[[ $TARGET_DIR = /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
TE=$TARGET_DIR/release/te
if [ "$BUILD" = 1 ] && wants te; then
    log "cargo build --release -p te-cli"
    if ! (cd "$ROOT" && cargo build --release -q -p te-cli); then
        log "cargo build failed; using the existing $TE if there is one"
        BUILD=failed
    fi
fi
TE_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(cd "$ROOT" && git status --porcelain -- te-proto/src te-runtime/src te-cli/src 2>/dev/null)" ]; then
    TE_REV="$TE_REV + uncommitted changes"
fi
[ "$BUILD" = 1 ] || TE_REV="an earlier build (not rebuilt from $TE_REV)"
MC_BENCH=""
if [ -x "$VENV/bin/python" ]; then
    MC_BENCH=$("$VENV/bin/python" - <<'EOF' 2>/dev/null
import os, mooncake
p = os.path.join(os.path.dirname(mooncake.__file__), "transfer_engine_bench")
print(p if os.access(p, os.X_OK) else "")
EOF
)
fi

# ---------------------------------------------------------------- CPU accounting
NCPU=$(nproc)
CLK_TCK=$(getconf CLK_TCK)

# "busy total" of the whole machine in ticks: busy = everything but idle and iowait (irq and
# softirq included: with tick-based accounting a task's system time includes the softirq time
# spent on its packets), total = everything.
stat_ticks() {
    local _cpu user nice system idle iowait irq softirq steal _rest
    read -r _cpu user nice system idle iowait irq softirq steal _rest < /proc/stat
    echo "$((user + nice + system + irq + softirq + steal)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}

# CPU (ticks) of all reaped descendants of this shell, from the `times` builtin (no subshell).
CHILD_TICKS=0
child_ticks() {
    times > "$WORK/times"
    CHILD_TICKS=$(awk -v hz="$CLK_TCK" 'NR == 2 {
        t = 0
        for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
        printf "%d", t * hz }' "$WORK/times")
}

# Wait until the last second had < IDLE_BUSY % busy, at most IDLE_CAP seconds. Sets IDLE_WAIT.
IDLE_WAIT=0
wait_idle() {
    local start now b0 t0 b1 t1 pct
    start=$(date +%s)
    while :; do
        read -r b0 t0 < <(stat_ticks)
        sleep 1
        read -r b1 t1 < <(stat_ticks)
        pct=$(( (b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1) ))
        now=$(date +%s)
        IDLE_WAIT=$((now - start))
        [ "$pct" -lt "$IDLE_BUSY" ] && return 0
        if [ "$IDLE_WAIT" -ge "$IDLE_CAP" ]; then
            log "machine still ${pct}% busy after ${IDLE_WAIT}s: running anyway"
            return 0
        fi
    done
}

# measured FUNC ARGS...: wait for idle, run FUNC in a subshell (stdout to $WORK/out, stderr to
# $WORK/err), set RC, OTHER_CPU (% of the machine used by processes this script did not start).
RC=0
OTHER_CPU=0
RUN=0
measured() {
    local b0 t0 b1 t1 c0
    RUN=$((RUN + 1))
    wait_idle
    child_ticks; c0=$CHILD_TICKS
    read -r b0 t0 < <(stat_ticks)
    ( "$@" ) > "$WORK/out" 2> "$WORK/err"
    RC=$?
    read -r b1 t1 < <(stat_ticks)
    child_ticks
    OTHER_CPU=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v own=$((CHILD_TICKS - c0)) \
        'BEGIN { o = (b - own) / (t > 0 ? t : 1) * 100; if (o < 0) o = 0; printf "%.1f", o }')
}

record() { # contender op block threads regime rep gbps [lat_us]
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" \
        "$OTHER_CPU" "$IDLE_WAIT" "${8:-}" "$RUN" >> "$RESULTS"
}

PORT=$((20000 + RANDOM % 20000))
next_port() { PORT=$((PORT + 1)); }

# ---------------------------------------------------------------- te
te_rows() { # contender fail-as rep op|"" te-args...: runs te, records every row of its --json output
    local who=$1 fail_as=$2 rep=$3 op=$4
    shift 4
    measured "$TE" "$@"
    if [ "$RC" != 0 ]; then fail "$fail_as" "te $* exited $RC: $(tail -c 300 "$WORK/err")"; return; fi
    python3 - "$WORK/out" "$op" <<'EOF' | while IFS=$'\t' read -r o blk thr reg gbps; do record "$who" "$o" "$blk" "$thr" "$reg" "$rep" "$gbps"; done
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    op = sys.argv[2] or r["op"]
    print(f'{op}\t{r["block_bytes"]}\t{r["threads"]}\t{r["regime"]}\t{r["gb_per_s"]:.4f}')
EOF
}
te_measure() { # threads regime(cold|hot) rep
    local hot=()
    [ "$2" = hot ] && hot=(--hot)
    log "te bench threads=$1 regime=$2 (rep $3)"
    te_rows te te "$3" "" bench --json --path tcp --threads "$1" "${hot[@]}" --duration "$DURATION" \
        --batch "$BATCH" --block-size 4K,64K,1M,16M --op read,write
}
te_busy_measure() { # rep: 1 thread, hot, busy-polling (as UCX and libfabric progress)
    log "te bench --busy-poll threads=1 regime=hot (rep $1)"
    te_rows te-busy te "$1" "" bench --json --path tcp --threads 1 --hot --busy-poll --duration "$DURATION" \
        --batch "$BATCH" --block-size 4K,64K,1M,16M --op read,write
}
te_latency_measure() { # rep
    # 4 KiB round trips, one in flight: te read with batch 1 sleeping in its event loop and
    # busy-polling, and the raw-TCP ping-pong floor (te tcp-pingpong) blocking and busy-polling.
    local name args lat
    for name in te-lat te-lat-busy tcp-pp tcp-pp-busy; do
        case "$name" in
            te-lat) args=(bench --path tcp --op read --block-size 4K --batch 1) ;;
            te-lat-busy) args=(bench --path tcp --op read --block-size 4K --batch 1 --busy-poll) ;;
            tcp-pp) args=(tcp-pingpong --block-size 4K) ;;
            tcp-pp-busy) args=(tcp-pingpong --block-size 4K --busy-poll) ;;
        esac
        log "te ${args[*]} (rep $1)"
        measured "$TE" "${args[@]}" --json --duration "$DURATION"
        if [ "$RC" != 0 ]; then fail te "te ${args[*]} exited $RC: $(tail -c 300 "$WORK/err")"; continue; fi
        lat=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["batch_latency_us"]["p50"])' "$WORK/out")
        record "$name" read 4096 1 hot "$1" "" "$lat"
    done
}

# ---------------------------------------------------------------- Mooncake
mc_batch() { # block threads -> batch that fits the buffer, as te caps it
    local b=$((BUFFER / ($1 * $2)))
    [ "$b" -gt "$BATCH" ] && b=$BATCH
    echo "$b"
}
mc_run() { # op block threads batch
    local tlog=$WORK/mc_target.log tpid port=""
    "$MC_BENCH" --mode=target --metadata_server=P2PHANDSHAKE --local_server_name="127.0.0.1:$PORT" \
        --protocol=tcp --buffer_size="$BUFFER" --logtostderr > "$tlog" 2>&1 &
    tpid=$!
    for _ in $(seq 1 100); do
        port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$tlog" | head -1 | grep -o '[0-9]*$')
        [ -n "$port" ] && grep -q 'numa node num' "$tlog" && break
        kill -0 "$tpid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "target did not start: $(tail -c 400 "$tlog")" >&2
        kill "$tpid" 2>/dev/null; wait "$tpid" 2>/dev/null
        return 1
    fi
    sleep 0.5   # let the target finish registering its buffer
    timeout $((DURATION + 60)) "$MC_BENCH" --mode=initiator --metadata_server=P2PHANDSHAKE \
        --local_server_name="127.0.0.1:$((PORT + 1))" --segment_id="127.0.0.1:$port" --protocol=tcp \
        --operation="$1" --block_size="$2" --batch_size="$4" --threads="$3" --duration="$DURATION" \
        --buffer_size="$BUFFER" --report_unit=GB --report_precision=4 --logtostderr 2>&1
    local rc=$?
    kill "$tpid" 2>/dev/null; wait "$tpid" 2>/dev/null
    return $rc
}
mc_measure() { # op block threads rep
    local batch gbps
    batch=$(mc_batch "$2" "$3")
    log "Mooncake $1 block=$2 threads=$3 batch=$batch (rep $4)"
    next_port; next_port
    measured mc_run "$1" "$2" "$3" "$batch"
    gbps=$(grep -o 'throughput [0-9.]* GB/s' "$WORK/out" | tail -1 | awk '{print $2}')
    if [ "$RC" != 0 ] || [ -z "$gbps" ]; then
        fail mooncake "$1 $2 thr $3 exited $RC: $(tail -c 300 "$WORK/out") $(tail -c 300 "$WORK/err")"
        return
    fi
    record mooncake "$1" "$2" "$3" "batch region reused" "$4" "$gbps"
}

# ---------------------------------------------------------------- UCX
ucx_iters() { # block -> iterations (about 0.5-2.5 GB moved)
    case "$1" in
        4096) echo 200000 ;; 65536) echo 30000 ;; 1048576) echo 2500 ;; *) echo 150 ;;
    esac
}
ucx_run() { # block iters
    local spid rc
    UCX_TLS=tcp UCX_NET_DEVICES=lo ucx_perftest -p "$PORT" > "$WORK/ucx_server.log" 2>&1 &
    spid=$!
    sleep 0.5
    UCX_TLS=tcp UCX_NET_DEVICES=lo timeout 120 ucx_perftest 127.0.0.1 -p "$PORT" -t tag_bw \
        -s "$1" -n "$2" -w $(($2 / 10)) -f 2>&1
    rc=$?
    kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
    return $rc
}
ucx_measure() { # block rep
    local n gbps
    n=$(ucx_iters "$1")
    log "UCX tag_bw block=$1 n=$n (rep $2)"
    next_port
    measured ucx_run "$1" "$n"
    # final line: iterations lat50 lat_avg lat_overall bw_avg bw_overall(MB/s = 2^20 B/s) ...
    gbps=$(awk 'NF >= 8 && $1 ~ /^[0-9]+$/ { v = $6 } END { if (v != "") printf "%.4f", v * 1048576 / 1e9 }' "$WORK/out")
    if [ "$RC" != 0 ] || [ -z "$gbps" ]; then
        fail ucx "tag_bw $1 exited $RC: $(tail -c 400 "$WORK/out")"
        return
    fi
    record ucx any "$1" 1 hot "$2" "$gbps"
}

# ---------------------------------------------------------------- libfabric
fi_iters() {
    case "$1" in
        4096) echo 20000 ;; 65536) echo 10000 ;; 1048576) echo 2000 ;; *) echo 100 ;;
    esac
}
fi_run() { # block iters
    local spid rc
    FI_TCP_IFACE=lo fi_pingpong -p tcp -e msg -B "$PORT" -I "$2" -S "$1" > "$WORK/fi_server.log" 2>&1 &
    spid=$!
    sleep 0.3
    FI_TCP_IFACE=lo timeout 120 fi_pingpong -p tcp -e msg -P "$PORT" -I "$2" -S "$1" 127.0.0.1 2>&1
    rc=$?
    kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
    return $rc
}
fi_measure() { # block rep
    local n line gbps lat
    n=$(fi_iters "$1")
    log "fi_pingpong block=$1 n=$n (rep $2)"
    next_port
    measured fi_run "$1" "$n"
    # bytes #sent #ack total time MB/sec(1e6) usec/xfer(one way) Mxfers/sec
    line=$(awk '$2 ~ /^[0-9.]+[kmg]?$/ && NF == 8 { l = $0 } END { print l }' "$WORK/out")
    gbps=$(echo "$line" | awk '{ if ($6 != "") printf "%.4f", $6 / 1000 }')
    lat=$(echo "$line" | awk '{ print $7 }')
    if [ "$RC" != 0 ] || [ -z "$gbps" ]; then
        fail libfabric "fi_pingpong $1 exited $RC: $(tail -c 400 "$WORK/out")"
        return
    fi
    [ "$1" = 4096 ] || lat=""   # the latency figure is the 4 KiB one
    record libfabric any "$1" 1 hot "$2" "$gbps" "$lat"
}

# ---------------------------------------------------------------- iperf3
iperf_run() { # len parallel
    iperf3 -s -B 127.0.0.1 -p "$PORT" -1 > "$WORK/iperf_server.log" 2>&1 &
    local spid=$! rc
    sleep 0.3
    timeout 60 iperf3 -c 127.0.0.1 -B 127.0.0.1 -p "$PORT" -l "$1" -P "$2" -t "$IPERF_SECS" -J
    rc=$?
    wait "$spid" 2>/dev/null
    return $rc
}
iperf_measure() { # len parallel rep
    local gbps
    log "iperf3 -l $1 -P $2 (rep $3)"
    next_port
    measured iperf_run "$1" "$2"
    gbps=$(python3 -c 'import json,sys; print("%.4f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 8e9))' "$WORK/out" 2>/dev/null)
    if [ "$RC" != 0 ] || [ -z "$gbps" ]; then
        fail iperf3 "-l $1 -P $2 exited $RC: $(tail -c 300 "$WORK/out")"
        return
    fi
    record iperf3 any "$1" "$2" hot "$3" "$gbps"
}

# ---------------------------------------------------------------- same host
shm_measure() { # regime rep: te over the same-host path
    local hot=()
    [ "$1" = hot ] && hot=(--hot)
    log "te bench --path shm regime=$1 (rep $2)"
    te_rows te-shm shm "$2" "" bench --json --path shm "${hot[@]}" --duration "$DURATION" --batch "$BATCH" \
        --block-size 4K,64K,1M,16M --op read,write
}
memcpy_measure() { # regime rep
    local hot=()
    [ "$1" = hot ] && hot=(--hot)
    log "te memcpy regime=$1 (rep $2)"
    te_rows memcpy shm "$2" any memcpy --json "${hot[@]}" --duration "$DURATION" --block-size 4K,64K,1M,16M
}
ucxsm_run() { # test block iters
    local spid rc
    UCX_TLS=sm ucx_perftest -p "$PORT" > "$WORK/ucxsm_server.log" 2>&1 &
    spid=$!
    sleep 0.5
    UCX_TLS=sm timeout 120 ucx_perftest 127.0.0.1 -p "$PORT" -t "$1" -s "$2" -n "$3" -w $(($3 / 10)) -f 2>&1
    rc=$?
    kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
    return $rc
}
ucxsm_measure() { # block rep
    local t op n gbps
    for t in ucp_put_bw ucp_get; do
        op="write"; [ "$t" = ucp_get ] && op="read"
        n=$(( $(ucx_iters "$1") * 4 ))
        log "UCX sm $t block=$1 n=$n (rep $2)"
        next_port
        measured ucxsm_run "$t" "$1" "$n"
        gbps=$(awk 'NF >= 8 && $1 ~ /^[0-9]+$/ { v = $6 } END { if (v != "") printf "%.4f", v * 1048576 / 1e9 }' "$WORK/out")
        if [ "$RC" != 0 ] || [ -z "$gbps" ]; then
            fail shm "UCX sm $t $1 exited $RC: $(tail -c 400 "$WORK/out")"
            continue
        fi
        record ucx-sm "$op" "$1" 1 hot "$2" "$gbps"
    done
}

# ---------------------------------------------------------------- many peers
PEERS=8
PEER_BUFFER=$((64 << 20))   # each initiator's buffer, and the part of a target's it reads
serve_start() { # path size -> SERVE_PID, SERVE_ADDR: a te serve in the background (serve_stop ends it)
    local out=$WORK/serve.$RANDOM
    "$TE" serve --listen 127.0.0.1:0 --path "$1" --size "$2" > "$out" 2> "$out.err" < /dev/null &
    SERVE_PID=$!
    SERVE_ADDR=""
    for _ in $(seq 1 200); do
        SERVE_ADDR=$(sed -n 's/^segment \([^ ]*\) .*/\1/p' "$out" | head -1)
        [ -n "$SERVE_ADDR" ] && return 0
        kill -0 "$SERVE_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "te serve did not start: $(tail -c 300 "$out.err")" >&2
    return 1
}
serve_stop() { # pids...: SIGTERM, then wait for each
    kill "$@" 2>/dev/null
    local p
    for p in "$@"; do wait "$p" 2>/dev/null; done
}
peers_bench() { # path block out target[,target...]: one te bench reading, its JSON into out
    "$TE" bench --json --path "$1" --op read --block-size "$2" --batch "$BATCH" --buffer "$PEER_BUFFER" \
        --duration "$DURATION" --warmup 0.5 --target "$4" > "$3"
}
peers_pair() { # path block: one target, one initiator
    local rc=0
    serve_start "$1" "$PEER_BUFFER" || return 1
    peers_bench "$1" "$2" "$WORK/peer.0.json" "$SERVE_ADDR" || rc=1
    serve_stop "$SERVE_PID"
    return $rc
}
peers_fan_in() { # path block: one target, PEERS initiators started together
    local pids=() rc=0 i p
    serve_start "$1" "$PEER_BUFFER" || return 1
    for ((i = 0; i < PEERS; i++)); do
        peers_bench "$1" "$2" "$WORK/peer.$i.json" "$SERVE_ADDR" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    serve_stop "$SERVE_PID"
    return $rc
}
peers_fan_out() { # path block: PEERS targets, one initiator whose batches go to them in turn
    local pids=() addrs=() rc=0 i
    for ((i = 0; i < PEERS; i++)); do
        serve_start "$1" "$PEER_BUFFER" || { rc=1; break; }
        pids+=("$SERVE_PID"); addrs+=("$SERVE_ADDR")
    done
    if [ "$rc" = 0 ]; then
        peers_bench "$1" "$2" "$WORK/peer.0.json" "$(IFS=,; echo "${addrs[*]}")" || rc=1
    fi
    serve_stop "${pids[@]}"
    return $rc
}
peers_measure() { # path rep
    local blk shape n gbps
    for blk in 65536 1048576; do
        for shape in pair fan_in fan_out; do
            log "te peers $shape path=$1 block=$blk (rep $2)"
            rm -f "$WORK"/peer.*.json
            measured "peers_$shape" "$1" "$blk"
            n=1; [ "$shape" = fan_in ] && n=$PEERS
            # one figure per initiator, comma-separated
            gbps=$(python3 -c '
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
print(",".join("%.4f" % json.load(open(f"{d}/peer.{i}.json"))["results"][0]["gb_per_s"] for i in range(n)))
' "$WORK" "$n" 2>/dev/null)
            if [ "$RC" != 0 ] || [ -z "$gbps" ]; then
                fail peers "$shape --path $1 $blk exited $RC: $(tail -c 300 "$WORK/err")"
                continue
            fi
            record "peers-$shape" read "$blk" "$n" "$1" "$2" "$gbps"
        done
    done
}

# ---------------------------------------------------------------- availability
have_te=0 have_mc=0 have_ucx=0 have_fi=0 have_iperf=0 have_shm=0 have_peers=0
if wants te; then
    if [ -x "$TE" ]; then have_te=1; else fail te "no binary at $TE (cargo build failed?)"; fi
fi
if wants mooncake; then
    if [ -n "$MC_BENCH" ]; then have_mc=1
    else fail mooncake "transfer_engine_bench not found in $VENV (pip install mooncake-transfer-engine-non-cuda failed?)"; fi
fi
if wants ucx; then
    if command -v ucx_perftest >/dev/null; then have_ucx=1; else fail ucx "ucx_perftest not installed (ucx-utils)"; fi
fi
if wants libfabric; then
    if command -v fi_pingpong >/dev/null; then have_fi=1; else fail libfabric "fi_pingpong not installed (libfabric-bin)"; fi
fi
if wants shm; then
    if [ -x "$TE" ]; then have_shm=1; else fail shm "no binary at $TE (cargo build failed?)"; fi
fi
if wants peers; then
    if [ -x "$TE" ]; then have_peers=1; else fail peers "no binary at $TE (cargo build failed?)"; fi
fi
if wants iperf3; then
    if command -v iperf3 >/dev/null; then have_iperf=1; else fail iperf3 "iperf3 not installed"; fi
fi

# ---------------------------------------------------------------- the run
START_DATE=$(date -u +'%Y-%m-%d %H:%M UTC')
START_S=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "results in $WORK; $REPS repetitions"

# One step per contender group; each repetition runs them all, starting at a different one, so
# that no contender always runs first or right after the same neighbour.
steps=()
for thr in "${THREADS[@]}"; do
    [ "$have_te" = 1 ] && steps+=("te $thr cold") && steps+=("te $thr hot")
    [ "$have_te" = 1 ] && [ "$thr" = 1 ] && steps+=("tebusy")
    [ "$have_mc" = 1 ] && steps+=("mc $thr")
done
[ "$have_ucx" = 1 ] && steps+=("ucx")
[ "$have_fi" = 1 ] && steps+=("fi")
[ "$have_iperf" = 1 ] && steps+=("iperf")
[ "$have_te" = 1 ] && steps+=("telat")
if [ "$have_shm" = 1 ]; then
    steps+=("shm x cold" "shm x hot" "memcpy x cold" "memcpy x hot")
    command -v ucx_perftest >/dev/null && steps+=("ucxsm")
fi
[ "$have_peers" = 1 ] && steps+=("peers x tcp" "peers x shm")

run_step() { # step rep
    local kind thr arg op blk
    read -r kind thr arg <<< "$1"
    case "$kind" in
        te) te_measure "$thr" "$arg" "$2" ;;
        telat) te_latency_measure "$2" ;;
        tebusy) te_busy_measure "$2" ;;
        shm) shm_measure "$arg" "$2" ;;
        memcpy) memcpy_measure "$arg" "$2" ;;
        ucxsm) for blk in "${BLOCKS[@]}"; do ucxsm_measure "$blk" "$2"; done ;;
        peers) peers_measure "$arg" "$2" ;;
        mc)
            for blk in "${BLOCKS[@]}"; do
                for op in read write; do mc_measure "$op" "$blk" "$thr" "$2"; done
            done ;;
        ucx) for blk in "${BLOCKS[@]}"; do ucx_measure "$blk" "$2"; done ;;
        fi) for blk in "${BLOCKS[@]}"; do fi_measure "$blk" "$2"; done ;;
        iperf)
            for blk in 4096 65536 1048576; do iperf_measure "$blk" 1 "$2"; done
            iperf_measure 1048576 2 "$2" ;;
    esac
}

nsteps=${#steps[@]}
if [ "$nsteps" -eq 0 ]; then
    log "nothing to run"
fi
for ((rep = 1; rep <= REPS; rep++)); do
    for ((k = 0; k < nsteps; k++)); do
        # rotate the order by a different amount each repetition
        run_step "${steps[$(( (k + (rep - 1) * (nsteps / REPS + 1)) % nsteps ))]}" "$rep"
    done
done
ELAPSED=$(( $(date +%s) - START_S ))
log "measurements done in ${ELAPSED}s"

# ---------------------------------------------------------------- report
MODEL=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
L3=$(lscpu | sed -n 's/^L3 cache:[[:space:]]*//p' | head -1)
MEM=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
KERNEL=$(uname -r)
VERSIONS="Mooncake $("$VENV/bin/pip" show mooncake-transfer-engine-non-cuda 2>/dev/null | sed -n 's/^Version: //p'), "
VERSIONS+="UCX $(dpkg-query -W -f='${Version}' ucx-utils 2>/dev/null), "
VERSIONS+="libfabric $(dpkg-query -W -f='${Version}' libfabric-bin 2>/dev/null), "
VERSIONS+="iperf3 $(dpkg-query -W -f='${Version}' iperf3 2>/dev/null)"

export RESULTS FAILURES CMDLINE START_DATE ELAPSED LOAD_START MODEL L3 MEM KERNEL NCPU TE_REV \
    VERSIONS REPS DURATION IDLE_CAP IDLE_BUSY IPERF_SECS
python3 - "$WORK/section.md" <<'EOF'
import os, statistics, sys
from collections import defaultdict

E = os.environ
rows = defaultdict(list)      # (contender, op, block, threads, regime) -> [gbps]
lat = defaultdict(list)       # contender -> [us]
other = defaultdict(list)     # contender -> [other cpu % of each run]
capped = defaultdict(int)     # contender -> runs whose idle wait hit the cap
peers = defaultdict(list)     # (shape, block, path) -> [[gbps of each initiator] per repetition]
seen = set()
for line in open(E["RESULTS"]):
    c, op, blk, thr, reg, rep, gbps, oth, wait, latus, run = line.rstrip("\n").split("\t")
    if c.startswith("peers-"):
        peers[(c[len("peers-"):], int(blk), reg)].append([float(x) for x in gbps.split(",")])
    elif gbps:
        rows[(c, op, int(blk), int(thr), reg)].append(float(gbps))
    if latus:
        lat[c].append(float(latus))
    if run in seen:           # one te run yields several configurations
        continue
    seen.add(run)
    other[c].append(float(oth))
    if int(wait) >= int(E["IDLE_CAP"]):
        capped[c] += 1
failures = [l.rstrip("\n").split("\t", 1) for l in open(E["FAILURES"]) if l.strip()]

def med(v): return statistics.median(v) if v else None
def cell(v):
    if not v: return "—"
    m = med(v)
    return f"{m:.2f} ({min(v):.2f}–{max(v):.2f})" if len(v) > 1 else f"{m:.2f}"
def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "—"
def size(b):
    return {4096: "4K", 65536: "64K", 1048576: "1M", 16777216: "16M"}.get(b, str(b))

def get(c, op, blk, thr, reg):
    return rows.get((c, op, blk, thr, reg), [])
def ucx(blk): return get("ucx", "any", blk, 1, "hot")
def fab(blk): return get("libfabric", "any", blk, 1, "hot")
def ipf(blk, thr):
    # iperf3 caps -l at 1 MiB: the 1M stream is the reference for 16M as well
    b = min(blk, 1048576)
    return get("iperf3", "any", b, thr, "hot") or get("iperf3", "any", b, 1, "hot")

out = []
p = out.append
p(f"Measured {E['START_DATE']} with `{E['CMDLINE']}` ({E['REPS']} repetitions, "
  f"{int(E['ELAPSED']) // 60} min {int(E['ELAPSED']) % 60} s; load average at start {E['LOAD_START']}).")
p("")
p(f"Machine: {E['MODEL']}, {E['NCPU']} cores, L3 {E['L3'] or '?'}, {E['MEM']} RAM, Linux {E['KERNEL']}. "
  f"te at {E['TE_REV']}; {E['VERSIONS']}. All traffic on 127.0.0.1.")
p("")
p("GB/s = 1e9 bytes/s, median of the repetitions (min–max). te runs "
  f"`te bench --json --path tcp --threads T [--hot] --duration {E['DURATION']}` (target in a child process, "
  "batch 128 capped to fit the 512 MiB buffer: 32 blocks at 16M with 1 thread, 16 with 2); "
  "*te cold* cycles through 512 MiB, *te hot* reuses one block per thread. "
  "Mooncake: `transfer_engine_bench --protocol=tcp --metadata_server=P2PHANDSHAKE`, same block, "
  f"batch and threads, {E['DURATION']} s, 512 MiB buffer; it re-sends the same batch-sized region "
  "every batch (512 KiB at 4K, 8 MiB at 64K: cache-resident; 128 MiB and more at 1M/16M). "
  "UCX `ucx_perftest -t tag_bw` (UCX_TLS=tcp, UCX_NET_DEVICES=lo), libfabric `fi_pingpong -p tcp -e msg` "
  f"(FI_TCP_IFACE=lo) and iperf3 (`-l` = block, `-t {E['IPERF_SECS']}`) are one-directional streams "
  "from one reused buffer (hot); they have no read/write distinction and, except iperf3 `-P 2`, run one "
  "stream, so their 1-stream figure stands in the 2-thread rows too. iperf3 caps `-l` at 1 MiB: its "
  "1M figure is the reference in the 16M rows. fi_pingpong is a ping-pong (one message in flight).")
p("")
p("Ratios compare like with like: te hot against UCX, libfabric and iperf3 (all hot), te cold "
  "against Mooncake; *best TCP* is the highest of UCX, libfabric and iperf3 for that block size.")
p("")
p("*te hot busy* is `--hot --busy-poll` (1 thread): both of te's event loops spin, as UCX's and "
  "libfabric's progress loops do (ucx_perftest used 96 % of the machine in a profile of its 1 MiB run); "
  "*te busy/best TCP* compares it with the best contender.")
p("")
p("| op | block | thr | te cold | te hot | te hot busy | Mooncake | UCX tag_bw | fi_pingpong | iperf3 | te/Mooncake | te/UCX | te/fi | te/iperf3 | te/best TCP | te busy/best TCP |")
p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
checks = []
checks_shm = []
for op in ("read", "write"):
    for thr in (1, 2):
        for blk in (4096, 65536, 1048576, 16777216):
            tc, th = get("te", op, blk, thr, "cold"), get("te", op, blk, thr, "hot")
            tb = get("te-busy", op, blk, thr, "hot")
            mc = get("mooncake", op, blk, thr, "batch region reused")
            u, f, i = ucx(blk), fab(blk), ipf(blk, thr)
            mtc, mth = med(tc), med(th)
            best = max([x for x in (med(u), med(f), med(i)) if x] or [0]) or None
            p(f"| {op} | {size(blk)} | {thr} | {cell(tc)} | {cell(th)} | {cell(tb)} | {cell(mc)} | {cell(u)} | "
              f"{cell(f)} | {cell(i)} | {ratio(mtc, med(mc))} | {ratio(mth, med(u))} | "
              f"{ratio(mth, med(f))} | {ratio(mth, med(i))} | {ratio(mth, best)} | {ratio(med(tb), best)} |")
            if thr == 1 and blk >= 65536:
                checks.append((f"{op} {size(blk)}: te hot / best TCP", mth, best, 1.0))
                checks.append((f"{op} {size(blk)}: te hot busy-polling / best TCP", med(tb), best, 1.0))
p("")
def lat_cell(c, scale=1.0):
    v = [x * scale for x in lat.get(c, [])]
    return f"**{med(v):.1f} µs** ({min(v):.1f}–{max(v):.1f})" if v else "—"
p("Latency at 4 KiB, p50 round trip with one exchange in flight (µs, median of the repetitions, min–max):")
p("")
p("| | sleeps in the kernel | busy-polls |")
p("|---|---|---|")
p(f"| te read over TCP, batch 1 (`te bench --path tcp --op read --block-size 4K --batch 1 [--busy-poll]`) | {lat_cell('te-lat')} | {lat_cell('te-lat-busy')} |")
p(f"| raw TCP ping-pong, 40-byte request, 4 KiB + 16-byte reply (`te tcp-pingpong [--busy-poll]`) | {lat_cell('tcp-pp')} | {lat_cell('tcp-pp-busy')} |")
p(f"| fi_pingpong 4K (2 × its one-way usec/xfer) | — | {lat_cell('libfabric', 2.0)} |")
p("")
lat_checks = []
def lat_check(name, a, b, want):
    if a and b:
        r = a / b
        lat_checks.append(f"- {name} = {r:.2f}× (target ≤ {want:.1f}×): {'met' if r <= want else 'missed'}")
    else:
        lat_checks.append(f"- {name}: not measured")
fl = med(lat.get("libfabric", []))
lat_check("4K round trip: te busy-polling / fi_pingpong", med(lat.get("te-lat-busy", [])), fl and 2 * fl, 1.5)
lat_check("4K round trip: te sleeping / raw blocking TCP ping-pong", med(lat.get("te-lat", [])), med(lat.get("tcp-pp", [])), 1.5)
p("Targets of issue 15 (1 thread, batch 128, medians of this run, ratios as in the table):")
p("")
def print_checks(checks):
    for name, a, b, want in checks:
        if a and b:
            r = a / b
            p(f"- {name} = {r:.2f}× (target ≥ {want:.1f}×): {'met' if r >= want else 'missed'}")
        else:
            p(f"- {name}: not measured")
print_checks(checks)
for line in lat_checks:
    p(line)
p("")
shm_rows = [k for k in rows if k[0] == "te-shm"]
if shm_rows or get("memcpy", "any", 1048576, 1, "cold"):
    p("### Same host")
    p("")
    p("te over the same-host path (`te bench --path shm [--hot]`, 1 thread, batch 128, target in a child "
      "process) beside te over TCP (the table above), one thread copying the same blocks in memory "
      "(`te memcpy [--hot]`, anonymous memory on huge pages) and UCX shared memory (`ucx_perftest -t ucp_put_bw` / "
      "`ucp_get`, UCX_TLS=sm: one reused buffer, hot). Cold cycles through 512 MiB, hot reuses one block.")
    p("")
    p("| op | block | regime | te shm | te TCP | memcpy | UCX sm put/get | shm/memcpy | shm/UCX sm | shm/TCP |")
    p("|---|---|---|---|---|---|---|---|---|---|")
    for op in ("read", "write"):
        for reg in ("cold", "hot"):
            for blk in (4096, 65536, 1048576, 16777216):
                sh, tc = get("te-shm", op, blk, 1, reg), get("te", op, blk, 1, reg)
                mc = get("memcpy", "any", blk, 1, reg)
                us = get("ucx-sm", op, blk, 1, "hot") if reg == "hot" else []
                p(f"| {op} | {size(blk)} | {reg} | {cell(sh)} | {cell(tc)} | {cell(mc)} | {cell(us)} | "
                  f"{ratio(med(sh), med(mc))} | {ratio(med(sh), med(us))} | {ratio(med(sh), med(tc))} |")
                if blk <= 65536:
                    want = 0.5 if reg == "hot" else 0.8
                    checks_shm.append((f"{op} {size(blk)} {reg}: te shm / memcpy", med(sh), med(mc), want))
                    if reg == "hot":
                        checks_shm.append((f"{op} {size(blk)} hot: te shm / UCX sm", med(sh), med(us), 1.0))
    p("")
    p("Targets of issue 15, small blocks on one host (medians of this run):")
    p("")
    print_checks(checks_shm)
    p("")
if peers:
    p("### Many peers")
    p("")
    p(f"Reads, batch 128, cold, each initiator cycling through its own 64 MiB, targets and initiators "
      f"in processes of their own (`te serve --path P`, `te bench --path P --target ...`, {E['DURATION']} s "
      "after 0.5 s of warm-up). *Fan-in*: 8 `te bench` processes started together against one `te serve`; "
      "their sum, and the spread of their shares (largest distance from their mean, % of the mean). "
      "*Fan-out*: one `te bench --target A,...,H` whose batches go to 8 `te serve` processes in turn. "
      "*Pair*: one initiator, one target, same flags. Medians of the repetitions (min–max).")
    p("")
    p("| path | block | pair GB/s | fan-in sum | fan-in / pair | fan-in share spread | fan-out | fan-out / pair |")
    p("|---|---|---|---|---|---|---|---|")
    checks_peers, fair = [], []
    for path in ("tcp", "shm"):
        for blk in (65536, 1048576):
            pair = [sum(r) for r in peers.get(("pair", blk, path), [])]
            fin_runs = peers.get(("fan_in", blk, path), [])
            fin = [sum(r) for r in fin_runs]
            spread = [max(abs(x - sum(r) / len(r)) for x in r) / (sum(r) / len(r)) * 100 for r in fin_runs if sum(r) > 0]
            fout = [sum(r) for r in peers.get(("fan_out", blk, path), [])]
            if not (pair or fin or fout):
                continue
            sp = f"{med(spread):.0f} % ({min(spread):.0f}–{max(spread):.0f})" if spread else "—"
            p(f"| {path} | {size(blk)} | {cell(pair)} | {cell(fin)} | {ratio(med(fin), med(pair))} | {sp} | "
              f"{cell(fout)} | {ratio(med(fout), med(pair))} |")
            checks_peers.append((f"{path} {size(blk)}: fan-in sum / pair", med(fin), med(pair), 0.9))
            checks_peers.append((f"{path} {size(blk)}: fan-out / pair", med(fout), med(pair), 0.9))
            if spread:
                fair.append(f"- {path} {size(blk)}: fan-in share spread = {med(spread):.0f} % of the mean "
                            f"(target ≤ 20 %): {'met' if med(spread) <= 20 else 'missed'}")
    p("")
    p("Targets of issue 15, many peers (medians of this run):")
    p("")
    print_checks(checks_peers)
    for line in fair:
        p(line)
    p("")
p("CPU used by other processes during the runs (% of the whole machine, median / max) and runs "
  f"whose wait for an idle machine (< {E['IDLE_BUSY']} % busy over 1 s) hit the {E['IDLE_CAP']} s cap:")
p("")
p("| contender | runs | other CPU median | other CPU max | waits capped |")
p("|---|---|---|---|---|")
for c in sorted(other):
    v = other[c]
    p(f"| {c} | {len(v)} | {med(v):.1f} % | {max(v):.1f} % | {capped[c]} |")
if failures:
    p("")
    p("Failures in this run:")
    p("")
    for c, msg in failures:
        p(f"- {c}: `{' '.join(msg.replace('`', chr(39)).split())[:400]}`")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
EOF

cat "$WORK/section.md"

if [ "$WRITE_DOC" = 1 ]; then
    python3 "$ROOT/bench/write_section.py" "$ROOT/docs/PERFORMANCE.md" "$WORK/section.md" compare \
        "Comparison with Mooncake TE, UCX, libfabric and iperf3"
    log "wrote the comparison into docs/PERFORMANCE.md"
fi
