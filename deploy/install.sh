#!/usr/bin/env bash
# Installs waba-monitor as a systemd service, from a checkout:
#
#   cargo build --release && sudo deploy/install.sh
#
# (With CARGO_TARGET_DIR set, pass it through sudo, which drops it:
#   sudo CARGO_TARGET_DIR="$CARGO_TARGET_DIR" deploy/install.sh   or use --binary.)
#
# What it does (every step is safe to repeat; running it again upgrades binary and unit):
#   /usr/local/bin/waba-monitor                  the binary (0755), replaced atomically
#   /etc/systemd/system/waba-monitor.service     the unit from systemd/ (0644), replaced
#   /etc/waba-monitor/                           0755 (systemd's ConfigurationDirectory= mode)
#   /etc/waba-monitor/monitor.toml               the example config (0644), ONLY if there is
#                                                none: an existing config is never overwritten
#   /etc/waba-monitor/nginx-webhooks.conf.example  the TLS proxy for [webhooks] (0644), an
#                                                example for /etc/nginx/, ONLY if there is none
#   /etc/waba-monitor/credentials/               0700, for the secret files of LoadCredential=
#   systemctl daemon-reload
# It does not enable, start or restart the service, and never writes a secret.
#
# Options:
#   --binary PATH   install this binary instead of the release build of this checkout,
#                   ${CARGO_TARGET_DIR:-target}/release/waba-monitor
#   --root DIR      install under DIR instead of / (every path is prefixed with DIR; DIR is
#                   created if missing; systemctl is not run; root is not needed). For packaging
#                   and tests. DESTDIR=DIR in the environment does the same.
#   --dry-run       print what would be done; change nothing
#   -h, --help      this text
set -euo pipefail

prog="deploy/install.sh"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}
die() {
    echo "$prog: error: $*" >&2
    exit 1
}

# Where `cargo build --release` puts the binary (a relative CARGO_TARGET_DIR is relative to the
# current directory, as for cargo).
default_binary="${CARGO_TARGET_DIR:-$repo/target}/release/waba-monitor"
binary="$default_binary"
root="${DESTDIR:-}"
dry_run=0
while (($# > 0)); do
    case "$1" in
        --binary) (($# >= 2)) || die "--binary needs a path"; binary="$2"; shift 2 ;;
        --binary=*) binary="${1#*=}"; shift ;;
        --root) (($# >= 2)) || die "--root needs a directory"; root="$2"; shift 2 ;;
        --root=*) root="${1#*=}"; shift ;;
        --dry-run|-n) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see $prog --help)" ;;
    esac
done

# --- Where things come from and where they go ------------------------------------------------
unit_src="$repo/systemd/waba-monitor.service"
config_src="$repo/monitor.toml"
nginx_src="$repo/deploy/nginx-webhooks.conf"

root_missing=0
if [[ -n "$root" ]]; then
    if [[ ! -d "$root" ]]; then
        [[ -e "$root" ]] && die "--root $root exists and is not a directory"
        root_missing=1
    fi
    root="$(realpath -m -- "$root")"
    [[ "$root" == "/" ]] && root=""
fi
bin_dst="$root/usr/local/bin/waba-monitor"
unit_dst="$root/etc/systemd/system/waba-monitor.service"
etc_dir="$root/etc/waba-monitor"
config_dst="$etc_dir/monitor.toml"
nginx_dst="$etc_dir/nginx-webhooks.conf.example"
cred_dir="$etc_dir/credentials"
token_file="$cred_dir/meta-token"

# --- Preconditions ---------------------------------------------------------------------------
if [[ ! -e "$binary" ]]; then
    if [[ "$binary" == "$default_binary" ]]; then
        if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
            where="CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
        else
            where="CARGO_TARGET_DIR is not set"
        fi
        die "$binary not found: the default binary is \${CARGO_TARGET_DIR:-$repo/target}/release/waba-monitor ($where).
  Build it first with \`cargo build --release\` (in $repo), or pass --binary PATH.
  sudo drops CARGO_TARGET_DIR: pass it on with \`sudo CARGO_TARGET_DIR=DIR $prog\`."
    fi
    die "--binary $binary: no such file"
fi
[[ -f "$binary" && -x "$binary" ]] || die "$binary is not an executable file"
[[ -f "$unit_src" ]] || die "$unit_src not found: run this script from a complete checkout"
[[ -f "$config_src" ]] || die "$config_src not found: run this script from a complete checkout"
if [[ -z "$root" && $dry_run -eq 0 && $EUID -ne 0 ]]; then
    die "installing into / needs root: run it with sudo (or use --dry-run, or --root DIR)"
fi
# A binary that cannot even print its version (wrong architecture, truncated copy) would only
# fail later, at `systemctl start`; refuse it now.
if ! version="$("$binary" --version 2>&1)"; then
    die "$binary --version failed: is it a waba-monitor build for this machine? Output: $version"
fi

if ((dry_run)); then
    echo "$prog: DRY RUN: nothing is changed; the commands below are what would run."
fi
echo "$prog: installing $version"
echo "  from: $repo"
echo "  into: ${root:-/}"

# --- Helpers: every change goes through run() --------------------------------------------------
run() {
    if ((dry_run)); then
        printf '  would run:'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# Installs $1 as $3 with mode $2, atomically (a temporary file in the same directory, then a
# rename), so a running daemon or a concurrent reader never sees a half-written file. Says
# "unchanged" and does nothing when the content and mode are already right.
install_file() {
    local src="$1" mode="$2" dst="$3"
    if [[ -f "$dst" ]] && cmp -s "$src" "$dst" && [[ "$(stat -c %a "$dst")" == "${mode#0}" ]]; then
        echo "  unchanged: $dst"
        return 0
    fi
    if [[ -e "$dst" ]]; then
        echo "  updating:  $dst"
    else
        echo "  creating:  $dst"
    fi
    run install -m "$mode" "$src" "$dst.install-tmp"
    run mv -f "$dst.install-tmp" "$dst"
}

# Creates directory $2 with mode $1, or fixes the mode of an existing one.
ensure_dir() {
    local mode="$1" dir="$2"
    if [[ -d "$dir" ]]; then
        if [[ "$(stat -c %a "$dir")" == "${mode#0}" ]]; then
            echo "  exists:    $dir/ ($mode)"
            return 0
        fi
        echo "  mode:      $dir/ $(stat -c %a "$dir") -> $mode"
        run chmod "$mode" "$dir"
    else
        echo "  creating:  $dir/ ($mode)"
        run install -d -m "$mode" "$dir"
    fi
}

# --- 0. The staging tree (--root) --------------------------------------------------------------
if ((root_missing)); then
    echo "== root"
    echo "  creating:  $root/"
    run mkdir -p "$root"
fi

# --- 1. Binary ----------------------------------------------------------------------------------
echo "== binary"
[[ -d "$root/usr/local/bin" ]] || run install -d -m 0755 "$root/usr/local/bin"
bin_changed=0
if ! { [[ -f "$bin_dst" ]] && cmp -s "$binary" "$bin_dst"; }; then
    bin_changed=1
fi
install_file "$binary" 0755 "$bin_dst"

# --- 2. Unit ------------------------------------------------------------------------------------
echo "== systemd unit"
[[ -d "$root/etc/systemd/system" ]] || run install -d -m 0755 "$root/etc/systemd/system"
unit_changed=0
if ! { [[ -f "$unit_dst" ]] && cmp -s "$unit_src" "$unit_dst"; }; then
    unit_changed=1
fi
install_file "$unit_src" 0644 "$unit_dst"
if [[ -d "$unit_dst.d" ]]; then
    echo "  note:      drop-ins in $unit_dst.d/ stay in force (they are yours; not touched)"
fi

# --- 3. Configuration --------------------------------------------------------------------------
# /etc/waba-monitor is 0755 like systemd's default ConfigurationDirectoryMode= (systemd warns at
# every start when an existing configuration directory has another mode). monitor.toml is 0644:
# the service's dynamic user must read it, and it holds no secret (secrets live in files under
# credentials/, which only root can read; systemd hands them to the service).
echo "== configuration"
ensure_dir 0755 "$etc_dir"
if [[ -e "$config_dst" ]]; then
    echo "  kept:      $config_dst exists and is NOT overwritten."
    if ! cmp -s "$config_src" "$config_dst"; then
        echo "             To see what the example of this version documents:"
        echo "               diff -u $config_dst $config_src"
    fi
    config_check="$config_dst"
else
    echo "  creating:  $config_dst (the commented example; edit it before starting)"
    run install -m 0644 "$config_src" "$config_dst"
    config_check="$config_src"
fi
# The webhook proxy example: copied for reference (nginx reads nothing from here), never over a
# file that exists, which may be the admin's edited copy.
if [[ -e "$nginx_dst" ]]; then
    echo "  kept:      $nginx_dst exists and is NOT overwritten."
    if ! cmp -s "$nginx_src" "$nginx_dst"; then
        echo "             To see what the example of this version has:"
        echo "               diff -u $nginx_dst $nginx_src"
    fi
else
    echo "  creating:  $nginx_dst (TLS proxy example for [webhooks])"
    run install -m 0644 "$nginx_src" "$nginx_dst"
fi

# --- 4. Credentials ----------------------------------------------------------------------------
echo "== credentials"
ensure_dir 0700 "$cred_dir"
token_missing=0
if [[ -f "$token_file" ]]; then
    mode="$(stat -c %a "$token_file")"
    if [[ "$mode" != "600" && "$mode" != "400" ]]; then
        echo "  mode:      $token_file was $mode; a secret must be private -> 0600"
        run chmod 0600 "$token_file"
    else
        echo "  exists:    $token_file ($mode)"
    fi
    if [[ ! -s "$token_file" ]]; then
        echo "  WARNING:   $token_file is empty: the daemon will refuse it." >&2
    fi
else
    token_missing=1
    echo "  missing:   $token_file (the service will not start without it; see below)"
fi
for optional in smtp-password api-token app-secret verify-token; do
    if [[ -f "$cred_dir/$optional" ]]; then
        echo "  exists:    $cred_dir/$optional (load it with a drop-in: see below)"
    fi
done

# --- 5. systemd ---------------------------------------------------------------------------------
echo "== systemd"
service_active=0
if [[ -n "$root" ]]; then
    echo "  skipped:   systemctl daemon-reload (--root: not the running system)"
elif ! command -v systemctl >/dev/null 2>&1 || [[ ! -d /run/systemd/system ]]; then
    echo "  skipped:   systemctl daemon-reload (systemd is not running on this machine)"
else
    run systemctl daemon-reload
    ((dry_run)) || echo "  done:      systemctl daemon-reload"
    if systemctl is-active --quiet waba-monitor.service; then
        service_active=1
    fi
fi

# --- What the installed config still needs -------------------------------------------------------
# The example reads the secrets from environment variables (handy for a shell), but the unit
# passes them as credential files. Point out what to change instead of editing the config.
config_hints=()
if grep -Eq '^[[:space:]]*access_token_env[[:space:]]*=' "$config_check"; then
    config_hints+=("in [[meta]]: replace access_token_env with
         access_token_file = \"/run/credentials/waba-monitor.service/meta-token\"
       (the service gets no environment variables with secrets)")
fi
if grep -Eq '^[[:space:]]*password_env[[:space:]]*=' "$config_check"; then
    config_hints+=("in [email]: replace password_env with
         password_file = \"/run/credentials/waba-monitor.service/smtp-password\"
       and load that credential with a drop-in (step 3), or remove username/password_env
       if your SMTP relay needs no login")
fi
if grep -Eq '^[[:space:]]*api_token_env[[:space:]]*=' "$config_check"; then
    config_hints+=("in [daemon]: replace api_token_env with
         api_token_file = \"/run/credentials/waba-monitor.service/api-token\"
       and load that credential with a drop-in (step 3)")
fi
if grep -Eq '^[[:space:]]*app_secret_env[[:space:]]*=' "$config_check"; then
    config_hints+=("in [webhooks]: replace app_secret_env and verify_token_env with
         app_secret_file = \"/run/credentials/waba-monitor.service/app-secret\"
         verify_token_file = \"/run/credentials/waba-monitor.service/verify-token\"
       and load those credentials with a drop-in (step 3)")
fi

etc="/etc/waba-monitor"
echo
if ((dry_run)); then
    echo "Dry run finished: nothing was changed."
    echo
fi
cat <<EOF
Next steps:

  1. Edit $etc/monitor.toml: your business / WABA / phone-number ids, [email], and:
EOF
if ((${#config_hints[@]} == 0)); then
    echo "       (the secrets already come from files: nothing to change there)"
else
    for hint in "${config_hints[@]}"; do
        echo "     - $hint"
    done
fi
cat <<EOF

  2. Put the Meta system-user token in $etc/credentials/meta-token, readable by root only
     (0600). Paste the token, then press Enter and Ctrl-D (it stays out of your shell history):
       sudo sh -c 'umask 077 && cat > $etc/credentials/meta-token'
EOF
((token_missing)) || echo "     (it exists already; this replaces it)"
cat <<EOF

  3. Optional secrets, the same way: $etc/credentials/smtp-password (SMTP login) and
     $etc/credentials/api-token (status API, required when [daemon] listen is not loopback).
     Then add them to the service with \`sudo systemctl edit waba-monitor\`:
       [Service]
       LoadCredential=smtp-password:$etc/credentials/smtp-password
       LoadCredential=api-token:$etc/credentials/api-token
     With [webhooks]: $etc/credentials/app-secret (the Meta app's secret) and
     $etc/credentials/verify-token, loaded as app-secret and verify-token the same way; the TLS
     proxy in front of the receiver: see $etc/nginx-webhooks.conf.example.

  4. Check the config (run outside the service, it reports a token under /run/credentials/
     as "a systemd credential: the service receives it at start": expected):
       waba-monitor --config $etc/monitor.toml check-config

  5. Enable and start it, and follow its log:
       sudo systemctl enable --now waba-monitor
       systemctl status waba-monitor
       journalctl -u waba-monitor -f

  6. After editing monitor.toml: sudo systemctl reload waba-monitor   (re-reads config and secrets)
     After replacing a secret file: sudo systemctl restart waba-monitor  (credentials are copied
     at start)
EOF
if ((service_active)) && ((bin_changed || unit_changed)); then
    echo
    echo "waba-monitor is running the previous version: sudo systemctl restart waba-monitor"
fi
