//! Shared harness for the `tests/proxy_*.rs` suites: the real `tollgate run` binary on
//! loopback, in front of real HTTP upstreams started in-process by the test.
//!
//! Everything here talks to tollgate through its contract only (SPEC §2–§6 and the
//! conventions of issue 3): a config file, signed license files made with
//! `tollgate license sign`, the `listening role=… addr=…` log lines, the engine-facing and
//! dedicated listeners, the admin API, and signals sent by process id.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long tollgate may take to log all its listeners, and then to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound on any single HTTP exchange made by a test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client the tests use towards tollgate (plain HTTP, HTTP/1.1 or h2).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

// ---------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------

/// Polls `check` every 50 ms until it yields `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// License payloads (SPEC §3)
// ---------------------------------------------------------------------------------------

/// A valid, unbound pair license payload for `{a, b}` with `points` points.
pub fn pair_license(id: &str, system_a: &str, system_b: &str, points: u32) -> Value {
    json!({
        "version": 1,
        "id": id,
        "kind": "pair",
        "company": "Acme Corp",
        "registered_to": "Jane Doe",
        "email": "jane@acme.example",
        "start": "2020-01-01T00:00:00Z",
        "expire": "2099-01-01T00:00:00Z",
        "system_a": system_a,
        "system_b": system_b,
        "points": points,
    })
}

/// `payload` with `key` set to `value` (e.g. `start`, `expire`, `bound_to`).
pub fn with(mut payload: Value, key: &str, value: impl Into<Value>) -> Value {
    payload[key] = value.into();
    payload
}

/// An expired pair license.
pub fn expired_pair_license(id: &str, system_a: &str, system_b: &str, points: u32) -> Value {
    let payload = with(
        pair_license(id, system_a, system_b, points),
        "start",
        "2020-01-01T00:00:00Z",
    );
    with(payload, "expire", "2021-01-01T00:00:00Z")
}

/// A pair license that only starts in 2098.
pub fn future_pair_license(id: &str, system_a: &str, system_b: &str, points: u32) -> Value {
    let payload = with(
        pair_license(id, system_a, system_b, points),
        "start",
        "2098-01-01T00:00:00Z",
    );
    with(payload, "expire", "2099-01-01T00:00:00Z")
}

/// Runs the tollgate binary with `args`; panics with its stderr unless it exits 0.
fn tollgate_cli(args: &[&std::ffi::OsStr]) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("run the tollgate binary");
    assert!(
        out.status.success(),
        "tollgate {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An issuer key pair made by `tollgate license keygen`, and signing with it.
pub struct Issuer {
    dir: PathBuf,
    counter: AtomicUsize,
}

impl Issuer {
    /// Writes `issuer.key` and `issuer.pub` into `dir`.
    pub fn new(dir: &Path) -> Issuer {
        std::fs::create_dir_all(dir).unwrap();
        tollgate_cli(&[
            "license".as_ref(),
            "keygen".as_ref(),
            "--out".as_ref(),
            dir.as_os_str(),
        ]);
        Issuer {
            dir: dir.to_owned(),
            counter: AtomicUsize::new(0),
        }
    }

    /// The public key file.
    pub fn public_key(&self) -> PathBuf {
        self.dir.join("issuer.pub")
    }

    /// Signs `payload` with `tollgate license sign`; returns the armored license text.
    pub fn sign(&self, payload: &Value) -> String {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let scratch = self.dir.join("signed");
        std::fs::create_dir_all(&scratch).unwrap();
        let input = scratch.join(format!("payload-{n}.json"));
        let output = scratch.join(format!("license-{n}.lic"));
        std::fs::write(&input, payload.to_string()).unwrap();
        let key = self.dir.join("issuer.key");
        tollgate_cli(&[
            "license".as_ref(),
            "sign".as_ref(),
            "--key".as_ref(),
            key.as_os_str(),
            "--in".as_ref(),
            input.as_os_str(),
            "--out".as_ref(),
            output.as_os_str(),
        ]);
        std::fs::read_to_string(&output).unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Upstreams
// ---------------------------------------------------------------------------------------

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
            entry
                .as_array_mut()
                .unwrap()
                .push(Value::from(value.clone()));
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

struct UpstreamState {
    name: String,
    hits: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState {
            name: name.to_owned(),
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
        self.state.seen.lock().unwrap().clone()
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
    state.seen.lock().unwrap().push(seen.clone());

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
        .insert("x-upstream", HeaderValue::from_str(&state.name).unwrap());
    Ok(response)
}

/// A test CA and a server certificate for `127.0.0.1`/`localhost` it issued.
fn test_tls_acceptor() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tollgate test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
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
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A loopback address nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

/// A whole response as the test client received it.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: StatusCode,
    /// Protocol version of the answer.
    pub version: hyper::Version,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body, collected.
    pub body: Bytes,
}

impl Resp {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", self.text()))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a refusal by the proxy (SPEC §5): status, `application/problem+json`,
    /// `Tollgate-Reason`, the `type` URN and the `status` field. Returns the problem body.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> Value {
        let problem = self.assert_admin_problem(status, code);
        assert_eq!(
            self.header("tollgate-reason"),
            Some(code),
            "Tollgate-Reason header for {code}: {:?}",
            self.headers
        );
        problem
    }

    /// Asserts a problem answer of the admin API (SPEC §6): status,
    /// `application/problem+json`, the `type` URN and the `status` field.
    #[track_caller]
    pub fn assert_admin_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status} {code}, got {} with body {}",
            self.status,
            self.text()
        );
        let content_type = self.header("content-type").unwrap_or("");
        assert!(
            content_type.starts_with("application/problem+json"),
            "content-type {content_type:?} for {code}: {}",
            self.text()
        );
        let problem = self.json();
        assert_eq!(
            problem["type"],
            format!("urn:tollgate:problem:{code}"),
            "{problem}"
        );
        assert_eq!(problem["status"], status, "{problem}");
        assert!(
            problem["title"].is_string(),
            "problem without a title: {problem}"
        );
        problem
    }

    /// Asserts a 200 from upstream `name` and returns what it echoed as JSON.
    #[track_caller]
    pub fn assert_upstream_ok(&self, name: &str) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "expected 200 from upstream {name}, got {}: {}",
            self.status,
            self.text()
        );
        assert_eq!(self.header("x-upstream"), Some(name), "{:?}", self.headers);
        self.json()
    }
}

/// Sends one request with `client` and collects the answer (30 s bound).
pub async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Result<Resp, String> {
    let uri = req.uri().clone();
    let exchange = async {
        let response = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e:?}"))?
            .to_bytes();
        Ok(Resp {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer to {uri} within {REQUEST_TIMEOUT:?}")),
    }
}

/// A plain-HTTP/1.1 client.
pub fn http1_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A client that speaks HTTP/2 with prior knowledge over plain TCP.
pub fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1 over TCP (for malformed input and exact request targets)
// ---------------------------------------------------------------------------------------

/// What came back on a raw connection.
#[derive(Debug)]
pub struct RawResp {
    /// Status of the first response, if a status line arrived.
    pub status: Option<u16>,
    /// The first response's head (status line and headers).
    pub head: String,
    /// The first response's body (de-chunked).
    pub body: Vec<u8>,
    /// Everything received.
    pub bytes: Vec<u8>,
    /// The server closed the connection (EOF or reset) before the deadline.
    pub closed: bool,
}

impl RawResp {
    /// The body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "raw body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    /// A header of the first response (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// How many status lines arrived (to detect a smuggled second response).
    pub fn responses(&self) -> usize {
        String::from_utf8_lossy(&self.bytes)
            .matches("HTTP/1.1 ")
            .count()
    }
}

/// Writes `request` on a fresh connection to `addr` and reads until the server closes the
/// connection or `deadline` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], deadline: Duration) -> RawResp {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(request).await;
    read_raw(&mut stream, deadline).await
}

/// Reads from `stream` until EOF/reset or `deadline`, and parses the first response.
pub async fn read_raw(stream: &mut TcpStream, deadline: Duration) -> RawResp {
    let until = tokio::time::Instant::now() + deadline;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16384];
    let mut closed = false;
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    parse_raw(bytes, closed)
}

fn parse_raw(bytes: Vec<u8>, closed: bool) -> RawResp {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return RawResp {
            status: None,
            head: String::from_utf8_lossy(&bytes).into_owned(),
            body: Vec::new(),
            bytes,
            closed,
        };
    };
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok());
    let mut resp = RawResp {
        status,
        head,
        body: Vec::new(),
        bytes: bytes.clone(),
        closed,
    };
    let rest = &bytes[end + 4..];
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    resp.body = if chunked {
        dechunk(rest)
    } else if let Some(len) = resp
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        rest[..len.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    resp
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_owned();
        let Ok(size) = usize::from_str_radix(&size_text, 16) else {
            return out;
        };
        data = &data[line_end + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size..];
        if data.starts_with(b"\r\n") {
            data = &data[2..];
        }
    }
}

/// A `GET target` request with `Connection: close` and the given extra header lines.
pub fn raw_get(target: &str, headers: &[&str]) -> Vec<u8> {
    let mut text = format!("GET {target} HTTP/1.1\r\nHost: tollgate.test\r\nConnection: close\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

// ---------------------------------------------------------------------------------------
// The sidecar
// ---------------------------------------------------------------------------------------

struct InstanceSpec {
    id: String,
    app: String,
    base_uri: String,
    extra: Vec<String>,
    dedicated: bool,
    flow: Option<String>,
}

/// Builds a scratch directory with keys, token, licenses and a `tollgate.toml`, then starts
/// `tollgate run` on it.
pub struct Builder {
    dir: tempfile::TempDir,
    issuer: Issuer,
    token: String,
    server: Vec<String>,
    licensing: Vec<String>,
    instances: Vec<InstanceSpec>,
    flows: Vec<String>,
    licenses: usize,
}

/// The admin token every harness-made config uses.
pub const TOKEN: &str = "test-admin-token-5f0c2d";

impl Builder {
    fn new() -> Builder {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::new(dir.path());
        std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
        std::fs::create_dir_all(dir.path().join("licenses")).unwrap();
        Builder {
            dir,
            issuer,
            token: TOKEN.to_owned(),
            server: vec!["max_header_bytes = 4096".to_owned()],
            licensing: Vec::new(),
            instances: Vec::new(),
            flows: Vec::new(),
            licenses: 0,
        }
    }

    /// Adds a `key = value` line to `[server]` (replacing `max_header_bytes` if given).
    pub fn server_option(mut self, line: &str) -> Builder {
        if line.trim_start().starts_with("max_header_bytes") {
            self.server.retain(|l| !l.starts_with("max_header_bytes"));
        }
        self.server.push(line.to_owned());
        self
    }

    /// Adds a `key = value` line to `[licensing]`.
    pub fn licensing_option(mut self, line: &str) -> Builder {
        self.licensing.push(line.to_owned());
        self
    }

    /// A named-connector instance of system type `app` forwarding to `base_uri`.
    pub fn instance(self, id: &str, app: &str, base_uri: &str) -> Builder {
        self.instance_with(id, app, base_uri, &[])
    }

    /// Like [`Builder::instance`] with extra `key = value` lines (e.g. `response_timeout`).
    pub fn instance_with(mut self, id: &str, app: &str, base_uri: &str, extra: &[&str]) -> Builder {
        self.instances.push(InstanceSpec {
            id: id.to_owned(),
            app: app.to_owned(),
            base_uri: base_uri.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            dedicated: false,
            flow: None,
        });
        self
    }

    /// An instance with its own dedicated listener (on a loopback port chosen by the OS),
    /// optionally bound to `flow`.
    pub fn dedicated_instance(
        mut self,
        id: &str,
        app: &str,
        base_uri: &str,
        flow: Option<&str>,
    ) -> Builder {
        self.instances.push(InstanceSpec {
            id: id.to_owned(),
            app: app.to_owned(),
            base_uri: base_uri.to_owned(),
            extra: Vec::new(),
            dedicated: true,
            flow: flow.map(str::to_owned),
        });
        self
    }

    /// A flow of kind `flow` between two instances, enabled at start.
    pub fn flow(self, id: &str, systems: [&str; 2]) -> Builder {
        self.flow_with(id, systems, &[])
    }

    /// A flow with extra `key = value` lines (e.g. `enabled = false`).
    pub fn flow_with(mut self, id: &str, systems: [&str; 2], extra: &[&str]) -> Builder {
        let mut text = format!(
            "[[flows]]\nid = \"{id}\"\nkind = \"flow\"\nsystems = [\"{}\", \"{}\"]\n",
            systems[0], systems[1]
        );
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        self.flows.push(text);
        self
    }

    /// Signs `payload` and installs it in `licenses/` before start.
    pub fn license(mut self, payload: &Value) -> Builder {
        let text = self.issuer.sign(payload);
        self.licenses += 1;
        let name = payload["id"].as_str().unwrap_or("license").to_owned();
        std::fs::write(
            self.dir.path().join("licenses").join(format!("{name}.lic")),
            text,
        )
        .unwrap();
        self
    }

    /// Writes an arbitrary file into the scratch directory; returns its path.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// The scratch directory (config, keys, licenses, state).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `tollgate.toml` this builder writes.
    pub fn config_text(&self) -> String {
        let mut text = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
        for line in &self.server {
            text.push_str(line);
            text.push('\n');
        }
        // Distinct loopback addresses, so port 0 is never "the same address" twice.
        text.push_str(
            "\n[admin]\nlisten = \"127.0.0.2:0\"\ntoken_file = \"admin.token\"\n\n[licensing]\n\
             public_keys = [\"issuer.pub\"]\nlicense_dir = \"licenses\"\n",
        );
        for line in &self.licensing {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("\n[state]\ndir = \"state\"\n\n");
        let mut dedicated = 0;
        for instance in &self.instances {
            text.push_str(&format!(
                "[[instances]]\nid = \"{}\"\nconnector = \"named\"\napp = \"{}\"\nbase_uri = \"{}\"\n",
                instance.id, instance.app, instance.base_uri
            ));
            if instance.dedicated {
                dedicated += 1;
                text.push_str(&format!("listen = \"127.0.0.{}:0\"\n", 2 + dedicated));
            }
            if let Some(flow) = &instance.flow {
                text.push_str(&format!("flow = \"{flow}\"\n"));
            }
            for line in &instance.extra {
                text.push_str(line);
                text.push('\n');
            }
            text.push('\n');
        }
        for flow in &self.flows {
            text.push_str(flow);
            text.push('\n');
        }
        text
    }

    /// Writes the config and starts `tollgate run`; returns once every listener is logged
    /// and `/readyz` answers 200.
    pub async fn start(self) -> Tollgate {
        let config_text = self.config_text();
        self.launch(config_text, &[], &[], true).await
    }

    /// Writes `config_text` and starts `tollgate run --config FILE <args>` with `env` set;
    /// returns once every listener (engine, admin, dedicated instances) is logged, in the human
    /// or the JSON format, and `/readyz` answers 200. `debug_override` lets
    /// `TOLLGATE_TEST_RUST_LOG` raise the log level.
    async fn launch(
        self,
        config_text: String,
        env: &[(&str, &str)],
        args: &[&str],
        debug_override: bool,
    ) -> Tollgate {
        let config = self.dir.path().join("tollgate.toml");
        std::fs::write(&config, &config_text).unwrap();
        let mut roles = vec!["engine".to_owned(), "admin".to_owned()];
        roles.extend(
            self.instances
                .iter()
                .filter(|i| i.dedicated)
                .map(|i| format!("instance:{}", i.id)),
        );
        let (child, log) = spawn_tollgate(&config, self.dir.path(), env, args, debug_override);
        let pid = child.id();
        let mut tollgate = Tollgate {
            process: ChildGuard { child },
            pid,
            engine: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            listeners: HashMap::new(),
            token: self.token,
            log,
            client: http1_client(),
            config_path: config,
            config_text,
            issuer: self.issuer,
            dir: self.dir,
        };
        tollgate.await_listeners(&roles).await;
        tollgate.await_ready().await;
        tollgate
    }
}

/// Copies lines from a child's pipe into `log` until the pipe closes.
fn drain(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = strip_ansi(&String::from_utf8_lossy(&line));
                    let mut log = log.lock().unwrap();
                    log.push_str(&text);
                    if !text.ends_with('\n') {
                        log.push('\n');
                    }
                }
            }
        }
    });
}

/// Removes ANSI escape sequences (colours) from a log line.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// `role → addr` from every `listening … role=… addr=…` line of the log.
fn listeners_in(log: &str) -> HashMap<String, SocketAddr> {
    let mut found = HashMap::new();
    for line in log.lines().filter(|l| l.contains("listening")) {
        let mut role = None;
        let mut addr = None;
        for token in line.split_whitespace() {
            let unquote = |v: &str| {
                v.trim_matches(|c| c == '"' || c == '\'' || c == ',')
                    .to_owned()
            };
            if let Some(v) = token.strip_prefix("role=") {
                role = Some(unquote(v));
            } else if let Some(v) = token.strip_prefix("addr=") {
                addr = unquote(v).parse::<SocketAddr>().ok();
            }
        }
        if let (Some(role), Some(addr)) = (role, addr) {
            found.insert(role, addr);
        }
    }
    found
}

/// Kills the child (by its pid, via `Child::kill`) when dropped.
struct ChildGuard {
    child: Child,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `tollgate run` and the means to talk to it.
pub struct Tollgate {
    process: ChildGuard,
    /// Process id of the sidecar.
    pub pid: u32,
    /// The engine-facing listener.
    pub engine: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// Every listener by role (`engine`, `admin`, `instance:<id>`).
    pub listeners: HashMap<String, SocketAddr>,
    /// The admin bearer token.
    pub token: String,
    log: Arc<Mutex<String>>,
    /// An HTTP/1.1 client (pooled).
    pub client: HttpClient,
    config_path: PathBuf,
    config_text: String,
    issuer: Issuer,
    dir: tempfile::TempDir,
}

/// Starts describing a sidecar.
pub fn tollgate() -> Builder {
    Builder::new()
}

impl Tollgate {
    async fn await_listeners(&mut self, roles: &[String]) {
        let start = Instant::now();
        loop {
            let log = self.logs();
            let mut found = listeners_in(&log);
            found.extend(json_listeners_in(&log));
            if roles.iter().all(|r| found.contains_key(r)) {
                self.engine = found["engine"];
                self.admin = found["admin"];
                self.listeners = found;
                return;
            }
            if let Ok(Some(status)) = self.process.child.try_wait() {
                // Give the drain threads a moment to collect the last words.
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "tollgate exited ({status}) before logging its listeners {roles:?}; stderr:\n{}",
                    self.logs()
                );
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "tollgate did not log `listening role=… addr=…` for all of {roles:?} within {START_TIMEOUT:?} (found {found:?}); stderr:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn await_ready(&mut self) {
        let start = Instant::now();
        loop {
            let url = format!("http://{}/readyz", self.admin);
            let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
            if let Ok(resp) = send(&self.client, req).await {
                if resp.status == StatusCode::OK {
                    return;
                }
            }
            if let Ok(Some(status)) = self.process.child.try_wait() {
                panic!(
                    "tollgate exited ({status}) before /readyz; stderr:\n{}",
                    self.logs()
                );
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "GET /readyz on {} did not answer 200 within {START_TIMEOUT:?}; stderr:\n{}",
                    self.admin,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything tollgate wrote to stderr and stdout so far.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `licenses/` in the scratch directory.
    pub fn license_dir(&self) -> PathBuf {
        self.dir.path().join("licenses")
    }

    /// The config file tollgate runs on.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The config text tollgate was started with.
    pub fn config_text(&self) -> &str {
        &self.config_text
    }

    /// Signs a payload with the trusted issuer key; returns the license text.
    pub fn sign(&self, payload: &Value) -> String {
        self.issuer.sign(payload)
    }

    /// The dedicated listener of instance `id`.
    pub fn instance_listener(&self, id: &str) -> SocketAddr {
        *self
            .listeners
            .get(&format!("instance:{id}"))
            .unwrap_or_else(|| panic!("no dedicated listener for {id}: {:?}", self.listeners))
    }

    /// Sends a request to `addr` with `client`; panics (with tollgate's log) on transport errors.
    pub async fn request_with(
        &self,
        client: &HttpClient,
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder.body(Full::new(body.into())).unwrap();
        match send(client, req).await {
            Ok(resp) => resp,
            Err(err) => panic!(
                "request to {addr}{path} failed: {err}\ntollgate log:\n{}",
                self.logs()
            ),
        }
    }

    /// A request on the engine listener with the HTTP/1.1 client.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        self.request_with(&self.client, self.engine, method, path, headers, body)
            .await
    }

    /// `GET path` on the engine listener, with the flow header when `flow` is given.
    pub async fn get(&self, path: &str, flow: Option<&str>) -> Resp {
        let headers: Vec<(&str, &str)> = flow.map(|f| ("tollgate-flow", f)).into_iter().collect();
        self.request(Method::GET, path, &headers, Bytes::new())
            .await
    }

    /// `POST path` on the engine listener with `body`.
    pub async fn post(&self, path: &str, flow: Option<&str>, body: impl Into<Bytes>) -> Resp {
        let headers: Vec<(&str, &str)> = flow.map(|f| ("tollgate-flow", f)).into_iter().collect();
        self.request(Method::POST, path, &headers, body).await
    }

    /// An admin request with an explicit `Authorization` (None: no header).
    pub async fn admin_request(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Resp {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        self.request_with(&self.client, self.admin, method, path, &headers, body)
            .await
    }

    /// An admin request with the right bearer token.
    pub async fn admin(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Resp {
        let auth = format!("Bearer {}", self.token);
        self.admin_request(method, path, Some(&auth), body).await
    }

    /// `GET` on the admin API with the token.
    pub async fn admin_get(&self, path: &str) -> Resp {
        self.admin(Method::GET, path, Bytes::new()).await
    }

    /// `POST` on the admin API with the token.
    pub async fn admin_post(&self, path: &str, body: impl Into<Bytes>) -> Resp {
        self.admin(Method::POST, path, body).await
    }

    /// `DELETE` on the admin API with the token.
    pub async fn admin_delete(&self, path: &str) -> Resp {
        self.admin(Method::DELETE, path, Bytes::new()).await
    }

    /// `GET /v1/flows`, as JSON, asserting 200.
    pub async fn flows(&self) -> Vec<Value> {
        let resp = self.admin_get("/v1/flows").await;
        assert_eq!(
            resp.status,
            StatusCode::OK,
            "GET /v1/flows: {}",
            resp.text()
        );
        resp.json()
            .as_array()
            .cloned()
            .expect("/v1/flows is an array")
    }

    /// One flow from `GET /v1/flows`.
    pub async fn flow(&self, id: &str) -> Value {
        self.flows()
            .await
            .into_iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("flow {id} not in /v1/flows"))
    }

    /// `GET /v1/licenses`, as JSON, asserting 200.
    pub async fn licenses(&self) -> Vec<Value> {
        let resp = self.admin_get("/v1/licenses").await;
        assert_eq!(
            resp.status,
            StatusCode::OK,
            "GET /v1/licenses: {}",
            resp.text()
        );
        resp.json()
            .as_array()
            .cloned()
            .expect("/v1/licenses is an array")
    }

    /// One license from `GET /v1/licenses`, if installed.
    pub async fn license(&self, id: &str) -> Option<Value> {
        self.licenses().await.into_iter().find(|l| l["id"] == id)
    }

    /// `GET /v1/status`, as JSON, asserting 200.
    pub async fn status(&self) -> Value {
        let resp = self.admin_get("/v1/status").await;
        assert_eq!(
            resp.status,
            StatusCode::OK,
            "GET /v1/status: {}",
            resp.text()
        );
        resp.json()
    }

    /// Sends `signal` (`HUP`, `TERM`, …) to the sidecar by pid with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid);
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.process.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.process.child.try_wait(), Ok(None))
    }
}

// ---------------------------------------------------------------------------------------
// Restarts, process environment and metering views (the `tests/metering_*.rs` suites)
// ---------------------------------------------------------------------------------------

/// Spawns `tollgate run --config config <args>` in `dir` with `env` set; its stdout and
/// stderr are collected into the returned log. With `debug_override`, `TOLLGATE_TEST_RUST_LOG`
/// (if set) becomes the child's `RUST_LOG`; otherwise the log stays at the default level.
fn spawn_tollgate(
    config: &Path,
    dir: &Path,
    env: &[(&str, &str)],
    args: &[&str],
    debug_override: bool,
) -> (Child, Arc<Mutex<String>>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("TOLLGATE_NOW")
        .env_remove("TOLLGATE_TEST_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let (true, Ok(level)) = (debug_override, std::env::var("TOLLGATE_TEST_RUST_LOG")) {
        command.env("RUST_LOG", level);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn tollgate run");
    let log = Arc::new(Mutex::new(String::new()));
    drain(child.stderr.take().unwrap(), log.clone());
    drain(child.stdout.take().unwrap(), log.clone());
    (child, log)
}

impl Builder {
    /// Like [`Builder::start`], with `key = value` lines added to `[state]` (e.g.
    /// `durability = "batched"`) and `env` set on the process (e.g. `TOLLGATE_NOW`, which
    /// only a binary built with the `test-clock` feature reads).
    pub async fn start_with(self, state: &[&str], env: &[(&str, &str)]) -> Tollgate {
        let mut config_text = self.config_text();
        let section = "\n[state]\ndir = \"state\"\n";
        let mut lines = String::from(section);
        for line in state {
            lines.push_str(line);
            lines.push('\n');
        }
        assert!(
            config_text.contains(section),
            "no [state] section in:\n{config_text}"
        );
        config_text = config_text.replacen(section, &lines, 1);
        self.launch(config_text, env, &[], true).await
    }
}

impl Tollgate {
    /// Sends SIGKILL (`kill -9`) to the sidecar by pid.
    pub fn kill9(&self) {
        self.signal("KILL");
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; panics if it does not exit.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        match self.wait_exit(timeout).await {
            Some(status) => status,
            None => panic!(
                "tollgate did not exit within {timeout:?} of SIGTERM; log:\n{}",
                self.logs()
            ),
        }
    }

    /// Starts `tollgate run` again on the same scratch directory, config and state, with
    /// `env`, after the previous process has exited (it is killed if it has not). The log
    /// starts afresh; listeners get new addresses, read from the new log.
    pub async fn restart(&mut self, env: &[(&str, &str)]) {
        if self.is_running() {
            self.kill9();
            self.wait_exit(Duration::from_secs(10)).await;
        }
        let mut roles: Vec<String> = self.listeners.keys().cloned().collect();
        roles.sort();
        let (child, log) = spawn_tollgate(&self.config_path, self.dir.path(), env, &[], true);
        self.pid = child.id();
        self.process = ChildGuard { child };
        self.log = log;
        self.client = http1_client();
        self.await_listeners(&roles).await;
        self.await_ready().await;
    }

    /// `GET /v1/usage` (current month) or `GET /v1/usage?month=…`, as JSON, asserting 200.
    pub async fn usage(&self, month: Option<&str>) -> Value {
        let path = match month {
            Some(month) => format!("/v1/usage?month={month}"),
            None => "/v1/usage".to_owned(),
        };
        let resp = self.admin_get(&path).await;
        assert_eq!(resp.status, StatusCode::OK, "GET {path}: {}", resp.text());
        resp.json()
    }

    /// `used` of license `id` in a `/v1/usage` answer (panics if it is not listed).
    pub async fn usage_of_license(&self, month: Option<&str>, id: &str) -> u64 {
        let usage = self.usage(month).await;
        usage["licenses"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["id"] == id))
            .and_then(|l| l["used"].as_u64())
            .unwrap_or_else(|| panic!("license {id} not in /v1/usage: {usage}"))
    }

    /// `used` of flow `id` in a `/v1/usage` answer (panics if it is not listed).
    pub async fn usage_of_flow(&self, month: Option<&str>, id: &str) -> u64 {
        let usage = self.usage(month).await;
        usage["flows"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["id"] == id))
            .and_then(|f| f["used"].as_u64())
            .unwrap_or_else(|| panic!("flow {id} not in /v1/usage: {usage}"))
    }

    /// `records` of license `id` from `GET /v1/licenses`.
    pub async fn records(&self, id: &str) -> Value {
        let license = self
            .license(id)
            .await
            .unwrap_or_else(|| panic!("license {id} not in /v1/licenses"));
        license["records"].clone()
    }

    /// The newest `limit` audit events (`GET /v1/audit?limit=…`), newest first.
    pub async fn audit(&self, limit: usize) -> Vec<Value> {
        let path = format!("/v1/audit?limit={limit}");
        let resp = self.admin_get(&path).await;
        assert_eq!(resp.status, StatusCode::OK, "GET {path}: {}", resp.text());
        resp.json()["events"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("GET {path}: no events array: {}", resp.text()))
    }
}

/// A request with the flow header to `addr` (the engine listener), for load generators that
/// run in their own tasks.
pub async fn flow_request(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    flow: &str,
    body: impl Into<Bytes>,
) -> Result<Resp, String> {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("tollgate-flow", flow)
        .body(Full::new(body.into()))
        .unwrap();
    send(client, req).await
}

// ---------------------------------------------------------------------------------------
// Subscription entitlements (the `tests/entitlements_*.rs` suites)
// ---------------------------------------------------------------------------------------

/// One environment's limits as a subscription payload spells them, from
/// `[flows, endpoint_apps, trading_partners, agents]`.
pub fn env_limits(limits: [u64; 4]) -> Value {
    json!({
        "flows": limits[0],
        "endpoint_apps": limits[1],
        "trading_partners": limits[2],
        "agents": limits[3],
    })
}

/// A valid, unbound subscription license payload (SPEC §3) with `pricing` (`endpoint` |
/// `platform`) and the limits `[flows, endpoint_apps, trading_partners, agents]` of each
/// environment.
pub fn subscription_license(
    id: &str,
    pricing: &str,
    production: [u64; 4],
    sandbox: [u64; 4],
) -> Value {
    json!({
        "version": 1,
        "id": id,
        "kind": "subscription",
        "company": "Acme Corp",
        "registered_to": "Jane Doe",
        "email": "jane@acme.example",
        "start": "2020-01-01T00:00:00Z",
        "expire": "2099-01-01T00:00:00Z",
        "pricing": pricing,
        "production": env_limits(production),
        "sandbox": env_limits(sandbox),
    })
}

/// An `[[instances]]` table with `connector` and raw `key = value` attribute lines (values
/// already in TOML syntax, e.g. `("host", "\"db.example\"")`, `("port", "2121")`).
pub fn toml_instance(id: &str, connector: &str, attributes: &[(&str, &str)]) -> String {
    let mut text = format!("[[instances]]\nid = \"{id}\"\nconnector = \"{connector}\"\n");
    for (key, value) in attributes {
        text.push_str(&format!("{key} = {value}\n"));
    }
    text.push('\n');
    text
}

/// A `[[flows]]` table of `kind` in `environment` between `systems`, enabled at start or not.
pub fn toml_flow(
    id: &str,
    kind: &str,
    environment: &str,
    systems: &[&str],
    enabled: bool,
) -> String {
    let systems: Vec<String> = systems.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[[flows]]\nid = \"{id}\"\nkind = \"{kind}\"\nenvironment = \"{environment}\"\nsystems = [{}]\nenabled = {enabled}\n\n",
        systems.join(", ")
    )
}

/// Armors an envelope per SPEC §3 (base64 lines of at most 76 characters).
fn armor_envelope(envelope: &Value) -> String {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    let encoded = STANDARD.encode(envelope.to_string());
    let mut text = String::from("-----BEGIN TOLLGATE LICENSE-----\n");
    for chunk in encoded.as_bytes().chunks(76) {
        text.push_str(std::str::from_utf8(chunk).unwrap());
        text.push('\n');
    }
    text.push_str("-----END TOLLGATE LICENSE-----\n");
    text
}

impl Issuer {
    /// Signs `payload_json` exactly as SPEC §3 describes, without checking the payload (for
    /// payloads `tollgate license sign` rightly refuses); returns the armored license text.
    pub fn sign_unchecked(&self, payload_json: &str) -> String {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        use ed25519_dalek::Signer;
        use sha2::Digest;
        let pem = std::fs::read_to_string(self.dir.join("issuer.key")).unwrap();
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).expect("issuer.key is PKCS#8");
        let digest = sha2::Sha256::digest(key.verifying_key().as_bytes());
        let kid: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let payload = STANDARD.encode(payload_json);
        let signature = key.sign(format!("tollgate-license-v1.{payload}").as_bytes());
        armor_envelope(&json!({
            "alg": "ed25519",
            "kid": kid,
            "payload": payload,
            "sig": STANDARD.encode(signature.to_bytes()),
        }))
    }
}

impl Builder {
    /// The config this builder writes with `toml` appended: raw `[[instances]]` and
    /// `[[flows]]` tables (any connector, kind and environment; see [`toml_instance`] and
    /// [`toml_flow`]).
    pub fn config_text_with(&self, toml: &str) -> String {
        format!("{}\n{toml}", self.config_text())
    }

    /// Writes [`Builder::config_text_with`] as `tollgate.toml` and runs
    /// `tollgate check --config` on it.
    pub fn check_toml(&self, toml: &str) -> std::process::Output {
        let config = self.dir.path().join("tollgate.toml");
        std::fs::write(&config, self.config_text_with(toml)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("check")
            .arg("--config")
            .arg(&config)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("TOLLGATE_NOW")
            .env_remove("TOLLGATE_TEST_HOST")
            .output()
            .expect("run tollgate check")
    }

    /// Writes [`Builder::config_text_with`] and starts `tollgate run` with `env` set; returns
    /// once the engine and admin listeners are logged and `/readyz` answers 200.
    pub async fn start_toml(self, toml: &str, env: &[(&str, &str)]) -> Tollgate {
        let config_text = self.config_text_with(toml);
        self.launch(config_text, env, &[], true).await
    }
}

impl Tollgate {
    /// Signs payload text with the trusted issuer key without checking it (see
    /// [`Issuer::sign_unchecked`]).
    pub fn sign_unchecked(&self, payload_json: &str) -> String {
        self.issuer.sign_unchecked(payload_json)
    }

    /// `GET /v1/entitlements`, as JSON, asserting 200.
    pub async fn entitlements(&self) -> Value {
        let resp = self.admin_get("/v1/entitlements").await;
        assert_eq!(
            resp.status,
            StatusCode::OK,
            "GET /v1/entitlements: {}",
            resp.text()
        );
        resp.json()
    }

    /// `POST /v1/flows/{id}/enable`.
    pub async fn enable(&self, id: &str) -> Resp {
        self.admin_post(&format!("/v1/flows/{id}/enable"), "").await
    }

    /// `POST /v1/flows/{id}/disable`, asserting 200.
    pub async fn disable(&self, id: &str) {
        let resp = self
            .admin_post(&format!("/v1/flows/{id}/disable"), "")
            .await;
        assert_eq!(resp.status, StatusCode::OK, "disable {id}: {}", resp.text());
    }
}

// ---------------------------------------------------------------------------------------
// Operator experience (the `tests/operator_*.rs` and `tests/console_browser.rs` suites)
// ---------------------------------------------------------------------------------------

/// `role → addr` from `listening` events logged as JSON (`--log-format json`): one object
/// per line with `fields.message == "listening"` and `fields.role`, `fields.addr`.
fn json_listeners_in(log: &str) -> HashMap<String, SocketAddr> {
    let mut found = HashMap::new();
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let fields = &event["fields"];
        if fields["message"] != "listening" {
            continue;
        }
        if let (Some(role), Some(addr)) = (
            fields["role"].as_str(),
            fields["addr"].as_str().and_then(|a| a.parse().ok()),
        ) {
            found.insert(role.to_owned(), addr);
        }
    }
    found
}

/// Every line of `log` that is a JSON object, parsed (other lines are skipped).
pub fn json_log_events(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(Value::is_object)
        .collect()
}

/// Runs the tollgate binary with `args` (no `RUST_LOG`, no colours) and returns its output.
pub fn tollgate_output(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("TOLLGATE_NOW")
        .env_remove("TOLLGATE_TEST_HOST")
        .stdin(Stdio::null())
        .output()
        .expect("run the tollgate binary")
}

impl Builder {
    /// Like [`Builder::start`], with `extra` arguments after `run --config FILE` (e.g.
    /// `["--log-format", "json"]`); the listeners are read from human or JSON log lines.
    /// `RUST_LOG` is never set, so the log is at the default level.
    pub async fn start_args(self, extra: &[&str]) -> Tollgate {
        let config_text = self.config_text();
        self.launch(config_text, &[], extra, false).await
    }
}
