//! Call counting and the usage headers Meta sends: `X-App-Usage` and
//! `X-Business-Use-Case-Usage` (whole percentages of a budget).

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use super::state::{DEFAULT_APP_CALL_BUDGET, DEFAULT_WABA_CALL_BUDGET};
use super::{Shared, lock};

#[derive(Default)]
pub(super) struct Counters {
    pub(super) http_requests: u64,
    pub(super) graph_calls: u64,
    pub(super) per_waba: HashMap<String, u64>,
}

impl Shared {
    /// Counts calls and returns the usage snapshot the headers report.
    pub(super) fn count(&self, graph_calls: u64, wabas: &[String]) -> Usage {
        let (waba_budget, app_budget) = {
            let state = lock(&self.state);
            (
                state.waba_call_budget.unwrap_or(DEFAULT_WABA_CALL_BUDGET),
                state.app_call_budget.unwrap_or(DEFAULT_APP_CALL_BUDGET),
            )
        };
        let mut counters = lock(&self.counters);
        counters.graph_calls += graph_calls;
        for waba in wabas {
            *counters.per_waba.entry(waba.clone()).or_default() += 1;
        }
        let per_waba = wabas
            .iter()
            .map(|w| (w.clone(), counters.per_waba.get(w).copied().unwrap_or(0)))
            .collect();
        Usage {
            app_calls: counters.graph_calls,
            app_budget,
            waba_budget,
            per_waba,
        }
    }

    /// `X-Business-Use-Case-Usage` for these WABAs, in Meta's format (percentages).
    pub(super) fn buc_header(&self, usage: &Usage, wabas: &[String]) -> String {
        let mut object = Map::new();
        for waba in wabas.iter().collect::<BTreeSet<_>>() {
            let calls = usage.per_waba.get(waba).copied().unwrap_or(0);
            let percent = percent(calls, usage.waba_budget);
            object.insert(
                waba.clone(),
                json!([{
                    "type": "whatsapp_business_management",
                    "call_count": percent,
                    "total_cputime": percent / 2,
                    "total_time": percent / 2,
                    // Minutes; the sim never throttles on its own, but a spent budget says how
                    // long a real one would wait.
                    "estimated_time_to_regain_access": if percent >= 100 { 60 } else { 0 },
                }]),
            );
        }
        Value::Object(object).to_string()
    }
}

/// What the usage headers report after a reply was counted.
pub(super) struct Usage {
    pub(super) app_calls: u64,
    pub(super) app_budget: u64,
    pub(super) waba_budget: u64,
    pub(super) per_waba: HashMap<String, u64>,
}

/// Usage as Meta reports it: a whole percentage of the budget, capped at 100.
pub(super) fn percent(calls: u64, budget: u64) -> u64 {
    (calls.saturating_mul(100) / budget.max(1)).min(100)
}
