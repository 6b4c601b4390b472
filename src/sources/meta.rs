//! Polling Meta's Graph API for one `[[meta]]` source, in as few calls as Meta allows:
//!
//! 1. each business: one request expanding `owned_` and `client_whatsapp_business_accounts`
//!    with every WABA's `phone_numbers` nested inside, then the paging links of both levels;
//! 2. configured WABAs not already seen: batched (≤ 50 a request), each with its numbers
//!    expanded;
//! 3. configured phone numbers not already seen: batched.
//!
//! A listing counts as complete only when every page of it was read; the store may record a
//! number as gone only from a complete listing.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::graph::client::{MAX_BATCH, MAX_PAGES};
use super::graph::parse::{self, Anomalies};
use super::graph::{GraphClient, GraphError, NodeRequest};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::budget::Quota;
use super::graph::usage::UsageSnapshot;
use super::subscriptions::{self, SubscriptionMemory};
use super::{Deferred, ObjectKind, SourcePoll, TargetFailure};
use crate::config::{ApiVersion, MetaSourceConfig};
use crate::model::{PhoneObservation, WabaObservation};

/// Meta's view of a number wins over a BSP's.
pub const PRIORITY: u8 = 2;

/// Items per page asked of every edge; Graph's maximum.
pub const PAGE_LIMIT: u32 = 100;

/// The `fields=` lists. Built once per source: `whatsapp_business_manager_messaging_limit`
/// is only asked of v24+ (older versions reject the whole request for it).
#[derive(Debug, Clone)]
pub struct FieldSets {
    pub phone: String,
    pub waba: String,
    pub waba_with_numbers: String,
    pub business: String,
    /// The same WABA and business reads with each WABA's first page of message templates
    /// expanded inside (no extra call), for the cycles that read templates.
    pub waba_with_templates: String,
    pub business_with_templates: String,
}

/// What is asked of each message template.
pub const TEMPLATE_FIELDS: &str =
    "id,name,language,status,category,quality_score,rejected_reason,previous_category";

/// The templates edge of a WABA.
pub const TEMPLATES_EDGE: &str = "message_templates";

impl FieldSets {
    pub fn for_version(v: ApiVersion) -> FieldSets {
        let limit = if v.has_business_messaging_limit() {
            ",whatsapp_business_manager_messaging_limit"
        } else {
            ""
        };
        let phone = format!(
            "id,display_phone_number,verified_name,status,quality_rating,messaging_limit_tier,\
name_status,code_verification_status,throughput,account_mode,health_status{limit}"
        );
        let waba = format!(
            "id,name,account_review_status,business_verification_status,ownership_type,health_status{limit}"
        );
        let waba_with_numbers = format!("{waba},phone_numbers.limit({PAGE_LIMIT}){{{phone}}}");
        let business_of = |waba: &str| {
            format!(
                "id,owned_whatsapp_business_accounts.limit({PAGE_LIMIT}){{{waba}}},\
client_whatsapp_business_accounts.limit({PAGE_LIMIT}){{{waba}}}"
            )
        };
        let business = business_of(&waba_with_numbers);
        let waba_with_templates = format!(
            "{waba_with_numbers},{TEMPLATES_EDGE}.limit({PAGE_LIMIT}){{{TEMPLATE_FIELDS}}}"
        );
        let business_with_templates = business_of(&waba_with_templates);
        FieldSets {
            phone,
            waba,
            waba_with_numbers,
            business,
            waba_with_templates,
            business_with_templates,
        }
    }
}

/// Targets the fleet API added to a source, for one poll (merged with the config's).
#[derive(Debug, Clone, Default)]
pub struct ExtraTargets {
    pub wabas: Vec<String>,
    pub phones: Vec<String>,
    /// Numbers read one by one with their own access token instead of the source's.
    pub own_token: Vec<(String, SecretString)>,
    /// The WABA each added number is on, as the API was told (`business_account_id`): a
    /// number read singly does not name its WABA, and its calls count against the WABA's
    /// quota.
    pub phone_wabas: HashMap<String, String>,
}

impl ExtraTargets {
    pub fn is_empty(&self) -> bool {
        self.wabas.is_empty() && self.phones.is_empty() && self.own_token.is_empty()
    }
}

/// The config's list followed by the ids of `extra` it does not already have.
fn merged(config: &[String], extra: &[String]) -> Vec<String> {
    let known: HashSet<&str> = config.iter().map(String::as_str).collect();
    let mut out = config.to_vec();
    out.extend(
        extra
            .iter()
            .filter(|e| !known.contains(e.as_str()))
            .cloned(),
    );
    out
}

pub struct MetaSource {
    pub cfg: MetaSourceConfig,
    client: GraphClient,
    fields: FieldSets,
    /// The client's governor: the cycle's admission decides here, the client charges.
    quota: Quota,
    /// What this source knows that outlives a config reload.
    memory: Arc<MetaMemory>,
    /// `[webhooks] app_id`: the app whose subscription to each WABA is checked hourly.
    app_id: Option<String>,
}

/// What a `[[meta]]` source has learnt that must survive a reload (which builds a new
/// source): the quota ledger and throttle pauses, a token Meta rejected, and which WABA each
/// number is on. Kept by the daemon per source name (see [`super::SourceMemory`]).
#[derive(Debug)]
pub struct MetaMemory {
    pub quota: Quota,
    /// Fingerprint of a token Meta rejected (190): not used again until it changes.
    rejected_token: Mutex<Option<u64>>,
    /// WABA of each number seen under one, so a singly configured number is charged to its
    /// WABA's quota.
    phone_waba: Mutex<HashMap<String, String>>,
    /// When each WABA's `subscribed_apps` was last asked, and Meta's last answer.
    subscriptions: Mutex<SubscriptionMemory>,
    /// Polls made so far: templates are read when it is a multiple of `templates_every`.
    polls: std::sync::atomic::AtomicU64,
}

impl MetaMemory {
    pub fn new(budget: u32) -> MetaMemory {
        MetaMemory {
            quota: Quota::new(budget),
            rejected_token: Mutex::new(None),
            phone_waba: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(SubscriptionMemory::default()),
            polls: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

fn fingerprint(token: &SecretString) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.expose_secret().hash(&mut h);
    h.finish()
}

/// A throttling hint from Meta: `Retry-After`, else the usage header's regain time (minutes).
fn throttle_hint(e: &GraphError, usage: &UsageSnapshot, key: &str) -> Option<Duration> {
    if let GraphError::Api {
        retry_after: Some(d),
        ..
    } = e
    {
        return Some(*d);
    }
    usage
        .business
        .get(key)
        .and_then(|m| m.get("estimated_time_to_regain_access"))
        .filter(|m| **m > 0.0)
        .map(|m| Duration::from_secs_f64(m * 60.0))
}

/// App-wide throttling codes (the whole source pauses); the others pause one WABA.
fn is_app_throttle(e: &GraphError) -> bool {
    matches!(e.code(), Some(4 | 17))
}

fn max_usage(m: &std::collections::BTreeMap<String, f64>) -> Option<f64> {
    ["call_count", "total_cputime", "total_time"]
        .iter()
        .filter_map(|k| m.get(*k).copied())
        .reduce(f64::max)
}

/// What one poll has read so far, by id, so that an object reached twice (through two edges,
/// or a business and the config) is read once — in constant time per object.
#[derive(Default)]
struct Seen {
    wabas: HashSet<String>,
    phones: HashSet<String>,
    /// This poll reads templates (the WABA reads expand them).
    templates: bool,
    /// WABAs whose template listing goes on past the page that came with the WABA: that
    /// page's `paging` (its data already read), followed after all WABAs are read,
    /// concurrently.
    template_tails: Vec<(String, Value)>,
}

/// An edge read to its end (or not) for one object: its id, the items, and whether complete.
type EdgeRead = (String, Vec<Value>, Result<(), GraphError>);

/// Where a failed read goes: held back by the governor is *deferred* (not a failure, no pause,
/// the target keeps its state); anything else is a failure of the target.
fn record_failure(out: &mut SourcePoll, kind: ObjectKind, id: String, error: GraphError) {
    match error {
        GraphError::OverQuota { reason, .. } => out.deferred.push(Deferred { kind, id, reason }),
        error => out.failures.push(TargetFailure { kind, id, error }),
    }
}

impl MetaSource {
    /// A source with nothing learnt yet.
    pub fn new(cfg: MetaSourceConfig, client: GraphClient) -> MetaSource {
        let memory = Arc::new(MetaMemory {
            quota: client.quota().clone(),
            rejected_token: Mutex::new(None),
            phone_waba: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(SubscriptionMemory::default()),
            polls: std::sync::atomic::AtomicU64::new(0),
        });
        Self::with_memory(cfg, client, memory)
    }

    /// A source that carries on from `memory` (the client must use `memory.quota`).
    pub fn with_memory(
        cfg: MetaSourceConfig,
        client: GraphClient,
        memory: Arc<MetaMemory>,
    ) -> MetaSource {
        let fields = FieldSets::for_version(cfg.api_version);
        let quota = client.quota().clone();
        MetaSource {
            cfg,
            client,
            fields,
            quota,
            memory,
            app_id: None,
        }
    }

    /// Checks hourly that `app_id` (`[webhooks] app_id`) is subscribed to each WABA seen.
    pub fn with_subscription_check(mut self, app_id: Option<String>) -> MetaSource {
        self.app_id = app_id;
        self
    }

    /// HTTP requests (pages and batches) this source's client has sent since it was built.
    pub fn requests_sent(&self) -> u64 {
        self.client.counters().requests.load(Ordering::Relaxed)
    }

    /// Calls charged to `key` (a WABA, business or number id) in the last hour.
    pub fn calls_last_hour(&self, key: &str) -> u32 {
        self.quota.lock().used(key)
    }

    /// Re-reads the token (off the async threads); refuses one Meta already rejected.
    /// Returns the fingerprint of the token in use; `Err` carries the failure to report
    /// instead of polling.
    async fn ready_token(&self) -> Result<u64, GraphError> {
        let token = super::load_secret(&self.cfg.token)
            .await
            .map_err(|e| GraphError::Api {
                class: super::graph::ErrorClass::Auth,
                http_status: 0,
                code: None,
                subcode: None,
                message: format!("could not read the access token: {e}"),
                fbtrace_id: None,
                retry_after: None,
            })?;
        let fp = fingerprint(&token);
        let rejected = self
            .memory
            .rejected_token
            .lock()
            .map(|r| *r)
            .unwrap_or(None);
        if rejected == Some(fp) {
            return Err(GraphError::Api {
                class: super::graph::ErrorClass::Auth,
                http_status: 0,
                code: Some(190),
                subcode: None,
                message: "Meta rejected this access token; not polling with it again until it changes (replace the token file or variable and reload)".into(),
                fbtrace_id: None,
                retry_after: None,
            });
        }
        self.client.set_token(token);
        Ok(fp)
    }

    fn key_of_phone(&self, id: &str) -> String {
        self.memory
            .phone_waba
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned())
            .unwrap_or_else(|| id.to_owned())
    }

    /// After a poll: pause what Meta throttled, mark what answered as recovered, remember a
    /// rejected token (by the fingerprint of the token the poll used), learn which WABA each
    /// number is on.
    fn settle(&self, out: &SourcePoll, token_fp: u64, own: &HashSet<&str>, now: DateTime<Utc>) {
        let usage = self.client.usage();
        {
            let mut g = self.quota.lock();
            let mut app_throttled = false;
            for f in out
                .failures
                .iter()
                .chain(&out.subscription_failures)
                .chain(&out.template_failures)
            {
                if f.error.class() != super::graph::ErrorClass::RateLimited {
                    continue;
                }
                let key = match f.kind {
                    ObjectKind::PhoneNumber => self.key_of_phone(&f.id),
                    _ => f.id.clone(),
                };
                let hint = throttle_hint(&f.error, &usage, &key);
                if is_app_throttle(&f.error) {
                    app_throttled = true;
                    let until = g.pause_source(hint, now);
                    tracing::warn!(code = ?f.error.code(), until = %crate::timefmt::rfc3339(until), "Meta throttles the app: this source pauses");
                } else {
                    let until = g.pause(&key, hint, now);
                    tracing::warn!(key = %key, code = ?f.error.code(), until = %crate::timefmt::rfc3339(until), "Meta throttles this WABA: it pauses, the others go on");
                }
            }
            if !app_throttled && !out.wabas.is_empty() {
                g.source_recovered();
            }
            for w in &out.wabas {
                g.recovered(&w.id);
            }
        }
        // A number's own token rejected says nothing about the source's.
        if out.failures.iter().any(|f| {
            f.error.class() == super::graph::ErrorClass::Auth
                && f.error.code() == Some(190)
                && !(f.kind == ObjectKind::PhoneNumber && own.contains(f.id.as_str()))
        }) && let Ok(mut r) = self.memory.rejected_token.lock()
        {
            *r = Some(token_fp);
        }
        if let Ok(mut m) = self.memory.phone_waba.lock() {
            for p in &out.phones {
                if let Some(w) = &p.waba_id {
                    m.insert(p.id.clone(), w.clone());
                }
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The latest usage percentages Meta reported to this source's client.
    pub fn usage(&self) -> super::graph::usage::UsageSnapshot {
        self.client.usage()
    }

    /// Reads one phone number now (for the status API's connection test); records nothing.
    /// The call is admitted and charged to the number's WABA like any other: over the budget
    /// it is not made (`GraphError::OverQuota`).
    pub async fn read_number(&self, id: &str) -> Result<PhoneObservation, GraphError> {
        self.read_number_as(id, None).await
    }

    /// [`MetaSource::read_number`] with the number's own token when it has one.
    pub async fn read_number_as(
        &self,
        id: &str,
        token: Option<&SecretString>,
    ) -> Result<PhoneObservation, GraphError> {
        let req = NodeRequest {
            id: id.to_owned(),
            fields: self.fields.phone.clone(),
            key: self.key_of_phone(id),
        };
        let node = match token {
            Some(t) => self.client.get_node_as(&req, t, Utc::now()).await?,
            None => self.client.get_node(&req, Utc::now()).await?,
        };
        parse::phone(&node, None, &mut Anomalies::default())
            .ok_or_else(|| GraphError::Malformed("answer without an id".into()))
    }

    /// One poll of every target of this source at `now`. Never fails as a whole: what could
    /// not be read is listed in `failures`, what the quota governor held back in `deferred`.
    pub async fn poll(&self, now: DateTime<Utc>) -> SourcePoll {
        self.poll_with(now, &ExtraTargets::default()).await
    }

    /// [`MetaSource::poll`] of the config's targets and `extra` (the fleet API's), under the
    /// same quota governor and batching; numbers with their own token are read one by one
    /// with it.
    pub async fn poll_with(&self, now: DateTime<Utc>, extra: &ExtraTargets) -> SourcePoll {
        let cfg_wabas = merged(&self.cfg.wabas, &extra.wabas);
        let own_ids: HashSet<&str> = extra.own_token.iter().map(|(id, _)| id.as_str()).collect();
        let phone_list: Vec<String> = merged(&self.cfg.phone_numbers, &extra.phones)
            .into_iter()
            .filter(|p| !own_ids.contains(p.as_str()))
            .collect();
        if !extra.phone_wabas.is_empty()
            && let Ok(mut m) = self.memory.phone_waba.lock()
        {
            for (p, w) in &extra.phone_wabas {
                m.entry(p.clone()).or_insert_with(|| w.clone());
            }
        }
        let mut out = SourcePoll {
            source: self.cfg.name.clone(),
            priority: PRIORITY,
            ..SourcePoll::default()
        };
        let token_fp = match self.ready_token().await {
            Ok(fp) => fp,
            Err(error) => {
                out.failures.push(TargetFailure {
                    kind: ObjectKind::Source,
                    id: self.cfg.name.clone(),
                    error,
                });
                return out;
            }
        };
        let usage = self.client.usage();
        let app_usage = max_usage(&usage.app);
        let business_usage = |key: &str| usage.business.get(key).and_then(max_usage);

        // What this cycle may ask for. Admission only reserves: the client charges each request
        // when it sends it (and retries and further pages with it).
        let (businesses, wabas, phones) = {
            let mut g = self.quota.lock();
            g.begin_cycle(now);
            if let Err(why) = g.source_check(now, app_usage) {
                let all = self
                    .cfg
                    .businesses
                    .iter()
                    .map(|b| (ObjectKind::Business, b))
                    .chain(cfg_wabas.iter().map(|w| (ObjectKind::Waba, w)))
                    .chain(phone_list.iter().map(|p| (ObjectKind::PhoneNumber, p)))
                    .chain(
                        extra
                            .own_token
                            .iter()
                            .map(|(p, _)| (ObjectKind::PhoneNumber, p)),
                    );
                for (kind, id) in all {
                    out.deferred.push(Deferred {
                        kind,
                        id: id.clone(),
                        reason: why,
                    });
                }
                return out;
            }
            let mut reserved: HashMap<String, u32> = HashMap::new();
            let mut admit = |kind: ObjectKind, id: &String, key: String| -> bool {
                let taken = reserved.get(&key).copied().unwrap_or(0);
                match g.check(&key, taken + 1, now, business_usage(&key)) {
                    Ok(()) => {
                        reserved.insert(key, taken + 1);
                        true
                    }
                    Err(reason) => {
                        out.deferred.push(Deferred {
                            kind,
                            id: id.clone(),
                            reason,
                        });
                        false
                    }
                }
            };
            let businesses: Vec<String> = self
                .cfg
                .businesses
                .iter()
                .filter(|b| admit(ObjectKind::Business, b, (*b).clone()))
                .cloned()
                .collect();
            let wabas: Vec<String> = cfg_wabas
                .iter()
                .filter(|w| admit(ObjectKind::Waba, w, (*w).clone()))
                .cloned()
                .collect();
            let phones: Vec<String> = phone_list
                .iter()
                .filter(|p| admit(ObjectKind::PhoneNumber, p, self.key_of_phone(p)))
                .cloned()
                .collect();
            let own: Vec<(String, SecretString)> = extra
                .own_token
                .iter()
                .filter(|(p, _)| admit(ObjectKind::PhoneNumber, p, self.key_of_phone(p)))
                .cloned()
                .collect();
            (businesses, wabas, (phones, own))
        };
        let (phones, own) = phones;

        let calls_before = self.client.counters().calls.load(Ordering::Relaxed);
        let requests_before = self.client.counters().requests.load(Ordering::Relaxed);
        let n = self.memory.polls.fetch_add(1, Ordering::Relaxed);
        let templates =
            self.cfg.templates && n.is_multiple_of(u64::from(self.cfg.templates_every.max(1)));
        self.fetch(&businesses, &wabas, &phones, templates, now, &mut out)
            .await;
        self.fetch_own_token(&own, now, &mut out).await;
        for p in out.phones.iter_mut().filter(|p| p.waba_id.is_none()) {
            if let Some(w) = extra.phone_wabas.get(&p.id) {
                p.waba_id = Some(w.clone());
            }
        }
        if let Some(app_id) = &self.app_id {
            self.check_subscriptions(app_id, now, &mut out).await;
        }
        out.calls = self.client.counters().calls.load(Ordering::Relaxed) - calls_before;
        out.requests = self.client.counters().requests.load(Ordering::Relaxed) - requests_before;
        self.settle(&out, token_fp, &own_ids, now);
        out
    }

    /// Numbers with their own access token (the fleet API's), not already read in this poll
    /// under a WABA: one `GET /{id}?fields=...` each with that token, admitted and charged to
    /// its WABA like any other call, `concurrency` at once.
    async fn fetch_own_token(
        &self,
        own: &[(String, SecretString)],
        now: DateTime<Utc>,
        out: &mut SourcePoll,
    ) {
        let seen: HashSet<String> = out.phones.iter().map(|p| p.id.clone()).collect();
        let mut reads: Vec<BoxFuture<'_, (String, Result<Value, GraphError>)>> = Vec::new();
        for (id, token) in own.iter().filter(|(id, _)| !seen.contains(id)) {
            let req = NodeRequest {
                id: id.clone(),
                fields: self.fields.phone.clone(),
                key: self.key_of_phone(id),
            };
            reads.push(Box::pin(async move {
                let res = self.client.get_node_as(&req, token, now).await;
                (req.id, res)
            }));
        }
        let answers: Vec<(String, Result<Value, GraphError>)> = futures_util::stream::iter(reads)
            .buffer_unordered(self.client.concurrency().max(1))
            .collect()
            .await;
        let mut an = Anomalies::default();
        for (id, res) in answers {
            match res {
                Ok(node) => {
                    if let Some(p) = parse::phone(&node, None, &mut an) {
                        out.phones.push(p);
                    }
                }
                Err(error) => record_failure(out, ObjectKind::PhoneNumber, id, error),
            }
        }
        out.anomalies.extend(an.0);
    }

    async fn fetch(
        &self,
        businesses: &[String],
        wabas_to_read: &[String],
        phones_to_read: &[String],
        templates: bool,
        now: DateTime<Utc>,
        out: &mut SourcePoll,
    ) {
        let mut an = Anomalies::default();
        let mut seen = Seen {
            templates,
            ..Seen::default()
        };
        let (business_fields, waba_fields) = if templates {
            (
                &self.fields.business_with_templates,
                &self.fields.waba_with_templates,
            )
        } else {
            (&self.fields.business, &self.fields.waba_with_numbers)
        };
        let out_ref = out;
        let mut out = std::mem::take(out_ref);

        // 1. Businesses, concurrently.
        let mut fetches: Vec<BoxFuture<'_, (String, Result<Value, GraphError>)>> = Vec::new();
        for b in businesses {
            let req = NodeRequest {
                id: b.clone(),
                fields: business_fields.clone(),
                key: b.clone(),
            };
            fetches.push(Box::pin(async move {
                let res = self.client.get_node(&req, now).await;
                (req.id, res)
            }));
        }
        let businesses: Vec<(String, Result<Value, GraphError>)> =
            futures_util::stream::iter(fetches)
                .buffer_unordered(self.client.concurrency())
                .collect()
                .await;
        for (business, res) in businesses {
            match res {
                Ok(node) => {
                    self.read_business(&business, node, now, &mut seen, &mut out, &mut an)
                        .await
                }
                Err(error) => record_failure(&mut out, ObjectKind::Business, business, error),
            }
        }

        // 2. Configured WABAs that discovery did not already return. Fetched in waves of
        // `concurrency` batches so that only one wave of answers is held in memory at a time:
        // each answer is turned into observations and dropped before the next wave.
        let wabas: Vec<NodeRequest> = wabas_to_read
            .iter()
            .filter(|w| !seen.wabas.contains(*w))
            .map(|w| NodeRequest {
                id: w.clone(),
                fields: waba_fields.clone(),
                key: w.clone(),
            })
            .collect();
        for wave in wabas.chunks(self.wave_size()) {
            let answers = self.client.batch(wave, now).await;
            for (req, res) in wave.iter().zip(answers) {
                match res {
                    Ok(node) => {
                        self.read_waba(node, None, now, &mut seen, &mut out, &mut an)
                            .await
                    }
                    Err(error) => record_failure(&mut out, ObjectKind::Waba, req.id.clone(), error),
                }
            }
        }

        // Template listings longer than the page that came with their WABA.
        let tails = std::mem::take(&mut seen.template_tails);
        let mut reads: Vec<BoxFuture<'_, EdgeRead>> = Vec::with_capacity(tails.len());
        for (waba, page) in tails {
            reads.push(Box::pin(async move {
                let (items, res) = self.collect_edge(Some(page), &waba, now).await;
                (waba, items, res)
            }));
        }
        let tails: Vec<EdgeRead> = futures_util::stream::iter(reads)
            .buffer_unordered(self.client.concurrency().max(1))
            .collect()
            .await;
        for (waba, items, res) in tails {
            out.templates.extend(
                items
                    .iter()
                    .filter_map(|t| parse::template(t, &waba, &mut an)),
            );
            match res {
                Ok(()) => {
                    out.complete_template_wabas.insert(waba);
                }
                Err(error) => out.template_failures.push(TargetFailure {
                    kind: ObjectKind::Waba,
                    id: waba,
                    error,
                }),
            }
        }

        // 3. Configured single numbers not already seen under a WABA.
        let phones: Vec<NodeRequest> = phones_to_read
            .iter()
            .filter(|p| !seen.phones.contains(*p))
            .map(|p| NodeRequest {
                id: p.clone(),
                fields: self.fields.phone.clone(),
                key: self.key_of_phone(p),
            })
            .collect();
        for wave in phones.chunks(self.wave_size()) {
            let answers = self.client.batch(wave, now).await;
            for (req, res) in wave.iter().zip(answers) {
                match res {
                    Ok(node) => {
                        if let Some(p) = parse::phone(&node, None, &mut an)
                            && seen.phones.insert(p.id.clone())
                        {
                            out.phones.push(p);
                        }
                    }
                    Err(error) => {
                        record_failure(&mut out, ObjectKind::PhoneNumber, req.id.clone(), error)
                    }
                }
            }
        }

        out.anomalies = an.0;
        *out_ref = out;
    }

    /// Asks `GET /{waba}/subscribed_apps` (and its further pages) of every WABA this poll saw
    /// and not asked within the hour, concurrently, each request admitted and charged to the
    /// WABA by the client; then puts the latest known answer of each seen WABA in the poll. A
    /// held-back request is deferred (asked again next cycle); a failed one is no verdict (asked
    /// again in an hour; the last answer stands), reported apart from the WABA's failures.
    async fn check_subscriptions(&self, app_id: &str, now: DateTime<Utc>, out: &mut SourcePoll) {
        let lock = || {
            self.memory
                .subscriptions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let due: Vec<String> = {
            let memory = lock();
            out.wabas
                .iter()
                .map(|w| w.id.clone())
                .filter(|w| memory.due(w, now))
                .collect()
        };
        let mut reads: Vec<BoxFuture<'_, (String, Result<bool, GraphError>)>> = Vec::new();
        for waba in due {
            reads.push(Box::pin(async move {
                let req = NodeRequest {
                    id: format!("{waba}/{}", subscriptions::EDGE),
                    fields: subscriptions::FIELDS.to_owned(),
                    key: waba.clone(),
                };
                let res = match self.client.get_node(&req, now).await {
                    Ok(first) => {
                        let (items, res) = self.collect_edge(Some(first), &waba, now).await;
                        res.map(|()| subscriptions::lists_app(&items, app_id))
                    }
                    Err(e) => Err(e),
                };
                (waba, res)
            }));
        }
        let answers: Vec<(String, Result<bool, GraphError>)> = futures_util::stream::iter(reads)
            .buffer_unordered(self.client.concurrency().max(1))
            .collect()
            .await;
        let mut memory = lock();
        for (waba, res) in answers {
            match res {
                Ok(subscribed) => {
                    if !subscribed {
                        tracing::warn!(waba = %waba, app_id, "webhooks not subscribed for this WABA: the app is missing from its subscribed_apps");
                    }
                    memory.answered(&waba, subscribed, now);
                }
                Err(GraphError::OverQuota { reason, .. }) => out.deferred.push(Deferred {
                    kind: ObjectKind::Waba,
                    id: waba,
                    reason,
                }),
                Err(error) => {
                    memory.asked(&waba, now);
                    out.subscription_failures.push(TargetFailure {
                        kind: ObjectKind::Waba,
                        id: waba,
                        error,
                    });
                }
            }
        }
        out.webhook_subscriptions = out
            .wabas
            .iter()
            .filter_map(|w| memory.known(&w.id, app_id))
            .collect();
    }

    /// Items fetched per wave: as many full batches as may be in flight at once.
    fn wave_size(&self) -> usize {
        MAX_BATCH * self.client.concurrency().max(1)
    }

    /// Reads a business's WABA edges page by page: each page's WABAs are read (with their
    /// numbers) before the next page is fetched, so memory holds one page at a time.
    async fn read_business(
        &self,
        business: &str,
        mut node: Value,
        now: DateTime<Utc>,
        seen: &mut Seen,
        out: &mut SourcePoll,
        an: &mut Anomalies,
    ) {
        let mut complete = true;
        for edge in [
            "owned_whatsapp_business_accounts",
            "client_whatsapp_business_accounts",
        ] {
            // Meta leaves an edge with nothing to list out of the expansion altogether.
            let mut page = node.get_mut(edge).map(Value::take);
            let mut seen_links = BTreeSet::new();
            let mut pages = 0;
            while let Some(mut current) = page.take() {
                pages += 1;
                let Some(Value::Array(data)) = current.get_mut("data").map(Value::take) else {
                    complete = false;
                    out.failures.push(TargetFailure {
                        kind: ObjectKind::Business,
                        id: business.to_owned(),
                        error: GraphError::Malformed("edge page without a data array".into()),
                    });
                    break;
                };
                for w in data {
                    self.read_waba(w, Some(business), now, seen, out, an).await;
                }
                match self
                    .next_page(&current, &mut seen_links, pages, business, now)
                    .await
                {
                    Ok(next) => page = next,
                    Err(error) => {
                        complete = false;
                        record_failure(out, ObjectKind::Business, business.to_owned(), error);
                    }
                }
            }
        }
        if complete {
            out.complete_businesses.insert(business.to_owned());
        }
    }

    async fn read_waba(
        &self,
        mut node: Value,
        business: Option<&str>,
        now: DateTime<Utc>,
        seen: &mut Seen,
        out: &mut SourcePoll,
        an: &mut Anomalies,
    ) {
        let Some(w): Option<WabaObservation> = parse::waba(&node, business, an) else {
            return;
        };
        // The same WABA can come through two edges (owned and client) or a business and the
        // config; read it once.
        if !seen.wabas.insert(w.id.clone()) {
            return;
        }
        let (items, res) = self
            .collect_edge(node.get_mut("phone_numbers").map(Value::take), &w.id, now)
            .await;
        let phones: Vec<PhoneObservation> = items
            .iter()
            .filter_map(|p| parse::phone(p, Some(&w.id), an))
            .collect();
        match res {
            Ok(()) => {
                out.complete_wabas.insert(w.id.clone());
            }
            Err(error) => record_failure(out, ObjectKind::Waba, w.id.clone(), error),
        }
        for p in phones {
            if seen.phones.insert(p.id.clone()) {
                out.phones.push(p);
            }
        }
        if seen.templates {
            // The first page came with the WABA (Meta leaves the edge out when there is none);
            // further pages are fetched once every WABA is read, concurrently, one call each
            // charged to the WABA.
            match node.get_mut(TEMPLATES_EDGE).map(Value::take) {
                None => {
                    out.complete_template_wabas.insert(w.id.clone());
                }
                Some(mut page) => match page.get_mut("data").map(Value::take) {
                    Some(Value::Array(items)) => {
                        out.templates
                            .extend(items.iter().filter_map(|t| parse::template(t, &w.id, an)));
                        let more = page.get("paging").and_then(|p| p.get("next")).is_some();
                        if more {
                            page["data"] = Value::Array(Vec::new());
                            seen.template_tails.push((w.id.clone(), page));
                        } else {
                            out.complete_template_wabas.insert(w.id.clone());
                        }
                    }
                    _ => out.template_failures.push(TargetFailure {
                        kind: ObjectKind::Waba,
                        id: w.id.clone(),
                        error: GraphError::Malformed("edge page without a data array".into()),
                    }),
                },
            }
        }
        out.wabas.push(w);
    }

    /// Fetches the page after `page`, if its `paging.next` says there is one, charged to
    /// `key` (so an endless listing stops at the budget). Refuses a link seen before (a server
    /// repeating its cursor) and more pages than the guard allows.
    async fn next_page(
        &self,
        page: &Value,
        seen_links: &mut BTreeSet<String>,
        pages_read: usize,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Value>, GraphError> {
        let next = page
            .get("paging")
            .and_then(|p| p.get("next"))
            .and_then(Value::as_str);
        let Some(next) = next else {
            return Ok(None);
        };
        if pages_read >= MAX_PAGES {
            return Err(GraphError::Malformed(
                "more pages than the paging guard allows".into(),
            ));
        }
        if !seen_links.insert(next.to_owned()) {
            return Err(GraphError::Malformed("paging link repeats itself".into()));
        }
        self.client.get_next(next, key, now).await.map(Some)
    }

    /// Reads an edge to its end: the first page (as embedded in the parent, or absent when
    /// Meta has nothing to list) and every `paging.next` after it. Returns what was read and
    /// whether the listing is complete.
    async fn collect_edge(
        &self,
        first: Option<Value>,
        key: &str,
        now: DateTime<Utc>,
    ) -> (Vec<Value>, Result<(), GraphError>) {
        let mut items = Vec::new();
        let mut page = first;
        let mut seen_links = BTreeSet::new();
        let mut pages = 0;
        while let Some(mut current) = page.take() {
            pages += 1;
            match current.get_mut("data").map(Value::take) {
                Some(Value::Array(data)) => items.extend(data),
                _ => {
                    return (
                        items,
                        Err(GraphError::Malformed(
                            "edge page without a data array".into(),
                        )),
                    );
                }
            }
            match self
                .next_page(&current, &mut seen_links, pages, key, now)
                .await
            {
                Ok(next) => page = next,
                Err(e) => return (items, Err(e)),
            }
        }
        (items, Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_limit_field_is_asked_only_of_v24_and_later() {
        let v23 = FieldSets::for_version(ApiVersion {
            major: 23,
            minor: 0,
        });
        let v24 = FieldSets::for_version(ApiVersion {
            major: 24,
            minor: 0,
        });
        assert!(
            !v23.business
                .contains("whatsapp_business_manager_messaging_limit")
        );
        assert!(
            v24.phone
                .contains("whatsapp_business_manager_messaging_limit")
        );
        assert!(
            v23.waba_with_numbers
                .contains("phone_numbers.limit(100){id,")
        );
        assert!(
            v23.business
                .contains("client_whatsapp_business_accounts.limit(100){")
        );
        assert!(!v23.business.contains("message_templates"));
        assert!(!v23.waba_with_numbers.contains("message_templates"));
        let expansion = "message_templates.limit(100){id,name,language,status,category,quality_score,rejected_reason,previous_category}";
        assert!(v24.waba_with_templates.ends_with(expansion));
        assert_eq!(v24.business_with_templates.matches(expansion).count(), 2);
    }
}
