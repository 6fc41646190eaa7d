#!/usr/bin/env bash
# benches/intercept.sh: what HTTPS interception costs per request. An engine behind
# HTTPS_PROXY (n8n) opens a tunnel per request: a TCP connection, CONNECT, a TLS handshake
# tollgate terminates, one request. This compares that, with and without TLS session
# resumption, to a plain request on a kept-alive connection through /{instance}/, and
# measures tollgate's CPU time per request from /proc. See docs/performance.md.
#
# Everything runs on loopback, on free ports and in a temporary directory:
#   target    examples/tunnel_load.rs `target`: a TLS target (HTTP/1.1 and h2) with its own CA,
#             answering every request 200 (shipped with the repository; nginx is not needed)
#   tollgate  target/release/tollgate run --worker-threads 1, forward_proxy and intercept_ca
#             (a CA from `tollgate ca init`), one instance at the target, flow `bench`
#   load      examples/tunnel_load.rs `load`, per mode: plain, tunnel, resume
# With two or more CPUs tollgate runs alone on CPU 1, the target and the load on CPU 0.
# It stops only the processes it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=intercept.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

DURATION=${BENCH_DURATION:-5}
WORKERS=${BENCH_WORKERS:-8}
MODES=${BENCH_MODES:-plain,tunnel,resume}
KEEP=${BENCH_KEEP:-0}

usage() {
    cat <<USAGE
Usage: benches/intercept.sh [-d SECONDS] [-w WORKERS] [-m MODES] [--keep]

  -d, --duration SEC   measured seconds per mode (BENCH_DURATION, default $DURATION)
  -w, --workers N      concurrent load workers (BENCH_WORKERS, default $WORKERS)
  -m, --modes LIST     comma-separated from plain, tunnel, resume (BENCH_MODES, default $MODES)
      --keep           keep the temporary directory and logs (BENCH_KEEP=1)
USAGE
}

while (($#)); do
    case $1 in
    -d | --duration) DURATION=$2; shift 2 ;;
    -w | --workers) WORKERS=$2; shift 2 ;;
    -m | --modes) MODES=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
is_count "$DURATION" || die "--duration must be a positive whole number of seconds"
is_count "$WORKERS" || die "--workers must be a positive number"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-intercept.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if ((KEEP)); then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

SERVER_PIN=()
LOAD_PIN=()
if (($(nproc) >= 2)) && command -v taskset >/dev/null; then
    SERVER_PIN=(taskset -c 1)
    LOAD_PIN=(taskset -c 0)
fi

(cd "$ROOT" && cargo build --release --locked --quiet --bin tollgate --example tunnel_load)
TOLLGATE=$ROOT/target/release/tollgate
LOADER=$ROOT/target/release/examples/tunnel_load

"$TOLLGATE" ca init --out "$WORK/ca" >/dev/null
${LOAD_PIN[@]+"${LOAD_PIN[@]}"} "$LOADER" target --ca-out "$WORK/target-ca.pem" --addr-out "$WORK/target.addr" \
    >"$WORK/target.log" 2>&1 &
PIDS+=("$!")
for ((i = 0; i < 200; i++)); do [[ -s $WORK/target.addr ]] && break; sleep 0.05; done
[[ -s $WORK/target.addr ]] || die "the target did not start (see $WORK/target.log)"
TARGET=$(cat "$WORK/target.addr")

BASE=$(pick_ports 2)
ENGINE_PORT=$BASE
ADMIN_PORT=$((BASE + 1))
cat >"$WORK/tollgate.toml" <<TOML
[server]
listen = "127.0.0.1:$ENGINE_PORT"
forward_proxy = true
intercept_ca = { cert = "$WORK/ca/ca.pem", key = "$WORK/ca/ca.key" }

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
token_file = "$ROOT/config/admin.token"

[licensing]
public_keys = ["$ROOT/config/demo/issuer.pub"]
license_dir = "$ROOT/benches/licenses"

[state]
dir = "$WORK/state"

[[instances]]
id = "bench-source"
connector = "named"
app = "servicenow"
base_uri = "https://bench-source.example"

[[instances]]
id = "bench-upstream"
connector = "named"
app = "jira"
base_uri = "https://$TARGET"
ca_file = "$WORK/target-ca.pem"

[[flows]]
id = "bench"
systems = ["bench-source", "bench-upstream"]
TOML
start tollgate "$TOLLGATE" run --worker-threads 1 --config "$WORK/tollgate.toml"
TOLLGATE_PID=$LAST_PID
await_port tollgate "$TOLLGATE_PID" "$ENGINE_PORT"

HZ=$(getconf CLK_TCK)
printf '%-8s %10s %10s %10s %16s %8s\n' mode "req/s" "p50 ms" "p99 ms" "CPU µs/request" errors
IFS=, read -ra modes <<<"$MODES"
for mode in "${modes[@]}"; do
    # Warm-up: the certificate is minted, pools fill, the target's connections open.
    ${LOAD_PIN[@]+"${LOAD_PIN[@]}"} "$LOADER" load --mode "$mode" --engine "127.0.0.1:$ENGINE_PORT" \
        --target "$TARGET" --ca "$WORK/ca/ca.pem" --workers "$WORKERS" --seconds 1 >/dev/null
    before=$(ticks "$TOLLGATE_PID")
    line=$(${LOAD_PIN[@]+"${LOAD_PIN[@]}"} "$LOADER" load --mode "$mode" --engine "127.0.0.1:$ENGINE_PORT" \
        --target "$TARGET" --ca "$WORK/ca/ca.pem" --workers "$WORKERS" --seconds "$DURATION")
    after=$(ticks "$TOLLGATE_PID")
    alive
    declare -A got=()
    for pair in $line; do got[${pair%%=*}]=${pair#*=}; done
    cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="${got[requests]}" \
        'BEGIN { if (n > 0) printf "%.0f", t / hz * 1e6 / n; else print "NA" }')
    printf '%-8s %10s %10s %10s %16s %8s\n' "$mode" "${got[rps]}" "${got[p50_ms]}" "${got[p99_ms]}" "$cpu" "${got[errors]}"
done
