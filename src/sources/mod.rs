//! Sources: the remote APIs that report numbers and WABAs. Each turns one poll into a
//! [`SourcePoll`] of normalised observations; nothing here writes to the database.

pub mod budget;
pub mod finedu;
pub mod graph;
pub mod meta;
pub mod subscriptions;
pub mod whatomate;

use std::collections::BTreeSet;

use crate::model::{PhoneObservation, TemplateObservation, WabaObservation};
use graph::GraphError;
use graph::parse::Anomaly;

/// Reads a secret on the blocking pool, not on the async threads that drive polling and the
/// HTTP server (a file read can stall: a slow or network disk).
pub(crate) async fn load_secret(
    src: &crate::secrets::SecretSource,
) -> Result<secrecy::SecretString, String> {
    let src = src.clone();
    match tokio::task::spawn_blocking(move || src.load()).await {
        Ok(loaded) => loaded.map_err(|e| e.to_string()),
        Err(e) => Err(format!("reading the secret did not finish: {e}")),
    }
}

/// Which object a failure concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// The source as a whole (its token).
    Source,
    Business,
    Waba,
    PhoneNumber,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Source => "source",
            ObjectKind::Business => "business",
            ObjectKind::Waba => "waba",
            ObjectKind::PhoneNumber => "phone_number",
        }
    }
}

/// A target that could not be read (or read completely) this cycle.
#[derive(Debug, Clone)]
pub struct TargetFailure {
    pub kind: ObjectKind,
    pub id: String,
    pub error: GraphError,
}

/// A target the quota governor held back this cycle (not a failure).
#[derive(Debug, Clone)]
pub struct Deferred {
    pub kind: ObjectKind,
    pub id: String,
    pub reason: budget::Defer,
}

/// Everything one source saw in one poll.
#[derive(Debug, Default)]
pub struct SourcePoll {
    pub source: String,
    /// Whose view wins for a number two sources report: Meta 2, a BSP 1.
    pub priority: u8,
    pub wabas: Vec<WabaObservation>,
    pub phones: Vec<PhoneObservation>,
    /// WABAs whose phone-number listing was read to the end without error: only for these may
    /// a number missing from the listing be recorded as gone.
    pub complete_wabas: BTreeSet<String>,
    /// Businesses whose WABA listings were read to the end without error.
    pub complete_businesses: BTreeSet<String>,
    /// The source listed *everything* it has, completely (a BSP's unfiltered walk): a WABA of
    /// this source missing from it is gone.
    pub complete_source: bool,
    pub failures: Vec<TargetFailure>,
    /// Held back by the quota governor: not read, not failed.
    pub deferred: Vec<Deferred>,
    pub anomalies: Vec<Anomaly>,
    /// With `[webhooks] app_id`: the latest `subscribed_apps` answer of each WABA this poll
    /// saw that was ever answered (asked at most hourly; a failed read leaves the last one).
    pub webhook_subscriptions: Vec<subscriptions::SubscriptionCheck>,
    /// `subscribed_apps` reads that failed: no verdict, and not a failure of the WABA (its
    /// state was read), so they never make the poll partial nor the source blind.
    pub subscription_failures: Vec<TargetFailure>,
    /// Message templates read this poll (`[[meta]] templates`, every `templates_every`
    /// cycles), of the WABAs in `template_wabas`.
    pub templates: Vec<TemplateObservation>,
    /// WABAs whose template listing was read to the end: only for these may a template missing
    /// from it be recorded as gone.
    pub complete_template_wabas: BTreeSet<String>,
    /// Template listings that failed part-way: no verdict (templates keep their state, none is
    /// marked gone), and not a failure of the WABA, whose own state was read.
    pub template_failures: Vec<TargetFailure>,
    /// Graph calls as Meta counts them (batch items one each).
    pub calls: u64,
    pub requests: u64,
}

/// How a source's poll ended, as recorded in `poll_runs.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// Every target read.
    Ok,
    /// Some targets read, some failed.
    Partial,
    /// Nothing read.
    Failed,
}

impl PollOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PollOutcome::Ok => "ok",
            PollOutcome::Partial => "partial",
            PollOutcome::Failed => "failed",
        }
    }
}

impl SourcePoll {
    pub fn outcome(&self) -> PollOutcome {
        if self.failures.is_empty() {
            PollOutcome::Ok
        } else if self.wabas.is_empty() && self.phones.is_empty() {
            PollOutcome::Failed
        } else {
            PollOutcome::Partial
        }
    }

    /// A short, bounded description of the first failure, for the poll record.
    pub fn failure_summary(&self) -> Option<String> {
        let first = self.failures.first()?;
        Some(format!(
            "{} of {} target(s) failed; first: {} {}: {}",
            self.failures.len(),
            self.failures.len() + self.wabas.len() + self.phones.len(),
            first.kind.as_str(),
            first.id,
            first.error
        ))
    }
}

/// What every source has learnt that must outlive a configuration reload, by source name: a
/// reload builds new sources from the new config and hands each the memory of the source of
/// the same name.
#[derive(Debug, Clone, Default)]
pub struct SourceMemory(
    std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<meta::MetaMemory>>>,
    >,
);

impl SourceMemory {
    /// The memory of the `[[meta]]` source `name`, its budget set to `budget` (the config may
    /// have changed it; the ledger and the pauses stay).
    pub fn meta(&self, name: &str, budget: u32) -> std::sync::Arc<meta::MetaMemory> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = map
            .entry(name.to_owned())
            .or_insert_with(|| std::sync::Arc::new(meta::MetaMemory::new(budget)))
            .clone();
        m.quota.lock().set_budget(budget);
        m
    }

    /// Forgets the sources a new config no longer has.
    pub fn keep_only(&self, names: &[&str]) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|k, _| names.contains(&k.as_str()));
    }
}

/// The answer to "read this one number now" (the status API's connection test).
#[derive(Debug)]
pub enum SingleRead {
    Read(Box<PhoneObservation>),
    /// Meta's error, or `GraphError::OverQuota` when the governor held the call back.
    Failed(GraphError),
    /// The source cannot read a single number; why, in words.
    Unsupported(&'static str),
}

/// Every kind of source the poller drives.
pub enum Source {
    // Boxed: sources differ much in size and live in a Vec.
    Meta(Box<meta::MetaSource>),
    Finedu(Box<finedu::FineduSource>),
}

impl Source {
    pub fn name(&self) -> &str {
        match self {
            Source::Meta(s) => s.name(),
            Source::Finedu(s) => s.name(),
        }
    }

    pub async fn poll(&self, now: chrono::DateTime<chrono::Utc>) -> SourcePoll {
        match self {
            Source::Meta(s) => s.poll(now).await,
            Source::Finedu(s) => s.poll(now).await,
        }
    }

    /// HTTP requests this source has sent since it was built: Meta's pages and batches, a
    /// BSP's pages. For progress displays.
    pub fn requests_sent(&self) -> u64 {
        match self {
            Source::Meta(s) => s.requests_sent(),
            Source::Finedu(s) => s.requests_sent(),
        }
    }

    /// Meta's latest usage percentages (a BSP reports none).
    pub fn usage(&self) -> graph::usage::UsageSnapshot {
        match self {
            Source::Meta(s) => s.usage(),
            Source::Finedu(_) => graph::usage::UsageSnapshot::default(),
        }
    }

    /// Reads one number now, where the source can do that for a single number (Meta can; the
    /// BSP's list API cannot).
    pub async fn read_number(&self, id: &str) -> SingleRead {
        match self {
            Source::Meta(s) => match s.read_number(id).await {
                Ok(p) => SingleRead::Read(Box::new(p)),
                Err(e) => SingleRead::Failed(e),
            },
            Source::Finedu(_) => SingleRead::Unsupported(
                "its API lists numbers only page by page, with their WABAs, so a number cannot be read singly; every cycle reads it with the whole listing",
            ),
        }
    }

    pub fn calls_last_hour(&self, key: &str) -> u32 {
        match self {
            Source::Meta(s) => s.calls_last_hour(key),
            Source::Finedu(_) => 0,
        }
    }
}
