#!/usr/bin/env bash
# Fails when the public API differs from docs/api-surface.txt. After an intended change, run it
# with --update and commit the new file with the change.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
current=$(mktemp)
trap 'rm -f "$log" "$current"' EXIT
if ! swift package dump-symbol-graph --minimum-access-level public >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
directory=$(sed -n 's/^Files written to //p' "$log" | tail -1)
python3 scripts/api-surface.py "$directory" >"$current"
if [ "${1:-}" = "--update" ]; then
    cp "$current" docs/api-surface.txt
    echo "docs/api-surface.txt updated"
elif ! diff -u docs/api-surface.txt "$current"; then
    echo "The public API changed (above: - was, + is). If intended: scripts/check-api.sh --update, and commit docs/api-surface.txt." >&2
    exit 1
fi
