#!/usr/bin/env bash
# Heap allocations per connection in `netproxy serve`, on a whoami regular port and a whoami
# PROXY port (v1 and v2 headers).
#
#   Benchmarks/allocations.sh [CONNECTIONS]
#
# Counts malloc, calloc, realloc and the aligned allocators with Benchmarks/load/malloc-count.c
# (LD_PRELOAD) over a whole server process: once started, made ready (the banner) and stopped
# with SIGTERM without a connection; then once per port kind, serving CONNECTIONS (20000)
# connections from Benchmarks/load/load.c in between. Per connection:
# (allocations with CONNECTIONS - allocations with none) / CONNECTIONS.
#
# Environment:
#   NETPROXY=path   a release netproxy to use instead of building one (swift build -c release
#                   --product netproxy, plus SWIFT_BUILD_FLAGS, e.g. "--scratch-path DIR")
#   CONCURRENCY     connections in flight (64)
#   LOG_LEVEL       netproxy's --log-level (unset: its default, info, which logs a line for
#                   every PROXY connection)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
CONNECTIONS=${1:-${CONNECTIONS:-20000}}
CONCURRENCY=${CONCURRENCY:-64}
LOG_LEVEL=${LOG_LEVEL:-}
case "$CONNECTIONS" in '' | *[!0-9]* | 0) echo "usage: $0 [CONNECTIONS]" >&2; exit 2 ;; esac

work=$(mktemp -d /tmp/netproxy-allocations.XXXXXX)
server_pid=""
cleanup() {
    local status=$?
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${NETPROXY:-}" ]; then
    echo "building netproxy (release)..." >&2
    # SWIFT_BUILD_FLAGS: more flags for swift build, e.g. --scratch-path DIR
    # shellcheck disable=SC2086
    (cd "$repo" && swift build -c release --product netproxy ${SWIFT_BUILD_FLAGS:-} >&2)
    # shellcheck disable=SC2086
    NETPROXY=$(cd "$repo" && swift build -c release --product netproxy ${SWIFT_BUILD_FLAGS:-} --show-bin-path)/netproxy
fi
[ -x "$NETPROXY" ] || { echo "allocations.sh: $NETPROXY is not an executable" >&2; exit 1; }
cc -O2 -Wall -Wextra -pthread -o "$work/load" "$repo/Benchmarks/load/load.c"
cc -O2 -Wall -Wextra -shared -fPIC -o "$work/malloc-count.so" "$repo/Benchmarks/load/malloc-count.c" -ldl

free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 12000))
        [ -z "$(ss -Hltn "sport = :$port")" ] && { echo "$port"; return; }
    done
}

# run_server NAME HEADER|"" PORT_KIND: starts netproxy under the counter, serves CONNECTIONS
# connections (none without HEADER), stops it; prints the allocation count.
run_server() {
    local name=$1 header=$2 kind=$3
    local regular_port proxy_port
    regular_port=$(free_port)
    proxy_port=$(free_port)
    while [ "$proxy_port" = "$regular_port" ]; do proxy_port=$(free_port); done
    cat >"$work/config.json" <<EOF
{
  "interfaces": ["127.0.0.1"],
  "whoami_ports": [$regular_port],
  "proxy_port_mappings": { "$proxy_port": "whoami" },
  "proxy_trusted_proxies": ["127.0.0.0/8"]
}
EOF
    local arguments=(serve --config "$work/config.json")
    [ -n "$LOG_LEVEL" ] && arguments+=(--log-level "$LOG_LEVEL")
    rm -f "$work/count"
    MALLOC_COUNT_FILE=$work/count LD_PRELOAD=$work/malloc-count.so \
        "$NETPROXY" "${arguments[@]}" >"$work/$name.stdout" 2>"$work/$name.stderr" &
    server_pid=$!
    local ready=false
    for _ in $(seq 600); do
        if grep -q "^netproxy is listening:" "$work/$name.stdout"; then ready=true; break; fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ "$ready" != true ]; then
        echo "allocations.sh: netproxy did not start:" >&2
        tail -5 "$work/$name.stderr" >&2
        exit 1
    fi
    if [ -n "$header" ]; then
        local port=$proxy_port
        [ "$kind" = regular ] && port=$regular_port
        local line
        if ! line=$("$work/load" -p "$port" -x "$header" -n "$CONNECTIONS" -c "$CONCURRENCY"); then
            echo "allocations.sh: $name: $line" >&2
            exit 1
        fi
        echo "$name: $line" >&2
    fi
    kill -TERM "$server_pid"
    local status=0
    wait "$server_pid" || status=$?
    server_pid=""
    if [ "$status" != 0 ]; then
        echo "allocations.sh: $name: netproxy exited with status $status after SIGTERM" >&2
        tail -5 "$work/$name.stderr" >&2
        exit 1
    fi
    [ -s "$work/count" ] || { echo "allocations.sh: $name: no count written" >&2; exit 1; }
    echo "$name: $(cat "$work/count")" >&2
    sed -n 's/^allocations=\([0-9]*\).*/\1/p' "$work/count"
}

baseline=$(run_server idle "" none)
regular=$(run_server regular none regular)
v1=$(run_server proxy-v1 v1 proxy)
v2=$(run_server proxy-v2 v2 proxy)

per() { awk -v a="$1" -v b="$baseline" -v n="$CONNECTIONS" 'BEGIN { printf "%.1f", (a - b) / n }'; }
echo "| port | allocations | per connection |"
echo "| --- | ---: | ---: |"
echo "| none (start, ready, SIGTERM) | $baseline | |"
echo "| regular (whoami) | $regular | $(per "$regular") |"
echo "| PROXY v1 (whoami) | $v1 | $(per "$v1") |"
echo "| PROXY v2 (whoami) | $v2 | $(per "$v2") |"
echo
echo "$CONNECTIONS connections per port kind, $CONCURRENCY in flight; netproxy log level ${LOG_LEVEL:-default}."
