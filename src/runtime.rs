//! What one configuration makes of the daemon — its poller and sources, the API token, the
//! readiness and watchdog window, `stale_after`, the schedule, the email settings — built
//! from a validated [`Config`] and swapped **whole** on SIGHUP.
//!
//! What must outlive a configuration lives in [`Ground`], built once at start: the store, the
//! metrics, the one delivery wake-up, and the sources' memory (quota ledger, throttle pauses,
//! a token Meta rejected) keyed by source name. Secret files are read again by every build.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use tokio::sync::Notify;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::mailer::Mailer;
use crate::poller::Poller;
use crate::retry::RetryPolicy;
use crate::sources::SourceMemory;
use crate::store::Store;

/// What the daemon keeps across configurations.
#[derive(Clone)]
pub struct Ground {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Woken by a cycle that queued email; the delivery worker waits on it, whichever
    /// runtime is in force.
    pub mail_wake: Arc<Notify>,
    pub memory: SourceMemory,
    pub retry: RetryPolicy,
}

/// One configuration, in force.
pub struct Runtime {
    pub config: Config,
    pub poller: Arc<Poller>,
    /// Required as `Authorization: Bearer` on `/api/*` when set.
    pub api_token: Option<Arc<SecretString>>,
    /// How long without a finished cycle still counts as progress (readiness, watchdog):
    /// two schedule intervals plus a cycle's timeout.
    pub progress_window: Duration,
    pub stale_after: u32,
    /// The mailer for `[email]`, built (password read) with this configuration.
    pub mailer: Option<Arc<Mailer>>,
    /// `[webhooks]` secrets, read with this configuration (the receiver reads them per request).
    pub webhooks: Option<Arc<WebhookSecrets>>,
    /// `[alertmanager]` with its credentials read: what the delivery worker posts with.
    pub alertmanager: Option<Arc<crate::notify::alertmanager::Alertmanager>>,
}

/// The app secret (keys the delivery signatures) and the handshake's verify token.
pub struct WebhookSecrets {
    pub app_secret: SecretString,
    pub verify_token: SecretString,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config.path)
            .field("progress_window", &self.progress_window)
            .field("stale_after", &self.stale_after)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds everything `cfg` asks for, reading every secret file again. Either all of it
    /// works or the error says what did not; nothing is swapped in until then.
    pub fn build(cfg: Config, ground: &Ground) -> anyhow::Result<Runtime> {
        let api_token = match &cfg.daemon.api_token {
            Some(src) => Some(Arc::new(
                src.load().context("could not read the status API token")?,
            )),
            None => None,
        };
        let mailer = match &cfg.email {
            Some(email) => Some(Arc::new(
                Mailer::new(email).context("the [email] settings do not work")?,
            )),
            None => None,
        };
        let webhooks = match &cfg.webhooks {
            Some(w) => Some(Arc::new(WebhookSecrets {
                app_secret: w
                    .app_secret
                    .load()
                    .context("could not read the [webhooks] app secret")?,
                verify_token: w
                    .verify_token
                    .load()
                    .context("could not read the [webhooks] verify token")?,
            })),
            None => None,
        };
        let alertmanager = crate::notify::alertmanager::Alertmanager::new(&cfg)
            .context("the [alertmanager] settings do not work")?
            .map(Arc::new);
        let poller = Poller::build(
            &cfg,
            ground.store.clone(),
            ground.retry,
            ground.metrics.clone(),
            ground.mail_wake.clone(),
            &ground.memory,
        )?;
        Ok(Runtime {
            progress_window: progress_window(&cfg),
            stale_after: cfg.daemon.stale_after,
            api_token,
            mailer,
            webhooks,
            alertmanager,
            poller: Arc::new(poller),
            config: cfg,
        })
    }
}

/// How long without a finished cycle still counts as progress: two schedule intervals plus a
/// cycle's timeout.
pub fn progress_window(cfg: &Config) -> Duration {
    let interval = cfg.daemon.poll_schedule.min_interval(chrono::Utc::now());
    interval * 2 + cfg.daemon.cycle_timeout
}

/// The runtime in force, shared by everything that reads it; SIGHUP replaces the `Arc`.
#[derive(Clone)]
pub struct SharedRuntime(Arc<RwLock<Arc<Runtime>>>);

impl SharedRuntime {
    pub fn new(rt: Runtime) -> SharedRuntime {
        SharedRuntime(Arc::new(RwLock::new(Arc::new(rt))))
    }

    /// The runtime in force now. Callers keep the `Arc` for the length of one piece of work
    /// (a cycle, a request), so a swap never changes anything under them.
    pub fn current(&self) -> Arc<Runtime> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `rt` in force, whole.
    pub fn swap(&self, rt: Runtime) -> Arc<Runtime> {
        let rt = Arc::new(rt);
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = rt.clone();
        rt
    }
}
