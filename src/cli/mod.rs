//! Command-line verbs (docs/cli.md): thin wrappers that parse arguments and call the library.

mod ca_cmd;
mod check;
mod demo;
mod license_cmd;
mod output;
mod run;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The `tollgate` command line.
#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Sidecar that enforces integration-platform licenses inline"
)]
pub struct Cli {
    /// The verb to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar: proxy listeners, admin API, hot swap, graceful shutdown.
    Run {
        /// The tollgate.toml to run.
        #[arg(long)]
        config: PathBuf,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
        /// Worker threads serving engine connections, each a runtime of its own (default: one
        /// per CPU); 1 runs everything on one thread.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        worker_threads: Option<u16>,
        /// Once ready, write the bound listener addresses here as JSON (for scripts and tests;
        /// written atomically, so a reader never sees half of it).
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Validate a configuration and its licenses; print flows, pairs, points and endpoint apps.
    Check {
        /// The tollgate.toml to check.
        #[arg(long)]
        config: PathBuf,
        /// Fleet mode: also connect to Redis (reachability, round trip, clock offset).
        #[arg(long)]
        online: bool,
    },
    /// Print licenses, flows, entitlements and this month's usage from a running sidecar.
    Usage {
        /// The admin API's base URL, e.g. http://127.0.0.1:9901.
        #[arg(long)]
        admin: String,
        /// File holding the admin token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// A self-contained live demonstration on loopback (simulated targets, sidecar, engine).
    Demo {
        /// Time between two records the engine moves (e.g. 50ms).
        #[arg(long, default_value = "50ms", value_parser = parse_pace)]
        pace: std::time::Duration,
    },
    /// Issue, inspect and verify license files.
    #[command(subcommand)]
    License(LicenseCommand),
    /// Make the CA engines trust for HTTPS interception (`server.intercept_ca`).
    #[command(subcommand)]
    Ca(CaCommand),
}

/// `tollgate ca …` verbs for operators.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Write a new CA for HTTPS interception into DIR: ca.pem (for the engine to trust) and
    /// ca.key (mode 0600).
    Init {
        /// Directory to write ca.pem and ca.key into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Replace ca.pem and ca.key where they exist.
        #[arg(long)]
        force: bool,
    },
}

/// How `run` writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event, for log shippers.
    Json,
}

/// `tollgate license …` verbs for issuers and operators.
#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Write a new issuer key pair as issuer.key (PKCS#8) and issuer.pub (SPKI) into DIR.
    Keygen {
        /// Directory to write the key pair into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a license payload (JSON) with an issuer private key.
    Sign {
        /// Issuer private key (PEM, PKCS#8).
        #[arg(long)]
        key: PathBuf,
        /// License payload JSON.
        #[arg(long = "in")]
        input: PathBuf,
        /// License file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a license file's signature against an issuer public key.
    Verify {
        /// Issuer public key (PEM, SubjectPublicKeyInfo).
        #[arg(long = "pub")]
        public_key: PathBuf,
        /// The license file.
        file: PathBuf,
    },
    /// Print a license file's attributes.
    Show {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The license file.
        file: PathBuf,
    },
}

/// A table in the plain ASCII style every verb prints (readable, and easy for scripts to cut).
fn table<const N: usize>(header: [&str; N]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::ASCII_MARKDOWN)
        .set_header(header);
    table
}

/// An error a verb reports to the user as one sentence; the binary exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The sidecar cannot start.
    #[error(transparent)]
    Start(#[from] crate::sidecar::StartError),
    /// The configuration is refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `TOLLGATE_NOW` (test builds) is not an instant.
    #[error(transparent)]
    Clock(#[from] crate::clock::ClockError),
    /// The async runtime or a signal handler cannot be set up.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// What went wrong, said where: the file (or flag) and the reason. The verbs that read
    /// and write user files (license, usage, demo, check) report this way: the sentence is the
    /// product, and the underlying errors come from several crates.
    #[error("{context}: {message}")]
    At {
        /// Usually a file name.
        context: String,
        /// The reason.
        message: String,
    },
}

impl CliError {
    /// Wraps any displayable error, prefixed by what was being done (usually a file name).
    pub fn at(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        CliError::At {
            context: context.to_string(),
            message: err.to_string(),
        }
    }
}

/// Runs one parsed command line; `Ok` carries the exit code for verbs that decide it.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Run {
            config,
            log_format,
            worker_threads,
            ready_file,
        } => run::run(&config, log_format, worker_threads, ready_file.as_deref()),
        Command::Check { config, online } => check::run(&config, online),
        Command::Demo { pace } => demo::run(pace),
        Command::Usage {
            admin,
            token_file,
            json,
        } => usage::run(&admin, token_file.as_deref(), json),
        Command::License(cmd) => match cmd {
            LicenseCommand::Keygen { out } => license_cmd::keygen(&out),
            LicenseCommand::Sign { key, input, out } => license_cmd::sign(&key, &input, &out),
            LicenseCommand::Verify { public_key, file } => license_cmd::verify(&public_key, &file),
            LicenseCommand::Show { json, file } => license_cmd::show(&file, json),
        },
        Command::Ca(CaCommand::Init { out, force }) => ca_cmd::init(&out, force),
    }
}

/// Parses `--pace` (`50ms`, `0s`; at most 400 ms so the demo ends within a minute).
fn parse_pace(text: &str) -> Result<std::time::Duration, String> {
    let pace = humantime::parse_duration(text).map_err(|err| format!("{text:?}: {err}"))?;
    if pace > std::time::Duration::from_millis(400) {
        return Err("at most 400ms, so that the demo ends within a minute".to_owned());
    }
    Ok(pace)
}
