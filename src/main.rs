//! The `waba-monitor` binary: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // First of all: a SIGHUP that arrives while the daemon starts (systemd's reload right after
    // start, a config-management run) must not kill it by the default action. Once tokio has
    // registered the handler it stays for the life of the process; the reload loop listens
    // later.
    waba_monitor::daemon::catch_early_signals();
    let cli = waba_monitor::cli::parse();
    waba_monitor::cli::run(cli).await
}
