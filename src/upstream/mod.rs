//! Connections to the target systems: a pool of kept-alive connections per upstream
//! (HTTP/1.1 connections driven by the request that holds them, HTTP/2 shared; [`pool`]), TLS
//! with the platform roots plus an optional per-instance CA ([`connect`]), hop-by-hop headers
//! removed both ways, connect and response-head timeouts. Pools live outside every snapshot,
//! so a swap never drops pooled connections.

mod body;
mod connect;
mod pool;
mod response;

pub use body::{EngineBody, EngineBodyError};
pub use response::UpstreamBody;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::Instance;
use connect::{ConnectError, Endpoint};
use pool::{Conn, Pool};

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a request could not be forwarded.
#[derive(Debug)]
pub enum ForwardError {
    /// Connection refused, DNS, TLS or protocol failure: 502.
    Unavailable(String),
    /// No response head within the instance's `response_timeout`: 504.
    Timeout(Duration),
    /// The engine's request body is malformed (400): not the target's fault.
    MalformedBody(String),
    /// The engine stopped sending its request body (408): not the target's fault.
    StalledBody(Duration),
}

/// Why an upstream's client cannot be built from an instance's settings.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// `base_uri` is not an absolute URI (validation normally catches this first).
    #[error("base_uri {uri:?} is not an absolute URI")]
    BaseUri {
        /// The configured URI.
        uri: String,
    },
    /// The instance's `ca_file` cannot be used.
    #[error("ca_file {}: {why}", path.display())]
    CaFile {
        /// The configured file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the client configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A target system: where its requests go and the connections that take them there.
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// `Host` of every request (the authority), built once.
    host: HeaderValue,
    response_timeout: Duration,
    endpoint: Endpoint,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({}://{})", self.scheme, self.authority)
    }
}

/// A connection to send one request on.
enum Connection {
    /// HTTP/1.1, driven by this request; `reused` when it came from the pool.
    H1 { conn: Box<Conn>, reused: bool },
    /// HTTP/2, shared.
    H2(pool::H2Sender),
}

impl Upstream {
    /// The scheme and authority requests go to, e.g. `https://acme.atlassian.net`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// How long the target has for an answer (its head; and a bulk load's whole answer).
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Sends `req` to `path_and_query` (the whole target path, base path included) and waits
    /// for the response head.
    ///
    /// The request body streams; hop-by-hop headers and `strip` (the flow header) are removed.
    pub async fn send(
        &self,
        mut req: Request<EngineBody>,
        path_and_query: String,
        strip: &HeaderName,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
        let path = PathAndQuery::from_maybe_shared(Bytes::from(path_and_query)).map_err(|err| {
            ForwardError::Unavailable(format!("cannot build the upstream URI: {err}"))
        })?;
        let headers = req.headers_mut();
        remove_hop_by_hop(headers);
        headers.remove(strip);
        headers.insert(header::HOST, self.host.clone());
        *req.version_mut() = Version::HTTP_11;
        *req.uri_mut() = Uri::from(path);
        // One level of future for the whole exchange: the request is not moved from future
        // to nested future on its way (a request's future is moved into place every time).
        let exchange = async {
            let mut req = req;
            loop {
                let connection = match self.pool.h2() {
                    Some(h2) => Connection::H2(h2),
                    None => match self.pool.checkout() {
                        Some(conn) => Connection::H1 { conn, reused: true },
                        // Boxed: opening a connection (TLS above all) is a large future that
                        // most requests, served by a pooled connection, never run.
                        None => Box::pin(self.connect()).await?,
                    },
                };
                let (mut conn, reused) = match connection {
                    Connection::H2(mut sender) => {
                        *req.version_mut() = Version::HTTP_2;
                        *req.uri_mut() = self.absolute(req.uri());
                        req.headers_mut().remove(header::HOST);
                        let response = sender
                            .send_request(req)
                            .await
                            .map_err(|err| classify(&err))?;
                        return Ok(response.map(UpstreamBody::shared));
                    }
                    Connection::H1 { conn, reused } => (conn, reused),
                };
                // HTTP/1.1: this task drives the connection until the response head arrives.
                let mut sending = std::pin::pin!(conn.sender.try_send_request(req));
                let sent = std::future::poll_fn(|cx| {
                    conn.drive(cx);
                    sending.as_mut().poll(cx)
                })
                .await;
                match sent {
                    Ok(response) => {
                        let pool = self.pool.clone();
                        return Ok(response.map(|body| UpstreamBody::driven(body, conn, pool)));
                    }
                    // A pooled connection the target closed before the request went out: the
                    // request never reached it, so it goes out again on another connection.
                    Err(mut err) => match err.take_message() {
                        Some(unsent) if reused => req = unsent,
                        _ => return Err(classify(err.error())),
                    },
                }
            }
        };
        let response = tokio::time::timeout(self.response_timeout, exchange)
            .await
            .map_err(|_| ForwardError::Timeout(self.response_timeout))??;
        let (mut parts, body) = response.into_parts();
        // The engine talks to tollgate, not to the target: answer in tollgate's own protocol.
        parts.version = Version::HTTP_11;
        remove_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
    }

    /// Opens a new connection: HTTP/2 when the target chooses it by ALPN (kept for every
    /// request that follows), else HTTP/1.1.
    async fn connect(&self) -> Result<Connection, ForwardError> {
        let connected = self
            .endpoint
            .connect()
            .await
            .map_err(|err: ConnectError| ForwardError::Unavailable(err.to_string()))?;
        let io = TokioIo::new(connected.stream);
        if connected.h2 {
            let (sender, driver) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(|err| classify(&err))?;
            tokio::spawn(async move {
                if let Err(err) = driver.await {
                    tracing::debug!(error = %err, "upstream HTTP/2 connection ended with an error");
                }
            });
            self.pool.set_h2(sender.clone());
            return Ok(Connection::H2(sender));
        }
        let (sender, driver) = http1::handshake(io).await.map_err(|err| classify(&err))?;
        self.pool.start_reaper();
        Ok(Connection::H1 {
            conn: Conn::new(sender, driver),
            reused: false,
        })
    }

    /// The absolute URI of an origin-form one (HTTP/2 carries scheme and authority).
    fn absolute(&self, uri: &Uri) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = uri.path_and_query().cloned();
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }
}

/// The port a scheme implies (443 for https, else 80).
pub fn default_port(scheme: Option<&Scheme>) -> u16 {
    if scheme == Some(&Scheme::HTTPS) {
        443
    } else {
        80
    }
}

/// Tells an engine-body failure from an upstream failure, with the error chain as one line
/// (hyper's top-level message alone says little).
fn classify(err: &hyper::Error) -> ForwardError {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        match cause.downcast_ref::<EngineBodyError>() {
            Some(EngineBodyError::Stalled(after)) => return ForwardError::StalledBody(*after),
            Some(malformed) => return ForwardError::MalformedBody(malformed.to_string()),
            None => {}
        }
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    ForwardError::Unavailable(text)
}

/// Removes the hop-by-hop headers of RFC 9110, section 7.6.1, including those `Connection` names.
///
/// One pass over the names finds which hop-by-hop headers are present (a request usually has
/// none, an answer `Connection: keep-alive`), and only those are looked up and removed; the
/// names `Connection` lists are parsed only where it lists more than `close` or `keep-alive`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(index) = hop_by_hop_index(name) {
            present |= 1 << index;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // HOP_BY_HOP[0] is Connection.
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|token| {
                !token.is_empty()
                    && !token.eq_ignore_ascii_case(b"close")
                    && !token.eq_ignore_ascii_case(b"keep-alive")
            })
            .filter_map(|token| HeaderName::from_bytes(token).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << index) != 0 {
            headers.remove(name);
        }
    }
}

/// The place of a hop-by-hop header in [`HOP_BY_HOP`] (one match on the name's text, which
/// compiles to a switch on its length: cheaper than comparing with each).
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "te" => 1,
        "trailer" => 2,
        "transfer-encoding" => 3,
        "upgrade" => 4,
        "proxy-authenticate" => 5,
        "proxy-authorization" => 6,
        "keep-alive" => 7,
        "proxy-connection" => 8,
        _ => return None,
    })
}

/// The hop-by-hop headers, `Connection` first: the standard ones, `Keep-Alive` (RFC 9112
/// appendix C.2.2) and `Proxy-Connection` (the non-standard `Connection` some clients send
/// to proxies).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Identity of an upstream for reuse across snapshots: same target and settings, same pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct UpstreamKey {
    base_uri: String,
    ca_file: Option<PathBuf>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

/// Upstreams kept across snapshot swaps so that a swap never drops pooled connections.
pub struct UpstreamCache {
    platform_roots: Arc<RootCertStore>,
    /// How many connection lanes serve requests: each upstream keeps idle connections per lane.
    lanes: usize,
    upstreams: HashMap<UpstreamKey, Arc<Upstream>>,
    /// One TLS client setting per set of trusted roots (the platform's, or those plus one
    /// `ca_file`), shared by every upstream trusting them: a `ClientConfig` carries its own
    /// session cache, so one per instance cost megabytes at ten thousand instances.
    tls: HashMap<Option<PathBuf>, Arc<ClientConfig>>,
}

impl UpstreamCache {
    /// A cache trusting the platform's root certificates (loaded once), for requests served
    /// on `lanes` connection lanes (1 without lanes).
    pub fn new(lanes: usize) -> UpstreamCache {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for err in &native.errors {
            tracing::warn!(error = %err, "some platform root certificates could not be loaded");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "platform root certificates loaded");
        UpstreamCache {
            platform_roots: Arc::new(roots),
            lanes,
            upstreams: HashMap::new(),
            tls: HashMap::new(),
        }
    }

    /// The upstream of an instance with a `base_uri` (reused when unchanged).
    pub fn get(&mut self, instance: &Instance) -> Result<Option<Arc<Upstream>>, UpstreamError> {
        let Some(base_uri) = &instance.base_uri else {
            return Ok(None);
        };
        let key = UpstreamKey {
            base_uri: base_uri.clone(),
            ca_file: instance.ca_file.clone(),
            connect_timeout: instance.connect_timeout,
            response_timeout: instance.response_timeout,
        };
        if let Some(upstream) = self.upstreams.get(&key) {
            return Ok(Some(upstream.clone()));
        }
        let upstream = Arc::new(self.build(&key)?);
        self.upstreams.insert(key, upstream.clone());
        Ok(Some(upstream))
    }

    /// Forgets upstreams no snapshot uses any more (their pools close when the last request ends).
    pub fn retain_used(&mut self) {
        self.upstreams
            .retain(|_, upstream| Arc::strong_count(upstream) > 1);
        self.tls.retain(|_, config| Arc::strong_count(config) > 1);
    }

    /// The TLS client setting trusting the platform roots plus `ca_file` (made on first use).
    fn tls_for(&mut self, ca_file: &Option<PathBuf>) -> Result<Arc<ClientConfig>, UpstreamError> {
        if let Some(config) = self.tls.get(ca_file) {
            return Ok(config.clone());
        }
        let roots = match ca_file {
            None => self.platform_roots.clone(),
            Some(path) => Arc::new(self.roots_with(path)?),
        };
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let config = Arc::new(config);
        self.tls.insert(ca_file.clone(), config.clone());
        Ok(config)
    }

    fn build(&mut self, key: &UpstreamKey) -> Result<Upstream, UpstreamError> {
        let not_absolute = || UpstreamError::BaseUri {
            uri: key.base_uri.clone(),
        };
        let uri: Uri = key.base_uri.parse().map_err(|_| not_absolute())?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(not_absolute());
        };
        let tls = match scheme == Scheme::HTTPS {
            true => Some(self.tls_for(&key.ca_file)?),
            false => None,
        };
        let port = authority.port_u16().unwrap_or(default_port(Some(&scheme)));
        let endpoint =
            Endpoint::new(authority.host(), port, key.connect_timeout, tls).map_err(|err| {
                UpstreamError::BaseUri {
                    uri: format!("{}: {err}", key.base_uri),
                }
            })?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| not_absolute())?;
        Ok(Upstream {
            scheme,
            authority,
            host,
            response_timeout: key.response_timeout,
            endpoint,
            pool: Arc::new(Pool::new(POOL_IDLE_TIMEOUT, self.lanes)),
        })
    }
}

impl UpstreamCache {
    /// The platform roots plus the PEM certificates of a `ca_file`.
    fn roots_with(&self, path: &std::path::Path) -> Result<RootCertStore, UpstreamError> {
        let refused = |why: String| UpstreamError::CaFile {
            path: path.to_owned(),
            why,
        };
        let mut roots = (*self.platform_roots).clone();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect())
            .map_err(|err| refused(err.to_string()))?;
        if certs.is_empty() {
            return Err(refused("no PEM certificate in it".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|err| refused(err.to_string()))?;
        }
        Ok(roots)
    }
}

impl std::fmt::Debug for UpstreamCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamCache")
            .field("upstreams", &self.upstreams.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
            ("content-type", "application/json"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        remove_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept", "content-type"]);
    }

    proptest::proptest! {
        /// Whatever the headers and whatever `Connection` lists (any case, spaces, empty
        /// items), no hop-by-hop header and no header `Connection` names survives, and every
        /// other header does, with all its values.
        #[test]
        fn only_hop_by_hop_headers_and_those_listed_are_removed(
            names in proptest::collection::vec("[a-d]{1,2}|keep-alive|te|upgrade|connection|trailer|x-[a-c]", 0..8),
            listed in proptest::collection::vec("[a-dA-D]{1,2}|close|Keep-Alive|x-[a-c]| ", 0..4),
        ) {
            let mut headers = HeaderMap::new();
            for (i, name) in names.iter().enumerate() {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(&i.to_string()).unwrap(),
                );
            }
            if !listed.is_empty() {
                headers.append(header::CONNECTION, HeaderValue::from_str(&listed.join(",")).unwrap());
            }
            let before = headers.clone();
            remove_hop_by_hop(&mut headers);
            let named: Vec<String> = listed.iter().map(|l| l.trim().to_ascii_lowercase()).collect();
            for name in before.keys() {
                let gone = HOP_BY_HOP.contains(name) || named.iter().any(|n| n == name.as_str());
                if gone {
                    proptest::prop_assert!(!headers.contains_key(name), "{} survived", name);
                } else {
                    let kept: Vec<_> = headers.get_all(name).iter().collect();
                    let had: Vec<_> = before.get_all(name).iter().collect();
                    proptest::prop_assert_eq!(kept, had);
                }
            }
        }
    }

    #[tokio::test]
    async fn upstreams_are_reused_until_unused() {
        let mut cache = UpstreamCache::new(1);
        let mut instance = crate::catalog::testing::instance("a", crate::config::Connector::Http);
        instance.base_uri = Some("https://API.example:8443/base/".into());
        let first = cache.get(&instance).unwrap().unwrap();
        let second = cache.get(&instance).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.origin(), "https://API.example:8443");
        drop((first, second));
        cache.retain_used();
        assert!(cache.upstreams.is_empty());
    }

    #[tokio::test]
    async fn upstreams_trusting_the_same_roots_share_one_tls_setting_until_unused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".into()]).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let mut cache = UpstreamCache::new(1);
        let mut held = Vec::new();
        for (id, base_uri, ca_file) in [
            ("a", "https://a.example", None),
            ("b", "HTTPS://b.example:8443", None),
            ("c", "https://c.example", Some(ca_file.clone())),
            ("d", "https://d.example", Some(ca_file)),
            ("e", "http://e.example", None),
        ] {
            let mut instance =
                crate::catalog::testing::instance(id, crate::config::Connector::Http);
            instance.base_uri = Some(base_uri.into());
            instance.ca_file = ca_file;
            held.push(cache.get(&instance).unwrap().unwrap());
        }
        assert_eq!(cache.upstreams.len(), 5);
        assert_eq!(cache.tls.len(), 2, "platform roots, and those plus ca.pem");
        held.truncate(2);
        cache.retain_used();
        assert_eq!(cache.tls.len(), 1, "only the platform roots are still used");
    }
}
