//! Email: queued alerts become one digest per cycle per recipient in the outbox, and a
//! delivery worker sends the outbox through SMTP until the server accepts each message.
//!
//! Only this module speaks SMTP. Every outbox row carries its final Message-ID from the start, so
//! a message resent after a crash between "accepted" and "marked sent" is recognisably the same.

pub mod alertmanager;
pub mod delivery;
pub mod heartbeat;
pub mod hook;
pub mod mailer;
pub mod render;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::config::{Config, EmailConfig, RouteConfig, WebhookFormat};
use crate::store::outbox::{self, NewMessage};
use crate::store::{Store, StoreError, Tx, silences};
use render::AlertItem;

/// The domain used in Message-IDs and References: the sender's, so ids look local to the
/// recipients' mail system.
pub fn id_domain(email: &EmailConfig) -> String {
    email
        .from
        .parse::<lettre::message::Mailbox>()
        .map(|m| m.email.domain().to_owned())
        .unwrap_or_else(|_| "waba-monitor.invalid".to_owned())
}

/// Where alerts go: `[email]` (its `to` gets what no route takes), the `[[route]]`s in order,
/// and the escalation list. Built from a config; the poller and the webhook processing keep
/// one.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    pub email: Option<EmailConfig>,
    pub routes: Vec<RouteConfig>,
    pub escalate_to: Vec<String>,
    /// `[alertmanager]`: a snapshot of the open alerts queued whenever alerts are digested.
    pub alertmanager: Option<alertmanager::AlertmanagerRouting>,
}

impl Routing {
    pub fn from_config(cfg: &Config) -> Routing {
        Routing {
            email: cfg.email.clone(),
            routes: cfg.routes.clone(),
            escalate_to: cfg.alerts.escalate_to.clone(),
            alertmanager: alertmanager::AlertmanagerRouting::from_config(cfg),
        }
    }

    /// Only `[email]`, no routes (tests, and the CLI's digest).
    pub fn email_only(email: Option<&EmailConfig>) -> Routing {
        Routing {
            email: email.cloned(),
            ..Routing::default()
        }
    }
}

pub use crate::alerts::Digested;

/// Where one alert goes.
#[derive(Debug, Default)]
struct Destinations {
    emails: Vec<String>,
    webhooks: Vec<(String, WebhookFormat)>,
}

/// The routes an alert takes, in order (stopping at the first without `continue`); none
/// taking it sends it to `[email] to`. An escalation goes to `escalate_to` only.
fn destinations(routing: &Routing, item: &AlertItem, opened: Option<&str>) -> Destinations {
    let mut d = Destinations::default();
    if item.severity == "escalation" {
        d.emails = routing.escalate_to.clone();
        return d;
    }
    let target = item.target_ref();
    let mut taken = false;
    for r in &routing.routes {
        if !r.matches(&target) || !r.takes(&item.severity, opened) {
            continue;
        }
        taken = true;
        d.emails.extend(r.email_to.iter().cloned());
        if let Some(u) = &r.webhook_url {
            d.webhooks.push((u.to_string(), r.webhook_format));
        }
        if !r.continue_ {
            break;
        }
    }
    if !taken && let Some(email) = &routing.email {
        d.emails.extend(email.to.iter().cloned());
    }
    d
}

/// Puts every alert not yet digested into one digest per recipient — an email address or a
/// webhook URL, as the routes say — (or, with nowhere to send, only logs them), in one
/// transaction. Returns how many alerts it took.
pub async fn digest(
    store: &Store,
    routing: &Routing,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut tx = store.begin_leader_write().await?;
    let taken = digest_in(&mut tx, routing, now).await?;
    tx.commit().await?;
    Ok(taken.len())
}

/// [`digest`] inside the caller's transaction (the poller's cycle transaction, so the
/// transitions and their emails are committed together). Alerts of a target an active silence
/// matches are recorded as silenced and sent nowhere. Returns each alert it took. With
/// `[alertmanager]`, a cycle that took any alert also queues a snapshot of the open alerts
/// for each Alertmanager, in the same transaction.
pub async fn digest_in(
    tx: &mut Tx<'_>,
    routing: &Routing,
    now: DateTime<Utc>,
) -> Result<Vec<Digested>, StoreError> {
    let taken = digest_alerts_in(tx, routing, now).await?;
    if !taken.is_empty()
        && let Some(am) = &routing.alertmanager
    {
        alertmanager::queue_in(tx, am, now).await?;
    }
    Ok(taken)
}

async fn digest_alerts_in(
    tx: &mut Tx<'_>,
    routing: &Routing,
    now: DateTime<Utc>,
) -> Result<Vec<Digested>, StoreError> {
    let items: Vec<AlertItem> = outbox::undigested_alerts(tx)
        .await?
        .into_iter()
        .map(AlertItem::from)
        .collect();
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let active = silences::active_in(tx, now).await?;
    let (silenced, live): (Vec<AlertItem>, Vec<AlertItem>) = items
        .into_iter()
        .partition(|i| active.iter().any(|s| s.matchers.matches(&i.target_ref())));
    for i in &silenced {
        tracing::info!(
            severity = %i.severity,
            target = %i.target(),
            what = %i.what(),
            "alert silenced (recorded, not sent)"
        );
    }
    for i in &live {
        tracing::warn!(
            severity = %i.severity,
            target = %i.target(),
            what = %i.what(),
            "alert"
        );
    }
    let domain = routing
        .email
        .as_ref()
        .map_or_else(|| "waba-monitor.invalid".to_owned(), id_domain);
    let mut by_email: BTreeMap<String, Vec<&AlertItem>> = BTreeMap::new();
    let mut by_hook: BTreeMap<(String, &'static str), (WebhookFormat, Vec<&AlertItem>)> =
        BTreeMap::new();
    for i in &live {
        let opened = match i.severity.as_str() {
            "resolved" | "improving" => {
                outbox::opened_severity_in(tx, &i.target_id, &i.topic, i.id).await?
            }
            "reminder" => i.detail.clone(),
            _ => None,
        };
        let d = destinations(routing, i, opened.as_deref());
        if routing.email.is_some() {
            for rcpt in d.emails {
                let list = by_email.entry(rcpt).or_default();
                if !list.iter().any(|x| x.id == i.id) {
                    list.push(i);
                }
            }
        }
        for (url, format) in d.webhooks {
            let entry = by_hook
                .entry((url, format.as_str()))
                .or_insert_with(|| (format, Vec::new()));
            if !entry.1.iter().any(|x| x.id == i.id) {
                entry.1.push(i);
            }
        }
    }
    let dashboard = routing
        .email
        .as_ref()
        .and_then(|e| e.dashboard_url.as_ref());
    for (rcpt, list) in &by_email {
        let owned: Vec<AlertItem> = list.iter().map(|i| (*i).clone()).collect();
        let subject = render::subject(&owned);
        let body = render::body_with_dashboard(&owned, dashboard);
        let html = render::html(&owned, dashboard);
        let references = render::references(&owned, &domain);
        // A digest redone after a crash before commit produces the same Message-ID, and the
        // store keeps one row per Message-ID.
        let message_id = render::message_id(&owned, rcpt, &domain);
        outbox::queue_digest(
            tx,
            &NewMessage {
                recipient: rcpt,
                message_id: &message_id,
                subject: &subject,
                body: &body,
                references: &references,
                channel: "email",
                content_type: None,
                html: Some(&html),
            },
            now,
        )
        .await?;
    }
    for ((url, _), (format, list)) in &by_hook {
        let owned: Vec<AlertItem> = list.iter().map(|i| (*i).clone()).collect();
        // The format is part of the key: two routes posting to one URL in two formats are two
        // deliveries, not one (the outbox keeps one row per key).
        let key = render::message_id(&owned, &format!("{url}#{}", format.as_str()), &domain);
        let (payload, content_type) = hook::payload(&owned, *format, &key, dashboard);
        outbox::queue_digest(
            tx,
            &NewMessage {
                recipient: url,
                message_id: &key,
                subject: &render::subject(&owned),
                body: &payload,
                references: "",
                channel: "webhook",
                content_type: Some(content_type),
                html: None,
            },
            now,
        )
        .await?;
    }
    let silenced_ids: Vec<i64> = silenced.iter().map(|i| i.id).collect();
    outbox::mark_silenced(tx, &silenced_ids).await?;
    let ids: Vec<i64> = live.iter().map(|i| i.id).collect();
    outbox::mark_digested(tx, &ids).await?;
    Ok(live
        .into_iter()
        .map(|i| Digested {
            severity: i.severity,
            silenced: false,
        })
        .chain(silenced.into_iter().map(|i| Digested {
            severity: i.severity,
            silenced: true,
        }))
        .collect())
}
