//! The load client and target of `benches/intercept.sh`: what a tunnel per request costs
//! beside a plain request through tollgate.
//!
//! `tunnel_load target --ca-out FILE --addr-out FILE` serves a TLS target (HTTP/1.1 and h2,
//! a certificate from its own CA written to `--ca-out`) that answers every request 200 with
//! a small JSON body.
//!
//! `tunnel_load load --mode MODE --engine ADDR ...` runs `--workers` concurrent workers for
//! `--seconds` and prints one line with requests/s and the p50 and p99 latency:
//! - `plain`: a kept-alive HTTP/1.1 connection per worker, `GET /{instance}/…` with the flow
//!   header (what an engine with a base URL sends);
//! - `tunnel`: per request a new TCP connection, `CONNECT` with `Proxy-Authorization`, a full
//!   TLS handshake against the interception CA, one HTTP/1.1 request, close (what n8n sends
//!   behind `HTTPS_PROXY`);
//! - `resume`: as `tunnel`, with each worker resuming its TLS session (tickets).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the TLS target until killed.
    Target {
        /// Where to write the target CA's PEM (the instance's `ca_file`).
        #[arg(long)]
        ca_out: PathBuf,
        /// Where to write the bound address.
        #[arg(long)]
        addr_out: PathBuf,
    },
    /// Drive tollgate and print requests/s, p50 and p99.
    Load {
        #[arg(long, value_enum)]
        mode: Mode,
        /// tollgate's engine listener.
        #[arg(long)]
        engine: SocketAddr,
        /// The target (the tunnels' authority).
        #[arg(long)]
        target: SocketAddr,
        /// The interception CA's certificate (tunnel modes).
        #[arg(long)]
        ca: PathBuf,
        /// The instance id (plain mode's first path segment).
        #[arg(long, default_value = "bench-upstream")]
        instance: String,
        /// The flow: header in plain mode, proxy user in the tunnel modes.
        #[arg(long, default_value = "bench")]
        flow: String,
        #[arg(long, default_value_t = 8)]
        workers: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Plain,
    Tunnel,
    Resume,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    match Args::parse().command {
        Command::Target { ca_out, addr_out } => target(ca_out, addr_out).await,
        Command::Load {
            mode,
            engine,
            target,
            ca,
            instance,
            flow,
            workers,
            seconds,
        } => {
            let ca_pem =
                std::fs::read_to_string(&ca).map_err(|err| format!("{}: {err}", ca.display()))?;
            let job = Arc::new(Job {
                mode,
                engine,
                target,
                path: format!("/{instance}/records"),
                flow,
                proxy_auth: format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("bench:x")
                ),
                tls: client_config(&ca_pem, mode == Mode::Resume)?,
            });
            load(job, workers, Duration::from_secs(seconds)).await
        }
    }
}

/// The TLS target: a certificate for 127.0.0.1 from a CA of its own.
async fn target(ca_out: PathBuf, addr_out: PathBuf) -> Result<(), Error> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let cert =
        CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &ca, &ca_key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    std::fs::write(&ca_out, ca.pem())?;
    std::fs::write(&addr_out, listener.local_addr()?.to_string())?;
    loop {
        let (stream, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"{\"ok\":true}",
                ))))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// What every worker does.
struct Job {
    mode: Mode,
    engine: SocketAddr,
    target: SocketAddr,
    path: String,
    flow: String,
    proxy_auth: String,
    tls: Arc<rustls::ClientConfig>,
}

fn client_config(ca_pem: &str, resume: bool) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

async fn load(job: Arc<Job>, workers: usize, length: Duration) -> Result<(), Error> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let job = job.clone();
            tokio::spawn(async move { worker(&job, started + length).await })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0usize;
    for task in tasks {
        let (times, failed) = task.await?;
        latencies.extend(times);
        errors += failed;
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "requests={} errors={errors} seconds={seconds:.2} rps={:.0} p50_ms={:.3} p99_ms={:.3}",
        latencies.len(),
        latencies.len() as f64 / seconds,
        at(0.50),
        at(0.99)
    );
    Ok(())
}

/// Sends requests until `until`; returns each one's latency and how many failed.
async fn worker(job: &Job, until: Instant) -> (Vec<Duration>, usize) {
    let mut times = Vec::new();
    let mut errors = 0;
    let mut plain = None;
    while Instant::now() < until {
        let start = Instant::now();
        let result = match job.mode {
            Mode::Plain => plain_request(job, &mut plain).await,
            Mode::Tunnel | Mode::Resume => tunnel_request(job).await,
        };
        match result {
            Ok(()) => times.push(start.elapsed()),
            Err(err) => {
                errors += 1;
                plain = None;
                if errors == 1 {
                    eprintln!("tunnel_load: {err}");
                }
            }
        }
    }
    (times, errors)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One request on the worker's kept-alive connection (made on first use).
async fn plain_request(job: &Job, connection: &mut Option<Sender>) -> Result<(), Error> {
    if connection.is_none() {
        let stream = TcpStream::connect(job.engine).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        *connection = Some(sender);
    }
    let sender = connection.as_mut().ok_or("no connection")?;
    let req = Request::get(job.path.as_str())
        .header("host", job.engine.to_string())
        .header("tollgate-flow", job.flow.as_str())
        .body(Empty::new())?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    response.into_body().collect().await?;
    if !status.is_success() {
        return Err(format!("status {status}").into());
    }
    Ok(())
}

/// CONNECT, TLS handshake, one request, close.
async fn tunnel_request(job: &Job) -> Result<(), Error> {
    let mut stream = TcpStream::connect(job.engine).await?;
    stream.set_nodelay(true)?;
    let authority = job.target.to_string();
    let head = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: {}\r\n\r\n",
        job.proxy_auth
    );
    stream.write_all(head.as_bytes()).await?;
    let mut answer = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err("the CONNECT answer was cut".into());
        }
        answer.push(byte[0]);
    }
    if !answer.starts_with(b"HTTP/1.1 200") {
        return Err(format!("CONNECT: {}", String::from_utf8_lossy(&answer)).into());
    }
    let name = ServerName::from(job.target.ip());
    let tls = tokio_rustls::TlsConnector::from(job.tls.clone())
        .connect(name, stream)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = Request::get("/records")
        .header("host", authority)
        .header("connection", "close")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    response.into_body().collect().await?;
    if !status.is_success() {
        return Err(format!("status {status}").into());
    }
    Ok(())
}
