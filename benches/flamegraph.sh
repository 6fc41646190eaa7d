#!/usr/bin/env bash
# benches/flamegraph.sh: flame graphs (SVG) of tollgate's request path under load: an
# uncounted GET and a counted POST (strict durability), as docs/performance.md shows them.
#
# It starts, on free high ports and in a temporary directory, an nginx upstream (1 worker)
# and target/release/tollgate run --worker-threads 1 with benches/proxy-overhead.toml (both on
# CPU 1 when there are two CPUs), drives tollgate with wrk (on CPU 0), records tollgate with
# `perf record -e cpu-clock --call-graph dwarf` for a few seconds of each workload, and folds
# the stacks into SVGs with inferno. It stops only the processes it started.
#
# Needs: nginx, wrk, perf (Debian: linux-perf), inferno (cargo install inferno).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=flamegraph.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

SECONDS_RECORDED=${BENCH_SECONDS:-5}
OUT=${BENCH_OUT:-$ROOT/docs/flamegraphs}
TOLLGATE_BIN=${TOLLGATE_BIN:-$ROOT/target/release/tollgate}

usage() {
    cat <<USAGE
Usage: benches/flamegraph.sh [-s SECONDS] [-o DIR]

  -s, --seconds SEC   seconds recorded per workload (BENCH_SECONDS, default $SECONDS_RECORDED)
  -o, --out DIR       where get.svg and post.svg go (BENCH_OUT, default docs/flamegraphs)
USAGE
}

while (($#)); do
    case $1 in
    -s | --seconds) SECONDS_RECORDED=$2; shift 2 ;;
    -o | --out) OUT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
is_count "$SECONDS_RECORDED" || die "--seconds must be a whole number of seconds"
for tool in nginx wrk perf inferno-collapse-perf inferno-flamegraph; do
    command -v "$tool" >/dev/null || die "$tool is needed (see the header of this script)"
done

(cd "$ROOT" && cargo build --release --locked --quiet --bin tollgate)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-flamegraph.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

if (($(nproc) >= 2)); then LOAD_CPU=0 SERVER_CPU=1; else LOAD_CPU=0 SERVER_CPU=0; fi
SERVER_PIN=(taskset -c "$SERVER_CPU")
BASE=$(pick_ports 3)
UP_PORT=$BASE TG_PORT=$((BASE + 1)) ADMIN_PORT=$((BASE + 2))

nginx_conf "$WORK/upstream" "$(record_server "$UP_PORT")" >"$WORK/upstream.conf"
start upstream nginx -p "$WORK/upstream" -c "$WORK/upstream.conf" -e "$WORK/upstream/logs/error.log"
await_port upstream "$LAST_PID" "$UP_PORT"

sed -e "s|127.0.0.1:18090|127.0.0.1:$TG_PORT|" \
    -e "s|127.0.0.1:18091|127.0.0.1:$ADMIN_PORT|" \
    -e "s|127.0.0.1:18080|127.0.0.1:$UP_PORT|" \
    -e "s|\"\\.\\./config/|\"$ROOT/config/|" \
    -e "s|^license_dir = \"licenses\"|license_dir = \"$ROOT/benches/licenses\"|" \
    -e "s|^dir = \"\\.\\./target/bench-state\"|dir = \"$WORK/state\"|" \
    "$ROOT/benches/proxy-overhead.toml" >"$WORK/tollgate.toml"
start tollgate env RUST_LOG=warn "$TOLLGATE_BIN" run --worker-threads 1 --config "$WORK/tollgate.toml"
TG_PID=$LAST_PID
await_port tollgate "$TG_PID" "$TG_PORT"

cat >"$WORK/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"fields":{}}'
wrk.headers["Content-Type"] = "application/json"
EOF
URL="http://127.0.0.1:$TG_PORT/bench-upstream/records"
mkdir -p "$OUT"
for workload in get post; do
    script=()
    [[ $workload == post ]] && script=(-s "$WORK/post.lua")
    duration=$((SECONDS_RECORDED + 3))
    taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${duration}s" "${script[@]}" -H 'Tollgate-Flow: bench' "$URL" >"$WORK/wrk-$workload.txt" &
    WRK=$!
    sleep 1
    perf record -q -F 999 -e cpu-clock --call-graph dwarf,16384 -p "$TG_PID" -o "$WORK/$workload.data" -- sleep "$SECONDS_RECORDED" 2>/dev/null
    wait "$WRK"
    perf script -i "$WORK/$workload.data" 2>/dev/null | inferno-collapse-perf >"$WORK/$workload.folded"
    title="tollgate: $( [[ $workload == get ]] && echo 'uncounted GET' || echo 'counted POST (strict durability)'), 32 connections, one worker thread"
    inferno-flamegraph --title "$title" --width 1600 <"$WORK/$workload.folded" >"$OUT/$workload.svg"
    echo "$workload: $(awk '/Requests\/sec/ {print $2}' "$WORK/wrk-$workload.txt") requests/s while recorded; $OUT/$workload.svg"
done
