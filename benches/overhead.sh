#!/usr/bin/env bash
# benches/overhead.sh: what tollgate costs as a reverse proxy, measured beside nginx on
# loopback. See docs/performance.md for how to read the table it prints.
#
# It starts, on free high ports and in temporary directories:
#   upstream  nginx, 1 worker: GET answers 200, POST answers 201, each a small JSON body
#   nginx     nginx, 1 worker, reverse proxy to the upstream with a keepalive pool (the peer)
#   tollgate  target/release/tollgate run --worker-threads 1, with benches/proxy-overhead.toml
#             adapted to those ports: POST /bench-upstream/records is a counted main-entity
#             load (strict durability, or --durability batched), GET is not counted
# then drives each target with wrk (one thread) for every workload, interleaving the targets
# over several rounds, and prints medians. With two or more CPUs the servers share one CPU
# and wrk runs on another. It also times fdatasync on the store's disk (python3), the unit a
# strict counted load waits for. It stops only the processes it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=overhead.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

DURATION=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-5}
WARMUP=${BENCH_WARMUP:-1}
WORKLOADS=${BENCH_WORKLOADS:-get@32,post@32,get@1,post@1}
TARGETS=${BENCH_TARGETS:-nginx,tollgate}
PIN=${BENCH_PIN:-auto}
BUILD=${BENCH_BUILD:-auto}
TOLLGATE_BIN=${TOLLGATE_BIN:-$ROOT/target/release/tollgate}
OUTPUT=${BENCH_OUTPUT:-}
KEEP=${BENCH_KEEP:-0}
DURABILITY=${BENCH_DURABILITY:-strict}

usage() {
    cat <<EOF
Usage: benches/overhead.sh [options]

Measures tollgate's proxy overhead beside nginx on loopback (see docs/performance.md).

Options (each also read from the environment variable in brackets):
  -d, --duration SEC     measured seconds per run (BENCH_DURATION, default $DURATION)
  -r, --rounds N         rounds; targets rotate order every round (BENCH_ROUNDS, default $ROUNDS)
      --warmup SEC       unmeasured wrk run before each measured run (BENCH_WARMUP, default $WARMUP)
  -w, --workloads LIST   comma-separated METHOD@CONNECTIONS, METHOD get or post
                         (BENCH_WORKLOADS, default $WORKLOADS)
  -t, --targets LIST     comma-separated from direct, nginx, tollgate
                         (BENCH_TARGETS, default $TARGETS; direct = no proxy)
      --pin MODE         auto (wrk on CPU 0, servers on CPU 1 when there are 2+ CPUs),
                         none, or LOAD:SERVERS such as 0:1 (BENCH_PIN, default $PIN)
      --durability MODE  tollgate's state.durability: strict or batched
                         (BENCH_DURABILITY, default $DURABILITY)
      --bin PATH         tollgate binary (TOLLGATE_BIN, default target/release/tollgate)
      --build MODE       auto (build when the binary is missing), always, never
                         (BENCH_BUILD, default $BUILD)
  -o, --output FILE      also write every run as tab-separated values (BENCH_OUTPUT)
      --keep             keep the temporary directories and logs (BENCH_KEEP=1)
  -h, --help             this text

Needs nginx and wrk (Debian: apt-get install nginx wrk), taskset (util-linux) for pinning,
and python3 to time fdatasync on the store's disk (NA without it). Takes about workloads x
rounds x targets x (warmup + duration + 0.5) seconds.
EOF
}

while (($#)); do
    case $1 in
        -d | --duration) DURATION=${2:?}; shift 2 ;;
        -r | --rounds) ROUNDS=${2:?}; shift 2 ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        -w | --workloads) WORKLOADS=${2:?}; shift 2 ;;
        -t | --targets) TARGETS=${2:?}; shift 2 ;;
        --pin) PIN=${2:?}; shift 2 ;;
        --durability) DURABILITY=${2:?}; shift 2 ;;
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
[[ $DURABILITY == strict || $DURABILITY == batched ]] ||
    die "--durability must be strict or batched, not '$DURABILITY'"

IFS=, read -ra WORKLOAD_LIST <<<"$WORKLOADS"
for wl in "${WORKLOAD_LIST[@]}"; do
    if ! [[ $wl =~ ^(get|post)@[0-9]+$ ]] || ! is_count "${wl#*@}"; then
        die "workload '$wl' is not METHOD@CONNECTIONS with METHOD get or post (e.g. post@32)"
    fi
done
IFS=, read -ra TARGET_LIST <<<"$TARGETS"
((${#TARGET_LIST[@]})) || die "--targets is empty"
for t in "${TARGET_LIST[@]}"; do
    [[ $t == direct || $t == nginx || $t == tollgate ]] ||
        die "target '$t' is not one of direct, nginx, tollgate"
done
has_target() {
    local t
    for t in "${TARGET_LIST[@]}"; do [[ $t == "$1" ]] && return 0; done
    return 1
}

missing=()
for tool in nginx wrk awk sort getconf; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    die "missing: ${missing[*]}. On Debian or Ubuntu: apt-get install nginx wrk"
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

if has_target tollgate; then
    case $BUILD in
        always) (cd "$ROOT" && cargo build --release --locked) ;;
        auto) [[ -x $TOLLGATE_BIN ]] || (cd "$ROOT" && cargo build --release --locked) ;;
        never) ;;
        *) die "--build must be auto, always or never, not '$BUILD'" ;;
    esac
    [[ -x $TOLLGATE_BIN ]] || die "$TOLLGATE_BIN is not an executable (build it: cargo build --release --locked)"
fi

# ----------------------------------------------------------- processes and clean-up

PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-overhead.XXXXXX")
STATE=""

cleanup() {
    local pid i
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if ((KEEP)); then
        echo "kept: $WORK${STATE:+ and $STATE}" >&2
    else
        rm -rf "$WORK"
        [[ -z $STATE ]] || rm -rf "$STATE"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The HTTP status of one request, sent over bash's /dev/tcp ("" when nothing answers).
status_of() {
    local method=$1 port=$2 path=$3
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 0
        if [[ $method == post ]]; then
            printf 'POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nTollgate-Flow: bench\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}' "$path" >&3
        else
            printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nTollgate-Flow: bench\r\nConnection: close\r\n\r\n' "$path" >&3
        fi
        IFS=' ' read -r -t 5 _ code _ <&3 || true
        echo "${code:-}"
    ) 2>/dev/null
}

# ------------------------------------------------------------------------- servers

BASE=$(pick_ports 4)
UP_PORT=$BASE
NGINX_PORT=$((BASE + 1))
TG_PORT=$((BASE + 2))
ADMIN_PORT=$((BASE + 3))
HZ=$(getconf CLK_TCK)

nginx_conf "$WORK/upstream" "$(record_server "$UP_PORT")" >"$WORK/upstream.conf"
start upstream nginx -p "$WORK/upstream" -c "$WORK/upstream.conf" -e "$WORK/upstream/logs/error.log"
UP_PID=$LAST_PID
await_port upstream "$UP_PID" "$UP_PORT"

NGINX_PID=""
if has_target nginx; then
    nginx_conf "$WORK/nginx" "    upstream bench_upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }" >"$WORK/nginx.conf"
    start nginx nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" -e "$WORK/nginx/logs/error.log"
    NGINX_PID=$LAST_PID
    await_port nginx "$NGINX_PID" "$NGINX_PORT"
fi

TG_PID=""
if has_target tollgate; then
    # The store goes to the repository's disk, as a real one would (strict durability fsyncs).
    mkdir -p "$ROOT/target"
    STATE=$(mktemp -d "$ROOT/target/overhead-state.XXXXXX")
    sed -e "s|127.0.0.1:18090|127.0.0.1:$TG_PORT|" \
        -e "s|127.0.0.1:18091|127.0.0.1:$ADMIN_PORT|" \
        -e "s|http://127.0.0.1:18080|http://127.0.0.1:$UP_PORT|" \
        -e "s|\"../config/admin.token\"|\"$ROOT/config/admin.token\"|" \
        -e "s|\"../config/demo/issuer.pub\"|\"$ROOT/config/demo/issuer.pub\"|" \
        -e "s|^license_dir = \"licenses\"|license_dir = \"$ROOT/benches/licenses\"|" \
        -e "s|^dir = \"../target/bench-state\"|dir = \"$STATE\"\ndurability = \"$DURABILITY\"|" \
        "$ROOT/benches/proxy-overhead.toml" >"$WORK/tollgate.toml"
    for want in "127.0.0.1:$TG_PORT" "127.0.0.1:$ADMIN_PORT" "127.0.0.1:$UP_PORT" "$STATE" "$ROOT/benches/licenses" "durability = \"$DURABILITY\""; do
        grep -qF "$want" "$WORK/tollgate.toml" ||
            die "benches/proxy-overhead.toml changed shape: could not set $want in the copy"
    done
    if ! "$TOLLGATE_BIN" check --config "$WORK/tollgate.toml" >"$WORK/check.txt" 2>&1; then
        cat "$WORK/check.txt" >&2
        die "tollgate check refused the benchmark configuration"
    fi
    grep -q "1 would be enabled" "$WORK/check.txt" || {
        cat "$WORK/check.txt" >&2
        die "the benchmark flow would not be enabled (is benches/licenses/bench.lic valid today?)"
    }
    start tollgate env RUST_LOG=warn "$TOLLGATE_BIN" run --worker-threads 1 \
        --config "$WORK/tollgate.toml" --ready-file "$WORK/ready.json"
    TG_PID=$LAST_PID
    await_port tollgate "$TG_PID" "$TG_PORT"
fi

url_of() {
    case $1 in
        direct) echo "http://127.0.0.1:$UP_PORT/records" ;;
        nginx) echo "http://127.0.0.1:$NGINX_PORT/records" ;;
        tollgate) echo "http://127.0.0.1:$TG_PORT/bench-upstream/records" ;;
    esac
}
port_of() {
    case $1 in
        direct) echo "$UP_PORT" ;;
        nginx) echo "$NGINX_PORT" ;;
        tollgate) echo "$TG_PORT" ;;
    esac
}
pid_of() {
    case $1 in
        direct) echo "" ;;
        nginx) echo "$NGINX_PID" ;;
        tollgate) echo "$TG_PID" ;;
    esac
}

# Every target must answer both methods with 2xx before anything is measured.
for t in "${TARGET_LIST[@]}"; do
    for m in get post; do
        url=$(url_of "$t")
        code=$(status_of "$m" "$(port_of "$t")" "/${url#http://*/}")
        [[ $code == 2?? ]] || die "$t answered ${code:-nothing} to ${m^^} $url; see the logs with --keep"
    done
done

# wrk scripts: the method, and one machine-readable line at the end.
for m in get post; do
    {
        if [[ $m == post ]]; then
            echo 'wrk.method = "POST"'
            echo 'wrk.body = "{\"short_description\":\"benchmark record\"}"'
            echo 'wrk.headers["Content-Type"] = "application/json"'
        fi
        cat <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n",
    summary.requests, summary.duration,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    e.connect + e.read + e.write + e.timeout, e.status))
end
EOF
    } >"$WORK/$m.lua"
done

# The median time of 200 fdatasyncs, in µs, each after a 64-byte write, of a file preallocated
# in the store's directory: what one strict commit batch waits for ("NA" without python3 or a
# store).
sync_p50() {
    if [[ -z $STATE ]] || ! command -v python3 >/dev/null; then
        echo NA
        return
    fi
    python3 - "$STATE/fdatasync-probe" <<'EOF'
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, b"\0" * (1 << 20))
os.fsync(fd)
samples = []
for i in range(200):
    os.pwrite(fd, b"x" * 64, i * 4096 % (1 << 20))
    start = time.perf_counter_ns()
    os.fdatasync(fd)
    samples.append(time.perf_counter_ns() - start)
os.close(fd)
os.unlink(sys.argv[1])
samples.sort()
print("%.0f" % (samples[len(samples) // 2] / 1000))
EOF
}

# ------------------------------------------------------------------------ measuring

RUNS=$WORK/runs.tsv
printf 'workload\ttarget\tround\trps\tp50_us\tp99_us\terrors\tproxy_cpu_us\tupstream_cpu_us\tcost_rel\tsteal_pct\n' >"$RUNS"

wrk_run() {
    local method=$1 conns=$2 seconds=$3 url=$4
    timeout $((seconds + 30)) ${LOAD_PIN[@]+"${LOAD_PIN[@]}"} wrk -t1 -c"$conns" -d"${seconds}s" --timeout 5s \
        -H 'Tollgate-Flow: bench' -s "$WORK/$method.lua" "$url"
}

measure() {
    local wl=$1 target=$2 round=$3 method=${1%@*} conns=${1#*@}
    local url pid out result up0 up1 px0=0 px1=0 s0 s1 requests duration p50 p99 errs status
    url=$(url_of "$target")
    pid=$(pid_of "$target")
    if ((WARMUP > 0)); then
        wrk_run "$method" "$conns" "$WARMUP" "$url" >/dev/null
    fi
    up0=$(ticks "$UP_PID")
    [[ -z $pid ]] || px0=$(ticks "$pid")
    s0=$(steal_sample)
    out=$(wrk_run "$method" "$conns" "$DURATION" "$url")
    s1=$(steal_sample)
    up1=$(ticks "$UP_PID")
    [[ -z $pid ]] || px1=$(ticks "$pid")
    alive
    result=$(grep '^RESULT ' <<<"$out") || die "no result from wrk for $target $wl: $out"
    read -r _ requests duration p50 p99 errs status <<<"$result"
    ((requests > 0)) || die "wrk made no request to $target ($wl)"
    awk -v wl="$wl" -v t="$target" -v r="$round" -v n="$requests" -v d="$duration" \
        -v p50="$p50" -v p99="$p99" -v e="$((errs + status))" -v hz="$HZ" \
        -v up="$((up1 - up0))" -v px="$((px1 - px0))" -v proxied="${pid:+1}" \
        -v s0="$s0" -v s1="$s1" 'BEGIN {
            up_us = up * 1e6 / hz / n
            split(s0, a, " "); split(s1, b, " ")
            steal = (b[1] > a[1]) ? 100 * (b[2] - a[2]) / (b[1] - a[1]) : 0
            if (proxied) {
                px_us = px * 1e6 / hz / n
                rel = (up_us > 0) ? sprintf("%.4f", px_us / up_us) : "NA"
                px_us = sprintf("%.2f", px_us)
            } else { px_us = "NA"; rel = "NA" }
            printf "%s\t%s\t%d\t%.1f\t%d\t%d\t%d\t%s\t%.2f\t%s\t%.1f\n",
                wl, t, r, n / (d / 1e6), p50, p99, e, px_us, up_us, rel, steal
        }' >>"$RUNS"
}

runs=$((${#WORKLOAD_LIST[@]} * ROUNDS * ${#TARGET_LIST[@]}))
estimate=$(awk -v n="$runs" -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%.0f", n * (d + w + 0.5) }')
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
state_fs=${STATE:+$(stat -f -c %T "$STATE" 2>/dev/null || echo "?")}
SYNC_BEFORE=$(sync_p50)
SYNCS=()
{
    echo "tollgate proxy overhead, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
    echo "machine: $CPUS CPU(s), ${cpu_model:-unknown CPU}, kernel $(uname -r)"
    echo "tools: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }')${TG_PID:+, $("$TOLLGATE_BIN" --version)}"
    if ((${#LOAD_PIN[@]})); then
        echo "pinning: wrk on CPU ${LOAD_PIN[2]}, upstream and proxies on CPU ${SERVER_PIN[2]}"
    else
        echo "pinning: none"
    fi
    echo "runs: $runs x (${WARMUP} s warm-up + ${DURATION} s), ${ROUNDS} rounds, about ${estimate} s${STATE:+; tollgate store on $state_fs, $DURABILITY durability}"
    [[ -z $STATE ]] || echo "store disk: fdatasync p50 $SYNC_BEFORE us before the runs (200 syncs, each of a 64-byte write)"
}

for wl in "${WORKLOAD_LIST[@]}"; do
    for ((round = 1; round <= ROUNDS; round++)); do
        n=${#TARGET_LIST[@]}
        for ((i = 0; i < n; i++)); do
            target=${TARGET_LIST[(i + round - 1) % n]}
            printf '\r  %-8s round %d/%d  %-8s ' "$wl" "$round" "$ROUNDS" "$target" >&2
            # The disk's speed drifts: time fdatasync right before each one-connection
            # counted run, which waits for it on every load.
            [[ $target != tollgate || $wl != post@1 ]] || SYNCS+=("$(sync_p50)")
            measure "$wl" "$target" "$round"
        done
    done
done
printf '\r%60s\r' '' >&2

[[ -z $OUTPUT ]] || cp "$RUNS" "$OUTPUT"

# ------------------------------------------------------------------------ the table

# The median of one column for one workload and target ("NA" when there is no number).
median() {
    local wl=$1 target=$2 col=$3
    awk -F'\t' -v wl="$wl" -v t="$target" -v c="$col" \
        'NR > 1 && $1 == wl && $2 == t && $c != "NA" { print $c }' "$RUNS" |
        sort -g |
        awk '{ v[NR] = $1 } END {
            if (NR == 0) print "NA"
            else if (NR % 2) print v[(NR + 1) / 2]
            else print (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}
column_sum() {
    awk -F'\t' -v wl="$1" -v t="$2" -v c="$3" 'NR > 1 && $1 == wl && $2 == t { s += $c } END { print s + 0 }' "$RUNS"
}
column_max() {
    awk -F'\t' -v wl="$1" -v t="$2" -v c="$3" 'NR > 1 && $1 == wl && $2 == t && $c > m { m = $c } END { print m + 0 }' "$RUNS"
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "NA"; else printf "%.2f", a / b }'
}
echo
echo "medians over $ROUNDS rounds of ${DURATION} s; wrk -t1; ratios are against nginx in this run"
for wl in "${WORKLOAD_LIST[@]}"; do
    echo
    method=${wl%@*}
    if [[ $method == post ]]; then
        echo "POST, ${wl#*@} connection(s): a counted main-entity load through tollgate ($DURABILITY durability)"
    else
        echo "GET, ${wl#*@} connection(s): uncounted"
    fi
    printf '%-9s %9s %6s %7s %7s %8s %8s %8s %5s %6s\n' \
        target req/s x_ngx p50_us p99_us cpu_us up_us cost/ngx err steal%
    ngx_rps=NA
    ngx_rel=NA
    if has_target nginx; then
        ngx_rps=$(median "$wl" nginx 4)
        ngx_rel=$(median "$wl" nginx 10)
    fi
    for t in "${TARGET_LIST[@]}"; do
        rps=$(median "$wl" "$t" 4)
        rel=$(median "$wl" "$t" 10)
        printf '%-9s %9s %6s %7s %7s %8s %8s %8s %5s %6s\n' "$t" \
            "$(fmt "$rps" '%.0f')" "$(ratio "$rps" "$ngx_rps")" \
            "$(fmt "$(median "$wl" "$t" 5)" '%.0f')" "$(fmt "$(median "$wl" "$t" 6)" '%.0f')" \
            "$(fmt "$(median "$wl" "$t" 8)" '%.1f')" "$(fmt "$(median "$wl" "$t" 9)" '%.1f')" \
            "$(ratio "$rel" "$ngx_rel")" "$(column_sum "$wl" "$t" 7)" \
            "$(fmt "$(column_max "$wl" "$t" 11)" '%.1f')"
    done
    if [[ $wl == post@1 && ${#SYNCS[@]} -gt 0 ]] && has_target nginx; then
        sync=$(printf '%s\n' "${SYNCS[@]}" | awk '$1 != "NA"' | sort -g |
            awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; else print "NA" }')
        awk -v t="$(median "$wl" tollgate 5)" -v n="$(median "$wl" nginx 5)" -v s="$sync" \
            -v each="${SYNCS[*]}" 'BEGIN {
                if (s == "NA") { print "fdatasync: NA (no python3)"; exit }
                printf "tollgate p50 - nginx p50 = %d us = %.2f x the store disk'"'"'s fdatasync p50 (%d us: the median of %s us, timed before each tollgate round)\n", t - n, (t - n) / s, s, each
            }'
    fi
done
