//! The `waba-monitor` binary: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = waba_monitor::cli::Cli::parse();
    waba_monitor::cli::run(cli).await
}
