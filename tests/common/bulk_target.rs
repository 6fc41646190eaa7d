//! A mock target with the bulk APIs of Jira, Salesforce and ServiceNow, which creates some
//! records of a batch and refuses others the way those systems report it, and keeps count of
//! every record it created: the truth a test compares tollgate's counts with.
//!
//! A record is refused when its text contains `fail` (Jira: the summary; Salesforce: `Name`;
//! ServiceNow never refuses part of a batch). Paths (anywhere after the instance's base):
//! - `POST …/rest/api/2/issue/bulk` with `{"issueUpdates": [...]}`: 201
//!   `{"issues": [{"id", "key", "self"}…], "errors": [{"status": 400, "failedElementNumber": i}…]}`;
//! - `POST …/services/data/v60.0/composite/sobjects` with `{"allOrNone": false, "records":
//!   [...]}`: 200 `[{"id", "success": true, "errors": []} | {"success": false, "errors": […]}…]`;
//! - `POST …/api/now/import/{table}/insertMultiple` with `{"records": [...]}`: 201 with
//!   `{"import_set_id", "multi_import_set_id"}` (no record list: every record counts).
//!
//! The query changes the answer (it is not part of what tollgate classifies):
//! - `?status={code}`: answers that status and creates nothing;
//! - `?slow={ms}`: waits before answering;
//! - `?broken`: creates the batch, sends the head and part of the body, then breaks off;
//! - `?huge`: creates the batch and pads its answer with a megabyte of spaces.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::client::{flow_request, http1_client, Resp};

type AnswerBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// The mock bulk target.
pub struct BulkTarget {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    /// Records created, in all.
    created: AtomicU64,
    /// Requests that reached it.
    hits: AtomicUsize,
    /// Ids handed out.
    next_id: AtomicU64,
}

impl Drop for BulkTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BulkTarget {
    /// Starts on a free loopback port.
    pub async fn start() -> BulkTarget {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the bulk target on loopback");
        let addr = listener.local_addr().expect("the bulk target's address");
        let state = Arc::new(State::default());
        let task = tokio::spawn(serve(listener, state.clone()));
        BulkTarget { addr, state, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn base_uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Records created so far.
    pub fn created(&self) -> u64 {
        self.state.created.load(Ordering::SeqCst)
    }

    /// Requests that reached it so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, state.clone()));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Which record of a batch the target refuses.
fn refused(record: &Value) -> bool {
    record.to_string().contains("fail")
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<AnswerBody>, Infallible> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let has = |name: &str| query.iter().any(|(n, _)| n == name);
    let after = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some(ms) = after("slow") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = after("status") {
        let status = StatusCode::from_u16(code as u16).unwrap_or(StatusCode::BAD_REQUEST);
        return Ok(json_answer(
            status,
            &json!({"errorMessages": ["refused by the test"]}),
        ));
    }
    let document: Value = match serde_json::from_slice(&body) {
        Ok(document) => document,
        Err(err) => {
            return Ok(json_answer(
                StatusCode::BAD_REQUEST,
                &json!({"errorMessages": [format!("not JSON: {err}")]}),
            ))
        }
    };
    let id = || state.next_id.fetch_add(1, Ordering::SeqCst) + 1;
    let (status, answer, created) = if path.ends_with("/rest/api/2/issue/bulk") {
        let updates = document["issueUpdates"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut issues = Vec::new();
        let mut errors = Vec::new();
        for (i, update) in updates.iter().enumerate() {
            if refused(update) {
                errors.push(json!({"status": 400, "failedElementNumber": i, "elementErrors": {"errors": {"summary": "refused"}}}));
            } else {
                let n = id();
                issues.push(json!({"id": n.to_string(), "key": format!("ABC-{n}"), "self": format!("/rest/api/2/issue/{n}")}));
            }
        }
        let created = issues.len() as u64;
        (
            StatusCode::CREATED,
            json!({"issues": issues, "errors": errors}),
            created,
        )
    } else if path.ends_with("/composite/sobjects") {
        let records = document["records"].as_array().cloned().unwrap_or_default();
        let mut created = 0;
        let results: Vec<Value> = records
            .iter()
            .map(|record| {
                if refused(record) {
                    json!({"success": false, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING", "message": "refused"}]})
                } else {
                    created += 1;
                    json!({"id": format!("001{:012}", id()), "success": true, "errors": []})
                }
            })
            .collect();
        (StatusCode::OK, Value::Array(results), created)
    } else if path.ends_with("/insertMultiple") {
        let records = document["records"].as_array().map_or(0, Vec::len) as u64;
        (
            StatusCode::CREATED,
            json!({"import_set_id": format!("ISET{}", id()), "multi_import_set_id": format!("MISET{}", id())}),
            records,
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            json!({"error": "no such bulk API"}),
            0,
        )
    };
    state.created.fetch_add(created, Ordering::SeqCst);
    if has("broken") {
        let head = Bytes::from(answer.to_string()).slice(..4);
        // The head and a first part go out, then, a moment later, the answer breaks off.
        let frames = futures_util::StreamExt::chain(
            futures_util::stream::iter(vec![Ok(Frame::data(head))]),
            futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(std::io::Error::other("the test target breaks off"))
            }),
        );
        let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
        *response.status_mut() = status;
        return Ok(response);
    }
    let mut text = answer.to_string();
    if has("huge") {
        text.push_str(&" ".repeat(1 << 20));
    }
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn json_answer(status: StatusCode, body: &Value) -> Response<AnswerBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

/// A Jira bulk body of `count` issues, the ones whose index is in `failing` refused.
pub fn jira_batch(count: usize, failing: &[usize]) -> String {
    let updates: Vec<Value> = (0..count)
        .map(|i| {
            let summary = if failing.contains(&i) {
                format!("issue {i} will fail")
            } else {
                format!("issue {i}")
            };
            json!({"fields": {"project": {"key": "ABC"}, "summary": summary, "issuetype": {"name": "Task"}}})
        })
        .collect();
    json!({"issueUpdates": updates}).to_string()
}

/// A Salesforce sObject collection of `count` accounts, the ones in `failing` refused.
pub fn salesforce_batch(count: usize, failing: &[usize]) -> String {
    let records: Vec<Value> = (0..count)
        .map(|i| {
            let name = if failing.contains(&i) {
                format!("fail {i}")
            } else {
                format!("Account {i}")
            };
            json!({"attributes": {"type": "Account"}, "Name": name})
        })
        .collect();
    json!({"allOrNone": false, "records": records}).to_string()
}

/// A ServiceNow import-set body of `count` rows.
pub fn servicenow_batch(count: usize) -> String {
    let records: Vec<Value> = (0..count)
        .map(|i| json!({"short_description": format!("incident {i}")}))
        .collect();
    json!({"records": records}).to_string()
}

/// The issues a Jira bulk answer lists as created.
pub fn created_in(resp: &Resp) -> u64 {
    resp.json()["issues"].as_array().map_or(0, Vec::len) as u64
}

/// What concurrent bulk loaders saw.
#[derive(Debug, Default)]
pub struct BulkTally {
    /// Records the answers listed as created.
    pub created: u64,
    /// Answers other than 201 and 429, and transport errors.
    pub unexpected: Vec<String>,
}

/// Runs `per_engine` loaders against each engine listener, each sending Jira bulk creates
/// to `path` for `flow` (sizes 1 to 37 varying by loader and round, one record in seven
/// refused by the target) until it is refused with nothing left, or at the gate once the
/// flows stopped.
pub async fn load_until_spent(
    engines: &[SocketAddr],
    per_engine: u64,
    path: &str,
    flow: &str,
) -> BulkTally {
    let tally = Arc::new(Mutex::new(BulkTally::default()));
    let mut tasks = Vec::new();
    for (n, &engine) in engines.iter().enumerate() {
        for loader in 0..per_engine {
            let seed = n as u64 * per_engine + loader;
            let (tally, path, flow) = (tally.clone(), path.to_owned(), flow.to_owned());
            tasks.push(tokio::spawn(async move {
                let client = http1_client();
                for round in 0u64.. {
                    let size = 1 + (seed * 7 + round * 13) % 37;
                    let failing: Vec<usize> = (0..size as usize).filter(|i| i % 7 == 3).collect();
                    let body = jira_batch(size as usize, &failing);
                    let outcome =
                        flow_request(&client, engine, hyper::Method::POST, &path, &flow, body)
                            .await;
                    let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                    match outcome {
                        Ok(resp) if resp.status == StatusCode::CREATED => {
                            tally.created += created_in(&resp)
                        }
                        Ok(resp) if resp.status == StatusCode::TOO_MANY_REQUESTS => {
                            if resp.json()["remaining"].as_u64().unwrap_or(0) == 0 {
                                return;
                            }
                        }
                        Ok(resp) => {
                            tally
                                .unexpected
                                .push(format!("{} {}", resp.status, resp.text()));
                            return;
                        }
                        Err(err) => {
                            tally.unexpected.push(err);
                            return;
                        }
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("a bulk loader panicked");
    }
    Arc::try_unwrap(tally)
        .map(|tally| tally.into_inner().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_default()
}
