#!/usr/bin/env bash
# Checks systemd/waba-monitor.service:
#   1. `systemd-analyze verify`: the unit parses, every directive is known, referenced commands
#      exist; any warning that mentions the unit fails the check (verify itself exits 0 on many
#      of them, e.g. "Unknown key ... ignoring"); then the same with the sample drop-ins in
#      systemd/waba-monitor.service.d/ (postgres.conf: the HA pair, systemd/HA.md) applied;
#   2. `systemd-analyze security --offline=yes --threshold=15`: the hardening exposure score is
#      at most 1.5 (on the 0-10 scale; lower is better). Prints the score.
# Runs from anywhere; exits non-zero on the first failure.
#
#   systemd/check.sh
#
# Needs systemd-analyze from systemd >= 250 (for --offline); Debian/Ubuntu package `systemd`.
# Needs no root, no running systemd (works in containers and CI) and does not install anything.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

unit_src="systemd/waba-monitor.service"
unit_name="waba-monitor.service"
threshold=15 # --threshold is in tenths: 15 = an overall exposure of 1.5

if ! command -v systemd-analyze >/dev/null 2>&1; then
    cat >&2 <<'MSG'
systemd/check.sh: systemd-analyze not found.
It comes with systemd (version 250 or later is needed for --offline). On Debian/Ubuntu:
    sudo apt-get update && sudo apt-get install -y --no-install-recommends systemd
(in a container this installs the tools only; systemd does not need to run for this check).
MSG
    exit 1
fi
if [[ ! -f "$unit_src" ]]; then
    echo "systemd/check.sh: $unit_src not found" >&2
    exit 1
fi

version="$(systemd-analyze --version | awk 'NR == 1 { print $2 }')"
echo "== systemd-analyze: systemd $version"
if [[ "$version" =~ ^[0-9]+$ ]] && ((version < 250)); then
    echo "systemd/check.sh: systemd $version is too old: --offline=yes needs systemd >= 250" >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# `verify` refuses a unit whose ExecStart= binary does not exist or is not executable, and on a
# development machine /usr/local/bin/waba-monitor is usually not installed (or is an old build).
# So check a copy whose ExecStart= runs an executable that is always there, with the same
# arguments; everything else is byte for byte the unit. The copy keeps the unit's file name,
# because systemd derives the unit name (and e.g. the credentials path) from it.
stub="$(type -P true)"
sed -e "s#^ExecStart=/usr/local/bin/waba-monitor #ExecStart=$stub #" "$unit_src" >"$tmp/$unit_name"
if ! grep -q "^ExecStart=$stub " "$tmp/$unit_name"; then
    echo "systemd/check.sh: no 'ExecStart=/usr/local/bin/waba-monitor ...' line in $unit_src" >&2
    exit 1
fi

echo "== systemd-analyze verify $unit_src"
rc=0
out="$(systemd-analyze verify "$tmp/$unit_name" 2>&1)" || rc=$?
# Output about other units (e.g. a broken unit elsewhere on this host) is shown but not fatal.
if [[ -n "$out" ]]; then
    printf '%s\n' "$out" | sed -e "s#$tmp/#systemd/#g" -e 's/^/  /'
fi
if ((rc != 0)) || grep -q "waba-monitor" <<<"$out"; then
    echo "  FAILED: systemd-analyze verify (exit $rc) reported problems with $unit_name" >&2
    exit 1
fi
echo "  SUCCESS: no warnings"

# The sample drop-ins (systemd/waba-monitor.service.d/*.conf, e.g. postgres.conf for the HA pair
# on PostgreSQL, systemd/HA.md) are checked together with the unit: verify reads the drop-in
# folder next to the unit file it is given, as systemd reads /etc/systemd/system/<unit>.d/.
dropin_dir="systemd/$unit_name.d"
if compgen -G "$dropin_dir/*.conf" >/dev/null; then
    mkdir -p "$tmp/dropins/$unit_name.d"
    cp "$tmp/$unit_name" "$tmp/dropins/$unit_name"
    cp "$dropin_dir"/*.conf "$tmp/dropins/$unit_name.d/"
    echo "== systemd-analyze verify $unit_src with $(cd "$dropin_dir" && echo *.conf)"
    rc=0
    out="$(systemd-analyze verify "$tmp/dropins/$unit_name" 2>&1)" || rc=$?
    if [[ -n "$out" ]]; then
        printf '%s\n' "$out" | sed -e "s#$tmp/dropins/#systemd/#g" -e 's/^/  /'
    fi
    if ((rc != 0)) || grep -q "waba-monitor" <<<"$out"; then
        echo "  FAILED: systemd-analyze verify (exit $rc) reported problems with $unit_name and its drop-ins" >&2
        exit 1
    fi
    echo "  SUCCESS: no warnings"
fi

echo "== systemd-analyze security --offline=yes --threshold=$threshold $unit_src"
rc=0
out="$(systemd-analyze security --no-pager --offline=yes --threshold="$threshold" \
    "$tmp/$unit_name" 2>"$tmp/security.err")" || rc=$?
# Parse warnings land on stderr here too (security loads the unit the same way verify does).
if [[ -s "$tmp/security.err" ]]; then
    sed -e "s#$tmp/#systemd/#g" -e 's/^/  /' "$tmp/security.err"
fi
# The exposed settings (✗ lines) are what is left to improve; the ✓ lines are noise here.
printf '%s\n' "$out" | grep -v '✓' | sed -e 's/[[:space:]]*$//' -e 's/^/  /'
score="$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
if [[ -z "$score" ]]; then
    echo "  FAILED: no overall exposure level in the output of systemd-analyze security" >&2
    exit 1
fi
if ((rc != 0)) || grep -q "waba-monitor" "$tmp/security.err"; then
    echo "  FAILED: exposure $score is above $((threshold / 10)).$((threshold % 10)) (exit $rc), or the unit has warnings" >&2
    exit 1
fi
echo "  SUCCESS: exposure $score (threshold $((threshold / 10)).$((threshold % 10)))"

echo "== all systemd checks passed"
