//! Fleet mode, failures: Redis down when a sidecar starts, frozen (SIGSTOP) between runs
//! and mid-run, restarted mid-month with and without its append-only file (and its flow
//! settings re-seeded); one sidecar cut off from Redis; a sidecar killed with `kill -9`
//! while it holds a lease or under load (strict and batched durability), or stopped with
//! SIGTERM under load or while Redis is frozen; a clock far from Redis' `TIME`; and the
//! month rolling over on the test clock. In every
//! case no counted load the target answered 2xx is lost or counted twice, the fleet never
//! exceeds the hard limit (limit 100 → 110), nothing hangs (every refusal is answered
//! within a second) and the fleet recovers by itself.
//!
//! Needs `redis-server` on `PATH`; the month rollover needs the `test-clock` feature.

pub mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fleet::*;
use common::redis::{Partition, Persistence, RedisServer};
use common::*;
use hyper::StatusCode;

/// limit 100 → hard limit 110.
const HARD: usize = 110;
/// Each refusal while Redis is unusable must come within this (redis_timeout is 250 ms).
const PROMPT: Duration = Duration::from_secs(1);

/// A fleet of servicenow-1 ↔ jira-1 (`incidents`) licensed by `LIC-FLEET` (limit 100),
/// with lease_max 20, redis_timeout 250ms and `state` lines.
fn fleet(redis: &RedisServer, target: &Upstream, state: &[&str]) -> Fleet {
    let mut fleet = Fleet::new(&redis.url(), two_pairs(&target.base_uri(), true))
        .license(&metered_license(LICENSE, 1, 100))
        .state_option("lease_max = 20")
        .state_option("redis_timeout = \"250ms\"");
    for line in state {
        fleet = fleet.state_option(line);
    }
    fleet
}

fn engines(sidecars: &[&Tollgate]) -> Vec<SocketAddr> {
    sidecars.iter().map(|tg| tg.engine).collect()
}

fn logs(sidecars: &[&Tollgate]) -> String {
    sidecars
        .iter()
        .map(|tg| format!("--- sidecar on {}\n{}", tg.admin, tg.logs()))
        .collect()
}

/// Sends one counted load and returns the answer with how long it took.
async fn timed_load(tg: &Tollgate) -> (Resp, Duration) {
    let start = Instant::now();
    let resp = tg.post(MAIN, Some("incidents"), "{}").await;
    (resp, start.elapsed())
}

/// Asserts every loader got an answer and stopped only at the records limit (503s while
/// retrying are allowed); returns the loads answered 2xx.
#[track_caller]
fn answered(tallies: &[Tally], sidecars: &[&Tollgate]) -> usize {
    for tally in tallies {
        assert!(
            tally.errors.is_empty(),
            "loads without an answer: {:?}\n{}",
            tally.errors,
            logs(sidecars)
        );
        let other: Vec<&Refusal> = tally
            .refused
            .iter()
            .filter(|r| !r.is(429, "records-limit-exceeded") && !r.is(503, "store-unavailable"))
            .collect();
        assert!(other.is_empty(), "unexpected refusals: {other:#?}");
    }
    tallies.iter().map(|t| t.ok).sum()
}

/// Asserts the fleet's totals are exact once the loads are done: the target received exactly
/// the `seen_ok` loads answered 2xx, `records.used` on every sidecar reaches that number, and
/// it is the hard limit. `after` says after what, for the messages.
async fn assert_exact_totals(
    target: &Upstream,
    sidecars: &[&Tollgate],
    seen_ok: usize,
    after: &str,
) {
    assert_eq!(
        counted_hits(target),
        seen_ok,
        "the target received other than the loads answered 2xx ({after})"
    );
    for tg in sidecars {
        await_used(
            tg,
            seen_ok as u64,
            Duration::from_secs(5),
            &format!("records.used equals the loads answered 2xx ({after})"),
        )
        .await;
    }
    assert_eq!(
        seen_ok, HARD,
        "{after}, the fleet reached {seen_ok} of {HARD}"
    );
}

/// Loads on every sidecar until the fleet refuses at the limit, again after `pause` as
/// long as it falls short of 110 (a lease lost in a failure frees up after lease_ttl),
/// at most `rounds` times; returns the loads answered 2xx.
async fn load_to_the_limit(
    sidecars: &[&Tollgate],
    already: usize,
    pause: Duration,
    rounds: usize,
) -> usize {
    let mut total = 0;
    for round in 0..rounds {
        if round > 0 {
            tokio::time::sleep(pause).await;
        }
        let load = Load::retrying_unavailable(8, Duration::from_secs(10));
        let tallies = load_fleet(&engines(sidecars), load).await;
        total += answered(&tallies, sidecars);
        assert!(
            already + total <= HARD,
            "the fleet answered {} counted loads 2xx, over the hard limit {HARD}",
            already + total
        );
        if already + total == HARD {
            break;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_refuses_counted_loads_promptly_then_recovers_by_itself() {
    let mut redis = RedisServer::not_started(Persistence::None);
    let target = Upstream::plain("target").await;
    let tg = fleet(&redis, &target, &[]).start_unready("sidecar-a").await;

    assert_eq!(
        tg.healthz().await,
        StatusCode::OK,
        "/healthz with Redis down"
    );
    assert_eq!(
        tg.readyz().await,
        StatusCode::SERVICE_UNAVAILABLE,
        "/readyz with Redis down"
    );
    let status = tg.status().await;
    assert_eq!(status["fleet"]["connected"], false, "{status}");
    for n in 1..=3 {
        let (resp, took) = timed_load(&tg).await;
        resp.assert_problem(503, "store-unavailable");
        assert!(
            took < PROMPT,
            "counted load {n} with Redis down answered after {took:?}"
        );
    }
    assert_eq!(
        counted_hits(&target),
        0,
        "a refused counted load reached the target"
    );
    // The failed exchanges with the unreachable Redis are counted (within a few seconds).
    let errors_while_down = eventually(
        "tollgate_fleet_redis_errors_total >= 1 with Redis down",
        Duration::from_secs(5),
        || async {
            let metrics = tg.metrics_text().await;
            metric(&metrics, "tollgate_fleet_redis_errors_total", &[]).filter(|n| *n >= 1.0)
        },
    )
    .await;
    let metrics = tg.metrics_text().await;
    assert_eq!(
        metric(&metrics, "tollgate_fleet_redis_up", &[]),
        Some(0.0),
        "tollgate_fleet_redis_up with Redis down:\n{metrics}"
    );
    // A request that is not a counted load is forwarded as usual.
    let resp = tg.get(NOT_COUNTED, Some("incidents")).await;
    resp.assert_upstream_ok("target");

    redis.restart();
    eventually(
        "/readyz 200 once Redis is up",
        Duration::from_secs(15),
        || async { (tg.readyz().await == StatusCode::OK).then_some(()) },
    )
    .await;
    loads_ok(&tg, 3).await;
    await_used(&tg, 3, Duration::from_secs(3), "loads after Redis came up").await;
    assert_eq!(counted_hits(&target), 3);
    let status = tg.status().await;
    assert_eq!(status["fleet"]["connected"], true, "{status}");
    let metrics = tg.metrics_text().await;
    assert_eq!(metric(&metrics, "tollgate_fleet_redis_up", &[]), Some(1.0));
    let errors_after = metric(&metrics, "tollgate_fleet_redis_errors_total", &[]);
    assert!(
        errors_after.is_some_and(|n| n >= errors_while_down),
        "tollgate_fleet_redis_errors_total went from {errors_while_down} (Redis down) to \
         {errors_after:?} once Redis was up: a counter never goes down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_admits_only_the_leased_block_and_the_totals_are_exact_after_it_thaws() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = fleet(&redis, &target, &["lease_ttl = \"2s\""]);
    let a = fleet.start("sidecar-a").await;
    let b = fleet.start("sidecar-b").await;

    loads_ok(&a, 1).await;
    // What each may admit while Redis is frozen: what it holds and has not drawn (at most
    // lease_max - 1 = 19 for sidecar-a after one load, if it shows no lease metric).
    let held = unused_by(&a).await.unwrap_or(19) as usize;
    assert!(
        held <= 19,
        "sidecar-a holds {held} undrawn, more than lease_max - 1"
    );
    let held_b = unused_by(&b).await.unwrap_or(20) as usize;

    redis.freeze();
    // Concurrent loaders on both sidecars while Redis answers nothing: sidecar-a may use
    // what it holds, nothing more; every refusal comes promptly.
    let frozen_load = Load::until_refused(4);
    let during = load_fleet(&[a.engine, b.engine], frozen_load).await;
    for (name, tally) in ["sidecar-a", "sidecar-b"].iter().zip(&during) {
        assert!(tally.errors.is_empty(), "{name}: {:?}", tally.errors);
        let other = tally.refused_other_than(503, "store-unavailable");
        assert!(
            other.is_empty(),
            "{name}: refusals while Redis is frozen other than 503 store-unavailable: {other:#?}"
        );
        assert!(
            tally.slowest < PROMPT,
            "{name}: an answer took {:?} while Redis was frozen",
            tally.slowest
        );
    }
    assert!(
        during[0].ok <= held,
        "sidecar-a answered {} counted loads 2xx with Redis frozen, holding a lease of {held}",
        during[0].ok
    );
    assert!(
        during[1].ok <= held_b,
        "sidecar-b answered {} counted loads 2xx with Redis frozen, holding a lease of {held_b}",
        during[1].ok
    );
    // The admin API does not hang either.
    let start = Instant::now();
    let _ = a.admin_get("/v1/licenses").await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "GET /v1/licenses took {:?} with Redis frozen",
        start.elapsed()
    );
    let (resp, took) = timed_load(&b).await;
    resp.assert_problem(503, "store-unavailable");
    assert!(
        took < PROMPT,
        "a single counted load took {took:?} with Redis frozen"
    );
    let metrics = a.metrics_text().await;
    assert_eq!(
        metric(&metrics, "tollgate_fleet_redis_up", &[]),
        Some(0.0),
        "tollgate_fleet_redis_up with Redis frozen"
    );
    assert!(
        metric(&metrics, "tollgate_fleet_redis_errors_total", &[]).is_some_and(|n| n >= 1.0),
        "Redis exchanges that timed out are not counted in tollgate_fleet_redis_errors_total"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.thaw();

    let before = 1 + during[0].ok + during[1].ok;
    assert_eq!(
        counted_hits(&target),
        before,
        "loads that reached the target while frozen"
    );
    let after = load_to_the_limit(&[&a, &b], before, Duration::from_secs(3), 3).await;
    let seen_ok = before + after;
    assert_exact_totals(
        &target,
        &[&a, &b],
        seen_ok,
        "after Redis thawed (a lease granted during the freeze lost?)",
    )
    .await;
}

/// Loads on two sidecars, then paced loaders on both while Redis restarts (they retry
/// `503 store-unavailable`), then loads to the limit: the fleet's total equals the loads
/// answered 2xx, the target received exactly those, and the fleet stops at 110.
async fn restart_mid_month(persistence: Persistence) {
    let mut redis = match persistence {
        Persistence::None => RedisServer::start(),
        Persistence::AppendOnly => RedisServer::start_aof(),
    };
    let target = Upstream::plain("target").await;
    let fleet = fleet(&redis, &target, &["lease_ttl = \"2s\""]);
    let a = fleet.start("sidecar-a").await;
    let b = fleet.start("sidecar-b").await;
    loads_ok(&a, 30).await;
    loads_ok(&b, 25).await;
    await_used(&a, 55, Duration::from_secs(3), "before the restart").await;

    // About 2 × 2 × 20 loads a second: the restart falls in the middle of them.
    let load = Load {
        pace: Duration::from_millis(50),
        ..Load::retrying_unavailable(2, Duration::from_secs(15))
    };
    let engines = [a.engine, b.engine];
    let during = tokio::spawn(async move { load_fleet(&engines, load).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.restart();
    let during = during.await.expect("the loaders");
    let mid = answered(&during, &[&a, &b]);
    assert!(
        55 + mid <= HARD,
        "the fleet answered {} 2xx across a Redis restart ({persistence:?}), over {HARD}",
        55 + mid
    );
    for tg in [&a, &b] {
        await_used(
            tg,
            (55 + mid) as u64,
            Duration::from_secs(10),
            &format!("the fleet's total after a Redis restart ({persistence:?})"),
        )
        .await;
    }
    let after = load_to_the_limit(&[&a, &b], 55 + mid, Duration::from_secs(3), 3).await;
    let seen_ok = 55 + mid + after;
    let after_restart = format!("after a Redis restart ({persistence:?})");
    assert_exact_totals(&target, &[&a, &b], seen_ok, &after_restart).await;
    for tg in [&a, &b] {
        let resp = tg.post(MAIN, Some("incidents"), "{}").await;
        resp.assert_problem(429, "records-limit-exceeded");
    }
    assert_eq!(counted_hits(&target), HARD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_aof_loses_no_count_and_keeps_the_hard_limit() {
    restart_mid_month(Persistence::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_with_aof_loses_no_count_and_keeps_the_hard_limit() {
    restart_mid_month(Persistence::AppendOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_sidecar_holding_a_lease_loses_no_count_and_never_exceeds_the_limit() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = fleet(&redis, &target, &["lease_ttl = \"2s\""]);
    let mut sidecars = fleet.start_nodes(3).await;

    loads_ok(&sidecars[0], 5).await;
    // Meaningful only if sidecar-a holds part of a lease (when it shows its fleet view).
    if let Some(unused) = unused_by(&sidecars[0]).await {
        assert!(
            unused > 0,
            "after 5 loads sidecar-a holds no lease, so killing it proves nothing"
        );
    }
    sidecars[0].kill9();
    assert!(
        sidecars[0]
            .wait_exit(Duration::from_secs(5))
            .await
            .is_some(),
        "sidecar-a survived kill -9"
    );

    // Without sidecar-a, the others fall short by at most lease_max, never over.
    let others = [&sidecars[1], &sidecars[2]];
    let tallies = load_fleet(&engines(&others), Load::until_refused(16)).await;
    let first = answered(&tallies, &others);
    assert!(
        5 + first <= HARD && 5 + first + 20 >= HARD,
        "with sidecar-a killed, the fleet reached {} (must be within lease_max 20 below {HARD})",
        5 + first
    );
    // Even after lease_ttl, what sidecar-a may have counted is not handed out again; it
    // is no longer live.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let view = license_fleet(&sidecars[1]).await;
    let dead = view["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node"] == "sidecar-a"))
        .cloned()
        .unwrap_or_else(|| panic!("sidecar-a's line is gone from fleet.nodes: {view}"));
    assert_eq!(
        dead["live"], false,
        "sidecar-a, killed 3 s ago (lease_ttl 2s), is shown live: {view}"
    );
    let tallies = load_fleet(&engines(&others), Load::until_refused(4)).await;
    let second = answered(&tallies, &others);
    assert!(
        5 + first + second <= HARD,
        "after lease_ttl the fleet went to {}, over {HARD}",
        5 + first + second
    );

    // sidecar-a comes back under the same node name: nothing it answered is lost.
    let env = fleet.restart_env();
    sidecars[0].restart(&env).await;
    let seen_ok = (5 + first + second) as u64;
    for tg in &sidecars {
        await_used(
            tg,
            seen_ok,
            Duration::from_secs(5),
            "the fleet's total after sidecar-a restarted",
        )
        .await;
    }
    let all: Vec<&Tollgate> = sidecars.iter().collect();
    let rest = load_to_the_limit(&all, seen_ok as usize, Duration::from_secs(3), 3).await;
    let total = seen_ok as usize + rest;
    assert_eq!(counted_hits(&target), total);
    assert_eq!(
        total, HARD,
        "after sidecar-a restarted the fleet reached {total}, not {HARD}"
    );
    for tg in &sidecars {
        await_used(tg, HARD as u64, Duration::from_secs(5), "at the limit").await;
    }
}

/// The month rollover on the test clock: both sidecars start a few seconds before
/// midnight of 2026-11-30 (UTC); November is spent to the hard limit (11) by the fleet, and
/// December starts from zero for both.
#[cfg(feature = "test-clock")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_month_rollover_starts_the_next_month_from_zero_for_the_whole_fleet() {
    use chrono::{DateTime, Utc};

    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = Fleet::new(&redis.url(), two_pairs(&target.base_uri(), true))
        .license(&metered_license(LICENSE, 1, 10))
        .state_option("lease_max = 4")
        .state_option("redis_timeout = \"250ms\"")
        .licensing_option("max_clock_skew = \"90d\"");
    // Both sidecars reach midnight at the same real instant, 8 s from now.
    let midnight: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().expect("midnight");
    let at_midnight = Instant::now() + Duration::from_secs(8);
    let pinned = || {
        let left = at_midnight.saturating_duration_since(Instant::now());
        (midnight - chrono::Duration::from_std(left).expect("a short duration"))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let now_a = pinned();
    let a = fleet
        .start_env("sidecar-a", &[("TOLLGATE_NOW", &now_a)])
        .await;
    let now_b = pinned();
    let b = fleet
        .start_env("sidecar-b", &[("TOLLGATE_NOW", &now_b)])
        .await;
    let status = a.status().await;
    assert_eq!(
        status["month"], "2026-11",
        "the sidecar does not run at TOLLGATE_NOW (build with --features test-clock): {status}"
    );
    assert_eq!(status["fleet"]["connected"], true, "{status}");

    // November: loaders on both sidecars spend the fleet's hard limit (11).
    let tallies = load_fleet(&[a.engine, b.engine], Load::until_refused(2)).await;
    let november: usize = tallies.iter().map(|t| t.ok).sum();
    assert_eq!(november, 11, "November's loads answered 2xx: {tallies:?}");
    for tg in [&a, &b] {
        let resp = tg.post(MAIN, Some("incidents"), "{}").await;
        resp.assert_problem(429, "records-limit-exceeded");
        await_used(tg, 11, Duration::from_secs(2), "November's fleet total").await;
        let records = tg.records(LICENSE).await;
        assert_eq!(
            records["month"], "2026-11",
            "the month turned before the test spent November (machine too slow?): {records}"
        );
    }

    // December starts from zero on both.
    for tg in [&a, &b] {
        eventually("December", Duration::from_secs(20), || async {
            (tg.records(LICENSE).await["month"] == "2026-12").then_some(())
        })
        .await;
    }
    for tg in [&a, &b] {
        eventually(
            "incidents resumed in December",
            Duration::from_secs(5),
            || async { (tg.flow("incidents").await["enabled"] == true).then_some(()) },
        )
        .await;
    }
    loads_ok(&a, 2).await;
    loads_ok(&b, 1).await;
    for tg in [&a, &b] {
        await_used(tg, 3, Duration::from_secs(3), "December's fleet total").await;
        assert_eq!(
            tg.usage_of_license(Some("2026-11"), LICENSE).await,
            11,
            "November's fleet total after the rollover"
        );
    }
    assert_eq!(counted_hits(&target), 14);
}

/// The premise of the restart tests: the fixture's restart keeps the data set with the
/// append-only file and loses it without, and a frozen server answers nothing until it is
/// thawed.
#[test]
fn the_redis_fixture_restarts_with_and_without_its_data_and_freezes() {
    let mut plain = RedisServer::start();
    let mut aof = RedisServer::start_aof();
    for redis in [&plain, &aof] {
        assert_eq!(redis.command(&["SET", "k", "v"]), "OK");
        assert_eq!(redis.command(&["HSET", "h", "f", "1"]), "1");
        assert_eq!(redis.keys(), ["h", "k"]);
    }
    let port = plain.port();
    plain.restart();
    aof.kill9();
    aof.restart();
    assert_eq!(plain.port(), port, "a restart keeps the port");
    assert!(plain.keys().is_empty(), "without AOF the data set is gone");
    assert_eq!(
        aof.keys(),
        ["h", "k"],
        "with AOF always the data set survives kill -9"
    );
    assert_eq!(aof.command(&["HGETALL", "h"]), "f\n1");

    plain.freeze();
    let stream = std::net::TcpStream::connect(plain.addr()).expect("connect while frozen");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("a read timeout");
    let mut writer = &stream;
    std::io::Write::write_all(&mut writer, b"PING\r\n").expect("send PING");
    let mut reader = &stream;
    let mut buf = [0u8; 16];
    assert!(
        std::io::Read::read(&mut reader, &mut buf).is_err(),
        "a frozen redis-server answered"
    );
    plain.thaw();
    assert_eq!(plain.command(&["PING"]), "PONG");
    plain.stop();
    assert!(!plain.is_running());
}

/// A sidecar whose clock is 30 days behind Redis' `TIME` (beyond the default
/// `max_clock_skew` of 24 h) refuses counted loads, says so in `/v1/status`, and sends
/// nothing to the target; a sidecar of the same fleet on the right clock counts as usual.
#[cfg(feature = "test-clock")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_far_from_redis_time_refuses_counted_loads() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = fleet(&redis, &target, &[]);
    let behind = (chrono::Utc::now() - chrono::Duration::days(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let skewed = fleet
        .builder("sidecar-skewed")
        .start_unready(&[("TOLLGATE_NOW", &behind)])
        .await;
    let good = fleet.start("sidecar-good").await;

    let skew = eventually(
        "status.fleet.clock_skew on the skewed sidecar",
        Duration::from_secs(10),
        || async {
            let status = skewed.status().await;
            let skew = status["fleet"]["clock_skew"].clone();
            skew.is_string().then_some(skew)
        },
    )
    .await;
    assert!(
        !skew.as_str().unwrap_or_default().is_empty(),
        "clock_skew must be a sentence: {skew}"
    );
    let (resp, took) = timed_load(&skewed).await;
    assert!(
        !resp.status.is_success(),
        "a counted load on a clock 30 days behind Redis was answered {}",
        resp.status
    );
    assert!(took < PROMPT, "the refusal took {took:?}");
    assert_eq!(
        counted_hits(&target),
        0,
        "the skewed sidecar forwarded a counted load"
    );
    assert_eq!(
        skewed.readyz().await,
        StatusCode::SERVICE_UNAVAILABLE,
        "/readyz of a sidecar whose clock disagrees with Redis'"
    );
    assert_eq!(
        good.status().await["fleet"]["clock_skew"],
        serde_json::Value::Null
    );
    loads_ok(&good, 2).await;
    assert_eq!(counted_hits(&target), 2);
}

/// One sidecar cut off from Redis (its connection holds every byte back) for longer than
/// lease_ttl while it keeps drawing, and the other sidecar asks for budget before and after
/// that lease_ttl: the fleet never answers more than 110 counted loads 2xx, and once the
/// partition heals the totals are exact and the fleet reaches 110.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_cut_off_from_redis_never_takes_the_fleet_over_the_limit() {
    let redis = RedisServer::start();
    let partition = Partition::to(&redis).await;
    let target = Upstream::plain("target").await;
    let fleet = fleet(&redis, &target, &["lease_ttl = \"2s\""]);
    let a = fleet
        .builder_without_redis("sidecar-a")
        .state_option(&format!("redis = \"{}\"", partition.url()))
        .start()
        .await;
    let b = fleet.start("sidecar-b").await;
    loads_ok(&a, 1).await;

    partition.block();
    let cut_off = Instant::now();
    // sidecar-a keeps drawing slowly (its lease lasts past lease_ttl), retrying 503s.
    let slow = Load {
        pace: Duration::from_millis(150),
        ..Load::retrying_unavailable(1, Duration::from_secs(6))
    };
    let engine_a = [a.engine];
    let drawing = tokio::spawn(async move { load_fleet(&engine_a, slow).await });
    // sidecar-b spends what the fleet has left, before and after sidecar-a's lease_ttl.
    let first = load_fleet(&[b.engine], Load::until_refused(4)).await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(cut_off.elapsed())).await;
    let second = load_fleet(&[b.engine], Load::until_refused(4)).await;
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(cut_off.elapsed())).await;
    partition.heal();
    let drawn = drawing.await.expect("sidecar-a's loader");
    let partitioned =
        1 + answered(&drawn, &[&a]) + answered(&first, &[&b]) + answered(&second, &[&b]);
    assert!(
        partitioned <= HARD,
        "with sidecar-a cut off the fleet answered {partitioned} counted loads 2xx \
         (sidecar-a {}, sidecar-b {} then {}), over {HARD}",
        1 + drawn[0].ok,
        first[0].ok,
        second[0].ok
    );

    let rest = load_to_the_limit(&[&a, &b], partitioned, Duration::from_secs(3), 3).await;
    let seen_ok = partitioned + rest;
    assert_exact_totals(&target, &[&a, &b], seen_ok, "after the partition healed").await;
}

/// A sidecar killed with `kill -9` while 8 loaders are sending counted loads through it:
/// after its restart under the same node name the fleet counts every load answered 2xx
/// (and at most what reached the target), and the fleet then reaches exactly 110.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_answered_count() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = fleet(&redis, &target, &["lease_ttl = \"2s\""]);
    let mut a = fleet.start("sidecar-a").await;
    let b = fleet.start("sidecar-b").await;

    let busy = Load {
        pace: Duration::from_millis(10),
        ..Load::until_refused(8)
    };
    let engine_a = [a.engine];
    let loading = tokio::spawn(async move { load_fleet(&engine_a, busy).await });
    eventually(
        "30 loads reached the target",
        Duration::from_secs(10),
        || async { (counted_hits(&target) >= 30).then_some(()) },
    )
    .await;
    a.kill9();
    assert!(
        a.wait_exit(Duration::from_secs(5)).await.is_some(),
        "sidecar-a survived kill -9"
    );
    // The loaders' requests in flight fail at once: nothing waits on a dead sidecar.
    let tally = tokio::time::timeout(Duration::from_secs(5), loading)
        .await
        .expect("the loaders did not finish within 5 s of kill -9")
        .expect("the loaders")
        .remove(0);
    let answered_a = tally.ok;
    assert!(
        tally.refused.is_empty(),
        "refusals before the kill: {:#?}",
        tally.refused
    );

    a.restart(&fleet.restart_env()).await;
    let counted = eventually(
        "the fleet's total after sidecar-a restarted",
        Duration::from_secs(5),
        || async {
            let on_b = used(&b).await;
            (on_b >= answered_a as u64 && on_b == used(&a).await).then_some(on_b)
        },
    )
    .await;
    let hits = counted_hits(&target) as u64;
    assert!(
        counted >= answered_a as u64 && counted <= hits,
        "after kill -9 and restart the fleet counts {counted}: sidecar-a answered \
         {answered_a} 2xx and the target received {hits}"
    );

    let rest = load_to_the_limit(&[&a, &b], counted as usize, Duration::from_secs(3), 3).await;
    let total = counted as usize + rest;
    assert_eq!(
        total, HARD,
        "after the restart the fleet counted {total}, not {HARD}"
    );
    for tg in [&a, &b] {
        await_used(tg, HARD as u64, Duration::from_secs(5), "at the limit").await;
    }
    // Loads the target received but sidecar-a never answered (cut off by the kill) are
    // the only ones beyond the count: at most one per loader.
    let hits = counted_hits(&target);
    assert!(
        (HARD..=HARD + 8).contains(&hits),
        "the target received {hits} counted loads for a fleet total of {HARD}"
    );
}

/// Enabling and disabling a flow while Redis is frozen answers within 2 s, whatever the
/// answer; a change answered 200 is the fleet's once Redis thaws, and every sidecar shows
/// the same state of the flow within 2 s of the thaw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_changes_while_redis_is_frozen_answer_promptly_and_the_fleet_converges() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = fleet(&redis, &target, &[]);
    let a = fleet.start("sidecar-a").await;
    let b = fleet.start("sidecar-b").await;

    redis.freeze();
    let start = Instant::now();
    let resp = a.admin_post("/v1/flows/incidents/disable", "").await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "disable with Redis frozen took {took:?}"
    );
    let answered_ok = resp.status == StatusCode::OK;
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.thaw();

    let thawed = Instant::now();
    let converged = eventually(
        "both sidecars show the same state of incidents after the thaw",
        Duration::from_secs(2),
        || async {
            let (fa, fb) = (a.flow("incidents").await, b.flow("incidents").await);
            (fa["enabled"] == fb["enabled"] && fa["reason"] == fb["reason"]).then_some(fa)
        },
    )
    .await;
    assert!(
        thawed.elapsed() < Duration::from_secs(3),
        "the sidecars agreed only {:?} after the thaw",
        thawed.elapsed()
    );
    // A refused change may or may not have reached Redis; either way the sidecars agree.
    if answered_ok {
        assert_eq!(
            converged["enabled"], false,
            "disable answered 200 with Redis frozen, but the fleet has incidents enabled: {converged}"
        );
    }
}

/// Redis frozen for 1.5 s early in a run of 3 sidecars × 2 paced loaders (which retry
/// `503 store-unavailable`), then thawed: every answer comes within a second, the fleet never
/// answers more than 110 counted loads 2xx, the count equals them and the target received
/// exactly them, and the fleet reaches 110.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_mid_run_under_load_keeps_the_totals_exact() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = fleet(&redis, &target, &["lease_ttl = \"2s\""]);
    let sidecars = fleet.start_nodes(3).await;
    let all: Vec<&Tollgate> = sidecars.iter().collect();

    // About 3 × 2 × 20 loads a second: the freeze falls early in the run.
    let load = Load {
        pace: Duration::from_millis(50),
        ..Load::retrying_unavailable(2, Duration::from_secs(8))
    };
    let engines = engines(&all);
    let running = tokio::spawn(async move { load_fleet(&engines, load).await });
    eventually(
        "20 loads before the freeze",
        Duration::from_secs(10),
        || async { (counted_hits(&target) >= 20).then_some(()) },
    )
    .await;
    redis.freeze();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.thaw();
    let tallies = running.await.expect("the loaders");
    for tally in &tallies {
        assert!(
            tally.slowest < PROMPT,
            "an answer took {:?} with Redis frozen mid-run",
            tally.slowest
        );
    }
    let during = answered(&tallies, &all);
    assert!(
        during <= HARD,
        "the fleet answered {during} 2xx, over {HARD}"
    );
    let rest = load_to_the_limit(&all, during, Duration::from_secs(3), 3).await;
    let seen_ok = during + rest;
    assert_exact_totals(&target, &all, seen_ok, "after a freeze mid-run").await;
}

/// SIGTERM of a sidecar while 4 loaders send counted loads through it: the loads it
/// answered 2xx before exiting are all in the fleet's total, it gives back what it did not
/// draw, and the other sidecar then reaches exactly 110 at once (lease_ttl is 5 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_ships_every_answered_count_and_returns_the_rest() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = fleet(&redis, &target, &["lease_ttl = \"5m\""]);
    let mut a = fleet.start("sidecar-a").await;
    let b = fleet.start("sidecar-b").await;

    let busy = Load {
        pace: Duration::from_millis(50),
        ..Load::until_refused(4)
    };
    let engine_a = [a.engine];
    let loading = tokio::spawn(async move { load_fleet(&engine_a, busy).await });
    eventually(
        "30 loads reached the target",
        Duration::from_secs(10),
        || async { (counted_hits(&target) >= 30).then_some(()) },
    )
    .await;
    let status = a.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "sidecar-a exited {status} on SIGTERM");
    let tally = tokio::time::timeout(Duration::from_secs(5), loading)
        .await
        .expect("the loaders did not finish within 5 s of the exit")
        .expect("the loaders")
        .remove(0);
    let answered_a = tally.ok;
    let other: Vec<&Refusal> = tally.refused.iter().filter(|r| r.status != 503).collect();
    assert!(other.is_empty(), "refusals during the drain: {other:#?}");
    // Draining answers what was admitted; every such 2xx reached the target and is counted.
    assert_eq!(
        counted_hits(&target),
        answered_a,
        "loads the target received vs loads sidecar-a answered 2xx"
    );
    await_used(
        &b,
        answered_a as u64,
        Duration::from_secs(2),
        "sidecar-a's answered loads in the fleet's total after its SIGTERM",
    )
    .await;

    let tallies = load_fleet(&[b.engine], Load::until_refused(16)).await;
    let answered_b = answered(&tallies, &[&b]);
    assert_eq!(
        answered_a + answered_b,
        HARD,
        "after sidecar-a stopped under load, sidecar-b answered {answered_b} (sidecar-a \
         {answered_a}): what sidecar-a did not draw was not given back"
    );
    assert_eq!(counted_hits(&target), HARD);
}

/// After Redis restarts without its data, the fleet's flow settings come back from the
/// sidecars (a flow disabled before the restart stays disabled everywhere), and a change on
/// one sidecar still shows on the other within a second or so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_settings_survive_a_redis_data_loss_and_still_propagate() {
    let mut redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = fleet(&redis, &target, &[]);
    let a = fleet.start("sidecar-a").await;
    let b = fleet.start("sidecar-b").await;
    a.disable("incidents").await;
    await_flow(
        &b,
        "incidents",
        false,
        serde_json::json!("operator"),
        Duration::from_secs(3),
    )
    .await;

    redis.restart();
    for tg in [&a, &b] {
        eventually(
            "/readyz 200 after the Redis restart",
            Duration::from_secs(10),
            || async { (tg.readyz().await == StatusCode::OK).then_some(()) },
        )
        .await;
    }
    // Wait past the version check (every second) so a re-seed has happened.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for tg in [&a, &b] {
        let flow = tg.flow("incidents").await;
        assert_eq!(
            (flow["enabled"].clone(), flow["reason"].clone()),
            (serde_json::json!(false), serde_json::json!("operator")),
            "incidents after Redis lost its data, on {}: {flow}",
            tg.admin
        );
    }
    let resp = b.enable("incidents").await;
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "enable after the restart: {}",
        resp.text()
    );
    let took = await_flow(
        &a,
        "incidents",
        true,
        serde_json::Value::Null,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        took <= Duration::from_millis(1500),
        "enabling on sidecar-b after the Redis restart took {took:?} to show on sidecar-a"
    );
    loads_ok(&a, 1).await;
}

/// SIGTERM while Redis is frozen: the sidecar still exits promptly (its lease cannot be
/// returned and stays granted); restarted under the same node name once Redis thaws, it
/// gives back what it did not draw, and the fleet reaches exactly 110.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_redis_frozen_exits_promptly_and_the_restart_returns_the_lease() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    // The dying run cannot release its claim of the node name either: the restart waits
    // for the claim to expire (lease_ttl) before it joins.
    let fleet = fleet(&redis, &target, &["lease_ttl = \"3s\""]);
    let mut a = fleet.start("sidecar-a").await;
    let b = fleet.start("sidecar-b").await;
    loads_ok(&a, 5).await;

    redis.freeze();
    let start = Instant::now();
    let status = a.terminate(Duration::from_secs(15)).await;
    let took = start.elapsed();
    assert!(
        status.success(),
        "sidecar-a exited {status} on SIGTERM with Redis frozen"
    );
    assert!(
        took < Duration::from_secs(5),
        "sidecar-a took {took:?} to exit on SIGTERM with Redis frozen"
    );
    redis.thaw();

    a.restart(&fleet.restart_env()).await;
    await_used(
        &b,
        5,
        Duration::from_secs(5),
        "sidecar-a's 5 loads after its restart",
    )
    .await;
    let rest = load_to_the_limit(&[&a, &b], 5, Duration::from_secs(3), 2).await;
    assert_eq!(counted_hits(&target), 5 + rest);
    assert_eq!(
        5 + rest,
        HARD,
        "after sidecar-a's restart the fleet reached {}, not {HARD}",
        5 + rest
    );
}

/// In `batched` durability a `kill -9` may lose the counts of the last flush interval, but
/// never budget beyond the hard limit: after the killed sidecar restarts under the same
/// node name, the target never receives more than 110 counted loads from the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_batched_durability_never_takes_the_fleet_over_the_limit() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = fleet(
        &redis,
        &target,
        &[
            "lease_ttl = \"2s\"",
            "durability = \"batched\"",
            "flush_interval = \"500ms\"",
        ],
    );
    let mut a = fleet.start("sidecar-a").await;
    let b = fleet.start("sidecar-b").await;

    let busy = Load {
        pace: Duration::from_millis(10),
        ..Load::until_refused(4)
    };
    let engine_a = [a.engine];
    let loading = tokio::spawn(async move { load_fleet(&engine_a, busy).await });
    eventually(
        "30 loads reached the target",
        Duration::from_secs(10),
        || async { (counted_hits(&target) >= 30).then_some(()) },
    )
    .await;
    a.kill9();
    assert!(
        a.wait_exit(Duration::from_secs(5)).await.is_some(),
        "sidecar-a survived kill -9"
    );
    let before = tokio::time::timeout(Duration::from_secs(5), loading)
        .await
        .expect("the loaders did not finish within 5 s of kill -9")
        .expect("the loaders")
        .remove(0)
        .ok;

    a.restart(&fleet.restart_env()).await;
    let after = load_to_the_limit(&[&a, &b], before, Duration::from_secs(3), 1).await;
    let hits = counted_hits(&target);
    assert!(
        before + after <= HARD && hits <= HARD + 4,
        "after kill -9 in batched durability: {} answered 2xx, {hits} reached the target \
         (hard limit {HARD}; at most 4 loads were in flight at the kill)",
        before + after
    );
    for tg in [&a, &b] {
        let resp = tg.post(MAIN, Some("incidents"), "{}").await;
        resp.assert_problem(429, "records-limit-exceeded");
    }
}

/// Loads of a license without a records limit never wait for Redis: with Redis down at
/// start they pass (and reach the target) while `/readyz` says 503; once Redis is up they
/// are shipped, and another sidecar of the fleet counts them for the flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_of_a_license_without_a_records_limit_pass_while_redis_is_down() {
    let mut redis = RedisServer::not_started(Persistence::None);
    let target = Upstream::plain("target").await;
    let fleet = Fleet::new(&redis.url(), two_pairs(&target.base_uri(), true))
        .license(&pair_license(LICENSE, "servicenow", "jira", 1))
        .state_option("redis_timeout = \"250ms\"");
    let a = fleet.start_unready("sidecar-a").await;
    assert_eq!(a.readyz().await, StatusCode::SERVICE_UNAVAILABLE);
    for n in 1..=4 {
        let (resp, took) = timed_load(&a).await;
        assert!(
            resp.status.is_success(),
            "load {n} of a license without a records limit with Redis down: {} {}",
            resp.status,
            resp.text()
        );
        assert!(took < PROMPT, "load {n} took {took:?}");
    }
    assert_eq!(counted_hits(&target), 4);

    redis.restart();
    eventually(
        "/readyz 200 once Redis is up",
        Duration::from_secs(15),
        || async { (a.readyz().await == StatusCode::OK).then_some(()) },
    )
    .await;
    let b = fleet.start("sidecar-b").await;
    loads_ok(&b, 1).await;
    for tg in [&a, &b] {
        eventually(
            "the flow's fleet count in /v1/usage",
            Duration::from_secs(3),
            || async { (tg.usage_of_flow(None, "incidents").await == 5).then_some(()) },
        )
        .await;
    }
}

/// Redis frozen across midnight: the loads answered before midnight count in November for
/// the whole fleet once Redis thaws (the month's last counts are shipped at the turn), and
/// December starts from zero.
#[cfg(feature = "test-clock")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_turning_while_redis_is_frozen_keeps_novembers_counts() {
    use chrono::{DateTime, Utc};

    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = Fleet::new(&redis.url(), two_pairs(&target.base_uri(), true))
        .license(&metered_license(LICENSE, 1, 100))
        .state_option("lease_max = 20")
        .state_option("redis_timeout = \"250ms\"")
        .licensing_option("max_clock_skew = \"90d\"");
    let midnight: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().expect("midnight");
    let at_midnight = Instant::now() + Duration::from_secs(5);
    let pinned = || {
        let left = at_midnight.saturating_duration_since(Instant::now());
        (midnight - chrono::Duration::from_std(left).expect("a short duration"))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let now_a = pinned();
    let a = fleet
        .start_env("sidecar-a", &[("TOLLGATE_NOW", &now_a)])
        .await;
    let now_b = pinned();
    let b = fleet
        .start_env("sidecar-b", &[("TOLLGATE_NOW", &now_b)])
        .await;
    assert_eq!(
        a.status().await["month"],
        "2026-11",
        "build with --features test-clock"
    );

    loads_ok(&a, 3).await;
    loads_ok(&b, 2).await;
    // Freeze right away, so the last counts of November have not all been shipped.
    redis.freeze();
    // Each may still draw from its lease while frozen; count what it answered.
    let mut november = 5;
    for tg in [&a, &b] {
        let resp = tg.post(MAIN, Some("incidents"), "{}").await;
        if resp.status.is_success() {
            november += 1;
        }
    }
    assert_eq!(
        a.records(LICENSE).await["month"],
        "2026-11",
        "the month turned too early"
    );
    tokio::time::sleep(
        at_midnight.saturating_duration_since(Instant::now()) + Duration::from_secs(2),
    )
    .await;
    redis.thaw();

    for tg in [&a, &b] {
        eventually("December", Duration::from_secs(10), || async {
            (tg.records(LICENSE).await["month"] == "2026-12").then_some(())
        })
        .await;
    }
    for tg in [&a, &b] {
        eventually(
            "November's fleet total after a freeze across midnight",
            Duration::from_secs(5),
            || async {
                (tg.usage_of_license(Some("2026-11"), LICENSE).await == november as u64)
                    .then_some(())
            },
        )
        .await;
    }
    loads_ok(&a, 1).await;
    loads_ok(&b, 1).await;
    for tg in [&a, &b] {
        await_used(tg, 2, Duration::from_secs(3), "December's fleet total").await;
    }
    assert_eq!(counted_hits(&target), november + 2);
}
