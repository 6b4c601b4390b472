#!/usr/bin/env bash
# Builds the Debian package and checks it, then installs it on THIS machine and purges it again:
#
#   packaging/check-deb.sh [--profile NAME] [--no-build]   (as root; CI runs it from .ci/run)
#
# --no-build packs the binary already built for the profile (quick reruns while working on the
# packaging; CI builds).
#
#   1. packaging/build-deb.sh (release build + cargo deb), timed; the .deb's size;
#   2. `dpkg-deb --info`: package, version (Cargo's, and the changelog's newest entry),
#      architecture, Depends, the conffile, the maintainer scripts;
#      `dpkg-deb --contents`: every expected file with its mode and owner, and nothing else;
#   3. `lintian`: no error (warnings are printed; the package's overrides carry their reason);
#   4. `dpkg -i`: /usr/bin/waba-monitor --version, check-config on the installed conffile with an
#      empty environment, the credentials folder (0700), the installed unit
#      (`systemd-analyze verify`, ExecStart= in /usr/bin, not enabled), then `dpkg -i` again (the
#      upgrade path: an edited conffile is kept);
#   5. with a database where systemd puts it (/var/lib/private/waba-monitor, and the
#      /var/lib/waba-monitor link; made by this script, since nothing starts the service here):
#      `dpkg -r` removes the program and keeps config and database; `dpkg --purge` removes the
#      conffile, the credentials folder and /etc/waba-monitor, and keeps the database;
#   6. once more install, a secret in credentials/, purge: the secret (and its folder) are kept.
#
# It refuses to run where waba-monitor is installed or configured already (the package, or
# /etc/waba-monitor, /var/lib/waba-monitor from deploy/install.sh or a service): purging would
# delete that machine's configuration. What it creates it removes, also when a check fails.
# Needs root, cargo-deb (`cargo install cargo-deb --locked`), dpkg-dev, lintian and systemd's
# systemd-analyze (Debian/Ubuntu: apt-get install dpkg-dev lintian systemd).
set -euo pipefail

if [[ -n "${CARGO_TARGET_DIR:-}" && "$CARGO_TARGET_DIR" != /* ]]; then
    export CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR"
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."

prog="packaging/check-deb.sh"
die() {
    echo "$prog: FAILED: $*" >&2
    exit 1
}
ok() { echo "  ok: $*"; }

build_args=()
while (($#)); do
    case "$1" in
    --profile)
        (($# >= 2)) || die "--profile needs a value"
        build_args+=(--profile "$2")
        shift 2
        ;;
    --no-build)
        build_args+=(--no-build)
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

for tool in cargo-deb dpkg-deb dpkg-parsechangelog lintian systemd-analyze; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (see the comment at the top of $prog)"
done
((EUID == 0)) || die "installing the package needs root"
if dpkg-query -W -f='${Status}' waba-monitor 2>/dev/null | grep -q 'installed\|config-files'; then
    die "the waba-monitor package is installed (or its config left) on this machine: this check installs and purges it; run it on a CI machine"
fi
for path in /etc/waba-monitor /var/lib/waba-monitor /var/lib/private/waba-monitor /usr/bin/waba-monitor; do
    if [[ -e "$path" || -L "$path" ]]; then
        die "$path exists: waba-monitor is set up on this machine, and purging the package would delete its configuration; run this check on a CI machine"
    fi
done

# --- Cleanup: whatever this script installed or made goes, also after a failed check ---------------
made_db=0
made_private=0
cleanup() {
    local rc=$?
    if dpkg-query -W -f='${Status}' waba-monitor 2>/dev/null | grep -q 'installed\|config-files'; then
        echo "== cleanup: dpkg --purge waba-monitor"
        dpkg --purge waba-monitor >/dev/null 2>&1 || true
    fi
    if ((made_db)); then
        rm -rf /var/lib/private/waba-monitor
        rm -f /var/lib/waba-monitor
        if ((made_private)); then rmdir /var/lib/private 2>/dev/null || true; fi
    fi
    rm -f /etc/waba-monitor/credentials/meta-token
    rmdir /etc/waba-monitor/credentials /etc/waba-monitor 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT

# --- 1. Build ---------------------------------------------------------------------------------------
echo "== build: packaging/build-deb.sh ${build_args[*]}"
start=$(date +%s)
deb="$(packaging/build-deb.sh "${build_args[@]}" | tail -n 1)"
elapsed=$(($(date +%s) - start))
[[ -f "$deb" ]] || die "build-deb.sh made no .deb"
size=$(stat -c %s "$deb")
echo "  built $deb in ${elapsed}s (build and package), $((size / 1024)) KiB"

# --- 2. dpkg-deb --info and --contents -----------------------------------------------------------------
echo "== dpkg-deb --info"
dpkg-deb --info "$deb" | sed 's/^/  /'
field() { dpkg-deb --field "$deb" "$1"; }
cargo_version="$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "waba-monitor"))')"
version="$(field Version)"
[[ "$(field Package)" == waba-monitor ]] || die "Package is '$(field Package)'"
[[ "$version" == "$cargo_version-"* ]] || die "Version $version is not Cargo.toml's $cargo_version"
changelog_version="$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)"
[[ "$changelog_version" == "$version" ]] ||
    die "packaging/debian/changelog's newest entry is $changelog_version, the package is $version: add an entry (dch -v $version)"
[[ "$(field Architecture)" == "$(dpkg --print-architecture)" ]] || die "Architecture is '$(field Architecture)'"
[[ "$(field Depends)" == *libc6* ]] || die "Depends ('$(field Depends)') does not name libc6"
[[ -n "$(field Maintainer)" && -n "$(field Description)" ]] || die "Maintainer or Description empty"
control="$(mktemp -d)"
dpkg-deb --control "$deb" "$control"
[[ "$(cat "$control/conffiles")" == /etc/waba-monitor/monitor.toml ]] ||
    die "conffiles is '$(cat "$control/conffiles")', expected /etc/waba-monitor/monitor.toml alone"
for script in postinst prerm postrm; do
    [[ -x "$control/$script" ]] || die "no $script maintainer script"
    sh -n "$control/$script" || die "$script: syntax error"
done
# cargo-deb's systemd part, in its "enable = false, start = false" form: enable only what was
# enabled before (debian-installed), never start; try-restart on upgrade.
grep -q 'deb-systemd-helper debian-installed waba-monitor.service' "$control/postinst" ||
    die "postinst has no systemd part, or one that enables the service on install"
grep -q 'deb-systemd-invoke try-restart waba-monitor.service' "$control/postinst" ||
    die "postinst does not restart a running service on upgrade"
if grep -q 'deb-systemd-invoke start' "$control/postinst"; then
    die "postinst starts the service on install"
fi
rm -rf "$control"
ok "package waba-monitor $version, conffile, postinst/prerm/postrm"

echo "== dpkg-deb --contents"
# mode, owner and path of every file (directories are not listed: dpkg makes them as needed).
expected="$(
    cat <<'EOF'
-rwxr-xr-x root/root ./usr/bin/waba-monitor
-rw-r--r-- root/root ./usr/lib/systemd/system/waba-monitor.service
-rw-r--r-- root/root ./etc/waba-monitor/monitor.toml
-rw-r--r-- root/root ./usr/share/waba-monitor/prometheus/alerts.yml
-rw-r--r-- root/root ./usr/share/waba-monitor/prometheus/scrape.yml
-rw-r--r-- root/root ./usr/share/waba-monitor/grafana/waba-monitor.json
-rw-r--r-- root/root ./usr/share/doc/waba-monitor/README.md
-rw-r--r-- root/root ./usr/share/doc/waba-monitor/copyright
-rw-r--r-- root/root ./usr/share/doc/waba-monitor/changelog.Debian.gz
-rw-r--r-- root/root ./usr/share/doc/waba-monitor/examples/monitor.toml
-rw-r--r-- root/root ./usr/share/doc/waba-monitor/examples/nginx-webhooks.conf
-rw-r--r-- root/root ./usr/share/doc/waba-monitor/HA.md
-rw-r--r-- root/root ./usr/share/doc/waba-monitor/examples/waba-monitor.service.d/postgres.conf
-rw-r--r-- root/root ./usr/share/lintian/overrides/waba-monitor
EOF
)"
# The man pages and completions follow what the packaged binary offers: one page per command
# when it has `man --dir` (else the one waba-monitor.1), completions when it has `completions`.
unpacked="$(mktemp -d)"
dpkg-deb --extract "$deb" "$unpacked"
packaged_bin="$unpacked/usr/bin/waba-monitor"
pages="waba-monitor.1"
if "$packaged_bin" man --help 2>/dev/null | grep -q -- '--dir'; then
    mkdir "$unpacked/man"
    "$packaged_bin" man --dir "$unpacked/man" >/dev/null
    pages="$(cd "$unpacked/man" && ls)"
fi
for page in $pages; do
    expected+=$'\n'"-rw-r--r-- root/root ./usr/share/man/man1/$page.gz"
done
if "$packaged_bin" completions --help >/dev/null 2>&1; then
    expected+=$'\n'"-rw-r--r-- root/root ./usr/share/bash-completion/completions/waba-monitor"
    expected+=$'\n'"-rw-r--r-- root/root ./usr/share/zsh/vendor-completions/_waba-monitor"
    expected+=$'\n'"-rw-r--r-- root/root ./usr/share/fish/vendor_completions.d/waba-monitor.fish"
fi
rm -rf "$unpacked"
# cargo-deb writes numeric owners (0/0), dpkg-deb names (root/root): both are root.
actual="$(dpkg-deb --contents "$deb" | awk '$1 !~ /^d/ { sub(/^0\/0$/, "root/root", $2); print $1, $2, $6 }')"
missing="$(comm -23 <(sort <<<"$expected") <(sort <<<"$actual"))"
extra="$(comm -13 <(sort <<<"$expected") <(sort <<<"$actual"))"
dpkg-deb --contents "$deb" | awk '$1 !~ /^d/ { printf "  %s %s %9s %s\n", $1, $2, $3, $6 }'
[[ -z "$missing" ]] || die "missing from the package (or with another mode/owner):
$missing
  the package has instead:
$extra"
[[ -z "$extra" ]] || die "not expected in the package (add it to the list in $prog if it belongs):
$extra"
ok "$(wc -l <<<"$expected") files ($(wc -w <<<"$pages") man pages), each with its mode and owner"

# --- 3. lintian ----------------------------------------------------------------------------------------
echo "== lintian"
lintian_out="$(lintian --fail-on error --display-level '>=warning' "$deb" 2>&1)" || {
    printf '%s\n' "$lintian_out" | sed 's/^/  /'
    die "lintian reports errors"
}
lintian_out="$(grep -v '^running with root privileges' <<<"$lintian_out" || true)"
if [[ -n "$lintian_out" ]]; then
    printf '%s\n' "$lintian_out" | sed 's/^/  /'
fi
ok "no errors ($(grep -c '^W:' <<<"$lintian_out" || true) warnings; overrides: usr/share/lintian/overrides/waba-monitor)"

# --- 4. Install ------------------------------------------------------------------------------------------
echo "== dpkg -i"
dpkg -i "$deb" | sed 's/^/  /'
[[ "$(dpkg-query -W -f='${Status}' waba-monitor)" == "install ok installed" ]] || die "not installed"
[[ "$(command -v waba-monitor)" == /usr/bin/waba-monitor ]] || die "waba-monitor on PATH is $(command -v waba-monitor)"
echo "  \$ waba-monitor --version"
got="$(waba-monitor --version)"
echo "  $got"
[[ "$got" == "waba-monitor $cargo_version" ]] || die "--version says '$got'"
# An empty environment: the conffile must not need a variable (no token, no WABA_MONITOR_CONFIG).
echo "  \$ env -i PATH=/usr/bin:/bin waba-monitor check-config --config /etc/waba-monitor/monitor.toml"
rc=0
out="$(env -i PATH=/usr/bin:/bin waba-monitor check-config --config /etc/waba-monitor/monitor.toml 2>&1)" || rc=$?
printf '%s\n' "$out" | sed 's/^/    /'
((rc == 0)) || die "check-config refused the installed conffile (exit $rc)"
[[ "$(stat -c '%a %U' /etc/waba-monitor/credentials)" == "700 root" ]] ||
    die "/etc/waba-monitor/credentials is $(stat -c '%a %U' /etc/waba-monitor/credentials), expected 700 root"
[[ "$(stat -c '%a' /etc/waba-monitor/monitor.toml)" == 644 ]] || die "monitor.toml is not 0644"
unit=/usr/lib/systemd/system/waba-monitor.service
grep -q '^ExecStart=/usr/bin/waba-monitor --config /etc/waba-monitor/monitor.toml run$' "$unit" ||
    die "$unit: ExecStart= is not /usr/bin/waba-monitor ... run"
verify="$(systemd-analyze verify "$unit" 2>&1)" || die "systemd-analyze verify $unit: $verify"
if grep -q waba-monitor <<<"$verify"; then
    die "systemd-analyze verify $unit: $verify"
fi
if compgen -G "/etc/systemd/system/*.wants/waba-monitor.service" >/dev/null; then
    die "the service was enabled on install"
fi
ok "/usr/bin/waba-monitor, check-config exit 0, credentials/ 0700, unit verified and not enabled"

echo "== dpkg -i again (the upgrade path), with an edited conffile"
echo "# edited by $prog" >>/etc/waba-monitor/monitor.toml
dpkg -i "$deb" | sed 's/^/  /'
grep -q "^# edited by $prog\$" /etc/waba-monitor/monitor.toml || die "the upgrade overwrote the edited conffile"
ok "reinstalled; the edited conffile is kept"

# --- 5. Remove and purge, with a database where systemd keeps it ---------------------------------------
# DynamicUser= with StateDirectory=waba-monitor: the directory is /var/lib/private/waba-monitor
# (0700) and /var/lib/waba-monitor a symbolic link to it.
made_db=1
if [[ ! -d /var/lib/private ]]; then
    made_private=1
    install -d -m 0700 /var/lib/private
fi
install -d -m 0700 /var/lib/private/waba-monitor
echo "not a real database" >/var/lib/private/waba-monitor/monitor.db
ln -s private/waba-monitor /var/lib/waba-monitor
db=/var/lib/waba-monitor/monitor.db

echo "== dpkg -r waba-monitor"
dpkg -r waba-monitor 2>&1 | sed 's/^/  /'
for gone in /usr/bin/waba-monitor "$unit" /usr/share/waba-monitor /usr/share/doc/waba-monitor \
    /usr/share/man/man1/waba-monitor.1.gz /usr/share/bash-completion/completions/waba-monitor; do
    [[ ! -e "$gone" ]] || die "$gone is still there after dpkg -r"
done
for kept in /etc/waba-monitor/monitor.toml /etc/waba-monitor/credentials "$db"; do
    [[ -e "$kept" ]] || die "$kept is gone after dpkg -r: removing must keep configuration and database"
done
ok "program, unit and shared files removed; monitor.toml, credentials/ and the database kept"

echo "== dpkg --purge waba-monitor"
dpkg --purge waba-monitor 2>&1 | sed 's/^/  /'
[[ ! -e /etc/waba-monitor ]] || die "/etc/waba-monitor is still there after purge: $(find /etc/waba-monitor)"
[[ -f "$db" ]] || die "the database is gone after purge: it is the monitoring history, not the package's"
if dpkg-query -W waba-monitor >/dev/null 2>&1; then
    die "dpkg still knows waba-monitor after purge"
fi
ok "conffile, credentials/ and /etc/waba-monitor removed; the database kept"

# --- 6. Purge with a secret in credentials/ -----------------------------------------------------------
echo "== dpkg -i, a secret in credentials/, dpkg --purge"
dpkg -i "$deb" >/dev/null
install -m 0600 /dev/null /etc/waba-monitor/credentials/meta-token
dpkg --purge waba-monitor 2>&1 | sed 's/^/  /'
[[ -f /etc/waba-monitor/credentials/meta-token ]] || die "purge deleted a secret the admin put in credentials/"
[[ ! -e /etc/waba-monitor/monitor.toml ]] || die "purge left the conffile"
ok "the secret and its folder kept, the conffile removed"

echo "== all package checks passed: $deb ($((size / 1024)) KiB, built in ${elapsed}s)"
