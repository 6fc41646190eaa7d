//! Client pools to the target systems: one pooled hyper client per upstream (HTTP/1.1 and
//! HTTP/2, rustls with the platform roots plus an optional per-instance CA), hop-by-hop
//! headers removed both ways, connect and response-head timeouts. Pools live outside every
//! snapshot, so a swap never drops pooled connections.

mod body;

pub use body::{EngineBody, EngineBodyError};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::Instance;

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

/// A target system: where its requests go and the client pool that takes them there.
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    response_timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, EngineBody>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({}://{})", self.scheme, self.authority)
    }
}

impl Upstream {
    /// How long the target has for an answer (its head; and a bulk load's whole answer).
    pub fn response_timeout(&self) -> std::time::Duration {
        self.response_timeout
    }

    /// The scheme and authority requests go to, e.g. `https://acme.atlassian.net`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
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
    ) -> Result<Response<Incoming>, ForwardError> {
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|err| {
                ForwardError::Unavailable(format!("cannot build the upstream URI: {err}"))
            })?;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        remove_hop_by_hop(headers);
        headers.remove(strip);
        headers.remove(header::HOST);
        let response = tokio::time::timeout(self.response_timeout, self.client.request(req))
            .await
            .map_err(|_| ForwardError::Timeout(self.response_timeout))?
            .map_err(|err| classify_client_error(&err))?;
        let (mut parts, body) = response.into_parts();
        // The engine talks to tollgate, not to the target: answer in tollgate's own protocol.
        parts.version = Version::HTTP_11;
        remove_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
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
fn classify_client_error(err: &hyper_util::client::legacy::Error) -> ForwardError {
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
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

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
    upstreams: HashMap<UpstreamKey, Arc<Upstream>>,
}

impl UpstreamCache {
    /// A cache trusting the platform's root certificates (loaded once).
    pub fn new() -> UpstreamCache {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for err in &native.errors {
            tracing::warn!(error = %err, "some platform root certificates could not be loaded");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "platform root certificates loaded");
        UpstreamCache {
            platform_roots: Arc::new(roots),
            upstreams: HashMap::new(),
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
    }

    fn build(&self, key: &UpstreamKey) -> Result<Upstream, UpstreamError> {
        let not_absolute = || UpstreamError::BaseUri {
            uri: key.base_uri.clone(),
        };
        let uri: Uri = key.base_uri.parse().map_err(|_| not_absolute())?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(not_absolute());
        };
        let roots = match &key.ca_file {
            None => self.platform_roots.clone(),
            Some(path) => Arc::new(self.roots_with(path)?),
        };
        let tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(key.connect_timeout));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(Upstream {
            scheme,
            authority,
            response_timeout: key.response_timeout,
            client,
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

impl Default for UpstreamCache {
    fn default() -> Self {
        UpstreamCache::new()
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

    #[tokio::test]
    async fn upstreams_are_reused_until_unused() {
        let mut cache = UpstreamCache::new();
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
}
