//! `tollgate run`: load, bind, serve, reload on SIGHUP, drain on SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use super::{CliError, LogFormat};
use crate::control::Control;
use crate::server::Lanes;
use crate::sidecar::Sidecar;

/// Runs the sidecar until SIGTERM or SIGINT.
pub(super) fn run(
    config_path: &Path,
    log_format: LogFormat,
    worker_threads: Option<u16>,
    ready_file: Option<&Path>,
) -> Result<ExitCode, CliError> {
    init_logging(log_format);
    let threads = match worker_threads {
        Some(threads) => usize::from(threads),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    // One worker thread means one thread: listeners, connections and everything else on one
    // current-thread runtime. More: the main runtime keeps the listeners, the admin API and
    // background work, and each worker thread is a lane serving the connections handed to it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let lanes = match threads {
        1 => None,
        threads => Some(Arc::new(Lanes::start(threads).map_err(CliError::Runtime)?)),
    };
    let result = runtime.block_on(serve_until_stopped(config_path, ready_file, lanes.clone()));
    if let Some(lanes) = lanes {
        lanes.stop();
    }
    result
}

async fn serve_until_stopped(
    config_path: &Path,
    ready_file: Option<&Path>,
    lanes: Option<Arc<Lanes>>,
) -> Result<ExitCode, CliError> {
    let clock = crate::clock::from_env()?;
    let sidecar = Sidecar::start(config_path, clock, lanes).await?;
    if let Some(path) = ready_file {
        write_ready_file(path, &sidecar.addresses())?;
    }
    wait_for_stop(&sidecar.control).await?;
    sidecar.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Writes the listener addresses as JSON through a temporary file and a rename.
fn write_ready_file(path: &Path, addresses: &serde_json::Value) -> Result<(), CliError> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, addresses.to_string())
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|err| {
            CliError::at(
                path.display(),
                format!("cannot write the ready file: {err}"),
            )
        })
}

/// Waits for SIGTERM or SIGINT, reloading the config on every SIGHUP meanwhile.
async fn wait_for_stop(control: &Arc<Control>) -> Result<(), CliError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(CliError::Runtime)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(CliError::Runtime)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(CliError::Runtime)?;
    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading configuration and licenses");
                control.reload_config().await;
            }
        }
    }
}

/// Logs on stderr, human-readable or JSON; `RUST_LOG` overrides the default level (info).
pub(super) fn init_logging(format: LogFormat) {
    init_logging_at(format, "info");
}

/// Logs on stderr at `default_level` unless `RUST_LOG` says otherwise.
pub(super) fn init_logging_at(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}
