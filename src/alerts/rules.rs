//! The alert rule table: which change of which field is worth an email, and how urgent.
//!
//! This is the heart of the product and the only place these decisions are made. A verdict is
//! computed from the field, the old and the new value alone; whether a "resolved" notice is
//! actually sent depends on an alert having been open (see `alerts::plan`).

use crate::model::{CanSendMessage, MessagingLimit, PhoneStatus, QualityRating, TargetKind, field};
use crate::sources::subscriptions;

/// How urgent a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Resolved,
    Improving,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Improving => "improving",
            Severity::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "critical" => Some(Severity::Critical),
            "warning" => Some(Severity::Warning),
            "improving" => Some(Severity::Improving),
            "resolved" => Some(Severity::Resolved),
            _ => None,
        }
    }

    /// Whether this opens (or keeps open) an alert.
    pub fn is_bad(self) -> bool {
        matches!(self, Severity::Warning | Severity::Critical)
    }
}

/// What a verdict is about: one open alert at most per target and topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Quality,
    Status,
    Health,
    Limit,
    Review,
    Verification,
    Presence,
    Blind,
    /// Webhook facts (`account_update`, `account_alerts`, `security`, quality events).
    Ban,
    Restriction,
    Partner,
    AccountAlert,
    Security,
    QualityEvent,
    /// The monitor's app missing from a WABA's `subscribed_apps` (`[webhooks] app_id`).
    WebhookSubscription,
    /// The WABA offboarded or deleted (`account_update`), until reconnected.
    Connection,
    /// A template's category changed (what each send costs changes): a one-off notice.
    TemplateCategory,
}

impl Topic {
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Quality => "quality",
            Topic::Status => "status",
            Topic::Health => "health",
            Topic::Limit => "limit",
            Topic::Review => "review",
            Topic::Verification => "verification",
            Topic::Presence => "presence",
            Topic::Blind => "blind",
            Topic::Ban => "ban",
            Topic::Restriction => "restriction",
            Topic::Partner => "partner",
            Topic::AccountAlert => "account_alert",
            Topic::Security => "security",
            Topic::QualityEvent => "quality_event",
            Topic::WebhookSubscription => "webhook_subscription",
            Topic::Connection => "connection",
            Topic::TemplateCategory => "template_category",
        }
    }

    /// A one-off notice rather than a state: its alert is sent but not kept open (nothing
    /// ever resolves it, so it would be reminded of forever). A repeat of the same event is
    /// already silenced by the facts store (an equal fact changes nothing).
    pub fn is_event(self) -> bool {
        matches!(
            self,
            Topic::Security | Topic::AccountAlert | Topic::TemplateCategory
        )
    }
}

/// The rule table's answer for one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub topic: Topic,
    pub severity: Severity,
}

fn v(topic: Topic, severity: Severity) -> Option<Verdict> {
    Some(Verdict { topic, severity })
}

/// Phone-number status classes.
pub fn status_severity(s: &PhoneStatus) -> Option<Severity> {
    use PhoneStatus::*;
    match s {
        Flagged | Banned | Blocked | Deleted => Some(Severity::Critical),
        Restricted | RateLimited | Warned | Disconnected | Unverified | Migrated => {
            Some(Severity::Warning)
        }
        Connected => Some(Severity::Resolved),
        // Onboarding states and values we cannot classify alert on nothing.
        Pending | ManualReview | Unknown | Other(_) => None,
    }
}

/// The verdict for a change of `field` from `old` to `new` (raw stored strings; `old` is
/// `None` on the first sighting). `None`: nothing to say.
/// The rule table's answer for a change of `kind`: templates have rules of their own (their
/// `status` values mean other things than a number's), every other kind shares [`verdict`].
pub fn verdict_for(
    kind: TargetKind,
    field_name: &str,
    old: Option<&str>,
    new: &str,
) -> Option<Verdict> {
    match kind {
        TargetKind::Template => template_verdict(field_name, old, new),
        _ => verdict(field_name, old, new),
    }
}

/// Templates. Status: PAUSED, REJECTED, FLAGGED, LIMIT_EXCEEDED warning, DISABLED critical,
/// APPROVED (again) resolved. Quality: YELLOW warning, RED critical (RED → YELLOW improving),
/// GREEN resolved. Category changed: a warning (a one-off notice). A template seen for the
/// first time alerts only when it is already PAUSED, DISABLED or RED: a fleet's old rejected
/// or yellow templates are recorded, not announced at the first start. A template gone from
/// its WABA closes its status alert; anything else is history only.
pub fn template_verdict(field_name: &str, old: Option<&str>, new: &str) -> Option<Verdict> {
    use crate::model::template_field as tf;
    let first = old.is_none();
    match field_name {
        tf::STATUS => match new {
            "DISABLED" => v(Topic::Status, Severity::Critical),
            "PAUSED" => v(Topic::Status, Severity::Warning),
            "REJECTED" | "FLAGGED" | "LIMIT_EXCEEDED" if !first => {
                v(Topic::Status, Severity::Warning)
            }
            "APPROVED" | "REINSTATED" if !first => v(Topic::Status, Severity::Resolved),
            _ => None,
        },
        tf::QUALITY => match new {
            "RED" => v(Topic::Quality, Severity::Critical),
            "YELLOW" if old == Some("RED") => v(Topic::Quality, Severity::Improving),
            "YELLOW" if !first => v(Topic::Quality, Severity::Warning),
            "GREEN" if !first => v(Topic::Quality, Severity::Resolved),
            _ => None,
        },
        tf::CATEGORY if !first => v(Topic::TemplateCategory, Severity::Warning),
        field::PRESENCE if new == field::GONE => v(Topic::Status, Severity::Resolved),
        _ => None,
    }
}

pub fn verdict(field_name: &str, old: Option<&str>, new: &str) -> Option<Verdict> {
    match field_name {
        field::QUALITY_RATING => {
            let new = QualityRating::parse(new);
            let old = old.map(QualityRating::parse);
            match new {
                QualityRating::Red => v(Topic::Quality, Severity::Critical),
                QualityRating::Yellow if old == Some(QualityRating::Red) => {
                    v(Topic::Quality, Severity::Improving)
                }
                QualityRating::Yellow => v(Topic::Quality, Severity::Warning),
                QualityRating::Green => v(Topic::Quality, Severity::Resolved),
                // NA / UNKNOWN / unknown values: not a verdict either way.
                _ => None,
            }
        }
        field::STATUS => status_severity(&PhoneStatus::parse(new)).map(|s| Verdict {
            topic: Topic::Status,
            severity: s,
        }),
        field::HEALTH => match CanSendMessage::parse(new) {
            CanSendMessage::Blocked => v(Topic::Health, Severity::Critical),
            CanSendMessage::Limited => v(Topic::Health, Severity::Warning),
            CanSendMessage::Available => v(Topic::Health, Severity::Resolved),
            CanSendMessage::Other(_) => None,
        },
        field::MESSAGING_LIMIT_TIER | field::BUSINESS_MESSAGING_LIMIT => {
            // Only a comparison of two ordered tiers says anything: a first sighting, or a
            // change to or from an unordered value (UNTIERED, TIER_NOT_SET, unknown), does not.
            let old = MessagingLimit::parse(old?).daily_limit()?;
            let new = MessagingLimit::parse(new).daily_limit()?;
            if new < old {
                v(Topic::Limit, Severity::Warning)
            } else if new > old {
                v(Topic::Limit, Severity::Resolved)
            } else {
                None
            }
        }
        field::ACCOUNT_REVIEW_STATUS => match new {
            "REJECTED" => v(Topic::Review, Severity::Critical),
            "APPROVED" => v(Topic::Review, Severity::Resolved),
            _ => None,
        },
        field::BUSINESS_VERIFICATION_STATUS => match new.to_ascii_lowercase().as_str() {
            "revoked" | "rejected" | "expired" => v(Topic::Verification, Severity::Warning),
            "verified" => v(Topic::Verification, Severity::Resolved),
            _ => None,
        },
        field::PRESENCE => match new {
            field::GONE => v(Topic::Presence, Severity::Warning),
            field::PRESENT => v(Topic::Presence, Severity::Resolved),
            _ => None,
        },
        // Facts pushed by webhooks.
        field::BAN_STATE => match new {
            "DISABLE" | "SCHEDULE_FOR_DISABLE" => v(Topic::Ban, Severity::Critical),
            "REINSTATE" => v(Topic::Ban, Severity::Resolved),
            _ => None,
        },
        field::RESTRICTION => match new {
            field::NONE => v(Topic::Restriction, Severity::Resolved),
            "" => None,
            _ => v(Topic::Restriction, Severity::Warning),
        },
        field::PARTNER_REMOVED => match new {
            "PARTNER_REMOVED" => v(Topic::Partner, Severity::Critical),
            "PARTNER_ADDED" => v(Topic::Partner, Severity::Resolved),
            _ => None,
        },
        field::CONNECTION => match new {
            "ACCOUNT_OFFBOARDED" | "ACCOUNT_DELETED" => v(Topic::Connection, Severity::Critical),
            "ACCOUNT_RECONNECTED" => v(Topic::Connection, Severity::Resolved),
            _ => None,
        },
        // The business's daily limit pushed by `business_capability_update` (a TIER_* string
        // or a number): lowered → warning, raised → resolved, like the polled limits.
        field::BUSINESS_CAPABILITY => {
            let daily = |s: &str| {
                s.trim()
                    .parse::<f64>()
                    .ok()
                    .or_else(|| MessagingLimit::parse(s).daily_limit())
            };
            let (old, new) = (daily(old?)?, daily(new)?);
            if new < old {
                v(Topic::Limit, Severity::Warning)
            } else if new > old {
                v(Topic::Limit, Severity::Resolved)
            } else {
                None
            }
        }
        field::ACCOUNT_ALERT => match new.split(' ').next().unwrap_or("") {
            "CRITICAL" => v(Topic::AccountAlert, Severity::Critical),
            "WARNING" => v(Topic::AccountAlert, Severity::Warning),
            _ => None,
        },
        field::SECURITY => match new {
            "PIN_CHANGED" | "PIN_RESET_REQUEST" => v(Topic::Security, Severity::Warning),
            _ => None,
        },
        field::QUALITY_EVENT => match new {
            "FLAGGED" => v(Topic::QualityEvent, Severity::Warning),
            "UNFLAGGED" => v(Topic::QualityEvent, Severity::Resolved),
            _ => None,
        },
        // The same topic as the polled review status: one open alert whichever told us first.
        field::REVIEW_DECISION => match new {
            "REJECTED" => v(Topic::Review, Severity::Critical),
            "APPROVED" => v(Topic::Review, Severity::Resolved),
            _ => None,
        },
        // Polled hourly with `[webhooks] app_id`: webhooks not subscribed for the WABA.
        subscriptions::FIELD => match new {
            subscriptions::NOT_SUBSCRIBED => v(Topic::WebhookSubscription, Severity::Warning),
            subscriptions::SUBSCRIBED => v(Topic::WebhookSubscription, Severity::Resolved),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Severity::*;

    /// Every (old, new) pair of quality ratings, including the first sighting (`None`), and
    /// what the rule table says. Resolved is only *sent* if an alert was open (tested in plan).
    #[test]
    fn every_quality_transition_has_the_documented_verdict() {
        let values = ["GREEN", "YELLOW", "RED", "NA", "UNKNOWN", "PURPLE"];
        for old in std::iter::once(None).chain(values.iter().map(|v| Some(*v))) {
            for new in values {
                if old == Some(new) {
                    continue;
                }
                let got = verdict(field::QUALITY_RATING, old, new).map(|v| v.severity);
                let want = match (old, new) {
                    (_, "RED") => Some(Critical),
                    (Some("RED"), "YELLOW") => Some(Improving),
                    (_, "YELLOW") => Some(Warning),
                    (_, "GREEN") => Some(Resolved),
                    _ => None,
                };
                assert_eq!(got, want, "quality {old:?} -> {new}");
            }
        }
    }

    #[test]
    fn every_status_transition_has_the_documented_verdict() {
        let critical = ["FLAGGED", "BANNED", "BLOCKED", "DELETED"];
        let warning = [
            "RESTRICTED",
            "RATE_LIMITED",
            "WARNED",
            "DISCONNECTED",
            "UNVERIFIED",
            "MIGRATED",
        ];
        let quiet = ["PENDING", "MANUAL_REVIEW", "UNKNOWN", "SOMETHING_NEW"];
        let all: Vec<&str> = critical
            .iter()
            .chain(&warning)
            .chain(&quiet)
            .chain(&["CONNECTED"])
            .copied()
            .collect();
        for old in std::iter::once(None).chain(all.iter().map(|v| Some(*v))) {
            for new in &all {
                if old == Some(*new) {
                    continue;
                }
                let got = verdict(field::STATUS, old, new).map(|v| v.severity);
                let want = if critical.contains(new) {
                    Some(Critical)
                } else if warning.contains(new) {
                    Some(Warning)
                } else if *new == "CONNECTED" {
                    Some(Resolved)
                } else {
                    None
                };
                assert_eq!(got, want, "status {old:?} -> {new}");
            }
        }
    }

    #[test]
    fn health_limits_review_verification_and_presence_follow_the_table() {
        let sev = |f, o, n| verdict(f, o, n).map(|v| v.severity);
        assert_eq!(
            sev(field::HEALTH, Some("AVAILABLE"), "LIMITED"),
            Some(Warning)
        );
        assert_eq!(sev(field::HEALTH, None, "BLOCKED"), Some(Critical));
        assert_eq!(
            sev(field::HEALTH, Some("BLOCKED"), "AVAILABLE"),
            Some(Resolved)
        );
        assert_eq!(sev(field::HEALTH, Some("AVAILABLE"), "MAYBE"), None);
        for f in [field::MESSAGING_LIMIT_TIER, field::BUSINESS_MESSAGING_LIMIT] {
            assert_eq!(sev(f, Some("TIER_10K"), "TIER_2K"), Some(Warning));
            assert_eq!(sev(f, Some("TIER_UNLIMITED"), "TIER_100K"), Some(Warning));
            assert_eq!(sev(f, Some("TIER_2K"), "TIER_10K"), Some(Resolved));
            assert_eq!(sev(f, None, "TIER_250"), None, "first sighting is no drop");
            assert_eq!(sev(f, Some("TIER_1K"), "UNTIERED"), None);
        }
        assert_eq!(
            sev(field::ACCOUNT_REVIEW_STATUS, Some("APPROVED"), "REJECTED"),
            Some(Critical)
        );
        assert_eq!(
            sev(field::ACCOUNT_REVIEW_STATUS, Some("APPROVED"), "PENDING"),
            None
        );
        assert_eq!(
            sev(
                field::BUSINESS_VERIFICATION_STATUS,
                Some("verified"),
                "revoked"
            ),
            Some(Warning)
        );
        assert_eq!(
            sev(
                field::BUSINESS_VERIFICATION_STATUS,
                Some("verified"),
                "EXPIRED"
            ),
            Some(Warning)
        );
        assert_eq!(
            sev(
                field::BUSINESS_VERIFICATION_STATUS,
                Some("pending"),
                "verified"
            ),
            Some(Resolved)
        );
        assert_eq!(sev(field::PRESENCE, Some("present"), "gone"), Some(Warning));
        assert_eq!(sev(field::PRESENCE, None, "present"), Some(Resolved));
        assert_eq!(sev("verified_name", Some("a"), "b"), None);
    }

    /// Template rules, as a table: (field, old, new) → (topic, severity).
    #[test]
    fn template_changes_follow_their_own_table() {
        use crate::model::template_field as tf;
        type Row<'a> = (&'a str, Option<&'a str>, &'a str, Option<(Topic, Severity)>);
        let table: &[Row<'_>] = &[
            (
                tf::STATUS,
                Some("APPROVED"),
                "PAUSED",
                Some((Topic::Status, Warning)),
            ),
            (
                tf::STATUS,
                Some("PAUSED"),
                "APPROVED",
                Some((Topic::Status, Resolved)),
            ),
            (
                tf::STATUS,
                Some("PAUSED"),
                "DISABLED",
                Some((Topic::Status, Critical)),
            ),
            (
                tf::STATUS,
                Some("APPROVED"),
                "REJECTED",
                Some((Topic::Status, Warning)),
            ),
            (
                tf::STATUS,
                Some("APPROVED"),
                "FLAGGED",
                Some((Topic::Status, Warning)),
            ),
            (
                tf::STATUS,
                Some("APPROVED"),
                "LIMIT_EXCEEDED",
                Some((Topic::Status, Warning)),
            ),
            (tf::STATUS, Some("APPROVED"), "IN_APPEAL", None),
            (tf::STATUS, Some("APPROVED"), "SOMETHING_NEW", None),
            (tf::STATUS, None, "PAUSED", Some((Topic::Status, Warning))),
            (
                tf::STATUS,
                None,
                "DISABLED",
                Some((Topic::Status, Critical)),
            ),
            (tf::STATUS, None, "REJECTED", None),
            (tf::STATUS, None, "APPROVED", None),
            (
                tf::QUALITY,
                Some("GREEN"),
                "YELLOW",
                Some((Topic::Quality, Warning)),
            ),
            (
                tf::QUALITY,
                Some("GREEN"),
                "RED",
                Some((Topic::Quality, Critical)),
            ),
            (
                tf::QUALITY,
                Some("RED"),
                "YELLOW",
                Some((Topic::Quality, Improving)),
            ),
            (
                tf::QUALITY,
                Some("RED"),
                "GREEN",
                Some((Topic::Quality, Resolved)),
            ),
            (tf::QUALITY, None, "RED", Some((Topic::Quality, Critical))),
            (tf::QUALITY, None, "YELLOW", None),
            (tf::QUALITY, Some("GREEN"), "UNKNOWN", None),
            (
                tf::CATEGORY,
                Some("UTILITY"),
                "MARKETING",
                Some((Topic::TemplateCategory, Warning)),
            ),
            (tf::CATEGORY, None, "MARKETING", None),
            (
                tf::PRESENCE,
                Some("present"),
                "gone",
                Some((Topic::Status, Resolved)),
            ),
            (tf::PRESENCE, Some("gone"), "present", None),
        ];
        for (f, old, new, want) in table {
            let got =
                verdict_for(TargetKind::Template, f, *old, new).map(|v| (v.topic, v.severity));
            assert_eq!(got, *want, "template {f} {old:?} -> {new}");
        }
        // A number's FLAGGED status is critical; a template's is a warning.
        assert_eq!(
            verdict_for(
                TargetKind::PhoneNumber,
                field::STATUS,
                Some("CONNECTED"),
                "FLAGGED"
            )
            .map(|v| v.severity),
            Some(Critical)
        );
        assert!(Topic::TemplateCategory.is_event());
    }

    /// The webhook facts, as a table: (field, old, new) → (topic, severity).
    #[test]
    fn webhook_facts_follow_the_table() {
        type Row = (
            &'static str,
            Option<&'static str>,
            &'static str,
            Option<(Topic, Severity)>,
        );
        let table: &[Row] = &[
            (
                field::BAN_STATE,
                None,
                "DISABLE",
                Some((Topic::Ban, Critical)),
            ),
            (
                field::BAN_STATE,
                Some("REINSTATE"),
                "SCHEDULE_FOR_DISABLE",
                Some((Topic::Ban, Critical)),
            ),
            (
                field::BAN_STATE,
                Some("DISABLE"),
                "REINSTATE",
                Some((Topic::Ban, Resolved)),
            ),
            (field::BAN_STATE, None, "SOMETHING_NEW", None),
            (
                field::RESTRICTION,
                None,
                "RESTRICTED_ADD_PHONE_NUMBER_ACTION",
                Some((Topic::Restriction, Warning)),
            ),
            (
                field::RESTRICTION,
                Some("RESTRICTED_BIZ_INITIATED_MESSAGING"),
                "none",
                Some((Topic::Restriction, Resolved)),
            ),
            (field::RESTRICTION, None, "", None),
            (
                field::PARTNER_REMOVED,
                None,
                "PARTNER_REMOVED",
                Some((Topic::Partner, Critical)),
            ),
            (
                field::PARTNER_REMOVED,
                Some("PARTNER_REMOVED"),
                "PARTNER_ADDED",
                Some((Topic::Partner, Resolved)),
            ),
            (field::PARTNER_REMOVED, None, "PARTNER_APP_INSTALLED", None),
            (
                field::CONNECTION,
                None,
                "ACCOUNT_OFFBOARDED",
                Some((Topic::Connection, Critical)),
            ),
            (
                field::CONNECTION,
                Some("ACCOUNT_RECONNECTED"),
                "ACCOUNT_DELETED",
                Some((Topic::Connection, Critical)),
            ),
            (
                field::CONNECTION,
                Some("ACCOUNT_OFFBOARDED"),
                "ACCOUNT_RECONNECTED",
                Some((Topic::Connection, Resolved)),
            ),
            (field::CONNECTION, None, "ACCOUNT_SOMETHING", None),
            (field::BUSINESS_CAPABILITY, None, "TIER_2K", None),
            (
                field::BUSINESS_CAPABILITY,
                Some("TIER_10K"),
                "2000",
                Some((Topic::Limit, Warning)),
            ),
            (
                field::BUSINESS_CAPABILITY,
                Some("2000"),
                "TIER_100K",
                Some((Topic::Limit, Resolved)),
            ),
            (field::BUSINESS_CAPABILITY, Some("2000"), "TIER_2K", None),
            (field::BUSINESS_CAPABILITY, Some("TIER_2K"), "LOTS", None),
            (
                field::ACCOUNT_ALERT,
                None,
                "CRITICAL OBA_REJECTED",
                Some((Topic::AccountAlert, Critical)),
            ),
            (
                field::ACCOUNT_ALERT,
                None,
                "WARNING INCREASED_CAPACITY",
                Some((Topic::AccountAlert, Warning)),
            ),
            (
                field::ACCOUNT_ALERT,
                None,
                "INFORMATIONAL OBA_APPROVED",
                None,
            ),
            (
                field::SECURITY,
                None,
                "PIN_CHANGED",
                Some((Topic::Security, Warning)),
            ),
            (
                field::SECURITY,
                Some("PIN_CHANGED"),
                "PIN_RESET_REQUEST",
                Some((Topic::Security, Warning)),
            ),
            (field::SECURITY, None, "PIN_RESET_SUCCESS", None),
            (
                field::QUALITY_EVENT,
                None,
                "FLAGGED",
                Some((Topic::QualityEvent, Warning)),
            ),
            (
                field::QUALITY_EVENT,
                Some("FLAGGED"),
                "UNFLAGGED",
                Some((Topic::QualityEvent, Resolved)),
            ),
            (field::QUALITY_EVENT, None, "THROUGHPUT_UPGRADE", None),
            (field::QUALITY_EVENT, None, "ONBOARDING", None),
            (
                field::REVIEW_DECISION,
                None,
                "REJECTED",
                Some((Topic::Review, Critical)),
            ),
            (
                field::REVIEW_DECISION,
                Some("REJECTED"),
                "APPROVED",
                Some((Topic::Review, Resolved)),
            ),
            (field::REVIEW_DECISION, None, "DEFERRED", None),
            (field::VIOLATION, None, "SCAM", None),
        ];
        for (f, old, new, want) in table {
            let got = verdict(f, *old, new).map(|v| (v.topic, v.severity));
            assert_eq!(got, *want, "{f} {old:?} -> {new}");
        }
        assert!(Topic::Security.is_event() && Topic::AccountAlert.is_event());
        assert!(!Topic::Ban.is_event() && !Topic::Restriction.is_event());
    }

    #[test]
    fn webhook_subscription_follows_the_table() {
        use subscriptions::{FIELD, NOT_SUBSCRIBED, SUBSCRIBED};
        type Row<'a> = (Option<&'a str>, &'a str, Option<(Topic, Severity)>);
        let table: &[Row] = &[
            (
                None,
                NOT_SUBSCRIBED,
                Some((Topic::WebhookSubscription, Warning)),
            ),
            (
                Some(SUBSCRIBED),
                NOT_SUBSCRIBED,
                Some((Topic::WebhookSubscription, Warning)),
            ),
            (
                Some(NOT_SUBSCRIBED),
                SUBSCRIBED,
                Some((Topic::WebhookSubscription, Resolved)),
            ),
            (
                None,
                SUBSCRIBED,
                Some((Topic::WebhookSubscription, Resolved)),
            ),
            (Some(SUBSCRIBED), "something_else", None),
        ];
        for (old, new, want) in table {
            let got = verdict(FIELD, *old, new).map(|v| (v.topic, v.severity));
            assert_eq!(got, *want, "{old:?} -> {new}");
        }
        assert!(!Topic::WebhookSubscription.is_event());
        assert_eq!(Topic::WebhookSubscription.as_str(), "webhook_subscription");
    }
}
