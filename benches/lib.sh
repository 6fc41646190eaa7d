#!/usr/bin/env bash
# benches/lib.sh: what the bench scripts share: starting pinned servers and waiting for their
# ports, free ports, nginx configurations and the target nginx plays, CPU ticks of processes,
# steal time, number formatting. Sourced, not run; the caller sets PROG (its name, for messages), WORK (its
# temporary directory), PIDS (the servers it started) and SERVER_PIN (the taskset prefix).

die() {
    echo "$PROG: $*" >&2
    exit 1
}

is_count() { [[ $1 =~ ^[0-9]+$ ]] && (($1 > 0)); }

# An nginx configuration (one worker, in the foreground, its files under DIR) whose http
# block holds BODY: nginx_conf DIR BODY >FILE.
nginx_conf() {
    local dir=$1 body=$2
    mkdir -p "$dir/logs"
    cat <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
$body
}
EOF
}

# The server block of an nginx that plays a target on 127.0.0.1:PORT: POST answers 201,
# anything else 200, each with a small JSON body; EXTRA (a directive) goes into the block.
record_server() {
    local port=$1 extra=${2:-}
    cat <<EOF
    server {
        listen 127.0.0.1:$port backlog=4096;${extra:+
        $extra}
        location / {
            default_type application/json;
            if (\$request_method = POST) { return 201 '{"id":"REC-1","created":true}'; }
            return 200 '{"id":"REC-1","status":"ok"}';
        }
    }
EOF
}

# Starts a server in the background, pinned like the others; its pid goes to PIDS. The pid
# is the server's own (taskset and env exec it), which matters for redis-server: it rewrites
# its process title, so it is never looked up by name.
start() {
    local name=$1
    shift
    ${SERVER_PIN[@]+"${SERVER_PIN[@]}"} "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    # shellcheck disable=SC2034 # the caller reads it
    LAST_PID=$!
}

# Whether something listens on a TCP port (IPv4 or IPv6, any address).
listening() {
    local hex
    hex=$(printf ':%04X' "$1")
    awk -v port="$hex" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == port { found = 1 }
        END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Waits until a started server listens on its port, or fails with its log.
await_port() {
    local name=$1 pid=$2 port=$3 i
    for ((i = 0; i < 200; i++)); do
        listening "$port" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    tail -n 20 "$WORK/$name.log" >&2 || true
    die "$name did not start listening on port $port"
}

# COUNT distinct free ports in a row from a random base in 20000-59999.
pick_ports() {
    local count=$1 tries base p ok
    for ((tries = 0; tries < 50; tries++)); do
        base=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        ok=1
        for ((p = base; p < base + count; p++)); do
            if listening "$p"; then ok=0; break; fi
        done
        if ((ok)); then
            echo "$base"
            return 0
        fi
    done
    die "found no $count free ports in a row"
}

# CPU time (clock ticks, user + system) of processes and their child processes.
ticks() {
    local total=0 pid p stat fields
    for pid in "$@"; do
        # shellcheck disable=SC2046 # the children files hold space-separated pids
        for p in "$pid" $(cat "/proc/$pid/task/"*/children 2>/dev/null); do
            stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
            read -ra fields <<<"${stat##*\) }"
            total=$((total + fields[11] + fields[12]))
        done
    done
    echo "$total"
}

# Busy and steal jiffies of the whole machine, for the steal percentage.
steal_sample() {
    awk '$1 == "cpu" { total = 0; for (i = 2; i <= NF; i++) total += $i; print total, $9; exit }' /proc/stat
}

alive() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "a server (pid $pid) died; rerun with --keep and read its log in $WORK"
    done
}

fmt() {
    awk -v v="$1" -v f="$2" 'BEGIN { if (v == "NA" || v == "") print "NA"; else printf f, v }'
}
