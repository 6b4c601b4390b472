#!/usr/bin/env bash
# Checks the operational files in deploy/: Prometheus alert rules (syntax and unit tests), the
# example scrape config, and the Grafana dashboard (valid JSON, every panel query valid PromQL).
# Runs from anywhere; exits non-zero on the first failure.
#
#   deploy/check.sh
#
# Needs promtool (Debian/Ubuntu: `apt-get install -y prometheus`) and python3.
set -euo pipefail

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

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

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
# rule so that promtool parses it.
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
            exprs.append(expr)

walk(dash["panels"])
ids = [p["id"] for p in dash["panels"]]
if len(ids) != len(set(ids)):
    sys.exit("duplicate panel ids")
with open(out, "w", encoding="utf-8") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, expr in enumerate(exprs):
        f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(expr)}\n")
PY
promtool check rules "$tmp/dashboard_rules.yml"

echo "deploy/check.sh: all checks passed"
