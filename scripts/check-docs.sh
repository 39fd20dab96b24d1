#!/usr/bin/env bash
# Builds each library module's DocC documentation from its public symbol graph and fails on any
# DocC warning (a broken symbol link, an unknown parameter name, a missing catalog topic).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
swift package dump-symbol-graph --minimum-access-level public >"$work/dump.log" 2>&1 || { cat "$work/dump.log" >&2; exit 1; }
graphs=$(sed -n 's/^Files written to //p' "$work/dump.log" | tail -1)
docc=$(command -v docc || echo "$(dirname "$(command -v swift)")/docc")
failed=0
for module in ProxyProtocol NIOProxyProtocol NetProxy HummingbirdProxyProtocol; do
    mkdir -p "$work/$module/graphs"
    cp "$graphs/$module".symbols.json "$work/$module/graphs/"
    cp "$graphs/$module"@*.symbols.json "$work/$module/graphs/" 2>/dev/null || true
    catalog=()
    [ -d "Sources/$module/Documentation.docc" ] && catalog=("Sources/$module/Documentation.docc")
    "$docc" convert "${catalog[@]}" --additional-symbol-graph-dir "$work/$module/graphs" \
        --fallback-display-name "$module" --fallback-bundle-identifier "$module" \
        --output-path "$work/$module/out" --analyze >"$work/$module.log" 2>&1 || { cat "$work/$module.log" >&2; failed=1; }
    if grep -E "(warning|error):" "$work/$module.log" >&2; then
        echo "DocC: $module has the warnings above" >&2
        failed=1
    fi
done
exit $failed
