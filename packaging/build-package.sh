#!/usr/bin/env bash
# Builds netproxy's Debian package with Debian's own tools (no debhelper):
#   packaging/build-package.sh        -> .build/package/netproxy_VERSION_ARCH.deb
# It builds netproxy in release with the Swift runtime linked statically, strips it, names the
# packages that provide the libraries it still needs, generates the man page and the shell
# completions from the command itself, and lays out the files where Debian expects them.
# DEBFULLNAME and DEBEMAIL, if set, name the maintainer (else git's user.name and user.email).
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

fail() {
    echo "build-package.sh: $*" >&2
    exit 1
}

for tool in swift dpkg-deb dpkg-query strip readelf ldd gzip; do
    command -v "$tool" >/dev/null || fail "$tool is missing"
done

out=.build/package
# The same date in every file of one commit's package: the man page's, the files' mtimes.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

echo "== building netproxy (release, static Swift runtime)"
swift build -c release --product netproxy --static-swift-stdlib
built="$(swift build -c release --show-bin-path)/netproxy"
[ -x "$built" ] || fail "no binary at $built"

version=$("$built" --version)
arch=$(dpkg --print-architecture)
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || fail "netproxy --version printed '$version', not a Debian version"
stage="$out/netproxy_${version}_${arch}"
deb="$out/netproxy_${version}_${arch}.deb"
rm -rf "$stage" "$deb"
mkdir -p "$stage/DEBIAN"

echo "== /usr/bin/netproxy"
install -D -m 0755 "$built" "$stage/usr/bin/netproxy"
# .comment only names the compilers; symbols are not needed to run (crash backtraces then show
# addresses).
strip --strip-all --remove-section=.comment "$stage/usr/bin/netproxy"
binary="$stage/usr/bin/netproxy"
"$binary" --version >/dev/null || fail "the stripped binary does not run"

# What the binary still loads: with the Swift runtime static, only the C and C++ runtimes.
echo "NEEDED:"
readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/  \1/p'
echo "ldd:"
ldd "$binary" | sed 's/^[[:space:]]*/  /'
# Each library ldd resolves is mapped to its Debian package (dpkg -S); the vDSO and the dynamic
# loader's own path are both libc6's. The lower bound is the version this was built against.
depends=()
while read -r library; do
    owner=""
    # With merged /usr, ldd may print /lib/... or /usr/lib/... for the path dpkg knows.
    for candidate in "$library" "${library#/usr}" "/usr$library"; do
        owner=$(dpkg -S "$candidate" 2>/dev/null | head -n 1 | cut -d: -f1) && [ -n "$owner" ] && break
    done
    [ -n "$owner" ] || fail "no Debian package provides $library (needed by netproxy)"
    depends+=("$owner")
done < <(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
mapfile -t depends < <(printf '%s\n' "${depends[@]}" | sort -u)
depends_field=""
for package in "${depends[@]}"; do
    installed=$(dpkg-query -W -f='${Version}' "$package:$arch" 2>/dev/null || dpkg-query -W -f='${Version}' "$package")
    upstream=${installed#*:}
    upstream=${upstream%%-*}
    depends_field+="$package (>= $upstream), "
done
# adduser: postinst creates the system user.
depends_field+="adduser"
echo "Depends: $depends_field"

echo "== man page, from the command's own help (swift-argument-parser's generate-manual plugin)"
# The plugin builds the package's products, then runs generate-manual on netproxy. In debug:
# the help text is the same, the debug build is the one the tests already made, and a release
# build without --static-swift-stdlib would relink the binary above.
rm -rf .build/plugins/GenerateManual/outputs
swift package generate-manual --configuration debug \
    --date "$(date -u -d "@$SOURCE_DATE_EPOCH" +%F)" --section 1
manual=$(find .build/plugins/GenerateManual/outputs -name netproxy.1 | head -n 1)
[ -n "$manual" ] || fail "generate-manual made no netproxy.1"
# A blank line in a command's discussion becomes a blank line in the page, which mdoc warns
# about; .Pp is mdoc's paragraph break.
mkdir -p "$stage/usr/share/man/man1"
sed 's/^$/.Pp/' "$manual" >"$stage/usr/share/man/man1/netproxy.1"
gzip -9n "$stage/usr/share/man/man1/netproxy.1"

echo "== completions"
"$binary" --generate-completion-script bash >"$out/netproxy.bash"
"$binary" --generate-completion-script zsh >"$out/_netproxy"
"$binary" --generate-completion-script fish >"$out/netproxy.fish"
install -D -m 0644 "$out/netproxy.bash" "$stage/usr/share/bash-completion/completions/netproxy"
install -D -m 0644 "$out/_netproxy" "$stage/usr/share/zsh/vendor-completions/_netproxy"
install -D -m 0644 "$out/netproxy.fish" "$stage/usr/share/fish/vendor_completions.d/netproxy.fish"

echo "== unit, configuration, documentation"
install -D -m 0644 packaging/netproxy.service "$stage/lib/systemd/system/netproxy.service"
install -D -m 0644 packaging/netproxy.json "$stage/etc/netproxy/netproxy.json"
"$binary" check --config "$stage/etc/netproxy/netproxy.json" >/dev/null ||
    fail "netproxy check refuses packaging/netproxy.json"
install -D -m 0644 packaging/copyright "$stage/usr/share/doc/netproxy/copyright"
install -D -m 0644 packaging/transparent.conf "$stage/usr/share/doc/netproxy/examples/transparent.conf"
install -m 0644 README.md "$stage/usr/share/doc/netproxy/README.md"
gzip -9n "$stage/usr/share/doc/netproxy/README.md"

echo "== DEBIAN/"
for script in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$script" "$stage/DEBIAN/$script"
done
echo /etc/netproxy/netproxy.json >"$stage/DEBIAN/conffiles"
# Checksums of every file but the conffiles (dpkg tracks those itself), for debsums and dpkg -V.
(cd "$stage" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
# Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up; 1 for each directory.
installed_size=$(find "$stage" -path "$stage/DEBIAN" -prune -o -mindepth 1 -printf '%y %s\n' |
    awk '$1 == "f" { total += int(($2 + 1023) / 1024) } $1 != "f" { total += 1 } END { print total }')
if [ -n "${DEBFULLNAME:-}" ] && [ -n "${DEBEMAIL:-}" ]; then
    maintainer="$DEBFULLNAME <$DEBEMAIL>"
else
    maintainer="$(git config user.name || echo "NetProxy maintainers") <$(git config user.email || echo "root@localhost")>"
fi
cat >"$stage/DEBIAN/control" <<EOF
Package: netproxy
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends_field
Section: net
Priority: optional
Description: PROXY protocol host: forwards, multiplexes and answers behind load balancers
 netproxy accepts PROXY protocol (version 1 and 2) connections from trusted load
 balancers and hands each to a service that knows the real client: a relay to
 another server (with a fresh header, or transparently from the client's own
 address), a protocol multiplexer (TLS, HTTP, XMPP, SSH on one port), or
 built-in echo, whoami and HTTP services for trying a setup. It reloads its
 configuration without dropping connections and exports Prometheus metrics.
 .
 This package runs it as the systemd service netproxy.service, as the system
 user netproxy, with the configuration in /etc/netproxy/netproxy.json.
EOF

# The same mtime everywhere, so that two builds of one commit give the same package.
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null

echo
echo "package: $deb"
dpkg-deb -c "$deb"
echo "installed size: $installed_size KiB; package: $(du -k "$deb" | cut -f1) KiB; /usr/bin/netproxy: $(stat -c %s "$binary") bytes"
