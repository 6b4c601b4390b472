//! What the benchmarks read of their own process from `/proc/self` (Linux), shared by the
//! examples with `#[path = "common/procstat.rs"] mod procstat;`. A file that cannot be read
//! reads as 0.

#![allow(dead_code)] // each benchmark uses what it prints

/// This process's CPU time (user + system), in seconds.
pub fn cpu_seconds() -> f64 {
    // utime + stime in clock ticks (100 per second on Linux), after the `(comm)` field.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A `/proc/self/status` line in kB (`VmRSS:`, `VmHWM:`), as MB.
pub fn proc_status_mb(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resident memory now.
pub fn rss_mb() -> f64 {
    proc_status_mb("VmRSS:")
}

/// The highest resident memory so far.
pub fn peak_rss_mb() -> f64 {
    proc_status_mb("VmHWM:")
}
