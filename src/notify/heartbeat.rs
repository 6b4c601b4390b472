//! The dead-man heartbeat (`[heartbeat] url`): after every poll cycle that read anything the
//! URL is requested (GET), after a cycle that read nothing `url` + `/fail` — the convention of
//! Healthchecks-style services — so an outside service notices when the monitor itself stops
//! or goes blind.
//!
//! A heartbeat never holds a cycle up: [`Heartbeat::beat`] only queues it, and one worker
//! requests the queued heartbeats in order, each bounded by `[heartbeat] timeout`. A request
//! that fails (unreachable, timed out, not 2xx) is logged with the service's scheme and host
//! only (the URL's path is its key) and counted in `waba_monitor_heartbeat_failures_total`;
//! it is never retried (the next cycle's heartbeat is the retry) and never fatal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use url::Url;

use super::hook;
use crate::config::HeartbeatConfig;
use crate::metrics::Metrics;

/// Heartbeats waiting while one is requested; more (a service slower than the cycles) are
/// skipped and counted as failures.
const QUEUE: usize = 8;

/// What a cycle tells the heartbeat service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The cycle read something: the URL itself.
    Ok,
    /// The cycle read nothing (every source failed, or it could not be recorded): `/fail`.
    Fail,
}

impl Beat {
    /// The beat after a cycle that did (or did not) read anything.
    pub fn after(read_anything: bool) -> Beat {
        if read_anything { Beat::Ok } else { Beat::Fail }
    }

    /// The metric label: `ok` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Beat::Ok => "ok",
            Beat::Fail => "fail",
        }
    }
}

/// The URL requested for `beat`: `base` itself, or `base` with `/fail` appended to its path
/// (query kept: `https://hc-ping.com/<uuid>?rid=1` → `https://hc-ping.com/<uuid>/fail?rid=1`).
pub fn beat_url(base: &Url, beat: Beat) -> Url {
    let mut url = base.clone();
    if beat == Beat::Fail {
        let path = format!("{}/fail", base.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    url
}

/// Requests one heartbeat: `Ok` with the status on a 2xx, else why not (naming the service by
/// scheme and host only). Bounded by `cfg.timeout`, connection to answer.
pub async fn ping(
    client: &reqwest::Client,
    cfg: &HeartbeatConfig,
    beat: Beat,
) -> Result<u16, String> {
    let url = beat_url(&cfg.url, beat);
    let origin = hook::origin(url.as_str());
    let request = client.get(url.clone()).timeout(cfg.timeout).send();
    match tokio::time::timeout(cfg.timeout, request).await {
        Err(_) => Err(no_answer(&origin, cfg.timeout)),
        Ok(Err(e)) if e.is_timeout() => Err(no_answer(&origin, cfg.timeout)),
        Ok(Err(e)) => {
            let text = hook::error_text(e);
            Err(format!(
                "{origin}: {}",
                hook::scrub(&hook::scrub(&text, url.as_str()), cfg.url.as_str())
            ))
        }
        Ok(Ok(resp)) if resp.status().is_success() => Ok(resp.status().as_u16()),
        Ok(Ok(resp)) => Err(format!("HTTP {} from {origin}", resp.status())),
    }
}

fn no_answer(origin: &str, timeout: Duration) -> String {
    format!(
        "{origin} did not answer within {}",
        crate::timefmt::format_duration(timeout)
    )
}

/// The heartbeat queue of a daemon: cycles queue beats, one worker requests them in order.
#[derive(Clone)]
pub struct Heartbeat {
    tx: mpsc::Sender<(HeartbeatConfig, Beat)>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat").finish_non_exhaustive()
    }
}

impl Heartbeat {
    /// Starts the worker (inside a tokio runtime). It stops once every `Heartbeat` handle is
    /// dropped and the queue is empty.
    pub fn start(metrics: Arc<Metrics>) -> Heartbeat {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(worker(rx, metrics.clone()));
        Heartbeat { tx, metrics }
    }

    /// Queues `beat` for `cfg` (the configuration in force after the cycle); never waits.
    pub fn beat(&self, cfg: &HeartbeatConfig, beat: Beat) {
        if self.tx.try_send((cfg.clone(), beat)).is_err() {
            self.metrics.heartbeat_failures.inc();
            tracing::warn!(
                heartbeat = %hook::origin(cfg.url.as_str()),
                signal = beat.as_str(),
                "heartbeat skipped: earlier heartbeats are still waiting for the heartbeat service"
            );
        }
    }
}

async fn worker(mut rx: mpsc::Receiver<(HeartbeatConfig, Beat)>, metrics: Arc<Metrics>) {
    let client = match reqwest::Client::builder()
        .user_agent(concat!("waba-monitor/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e.without_url(), "could not set up the HTTP client for the heartbeat; no heartbeat is sent");
            while rx.recv().await.is_some() {
                metrics.heartbeat_failures.inc();
            }
            return;
        }
    };
    while let Some((cfg, beat)) = rx.recv().await {
        let origin = hook::origin(cfg.url.as_str());
        match ping(&client, &cfg, beat).await {
            Ok(status) => {
                metrics.heartbeat_sent(beat.as_str());
                tracing::debug!(heartbeat = %origin, signal = beat.as_str(), status, "heartbeat sent");
            }
            Err(e) => {
                metrics.heartbeat_failures.inc();
                tracing::warn!(
                    heartbeat = %origin,
                    signal = beat.as_str(),
                    error = %e,
                    "heartbeat request failed (the monitor keeps running; the heartbeat service may report it down)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_is_appended_to_the_path_and_the_query_is_kept() {
        let u = |s: &str| Url::parse(s).expect("url");
        assert_eq!(
            beat_url(&u("https://hc-ping.com/0e2c"), Beat::Ok).as_str(),
            "https://hc-ping.com/0e2c"
        );
        assert_eq!(
            beat_url(&u("https://hc-ping.com/0e2c"), Beat::Fail).as_str(),
            "https://hc-ping.com/0e2c/fail"
        );
        assert_eq!(
            beat_url(&u("https://hc-ping.com/0e2c/"), Beat::Fail).as_str(),
            "https://hc-ping.com/0e2c/fail"
        );
        assert_eq!(
            beat_url(
                &u("https://hc.example.com/ping/key/check?rid=1"),
                Beat::Fail
            )
            .as_str(),
            "https://hc.example.com/ping/key/check/fail?rid=1"
        );
        assert_eq!(
            beat_url(&u("http://127.0.0.1:9/"), Beat::Fail).as_str(),
            "http://127.0.0.1:9/fail"
        );
    }

    #[test]
    fn a_cycle_that_read_nothing_fails() {
        assert_eq!(Beat::after(true), Beat::Ok);
        assert_eq!(Beat::after(false), Beat::Fail);
    }
}
