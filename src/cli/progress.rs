//! Progress of long commands (`poll-once`, `backup`) on a terminal: an indicatif line on
//! stderr, redrawn in place. When stderr is not a terminal (a pipe, a file, systemd's journal)
//! the bar is hidden and nothing extra is written, so scripts and logs see only the output.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A spinner with the elapsed time and a message, or a hidden one off a terminal.
pub fn spinner() -> ProgressBar {
    let Some(target) = terminal() else {
        return ProgressBar::hidden();
    };
    let bar = ProgressBar::with_draw_target(None, target);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A bar over `total` bytes, or a hidden one off a terminal.
pub fn bytes(total: u64) -> ProgressBar {
    let Some(target) = terminal() else {
        return ProgressBar::hidden();
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {bytes}/{total_bytes} {wide_msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// stderr, when it is a terminal.
fn terminal() -> Option<ProgressDrawTarget> {
    std::io::stderr()
        .is_terminal()
        .then(|| ProgressDrawTarget::stderr_with_hz(8))
}

/// The line `poll-once` shows while a cycle runs.
pub fn cycle_message(p: &crate::poller::CycleProgress) -> String {
    if p.recording {
        format!(
            "every source read ({} request(s)); recording the cycle in the database",
            p.requests
        )
    } else {
        format!(
            "polling: {} of {} source(s) read, {} request(s) sent (pages and batches)",
            p.sources_done, p.sources, p.requests
        )
    }
}
