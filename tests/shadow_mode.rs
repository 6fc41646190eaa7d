//! Shadow mode (`licensing.enforcement = "shadow"`): a roll-out that watches before it
//! refuses. License decisions (a flow disabled for a license reason, the records limit, no
//! valid license, an unknown or missing flow) let the request through, counted as usual,
//! with `Tollgate-Shadow: <code>` on its answer, `decision="shadow:<code>"` in the metrics
//! and a log line at most once a minute per flow and code; routing, framing and operator
//! disables are enforced as always.

pub mod common;

use common::*;

const LICENSE: &str = "LIC-1";
const MAIN: &str = "/jira-1/rest/api/2/issue";

fn main_lines(instance: &str) -> [String; 5] {
    [
        "[[flows.entities]]".to_owned(),
        format!("instance = \"{instance}\""),
        "role = \"main\"".to_owned(),
        "method = \"POST\"".to_owned(),
        "path = \"/rest/api/2/issue\"".to_owned(),
    ]
}

async fn shadowed_sidecar(jira: &Upstream) -> Tollgate {
    let lines_1 = main_lines("jira-1");
    let lines_2 = main_lines("jira-2");
    let refs_1: Vec<&str> = lines_1.iter().map(String::as_str).collect();
    let refs_2: Vec<&str> = lines_2.iter().map(String::as_str).collect();
    tollgate()
        .licensing_option("enforcement = \"shadow\"")
        .instance("servicenow-1", "servicenow", &jira.base_uri())
        .instance("jira-1", "jira", &jira.base_uri())
        .instance("jira-2", "jira", &jira.base_uri())
        // One point: incidents takes it, escalations (a second pair) is points-exhausted.
        .flow_with("incidents", ["servicenow-1", "jira-1"], &refs_1)
        .flow_with("escalations", ["servicenow-1", "jira-2"], &refs_2)
        .license(&with(
            pair_license(LICENSE, "servicenow", "jira", 1),
            "transferred_records",
            10,
        ))
        .start()
        .await
}

fn metric(text: &str, flow: &str, decision: &str) -> u64 {
    let needle = format!(
        "tollgate_requests_total{{flow=\"{flow}\",instance=\"jira-1\",decision=\"{decision}\"}} "
    );
    text.lines()
        .find_map(|line| line.strip_prefix(&needle))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_over_every_limit_flows_and_says_what_would_have_been_refused() {
    let jira = Upstream::plain("jira").await;
    let tg = shadowed_sidecar(&jira).await;

    // Limit 10, hard limit 11: every load is forwarded; those past the hard limit say so.
    let mut shadowed = 0;
    for i in 0..15 {
        let resp = tg.post(MAIN, Some("incidents"), "{}").await;
        assert_eq!(
            resp.status,
            200,
            "load {i} is forwarded in shadow mode: {}",
            resp.text()
        );
        match resp.header("tollgate-shadow") {
            Some("records-limit-exceeded") => shadowed += 1,
            None => assert!(i < 11, "load {i} is past the hard limit but not marked"),
            Some(other) => panic!("load {i}: unexpected Tollgate-Shadow {other}"),
        }
    }
    assert_eq!(
        shadowed, 4,
        "the 4 loads past the hard limit of 11 are marked"
    );
    assert_eq!(jira.hits(), 15, "every load reached the target");
    let used = tg.records(LICENSE).await["used"].as_u64().unwrap_or(0);
    assert!(used >= 11, "loads are counted as usual: {used}");

    // A flow disabled for a license reason (no free point), an unknown flow, no flow at all.
    let disabled = tg
        .post("/jira-2/rest/api/2/issue", Some("escalations"), "{}")
        .await;
    assert_eq!(
        (disabled.status.as_u16(), disabled.header("tollgate-shadow")),
        (200, Some("flow-disabled"))
    );
    let unknown = tg.get("/jira-1/x", Some("nosuchflow")).await;
    assert_eq!(
        (unknown.status.as_u16(), unknown.header("tollgate-shadow")),
        (200, Some("unknown-flow"))
    );
    let unnamed = tg.get("/jira-1/x", None).await;
    assert_eq!(
        (unnamed.status.as_u16(), unnamed.header("tollgate-shadow")),
        (200, Some("flow-required"))
    );
    // The hard limit stopped the flow: every request of it is marked now, not only loads.
    let stopped = tg.get("/jira-1/x", Some("incidents")).await;
    assert_eq!(
        (stopped.status.as_u16(), stopped.header("tollgate-shadow")),
        (200, Some("records-limit-exceeded"))
    );

    let metrics = tg.metrics_text().await;
    assert_eq!(
        metric(&metrics, "incidents", "shadow:records-limit-exceeded"),
        5,
        "{metrics}"
    );
    assert!(
        metrics.contains("decision=\"shadow:unknown-flow\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("decision=\"shadow:flow-required\""),
        "{metrics}"
    );
    let lines = tg
        .logs()
        .lines()
        .filter(|line| {
            line.contains("shadow mode: forwarded") && line.contains("records-limit-exceeded")
        })
        .count();
    assert_eq!(
        lines,
        1,
        "4 shadowed loads of one flow and code are one log line a minute:\n{}",
        tg.logs()
    );
    assert_eq!(tg.status().await["enforcement"], "shadow");

    let check = tollgate_output([
        "check".as_ref(),
        "--config".as_ref(),
        tg.config_path().as_os_str(),
    ]);
    assert!(stdout(&check).contains("SHADOW MODE"), "{}", stdout(&check));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_mismatches_and_operator_disables_are_still_enforced() {
    let jira = Upstream::plain("jira").await;
    let tg = shadowed_sidecar(&jira).await;

    let no_route = tg.get("/nowhere/x", Some("incidents")).await;
    assert_eq!(
        (no_route.status.as_u16(), no_route.header("tollgate-reason")),
        (404, Some("unknown-route"))
    );
    let mismatch = tg.get("/jira-2/x", Some("incidents")).await;
    assert_eq!(
        (mismatch.status.as_u16(), mismatch.header("tollgate-reason")),
        (403, Some("flow-instance-mismatch"))
    );
    let bad = tg.get("/jira-1/..%2Fadmin", Some("incidents")).await;
    assert_eq!(bad.status, 400, "path rules are not license decisions");

    let disabled = tg.admin_post("/v1/flows/incidents/disable", "").await;
    assert_eq!(disabled.status, 200);
    let refused = tg.post(MAIN, Some("incidents"), "{}").await;
    assert_eq!(
        (refused.status.as_u16(), refused.header("tollgate-reason")),
        (403, Some("flow-disabled"))
    );
    assert_eq!(refused.header("tollgate-shadow"), None);
    assert_eq!(jira.hits(), 0, "nothing enforced reached the target");
}
