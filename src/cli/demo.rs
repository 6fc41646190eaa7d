//! `tollgate demo` (docs/cli.md): one process on loopback — a simulated ServiceNow and Jira, the
//! sidecar with a freshly signed demo license (100 transferred records a month), and an
//! engine that moves incidents into Jira at a visible pace until the hard limit refuses it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::output::say;
use super::usage::{fetch, HttpClient};
use super::{table, CliError, LogFormat};
use crate::clock::SystemClock;
use crate::license;
use crate::sidecar::Sidecar;

/// The demo license's monthly limit; the hard limit is 10% above it.
const LIMIT: u64 = 100;
const HARD_LIMIT: u64 = LIMIT + LIMIT / 10;
/// Refused loads the engine tries before it gives up.
const REFUSALS_TO_STOP: u64 = 3;

/// Runs the demo; `pace` is the time between two records.
pub(super) fn run(pace: Duration) -> Result<ExitCode, CliError> {
    super::run::init_logging_at(LogFormat::Human, "warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let dir = std::env::temp_dir().join(format!("tollgate-demo-{}", std::process::id()));
    let result = runtime.block_on(demo(&dir, pace));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn demo(dir: &Path, pace: Duration) -> Result<ExitCode, CliError> {
    let servicenow = Target::start("servicenow").await?;
    let jira = Target::start("jira").await?;
    let config = write_setup(dir, servicenow.addr, jira.addr)?;
    let sidecar = Sidecar::start(&config, Arc::new(SystemClock), None).await?;
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap_or_default();
    say!("tollgate demo: a simulated ServiceNow and Jira on loopback, the sidecar between them and an engine");
    say!(
        "  console:   http://{}/   (admin token: {})",
        sidecar.admin,
        token.trim()
    );
    say!("  engine  -> http://{}/jira-1/rest/api/2/issue   (flow \"incidents\", license LIC-DEMO-LIVE: {LIMIT} records/month, hard limit {HARD_LIMIT})", sidecar.engine);
    say!();

    let run = Engine::new(sidecar.engine).drive(pace).await;
    let admin: Uri = format!("http://{}", sidecar.admin)
        .parse()
        .map_err(|err| CliError::at("admin address", err))?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let usage = fetch(&client, &admin, Some(token.trim()), "/v1/usage").await;
    let flows = fetch(&client, &admin, Some(token.trim()), "/v1/flows").await;
    sidecar.shutdown().await;
    let run = run?;

    let recorded = usage
        .as_ref()
        .ok()
        .and_then(|u| u["licenses"][0]["used"].as_u64())
        .unwrap_or(0);
    let flow_state = flows
        .as_ref()
        .ok()
        .and_then(|f| f.as_array().and_then(|a| a.first()).cloned())
        .map_or("unknown".to_owned(), |f| {
            if f["enabled"] == true {
                "enabled".to_owned()
            } else {
                format!("disabled ({})", f["reason"].as_str().unwrap_or("-"))
            }
        });
    let mut summary = table(["summary", "value"]);
    summary.add_row([
        "records accepted by Jira (2xx)".to_owned(),
        run.accepted.to_string(),
    ]);
    summary.add_row([
        "records counted by tollgate".to_owned(),
        recorded.to_string(),
    ]);
    summary.add_row([
        "monthly limit / hard limit".to_owned(),
        format!("{LIMIT} / {HARD_LIMIT}"),
    ]);
    summary.add_row([
        "warning first seen at record".to_owned(),
        run.warned_at.map_or("-".to_owned(), |n| n.to_string()),
    ]);
    summary.add_row([
        "loads refused (429 records-limit-exceeded)".to_owned(),
        run.refused.to_string(),
    ]);
    summary.add_row([
        "incidents read from ServiceNow".to_owned(),
        servicenow.hits().to_string(),
    ]);
    summary.add_row(["Jira issues created".to_owned(), jira.hits().to_string()]);
    summary.add_row(["flow \"incidents\" afterwards".to_owned(), flow_state]);
    summary.add_row([
        "elapsed".to_owned(),
        format!("{:.1} s", run.elapsed.as_secs_f64()),
    ]);
    say!("{summary}");
    let ok = run.accepted == HARD_LIMIT && recorded == HARD_LIMIT && run.refused > 0;
    say!(
        "{}",
        if ok {
            "demo complete: the hard limit held exactly"
        } else {
            "demo finished, but the counts are not what they should be"
        }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Issuer key, demo license, admin token and config in `dir`; returns the config path.
fn write_setup(dir: &Path, servicenow: SocketAddr, jira: SocketAddr) -> Result<PathBuf, CliError> {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|err| CliError::at(path.display(), err))
    };
    std::fs::create_dir_all(dir.join("licenses"))
        .map_err(|err| CliError::at(dir.display(), err))?;
    let (private, public) = license::generate_keypair();
    write("issuer.pub", &public)?;
    let key = license::signing_key_from_pem(&private)
        .map_err(|err| CliError::at("demo issuer key", err))?;
    let now = Utc::now();
    let payload = json!({
        "version": 1, "id": "LIC-DEMO-LIVE", "kind": "pair", "company": "Demo Corp",
        "registered_to": "tollgate demo", "email": "demo@tollgate.example",
        "start": (now - TimeDelta::days(1)).to_rfc3339(), "expire": (now + TimeDelta::days(30)).to_rfc3339(),
        "system_a": "servicenow", "system_b": "jira", "points": 1, "transferred_records": LIMIT,
    });
    let signed = license::sign(payload.to_string().as_bytes(), &key)
        .map_err(|err| CliError::at("demo license", err))?;
    write("licenses/LIC-DEMO-LIVE.lic", &signed)?;
    write(
        "admin.token",
        &format!("demo-{:x}\n", now.timestamp_nanos_opt().unwrap_or(0)),
    )?;
    let config = format!(
        r#"[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
token_file = "admin.token"
[licensing]
public_keys = ["issuer.pub"]
license_dir = "licenses"
[state]
dir = "state"
[[instances]]
id = "servicenow-1"
connector = "named"
app = "servicenow"
base_uri = "http://{servicenow}"
[[instances]]
id = "jira-1"
connector = "named"
app = "jira"
base_uri = "http://{jira}"
[[flows]]
id = "incidents"
systems = ["servicenow-1", "jira-1"]
[[flows.entities]]
instance = "jira-1"
role = "main"
method = "POST"
path = "/rest/api/2/issue"
[[flows.entities]]
instance = "jira-1"
role = "child"
method = "POST"
path = "/rest/api/2/issue/{{key}}/comment"
"#
    );
    write("tollgate.toml", &config)?;
    Ok(dir.join("tollgate.toml"))
}

/// A simulated target system: answers reads with a record and creates records on POST.
struct Target {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
}

impl Target {
    async fn start(name: &'static str) -> Result<Target, CliError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|err| CliError::at(format!("simulated {name}"), err))?;
        let addr = listener
            .local_addr()
            .map_err(|err| CliError::at(format!("simulated {name}"), err))?;
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let counter = counter.clone();
                        async move { Ok::<_, Infallible>(answer(name, &counter, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Target { addr, hits })
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

fn answer(name: &str, hits: &AtomicU64, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let n = hits.fetch_add(1, Ordering::Relaxed) + 1;
    let (status, body) = match (name, req.method()) {
        ("jira", &Method::POST) => (
            StatusCode::CREATED,
            json!({"id": n.to_string(), "key": format!("DEMO-{n}")}),
        ),
        _ => (
            StatusCode::OK,
            json!({"result": [{"number": format!("INC{n:07}"), "short_description": "Printer on fire"}]}),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}

/// What the engine saw.
struct EngineRun {
    accepted: u64,
    refused: u64,
    warned_at: Option<u64>,
    elapsed: Duration,
}

/// The simulated integration engine: reads an incident, creates a Jira issue, repeats.
struct Engine {
    tollgate: SocketAddr,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Engine {
    fn new(tollgate: SocketAddr) -> Engine {
        Engine {
            tollgate,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Value,
    ) -> Result<Response<Incoming>, CliError> {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.tollgate))
            .header("tollgate-flow", "incidents")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|err| CliError::at("engine", err))?;
        self.client
            .request(request)
            .await
            .map_err(|err| CliError::at("engine: cannot reach tollgate", err))
    }

    async fn drive(&self, pace: Duration) -> Result<EngineRun, CliError> {
        let started = Instant::now();
        let bar = ProgressBar::with_draw_target(Some(HARD_LIMIT), ProgressDrawTarget::stdout());
        bar.set_style(
            ProgressStyle::with_template("  records {bar:44.green/blue} {pos:>3}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("#>-"),
        );
        let mut run = EngineRun {
            accepted: 0,
            refused: 0,
            warned_at: None,
            elapsed: Duration::ZERO,
        };
        while run.refused < REFUSALS_TO_STOP && started.elapsed() < Duration::from_secs(50) {
            let read = self
                .send(
                    Method::GET,
                    "/servicenow-1/api/now/table/incident?sysparm_limit=1",
                    Value::Null,
                )
                .await?;
            let _ = read.into_body().collect().await;
            let load = self
                .send(
                    Method::POST,
                    "/jira-1/rest/api/2/issue",
                    json!({"fields": {"summary": "Printer on fire"}}),
                )
                .await?;
            let status = load.status();
            let warning = load
                .headers()
                .get("tollgate-warning")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let reason = load
                .headers()
                .get("tollgate-reason")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let _ = load.into_body().collect().await;
            if status.is_success() {
                run.accepted += 1;
                bar.set_position(run.accepted);
                if let (Some(warning), None) = (warning, run.warned_at) {
                    run.warned_at = Some(run.accepted);
                    say(
                        &bar,
                        format!(
                            "  warning at record {}: Tollgate-Warning: {warning}",
                            run.accepted
                        ),
                    );
                    bar.set_message("over the limit, inside the 10% buffer");
                }
            } else {
                run.refused += 1;
                if run.refused == 1 {
                    say(
                        &bar,
                        format!(
                            "  refused after record {}: {} {}",
                            run.accepted,
                            status.as_u16(),
                            reason.as_deref().unwrap_or("-")
                        ),
                    );
                    bar.set_message("refused");
                }
            }
            tokio::time::sleep(pace).await;
        }
        bar.finish();
        run.elapsed = started.elapsed();
        Ok(run)
    }
}

/// Prints a milestone above the progress bar, or as a plain line where there is no terminal.
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        say!("{line}");
    } else {
        bar.println(line);
    }
}
