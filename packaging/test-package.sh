#!/usr/bin/env bash
# Tests netproxy's Debian package on this machine, as root: builds it, installs it, checks what
# it installed and created, runs the installed server as the unit would (as the netproxy user,
# with the unit's own command lines, capabilities and limits; there is no systemd as PID 1 in CI),
# reaches it, reloads and stops it, purges the package, and checks that the machine is as it was
# except for what purge leaves on purpose: the system user and group netproxy (this script then
# removes them too, if it was their cause).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "test-package.sh: FAILED: $*" >&2
    exit 1
}
step() { echo "== $*"; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs and purges the package)"
for tool in dpkg curl setpriv systemd-analyze adduser deluser prlimit; do
    command -v "$tool" >/dev/null || fail "$tool is missing"
done
if dpkg-query -W -f='${Status}' netproxy 2>/dev/null | grep -q "installed"; then
    fail "netproxy is installed already: this test would replace and purge it"
fi
[ ! -e /run/netproxy ] || fail "/run/netproxy exists: is a netproxy running here?"

work=$(mktemp -d)
server=""
installed=false
made_run_dir=false
user_before=$(getent passwd netproxy || true)
group_before=$(getent group netproxy || true)

# Runs on every exit: stops what this script started (by its PID), purges what it installed,
# and removes the user and group if this run created them.
cleanup() {
    local status=$?
    set +e
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server"
        for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$server" 2>/dev/null
        wait "$server" 2>/dev/null
    fi
    [ "$installed" = true ] && dpkg --purge netproxy >/dev/null
    [ "$made_run_dir" = true ] && rm -rf /run/netproxy
    if [ -z "$user_before" ] && getent passwd netproxy >/dev/null; then deluser --quiet --system netproxy >/dev/null 2>&1; fi
    if [ -z "$group_before" ] && getent group netproxy >/dev/null; then delgroup --quiet --system netproxy >/dev/null 2>&1; fi
    if [ "$status" != 0 ] && [ -s "$work/server.log" ]; then
        echo "--- the server's output:" >&2
        cat "$work/server.log" >&2
    fi
    rm -rf "$work"
    if [ "$status" = 0 ]; then echo "test-package.sh: passed"; else echo "test-package.sh: FAILED (exit $status)" >&2; fi
}
trap cleanup EXIT

step "building the package"
packaging/build-package.sh | tee "$work/build.log"
deb=$(sed -n 's/^package: //p' "$work/build.log")
[ -f "$deb" ] || fail "build-package.sh named no package"

# What a package can touch, recorded exactly and cheaply: each entry's type, mode, owner, size
# and link target, and the checksum of every file under /etc. The user databases are compared
# on their own, below.
snapshot() {
    local roots=() root
    for root in /etc /lib/systemd/system /usr/lib/systemd/system /usr/bin /usr/share/man/man1 \
        /usr/share/doc/netproxy /usr/share/bash-completion /usr/share/zsh/vendor-completions \
        /usr/share/fish/vendor_completions.d /var/lib/systemd/deb-systemd-helper-enabled \
        /var/lib/systemd/deb-systemd-helper-masked /run/netproxy /var/lib/dpkg/info; do
        [ -e "$root" ] && roots+=("$root")
    done
    local users='^/etc/(passwd|group|shadow|gshadow|subuid|subgid)-?( |$)'
    {
        find "${roots[@]}" -printf '%p %y %m %u:%g %s %l\n'
        find /etc -type f -print0 | xargs -0 md5sum | awk '{ print $2, "md5", $1 }'
    } | grep -Ev "$users" | sort
}

step "snapshot before installing"
snapshot >"$work/before"
[ -s "$work/before" ] || fail "the snapshot is empty"

step "dpkg -i $deb"
installed=true
dpkg -i "$deb"
[ "$(dpkg-query -W -f='${Status}' netproxy)" = "install ok installed" ] || fail "dpkg does not list netproxy as installed"

step "the system user and group"
getent passwd netproxy || fail "no user netproxy"
getent group netproxy || fail "no group netproxy"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd netproxy)
[ "$gid" = "$(getent group netproxy | cut -d: -f3)" ] || fail "netproxy's primary group is not netproxy"
[ "$uid" -lt 1000 ] || fail "netproxy (uid $uid) is not a system user"
{ [ "$home" = /nonexistent ] && [ ! -e /nonexistent ]; } || fail "netproxy's home is $home, or /nonexistent exists"
echo "uid $uid, gid $gid, home $home, shell $shell"

step "every packaged file is in place"
count=0
while read -r path; do
    [ -e "$path" ] || fail "$path is missing"
    count=$((count + 1))
done < <(dpkg-deb -c "$deb" | awk '{ print substr($6, 2) }' | grep -v '/$')
echo "$count files"
[ "$(dpkg-query -W -f='${Conffiles}' netproxy | awk 'NF { print $1 }')" = /etc/netproxy/netproxy.json ] ||
    fail "the conffile is not /etc/netproxy/netproxy.json"
dpkg --verify netproxy || fail "dpkg --verify finds changed files"
/usr/bin/netproxy --version
zcat /usr/share/man/man1/netproxy.1.gz | grep -qx '\.Dt NETPROXY 1' || fail "netproxy.1.gz is no man page"

step "systemd-analyze verify /lib/systemd/system/netproxy.service"
systemd-analyze verify /lib/systemd/system/netproxy.service 2>&1 | tee "$work/verify.log"
[ ! -s "$work/verify.log" ] || fail "systemd-analyze verify has remarks on the unit"
echo "accepted, no remarks"
# With the transparent-mode drop-in, from a copy of the unit's directory.
mkdir -p "$work/units/netproxy.service.d"
cp /lib/systemd/system/netproxy.service "$work/units/"
cp /usr/share/doc/netproxy/examples/transparent.conf "$work/units/netproxy.service.d/"
SYSTEMD_UNIT_PATH="$work/units:" systemd-analyze verify "$work/units/netproxy.service" 2>&1 | tee "$work/verify.log"
[ ! -s "$work/verify.log" ] || fail "systemd-analyze verify has remarks on the unit with transparent.conf"
echo "with examples/transparent.conf as a drop-in: accepted, no remarks"

# The unit's own settings, read from the installed file, so that the test runs what systemd would.
unit_value() { sed -n "s/^$1=//p" /lib/systemd/system/netproxy.service | tail -n 1; }
read -ra exec_start <<<"$(unit_value ExecStart)"
read -ra exec_reload <<<"$(unit_value ExecReload)"
pid_file=$(printf '%s\n' "${exec_start[@]}" | grep -A1 -x -- --pid-file | tail -n 1)
{ [ "$(unit_value User)" = netproxy ] && [ "$(unit_value Group)" = netproxy ]; } || fail "the unit does not run as netproxy"
{ [ "$(unit_value RuntimeDirectory)" = netproxy ] && [ "$pid_file" = /run/netproxy/netproxy.pid ]; } ||
    fail "the PID file is not in the unit's RuntimeDirectory"
# The capabilities, as setpriv spells them: CAP_NET_BIND_SERVICE -> +net_bind_service.
caps=$(unit_value AmbientCapabilities | tr 'A-Z ' 'a-z\n' | sed -n 's/^cap_\(.*\)/+\1/p' | paste -sd, -)
[ "$caps" = "$(unit_value CapabilityBoundingSet | tr 'A-Z ' 'a-z\n' | sed -n 's/^cap_\(.*\)/+\1/p' | paste -sd, -)" ] ||
    fail "AmbientCapabilities and CapabilityBoundingSet differ"
# As the netproxy user, with the unit's capabilities and nothing more, no new privileges.
as_netproxy=(setpriv --reuid netproxy --regid netproxy --init-groups --no-new-privs
    --inh-caps "-all,$caps" --ambient-caps "-all,$caps" --bounding-set "-all,$caps")

step "netproxy check --config /etc/netproxy/netproxy.json, as netproxy"
"${as_netproxy[@]}" /usr/bin/netproxy check --config /etc/netproxy/netproxy.json ||
    fail "netproxy check refuses the packaged configuration"

step "the installed server, as the unit runs it: ${exec_start[*]}"
# RuntimeDirectory=netproxy: systemd makes /run/netproxy, owned by the unit's user, before the
# start, and removes it after the stop.
install -d -o netproxy -g netproxy -m "$(unit_value RuntimeDirectoryMode)" /run/netproxy
made_run_dir=true
# MemoryDenyWriteExecute=yes: the kernel's own version of it (PR_SET_MDWE, Linux 6.3 and later,
# kept across exec) refuses memory that is writable and executable, or that becomes executable.
mdwe=()
if [ "$(unit_value MemoryDenyWriteExecute)" = yes ] && command -v python3 >/dev/null &&
    python3 -c 'import ctypes, sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)' 2>/dev/null; then
    mdwe=(python3 -c 'import ctypes, os, sys
if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0: sys.exit("PR_SET_MDWE failed")
os.execvp(sys.argv[1], sys.argv[1:])')
    echo "with MemoryDenyWriteExecute (PR_SET_MDWE)"
else
    echo "without MemoryDenyWriteExecute: this kernel has no PR_SET_MDWE, or there is no python3"
fi
# LimitNOFILE: raising the hard limit needs CAP_SYS_RESOURCE, which a container may lack.
nofile=$(unit_value LimitNOFILE)
if ! prlimit --nofile="$nofile" -- true 2>/dev/null; then
    echo "LimitNOFILE=$nofile cannot be set here (no CAP_SYS_RESOURCE?): the hard limit stays $(ulimit -Hn)"
    nofile=$(ulimit -Hn)
fi
(
    umask "$(unit_value UMask)"
    exec prlimit --nofile="$nofile" -- "${mdwe[@]}" "${as_netproxy[@]}" "${exec_start[@]}"
) >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
    [ -s "$pid_file" ] && curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:18081/metrics 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || fail "the server exited at start-up"
    sleep 0.2
done
[ "$(cat "$pid_file" 2>/dev/null)" = "$server" ] || fail "$pid_file does not hold the server's PID $server"
[ "$(stat -c %U "/proc/$server")" = netproxy ] || fail "the server does not run as netproxy"
[ "$(stat -c %U "$pid_file")" = netproxy ] || fail "$pid_file is not netproxy's"
# CAP_NET_BIND_SERVICE is bit 10: effective, and nothing else.
grep -q "^CapEff:[[:space:]]*0000000000000400$" "/proc/$server/status" ||
    fail "the server's capabilities are not the unit's: $(grep ^Cap "/proc/$server/status" | tr '\n' ' ')"
cat "$work/server.log"

step "curl --haproxy-protocol http://127.0.0.1:18080/ and http://[::1]:18080/"
for url in http://127.0.0.1:18080/ "http://[::1]:18080/"; do
    answer=$(curl -fsS --max-time 5 --haproxy-protocol "$url") || fail "no answer from $url"
    echo "$answer"
    { grep -q '"service":"http"' <<<"$answer" && grep -q '"proxy":{' <<<"$answer"; } ||
        fail "$url did not answer with the header it was sent"
done
# A header that names another client, as a balancer's does: the service sees that client.
answer=$(printf 'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n' |
    timeout 10 /usr/bin/netproxy send --source 192.0.2.1:51234 127.0.0.1 18080) || fail "netproxy send got no answer"
grep -q '"source":{"ip":"192.0.2.1","port":51234}' <<<"$answer" ||
    fail "the answer does not name the client 192.0.2.1:51234 of the header: $answer"
echo "netproxy send --source 192.0.2.1:51234: the service saw 192.0.2.1:51234"
curl -fsS --max-time 5 http://127.0.0.1:18080/ >/dev/null 2>&1 &&
    fail "the PROXY port answered a request without a header"
curl -fsS --max-time 5 http://127.0.0.1:18081/metrics | grep -E '^netproxy_(build_info|proxy_headers_total)' ||
    fail "no metrics on 18081"

step "the unit's reload, as netproxy: ${exec_reload[*]}"
"${as_netproxy[@]}" "${exec_reload[@]}" || fail "the reload failed"
curl -fsS --max-time 5 --haproxy-protocol http://127.0.0.1:18080/ >/dev/null || fail "no answer after the reload"

step "stopping the server (SIGTERM to PID $server, as systemctl stop does)"
kill -TERM "$server"
status=0
timeout=$(unit_value TimeoutStopSec)
for _ in $(seq $((${timeout%s} * 5))); do kill -0 "$server" 2>/dev/null || break; sleep 0.2; done
kill -0 "$server" 2>/dev/null && fail "the server is still running $timeout after SIGTERM"
wait "$server" || status=$?
server=""
[ "$status" = 0 ] || fail "the server exited with status $status on SIGTERM"
[ ! -e "$pid_file" ] || fail "the server left $pid_file behind"
rm -rf /run/netproxy
made_run_dir=false

step "dpkg --purge netproxy"
dpkg --purge netproxy
installed=false
if dpkg-query -W -f='${Status}\n' netproxy 2>/dev/null | grep -qv "not-installed"; then
    fail "dpkg still knows netproxy: $(dpkg-query -W -f='${Status}' netproxy)"
fi

step "the machine is as it was, but for the user and group netproxy"
snapshot >"$work/after"
diff -u "$work/before" "$work/after" || fail "the purge left the differences above"
if [ -z "$user_before" ]; then
    getent passwd netproxy >/dev/null || fail "purge removed the user netproxy, which it is meant to keep"
else
    [ "$(getent passwd netproxy)" = "$user_before" ] || fail "the user netproxy changed"
fi
echo "files: no difference; kept: $(getent passwd netproxy), $(getent group netproxy)"
