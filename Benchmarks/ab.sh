#!/usr/bin/env bash
# Two netproxy builds side by side: connection rate and server CPU per connection, rows
# interleaved so that both see the same machine.
#
#   Benchmarks/ab.sh BEFORE AFTER [ROUNDS]
#
# Both binaries serve whoami on a regular port and a PROXY port (loopback, trusting 127.0.0.0/8)
# at the same time. Each round runs Benchmarks/load/load.c against each of them in turn, on the
# regular port and with a v2 header: CONNECTIONS (20000) connections, 64 in flight. Prints every
# run, then per row the medians and the median of the per-round ratios (AFTER / BEFORE), which
# stay stable on a noisy machine where absolute figures do not. Stops only what it started.
set -euo pipefail
(($# >= 2)) || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${3:-10}
CONNECTIONS=${CONNECTIONS:-20000}
work=$(mktemp -d /tmp/netproxy-ab.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
cc -O2 -Wall -pthread -o "$work/load" "$repo/Benchmarks/load/load.c"

declare -A pid regular proxied
for side in before after; do
    binary=$1; [ "$side" = after ] && binary=$2
    mkdir -p "$work/$side"
    echo '{"interfaces": ["127.0.0.1"], "whoami_ports": [0], "proxy_port_mappings": {"0": "whoami"}, "proxy_trusted_proxies": ["127.0.0.0/8"]}' \
        >"$work/$side/config.json"
    "$binary" serve --config "$work/$side/config.json" --log-level warning >"$work/$side/out" 2>"$work/$side/err" &
    pid[$side]=$!
    pids+=("$!")
done
for side in before after; do
    for _ in $(seq 100); do grep -q '^Try:' "$work/$side/out" 2>/dev/null && break; sleep 0.1; done
    regular[$side]=$(grep -E '^  whoami +' "$work/$side/out" | head -1 | grep -oE '[0-9]+$')
    proxied[$side]=$(grep -E 'whoami \(PROXY\)' "$work/$side/out" | head -1 | grep -oE '[0-9]+$')
done

ticks=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
echo "round row side conn_per_s cpu_us_per_conn" | tee "$work/runs"
for round in $(seq "$ROUNDS"); do
    for row in regular v2; do
        for side in before after; do
            port=${regular[$side]}; header=none
            [ "$row" = v2 ] && { port=${proxied[$side]}; header=v2; }
            before_cpu=$(cpu "${pid[$side]}")
            line=$("$work/load" -p "$port" -x "$header" -n "$CONNECTIONS" -c 64 -t 2)
            after_cpu=$(cpu "${pid[$side]}")
            rate=$(grep -oE 'conn_per_s=[0-9]+' <<<"$line" | cut -d= -f2)
            echo "$round $row $side $rate $(awk -v a="$before_cpu" -v b="$after_cpu" -v t="$ticks" -v n="$CONNECTIONS" \
                'BEGIN { printf "%.1f", (b - a) * 1000000 / t / n }')" | tee -a "$work/runs"
        done
    done
done
python3 - "$work/runs" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]).read().splitlines()[1:]]
print("\n| row | conn/s before | after | paired ratio | CPU µs/conn before | after | paired ratio |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for row in ("regular", "v2"):
    side = {s: [r for r in rows if r[1] == row and r[2] == s] for s in ("before", "after")}
    def medians(i):
        b = [float(r[i]) for r in side["before"]]
        a = [float(r[i]) for r in side["after"]]
        return statistics.median(b), statistics.median(a), statistics.median(x / y for x, y in zip(a, b))
    rb, ra, rr = medians(3)
    cb, ca, cr = medians(4)
    print(f"| {row} | {rb:.0f} | {ra:.0f} | {rr:.3f} | {cb:.1f} | {ca:.1f} | {cr:.3f} |")
PY
