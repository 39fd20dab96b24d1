#!/usr/bin/env bash
# Connection rate of netproxy's PROXY ports against nginx's stream module, on loopback.
#
#   Benchmarks/compare.sh [--streams] [--access-log] [--csv FILE] [--runs N] [--connections N] [--concurrency N]
#
# Rows: nginx PROXY v2, nginx PROXY v1, nginx plain, netproxy PROXY v2, netproxy PROXY v1,
# netproxy regular. Each connection sends its header (if any), reads a one-line answer naming the
# client (nginx: `return "$proxy_protocol_addr $proxy_protocol_port\n"`; netproxy: whoami's JSON)
# and closes. Both servers run at once, and the rows take turns (backwards every other round):
# a warm-up run of each row, then RUNS rounds; a row's rate and latencies come from its fastest
# run, its server CPU time per connection (user + system) is the median of its runs. On loopback
# the kernel does part of the server's TCP work in the load generator's context, so that CPU
# figure counts only what runs in the server's own threads (its code and its system calls). The
# table (markdown) goes to standard output and OUT/compare.md, every run to the CSV file.
#
# --access-log adds two rows, a second netproxy with "access_log" set (a file in the work
# directory): "netproxy+log PROXY v2" and "v1", and their ratios to the rows without it.
#
# --streams instead measures echo throughput through netproxy: STREAM_BYTES (1 GiB) in all
# over 1 connection and over 16, on a PROXY port (v2 header) and on a regular port; every byte
# that comes back is checked. Table in OUT/streams.md, runs in OUT/streams.csv.
#
# --csv FILE puts the runs there instead. Chart: Benchmarks/chart.sh OUT.png OUT/compare.csv.
#
# At its default log level (info) netproxy logs a line for every connection it hands to a
# service; LOG_LEVEL=warning measures it without. nginx runs with access_log off.
#
# Environment (flags win):
#   NETPROXY=path    a release netproxy to use instead of building one (swift build -c release
#                    --product netproxy, plus SWIFT_BUILD_FLAGS, e.g. "--scratch-path DIR")
#   CONNECTIONS      connections per run (20000)      CONCURRENCY  in flight (64)
#   RUNS             measured runs per row (3)         THREADS      load generator threads (2)
#   STREAM_BYTES     bytes per --streams run, all connections together (1073741824)
#   LOG_LEVEL        netproxy's --log-level (unset: its default, info)
#   OUT              directory for the table and the CSV (default: a new temporary one)
#
# Run as root on a Debian machine to have nginx and its stream module installed if missing.
# Stops only what it started, by PID. Exit status 1 if any run had an error.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
mode=connections
csv=""
access_log=0
CONNECTIONS=${CONNECTIONS:-20000}
CONCURRENCY=${CONCURRENCY:-64}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
STREAM_BYTES=${STREAM_BYTES:-1073741824}
LOG_LEVEL=${LOG_LEVEL:-}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while (($#)); do
    case "$1" in
        --streams) mode=streams ;;
        --access-log) access_log=1 ;;
        --csv | --runs | --connections | --concurrency)
            (($# >= 2)) || { echo "compare.sh: $1 needs a value" >&2; exit 2; }
            case "$1" in
                --csv) csv=$2 ;;
                --runs) RUNS=$2 ;;
                --connections) CONNECTIONS=$2 ;;
                --concurrency) CONCURRENCY=$2 ;;
            esac
            shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

OUT=${OUT:-$(mktemp -d /tmp/netproxy-compare.XXXXXX)}
mkdir -p "$OUT"
if [ -z "$csv" ]; then
    if [ "$mode" = streams ]; then csv=$OUT/streams.csv; else csv=$OUT/compare.csv; fi
fi
work=$(mktemp -d /tmp/netproxy-compare-work.XXXXXX)

# --- cleanup: only what this script started ---------------------------------------------------
pids=()
policy_created=false
# shellcheck source=Benchmarks/common.sh
. "$repo/Benchmarks/common.sh"
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [ "$policy_created" = true ] && rm -f /usr/sbin/policy-rc.d
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- nginx and its stream module ----------------------------------------------------------------
stream_module=/usr/lib/nginx/modules/ngx_stream_module.so
if [ "$mode" = connections ]; then
    install_packages nginx libnginx-mod-stream
    [ -e "$stream_module" ] || { echo "compare.sh: no $stream_module" >&2; exit 1; }
fi

# --- netproxy and the load generator ------------------------------------------------------------
build_tools

# --- servers ------------------------------------------------------------------------------------
start_nginx() { # PROXY_PORT PLAIN_PORT
    local prefix=$work/nginx
    mkdir -p "$prefix"
    cat >"$prefix/nginx.conf" <<EOF
load_module $stream_module;
daemon off;
worker_processes auto;
pid $prefix/nginx.pid;
error_log $prefix/error.log;
events {
    worker_connections 8192;
}
stream {
    access_log off;
    server {
        listen 127.0.0.1:$1 proxy_protocol;
        return "\$proxy_protocol_addr \$proxy_protocol_port\n";
    }
    server {
        listen 127.0.0.1:$2;
        return "\$remote_addr \$remote_port\n";
    }
}
EOF
    nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" >"$prefix/stdout.log" 2>&1 &
    nginx_pid=$!
    pids+=("$nginx_pid")
    if ! wait_listening "$nginx_pid" "$1" "$2"; then
        echo "compare.sh: nginx did not start:" >&2
        tail -5 "$prefix/error.log" "$prefix/stdout.log" >&2
        exit 1
    fi
}

start_netproxy() { # CONFIG_JSON NAME
    local directory=$work/$2
    mkdir -p "$directory"
    printf '%s\n' "$1" >"$directory/config.json"
    local arguments=(serve --config "$directory/config.json")
    [ -n "$LOG_LEVEL" ] && arguments+=(--log-level "$LOG_LEVEL")
    "$NETPROXY" "${arguments[@]}" >"$directory/stdout.log" 2>"$directory/stderr.log" &
    netproxy_pid=$!
    pids+=("$netproxy_pid")
    # The banner is written once every listener is bound.
    for _ in $(seq 600); do
        grep -q "^netproxy is listening:" "$directory/stdout.log" && return 0
        kill -0 "$netproxy_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "compare.sh: netproxy did not start:" >&2
    tail -5 "$directory/stderr.log" >&2
    exit 1
}

netproxy_config() { # REGULAR_PORT PROXY_PORT SERVICE [ACCESS_LOG]
    local access_log_entry=""
    [ -n "${4:-}" ] && access_log_entry="\"access_log\": \"$4\","
    cat <<EOF
{
  $access_log_entry
  "interfaces": ["127.0.0.1"],
  "$3_ports": [$1],
  "proxy_port_mappings": { "$2": "$3" },
  "proxy_trusted_proxies": ["127.0.0.0/8"]
}
EOF
}

# CPU time (utime + stime, in clock ticks) of a server: the process and its children (nginx's
# workers). A figure that other work on the machine disturbs less than conn/s.
clock_ticks=$(getconf CLK_TCK)
server_ticks() {
    local total=0 pid fields
    for pid in "$1" $(pgrep -P "$1" || true); do
        fields=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        set -- $fields
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}

# field NAME LINE: the value of NAME=... in the generator's line
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }

failed=0

# --- connection rate ----------------------------------------------------------------------------
if [ "$mode" = connections ]; then
    nginx_proxy_port=$(free_port)
    nginx_plain_port=$(free_port)
    netproxy_regular_port=$(free_port)
    netproxy_proxy_port=$(free_port)
    start_nginx "$nginx_proxy_port" "$nginx_plain_port"
    start_netproxy "$(netproxy_config "$netproxy_regular_port" "$netproxy_proxy_port" whoami)" netproxy

    rows=("nginx PROXY v2" "nginx PROXY v1" "nginx plain" "netproxy PROXY v2" "netproxy PROXY v1" "netproxy regular")
    ports=("$nginx_proxy_port" "$nginx_proxy_port" "$nginx_plain_port" "$netproxy_proxy_port" "$netproxy_proxy_port" "$netproxy_regular_port")
    headers=(v2 v1 none v2 v1 none)
    servers=("$nginx_pid" "$nginx_pid" "$nginx_pid" "$netproxy_pid" "$netproxy_pid" "$netproxy_pid")
    if [ "$access_log" = 1 ]; then
        logged_regular_port=$(free_port)
        logged_proxy_port=$(free_port)
        start_netproxy "$(netproxy_config "$logged_regular_port" "$logged_proxy_port" whoami "$work/access.log")" netproxy-logged
        rows+=("netproxy+log PROXY v2" "netproxy+log PROXY v1")
        ports+=("$logged_proxy_port" "$logged_proxy_port")
        headers+=(v2 v1)
        servers+=("$netproxy_pid" "$netproxy_pid")
    fi
    declare -A best best_p50 best_p99 cpu
    echo "row,server,header,run,conns,errors,seconds,conn_per_s,p50_us,p90_us,p99_us,max_us,reply_bytes_min,reply_bytes_max,server_cpu_us_per_conn" >"$csv"
    echo "$CONNECTIONS connections per run, $CONCURRENCY in flight, $THREADS generator threads; warm-up, then best of $RUNS" >&2
    for run in $(seq 0 "$RUNS"); do
        for i in $(round_order "${#rows[@]}" "$run"); do
            ticks_before=$(server_ticks "${servers[$i]}")
            line=$("$load" -p "${ports[$i]}" -x "${headers[$i]}" -n "$CONNECTIONS" -c "$CONCURRENCY" -t "$THREADS") || true
            ticks=$(($(server_ticks "${servers[$i]}") - ticks_before))
            [ -n "$line" ] || line="conns=$CONNECTIONS errors=$CONNECTIONS"
            cpu_per_conn=$((ticks * 1000000 / clock_ticks / CONNECTIONS))
            label=$([ "$run" = 0 ] && echo warm-up || echo "run $run")
            printf '%-18s %-8s %s\n' "${rows[$i]}" "$label" "$line" >&2
            errors=$(field errors "$line")
            if [ "${errors:-1}" != 0 ]; then failed=1; fi
            echo "${rows[$i]},${rows[$i]%% *},${headers[$i]},$run,$(field conns "$line"),$errors,$(field seconds "$line"),$(field conn_per_s "$line"),$(field p50_us "$line"),$(field p90_us "$line"),$(field p99_us "$line"),$(field max_us "$line"),$(field reply_bytes_min "$line"),$(field reply_bytes_max "$line"),$cpu_per_conn" >>"$csv"
            [ "$run" = 0 ] && continue
            cpu[$i]="${cpu[$i]:-} $cpu_per_conn"
            rate=$(field conn_per_s "$line")
            if [ -z "${best[$i]:-}" ] || [ "${rate:-0}" -gt "${best[$i]}" ]; then
                best[$i]=${rate:-0}
                best_p50[$i]=$(field p50_us "$line")
                best_p99[$i]=$(field p99_us "$line")
            fi
        done
    done

    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf (b > 0 ? "%.2f" : "n/a"), (b > 0 ? a / b : 0) }'; }
    ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
    median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
    {
        echo "| server | conn/s | p50 ms | p99 ms | server CPU µs/conn |"
        echo "| --- | ---: | ---: | ---: | ---: |"
        declare -A cpu_median
        for i in "${!rows[@]}"; do
            cpu_median[$i]=$(median "${cpu[$i]}")
            echo "| ${rows[$i]} | ${best[$i]} | $(ms "${best_p50[$i]}") | $(ms "${best_p99[$i]}") | ${cpu_median[$i]} |"
        done
        echo
        echo "| ratio | conn/s | server CPU µs/conn |"
        echo "| --- | ---: | ---: |"
        pairs=("3 0 netproxy PROXY v2 / nginx PROXY v2" "4 1 netproxy PROXY v1 / nginx PROXY v1"
            "3 5 netproxy PROXY v2 / netproxy regular" "0 2 nginx PROXY v2 / nginx plain")
        if [ "$access_log" = 1 ]; then
            pairs+=("6 3 netproxy+log PROXY v2 / netproxy PROXY v2" "7 4 netproxy+log PROXY v1 / netproxy PROXY v1")
        fi
        for pair in "${pairs[@]}"; do
            set -- $pair
            a=$1 b=$2
            shift 2
            echo "| $* | $(ratio "${best[$a]}" "${best[$b]}") | $(ratio "${cpu_median[$a]}" "${cpu_median[$b]}") |"
        done
        echo
        echo "$CONNECTIONS connections per run, $CONCURRENCY in flight; conn/s, p50 and p99 from each row's fastest of $RUNS runs after a warm-up, server CPU (user + system, all threads and worker processes) the median of the runs; loopback, $(nproc) cores; nginx $(nginx -v 2>&1 | sed 's|.*/||'), netproxy log level ${LOG_LEVEL:-default}."
    } | tee "$OUT/compare.md"
fi

# --- echo throughput ----------------------------------------------------------------------------
if [ "$mode" = streams ]; then
    regular_port=$(free_port)
    proxy_port=$(free_port)
    start_netproxy "$(netproxy_config "$regular_port" "$proxy_port" echo)" netproxy-echo
    rows=("regular, 1 connection" "PROXY v2, 1 connection" "regular, 16 connections" "PROXY v2, 16 connections")
    ports=("$regular_port" "$proxy_port" "$regular_port" "$proxy_port")
    headers=(none v2 none v2)
    streams=(1 1 16 16)
    declare -A best
    echo "row,header,streams,run,bytes,seconds,mb_per_s,errors" >"$csv"
    echo "$STREAM_BYTES bytes per run each way; warm-up, then best of $RUNS" >&2
    for run in $(seq 0 "$RUNS"); do
        for i in "${!rows[@]}"; do
            per_stream=$((STREAM_BYTES / streams[i]))
            line=$("$load" -p "${ports[$i]}" -x "${headers[$i]}" -c "${streams[$i]}" -s "$per_stream" -t "$THREADS") || true
            [ -n "$line" ] || line="streams=${streams[$i]} errors=${streams[$i]}"
            label=$([ "$run" = 0 ] && echo warm-up || echo "run $run")
            printf '%-25s %-8s %s\n' "${rows[$i]}" "$label" "$line" >&2
            errors=$(field errors "$line")
            if [ "${errors:-1}" != 0 ]; then failed=1; fi
            echo "${rows[$i]//,/},${headers[$i]},${streams[$i]},$run,$(field bytes "$line"),$(field seconds "$line"),$(field mb_per_s "$line"),$errors" >>"$csv"
            [ "$run" = 0 ] && continue
            rate=$(field mb_per_s "$line")
            if [ -z "${best[$i]:-}" ] || awk -v a="${rate:-0}" -v b="${best[$i]}" 'BEGIN { exit !(a > b) }'; then
                best[$i]=${rate:-0}
            fi
        done
    done
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf (b > 0 ? "%.2f" : "n/a"), (b > 0 ? a / b : 0) }'; }
    {
        echo "| netproxy echo | regular MB/s | PROXY v2 MB/s | PROXY / regular |"
        echo "| --- | ---: | ---: | ---: |"
        echo "| 1 connection | ${best[0]} | ${best[1]} | $(ratio "${best[1]}" "${best[0]}") |"
        echo "| 16 connections | ${best[2]} | ${best[3]} | $(ratio "${best[3]}" "${best[2]}") |"
        echo
        echo "$STREAM_BYTES bytes each way per run (MB = 10^6 bytes, counted one way); best of $RUNS runs after a warm-up; loopback, $(nproc) cores."
    } | tee "$OUT/streams.md"
fi

echo "results: $csv (every run), $OUT" >&2
if [ "$failed" != 0 ]; then
    echo "compare.sh: some runs had errors (see above)" >&2
    exit 1
fi
