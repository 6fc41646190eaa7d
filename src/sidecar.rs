//! A running sidecar: the control plane, every listener, the background tasks, and a
//! graceful stop. `tollgate run` drives one from signals; `tollgate demo` runs one in-process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::admin::{self, Admin, Token};
use crate::clock::Clock;
use crate::control::{spawn_boundary_ticker, spawn_license_watcher, spawn_meter_listener, Control};
use crate::proxy::{self, bind, serve, ListenerRole, ServeOptions};

/// Open admin connections at most (the console, scrapers, scripts: a handful in practice).
const ADMIN_CONNECTIONS: usize = 256;

/// A started sidecar.
pub struct Sidecar {
    /// The control plane (snapshot, store, changes).
    pub control: Arc<Control>,
    /// Where the engine-facing listener is bound.
    pub engine: SocketAddr,
    /// Where the admin listener is bound.
    pub admin: SocketAddr,
    /// Where each dedicated instance listener is bound, by instance id.
    pub instances: Vec<(String, SocketAddr)>,
    stop: watch::Sender<bool>,
    servers: JoinSet<()>,
    graceful: Arc<GracefulShutdown>,
    /// Kept alive for as long as the license directory is watched.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Sidecar {
    /// Loads the config, binds every listener and starts serving; ready when it returns.
    pub async fn start(config_path: &Path, clock: Arc<dyn Clock>) -> Result<Sidecar, String> {
        let (control, meter_events) = Control::start(config_path, clock)?;
        let snapshot = control.snapshot();
        let config = &snapshot.config;
        let token = Token::read(&config.admin.token_file)?;
        let tls = match &config.server.tls {
            Some(tls) => Some(crate::tls::acceptor(&tls.cert, &tls.key)?),
            None => None,
        };
        let options = ServeOptions {
            max_header_bytes: config.server.max_header_bytes,
            header_read_timeout: config.server.header_read_timeout,
            tls,
            connections: Arc::new(Semaphore::new(config.server.max_connections)),
        };
        // The admin listener has connections of its own: a flood of engine connections must
        // never take the operator's API (or /healthz) down with it.
        let admin_options = ServeOptions {
            tls: None,
            connections: Arc::new(Semaphore::new(ADMIN_CONNECTIONS)),
            ..options.clone()
        };

        let engine = bind(config.server.listen, ListenerRole::Engine).await?;
        let mut dedicated = Vec::new();
        for instance in &config.instances {
            if let Some(addr) = instance.listen {
                let role = ListenerRole::Instance {
                    id: instance.id.as_str().into(),
                    flow: instance.flow.as_deref().map(Into::into),
                };
                dedicated.push(bind(addr, role).await?);
            }
        }
        let admin_listener = bind(config.admin.listen, ListenerRole::Admin).await?;
        let (engine_addr, admin_addr) = (engine.addr, admin_listener.addr);
        let instances = dedicated
            .iter()
            .filter_map(|bound| match &*bound.role {
                ListenerRole::Instance { id, .. } => Some((id.to_string(), bound.addr)),
                _ => None,
            })
            .collect();

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

        let watcher = match spawn_license_watcher(control.clone()) {
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
        Ok(Sidecar {
            control,
            engine: engine_addr,
            admin: admin_addr,
            instances,
            stop,
            servers,
            graceful,
            _watcher: watcher,
        })
    }

    /// The bound listener addresses as `--ready-file` writes them:
    /// `{"engine": "ip:port", "admin": "ip:port", "instances": {"<id>": "ip:port"}, "pid": n}`.
    pub fn addresses(&self) -> serde_json::Value {
        let instances: serde_json::Map<String, serde_json::Value> = self
            .instances
            .iter()
            .map(|(id, addr)| (id.clone(), addr.to_string().into()))
            .collect();
        serde_json::json!({
            "engine": self.engine.to_string(),
            "admin": self.admin.to_string(),
            "instances": instances,
            "pid": std::process::id(),
        })
    }

    /// Stops accepting, drains requests in flight (bounded by `server.shutdown_grace`) and
    /// flushes counts.
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down: no new connections; draining requests in flight");
        let _ = self.stop.send(true);
        while self.servers.join_next().await.is_some() {}
        let grace = self.control.snapshot().config.server.shutdown_grace;
        match Arc::try_unwrap(self.graceful) {
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
        // Counted exchanges whose engine went away still finish and count before the flush.
        let exchanges = &self.control.shared().exchanges;
        exchanges.close();
        if tokio::time::timeout(grace, exchanges.wait()).await.is_err() {
            tracing::warn!(
                in_flight = exchanges.len(),
                "counted exchanges still waiting for their targets after the grace period were cut off"
            );
        }
        match self.control.flush().await {
            Ok(()) => tracing::info!("counts flushed; stopped"),
            Err(err) => tracing::error!(error = %err, "counts could not be flushed at shutdown"),
        }
    }
}
