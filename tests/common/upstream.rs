//! The in-process mock target: an HTTP(S) server on loopback that records every request it
//! receives and answers by path (echo, delays, chosen statuses, hop-by-hop headers), over
//! plain TCP or TLS with a certificate from a fresh rcgen test CA; and a loopback port
//! nothing listens on, for unreachable targets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Request method.
    pub method: String,
    /// Path exactly as received (still percent-encoded).
    pub path: String,
    /// Query exactly as received, if any.
    pub query: Option<String>,
    /// Headers in arrival order, names lowercase.
    pub headers: Vec<(String, String)>,
    /// `HTTP/1.1`, `HTTP/2.0`, …
    pub version: String,
}

impl Seen {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn of<B>(req: &Request<B>) -> Seen {
        Seen {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            headers: req
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            version: format!("{:?}", req.version()),
        }
    }

    fn to_json(&self) -> Value {
        let mut headers = serde_json::Map::new();
        for (name, value) in &self.headers {
            let entry = headers
                .entry(name.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(values) = entry {
                values.push(Value::from(value.clone()));
            }
        }
        json!({
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": headers,
            "version": self.version,
        })
    }
}

/// What an upstream and its connection tasks share.
struct UpstreamState {
    name: String,
    /// `x-upstream: <name>` for every answer.
    name_header: HeaderValue,
    hits: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

impl UpstreamState {
    /// The requests seen so far (a panicking connection task does not hide them).
    fn seen(&self) -> std::sync::MutexGuard<'_, Vec<Seen>> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An in-process HTTP(S) server on `127.0.0.1:0` that records and echoes requests.
///
/// Behaviour by path segment (anywhere in the path, so instance base paths don't matter):
/// - `…/echo` answers 200 with the request body, byte for byte;
/// - `…/slow/{ms}/…` delays the response head by `ms` milliseconds;
/// - `…/status/{code}` answers with that status;
/// - `…/hop-response` adds hop-by-hop headers to its answer;
/// - anything else answers 200 with JSON `{method, path, query, headers, version}`.
///
/// Every answer carries `x-upstream: <name>`. Speaks HTTP/1.1 and HTTP/2 (ALPN on TLS).
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// PEM of the CA that issued its certificate (TLS upstreams only).
    pub ca_pem: Option<String>,
    state: Arc<UpstreamState>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// A plain-HTTP upstream.
    pub async fn plain(name: &str) -> Upstream {
        Upstream::start(name, None, None).await
    }

    /// An HTTPS upstream whose certificate (for `127.0.0.1` and `localhost`) is issued by a
    /// fresh test CA made with rcgen; the CA's PEM is in `ca_pem`.
    pub async fn tls(name: &str) -> Upstream {
        let (ca_pem, acceptor) = test_tls_acceptor();
        Upstream::start(name, Some(acceptor), Some(ca_pem)).await
    }

    async fn start(
        name: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
        ca_pem: Option<String>,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|err| panic!("bind upstream {name} on loopback: {err}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|err| panic!("address of upstream {name}: {err}"));
        let name_header = HeaderValue::from_str(name)
            .unwrap_or_else(|err| panic!("upstream name {name:?} is not a header value: {err}"));
        let state = Arc::new(UpstreamState {
            name: name.to_owned(),
            name_header,
            hits: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(serve_upstream(listener, tls, state.clone()));
        Upstream {
            addr,
            ca_pem,
            state,
            task,
        }
    }

    /// `http://127.0.0.1:port` or `https://127.0.0.1:port`.
    pub fn base_uri(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// How many requests reached it.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Every request that reached it, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen().clone()
    }

    /// The latest request that reached it.
    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("upstream {} saw no request", self.state.name))
    }
}

async fn serve_upstream(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<UpstreamState>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| upstream_answer(req, state.clone()));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}

async fn upstream_answer(
    req: Request<Incoming>,
    state: Arc<UpstreamState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let seen = Seen::of(&req);
    state.hits.fetch_add(1, Ordering::SeqCst);
    state.seen().push(seen.clone());

    let segments: Vec<String> = seen.path.split('/').map(str::to_owned).collect();
    let after = |name: &str| -> Option<&str> {
        segments
            .iter()
            .position(|s| s == name)
            .and_then(|i| segments.get(i + 1))
            .map(String::as_str)
    };
    if let Some(ms) = after("slow").and_then(|ms| ms.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut response = if segments.last().is_some_and(|s| s == "echo") {
        match req.into_body().collect().await {
            Ok(body) => {
                let mut r = Response::new(Full::new(body.to_bytes()));
                r.headers_mut().insert(
                    "content-type",
                    HeaderValue::from_static("application/octet-stream"),
                );
                r
            }
            Err(err) => {
                let mut r = Response::new(Full::new(Bytes::from(format!("body error: {err}"))));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        }
    } else {
        // Drain whatever body there is so the connection stays usable.
        let _ = req.into_body().collect().await;
        let mut r = Response::new(Full::new(Bytes::from(seen.to_json().to_string())));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        r
    };
    if let Some(code) = after("status").and_then(|c| c.parse::<u16>().ok()) {
        if let Ok(status) = StatusCode::from_u16(code) {
            *response.status_mut() = status;
        }
    }
    if segments.iter().any(|s| s == "hop-response") {
        let h = response.headers_mut();
        h.insert("connection", HeaderValue::from_static("x-resp-hop"));
        h.insert("x-resp-hop", HeaderValue::from_static("secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.append("x-multi", HeaderValue::from_static("one"));
        h.append("x-multi", HeaderValue::from_static("two"));
    }
    response
        .headers_mut()
        .insert("x-upstream", state.name_header.clone());
    Ok(response)
}

/// A test CA and a server certificate for `127.0.0.1`/`localhost` it issued.
fn test_tls_acceptor() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate().expect("generate the test CA key");
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).expect("test CA certificate parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tollgate test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params
        .self_signed(&ca_key)
        .expect("self-sign the test CA");

    let leaf_key = KeyPair::generate().expect("generate the upstream's key");
    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("upstream certificate parameters");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params
        .key_usages
        .push(KeyUsagePurpose::DigitalSignature);
    leaf_params
        .extended_key_usages
        .push(ExtendedKeyUsagePurpose::ServerAuth);
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("issue the upstream's certificate");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("rustls' default protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("a TLS server config with the upstream's certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A loopback address nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener
        .local_addr()
        .expect("the address of a bound loopback port")
}
