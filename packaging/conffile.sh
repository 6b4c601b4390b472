#!/usr/bin/env bash
# Writes the Debian package's conffile, /etc/waba-monitor/monitor.toml, from the reference:
#
#   packaging/conffile.sh monitor.toml OUT
#
# The service gets no environment variables with secrets: the unit hands them over as systemd
# credentials (LoadCredential=). So the reference's secrets read from variables are rewritten to
# those files: the Meta token to /run/credentials/waba-monitor.service/meta-token (the one
# credential the unit loads), and the SMTP login is commented out (the unit loads no
# smtp-password, and a missing secret would stop the service; the password_file line to use is
# next to it, as in the reference). `check-config` then accepts the file as installed, with no
# environment (tests/monitor/packaging.rs and packaging/check-deb.sh check that).
#
# Each rewrite must find exactly its one line, and no secret may be left reading a variable:
# when monitor.toml changes so that this no longer holds, this fails (exit 1) and says which line,
# instead of shipping an unconverted file. Used by packaging/build-deb.sh.
set -euo pipefail

prog="packaging/conffile.sh"
die() {
    echo "$prog: $*" >&2
    exit 1
}
(($# == 2)) || die "usage: $prog monitor.toml OUT"
src="$1"
dst="$2"
[[ -f "$src" ]] || die "$src: no such file"
tmp="$dst.tmp"
trap 'rm -f "$tmp"' EXIT

rewrite() { # rewrite FROM TO: replace the one line that is exactly FROM by TO
    local from="$1" to="$2" n
    n="$(grep -cxF -- "$from" "$tmp" || true)"
    [[ "$n" == 1 ]] || die "$src: expected exactly one line '$from' to rewrite for the package, found $n"
    FROM="$from" TO="$to" python3 -c '
import os, sys
path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
lines = [os.environ["TO"] if l == os.environ["FROM"] else l for l in lines]
with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
' "$tmp"
}

{
    cat <<'HEADER'
# Installed by the waba-monitor Debian package as a conffile: an upgrade never overwrites your
# edits (dpkg asks when both you and the package changed it). It is the reference,
# /usr/share/doc/waba-monitor/examples/monitor.toml, with the secrets read from the files systemd
# hands the service (LoadCredential= in the unit) instead of environment variables, which the
# service does not get. The ids below are examples: put yours, then
#   sudo waba-monitor check-config && sudo systemctl enable --now waba-monitor
#
HEADER
    cat "$src"
} >"$tmp"
rewrite 'access_token_env = "WABA_MONITOR_META_TOKEN"' \
    '# access_token_env = "WABA_MONITOR_META_TOKEN"'
rewrite '# access_token_file = "/run/credentials/waba-monitor.service/meta-token"' \
    'access_token_file = "/run/credentials/waba-monitor.service/meta-token"'
rewrite 'username = "monitor@example.com"' \
    '# username = "monitor@example.com"'
rewrite 'password_env = "WABA_MONITOR_SMTP_PASSWORD"' \
    '# password_env = "WABA_MONITOR_SMTP_PASSWORD"'
if left="$(grep -nE '^[[:space:]]*[a-z_]+_env[[:space:]]*=' "$tmp")"; then
    die "$src: a secret would still come from an environment variable in the packaged config
  (teach $prog to rewrite it to a /run/credentials/waba-monitor.service/ file):
$left"
fi
mv -f "$tmp" "$dst"
