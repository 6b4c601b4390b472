//! waba-monitor: watches WhatsApp Business phone numbers and accounts through Meta's Graph API,
//! keeps the history of every change in SQLite.
//!
//! The modules follow the data flow: `sources` talk to remote APIs and produce `model`
//! observations, `store` diffs them against the last known state and records the changes,
//! `poller` runs one cycle over every source and `scheduler` runs cycles on the cron schedule.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod cli;
pub mod config;
pub mod daemon;
#[cfg(feature = "sim")]
pub mod demo;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod output;
pub mod poller;
pub mod redact;
pub mod retry;
pub mod runtime;
pub mod scheduler;
pub mod secrets;
pub mod service;
#[cfg(feature = "sim")]
pub mod sim;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod timefmt;
pub mod webhooks;
