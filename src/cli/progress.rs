//! Progress of long commands (`poll-once`, `backup`) on a terminal: an indicatif line on
//! stderr, redrawn in place. When stderr is not a terminal (a pipe, a file, systemd's journal)
//! the bar is hidden and nothing extra is written, so scripts and logs see only the output.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A spinner with the elapsed time and a message, or a hidden one off a terminal. Nothing is
/// drawn until [`start`] (so an error before the work begins prints alone).
pub fn spinner() -> ProgressBar {
    let Some(target) = terminal() else {
        return ProgressBar::hidden();
    };
    let bar = ProgressBar::with_draw_target(None, target);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}") {
        bar.set_style(style);
    }
    bar
}

/// Starts redrawing `bar` several times a second (a hidden bar stays idle).
pub fn start(bar: &ProgressBar) {
    if !bar.is_hidden() {
        bar.reset_elapsed();
        // Drawn now, not at the ticker's first beat: a quick command still shows it once.
        bar.tick();
        bar.enable_steady_tick(Duration::from_millis(120));
    }
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
    start(&bar);
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

/// Log lines written while `bar` may be drawn: each line goes to stderr with the bar cleared
/// first and redrawn after, so a log line never lands in the middle of the progress line.
pub fn log_writer(bar: &ProgressBar) -> tracing_subscriber::fmt::writer::BoxMakeWriter {
    let bar = bar.clone();
    tracing_subscriber::fmt::writer::BoxMakeWriter::new(move || LogLine {
        bar: bar.clone(),
        buf: Vec::new(),
    })
}

/// One log line, buffered until the subscriber is done with it.
struct LogLine {
    bar: ProgressBar,
    buf: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.bar.suspend(|| {
            // Nowhere to report a failed write of a log line.
            let _ = std::io::stderr().write_all(&buf);
        });
    }
}
