//! The delivery worker: sends due outbox rows — emails through SMTP, webhook digests by an
//! HTTP POST — marks them sent only after the server accepted them (250 to DATA, a 2xx),
//! retries transient failures with capped exponential backoff until `max_age`, and marks
//! permanent refusals failed.
//!
//! Every attempt is counted before it starts: `attempts + 1`, `last_attempt_at` and `in_flight`
//! are committed before the SMTP conversation or the POST, and the outcome clears `in_flight`.
//! A row still in flight at the start of a pass was cut off (the daemon was killed or crashed
//! during that send; the server may or may not have accepted it): it is sent again with the
//! same Message-ID (a webhook: the same `Idempotency-Key`), and after [`MAX_INTERRUPTED_SENDS`]
//! such sends it is abandoned, so a message that kills the daemon cannot be sent (and kill it)
//! forever without anyone seeing it.
//!
//! A webhook row's recipient is its URL, and Slack or Mattermost URLs carry their secret in the
//! path: only its scheme and host ([`super::hook::origin`]) are ever logged or stored as an
//! error.
//!
//! Without `[email]` the worker has no mailer ([`Deliverer::without_mailer`]): it reads only
//! webhook rows; email rows (which cannot be queued without `[email]`) stay pending.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::alertmanager::Alertmanager;
use super::hook;
use super::mailer::{Mailer, Outgoing, SendFailure};
use crate::config::EmailConfig;
use crate::lifecycle::ShutdownSignal;
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;
use crate::store::outbox::DueMessage;
use crate::store::{Store, StoreError};
use crate::timefmt::parse_rfc3339;

/// Sends of one message that may die with the daemon (started, no outcome recorded) before the
/// message is given up as the likely cause.
pub const MAX_INTERRUPTED_SENDS: i64 = 5;

/// Rows read per pass (the rest wait for the next pass).
const BATCH: u32 = 100;

/// One webhook POST without `[email]` (whose `timeout` is used otherwise): `[email] timeout`'s
/// default.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a webhook digest is retried without `[email]` (whose `max_age` is used otherwise):
/// `[email] max_age`'s default.
pub const DEFAULT_WEBHOOK_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The most bytes of a receiver's answer kept in `last_error` (Slack answers `invalid_payload`,
/// `channel_is_archived`, ...).
const ANSWER_BYTES: usize = 200;

/// What one delivery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub sent: usize,
    pub retrying: usize,
    pub failed: usize,
    pub abandoned: usize,
}

/// What a webhook receiver's status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookVerdict {
    /// 2xx.
    Delivered,
    /// 4xx other than 408 and 429: the receiver refuses this for good.
    Refused,
    /// 5xx, 408, 429, and anything else (3xx: redirects are not followed): try again later.
    Retry,
}

/// The meaning of a webhook receiver's HTTP status.
pub fn hook_verdict(status: u16) -> HookVerdict {
    match status {
        200..=299 => HookVerdict::Delivered,
        408 | 429 => HookVerdict::Retry,
        400..=499 => HookVerdict::Refused,
        _ => HookVerdict::Retry,
    }
}

/// Which way a row goes, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Email,
    Webhook,
    /// A snapshot for an Alertmanager (`[alertmanager]`).
    Alertmanager,
}

impl Channel {
    fn of(channel: &str) -> Channel {
        match channel {
            "webhook" => Channel::Webhook,
            super::alertmanager::CHANNEL => Channel::Alertmanager,
            _ => Channel::Email,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Channel::Email => "alert email",
            Channel::Webhook => "alert webhook",
            Channel::Alertmanager => "Alertmanager post",
        }
    }

    fn id_name(self) -> &'static str {
        match self {
            Channel::Email => "Message-ID",
            Channel::Webhook => "Idempotency-Key",
            Channel::Alertmanager => "snapshot key",
        }
    }

    /// Who a row goes to, as it may be logged: an email address, or a webhook URL's scheme
    /// and host only (its path may be a secret).
    fn who(self, recipient: &str) -> String {
        match self {
            Channel::Email => recipient.to_owned(),
            Channel::Webhook | Channel::Alertmanager => hook::origin(recipient),
        }
    }
}

pub struct Deliverer {
    store: Store,
    /// `None` without `[email]`: only webhook rows are read, email rows stay pending.
    mailer: Option<Mailer>,
    /// Reused for every webhook POST (redirects not followed); why not, if it could not be
    /// built.
    http: Result<reqwest::Client, String>,
    /// One webhook POST, connection to last byte of the answer.
    webhook_timeout: Duration,
    max_age: Duration,
    /// Waits between attempts: `min_delay` doubling up to `max_delay`, with jitter.
    backoff: RetryPolicy,
    metrics: Arc<Metrics>,
    /// Whether this worker already said that email rows wait for `[email]`.
    warned_no_mailer: AtomicBool,
    /// `[alertmanager]`: posts its snapshots, and queues one every `refresh`.
    alertmanager: Option<Arc<Alertmanager>>,
}

/// Which rows a worker reads: Alertmanager snapshots have a worker of their own
/// ([`Deliverer::for_alertmanager`]), so a slow SMTP server never delays their refresh past
/// their `endsAt`.
fn is_alertmanager_worker(d: &Deliverer) -> bool {
    d.alertmanager.is_some()
}

impl Deliverer {
    /// Delivers email through `mailer` and webhook digests, both with `[email]`'s `timeout`
    /// and `max_age`.
    pub fn new(store: Store, mailer: Mailer, cfg: &EmailConfig, backoff: RetryPolicy) -> Deliverer {
        Deliverer::build(store, Some(mailer), cfg.timeout, cfg.max_age, backoff)
    }

    /// Delivers webhook digests only (no `[email]`): email rows are not read and stay pending
    /// (a warning says so once when there are any).
    pub fn without_mailer(
        store: Store,
        webhook_timeout: Duration,
        max_age: Duration,
        backoff: RetryPolicy,
    ) -> Deliverer {
        Deliverer::build(store, None, webhook_timeout, max_age, backoff)
    }

    fn build(
        store: Store,
        mailer: Option<Mailer>,
        webhook_timeout: Duration,
        max_age: Duration,
        backoff: RetryPolicy,
    ) -> Deliverer {
        Deliverer {
            store,
            mailer,
            http: webhook_client(webhook_timeout),
            webhook_timeout,
            max_age,
            backoff,
            metrics: Arc::new(Metrics::new()),
            warned_no_mailer: AtomicBool::new(false),
            alertmanager: None,
        }
    }

    /// The worker of `[alertmanager]`: reads only Alertmanager snapshot rows, posts them, and
    /// queues a fresh snapshot every
    /// [`AlertmanagerRouting::refresh`](super::alertmanager::AlertmanagerRouting::refresh).
    /// The other workers leave those rows to it.
    pub fn for_alertmanager(
        store: Store,
        am: Arc<Alertmanager>,
        max_age: Duration,
        backoff: RetryPolicy,
    ) -> Deliverer {
        let mut d = Deliverer::build(store, None, DEFAULT_WEBHOOK_TIMEOUT, max_age, backoff);
        d.alertmanager = Some(am);
        d
    }

    /// Counts deliveries in these metrics (the daemon's shared ones).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Deliverer {
        self.metrics = metrics;
        self
    }

    /// The production backoff: 30 s doubling to 30 min.
    pub fn default_backoff() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(1800),
            max_times: usize::MAX,
        }
    }

    fn delay_for(&self, attempt: usize) -> Duration {
        let mut policy = self.backoff;
        policy.max_times = attempt + 1;
        policy.delays().nth(attempt).unwrap_or(policy.max_delay)
    }

    fn count_abandoned(&self, channel: Channel) {
        match channel {
            Channel::Email => {
                self.metrics.emails_abandoned.inc();
            }
            Channel::Webhook => self.metrics.alert_webhook_delivery("abandoned"),
            Channel::Alertmanager => self.metrics.alertmanager_post("abandoned"),
        }
    }

    /// Settles the rows whose last send was cut off: each counts one more interrupted send;
    /// one that reached [`MAX_INTERRUPTED_SENDS`] is abandoned (logged at error level and
    /// counted in `emails_abandoned`, or as an abandoned webhook delivery), the others are due
    /// again at once.
    async fn settle_interrupted(&self, report: &mut DeliveryReport) -> Result<(), StoreError> {
        let rows = self.store.interrupted_sends().await?;
        for row in rows {
            let channel = Channel::of(&row.channel);
            if (channel == Channel::Alertmanager) != is_alertmanager_worker(self) {
                // The other worker's row.
                continue;
            }
            let (what, who) = (channel.what(), channel.who(&row.recipient));
            let interrupted = row.interrupted_attempts + 1;
            if interrupted >= MAX_INTERRUPTED_SENDS {
                let reason = format!(
                    "the daemon stopped during {interrupted} sends of this message; given up so that it cannot stop the daemon again"
                );
                self.store
                    .abandon_interrupted(row.id, interrupted, &reason)
                    .await?;
                self.count_abandoned(channel);
                report.abandoned += 1;
                tracing::error!(
                    to = %who,
                    message_id = %row.message_id,
                    attempts = row.attempts,
                    interrupted,
                    "{what} abandoned: {reason}"
                );
            } else {
                let note = format!(
                    "the daemon stopped during a send of this message ({interrupted} so far)"
                );
                self.store
                    .requeue_interrupted(row.id, interrupted, &note)
                    .await?;
                tracing::warn!(
                    to = %who,
                    message_id = %row.message_id,
                    attempts = row.attempts,
                    interrupted,
                    limit = MAX_INTERRUPTED_SENDS,
                    "the daemon stopped during an earlier send of this {what}; it is sent again with the same {}",
                    channel.id_name()
                );
            }
        }
        Ok(())
    }

    /// The rows this worker can send that are due at `now`: all of them with a mailer, the
    /// webhook rows without one (saying once that email rows wait).
    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<DueMessage>, StoreError> {
        if is_alertmanager_worker(self) {
            return self
                .store
                .pending_due_on(super::alertmanager::CHANNEL, now, BATCH)
                .await;
        }
        if self.mailer.is_some() {
            return self.store.pending_due(now, BATCH).await;
        }
        if !self.warned_no_mailer.load(Ordering::Relaxed)
            && !self.store.pending_due_on("email", now, 1).await?.is_empty()
        {
            self.warned_no_mailer.store(true, Ordering::Relaxed);
            tracing::warn!(
                "alert emails are waiting in the outbox but there is no [email] section to send them: they stay queued until [email] is configured again"
            );
        }
        self.store.pending_due_on("webhook", now, BATCH).await
    }

    /// One pass: settles sends cut off by a crash, then goes over the rows due at `now`. Each
    /// attempt is committed before it starts and its outcome before the next send, so a crash
    /// loses at most the knowledge of how one send ended (the message is then resent with the
    /// same Message-ID or Idempotency-Key, and the cut-off send is counted).
    pub async fn deliver_due(&self, now: DateTime<Utc>) -> Result<DeliveryReport, StoreError> {
        let mut report = DeliveryReport::default();
        self.settle_interrupted(&mut report).await?;
        let rows = self.due(now).await?;
        for row in rows {
            let channel = Channel::of(&row.channel);
            if channel == Channel::Email && self.mailer.is_none() {
                // Not read without a mailer; a row that slipped in stays pending untouched.
                continue;
            }
            if (channel == Channel::Alertmanager) != is_alertmanager_worker(self) {
                // The Alertmanager worker's row (or, for it, another worker's).
                continue;
            }
            let created = parse_rfc3339(&row.created_at).unwrap_or(now);
            // Counted and marked in flight before the conversation starts, in its own commit:
            // if the daemon dies during the send, the next start sees it.
            if !self
                .store
                .begin_attempt(row.id, Utc::now().max(now))
                .await?
            {
                // Settled or taken since it was read.
                continue;
            }
            let result = match (channel, &self.mailer) {
                (Channel::Webhook, _) => self.post(&row).await,
                (Channel::Alertmanager, _) => match &self.alertmanager {
                    Some(am) if am.knows(&row.recipient) => {
                        am.post(&row.recipient, &row.body).await
                    }
                    _ => Err(SendFailure::Permanent(format!(
                        "[alertmanager] no longer lists {}",
                        hook::origin(&row.recipient)
                    ))),
                },
                (Channel::Email, Some(mailer)) => {
                    mailer
                        .send_with_html(
                            &Outgoing {
                                recipient: &row.recipient,
                                subject: &row.subject,
                                body: &row.body,
                                message_id: &row.message_id,
                                references: row.references_hdr.as_deref(),
                                date: created.into(),
                            },
                            row.html.as_deref(),
                        )
                        .await
                }
                (Channel::Email, None) => Err(SendFailure::Transient(
                    "no [email] section to send this email with".to_owned(),
                )),
            };
            self.settle(&row, channel, created, now, result, &mut report)
                .await?;
        }
        Ok(report)
    }

    /// Records how an attempt ended: sent, failed for good, retried later, or abandoned after
    /// `max_age`.
    async fn settle(
        &self,
        row: &DueMessage,
        channel: Channel,
        created: DateTime<Utc>,
        now: DateTime<Utc>,
        result: Result<String, SendFailure>,
        report: &mut DeliveryReport,
    ) -> Result<(), StoreError> {
        let attempts = row.attempts + 1;
        let done_at = Utc::now().max(now);
        let (what, who) = (channel.what(), channel.who(&row.recipient));
        match result {
            Ok(reply) => {
                self.store.mark_sent(row.id, attempts, done_at).await?;
                match channel {
                    Channel::Email => {
                        self.metrics.emails_sent.inc();
                    }
                    Channel::Webhook => self.metrics.alert_webhook_delivery("sent"),
                    Channel::Alertmanager => self.metrics.alertmanager_post("sent"),
                }
                report.sent += 1;
                tracing::info!(to = %who, message_id = %row.message_id, reply = %reply, attempts, "{what} delivered");
            }
            Err(SendFailure::Permanent(text)) => {
                self.store.mark_failed(row.id, attempts, &text).await?;
                match channel {
                    Channel::Email => {
                        self.metrics.emails_failed.inc();
                    }
                    Channel::Webhook => self.metrics.alert_webhook_delivery("failed"),
                    Channel::Alertmanager => self.metrics.alertmanager_post("failed"),
                }
                report.failed += 1;
                let by = match channel {
                    Channel::Email => "the SMTP server",
                    Channel::Webhook => "the webhook receiver",
                    Channel::Alertmanager => "the Alertmanager",
                };
                tracing::error!(to = %who, message_id = %row.message_id, error = %text, "{what} refused for good by {by}; not retried");
            }
            Err(SendFailure::Transient(text)) => {
                let age = (now - created).to_std().unwrap_or_default();
                if age >= self.max_age {
                    self.store.mark_abandoned(row.id, attempts, &text).await?;
                    self.count_abandoned(channel);
                    report.abandoned += 1;
                    tracing::error!(to = %who, message_id = %row.message_id, error = %text, attempts, "{what} abandoned after max_age");
                } else {
                    let wait = self.delay_for(row.attempts.max(0) as usize);
                    let next = crate::timefmt::saturating_after(now, wait);
                    self.store
                        .schedule_retry(row.id, attempts, &text, next)
                        .await?;
                    match channel {
                        Channel::Webhook => self.metrics.alert_webhook_delivery("retry"),
                        Channel::Alertmanager => self.metrics.alertmanager_post("retry"),
                        Channel::Email => {}
                    }
                    report.retrying += 1;
                    tracing::warn!(to = %who, message_id = %row.message_id, error = %text, attempts, retry_in = ?wait, "{what} not accepted yet; will retry");
                }
            }
        }
        Ok(())
    }

    /// POSTs a webhook row: its body with its `Content-Type` and its key as `Idempotency-Key`.
    /// `Ok` with the status on a 2xx; the error text names the receiver by scheme and host
    /// only.
    async fn post(&self, row: &DueMessage) -> Result<String, SendFailure> {
        let origin = hook::origin(&row.recipient);
        let client = self.http.as_ref().map_err(|e| {
            SendFailure::Transient(format!("could not set up the HTTP client: {e}"))
        })?;
        let url = match url::Url::parse(&row.recipient) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => {
                return Err(SendFailure::Permanent(format!(
                    "the webhook URL ({origin}) is not an http(s) URL"
                )));
            }
        };
        let content_type = row.content_type.as_deref().unwrap_or("application/json");
        let sent = client
            .post(url)
            .timeout(self.webhook_timeout)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header("Idempotency-Key", &row.message_id)
            .body(row.body.clone())
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return Err(describe(e, &origin, &row.recipient, self.webhook_timeout)),
        };
        let status = resp.status();
        let verdict = hook_verdict(status.as_u16());
        let mut answer = Vec::new();
        if verdict != HookVerdict::Delivered {
            // A little of the answer says why (bounded; the request timeout covers it).
            while answer.len() < ANSWER_BYTES {
                match resp.chunk().await {
                    Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                    _ => break,
                }
            }
        }
        let answer = hook::scrub(
            &super::render::clean(&String::from_utf8_lossy(&answer), ANSWER_BYTES),
            &row.recipient,
        );
        let text = if answer.trim().is_empty() {
            format!("HTTP {status} from {origin}")
        } else {
            format!("HTTP {status} from {origin}: {}", answer.trim())
        };
        match verdict {
            HookVerdict::Delivered => Ok(format!("HTTP {status}")),
            HookVerdict::Refused => Err(SendFailure::Permanent(text)),
            HookVerdict::Retry => Err(SendFailure::Transient(text)),
        }
    }

    /// Queues a snapshot of the open alerts for every Alertmanager (the periodic re-post).
    async fn queue_alertmanager_snapshot(&self, am: &Alertmanager) -> Result<(), StoreError> {
        let mut tx = self.store.begin_leader_write().await?;
        super::alertmanager::queue_in(&mut tx, &am.routing, Utc::now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many rows wait for the SMTP server or a webhook receiver.
    pub async fn pending(&self) -> Result<i64, StoreError> {
        Ok(self.store.outbox_pending().await?.0)
    }

    /// Runs until shutdown: a pass when woken (after a cycle queued mail) and every `tick`.
    /// At shutdown the send in progress finishes; pending rows stay for the next start.
    pub async fn run(self, wake: Arc<Notify>, mut shutdown: ShutdownSignal, tick: Duration) {
        let mut last_snapshot: Option<std::time::Instant> = None;
        loop {
            let mut tick = tick;
            if let Some(am) = &self.alertmanager {
                let refresh = am.routing.refresh;
                if last_snapshot.is_none_or(|t| t.elapsed() >= refresh) {
                    last_snapshot = Some(std::time::Instant::now());
                    match self.queue_alertmanager_snapshot(am).await {
                        Err(e) if e.is_not_leader() => {
                            tracing::warn!(error = %e, "open alerts not queued for Alertmanager: another instance leads now");
                        }
                        Err(e) => {
                            self.metrics.store_error("outbox");
                            tracing::error!(error = %e, "could not queue the open alerts for Alertmanager");
                        }
                        Ok(()) => {}
                    }
                }
                // Not woken by cycles (the other worker is): the snapshots a cycle queues are
                // looked for every second.
                tick = tick.min(refresh).min(Duration::from_secs(1));
            }
            match self.deliver_due(Utc::now()).await {
                // Stopped by the lease loop in a moment; nothing was taken.
                Err(e) if e.is_not_leader() => {
                    tracing::warn!(error = %e, "nothing sent: another instance leads now and sends");
                }
                Err(e) => {
                    self.metrics.store_error("outbox");
                    tracing::error!(error = %e, "could not read or update the outbox");
                }
                Ok(_) => {}
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }
}

/// The client every webhook POST goes through: no redirects (a 3xx is retried like a 5xx, and
/// the payload never follows a redirect to another host), a bounded connect.
fn webhook_client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("waba-monitor/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.without_url().to_string())
}

/// A failed POST, its text naming the receiver by `origin` only (never the URL, whose path
/// may be a secret): permanent when the request cannot even be built, transient otherwise
/// (unreachable, reset, timed out).
fn describe(e: reqwest::Error, origin: &str, url: &str, timeout: Duration) -> SendFailure {
    if e.is_timeout() {
        return SendFailure::Transient(format!(
            "{origin} did not answer within {}",
            crate::timefmt::format_duration(timeout)
        ));
    }
    let permanent = e.is_builder();
    let text = hook::error_text(e);
    let text = format!("{origin}: {}", hook::scrub(&text, url));
    if permanent {
        SendFailure::Permanent(text)
    } else {
        SendFailure::Transient(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_2xx_is_delivered_408_and_429_retried_other_4xx_refused_the_rest_retried() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(hook_verdict(s), HookVerdict::Delivered, "{s}");
        }
        for s in [400, 401, 403, 404, 410, 413, 422, 499] {
            assert_eq!(hook_verdict(s), HookVerdict::Refused, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 301, 302, 307, 100] {
            assert_eq!(hook_verdict(s), HookVerdict::Retry, "{s}");
        }
    }
}
