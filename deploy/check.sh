#!/usr/bin/env bash
# Checks the operational files in deploy/: Prometheus alert rules (syntax and unit tests), the
# example scrape config, the Grafana dashboard (valid JSON, every panel query valid PromQL), and
# every metric name the dashboard and the rules use against the /metrics of a running daemon
# (`waba-monitor demo`): exported, with a type that fits how it is queried.
# Runs from anywhere; exits non-zero on the first failure.
#
#   deploy/check.sh
#
# The daemon is $WABA_MONITOR_BIN if set; otherwise `cargo build --locked --quiet` builds it
# and target/debug/waba-monitor is used (CARGO_TARGET_DIR is honoured).
# Needs promtool (Debian/Ubuntu: `apt-get install -y prometheus`), python3 and its
# prometheus-client package (`python3 -m pip install prometheus-client`).
set -euo pipefail

# Paths given relative to where the script was started from, before moving to the checkout.
for var in WABA_MONITOR_BIN CARGO_TARGET_DIR; do
    if [[ -n "${!var:-}" && "${!var}" != /* ]]; then
        export "$var=$PWD/${!var}"
    fi
done
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v promtool >/dev/null 2>&1; then
    cat >&2 <<'MSG'
deploy/check.sh: promtool not found.
Install it with Debian's or Ubuntu's prometheus package, which ships promtool:
    sudo apt-get update && sudo apt-get install -y --no-install-recommends prometheus
(then `sudo systemctl disable --now prometheus` if you do not want the server running),
or put the promtool binary from a Prometheus release on your PATH.
MSG
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "deploy/check.sh: python3 not found (needed to validate the Grafana dashboard)" >&2
    exit 1
fi
if ! python3 -c "import prometheus_client.openmetrics.parser" 2>/dev/null; then
    cat >&2 <<'MSG'
deploy/check.sh: python3 cannot import prometheus_client (needed to read the daemon's /metrics).
Install it with:
    python3 -m pip install prometheus-client
MSG
    exit 1
fi

tmp="$(mktemp -d)"
demo_pid=""
# Stops the demo daemon if it still runs (SIGTERM, then SIGKILL after 30 s) and removes $tmp.
cleanup() {
    if [[ -n "$demo_pid" ]] && kill -0 "$demo_pid" 2>/dev/null; then
        kill -TERM "$demo_pid" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$demo_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$demo_pid" 2>/dev/null || true
        wait "$demo_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== promtool: $(promtool --version 2>&1 | head -n 1)"

echo "== alert rules: syntax"
promtool check rules deploy/prometheus/alerts.yml

echo "== alert rules: unit tests"
promtool test rules deploy/prometheus/alerts_test.yml

echo "== example scrape config"
# The example points rule_files at an installed path; check it against this checkout's rules.
cp deploy/prometheus/alerts.yml "$tmp/alerts.yml"
sed -e "s#/etc/prometheus/rules/waba-monitor.yml#$tmp/alerts.yml#" \
    deploy/prometheus/scrape.yml >"$tmp/prometheus.yml"
promtool check config "$tmp/prometheus.yml"

echo "== grafana dashboard: JSON"
python3 -m json.tool deploy/grafana/waba-monitor.json >/dev/null
echo "  SUCCESS: deploy/grafana/waba-monitor.json is valid JSON"

echo "== grafana dashboard: PromQL of every panel"
# Each panel query, with Grafana's variables replaced by sample values, becomes a recording
# rule dashboard:panel_<id>_<refId> so that promtool parses it, and so that
# grafana/dashboard_test.yml can test what it returns.
python3 - deploy/grafana/waba-monitor.json "$tmp/dashboard_rules.yml" <<'PY'
import json
import sys

src, out = sys.argv[1], sys.argv[2]
dash = json.load(open(src, encoding="utf-8"))
subs = {"$__rate_interval": "5m", "$__interval": "5m", "$__range": "1d",
        "$waba_id": ".*", "$source": ".*"}
exprs = []

def walk(panels):
    for panel in panels:
        walk(panel.get("panels", []))
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                sys.exit(f"panel {panel.get('title')!r} target {target.get('refId')} has no expr")
            for var, value in subs.items():
                expr = expr.replace(var, value)
            if "$" in expr.replace("$1", ""):
                sys.exit(f"panel {panel.get('title')!r}: unknown variable in {expr!r}")
            exprs.append((f"dashboard:panel_{panel['id']}_{target.get('refId')}", expr))

walk(dash["panels"])
ids = [p["id"] for p in dash["panels"]]
if len(ids) != len(set(ids)):
    sys.exit("duplicate panel ids")
with open(out, "w", encoding="utf-8") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for record, expr in exprs:
        f.write(f"      - record: {record}\n        expr: {json.dumps(expr)}\n")
PY
promtool check rules "$tmp/dashboard_rules.yml"

echo "== grafana dashboard: unit tests of panel queries"
cp deploy/grafana/dashboard_test.yml "$tmp/dashboard_test.yml"
promtool test rules "$tmp/dashboard_test.yml"

echo "== metric names of the dashboard and the rules, against a running daemon's /metrics"
if [[ -n "${WABA_MONITOR_BIN:-}" ]]; then
    bin="$WABA_MONITOR_BIN"
    [[ -f "$bin" && -x "$bin" ]] || {
        echo "deploy/check.sh: WABA_MONITOR_BIN=$bin is not an executable file" >&2
        exit 1
    }
else
    if ! command -v cargo >/dev/null 2>&1; then
        echo "deploy/check.sh: cargo not found: install Rust, or set WABA_MONITOR_BIN to a waba-monitor binary" >&2
        exit 1
    fi
    echo "  building the daemon: cargo build --locked --quiet"
    cargo build --locked --quiet
    target_dir="$(cargo metadata --locked --no-deps --format-version 1 |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    bin="$target_dir/debug/waba-monitor"
fi
echo "  daemon: $bin ($("$bin" --version))"
# `--for` only bounds its life should this script be killed: cleanup stops it.
"$bin" demo --dir "$tmp/demo" --for 10m >"$tmp/demo.out" 2>"$tmp/demo.log" </dev/null &
demo_pid=$!
python3 deploy/check_metrics.py --pid "$demo_pid" --demo-output "$tmp/demo.out" \
    --demo-log "$tmp/demo.log" --timeout 120 \
    deploy/grafana/waba-monitor.json deploy/prometheus/alerts.yml \
    deploy/prometheus/alerts_test.yml deploy/grafana/dashboard_test.yml

echo "deploy/check.sh: all checks passed"
