//! Meta's usage headers: `X-App-Usage` and `X-Business-Use-Case-Usage`, percentages of the
//! quota used. The client keeps the latest values; metrics export them.

use std::collections::BTreeMap;

use serde_json::Value;

/// The latest usage percentages seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageSnapshot {
    /// `call_count`, `total_cputime`, `total_time` of the app.
    pub app: BTreeMap<String, f64>,
    /// Per business-use-case id (a WABA id for WhatsApp management calls): the same metrics,
    /// plus `estimated_time_to_regain_access` in minutes.
    pub business: BTreeMap<String, BTreeMap<String, f64>>,
}

const METRICS: [&str; 3] = ["call_count", "total_cputime", "total_time"];

/// Reads `X-App-Usage` into `snap`. A malformed header is ignored (it is advisory).
pub fn read_app_usage(header: &str, snap: &mut UsageSnapshot) {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(header) else {
        return;
    };
    for m in METRICS {
        if let Some(v) = obj.get(m).and_then(Value::as_f64) {
            snap.app.insert(m.to_owned(), v);
        }
    }
}

/// Reads `X-Business-Use-Case-Usage` into `snap`: the highest value per metric over the
/// use-case entries of each id.
pub fn read_business_usage(header: &str, snap: &mut UsageSnapshot) {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(header) else {
        return;
    };
    for (id, entries) in obj {
        let Some(entries) = entries.as_array() else {
            continue;
        };
        let mut per = BTreeMap::new();
        for e in entries {
            for m in METRICS
                .iter()
                .copied()
                .chain(["estimated_time_to_regain_access"])
            {
                if let Some(v) = e.get(m).and_then(Value::as_f64) {
                    let slot = per.entry(m.to_owned()).or_insert(0.0f64);
                    *slot = slot.max(v);
                }
            }
        }
        if !per.is_empty() {
            snap.business.insert(id, per);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_usage_headers_are_read_and_garbage_is_ignored() {
        let mut s = UsageSnapshot::default();
        read_app_usage(
            r#"{"call_count":28,"total_time":25,"total_cputime":25}"#,
            &mut s,
        );
        read_business_usage(
            r#"{"102290129340398":[{"type":"whatsapp_business_management","call_count":81,"total_cputime":3,"total_time":4,"estimated_time_to_regain_access":19}]}"#,
            &mut s,
        );
        read_app_usage("not json", &mut s);
        assert_eq!(s.app["call_count"], 28.0);
        assert_eq!(s.business["102290129340398"]["call_count"], 81.0);
        assert_eq!(
            s.business["102290129340398"]["estimated_time_to_regain_access"],
            19.0
        );
    }
}
