//! Listeners: accept TCP (optionally TLS) connections and serve HTTP/1.1 and HTTP/2 on them
//! with hyper, with a bound on open connections, the first-head deadline, the framing scanner,
//! bounded head size and header-read timeout, and graceful draining on shutdown. What a
//! request means is the handler's business: the engine-facing listeners serve the proxy, the
//! admin listener the admin API.

mod framing;
pub mod lanes;
mod tls;
mod tunnel;

pub use framing::FramingWatch;

/// What a listener knows of a request beyond the request itself, handed to its handler.
pub struct Arrival {
    /// The framing scanner saw both `Content-Length` and `Transfer-Encoding` in this request's
    /// head on the wire (hyper has resolved the conflict by the time the handler runs).
    pub conflicting_framing: bool,
    /// A `CONNECT` on a listener that opens tunnels: the connection's framing scan (stopped
    /// before the tunnel's 2xx) and its handoff.
    pub tunnel: Option<(Arc<FramingWatch>, Arc<TunnelSeat>)>,
}
pub use lanes::Lanes;
pub use tls::{acceptor, TlsError};
pub use tunnel::{serve_tunnel, Handoff, TunnelSeat};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use framing::{Scanner, ScanningIo};

/// hyper's smallest accepted HTTP/1 read buffer.
const MIN_HTTP1_BUFFER: usize = 8192;

/// A bound socket with the name its logs and errors use.
pub struct BoundListener {
    /// What the listener serves: `engine`, `admin`, `instance:<id>`.
    pub name: String,
    /// The socket.
    pub listener: TcpListener,
    /// The address it is bound to (the real port when the config said 0).
    pub addr: SocketAddr,
}

/// A listener that cannot be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for {name}: {source}")]
pub struct BindError {
    /// The configured address.
    pub addr: SocketAddr,
    /// What the listener is for.
    pub name: String,
    /// The socket error.
    pub source: std::io::Error,
}

/// Binds a listener and logs where it listens.
pub async fn bind(addr: SocketAddr, name: impl Into<String>) -> Result<BoundListener, BindError> {
    let name = name.into();
    let failed = |source| BindError {
        addr,
        name: name.clone(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    tracing::info!(role = %name, addr = %addr, "listening");
    Ok(BoundListener {
        name,
        listener,
        addr,
    })
}

/// Connection-level settings of a listener.
#[derive(Clone)]
pub struct ServeOptions {
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Time a client has to send a whole request head (and finish a TLS handshake).
    pub header_read_timeout: Duration,
    /// TLS, if the listener terminates it.
    pub tls: Option<TlsAcceptor>,
    /// Open connections at most, shared by the listeners given the same semaphore; past it,
    /// new connections wait in the listen backlog.
    pub connections: Arc<Semaphore>,
    /// Whether a `CONNECT` may take its connection over for a tunnel (the engine listener):
    /// each `CONNECT` request then carries the connection's [`TunnelSeat`].
    pub tunnels: bool,
    /// Where accepted connections are served: handed to the lanes in turn, or (`None`) on
    /// the runtime that accepts them.
    pub lanes: Option<Arc<Lanes>>,
}

/// Accepts connections until `shutdown` fires, serving each with `handler`; connections are
/// registered with `graceful` so the caller can drain them.
pub async fn serve<H, F, B>(
    bound: BoundListener,
    options: ServeOptions,
    handler: H,
    graceful: Arc<GracefulShutdown>,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, Arrival) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(MIN_HTTP1_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    loop {
        // A permit per open connection: at the limit, stop accepting (the kernel's backlog
        // holds new connections) rather than failing other listeners for file descriptors.
        let permit = tokio::select! {
            permit = options.connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = bound.listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(role = %bound.name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        // A connection handed to a lane leaves this runtime's reactor for the lane's.
        let accepted = match &options.lanes {
            None => Accepted::Here(stream),
            Some(_) => match stream.into_std() {
                Ok(stream) => Accepted::Handed(stream),
                Err(err) => {
                    tracing::debug!(peer = %peer, error = %err, "connection lost on its way to a lane");
                    continue;
                }
            },
        };
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let handler = handler.clone();
        let tls = options.tls.clone();
        let handshake_timeout = options.header_read_timeout;
        let max_head = options.max_header_bytes.max(MIN_HTTP1_BUFFER);
        // On a listener that opens tunnels, the permit waits in the seat: a tunnel opened on
        // the connection takes it over, and it goes when both are done.
        let (permit, seat) = if options.tunnels {
            let seat = TunnelSeat::new(
                permit,
                graceful.watcher(),
                builder.clone(),
                max_head,
                handshake_timeout,
                peer,
            );
            (None, Some(Arc::new(seat)))
        } else {
            (Some(permit), None)
        };
        let connection = async move {
            let _permit = permit;
            let stream = match accepted.into_stream() {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::debug!(peer = %peer, error = %err, "connection lost on its way to a lane");
                    return;
                }
            };
            let framing = Arc::new(FramingWatch::default());
            let scanner = Scanner::new(max_head, framing.clone());
            let service = service_fn(move |req: Request<Incoming>| {
                // HTTP/1 requests reach the service in order, as the scanner saw them.
                let arrival = Arrival {
                    conflicting_framing: framing.next_request_conflicts(),
                    tunnel: seat
                        .as_ref()
                        .filter(|_| req.method() == Method::CONNECT)
                        .map(|seat| (framing.clone(), seat.clone())),
                };
                handler(req, arrival)
            });
            let result = match tls {
                None => {
                    let io = TokioIo::new(ScanningIo::new(stream, scanner, handshake_timeout));
                    watcher
                        .watch(
                            builder
                                .serve_connection_with_upgrades(io, service)
                                .into_owned(),
                        )
                        .await
                }
                Some(acceptor) => match accept_tls(&acceptor, stream, handshake_timeout).await {
                    Ok(tls) => {
                        let io = TokioIo::new(ScanningIo::new(tls, scanner, handshake_timeout));
                        watcher
                            .watch(
                                builder
                                    .serve_connection_with_upgrades(io, service)
                                    .into_owned(),
                            )
                            .await
                    }
                    Err(err) => {
                        tracing::debug!(peer = %peer, error = %err, "TLS handshake failed");
                        return;
                    }
                },
            };
            if let Err(err) = result {
                tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
            }
        };
        match &options.lanes {
            Some(lanes) => lanes.spawn(connection),
            None => {
                tokio::spawn(connection);
            }
        }
    }
}

/// An accepted connection: registered with this runtime, or unregistered on its way to a lane.
enum Accepted {
    Here(TcpStream),
    Handed(std::net::TcpStream),
}

impl Accepted {
    /// The connection registered with the runtime that serves it (the current one).
    fn into_stream(self) -> std::io::Result<TcpStream> {
        match self {
            Accepted::Here(stream) => Ok(stream),
            Accepted::Handed(stream) => TcpStream::from_std(stream),
        }
    }
}

async fn accept_tls(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("handshake timed out".to_owned()),
    }
}
