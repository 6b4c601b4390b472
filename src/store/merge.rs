//! Merging an observation into a stored row, field by field, collecting the changes.
//!
//! Tracked fields (quality, status, limits, health, name, review and verification status,
//! presence) produce a history row when they change; descriptive ones (display number, name,
//! WABA, health entities, throughput...) are updated silently. A `None` observation never
//! overwrites a stored value.

use crate::model::{Change, PhoneObservation, TargetKind, WabaObservation, field};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PhoneRow {
    pub id: String,
    pub source: String,
    pub waba_id: Option<String>,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    pub quality_rating: Option<String>,
    pub status: Option<String>,
    pub messaging_limit_tier: Option<String>,
    pub business_messaging_limit: Option<String>,
    pub health: Option<String>,
    pub health_entities: Option<String>,
    pub name_status: Option<String>,
    pub code_verification_status: Option<String>,
    pub throughput: Option<String>,
    pub account_mode: Option<String>,
    pub present: bool,
    pub first_seen_at: String,
    pub last_polled_at: String,
    pub last_changed_at: String,
    /// Priority of the source whose view this row follows.
    pub source_priority: i64,
    pub source_created_at: Option<String>,
    pub source_updated_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WabaRow {
    pub id: String,
    pub source: String,
    pub business_id: Option<String>,
    pub name: Option<String>,
    pub account_review_status: Option<String>,
    pub business_verification_status: Option<String>,
    pub business_messaging_limit: Option<String>,
    pub health: Option<String>,
    pub health_entities: Option<String>,
    pub ownership_type: Option<String>,
    pub present: bool,
    pub first_seen_at: String,
    pub last_polled_at: String,
    pub last_changed_at: String,
    pub source_priority: i64,
    pub source_created_at: Option<String>,
    pub source_updated_at: Option<String>,
}

/// Collects the changes of one target while its fields are merged.
struct Tracker<'a> {
    kind: TargetKind,
    id: &'a str,
    changes: Vec<Change>,
}

impl Tracker<'_> {
    /// A tracked field: a reported value that differs from the stored one is a change.
    fn track(&mut self, name: &str, slot: &mut Option<String>, new: Option<String>) {
        if let Some(new) = new
            && slot.as_deref() != Some(new.as_str())
        {
            self.changes.push(Change {
                kind: self.kind,
                target_id: self.id.to_owned(),
                field: name.to_owned(),
                old: slot.clone(),
                new: Some(new.clone()),
                previous_since: None,
            });
            *slot = Some(new);
        }
    }
}

/// A descriptive field: updated when reported, never a change.
fn describe(slot: &mut Option<String>, new: Option<String>) {
    if new.is_some() {
        *slot = new;
    }
}

fn s<T: std::fmt::Display>(v: &Option<T>) -> Option<String> {
    v.as_ref().map(ToString::to_string)
}

impl PhoneRow {
    pub fn new(id: &str, source: &str, now: &str) -> PhoneRow {
        PhoneRow {
            id: id.to_owned(),
            source: source.to_owned(),
            waba_id: None,
            display_phone_number: None,
            verified_name: None,
            quality_rating: None,
            status: None,
            messaging_limit_tier: None,
            business_messaging_limit: None,
            health: None,
            health_entities: None,
            name_status: None,
            code_verification_status: None,
            throughput: None,
            account_mode: None,
            present: true,
            first_seen_at: now.to_owned(),
            last_polled_at: now.to_owned(),
            last_changed_at: now.to_owned(),
            source_priority: 2,
            source_created_at: None,
            source_updated_at: None,
        }
    }

    /// Merges what a poll saw; returns the changes. `is_new`: first sighting, which records
    /// presence and every reported tracked field with no old value.
    pub fn merge(&mut self, o: &PhoneObservation, is_new: bool, now: &str) -> Vec<Change> {
        let mut t = Tracker {
            kind: TargetKind::PhoneNumber,
            id: &o.id,
            changes: Vec::new(),
        };
        if is_new || !self.present {
            let old = (!is_new).then(|| field::GONE.to_owned());
            let mut slot = old;
            t.track(field::PRESENCE, &mut slot, Some(field::PRESENT.to_owned()));
            self.present = true;
        }
        t.track(
            field::QUALITY_RATING,
            &mut self.quality_rating,
            s(&o.quality_rating),
        );
        t.track(field::STATUS, &mut self.status, s(&o.status));
        t.track(
            field::MESSAGING_LIMIT_TIER,
            &mut self.messaging_limit_tier,
            s(&o.messaging_limit_tier),
        );
        t.track(
            field::BUSINESS_MESSAGING_LIMIT,
            &mut self.business_messaging_limit,
            s(&o.business_messaging_limit),
        );
        t.track(
            field::HEALTH,
            &mut self.health,
            o.health.as_ref().map(|h| h.can_send_message.to_string()),
        );
        t.track(field::NAME_STATUS, &mut self.name_status, s(&o.name_status));
        describe(&mut self.waba_id, o.waba_id.clone());
        describe(
            &mut self.display_phone_number,
            o.display_phone_number.clone(),
        );
        describe(&mut self.verified_name, o.verified_name.clone());
        describe(
            &mut self.health_entities,
            o.health.as_ref().map(|h| h.entities_json().to_owned()),
        );
        describe(
            &mut self.code_verification_status,
            s(&o.code_verification_status),
        );
        describe(&mut self.throughput, s(&o.throughput));
        describe(&mut self.account_mode, o.account_mode.clone());
        describe(&mut self.source_created_at, o.source_created_at.clone());
        describe(&mut self.source_updated_at, o.source_updated_at.clone());
        if !t.changes.is_empty() {
            self.last_changed_at = now.to_owned();
        }
        t.changes
    }

    /// Records the number as gone from its WABA's listing.
    pub fn mark_gone(&mut self, now: &str) -> Change {
        self.present = false;
        self.last_changed_at = now.to_owned();
        Change {
            kind: TargetKind::PhoneNumber,
            target_id: self.id.clone(),
            field: field::PRESENCE.to_owned(),
            old: Some(field::PRESENT.to_owned()),
            new: Some(field::GONE.to_owned()),
            previous_since: None,
        }
    }
}

impl WabaRow {
    pub fn new(id: &str, source: &str, now: &str) -> WabaRow {
        WabaRow {
            id: id.to_owned(),
            source: source.to_owned(),
            business_id: None,
            name: None,
            account_review_status: None,
            business_verification_status: None,
            business_messaging_limit: None,
            health: None,
            health_entities: None,
            ownership_type: None,
            present: true,
            first_seen_at: now.to_owned(),
            last_polled_at: now.to_owned(),
            last_changed_at: now.to_owned(),
            source_priority: 2,
            source_created_at: None,
            source_updated_at: None,
        }
    }

    pub fn merge(&mut self, o: &WabaObservation, is_new: bool, now: &str) -> Vec<Change> {
        let mut t = Tracker {
            kind: TargetKind::Waba,
            id: &o.id,
            changes: Vec::new(),
        };
        if is_new || !self.present {
            let mut slot = (!is_new).then(|| field::GONE.to_owned());
            t.track(field::PRESENCE, &mut slot, Some(field::PRESENT.to_owned()));
            self.present = true;
        }
        t.track(
            field::ACCOUNT_REVIEW_STATUS,
            &mut self.account_review_status,
            s(&o.account_review_status),
        );
        t.track(
            field::BUSINESS_VERIFICATION_STATUS,
            &mut self.business_verification_status,
            s(&o.business_verification_status),
        );
        t.track(
            field::BUSINESS_MESSAGING_LIMIT,
            &mut self.business_messaging_limit,
            s(&o.business_messaging_limit),
        );
        t.track(
            field::HEALTH,
            &mut self.health,
            o.health.as_ref().map(|h| h.can_send_message.to_string()),
        );
        describe(&mut self.name, o.name.clone());
        describe(&mut self.business_id, o.business_id.clone());
        describe(
            &mut self.health_entities,
            o.health.as_ref().map(|h| h.entities_json().to_owned()),
        );
        describe(&mut self.ownership_type, o.ownership_type.clone());
        describe(&mut self.source_created_at, o.source_created_at.clone());
        describe(&mut self.source_updated_at, o.source_updated_at.clone());
        if !t.changes.is_empty() {
            self.last_changed_at = now.to_owned();
        }
        t.changes
    }

    pub fn mark_gone(&mut self, now: &str) -> Change {
        self.present = false;
        self.last_changed_at = now.to_owned();
        Change {
            kind: TargetKind::Waba,
            target_id: self.id.clone(),
            field: field::PRESENCE.to_owned(),
            old: Some(field::PRESENT.to_owned()),
            new: Some(field::GONE.to_owned()),
            previous_since: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PhoneStatus, QualityRating};

    fn obs(q: Option<QualityRating>) -> PhoneObservation {
        PhoneObservation {
            id: "1".into(),
            quality_rating: q,
            status: Some(PhoneStatus::Connected),
            ..Default::default()
        }
    }

    #[test]
    fn first_sighting_records_presence_and_reported_fields_only() {
        let mut row = PhoneRow::new("1", "m", "t0");
        let c = row.merge(&obs(Some(QualityRating::Green)), true, "t0");
        let fields: Vec<_> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["presence", "quality_rating", "status"]);
        assert!(c.iter().all(|c| c.old.is_none()));
    }

    #[test]
    fn unchanged_and_unreported_fields_write_nothing() {
        let mut row = PhoneRow::new("1", "m", "t0");
        row.merge(&obs(Some(QualityRating::Green)), true, "t0");
        assert!(
            row.merge(&obs(Some(QualityRating::Green)), false, "t1")
                .is_empty()
        );
        // Meta stopped sending the rating: not a change, the last value stays.
        assert!(row.merge(&obs(None), false, "t2").is_empty());
        assert_eq!(row.quality_rating.as_deref(), Some("GREEN"));
        assert_eq!(row.last_changed_at, "t0");
        let c = row.merge(&obs(Some(QualityRating::Red)), false, "t3");
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].old.as_deref(), c[0].new.as_deref()),
            (Some("GREEN"), Some("RED"))
        );
        assert_eq!(row.last_changed_at, "t3");
    }

    #[test]
    fn a_number_that_comes_back_records_gone_to_present() {
        let mut row = PhoneRow::new("1", "m", "t0");
        row.merge(&obs(Some(QualityRating::Green)), true, "t0");
        let gone = row.mark_gone("t1");
        assert_eq!(gone.new.as_deref(), Some("gone"));
        let back = row.merge(&obs(Some(QualityRating::Green)), false, "t2");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].old.as_deref(), Some("gone"));
        assert!(row.present);
    }
}
