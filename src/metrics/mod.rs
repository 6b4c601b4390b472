//! Prometheus metrics (OpenMetrics text).
//!
//! Daemon metrics (polls, Graph calls and usage, emails, outbox, scheduler) live in a
//! `prometheus-client` registry. Per-number and per-WABA state series are many (7 per number
//! by default, about 35 with `metrics_detail = "full"`), so they are kept as one compact table,
//! rebuilt from the database after each cycle, and rendered at scrape time in chunks from a
//! shared snapshot (see `targets`): no full copy of the text is held. A target that is gone (or
//! no longer in the database) loses its series at the next sync.

mod targets;

use std::sync::RwLock;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use targets::{
    STATUS_LEVELS, TableBuilder, TargetSeries, TargetTable, health_level, quality_level,
    review_level, status_level,
};

/// The database operations `waba_monitor_store_errors_total{op}` counts.
pub const STORE_OPS: [&str; 9] = [
    "record_cycle",
    "begin_run",
    "finish_run",
    "abandon_runs",
    "read",
    "outbox",
    "prune",
    "webhook",
    "webhook_process",
];

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub source: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub source: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BusinessUsageLabels {
    pub source: String,
    pub waba_id: String,
    pub metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WabaLabels {
    pub source: String,
    pub waba_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TemplateStatusLabels {
    pub waba_id: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TemplateQualityLabels {
    pub waba_id: String,
    pub score: String,
}

/// One unhealthy template (only those have a series: 10,000 healthy templates cost none).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TemplateLabels {
    pub waba_id: String,
    pub template_id: String,
    pub template: String,
    pub language: String,
    pub status: String,
    pub score: String,
    pub category: String,
}

/// The template series last set, so a sync removes the ones that no longer apply.
#[derive(Debug, Default)]
struct TemplateSeries {
    by_status: std::collections::HashSet<TemplateStatusLabels>,
    by_quality: std::collections::HashSet<TemplateQualityLabels>,
    unhealthy: std::collections::HashSet<TemplateLabels>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppUsageLabels {
    pub source: String,
    pub metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeverityLabels {
    pub severity: String,
    /// "true" when a silence kept the alert from being sent.
    pub silenced: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// The first change's `field` (a documented one, `other` or `unknown`).
    pub field: String,
    /// accepted, duplicate, bad_signature, too_large, malformed, unknown_field.
    pub outcome: String,
}

/// How one attempt to deliver an alert webhook ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryOutcomeLabels {
    /// sent, retry, failed, abandoned.
    pub outcome: String,
}

/// Which heartbeat was requested.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeartbeatLabels {
    /// `ok` (the URL itself) or `fail` (the URL + `/fail`).
    pub signal: String,
}

/// The outcomes `waba_monitor_alert_webhook_deliveries_total{outcome}` counts.
pub const WEBHOOK_DELIVERY_OUTCOMES: [&str; 4] = ["sent", "retry", "failed", "abandoned"];

/// The signals `waba_monitor_heartbeats_total{signal}` counts.
pub const HEARTBEAT_SIGNALS: [&str; 2] = ["ok", "fail"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub poll_runs: Family<OutcomeLabels, Counter>,
    pub poll_failures: Family<ReasonLabels, Counter>,
    pub poll_deferred: Family<ReasonLabels, Counter>,
    pub answer_anomalies: Family<ReasonLabels, Counter>,
    pub poll_duration: Family<SourceLabels, Histogram>,
    pub last_success: Family<SourceLabels, FloatGauge>,
    pub last_cycle_finished: FloatGauge,
    /// How long the last cycle's write transaction held the database's write lock.
    pub cycle_write_seconds: FloatGauge,
    pub cycles_skipped: Gauge,
    pub graph_calls: Family<SourceLabels, Counter>,
    pub business_usage: Family<BusinessUsageLabels, FloatGauge>,
    pub app_usage: Family<AppUsageLabels, FloatGauge>,
    pub source_blind: Family<SourceLabels, Gauge>,
    pub alerts: Family<SeverityLabels, Counter>,
    pub emails_sent: Counter,
    pub emails_failed: Counter,
    pub emails_abandoned: Counter,
    /// 1 while this instance leads (polls, alerts, sends), 0 on a standby; always 1 on SQLite.
    pub leader: Gauge,
    /// Times this instance became leader or stepped down.
    pub leader_transitions: Counter,
    /// Attempts to deliver a digest to a route's webhook receiver, by outcome.
    pub alert_webhook_deliveries: Family<DeliveryOutcomeLabels, Counter>,
    /// Posts of the open alerts to an Alertmanager (`[alertmanager]`), by outcome.
    pub alertmanager_posts: Family<DeliveryOutcomeLabels, Counter>,
    /// Heartbeat requests the heartbeat service answered with 2xx, by signal.
    pub heartbeats: Family<HeartbeatLabels, Counter>,
    /// Heartbeat requests that failed (unreachable, timed out, not 2xx).
    pub heartbeat_failures: Counter,
    pub outbox_pending: Gauge,
    pub outbox_oldest_age: FloatGauge,
    pub config_reload_ok: Gauge,
    /// Database operations that failed, by a bounded operation name.
    pub store_errors: Family<OpLabels, Counter>,
    /// Per `[[meta]]` source: when its Graph API version stops working (Unix seconds).
    graph_api_end_of_life: Family<SourceLabels, Gauge>,
    /// Webhook deliveries by first `field` and outcome.
    pub webhook_events: Family<WebhookLabels, Counter>,
    /// When the last signed webhook delivery was received (Unix seconds).
    pub webhook_last_event: FloatGauge,
    /// With `[webhooks] app_id`: 1 while the app is subscribed to the WABA, 0 when not.
    pub webhook_subscribed: Family<WabaLabels, Gauge>,
    /// Present templates per WABA and status.
    pub templates: Family<TemplateStatusLabels, Gauge>,
    /// Present templates per WABA and quality score.
    pub templates_quality: Family<TemplateQualityLabels, Gauge>,
    /// 1 per template that is not APPROVED with a GREEN/UNKNOWN score.
    pub template_unhealthy: Family<TemplateLabels, Gauge>,
    template_series: std::sync::Mutex<TemplateSeries>,
    targets: RwLock<TargetSeries>,
    /// Whether this instance exports the fleet's series (numbers, WABAs, templates): always,
    /// but on a standby of a pair (only the leader's count).
    fleet_exported: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts a failed database operation (`op` is a fixed name, never error text).
    pub fn store_error(&self, op: &str) {
        self.store_errors
            .get_or_create(&OpLabels { op: op.to_owned() })
            .inc();
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("waba_monitor");
        let m = Metrics {
            poll_runs: Family::default(),
            poll_failures: Family::default(),
            poll_deferred: Family::default(),
            answer_anomalies: Family::default(),
            poll_duration: Family::new_with_constructor(|| {
                Histogram::new([0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0])
            }),
            last_success: Family::default(),
            last_cycle_finished: FloatGauge::default(),
            cycle_write_seconds: FloatGauge::default(),
            cycles_skipped: Gauge::default(),
            graph_calls: Family::default(),
            business_usage: Family::default(),
            app_usage: Family::default(),
            source_blind: Family::default(),
            alerts: Family::default(),
            emails_sent: Counter::default(),
            emails_failed: Counter::default(),
            emails_abandoned: Counter::default(),
            leader: Gauge::default(),
            leader_transitions: Counter::default(),
            alert_webhook_deliveries: Family::default(),
            alertmanager_posts: Family::default(),
            heartbeats: Family::default(),
            heartbeat_failures: Counter::default(),
            outbox_pending: Gauge::default(),
            outbox_oldest_age: FloatGauge::default(),
            config_reload_ok: Gauge::default(),
            store_errors: Family::default(),
            graph_api_end_of_life: Family::default(),
            webhook_events: Family::default(),
            webhook_last_event: FloatGauge::default(),
            webhook_subscribed: Family::default(),
            templates: Family::default(),
            templates_quality: Family::default(),
            template_unhealthy: Family::default(),
            template_series: std::sync::Mutex::new(TemplateSeries::default()),
            targets: RwLock::new(TargetSeries::default()),
            fleet_exported: std::sync::atomic::AtomicBool::new(true),
            registry: Registry::default(),
        };
        registry.register(
            "build",
            "Build information",
            Info::new(VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            }),
        );
        registry.register(
            "poll_runs",
            "Poll runs by source and outcome (ok, partial, failed)",
            m.poll_runs.clone(),
        );
        registry.register(
            "poll_failures",
            "Targets that could not be read, by source and bounded reason",
            m.poll_failures.clone(),
        );
        registry.register(
            "poll_deferred",
            "Targets held back to stay inside Meta's quota, by source and reason (quota, throttled, slow_down)",
            m.poll_deferred.clone(),
        );
        registry.register(
            "answer_anomalies",
            "Values in Meta's answers that were of the wrong type or unknown, by source and reason (wrong_type, unknown_value, missing_id)",
            m.answer_anomalies.clone(),
        );
        registry.register(
            "poll_duration_seconds",
            "Duration of a source's poll (network part)",
            m.poll_duration.clone(),
        );
        registry.register(
            "last_successful_poll_timestamp_seconds",
            "When a source's poll last read everything or part of it",
            m.last_success.clone(),
        );
        registry.register(
            "last_cycle_finished_timestamp_seconds",
            "When the scheduler last finished a cycle (a stalled scheduler stops moving it)",
            m.last_cycle_finished.clone(),
        );
        registry.register(
            "cycle_write_seconds",
            "How long the last cycle's single write transaction held the database's write lock (readers are never blocked: WAL)",
            m.cycle_write_seconds.clone(),
        );
        registry.register(
            "cycles_skipped",
            "Scheduled ticks skipped because a cycle was still running",
            m.cycles_skipped.clone(),
        );
        registry.register(
            "graph_calls",
            "Graph API calls made, as Meta counts them (batch items one each)",
            m.graph_calls.clone(),
        );
        registry.register(
            "graph_business_usage_percent",
            "Latest X-Business-Use-Case-Usage percentages per WABA",
            m.business_usage.clone(),
        );
        registry.register(
            "graph_app_usage_percent",
            "Latest X-App-Usage percentages",
            m.app_usage.clone(),
        );
        registry.register(
            "source_blind",
            "1 while a source cannot see its targets (token, permission, failing cycles)",
            m.source_blind.clone(),
        );
        registry.register("alerts", "Alerts queued, by severity", m.alerts.clone());
        registry.register(
            "emails_sent",
            "Alert emails accepted by the SMTP server",
            m.emails_sent.clone(),
        );
        registry.register(
            "emails_failed",
            "Alert emails refused for good (5xx)",
            m.emails_failed.clone(),
        );
        registry.register(
            "leader",
            "1 while this instance is the leader (it polls, alerts and sends), 0 on a standby of a PostgreSQL pair",
            m.leader.clone(),
        );
        registry.register(
            "leader_transitions",
            "Times this instance became leader or stepped down",
            m.leader_transitions.clone(),
        );
        registry.register(
            "emails_abandoned",
            "Alert emails given up after max_age",
            m.emails_abandoned.clone(),
        );
        // Every outcome and signal at 0 from the start (see store_errors below).
        for outcome in WEBHOOK_DELIVERY_OUTCOMES {
            let _ = m
                .alert_webhook_deliveries
                .get_or_create(&DeliveryOutcomeLabels {
                    outcome: outcome.to_owned(),
                });
            let _ = m.alertmanager_posts.get_or_create(&DeliveryOutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
        for signal in HEARTBEAT_SIGNALS {
            let _ = m.heartbeats.get_or_create(&HeartbeatLabels {
                signal: signal.to_owned(),
            });
        }
        registry.register(
            "alert_webhook_deliveries",
            "Attempts to deliver an alert digest to a route's webhook receiver, by outcome (sent: 2xx; retry: 5xx, 408, 429, unreachable or timed out; failed: another 4xx, never retried; abandoned: given up after max_age)",
            m.alert_webhook_deliveries.clone(),
        );
        registry.register(
            "alertmanager_posts",
            "Posts of the open alerts to an Alertmanager's /api/v2/alerts, by outcome (sent: 2xx; retry: 5xx, 408, 429, unreachable or timed out; failed: another 4xx, never retried; abandoned: given up)",
            m.alertmanager_posts.clone(),
        );
        registry.register(
            "heartbeats",
            "Heartbeat requests answered with 2xx, by signal (ok: a cycle read something; fail: a cycle read nothing)",
            m.heartbeats.clone(),
        );
        registry.register(
            "heartbeat_failures",
            "Heartbeat requests that failed (unreachable, timed out or not 2xx); never fatal",
            m.heartbeat_failures.clone(),
        );
        registry.register(
            "outbox_pending",
            "Emails waiting to be accepted by the SMTP server",
            m.outbox_pending.clone(),
        );
        registry.register(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest email still waiting",
            m.outbox_oldest_age.clone(),
        );
        // Every op at 0 from the start: `increase()` misses a counter's first step if the
        // series only appears with it.
        for op in STORE_OPS {
            let _ = m
                .store_errors
                .get_or_create(&OpLabels { op: op.to_owned() });
        }
        registry.register(
            "store_errors",
            "Database operations that failed, by operation (record_cycle, begin_run, finish_run, abandon_runs, read, outbox, prune, webhook): a cycle that could not be recorded sent no alert",
            m.store_errors.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "1 if the last configuration (re)load succeeded",
            m.config_reload_ok.clone(),
        );
        registry.register(
            "graph_api_version_end_of_life_timestamp_seconds",
            "When the Graph API version a source uses reaches its end of life and Meta stops answering it (only for versions whose date Meta announced)",
            m.graph_api_end_of_life.clone(),
        );
        registry.register(
            "webhook_events",
            "Webhook deliveries by the first change's field and outcome (accepted, duplicate, bad_signature, too_large, malformed, unknown_field)",
            m.webhook_events.clone(),
        );
        registry.register(
            "webhook_last_event_timestamp_seconds",
            "When the last correctly signed webhook delivery was received",
            m.webhook_last_event.clone(),
        );
        registry.register(
            "webhook_subscribed",
            "With [webhooks] app_id: 1 while GET /{waba}/subscribed_apps lists the app, 0 when it does not (checked hourly)",
            m.webhook_subscribed.clone(),
        );
        registry.register(
            "templates",
            "Message templates of the WABA (present in its listing), by status",
            m.templates.clone(),
        );
        registry.register(
            "templates_quality",
            "Message templates of the WABA (present in its listing), by quality_score.score (UNKNOWN when Meta gives none)",
            m.templates_quality.clone(),
        );
        registry.register(
            "template_unhealthy",
            "1 for each template that is not APPROVED with a GREEN or UNKNOWN score (paused, disabled, rejected, flagged, yellow, red...); healthy templates have no series",
            m.template_unhealthy.clone(),
        );
        m.config_reload_ok.set(1);
        Metrics { registry, ..m }
    }

    /// Counts one attempt to deliver an alert webhook (`outcome` is one of
    /// [`WEBHOOK_DELIVERY_OUTCOMES`]).
    pub fn alert_webhook_delivery(&self, outcome: &str) {
        self.alert_webhook_deliveries
            .get_or_create(&DeliveryOutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one post to an Alertmanager (`outcome` is one of [`WEBHOOK_DELIVERY_OUTCOMES`]).
    pub fn alertmanager_post(&self, outcome: &str) {
        self.alertmanager_posts
            .get_or_create(&DeliveryOutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a heartbeat the service accepted (`signal` is `ok` or `fail`).
    pub fn heartbeat_sent(&self, signal: &str) {
        self.heartbeats
            .get_or_create(&HeartbeatLabels {
                signal: signal.to_owned(),
            })
            .inc();
    }

    /// Counts a webhook delivery (`field` and `outcome` are bounded labels, never raw text).
    pub fn webhook_event(&self, field: &str, outcome: &str) {
        self.webhook_events
            .get_or_create(&WebhookLabels {
                field: field.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Sets the end of life of each `[[meta]]` source's Graph API version from the config
    /// (`crate::config::graph_versions`), replacing the previous config's series: a renamed
    /// source or a version without an announced date has none.
    pub fn set_graph_api_versions(&self, meta: &[crate::config::MetaSourceConfig]) {
        self.graph_api_end_of_life.clear();
        for m in meta {
            if let Some(eol) = m.api_version.end_of_life() {
                self.graph_api_end_of_life
                    .get_or_create(&SourceLabels {
                        source: m.name.clone(),
                    })
                    .set(eol.and_time(chrono::NaiveTime::MIN).and_utc().timestamp());
            }
        }
    }

    /// Replaces the per-target series with a table built from the current state (targets that
    /// are gone are not in it).
    pub fn set_targets(&self, table: TargetTable) {
        if !self.exports_fleet() {
            return;
        }
        if let Ok(mut t) = self.targets.write() {
            t.replace(table);
        }
    }

    /// Whether the fleet's series (numbers, WABAs, templates) are exported: off on a standby
    /// of a pair, where they are dropped at once and not rebuilt (a cycle of the former leader
    /// still finishing does not bring them back), on again when it leads.
    pub fn export_fleet(&self, on: bool) {
        self.fleet_exported
            .store(on, std::sync::atomic::Ordering::SeqCst);
        if !on {
            if let Ok(mut t) = self.targets.write() {
                t.replace(TargetTable::default());
            }
            self.replace_templates(&crate::store::templates::TemplateMetrics::default());
        }
    }

    fn exports_fleet(&self) -> bool {
        self.fleet_exported
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Bytes the per-target table holds (for the benchmark).
    pub fn target_heap_bytes(&self) -> usize {
        self.targets.read().map(|t| t.heap_bytes()).unwrap_or(0)
    }

    /// Sets the template series from the store's figures, removing the ones that no longer
    /// apply (a template recovered, a WABA without templates of a status any more).
    pub fn sync_templates(&self, t: &crate::store::templates::TemplateMetrics) {
        if self.exports_fleet() {
            self.replace_templates(t);
        }
    }

    fn replace_templates(&self, t: &crate::store::templates::TemplateMetrics) {
        let Ok(mut last) = self.template_series.lock() else {
            return;
        };
        let mut next = TemplateSeries::default();
        for (waba_id, status, n) in &t.by_status {
            let l = TemplateStatusLabels {
                waba_id: waba_id.clone(),
                status: status.clone(),
            };
            self.templates.get_or_create(&l).set(*n);
            next.by_status.insert(l);
        }
        for (waba_id, score, n) in &t.by_quality {
            let l = TemplateQualityLabels {
                waba_id: waba_id.clone(),
                score: score.clone(),
            };
            self.templates_quality.get_or_create(&l).set(*n);
            next.by_quality.insert(l);
        }
        for r in &t.unhealthy {
            let l = TemplateLabels {
                waba_id: r.waba_id.clone(),
                template_id: r.id.clone(),
                template: r.name.clone().unwrap_or_default(),
                language: r.language.clone().unwrap_or_default(),
                status: r.status.clone().unwrap_or_else(|| "UNKNOWN".into()),
                score: r.quality.clone().unwrap_or_else(|| "UNKNOWN".into()),
                category: r.category.clone().unwrap_or_default(),
            };
            self.template_unhealthy.get_or_create(&l).set(1);
            next.unhealthy.insert(l);
        }
        for l in last.by_status.difference(&next.by_status) {
            self.templates.remove(l);
        }
        for l in last.by_quality.difference(&next.by_quality) {
            self.templates_quality.remove(l);
        }
        for l in last.unhealthy.difference(&next.unhealthy) {
            self.template_unhealthy.remove(l);
        }
        *last = next;
    }

    /// Counts the alerts a digest took, by severity and whether they were silenced.
    pub fn count_alerts(&self, taken: &[crate::alerts::Digested]) {
        for d in taken {
            self.alerts
                .get_or_create(&SeverityLabels {
                    severity: d.severity.clone(),
                    silenced: d.silenced.to_string(),
                })
                .inc();
        }
    }

    /// How many targets have series (for tests and the benchmark).
    pub fn target_count(&self) -> usize {
        self.targets.read().map(|t| t.len()).unwrap_or(0)
    }

    /// The exposition as chunks: the daemon metrics, the per-target section (rendered chunk by
    /// chunk as the iterator is read, from the table current now) and the end marker.
    /// Concatenated, they are valid OpenMetrics text.
    pub fn encode_chunks(&self) -> impl Iterator<Item = Bytes> + Send + 'static {
        let mut head = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut head, &self.registry);
        let section = self.targets.read().ok().map(|t| t.chunks());
        std::iter::once(Bytes::from(head))
            .chain(section.into_iter().flatten())
            .chain(std::iter::once(Bytes::from_static(b"# EOF\n")))
    }

    /// The whole exposition as one string (tests, the benchmark).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for p in self.encode_chunks() {
            out.push_str(&String::from_utf8_lossy(&p));
        }
        out
    }
}
