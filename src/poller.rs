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
use std::time::Duration;

use crate::config::{AlertsConfig, Config};
use crate::metrics::{
    AppUsageLabels, BusinessUsageLabels, Metrics, OutcomeLabels, ReasonLabels, SourceLabels,
    WabaLabels,
};
use crate::retry::RetryPolicy;
use crate::sources::finedu::FineduSource;
use crate::sources::graph::ErrorClass;
use crate::sources::graph::GraphClient;
use crate::sources::meta::MetaSource;
use crate::sources::whatomate::{WhatomateAccount, WhatomateSource};
use crate::sources::{PollOutcome, Source, SourceMemory, SourcePoll, TargetFailure};
use crate::store::{Change, Store};

/// What one source did in one cycle.
#[derive(Debug, Clone)]
pub struct SourceReport {
    pub source: String,
    pub outcome: PollOutcome,
    /// The changes that concern alerts (see `quiet_changes` for the rest).
    pub changes: Vec<Change>,
    /// History rows written for first sightings that concern no alert (not kept in memory).
    pub quiet_changes: usize,
    /// Targets seen for the first time.
    pub new_targets: usize,
    pub failures: Vec<TargetFailure>,
    pub wabas: usize,
    pub phones: usize,
    pub anomalies: usize,
    /// Targets the quota governor held back this cycle.
    pub deferred: usize,
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
    /// The leader lease passed to another instance of the pair while this cycle ran: nothing
    /// of it was recorded, and it is neither a success nor a failure of this instance (no
    /// heartbeat, no "could not record" readiness failure).
    pub superseded: bool,
}

impl CycleReport {
    pub fn all_ok(&self) -> bool {
        self.sources
            .iter()
            .all(|s| s.outcome == PollOutcome::Ok && s.store_error.is_none())
    }

    /// History rows the cycle wrote (changes recorded).
    pub fn changes(&self) -> usize {
        self.sources.iter().map(SourceReport::change_count).sum()
    }

    pub fn calls(&self) -> u64 {
        self.sources.iter().map(|s| s.calls).sum()
    }

    /// Why the cycle could not be recorded in the database, if it could not: then none of
    /// its changes, history or alerts were written.
    pub fn store_error(&self) -> Option<&str> {
        self.sources.iter().find_map(|s| s.store_error.as_deref())
    }
}

/// Polls every configured source and records what it saw.
pub struct Poller {
    store: Store,
    sources: Vec<Source>,
    alerts: AlertsConfig,
    /// Where alerts go: `[email]`, the routes, the escalation list.
    routing: crate::notify::Routing,
    /// Woken after a cycle queued email, so delivery does not wait for its next tick.
    mail_wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    clock: Clock,
    stale_after: u32,
    metrics_detail: crate::config::MetricsDetail,
    /// `[daemon] secret_key_file`: opens the fleet API's per-account tokens (checked at build
    /// against the database's key-check value).
    secret_key: Option<Arc<crate::secrets::SecretKey>>,
    /// `[[whatomate]]`: instances whose accounts are polled through the first `[[meta]]`
    /// source, each with the last list it answered (kept while a read fails).
    whatomate: Vec<(
        WhatomateSource,
        std::sync::Mutex<Option<Vec<WhatomateAccount>>>,
    )>,
    /// How far the running cycle is, for progress displays.
    progress: ProgressCounters,
}

/// How far the running cycle is: read by `poll-once`'s progress bar and the log of the
/// daemon's first cycle while [`Poller::poll_once`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CycleProgress {
    pub sources: usize,
    /// Sources whose poll has ended (read, or failed).
    pub sources_done: usize,
    /// HTTP requests sent this cycle: Meta's pages and batches, a BSP's pages.
    pub requests: u64,
    /// Every source is done and the cycle is being written to the database.
    pub recording: bool,
}

#[derive(Debug, Default)]
struct ProgressCounters {
    sources_done: std::sync::atomic::AtomicUsize,
    requests_at_start: std::sync::atomic::AtomicU64,
    recording: std::sync::atomic::AtomicBool,
}

/// Where "now" comes from: the wall clock in production, a simulated one in the quota
/// benchmark.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

impl Poller {
    /// Builds the sources of a config; reads their tokens now, so a missing token is an error
    /// at start, not a failure at the first poll.
    pub fn from_config(cfg: &Config, store: Store, retry: RetryPolicy) -> anyhow::Result<Poller> {
        Self::build(
            cfg,
            store,
            retry,
            Arc::new(Metrics::new()),
            Arc::new(Notify::new()),
            &SourceMemory::default(),
        )
    }

    /// The poller of a runtime: it shares the daemon's metrics and delivery wake-up, and its
    /// sources carry on from `memory` (quota ledger, throttle pauses, a rejected token) — what
    /// a reload must not forget.
    pub fn build(
        cfg: &Config,
        store: Store,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
        mail_wake: Arc<Notify>,
        memory: &SourceMemory,
    ) -> anyhow::Result<Poller> {
        let mut sources = Vec::new();
        for m in &cfg.meta {
            let token = m.token.load().with_context(|| {
                format!("source \"{}\": could not read its access token", m.name)
            })?;
            let mem = memory.meta(&m.name, m.waba_call_budget());
            let client =
                GraphClient::with_quota(m, token, retry, mem.quota.clone()).with_context(|| {
                    format!("source \"{}\": could not build the HTTP client", m.name)
                })?;
            let app_id = cfg.webhooks.as_ref().and_then(|w| w.app_id.clone());
            sources.push(Source::Meta(Box::new(
                MetaSource::with_memory(m.clone(), client, mem).with_subscription_check(app_id),
            )));
        }
        let names: Vec<&str> = cfg.meta.iter().map(|m| m.name.as_str()).collect();
        memory.keep_only(&names);
        for b in &cfg.bsp {
            // Fail at start on an unreadable token, like the Meta sources.
            b.token
                .load()
                .with_context(|| format!("source \"{}\": could not read its API token", b.name))?;
            let source = FineduSource::new(b.clone(), retry).with_context(|| {
                format!("source \"{}\": could not build the HTTP client", b.name)
            })?;
            sources.push(Source::Finedu(Box::new(source)));
        }
        let mut whatomate = Vec::new();
        for w in &cfg.whatomate {
            // Fail at start on an unreadable key, like the sources' tokens.
            w.api_key
                .load()
                .with_context(|| format!("source \"{}\": could not read its API key", w.name))?;
            let source = WhatomateSource::new(w.clone(), retry).with_context(|| {
                format!("source \"{}\": could not build the HTTP client", w.name)
            })?;
            whatomate.push((source, std::sync::Mutex::new(None)));
        }
        metrics.set_graph_api_versions(&cfg.meta);
        let secret_key = load_secret_key(cfg)?;
        Ok(Poller {
            progress: ProgressCounters::default(),
            whatomate,
            secret_key,
            store,
            sources,
            alerts: cfg.alerts.clone(),
            routing: crate::notify::Routing::from_config(cfg),
            mail_wake,
            metrics,
            clock: Arc::new(Utc::now),
            stale_after: cfg.daemon.stale_after,
            metrics_detail: cfg.daemon.metrics_detail,
        })
    }

    /// Replaces the clock the quota governor reads (simulations only).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Calls charged to a WABA (or business / number id) by `source` over the last hour.
    pub fn calls_last_hour(&self, source: &str, key: &str) -> u32 {
        self.sources
            .iter()
            .find(|s| s.name() == source)
            .map_or(0, |s| s.calls_last_hour(key))
    }

    /// The metrics this poller updates (shared with the HTTP surface and the delivery worker).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Rebuilds the per-target series from the database (at start, and after each cycle),
    /// streaming the rows into the compact table.
    pub async fn sync_metrics(&self) {
        let mut table = crate::metrics::TableBuilder::new(self.metrics_detail);
        match self
            .store
            .for_each_metric_target(self.stale_after, |t| table.add(t))
            .await
        {
            Ok(()) => self.metrics.set_targets(table.finish()),
            Err(e) => {
                self.metrics.store_error("read");
                tracing::error!(error = %e, "could not read the state for metrics");
            }
        }
        self.sync_template_metrics().await;
    }

    /// Loads the template series from the database (after a cycle, and after webhooks
    /// changed templates).
    pub async fn sync_template_metrics(&self) {
        match self.store.template_metrics().await {
            Ok(t) => self.metrics.sync_templates(&t),
            Err(e) => {
                self.metrics.store_error("read");
                tracing::error!(error = %e, "could not read the templates for metrics");
            }
        }
    }

    /// Reads one number now through the source that watches it (the status API's connection
    /// test), with its own token when the fleet API stored one. `None` if no source knows the
    /// number.
    pub async fn read_number(&self, id: &str, source: &str) -> Option<crate::sources::SingleRead> {
        let s = self.sources.iter().find(|s| s.name() == source)?;
        if let Source::Meta(m) = s {
            let managed = self.store.managed_accounts().await.unwrap_or_default();
            if let Some(token) = managed
                .iter()
                .find(|a| a.target_id == id)
                .and_then(|a| self.open_token(a))
            {
                return Some(match m.read_number_as(id, Some(&token)).await {
                    Ok(p) => crate::sources::SingleRead::Read(Box::new(p)),
                    Err(e) => crate::sources::SingleRead::Failed(e),
                });
            }
        }
        Some(s.read_number(id).await)
    }

    /// The key of `[daemon] secret_key_file`, when configured.
    pub fn secret_key(&self) -> Option<&crate::secrets::SecretKey> {
        self.secret_key.as_deref()
    }

    /// The numbers the `[[whatomate]]` instances listed last (the status API's
    /// `managed_by: "whatomate"`).
    pub fn whatomate_numbers(&self) -> std::collections::HashSet<String> {
        self.whatomate
            .iter()
            .flat_map(|(_, last)| {
                last.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
                    .unwrap_or_default()
            })
            .map(|a| a.phone_number_id)
            .collect()
    }

    /// The names of the `[[meta]]` sources, in config order (the fleet API's default is the
    /// first).
    pub fn meta_source_names(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter(|s| matches!(s, Source::Meta(_)))
            .map(|s| s.name().to_owned())
            .collect()
    }

    /// An account's own token, opened (and registered for redaction); `None` without one, or
    /// when it does not open with the key in force.
    fn open_token(
        &self,
        a: &crate::store::accounts::ManagedAccount,
    ) -> Option<secrecy::SecretString> {
        let sealed = a.token.as_ref()?;
        let Some(key) = &self.secret_key else {
            tracing::warn!(id = %a.target_id, "this account's access token is stored encrypted but [daemon] secret_key_file is not set: read with the source's token");
            return None;
        };
        let plain = key
            .open(sealed, a.target_id.as_bytes())
            .and_then(|p| String::from_utf8(p).ok());
        let Some(plain) = plain else {
            tracing::warn!(id = %a.target_id, "this account's access token does not open with [daemon] secret_key_file: read with the source's token");
            return None;
        };
        let token = secrecy::SecretString::from(plain);
        crate::redact::register(&token);
        Some(token)
    }

    /// The fleet API's accounts, by the `[[meta]]` source that polls them (the first one when
    /// none is named). A failed read polls the config's targets only (the accounts keep their
    /// state, like any target not read).
    async fn extra_targets(&self) -> BTreeMap<String, crate::sources::meta::ExtraTargets> {
        let mut out: BTreeMap<String, crate::sources::meta::ExtraTargets> = BTreeMap::new();
        let accounts = match self.store.managed_accounts().await {
            Ok(a) => a,
            Err(e) => {
                self.metrics.store_error("read");
                tracing::error!(error = %e, "could not read the accounts added through the fleet API: only the config's targets (and Whatomate's) are polled this cycle");
                self.add_whatomate_targets(&self.meta_source_names(), &mut out)
                    .await;
                return out;
            }
        };
        let metas = self.meta_source_names();
        for a in accounts {
            let source = match &a.source {
                Some(s) if metas.contains(s) => s.clone(),
                Some(s) => {
                    tracing::warn!(id = %a.target_id, source = %s, "an account added through the fleet API names a [[meta]] source the configuration no longer has: not polled");
                    continue;
                }
                None => match metas.first() {
                    Some(first) => first.clone(),
                    None => continue,
                },
            };
            let extra = out.entry(source).or_default();
            if let Some(w) = &a.waba_id {
                extra.phone_wabas.insert(a.target_id.clone(), w.clone());
            }
            if a.kind == crate::store::accounts::KIND_WABA {
                extra.wabas.push(a.target_id.clone());
            } else if let Some(token) = self.open_token(&a) {
                extra.own_token.push((a.target_id.clone(), token));
            } else {
                extra.phones.push(a.target_id.clone());
            }
        }
        self.add_whatomate_targets(&metas, &mut out).await;
        out
    }

    /// Each `[[whatomate]]` instance's accounts, read now (the last list it answered when the
    /// read fails: no number drops out because Whatomate was unreachable), added to the first
    /// `[[meta]]` source's targets. A number Whatomate no longer lists is simply not polled;
    /// its state and history stay.
    async fn add_whatomate_targets(
        &self,
        metas: &[String],
        out: &mut BTreeMap<String, crate::sources::meta::ExtraTargets>,
    ) {
        let Some(first) = metas.first() else { return };
        for (w, last) in &self.whatomate {
            let accounts = match w.accounts().await {
                Ok(accounts) => {
                    tracing::debug!(source = %w.name(), accounts = accounts.len(), "Whatomate's accounts read");
                    *last
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(accounts.clone());
                    accounts
                }
                Err(e) => {
                    self.metrics
                        .poll_failures
                        .get_or_create(&ReasonLabels {
                            source: w.name().to_owned(),
                            reason: e.reason().to_owned(),
                        })
                        .inc();
                    let kept = last
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone()
                        .unwrap_or_default();
                    tracing::warn!(source = %w.name(), host = %w.host(), reason = e.reason(), error = %e, kept = kept.len(), "could not read Whatomate's accounts: polling the last list it answered");
                    kept
                }
            };
            let extra = out.entry(first.clone()).or_default();
            for a in accounts {
                let id = a.phone_number_id;
                let known =
                    extra.phones.contains(&id) || extra.own_token.iter().any(|(p, _)| *p == id);
                if let Some(waba) = a.business_account_id {
                    extra.phone_wabas.entry(id.clone()).or_insert(waba);
                }
                if !known {
                    extra.phones.push(id);
                }
            }
        }
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

    /// Turns stored webhook deliveries into facts, history and alerts (and closes expired
    /// restrictions), with this runtime's email and alert settings; wakes delivery when it
    /// queued email. Run after deliveries and at every cycle (rows a crash left are taken then).
    pub async fn process_webhooks(&self) -> crate::webhooks::Processed {
        match crate::webhooks::process(&self.store, &self.routing, self.policy(), Utc::now()).await
        {
            Ok(done) => {
                self.metrics.count_alerts(&done.alerts);
                if done.alerts.iter().any(|a| !a.silenced) {
                    self.mail_wake.notify_one();
                }
                if done
                    .changes
                    .iter()
                    .any(|c| c.kind == crate::model::TargetKind::Template)
                {
                    self.sync_template_metrics().await;
                }
                done
            }
            Err(e) if e.is_not_leader() => {
                tracing::warn!(error = %e, "stored webhook deliveries not processed here: another instance leads now and processes them");
                crate::webhooks::Processed::default()
            }
            Err(e) => {
                self.metrics.store_error("webhook_process");
                tracing::error!(error = %e, "could not process stored webhook deliveries; they stay stored and are taken again later");
                crate::webhooks::Processed::default()
            }
        }
    }

    /// How far the running cycle is (between cycles: the last one's end).
    pub fn progress(&self) -> CycleProgress {
        use std::sync::atomic::Ordering::Relaxed;
        let sent: u64 = self.sources.iter().map(Source::requests_sent).sum();
        CycleProgress {
            sources: self.sources.len(),
            sources_done: self.progress.sources_done.load(Relaxed),
            requests: sent.saturating_sub(self.progress.requests_at_start.load(Relaxed)),
            recording: self.progress.recording.load(Relaxed),
        }
    }

    pub fn source_names(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.name().to_owned()).collect()
    }

    /// Runs one cycle now. Never fails as a whole; each source's outcome is in the report.
    ///
    /// Sources are polled concurrently (network only); then everything the cycle learnt — every
    /// source's new state and history, the alerts they cause, "monitoring blind" changes,
    /// reminders and the digest emails in the outbox — is written in ONE transaction, so a
    /// transition and its email are committed together or not at all.
    pub async fn poll_once(&self) -> CycleReport {
        let started_at = Utc::now();
        {
            use std::sync::atomic::Ordering::Relaxed;
            let sent: u64 = self.sources.iter().map(Source::requests_sent).sum();
            self.progress.requests_at_start.store(sent, Relaxed);
            self.progress.sources_done.store(0, Relaxed);
            self.progress.recording.store(false, Relaxed);
        }
        // A cycle that was cut short (timeout, crash) left its runs `running`; cycles never
        // overlap, so any still open now are dead.
        if let Err(e) = self.store.abandon_unfinished_runs(started_at).await {
            self.metrics.store_error("abandon_runs");
            tracing::error!(error = %e, "could not close unfinished poll runs");
        }
        // Deliveries stored but not processed yet (a crash after the 200) and restrictions
        // whose expiry passed.
        self.process_webhooks().await;
        // Boxed futures built in a loop rather than an iterator closure: rustc cannot yet prove
        // a closure-returned future Send for every lifetime (rust-lang/rust#102211).
        let extras = self.extra_targets().await;
        let mut polls: Vec<Pin<Box<dyn Future<Output = Polled> + Send + '_>>> =
            Vec::with_capacity(self.sources.len());
        for s in &self.sources {
            let extra = extras.get(s.name());
            let span = tracing::info_span!(
                "poll",
                source = %s.name(),
                wabas = tracing::field::Empty,
                numbers = tracing::field::Empty,
                calls = tracing::field::Empty,
                failures = tracing::field::Empty,
                changes = tracing::field::Empty,
            );
            polls.push(Box::pin(
                self.poll_source(s, extra, span.clone()).instrument(span),
            ));
        }
        let polled = join_all(polls).await;
        self.progress
            .recording
            .store(true, std::sync::atomic::Ordering::Relaxed);

        let now = Utc::now();
        let mut superseded = false;
        let (mut sources, alerts) = match self.record(&polled, now).await {
            Ok((reports, taken)) => {
                self.metrics.count_alerts(&taken);
                (reports, taken.iter().filter(|a| !a.silenced).count())
            }
            Err(e) => {
                if e.is_not_leader() {
                    superseded = true;
                    tracing::warn!(error = %e, "the leader lease passed to another instance while this cycle ran: nothing of it was recorded (its reading may be older than the new leader's)");
                } else {
                    self.metrics.store_error("record_cycle");
                    tracing::error!(error = %e, "could not record the cycle in the database: no change, history or alert of it was written (the next cycle that can write sees the same changes); the cycle counts as failed");
                }
                let msg = format!("could not record the cycle in the database: {e}");
                let reports = polled
                    .iter()
                    .map(|p| {
                        let mut r = SourceReport::from_poll(&p.poll);
                        r.store_error = Some(msg.clone());
                        r
                    })
                    .collect();
                (reports, 0)
            }
        };
        for (p, report) in polled.iter().zip(sources.iter_mut()) {
            if !superseded {
                self.record_outcome_metrics(report);
            }
            self.finish(p, report).await;
        }
        // After the runs are closed, so staleness counts this cycle's polls.
        self.sync_metrics().await;
        if alerts > 0 {
            self.mail_wake.notify_one();
        }
        CycleReport {
            started_at,
            finished_at: Utc::now(),
            sources,
            alerts,
            superseded,
        }
    }

    /// The network half of a source's poll: record its start, read it.
    async fn poll_source(
        &self,
        source: &Source,
        extra: Option<&crate::sources::meta::ExtraTargets>,
        span: tracing::Span,
    ) -> Polled {
        let run_id = match self.store.begin_run(source.name(), Utc::now()).await {
            Ok(id) => Some(id),
            Err(e) => {
                self.metrics.store_error("begin_run");
                tracing::error!(error = %e, "could not record the start of a poll in the database");
                None
            }
        };
        let t0 = std::time::Instant::now();
        let poll = match (source, extra) {
            (Source::Meta(m), Some(extra)) => m.poll_with((self.clock)(), extra).await,
            _ => source.poll((self.clock)()).await,
        };
        let elapsed = t0.elapsed();
        self.progress
            .sources_done
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log_poll(&poll);
        self.record_poll_metrics(source, &poll, elapsed);
        Polled {
            own_token: extra
                .map(|e| e.own_token.iter().map(|(id, _)| id.clone()).collect())
                .unwrap_or_default(),
            run_id,
            poll,
            observed_at: Utc::now(),
            span,
        }
    }

    fn record_poll_metrics(&self, source: &Source, poll: &SourcePoll, took: Duration) {
        let m = &self.metrics;
        let name = source.name().to_owned();
        let sl = SourceLabels {
            source: name.clone(),
        };
        for d in &poll.deferred {
            m.poll_deferred
                .get_or_create(&ReasonLabels {
                    source: name.clone(),
                    reason: d.reason.as_str().to_owned(),
                })
                .inc();
        }
        for a in &poll.anomalies {
            m.answer_anomalies
                .get_or_create(&ReasonLabels {
                    source: name.clone(),
                    reason: a.reason.to_owned(),
                })
                .inc();
        }
        for f in poll
            .failures
            .iter()
            .chain(&poll.subscription_failures)
            .chain(&poll.template_failures)
        {
            m.poll_failures
                .get_or_create(&ReasonLabels {
                    source: name.clone(),
                    reason: f.error.reason().to_owned(),
                })
                .inc();
        }
        m.poll_duration
            .get_or_create(&sl)
            .observe(took.as_secs_f64());
        m.graph_calls.get_or_create(&sl).inc_by(poll.calls);
        for c in &poll.webhook_subscriptions {
            m.webhook_subscribed
                .get_or_create(&WabaLabels {
                    source: name.clone(),
                    waba_id: c.waba_id.clone(),
                })
                .set(i64::from(c.subscribed));
        }
        let usage = source.usage();
        for (metric, v) in &usage.app {
            m.app_usage
                .get_or_create(&AppUsageLabels {
                    source: name.clone(),
                    metric: metric.clone(),
                })
                .set(*v);
        }
        for (waba, per) in &usage.business {
            for (metric, v) in per {
                if metric == "estimated_time_to_regain_access" {
                    continue;
                }
                m.business_usage
                    .get_or_create(&BusinessUsageLabels {
                        source: name.clone(),
                        waba_id: waba.clone(),
                        metric: metric.clone(),
                    })
                    .set(*v);
            }
        }
    }

    /// A cycle that ran past `cycle_timeout` was abandoned: nothing of it was recorded, but it
    /// counts as a failed poll of every source towards "monitoring blind" (a Graph API that
    /// hangs on every request must not leave the monitor silently blind). One transaction, like
    /// a cycle: the source states, the blind alerts and their emails.
    pub async fn record_abandoned_cycle(&self, why: &str) {
        let now = Utc::now();
        let recorded = async {
            let mut tx = self.store.begin_leader_write().await?;
            for s in &self.sources {
                let failed = SourceHealth::Failed {
                    reason: why.to_owned(),
                };
                self.record_health_in(&mut tx, s.name(), &failed, now)
                    .await?;
            }
            let taken = crate::notify::digest_in(&mut tx, &self.routing, now).await?;
            tx.commit().await?;
            Ok::<usize, crate::store::StoreError>(taken.iter().filter(|a| !a.silenced).count())
        };
        match recorded.await {
            Ok(alerts) => {
                if alerts > 0 {
                    self.mail_wake.notify_one();
                }
            }
            Err(e) if e.is_not_leader() => {
                tracing::warn!(error = %e, "the abandoned cycle is not recorded: another instance leads now");
            }
            Err(e) => {
                self.metrics.store_error("record_cycle");
                tracing::error!(error = %e, "could not record the abandoned cycle in the database");
            }
        }
    }

    /// Records a source's health (raising or resolving "monitoring blind") in the cycle's
    /// transaction and mirrors it in `waba_monitor_source_blind`.
    async fn record_health_in(
        &self,
        tx: &mut crate::store::Tx<'_>,
        source: &str,
        health: &SourceHealth,
        now: DateTime<Utc>,
    ) -> Result<(), crate::store::StoreError> {
        let blind = crate::store::alerts::record_source_health_in(
            tx,
            source,
            health,
            self.alerts.blind_after,
            self.policy(),
            now,
        )
        .await?;
        self.metrics
            .source_blind
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .set(i64::from(blind));
        Ok(())
    }

    /// The database half of a cycle, in one transaction.
    async fn record(
        &self,
        polled: &[Polled],
        now: DateTime<Utc>,
    ) -> Result<(Vec<SourceReport>, Vec<crate::notify::Digested>), crate::store::StoreError> {
        let began = std::time::Instant::now();
        let mut tx = self.store.begin_leader_write().await?;
        let mut reports = Vec::with_capacity(polled.len());
        // Higher-priority sources (Meta) first, so that in this very cycle a BSP's view of a
        // number Meta also reports finds Meta's ownership and defers to it.
        let mut order: Vec<usize> = (0..polled.len()).collect();
        order.sort_by_key(|i| std::cmp::Reverse(polled[*i].poll.priority));
        let mut by_index: Vec<Option<SourceReport>> = vec![None; polled.len()];
        for i in order {
            let p = &polled[i];
            let mut report = SourceReport::from_poll(&p.poll);
            let mut applied =
                crate::store::apply_in(&mut tx, p.run_id, &p.poll, p.observed_at).await?;
            let observed = crate::timefmt::rfc3339(p.observed_at);
            let details = record_subscriptions_in(&mut tx, &p.poll, &observed).await?;
            applied
                .changes
                .extend(details.iter().map(|(c, _)| c.clone()));
            // The alerts these changes cause, decided by the pure planner from the alerts
            // still open, written in the same transaction.
            let open = crate::store::alerts::open_alerts_for(
                &mut tx,
                &crate::alerts::keys(&applied.changes),
            )
            .await?;
            let mut plan = crate::alerts::plan(&applied.changes, &open, self.policy(), &observed);
            for a in &mut plan.alerts {
                if let Some((_, d)) = details
                    .iter()
                    .find(|(c, _)| c.target_id == a.target_id && c.field == a.field)
                {
                    a.detail = Some(d.clone());
                }
            }
            for a in plan.alerts.iter_mut().filter(|a| {
                a.kind == "template"
                    && a.field == crate::model::template_field::STATUS
                    && a.new.as_deref() == Some("PAUSED")
            }) {
                let pauses =
                    crate::store::templates::pauses_before_in(&mut tx, &a.target_id).await?;
                a.detail = Some(crate::alerts::template_pause_detail(
                    None,
                    pauses,
                    p.observed_at,
                ));
            }
            crate::store::alerts::apply_plan(&mut tx, &plan, &observed).await?;
            self.record_health_in(
                &mut tx,
                &report.source,
                &source_health(&p.poll, &p.own_token),
                now,
            )
            .await?;
            report.new_targets = applied.new_targets;
            report.quiet_changes = applied.quiet_changes;
            report.changes = applied.changes;
            by_index[i] = Some(report);
        }
        reports.extend(by_index.into_iter().flatten());
        crate::store::alerts::queue_reminders_in(&mut tx, self.alerts.repeat_interval, now).await?;
        if let Some(after) = self.alerts.escalate_after {
            crate::store::alerts::queue_escalations_in(&mut tx, after, now).await?;
        }
        crate::store::alerts::queue_silence_ends_in(&mut tx, now).await?;
        let taken = crate::notify::digest_in(&mut tx, &self.routing, now).await?;
        tx.commit().await?;
        self.metrics
            .cycle_write_seconds
            .set(began.elapsed().as_secs_f64());
        Ok((reports, taken))
    }

    /// Counts a source's poll by its final outcome: one that read everything but could not be
    /// recorded is a failed poll, and is no successful poll.
    fn record_outcome_metrics(&self, report: &SourceReport) {
        let outcome = report.final_outcome();
        self.metrics
            .poll_runs
            .get_or_create(&OutcomeLabels {
                source: report.source.clone(),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
        if outcome != PollOutcome::Failed {
            self.metrics
                .last_success
                .get_or_create(&SourceLabels {
                    source: report.source.clone(),
                })
                .set(crate::timefmt::unix_now());
        }
    }

    /// Logs a source's result and closes its poll record.
    async fn finish(&self, p: &Polled, report: &SourceReport) {
        let _guard = p.span.enter();
        if report.store_error.is_none() {
            if report.new_targets > 0 {
                tracing::info!(
                    new_targets = report.new_targets,
                    "first sighting of targets recorded (their initial state is in history)"
                );
            }
            // First sightings (no old value) are summarised above; real changes get a line
            // each.
            for c in report.changes.iter().filter(|c| c.old.is_some()) {
                tracing::info!(
                    kind = c.kind.as_str(),
                    id = %c.target_id,
                    field = %c.field,
                    old = c.old.as_deref().unwrap_or("-"),
                    new = c.new.as_deref().unwrap_or("-"),
                    "change"
                );
            }
        }
        p.span.record("wabas", report.wabas);
        p.span.record("numbers", report.phones);
        p.span.record("calls", report.calls);
        p.span.record("failures", report.failures.len());
        p.span.record("changes", report.change_count());
        let outcome = report.final_outcome();
        tracing::debug!(outcome = outcome.as_str(), "poll recorded");
        let Some(run_id) = p.run_id else { return };
        let error = report
            .store_error
            .clone()
            .or_else(|| p.poll.failure_summary());
        if let Err(e) = self
            .store
            .finish_run(
                run_id,
                outcome.as_str(),
                Some(&p.poll),
                report.change_count(),
                error.as_deref(),
                Utc::now(),
            )
            .await
        {
            self.metrics.store_error("finish_run");
            tracing::error!(error = %e, "could not record the end of a poll in the database");
        }
    }
}

/// Reads `[daemon] secret_key_file` and checks it against the database: when the database
/// holds access tokens sealed through the fleet API (its key-check value), a missing or
/// different key is refused here, at start (and at a reload), before any token is needed.
pub fn load_secret_key(cfg: &Config) -> anyhow::Result<Option<Arc<crate::secrets::SecretKey>>> {
    let key = match &cfg.daemon.secret_key {
        Some(src) => Some(Arc::new(
            crate::secrets::SecretKey::load(src)
                .map_err(|e| anyhow::anyhow!("[daemon] secret_key_file: {e}"))?,
        )),
        None => None,
    };
    let db = &cfg.daemon.database;
    let check = crate::store::accounts::key_check_blocking(db)
        .with_context(|| format!("could not read the key check of {db}"))?;
    match (check, &key) {
        (None, _) => Ok(key),
        (Some(_), None) => anyhow::bail!(
            "the database {} holds access tokens stored through the fleet API, encrypted with a key, and [daemon] secret_key_file is not set: set secret_key_file to the file holding that key (64 hex characters, mode 600)",
            db
        ),
        (Some(sealed), Some(k)) => {
            let opened = k.open(&sealed, crate::store::accounts::KEY_CHECK_CONTEXT);
            if opened.as_deref() == Some(crate::store::accounts::KEY_CHECK_PLAIN) {
                Ok(key)
            } else {
                anyhow::bail!(
                    "[daemon] secret_key_file is not the key the access tokens in the database {} were encrypted with: point secret_key_file at the original key file (a new key cannot open them)",
                    db
                )
            }
        }
    }
}

/// Records each WABA's webhook subscription (`[webhooks] app_id`) as a fact of the WABA, in
/// the cycle's transaction: a new answer writes history and yields a change (with the line its
/// alert shows); an unchanged one changes nothing.
async fn record_subscriptions_in(
    tx: &mut crate::store::Tx<'_>,
    poll: &SourcePoll,
    now: &str,
) -> Result<Vec<(Change, String)>, crate::store::StoreError> {
    let mut out = Vec::new();
    for c in &poll.webhook_subscriptions {
        let fact = crate::store::facts::Fact {
            kind: crate::model::TargetKind::Waba,
            target_id: c.waba_id.clone(),
            field: crate::sources::subscriptions::FIELD.to_owned(),
            value: c.value().to_owned(),
            detail: Some(c.detail()),
            event_time: c.checked_at.timestamp(),
            expires_at: None,
        };
        if let Some(change) = crate::store::facts::record_fact_in(tx, &fact, None, now).await? {
            out.push((change, c.detail()));
        }
    }
    Ok(out)
}

/// A source's poll, read but not yet recorded.
struct Polled {
    /// Numbers this poll read with their own token (the fleet API's): a token of theirs that
    /// Meta rejects fails that number, it does not blind the source.
    own_token: std::collections::HashSet<String>,
    run_id: Option<i64>,
    poll: SourcePoll,
    observed_at: DateTime<Utc>,
    span: tracing::Span,
}

impl SourceReport {
    /// The outcome as recorded: a poll that could not be written to the database failed.
    pub fn final_outcome(&self) -> PollOutcome {
        if self.store_error.is_some() {
            PollOutcome::Failed
        } else {
            self.outcome
        }
    }

    /// History rows this poll wrote: the changes kept and the quiet ones.
    pub fn change_count(&self) -> usize {
        self.changes.len() + self.quiet_changes
    }

    fn from_poll(poll: &SourcePoll) -> SourceReport {
        SourceReport {
            source: poll.source.clone(),
            outcome: poll.outcome(),
            changes: Vec::new(),
            quiet_changes: 0,
            new_targets: 0,
            failures: poll.failures.clone(),
            wabas: poll.wabas.len(),
            phones: poll.phones.len(),
            anomalies: poll.anomalies.len(),
            deferred: poll.deferred.len(),
            calls: poll.calls,
            requests: poll.requests,
            store_error: None,
        }
    }
}

/// Whether the source could see: a token or permission problem blinds it at once, a poll
/// that read nothing counts towards `blind_after`.
fn source_health(poll: &SourcePoll, own_token: &std::collections::HashSet<String>) -> SourceHealth {
    let auth: Vec<&TargetFailure> = poll
        .failures
        .iter()
        .filter(|f| matches!(f.error.class(), ErrorClass::Auth | ErrorClass::Permission))
        .filter(|f| {
            !(f.kind == crate::sources::ObjectKind::PhoneNumber && own_token.contains(&f.id))
        })
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
    if poll.outcome() == PollOutcome::Failed {
        let reason = poll
            .failures
            .first()
            .map(|f| format!("{}: {}", f.error.reason(), f.error))
            .unwrap_or_else(|| "nothing could be read".into());
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
    for f in &poll.template_failures {
        tracing::warn!(waba = %f.id, reason = f.error.reason(), error = %f.error, "could not read the WABA's templates to the end: its templates keep their last known state and none is marked gone");
    }
    for f in &poll.subscription_failures {
        tracing::warn!(waba = %f.id, reason = f.error.reason(), error = %f.error, "could not read the WABA's subscribed_apps: the last known webhook subscription stands");
    }
    if !poll.deferred.is_empty() {
        let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
        for d in &poll.deferred {
            *by_reason.entry(d.reason.as_str()).or_default() += 1;
        }
        tracing::info!(
            deferred = poll.deferred.len(),
            reasons = ?by_reason,
            "targets held back to stay inside Meta's quota; they keep their last known state"
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
