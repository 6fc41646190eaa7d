//! Fleet mode, shared state: flow states, points, the records limit, the audit trail and
//! usage are the fleet's, not one sidecar's. A flow enabled or disabled on one sidecar
//! shows on every sidecar within a second; a license's points are taken once across the
//! fleet, also when two sidecars race for the last one; a node name is one sidecar's; the
//! fleet reaching the hard limit disables the license's flows everywhere;
//! `/v1/licenses`, `/v1/usage`, `/v1/status` and `/metrics` report fleet totals and the
//! fleet's view; `tollgate check` names fleet mode and, with `--online`, whether Redis
//! answers; fleet keys without `state.redis` and URLs that are not Redis URLs are refused.
//!
//! Needs `redis-server` on `PATH`.

pub mod common;

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use common::fleet::*;
use common::redis::RedisServer;
use common::*;
use hyper::StatusCode;
use serde_json::{json, Value};

/// How soon a change on one sidecar must show on the others: one second, with room for
/// a loaded CI machine.
const PROPAGATION: Duration = Duration::from_millis(1500);

/// A fleet of servicenow-1 ↔ jira-1 (`incidents`, enabled at start when
/// `incidents_enabled`) and servicenow-1 ↔ jira-2 (`escalations`, disabled), licensed by
/// `LIC-FLEET` (`points`, limit `records`), lease_max 20.
fn fleet(redis: &RedisServer, target: &Upstream, incidents_enabled: bool, points: u32) -> Fleet {
    Fleet::new(
        &redis.url(),
        two_pairs(&target.base_uri(), incidents_enabled),
    )
    .license(&metered_license(LICENSE, points, 100))
    .state_option("lease_max = 20")
}

/// The newest audit events of `tg` with `kind` about flow `flow`.
async fn audit_of_flow(tg: &Tollgate, kind: &str, flow: &str) -> Vec<Value> {
    tg.audit(200)
        .await
        .into_iter()
        .filter(|e| e["kind"] == kind && e["detail"]["flow"] == flow)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_disabled_or_enabled_on_one_sidecar_shows_on_every_sidecar_within_a_second() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let sidecars = fleet(&redis, &target, true, 1).start_nodes(3).await;
    for tg in &sidecars {
        assert_eq!(tg.flow("incidents").await["enabled"], true);
    }

    sidecars[0].disable("incidents").await;
    for tg in &sidecars[1..] {
        let took = await_flow(
            tg,
            "incidents",
            false,
            json!("operator"),
            Duration::from_secs(5),
        )
        .await;
        assert!(
            took <= PROPAGATION,
            "disabling on sidecar-a took {took:?} to show on {}",
            tg.admin
        );
    }
    // Disabled on the fleet means refused on every sidecar, not just shown so.
    let resp = sidecars[2].post(MAIN, Some("incidents"), "{}").await;
    let problem = resp.assert_problem(403, "flow-disabled");
    assert_eq!(problem["reason"], "operator", "{problem}");
    assert_eq!(counted_hits(&target), 0);

    let resp = sidecars[1].enable("incidents").await;
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "enable on sidecar-b: {}",
        resp.text()
    );
    for tg in [&sidecars[0], &sidecars[2]] {
        let took = await_flow(tg, "incidents", true, Value::Null, Duration::from_secs(5)).await;
        assert!(
            took <= PROPAGATION,
            "enabling on sidecar-b took {took:?} to show on {}",
            tg.admin
        );
    }
    loads_ok(&sidecars[2], 1).await;
    loads_ok(&sidecars[0], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_is_the_fleets() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let sidecars = fleet(&redis, &target, true, 1).start_nodes(2).await;

    sidecars[0].disable("incidents").await;
    let disabled = eventually(
        "sidecar-a's flow-disabled event in sidecar-b's audit trail",
        Duration::from_secs(3),
        || async {
            let events = audit_of_flow(&sidecars[1], "flow-disabled", "incidents").await;
            (!events.is_empty()).then_some(events)
        },
    )
    .await;
    assert_eq!(disabled[0]["detail"]["reason"], "operator", "{disabled:?}");

    let resp = sidecars[0].enable("incidents").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    eventually(
        "sidecar-a's flow-enabled event in sidecar-b's audit trail",
        Duration::from_secs(3),
        || async {
            let events = audit_of_flow(&sidecars[1], "flow-enabled", "incidents").await;
            (!events.is_empty()).then_some(())
        },
    )
    .await;

    // One trail: both sidecars list the same events of that flow, once each.
    for tg in &sidecars {
        let disabled = audit_of_flow(tg, "flow-disabled", "incidents").await;
        let enabled = audit_of_flow(tg, "flow-enabled", "incidents").await;
        assert_eq!(
            (disabled.len(), enabled.len()),
            (1, 1),
            "{}: the fleet's trail should hold one disable and one enable of incidents: \
             disabled {disabled:?}, enabled {enabled:?}",
            tg.admin
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_taken_on_one_sidecar_is_not_available_on_another() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    // One point, two pairs (servicenow-1 ↔ jira-1, servicenow-1 ↔ jira-2), both disabled.
    let sidecars = fleet(&redis, &target, false, 1).start_nodes(3).await;

    let resp = sidecars[0].enable("incidents").await;
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "enable incidents on sidecar-a: {}",
        resp.text()
    );
    // At once, not after propagation: the point is the fleet's.
    let resp = sidecars[1].enable("escalations").await;
    resp.assert_admin_problem(409, "points-exhausted");
    for tg in &sidecars {
        await_flow(tg, "incidents", true, Value::Null, Duration::from_secs(3)).await;
        let flow = tg.flow("escalations").await;
        assert_eq!(flow["enabled"], false, "{} {flow}", tg.admin);
    }
    let resp = sidecars[2].post(MAIN_2, Some("escalations"), "{}").await;
    resp.assert_problem(403, "flow-disabled");

    // Releasing the point on one sidecar lets another take it for the other pair.
    sidecars[2].disable("incidents").await;
    await_flow(
        &sidecars[1],
        "incidents",
        false,
        json!("operator"),
        Duration::from_secs(3),
    )
    .await;
    let resp = sidecars[1].enable("escalations").await;
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "enable escalations on sidecar-b once incidents released the point: {}",
        resp.text()
    );
    await_flow(
        &sidecars[0],
        "escalations",
        true,
        Value::Null,
        Duration::from_secs(3),
    )
    .await;
    let resp = sidecars[0].enable("incidents").await;
    resp.assert_admin_problem(409, "points-exhausted");
    let resp = sidecars[0].post(MAIN_2, Some("escalations"), "{}").await;
    assert!(resp.status.is_success(), "{} {}", resp.status, resp.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_reaching_the_hard_limit_disables_the_flows_on_every_sidecar() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let sidecars = fleet(&redis, &target, true, 1).start_nodes(3).await;

    // sidecar-a and sidecar-b spend the budget; sidecar-c serves nothing.
    let tallies = load_fleet(
        &[sidecars[0].engine, sidecars[1].engine],
        Load::until_refused(4),
    )
    .await;
    let answered: usize = tallies.iter().map(|t| t.ok).sum();
    assert_eq!(answered, 110, "{tallies:?}");
    let limited = Instant::now();

    for tg in &sidecars {
        let took = await_flow(
            tg,
            "incidents",
            false,
            json!("records-limit"),
            Duration::from_secs(5),
        )
        .await;
        let since = limited.elapsed();
        assert!(
            since <= Duration::from_secs(2),
            "{}: incidents shown disabled (records-limit) {since:?} after the fleet reached \
             the hard limit (polled {took:?})",
            tg.admin
        );
    }
    let idle = &sidecars[2];
    let resp = idle.post(MAIN, Some("incidents"), "{}").await;
    let problem = resp.assert_problem(429, "records-limit-exceeded");
    assert_eq!(problem["reason"], "records-limit", "{problem}");
    let resp = idle.enable("incidents").await;
    resp.assert_admin_problem(409, "records-limit-exceeded");
    let records = idle.records(LICENSE).await;
    assert_eq!(records["used"], 110, "{records}");
    assert_eq!(records["warning"], true, "{records}");
    assert_eq!(counted_hits(&target), 110);
}

/// `fleet.nodes` entry of `node`.
fn node_entry(view: &Value, node: &str) -> Value {
    view["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node"] == node))
        .cloned()
        .unwrap_or_else(|| panic!("{node} not in fleet.nodes: {view}"))
}

/// Two sidecars; 7 loads on sidecar-a and 5 on sidecar-b; both report the fleet's 12 in
/// `/v1/licenses` within 2 s (at most about a second behind).
async fn twelve_loads(redis: &RedisServer, target: &Upstream) -> Vec<Tollgate> {
    let sidecars = fleet(redis, target, true, 1).start_nodes(2).await;
    loads_ok(&sidecars[0], 7).await;
    loads_ok(&sidecars[1], 5).await;
    for tg in &sidecars {
        await_used(
            tg,
            12,
            Duration::from_secs(2),
            "the fleet's total in /v1/licenses",
        )
        .await;
    }
    sidecars
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licenses_usage_and_the_records_metric_report_the_fleets_total() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let sidecars = twelve_loads(&redis, &target).await;
    for (i, tg) in sidecars.iter().enumerate() {
        let node = node_name(i);
        let usage = tg.usage(None).await;
        let license = usage["licenses"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["id"] == LICENSE))
            .cloned()
            .unwrap_or_else(|| panic!("{LICENSE} not in /v1/usage: {usage}"));
        assert_eq!(license["used"], 12, "{node} /v1/usage: {usage}");
        assert_eq!(license["hard_limit"], 110, "{node} /v1/usage: {usage}");
        assert_eq!(
            tg.usage_of_flow(None, "incidents").await,
            12,
            "{node} /v1/usage flows: {usage}"
        );
        let metrics = tg.metrics_text().await;
        assert_eq!(
            metric(
                &metrics,
                "tollgate_records_transferred",
                &[("license", LICENSE)]
            ),
            Some(12.0),
            "{node}: tollgate_records_transferred is the fleet's total:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_licenses_fleet_view_lists_every_node_with_its_counts_and_lease() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let sidecars = twelve_loads(&redis, &target).await;
    for (i, tg) in sidecars.iter().enumerate() {
        let node = node_name(i);
        // Each line's count is shipped within a round or so of the load.
        let view = eventually(
            "both lines of the book with their counts",
            Duration::from_secs(2),
            || async {
                let view = license_fleet(tg).await;
                let counted = |name: &str| {
                    view["nodes"]
                        .as_array()
                        .and_then(|nodes| nodes.iter().find(|n| n["node"] == name))
                        .map(|n| n["committed"].clone())
                };
                (counted("sidecar-a") == Some(json!(7)) && counted("sidecar-b") == Some(json!(5)))
                    .then_some(view)
            },
        )
        .await;
        assert_eq!(view["node"], node.as_str(), "{view}");
        // This sidecar's share: `available` (granted to it, not drawn yet) and `held`
        // (granted to it and not given back, drawn or not); the fleet's: `granted` (handed
        // out of the month's budget); per node: `held` and `committed` (what it counted).
        let mut granted_to_nodes = 0;
        for (other, committed) in [("sidecar-a", 7), ("sidecar-b", 5)] {
            let entry = node_entry(&view, other);
            assert_eq!(
                entry["committed"], committed,
                "{node}'s view of {other}: {view}"
            );
            assert_eq!(entry["live"], true, "{node}'s view of {other}: {view}");
            let held = entry["held"].as_u64().expect("nodes[].held");
            assert!(
                held >= committed && held - committed <= 20,
                "{other} holds {held} with {committed} committed (lease_max 20): {view}"
            );
            granted_to_nodes += held;
        }
        let granted = view["granted"].as_u64().expect("fleet.granted");
        let available = view["available"].as_u64().expect("fleet.available");
        assert_eq!(
            view["held"],
            node_entry(&view, &node)["held"],
            "{node}: fleet.held is its own entry's: {view}"
        );
        assert_eq!(
            granted, granted_to_nodes,
            "{node}: granted is what the nodes hold: {view}"
        );
        let own = node_entry(&view, &node);
        let own_undrawn =
            own["held"].as_u64().unwrap_or(0) - own["committed"].as_u64().unwrap_or(0);
        assert_eq!(
            available, own_undrawn,
            "{node}: available is what it holds and has not drawn: {view}"
        );
        assert!(
            granted <= 110,
            "{node}: granted beyond the hard limit: {view}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_show_the_fleet_connection_and_the_leases() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let sidecars = twelve_loads(&redis, &target).await;
    for (i, tg) in sidecars.iter().enumerate() {
        let node = node_name(i);
        let status = tg.status().await;
        let fleet = &status["fleet"];
        assert_eq!(fleet["redis"], redis.url(), "{status}");
        assert_eq!(fleet["fleet"], FLEET, "{status}");
        assert_eq!(fleet["node"], node.as_str(), "{status}");
        assert_eq!(fleet["connected"], true, "{status}");
        assert_eq!(fleet["clock_skew"], Value::Null, "{status}");

        let metrics = tg.metrics_text().await;
        let sample = |name: &str, labels: &[(&str, &str)]| {
            metric(&metrics, name, labels)
                .unwrap_or_else(|| panic!("{node}: no {name}{labels:?} in /metrics:\n{metrics}"))
        };
        let lic = [("license", LICENSE)];
        assert_eq!(sample("tollgate_fleet_redis_up", &[]), 1.0, "{node}");
        assert_eq!(
            sample("tollgate_fleet_redis_errors_total", &[]),
            0.0,
            "{node}"
        );
        assert!(
            sample("tollgate_fleet_redis_seconds_count", &[]) >= 1.0,
            "{node}: no Redis round trip measured"
        );
        assert!(
            sample("tollgate_fleet_lease_grants_total", &lic) >= 1.0,
            "{node} counted loads without a lease grant"
        );
        // An idle sidecar's lease does not change between the two reads.
        let lease = sample("tollgate_fleet_lease_records", &lic);
        let view = license_fleet(tg).await;
        assert_eq!(
            Some(lease),
            view["available"].as_f64(),
            "{node}: tollgate_fleet_lease_records is what fleet.available says it holds \
             undrawn: {view}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_fleet_mode_the_fleet_views_are_null() {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&metered_license(LICENSE, 1, 100))
        .start()
        .await;
    let license = tg.license(LICENSE).await.expect("the license");
    assert!(
        license.get("fleet").is_some_and(Value::is_null),
        "fleet must be null outside fleet mode: {license}"
    );
    let status = tg.status().await;
    assert!(
        status.get("fleet").is_some_and(Value::is_null),
        "fleet must be null outside fleet mode: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reaches_redis_but_never_the_status_or_the_log() {
    const SECRET: &str = "s3cret-redis-pass";
    let redis = RedisServer::start_with_password(SECRET);
    let target = Upstream::plain("target").await;
    let fleet = fleet(&redis, &target, true, 1);
    let in_url = format!("redis://:{SECRET}@127.0.0.1:{}/0", redis.port());
    // sidecar-a has the password in its URL, sidecar-b in redis_password_file.
    let a = fleet
        .builder_without_redis("sidecar-a")
        .state_option(&format!("redis = \"{in_url}\""))
        .start()
        .await;
    let b_builder = fleet
        .builder_without_redis("sidecar-b")
        .state_option(&format!("redis = \"{}\"", redis.url()))
        .state_option("redis_password_file = \"redis.pass\"");
    b_builder.file("redis.pass", &format!("{SECRET}\n"));
    let b = b_builder.start().await;

    loads_ok(&a, 2).await;
    loads_ok(&b, 3).await;
    await_used(
        &a,
        5,
        Duration::from_secs(3),
        "sidecar-a with the password in its URL",
    )
    .await;
    await_used(
        &b,
        5,
        Duration::from_secs(3),
        "sidecar-b with a password file",
    )
    .await;
    for tg in [&a, &b] {
        let status = tg.status().await;
        assert_eq!(status["fleet"]["connected"], true, "{status}");
        let shown = status["fleet"]["redis"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !shown.contains(SECRET) && shown.contains(&format!("127.0.0.1:{}", redis.port())),
            "status.fleet.redis must be the URL without its password: {shown:?}"
        );
        assert!(
            !tg.logs().contains(SECRET),
            "the Redis password appears in the log:\n{}",
            tg.logs()
        );
        let metrics = tg.metrics_text().await;
        assert!(
            !metrics.contains(SECRET),
            "the Redis password is in /metrics"
        );
    }
}

/// `tollgate check --config <config> [--online]`.
fn check(config: &std::path::Path, online: bool) -> std::process::Output {
    let mut args: Vec<&OsStr> = vec!["check".as_ref(), "--config".as_ref(), config.as_os_str()];
    if online {
        args.push("--online".as_ref());
    }
    tollgate_output(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_fleet_mode_and_online_tells_whether_redis_answers() {
    let mut redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let builder = fleet(&redis, &target, true, 1).builder("sidecar-q");
    let config = builder.file("tollgate.toml", &builder.config_text());

    let offline = check(&config, false);
    let text = format!("{}{}", stdout(&offline), stderr(&offline));
    assert!(offline.status.success(), "check: {text}");
    assert!(
        text.to_lowercase().contains("fleet") && text.contains(FLEET) && text.contains("sidecar-q"),
        "check must say fleet mode is on, with the fleet and the node: {text}"
    );

    let online = check(&config, true);
    let text = format!("{}{}", stdout(&online), stderr(&online));
    assert!(
        online.status.success(),
        "check --online with Redis up: {text}"
    );

    redis.stop();
    let down = check(&config, true);
    let text = format!("{}{}", stdout(&down), stderr(&down));
    assert_eq!(
        down.status.code(),
        Some(1),
        "check --online with Redis down must exit 1: {text}"
    );
    let lower = text.to_lowercase();
    assert!(
        lower.contains("redis") && text.contains(&format!("127.0.0.1:{}", redis.port())),
        "check --online must say Redis at 127.0.0.1:{} is unreachable: {text}",
        redis.port()
    );
    // Offline, the same config still checks: Redis is not contacted.
    let offline = check(&config, false);
    assert!(
        offline.status.success(),
        "check without --online must not need Redis: {}{}",
        stdout(&offline),
        stderr(&offline)
    );
}

#[test]
fn fleet_keys_without_state_redis_are_refused_naming_the_key() {
    for line in [
        "fleet = \"acme-prod\"",
        "node = \"sidecar-a\"",
        "lease_max = 20",
        "lease_ttl = \"2s\"",
        "redis_timeout = \"250ms\"",
        "redis_password_file = \"redis.pass\"",
    ] {
        let key = line.split(' ').next().expect("a key");
        let builder = tollgate().state_option(line);
        let run = builder.check_toml("");
        let text = format!("{}{}", stdout(&run), stderr(&run));
        assert_eq!(run.status.code(), Some(1), "{line} without redis: {text}");
        assert!(
            text.contains(&format!("state.{key}")),
            "the refusal of {line} without state.redis must name state.{key}: {text}"
        );
    }
}

#[test]
fn a_url_that_is_not_a_redis_url_is_refused_naming_state_redis() {
    for url in ["http://x", "127.0.0.1:6379", ""] {
        let builder = tollgate().state_option(&format!("redis = \"{url}\""));
        let run = builder.check_toml("");
        let text = format!("{}{}", stdout(&run), stderr(&run));
        assert_eq!(run.status.code(), Some(1), "redis = {url:?}: {text}");
        assert!(
            text.contains("state.redis"),
            "redis = {url:?} must name state.redis: {text}"
        );
    }
    // A fleet name outside [A-Za-z0-9._-]+ is refused too.
    let builder = tollgate()
        .state_option("redis = \"redis://127.0.0.1:6379/0\"")
        .state_option("fleet = \"acme prod\"");
    let run = builder.check_toml("");
    let text = format!("{}{}", stdout(&run), stderr(&run));
    assert_eq!(run.status.code(), Some(1), "fleet = \"acme prod\": {text}");
    assert!(text.contains("state.fleet"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sidecar_with_a_node_name_in_use_does_not_join() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let fleet = fleet(&redis, &target, true, 1);
    let first = fleet.start("sidecar-a").await;
    let twin = fleet.start_unready("sidecar-a").await;
    loads_ok(&first, 3).await;

    // Give the twin time to try (a round is 200 ms), then it must still be out.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        twin.readyz().await,
        StatusCode::SERVICE_UNAVAILABLE,
        "a second sidecar named like a running one is ready"
    );
    let resp = twin.post(MAIN, Some("incidents"), "{}").await;
    resp.assert_problem(503, "store-unavailable");
    assert_eq!(
        counted_hits(&target),
        3,
        "the twin forwarded a counted load"
    );
    // The first one is undisturbed and the fleet's count is its own.
    loads_ok(&first, 2).await;
    await_used(
        &first,
        5,
        Duration::from_secs(2),
        "the first sidecar's count",
    )
    .await;
    // One line for sidecar-a in the book, with the first sidecar's count (shipped within
    // a round or so).
    let view = eventually(
        "sidecar-a's line with its 5 loads",
        Duration::from_secs(3),
        || async {
            let view = license_fleet(&first).await;
            let lines: Vec<Value> = view["nodes"]
                .as_array()
                .map(|nodes| {
                    nodes
                        .iter()
                        .filter(|n| n["node"] == "sidecar-a")
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            (lines.len() == 1 && lines[0]["committed"] == 5).then_some(view)
        },
    )
    .await;
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(1), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_racing_for_the_last_point_get_it_once() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    // One point, two pairs, both flows disabled at start.
    let sidecars = fleet(&redis, &target, false, 1).start_nodes(2).await;
    let (a, b) = (&sidecars[0], &sidecars[1]);
    for round in 1..=5 {
        let (ra, rb) = tokio::join!(a.enable("incidents"), b.enable("escalations"));
        let won: Vec<&str> = [(&ra, "incidents"), (&rb, "escalations")]
            .iter()
            .filter(|(resp, _)| resp.status == StatusCode::OK)
            .map(|(_, flow)| *flow)
            .collect();
        if won.len() != 1 {
            // Say what the fleet made of it a moment later.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut states = String::new();
            for tg in [a, b] {
                for flow in tg.flows().await {
                    states.push_str(&format!(
                        "\n  on {}: {} enabled={} reason={} license={}",
                        tg.admin, flow["id"], flow["enabled"], flow["reason"], flow["license"]
                    ));
                }
            }
            panic!(
                "round {round}: enabling two pairs at once on two sidecars with one point \
                 answered incidents {} and escalations {} (exactly one must get the point); \
                 2 s later:{states}",
                ra.status, rb.status
            );
        }
        let lost = if won[0] == "incidents" { &rb } else { &ra };
        lost.assert_admin_problem(409, "points-exhausted");
        // Every sidecar agrees on the winner.
        for tg in [a, b] {
            await_flow(tg, won[0], true, Value::Null, Duration::from_secs(3)).await;
            let other = if won[0] == "incidents" {
                "escalations"
            } else {
                "incidents"
            };
            let flow = tg.flow(other).await;
            assert_eq!(
                flow["enabled"], false,
                "round {round}, {}: {flow}",
                tg.admin
            );
        }
        // Give the point back for the next round.
        a.disable(won[0]).await;
        await_flow(b, won[0], false, json!("operator"), Duration::from_secs(3)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_of_one_flow_on_two_sidecars_converge() {
    let redis = RedisServer::start();
    let target = Upstream::plain("target").await;
    let sidecars = fleet(&redis, &target, true, 1).start_nodes(2).await;
    let (a, b) = (&sidecars[0], &sidecars[1]);
    for round in 1..=5 {
        let (off, on) = tokio::join!(
            a.admin_post("/v1/flows/incidents/disable", ""),
            b.enable("incidents")
        );
        assert_eq!(
            off.status,
            StatusCode::OK,
            "round {round} disable: {}",
            off.text()
        );
        assert_eq!(
            on.status,
            StatusCode::OK,
            "round {round} enable: {}",
            on.text()
        );
        // Either change may win, but the sidecars must agree, on one of the two.
        let agreed = eventually(
            &format!("round {round}: both sidecars show the same state of incidents"),
            Duration::from_secs(3),
            || async {
                let (fa, fb) = (a.flow("incidents").await, b.flow("incidents").await);
                (fa["enabled"] == fb["enabled"] && fa["reason"] == fb["reason"]).then_some(fa)
            },
        )
        .await;
        let state = (agreed["enabled"].clone(), agreed["reason"].clone());
        assert!(
            state == (json!(false), json!("operator")) || state == (json!(true), Value::Null),
            "round {round}: the fleet settled on neither change: {agreed}"
        );
        // Back to enabled for the next round.
        let resp = a.enable("incidents").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        await_flow(b, "incidents", true, Value::Null, Duration::from_secs(3)).await;
    }
}
