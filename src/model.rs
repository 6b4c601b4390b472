//! The normalised model: what the monitor knows about a phone number or a WABA, whichever
//! source reported it.
//!
//! Every enum is *open*: Meta adds values without notice, so each has an `Other(String)` arm that
//! keeps the raw value verbatim. Nothing here panics on a value it has never seen; callers decide
//! what an unknown value means (store it, count it, never alert on it).
//!
//! A field that a source did not report is `None`. `None` means "not reported", never "cleared":
//! the store keeps the last known value, so a field that Meta stops sending (as it does with the
//! deprecated `messaging_limit_tier`) can never look like a change.

use serde::{Serialize, Serializer};

/// Declares an open enum over Meta's string values.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value this version does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// Every value this version knows, in Meta's spelling.
            pub const KNOWN: &'static [&'static str] = &[$($s),+];

            /// Maps a raw value; unknown values are kept as `Other`.
            pub fn parse(raw: &str) -> Self {
                match raw {
                    $($s => Self::$variant,)+
                    other => Self::Other(other.to_owned()),
                }
            }

            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $s,)+
                    Self::Other(raw) => raw,
                }
            }

            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Other(_))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

open_enum!(
    /// `quality_rating` of a phone number.
    QualityRating {
        Green => "GREEN",
        Yellow => "YELLOW",
        Red => "RED",
        Na => "NA",
        Unknown => "UNKNOWN",
    }
);

open_enum!(
    /// Phone number `status`: the union of Meta's and the BSPs' documented values.
    PhoneStatus {
        Connected => "CONNECTED",
        Pending => "PENDING",
        Unverified => "UNVERIFIED",
        ManualReview => "MANUAL_REVIEW",
        Disconnected => "DISCONNECTED",
        Flagged => "FLAGGED",
        Warned => "WARNED",
        RateLimited => "RATE_LIMITED",
        Restricted => "RESTRICTED",
        Blocked => "BLOCKED",
        Banned => "BANNED",
        Migrated => "MIGRATED",
        Deleted => "DELETED",
        Unknown => "UNKNOWN",
    }
);

open_enum!(
    /// Both messaging-limit fields: the deprecated per-number `messaging_limit_tier` and the
    /// portfolio-wide `whatsapp_business_manager_messaging_limit` (v24+).
    MessagingLimit {
        TierNotSet => "TIER_NOT_SET",
        Tier50 => "TIER_50",
        Tier250 => "TIER_250",
        Tier1K => "TIER_1K",
        Tier2K => "TIER_2K",
        Tier10K => "TIER_10K",
        Tier100K => "TIER_100K",
        TierUnlimited => "TIER_UNLIMITED",
        Untiered => "UNTIERED",
    }
);

impl MessagingLimit {
    /// Business-initiated conversations (or unique users) per 24 h that the tier allows:
    /// `Some(f64::INFINITY)` for unlimited, `None` where the value has no order (not set,
    /// untiered, unknown). Used to tell a lowered limit from a raised one.
    pub fn daily_limit(&self) -> Option<f64> {
        match self {
            MessagingLimit::Tier50 => Some(50.0),
            MessagingLimit::Tier250 => Some(250.0),
            MessagingLimit::Tier1K => Some(1_000.0),
            MessagingLimit::Tier2K => Some(2_000.0),
            MessagingLimit::Tier10K => Some(10_000.0),
            MessagingLimit::Tier100K => Some(100_000.0),
            MessagingLimit::TierUnlimited => Some(f64::INFINITY),
            MessagingLimit::TierNotSet | MessagingLimit::Untiered | MessagingLimit::Other(_) => {
                None
            }
        }
    }
}

open_enum!(
    /// `health_status.can_send_message`, overall and per entity.
    CanSendMessage {
        Available => "AVAILABLE",
        Limited => "LIMITED",
        Blocked => "BLOCKED",
    }
);

impl CanSendMessage {
    /// Severity order used to compute the overall value: the worst entity wins. Unknown values
    /// rank between AVAILABLE and LIMITED: not good news, but not something to alarm on either.
    pub fn rank(&self) -> u8 {
        match self {
            CanSendMessage::Available => 0,
            CanSendMessage::Other(_) => 1,
            CanSendMessage::Limited => 2,
            CanSendMessage::Blocked => 3,
        }
    }
}

open_enum!(
    /// Display-name review `name_status`.
    NameStatus {
        Approved => "APPROVED",
        AvailableWithoutReview => "AVAILABLE_WITHOUT_REVIEW",
        Declined => "DECLINED",
        Expired => "EXPIRED",
        PendingReview => "PENDING_REVIEW",
        None => "NONE",
    }
);

open_enum!(
    /// `code_verification_status` of a phone number.
    CodeVerificationStatus {
        Verified => "VERIFIED",
        Unverified => "UNVERIFIED",
        NotVerified => "NOT_VERIFIED",
        Expired => "EXPIRED",
    }
);

open_enum!(
    /// `throughput.level` of a phone number.
    ThroughputLevel {
        Standard => "STANDARD",
        High => "HIGH",
        NotApplicable => "NOT_APPLICABLE",
    }
);

open_enum!(
    /// WABA `account_review_status`.
    ReviewStatus {
        Approved => "APPROVED",
        Pending => "PENDING",
        Rejected => "REJECTED",
        Restricted => "RESTRICTED",
    }
);

open_enum!(
    /// `business_verification_status` of the portfolio that owns a WABA (lower case at Meta).
    VerificationStatus {
        Expired => "expired",
        Failed => "failed",
        Ineligible => "ineligible",
        NotVerified => "not_verified",
        Pending => "pending",
        PendingNeedMoreInfo => "pending_need_more_info",
        PendingSubmission => "pending_submission",
        Rejected => "rejected",
        Revoked => "revoked",
        Verified => "verified",
    }
);

impl VerificationStatus {
    /// Meta's own examples mix `VERIFIED` and `verified`; normalise case before matching so the
    /// same status never reads as two.
    pub fn parse_any_case(raw: &str) -> Self {
        let lower = raw.to_ascii_lowercase();
        match Self::parse(&lower) {
            Self::Other(_) => Self::Other(raw.to_owned()),
            known => known,
        }
    }
}

/// One error reported in a `health_status` entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HealthError {
    pub error_code: Option<i64>,
    pub error_description: Option<String>,
    pub possible_solution: Option<String>,
}

/// One entity (phone number, WABA, business, app, ...) of a `health_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HealthEntity {
    pub entity_type: String,
    pub id: Option<String>,
    pub can_send_message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<HealthError>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_info: Vec<String>,
}

/// A `health_status` object: the overall verdict and the entities behind it.
///
/// The entities are kept as the JSON the store writes (a list of [`HealthEntity`]): a poll of
/// ten thousand numbers holds them all until its transaction, and one string each is a fraction
/// of the memory of the parsed structures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub can_send_message: CanSendMessage,
    entities_json: String,
}

impl Health {
    pub fn new(can_send_message: CanSendMessage, entities: &[HealthEntity]) -> Health {
        Health {
            can_send_message,
            entities_json: serde_json::to_string(entities).unwrap_or_else(|_| "[]".to_owned()),
        }
    }

    /// The entities as JSON, as the store keeps them beside the overall value.
    pub fn entities_json(&self) -> &str {
        &self.entities_json
    }

    /// The entities, parsed back.
    pub fn entities(&self) -> Vec<HealthEntity> {
        serde_json::from_str(&self.entities_json).unwrap_or_default()
    }
}

/// What one poll saw of a phone number.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhoneObservation {
    pub id: String,
    pub waba_id: Option<String>,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    pub quality_rating: Option<QualityRating>,
    pub status: Option<PhoneStatus>,
    pub messaging_limit_tier: Option<MessagingLimit>,
    pub business_messaging_limit: Option<MessagingLimit>,
    pub name_status: Option<NameStatus>,
    pub code_verification_status: Option<CodeVerificationStatus>,
    pub throughput: Option<ThroughputLevel>,
    pub account_mode: Option<String>,
    pub health: Option<Health>,
    /// When the source says the number was registered / last updated (RFC 3339 UTC; a BSP
    /// reports these, Meta does not).
    pub source_created_at: Option<String>,
    pub source_updated_at: Option<String>,
}

/// What one poll saw of a WABA.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WabaObservation {
    pub id: String,
    pub name: Option<String>,
    /// The business portfolio it was discovered under, if any.
    pub business_id: Option<String>,
    pub account_review_status: Option<ReviewStatus>,
    pub business_verification_status: Option<VerificationStatus>,
    pub business_messaging_limit: Option<MessagingLimit>,
    pub health: Option<Health>,
    pub ownership_type: Option<String>,
    pub source_created_at: Option<String>,
    pub source_updated_at: Option<String>,
}

/// What one poll (or a template webhook) saw of a message template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TemplateObservation {
    /// Meta's template id.
    pub id: String,
    pub waba_id: String,
    pub name: Option<String>,
    pub language: Option<String>,
    /// APPROVED, PENDING, REJECTED, PAUSED, DISABLED, FLAGGED, IN_APPEAL, LIMIT_EXCEEDED, ...
    /// (kept open: an unknown value is recorded as sent).
    pub status: Option<String>,
    /// `quality_score.score`: GREEN, YELLOW, RED, UNKNOWN.
    pub quality: Option<String>,
    /// UTILITY, MARKETING, AUTHENTICATION.
    pub category: Option<String>,
    pub rejected_reason: Option<String>,
    pub previous_category: Option<String>,
}

impl TemplateObservation {
    /// Whether the template is as it should be: APPROVED (or not yet known) with GREEN or no
    /// quality score. Only the others get a series of their own in `/metrics`.
    pub fn is_healthy(status: Option<&str>, quality: Option<&str>) -> bool {
        matches!(status, None | Some("APPROVED"))
            && matches!(quality, None | Some("GREEN" | "UNKNOWN"))
    }
}

/// The tracked fields of a template (`kind = "template"` in the history).
pub mod template_field {
    pub const STATUS: &str = "status";
    /// `quality_score.score`.
    pub const QUALITY: &str = "quality_score";
    pub const CATEGORY: &str = "category";
    /// `present` / `gone` from its WABA's complete listing (shared with the other kinds).
    pub const PRESENCE: &str = super::field::PRESENCE;
}

/// One change of one tracked field of one target, as the store found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: TargetKind,
    pub target_id: String,
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
    /// When the previous value was first observed (how long it lasted), when it is known.
    pub previous_since: Option<String>,
}

/// Kinds of monitored target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    PhoneNumber,
    Waba,
    /// A message template of a WABA (Meta's template id).
    Template,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::PhoneNumber => "phone_number",
            TargetKind::Waba => "waba",
            TargetKind::Template => "template",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "phone_number" => Some(TargetKind::PhoneNumber),
            "waba" => Some(TargetKind::Waba),
            "template" => Some(TargetKind::Template),
            _ => None,
        }
    }
}

/// The fields whose changes are recorded in the history table, in one place so the store, the
/// CLI and (later) the alert rules agree on their names.
pub mod field {
    pub const QUALITY_RATING: &str = "quality_rating";
    pub const STATUS: &str = "status";
    pub const MESSAGING_LIMIT_TIER: &str = "messaging_limit_tier";
    pub const BUSINESS_MESSAGING_LIMIT: &str = "whatsapp_business_manager_messaging_limit";
    pub const HEALTH: &str = "health";
    pub const NAME_STATUS: &str = "name_status";
    pub const ACCOUNT_REVIEW_STATUS: &str = "account_review_status";
    pub const BUSINESS_VERIFICATION_STATUS: &str = "business_verification_status";
    /// `present` / `gone`: whether the target is still listed by its WABA (or portfolio).
    pub const PRESENCE: &str = "presence";

    pub const PRESENT: &str = "present";
    pub const GONE: &str = "gone";

    // Facts pushed by webhooks (`webhooks` turns deliveries into these).
    /// `account_update` DISABLED_UPDATE: `ban_info.waba_ban_state` (DISABLE, REINSTATE,
    /// SCHEDULE_FOR_DISABLE).
    pub const BAN_STATE: &str = "ban_state";
    /// `account_update` ACCOUNT_RESTRICTION: the restriction types, sorted and comma-joined, or
    /// [`NONE`] once cleared or expired.
    pub const RESTRICTION: &str = "restriction";
    /// `account_update` PARTNER_REMOVED / PARTNER_ADDED.
    pub const PARTNER_REMOVED: &str = "partner_removed";
    /// `account_alerts`: "SEVERITY ALERT_TYPE".
    pub const ACCOUNT_ALERT: &str = "account_alert";
    /// `security`: the event (PIN_CHANGED, PIN_RESET_REQUEST, ...).
    pub const SECURITY: &str = "security";
    /// `phone_number_quality_update`: the event (FLAGGED, UNFLAGGED, DOWNGRADE, ...).
    pub const QUALITY_EVENT: &str = "quality_event";
    /// `account_review_update`: the decision.
    pub const REVIEW_DECISION: &str = "review_decision";
    /// `account_update` ACCOUNT_VIOLATION: the violation type (recorded, not alerted on).
    pub const VIOLATION: &str = "violation";

    /// `account_update` ACCOUNT_OFFBOARDED / ACCOUNT_RECONNECTED / ACCOUNT_DELETED: the event.
    pub const CONNECTION: &str = "connection";
    /// `business_capability_update`: `max_daily_conversations_per_business` (a TIER_* string
    /// or a number, as Meta sent it).
    pub const BUSINESS_CAPABILITY: &str = "business_capability";

    /// A restriction cleared or expired.
    pub const NONE: &str = "none";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_values_are_kept_verbatim() {
        let q = QualityRating::parse("PURPLE");
        assert_eq!(q, QualityRating::Other("PURPLE".into()));
        assert_eq!(q.as_str(), "PURPLE");
        assert!(!q.is_known());
        assert_eq!(QualityRating::parse("RED"), QualityRating::Red);
        assert_eq!(
            serde_json::to_string(&PhoneStatus::parse("SHADOW_BANNED")).expect("json"),
            "\"SHADOW_BANNED\""
        );
    }

    #[test]
    fn every_known_value_round_trips() {
        for raw in PhoneStatus::KNOWN {
            assert_eq!(PhoneStatus::parse(raw).as_str(), *raw);
            assert!(PhoneStatus::parse(raw).is_known());
        }
        for raw in MessagingLimit::KNOWN {
            assert_eq!(MessagingLimit::parse(raw).as_str(), *raw);
        }
    }

    #[test]
    fn messaging_limits_order_and_unlimited_is_infinite() {
        assert!(
            MessagingLimit::Tier1K.daily_limit() < MessagingLimit::Tier2K.daily_limit(),
            "1K < 2K"
        );
        assert_eq!(
            MessagingLimit::TierUnlimited.daily_limit(),
            Some(f64::INFINITY)
        );
        assert_eq!(MessagingLimit::Untiered.daily_limit(), None);
    }

    #[test]
    fn verification_status_is_matched_in_any_case() {
        assert_eq!(
            VerificationStatus::parse_any_case("VERIFIED"),
            VerificationStatus::Verified
        );
        assert_eq!(
            VerificationStatus::parse_any_case("Whatever"),
            VerificationStatus::Other("Whatever".into())
        );
    }
}
