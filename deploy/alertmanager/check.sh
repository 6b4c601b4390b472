#!/usr/bin/env bash
# Checks the example Alertmanager configuration with amtool (Debian/Ubuntu:
# `apt-get install -y --no-install-recommends prometheus-alertmanager`): `amtool check-config`,
# then where sample alerts are routed (`amtool config routes test`). The pushed alerts
# themselves are tested against a real Alertmanager in tests/monitor/alertmanager.rs.
#
#   deploy/alertmanager/check.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v amtool >/dev/null 2>&1; then
    cat >&2 <<'MSG'
deploy/alertmanager/check.sh: amtool not found. Install Debian's or Ubuntu's Alertmanager:
    sudo apt-get update && sudo apt-get install -y --no-install-recommends prometheus-alertmanager
MSG
    exit 1
fi

amtool check-config alertmanager.yml

# The routes send each team what it owns.
route() {
    local want="$1"
    shift
    local got
    got="$(amtool config routes test --config.file=alertmanager.yml "$@" 2>&1 |
        grep -v 'overrides the --alertmanager.url')"
    if [[ "$got" != "$want" ]]; then
        echo "deploy/alertmanager/check.sh: labels $* routed to '$got', expected '$want'" >&2
        exit 1
    fi
}
route team-retail-pager alertname=WhatsAppNumberQualityRed severity=critical business_id=100000000000001 waba_id=200000000000001
route team-retail alertname=WhatsAppNumberQualityYellow severity=warning business_id=100000000000001 waba_id=200000000000001
route team-support alertname=WhatsAppNumberBanned severity=critical business_id=100000000000009 waba_id=200000000000002
route whatsapp-ops alertname=WhatsAppMonitoringBlind severity=critical source=main
route whatsapp-ops alertname=WhatsAppNumberQualityRed severity=critical waba_id=299999999999999
echo "deploy/alertmanager/alertmanager.yml: ok"
