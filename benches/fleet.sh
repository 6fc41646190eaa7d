#!/usr/bin/env bash
# benches/fleet.sh: what fleet mode costs, measured beside the embedded store on loopback.
# See docs/performance.md ("Fleet mode") for how to read the table it prints.
#
# It starts, on free high ports and in temporary directories:
#   upstream  nginx, 1 worker: POST answers 201 with a small JSON body (one server for the
#             throughput runs, without access log; one per near-limit case, logging statuses)
#   redis     redis-server --save "" --appendonly no (no persistence), shared by every fleet
#   sidecars  target/release/tollgate run --worker-threads 1, each with its own copy of
#             benches/fleet.toml (own state.dir, node and listeners, port 0 read back from
#             --ready-file): 1 on the embedded store, 1 alone in a fleet, N in one fleet,
#             each with a license of a large budget; and the same three again with a
#             license of a small budget for the near-limit runs
# Throughput: every case is driven with one wrk per sidecar (wrk -t1, 32 connections each,
# all at once for the N sidecars), the cases taking turns over several rounds; Redis round
# trips per counted load come from the sidecars' metrics over the measured seconds.
# Near the limit: each case is driven to 90% of its hard limit, then at full load until
# every sidecar answers 429; the round trips over that last stretch are counted, and the
# count is checked to be exactly the hard limit. With two or more CPUs every server shares
# one CPU and wrk runs on another. It stops only the processes it started, by pid.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=fleet.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")

DURATION=${BENCH_DURATION:-8}
ROUNDS=${BENCH_ROUNDS:-5}
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNECTIONS:-32}
SIDECARS=${BENCH_SIDECARS:-3}
LIMIT=${BENCH_LIMIT:-2000}
BIG=${BENCH_BIG:-100000000}
PIN=${BENCH_PIN:-auto}
BUILD=${BENCH_BUILD:-auto}
TOLLGATE_BIN=${TOLLGATE_BIN:-$ROOT/target/release/tollgate}
OUTPUT=${BENCH_OUTPUT:-}
KEEP=${BENCH_KEEP:-0}

usage() {
    cat <<EOF
Usage: benches/fleet.sh [options]

Measures fleet mode (sidecars sharing one license budget through Redis) beside the
embedded store on loopback (see docs/performance.md, "Fleet mode").

Options (each also read from the environment variable in brackets):
  -d, --duration SEC     measured seconds per run (BENCH_DURATION, default $DURATION)
  -r, --rounds N         rounds; the cases rotate order every round (BENCH_ROUNDS, default $ROUNDS)
      --warmup SEC       unmeasured wrk run before each measured run (BENCH_WARMUP, default $WARMUP)
  -c, --connections N    wrk connections per sidecar (BENCH_CONNECTIONS, default $CONNS)
  -n, --sidecars N       sidecars of the multi-sidecar fleet (BENCH_SIDECARS, default $SIDECARS)
      --limit RECORDS    monthly records of the near-limit license; its hard limit is
                         RECORDS + RECORDS / 10 (BENCH_LIMIT, default $LIMIT)
      --big RECORDS      monthly records of the throughput license (BENCH_BIG, default $BIG)
      --pin MODE         auto (wrk on CPU 0, servers on CPU 1 when there are 2+ CPUs),
                         none, or LOAD:SERVERS such as 0:1 (BENCH_PIN, default $PIN)
      --bin PATH         tollgate binary (TOLLGATE_BIN, default target/release/tollgate)
      --build MODE       auto (build when the binary is missing), always, never
                         (BENCH_BUILD, default $BUILD)
  -o, --output FILE      also write every run as tab-separated values (BENCH_OUTPUT)
      --keep             keep the temporary directories and logs (BENCH_KEEP=1)
  -h, --help             this text

Needs nginx, wrk, redis-server and curl (Debian: apt-get install nginx wrk redis-server
curl) and taskset (util-linux) for pinning. Takes about 3 x rounds x (warmup + duration + 1)
seconds, plus about 20 s for start-up and the near-limit runs.
EOF
}

while (($#)); do
    case $1 in
        -d | --duration) DURATION=${2:?}; shift 2 ;;
        -r | --rounds) ROUNDS=${2:?}; shift 2 ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        -c | --connections) CONNS=${2:?}; shift 2 ;;
        -n | --sidecars) SIDECARS=${2:?}; shift 2 ;;
        --limit) LIMIT=${2:?}; shift 2 ;;
        --big) BIG=${2:?}; shift 2 ;;
        --pin) PIN=${2:?}; shift 2 ;;
        --bin) TOLLGATE_BIN=${2:?}; shift 2 ;;
        --build) BUILD=${2:?}; shift 2 ;;
        --no-build) BUILD=never; shift ;;
        -o | --output) OUTPUT=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

# ---------------------------------------------------------------------------- checks

is_count "$DURATION" || die "--duration must be a whole number of seconds, not '$DURATION'"
is_count "$ROUNDS" || die "--rounds must be a positive number, not '$ROUNDS'"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup must be a whole number of seconds, not '$WARMUP'"
is_count "$CONNS" || die "--connections must be a positive number, not '$CONNS'"
if ! is_count "$SIDECARS" || ((SIDECARS < 2 || SIDECARS > 16)); then
    die "--sidecars must be a number from 2 to 16, not '$SIDECARS'"
fi
if ! is_count "$LIMIT" || ((LIMIT < 100)); then
    die "--limit must be a number of records of at least 100, not '$LIMIT'"
fi
is_count "$BIG" || die "--big must be a positive number of records, not '$BIG'"

missing=()
for tool in nginx wrk redis-server curl awk sort getconf timeout; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    die "missing: ${missing[*]}. On Debian or Ubuntu: apt-get install nginx wrk redis-server curl"
fi

CPUS=$(getconf _NPROCESSORS_ONLN)
LOAD_PIN=()
SERVER_PIN=()
case $PIN in
    auto)
        if ((CPUS >= 2)); then
            LOAD_PIN=(taskset -c 0)
            SERVER_PIN=(taskset -c 1)
        fi
        ;;
    none) ;;
    *:*)
        LOAD_PIN=(taskset -c "${PIN%%:*}")
        SERVER_PIN=(taskset -c "${PIN#*:}")
        ;;
    *) die "--pin must be auto, none or LOAD:SERVERS, not '$PIN'" ;;
esac
if ((${#LOAD_PIN[@]})); then
    command -v taskset >/dev/null || die "taskset is missing (util-linux); or use --pin none"
fi

case $BUILD in
    always) (cd "$ROOT" && cargo build --release --locked) ;;
    auto) [[ -x $TOLLGATE_BIN ]] || (cd "$ROOT" && cargo build --release --locked) ;;
    never) ;;
    *) die "--build must be auto, always or never, not '$BUILD'" ;;
esac
[[ -x $TOLLGATE_BIN ]] || die "$TOLLGATE_BIN is not an executable (build it: cargo build --release --locked)"

# ----------------------------------------------------------- processes and clean-up

PIDS=()
LOAD_PIDS=()
declare -A ENGINE ADMIN SPID
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-fleet.XXXXXX")
STATE=""

# Stops the given processes: TERM to all, then up to 10 s for each before KILL.
stop_pids() {
    local pid i
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# The load first, then the sidecars (they give their leases back to Redis as they stop),
# then the upstream and redis-server.
cleanup() {
    local pid others=()
    stop_pids ${LOAD_PIDS[@]+"${LOAD_PIDS[@]}"}
    stop_pids ${SPID[@]+"${SPID[@]}"}
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        [[ " ${SPID[*]} " == *" $pid "* ]] || others+=("$pid")
    done
    stop_pids ${others[@]+"${others[@]}"}
    if ((KEEP)); then
        echo "kept: $WORK${STATE:+ and $STATE}" >&2
    else
        rm -rf "$WORK"
        [[ -z $STATE ]] || rm -rf "$STATE"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TOKEN=$(<"$ROOT/config/admin.token")
TOKEN=${TOKEN//[[:space:]]/}

# The HTTP status of one request ("" when nothing answers).
status_of() {
    local method=$1 url=$2
    if [[ $method == post ]]; then
        curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST -H 'Tollgate-Flow: bench' \
            -H 'Content-Type: application/json' --data '{}' "$url" 2>/dev/null || true
    else
        curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" 2>/dev/null || true
    fi
}

# ------------------------------------------------------------------ servers and licenses

BASE=$(pick_ports 5)
UP_PORT=$BASE             # throughput upstream, no access log
LIMIT_UP_BASE=$((BASE + 1)) # near-limit upstreams, one per case, statuses logged
REDIS_PORT=$((BASE + 4))
HZ=$(getconf CLK_TCK)
CASES=(embedded fleet1 fleetN)

# The throughput upstream, and one near-limit upstream per case that logs the statuses.
limit_servers=$(for i in 0 1 2; do
    record_server $((LIMIT_UP_BASE + i)) "access_log $WORK/upstream/logs/limit-${CASES[i]}.log status;"
done)
nginx_conf "$WORK/upstream" "    log_format status '\$status';
$(record_server "$UP_PORT")
$limit_servers" >"$WORK/upstream.conf"
start upstream nginx -p "$WORK/upstream" -c "$WORK/upstream.conf" -e "$WORK/upstream/logs/error.log"
UP_PID=$LAST_PID
for ((p = BASE; p < BASE + 4; p++)); do await_port upstream "$UP_PID" "$p"; done

start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --daemonize no --dir "$WORK"
REDIS_PID=$LAST_PID
await_port redis "$REDIS_PID" "$REDIS_PORT"

# Licenses signed now with the committed demo issuer key (its public key is trusted by the
# configuration): a large budget for throughput, a small one for the near-limit runs.
sign() {
    local id=$1 records=$2 dir=$3
    mkdir -p "$dir"
    cat >"$WORK/$id.json" <<EOF
{"version":1,"id":"$id","kind":"pair","company":"Bench","registered_to":"Bench","email":"b@bench.example","start":"2026-01-01T00:00:00Z","expire":"2031-01-01T00:00:00Z","system_a":"servicenow","system_b":"jira","points":2,"transferred_records":$records}
EOF
    "$TOLLGATE_BIN" license sign --key "$ROOT/config/demo/issuer.key" --in "$WORK/$id.json" \
        --out "$dir/$id.lic" >"$WORK/sign-$id.txt" 2>&1 || {
        cat "$WORK/sign-$id.txt" >&2
        die "could not sign license $id"
    }
}
sign LIC-BENCH "$BIG" "$WORK/licenses-big"
sign LIC-BENCH-SMALL "$LIMIT" "$WORK/licenses-small"
HARD=$((LIMIT + LIMIT / 10))

# The store goes to the repository's disk, as a real one would (strict durability fsyncs).
mkdir -p "$ROOT/target"
STATE=$(mktemp -d "$ROOT/target/fleet-state.XXXXXX")

# Writes a sidecar's configuration from benches/fleet.toml and starts it.
# sidecar NAME UPSTREAM_PORT LICENSE_DIR FLEET|"" (embedded store)
sidecar() {
    local name=$1 port=$2 licenses=$3 fleet=$4 conf=$WORK/$1.toml want
    local edits=(
        -e "s|^listen = \"127.0.0.1:18190\"|listen = \"127.0.0.1:0\"|"
        -e "s|^listen = \"127.0.0.1:18191\"|listen = \"127.0.0.1:0\"|"
        -e "s|http://127.0.0.1:18080|http://127.0.0.1:$port|"
        -e "s|\"../config/admin.token\"|\"$ROOT/config/admin.token\"|"
        -e "s|\"../config/demo/issuer.pub\"|\"$ROOT/config/demo/issuer.pub\"|"
        -e "s|^license_dir = \"licenses\"|license_dir = \"$licenses\"|"
        -e "s|^dir = \"../target/fleet-state\"|dir = \"$STATE/$name\"|"
    )
    if [[ -n $fleet ]]; then
        edits+=(
            -e "s|^redis = \"redis://127.0.0.1:16379/0\"|redis = \"redis://127.0.0.1:$REDIS_PORT/0\"|"
            -e "s|^fleet = \"bench\"|fleet = \"$fleet\"|"
            -e "s|^node = \"a\"|node = \"$name\"|"
        )
    else
        edits+=(-e '/^\(redis\|fleet\|node\|lease_max\|lease_ttl\|redis_timeout\) = /d')
    fi
    sed "${edits[@]}" "$ROOT/benches/fleet.toml" >"$conf"
    for want in "http://127.0.0.1:$port\"" "$licenses\"" "$STATE/$name\"" \
        ${fleet:+"redis://127.0.0.1:$REDIS_PORT/0\"" "fleet = \"$fleet\"" "node = \"$name\""}; do
        grep -qF "$want" "$conf" ||
            die "benches/fleet.toml changed shape: could not set $want in the copy"
    done
    [[ $(grep -c '^listen = "127.0.0.1:0"$' "$conf") == 2 ]] ||
        die "benches/fleet.toml changed shape: could not set both listeners to port 0"
    if ! "$TOLLGATE_BIN" check --config "$conf" >"$WORK/$name.check.txt" 2>&1; then
        cat "$WORK/$name.check.txt" >&2
        die "tollgate check refused the configuration of sidecar $name"
    fi
    grep -q "1 would be enabled" "$WORK/$name.check.txt" || {
        cat "$WORK/$name.check.txt" >&2
        die "the benchmark flow would not be enabled on sidecar $name"
    }
    start "$name" env RUST_LOG=warn "$TOLLGATE_BIN" run --worker-threads 1 \
        --config "$conf" --ready-file "$WORK/$name.ready.json"
    SPID[$name]=$LAST_PID
}

# Waits for a sidecar's ready file (its bound ports) and for /readyz (a fleet member has
# joined the fleet).
await_sidecar() {
    local name=$1 pid=${SPID[$1]} ready=$WORK/$1.ready.json i
    for ((i = 0; i < 200; i++)); do
        [[ -s $ready ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    [[ -s $ready ]] || {
        tail -n 20 "$WORK/$name.log" >&2 || true
        die "sidecar $name did not become ready"
    }
    ENGINE[$name]=$(sed -n 's/.*"engine":"\([^"]*\)".*/\1/p' "$ready")
    ADMIN[$name]=$(sed -n 's/.*"admin":"\([^"]*\)".*/\1/p' "$ready")
    [[ -n ${ENGINE[$name]} && -n ${ADMIN[$name]} ]] || die "cannot read the ports of $name from $ready"
    for ((i = 0; i < 200; i++)); do
        [[ $(status_of get "http://${ADMIN[$name]}/readyz") == 200 ]] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    tail -n 20 "$WORK/$name.log" >&2 || true
    die "sidecar $name did not answer 200 on /readyz (has it joined the fleet?)"
}

# The sidecars of each case: throughput (T) and near-limit (L).
T_FLEET=()
L_FLEET=()
for ((i = 1; i <= SIDECARS; i++)); do
    T_FLEET+=("node$i")
    L_FLEET+=("lim-node$i")
done
members() { # members T|L CASE: the names, one per line
    case $1:$2 in
        T:embedded) echo emb ;;
        T:fleet1) echo solo ;;
        T:fleetN) printf '%s\n' "${T_FLEET[@]}" ;;
        L:embedded) echo lim-emb ;;
        L:fleet1) echo lim-solo ;;
        L:fleetN) printf '%s\n' "${L_FLEET[@]}" ;;
        *) die "no case $1:$2" ;;
    esac
}

sidecar emb "$UP_PORT" "$WORK/licenses-big" ""
sidecar solo "$UP_PORT" "$WORK/licenses-big" bench-solo
for n in "${T_FLEET[@]}"; do sidecar "$n" "$UP_PORT" "$WORK/licenses-big" bench-fleet; done
sidecar lim-emb "$LIMIT_UP_BASE" "$WORK/licenses-small" ""
sidecar lim-solo "$((LIMIT_UP_BASE + 1))" "$WORK/licenses-small" limit-solo
for n in "${L_FLEET[@]}"; do sidecar "$n" "$((LIMIT_UP_BASE + 2))" "$WORK/licenses-small" limit-fleet; done
ALL=(emb solo "${T_FLEET[@]}" lim-emb lim-solo "${L_FLEET[@]}")
for n in "${ALL[@]}"; do await_sidecar "$n"; done

url_of() { echo "http://${ENGINE[$1]}/bench-upstream/records"; }

# Every throughput sidecar must answer a counted POST with 2xx before anything is measured
# (the near-limit ones are checked by their first run).
for n in emb solo "${T_FLEET[@]}"; do
    code=$(status_of post "$(url_of "$n")")
    [[ $code == 2?? ]] || die "sidecar $n answered ${code:-nothing} to POST $(url_of "$n"); see the logs with --keep"
done

# wrk scripts: the counted POST with its flow header, and one machine-readable line at the
# end. limit.lua also counts answers by status and stops its thread at the first 429, or
# after the number of 2xx answers given as its first argument, and then creates the file
# named by its second (wrk itself sleeps out its -d; the script interrupts it).
cat >"$WORK/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = "{\"short_description\":\"benchmark record\"}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Tollgate-Flow"] = "bench"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n",
    summary.requests, summary.duration,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    e.connect + e.read + e.write + e.timeout, e.status))
end
EOF
cat >"$WORK/limit.lua" <<'EOF'
wrk.method = "POST"
wrk.body = "{\"short_description\":\"benchmark record\"}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Tollgate-Flow"] = "bench"
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args)
  stop_after = tonumber(args[1]) or 0
  marker = args[2]
  ok, refused, other = 0, 0, 0
end
local function stop()
  if marker then
    local f = io.open(marker, "w")
    if f then f:close() end
    marker = nil
  end
  wrk.thread:stop()
end
response = function(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    if stop_after > 0 and ok >= stop_after then stop() end
  elseif status == 429 then
    refused = refused + 1
    stop()
  else
    other = other + 1
  end
end
done = function(summary, latency, requests)
  local o, r, x = 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); r = r + t:get("refused"); x = x + t:get("other")
  end
  local e = summary.errors
  io.write(string.format("LIMIT %d %d %d %d\n", o, r, x,
    e.connect + e.read + e.write + e.timeout))
end
EOF

# ------------------------------------------------------------------------ measuring

RUNS=$WORK/runs.tsv
printf 'kind\tcase\tround\tsidecar\trps\tp50_us\tp99_us\terrors\tloads\tround_trips\tcpu_us\tredis_cpu_us\tsteal_pct\n' >"$RUNS"

# Only ever run in the background (`wrk_run ... &`): it execs, so that $! is the pid of
# timeout, which passes a SIGINT on to wrk.
wrk_run() { # wrk_run SCRIPT CONNECTIONS SECONDS URL [ARG...]
    local script=$1 conns=$2 seconds=$3 url=$4
    shift 4
    exec timeout $((seconds + 30)) ${LOAD_PIN[@]+"${LOAD_PIN[@]}"} wrk -t1 -c"$conns" -d"${seconds}s" \
        --timeout 5s -s "$WORK/$script.lua" "$url" ${1:+--} "$@"
}

# Runs one wrk per named sidecar at once, each writing to $WORK/out-NAME; waits for all.
# wrk_all SCRIPT CONNECTIONS SECONDS ARG NAME...
wrk_all() {
    local script=$1 conns=$2 seconds=$3 arg=$4 n pid
    shift 4
    LOAD_PIDS=()
    for n in "$@"; do
        wrk_run "$script" "$conns" "$seconds" "$(url_of "$n")" ${arg:+"$arg"} >"$WORK/out-$n" 2>&1 &
        LOAD_PIDS+=("$!")
    done
    for pid in "${LOAD_PIDS[@]}"; do
        wait "$pid" || die "wrk failed (exit $?); its output: $(cat "$WORK"/out-* 2>/dev/null)"
    done
    LOAD_PIDS=()
}

# The sums, over the named sidecars, of the Redis round trips and of the allowed requests of
# flow bench (every one a counted load: the upstream answers every POST with 201).
counters() {
    local n out rt=0 loads=0 r l
    for n in "$@"; do
        out=$(curl -sf --max-time 5 "http://${ADMIN[$n]}/metrics") || die "no metrics from sidecar $n"
        read -r r l < <(awk '$1 == "tollgate_fleet_redis_seconds_count" { rt += $2 }
            /^tollgate_requests_total\{/ && /flow="bench"/ && /decision="allowed"/ { a += $NF }
            END { printf "%d %d\n", rt, a }' <<<"$out")
        rt=$((rt + r))
        loads=$((loads + l))
    done
    echo "$rt $loads"
}

# records.used, records.hard_limit and fleet.granted ("-" on the embedded store) of the
# sidecar's license, from /v1/licenses.
license_view() {
    curl -sf --max-time 5 -H "Authorization: Bearer $TOKEN" "http://${ADMIN[$1]}/v1/licenses" |
        awk '/"fleet": \{/ { f = 1 } f && /"granted":/ { g = $2; f = 0 }
            /"records": \{/ { r = 1 } r && /"hard_limit":/ { h = $2 } r && /"used":/ { u = $2; r = 0 }
            END { gsub(/[^0-9]/, "", g); gsub(/[^0-9]/, "", h); gsub(/[^0-9]/, "", u)
                  print (u == "" ? "?" : u), (h == "" ? "?" : h), (g == "" ? "-" : g) }'
}

sidecar_pids() {
    local n
    for n in "$@"; do echo "${SPID[$n]}"; done
}

measure() {
    local case=$1 round=$2 names n out result requests duration p50 p99 errs status
    local c0 c1 t0 t1 r0 r1 s0 s1 pids summary rt0 l0 rt1 l1
    mapfile -t names < <(members T "$case")
    mapfile -t pids < <(sidecar_pids "${names[@]}")
    if ((WARMUP > 0)); then
        wrk_all post "$CONNS" "$WARMUP" "" "${names[@]}"
    fi
    c0=$(counters "${names[@]}")
    t0=$(ticks "${pids[@]}")
    r0=$(ticks "$REDIS_PID")
    s0=$(steal_sample)
    wrk_all post "$CONNS" "$DURATION" "" "${names[@]}"
    s1=$(steal_sample)
    c1=$(counters "${names[@]}")
    t1=$(ticks "${pids[@]}")
    r1=$(ticks "$REDIS_PID")
    alive
    for n in "${names[@]}"; do
        out=$(<"$WORK/out-$n")
        result=$(grep '^RESULT ' <<<"$out") || die "no result from wrk for $n ($case): $out"
        read -r _ requests duration p50 p99 errs status <<<"$result"
        ((requests > 0)) || die "wrk made no request to $n ($case)"
        awk -v c="$case" -v r="$round" -v s="$n" -v n="$requests" -v d="$duration" \
            -v p50="$p50" -v p99="$p99" -v e="$((errs + status))" 'BEGIN {
                printf "sidecar\t%s\t%d\t%s\t%.1f\t%d\t%d\t%d\tNA\tNA\tNA\tNA\tNA\n", c, r, s, n / (d / 1e6), p50, p99, e }' >>"$RUNS"
    done
    read -r rt0 l0 <<<"$c0"
    read -r rt1 l1 <<<"$c1"
    summary=$(awk -F'\t' -v c="$case" -v r="$round" -v loads="$((l1 - l0))" -v rt="$((rt1 - rt0))" -v hz="$HZ" \
        -v cpu="$((t1 - t0))" -v rcpu="$((r1 - r0))" -v s0="$s0" -v s1="$s1" '
        NR > 1 && $1 == "sidecar" && $2 == c && $3 == r { rps += $5; e += $8; if ($6 > p50) p50 = $6; if ($7 > p99) p99 = $7 }
        END {
            split(s0, a, " "); split(s1, b, " ")
            steal = (b[1] > a[1]) ? 100 * (b[2] - a[2]) / (b[1] - a[1]) : 0
            printf "case\t%s\t%d\tall\t%.1f\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%.1f\n", c, r, rps, p50, p99, e, loads, rt,
                (loads > 0 ? sprintf("%.2f", cpu * 1e6 / hz / loads) : "NA"),
                (loads > 0 ? sprintf("%.2f", rcpu * 1e6 / hz / loads) : "NA"), steal
        }' "$RUNS")
    echo "$summary" >>"$RUNS"
}

# Runs limit.lua on each named sidecar at once (CONNECTIONS each, at most SECONDS) until
# every one has stopped (at its first 429, or after COUNT_FOR[NAME] 2xx answers when that is
# set); samples the counters at that moment into STOPPED_AT, then interrupts wrk (which
# prints its results on SIGINT) and waits for it. drive CONNECTIONS SECONDS NAME...
declare -A COUNT_FOR
drive() {
    local conns=$1 seconds=$2 n pid all running
    shift 2
    LOAD_PIDS=()
    for n in "$@"; do
        rm -f "$WORK/stop-$n"
        wrk_run limit "$conns" "$seconds" "$(url_of "$n")" "${COUNT_FOR[$n]:-0}" "$WORK/stop-$n" \
            >"$WORK/out-$n" 2>&1 &
        LOAD_PIDS+=("$!")
    done
    while :; do
        all=1
        for n in "$@"; do [[ -e $WORK/stop-$n ]] || { all=0; break; }; done
        ((all)) && break
        running=0
        for pid in "${LOAD_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && running=1; done
        ((running)) || break
        sleep 0.01
    done
    STOPPED_AT=$(counters "$@")
    for pid in "${LOAD_PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${LOAD_PIDS[@]}"; do
        wait "$pid" || die "wrk failed (exit $?); its output: $(cat "$WORK"/out-* 2>/dev/null)"
    done
    LOAD_PIDS=()
    COUNT_FOR=()
}

# The sums over the named sidecars of limit.lua's counts (2xx, 429, other answers, socket
# errors), then the sidecars that refused.
drive_counts() {
    local n o r x e so=0 sr=0 sx=0 se=0 refused=()
    for n in "$@"; do
        read -r _ o r x e < <(grep '^LIMIT ' "$WORK/out-$n") ||
            die "no result from wrk for $n: $(<"$WORK/out-$n")"
        so=$((so + o)); sr=$((sr + r)); sx=$((sx + x)); se=$((se + e))
        ((r == 0)) || refused+=("$n")
    done
    echo "$so $sr $sx $se ${refused[*]}"
}

# Near the hard limit: drives a case's sidecars (1 connection each) to 90% of the hard
# limit, then at full load until each has answered 429 (the window measured), then, after
# pauses in which leftovers nobody draws from go back (1 s near the limit), once more until
# none takes a load; and records the round trips of the window and the final counts.
declare -A NL_RT NL_LOADS NL_FROM NL_TOTAL NL_UP NL_USED NL_GRANTED NL_EXTRA NL_OTHER
near_limit() {
    local case=$1 names n k need each first c0 c1 c2 rt0 l0 rt1 l1 l2 hard view used granted g
    local other=0 extra_total=0 try o r x e refused
    mapfile -t names < <(members L "$case")
    k=${#names[@]}
    read -r _ hard _ <<<"$(license_view "${names[0]}")"
    [[ $hard == "$HARD" ]] || die "sidecar ${names[0]} reports a hard limit of $hard, expected $HARD"
    read -r _ l0 <<<"$(counters "${names[@]}")"
    need=$((HARD - HARD / 10 - l0))
    if ((need > 0)); then
        each=$((need / k))
        first=$((need - each * (k - 1)))
        for n in "${names[@]}"; do
            COUNT_FOR[$n]=$first
            first=$each
        done
        drive 1 60 "${names[@]}"
        read -r o r x e refused <<<"$(drive_counts "${names[@]}")"
        ((r == 0)) || echo "fleet.sh: warning: $refused refused $r load(s) on the way to 90% of the hard limit ($case)" >&2
        other=$((other + x + e))
    fi
    c0=$(counters "${names[@]}")
    drive "$CONNS" 30 "${names[@]}"
    c1=$STOPPED_AT
    read -r o r x e refused <<<"$(drive_counts "${names[@]}")"
    other=$((other + x + e))
    for ((try = 0; try < 3; try++)); do
        sleep 1.5
        drive 1 5 "${names[@]}"
        read -r o r x e refused <<<"$(drive_counts "${names[@]}")"
        other=$((other + x + e))
        extra_total=$((extra_total + o))
        ((o > 0)) || break
    done
    sleep 0.5 # a round, so that every sidecar has read the fleet's final count
    c2=$(counters "${names[@]}")
    alive
    read -r rt0 l0 <<<"$c0"
    read -r rt1 l1 <<<"$c1"
    read -r _ l2 <<<"$c2"
    NL_FROM[$case]=$l0
    NL_LOADS[$case]=$((l1 - l0))
    NL_RT[$case]=$((rt1 - rt0))
    NL_TOTAL[$case]=$l2
    NL_EXTRA[$case]=$extra_total
    NL_OTHER[$case]=$other
    NL_UP[$case]=$(grep -c '^201$' "$WORK/upstream/logs/limit-$case.log" || true)
    used=""
    granted=""
    for n in "${names[@]}"; do
        read -r view _ g <<<"$(license_view "$n")"
        used+="${used:+/}$view"
        [[ $g == - ]] || granted=$g
    done
    NL_USED[$case]=$used
    NL_GRANTED[$case]=${granted:--}
    printf 'limit\t%s\t1\tall\tNA\tNA\tNA\t%d\t%d\t%d\tNA\tNA\tNA\n' "$case" "$other" "$((l1 - l0))" "$((rt1 - rt0))" >>"$RUNS"
}

runs=$((${#CASES[@]} * ROUNDS))
estimate=$(awk -v n="$runs" -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%.0f", n * (d + w + 1) + 15 }')
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
state_fs=$(stat -f -c %T "$STATE" 2>/dev/null || echo "?")
{
    echo "tollgate fleet mode, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
    echo "machine: $CPUS CPU(s), ${cpu_model:-unknown CPU}, kernel $(uname -r)"
    echo "tools: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }'), redis $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'), $("$TOLLGATE_BIN" --version)"
    if ((${#LOAD_PIN[@]})); then
        echo "pinning: wrk on CPU ${LOAD_PIN[2]}; upstream, redis-server and every sidecar on CPU ${SERVER_PIN[2]}"
    else
        echo "pinning: none"
    fi
    echo "load average at the start: $LOAD_AT_START (anything else busy on this machine skews every figure)"
    echo "runs: $runs x (${WARMUP} s warm-up + ${DURATION} s), ${ROUNDS} rounds, $CONNS connections per sidecar, about ${estimate} s; stores on $state_fs"
}

for ((round = 1; round <= ROUNDS; round++)); do
    n=${#CASES[@]}
    for ((i = 0; i < n; i++)); do
        c=${CASES[(i + round - 1) % n]}
        printf '\r  round %d/%d  %-8s ' "$round" "$ROUNDS" "$c" >&2
        measure "$c" "$round"
    done
done
for c in "${CASES[@]}"; do
    printf '\r  near the limit  %-8s ' "$c" >&2
    near_limit "$c"
done
printf '\r%60s\r' '' >&2

[[ -z $OUTPUT ]] || cp "$RUNS" "$OUTPUT"

# ------------------------------------------------------------------------ the table

# The median over rounds of one column of a case's rows of one kind ("NA" without numbers).
median() {
    local kind=$1 case=$2 sidecar=$3 col=$4
    awk -F'\t' -v k="$kind" -v c="$case" -v s="$sidecar" -v col="$col" \
        'NR > 1 && $1 == k && $2 == c && $4 == s && $col != "NA" { print $col }' "$RUNS" |
        sort -g |
        awk '{ v[NR] = $1 } END {
            if (NR == 0) print "NA"
            else if (NR % 2) print v[(NR + 1) / 2]
            else print (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}
case_sum() {
    awk -F'\t' -v c="$1" -v col="$2" 'NR > 1 && $1 == "case" && $2 == c { s += $col } END { print s + 0 }' "$RUNS"
}
case_max() {
    awk -F'\t' -v c="$1" -v col="$2" 'NR > 1 && $1 == "case" && $2 == c && $col > m { m = $col } END { printf "%.1f\n", m + 0 }' "$RUNS"
}
per_load() { # round trips / loads, or NA
    awk -v rt="$1" -v n="$2" -v fleet="$3" 'BEGIN { if (!fleet || n == 0) print "NA"; else printf "%.4f", rt / n }'
}
ms() { # microseconds to milliseconds, each of a /-separated list
    awk -v v="$1" 'BEGIN { k = split(v, a, "/"); for (i = 1; i <= k; i++) { s = s (i > 1 ? "/" : "") (a[i] == "NA" ? "NA" : sprintf("%.2f", a[i] / 1000)) } print s }'
}
row() {
    printf '%-44s %16s %16s %24s\n' "$@"
}
per_sidecar() { # per_sidecar CASE COLUMN: the median of each sidecar, /-separated
    local case=$1 col=$2 n out=""
    while read -r n; do
        out+="${out:+/}$(median sidecar "$case" "$n" "$col")"
    done < <(members T "$case")
    echo "$out"
}

echo
echo "medians over $ROUNDS rounds of ${DURATION} s; wrk -t1 -c$CONNS per sidecar; one license, one flow"
row "" "embedded" "fleet" "fleet"
row "sidecars" "1" "1" "$SIDECARS"
row "counted loads/s (sum over sidecars)" \
    "$(fmt "$(median case embedded all 5)" '%.0f')" "$(fmt "$(median case fleet1 all 5)" '%.0f')" \
    "$(fmt "$(median case fleetN all 5)" '%.0f')"
row "p50 ms (each sidecar)" "$(ms "$(per_sidecar embedded 6)")" "$(ms "$(per_sidecar fleet1 6)")" \
    "$(ms "$(per_sidecar fleetN 6)")"
row "p99 ms (each sidecar)" "$(ms "$(per_sidecar embedded 7)")" "$(ms "$(per_sidecar fleet1 7)")" \
    "$(ms "$(per_sidecar fleetN 7)")"
row "CPU µs per load, sidecars" "$(fmt "$(median case embedded all 11)" '%.1f')" \
    "$(fmt "$(median case fleet1 all 11)" '%.1f')" "$(fmt "$(median case fleetN all 11)" '%.1f')"
row "CPU µs per load, redis-server" "NA" "$(fmt "$(median case fleet1 all 12)" '%.1f')" \
    "$(fmt "$(median case fleetN all 12)" '%.1f')"
row "errors (wrk, all rounds)" "$(case_sum embedded 8)" "$(case_sum fleet1 8)" "$(case_sum fleetN 8)"
row "steal % (highest round)" "$(case_max embedded 13)" "$(case_max fleet1 13)" "$(case_max fleetN 13)"
row "Redis round trips per counted load, steady" \
    "$(per_load "$(case_sum embedded 10)" "$(case_sum embedded 9)" 0)" \
    "$(per_load "$(case_sum fleet1 10)" "$(case_sum fleet1 9)" 1)" \
    "$(per_load "$(case_sum fleetN 10)" "$(case_sum fleetN 9)" 1)"
row "  (round trips / counted loads, all rounds)" "-" \
    "$(case_sum fleet1 10)/$(case_sum fleet1 9)" "$(case_sum fleetN 10)/$(case_sum fleetN 9)"

echo
echo "near the hard limit: limit $LIMIT, hard limit $HARD; from 90% of it at -c$CONNS per sidecar until 429"
row "" "embedded" "fleet" "fleet"
row "Redis round trips per counted load" "NA" \
    "$(per_load "${NL_RT[fleet1]}" "${NL_LOADS[fleet1]}" 1)" "$(per_load "${NL_RT[fleetN]}" "${NL_LOADS[fleetN]}" 1)"
row "  (round trips / loads, from count)" "-/${NL_LOADS[embedded]} from ${NL_FROM[embedded]}" \
    "${NL_RT[fleet1]}/${NL_LOADS[fleet1]} from ${NL_FROM[fleet1]}" "${NL_RT[fleetN]}/${NL_LOADS[fleetN]} from ${NL_FROM[fleetN]}"
row "loads after 1.5 s pauses (leftovers)" "${NL_EXTRA[embedded]}" "${NL_EXTRA[fleet1]}" "${NL_EXTRA[fleetN]}"
row "counted (allowed, sum over sidecars)" "${NL_TOTAL[embedded]}" "${NL_TOTAL[fleet1]}" "${NL_TOTAL[fleetN]}"
row "201 answers seen by the upstream" "${NL_UP[embedded]}" "${NL_UP[fleet1]}" "${NL_UP[fleetN]}"
row "records.used (each sidecar)" "${NL_USED[embedded]}" "${NL_USED[fleet1]}" "${NL_USED[fleetN]}"
row "fleet.granted" "${NL_GRANTED[embedded]}" "${NL_GRANTED[fleet1]}" "${NL_GRANTED[fleetN]}"
row "answers other than 2xx/429, socket errors" "${NL_OTHER[embedded]}" "${NL_OTHER[fleet1]}" "${NL_OTHER[fleetN]}"

exact=1
verdicts=()
for c in "${CASES[@]}"; do
    ok=1
    [[ ${NL_UP[$c]} == "$HARD" && ${NL_TOTAL[$c]} == "$HARD" ]] || ok=0
    IFS=/ read -ra used <<<"${NL_USED[$c]}"
    for u in "${used[@]}"; do [[ $u == "$HARD" ]] || ok=0; done
    if ((ok)); then verdicts+=("exact"); else verdicts+=("NOT EXACT"); exact=0; fi
done
row "exactly the hard limit counted" "${verdicts[@]}"
((exact)) || die "the count at the hard limit is not exactly $HARD in every case (see the rows above)"
