//! Transferred-records limits: exactly the hard limit of main-entity
//! loads is counted and reaches the target under heavy concurrency, the warning appears at
//! the limit, the license's flows stop at the hard limit with 429 `records-limit-exceeded`,
//! and only main loads the target answered 2xx are ever counted.
//!
//! Built with the `test-clock` feature, the sidecar is pinned to the middle of a month (so a
//! real month boundary can never cut a test in two) and `Retry-After` is checked exactly;
//! without it the tests run on the real clock.

pub mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

/// Mid-month: the clock of the sidecar under the `test-clock` feature.
const NOW: &str = "2026-11-15T12:00:00Z";
/// Seconds from `NOW` to 2026-12-01T00:00:00Z, when the month resets in UTC.
const TO_RESET: u64 = 15 * 86_400 + 12 * 3_600;

const MAIN: &str = "/jira-1/rest/api/2/issue";

fn env() -> [(&'static str, &'static str); 1] {
    [("TOLLGATE_NOW", NOW)]
}

/// A pair license for servicenow/jira with a monthly records limit.
fn metered_license(id: &str, points: u32, records: u64) -> Value {
    with(
        pair_license(id, "servicenow", "jira", points),
        "transferred_records",
        records,
    )
}

/// `[[flows.entities]]` lines: one `(instance, role, method, path)` per entity.
fn entities(list: &[(&str, &str, &str, &str)]) -> Vec<String> {
    list.iter()
        .map(|(instance, role, method, path)| {
            format!(
                "[[flows.entities]]\ninstance = \"{instance}\"\nrole = \"{role}\"\nmethod = \"{method}\"\npath = \"{path}\""
            )
        })
        .collect()
}

fn as_refs(lines: &[String]) -> Vec<&str> {
    lines.iter().map(String::as_str).collect()
}

/// How many requests with `method` and exactly `path` reached `target`.
fn hits_on(target: &Upstream, method: &str, path: &str) -> usize {
    target
        .seen()
        .iter()
        .filter(|s| s.method == method && s.path == path)
        .count()
}

/// Asserts a 429 `records-limit-exceeded` with a `Retry-After` to the month's reset.
#[track_caller]
fn assert_over_limit(resp: &Resp) -> Value {
    let problem = resp.assert_problem(429, "records-limit-exceeded");
    assert_eq!(resp.header("x-upstream"), None, "answered by the target");
    let retry: u64 = resp
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", resp.headers))
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {:?}", resp.headers));
    if cfg!(feature = "test-clock") {
        // The sidecar started at NOW; a test of this file lasts well under a minute.
        assert!(
            retry <= TO_RESET && retry > TO_RESET - 120,
            "Retry-After {retry} is not the time to 2026-12-01T00:00:00Z (about {TO_RESET})"
        );
    } else {
        assert!(
            (1..=31 * 86_400).contains(&retry),
            "Retry-After {retry} out of range"
        );
    }
    problem
}

/// What one loader saw.
#[derive(Default)]
struct Seen {
    ok: Vec<Resp>,
    refused: Vec<Resp>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_20_with_32_concurrent_loaders_counts_exactly_22() {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let incidents = entities(&[
        ("jira-1", "main", "POST", "/rest/api/2/issue"),
        ("jira-1", "child", "POST", "/rest/api/2/issue/{key}/comment"),
    ]);
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .flow_with(
            "incidents",
            ["servicenow-1", "jira-1"],
            &as_refs(&incidents),
        )
        .license(&metered_license("LIC-REC", 1, 20))
        .start_with(&[], &env())
        .await;

    let records = tg.records("LIC-REC").await;
    assert_eq!(records["used"], 0, "{records}");
    assert_eq!(records["limit"], 20, "{records}");
    assert_eq!(records["hard_limit"], 22, "{records}");
    assert_eq!(records["warning"], false, "{records}");

    // 32 loaders, each sending main loads until it is refused.
    let tg = Arc::new(tg);
    let start = Arc::new(tokio::sync::Barrier::new(32));
    let loaders: Vec<_> = (0..32)
        .map(|_| {
            let tg = tg.clone();
            let start = start.clone();
            tokio::spawn(async move {
                let client = http1_client();
                let mut seen = Seen::default();
                start.wait().await;
                loop {
                    let resp = flow_request(
                        &client,
                        tg.engine,
                        Method::POST,
                        MAIN,
                        "incidents",
                        "{\"fields\":{}}",
                    )
                    .await
                    .unwrap_or_else(|err| panic!("load failed: {err}\nlog:\n{}", tg.logs()));
                    if resp.status.is_success() {
                        seen.ok.push(resp);
                    } else {
                        seen.refused.push(resp);
                        return seen;
                    }
                }
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for loader in loaders {
        let seen = loader.await.unwrap();
        ok.extend(seen.ok);
        refused.extend(seen.refused);
    }

    assert_eq!(ok.len(), 22, "loads answered 2xx");
    assert_eq!(
        hits_on(&target, "POST", "/rest/api/2/issue"),
        22,
        "loads the target saw"
    );
    assert_eq!(refused.len(), 32, "every loader ends refused");
    for resp in &refused {
        let problem = assert_over_limit(resp);
        assert_eq!(problem["flow"], "incidents", "{problem}");
        assert!(
            problem["reason"] == "hard-limit" || problem["reason"] == "records-limit",
            "{problem}"
        );
        if problem["reason"] == "hard-limit" {
            assert_eq!(problem["license"], "LIC-REC", "{problem}");
            assert_eq!(problem["used"], 22, "{problem}");
            assert_eq!(problem["hard_limit"], 22, "{problem}");
        }
    }

    // The warning: exactly the answers counted at 20, 21 and 22 carry it.
    let mut warned = BTreeSet::new();
    for resp in &ok {
        resp.assert_upstream_ok("target");
        if let Some(warning) = resp.header("tollgate-warning") {
            let used: u64 = warning
                .split("; ")
                .find_map(|part| part.strip_prefix("used="))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("Tollgate-Warning without used=: {warning:?}"));
            assert_eq!(
                warning,
                format!("records-limit-reached; used={used}; limit=20; hard_limit=22"),
                "Tollgate-Warning format"
            );
            assert!(warned.insert(used), "two answers warned at used={used}");
        }
    }
    assert_eq!(
        warned,
        BTreeSet::from([20, 21, 22]),
        "the used= values of the warned answers"
    );

    // Counts: license and flow, in /v1/licenses and /v1/usage.
    let records = tg.records("LIC-REC").await;
    assert_eq!(records["used"], 22, "{records}");
    assert_eq!(records["warning"], true, "{records}");
    if cfg!(feature = "test-clock") {
        assert_eq!(records["month"], "2026-11", "{records}");
    }
    let month = records["month"].as_str().unwrap().to_owned();
    assert_eq!(tg.usage_of_license(None, "LIC-REC").await, 22);
    assert_eq!(tg.usage_of_flow(None, "incidents").await, 22);
    let usage = tg.usage(Some(&month)).await;
    assert_eq!(usage["month"], month, "{usage}");
    assert_eq!(usage["timezone"], "UTC", "{usage}");
    let license = usage["licenses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "LIC-REC")
        .cloned()
        .unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(
        license,
        json!({"id": "LIC-REC", "used": 22, "limit": 20, "hard_limit": 22}),
        "{usage}"
    );
    assert_eq!(tg.usage_of_flow(Some(&month), "incidents").await, 22);

    // The flow stops with reason records-limit; the audit trail has the warning and the limit.
    eventually(
        "incidents disabled for the records limit",
        Duration::from_secs(10),
        || async {
            let flow = tg.flow("incidents").await;
            (flow["enabled"] == false && flow["reason"] == "records-limit").then_some(())
        },
    )
    .await;
    // The journal is written right after the stop is swapped in: wait for it.
    let audit = eventually(
        "records-warning and records-limit in the audit trail",
        Duration::from_secs(5),
        || async {
            let audit = tg.audit(100).await;
            let has = |kind: &str| audit.iter().any(|e| e["kind"] == kind);
            (has("records-warning") && has("records-limit")).then_some(audit)
        },
    )
    .await;
    let warning = audit
        .iter()
        .find(|e| e["kind"] == "records-warning")
        .unwrap_or_else(|| panic!("no records-warning in the audit trail: {audit:?}"));
    assert_eq!(warning["detail"]["license"], "LIC-REC", "{warning}");
    assert_eq!(warning["detail"]["limit"], 20, "{warning}");
    let limit = audit
        .iter()
        .find(|e| e["kind"] == "records-limit")
        .unwrap_or_else(|| panic!("no records-limit in the audit trail: {audit:?}"));
    assert_eq!(limit["detail"]["license"], "LIC-REC", "{limit}");
    assert_eq!(limit["detail"]["hard_limit"], 22, "{limit}");
    assert_eq!(limit["detail"]["used"], 22, "{limit}");
    assert_eq!(warning["detail"]["used"], 20, "{warning}");
    // Each is raised once, the warning first, whatever order concurrent loads report in.
    let count = |kind: &str| audit.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(count("records-warning"), 1, "{audit:?}");
    assert_eq!(count("records-limit"), 1, "{audit:?}");
    let position = |kind: &str| audit.iter().position(|e| e["kind"] == kind).unwrap();
    assert!(
        position("records-limit") < position("records-warning"),
        "newest first: the warning must come before the limit: {audit:?}"
    );
    assert!(
        audit.iter().any(|e| e["kind"] == "flow-disabled"),
        "stopping the flow is journaled: {audit:?}"
    );
    // Pages of two, following `next`, give the same trail, newest first.
    let mut paged = Vec::new();
    let mut path = "/v1/audit?limit=2".to_owned();
    loop {
        let page = tg.admin_get(&path).await.json();
        let events = page["events"].as_array().cloned().unwrap();
        assert!(events.len() <= 2, "{page}");
        paged.extend(events);
        match page["next"].as_u64() {
            Some(cursor) => path = format!("/v1/audit?limit=2&before={cursor}"),
            None => break,
        }
        assert!(paged.len() <= audit.len(), "paging does not end: {paged:?}");
    }
    assert_eq!(paged, audit, "paged audit trail");
    let seqs: Vec<u64> = audit.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );

    // Stopped: a read and a child load on the flow get 429 too, and never reach the target.
    let hits = target.hits();
    let resp = tg.get(MAIN, Some("incidents")).await;
    let problem = assert_over_limit(&resp);
    assert_eq!(problem["reason"], "records-limit", "{problem}");
    assert_eq!(problem["flow"], "incidents", "{problem}");
    assert_eq!(
        problem["license"], "LIC-REC",
        "the refusal names the license at its limit: {problem}"
    );
    let resp = tg
        .post(
            "/jira-1/rest/api/2/issue/ABC-1/comment",
            Some("incidents"),
            "{}",
        )
        .await;
    assert_eq!(assert_over_limit(&resp)["reason"], "records-limit");
    let resp = tg
        .get("/servicenow-1/api/now/table/incident", Some("incidents"))
        .await;
    assert_over_limit(&resp);
    assert_eq!(target.hits(), hits, "a stopped flow reached the target");

    // The operator cannot start it again this month.
    let resp = tg.admin_post("/v1/flows/incidents/enable", "").await;
    let problem = resp.assert_admin_problem(409, "records-limit-exceeded");
    assert_eq!(problem["reason"], "records-limit", "{problem}");
    assert_eq!(tg.flow("incidents").await["enabled"], false);
    assert_eq!(tg.records("LIC-REC").await["used"], 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_main_loads_answered_2xx_are_counted() {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let dead = format!("http://{}", closed_port());
    let incidents = entities(&[
        ("jira-1", "main", "POST", "/rest/api/2/issue"),
        ("jira-1", "main", "POST", "/status/{code}/issue"),
        ("jira-1", "main", "POST", "/slow/{ms}/issue"),
        ("jira-1", "child", "POST", "/rest/api/2/issue/{key}/comment"),
        (
            "jira-1",
            "child",
            "POST",
            "/rest/api/2/issue/{key}/attachments",
        ),
    ]);
    let unreachable = entities(&[("dead-1", "main", "POST", "/rest/api/2/issue")]);
    let slow = entities(&[("slow-1", "main", "POST", "/slow/{ms}/issue")]);
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .instance_with("dead-1", "jira", &dead, &["connect_timeout = \"1s\""])
        .instance_with("slow-1", "jira", &uri, &["response_timeout = \"300ms\""])
        .flow_with(
            "incidents",
            ["servicenow-1", "jira-1"],
            &as_refs(&incidents),
        )
        .flow_with(
            "unreachable",
            ["servicenow-1", "dead-1"],
            &as_refs(&unreachable),
        )
        .flow_with("slow", ["servicenow-1", "slow-1"], &as_refs(&slow))
        .license(&metered_license("LIC-REC", 3, 20))
        .start_with(&[], &env())
        .await;
    let used = || async { tg.records("LIC-REC").await["used"].as_u64().unwrap() };

    // Children.
    for path in [
        "/jira-1/rest/api/2/issue/ABC-1/comment",
        "/jira-1/rest/api/2/issue/ABC-1/attachments",
    ] {
        tg.post(path, Some("incidents"), "{}")
            .await
            .assert_upstream_ok("target");
    }
    // Reads, other methods on the main path, and requests matching no entity.
    tg.get(MAIN, Some("incidents"))
        .await
        .assert_upstream_ok("target");
    tg.request(Method::PUT, MAIN, &[("tollgate-flow", "incidents")], "{}")
        .await
        .assert_upstream_ok("target");
    tg.post("/jira-1/rest/api/2/search", Some("incidents"), "{}")
        .await
        .assert_upstream_ok("target");
    tg.post("/servicenow-1/rest/api/2/issue", Some("incidents"), "{}")
        .await
        .assert_upstream_ok("target");
    // Main loads the target answers non-2xx.
    for code in [500u16, 409, 400, 404, 302, 503] {
        let resp = tg
            .post(
                &format!("/jira-1/status/{code}/issue"),
                Some("incidents"),
                "{}",
            )
            .await;
        assert_eq!(resp.status.as_u16(), code, "{}", resp.text());
        assert_eq!(resp.header("x-upstream"), Some("target"));
        assert_eq!(resp.header("tollgate-warning"), None);
    }
    // Upstream down (502) and too slow (504).
    for _ in 0..2 {
        let resp = tg
            .post("/dead-1/rest/api/2/issue", Some("unreachable"), "{}")
            .await;
        resp.assert_problem(502, "upstream-unavailable");
        let resp = tg.post("/slow-1/slow/2000/issue", Some("slow"), "{}").await;
        resp.assert_problem(504, "upstream-timeout");
    }
    assert_eq!(used().await, 0, "nothing so far is a counted load");
    assert_eq!(tg.usage_of_license(None, "LIC-REC").await, 0);
    for flow in ["incidents", "unreachable", "slow"] {
        assert_eq!(tg.usage_of_flow(None, flow).await, 0, "flow {flow}");
    }

    // A valid load still counts one; 201 is 2xx too.
    tg.post(MAIN, Some("incidents"), "{}")
        .await
        .assert_upstream_ok("target");
    assert_eq!(used().await, 1);
    let resp = tg
        .post("/jira-1/status/201/issue", Some("incidents"), "{}")
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    assert_eq!(used().await, 2);
    assert_eq!(tg.usage_of_flow(None, "incidents").await, 2);

    // Records of every flow of the license add up, and no failed load kept a reservation:
    // exactly the hard limit (22) is admitted, across two flows.
    for n in 3..=22u64 {
        let resp = if n % 2 == 0 {
            tg.post("/slow-1/slow/0/issue", Some("slow"), "{}").await
        } else {
            tg.post(MAIN, Some("incidents"), "{}").await
        };
        assert!(
            resp.status.is_success(),
            "load {n}: {} {}",
            resp.status,
            resp.text()
        );
        assert_eq!(
            resp.header("tollgate-warning").is_some(),
            n >= 20,
            "load {n}: {:?}",
            resp.headers
        );
    }
    let resp = tg.post(MAIN, Some("incidents"), "{}").await;
    assert_over_limit(&resp);
    assert_eq!(used().await, 22);
    assert_eq!(tg.usage_of_license(None, "LIC-REC").await, 22);
    assert_eq!(tg.usage_of_flow(None, "incidents").await, 12);
    assert_eq!(tg.usage_of_flow(None, "slow").await, 10);
    assert_eq!(tg.usage_of_flow(None, "unreachable").await, 0);

    // Every flow of the license stops.
    eventually(
        "the license's flows to stop",
        Duration::from_secs(10),
        || async {
            let flows = tg.flows().await;
            flows
                .iter()
                .filter(|f| {
                    ["incidents", "unreachable", "slow"].contains(&f["id"].as_str().unwrap())
                })
                .all(|f| f["enabled"] == false && f["reason"] == "records-limit")
                .then_some(())
        },
    )
    .await;
    let resp = tg
        .post("/dead-1/rest/api/2/issue", Some("unreachable"), "{}")
        .await;
    assert_eq!(assert_over_limit(&resp)["reason"], "records-limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licenses_of_other_pairs_and_unlimited_licenses_are_not_touched() {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let main = |instance: &str| entities(&[(instance, "main", "POST", "/rest/api/2/issue")]);
    let (incidents, crm) = (main("jira-1"), main("jira-2"));
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .instance("salesforce-1", "salesforce", &uri)
        .instance("jira-2", "jira", &uri)
        .flow_with(
            "incidents",
            ["servicenow-1", "jira-1"],
            &as_refs(&incidents),
        )
        .flow_with("crm", ["salesforce-1", "jira-2"], &as_refs(&crm))
        .license(&metered_license("LIC-SNJ", 1, 3))
        .license(&pair_license("LIC-SFJ", "salesforce", "jira", 1))
        .start_with(&[], &env())
        .await;

    // limit 3: hard limit 3 + 3/10 = 3.
    let records = tg.records("LIC-SNJ").await;
    assert_eq!(records["hard_limit"], 3, "{records}");
    for _ in 0..3 {
        tg.post(MAIN, Some("incidents"), "{}")
            .await
            .assert_upstream_ok("target");
    }
    assert_over_limit(&tg.post(MAIN, Some("incidents"), "{}").await);

    // The unlimited license: counted per flow, never limited, never warned.
    for _ in 0..10 {
        let resp = tg.post("/jira-2/rest/api/2/issue", Some("crm"), "{}").await;
        resp.assert_upstream_ok("target");
        assert_eq!(resp.header("tollgate-warning"), None);
    }
    let records = tg.records("LIC-SFJ").await;
    assert_eq!(records["used"], 10, "{records}");
    assert!(records["limit"].is_null(), "{records}");
    assert_eq!(records["warning"], false, "{records}");
    assert_eq!(tg.usage_of_flow(None, "crm").await, 10);
    assert_eq!(tg.records("LIC-SNJ").await["used"], 3);
    eventually("incidents stopped", Duration::from_secs(10), || async {
        (tg.flow("incidents").await["reason"] == "records-limit").then_some(())
    })
    .await;
    let crm = tg.flow("crm").await;
    assert_eq!(crm["enabled"], true, "{crm}");
    tg.post("/jira-2/rest/api/2/issue", Some("crm"), "{}")
        .await
        .assert_upstream_ok("target");
}
