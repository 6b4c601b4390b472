//! The daemon: open the store, build the sources, run the schedule until shutdown.

use std::future::Future;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::http;
use crate::lifecycle::{CycleStats, Leadership, ShutdownSignal};
use crate::metrics::Metrics;
use crate::notify::delivery::{self, Deliverer};
use crate::notify::heartbeat::{Beat, Heartbeat};
use crate::poller::CycleReport;
use crate::retry::RetryPolicy;
use crate::runtime::{Ground, Runtime, SharedRuntime};
use crate::scheduler;
use crate::service;
use crate::service::unix_now;
use crate::sources::SourceMemory;
use crate::store::Store;
use crate::store::lease::LEADER;

/// Knobs the CLI and tests set; production uses the defaults.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Graph request retries.
    pub retry: RetryPolicy,
    /// Waits between attempts to deliver one email.
    pub email_backoff: RetryPolicy,
    /// How often the delivery worker looks for due email besides being woken by a cycle.
    pub delivery_tick: Duration,
    /// How long a database write waits for another process's lock.
    pub busy_timeout: Duration,
    /// Connection cap and timeouts of the HTTP listener.
    pub http: http::HttpLimits,
    /// How often stored webhook deliveries (and restriction expiries) are looked for between
    /// cycles, with `[webhooks]`.
    pub webhook_tick: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            retry: RetryPolicy::default(),
            email_backoff: Deliverer::default_backoff(),
            delivery_tick: Duration::from_secs(15),
            busy_timeout: Store::BUSY_TIMEOUT,
            http: http::HttpLimits::default(),
            webhook_tick: Duration::from_millis(500),
        }
    }
}

/// Installs the SIGHUP handler at once, so that a reload signal sent while the process starts
/// is not fatal (the default action of SIGHUP ends a process). Call first thing in `main`.
pub fn catch_early_signals() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // The stream itself is not needed: the handler outlives it.
        if let Err(e) = signal(SignalKind::hangup()) {
            eprintln!("warning: could not install the SIGHUP handler: {e}");
        }
    }
}

/// Warns when the database file exists but is empty: a lost or truncated database would
/// otherwise silently start a new history.
pub fn warn_if_empty_database(database: &crate::config::Database) {
    let Some(path) = database.sqlite_path() else {
        return;
    };
    if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
        tracing::warn!(
            database = %path.display(),
            "the database file is empty (0 bytes): starting a new history in it; if it should hold data, stop the daemon and restore a backup (`waba-monitor backup` makes them)"
        );
    }
}

/// Runs until `shutdown` resolves, then stops cleanly: the in-flight cycle finishes (or is
/// abandoned after `shutdown_grace`), the HTTP server and the delivery worker stop, and the
/// database is closed. Binds `[daemon] listen`.
pub async fn run(
    cfg: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_cycle: impl FnMut(&CycleReport) + Send,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.daemon.listen)
        .await
        .with_context(|| format!("could not listen on {}", cfg.daemon.listen))?;
    run_with_listener(cfg, opts, listener, shutdown, on_cycle).await
}

/// [`run`] on a listener the caller bound (tests bind port 0 and read `local_addr`); binds
/// `[webhooks] listen` when the section is there.
pub async fn run_with_listener(
    cfg: Config,
    opts: RunOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_cycle: impl FnMut(&CycleReport) + Send,
) -> anyhow::Result<()> {
    let webhooks = match &cfg.webhooks {
        Some(w) => Some(
            tokio::net::TcpListener::bind(w.listen)
                .await
                .with_context(|| format!("could not listen for webhooks on {}", w.listen))?,
        ),
        None => None,
    };
    run_with_listeners(cfg, opts, listener, webhooks, shutdown, on_cycle).await
}

/// [`run_with_listener`] with the webhook listener bound by the caller too (used only when the
/// config has `[webhooks]`).
pub async fn run_with_listeners(
    cfg: Config,
    opts: RunOptions,
    listener: tokio::net::TcpListener,
    webhook_listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut on_cycle: impl FnMut(&CycleReport) + Send,
) -> anyhow::Result<()> {
    let shutdown = ShutdownSignal::from_future(shutdown);
    warn_if_empty_database(&cfg.daemon.database);
    let holder = lease_holder_id();
    // On PostgreSQL, what only the leader writes is written only while this instance holds
    // the lease: a cycle or send still in flight when it passed to another writes nothing.
    let store = Store::connect_with(&cfg.daemon.database, opts.busy_timeout)
        .await
        .context("could not open the database")?
        .fenced(LEADER, &holder);
    // What outlives every configuration; the runtime is what one configuration makes of it.
    let ground = Ground {
        store: store.clone(),
        metrics: Arc::new(Metrics::new()),
        mail_wake: Arc::new(tokio::sync::Notify::new()),
        memory: SourceMemory::default(),
        retry: opts.retry,
    };
    let metrics = ground.metrics.clone();
    // A pair on PostgreSQL elects its leader through a lease; one SQLite daemon always leads.
    let pair = store.dialect().is_postgres();
    let leadership = Leadership::new(!pair);
    let lease_alive = Arc::new(std::sync::atomic::AtomicU64::new(unix_now()));
    let lease_ttl = cfg.daemon.leader_lease;
    if !pair {
        metrics.leader.set(1);
    }
    // A standby exports no fleet series: only the leader's count.
    metrics.export_fleet(!pair);
    let runtime = SharedRuntime::new(Runtime::build(cfg, &ground)?);
    let first = runtime.current();
    let poll_now = Arc::new(tokio::sync::Notify::new());
    let lease = pair.then(|| {
        tokio::spawn(lease_loop(LeaseLoop {
            store: store.clone(),
            holder: holder.clone(),
            ttl: lease_ttl,
            leadership: leadership.clone(),
            metrics: metrics.clone(),
            alive: lease_alive.clone(),
            shutdown: shutdown.clone(),
        }))
    });
    if leadership.is_leader() {
        first.poller.sync_metrics().await;
    }
    let stats = Arc::new(CycleStats::default());
    let addr = listener.local_addr().ok();
    let targets = count_targets(&first.config);
    tracing::info!(
        database = %first.config.daemon.database,
        schedule = %first.config.daemon.poll_schedule.expr,
        listen = ?addr,
        sources = ?first.poller.source_names(),
        "waba-monitor started"
    );
    let http = tokio::spawn(http::serve(
        listener,
        http::AppState {
            store: store.clone(),
            metrics: metrics.clone(),
            stats: stats.clone(),
            runtime: runtime.clone(),
            leadership: leadership.clone(),
        },
        opts.http,
        shutdown.clone(),
    ));
    // A new webhook delivery wakes its processing; a fact it changes asks for a cycle now.
    let webhook_stored = Arc::new(tokio::sync::Notify::new());
    // The webhook receiver on its own listener; its path and listener change at a restart.
    let webhooks = match (&first.config.webhooks, webhook_listener) {
        (Some(w), Some(l)) => Some(tokio::spawn(http::webhooks::serve(
            l,
            w.path.clone(),
            http::webhooks::WebhookState {
                intake: http::webhooks::Intake::start(store.clone(), metrics.clone()),
                metrics: metrics.clone(),
                runtime: runtime.clone(),
                stored: webhook_stored.clone(),
            },
            opts.http,
            shutdown.clone(),
        ))),
        _ => None,
    };
    // Stored deliveries become facts, history and alerts within a tick of their 200.
    let webhook_worker = webhooks.as_ref().map(|_| {
        tokio::spawn(webhook_loop(
            runtime.clone(),
            leadership.clone(),
            opts.webhook_tick,
            webhook_stored.clone(),
            poll_now.clone(),
            shutdown.clone(),
        ))
    });
    // Subscribed before the first look, so that a lease taken in between is heard of.
    let mut leading = leadership.subscribe();
    let mut delivery =
        (*leading.borrow_and_update()).then(|| Delivery::start(&first, &ground, &opts, &shutdown));
    let watchdog = {
        let runtime = runtime.clone();
        let leadership = leadership.clone();
        let alive = lease_alive.clone();
        tokio::spawn(service::watchdog(
            stats.clone(),
            move || runtime.current().progress_window,
            // A standby runs no cycle: it is well while it keeps asking for the lease.
            move || {
                !leadership.is_leader()
                    && unix_now().saturating_sub(alive.load(std::sync::atomic::Ordering::Relaxed))
                        <= 2 * lease_ttl.as_secs()
            },
            shutdown.clone(),
        ))
    };
    let pruning = tokio::spawn(prune_loop(
        leadership.clone(),
        store.clone(),
        first.config.daemon.retention,
        metrics.clone(),
        shutdown.clone(),
    ));

    // SIGHUP: a new runtime from the re-read config and secret files, swapped in whole; a bad
    // config keeps the old one running. The scheduler and the delivery worker hear of a swap.
    let (to_scheduler, reloaded_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (to_delivery, mut swapped_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let reloader = tokio::spawn(reload_loop(
        runtime.clone(),
        ground.clone(),
        to_scheduler,
        to_delivery,
        shutdown.clone(),
    ));
    let delivery_task = {
        let runtime = runtime.clone();
        let ground = ground.clone();
        let opts = opts.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    // A new runtime brings a new mailer (its password file read again): the
                    // worker is restarted with it, whatever changed. The send in progress
                    // finishes first.
                    swapped = swapped_rx.recv() => {
                        if swapped.is_none() {
                            break;
                        }
                        if let Some(mut d) = delivery.take() {
                            d.stop().await;
                            delivery = Some(Delivery::start(&runtime.current(), &ground, &opts, &shutdown));
                        }
                    }
                    // Only the leader sends; a new leader first settles the sends its
                    // predecessor left in flight (the worker does at its start).
                    changed = leading.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let now = *leading.borrow_and_update();
                        match (now, delivery.take()) {
                            (true, None) => {
                                delivery = Some(Delivery::start(&runtime.current(), &ground, &opts, &shutdown));
                            }
                            (false, Some(mut d)) => d.stop().await,
                            (_, d) => delivery = d,
                        }
                    }
                }
            }
            delivery
        })
    };
    drop(first);

    // `[heartbeat]` of the runtime in force, after every cycle; queued, never waited for.
    let heartbeat = Heartbeat::start(metrics.clone());

    service::ready(&format!(
        "polling {targets} configured target(s); first cycle running"
    ));
    let result = scheduler::run(
        runtime.clone(),
        leadership.clone(),
        reloaded_rx,
        poll_now,
        stats,
        shutdown,
        |report| {
            if report.superseded {
                // The lease passed to another instance during the cycle: its heartbeat is
                // the new leader's.
                on_cycle(report);
                return;
            }
            service::status(&status_line(report));
            if let Some(hb) = &runtime.current().config.heartbeat {
                heartbeat.beat(hb, Beat::after(read_anything(report)));
            }
            on_cycle(report);
        },
    )
    .await;
    let grace = runtime.current().config.daemon.shutdown_grace;
    service::stopping();
    reloader.abort();
    let delivery = delivery_task.await.ok().flatten();
    if let Some(d) = delivery {
        // The send in progress finishes; unsent rows stay queued for the next start.
        if tokio::time::timeout(grace, d.join()).await.is_err() {
            tracing::warn!(
                "email delivery did not stop within the shutdown grace; queued mail stays in the outbox"
            );
        }
    }
    match tokio::time::timeout(grace, http).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
        Err(_) => tracing::warn!("HTTP server did not stop within the shutdown grace"),
        _ => {}
    }
    if let Some(webhooks) = webhooks {
        match tokio::time::timeout(grace, webhooks).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "webhook receiver stopped with an error"),
            Err(_) => tracing::warn!("webhook receiver did not stop within the shutdown grace"),
            _ => {}
        }
    }
    if let Some(w) = webhook_worker {
        // A pass in progress commits or rolls back whole; rows left are taken at the next start.
        if tokio::time::timeout(grace, w).await.is_err() {
            tracing::warn!("webhook processing did not stop within the shutdown grace");
        }
    }
    watchdog.abort();
    pruning.abort();
    if let Some(lease) = lease {
        lease.abort();
        // Everything this instance did is committed or abandoned: hand over at once.
        if let Err(e) = store.release_lease(LEADER, &holder).await {
            tracing::warn!(error = %e, "could not release the leader lease; a standby takes over when it lapses");
        }
    }
    store.close().await;
    tracing::info!("waba-monitor stopped");
    result
}

/// Targets listed in the config (businesses expand to more).
fn count_targets(cfg: &Config) -> usize {
    cfg.meta
        .iter()
        .map(|m| m.businesses.len() + m.wabas.len() + m.phone_numbers.len())
        .sum()
}

/// Whether a cycle read anything: it was recorded and at least one source read something
/// (else the heartbeat says `/fail`).
fn read_anything(r: &CycleReport) -> bool {
    r.store_error().is_none()
        && r.sources
            .iter()
            .any(|s| s.outcome != crate::sources::PollOutcome::Failed)
}

/// The one-line STATUS= for systemd.
fn status_line(r: &CycleReport) -> String {
    let numbers: usize = r.sources.iter().map(|s| s.phones).sum();
    let wabas: usize = r.sources.iter().map(|s| s.wabas).sum();
    let failed = r
        .sources
        .iter()
        .filter(|s| s.outcome != crate::sources::PollOutcome::Ok || s.store_error.is_some())
        .count();
    format!(
        "polling {numbers} numbers in {wabas} WABAs, last cycle {} {}",
        r.finished_at.format("%H:%M:%S"),
        if failed == 0 {
            "ok".to_owned()
        } else {
            format!("with {failed} source(s) failing")
        }
    )
}

/// The delivery worker and how to stop it alone (when a reload brings a new runtime).
struct Delivery {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The outbox worker, and `[alertmanager]`'s own worker.
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Delivery {
    /// Starts delivering with the runtime's mailer (email and webhook rows); without
    /// `[email]`, webhook rows only when a route has a `webhook_url`; with `[alertmanager]`, a
    /// worker of its own for its snapshots (a slow SMTP server never holds them up); with none
    /// of these there is nothing to do.
    fn start(
        rt: &Runtime,
        ground: &Ground,
        opts: &RunOptions,
        shutdown: &ShutdownSignal,
    ) -> Delivery {
        let hooks = rt.config.routes.iter().any(|r| r.webhook_url.is_some());
        let deliverer = match (&rt.config.email, &rt.mailer) {
            (Some(email), Some(mailer)) => Some(Deliverer::new(
                ground.store.clone(),
                (**mailer).clone(),
                email,
                opts.email_backoff,
            )),
            _ if hooks => {
                tracing::warn!(
                    "no [email] section: alerts go to the routes' webhook receivers only, nothing is emailed"
                );
                Some(Deliverer::without_mailer(
                    ground.store.clone(),
                    delivery::DEFAULT_WEBHOOK_TIMEOUT,
                    delivery::DEFAULT_WEBHOOK_MAX_AGE,
                    opts.email_backoff,
                ))
            }
            _ => {
                if rt.alertmanager.is_some() {
                    tracing::warn!(
                        "no [email] section: alerts go to [alertmanager] only, nothing is emailed"
                    );
                } else {
                    tracing::warn!(
                        "no [email] section: alerts are logged and recorded, not emailed"
                    );
                }
                None
            }
        };
        let am_worker = rt.alertmanager.as_ref().map(|am| {
            Deliverer::for_alertmanager(
                ground.store.clone(),
                am.clone(),
                delivery::DEFAULT_WEBHOOK_MAX_AGE,
                opts.email_backoff,
            )
            .with_metrics(ground.metrics.clone())
        });
        if deliverer.is_none() && am_worker.is_none() {
            return Delivery {
                stop: None,
                handles: Vec::new(),
            };
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut global = shutdown.clone();
        let own = ShutdownSignal::from_future(async move {
            tokio::select! {
                _ = global.wait() => {}
                _ = stop_rx => {}
            }
        });
        let mut handles = Vec::new();
        if let Some(d) = deliverer {
            let d = d.with_metrics(ground.metrics.clone());
            handles.push(tokio::spawn(d.run(
                ground.mail_wake.clone(),
                own.clone(),
                opts.delivery_tick,
            )));
        }
        if let Some(d) = am_worker {
            // Not woken by cycles (it looks every second): the wake-up stays the outbox
            // worker's.
            handles.push(tokio::spawn(d.run(
                Arc::new(tokio::sync::Notify::new()),
                own,
                opts.delivery_tick,
            )));
        }
        Delivery {
            stop: Some(stop_tx),
            handles,
        }
    }

    async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        for h in self.handles.drain(..) {
            let _ = h.await;
        }
    }

    async fn join(mut self) {
        for h in self.handles.drain(..) {
            let _ = h.await;
        }
    }
}

/// Waits for SIGHUP and swaps in a runtime built from the re-read config. Signals that arrive
/// while a reload runs are folded into one more reload after it.
async fn reload_loop(
    runtime: SharedRuntime,
    ground: Ground,
    to_scheduler: tokio::sync::mpsc::UnboundedSender<()>,
    to_delivery: tokio::sync::mpsc::UnboundedSender<()>,
    mut shutdown: ShutdownSignal,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("could not listen for SIGHUP: reload needs a restart");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            let old = runtime.current();
            tracing::info!(config = %old.config.path.display(), "SIGHUP: reloading the configuration");
            service::reloading();
            match reload(&old, &ground).await {
                Ok(new) => {
                    runtime.swap(new);
                    let _ = to_scheduler.send(());
                    let _ = to_delivery.send(());
                    ground.metrics.config_reload_ok.set(1);
                    tracing::info!("configuration reloaded");
                    service::reloaded("configuration reloaded");
                }
                Err(e) => {
                    ground.metrics.config_reload_ok.set(0);
                    tracing::error!(
                        error = %format!("{e:#}"),
                        "the new configuration was rejected; the previous one stays in force"
                    );
                    service::reloaded(
                        "the new configuration was rejected; the previous one stays in force",
                    );
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (runtime, ground, to_scheduler, to_delivery);
        shutdown.wait().await;
    }
}

/// Builds the runtime of the config file as it is now (secrets read again), or says why not.
async fn reload(old: &Runtime, ground: &Ground) -> anyhow::Result<Runtime> {
    let path = old.config.path.clone();
    let cfg = tokio::task::spawn_blocking(move || Config::load_for_start(&path))
        .await
        .context("reading the configuration did not finish")?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (what, changed) in [
        (
            "database",
            cfg.daemon.database != old.config.daemon.database,
        ),
        ("listen", cfg.daemon.listen != old.config.daemon.listen),
        (
            "webhooks.listen/path",
            cfg.webhooks.as_ref().map(|w| (w.listen, &w.path))
                != old.config.webhooks.as_ref().map(|w| (w.listen, &w.path)),
        ),
    ] {
        if changed {
            tracing::warn!(key = what, "this setting changes only at the next restart");
        }
    }
    Runtime::build(cfg, ground)
}

/// The least time between two cycles a webhook event asks for, so a burst of events cannot
/// spend the quota on back-to-back cycles (the governor would hold targets back anyway).
const REPOLL_GAP: Duration = Duration::from_secs(60);

/// Processes stored webhook deliveries as soon as the receiver stores one, and every `tick`
/// besides (an idle pass is two small reads), with the runtime in force, until shutdown. When
/// a delivery changed what is known of a WABA or number, a cycle runs at once to confirm it
/// (through the quota governor), at most one per [`REPOLL_GAP`].
async fn webhook_loop(
    runtime: SharedRuntime,
    leadership: Leadership,
    tick: Duration,
    stored: Arc<tokio::sync::Notify>,
    poll_now: Arc<tokio::sync::Notify>,
    mut shutdown: ShutdownSignal,
) {
    let mut last_repoll: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = stored.notified() => {}
            _ = tokio::time::sleep(tick) => {}
        }
        if !leadership.is_leader() {
            // Stored here, processed by the leader.
            continue;
        }
        let rt = runtime.current();
        let done = rt.poller.process_webhooks().await;
        if !done.changes.is_empty() && last_repoll.is_none_or(|t| t.elapsed() >= REPOLL_GAP) {
            last_repoll = Some(tokio::time::Instant::now());
            tracing::info!(
                changes = done.changes.len(),
                "webhook events changed what is known: polling now to confirm"
            );
            poll_now.notify_one();
        }
    }
}

/// Prunes history older than `retention` in small batches, hourly, off the poll path.
async fn prune_loop(
    leadership: Leadership,
    store: Store,
    retention: Duration,
    metrics: Arc<Metrics>,
    mut shutdown: ShutdownSignal,
) {
    if retention.is_zero() {
        return;
    }
    loop {
        // A retention longer than the calendar goes back: nothing is old enough to prune.
        let before = crate::timefmt::checked_ago(chrono::Utc::now(), retention)
            .filter(|_| leadership.is_leader());
        let mut total = 0;
        while let Some(before) = before {
            match store.prune_batch(before, 1_000).await {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) if e.is_not_leader() => {
                    tracing::info!("pruning left to the instance that leads now");
                    break;
                }
                Err(e) => {
                    metrics.store_error("prune");
                    tracing::error!(error = %e, "pruning old history failed; will try again");
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        if total > 0 {
            tracing::info!(rows = total, "pruned records older than the retention");
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// This process among the daemons of one database: host, pid and start time, as
/// `pg_stat_activity` and the logs can match it.
fn lease_holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}:{}:{nanos:08x}", std::process::id())
}

struct LeaseLoop {
    store: Store,
    holder: String,
    ttl: Duration,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    /// When the database last answered a lease request (unix seconds).
    alive: Arc<std::sync::atomic::AtomicU64>,
    shutdown: ShutdownSignal,
}

/// Takes or renews the leader lease every third of its time. The leader steps down (stops
/// polling, alerting and sending) when it could not renew for two thirds of the lease, by its
/// own monotonic clock from the start of its last renewal: before the lease can lapse on the
/// database's clock and a standby take it.
async fn lease_loop(mut l: LeaseLoop) {
    let every = l.ttl / 3;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut warned = false;
    loop {
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(every, l.store.try_lease(LEADER, &l.holder, l.ttl)).await {
            Ok(Ok(held)) => {
                l.alive
                    .store(unix_now(), std::sync::atomic::Ordering::Relaxed);
                warned = false;
                match held {
                    Some(term) => {
                        deadline = Some(started + l.ttl - every);
                        if l.leadership.set(true) {
                            l.metrics.export_fleet(true);
                            l.metrics.leader.set(1);
                            l.metrics.leader_transitions.inc();
                            // The scheduler hears of it and runs a cycle at once.
                            tracing::info!(holder = %l.holder, term, "took the leader lease: this instance polls, alerts and sends");
                        }
                    }
                    None => {
                        deadline = None;
                        step_down(&l, "another instance holds the leader lease: standing by");
                    }
                }
            }
            Ok(Err(e)) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "could not take or renew the leader lease");
            }
            Err(_) if !warned => {
                warned = true;
                tracing::warn!(timeout = ?every, "the database did not answer the leader lease request in time");
            }
            _ => {}
        }
        let next = started + every;
        loop {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                deadline = None;
                step_down(
                    &l,
                    "could not renew the leader lease in time: stepped down before it can lapse",
                );
            }
            let wake = deadline.map_or(next, |d| d.min(next));
            tokio::select! {
                _ = l.shutdown.wait() => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= next {
                break;
            }
        }
    }
}

fn step_down(l: &LeaseLoop, why: &str) {
    if l.leadership.set(false) {
        l.metrics.export_fleet(false);
        l.metrics.leader.set(0);
        l.metrics.leader_transitions.inc();
        tracing::warn!(holder = %l.holder, "{why}");
    }
}
