//! Serving the requests inside a `CONNECT` tunnel: once the handler has answered 2xx, the
//! engine's connection becomes a TLS connection that tollgate terminates, and its requests
//! are served like any other connection's: the same head limits and deadlines, the framing
//! scanner over the decrypted bytes, graceful draining, and the connection's place under
//! `server.max_connections`, which the tunnel takes over from the connection it came from.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use rustls::ServerConfig;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;

use super::framing::{FramingWatch, Scanner, ScanningIo};
use super::Arrival;

/// What a tunnel takes over from the connection it is opened on.
pub struct Handoff {
    /// The connection's place under `server.max_connections`.
    permit: OwnedSemaphorePermit,
    /// Registers the tunnel's connection for graceful draining.
    watcher: Watcher,
    builder: Arc<auto::Builder<TokioExecutor>>,
    max_head: usize,
    header_read_timeout: Duration,
    peer: SocketAddr,
}

/// A connection's [`Handoff`], held until a `CONNECT` on it opens a tunnel; the listeners
/// that open tunnels put it in the extensions of each `CONNECT` request.
pub struct TunnelSeat(Mutex<Option<Handoff>>);

impl TunnelSeat {
    pub(super) fn new(
        permit: OwnedSemaphorePermit,
        watcher: Watcher,
        builder: Arc<auto::Builder<TokioExecutor>>,
        max_head: usize,
        header_read_timeout: Duration,
        peer: SocketAddr,
    ) -> TunnelSeat {
        TunnelSeat(Mutex::new(Some(Handoff {
            permit,
            watcher,
            builder,
            max_head,
            header_read_timeout,
            peer,
        })))
    }

    /// Takes the handoff for a tunnel; `None` once a tunnel has it.
    pub fn take(&self) -> Option<Handoff> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Serves a tunnel in a task of its own: waits for hyper to hand over the connection (after
/// the 2xx answer is written), terminates TLS with `tls` within `header_read_timeout`, then
/// serves its requests with `handler`. A failed handshake is logged at debug and closes this
/// tunnel only.
pub fn serve_tunnel<H, F, B>(
    handoff: Handoff,
    upgrade: OnUpgrade,
    tls: Arc<ServerConfig>,
    name: String,
    handler: H,
) where
    H: Fn(Request<Incoming>, Arrival) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        let Handoff {
            permit: _permit,
            watcher,
            builder,
            max_head,
            header_read_timeout,
            peer,
        } = handoff;
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(peer = %peer, tunnel = %name, error = %err, "the connection was not handed over to the tunnel");
                return;
            }
        };
        let acceptor = TlsAcceptor::from(tls);
        let handshake = acceptor.accept(TokioIo::new(upgraded));
        let stream = match tokio::time::timeout(header_read_timeout, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::debug!(peer = %peer, tunnel = %name, error = %err, "TLS handshake inside the tunnel failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, tunnel = %name, "TLS handshake inside the tunnel timed out");
                return;
            }
        };
        let framing = Arc::new(FramingWatch::default());
        let scanner = Scanner::new(max_head, framing.clone());
        let io = TokioIo::new(ScanningIo::new(stream, scanner, header_read_timeout));
        let service = service_fn(move |req: Request<Incoming>| {
            // No tunnel opens inside a tunnel.
            let arrival = Arrival {
                conflicting_framing: framing.next_request_conflicts(),
                tunnel: None,
            };
            handler(req, arrival)
        });
        let connection = builder.serve_connection(io, service).into_owned();
        if let Err(err) = watcher.watch(connection).await {
            tracing::debug!(peer = %peer, tunnel = %name, error = %err, "tunnel ended with an error");
        }
    });
}
