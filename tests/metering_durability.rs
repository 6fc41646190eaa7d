//! Counts and flow states on disk: in `strict` durability a `kill -9`
//! mid-load loses no count an engine saw answered and counts nothing the target did not
//! accept, however often in a row (the count journal is replayed at each start); SIGTERM drains and stores exactly what was answered; flow states (operator
//! changes, the records-limit stop) survive restarts; `batched` counts reach the store
//! within `flush_interval` and at SIGTERM.
//!
//! Built with the `test-clock` feature every run is pinned to the middle of a month (so a
//! real month boundary can never split a test); without it the tests use the real clock.

pub mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::Value;

const NOW: &str = "2026-11-15T12:00:00Z";
/// The main entity of `incidents` is `POST /slow/{ms}/issue` on jira-1: the target waits
/// this long before answering, so loads are in flight whenever the sidecar is stopped.
const LOAD: &str = "/jira-1/slow/10/issue";
const LOAD_AT_TARGET: &str = "/slow/10/issue";
const EXIT: Duration = Duration::from_secs(20);

fn env() -> [(&'static str, &'static str); 1] {
    [("TOLLGATE_NOW", NOW)]
}

fn main_entity(instance: &str, path: &str) -> [String; 5] {
    [
        "[[flows.entities]]".to_owned(),
        format!("instance = \"{instance}\""),
        "role = \"main\"".to_owned(),
        "method = \"POST\"".to_owned(),
        format!("path = \"{path}\""),
    ]
}

fn refs(lines: &[String]) -> Vec<&str> {
    lines.iter().map(String::as_str).collect()
}

/// One flow `incidents` (servicenow-1 ↔ jira-1) under `LIC-DUR` (limit far away).
async fn world(target: &Upstream, state: &[&str]) -> Tollgate {
    let uri = target.base_uri();
    let entity = main_entity("jira-1", "/slow/{ms}/issue");
    tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .flow_with("incidents", ["servicenow-1", "jira-1"], &refs(&entity))
        .license(&with(
            pair_license("LIC-DUR", "servicenow", "jira", 1),
            "transferred_records",
            1_000_000,
        ))
        .start_with(state, &env())
        .await
}

fn hits_on(target: &Upstream, path: &str) -> usize {
    target
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path == path)
        .count()
}

/// Concurrent loaders sending main loads until their connection fails (the sidecar is gone).
struct Loaders {
    answered: Arc<AtomicUsize>,
    unexpected: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Loaders {
    fn start(tg: &Tollgate, count: usize) -> Loaders {
        let engine = tg.engine;
        Loaders::start_with(count, move || {
            let client = http1_client();
            async move { flow_request(&client, engine, Method::POST, LOAD, "incidents", "{}").await }
        })
    }

    /// Loaders each sending `send()`'s request until it fails (the sidecar is gone).
    fn start_with<S, F>(count: usize, send: S) -> Loaders
    where
        S: Fn() -> F + Clone + Send + 'static,
        F: std::future::Future<Output = Result<Resp, String>> + Send,
    {
        let answered = Arc::new(AtomicUsize::new(0));
        let unexpected = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..count)
            .map(|_| {
                let (answered, unexpected) = (answered.clone(), unexpected.clone());
                let send = send.clone();
                tokio::spawn(async move {
                    loop {
                        match send().await {
                            Ok(resp) if resp.status.is_success() => {
                                answered.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(resp) => {
                                unexpected.lock().unwrap().push(format!(
                                    "{} {}",
                                    resp.status,
                                    resp.text()
                                ));
                                return;
                            }
                            // The sidecar stopped: connection reset or refused.
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        Loaders {
            answered,
            unexpected,
            tasks,
        }
    }

    async fn wait_for(&self, answered: usize) {
        eventually(
            &format!("{answered} answered loads"),
            Duration::from_secs(30),
            || async { (self.answered.load(Ordering::SeqCst) >= answered).then_some(()) },
        )
        .await;
    }

    /// Waits for every loader to end; returns how many loads were answered 2xx.
    async fn finish(self) -> usize {
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(40), task)
                .await
                .expect("a loader hung after the sidecar stopped")
                .unwrap();
        }
        let unexpected = self.unexpected.lock().unwrap();
        assert!(
            unexpected.is_empty(),
            "loads answered other than 2xx: {unexpected:?}"
        );
        self.answered.load(Ordering::SeqCst)
    }
}

/// The stored count of `LIC-DUR` and of flow `incidents` after a restart.
async fn stored(tg: &Tollgate) -> (u64, u64) {
    let license = tg.records("LIC-DUR").await["used"].as_u64().unwrap();
    assert_eq!(tg.usage_of_license(None, "LIC-DUR").await, license);
    (license, tg.usage_of_flow(None, "incidents").await)
}

/// Stops `tg` with SIGTERM (it must exit cleanly, having drained and flushed) and starts it
/// again on the same state directory.
async fn sigterm_and_restart(tg: &mut Tollgate) {
    let status = tg.terminate(EXIT).await;
    assert!(status.success(), "SIGTERM exit: {status}\n{}", tg.logs());
    tg.restart(&env()).await;
}

/// Kills `tg` with -9 once `loaders` have had `answered` loads answered, restarts it, and
/// checks that the stored count lies between the loads answered 2xx and those `target`
/// accepted, for the license and the flow alike; returns the stored counts.
async fn kill_9_after(
    tg: &mut Tollgate,
    loaders: Loaders,
    answered: usize,
    target: &Upstream,
) -> (u64, u64) {
    loaders.wait_for(answered).await;
    tg.kill9();
    let status = tg
        .wait_exit(EXIT)
        .await
        .expect("kill -9 did not end tollgate");
    assert!(!status.success(), "{status}");
    let answered = loaders.finish().await;
    let accepted = hits_on(target, LOAD_AT_TARGET);

    tg.restart(&env()).await;
    let (license, flow) = stored(tg).await;
    assert!(
        answered as u64 <= license && license <= accepted as u64,
        "stored {license} must lie between the {answered} loads answered 2xx and the {accepted} the target accepted"
    );
    assert_eq!(flow, license, "the flow's count and the license's count");
    (license, flow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_no_answered_count_and_invents_none() {
    let target = Upstream::plain("target").await;
    let mut tg = world(&target, &["durability = \"strict\""]).await;

    let loaders = Loaders::start(&tg, 32);
    let (license, flow) = kill_9_after(&mut tg, loaders, 150, &target).await;

    // The restarted sidecar counts on from there.
    tg.post(LOAD, Some("incidents"), "{}")
        .await
        .assert_upstream_ok("target");
    assert_eq!(stored(&tg).await, (license + 1, flow + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_drains_and_stores_exactly_what_was_answered() {
    let target = Upstream::plain("target").await;
    let mut tg = world(&target, &[]).await;

    let loaders = Loaders::start(&tg, 32);
    loaders.wait_for(150).await;
    let status = tg.terminate(EXIT).await;
    assert!(status.success(), "SIGTERM exit: {status}\n{}", tg.logs());
    let answered = loaders.finish().await;
    let accepted = hits_on(&target, LOAD_AT_TARGET);

    tg.restart(&env()).await;
    let (license, flow) = stored(&tg).await;
    assert_eq!(
        (license, flow, accepted as u64),
        (answered as u64, answered as u64, answered as u64),
        "(stored for the license, stored for the flow, accepted by the target) after SIGTERM must all equal the {answered} loads answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_states_survive_restarts() {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let on_jira1 = main_entity("jira-1", "/rest/api/2/issue");
    let on_jira2 = main_entity("jira-2", "/rest/api/2/issue");
    let mut late = refs(&on_jira2);
    late.insert(0, "enabled = false");
    let mut tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .instance("jira-2", "jira", &uri)
        .instance("salesforce-1", "salesforce", &uri)
        .flow_with("incidents", ["servicenow-1", "jira-1"], &refs(&on_jira1))
        .flow_with("ops", ["servicenow-1", "jira-1"], &refs(&on_jira1))
        .flow_with("late", ["servicenow-1", "jira-2"], &late)
        .flow_with("crm", ["salesforce-1", "jira-1"], &refs(&on_jira1))
        .license(&pair_license("LIC-SNJ", "servicenow", "jira", 2))
        .license(&with(
            pair_license("LIC-SFJ", "salesforce", "jira", 1),
            "transferred_records",
            2,
        ))
        .start_with(&[], &env())
        .await;
    assert_eq!(tg.flow("late").await["enabled"], false);

    // The operator disables ops and enables late; crm spends its records (hard limit 2).
    let resp = tg.admin_post("/v1/flows/ops/disable", "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let resp = tg.admin_post("/v1/flows/late/enable", "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    for _ in 0..2 {
        tg.post("/jira-1/rest/api/2/issue", Some("crm"), "{}")
            .await
            .assert_upstream_ok("target");
    }
    tg.post("/jira-1/rest/api/2/issue", Some("crm"), "{}")
        .await
        .assert_problem(429, "records-limit-exceeded");
    eventually(
        "crm stopped by the records limit",
        Duration::from_secs(10),
        || async { (tg.flow("crm").await["reason"] == "records-limit").then_some(()) },
    )
    .await;

    let expect = |ops_enabled: bool| {
        move |flows: Vec<Value>| {
            let state = |id: &str| {
                let flow = flows.iter().find(|f| f["id"] == id).unwrap();
                (flow["enabled"].as_bool().unwrap(), flow["reason"].clone())
            };
            assert_eq!(state("incidents"), (true, Value::Null), "{flows:?}");
            if ops_enabled {
                assert_eq!(state("ops"), (true, Value::Null), "{flows:?}");
            } else {
                assert_eq!(state("ops"), (false, "operator".into()), "{flows:?}");
            }
            assert_eq!(state("late"), (true, Value::Null), "{flows:?}");
            assert_eq!(state("crm"), (false, "records-limit".into()), "{flows:?}");
        }
    };
    expect(false)(tg.flows().await);

    // SIGTERM and restart within the same month: nothing changes.
    sigterm_and_restart(&mut tg).await;
    expect(false)(tg.flows().await);
    let resp = tg.post("/jira-1/rest/api/2/issue", Some("ops"), "{}").await;
    assert_eq!(
        resp.assert_problem(403, "flow-disabled")["reason"],
        "operator"
    );
    let resp = tg.post("/jira-1/rest/api/2/issue", Some("crm"), "{}").await;
    assert_eq!(
        resp.assert_problem(429, "records-limit-exceeded")["reason"],
        "records-limit"
    );
    let resp = tg.get("/salesforce-1/services/data", Some("crm")).await;
    resp.assert_problem(429, "records-limit-exceeded");
    tg.post("/jira-2/rest/api/2/issue", Some("late"), "{}")
        .await
        .assert_upstream_ok("target");
    tg.post("/jira-1/rest/api/2/issue", Some("incidents"), "{}")
        .await
        .assert_upstream_ok("target");
    assert_eq!(tg.records("LIC-SFJ").await["used"], 2);
    let resp = tg.admin_post("/v1/flows/crm/enable", "").await;
    resp.assert_admin_problem(409, "records-limit-exceeded");

    // A change is on disk as soon as it is answered: kill -9 right after enabling ops.
    let resp = tg.admin_post("/v1/flows/ops/enable", "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    tg.kill9();
    tg.wait_exit(EXIT)
        .await
        .expect("kill -9 did not end tollgate");
    tg.restart(&env()).await;
    expect(true)(tg.flows().await);
    tg.post("/jira-1/rest/api/2/issue", Some("ops"), "{}")
        .await
        .assert_upstream_ok("target");
    assert_eq!(tg.records("LIC-SFJ").await["used"], 2);
    assert_eq!(tg.records("LIC-SNJ").await["used"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_counts_reach_the_store_within_the_flush_interval_and_at_sigterm() {
    let target = Upstream::plain("target").await;
    let mut tg = world(
        &target,
        &["durability = \"batched\"", "flush_interval = \"300ms\""],
    )
    .await;

    for _ in 0..10 {
        tg.post(LOAD, Some("incidents"), "{}")
            .await
            .assert_upstream_ok("target");
    }
    assert_eq!(stored(&tg).await, (10, 10), "the live counters");
    // Past the flush interval the counts are on disk: a kill -9 cannot lose them.
    tokio::time::sleep(Duration::from_millis(900)).await;
    tg.kill9();
    tg.wait_exit(EXIT)
        .await
        .expect("kill -9 did not end tollgate");
    tg.restart(&env()).await;
    assert_eq!(
        stored(&tg).await,
        (10, 10),
        "after kill -9 past the flush interval"
    );

    // SIGTERM flushes what the interval has not yet written.
    for _ in 0..7 {
        tg.post(LOAD, Some("incidents"), "{}")
            .await
            .assert_upstream_ok("target");
    }
    sigterm_and_restart(&mut tg).await;
    assert_eq!(stored(&tg).await, (17, 17), "after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_state_dir_waits_for_a_restart_and_counts_stay_in_the_running_store() {
    let target = Upstream::plain("target").await;
    let mut tg = world(&target, &["durability = \"strict\""]).await;
    tg.post(LOAD, Some("incidents"), "{}")
        .await
        .assert_upstream_ok("target");
    assert_eq!(tg.status().await["restart_required"], serde_json::json!([]));

    // SIGHUP with another store: both keys are named, in the log and in the status.
    let original = tg.config_text().to_owned();
    let moved = original
        .replacen("dir = \"state\"", "dir = \"moved-state\"", 1)
        .replacen("durability = \"strict\"", "durability = \"batched\"", 1);
    assert_ne!(moved, original);
    std::fs::write(tg.config_path(), &moved).unwrap();
    tg.signal("HUP");
    for key in ["state.dir", "state.durability"] {
        let line = format!("{key} changed: the new value takes effect only on restart");
        eventually(&line, Duration::from_secs(10), || async {
            tg.logs().contains(&line).then_some(())
        })
        .await;
    }
    let status = tg.status().await;
    assert_eq!(
        status["restart_required"],
        serde_json::json!(["state.dir", "state.durability"]),
        "{status}"
    );
    assert!(status["config_error"].is_null(), "{status}");

    // Counts still go to the store the sidecar started with.
    tg.post(LOAD, Some("incidents"), "{}")
        .await
        .assert_upstream_ok("target");
    assert_eq!(stored(&tg).await, (2, 2));
    assert!(
        !tg.dir().join("moved-state").exists(),
        "the new state.dir was used before a restart"
    );

    // Put back, nothing waits for a restart; after one, the running store had both counts.
    std::fs::write(tg.config_path(), &original).unwrap();
    tg.signal("HUP");
    eventually(
        "restart_required to empty",
        Duration::from_secs(10),
        || async { (tg.status().await["restart_required"] == serde_json::json!([])).then_some(()) },
    )
    .await;
    sigterm_and_restart(&mut tg).await;
    assert_eq!(stored(&tg).await, (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_through_tunnels_loses_no_answered_count_and_invents_none() {
    // An engine behind HTTPS_PROXY that opens a tunnel per request, as n8n does.
    let target = Upstream::tls("target").await;
    let entity = main_entity("jira-1", "/slow/{ms}/issue");
    let (builder, ca_pem) = intercepting(tollgate());
    let builder = tls_instance(
        builder.instance("servicenow-1", "servicenow", "http://127.0.0.1:9"),
        "jira-1",
        "jira",
        &target,
    );
    let mut tg = builder
        .flow_with("incidents", ["servicenow-1", "jira-1"], &refs(&entity))
        .license(&with(
            pair_license("LIC-DUR", "servicenow", "jira", 1),
            "transferred_records",
            1_000_000,
        ))
        .start_with(&["durability = \"strict\""], &env())
        .await;
    let engine = TunnelClient {
        engine: tg.engine,
        target: target.addr,
        credentials: Some("incidents:x".to_owned()),
        config: client_config(&ca_pem, &[b"h2", b"http/1.1"]),
    };

    let loaders = Loaders::start_with(16, move || {
        let engine = engine.clone();
        async move {
            engine
                .request(Method::POST, LOAD_AT_TARGET, &[], "{}")
                .await
        }
    });
    kill_9_after(&mut tg, loaders, 100, &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_five_times_in_a_row_loses_no_answered_count_and_the_totals_agree() {
    let target = Upstream::plain("target").await;
    let mut tg = world(&target, &["durability = \"strict\""]).await;
    let mut before = 0;
    for cycle in 1..=5 {
        let loaders = Loaders::start(&tg, 32);
        loaders.wait_for(100).await;
        tg.kill9();
        tg.wait_exit(EXIT)
            .await
            .expect("kill -9 did not end tollgate");
        let answered = loaders.finish().await as u64;
        let accepted = hits_on(&target, LOAD_AT_TARGET) as u64;

        tg.restart(&env()).await;
        let (license, flow) = stored(&tg).await;
        assert!(
            before + answered <= license && license <= accepted,
            "cycle {cycle}: stored {license} must lie between the {before} stored before plus the {answered} answered since and the {accepted} the target accepted"
        );
        assert_eq!(
            flow, license,
            "cycle {cycle}: the flow's count and the license's"
        );
        let daily: u64 = tg.usage(None).await["daily"]["LIC-DUR"]
            .as_object()
            .expect("the license's daily counts")
            .values()
            .filter_map(Value::as_u64)
            .sum();
        assert_eq!(
            daily, license,
            "cycle {cycle}: the daily counts add up to the month"
        );
        before = license;
    }

    // Loads answered one at a time, then SIGTERM: exactly those are added.
    for _ in 0..10 {
        tg.post(LOAD, Some("incidents"), "{}")
            .await
            .assert_upstream_ok("target");
    }
    sigterm_and_restart(&mut tg).await;
    assert_eq!(stored(&tg).await, (before + 10, before + 10));
}
