#!/usr/bin/env bash
# The codec against go-proxyproto, on the same header bytes, in one run:
# prints each operation's time in both and the ratio, next to the target.
#
#   Benchmarks/codec-compare.sh
#
# Needs Go and Debian's golang-github-pires-go-proxyproto-dev (installed with apt-get when
# missing, as root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/pires/go-proxyproto ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-github-pires-go-proxyproto-dev >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$here/go-proxyproto" && GO111MODULE=off GOPATH=/usr/share/gocode go build -o "$work/go-timings" .)
(cd "$here" && swift build -c release --product CodecTimings >/dev/null)
swift_timings=$(cd "$here" && swift build -c release --product CodecTimings --show-bin-path 2>/dev/null)/CodecTimings

# Three rounds, interleaved so both see the same machine; each operation's best round counts.
for round in 1 2 3; do
    "$work/go-timings" >>"$work/go.txt"
    "$swift_timings" >>"$work/swift.txt"
done

# The issue's targets: NetProxy's time at most this fraction of go-proxyproto's.
python3 - "$work/swift.txt" "$work/go.txt" <<'PY'
import sys
def read(path):
    best = {}
    for line in open(path):
        if line.strip():
            name, nanos = line.rstrip("\n").split("\t")
            best[name] = min(float(nanos), best.get(name, float("inf")))
    return best
swift, go = read(sys.argv[1]), read(sys.argv[2])
targets = {"parse v2 INET": 20, "parse v2 INET6": 20, "parse v1 TCP4": 10, "parse v1 TCP6": 10, "parse v1 UNKNOWN": 6}
print("| operation | NetProxy ns | go-proxyproto ns | go / NetProxy | target |")
print("| --- | ---: | ---: | ---: | --- |")
failed = False
for name, s in swift.items():
    s = float(s)
    g = float(go[name])
    ratio = g / s
    if name in targets:
        ok = ratio >= targets[name]
        failed |= not ok
        target = f">= {targets[name]}x {'met' if ok else 'MISSED'}"
    else:
        ok = s < 50
        failed |= not ok
        target = f"< 50 ns {'met' if ok else 'MISSED'}"
    print(f"| {name} | {s:.1f} | {g:.1f} | {ratio:.1f}x | {target} |")
sys.exit(1 if failed else 0)
PY
