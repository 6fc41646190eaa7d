//! The gate: every refusal with its status, problem type,
//! `Tollgate-Reason` header and fields, in the contract's decision order — and none of the
//! refused requests ever reaches the target.

pub mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use serde_json::Value;

/// One target behind many instances, and a flow for every row of the table.
///
/// | flow        | pair                | license                                   |
/// |-------------|---------------------|-------------------------------------------|
/// | incidents   | servicenow-1/jira-1 | LIC-SNJ point 1                           |
/// | unreachable | servicenow-1/dead-1 | LIC-SNJ point 2 (target: closed port)     |
/// | slow        | servicenow-1/slow-1 | LIC-SNJ point 3 (response_timeout 300ms)  |
/// | overflow    | servicenow-1/jira-2 | none left: disabled, points-exhausted     |
/// | ops         | servicenow-1/jira-1 | shares incidents' point                   |
/// | crm         | salesforce-1/jira-1 | LIC-SFJ                                   |
/// | erp         | netsuite-1/jira-1   | none: missing                             |
/// | support     | zendesk-1/jira-1    | LIC-ZDJ, expired                          |
/// | marketing   | hubspot-1/jira-1    | LIC-HSJ, not yet valid                    |
/// | code        | github-1/jira-1     | LIC-GHJ, bound to another host            |
async fn world() -> (Upstream, Tollgate) {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let dead = format!("http://{}", closed_port());
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .instance("jira-2", "jira", &uri)
        .instance_with("dead-1", "jira", &dead, &["connect_timeout = \"1s\""])
        .instance_with("slow-1", "jira", &uri, &["response_timeout = \"300ms\""])
        .instance("salesforce-1", "salesforce", &uri)
        .instance("netsuite-1", "netsuite", &uri)
        .instance("zendesk-1", "zendesk", &uri)
        .instance("hubspot-1", "hubspot", &uri)
        .instance("github-1", "github", &uri)
        .flow("incidents", ["servicenow-1", "jira-1"])
        .flow("unreachable", ["servicenow-1", "dead-1"])
        .flow("slow", ["servicenow-1", "slow-1"])
        .flow("overflow", ["servicenow-1", "jira-2"])
        .flow("ops", ["servicenow-1", "jira-1"])
        .flow("crm", ["salesforce-1", "jira-1"])
        .flow("erp", ["netsuite-1", "jira-1"])
        .flow("support", ["zendesk-1", "jira-1"])
        .flow("marketing", ["hubspot-1", "jira-1"])
        .flow("code", ["github-1", "jira-1"])
        .license(&pair_license("LIC-SNJ", "servicenow", "jira", 3))
        .license(&pair_license("LIC-SFJ", "Salesforce", "JIRA", 1))
        .license(&expired_pair_license("LIC-ZDJ", "zendesk", "jira", 1))
        .license(&future_pair_license("LIC-HSJ", "hubspot", "jira", 1))
        .license(&with(
            pair_license("LIC-GHJ", "github", "jira", 1),
            "bound_to",
            "other-host.invalid",
        ))
        .start()
        .await;
    (target, tg)
}

/// Asserts a refusal and that `target` saw nothing new; returns the problem.
#[track_caller]
fn refused(resp: &Resp, status: u16, code: &str, target: &Upstream, hits: usize) -> Value {
    let problem = resp.assert_problem(status, code);
    assert_eq!(
        resp.header("x-upstream"),
        None,
        "answered by the target: {problem}"
    );
    assert_eq!(
        target.hits(),
        hits,
        "a refused request ({code}) reached the target"
    );
    problem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_identified_in_the_contract_order() {
    let (target, tg) = world().await;

    // no route (checked before the flow)
    for flow in [None, Some("incidents"), Some("no-such-flow")] {
        let resp = tg.get("/no-such-instance/rest/x", flow).await;
        refused(&resp, 404, "unknown-route", &target, 0);
    }

    // no flow on the request
    let resp = tg.get("/jira-1/rest/x", None).await;
    let problem = refused(&resp, 403, "flow-required", &target, 0);
    assert_eq!(problem["instance"], "jira-1", "{problem}");

    // flow not configured
    let resp = tg.get("/jira-1/rest/x", Some("no-such-flow")).await;
    let problem = refused(&resp, 403, "unknown-flow", &target, 0);
    assert_eq!(problem["flow"], "no-such-flow", "{problem}");

    // instance not in the flow
    let resp = tg.get("/jira-2/rest/x", Some("incidents")).await;
    let problem = refused(&resp, 403, "flow-instance-mismatch", &target, 0);
    assert_eq!(problem["flow"], "incidents", "{problem}");
    assert_eq!(problem["instance"], "jira-2", "{problem}");

    // ... checked before the flow's own state: overflow is disabled, but jira-1 is not its.
    let resp = tg.get("/jira-1/rest/x", Some("overflow")).await;
    refused(&resp, 403, "flow-instance-mismatch", &target, 0);
    // ... and before its license: erp has none.
    let resp = tg.get("/servicenow-1/rest/x", Some("erp")).await;
    refused(&resp, 403, "flow-instance-mismatch", &target, 0);

    // A flow disabled by the operator answers flow-disabled even without a license.
    let resp = tg.admin_post("/v1/flows/erp/disable", "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json()["enabled"], false);
    let resp = tg.get("/netsuite-1/rest/x", Some("erp")).await;
    let problem = refused(&resp, 403, "flow-disabled", &target, 0);
    assert_eq!(problem["reason"], "operator", "{problem}");
    // Enabling it without a license is refused.
    let resp = tg.admin_post("/v1/flows/erp/enable", "").await;
    let problem = resp.assert_admin_problem(409, "license-invalid");
    assert_eq!(problem["reason"], "missing", "{problem}");
    assert_eq!(tg.flow("erp").await["enabled"], false);

    // And an allowed request does get through, once.
    tg.get("/jira-1/rest/x", Some("incidents"))
        .await
        .assert_upstream_ok("target");
    assert_eq!(target.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_flows_say_why() {
    let (target, tg) = world().await;

    // Points: three pairs took LIC-SNJ's three points in config order; the fourth has none.
    let resp = tg.get("/jira-2/rest/x", Some("overflow")).await;
    let problem = refused(&resp, 403, "flow-disabled", &target, 0);
    assert_eq!(problem["reason"], "points-exhausted", "{problem}");
    assert_eq!(problem["flow"], "overflow", "{problem}");
    assert_eq!(problem["instance"], "jira-2", "{problem}");
    let overflow = tg.flow("overflow").await;
    assert_eq!(overflow["enabled"], false, "{overflow}");
    assert_eq!(overflow["reason"], "points-exhausted", "{overflow}");
    let snj = tg.license("LIC-SNJ").await.unwrap();
    assert_eq!(snj["points"]["total"], 3, "{snj}");
    assert_eq!(snj["points"]["used"], 3, "{snj}");

    // Operator: ops shares incidents' pair; disabling it leaves incidents alone.
    let resp = tg.admin_post("/v1/flows/ops/disable", "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let ops = resp.json();
    assert_eq!(ops["id"], "ops");
    assert_eq!(ops["enabled"], false);
    assert_eq!(ops["reason"], "operator");
    let resp = tg.get("/jira-1/rest/x", Some("ops")).await;
    let problem = refused(&resp, 403, "flow-disabled", &target, 0);
    assert_eq!(problem["reason"], "operator", "{problem}");
    assert_eq!(problem["flow"], "ops", "{problem}");
    tg.get("/jira-1/rest/x", Some("incidents"))
        .await
        .assert_upstream_ok("target");
    let hits = target.hits();

    // Removal: crm works until its license is deleted.
    tg.get("/salesforce-1/x", Some("crm"))
        .await
        .assert_upstream_ok("target");
    let hits = hits + 1;
    let resp = tg.admin_delete("/v1/licenses/LIC-SFJ").await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{}", resp.text());
    let resp = tg.get("/salesforce-1/x", Some("crm")).await;
    let problem = refused(&resp, 403, "flow-disabled", &target, hits);
    assert_eq!(problem["reason"], "license-removed", "{problem}");
    assert_eq!(problem["flow"], "crm", "{problem}");
    let resp = tg.get("/jira-1/x", Some("crm")).await;
    refused(&resp, 403, "flow-disabled", &target, hits);
    let crm = tg.flow("crm").await;
    assert_eq!(crm["enabled"], false, "{crm}");
    assert_eq!(crm["reason"], "license-removed", "{crm}");
    assert!(crm["license"].is_null(), "{crm}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_without_a_valid_license_say_why() {
    let (target, tg) = world().await;

    for (flow, instance, reason, license) in [
        ("erp", "netsuite-1", "missing", None),
        ("support", "zendesk-1", "expired", Some("LIC-ZDJ")),
        ("marketing", "hubspot-1", "not-yet-valid", Some("LIC-HSJ")),
        ("code", "github-1", "wrong-host", Some("LIC-GHJ")),
    ] {
        for path in [format!("/{instance}/api/x"), "/jira-1/rest/x".to_owned()] {
            let resp = tg.post(&path, Some(flow), "{\"a\":1}").await;
            let problem = refused(&resp, 403, "license-invalid", &target, 0);
            assert_eq!(problem["reason"], reason, "{flow}: {problem}");
            assert_eq!(
                problem["license"].as_str(),
                license,
                "the refusal names the license that is not valid: {problem}"
            );
            assert_eq!(problem["flow"], flow, "{problem}");
            assert!(problem["detail"].is_string(), "{problem}");
        }
    }

    // The licenses themselves are installed, with the matching state.
    for (id, state) in [
        ("LIC-ZDJ", "expired"),
        ("LIC-HSJ", "not-yet-valid"),
        ("LIC-GHJ", "wrong-host"),
        ("LIC-SNJ", "valid"),
        ("LIC-SFJ", "valid"),
    ] {
        let license = tg
            .license(id)
            .await
            .unwrap_or_else(|| panic!("{id} not installed"));
        assert_eq!(license["state"], state, "{license}");
        assert_eq!(license["kind"], "pair", "{license}");
    }
    // System types compare case-insensitively: LIC-SFJ ("Salesforce"/"JIRA") covers crm.
    tg.get("/salesforce-1/x", Some("crm"))
        .await
        .assert_upstream_ok("target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_slow_targets_get_502_and_504() {
    let (target, tg) = world().await;

    let resp = tg.get("/dead-1/rest/x", Some("unreachable")).await;
    let problem = resp.assert_problem(502, "upstream-unavailable");
    assert_eq!(problem["flow"], "unreachable", "{problem}");
    assert_eq!(problem["instance"], "dead-1", "{problem}");

    let started = Instant::now();
    let resp = tg.get("/slow-1/slow/3000/x", Some("slow")).await;
    let problem = resp.assert_problem(504, "upstream-timeout");
    assert_eq!(problem["instance"], "slow-1", "{problem}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the 300ms response timeout took {:?}",
        started.elapsed()
    );
    assert_eq!(target.hits(), 1, "the slow request did reach the target");

    // Neither takes the proxy down, even many at once.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = tg.client.clone();
        let engine = tg.engine;
        tasks.push(tokio::spawn(async move {
            let (path, flow) = if i % 2 == 0 {
                ("/dead-1/x".to_owned(), "unreachable")
            } else {
                ("/slow-1/slow/2000/x".to_owned(), "slow")
            };
            let req = hyper::Request::get(format!("http://{engine}{path}"))
                .header("tollgate-flow", flow)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            send(&client, req).await.map(|r| r.status.as_u16())
        }));
    }
    for task in tasks {
        let status = task.await.unwrap().expect("an answer");
        assert!(status == 502 || status == 504, "{status}");
    }
    tg.get("/jira-1/rest/x", Some("incidents"))
        .await
        .assert_upstream_ok("target");
}
