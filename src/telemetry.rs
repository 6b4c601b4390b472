//! Logging setup, in one place.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp and no colour: journald stamps
//! them itself. `log_format = "json"` emits one JSON object per line for log shippers. `RUST_LOG`
//! overrides the default level (`info`; routine polls log at `debug`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls are ignored), which
/// keeps tests that start several daemons simple.
pub fn init(format: LogFormat) {
    init_with_writer(format, BoxMakeWriter::new(std::io::stderr));
}

/// [`init`] with the lines written through `writer` (still stderr: `poll-once` clears its
/// progress line around each log line). Colour only when stderr is a terminal and `NO_COLOR`
/// is unset or empty.
pub fn init_with_writer(format: LogFormat, writer: BoxMakeWriter) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tokio_cron_scheduler=warn"));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let result = match (format, under_journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Text, true) => builder.without_time().with_ansi(false).try_init(),
        (LogFormat::Text, false) => builder.with_ansi(colour).try_init(),
    };
    // An error only means a subscriber is already installed.
    let _ = result;
}
