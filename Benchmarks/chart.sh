#!/usr/bin/env bash
# A PNG bar chart of conn/s per row from the CSV Benchmarks/compare.sh writes.
#
#   Benchmarks/chart.sh OUTPUT.png [CSV]
#
# CSV defaults to $OUT/compare.csv. Each bar is the row's fastest measured run (warm-up runs,
# run 0, are left out), as in compare.sh's table. Needs gnuplot; run as root on Debian to have
# gnuplot-nox installed if it is missing.
set -euo pipefail

if (($# < 1 || $# > 2)); then
    echo "usage: $0 OUTPUT.png [CSV]" >&2
    exit 2
fi
png=$1
csv=${2:-${OUT:-}/compare.csv}
[ -r "$csv" ] || { echo "chart.sh: cannot read $csv (give the CSV as the second argument)" >&2; exit 1; }

if ! command -v gnuplot >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        echo "chart.sh: gnuplot missing; run as root to install gnuplot-nox" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox >&2
fi

data=$(mktemp /tmp/netproxy-chart.XXXXXX)
trap 'rm -f "$data"' EXIT

# Best conn/s per row, in the order the rows first appear.
awk -F, '
    NR == 1 { for (i = 1; i <= NF; i++) column[$i] = i; next }
    $column["run"] == 0 { next }
    {
        row = $column["row"]; rate = $column["conn_per_s"] + 0
        if (!(row in best)) { order[++rows] = row; best[row] = rate }
        else if (rate > best[row]) best[row] = rate
    }
    END { for (i = 1; i <= rows; i++) printf "\"%s\" %d %d\n", order[i], best[order[i]], (order[i] ~ /^netproxy/) }
' "$csv" >"$data"
[ -s "$data" ] || { echo "chart.sh: no measured runs in $csv" >&2; exit 1; }

title=$(awk -F, 'NR == 2 { printf "%s connections per run", $5 }' "$csv")
gnuplot <<EOF
set terminal pngcairo size 900,500 font "sans,10"
set output "$png"
set title "Connections per second, loopback ($title; best run per row)"
set style data histograms
set style fill solid 0.85 border -1
set boxwidth 0.7
set ylabel "conn/s"
set yrange [0:*]
set grid ytics
set xtics rotate by -20 scale 0
unset key
set linetype 1 lc rgb "#2f6f9f"
set linetype 2 lc rgb "#d9822b"
plot "$data" using 0:2:(0.7):(\$3 + 1):xtic(1) with boxes lc variable, \
     "" using 0:2:(sprintf("%d", \$2)) with labels offset 0,0.8
EOF
echo "$png" >&2
