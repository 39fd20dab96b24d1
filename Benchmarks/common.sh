# shellcheck shell=bash disable=SC2154
# Shared by compare.sh and forward.sh, which source it after setting `repo` (the checkout) and
# `work` (their temporary directory), and `policy_created=false` for their cleanup. Messages
# name the sourcing script.

# install_packages PACKAGE...: installs the Debian packages missing (as root, without starting
# their daemons); exits 1 when some are missing and this is not root.
install_packages() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    if [ "$(id -u)" != 0 ]; then
        echo "${0##*/}: ${missing[*]} missing; run as root to install them" >&2
        exit 1
    fi
    # The packages' daemons must not start on install: policy-rc.d denies it while it exists.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_created=true
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    if [ "$policy_created" = true ]; then rm -f /usr/sbin/policy-rc.d; policy_created=false; fi
}

# build_tools: sets NETPROXY (a release build unless given) and load (the load generator).
build_tools() {
    if [ -z "${NETPROXY:-}" ]; then
        echo "building netproxy (release)..." >&2
        # SWIFT_BUILD_FLAGS: more flags for swift build, e.g. --scratch-path DIR
        # shellcheck disable=SC2086
        (cd "$repo" && swift build -c release --product netproxy ${SWIFT_BUILD_FLAGS:-} >&2)
        # shellcheck disable=SC2086
        NETPROXY=$(cd "$repo" && swift build -c release --product netproxy ${SWIFT_BUILD_FLAGS:-} --show-bin-path)/netproxy
    fi
    [ -x "$NETPROXY" ] || { echo "${0##*/}: $NETPROXY is not an executable" >&2; exit 1; }
    load=$work/load
    cc -O2 -Wall -Wextra -pthread -o "$load" "$repo/Benchmarks/load/load.c"
}

# free_port: a port nothing listens on, below the ephemeral range (ip_local_port_range starts at
# 32768) so that no client takes it, never the same one twice in a run.
taken_ports=" "
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 12000))
        case "$taken_ports" in *" $port "*) continue ;; esac
        if [ -z "$(ss -Hltn "sport = :$port")" ]; then
            taken_ports+="$port "
            echo "$port"
            return
        fi
    done
}

# wait_listening PID PORT...: until every port listens (10 s at most), or the process is gone.
wait_listening() {
    local pid=$1; shift
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || return 1
        local all=true
        for port in "$@"; do [ -n "$(ss -Hltn "sport = :$port")" ] || all=false; done
        [ "$all" = true ] && return 0
        sleep 0.05
    done
    return 1
}

# round_order COUNT ROUND: the row indices 0..COUNT-1, backwards in odd rounds, so that no row
# always runs right after the same one. A server that has just been idle starts colder: with a
# fixed order, two identical netproxy rows measured 0.97 and 0.99 of each other.
round_order() {
    local index
    if (($2 % 2 == 0)); then
        for ((index = 0; index < $1; index++)); do echo "$index"; done
    else
        for ((index = $1 - 1; index >= 0; index--)); do echo "$index"; done
    fi
}
