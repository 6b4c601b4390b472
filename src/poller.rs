//! One poll cycle: every source polled concurrently, each source's result applied to the store
//! in its own transaction. A failing source never stops the others, and a failed or partial
//! poll changes nothing it did not read completely.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use tracing::Instrument;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::alerts::{AlertPolicy, SourceHealth};
use crate::config::{AlertsConfig, Config, EmailConfig};
use crate::retry::RetryPolicy;
use crate::sources::graph::ErrorClass;
use crate::sources::graph::GraphClient;
use crate::sources::meta::MetaSource;
use crate::sources::{PollOutcome, SourcePoll, TargetFailure};
use crate::store::{Change, Store};

/// What one source did in one cycle.
#[derive(Debug, Clone)]
pub struct SourceReport {
    pub source: String,
    pub outcome: PollOutcome,
    pub changes: Vec<Change>,
    pub failures: Vec<TargetFailure>,
    pub wabas: usize,
    pub phones: usize,
    pub anomalies: usize,
    pub calls: u64,
    pub requests: u64,
    /// Set when the store could not record the poll (the poll then counts as failed).
    pub store_error: Option<String>,
}

/// What one cycle did.
#[derive(Debug, Clone)]
pub struct CycleReport {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub sources: Vec<SourceReport>,
    /// Alerts put into the outbox (or logged, without `[email]`) by this cycle.
    pub alerts: usize,
}

impl CycleReport {
    pub fn all_ok(&self) -> bool {
        self.sources
            .iter()
            .all(|s| s.outcome == PollOutcome::Ok && s.store_error.is_none())
    }

    pub fn changes(&self) -> usize {
        self.sources.iter().map(|s| s.changes.len()).sum()
    }

    pub fn calls(&self) -> u64 {
        self.sources.iter().map(|s| s.calls).sum()
    }
}

/// Polls every configured source and records what it saw.
pub struct Poller {
    store: Store,
    sources: Vec<MetaSource>,
    alerts: AlertsConfig,
    email: Option<EmailConfig>,
    /// Woken after a cycle queued email, so delivery does not wait for its next tick.
    mail_wake: Arc<Notify>,
}

impl Poller {
    /// Builds the sources of a config; reads their tokens now, so a missing token is an error
    /// at start, not a failure at the first poll.
    pub fn from_config(cfg: &Config, store: Store, retry: RetryPolicy) -> anyhow::Result<Poller> {
        let mut sources = Vec::new();
        for m in &cfg.meta {
            let token = m.token.load().with_context(|| {
                format!("source \"{}\": could not read its access token", m.name)
            })?;
            let client = GraphClient::new(m, token, retry).with_context(|| {
                format!("source \"{}\": could not build the HTTP client", m.name)
            })?;
            sources.push(MetaSource::new(m.clone(), client));
        }
        Ok(Poller {
            store,
            sources,
            alerts: cfg.alerts.clone(),
            email: cfg.email.clone(),
            mail_wake: Arc::new(Notify::new()),
        })
    }

    /// The notifier the delivery worker waits on.
    pub fn mail_wake(&self) -> Arc<Notify> {
        self.mail_wake.clone()
    }

    fn policy(&self) -> AlertPolicy {
        AlertPolicy {
            resolved: self.alerts.resolved,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn source_names(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.name().to_owned()).collect()
    }

    /// Runs one cycle now. Never fails as a whole; each source's outcome is in the report.
    pub async fn poll_once(&self) -> CycleReport {
        let started_at = Utc::now();
        // A cycle that was cut short (timeout, crash) left its runs `running`; cycles never
        // overlap, so any still open now are dead.
        if let Err(e) = self.store.abandon_unfinished_runs(started_at).await {
            tracing::warn!(error = %e, "could not close unfinished poll runs");
        }
        // Boxed futures built in a loop rather than an iterator closure: rustc cannot yet prove
        // a closure-returned future Send for every lifetime (rust-lang/rust#102211).
        let mut polls: Vec<Pin<Box<dyn Future<Output = SourceReport> + Send + '_>>> =
            Vec::with_capacity(self.sources.len());
        for s in &self.sources {
            let span = tracing::info_span!(
                "poll",
                source = %s.name(),
                wabas = tracing::field::Empty,
                numbers = tracing::field::Empty,
                calls = tracing::field::Empty,
                failures = tracing::field::Empty,
                changes = tracing::field::Empty,
            );
            polls.push(Box::pin(self.poll_source(s).instrument(span)));
        }
        let sources = join_all(polls).await;
        let now = Utc::now();
        if let Err(e) =
            crate::alerts::queue_reminders(self.store.pool(), self.alerts.repeat_interval, now)
                .await
        {
            tracing::error!(error = %e, "could not queue reminders");
        }
        let alerts = match crate::notify::digest(&self.store, self.email.as_ref(), now).await {
            Ok(n) => n,
            Err(e) => {
                // The alerts stay undigested and are picked up by the next cycle.
                tracing::error!(error = %e, "could not queue alert emails; will retry next cycle");
                0
            }
        };
        if alerts > 0 {
            self.mail_wake.notify_one();
        }
        CycleReport {
            started_at,
            finished_at: Utc::now(),
            sources,
            alerts,
        }
    }

    async fn poll_source(&self, source: &MetaSource) -> SourceReport {
        let started = Utc::now();
        let run_id = match self.store.begin_run(source.name(), started).await {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::error!(error = %e, "could not record the start of a poll");
                None
            }
        };
        let poll = source.poll().await;
        let outcome = poll.outcome();
        log_poll(&poll);
        let observed_at = Utc::now();
        let mut report = SourceReport {
            source: poll.source.clone(),
            outcome,
            changes: Vec::new(),
            failures: poll.failures.clone(),
            wabas: poll.wabas.len(),
            phones: poll.phones.len(),
            anomalies: poll.anomalies.len(),
            calls: poll.calls,
            requests: poll.requests,
            store_error: None,
        };
        let Some(run_id) = run_id else {
            report.store_error = Some("could not record the poll run".into());
            return report;
        };
        match self
            .store
            .apply(run_id, &poll, observed_at, self.policy())
            .await
        {
            Ok(applied) => {
                if applied.new_targets > 0 {
                    tracing::info!(
                        new_targets = applied.new_targets,
                        "first sighting of targets recorded (their initial state is in history)"
                    );
                }
                // First sightings (no old value) are summarised above; real changes get a line
                // each.
                for c in applied.changes.iter().filter(|c| c.old.is_some()) {
                    tracing::info!(
                        kind = c.kind.as_str(),
                        id = %c.target_id,
                        field = %c.field,
                        old = c.old.as_deref().unwrap_or("-"),
                        new = c.new.as_deref().unwrap_or("-"),
                        "change"
                    );
                }
                report.changes = applied.changes;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not record the poll's observations");
                report.store_error = Some(e.to_string());
            }
        }
        let health = source_health(&poll, report.store_error.is_some());
        if let Err(e) = crate::alerts::record_source_health(
            self.store.pool(),
            &report.source,
            &health,
            self.alerts.blind_after,
            self.policy(),
            Utc::now(),
        )
        .await
        {
            tracing::error!(error = %e, "could not record the source's health");
        }
        let span = tracing::Span::current();
        span.record("wabas", report.wabas);
        span.record("numbers", report.phones);
        span.record("calls", report.calls);
        span.record("failures", report.failures.len());
        span.record("changes", report.changes.len());
        tracing::debug!(outcome = outcome.as_str(), "poll recorded");
        let error = report
            .store_error
            .clone()
            .or_else(|| poll.failure_summary());
        let outcome_str = if report.store_error.is_some() {
            PollOutcome::Failed.as_str()
        } else {
            outcome.as_str()
        };
        if let Err(e) = self
            .store
            .finish_run(
                run_id,
                outcome_str,
                Some(&poll),
                report.changes.len(),
                error.as_deref(),
                Utc::now(),
            )
            .await
        {
            tracing::error!(error = %e, "could not record the end of a poll");
        }
        report
    }
}

/// Whether the source could see: a token or permission problem blinds it at once, a poll
/// that read nothing counts towards `blind_after`.
fn source_health(poll: &SourcePoll, store_failed: bool) -> SourceHealth {
    let auth: Vec<&TargetFailure> = poll
        .failures
        .iter()
        .filter(|f| matches!(f.error.class(), ErrorClass::Auth | ErrorClass::Permission))
        .collect();
    if let Some(first) = auth.first() {
        let what = match first.error.class() {
            ErrorClass::Auth => "the access token was rejected",
            _ => "the token lacks a permission",
        };
        return SourceHealth::Unauthorized {
            reason: format!(
                "{what} (Graph error {}) for {} target(s), first {} {}",
                first.error.code().map_or("?".into(), |c| c.to_string()),
                auth.len(),
                first.kind.as_str(),
                first.id
            ),
        };
    }
    if poll.outcome() == PollOutcome::Failed || store_failed {
        let reason = poll
            .failures
            .first()
            .map(|f| format!("{}: {}", f.error.reason(), f.error))
            .unwrap_or_else(|| "the database could not record the poll".into());
        return SourceHealth::Failed { reason };
    }
    SourceHealth::Seeing
}

/// Routine polls log at DEBUG; failures and anomalies at WARN, summarised so a thousand failing
/// numbers make one line, not a thousand.
fn log_poll(poll: &SourcePoll) {
    tracing::debug!(
        wabas = poll.wabas.len(),
        numbers = poll.phones.len(),
        calls = poll.calls,
        requests = poll.requests,
        failures = poll.failures.len(),
        "poll finished"
    );
    if !poll.failures.is_empty() {
        let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &poll.failures {
            *by_reason.entry(f.error.reason()).or_default() += 1;
            tracing::debug!(kind = f.kind.as_str(), id = %f.id, reason = f.error.reason(), error = %f.error, "target failed");
        }
        let first = &poll.failures[0];
        tracing::warn!(
            failures = poll.failures.len(),
            reasons = ?by_reason,
            first_kind = first.kind.as_str(),
            first_id = %first.id,
            first_error = %first.error,
            "poll incomplete: targets that failed keep their last known state"
        );
    }
    if !poll.anomalies.is_empty() {
        let examples: Vec<String> = poll
            .anomalies
            .iter()
            .take(3)
            .map(|a| format!("{} {}: {}", a.reason, a.field, a.detail))
            .collect();
        tracing::warn!(
            anomalies = poll.anomalies.len(),
            ?examples,
            "answer had values of the wrong type or unknown values (kept, not alerted on)"
        );
    }
}
