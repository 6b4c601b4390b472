//! From changes to alerts, as **pure** functions: [`plan`] turns a cycle's changes and the
//! alerts still open into the alerts to queue and the open-alert updates; [`blind_step`] does
//! the same for a source's health ("monitoring blind"); [`reminder`] builds a reminder of an
//! alert left open. The store reads the open alerts and writes what these decide
//! (`store::alerts`), inside the cycle's one transaction, so a transition and the alert it
//! causes are committed together or not at all; open alerts remember what was announced, so a
//! recovery is announced only after an alert, and a restart with unchanged state (no change)
//! sends nothing.

pub mod rules;

use std::collections::HashMap;

use crate::model::Change;
use rules::{Severity, Topic, Verdict};

/// Alert behaviour that the configuration sets.
#[derive(Debug, Clone, Copy)]
pub struct AlertPolicy {
    /// Send "resolved" notices.
    pub resolved: bool,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy { resolved: true }
    }
}

/// The key of an alert's topic among the open alerts: limits are tracked per field, so a drop
/// of the tier and of the portfolio limit are two alerts, each resolved by its own rise.
pub fn topic_key(topic: Topic, field: &str) -> String {
    match topic {
        Topic::Limit => format!("limit:{field}"),
        other => other.as_str().to_owned(),
    }
}

/// The open alerts `plan` needs, by (target id, topic key): the value each was about.
pub type OpenAlerts = HashMap<(String, String), Option<String>>;

/// One alert a digest took: its severity, and whether a silence kept it from being sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    pub severity: String,
    pub silenced: bool,
}

/// An alert to queue (a row of `alerts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    pub created_at: String,
    pub kind: String,
    pub target_id: String,
    pub topic: String,
    pub severity: String,
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub previous_since: Option<String>,
    pub detail: Option<String>,
}

/// A change to the set of open alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateUpdate {
    /// Open (or update) the alert on (target, topic), announced now.
    Open {
        target_id: String,
        topic: String,
        kind: String,
        severity: Severity,
        value: String,
    },
    /// The alert on (target, topic) is over.
    Close { target_id: String, topic: String },
}

/// What a cycle's changes cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub alerts: Vec<NewAlert>,
    pub updates: Vec<StateUpdate>,
}

/// The open-alert keys `plan` consults for `changes` (so the store reads only those).
pub fn keys(changes: &[Change]) -> Vec<(String, String)> {
    changes
        .iter()
        .filter_map(|c| {
            let new = c.new.as_deref()?;
            let v = rules::verdict_for(c.kind, &c.field, c.old.as_deref(), new)?;
            Some((c.target_id.clone(), topic_key(v.topic, &c.field)))
        })
        .collect()
}

/// The alerts `changes` cause, given the alerts open before them, at `now` (RFC 3339).
/// Changes are taken in order, each seeing the open alerts as the earlier ones left them.
pub fn plan(changes: &[Change], open: &OpenAlerts, policy: AlertPolicy, now: &str) -> Plan {
    let mut open = open.clone();
    let mut out = Plan::default();
    for c in changes {
        let Some(new) = c.new.as_deref() else {
            continue;
        };
        let Some(Verdict { topic, severity }) =
            rules::verdict_for(c.kind, &c.field, c.old.as_deref(), new)
        else {
            continue;
        };
        let key = (c.target_id.clone(), topic_key(topic, &c.field));
        let was_open = open.get(&key).cloned();
        let send = match (severity, &was_open) {
            // Already alerted about exactly this value (e.g. RED -> NA -> RED): stay quiet.
            (s, Some(value)) if s.is_bad() && value.as_deref() == Some(new) => None,
            (Severity::Critical | Severity::Warning, _) => Some(severity),
            // RED -> YELLOW with an alert open is good news, but not the end of it.
            (Severity::Improving, Some(_)) => Some(Severity::Improving),
            (Severity::Improving, None) => Some(Severity::Warning),
            (Severity::Resolved, Some(_)) => {
                open.remove(&key);
                out.updates.push(StateUpdate::Close {
                    target_id: key.0.clone(),
                    topic: key.1.clone(),
                });
                policy.resolved.then_some(Severity::Resolved)
            }
            (Severity::Resolved, None) => None,
        };
        let Some(send) = send else { continue };
        // A one-off notice (`Topic::is_event`) is sent but not kept open: nothing would ever
        // resolve it, and it would be reminded of forever.
        if send != Severity::Resolved && !topic.is_event() {
            let state_severity = if send == Severity::Improving {
                Severity::Warning
            } else {
                send
            };
            open.insert(key.clone(), Some(new.to_owned()));
            out.updates.push(StateUpdate::Open {
                target_id: key.0.clone(),
                topic: key.1.clone(),
                kind: c.kind.as_str().to_owned(),
                severity: state_severity,
                value: new.to_owned(),
            });
        }
        out.alerts.push(NewAlert {
            created_at: now.to_owned(),
            kind: c.kind.as_str().to_owned(),
            target_id: key.0,
            topic: key.1,
            severity: send.as_str().to_owned(),
            field: c.field.clone(),
            old: c.old.clone(),
            new: Some(new.to_owned()),
            previous_since: c.previous_since.clone(),
            detail: None,
        });
    }
    out
}

/// What a template's PAUSED alert says: which pause it is and until when. `title` is Meta's
/// `other_info.title` when a webhook said it (FIRST_PAUSE, SECOND_PAUSE, RATE_LIMITING_PAUSE);
/// otherwise `pauses` — how many times the history has seen it go to PAUSED, this one included
/// — stands in. Meta pauses a template for 3 h the first time and 6 h the second; the third
/// time it disables it.
pub fn template_pause_detail(
    title: Option<&str>,
    pauses: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> String {
    let until = |hours: i64| crate::timefmt::rfc3339(at + chrono::Duration::hours(hours));
    match (title, pauses) {
        (Some("RATE_LIMITING_PAUSE"), _) => {
            "paused for rate limiting (too many sends of it): it resumes by itself once the rate falls".to_owned()
        }
        (Some("FIRST_PAUSE"), _) | (None, 1) => format!(
            "first pause: Meta pauses a template for 3 h the first time, so until about {} (UTC); a third pause disables it",
            until(3)
        ),
        (Some("SECOND_PAUSE"), _) | (None, 2) => format!(
            "second pause: Meta pauses it for 6 h, so until about {} (UTC); the next pause disables it",
            until(6)
        ),
        (Some(other), _) => format!("Meta says: {other}"),
        (None, n) => format!(
            "pause {n} seen by this monitor: Meta usually disables a template at its third pause"
        ),
    }
}

/// How one source's poll went, as far as "monitoring blind" is concerned.
#[derive(Debug, Clone)]
pub enum SourceHealth {
    /// Read at least partly, with no token or permission problem.
    Seeing,
    /// Nothing could be read; `reason` is bounded and carries no secret.
    Failed { reason: String },
    /// The token is expired/invalid or lacks permission: blind at once.
    Unauthorized { reason: String },
}

/// A source's failure count and blindness, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceState {
    pub consecutive_failures: i64,
    pub blind: bool,
}

/// What one poll's health does to a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlindStep {
    pub state: SourceState,
    pub reason: Option<String>,
    /// The alert about it, if blindness began or ended (with resolved notices on).
    pub alert: Option<NewAlert>,
    /// The open "blind" alert: opened, closed, or left as it is.
    pub update: Option<StateUpdate>,
}

/// The next state of a source after a poll with `health`: blind after `blind_after` failed
/// polls in a row, at once when the token is refused; an alert when that begins or ends.
pub fn blind_step(
    source: &str,
    before: SourceState,
    health: &SourceHealth,
    blind_after: u32,
    policy: AlertPolicy,
    now: &str,
) -> BlindStep {
    let (failures, reason, now_blind) = match health {
        SourceHealth::Seeing => (0, None, false),
        SourceHealth::Failed { reason } => {
            let n = before.consecutive_failures + 1;
            (n, Some(reason.clone()), n >= i64::from(blind_after))
        }
        SourceHealth::Unauthorized { reason } => {
            (before.consecutive_failures + 1, Some(reason.clone()), true)
        }
    };
    let topic = Topic::Blind.as_str().to_owned();
    let update = match (before.blind, now_blind) {
        (false, true) => Some(StateUpdate::Open {
            target_id: source.to_owned(),
            topic: topic.clone(),
            kind: "source".to_owned(),
            severity: Severity::Critical,
            value: "blind".to_owned(),
        }),
        (true, false) => Some(StateUpdate::Close {
            target_id: source.to_owned(),
            topic: topic.clone(),
        }),
        _ => None,
    };
    let severity = match (before.blind, now_blind) {
        (false, true) => Some(Severity::Critical),
        (true, false) if policy.resolved => Some(Severity::Resolved),
        _ => None,
    };
    let alert = severity.map(|sev| NewAlert {
        created_at: now.to_owned(),
        kind: "source".to_owned(),
        target_id: source.to_owned(),
        topic,
        severity: sev.as_str().to_owned(),
        field: "monitoring".to_owned(),
        old: Some(if before.blind { "blind" } else { "seeing" }.to_owned()),
        new: Some(if now_blind { "blind" } else { "seeing" }.to_owned()),
        previous_since: None,
        detail: reason.clone(),
    });
    BlindStep {
        state: SourceState {
            consecutive_failures: failures,
            blind: now_blind,
        },
        reason,
        alert,
        update,
    }
}

/// An alert still open, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAlert {
    pub target_id: String,
    pub topic: String,
    pub kind: String,
    pub severity: String,
    pub value: Option<String>,
    pub opened_at: String,
}

/// The reminder of an alert left open.
pub fn reminder(open: &OpenAlert, now: &str) -> NewAlert {
    let field = if open.topic == Topic::Blind.as_str() {
        "monitoring".to_owned()
    } else if let Some(f) = open.topic.strip_prefix("limit:") {
        f.to_owned()
    } else {
        match open.topic.as_str() {
            "quality" if open.kind == "template" => crate::model::template_field::QUALITY,
            "template_category" => crate::model::template_field::CATEGORY,
            "quality" => crate::model::field::QUALITY_RATING,
            "status" => crate::model::field::STATUS,
            "health" => crate::model::field::HEALTH,
            "review" => crate::model::field::ACCOUNT_REVIEW_STATUS,
            "verification" => crate::model::field::BUSINESS_VERIFICATION_STATUS,
            _ => crate::model::field::PRESENCE,
        }
        .to_owned()
    };
    NewAlert {
        created_at: now.to_owned(),
        kind: open.kind.clone(),
        target_id: open.target_id.clone(),
        topic: open.topic.clone(),
        severity: "reminder".to_owned(),
        field,
        old: None,
        new: open.value.clone(),
        previous_since: Some(open.opened_at.clone()),
        detail: Some(open.severity.clone()),
    }
}

/// The escalation of a critical alert left open past `[alerts] escalate_after`: like a
/// reminder, sent once, to the escalation list.
pub fn escalation(open: &OpenAlert, now: &str) -> NewAlert {
    NewAlert {
        severity: "escalation".to_owned(),
        ..reminder(open, now)
    }
}

#[cfg(test)]
mod template_tests {
    use super::*;

    #[test]
    fn a_pause_says_which_it_is_and_until_when() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default();
        let first = template_pause_detail(None, 1, at);
        assert!(first.starts_with("first pause"), "{first}");
        assert!(first.contains("2026-12-01T13:00:00.000Z"), "{first}");
        let second = template_pause_detail(Some("SECOND_PAUSE"), 1, at);
        assert!(second.contains("2026-12-01T16:00:00.000Z"), "{second}");
        assert!(template_pause_detail(None, 3, at).contains("pause 3"));
        assert!(template_pause_detail(Some("RATE_LIMITING_PAUSE"), 2, at).contains("rate"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TargetKind;

    fn change(id: &str, field: &str, old: Option<&str>, new: &str) -> Change {
        Change {
            kind: TargetKind::PhoneNumber,
            target_id: id.to_owned(),
            field: field.to_owned(),
            old: old.map(str::to_owned),
            new: Some(new.to_owned()),
            previous_since: old.map(|_| "2026-11-01T00:00:00.000Z".to_owned()),
        }
    }

    const Q: &str = crate::model::field::QUALITY_RATING;
    const NOW: &str = "2026-12-01T00:00:00.000Z";

    fn open(entries: &[(&str, &str, Option<&str>)]) -> OpenAlerts {
        entries
            .iter()
            .map(|(t, k, v)| (((*t).to_owned(), (*k).to_owned()), v.map(str::to_owned)))
            .collect()
    }

    /// (changes, open before, resolved notices) → (severities queued, open updates).
    #[test]
    fn the_plan_follows_the_open_alerts() {
        type Case = (Vec<Change>, OpenAlerts, bool, Vec<&'static str>, usize);
        let cases: Vec<Case> = vec![
            // GREEN -> RED: critical, opened.
            (
                vec![change("1", Q, Some("GREEN"), "RED")],
                open(&[]),
                true,
                vec!["critical"],
                1,
            ),
            // RED again while RED is open (RED -> NA -> RED): quiet.
            (
                vec![change("1", Q, Some("NA"), "RED")],
                open(&[("1", "quality", Some("RED"))]),
                true,
                vec![],
                0,
            ),
            // RED -> YELLOW with RED open: improving (still open, as warning).
            (
                vec![change("1", Q, Some("RED"), "YELLOW")],
                open(&[("1", "quality", Some("RED"))]),
                true,
                vec!["improving"],
                1,
            ),
            // YELLOW -> GREEN with an alert open: resolved, closed.
            (
                vec![change("1", Q, Some("YELLOW"), "GREEN")],
                open(&[("1", "quality", Some("YELLOW"))]),
                true,
                vec!["resolved"],
                1,
            ),
            // The same with resolved notices off: closed silently.
            (
                vec![change("1", Q, Some("YELLOW"), "GREEN")],
                open(&[("1", "quality", Some("YELLOW"))]),
                false,
                vec![],
                1,
            ),
            // Good news nobody was told the bad news of: nothing.
            (
                vec![change("1", Q, Some("YELLOW"), "GREEN")],
                open(&[]),
                true,
                vec![],
                0,
            ),
            // Two changes of one target in one cycle see each other.
            (
                vec![
                    change("1", Q, Some("GREEN"), "RED"),
                    change("1", Q, Some("RED"), "GREEN"),
                ],
                open(&[]),
                true,
                vec!["critical", "resolved"],
                2,
            ),
        ];
        for (i, (changes, before, resolved, want, updates)) in cases.into_iter().enumerate() {
            let p = plan(&changes, &before, AlertPolicy { resolved }, NOW);
            let got: Vec<&str> = p.alerts.iter().map(|a| a.severity.as_str()).collect();
            assert_eq!(got, want, "case {i}");
            assert_eq!(p.updates.len(), updates, "case {i}: {:?}", p.updates);
        }
    }

    #[test]
    fn an_alert_carries_how_long_the_previous_value_lasted() {
        let p = plan(
            &[change("1", Q, Some("GREEN"), "RED")],
            &open(&[]),
            AlertPolicy::default(),
            NOW,
        );
        assert_eq!(
            p.alerts[0].previous_since.as_deref(),
            Some("2026-11-01T00:00:00.000Z")
        );
        assert_eq!(keys(&[change("1", Q, Some("GREEN"), "RED")]).len(), 1);
    }

    #[test]
    fn blindness_begins_after_the_failures_and_ends_with_a_notice() {
        let failed = SourceHealth::Failed {
            reason: "timeout".into(),
        };
        let mut s = SourceState::default();
        let mut alerts = Vec::new();
        for _ in 0..3 {
            let step = blind_step("m", s, &failed, 3, AlertPolicy::default(), NOW);
            s = step.state;
            alerts.extend(step.alert);
        }
        assert!(s.blind);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].severity, "critical");
        let step = blind_step(
            "m",
            s,
            &SourceHealth::Seeing,
            3,
            AlertPolicy::default(),
            NOW,
        );
        assert!(!step.state.blind);
        assert_eq!(step.alert.map(|a| a.severity).as_deref(), Some("resolved"));
        assert!(matches!(step.update, Some(StateUpdate::Close { .. })));
        let unauthorized = SourceHealth::Unauthorized {
            reason: "190".into(),
        };
        let step = blind_step(
            "m",
            SourceState::default(),
            &unauthorized,
            3,
            AlertPolicy::default(),
            NOW,
        );
        assert!(step.state.blind, "a refused token is blind at once");
    }
}
