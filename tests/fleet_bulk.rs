//! Fleet mode with bulk loads: a batch larger than a sidecar's lease gets a block large
//! enough for it (or none), a batch larger than what the fleet has left is refused whole and
//! never forwarded, and three sidecars under concurrent bulk load never take the fleet past
//! the hard limit, which they reach exactly.
//!
//! Needs `redis-server` on `PATH`.

pub mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bulk_target::{created_in, jira_batch, load_until_spent, BulkTarget};
use common::fleet::{await_used, metered_license, node_name, used, Fleet, Shape, LICENSE};
use common::redis::RedisServer;
use common::*;
use hyper::{Method, StatusCode};

const JIRA_BULK: &str = "/jira-1/rest/api/2/issue/bulk";

/// servicenow-1 and jira-1 forwarding to `target`; flow `incidents` whose main entity is the
/// Jira bulk create, counted by the issues it creates.
fn bulk_shape(target: &str) -> Shape {
    let target = target.to_owned();
    Arc::new(move |builder: Builder| {
        builder
            .instance("servicenow-1", "servicenow", &target)
            .instance("jira-1", "jira", &target)
            .flow_with(
                "incidents",
                ["servicenow-1", "jira-1"],
                &[
                    "[[flows.entities]]",
                    "instance = \"jira-1\"",
                    "role = \"main\"",
                    "method = \"POST\"",
                    "path = \"/rest/api/2/issue/bulk\"",
                    "records = \"/issueUpdates\"",
                    "accepted = \"/issues\"",
                ],
            )
    })
}

async fn bulk(tg: &Tollgate, size: usize, failing: &[usize]) -> Resp {
    tg.request(
        Method::POST,
        JIRA_BULK,
        &[("tollgate-flow", "incidents")],
        jira_batch(size, failing),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_lease_gets_a_block_for_it_or_is_refused_whole() {
    let redis = RedisServer::start();
    let target = BulkTarget::start().await;
    let fleet = Fleet::new(&redis.url(), bulk_shape(&target.base_uri()))
        .license(&metered_license(LICENSE, 1, 100))
        .state_option("lease_max = 10");
    let tg = fleet.start(&node_name(0)).await;

    let big = bulk(&tg, 60, &[0]).await;
    assert_eq!(
        big.status,
        StatusCode::CREATED,
        "{}\n{}",
        big.text(),
        tg.logs()
    );
    assert_eq!(created_in(&big), 59);
    await_used(&tg, 59, Duration::from_secs(5), "59 created of 60").await;

    // 110 − 59 = 51 are left to the fleet (some of it may be leased here already).
    let hits = target.hits();
    let refused = bulk(&tg, 52, &[]).await;
    let problem = refused.assert_problem(429, "records-limit-exceeded");
    assert_eq!(problem["requested"], 52, "{problem}");
    assert_eq!(problem["remaining"], 51, "{problem}");
    assert_eq!(
        target.hits(),
        hits,
        "nothing of the batch reached the target"
    );

    let rest = bulk(&tg, 51, &[]).await;
    assert_eq!(rest.status, StatusCode::CREATED, "{}", rest.text());
    await_used(&tg, 110, Duration::from_secs(5), "the hard limit").await;
    bulk(&tg, 1, &[])
        .await
        .assert_problem(429, "records-limit-exceeded");
    assert_eq!(target.created(), 110);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sidecars_under_concurrent_bulk_load_reach_the_hard_limit_exactly() {
    let redis = RedisServer::start();
    let target = Arc::new(BulkTarget::start().await);
    let fleet = Fleet::new(&redis.url(), bulk_shape(&target.base_uri()))
        .license(&metered_license(LICENSE, 1, 1000)) // hard limit 1100
        .state_option("lease_max = 40");
    let sidecars = fleet.start_nodes(3).await;
    let engines: Vec<_> = sidecars.iter().map(|tg| tg.engine).collect();
    let tally = load_until_spent(&engines, 8, JIRA_BULK, "incidents").await;
    assert!(tally.unexpected.is_empty(), "{:?}", tally.unexpected);
    let answered = tally.created;
    assert!(answered <= 1100, "{answered} answered past the hard limit");
    assert_eq!(
        target.created(),
        answered,
        "the target created what was answered"
    );
    for tg in &sidecars {
        await_used(
            tg,
            answered,
            Duration::from_secs(5),
            "every sidecar sees the fleet's total",
        )
        .await;
    }

    // The rest of the budget, batch by batch from one sidecar: leases the others hold come
    // back once idle, so the fleet reaches the hard limit exactly.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = 1100 - used(&sidecars[0]).await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} records never became available"
        );
        let resp = bulk(&sidecars[0], left as usize, &[]).await;
        match resp.status.as_u16() {
            201 => {}
            429 => {
                let remaining = resp.json()["remaining"].as_u64().unwrap_or(0);
                if remaining > 0 {
                    bulk(&sidecars[0], remaining as usize, &[]).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            _ => panic!("{} {}", resp.status, resp.text()),
        }
    }
    assert_eq!(target.created(), 1100);
    for tg in &sidecars {
        await_used(tg, 1100, Duration::from_secs(5), "the hard limit").await;
        bulk(tg, 1, &[])
            .await
            .assert_problem(429, "records-limit-exceeded");
    }
}
