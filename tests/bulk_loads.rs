//! Bulk loads counted by their records: a Jira bulk create, a Salesforce sObject collection
//! and a ServiceNow `insertMultiple` reserve their whole batch before they are forwarded and
//! count what the target reports created; a batch larger than what is left is refused whole
//! and never reaches the target; bad bodies are 400 and oversized ones 413, neither
//! forwarded; non-2xx answers count nothing; answers that break off or are too large to read
//! count the whole batch; concurrency never passes the hard limit; shadow mode lets a batch
//! over the limit through, marked; a random sequence of batches is counted exactly as a
//! model of the budget says; and kill -9 and license swaps under bulk load lose no count.

pub mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bulk_target::{
    created_in, jira_batch, load_until_spent, salesforce_batch, servicenow_batch, BulkTarget,
};
use common::*;
use hyper::{Method, StatusCode};
use proptest::prelude::*;
use serde_json::Value;

/// Mid-month, so no test straddles a month boundary.
const NOW: &str = "2026-11-15T12:00:00Z";

const JIRA_BULK: &str = "/jira-1/rest/api/2/issue/bulk";
const SF_COLLECTION: &str = "/crm/services/data/v60.0/composite/sobjects";
const SN_IMPORT: &str = "/servicenow-1/api/now/import/u_incident_import/insertMultiple";

fn env() -> [(&'static str, &'static str); 1] {
    [("TOLLGATE_NOW", NOW)]
}

/// `[[flows.entities]]` lines of a main entity with bulk settings (raw `key = value` lines).
fn entity(instance: &str, path: &str, bulk: &[&str]) -> Vec<String> {
    let mut lines = vec![
        "[[flows.entities]]".to_owned(),
        format!("instance = \"{instance}\""),
        "role = \"main\"".to_owned(),
        "method = \"POST\"".to_owned(),
        format!("path = \"{path}\""),
    ];
    lines.extend(bulk.iter().map(|line| (*line).to_owned()));
    lines
}

/// The sidecar in front of `target`: flow `incidents` (servicenow-1 ↔ jira-1, with the Jira
/// bulk create and ServiceNow's insertMultiple) under `LIC-JIRA`, and flow `accounts`
/// (servicenow-1 ↔ crm, with Salesforce collections) under `LIC-SF`; each license allows
/// `records` a month (hard limit `records + records / 10`).
fn world(target: &BulkTarget, records: u64) -> Builder {
    let uri = target.base_uri();
    let mut incidents = entity(
        "jira-1",
        "/rest/api/2/issue/bulk",
        &["records = \"/issueUpdates\"", "accepted = \"/issues\""],
    );
    incidents.extend(entity(
        "servicenow-1",
        "/api/now/import/{table}/insertMultiple",
        &["records = \"/records\""],
    ));
    let accounts = entity(
        "crm",
        "/services/data/{version}/composite/sobjects",
        &[
            "records = \"/records\"",
            "accepted = \"\"",
            "accepted_if = \"/success\"",
        ],
    );
    tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .instance("crm", "salesforce", &uri)
        .flow_with("incidents", ["servicenow-1", "jira-1"], &refs(&incidents))
        .flow_with("accounts", ["servicenow-1", "crm"], &refs(&accounts))
        .license(&with(
            pair_license("LIC-JIRA", "servicenow", "jira", 1),
            "transferred_records",
            records,
        ))
        .license(&with(
            pair_license("LIC-SF", "servicenow", "salesforce", 1),
            "transferred_records",
            records,
        ))
}

async fn start(target: &BulkTarget, records: u64) -> Tollgate {
    world(target, records).start_with(&[], &env()).await
}

fn refs(lines: &[String]) -> Vec<&str> {
    lines.iter().map(String::as_str).collect()
}

/// Records used this month by a license, as `/v1/licenses` and `/v1/usage` report them.
async fn used(tg: &Tollgate, license: &str) -> u64 {
    let used = tg.records(license).await["used"].as_u64().unwrap();
    assert_eq!(
        tg.usage_of_license(None, license).await,
        used,
        "/v1/usage and /v1/licenses disagree on {license}"
    );
    used
}

async fn bulk(tg: &Tollgate, path: &str, flow: &str, body: String) -> Resp {
    tg.request(
        Method::POST,
        path,
        &[
            ("tollgate-flow", flow),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

#[tokio::test]
async fn a_jira_bulk_create_counts_the_issues_created_not_the_request() {
    let target = BulkTarget::start().await;
    let tg = start(&target, 1000).await;

    let resp = bulk(&tg, JIRA_BULK, "incidents", jira_batch(50, &[3, 17, 42])).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    assert_eq!(created_in(&resp), 47);
    assert_eq!(resp.json()["errors"].as_array().unwrap().len(), 3);
    assert_eq!(target.created(), 47);
    assert_eq!(used(&tg, "LIC-JIRA").await, 47, "47 created of 50 sent");
    assert_eq!(tg.usage_of_flow(None, "incidents").await, 47);
    assert_eq!(used(&tg, "LIC-SF").await, 0, "another license's budget");

    let empty = bulk(&tg, JIRA_BULK, "incidents", jira_batch(0, &[])).await;
    assert_eq!(
        empty.status,
        StatusCode::CREATED,
        "an empty batch is forwarded"
    );
    assert_eq!(used(&tg, "LIC-JIRA").await, 47, "and counts nothing");
}

#[tokio::test]
async fn a_salesforce_collection_counts_only_the_records_flagged_success() {
    let target = BulkTarget::start().await;
    let tg = start(&target, 1000).await;

    let resp = bulk(
        &tg,
        SF_COLLECTION,
        "accounts",
        salesforce_batch(200, &[0, 199]),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let successes = resp
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["success"] == Value::Bool(true))
        .count();
    assert_eq!(successes, 198);
    assert_eq!(target.created(), 198);
    assert_eq!(used(&tg, "LIC-SF").await, 198);

    let none = bulk(
        &tg,
        SF_COLLECTION,
        "accounts",
        salesforce_batch(5, &[0, 1, 2, 3, 4]),
    )
    .await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(
        used(&tg, "LIC-SF").await,
        198,
        "a 2xx without successes counts nothing"
    );
}

#[tokio::test]
async fn a_servicenow_import_without_an_accepted_list_counts_the_whole_batch() {
    let target = BulkTarget::start().await;
    let tg = start(&target, 1000).await;
    let resp = bulk(&tg, SN_IMPORT, "incidents", servicenow_batch(120)).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    assert_eq!(used(&tg, "LIC-JIRA").await, 120);
    assert_eq!(target.created(), 120);
}

#[tokio::test]
async fn a_batch_larger_than_what_is_left_is_refused_whole_and_never_forwarded() {
    let target = BulkTarget::start().await;
    // 100 a month: the hard limit is 110.
    let tg = start(&target, 100).await;
    let first = bulk(&tg, JIRA_BULK, "incidents", jira_batch(100, &[])).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        first.header("tollgate-warning"),
        Some("records-limit-reached; used=100; limit=100; hard_limit=110")
    );
    let hits = target.hits();

    let refused = bulk(&tg, JIRA_BULK, "incidents", jira_batch(20, &[])).await;
    let problem = refused.assert_problem(429, "records-limit-exceeded");
    assert_eq!(problem["requested"], 20, "{problem}");
    assert_eq!(problem["remaining"], 10, "{problem}");
    assert_eq!(problem["license"], "LIC-JIRA");
    assert_eq!(problem["flow"], "incidents");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        target.hits(),
        hits,
        "nothing of the batch reached the target"
    );
    assert_eq!(
        used(&tg, "LIC-JIRA").await,
        100,
        "nothing reserved stays behind"
    );

    let fits = bulk(&tg, JIRA_BULK, "incidents", jira_batch(10, &[])).await;
    assert_eq!(fits.status, StatusCode::CREATED, "{}", fits.text());
    assert_eq!(used(&tg, "LIC-JIRA").await, 110);

    // At the hard limit the license's flows stop: even a batch of one is refused.
    bulk(&tg, JIRA_BULK, "incidents", jira_batch(1, &[]))
        .await
        .assert_problem(429, "records-limit-exceeded");
    assert_eq!(target.created(), 110);
    assert_eq!(tg.flow("incidents").await["reason"], "records-limit");
}

#[tokio::test]
async fn batches_the_target_refuses_give_every_record_back() {
    let target = BulkTarget::start().await;
    let tg = start(&target, 100).await;
    for status in [400, 409, 500, 503] {
        let resp = bulk(
            &tg,
            &format!("{JIRA_BULK}?status={status}"),
            "incidents",
            jira_batch(110, &[]),
        )
        .await;
        assert_eq!(resp.status.as_u16(), status, "the target's own answer");
        assert_eq!(resp.header("tollgate-reason"), None);
        assert_eq!(used(&tg, "LIC-JIRA").await, 0, "after a {status}");
    }
    // The whole budget is still there for one batch.
    let resp = bulk(&tg, JIRA_BULK, "incidents", jira_batch(110, &[])).await;
    assert_eq!(resp.status, StatusCode::CREATED);
    assert_eq!(used(&tg, "LIC-JIRA").await, 110);
    assert_eq!(target.created(), 110);
}

#[tokio::test]
async fn bodies_whose_records_cannot_be_counted_are_400_and_never_forwarded() {
    let target = BulkTarget::start().await;
    let tg = start(&target, 1000).await;
    let bodies = [
        ("not JSON", "issueUpdates: [1, 2]".to_owned()),
        ("cut short", r#"{"issueUpdates":[{},{}"#.to_owned()),
        ("trailing bytes", r#"{"issueUpdates":[{}]} []"#.to_owned()),
        ("no array", r#"{"issues":[{},{}]}"#.to_owned()),
        ("not an array", r#"{"issueUpdates":{"0":{}}}"#.to_owned()),
        (
            "named twice",
            r#"{"issueUpdates":[{}],"issueUpdates":[{},{},{}]}"#.to_owned(),
        ),
        (
            "two spellings",
            r#"{"issueUpdates":[],"IssueUpdates":[{},{},{}]}"#.to_owned(),
        ),
        ("empty", String::new()),
    ];
    for (what, body) in bodies {
        let resp = bulk(&tg, JIRA_BULK, "incidents", body).await;
        let problem = resp.assert_problem(400, "bad-request");
        assert_eq!(problem["records"], "/issueUpdates", "{what}: {problem}");
        assert_eq!(problem["flow"], "incidents", "{what}");
    }
    let not_utf8 = tg
        .request(
            Method::POST,
            JIRA_BULK,
            &[("tollgate-flow", "incidents")],
            b"{\"issueUpdates\":[\"\xff\"]}".to_vec(),
        )
        .await;
    not_utf8.assert_problem(400, "bad-request");
    assert_eq!(target.hits(), 0, "no bad body reached the target");
    assert_eq!(used(&tg, "LIC-JIRA").await, 0);
}

#[tokio::test]
async fn bulk_bodies_past_the_size_limit_are_413_and_other_bodies_still_stream() {
    let target = BulkTarget::start().await;
    let tg = world(&target, 100_000)
        .server_option("max_counted_body_bytes = 4096")
        .start_with(&[], &env())
        .await;
    let large = salesforce_batch(200, &[]);
    assert!(large.len() > 4096);
    let resp = bulk(&tg, SF_COLLECTION, "accounts", large.clone()).await;
    let problem = resp.assert_problem(413, "body-too-large");
    assert_eq!(problem["limit"], 4096, "{problem}");

    // Without a Content-Length the body is read up to the limit, then refused.
    let head = format!(
        "POST {SF_COLLECTION} HTTP/1.1\r\nHost: tollgate.test\r\nTollgate-Flow: accounts\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut request = head.into_bytes();
    for chunk in large.as_bytes().chunks(1000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let chunked = raw(tg.engine, &request, Duration::from_secs(10)).await;
    assert_eq!(chunked.statuses(), [413], "{chunked:?}");
    assert_eq!(target.hits(), 0, "no oversized batch reached the target");

    // A batch under the limit passes, and so does a large body nobody counts.
    let small = bulk(&tg, SF_COLLECTION, "accounts", salesforce_batch(10, &[])).await;
    assert_eq!(small.status, StatusCode::OK, "{}", small.text());
    let uncounted = tg
        .post(
            "/crm/services/data/v60.0/sobjects/Note",
            Some("accounts"),
            large,
        )
        .await;
    assert_eq!(
        uncounted.status,
        StatusCode::NOT_FOUND,
        "the target's own answer"
    );
    assert_eq!(uncounted.header("tollgate-reason"), None);
    assert_eq!(target.hits(), 2);
    assert_eq!(used(&tg, "LIC-SF").await, 10);
}

#[tokio::test]
async fn answers_that_cannot_be_read_count_the_whole_batch() {
    let target = BulkTarget::start().await;
    let tg = world(&target, 100_000)
        .server_option("max_counted_body_bytes = 65536")
        .start_with(&[], &env())
        .await;

    // The answer is larger than the limit: every reserved record counts, and the engine
    // still gets the whole answer.
    let huge = bulk(
        &tg,
        &format!("{JIRA_BULK}?huge"),
        "incidents",
        jira_batch(50, &[1, 2, 3]),
    )
    .await;
    assert_eq!(huge.status, StatusCode::CREATED);
    assert!(huge.body.len() > 1 << 20, "{} bytes", huge.body.len());
    assert_eq!(created_in(&huge), 47, "the answer arrived intact");
    assert_eq!(used(&tg, "LIC-JIRA").await, 50, "47 created, 50 counted");

    // The answer breaks off after the target accepted the batch.
    let broken = bulk(
        &tg,
        &format!("{JIRA_BULK}?broken"),
        "incidents",
        jira_batch(20, &[]),
    )
    .await;
    let problem = broken.assert_problem(502, "upstream-unavailable");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("20 records are counted"),
        "{problem}"
    );
    assert_eq!(used(&tg, "LIC-JIRA").await, 70);
    assert_eq!(target.created(), 47 + 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_bulk_loaders_never_pass_the_hard_limit() {
    let target = Arc::new(BulkTarget::start().await);
    let tg = start(&target, 1000).await; // hard limit 1100
    let tally = load_until_spent(&[tg.engine], 32, JIRA_BULK, "incidents").await;
    assert!(tally.unexpected.is_empty(), "{:?}", tally.unexpected);
    let counted = used(&tg, "LIC-JIRA").await;
    assert!(counted <= 1100, "{counted} counted past the hard limit");
    assert_eq!(counted, tally.created, "every answered record counted once");
    assert_eq!(
        target.created(),
        counted,
        "the target created what was counted"
    );

    // What is left goes to single batches that fit exactly: the hard limit is reached, not passed.
    loop {
        let remaining = 1100 - used(&tg, "LIC-JIRA").await;
        if remaining == 0 {
            break;
        }
        let resp = bulk(
            &tg,
            JIRA_BULK,
            "incidents",
            jira_batch(remaining as usize, &[]),
        )
        .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    }
    assert_eq!(target.created(), 1100);
    bulk(&tg, JIRA_BULK, "incidents", jira_batch(1, &[]))
        .await
        .assert_problem(429, "records-limit-exceeded");
}

#[tokio::test]
async fn shadow_mode_lets_a_batch_over_the_limit_through_and_says_so() {
    let target = BulkTarget::start().await;
    let tg = world(&target, 100)
        .licensing_option("enforcement = \"shadow\"")
        .start_with(&[], &env())
        .await;
    let first = bulk(&tg, JIRA_BULK, "incidents", jira_batch(100, &[])).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.header("tollgate-shadow"), None);
    let over = bulk(&tg, JIRA_BULK, "incidents", jira_batch(30, &[])).await;
    assert_eq!(over.status, StatusCode::CREATED, "{}", over.text());
    assert_eq!(
        over.header("tollgate-shadow"),
        Some("records-limit-exceeded")
    );
    assert_eq!(
        used(&tg, "LIC-JIRA").await,
        130,
        "counted past the limit, as it went through"
    );
    assert_eq!(target.created(), 130);
    // Bad bodies are still refused: they are not a license decision.
    bulk(&tg, JIRA_BULK, "incidents", "[]".to_owned())
        .await
        .assert_problem(400, "bad-request");
}

/// A kill -9 under bulk load loses no record an engine saw created and counts none the
/// target did not create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_bulk_load_loses_no_answered_record_and_invents_none() {
    let target = Arc::new(BulkTarget::start().await);
    let mut tg = world(&target, 1_000_000)
        .start_with(&["durability = \"strict\""], &env())
        .await;
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (answered, stop) = (answered.clone(), stop.clone());
            let engine = tg.engine;
            tokio::spawn(async move {
                let client = http1_client();
                while !stop.load(Ordering::SeqCst) {
                    let body = jira_batch(10, &[4]);
                    let path = format!("{JIRA_BULK}?slow=5");
                    match flow_request(&client, engine, Method::POST, &path, "incidents", body)
                        .await
                    {
                        Ok(resp) if resp.status == StatusCode::CREATED => {
                            answered.fetch_add(created_in(&resp), Ordering::SeqCst);
                        }
                        Ok(resp) => panic!("{} {}", resp.status, resp.text()),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    eventually("900 answered records", Duration::from_secs(30), || async {
        (answered.load(Ordering::SeqCst) >= 900).then_some(())
    })
    .await;
    tg.kill9();
    tg.wait_exit(Duration::from_secs(20))
        .await
        .expect("kill -9 did not end tollgate");
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let answered = answered.load(Ordering::SeqCst);
    let created = target.created();

    tg.restart(&env()).await;
    let stored = used(&tg, "LIC-JIRA").await;
    assert!(
        answered <= stored && stored <= created,
        "stored {stored} must lie between the {answered} records answered created and the {created} the target created"
    );
    assert_eq!(
        stored % 9,
        0,
        "whole batches of 9 created records: {stored}"
    );
    assert_eq!(tg.usage_of_flow(None, "incidents").await, stored);
}

/// Licenses swapped under bulk load: no batch fails, and every created record is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_loads_keep_counting_exactly_while_licenses_are_swapped() {
    let target = Arc::new(BulkTarget::start().await);
    let tg = start(&target, 1_000_000).await;
    let spare = tg.sign(&pair_license("LIC-SPARE", "netsuite", "jira", 1));
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (answered, stop, failures) = (answered.clone(), stop.clone(), failures.clone());
            let engine = tg.engine;
            tokio::spawn(async move {
                let client = http1_client();
                while !stop.load(Ordering::SeqCst) {
                    let resp = flow_request(
                        &client,
                        engine,
                        Method::POST,
                        JIRA_BULK,
                        "incidents",
                        jira_batch(12, &[0, 5]),
                    )
                    .await;
                    match resp {
                        Ok(resp) if resp.status == StatusCode::CREATED => {
                            answered.fetch_add(created_in(&resp), Ordering::SeqCst);
                        }
                        Ok(resp) => failures.lock().unwrap().push(format!(
                            "{} {}",
                            resp.status,
                            resp.text()
                        )),
                        Err(err) => failures.lock().unwrap().push(err),
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    for round in 0..25 {
        let added = tg.admin_post("/v1/licenses", spare.clone()).await;
        assert_eq!(
            added.status,
            StatusCode::CREATED,
            "round {round}: {}",
            added.text()
        );
        let removed = tg.admin_delete("/v1/licenses/LIC-SPARE").await;
        assert_eq!(
            removed.status,
            StatusCode::NO_CONTENT,
            "round {round}: {}",
            removed.text()
        );
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} batches failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let answered = answered.load(Ordering::SeqCst);
    assert!(answered >= 100, "only {answered} records during the swaps");
    assert_eq!(used(&tg, "LIC-JIRA").await, answered);
    assert_eq!(target.created(), answered);
}

/// One step of the model test: a Jira batch of `size` issues, `failing` of them refused.
#[derive(Debug, Clone)]
struct Batch {
    size: usize,
    failing: Vec<usize>,
}

fn batch() -> impl Strategy<Value = Batch> {
    (
        0usize..40,
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    )
        .prop_map(|(size, picks)| {
            let failing = if size == 0 {
                Vec::new()
            } else {
                picks.iter().map(|pick| pick.index(size)).collect()
            };
            Batch { size, failing }
        })
}

/// Random sequences of batches (sizes 0 to 39, some records refused by the target) against
/// one sidecar: each is admitted exactly when it fits below the hard limit, refused whole
/// with what remains when it does not, and the count is the model's after every step.
#[test]
fn random_batches_are_counted_as_the_budget_model_says() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let target = runtime.block_on(BulkTarget::start());
    let tg = runtime.block_on(start(&target, 1000)); // hard limit 1100
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(batches in prop::collection::vec(batch(), 1..8))| {
        runtime.block_on(async {
            let mut model = used(&tg, "LIC-JIRA").await;
            for step in &batches {
                let resp = bulk(&tg, JIRA_BULK, "incidents", jira_batch(step.size, &step.failing)).await;
                let refused = {
                    let mut distinct = step.failing.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    distinct.len() as u64
                };
                if model >= 1100 {
                    // The flows stopped at the hard limit: every load is refused at the gate.
                    resp.assert_problem(429, "records-limit-exceeded");
                } else if model + step.size as u64 > 1100 {
                    let problem = resp.assert_problem(429, "records-limit-exceeded");
                    assert_eq!(problem["requested"], step.size as u64, "{step:?}");
                    assert_eq!(problem["remaining"], 1100 - model, "{step:?}");
                } else {
                    assert_eq!(resp.status, StatusCode::CREATED, "{step:?}: {}", resp.text());
                    model += step.size as u64 - refused;
                }
                assert_eq!(used(&tg, "LIC-JIRA").await, model, "after {step:?}");
            }
            assert_eq!(target.created(), model);
        });
    });
}
