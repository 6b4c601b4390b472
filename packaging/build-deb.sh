#!/usr/bin/env bash
# Builds the Debian package of waba-monitor with cargo-deb ([package.metadata.deb] in Cargo.toml):
#
#   packaging/build-deb.sh [--profile NAME] [--no-build]
#
# 1. `cargo build --locked --profile NAME` (default: release, what is shipped; --no-build packs
#    the binary already built for that profile);
# 2. generates, into ${CARGO_TARGET_DIR:-target}/NAME/packaging/root/ laid out as installed
#    (made afresh each time; Cargo.toml packs the whole tree), what the package ships but the
#    source tree does not hold as such:
#      usr/lib/systemd/system/waba-monitor.service
#                  systemd/waba-monitor.service with ExecStart= in /usr/bin (the one unit stays
#                  the source; install.sh installs it as it is, for /usr/local/bin)
#      etc/waba-monitor/monitor.toml
#                  the conffile (packaging/conffile.sh): monitor.toml with every secret read
#                  from the systemd credential the unit loads instead of an environment variable
#                  (the service gets none), so that `check-config` accepts it as installed
#      usr/share/man/man1/*.1.gz
#                  the man pages: `waba-monitor man --dir` (clap_mangen, one page per command)
#                  when the binary has it, else `waba-monitor man`, else one page made of the
#                  `--help` of every command (gzip -9n: cargo-deb compresses only files it did
#                  not find under target/)
#      usr/share/{bash-completion,zsh,fish}/...
#                  shell completions, when the binary has `completions`
#    Each rewrite is checked: if monitor.toml or the unit no longer has the line it expects, the
#    build fails instead of shipping an unconverted file;
# 3. `cargo deb --no-build` packs it; the .deb lands in ${CARGO_TARGET_DIR:-target}/debian/.
# The last line of stdout is the path of the .deb.
#
# Needs cargo-deb (`cargo install cargo-deb --locked`) and python3 (reads `cargo metadata`).
set -euo pipefail

# Paths given relative to where the script was started from, before moving to the checkout.
if [[ -n "${CARGO_TARGET_DIR:-}" && "$CARGO_TARGET_DIR" != /* ]]; then
    export CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR"
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."

prog="packaging/build-deb.sh"
die() {
    echo "$prog: $*" >&2
    exit 1
}
trap 'echo "$prog: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

profile="release"
build=1
while (($#)); do
    case "$1" in
    --profile)
        (($# >= 2)) || die "--profile needs a value"
        profile="$2"
        shift 2
        ;;
    --profile=*)
        profile="${1#--profile=}"
        shift
        ;;
    --no-build)
        build=0
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ "$profile" != "dev" && "$profile" != "debug" ]] || die "cargo-deb refuses the dev profile"

if ! command -v cargo-deb >/dev/null 2>&1; then
    die "cargo-deb not found: install it with \`cargo install cargo-deb --locked\`"
fi

target_dir="$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
out="$target_dir/$profile/packaging"
root="$out/root"
bin="$target_dir/$profile/waba-monitor"

if ((build)); then
    echo "== cargo build --locked --profile $profile" >&2
    cargo build --locked --profile "$profile" --bin waba-monitor >&2
fi
[[ -x "$bin" ]] || die "$bin not found: build it (without --no-build)"
version="$("$bin" --version)"
echo "== generating the packaged files for $version into $root" >&2
rm -rf "$root"
mkdir -p "$root/usr/lib/systemd/system" "$root/etc/waba-monitor" "$root/usr/share/man/man1"

# --- The unit: ExecStart= in /usr/bin -------------------------------------------------------------
unit_src="systemd/waba-monitor.service"
sed -e 's#^ExecStart=/usr/local/bin/waba-monitor #ExecStart=/usr/bin/waba-monitor #' \
    "$unit_src" >"$out/waba-monitor.service.tmp"
if [[ "$(grep -c '^ExecStart=/usr/bin/waba-monitor ' "$out/waba-monitor.service.tmp")" != 1 ]]; then
    die "$unit_src: expected exactly one 'ExecStart=/usr/local/bin/waba-monitor ...' line to rewrite"
fi
if grep -v '^[[:space:]]*#' "$out/waba-monitor.service.tmp" | grep -q '/usr/local/'; then
    die "$unit_src: a setting other than ExecStart= names /usr/local/; the package installs to /usr"
fi
mv -f "$out/waba-monitor.service.tmp" "$root/usr/lib/systemd/system/waba-monitor.service"

# --- The conffile: secrets from the unit's credentials (packaging/conffile.sh) -----------------
packaging/conffile.sh monitor.toml "$root/etc/waba-monitor/monitor.toml"

# --- The man page ----------------------------------------------------------------------------------
# roff-safe text: a backslash is \e, and a line starting with . or ' would be a request.
roff_text() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"; }
man1="$root/usr/share/man/man1"
if "$bin" man --help 2>/dev/null | grep -q -- '--dir'; then
    echo "  man pages: \`waba-monitor man --dir\` (clap_mangen, one per command)" >&2
    "$bin" man --dir "$man1" >/dev/null
elif "$bin" man --help >/dev/null 2>&1; then
    echo "  man page: \`waba-monitor man\` (clap_mangen)" >&2
    "$bin" man >"$man1/waba-monitor.1"
else
    echo "  man page: \`--help\` of every command (the binary has no \`man\` command)" >&2
    about="$("$bin" --help | sed -n '1p')"
    commands="$("$bin" --help | sed -n '/^Commands:/,/^$/p' | awk 'NR > 1 && NF { print $1 }' | grep -vx help)"
    {
        printf '.TH WABA-MONITOR 1 "" "%s" "User Commands"\n' "$version"
        printf '.SH NAME\nwaba-monitor \\- %s\n' "$(roff_text <<<"$about")"
        printf '.SH SYNOPSIS\n.B waba-monitor\n[\\fB\\-\\-config\\fR \\fIPATH\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]\n'
        printf '.SH DESCRIPTION\nThe output of \\fBwaba\\-monitor \\-\\-help\\fR and of each command'"'"'s \\fB\\-\\-help\\fR.\n'
        printf 'The README is in /usr/share/doc/waba-monitor/.\n.PP\n.nf\n'
        "$bin" --help | sed '1,2d' | roff_text
        printf '.fi\n.SH COMMANDS\n'
        for command in $commands; do
            printf '.SS %s\n.nf\n' "$command"
            "$bin" "$command" --help | roff_text
            printf '.fi\n'
        done
        printf '.SH FILES\n.TP\n/etc/waba-monitor/monitor.toml\nthe configuration (\\fBcheck\\-config\\fR validates it)\n'
        printf '.TP\n/etc/waba-monitor/credentials/\nsecret files, loaded by the unit with LoadCredential=\n'
        printf '.TP\n/var/lib/waba-monitor/monitor.db\nthe database (state and history)\n'
        printf '.SH SEE ALSO\n.BR systemctl (1),\n.BR journalctl (1)\n'
    } >"$man1/waba-monitor.1"
fi
for page in "$man1"/*.1; do
    grep -q '^\.TH ' "$page" || die "$page is not a man page (no .TH)"
done
[[ -f "$man1/waba-monitor.1" ]] || die "no waba-monitor.1 among the man pages"
gzip -9nf "$man1"/*.1

# --- Shell completions -------------------------------------------------------------------------------
if "$bin" completions --help >/dev/null 2>&1; then
    echo "  completions: bash, zsh, fish (\`waba-monitor completions\`)" >&2
    mkdir -p "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
        "$root/usr/share/fish/vendor_completions.d"
    "$bin" completions bash >"$root/usr/share/bash-completion/completions/waba-monitor"
    "$bin" completions zsh >"$root/usr/share/zsh/vendor-completions/_waba-monitor"
    "$bin" completions fish >"$root/usr/share/fish/vendor_completions.d/waba-monitor.fish"
fi

# --- The package -------------------------------------------------------------------------------------
echo "== cargo deb --no-build --locked --profile $profile" >&2
# cargo-deb warns that packaging/debian (its unit-scripts folder) holds no unit: expected, the
# unit is the generated asset above, which its systemd support handles all the same. That one
# line is dropped; any other warning is shown.
deb_out="$(cargo deb --no-build --locked --profile "$profile" 2>"$out/cargo-deb.err")" || {
    cat "$out/cargo-deb.err" >&2
    die "cargo deb failed"
}
grep -v '^warning: No usable systemd units found for `waba-monitor` in ' "$out/cargo-deb.err" >&2 || true
deb="$(printf '%s\n' "$deb_out" | tail -n 1)"
[[ -f "$deb" ]] || die "cargo deb printed no .deb path: $deb_out"
echo "$deb"
