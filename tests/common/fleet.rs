//! Several sidecars sharing one license budget through one Redis: one issuer key every
//! sidecar trusts, the same license files on each, the same instances and flows, and
//! per sidecar its own scratch directory (so its own `state.dir`) and its own `node` name;
//! concurrent loaders against the sidecars' engine listeners that tally what they were
//! answered; and reading one sample out of a `/metrics` exposition.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};

use super::client::{flow_request, http1_client};
use super::config::{tollgate, Builder};
use super::licenses::{pair_license, with, Issuer};
use super::poll::eventually;
use super::process::Tollgate;
use super::upstream::Upstream;

/// The fleet's key namespace in every harness-made fleet.
pub const FLEET: &str = "acme-test";
/// The pair license every harness world installs (servicenow ↔ jira).
pub const LICENSE: &str = "LIC-FLEET";
/// The counted main entity of flow `incidents`: `POST /rest/api/2/issue` on jira-1.
pub const MAIN: &str = "/jira-1/rest/api/2/issue";
/// The counted main entity of flow `escalations`: `POST /rest/api/2/issue` on jira-2.
pub const MAIN_2: &str = "/jira-2/rest/api/2/issue";
/// A request of flow `incidents` that is not a counted load (a read on jira-1).
pub const NOT_COUNTED: &str = "/jira-1/rest/api/2/issue/KEY-1";

/// A pair license for servicenow ↔ jira with `points` and a monthly `records` limit.
pub fn metered_license(id: &str, points: u32, records: u64) -> Value {
    with(
        pair_license(id, "servicenow", "jira", points),
        "transferred_records",
        records,
    )
}

/// Instances and flows of every sidecar of a fleet.
pub type Shape = Arc<dyn Fn(Builder) -> Builder + Send + Sync>;

/// The lines of one `[[flows.entities]]` table.
fn entity(instance: &str, role: &str, method: &str, path: &str) -> [String; 5] {
    [
        "[[flows.entities]]".to_owned(),
        format!("instance = \"{instance}\""),
        format!("role = \"{role}\""),
        format!("method = \"{method}\""),
        format!("path = \"{path}\""),
    ]
}

/// servicenow-1, jira-1 and jira-2 forwarding to `target`; flow `incidents`
/// (servicenow-1 ↔ jira-1, enabled at start when `incidents_enabled`) whose main entity is
/// [`MAIN`], and flow `escalations` (servicenow-1 ↔ jira-2, a second pair, disabled at
/// start) whose main entity is [`MAIN_2`].
pub fn two_pairs(target: &str, incidents_enabled: bool) -> Shape {
    let target = target.to_owned();
    Arc::new(move |builder: Builder| {
        let mut incidents: Vec<String> = entity("jira-1", "main", "POST", "/rest/api/2/issue")
            .into_iter()
            .collect();
        let mut escalations: Vec<String> = entity("jira-2", "main", "POST", "/rest/api/2/issue")
            .into_iter()
            .collect();
        let flag = |enabled: bool| format!("enabled = {enabled}");
        // `enabled` belongs to the flow table, before its entities.
        incidents.insert(0, flag(incidents_enabled));
        escalations.insert(0, flag(false));
        let incidents: Vec<&str> = incidents.iter().map(String::as_str).collect();
        let escalations: Vec<&str> = escalations.iter().map(String::as_str).collect();
        builder
            .instance("servicenow-1", "servicenow", &target)
            .instance("jira-1", "jira", &target)
            .instance("jira-2", "jira", &target)
            .flow_with("incidents", ["servicenow-1", "jira-1"], &incidents)
            .flow_with("escalations", ["servicenow-1", "jira-2"], &escalations)
    })
}

/// What every sidecar of one fleet shares: the issuer, the license files, the Redis URL,
/// the `[state]` and `[licensing]` lines, the environment, the instances and flows.
pub struct Fleet {
    issuer: Issuer,
    licenses: Vec<(String, String)>,
    redis: String,
    state: Vec<String>,
    licensing: Vec<String>,
    env: Vec<(String, String)>,
    shape: Shape,
}

impl Fleet {
    /// A fleet on `redis` (a `redis://` URL) whose sidecars have the instances and flows
    /// of `shape`; a fresh issuer key, no licenses yet.
    pub fn new(redis: &str, shape: Shape) -> Fleet {
        Fleet {
            issuer: Issuer::scratch(),
            licenses: Vec::new(),
            redis: redis.to_owned(),
            state: Vec::new(),
            licensing: Vec::new(),
            env: Vec::new(),
            shape,
        }
    }

    /// Signs `payload` once; every sidecar gets the same file, `licenses/<id>.lic`.
    pub fn license(mut self, payload: &Value) -> Fleet {
        let text = self.issuer.sign(payload);
        let id = payload["id"].as_str().unwrap_or("license");
        self.licenses.push((format!("{id}.lic"), text));
        self
    }

    /// A `[state]` line every sidecar gets (e.g. `lease_max = 20`).
    pub fn state_option(mut self, line: &str) -> Fleet {
        self.state.push(line.to_owned());
        self
    }

    /// A `[licensing]` line every sidecar gets.
    pub fn licensing_option(mut self, line: &str) -> Fleet {
        self.licensing.push(line.to_owned());
        self
    }

    /// An environment variable every sidecar is started with (e.g. `TOLLGATE_NOW`).
    pub fn env(mut self, name: &str, value: &str) -> Fleet {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The Redis URL the sidecars use.
    pub fn redis_url(&self) -> &str {
        &self.redis
    }

    /// The shared environment, as [`Builder::start_with`] takes it.
    fn env_refs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    /// The builder of sidecar `node`: its own scratch directory, the shared key and
    /// license files, `[state]` with `redis`, `fleet = "acme-test"` and `node`, then the
    /// shared lines, instances and flows. Without a `redis` line of its own the fleet's is
    /// used; [`Fleet::builder_without_redis`] leaves it out.
    pub fn builder(&self, node: &str) -> Builder {
        self.builder_without_redis(node)
            .state_option(&format!("redis = \"{}\"", self.redis))
    }

    /// Like [`Fleet::builder`] but with no `redis` line (the caller writes its own, e.g.
    /// with a password in it).
    pub fn builder_without_redis(&self, node: &str) -> Builder {
        let mut builder = tollgate()
            .issuer_from(&self.issuer)
            .state_option(&format!("fleet = \"{FLEET}\""))
            .state_option(&format!("node = \"{node}\""));
        for line in &self.state {
            builder = builder.state_option(line);
        }
        for line in &self.licensing {
            builder = builder.licensing_option(line);
        }
        for (name, text) in &self.licenses {
            builder = builder.license_text(name, text);
        }
        (self.shape)(builder)
    }

    /// Starts sidecar `node`; returns once it is ready.
    pub async fn start(&self, node: &str) -> Tollgate {
        self.builder(node).start_with(&[], &self.env_refs()).await
    }

    /// Starts sidecar `node` with `env` added; returns once it is ready.
    pub async fn start_env(&self, node: &str, env: &[(&str, &str)]) -> Tollgate {
        let mut all = self.env_refs();
        all.extend_from_slice(env);
        self.builder(node).start_with(&[], &all).await
    }

    /// Starts sidecar `node`; returns once it wrote its ready file, ready or not.
    pub async fn start_unready(&self, node: &str) -> Tollgate {
        self.builder(node).start_unready(&self.env_refs()).await
    }

    /// Starts sidecars `sidecar-a`, `sidecar-b`, … one after the other.
    pub async fn start_nodes(&self, count: usize) -> Vec<Tollgate> {
        let mut sidecars = Vec::new();
        for i in 0..count {
            sidecars.push(self.start(&node_name(i)).await);
        }
        sidecars
    }

    /// The shared environment (for [`Tollgate::restart`]).
    pub fn restart_env(&self) -> Vec<(&str, &str)> {
        self.env_refs()
    }
}

/// `sidecar-a`, `sidecar-b`, … for 0, 1, …
pub fn node_name(i: usize) -> String {
    format!("sidecar-{}", char::from(b'a' + i as u8))
}

/// One answer that was not 2xx.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The status code.
    pub status: u16,
    /// The `Tollgate-Reason` header.
    pub reason: Option<String>,
    /// The content type.
    pub content_type: Option<String>,
    /// The body.
    pub body: String,
    /// How long the answer took.
    pub elapsed: Duration,
}

impl Refusal {
    /// Whether this is the problem `code` with `status`, in `application/problem+json`
    /// with the `Tollgate-Reason` header and the `type` URN.
    pub fn is(&self, status: u16, code: &str) -> bool {
        let typed = serde_json::from_str::<Value>(&self.body)
            .map(|p| p["type"] == format!("urn:tollgate:problem:{code}"))
            .unwrap_or(false);
        self.status == status
            && self.reason.as_deref() == Some(code)
            && self
                .content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/problem+json"))
            && typed
    }
}

/// What the loaders against one sidecar were answered.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Counted loads answered 2xx.
    pub ok: usize,
    /// Answers that were not 2xx, in arrival order per loader.
    pub refused: Vec<Refusal>,
    /// Transport errors (no answer at all).
    pub errors: Vec<String>,
    /// The longest time any answer took.
    pub slowest: Duration,
}

impl Tally {
    fn absorb(&mut self, other: Tally) {
        self.ok += other.ok;
        self.refused.extend(other.refused);
        self.errors.extend(other.errors);
        self.slowest = self.slowest.max(other.slowest);
    }

    /// The refusals that are not the problem `code` with `status`.
    pub fn refused_other_than(&self, status: u16, code: &str) -> Vec<&Refusal> {
        self.refused
            .iter()
            .filter(|r| !r.is(status, code))
            .collect()
    }

    /// The refusals that are the problem `code` with `status`.
    pub fn refused_as(&self, status: u16, code: &str) -> usize {
        self.refused.iter().filter(|r| r.is(status, code)).count()
    }
}

/// How the loaders behave.
#[derive(Clone, Copy)]
pub struct Load {
    /// Concurrent loaders per sidecar.
    pub loaders: usize,
    /// A loader that is answered `503 store-unavailable` retries (50 ms later) until this
    /// long after the start; any other refusal, and a 503 after it, stops the loader.
    pub retry_unavailable_for: Duration,
    /// Path of the counted load.
    pub path: &'static str,
    /// Flow of the counted load.
    pub flow: &'static str,
    /// A pause after each answer (zero: as fast as answers come).
    pub pace: Duration,
}

impl Load {
    /// `loaders` loaders per sidecar sending [`MAIN`] of `incidents` until refused.
    pub fn until_refused(loaders: usize) -> Load {
        Load {
            loaders,
            retry_unavailable_for: Duration::ZERO,
            path: MAIN,
            flow: "incidents",
            pace: Duration::ZERO,
        }
    }

    /// Like [`Load::until_refused`], retrying `503 store-unavailable` for `window`.
    pub fn retrying_unavailable(loaders: usize, window: Duration) -> Load {
        Load {
            retry_unavailable_for: window,
            ..Load::until_refused(loaders)
        }
    }
}

/// Runs `load` against every engine listener at once (all loaders start together after
/// a barrier); returns one tally per engine, in order.
pub async fn load_fleet(engines: &[SocketAddr], load: Load) -> Vec<Tally> {
    let start = Arc::new(tokio::sync::Barrier::new(engines.len() * load.loaders));
    let mut tasks = Vec::new();
    for (index, engine) in engines.iter().enumerate() {
        for _ in 0..load.loaders {
            let engine = *engine;
            let start = start.clone();
            tasks.push((
                index,
                tokio::spawn(async move { loader(engine, load, start).await }),
            ));
        }
    }
    let mut tallies = vec![Tally::default(); engines.len()];
    for (index, task) in tasks {
        tallies[index].absorb(task.await.expect("a loader task"));
    }
    tallies
}

/// One loader: counted loads one after the other until refused (see [`Load`]).
async fn loader(engine: SocketAddr, load: Load, start: Arc<tokio::sync::Barrier>) -> Tally {
    let client = http1_client();
    let mut tally = Tally::default();
    start.wait().await;
    let began = Instant::now();
    loop {
        let sent = Instant::now();
        let answer = flow_request(
            &client,
            engine,
            Method::POST,
            load.path,
            load.flow,
            "{\"fields\":{}}",
        )
        .await;
        let elapsed = sent.elapsed();
        tally.slowest = tally.slowest.max(elapsed);
        match answer {
            Ok(resp) if resp.status.is_success() => {
                tally.ok += 1;
                if !load.pace.is_zero() {
                    tokio::time::sleep(load.pace).await;
                }
            }
            Ok(resp) => {
                let refusal = Refusal {
                    status: resp.status.as_u16(),
                    reason: resp.header("tollgate-reason").map(str::to_owned),
                    content_type: resp.header("content-type").map(str::to_owned),
                    body: resp.text(),
                    elapsed,
                };
                let retry = refusal.is(503, "store-unavailable")
                    && began.elapsed() < load.retry_unavailable_for;
                tally.refused.push(refusal);
                if !retry {
                    return tally;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => {
                tally.errors.push(err);
                return tally;
            }
        }
    }
}

/// How many counted loads (`POST /rest/api/2/issue` on either jira instance) reached
/// `target`.
pub fn counted_hits(target: &Upstream) -> usize {
    target
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path == "/rest/api/2/issue")
        .count()
}

/// Sends `count` counted loads of `incidents` to `tg` one after the other, asserting each
/// is answered 2xx.
pub async fn loads_ok(tg: &Tollgate, count: usize) {
    for n in 1..=count {
        let resp = tg.post(MAIN, Some("incidents"), "{\"fields\":{}}").await;
        assert!(
            resp.status.is_success(),
            "counted load {n} of {count}: {} {}\nlog:\n{}",
            resp.status,
            resp.text(),
            tg.logs()
        );
    }
}

/// `records.used` of [`LICENSE`] in `GET /v1/licenses`.
pub async fn used(tg: &Tollgate) -> u64 {
    let records = tg.records(LICENSE).await;
    records["used"]
        .as_u64()
        .unwrap_or_else(|| panic!("records.used is not a number: {records}"))
}

/// Waits up to `timeout` until `records.used` of [`LICENSE`] on `tg` is `expected`.
pub async fn await_used(tg: &Tollgate, expected: u64, timeout: Duration, what: &str) {
    let mut last = json!(null);
    let found = tokio::time::timeout(timeout, async {
        loop {
            let records = tg.records(LICENSE).await;
            if records["used"] == expected {
                return;
            }
            last = records;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "{what}: records.used of {LICENSE} did not become {expected} within {timeout:?}; \
         last seen {last}"
    );
}

/// The `fleet` object of [`LICENSE`]'s entry in `GET /v1/licenses`.
pub async fn license_fleet(tg: &Tollgate) -> Value {
    tg.license(LICENSE)
        .await
        .unwrap_or_else(|| panic!("{LICENSE} not in /v1/licenses"))["fleet"]
        .clone()
}

/// What `tg` holds of its lease and has not drawn yet:
/// `tollgate_fleet_lease_records{license="LIC-FLEET"}` (None while it has no such sample).
pub async fn unused_by(tg: &Tollgate) -> Option<u64> {
    let metrics = tg.metrics_text().await;
    metric(
        &metrics,
        "tollgate_fleet_lease_records",
        &[("license", LICENSE)],
    )
    .map(|n| n as u64)
}

/// Waits up to `timeout` until `GET /v1/flows` on `tg` shows flow `id` with `enabled`
/// and `reason`; returns how long that took.
pub async fn await_flow(
    tg: &Tollgate,
    id: &str,
    enabled: bool,
    reason: Value,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    eventually(
        &format!(
            "flow {id} enabled={enabled} reason={reason} on {}",
            tg.admin
        ),
        timeout,
        || async {
            let flow = tg.flow(id).await;
            (flow["enabled"] == enabled && flow["reason"] == reason).then_some(())
        },
    )
    .await;
    start.elapsed()
}

/// The value of the sample `name` whose labels include every `(key, value)` of `labels`
/// in a Prometheus text exposition (the first such sample), if any.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let matches = labels.iter().all(|(key, want)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{key}=\"{want}\""))
            });
            if !matches {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .next()
}
