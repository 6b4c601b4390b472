//! The command line: argument definitions and one function per command. `main.rs` only parses
//! and dispatches here, so tests drive the same code the binary runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_PATH, META_QUOTA_PER_WABA_HOUR};
use crate::daemon::{self, RunOptions};
use crate::poller::{CycleReport, Poller};
use crate::retry::RetryPolicy;
use crate::store::{HistoryQuery, Rank, Ranked, StatusFilter, Store};
use crate::telemetry;
use crate::timefmt::{format_duration, parse_duration};

use crate::output::outln;

mod progress;
mod table;

use table::{Cell, Paint, Table};

#[derive(Debug, Parser)]
#[command(
    name = "waba-monitor",
    version,
    about = "Watches WhatsApp Business phone numbers and accounts (quality, status, limits, health) through Meta's Graph API and keeps the history of every change",
    long_about = None
)]
pub struct Cli {
    /// Config file (TOML). See monitor.toml in the source tree for every key.
    #[arg(long, global = true, env = "WABA_MONITOR_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: poll on the schedule until SIGTERM or SIGINT, then stop cleanly.
    Run,
    /// Validate the config and print what it will do and what it will cost in Graph calls.
    /// Exits non-zero, listing every problem with its line and a fix, if the config is invalid.
    CheckConfig,
    /// Poll every source once now, record what changed, and print it. Exits non-zero if any
    /// source (or any target of one) could not be read.
    PollOnce {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the current state of the numbers and WABAs from the database, worst first
    ///
    /// Numbers first, then WABAs, then the templates that stop sends or are at risk. Each
    /// table lists what the alert rules call critical first (BANNED, BLOCKED, FLAGGED, RED,
    /// health BLOCKED...), then warnings (YELLOW, RESTRICTED, health LIMITED...), then the
    /// healthy ones, then those gone from their WABA. Columns for a number: display number,
    /// verified name, id, WABA, source, quality, status, health, messaging limit, SINCE (how
    /// long it has been in its current state) and STALE ("stale": not read by the source's
    /// last `stale_after` polls, the state shown is the last known; "gone": no longer listed).
    /// Filters combine, and apply to --json and --templates too. Colour only on a terminal
    /// (NO_COLOR turns it off).
    #[command(verbatim_doc_comment)]
    Status {
        /// Print a JSON array instead of tables (WABAs, then numbers; see README).
        #[arg(long)]
        json: bool,
        /// List every message template (name, language, status, quality, category) instead
        /// of the numbers and WABAs.
        #[arg(long)]
        templates: bool,
        /// Only this WABA and its numbers (and templates).
        #[arg(long, value_name = "ID")]
        waba: Option<String>,
        /// Only the WABAs of this business portfolio and their numbers.
        #[arg(long, value_name = "ID")]
        business: Option<String>,
        /// Only what this source (a [[meta]] or [[bsp]] name in the config) reported.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Only what is not healthy: what the alert rules rate critical or a warning (gone
        /// targets are left out; with --templates, only templates that stop sends or are at
        /// risk).
        #[arg(long)]
        problems: bool,
    },
    /// Show recorded changes, newest first, with each number's display number and name.
    History(HistoryArgs),
    /// Write a consistent copy of the database to PATH (SQLite `VACUUM INTO`); safe while the
    /// daemon runs.
    Backup {
        /// Where to write the copy; must not exist yet.
        path: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    ///
    /// bash: `waba-monitor completions bash > /etc/bash_completion.d/waba-monitor`;
    /// zsh: into a folder of $fpath as `_waba-monitor`;
    /// fish: `~/.config/fish/completions/waba-monitor.fish`.
    #[command(verbatim_doc_comment)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), generated from this command line's own help
    ///
    /// Read it with `waba-monitor man | man -l -`; install it with
    /// `waba-monitor man > /usr/share/man/man1/waba-monitor.1`. With --dir, one page per
    /// command is written there instead (waba-monitor.1, waba-monitor-status.1, ...).
    #[command(verbatim_doc_comment)]
    Man {
        /// Write every page into this folder instead of printing the main one.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Send a realistic sample alert through the configured SMTP server now, and print whether
    /// the server accepted it or, in plain words, why not.
    TestEmail,
    /// Silence alerts during planned work: while a silence is active, the alerts of what it
    /// matches are recorded (history, metrics) but not sent; when it ends with a target still
    /// bad, one email says so. Silences survive restarts; the running daemon sees them at its
    /// next cycle.
    Silence {
        #[command(subcommand)]
        command: SilenceCommand,
    },
    /// See it work with no Meta account: the whole daemon against a built-in simulated Graph
    /// API on loopback, with a small fleet whose ratings and statuses change every few seconds.
    #[cfg(feature = "sim")]
    Demo {
        /// Folder for the demo's database, config and token file.
        #[arg(long, default_value = "waba-monitor-demo")]
        dir: PathBuf,
        /// Stop by itself after this long (e.g. 30s); default: run until Ctrl-C.
        #[arg(long = "for")]
        run_for: Option<String>,
    },
}

/// The options of `history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only changes of this phone number or WABA: its id, or a number's display number
    /// ("+44 20 7946 0123"; digits are compared, so any spacing works). Unknown: exit 1.
    #[arg(long)]
    pub id: Option<String>,
    /// Only changes of this WABA, its numbers and its templates.
    #[arg(long, value_name = "ID")]
    pub waba: Option<String>,
    /// Only changes of this field: quality_rating, status, health, messaging_limit_tier,
    /// whatsapp_business_manager_messaging_limit, account_review_status, presence...
    #[arg(long, value_name = "NAME")]
    pub field: Option<String>,
    /// Only changes observed within this long ago: 30m, 24h, 7d... (a span longer than
    /// the calendar goes back shows everything)
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many rows.
    #[arg(long, default_value_t = 200)]
    pub limit: u32,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Add a silence; prints its id. It matches a target matching any of the given
    /// --waba/--number/--business/--source (a WABA's silence covers its numbers and templates).
    Add {
        /// A WABA id (repeatable).
        #[arg(long = "waba")]
        wabas: Vec<String>,
        /// A phone-number id (repeatable).
        #[arg(long = "number")]
        numbers: Vec<String>,
        /// A business portfolio id (repeatable).
        #[arg(long = "business")]
        businesses: Vec<String>,
        /// A source name from the config (repeatable).
        #[arg(long = "source")]
        sources: Vec<String>,
        /// How long: 30m, 2h, 1d...
        #[arg(long = "for")]
        duration: String,
        /// Why (kept in the audit trail).
        #[arg(long)]
        comment: String,
        /// Who (default: $SUDO_USER, else $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// Active and pending silences, and those that ended in the last 7 days.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Expire {
        id: i64,
        /// Who (default: $SUDO_USER, else $USER).
        #[arg(long)]
        author: Option<String>,
    },
}

/// Parses the process's command line (exits with clap's message on a bad one). `demo` makes
/// its own config, so its help does not offer the global `--config`.
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The clap command [`parse`] uses.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let command = Cli::command();
    // The demo gets its own hidden `--config` before the global one would be copied into it.
    #[cfg(feature = "sim")]
    let command = command.mut_subcommand("demo", |demo| {
        demo.arg(
            clap::Arg::new("config")
                .long("config")
                .value_name("CONFIG")
                .value_parser(clap::value_parser!(PathBuf))
                .hide(true),
        )
    });
    command
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Run => cmd_run(&cli.config).await,
        Command::CheckConfig => cmd_check_config(&cli.config),
        Command::PollOnce { json } => cmd_poll_once(&cli.config, json).await,
        Command::Status {
            json,
            templates,
            waba,
            business,
            source,
            problems,
        } => {
            let filter = StatusFilter {
                waba,
                business,
                source,
                problems,
            };
            cmd_status(&cli.config, json, templates, &filter).await
        }
        Command::History(args) => cmd_history(&cli.config, args).await,
        Command::Completions { shell } => cmd_completions(shell),
        Command::Man { dir } => cmd_man(dir.as_deref()),
        Command::TestEmail => cmd_test_email(&cli.config).await,
        Command::Silence { command } => cmd_silence(&cli.config, command).await,
        Command::Backup { path } => cmd_backup(&cli.config, &path).await,
        #[cfg(feature = "sim")]
        Command::Demo { dir, run_for } => crate::demo::run(&dir, run_for.as_deref()).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Loads the config or prints every problem; exit code 2 marks a config error.
fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

async fn cmd_run(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    // The same check as `check-config`: every problem, secrets included, before anything
    // starts, with exit 2.
    let cfg = match Config::load_for_start(path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    telemetry::init(cfg.daemon.log_format);
    daemon::run(
        cfg,
        RunOptions::default(),
        daemon::termination_signal(),
        |_| {},
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_check_config(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    // Exactly what `run` needs before it starts: a valid file and every secret it names
    // readable. Anything `run` would refuse is listed here, all at once, with exit 2.
    let cfg = match Config::load_for_start(path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    // The key the database's sealed access tokens need, as `run` checks it at start.
    if let Err(e) = crate::poller::load_secret_key(&cfg) {
        eprintln!("{}: {e:#}", cfg.path.display());
        return Ok(ExitCode::from(2));
    }
    let now = Utc::now();
    let today = now.date_naive();
    let sched = &cfg.daemon.poll_schedule;
    let interval = sched.min_interval(now);
    let cycles = sched.max_cycles_per_hour(now);
    let secret = |src: &crate::secrets::SecretSource| {
        let state = match src.check() {
            Ok(crate::secrets::SecretState::Readable) => "readable".to_owned(),
            Ok(crate::secrets::SecretState::ProvidedBySystemd) => {
                "a systemd credential: the service receives it at start".to_owned()
            }
            Err(e) => format!("not readable: {e}"),
        };
        format!("{} ({state})", src.describe())
    };
    // "12%", "0.2%": whole percents, one decimal below 10 %.
    let percent = |part: u64, whole: u64| {
        let p = part as f64 * 100.0 / whole.max(1) as f64;
        if p >= 10.0 || p.fract() == 0.0 {
            format!("{p:.0}%")
        } else {
            format!("{p:.1}%")
        }
    };
    outln!(
        "{} is valid: `run` would start with it.",
        cfg.path.display()
    );
    outln!("  database:  {}", cfg.daemon.database);
    match &cfg.daemon.api_token {
        Some(src) => outln!(
            "  listen:    {}; /api/* requires the bearer token from {}",
            cfg.daemon.listen,
            secret(src)
        ),
        None => outln!("  listen:    {}", cfg.daemon.listen),
    }
    outln!(
        "  schedule:  \"{}\" (UTC): every {} at the shortest, at most {cycles} cycles in an hour; next at {}",
        sched.expr,
        format_duration(interval),
        sched
            .next_after(now)
            .map(crate::timefmt::rfc3339)
            .unwrap_or_else(|| "never".into())
    );
    let mut warnings = Vec::new();
    for m in &cfg.meta {
        let est = m.estimate(sched, now);
        let budget = u64::from(m.waba_call_budget());
        let end_of_life = match m.api_version.end_of_life() {
            Some(eol) => format!("end of life {eol}"),
            None => "end of life not announced yet".to_owned(),
        };
        outln!(
            "  source \"{}\": Meta Graph API {} ({end_of_life}) at {}; token from {}",
            m.name,
            m.api_version,
            m.graph_url,
            secret(&m.token)
        );
        outln!(
            "    targets: {} business(es) (all their WABAs and numbers), {} WABA(s), {} single number(s)",
            m.businesses.len(),
            m.wabas.len(),
            m.phone_numbers.len()
        );
        outln!(
            "    cost: about {} Graph call(s) in {} request(s) per cycle (plus one per extra page of 100), {} calls/hour",
            est.calls_per_cycle,
            est.requests_per_cycle,
            est.calls_per_cycle * est.cycles_per_hour
        );
        if m.templates {
            let every = match m.templates_every {
                1 => "every cycle".to_owned(),
                n => format!(
                    "every {n} cycles (at most {} times an hour)",
                    est.cycles_per_hour.div_ceil(u64::from(n))
                ),
            };
            outln!(
                "    templates: read {every}, inside each WABA's read (its first 100 templates cost no extra call; each further page of 100 is 1 call charged to the WABA, through the quota governor)"
            );
        } else {
            outln!("    templates: not read (templates = false)");
        }
        let quota_note = if u64::from(m.quota_per_waba_hour) == META_QUOTA_PER_WABA_HOUR {
            ", Meta's default"
        } else {
            ""
        };
        outln!(
            "    quota: {} calls/hour per WABA, {} of the enforced budget of {budget}/h (quota_share {} of quota_per_waba_hour {}{quota_note})",
            est.calls_per_waba_hour,
            percent(est.calls_per_waba_hour, budget),
            m.quota_share,
            m.quota_per_waba_hour
        );
        if let Some(w) = m.api_version.end_of_life_warning(today) {
            warnings.push(format!("source \"{}\": {w}", m.name));
        }
        // Single numbers of one WABA are each charged to it; one number alone cannot share.
        if m.phone_numbers.len() >= 2 && est.worst_calls_per_waba_hour > budget {
            warnings.push(format!(
                "source \"{}\": if its {} single phone_numbers sit on one WABA they cost {} calls/hour against it, over the enforced budget of {budget}/h, and some will be held back: list their WABA under `wabas` instead (one call per cycle for all its numbers)",
                m.name,
                m.phone_numbers.len(),
                est.worst_calls_per_waba_hour
            ));
        }
    }
    for b in &cfg.bsp {
        outln!(
            "  source \"{}\": BSP (kind = \"{}\") at {}; token from {}",
            b.name,
            b.kind,
            b.base_url,
            secret(&b.token)
        );
        outln!(
            "    page size {}: 1 request(s) per cycle per page of {} WABAs (at least 1), at least {cycles} requests/hour{}",
            b.page_size,
            b.page_size,
            b.account_review_status
                .as_ref()
                .map(|s| format!("; only WABAs with accountReviewStatus {s}"))
                .unwrap_or_default()
        );
    }
    match &cfg.email {
        Some(e) => {
            let pw = match &e.password {
                None => "no password".to_owned(),
                Some(src) => format!("password from {}", secret(src)),
            };
            let server = match &e.file_dir {
                Some(dir) => format!("written as .eml files into {}", dir.display()),
                None => format!("{}:{} (tls = \"{}\")", e.smtp_host, e.smtp_port, e.tls),
            };
            outln!(
                "  email: {server}, {pw}; from {} to {}; test it with `waba-monitor test-email`",
                e.from,
                e.to.join(", ")
            );
        }
        None => outln!("  email: none ([email] not configured): alerts are only logged"),
    }
    match &cfg.webhooks {
        Some(w) => outln!(
            "  webhooks: POST/GET {} on {} (behind the TLS proxy); deliveries signed with the app secret from {}; handshake verify token from {}{}",
            w.path,
            w.listen,
            secret(&w.app_secret),
            secret(&w.verify_token),
            w.app_id
                .as_deref()
                .map(|id| format!("; app {id}"))
                .unwrap_or_default()
        ),
        None => outln!("  webhooks: none ([webhooks] not configured): polling only"),
    }
    outln!(
        "  alerts: reminders every {}, resolved notices {}, monitoring blind after {} failed cycle(s)",
        if cfg.alerts.repeat_interval.is_zero() {
            "never".to_owned()
        } else {
            format_duration(cfg.alerts.repeat_interval)
        },
        if cfg.alerts.resolved { "on" } else { "off" },
        cfg.alerts.blind_after
    );
    if let Some(after) = cfg.alerts.escalate_after {
        outln!(
            "  escalation: a critical alert still open after {} is sent once to {}",
            format_duration(after),
            cfg.alerts.escalate_to.join(", ")
        );
    }
    print_routes(&cfg);
    match &cfg.heartbeat {
        Some(h) => outln!(
            "  heartbeat: GET {}://{}/… after every cycle that read anything (…/fail after one that read nothing), timeout {}",
            h.url.scheme(),
            h.url.host_str().unwrap_or("?"),
            format_duration(h.timeout)
        ),
        None => outln!("  heartbeat: none ([heartbeat] not configured)"),
    }
    match &cfg.alertmanager {
        Some(am) => outln!(
            "  alertmanager: every open alert posted to {} ({}), timeout {}",
            am.urls
                .iter()
                .map(|u| crate::notify::hook::origin(u.as_str()))
                .collect::<Vec<_>>()
                .join(", "),
            match &am.auth {
                crate::config::AlertmanagerAuth::None => "no credentials",
                crate::config::AlertmanagerAuth::Basic { .. } => "basic auth",
                crate::config::AlertmanagerAuth::Bearer(_) => "bearer token",
            },
            format_duration(am.timeout)
        ),
        None => outln!("  alertmanager: none ([alertmanager] not configured)"),
    }
    for w in &warnings {
        outln!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The targets the config names (WABAs, numbers, portfolios, BSP sources) and which routes
/// take them; what the portfolios and WABAs hold is only known once polled.
fn print_routes(cfg: &Config) {
    use crate::config::TargetRef;
    if cfg.routes.is_empty() {
        return;
    }
    let mut targets: Vec<(String, TargetRef<'_>)> = Vec::new();
    for m in &cfg.meta {
        for b in &m.businesses {
            targets.push((
                format!("business {b}"),
                TargetRef {
                    business_id: Some(b),
                    source: Some(&m.name),
                    ..TargetRef::default()
                },
            ));
        }
        for w in &m.wabas {
            targets.push((
                format!("WABA {w}"),
                TargetRef {
                    waba_id: Some(w),
                    source: Some(&m.name),
                    ..TargetRef::default()
                },
            ));
        }
        for n in &m.phone_numbers {
            targets.push((
                format!("number {n}"),
                TargetRef {
                    number_id: Some(n),
                    source: Some(&m.name),
                    ..TargetRef::default()
                },
            ));
        }
    }
    for b in &cfg.bsp {
        targets.push((
            format!("source {}", b.name),
            TargetRef {
                source: Some(&b.name),
                ..TargetRef::default()
            },
        ));
    }
    let mut unrouted: Vec<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
    outln!("  routes (tried in order; what none takes goes to [email] to):");
    for r in &cfg.routes {
        let hits: Vec<&str> = targets
            .iter()
            .filter(|(_, t)| r.matches(t))
            .map(|(n, _)| n.as_str())
            .collect();
        unrouted.retain(|n| !hits.contains(n));
        let mut to = Vec::new();
        if !r.email_to.is_empty() {
            to.push(format!("email {}", r.email_to.join(", ")));
        }
        if let Some(u) = &r.webhook_url {
            to.push(format!(
                "webhook {}://{} ({})",
                u.scheme(),
                u.host_str().unwrap_or("?"),
                r.webhook_format.as_str()
            ));
        }
        outln!(
            "    \"{}\"{}: matches {} of the {} configured target(s){}; {} and worse → {}{}",
            r.name,
            r.line.map(|l| format!(" (line {l})")).unwrap_or_default(),
            hits.len(),
            targets.len(),
            if hits.is_empty() {
                String::new()
            } else {
                format!(" ({})", hits.join(", "))
            },
            match r.min_severity {
                crate::config::MinSeverity::Warning => "warning",
                crate::config::MinSeverity::Critical => "critical",
            },
            to.join(" and "),
            if r.continue_ { "; continues" } else { "" }
        );
    }
    if !unrouted.is_empty() {
        outln!(
            "    no route names: {} (their alerts go to [email] to)",
            unrouted.join(", ")
        );
    }
}

/// The database's size with its write-ahead log: about what a backup copies.
fn database_size(db: &std::path::Path) -> u64 {
    let wal = std::path::PathBuf::from(format!("{}-wal", db.display()));
    [db, wal.as_path()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

async fn cmd_backup(config: &std::path::Path, dest: &std::path::Path) -> anyhow::Result<ExitCode> {
    if dest.exists() {
        eprintln!(
            "error: {} exists already; choose a new file name",
            dest.display()
        );
        return Ok(ExitCode::from(2));
    }
    let (cfg, store) = match open_existing_store(config).await {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    // On a terminal, the copy's size against the database's while SQLite writes it.
    let Some(file) = cfg.daemon.database.sqlite_path() else {
        eprintln!(
            "error: backup copies a SQLite database; {} is PostgreSQL: back it up with the server's tools (pg_dump, or your provider's snapshots)",
            cfg.daemon.database
        );
        return Ok(ExitCode::from(2));
    };
    let bar = progress::bytes(database_size(file));
    bar.set_message(format!("writing {}", dest.display()));
    let result = {
        let copy = store.backup(dest);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                r = &mut copy => break r,
                () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                    bar.set_position(std::fs::metadata(dest).map_or(0, |m| m.len()));
                }
            }
        }
    };
    bar.finish_and_clear();
    store.close().await;
    result.with_context(|| format!("could not write the backup to {}", dest.display()))?;
    outln!("backup written to {}", dest.display());
    Ok(ExitCode::SUCCESS)
}

async fn cmd_test_email(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let Some(email) = &cfg.email else {
        eprintln!("error: {} has no [email] section", cfg.path.display());
        return Ok(ExitCode::from(2));
    };
    let mailer = match crate::notify::mailer::Mailer::new(email) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let now = Utc::now();
    let sample = crate::notify::render::AlertItem {
        id: 0,
        created_at: crate::timefmt::rfc3339(now),
        kind: "phone_number".into(),
        target_id: "106540352242922".into(),
        topic: "quality".into(),
        severity: "critical".into(),
        field: "quality_rating".into(),
        old: Some("GREEN".into()),
        new: Some("RED".into()),
        previous_since: Some(crate::timefmt::rfc3339(now - chrono::Duration::days(12))),
        detail: None,
        display_phone_number: Some("+1 555-0100".into()),
        verified_name: Some("Support (TEST)".into()),
        waba_id: Some("102290129340398".into()),
        waba_name: Some("Example WABA".into()),
        health_entities: None,
        template_name: None,
        template_language: None,
        business_id: None,
        source: None,
    };
    // Not the alert's own subject: a test must not trip filters that page on CRITICAL.
    let subject = format!(
        "[waba-monitor] TEST: a sample alert ({} {}); nothing happened",
        sample.target(),
        sample.what()
    );
    let items = [sample];
    let body = format!(
        "This is a test from `waba-monitor test-email`: nothing happened to any number.\n\n{}",
        crate::notify::render::body(&items)
    );
    let html = crate::notify::render::html(&items, email.dashboard_url.as_ref());
    let domain = crate::notify::id_domain(email);
    let mut failed = false;
    // Every address an alert can go to: [email] to and the routes' email_to.
    let mut recipients: Vec<&String> = email.to.iter().collect();
    for r in &cfg.routes {
        for a in &r.email_to {
            if !recipients.contains(&a) {
                recipients.push(a);
            }
        }
    }
    for rcpt in recipients {
        let message_id = format!("<test-{}@{domain}>", now.timestamp_millis());
        let out = crate::notify::mailer::Outgoing {
            recipient: rcpt,
            subject: &subject,
            body: &body,
            message_id: &message_id,
            references: None,
            date: now.into(),
        };
        match mailer.send_with_html(&out, Some(&html)).await {
            Ok(reply) => outln!(
                "sent to {rcpt} through {}:{}: the server accepted it ({reply})",
                email.smtp_host,
                email.smtp_port
            ),
            Err(e) => {
                failed = true;
                let kind = match e {
                    crate::notify::mailer::SendFailure::Permanent(_) => {
                        "refused it for good (a 5xx reply: check the addresses, the sender and the server's relay rules)"
                    }
                    crate::notify::mailer::SendFailure::Transient(_) => {
                        "could not take it now (a 4xx reply, a timeout, a refused connection or a TLS problem: check smtp_host, smtp_port and tls)"
                    }
                };
                outln!(
                    "NOT sent to {rcpt}: {}:{} {kind}. SMTP said: {}",
                    email.smtp_host,
                    email.smtp_port,
                    e.text()
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn cmd_poll_once(path: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    // On a terminal, how far the cycle is (log lines printed around it); nothing when stderr
    // is a pipe or a file.
    let bar = progress::spinner();
    telemetry::init_with_writer(cfg.daemon.log_format, progress::log_writer(&bar));
    crate::daemon::warn_if_empty_database(&cfg.daemon.database);
    let store = Store::connect(&cfg.daemon.database)
        .await
        .context("could not open the database")?;
    let poller = Poller::from_config(&cfg, store.clone(), RetryPolicy::default())?;
    bar.set_message(progress::cycle_message(&poller.progress()));
    progress::start(&bar);
    let report = {
        let cycle = poller.poll_once();
        tokio::pin!(cycle);
        loop {
            bar.set_message(progress::cycle_message(&poller.progress()));
            tokio::select! {
                report = &mut cycle => break report,
                () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            }
        }
    };
    bar.finish_and_clear();
    store.close().await;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report_json(&report))?);
    } else {
        print_report(&report);
    }
    Ok(if report.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The poll report as JSON (also used by the demo's final summary).
pub fn report_json(r: &CycleReport) -> serde_json::Value {
    serde_json::json!({
        "started_at": crate::timefmt::rfc3339(r.started_at),
        "finished_at": crate::timefmt::rfc3339(r.finished_at),
        "sources": r.sources.iter().map(|s| serde_json::json!({
            "source": s.source,
            "outcome": if s.store_error.is_some() { "failed" } else { s.outcome.as_str() },
            "wabas": s.wabas,
            "phone_numbers": s.phones,
            "calls": s.calls,
            "requests": s.requests,
            "anomalies": s.anomalies,
            "deferred": s.deferred,
            "changes": s.changes.iter().map(|c| serde_json::json!({
                "kind": c.kind.as_str(), "id": c.target_id, "field": c.field,
                "old": c.old, "new": c.new,
            })).collect::<Vec<_>>(),
            "failures": s.failures.iter().map(|f| serde_json::json!({
                "kind": f.kind.as_str(), "id": f.id, "class": f.error.class().as_str(),
                "reason": f.error.reason(), "code": f.error.code(), "error": f.error.to_string(),
            })).collect::<Vec<_>>(),
            "store_error": s.store_error,
        })).collect::<Vec<_>>(),
    })
}

fn print_report(r: &CycleReport) {
    for s in &r.sources {
        let outcome = if s.store_error.is_some() {
            "failed"
        } else {
            s.outcome.as_str()
        };
        outln!(
            "source {}: {outcome}: {} WABA(s), {} number(s) read with {} Graph call(s) in {} request(s); {} change(s){}",
            s.source,
            s.wabas,
            s.phones,
            s.calls,
            s.requests,
            s.change_count(),
            if s.deferred > 0 {
                format!(
                    "; {} target(s) held back to stay inside Meta's quota",
                    s.deferred
                )
            } else {
                String::new()
            }
        );
        for c in &s.changes {
            outln!(
                "  {} {} {}: {} -> {}",
                c.kind.as_str(),
                c.target_id,
                c.field,
                c.old.as_deref().unwrap_or("(new)"),
                c.new.as_deref().unwrap_or("-")
            );
        }
        for f in &s.failures {
            outln!(
                "  FAILED {} {}: {} [{}]",
                f.kind.as_str(),
                f.id,
                f.error,
                f.error.class().as_str()
            );
        }
        if let Some(e) = &s.store_error {
            outln!("  FAILED to record: {e}");
        }
    }
}

/// Loads the config and opens its existing database (for the read commands).
/// Who runs the command: the user behind sudo, else the user.
fn whoami(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

async fn cmd_silence(path: &std::path::Path, command: SilenceCommand) -> anyhow::Result<ExitCode> {
    let (_cfg, store) = match open_existing_store(path).await {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let now = Utc::now();
    let code = match command {
        SilenceCommand::Add {
            wabas,
            numbers,
            businesses,
            sources,
            duration,
            comment,
            author,
        } => {
            let matchers = crate::store::silences::Matchers {
                wabas,
                numbers,
                businesses,
                sources,
            };
            match crate::store::silences::validate(&matchers, &duration, &comment) {
                Err(why) => {
                    eprintln!("error: {why}");
                    ExitCode::from(2)
                }
                Ok(span) => {
                    let id = store
                        .add_silence(
                            &matchers,
                            now,
                            now + span,
                            comment.trim(),
                            &whoami(author),
                            now,
                        )
                        .await?;
                    outln!("{id}");
                    ExitCode::SUCCESS
                }
            }
        }
        SilenceCommand::List { json } => {
            let list = store.silences(now, chrono::Duration::days(7)).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                outln!(
                    "{:<5} {:<8} {:<24} {:<24} {:<12} {:<30} COMMENT",
                    "ID",
                    "STATE",
                    "STARTS",
                    "ENDS",
                    "AUTHOR",
                    "MATCHES"
                );
                for s in &list {
                    outln!(
                        "{:<5} {:<8} {:<24} {:<24} {:<12} {:<30} {}",
                        s.id,
                        s.state,
                        s.starts_at,
                        s.expired_at.as_deref().unwrap_or(&s.ends_at),
                        table::truncate(&s.author, 12),
                        table::truncate(&s.matchers.describe(), 30),
                        s.comment
                    );
                }
            }
            ExitCode::SUCCESS
        }
        SilenceCommand::Expire { id, author } => {
            if store.expire_silence(id, &whoami(author), now).await? {
                outln!("silence {id} expired");
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "error: no active or pending silence with id {id} (see `waba-monitor silence list`)"
                );
                ExitCode::from(1)
            }
        }
    };
    store.close().await;
    Ok(code)
}

async fn open_existing_store(path: &std::path::Path) -> Result<(Config, Store), ExitCode> {
    let cfg = load_config(path)?;
    if let Some(file) = cfg.daemon.database.sqlite_path()
        && !file.exists()
    {
        eprintln!(
            "no database at {} yet: run `waba-monitor poll-once` or start the daemon first",
            file.display()
        );
        return Err(ExitCode::from(1));
    }
    match Store::connect(&cfg.daemon.database).await {
        Ok(store) => Ok((cfg, store)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(1))
        }
    }
}

async fn cmd_status(
    path: &std::path::Path,
    json: bool,
    templates: bool,
    filter: &StatusFilter,
) -> anyhow::Result<ExitCode> {
    let (cfg, store) = match open_existing_store(path).await {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let colour = table::colour_on_stdout();
    if templates {
        let all = filtered_templates(&store, filter, filter.problems).await?;
        store.close().await;
        if json {
            outln!("{}", serde_json::to_string_pretty(&all)?);
        } else if all.is_empty() {
            outln!("No template matches{}.", describe_filter(filter));
        } else {
            print_templates(&all, colour);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let view = store
        .status_view(filter, cfg.daemon.stale_after, json)
        .await?;
    let problems = filtered_templates(&store, filter, true).await?;
    store.close().await;
    if json {
        // The documented shape: one array, WABAs first, then numbers.
        let entries: Vec<&crate::store::StatusEntry> = view
            .wabas
            .iter()
            .chain(&view.numbers)
            .map(|r| &r.entry)
            .collect();
        write_json(&entries)?;
        if view.targets_in_database == 0 {
            eprintln!("{}", nothing_read_yet(&cfg));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if view.targets_in_database == 0 {
        outln!("{}", nothing_read_yet(&cfg));
        return Ok(ExitCode::SUCCESS);
    }
    if view.numbers.is_empty() && view.wabas.is_empty() {
        outln!(
            "No number or WABA matches{} ({} in the database; `status` without filters lists them all).",
            describe_filter(filter),
            view.targets_in_database
        );
    }
    let now = Utc::now();
    if !view.numbers.is_empty() {
        print_numbers(&view.numbers, now, colour);
    }
    if !view.wabas.is_empty() {
        if !view.numbers.is_empty() {
            outln!("");
        }
        print_wabas(&view.wabas, now, colour);
    }
    if !problems.is_empty() {
        outln!("");
        outln!(
            "Templates that stop sends or are at risk ({}; `status --templates` lists them all):",
            problems.len()
        );
        print_templates(&problems, colour);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `status` says on a database nothing was read into yet, and what to run.
fn nothing_read_yet(cfg: &Config) -> String {
    let me = crate::output::self_command();
    format!(
        "Nothing has been read into {} yet: no number or WABA is known.\n\
         Run `{me} --config {} poll-once` to read every source now (or start the daemon: \
         `systemctl start waba-monitor`, or `{me} run`), then `status` again. \
         `{me} check-config` shows what the config monitors.",
        cfg.daemon.database,
        cfg.path.display()
    )
}

/// " --waba 1 --problems" style: the filters given, for messages.
fn describe_filter(f: &StatusFilter) -> String {
    let mut out = String::new();
    for (flag, value) in [
        ("--waba", &f.waba),
        ("--business", &f.business),
        ("--source", &f.source),
    ] {
        if let Some(v) = value {
            out.push_str(&format!(" {flag} {v}"));
        }
    }
    if f.problems {
        out.push_str(" --problems");
    }
    out
}

/// The templates `status` shows under `filter`: the WABA in SQL, the source and the
/// portfolio on the (short) list.
async fn filtered_templates(
    store: &Store,
    filter: &StatusFilter,
    problems_only: bool,
) -> anyhow::Result<Vec<crate::store::templates::TemplateRow>> {
    let mut rows = store
        .templates(filter.waba.as_deref(), problems_only)
        .await?;
    if let Some(source) = &filter.source {
        rows.retain(|t| &t.source == source);
    }
    if let Some(business) = &filter.business {
        let wabas = store.wabas_of_business(business).await?;
        rows.retain(|t| wabas.contains(&t.waba_id));
    }
    Ok(rows)
}

/// The paint of a current value by the alert rule table (as if first seen).
fn value_paint(field: &str, value: Option<&str>) -> Paint {
    value.map_or(Paint::Plain, |v| {
        Paint::of(crate::alerts::rules::verdict(field, None, v).map(|v| v.severity)).trouble_only()
    })
}

fn rank_paint(rank: Rank) -> Paint {
    match rank {
        Rank::Critical => Paint::Bad,
        Rank::Warning => Paint::Warn,
        Rank::Ok => Paint::Plain,
        Rank::Gone => Paint::Dim,
    }
}

/// How long ago `at` (RFC 3339) was, in its two largest units: "3d4h", "5h", "12m30s".
fn since(now: chrono::DateTime<Utc>, at: &str) -> String {
    let Some(t) = crate::timefmt::parse_rfc3339(at) else {
        return "-".into();
    };
    let secs = (now - t).num_seconds().max(0).unsigned_abs();
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
    ];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..]
        .iter()
        .take(2)
        .filter(|(n, _)| *n > 0 || first == 3)
        .map(|(n, u)| format!("{n}{u}"))
        .collect()
}

fn stale_cell(e: &crate::store::StatusEntry) -> Cell {
    if !e.present {
        Cell::new("gone", Paint::Dim)
    } else if e.stale {
        Cell::new("stale", Paint::Warn)
    } else {
        Cell::plain("")
    }
}

fn print_numbers(rows: &[Ranked], now: chrono::DateTime<Utc>, colour: bool) {
    use crate::model::field;
    let mut t = Table::new(&[
        ("NUMBER", 20),
        ("NAME", 28),
        ("ID", 20),
        ("WABA", 20),
        ("SOURCE", 16),
        ("QUALITY", 8),
        ("STATUS", 14),
        ("HEALTH", 9),
        ("LIMIT", 15),
        ("SINCE", 7),
        ("STALE", 5),
    ]);
    for r in rows {
        let e = &r.entry;
        t.push(vec![
            Cell::new(
                e.display_phone_number.as_deref().unwrap_or("-"),
                rank_paint(r.rank),
            ),
            Cell::opt(e.verified_name.as_deref(), Paint::Plain),
            Cell::plain(&e.id),
            Cell::opt(e.waba_id.as_deref(), Paint::Plain),
            Cell::plain(&e.source),
            Cell::opt(
                e.quality_rating.as_deref(),
                value_paint(field::QUALITY_RATING, e.quality_rating.as_deref()),
            ),
            Cell::opt(
                e.status.as_deref(),
                value_paint(field::STATUS, e.status.as_deref()),
            ),
            Cell::opt(
                e.health.as_deref(),
                value_paint(field::HEALTH, e.health.as_deref()),
            ),
            Cell::opt(e.messaging_limit.as_deref(), Paint::Plain),
            Cell::plain(since(now, &e.last_changed_at)),
            stale_cell(e),
        ]);
    }
    t.print(colour);
}

fn print_wabas(rows: &[Ranked], now: chrono::DateTime<Utc>, colour: bool) {
    use crate::model::field;
    let mut t = Table::new(&[
        ("WABA", 20),
        ("NAME", 28),
        ("BUSINESS", 20),
        ("SOURCE", 16),
        ("REVIEW", 10),
        ("VERIFICATION", 14),
        ("HEALTH", 9),
        ("LIMIT", 15),
        ("SINCE", 7),
        ("STALE", 5),
    ]);
    for r in rows {
        let e = &r.entry;
        t.push(vec![
            Cell::new(&e.id, rank_paint(r.rank)),
            Cell::opt(e.name.as_deref(), Paint::Plain),
            Cell::opt(e.business_id.as_deref(), Paint::Plain),
            Cell::plain(&e.source),
            Cell::opt(
                e.account_review_status.as_deref(),
                value_paint(
                    field::ACCOUNT_REVIEW_STATUS,
                    e.account_review_status.as_deref(),
                ),
            ),
            Cell::opt(
                e.business_verification_status.as_deref(),
                value_paint(
                    field::BUSINESS_VERIFICATION_STATUS,
                    e.business_verification_status.as_deref(),
                ),
            ),
            Cell::opt(
                e.health.as_deref(),
                value_paint(field::HEALTH, e.health.as_deref()),
            ),
            Cell::opt(e.messaging_limit.as_deref(), Paint::Plain),
            Cell::plain(since(now, &e.last_changed_at)),
            stale_cell(e),
        ]);
    }
    t.print(colour);
}

/// The template table of `status`.
fn print_templates(rows: &[crate::store::templates::TemplateRow], colour: bool) {
    use crate::alerts::rules::template_verdict;
    use crate::model::template_field as tf;
    let paint = |field: &str, v: Option<&str>| {
        v.map_or(Paint::Plain, |v| {
            Paint::of(template_verdict(field, None, v).map(|v| v.severity)).trouble_only()
        })
    };
    let mut t = Table::new(&[
        ("WABA", 20),
        ("TEMPLATE ID", 20),
        ("NAME", 28),
        ("LANG", 8),
        ("STATUS", 15),
        ("QUALITY", 8),
        ("CATEGORY", 15),
        ("LAST CHANGE", 40),
    ]);
    for r in rows {
        t.push(vec![
            Cell::plain(&r.waba_id),
            Cell::plain(&r.id),
            Cell::opt(r.name.as_deref(), Paint::Plain),
            Cell::opt(r.language.as_deref(), Paint::Plain),
            Cell::opt(r.status.as_deref(), paint(tf::STATUS, r.status.as_deref())),
            Cell::opt(
                r.quality.as_deref(),
                paint(tf::QUALITY, r.quality.as_deref()),
            ),
            Cell::opt(r.category.as_deref(), Paint::Plain),
            Cell::plain(format!(
                "{}{}",
                r.last_changed_at,
                if r.present { "" } else { " (deleted)" }
            )),
        ]);
    }
    t.print(colour);
}

async fn cmd_history(path: &std::path::Path, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let HistoryArgs {
        id,
        waba,
        field,
        since,
        limit,
        json,
    } = args;
    let since = match since.as_deref().map(parse_duration) {
        None => None,
        // Further back than time goes: everything.
        Some(Ok(d)) => crate::timefmt::checked_ago(Utc::now(), d),
        Some(Err(e)) => {
            eprintln!("error: --since: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let (_, store) = match open_existing_store(path).await {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let id = match id {
        None => None,
        Some(wanted) => match store.resolve_target(&wanted).await? {
            Some(found) => Some(found),
            None => {
                store.close().await;
                eprintln!(
                    "error: no number or WABA with id or display number \"{wanted}\" in the database (`status` lists them)"
                );
                return Ok(ExitCode::from(1));
            }
        },
    };
    let waba = match waba {
        None => None,
        Some(w) if store.waba_known(&w).await? => Some(w.trim().to_owned()),
        Some(w) => {
            store.close().await;
            eprintln!("error: no WABA with id \"{w}\" in the database (`status` lists them)");
            return Ok(ExitCode::from(1));
        }
    };
    let rows = store
        .history_named(&HistoryQuery {
            id,
            waba,
            field: field.map(|f| f.trim().to_owned()),
            since,
            limit: Some(limit),
        })
        .await?;
    store.close().await;
    if json {
        let entries: Vec<&crate::store::HistoryEntry> = rows.iter().map(|r| &r.entry).collect();
        outln!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        outln!("No recorded change matches.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        ("OBSERVED AT", 24),
        ("KIND", 12),
        ("ID", 20),
        ("NUMBER", 20),
        ("NAME", 28),
        ("FIELD", 42),
        ("OLD", 24),
        ("NEW", 40),
    ]);
    for r in &rows {
        let e = &r.entry;
        let severity = crate::model::TargetKind::parse(&e.kind).and_then(|kind| {
            crate::alerts::rules::verdict_for(kind, &e.field, e.old.as_deref(), e.new.as_deref()?)
        });
        t.push(vec![
            Cell::plain(&e.observed_at),
            Cell::plain(&e.kind),
            Cell::plain(&e.id),
            Cell::opt(r.display_phone_number.as_deref(), Paint::Plain),
            Cell::opt(r.name.as_deref(), Paint::Plain),
            Cell::plain(&e.field),
            Cell::opt(e.old.as_deref(), Paint::Plain),
            Cell::opt(e.new.as_deref(), Paint::of(severity.map(|v| v.severity))),
        ]);
    }
    t.print(table::colour_on_stdout());
    Ok(ExitCode::SUCCESS)
}

/// Writes `value` as pretty JSON to stdout, streamed (100,000 numbers are 100 MB of text,
/// never held whole); a closed stdout ends quietly, as `outln!` does.
fn write_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other.context("could not write the output")?),
    }
}

/// Writes generated text (a completion script, a man page) to stdout as it is.
fn write_raw(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other.context("could not write the output")?),
    }
}

fn cmd_completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut command(), "waba-monitor", &mut buf);
    write_raw(&buf)?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_man(dir: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    match dir {
        Some(dir) => {
            clap_mangen::generate_to(command(), dir)
                .with_context(|| format!("could not write the man pages into {}", dir.display()))?;
            outln!("man pages written to {}", dir.display());
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(command()).render(&mut buf)?;
            write_raw(&buf)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::command().debug_assert();
    }
}
