//! `apply_in`: what a first sighting keeps for the alert planner and what goes straight to the
//! history.

use super::db::db;
use chrono::{TimeZone, Utc};

use crate::model::{PhoneObservation, PhoneStatus, QualityRating};
use crate::sources::SourcePoll;
use crate::store::Store;

fn number(id: &str, quality: QualityRating, status: PhoneStatus) -> PhoneObservation {
    PhoneObservation {
        id: id.into(),
        waba_id: Some("200".into()),
        display_phone_number: Some("+1 555 0100".into()),
        quality_rating: Some(quality),
        status: Some(status),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_healthy_first_sighting_is_history_only_and_a_bad_one_reaches_the_planner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("m.db")).await.unwrap();
    // An alert already open on a number the poll has never read (a webhook got there first).
    db!(store.pool(), (ex, d) => sqlx::query(d.sql("INSERT INTO alert_state (target_id, topic, kind, severity, value, opened_at, last_sent_at) \
         VALUES ('303', 'quality', 'phone_number', 'critical', 'RED', 't', 't')",))
    .execute(ex).await.map(|r| r.rows_affected()))
    .unwrap();
    let poll = SourcePoll {
        source: "meta".into(),
        phones: vec![
            number("301", QualityRating::Green, PhoneStatus::Connected),
            number("302", QualityRating::Red, PhoneStatus::Banned),
            number("303", QualityRating::Green, PhoneStatus::Connected),
        ],
        ..Default::default()
    };
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    let mut tx = store.begin_write().await.unwrap();
    let r = crate::store::apply_in(&mut tx, None, &poll, at)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let kept: Vec<(String, String, Option<String>)> = r
        .changes
        .iter()
        .map(|c| (c.target_id.clone(), c.field.clone(), c.new.clone()))
        .collect();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        kept,
        [
            ("302".to_owned(), "quality_rating".to_owned(), s("RED")),
            ("302".to_owned(), "status".to_owned(), s("BANNED")),
            // With an alert open on it, whatever could close an alert is kept for the planner.
            ("303".to_owned(), "presence".to_owned(), s("present")),
            ("303".to_owned(), "quality_rating".to_owned(), s("GREEN")),
            ("303".to_owned(), "status".to_owned(), s("CONNECTED")),
        ]
    );
    // Every change is in the history all the same, in order, once.
    let rows: Vec<(String, String)> =
        db!(store.pool(), (ex, d) => sqlx::query_as(d.sql("SELECT target_id, field FROM history ORDER BY seq"))
            .fetch_all(ex).await)
            .unwrap();
    assert_eq!(rows.len(), r.changes.len() + r.quiet_changes);
    assert_eq!(r.quiet_changes, rows.len() - 5);
    for id in ["301", "302", "303"] {
        let fields: Vec<&str> = rows
            .iter()
            .filter(|(t, _)| t == id)
            .map(|(_, f)| f.as_str())
            .collect();
        for f in ["presence", "quality_rating", "status"] {
            assert_eq!(
                fields.iter().filter(|x| **x == f).count(),
                1,
                "{id} {f}: {fields:?}"
            );
        }
    }
    store.close().await;
}

#[tokio::test]
async fn thousands_of_history_rows_go_in_batches_with_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("m.db")).await.unwrap();
    let n = super::HISTORY_BATCH + 11;
    let poll = SourcePoll {
        source: "meta".into(),
        phones: (0..n)
            .map(|i| {
                number(
                    &format!("{}", 400_000 + i),
                    QualityRating::Green,
                    PhoneStatus::Connected,
                )
            })
            .collect(),
        ..Default::default()
    };
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    let run = store.begin_run("meta", at).await.unwrap();
    let mut tx = store.begin_write().await.unwrap();
    let r = crate::store::apply_in(&mut tx, Some(run), &poll, at)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(r.changes.is_empty(), "{:?}", r.changes.first());
    let (count, quality, runs, when): (i64, i64, i64, String) = db!(store.pool(), (ex, d) => sqlx::query_as(d.sql("SELECT COUNT(*), \
         CAST(SUM(CASE WHEN field = 'quality_rating' AND new = 'GREEN' AND old IS NULL THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN poll_run_id = $1 THEN 1 ELSE 0 END) AS BIGINT), MIN(observed_at) FROM history",))
    .bind(run)
    .fetch_one(ex).await)
    .unwrap();
    assert_eq!(count as usize, r.quiet_changes);
    assert_eq!(quality as usize, n);
    assert_eq!(runs, count);
    assert_eq!(when, crate::timefmt::rfc3339(at));
    store.close().await;
}

async fn apply(store: &Store, poll: &SourcePoll, minute: u32) -> crate::store::ApplyReport {
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, minute, 0).unwrap();
    let mut tx = store.begin_write().await.unwrap();
    let r = crate::store::apply_in(&mut tx, None, poll, at)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    r
}

#[tokio::test]
async fn an_unchanged_number_is_known_by_its_fingerprint_and_a_change_is_still_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("m.db")).await.unwrap();
    let mut poll = SourcePoll {
        source: "meta".into(),
        priority: 2,
        phones: (0..3)
            .map(|i| {
                number(
                    &format!("30{i}"),
                    QualityRating::Green,
                    PhoneStatus::Connected,
                )
            })
            .collect(),
        ..Default::default()
    };
    apply(&store, &poll, 0).await;
    let hashes = || async {
        db!(store.pool(), (ex, d) => sqlx::query_as::<_, (String, Option<i64>, String)>(d.sql("SELECT id, obs_hash, last_polled_at FROM phone_numbers ORDER BY id",))
        .fetch_all(ex).await)
        .unwrap()
    };
    let first = hashes().await;
    assert!(first.iter().all(|(_, h, _)| h.is_some()), "{first:?}");

    let again = apply(&store, &poll, 5).await;
    assert_eq!(again.unchanged, 3);
    assert!(again.changes.is_empty() && again.quiet_changes == 0);
    let second = hashes().await;
    assert!(
        second
            .iter()
            .all(|(_, _, polled)| polled == "2026-12-01T10:05:00.000Z"),
        "{second:?}"
    );

    poll.phones[1].quality_rating = Some(QualityRating::Red);
    let changed = apply(&store, &poll, 10).await;
    assert_eq!(changed.unchanged, 2);
    let c: Vec<(&str, Option<&str>, Option<&str>)> = changed
        .changes
        .iter()
        .map(|c| (c.target_id.as_str(), c.old.as_deref(), c.new.as_deref()))
        .collect();
    assert_eq!(c, [("301", Some("GREEN"), Some("RED"))]);
    let third = hashes().await;
    assert_ne!(
        third[1].1, second[1].1,
        "the new observation's fingerprint is stored"
    );
    assert_eq!(third[0].1, second[0].1);
    store.close().await;
}

#[tokio::test]
async fn a_number_written_elsewhere_is_compared_in_full_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("m.db")).await.unwrap();
    let poll = SourcePoll {
        source: "meta".into(),
        priority: 2,
        phones: vec![number("301", QualityRating::Green, PhoneStatus::Connected)],
        ..Default::default()
    };
    apply(&store, &poll, 0).await;
    // Removed through the fleet API (store::accounts): no longer present.
    db!(store.pool(), (ex, d) => sqlx::query(d.sql("UPDATE phone_numbers SET present = FALSE WHERE id = '301'"))
        .execute(ex).await.map(|r| r.rows_affected()))
        .unwrap();
    let back = apply(&store, &poll, 5).await;
    assert_eq!(back.unchanged, 0);
    let c: Vec<(&str, Option<&str>, Option<&str>)> = back
        .changes
        .iter()
        .map(|c| (c.field.as_str(), c.old.as_deref(), c.new.as_deref()))
        .collect();
    assert_eq!(c, [("presence", Some("gone"), Some("present"))]);
    // Another source's view of the same number (a BSP, lower priority) is shadowed, and a
    // higher one's is merged in full: the fingerprint is per source and priority.
    let bsp = SourcePoll {
        source: "finedu".into(),
        priority: 1,
        phones: vec![number("301", QualityRating::Green, PhoneStatus::Connected)],
        ..Default::default()
    };
    assert_eq!(apply(&store, &bsp, 10).await.shadowed, 1);
    assert_eq!(apply(&store, &poll, 15).await.unchanged, 1);
    store.close().await;
}

#[test]
fn a_number_s_fingerprint_is_the_fnv_of_its_debug_form_streamed_or_built() {
    let obs = number("301", QualityRating::Red, PhoneStatus::Banned);
    let mut built = super::Fnv::new();
    built.eat(format!("{obs:?}").as_bytes());
    assert_eq!(super::phone_fingerprint(&obs), built.finish());
    let other = number("301", QualityRating::Green, PhoneStatus::Banned);
    assert_ne!(
        super::phone_fingerprint(&obs),
        super::phone_fingerprint(&other)
    );
}
