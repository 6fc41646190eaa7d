//! Fleet mode, admission: several sidecars on one Redis share one monthly budget of
//! transferred records. Under heavy concurrency on every sidecar exactly the hard limit
//! (limit 100 → 110) is answered 2xx and reaches the target across the whole fleet, and
//! every further counted load is `429 records-limit-exceeded`; one busy sidecar beside
//! idle ones reaches the hard limit alone; a sidecar stopped with SIGTERM gives back its
//! unused lease at once, so the others can use the whole budget without waiting for the
//! lease to expire.
//!
//! Needs `redis-server` on `PATH`.

pub mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fleet::*;
use common::redis::RedisServer;
use common::*;

/// limit 100 → hard limit 110.
const HARD: usize = 110;

fn engines(sidecars: &[Tollgate]) -> Vec<SocketAddr> {
    sidecars.iter().map(|tg| tg.engine).collect()
}

/// Every sidecar's log, for failure messages.
fn logs(sidecars: &[Tollgate]) -> String {
    sidecars
        .iter()
        .enumerate()
        .map(|(i, tg)| format!("--- {}\n{}", node_name(i), tg.logs()))
        .collect()
}

/// Asserts the loaders stopped only on `429 records-limit-exceeded`, with no transport
/// error.
#[track_caller]
fn assert_only_limit_refusals(tallies: &[Tally], sidecars: &[Tollgate]) {
    for (i, tally) in tallies.iter().enumerate() {
        assert!(
            tally.errors.is_empty(),
            "{}: loads without an answer: {:?}\n{}",
            node_name(i),
            tally.errors,
            logs(sidecars)
        );
        let other = tally.refused_other_than(429, "records-limit-exceeded");
        assert!(
            other.is_empty(),
            "{}: refusals other than 429 records-limit-exceeded: {other:#?}",
            node_name(i)
        );
    }
}

/// One round: a fresh Redis and three fresh sidecars with `lease` lines, 32 loaders on
/// each until refused.
async fn three_by_32_round(round: usize, lease: &[&str]) {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let mut fleet = Fleet::new(&redis.url(), two_pairs(&target.base_uri(), true))
        .license(&metered_license(LICENSE, 1, 100));
    for line in lease {
        fleet = fleet.state_option(line);
    }
    let sidecars = fleet.start_nodes(3).await;

    let tallies = load_fleet(&engines(&sidecars), Load::until_refused(32)).await;
    assert_only_limit_refusals(&tallies, &sidecars);
    let answered: usize = tallies.iter().map(|t| t.ok).sum();
    let per_node: Vec<usize> = tallies.iter().map(|t| t.ok).collect();
    assert_eq!(
        answered,
        HARD,
        "round {round} ({lease:?}): the fleet answered {answered} counted loads 2xx \
         (per sidecar {per_node:?}), not the hard limit {HARD}; Redis:\n{}",
        redis.dump()
    );
    assert_eq!(
        counted_hits(&target),
        HARD,
        "round {round}: counted loads that reached the target"
    );

    // Every further counted load, on any sidecar, is refused at the limit.
    for tg in &sidecars {
        let resp = tg.post(MAIN, Some("incidents"), "{}").await;
        resp.assert_problem(429, "records-limit-exceeded");
        await_used(
            tg,
            HARD as u64,
            Duration::from_secs(3),
            "every sidecar reports the fleet's total",
        )
        .await;
    }
    assert_eq!(
        counted_hits(&target),
        HARD,
        "round {round}: after the limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sidecars_with_32_loaders_each_answer_exactly_the_hard_limit_across_the_fleet() {
    // Twice, each time with a fresh Redis and fresh sidecars: with small leases (many
    // grants, the last one cut short) and with the default lease_max (one sidecar may
    // hold the whole budget at once).
    three_by_32_round(1, &["lease_max = 7"]).await;
    three_by_32_round(2, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_busy_sidecar_beside_two_idle_ones_reaches_the_hard_limit_alone() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = Fleet::new(&redis.url(), two_pairs(&target.base_uri(), true))
        .license(&metered_license(LICENSE, 1, 100))
        .state_option("lease_max = 20");
    let sidecars = fleet.start_nodes(3).await;

    let tallies = load_fleet(&[sidecars[0].engine], Load::until_refused(32)).await;
    assert_only_limit_refusals(&tallies, &sidecars);
    assert_eq!(
        tallies[0].ok, HARD,
        "the busy sidecar answered {} counted loads 2xx while two sidecars stayed idle",
        tallies[0].ok
    );
    assert_eq!(counted_hits(&target), HARD);

    // The idle sidecars know the budget is spent.
    for tg in &sidecars[1..] {
        await_used(
            tg,
            HARD as u64,
            Duration::from_secs(3),
            "an idle sidecar reports the busy one's loads",
        )
        .await;
        let resp = tg.post(MAIN, Some("incidents"), "{}").await;
        resp.assert_problem(429, "records-limit-exceeded");
    }
    assert_eq!(counted_hits(&target), HARD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_returns_the_unused_lease_so_the_others_reach_the_hard_limit_at_once() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    // A lease that outlives the test: only giving it back frees it.
    let fleet = Fleet::new(&redis.url(), two_pairs(&target.base_uri(), true))
        .license(&metered_license(LICENSE, 1, 100))
        .state_option("lease_max = 20")
        .state_option("lease_ttl = \"5m\"");
    let mut sidecars = fleet.start_nodes(3).await;

    loads_ok(&sidecars[0], 5).await;
    // Meaningful only if sidecar-a holds part of a lease (when it shows its fleet view).
    if let Some(unused) = unused_by(&sidecars[0]).await {
        assert!(
            unused > 0,
            "after 5 loads sidecar-a holds no unused lease, so this test proves nothing"
        );
    }
    let status = sidecars[0].terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "sidecar-a exited {status} on SIGTERM");

    let rest = &sidecars[1..];
    // What sidecar-a counted is the fleet's before it exits.
    await_used(
        &rest[0],
        5,
        Duration::from_secs(2),
        "sidecar-a's 5 loads in the fleet's total after its SIGTERM",
    )
    .await;
    let tallies = load_fleet(&engines(rest), Load::until_refused(32)).await;
    assert_only_limit_refusals(&tallies, rest);
    let answered: usize = tallies.iter().map(|t| t.ok).sum();
    assert_eq!(
        answered + 5,
        HARD,
        "after sidecar-a stopped with SIGTERM, the other two answered {answered} counted \
         loads 2xx: sidecar-a's unused lease was not given back; Redis:\n{}",
        redis.dump()
    );
    assert_eq!(counted_hits(&target), HARD);
    for tg in rest {
        await_used(
            tg,
            HARD as u64,
            Duration::from_secs(3),
            "the remaining sidecars count sidecar-a's loads",
        )
        .await;
    }
    // The stopped sidecar holds nothing it has not drawn: `held` (granted to it, drawn or
    // not) is what it committed.
    let view = license_fleet(&sidecars[1]).await;
    let a = view["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node"] == "sidecar-a"))
        .cloned();
    if let Some(a) = a {
        assert_eq!(a["committed"], 5, "sidecar-a's loads: {view}");
        assert_eq!(
            a["held"], 5,
            "sidecar-a after SIGTERM holds more than it drew: {view}"
        );
    }
    drop(sidecars.remove(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sidecars_undrawn_records_go_to_the_busy_one_at_the_end_of_the_budget() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    // The default lease_ttl (30 s): near the end of the budget an idle lease still goes
    // back within a second or two, so the busy sidecar gets the last records.
    let fleet = Fleet::new(&redis.url(), two_pairs(&target.base_uri(), true))
        .license(&metered_license(LICENSE, 1, 100))
        .state_option("lease_max = 20");
    let sidecars = fleet.start_nodes(2).await;
    loads_ok(&sidecars[0], 5).await;
    if let Some(unused) = unused_by(&sidecars[0]).await {
        assert!(
            unused > 0,
            "sidecar-a holds nothing undrawn, so this test proves nothing"
        );
    }

    let busy = [sidecars[1].engine];
    let first = load_fleet(&busy, Load::until_refused(8)).await;
    assert_only_limit_refusals(&first, &sidecars);
    let mut answered = 5 + first[0].ok;
    let started = std::time::Instant::now();
    while answered < HARD && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let more = load_fleet(&busy, Load::until_refused(2)).await;
        assert_only_limit_refusals(&more, &sidecars);
        answered += more[0].ok;
    }
    assert_eq!(
        answered,
        HARD,
        "the busy sidecar got only {} of the budget within 5 s while sidecar-a sat on \
         undrawn records",
        answered - 5
    );
    assert_eq!(counted_hits(&target), HARD);
}

/// A sidecar stopped with SIGTERM gives its node name back along with its lease: started
/// again with the same `node`, it joins at once instead of waiting for its old claim of the
/// name to expire (its lifetime is `lease_ttl`, here 5 minutes, far beyond the 20 s the
/// harness waits for `/readyz`), and carries on counting where it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_restarted_after_sigterm_joins_the_fleet_at_once() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = Fleet::new(&redis.url(), two_pairs(&target.base_uri(), true))
        .license(&metered_license(LICENSE, 1, 100))
        .state_option("lease_ttl = \"5m\"");
    let mut a = fleet.start(&node_name(0)).await;
    loads_ok(&a, 3).await;
    let status = a.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "sidecar-a exited {status} on SIGTERM");
    // Waits until /readyz answers 200 (at most 20 s).
    a.restart(&fleet.restart_env()).await;
    loads_ok(&a, 2).await;
    await_used(
        &a,
        5,
        Duration::from_secs(2),
        "the restarted sidecar counts on from its 3 loads",
    )
    .await;
}
