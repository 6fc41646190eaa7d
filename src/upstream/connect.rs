//! Opening a connection to a target: TCP within the instance's `connect_timeout` (with
//! `TCP_NODELAY`) and, for `https`, TLS with rustls (the platform roots plus the instance's
//! `ca_file`), offering HTTP/2 and HTTP/1.1 by ALPN.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

/// Where a target listens and how to reach it.
pub(super) struct Endpoint {
    /// The host as a socket address or name takes it (an IPv6 address without brackets).
    host: Box<str>,
    port: u16,
    connect_timeout: Duration,
    /// TLS for `https` targets: the connector and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// A connection to a target: plain (`http`, left) or TLS (`https`, right).
pub(super) type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// A fresh connection and the protocol the target chose.
pub(super) struct Connected {
    /// The connection.
    pub stream: Stream,
    /// Whether the target chose HTTP/2 by ALPN.
    pub h2: bool,
}

/// Why no connection could be opened; one sentence.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    /// TCP: name resolution, refusal, reset.
    #[error("cannot connect: {0}")]
    Tcp(io::Error),
    /// Not connected within `connect_timeout`.
    #[error("no connection within the connect timeout of {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
}

/// Why an endpoint cannot be made from a base URI's host.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a name a TLS certificate can carry")]
pub(super) struct BadServerName(pub String);

impl Endpoint {
    /// The endpoint of `host:port` (`host` as a URI authority has it: an IPv6 address in
    /// brackets), over TLS with `tls` when given.
    pub(super) fn new(
        host: &str,
        port: u16,
        connect_timeout: Duration,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<Endpoint, BadServerName> {
        let host = host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(host);
        let tls = match tls {
            None => None,
            Some(config) => {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|_| BadServerName(host.to_owned()))?;
                Some((TlsConnector::from(config), name))
            }
        };
        Ok(Endpoint {
            host: host.into(),
            port,
            connect_timeout,
            tls,
        })
    }

    /// Opens a connection: TCP within the connect timeout, then TLS for `https` targets.
    pub(super) async fn connect(&self) -> Result<Connected, ConnectError> {
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((&*self.host, self.port)),
        )
        .await
        .map_err(|_| ConnectError::Timeout(self.connect_timeout))?
        .map_err(ConnectError::Tcp)?;
        // Requests and answers are written whole: waiting to coalesce them only adds latency.
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(Connected {
                stream: Either::Left(tcp),
                h2: false,
            });
        };
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(ConnectError::Tls)?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Connected {
            stream: Either::Right(Box::new(tls)),
            h2,
        })
    }
}
