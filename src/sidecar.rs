//! A running sidecar: the control plane, every listener and a graceful stop. `tollgate run`
//! drives one from signals; `tollgate demo` runs one in-process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::admin::{self, Admin, Token, TokenError};
use crate::clock::Clock;
use crate::control::{Control, ControlError};
use crate::intercept::Leaves;
use crate::proxy::{self, ListenerRole};
use crate::server::{
    acceptor, bind, serve, BindError, BoundListener, Lanes, ServeOptions, TlsError,
};

/// Open admin connections at most (the console, scrapers, scripts: a handful in practice).
const ADMIN_CONNECTIONS: usize = 256;

/// Why a sidecar cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The control plane cannot start (config, licenses' keys, host, store).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The admin token cannot be read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The engine listener's TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener cannot be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The session-ticket key of intercepted tunnels cannot be made.
    #[error("cannot set up TLS session tickets for tunnels: {0}")]
    Tickets(rustls::Error),
}

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
}

/// The listeners of a sidecar, bound but not yet serving.
struct Listeners {
    engine: (BoundListener, Arc<ListenerRole>),
    dedicated: Vec<(BoundListener, Arc<ListenerRole>)>,
    admin: BoundListener,
}

impl Sidecar {
    /// Loads the config, binds every listener and starts serving; ready when it returns.
    /// Engine connections are served on `lanes` when given, else on the calling runtime.
    pub async fn start(
        config_path: &Path,
        clock: Arc<dyn Clock>,
        lanes: Option<Arc<Lanes>>,
    ) -> Result<Sidecar, StartError> {
        let lane_count = lanes.as_ref().map_or(1, |lanes| lanes.count());
        let control = Control::start(config_path, clock, lane_count).await?;
        let snapshot = control.snapshot();
        let config = &snapshot.config;
        let token = Token::read(&config.admin.token_file)?;
        let tls = match &config.server.tls {
            Some(tls) => Some(acceptor(&tls.cert, &tls.key)?),
            None => None,
        };
        let options = ServeOptions {
            max_header_bytes: config.server.max_header_bytes,
            header_read_timeout: config.server.header_read_timeout,
            tls,
            connections: Arc::new(Semaphore::new(config.server.max_connections)),
            tunnels: false,
            lanes,
        };
        // The admin listener has connections of its own: a flood of engine connections must
        // never take the operator's API (or /healthz) down with it.
        let admin_options = ServeOptions {
            tls: None,
            connections: Arc::new(Semaphore::new(ADMIN_CONNECTIONS)),
            lanes: None,
            ..options.clone()
        };
        // Every HTTPS host a tunnel is opened to gets its certificate here, minted once; a
        // reload may turn interception on, so the engine listener always can take tunnels.
        let leaves = Arc::new(Leaves::new().map_err(StartError::Tickets)?);
        let listeners = bind_all(config).await?;
        let (engine, admin_addr) = (listeners.engine.0.addr, listeners.admin.addr);
        let instances = listeners
            .dedicated
            .iter()
            .filter_map(|(bound, role)| match &**role {
                ListenerRole::Instance { id, .. } => Some((id.to_string(), bound.addr)),
                ListenerRole::Engine | ListenerRole::Tunnel { .. } => None,
            })
            .collect();

        let graceful = Arc::new(GracefulShutdown::new());
        let (stop, stopped) = watch::channel(false);
        let mut servers = JoinSet::new();
        let shared = control.shared();
        for (bound, role) in std::iter::once(listeners.engine).chain(listeners.dedicated) {
            let (shared, leaves) = (shared.clone(), leaves.clone());
            let options = ServeOptions {
                tunnels: *role == ListenerRole::Engine,
                ..options.clone()
            };
            let handler = move |req, arrival| {
                proxy::dispatch(shared.clone(), role.clone(), leaves.clone(), req, arrival)
            };
            servers.spawn(serve(
                bound,
                options,
                handler,
                graceful.clone(),
                stopped.clone(),
            ));
        }
        let admin_state = Arc::new(Admin::new(control.clone(), token));
        let admin_handler = move |req, _arrival| admin::handle(admin_state.clone(), req);
        servers.spawn(serve(
            listeners.admin,
            admin_options,
            admin_handler,
            graceful.clone(),
            stopped,
        ));
        control.set_ready();
        tracing::info!(generation = snapshot.generation, "tollgate is ready");
        Ok(Sidecar {
            control,
            engine,
            admin: admin_addr,
            instances,
            stop,
            servers,
            graceful,
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

    /// Stops accepting, drains requests in flight (bounded by `server.shutdown_grace`), waits
    /// for counted exchanges, flushes counts and stops the control plane.
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
        let shared = self.control.shared();
        shared.exchanges.close();
        if tokio::time::timeout(grace, shared.exchanges.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = shared.exchanges.len(),
                "counted exchanges still waiting for their targets after the grace period were cut off"
            );
        }
        match self.control.stop().await {
            Ok(()) => tracing::info!("counts flushed; stopped"),
            Err(err) => tracing::error!(error = %err, "counts could not be flushed at shutdown"),
        }
        // Fleet mode: the last counts go to Redis and the unused leases back to the fleet.
        if let Some(fleet) = &shared.fleet {
            fleet.leave().await;
            fleet.stop();
        }
    }
}

/// Binds the engine listener, the dedicated instance listeners and the admin listener.
async fn bind_all(config: &crate::config::Config) -> Result<Listeners, BindError> {
    let engine_role = Arc::new(ListenerRole::Engine);
    let engine = bind(config.server.listen, engine_role.to_string()).await?;
    let mut dedicated = Vec::new();
    for instance in &config.instances {
        if let Some(addr) = instance.listen {
            let role = Arc::new(ListenerRole::Instance {
                id: instance.id.as_str().into(),
                flow: instance.flow.as_deref().map(Into::into),
            });
            dedicated.push((bind(addr, role.to_string()).await?, role));
        }
    }
    let admin = bind(config.admin.listen, "admin").await?;
    Ok(Listeners {
        engine: (engine, engine_role),
        dedicated,
        admin,
    })
}
