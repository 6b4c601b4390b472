//! The `waba-monitor` binary: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = waba_monitor::cli::parse();
    waba_monitor::cli::run(cli).await
}
