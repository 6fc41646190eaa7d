#!/usr/bin/env bash
# benches/scale.sh: how tollgate starts and swaps with a large configuration (10,000 flows over
# 10,000 instances, 100 pair licenses of 100 points; examples/scale_config.rs writes it). See
# docs/performance.md, "Large configurations: 10,000 flows".
#
# 1. Starts: tollgate run --ready-file, pinned to one CPU, from a fresh state directory,
#    --starts times. Ready = from spawn until the ready file exists (/readyz is then checked
#    for 200); RSS = VmRSS of /proc/<pid>/status right then. Prints each start and the medians.
# 2. Hot swap under load: nginx plays the targets; wrk (one thread) sends GETs (not counted)
#    through tollgate on a steady flow for --duration seconds, once alone and once while curl
#    uploads a license through POST /v1/licenses --swap-rate times a second (each upload
#    compiles and swaps a new snapshot). Prints requests/s, p99, wrk's errors and non-2xx
#    answers for both, the uploads answered 201 and the rate achieved, and RSS after the load.
#    tollgate is pinned to one CPU; wrk, curl and nginx share the other (with 2+ CPUs).
# 3. What a swap costs: the same uploads for --duration seconds without load, and the CPU
#    (user + system, from /proc) the control thread spent per snapshot swapped in.
#
# It stops only the processes it started and removes its temporary directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=scale.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

STARTS=${BENCH_STARTS:-5}
DURATION=${BENCH_DURATION:-10}
SWAP_RATE=${BENCH_SWAP_RATE:-100}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
BUILD=${BENCH_BUILD:-auto}
TOLLGATE_BIN=${TOLLGATE_BIN:-$ROOT/target/release/tollgate}
GENERATOR=${SCALE_GENERATOR:-$ROOT/target/release/examples/scale_config}
KEEP=${BENCH_KEEP:-0}

usage() {
    cat <<EOF
Usage: benches/scale.sh [options]

Start time, memory and hot swaps under load with 10,000 flows (see docs/performance.md).

Options (each also read from the environment variable in brackets):
  -s, --starts N         starts to measure, from a fresh state each (BENCH_STARTS, default $STARTS)
  -d, --duration SEC     seconds of load, without and with swaps (BENCH_DURATION, default $DURATION)
      --swap-rate N      license uploads per second during the load (BENCH_SWAP_RATE, default $SWAP_RATE)
  -c, --connections N    wrk connections (BENCH_CONNECTIONS, default $CONNECTIONS)
      --bin PATH         tollgate binary (TOLLGATE_BIN, default target/release/tollgate)
      --build MODE       auto (build when a binary is missing), always, never (BENCH_BUILD, default $BUILD)
      --keep             keep the temporary directory and logs (BENCH_KEEP=1)
  -h, --help             this text

Needs nginx, wrk, curl (7.84 or later, for --rate) and taskset. Takes about
starts x 3 + 3 x duration + 20 seconds after the build.
EOF
}

while (($#)); do
    case $1 in
        -s | --starts) STARTS=${2:?}; shift 2 ;;
        -d | --duration) DURATION=${2:?}; shift 2 ;;
        --swap-rate) SWAP_RATE=${2:?}; shift 2 ;;
        -c | --connections) CONNECTIONS=${2:?}; shift 2 ;;
        --bin) TOLLGATE_BIN=${2:?}; shift 2 ;;
        --build) BUILD=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

is_count "$STARTS" || die "--starts must be a whole number above 0, not '$STARTS'"
is_count "$DURATION" || die "--duration must be a whole number of seconds, not '$DURATION'"
is_count "$SWAP_RATE" || die "--swap-rate must be a whole number above 0, not '$SWAP_RATE'"
is_count "$CONNECTIONS" || die "--connections must be a whole number above 0, not '$CONNECTIONS'"
for tool in nginx wrk curl taskset getconf; do
    command -v "$tool" >/dev/null || die "needs $tool on the PATH"
done

case $BUILD in
    always) build=1 ;;
    never) build=0 ;;
    auto) [[ -x $TOLLGATE_BIN && -x $GENERATOR ]] && build=0 || build=1 ;;
    *) die "--build must be auto, always or never" ;;
esac
if ((build)); then
    (cd "$ROOT" && cargo build --release --locked --bin tollgate --example scale_config) ||
        die "the release build failed"
fi
[[ -x $TOLLGATE_BIN ]] || die "no tollgate binary at $TOLLGATE_BIN"
[[ -x $GENERATOR ]] || die "no generator at $GENERATOR (cargo build --release --example scale_config)"

# tollgate on the last CPU; the load, the uploads and nginx on the others.
CPUS=$(nproc)
if ((CPUS >= 2)); then
    SERVER_PIN=(taskset -c $((CPUS - 1)))
    LOAD_PIN=(taskset -c 0-$((CPUS - 2)))
else
    SERVER_PIN=()
    LOAD_PIN=()
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-scale.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if ((KEEP)); then
        echo "$PROG: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Below the ephemeral range (32768 and up), where a client's port cannot take nginx's.
BASE=$(pick_ports 3)
for ((tries = 0; BASE + 3 > 32768 && tries < 100; tries++)); do
    BASE=$(pick_ports 3)
done
ENGINE=127.0.0.1:$BASE
ADMIN=127.0.0.1:$((BASE + 1))
UPSTREAM_PORT=$((BASE + 2))
CONF=$WORK/conf
"$GENERATOR" --out "$CONF" --engine "$ENGINE" --admin "$ADMIN" \
    --upstream "127.0.0.1:$UPSTREAM_PORT" >/dev/null
TOKEN=$(tr -d '[:space:]' <"$CONF/admin.token")
# The first flow of the first license, on its first instance (served by nginx).
FLOW=$(awk -F'"' '/^\[\[flows\]\]/ { getline; print $2; exit }' "$CONF/tollgate.toml")
INSTANCE=$(awk -F'"' '/^\[\[flows\]\]/ { getline; getline; print $2; exit }' "$CONF/tollgate.toml")
LICENSE=$(find "$CONF/licenses" -name '*.lic' | sort | sed -n 1p)

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "NA"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
now_ns() { date +%s%N; }

# Starts tollgate with the scale configuration; sets TG_PID and READY_MS.
start_tollgate() {
    local log=$1 ready=$WORK/ready.json t0 i
    rm -f "$ready"
    t0=$(now_ns)
    start "$log" "$TOLLGATE_BIN" run --config "$CONF/tollgate.toml" --ready-file "$ready"
    TG_PID=$LAST_PID
    for ((i = 0; i < 30000; i++)); do
        [[ -e $ready ]] && break
        kill -0 "$TG_PID" 2>/dev/null || { tail -n 20 "$WORK/$log.log" >&2; die "tollgate exited during start"; }
        sleep 0.001
    done
    [[ -e $ready ]] || die "tollgate was not ready after 30 s"
    READY_MS=$((($(now_ns) - t0) / 1000000))
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$ADMIN/readyz") == 200 ]] ||
        die "/readyz did not answer 200 once the ready file was written"
}

stop_tollgate() {
    kill -TERM "$TG_PID"
    wait "$TG_PID" 2>/dev/null || true
    local kept=()
    for pid in "${PIDS[@]}"; do
        [[ $pid == "$TG_PID" ]] || kept+=("$pid")
    done
    PIDS=(${kept[@]+"${kept[@]}"})
}

echo "$TOLLGATE_BIN (tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')): $(grep -c '^\[\[flows\]\]' "$CONF/tollgate.toml") flows," \
    "$(grep -c '^\[\[instances\]\]' "$CONF/tollgate.toml") instances, $(find "$CONF/licenses" -name '*.lic' | wc -l) licenses," \
    "config $(($(stat -c %s "$CONF/tollgate.toml") / 1024)) KiB; tollgate on CPU ${SERVER_PIN[2]:-any}"

# ------------------------------------------------------------------------------ starts

readies=()
rsses=()
for ((run = 1; run <= STARTS; run++)); do
    rm -rf "$CONF/state"
    start_tollgate "start-$run"
    rss=$(rss_mib "$TG_PID")
    printf 'start %d: ready %d ms, RSS %s MiB\n' "$run" "$READY_MS" "$rss"
    readies+=("$READY_MS")
    rsses+=("$rss")
    stop_tollgate
done
printf 'starts (fresh state, median of %d): ready %s ms, RSS %s MiB\n' "$STARTS" \
    "$(printf '%s\n' "${readies[@]}" | median)" "$(printf '%s\n' "${rsses[@]}" | median)"

# ------------------------------------------------------------------- hot swap under load

nginx_conf "$WORK/nginx" "$(record_server "$UPSTREAM_PORT")" >"$WORK/nginx.conf"
SERVER_PIN_SAVED=(${SERVER_PIN[@]+"${SERVER_PIN[@]}"})
SERVER_PIN=(${LOAD_PIN[@]+"${LOAD_PIN[@]}"})
start nginx nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" -e "$WORK/nginx/logs/error.log"
await_port nginx "$LAST_PID" "$UPSTREAM_PORT"
SERVER_PIN=(${SERVER_PIN_SAVED[@]+"${SERVER_PIN_SAVED[@]}"})

start_tollgate tollgate
printf 'restart with the stored flow states: ready %d ms, RSS %s MiB\n' "$READY_MS" "$(rss_mib "$TG_PID")"
URL="http://$ENGINE/$INSTANCE/api/now/table/incident?sysparm_limit=1"
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Tollgate-Flow: $FLOW" "$URL")
[[ $status == 200 ]] || die "GET $URL with flow $FLOW answered $status, not 200"

# Runs wrk for DURATION seconds; prints "requests/s p99_ms errors non2xx".
load() {
    local out
    out=$(${LOAD_PIN[@]+"${LOAD_PIN[@]}"} wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        -H "Tollgate-Flow: $FLOW" "$URL")
    echo "$out" >>"$WORK/wrk.log"
    awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        / 99%/ { p99 = ms($2) }
        /Requests\/sec/ { rps = $2 }
        /Socket errors/ { gsub(",", ""); errors = $4 + $6 + $8 + $10 }
        /Non-2xx/ { non2xx = $NF }
        END { printf "%d %.3f %d %d\n", rps, p99, errors, non2xx }' <<<"$out"
}

generation() {
    curl -s -H "Authorization: Bearer $TOKEN" "http://$ADMIN/v1/status" |
        sed -n 's/.*"generation": *\([0-9]*\).*/\1/p'
}

# Uploads the license SWAP_RATE times a second (one kept-alive connection, each upload waits
# for the one before) during the load, stopped after DURATION + 1 seconds; prints "swaps
# refused seconds": the snapshots swapped in (by the generation), the answers other than 201.
swaps() {
    local count=$((SWAP_RATE * DURATION)) t0 g0 g1
    g0=$(generation)
    t0=$(now_ns)
    timeout $((DURATION + 1)) ${LOAD_PIN[@]+"${LOAD_PIN[@]}"} stdbuf -oL curl -s --rate "${SWAP_RATE}/s" \
        -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $TOKEN" --data-binary "@$LICENSE" \
        "http://$ADMIN/v1/licenses?upload=[1-$count]" >"$WORK/swap-codes" || true
    g1=$(generation)
    printf '%d %d %.2f\n' $((g1 - g0)) "$(grep -cv '^201$' "$WORK/swap-codes" || true)" \
        "$(awk -v ns=$(($(now_ns) - t0)) 'BEGIN { print ns / 1e9 }')"
}

load >/dev/null # warm-up: connections, pools, caches
read -r rps_quiet p99_quiet err_quiet bad_quiet < <(load)
swaps >"$WORK/swaps.out" &
SWAPPER=$!
read -r rps_swap p99_swap err_swap bad_swap < <(load)
wait "$SWAPPER" || die "the uploads failed"
read -r swapped refused seconds <"$WORK/swaps.out"

printf 'load without swaps: %d req/s, p99 %.3f ms, %d socket errors, %d non-2xx\n' \
    "$rps_quiet" "$p99_quiet" "$err_quiet" "$bad_quiet"
printf 'load with swaps:    %d req/s, p99 %.3f ms, %d socket errors, %d non-2xx\n' \
    "$rps_swap" "$p99_swap" "$err_swap" "$bad_swap"
printf 'swaps: %d snapshots swapped in %.2f s (%.0f/s, asked %d/s), %d uploads not answered 201\n' \
    "$swapped" "$seconds" "$(awk -v n="$swapped" -v s="$seconds" 'BEGIN { print n / s }')" \
    "$SWAP_RATE" "$refused"
printf 'p99 with swaps / without: %.2f; RSS after the load: %s MiB\n' \
    "$(awk -v a="$p99_swap" -v b="$p99_quiet" 'BEGIN { print (b > 0) ? a / b : 0 }')" "$(rss_mib "$TG_PID")"

# ------------------------------------------------------------------ what a swap costs

# The control thread's CPU so far (user + system), in clock ticks.
control_ticks() {
    local task
    for task in /proc/"$TG_PID"/task/*; do
        [[ $(cat "$task/comm" 2>/dev/null) == tollgate-contro* ]] || continue
        awk '{ print $14 + $15 }' "$task/stat"
        return
    done
    die "tollgate has no control thread to measure"
}

ticks0=$(control_ticks)
swaps >"$WORK/swaps-alone.out"
ticks1=$(control_ticks)
read -r swapped refused seconds <"$WORK/swaps-alone.out"
((swapped > 0)) || die "no snapshot was swapped in without load"
printf 'swaps without load: %d in %.2f s, %d uploads not answered 201; control thread CPU per swap %.2f ms\n' \
    "$swapped" "$seconds" "$refused" \
    "$(awk -v t=$((ticks1 - ticks0)) -v hz="$(getconf CLK_TCK)" -v n="$swapped" 'BEGIN { print t * 1000 / hz / n }')"
stop_tollgate
