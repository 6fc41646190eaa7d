//! `tollgate run`: load, bind, serve, reload on SIGHUP, drain on SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{CliError, LogFormat};
use crate::admin::{self, Admin, Token};
use crate::control::{spawn_boundary_ticker, spawn_license_watcher, spawn_meter_listener, Control};
use crate::proxy::{self, bind, serve, ListenerRole, ServeOptions};

/// Runs the sidecar until SIGTERM or SIGINT.
pub(super) fn run(config_path: &Path, log_format: LogFormat, worker_threads: Option<u16>) -> Result<ExitCode, CliError> {
    init_logging(log_format);
    // One worker thread means one thread: no cross-thread wake-ups between connection tasks.
    let mut builder = match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(threads));
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|err| CliError(format!("cannot start the async runtime: {err}")))?;
    runtime.block_on(serve_until_stopped(config_path))
}

async fn serve_until_stopped(config_path: &Path) -> Result<ExitCode, CliError> {
    let clock = crate::clock::from_env().map_err(CliError)?;
    let (control, meter_events) = Control::start(config_path, clock).map_err(CliError)?;
    let snapshot = control.snapshot();
    let config = &snapshot.config;
    let token = Token::read(&config.admin.token_file).map_err(CliError)?;
    let tls = match &config.server.tls {
        Some(tls) => Some(crate::tls::acceptor(&tls.cert, &tls.key).map_err(CliError)?),
        None => None,
    };
    let options = ServeOptions {
        max_header_bytes: config.server.max_header_bytes,
        header_read_timeout: config.server.header_read_timeout,
        tls,
    };
    let admin_options = ServeOptions {
        tls: None,
        ..options.clone()
    };

    let engine = bind(config.server.listen, ListenerRole::Engine)
        .await
        .map_err(CliError)?;
    let mut dedicated = Vec::new();
    for instance in &config.instances {
        if let Some(addr) = instance.listen {
            let role = ListenerRole::Instance {
                id: instance.id.as_str().into(),
                flow: instance.flow.as_deref().map(Into::into),
            };
            dedicated.push(bind(addr, role).await.map_err(CliError)?);
        }
    }
    let admin_listener = bind(config.admin.listen, ListenerRole::Admin)
        .await
        .map_err(CliError)?;

    let graceful = Arc::new(GracefulShutdown::new());
    let (stop, stopped) = watch::channel(false);
    let mut servers = JoinSet::new();
    let shared = control.shared();
    let proxy_handler = move |role, req| proxy::handle(shared.clone(), role, req);
    for bound in std::iter::once(engine).chain(dedicated) {
        servers.spawn(serve(
            bound,
            options.clone(),
            proxy_handler.clone(),
            graceful.clone(),
            stopped.clone(),
        ));
    }
    let admin_state = Arc::new(Admin::new(control.clone(), token));
    let admin_handler = move |role, req| admin::handle(admin_state.clone(), role, req);
    servers.spawn(serve(
        admin_listener,
        admin_options,
        admin_handler,
        graceful.clone(),
        stopped.clone(),
    ));

    let _watcher = match spawn_license_watcher(control.clone()) {
        Ok(watcher) => Some(watcher),
        Err(err) => {
            tracing::warn!(error = %err, "license directory not watched; use SIGHUP or the admin API to reload");
            None
        }
    };
    spawn_boundary_ticker(control.clone());
    spawn_meter_listener(control.clone(), meter_events);
    control.set_ready();
    tracing::info!(generation = snapshot.generation, "tollgate is ready");
    drop(snapshot);

    wait_for_stop(&control).await.map_err(CliError)?;
    tracing::info!("shutting down: no new connections; draining requests in flight");
    let _ = stop.send(true);
    while servers.join_next().await.is_some() {}
    let grace = control.snapshot().config.server.shutdown_grace;
    match Arc::try_unwrap(graceful) {
        Ok(graceful) => {
            if tokio::time::timeout(grace, graceful.shutdown())
                .await
                .is_err()
            {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "requests still in flight after the grace period were cut off"
                );
            }
        }
        Err(_) => tracing::warn!("connections could not be drained"),
    }
    match control.flush().await {
        Ok(()) => tracing::info!("counts flushed; stopped"),
        Err(err) => tracing::error!(error = %err, "counts could not be flushed at shutdown"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for SIGTERM or SIGINT, reloading the config on every SIGHUP meanwhile.
async fn wait_for_stop(control: &Arc<Control>) -> Result<(), String> {
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|err| format!("cannot handle SIGTERM: {err}"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|err| format!("cannot handle SIGINT: {err}"))?;
    let mut hangup =
        signal(SignalKind::hangup()).map_err(|err| format!("cannot handle SIGHUP: {err}"))?;
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}
