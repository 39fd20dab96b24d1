#!/usr/bin/env bash
# The forward hop: HAProxy, nginx, netproxy and a bare SwiftNIO forwarder side by side, each taking
# connections with a PROXY header and relaying them to the same target, on loopback.
#
#   Benchmarks/forward.sh [--parts LIST] [--csv FILE] [--runs N] [--connections N]
#                         [--concurrency N] [--idle-connections N] [--stream-bytes N]
#
# The four proxies run at once, each reading a version 2 header from the client:
#   HAProxy  `bind ... accept-proxy`, `mode tcp`, `nbthread 2`, a `server` line per target
#   nginx    stream module, `listen ... proxy_protocol`, `proxy_pass`, 2 workers, `access_log
#            off`, `set_real_ip_from 127.0.0.0/8` (so the header's source is the client's);
#            `proxy_half_close on` towards the echo target, which answers after the client's FIN
#   netproxy `serve --config FILE --log-level LOG_LEVEL`, PROXY ports mapped to `forward`
#            services (`target`, and `send_proxy` where the header is re-sent)
#   floor    Benchmarks/floor (nio-forward-floor): the least a SwiftNIO program does for the same
#            hop, with the socket settings netproxy uses and none of its work (no trust list,
#            deadlines, budgets, metrics, log). HAProxy -> floor is what SwiftNIO and Swift cost;
#            floor -> netproxy is what netproxy's own work costs
# The targets run in processes of their own, whose CPU and memory are never counted:
#   line     nginx stream, 2 workers: one port answers `$remote_addr $remote_port\n` and closes
#            (for a plain forward, which tells the target nothing about the client); another
#            reads a PROXY header and answers `$proxy_protocol_addr $proxy_protocol_port\n`
#   echo     a second `netproxy serve`, with one `echo_ports` listener (a regular port): it
#            sends back every byte, and keeps a silent connection open (idle_timeout 3600 s)
#
# Parts (--parts, comma-separated; default rate,idle,relay), in that order:
#   rate   Connections per second through the hop: CONNECTIONS per run, CONCURRENCY in flight,
#          each sending a v2 header, reading the target's line to EOF and closing
#          (Benchmarks/load/load.c). Two sets of four rows. "plain forward": nothing is sent to
#          the line target before the client's bytes; its line names the proxy, so load checks
#          only that a reply came (-N). "header re-sent": HAProxy `send-proxy-v2`, netproxy
#          `"send_proxy": "v2"`, the floor the client's header as received, nginx
#          `proxy_protocol on` (nginx writes version 1 only), to the
#          PROXY-reading port, and load checks that each reply names the source address and
#          port its own header claimed: the client's address went through end to end. The eight
#          rows take turns (backwards every other round), a warm-up round and then RUNS
#          rounds; conn/s, p50 and p99 come from a row's fastest run, the proxy's CPU time per
#          connection (user + system of the proxy's own processes: HAProxy's, nginx's master
#          and workers, netproxy's; from /proc/PID/stat) is the median of its runs.
#   idle   Memory per idle forwarded connection. Benchmarks/hold.py opens IDLE_CONNECTIONS
#          connections through one proxy at a time to the echo target; each sends its v2
#          header and stays silent. Once the echo target holds all of them (counted with ss),
#          the sum of VmRSS over the proxy's processes is compared with the same sum just
#          before; the connections are then closed and the RSS read again. Once per proxy, after
#          the rate part: a second round would mostly reuse memory the allocator kept from the
#          first.
#   relay  Throughput: load's stream mode (-s) through each proxy to the echo target,
#          STREAM_BYTES in all (each way) over 1 connection and over 16; load checks every byte
#          that comes back. Best of RUNS after a warm-up round; the proxy's CPU time per GiB
#          relayed (each way) is the median.
#
# Each part prints a markdown table with `netproxy / HAProxy`, `floor / HAProxy` and
# `netproxy / floor` columns; the three go to
# OUT/forward.md, every run to OUT/forward.csv (or --csv FILE), the servers' configurations and
# logs to OUT/servers.
#
# Environment (flags win):
#   NETPROXY=path     a release netproxy to use instead of building one (swift build -c release
#                     --product netproxy, plus SWIFT_BUILD_FLAGS, e.g. "--scratch-path DIR")
#   FLOOR=path        a release nio-forward-floor to use instead of building one (the same way, in
#                     Benchmarks/floor; SWIFT_NIO_PATH=dir builds it against that swift-nio copy)
#   CONNECTIONS       connections per rate run (20000)   CONCURRENCY  in flight (64)
#   RUNS              measured rounds (3)                 THREADS      load generator threads (2)
#   IDLE_CONNECTIONS  connections held per proxy (4000)
#   STREAM_BYTES      bytes per relay run, all connections together, each way (1073741824)
#   LOG_LEVEL         both netproxy processes' --log-level (warning)
#   OUT               directory for the tables and the CSV (default: a new temporary one)
#
# Descriptors: the script raises its soft limit to the hard one, which every process it starts
# inherits; HAProxy's maxconn and nginx's worker_connections are set to half of it, netproxy
# raises its own soft limit and derives max_connections from it. A forwarded connection takes
# two descriptors in the proxy, so IDLE_CONNECTIONS must stay below half the limit.
#
# Needs haproxy, nginx with its stream module, python3, cc and ss; run as root on Debian to have
# haproxy and nginx installed if missing. Stops only what it started, by PID. Exit status 1 if
# any run had an error (a failed or wrong reply, a stream byte that differs, connections that
# did not all get through).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
parts=rate,idle,relay
csv=""
CONNECTIONS=${CONNECTIONS:-20000}
CONCURRENCY=${CONCURRENCY:-64}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-4000}
STREAM_BYTES=${STREAM_BYTES:-1073741824}
LOG_LEVEL=${LOG_LEVEL:-warning}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while (($#)); do
    case "$1" in
        --parts | --csv | --runs | --connections | --concurrency | --idle-connections | --stream-bytes)
            (($# >= 2)) || { echo "forward.sh: $1 needs a value" >&2; exit 2; }
            case "$1" in
                --parts) parts=$2 ;;
                --csv) csv=$2 ;;
                --runs) RUNS=$2 ;;
                --connections) CONNECTIONS=$2 ;;
                --concurrency) CONCURRENCY=$2 ;;
                --idle-connections) IDLE_CONNECTIONS=$2 ;;
                --stream-bytes) STREAM_BYTES=$2 ;;
            esac
            shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "forward.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for name in CONNECTIONS CONCURRENCY RUNS THREADS IDLE_CONNECTIONS STREAM_BYTES; do
    [[ ${!name} =~ ^[1-9][0-9]*$ ]] || { echo "forward.sh: $name must be a positive whole number, not ${!name}" >&2; exit 2; }
done
declare -A part_on=()
IFS=, read -r -a part_list <<<"$parts"
for part in "${part_list[@]}"; do
    case "$part" in
        rate | idle | relay) part_on[$part]=1 ;;
        *) echo "forward.sh: unknown part $part (rate, idle, relay)" >&2; exit 2 ;;
    esac
done
wants() { [ -n "${part_on[$1]:-}" ]; }

OUT=${OUT:-$(mktemp -d /tmp/netproxy-forward.XXXXXX)}
mkdir -p "$OUT"
[ -n "$csv" ] || csv=$OUT/forward.csv
work=$(mktemp -d /tmp/netproxy-forward-work.XXXXXX)

# --- cleanup: only what this script started ---------------------------------------------------
pids=()
policy_created=false
# shellcheck source=Benchmarks/common.sh
. "$repo/Benchmarks/common.sh"
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
forget_pid() { # PID: stopped already, so never signalled again
    local kept=() pid
    for pid in "${pids[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    pids=(${kept[@]+"${kept[@]}"})
}
cleanup() {
    local status=$?
    for pid in ${pids[@]+"${pids[@]}"}; do stop_pid "$pid"; done
    [ "$policy_created" = true ] && rm -f /usr/sbin/policy-rc.d
    # The servers' configurations and logs stay in OUT/servers.
    local directory
    for directory in "$work"/*/; do
        [ -d "$directory" ] || continue
        mkdir -p "$OUT/servers"
        cp -r "$directory" "$OUT/servers/" 2>/dev/null || true
    done
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- haproxy, nginx and its stream module -------------------------------------------------------
stream_module=/usr/lib/nginx/modules/ngx_stream_module.so
command -v dpkg-query >/dev/null && install_packages haproxy nginx libnginx-mod-stream
for tool in haproxy nginx python3 cc ss pgrep; do
    command -v "$tool" >/dev/null || { echo "forward.sh: $tool not found" >&2; exit 1; }
done
[ -e "$stream_module" ] || { echo "forward.sh: no $stream_module" >&2; exit 1; }

# --- descriptors --------------------------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
[ "$nofile" = unlimited ] && nofile=1048576
# Half the limit per proxy: a forwarded connection holds a client's and a target's descriptor.
proxy_maxconn=$(((nofile - 256) / 2))
if wants idle && ((IDLE_CONNECTIONS > proxy_maxconn - 64)); then
    echo "forward.sh: IDLE_CONNECTIONS=$IDLE_CONNECTIONS does not fit in the descriptor limit ($nofile): at most $((proxy_maxconn - 64))" >&2
    exit 2
fi

# --- netproxy, the floor and the load generator ------------------------------------------------
build_tools
if [ -z "${FLOOR:-}" ]; then
    echo "building nio-forward-floor (release)..." >&2
    # shellcheck disable=SC2086
    (cd "$repo/Benchmarks/floor" && swift build -c release ${SWIFT_BUILD_FLAGS:-} >&2)
    # shellcheck disable=SC2086
    FLOOR=$(cd "$repo/Benchmarks/floor" && swift build -c release ${SWIFT_BUILD_FLAGS:-} --show-bin-path)/nio-forward-floor
fi
[ -x "$FLOOR" ] || { echo "forward.sh: $FLOOR is not an executable" >&2; exit 1; }

# --- servers ------------------------------------------------------------------------------------

started_pid=""
start_nginx() { # NAME CONFIG_BODY PORT...
    local name=$1 body=$2 prefix=$work/$1
    shift 2
    mkdir -p "$prefix"
    cat >"$prefix/nginx.conf" <<EOF
load_module $stream_module;
daemon off;
worker_processes 2;
worker_rlimit_nofile $nofile;
pid $prefix/nginx.pid;
error_log $prefix/error.log;
events {
    worker_connections $proxy_maxconn;
}
stream {
    access_log off;
$body
}
EOF
    nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" >"$prefix/stdout.log" 2>&1 &
    started_pid=$!
    pids+=("$started_pid")
    if ! wait_listening "$started_pid" "$@"; then
        echo "forward.sh: nginx ($name) did not start:" >&2
        tail -5 "$prefix/error.log" "$prefix/stdout.log" >&2
        exit 1
    fi
}

start_haproxy() { # PLAIN_PORT RESEND_PORT RELAY_PORT
    local directory=$work/haproxy
    mkdir -p "$directory"
    cat >"$directory/haproxy.cfg" <<EOF
global
    nbthread 2
    maxconn $proxy_maxconn

defaults
    mode tcp
    maxconn $proxy_maxconn
    timeout connect 5s
    timeout client 600s
    timeout server 600s

frontend plain
    bind 127.0.0.1:$1 accept-proxy
    default_backend line

frontend resend
    bind 127.0.0.1:$2 accept-proxy
    default_backend line_proxy

frontend relay
    bind 127.0.0.1:$3 accept-proxy
    default_backend echo

backend line
    server line 127.0.0.1:$line_port

backend line_proxy
    server line 127.0.0.1:$line_proxy_port send-proxy-v2

backend echo
    server echo 127.0.0.1:$echo_port
EOF
    if ! haproxy -c -q -f "$directory/haproxy.cfg" >"$directory/check.log" 2>&1; then
        echo "forward.sh: haproxy rejects its configuration:" >&2
        cat "$directory/check.log" >&2
        exit 1
    fi
    haproxy -db -f "$directory/haproxy.cfg" >"$directory/stdout.log" 2>&1 &
    haproxy_pid=$!
    pids+=("$haproxy_pid")
    if ! wait_listening "$haproxy_pid" "$1" "$2" "$3"; then
        echo "forward.sh: haproxy did not start:" >&2
        tail -5 "$directory/stdout.log" >&2
        exit 1
    fi
}

start_netproxy() { # NAME CONFIG_JSON
    local directory=$work/$1
    mkdir -p "$directory"
    printf '%s\n' "$2" >"$directory/config.json"
    "$NETPROXY" serve --config "$directory/config.json" --log-level "$LOG_LEVEL" \
        >"$directory/stdout.log" 2>"$directory/stderr.log" &
    started_pid=$!
    pids+=("$started_pid")
    # The banner is written once every listener is bound.
    for _ in $(seq 600); do
        grep -qs "^netproxy is listening:" "$directory/stdout.log" && return 0
        kill -0 "$started_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "forward.sh: netproxy ($1) did not start:" >&2
    tail -5 "$directory/stderr.log" >&2
    exit 1
}

start_floor() { # PLAIN_PORT RESEND_PORT RELAY_PORT
    local directory=$work/floor
    mkdir -p "$directory"
    "$FLOOR" "$1=$line_port" "$2=$line_proxy_port,resend" "$3=$echo_port" >"$directory/stdout.log" 2>&1 &
    floor_pid=$!
    pids+=("$floor_pid")
    if ! wait_listening "$floor_pid" "$1" "$2" "$3"; then
        echo "forward.sh: nio-forward-floor did not start:" >&2
        tail -5 "$directory/stdout.log" >&2
        exit 1
    fi
}

# CPU time (utime + stime, in clock ticks) of a proxy: the process (all its threads) and its
# children (nginx's workers).
clock_ticks=$(getconf CLK_TCK)
proxy_ticks() {
    local total=0 pid fields
    for pid in "$1" $(pgrep -P "$1" || true); do
        fields=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        # shellcheck disable=SC2086
        set -- $fields
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}

# Resident memory (KiB) of a proxy: VmRSS summed over the process and its children.
proxy_rss_kib() {
    local total=0 pid rss
    for pid in "$1" $(pgrep -P "$1" || true); do
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${rss:-0}))
    done
    echo "$total"
}

established() { # PORT local|remote: established TCP connections with that local or remote port
    local side=sport
    [ "$2" = remote ] && side=dport
    ss -Htn state established "( $side = :$1 )" | wc -l
}

# field NAME LINE: the value of NAME=... in the generator's line
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf (b > 0 ? "%.2f" : "n/a"), (b > 0 ? a / b : 0) }'; }
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : 0) }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
table_row() { # LABEL HAPROXY NGINX NETPROXY FLOOR
    echo "| $1 | $2 | $3 | $4 | $5 | $(ratio "$4" "$2") | $(ratio "$5" "$2") | $(ratio "$4" "$5") |"
}
table_head() { # TITLE
    echo "| $1 | HAProxy | nginx | netproxy | floor | netproxy / HAProxy | floor / HAProxy | netproxy / floor |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
}

# --- start everything ---------------------------------------------------------------------------
line_port=$(free_port)
line_proxy_port=$(free_port)
echo_port=$(free_port)
start_nginx line "    server {
        listen 127.0.0.1:$line_port;
        return \"\$remote_addr \$remote_port\\n\";
    }
    server {
        listen 127.0.0.1:$line_proxy_port proxy_protocol;
        return \"\$proxy_protocol_addr \$proxy_protocol_port\\n\";
    }" "$line_port" "$line_proxy_port"
# Every connection of the idle part comes from 127.0.0.1: the per-source limit must let them in.
start_netproxy echo "{
  \"interfaces\": [\"127.0.0.1\"],
  \"echo_ports\": [$echo_port],
  \"idle_timeout\": 3600,
  \"max_connections_per_source\": $((IDLE_CONNECTIONS + 100))
}"

proxies=(HAProxy nginx netproxy floor)
declare -A plain_port resend_port relay_port proxy_pid
for proxy in "${proxies[@]}"; do
    plain_port[$proxy]=$(free_port)
    resend_port[$proxy]=$(free_port)
    relay_port[$proxy]=$(free_port)
done
start_haproxy "${plain_port[HAProxy]}" "${resend_port[HAProxy]}" "${relay_port[HAProxy]}"
proxy_pid[HAProxy]=$haproxy_pid
start_nginx nginx "    set_real_ip_from 127.0.0.0/8;
    server {
        listen 127.0.0.1:${plain_port[nginx]} proxy_protocol;
        proxy_pass 127.0.0.1:$line_port;
    }
    server {
        listen 127.0.0.1:${resend_port[nginx]} proxy_protocol;
        proxy_pass 127.0.0.1:$line_proxy_port;
        proxy_protocol on;
    }
    server {
        listen 127.0.0.1:${relay_port[nginx]} proxy_protocol;
        proxy_pass 127.0.0.1:$echo_port;
        proxy_half_close on;
    }" "${plain_port[nginx]}" "${resend_port[nginx]}" "${relay_port[nginx]}"
proxy_pid[nginx]=$started_pid
start_netproxy netproxy "{
  \"interfaces\": [\"127.0.0.1\"],
  \"proxy_port_mappings\": {
    \"${plain_port[netproxy]}\": \"plain\",
    \"${resend_port[netproxy]}\": \"resend\",
    \"${relay_port[netproxy]}\": \"relay\"
  },
  \"proxy_trusted_proxies\": [\"127.0.0.0/8\"],
  \"forward_services\": {
    \"plain\": { \"target\": \"127.0.0.1:$line_port\" },
    \"resend\": { \"target\": \"127.0.0.1:$line_proxy_port\", \"send_proxy\": \"v2\" },
    \"relay\": { \"target\": \"127.0.0.1:$echo_port\" }
  }
}"
proxy_pid[netproxy]=$started_pid
start_floor "${plain_port[floor]}" "${resend_port[floor]}" "${relay_port[floor]}"
proxy_pid[floor]=$floor_pid

versions="HAProxy $(haproxy -v | sed -n 's/^HAProxy version \([^ ]*\).*/\1/p'), nginx $(nginx -v 2>&1 | sed 's|.*/||')"
conditions="loopback, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start; $versions; netproxy log level $LOG_LEVEL; descriptor limit $nofile"
echo "forward.sh: $conditions" >&2

failed=0
echo "part,proxy,variant,run,connections,errors,seconds,conn_per_s,p50_us,p90_us,p99_us,max_us,proxy_cpu_us_per_conn,streams,bytes,mb_per_s,proxy_cpu_ms_per_gib,rss_before_kib,rss_held_kib,rss_after_kib" >"$csv"
: >"$OUT/forward.md"

# --- rate: connections per second through the hop -----------------------------------------------
if wants rate; then
    rows=() ports=() variants=()
    for variant in plain resend; do
        for proxy in "${proxies[@]}"; do
            rows+=("$proxy")
            variants+=("$variant")
            if [ "$variant" = plain ]; then ports+=("${plain_port[$proxy]}"); else ports+=("${resend_port[$proxy]}"); fi
        done
    done
    declare -A best best_p50 best_p99 cpu
    echo "rate: $CONNECTIONS connections per run, $CONCURRENCY in flight, $THREADS generator threads; warm-up, then best of $RUNS" >&2
    for run in $(seq 0 "$RUNS"); do
        for i in $(round_order "${#rows[@]}" "$run"); do
            pid=${proxy_pid[${rows[$i]}]}
            arguments=(-p "${ports[$i]}" -x v2 -n "$CONNECTIONS" -c "$CONCURRENCY" -t "$THREADS")
            # The plain target's line names the proxy, not the client: check only that it came.
            [ "${variants[$i]}" = plain ] && arguments+=(-N)
            ticks_before=$(proxy_ticks "$pid")
            line=$("$load" "${arguments[@]}") || true
            ticks=$(($(proxy_ticks "$pid") - ticks_before))
            [ -n "$line" ] || line="conns=$CONNECTIONS errors=$CONNECTIONS"
            cpu_per_conn=$((ticks * 1000000 / clock_ticks / CONNECTIONS))
            label=$([ "$run" = 0 ] && echo warm-up || echo "run $run")
            printf '%-8s %-6s %-8s %s\n' "${rows[$i]}" "${variants[$i]}" "$label" "$line" >&2
            errors=$(field errors "$line")
            if [ "${errors:-1}" != 0 ]; then failed=1; fi
            echo "rate,${rows[$i]},${variants[$i]},$run,$(field conns "$line"),$errors,$(field seconds "$line"),$(field conn_per_s "$line"),$(field p50_us "$line"),$(field p90_us "$line"),$(field p99_us "$line"),$(field max_us "$line"),$cpu_per_conn,,,,,,," >>"$csv"
            [ "$run" = 0 ] && continue
            cpu[$i]="${cpu[$i]:-} $cpu_per_conn"
            rate=$(field conn_per_s "$line")
            if [ -z "${best[$i]:-}" ] || [ "${rate:-0}" -gt "${best[$i]}" ]; then
                best[$i]=${rate:-0}
                best_p50[$i]=$(ms "$(field p50_us "$line")")
                best_p99[$i]=$(ms "$(field p99_us "$line")")
            fi
        done
    done
    {
        table_head "forward hop, $CONCURRENCY in flight"
        for set in "0 plain forward" "4 header re-sent"; do
            first=${set%% *}
            name=${set#* }
            a=$first b=$((first + 1)) c=$((first + 2)) d=$((first + 3))
            table_row "$name: conn/s" "${best[$a]}" "${best[$b]}" "${best[$c]}" "${best[$d]}"
            table_row "$name: p50 ms" "${best_p50[$a]}" "${best_p50[$b]}" "${best_p50[$c]}" "${best_p50[$d]}"
            table_row "$name: p99 ms" "${best_p99[$a]}" "${best_p99[$b]}" "${best_p99[$c]}" "${best_p99[$d]}"
            table_row "$name: proxy CPU µs/conn" "$(median "${cpu[$a]}")" "$(median "${cpu[$b]}")" \
                "$(median "${cpu[$c]}")" "$(median "${cpu[$d]}")"
        done
        echo
        echo "$CONNECTIONS connections per run, each with a v2 header; conn/s, p50 and p99 from each row's fastest of $RUNS runs after a warm-up, proxy CPU (user + system, the proxy's own processes) the median. Re-sent header: HAProxy, netproxy and the floor v2, nginx v1. $conditions."
        echo
    } | tee -a "$OUT/forward.md"
fi

# --- idle: memory per idle forwarded connection -------------------------------------------------
if wants idle; then
    echo "idle: $IDLE_CONNECTIONS silent connections through each proxy to the echo target" >&2
    declare -A rss_before rss_held rss_after
    wait_count() { # PORT local|remote COUNT SECONDS: until that many connections are established
        local deadline=$((SECONDS + $4)) count
        while :; do
            count=$(established "$1" "$2")
            [ "$count" -eq "$3" ] && return 0
            ((SECONDS < deadline)) || { echo "$count"; return 1; }
            sleep 0.2
        done
    }
    for proxy in "${proxies[@]}"; do
        pid=${proxy_pid[$proxy]}
        port=${relay_port[$proxy]}
        if [ "$(established "$echo_port" local)" != 0 ]; then
            echo "forward.sh: the echo target still holds connections before $proxy's idle run" >&2
            failed=1
        fi
        sleep 1
        rss_before[$proxy]=$(proxy_rss_kib "$pid")
        python3 "$repo/Benchmarks/hold.py" "$port" "$IDLE_CONNECTIONS" >"$work/hold-$proxy.out" 2>"$work/hold-$proxy.err" &
        hold_pid=$!
        pids+=("$hold_pid")
        ok=true
        for _ in $(seq 1200); do
            grep -qs '^held' "$work/hold-$proxy.out" && break
            kill -0 "$hold_pid" 2>/dev/null || break
            sleep 0.1
        done
        if ! grep -qs '^held' "$work/hold-$proxy.out"; then
            echo "forward.sh: $proxy: could not open $IDLE_CONNECTIONS connections:" >&2
            tail -3 "$work/hold-$proxy.err" >&2
            ok=false
        elif ! count=$(wait_count "$echo_port" local "$IDLE_CONNECTIONS" 60); then
            echo "forward.sh: $proxy: the echo target holds $count connections, not $IDLE_CONNECTIONS" >&2
            ok=false
        fi
        # Whatever the proxy does lazily for a new connection has had its time.
        sleep 2
        rss_held[$proxy]=$(proxy_rss_kib "$pid")
        clients=$(established "$port" remote)
        if [ "$ok" = true ] && [ "$clients" != "$IDLE_CONNECTIONS" ]; then
            echo "forward.sh: $proxy: $clients client connections still open, not $IDLE_CONNECTIONS" >&2
            ok=false
        fi
        stop_pid "$hold_pid"
        forget_pid "$hold_pid"
        if ! count=$(wait_count "$echo_port" local 0 60); then
            echo "forward.sh: $proxy: $count connections still open at the echo target after the clients closed" >&2
            ok=false
        fi
        sleep 1
        rss_after[$proxy]=$(proxy_rss_kib "$pid")
        [ "$ok" = true ] || failed=1
        errors=$([ "$ok" = true ] && echo 0 || echo 1)
        printf '%-8s RSS %d KiB before, %d KiB with %d connections, %d KiB after they closed\n' "$proxy" \
            "${rss_before[$proxy]}" "${rss_held[$proxy]}" "$IDLE_CONNECTIONS" "${rss_after[$proxy]}" >&2
        echo "idle,$proxy,plain,1,$IDLE_CONNECTIONS,$errors,,,,,,,,,,,,${rss_before[$proxy]},${rss_held[$proxy]},${rss_after[$proxy]}" >>"$csv"
    done
    mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
    per_conn() { awk -v a="$1" -v b="$2" -v n="$IDLE_CONNECTIONS" 'BEGIN { printf "%.2f", (b - a) / n }'; }
    {
        table_head "$IDLE_CONNECTIONS idle forwarded connections"
        before=() held=() per=() after=()
        for proxy in "${proxies[@]}"; do
            before+=("$(mib "${rss_before[$proxy]}")")
            held+=("$(mib "${rss_held[$proxy]}")")
            per+=("$(per_conn "${rss_before[$proxy]}" "${rss_held[$proxy]}")")
            after+=("$(mib "${rss_after[$proxy]}")")
        done
        table_row "RSS before, MiB" "${before[@]}"
        table_row "RSS while held, MiB" "${held[@]}"
        table_row "KiB per connection" "${per[@]}"
        table_row "RSS after they closed, MiB" "${after[@]}"
        echo
        echo "VmRSS summed over the proxy's processes (nginx: master and 2 workers); each connection sent a v2 header and nothing more, the proxy holds it and its connection to the echo target. One round per proxy$(wants rate && echo ", after the rate part"). $conditions."
        echo
    } | tee -a "$OUT/forward.md"
fi

# --- relay: throughput to the echo target -------------------------------------------------------
if wants relay; then
    rows=() streams=()
    for count in 1 16; do
        for proxy in "${proxies[@]}"; do
            rows+=("$proxy")
            streams+=("$count")
        done
    done
    declare -A best_mb relay_cpu
    echo "relay: $STREAM_BYTES bytes per run each way; warm-up, then best of $RUNS" >&2
    for run in $(seq 0 "$RUNS"); do
        for i in $(round_order "${#rows[@]}" "$run"); do
            pid=${proxy_pid[${rows[$i]}]}
            per_stream=$((STREAM_BYTES / streams[i]))
            ticks_before=$(proxy_ticks "$pid")
            line=$("$load" -p "${relay_port[${rows[$i]}]}" -x v2 -c "${streams[$i]}" -s "$per_stream" -t "$THREADS") || true
            ticks=$(($(proxy_ticks "$pid") - ticks_before))
            [ -n "$line" ] || line="streams=${streams[$i]} errors=${streams[$i]}"
            bytes=$(field bytes "$line")
            cpu_per_gib=$(awk -v t="$ticks" -v hz="$clock_ticks" -v b="${bytes:-0}" \
                'BEGIN { printf "%.0f", (b > 0 ? t * 1000 / hz / (b / 1073741824) : 0) }')
            label=$([ "$run" = 0 ] && echo warm-up || echo "run $run")
            printf '%-8s %2s streams %-8s %s\n' "${rows[$i]}" "${streams[$i]}" "$label" "$line" >&2
            errors=$(field errors "$line")
            if [ "${errors:-1}" != 0 ]; then failed=1; fi
            echo "relay,${rows[$i]},plain,$run,,$errors,$(field seconds "$line"),,,,,,,${streams[$i]},$bytes,$(field mb_per_s "$line"),$cpu_per_gib,,," >>"$csv"
            [ "$run" = 0 ] && continue
            relay_cpu[$i]="${relay_cpu[$i]:-} $cpu_per_gib"
            rate=$(field mb_per_s "$line")
            if [ -z "${best_mb[$i]:-}" ] || awk -v a="${rate:-0}" -v b="${best_mb[$i]}" 'BEGIN { exit !(a > b) }'; then
                best_mb[$i]=${rate:-0}
            fi
        done
    done
    seconds_per_gib() { awk -v m="$(median "$1")" 'BEGIN { printf "%.2f", m / 1000 }'; }
    {
        table_head "relay to echo, $STREAM_BYTES bytes"
        for set in "0 1 connection" "4 16 connections"; do
            first=${set%% *}
            name=${set#* }
            a=$first b=$((first + 1)) c=$((first + 2)) d=$((first + 3))
            table_row "$name: MB/s" "${best_mb[$a]}" "${best_mb[$b]}" "${best_mb[$c]}" "${best_mb[$d]}"
            table_row "$name: proxy CPU s/GiB" "$(seconds_per_gib "${relay_cpu[$a]}")" \
                "$(seconds_per_gib "${relay_cpu[$b]}")" "$(seconds_per_gib "${relay_cpu[$c]}")" \
                "$(seconds_per_gib "${relay_cpu[$d]}")"
        done
        echo
        echo "MB = 10^6 bytes, counted one way (every byte also comes back); best of $RUNS runs after a warm-up, proxy CPU per GiB relayed each way the median; echo target: a separate netproxy process. $conditions."
        echo
    } | tee -a "$OUT/forward.md"
fi

echo "results: $OUT/forward.md, $csv (every run)" >&2
if [ "$failed" != 0 ]; then
    echo "forward.sh: some runs had errors (see above)" >&2
    exit 1
fi
