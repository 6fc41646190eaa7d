//! HTTPS interception from the engine's side: the interception CA made with `tollgate ca
//! init`, a sidecar set up for tunnels in front of a TLS target with its own CA, tunnels
//! opened by hand (`CONNECT` on a TCP connection, TLS with rustls against the interception
//! CA, then hyper's client connection over it, HTTP/1.1 or h2 as ALPN decides), and curl and
//! Python `requests` driven through `HTTPS_PROXY` the way engines use it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::client::Resp;
use super::config::Builder;
use super::process::{stderr, tollgate_output};
use super::upstream::Upstream;

/// Upper bound on one tunnelled exchange (CONNECT, handshake, request, answer).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes the interception CA with `tollgate ca init --out DIR/ca` in the builder's scratch
/// directory and turns on forward-proxy mode with `intercept_ca` pointing at it; returns the
/// builder and the CA certificate's PEM.
pub fn intercepting(builder: Builder) -> (Builder, String) {
    let out = builder.dir().join("ca");
    ca_init(&out);
    let pem = std::fs::read_to_string(out.join("ca.pem"))
        .unwrap_or_else(|err| panic!("read {}/ca.pem: {err}", out.display()));
    let builder = builder
        .server_option("forward_proxy = true")
        .server_option("intercept_ca = { cert = \"ca/ca.pem\", key = \"ca/ca.key\" }");
    (builder, pem)
}

/// Runs `tollgate ca init --out dir` and panics unless it succeeds.
pub fn ca_init(dir: &Path) {
    let output = tollgate_output([
        "ca".as_ref(),
        "init".as_ref(),
        "--out".as_ref(),
        dir.as_os_str(),
    ]);
    assert!(
        output.status.success(),
        "tollgate ca init failed: {}",
        stderr(&output)
    );
}

/// A named instance forwarding to the TLS `upstream`, trusting its CA through `ca_file`.
pub fn tls_instance(builder: Builder, id: &str, app: &str, upstream: &Upstream) -> Builder {
    let ca = upstream.ca_pem.as_deref().expect("a TLS upstream");
    let file = format!("{id}-target-ca.pem");
    builder.file(&file, ca);
    builder.instance_with(
        id,
        app,
        &upstream.base_uri(),
        &[&format!("ca_file = \"{file}\"")],
    )
}

/// What tollgate answered to a `CONNECT`: its status and head, and the connection when a
/// tunnel was opened (200).
pub struct Connected {
    /// The status of the answer.
    pub status: u16,
    /// The answer's head, lowercase.
    pub head: String,
    /// The connection, now a tunnel, after a 200.
    pub stream: Option<TcpStream>,
}

/// `Proxy-Authorization: Basic` for `user:password`.
pub fn basic(user_password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

/// Sends `CONNECT authority` (with `Proxy-Authorization` for `credentials`, `user:password`)
/// on a new connection to `engine` and reads the answer's head.
pub async fn connect(
    engine: SocketAddr,
    authority: &str,
    credentials: Option<&str>,
) -> Result<Connected, String> {
    let mut stream = TcpStream::connect(engine)
        .await
        .map_err(|err| format!("connect to {engine}: {err}"))?;
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(credentials) = credentials {
        head.push_str(&format!("Proxy-Authorization: {}\r\n", basic(credentials)));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|err| format!("send CONNECT: {err}"))?;
    // Read byte by byte up to the end of the head: after a 200, the next bytes are TLS.
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(EXCHANGE_TIMEOUT, stream.read(&mut byte)).await {
            Ok(Ok(1)) => answer.push(byte[0]),
            Ok(Ok(_)) => {
                return Err(format!(
                    "the connection closed after {:?}",
                    String::from_utf8_lossy(&answer)
                ))
            }
            Ok(Err(err)) => return Err(format!("read the CONNECT answer: {err}")),
            Err(_) => return Err("no answer to CONNECT".to_owned()),
        }
    }
    let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok(Connected {
        status,
        head,
        stream: (status == 200).then_some(stream),
    })
}

/// A rustls client trusting only `ca_pem`, offering `alpn` (e.g. `[b"h2", b"http/1.1"]`),
/// with rustls' default session cache (so a second tunnel may resume).
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("the CA as a root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("rustls' default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The TLS handshake with `host` over an opened tunnel.
pub async fn tls_over(
    stream: TcpStream,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(host.to_owned()).map_err(|err| format!("{host}: {err}"))?;
    tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(name, stream),
    )
    .await
    .map_err(|_| "the TLS handshake timed out".to_owned())?
    .map_err(|err| format!("TLS handshake with {host}: {err}"))
}

/// One request over a TLS connection, in HTTP/2 when ALPN chose it, else HTTP/1.1;
/// `authority` goes into `Host` (HTTP/1.1) or `:authority` (h2).
pub async fn request_over(
    tls: TlsStream<TcpStream>,
    authority: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Resp, String> {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let mut builder = Request::builder().method(method);
    builder = if h2 {
        builder.uri(format!("https://{authority}{path}"))
    } else {
        builder.uri(path).header("host", authority)
    };
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(Full::new(body.into()))
        .map_err(|err| format!("a request for {path}: {err}"))?;
    let io = TokioIo::new(tls);
    let exchange = async {
        let response = if h2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|err| format!("h2 handshake: {err}"))?;
            tokio::spawn(connection);
            sender.send_request(req).await
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|err| format!("HTTP/1.1 handshake: {err}"))?;
            tokio::spawn(connection);
            sender.send_request(req).await
        }
        .map_err(|err| format!("{err:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|err| format!("reading the body: {err:?}"))?
            .to_bytes();
        Ok(Resp {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer to {path} within {EXCHANGE_TIMEOUT:?}"))?
}

/// An engine that opens a tunnel per request, as n8n does: `CONNECT` to `target` with
/// `credentials` (`user:password`), the TLS handshake with `config`, one request, and the
/// connection closed.
#[derive(Clone)]
pub struct TunnelClient {
    /// tollgate's engine listener.
    pub engine: SocketAddr,
    /// The target whose authority the tunnels are opened to.
    pub target: SocketAddr,
    /// The proxy credentials sent with each `CONNECT`.
    pub credentials: Option<String>,
    /// The TLS client (its session cache lets later tunnels resume).
    pub config: Arc<rustls::ClientConfig>,
}

impl TunnelClient {
    /// One request in a tunnel of its own.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Resp, String> {
        let authority = self.target.to_string();
        let connected = connect(self.engine, &authority, self.credentials.as_deref()).await?;
        let stream = connected
            .stream
            .ok_or_else(|| format!("CONNECT answered {}: {}", connected.status, connected.head))?;
        let tls = tls_over(stream, &self.target.ip().to_string(), self.config.clone()).await?;
        request_over(tls, &authority, method, path, headers, body).await
    }
}

/// What curl saw through the proxy: the last status and head (after the `CONNECT`'s), the
/// body, the version of the answer (`1.1`, `2`), and its stderr.
pub struct Curled {
    /// The status of the final answer.
    pub status: u16,
    /// The final answer's head, lowercase.
    pub head: String,
    /// The body.
    pub body: String,
    /// `HTTP/1.1` → `1.1`, `HTTP/2` → `2`.
    pub version: String,
    /// curl's messages.
    pub stderr: String,
}

impl Curled {
    /// The `Tollgate-Reason` of the final answer.
    pub fn reason(&self) -> Option<&str> {
        self.head
            .lines()
            .find_map(|line| line.strip_prefix("tollgate-reason: "))
            .map(str::trim)
    }
}

/// Runs curl with `args` (a URL among them) and reads what it printed with `-D -`.
pub fn curl(args: &[&str], env: &[(&str, &str)]) -> Curled {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-D", "-", "--max-time", "20"])
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("CURL_CA_BUNDLE");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command
        .output()
        .expect("curl is installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // -D - prints the CONNECT's answer head first, then the answer's.
    let mut rest = text.as_str();
    let mut head = "";
    while rest.starts_with("HTTP/") {
        let (this, after) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        head = this;
        rest = after;
    }
    let status_line = head.lines().next().unwrap_or("");
    let mut words = status_line.split_whitespace();
    let version = words
        .next()
        .and_then(|v| v.strip_prefix("HTTP/"))
        .unwrap_or("")
        .to_owned();
    let status = words
        .next()
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status from curl {args:?}: {text:?} {stderr}"));
    Curled {
        status,
        head: head.to_ascii_lowercase(),
        body: rest.to_owned(),
        version,
        stderr,
    }
}

/// What a Python `requests` call printed: status, the `x-upstream` and `tollgate-reason`
/// headers, and the body.
pub struct Pythoned {
    /// The status.
    pub status: u16,
    /// The answer's `Tollgate-Reason`, if any.
    pub reason: Option<String>,
    /// The body.
    pub body: String,
}

/// `requests.request(method, url, data=body)` in `python3`, with `env` (such as
/// `HTTPS_PROXY` and `REQUESTS_CA_BUNDLE`) as its only proxy and CA settings.
pub fn python_requests(method: &str, url: &str, body: &str, env: &[(&str, &str)]) -> Pythoned {
    let script = "import json, os, sys, requests\n\
        r = requests.request(sys.argv[1], sys.argv[2], data=sys.argv[3].encode(), timeout=20)\n\
        print(json.dumps({'status': r.status_code, 'reason': r.headers.get('tollgate-reason'), 'body': r.text}))\n";
    let mut command = Command::new("python3");
    command
        .args(["-c", script, method, url, body])
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command
        .output()
        .expect("python3 is installed (.ci/run installs requests)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let value: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|err| {
        panic!(
            "python3 requests printed no answer ({err}): {text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Pythoned {
        status: value["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(0),
        reason: value["reason"].as_str().map(str::to_owned),
        body: value["body"].as_str().unwrap_or("").to_owned(),
    }
}

/// Writes `pem` to `name` in `dir`; returns the path (for `--cacert`, `REQUESTS_CA_BUNDLE`).
pub fn pem_file(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    path
}
