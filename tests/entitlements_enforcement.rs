//! Subscription entitlements, the enforcement of the subscription limits: refusal at
//! the limit with the exact 409 answer, the free period, downgrades in reverse enabling
//! order, several subscriptions adding up, pair + subscription licensing together, and bad
//! subscription files and configs.
//!
//! Everything goes through the real binary: a config with raw `[[instances]]`/`[[flows]]`
//! tables, licenses signed with the issuer key, the admin API and the engine-facing listener in
//! front of an in-process upstream.

pub mod common;

use std::collections::BTreeSet;

use common::*;
use hyper::StatusCode;
use serde_json::{json, Value};

/// Asserts that the enable answer is 200 with the flow enabled.
#[track_caller]
fn assert_enabled(resp: &Resp, flow: &str) {
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "enable {flow}: {}",
        resp.text()
    );
    assert_eq!(
        resp.json()["enabled"],
        true,
        "enable {flow}: {}",
        resp.text()
    );
}

/// A named instance: `(id, app, extra attributes)`, attribute values in TOML.
type Named<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// Named instances forwarding to `uri`.
fn named_instances(uri: &str, instances: &[Named]) -> String {
    let base_uri = format!("\"{uri}\"");
    let mut toml = String::new();
    for (id, app, extra) in instances {
        let app = format!("\"{app}\"");
        let mut attributes = vec![("app", app.as_str()), ("base_uri", base_uri.as_str())];
        attributes.extend_from_slice(extra);
        toml.push_str(&toml_instance(id, "named", &attributes));
    }
    toml
}

/// Production flows of kind `flow`: `(id, systems, enabled at start)`.
fn flows(flows: &[(&str, [&str; 2], bool)]) -> String {
    flows
        .iter()
        .map(|(id, systems, enabled)| toml_flow(id, "flow", "production", systems, *enabled))
        .collect()
}

/// `used` and sorted `keys` of `entitlements.production[name]`.
fn production(entitlements: &Value, name: &str) -> (u64, Vec<String>) {
    let entry = &entitlements["production"][name];
    let keys = entry["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys in {entitlements}"))
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    (
        entry["used"]
            .as_u64()
            .unwrap_or_else(|| panic!("no used in {entitlements}")),
        keys,
    )
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The `disabled_flows` of an upload answer, as a set.
fn disabled_flows(upload: &Value) -> BTreeSet<String> {
    upload["disabled_flows"]
        .as_array()
        .unwrap_or_else(|| panic!("no disabled_flows in {upload}"))
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Uploads `text` and asserts 201; returns the answer.
async fn upload(tg: &Tollgate, text: String) -> Value {
    let resp = tg.admin_post("/v1/licenses", text).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    resp.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_past_a_limit_is_refused_with_the_exact_409_and_the_flow_stays_disabled() {
    let target = Upstream::plain("target").await;
    let mut toml = named_instances(
        &target.base_uri(),
        &[
            ("sn", "servicenow", &[("agent", "\"agent-1\"")]),
            ("jira", "jira", &[("agent", "\"agent-1\"")]),
            ("ns", "netsuite", &[]),
            ("sn2", "servicenow", &[("agent", "\"agent-2\"")]),
        ],
    );
    toml.push_str(&flows(&[
        ("a", ["sn", "jira"], true),
        // Enabled in the config, but a third endpoint app does not fit.
        ("late", ["ns", "jira"], true),
        ("b", ["ns", "jira"], false),
        ("c", ["jira", "sn"], false),
        ("d", ["sn2", "jira"], false),
        ("f", ["sn", "jira"], false),
    ]));
    let tg = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&subscription_license(
            "SUB-1",
            "endpoint",
            [2, 2, 0, 1],
            [0, 0, 0, 0],
        ))
        .start_toml(&toml, &[])
        .await;

    // At start, in config order: `late` is refused and its requests too.
    let late = tg.flow("late").await;
    assert_eq!(late["enabled"], false, "{late}");
    assert_eq!(late["reason"], "entitlement-exceeded", "{late}");
    let problem = tg
        .get("/ns/x", Some("late"))
        .await
        .assert_problem(403, "flow-disabled");
    assert_eq!(problem["reason"], "entitlement-exceeded", "{problem}");
    tg.get("/jira/x", Some("a"))
        .await
        .assert_upstream_ok("target");
    let hits = target.hits();

    // A third endpoint app: the exact answer.
    let resp = tg.enable("b").await;
    let problem = resp.assert_admin_problem(409, "entitlement-exceeded");
    let fields: BTreeSet<&str> = problem
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "type",
            "title",
            "status",
            "detail",
            "reason",
            "flow",
            "entitlement",
            "environment",
            "in_use",
            "limit",
            "would_be"
        ]
        .into_iter()
        .collect::<BTreeSet<&str>>(),
        "{problem}"
    );
    assert_eq!(
        problem["type"], "urn:tollgate:problem:entitlement-exceeded",
        "{problem}"
    );
    assert_eq!(problem["status"], 409, "{problem}");
    assert_eq!(problem["reason"], "entitlement-exceeded", "{problem}");
    assert_eq!(problem["flow"], "b", "{problem}");
    assert_eq!(problem["entitlement"], "endpoint_apps", "{problem}");
    assert_eq!(problem["environment"], "production", "{problem}");
    assert_eq!(problem["in_use"], 2, "{problem}");
    assert_eq!(problem["limit"], 2, "{problem}");
    assert_eq!(problem["would_be"], 3, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("\"b\"") && detail.contains("production"),
        "detail should name the flow and environment: {problem}"
    );

    // The flow stays disabled and its requests are refused (their `reason`: see
    // `a_flow_refused_at_enable_keeps_the_reason_entitlement_exceeded`).
    assert_eq!(tg.flow("b").await["enabled"], false);
    let problem = tg
        .get("/ns/x", Some("b"))
        .await
        .assert_problem(403, "flow-disabled");
    assert_eq!(problem["flow"], "b", "{problem}");
    assert_eq!(target.hits(), hits, "a refused flow reached the upstream");

    // A second agent.
    let problem = tg
        .enable("d")
        .await
        .assert_admin_problem(409, "entitlement-exceeded");
    assert_eq!(problem["flow"], "d", "{problem}");
    assert_eq!(problem["entitlement"], "agents", "{problem}");
    assert_eq!(problem["in_use"], 1, "{problem}");
    assert_eq!(problem["limit"], 1, "{problem}");
    assert_eq!(problem["would_be"], 2, "{problem}");

    // A flow on endpoints already in use fits until the flows run out.
    assert_enabled(&tg.enable("c").await, "c");
    tg.get("/sn/x", Some("c"))
        .await
        .assert_upstream_ok("target");
    let problem = tg
        .enable("f")
        .await
        .assert_admin_problem(409, "entitlement-exceeded");
    assert_eq!(problem["flow"], "f", "{problem}");
    assert_eq!(problem["entitlement"], "flows", "{problem}");
    assert_eq!(problem["in_use"], 2, "{problem}");
    assert_eq!(problem["limit"], 2, "{problem}");
    assert_eq!(problem["would_be"], 3, "{problem}");

    // Refusals changed nothing.
    let e = tg.entitlements().await;
    assert_eq!(production(&e, "flows"), (2, strings(&["a", "c"])), "{e}");
    assert_eq!(
        production(&e, "endpoint_apps"),
        (2, strings(&["app:jira", "app:servicenow"])),
        "{e}"
    );
    assert_eq!(production(&e, "agents"), (1, strings(&["agent-1"])), "{e}");
    assert_eq!(e["production"]["flows"]["limit"], 2, "{e}");
    for flow in ["b", "d", "f", "late"] {
        assert_eq!(tg.flow(flow).await["enabled"], false, "{flow}");
    }

    // Room made is room taken.
    tg.disable("c").await;
    assert_enabled(&tg.enable("f").await, "f");
    tg.get("/jira/x", Some("f"))
        .await
        .assert_upstream_ok("target");
}

/// A flow refused by `POST /v1/flows/{id}/enable` stays disabled with that reason and its
/// requests get 403 `flow-disabled`, as a flow refused at start does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_refused_at_enable_keeps_the_reason_entitlement_exceeded() {
    let target = Upstream::plain("target").await;
    let mut toml = named_instances(
        &target.base_uri(),
        &[
            ("sn", "servicenow", &[]),
            ("jira", "jira", &[]),
            ("ns", "netsuite", &[]),
        ],
    );
    toml.push_str(&flows(&[
        ("a", ["sn", "jira"], true),
        ("b", ["ns", "jira"], false),
    ]));
    let tg = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&subscription_license(
            "SUB-1",
            "endpoint",
            [5, 2, 0, 0],
            [0, 0, 0, 0],
        ))
        .start_toml(&toml, &[])
        .await;
    assert_eq!(tg.flow("b").await["reason"], "operator");

    tg.enable("b")
        .await
        .assert_admin_problem(409, "entitlement-exceeded");
    let b = tg.flow("b").await;
    let problem = tg
        .get("/ns/x", Some("b"))
        .await
        .assert_problem(403, "flow-disabled");
    assert_eq!(b["enabled"], false, "{b}");
    assert_eq!(
        (b["reason"].clone(), problem["reason"].clone()),
        (json!("entitlement-exceeded"), json!("entitlement-exceeded")),
        "GET /v1/flows and the 403 after a refused enable: {b} / {problem}"
    );
    assert_eq!(target.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_free_period_lifts_every_limit_and_its_end_enforces_them() {
    let target = Upstream::plain("target").await;
    let mut toml = named_instances(
        &target.base_uri(),
        &[
            ("one", "netsuite", &[("agent", "\"agent-1\"")]),
            ("two", "salesforce", &[("agent", "\"agent-2\"")]),
            ("three", "shopify", &[("agent", "\"agent-3\"")]),
            ("four", "jira", &[("agent", "\"agent-4\"")]),
            ("partner", "servicenow", &[]),
        ],
    );
    toml.push_str(&flows(&[
        ("f1", ["one", "partner"], true),
        ("f2", ["two", "partner"], true),
        ("f3", ["three", "partner"], true),
        ("f4", ["four", "partner"], false),
    ]));
    let free = with(
        subscription_license("SUB-FREE", "endpoint", [1, 2, 0, 1], [0, 0, 0, 0]),
        "unlimited_until",
        "2099-01-01T00:00:00Z",
    );
    let tg = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&free)
        .start_toml(&toml, &[])
        .await;

    // Everything fits while the free period lasts.
    for flow in ["f1", "f2", "f3"] {
        assert_eq!(tg.flow(flow).await["enabled"], true, "{flow}");
    }
    assert_enabled(&tg.enable("f4").await, "f4");
    tg.get("/four/x", Some("f4"))
        .await
        .assert_upstream_ok("target");
    let e = tg.entitlements().await;
    assert_eq!(e["unlimited"], true, "{e}");
    assert_eq!(e["pricing"], "endpoint", "{e}");
    for environment in ["production", "sandbox"] {
        for name in ["flows", "endpoint_apps", "trading_partners", "agents"] {
            assert!(
                e[environment][name]["limit"].is_null(),
                "{environment}.{name}: {e}"
            );
        }
    }
    assert_eq!(
        production(&e, "flows"),
        (4, strings(&["f1", "f2", "f3", "f4"])),
        "{e}"
    );
    assert_eq!(production(&e, "endpoint_apps").0, 5, "{e}");
    assert_eq!(production(&e, "agents").0, 4, "{e}");
    let listed = tg.license("SUB-FREE").await.expect("SUB-FREE listed");
    assert_eq!(listed["kind"], "subscription", "{listed}");
    assert_eq!(listed["pricing"], "endpoint", "{listed}");
    assert!(
        listed["unlimited_until"]
            .as_str()
            .is_some_and(|t| t.starts_with("2099-01-01T00:00:00")),
        "{listed}"
    );

    // The same subscription whose free period is over: its limits apply, most recent first.
    let ended = with(free, "unlimited_until", "2021-01-01T00:00:00Z");
    let answer = upload(&tg, tg.sign(&ended)).await;
    assert_eq!(
        disabled_flows(&answer),
        set(&["f2", "f3", "f4"]),
        "{answer}"
    );
    let e = tg.entitlements().await;
    assert_eq!(e["unlimited"], false, "{e}");
    assert_eq!(e["production"]["flows"]["limit"], 1, "{e}");
    assert_eq!(e["production"]["endpoint_apps"]["limit"], 2, "{e}");
    assert_eq!(e["sandbox"]["flows"]["limit"], 0, "{e}");
    assert_eq!(production(&e, "flows"), (1, strings(&["f1"])), "{e}");
    tg.get("/one/x", Some("f1"))
        .await
        .assert_upstream_ok("target");
    for (flow, instance) in [("f2", "two"), ("f3", "three"), ("f4", "four")] {
        let problem = tg
            .get(&format!("/{instance}/x"), Some(flow))
            .await
            .assert_problem(403, "flow-disabled");
        assert_eq!(
            problem["reason"], "entitlement-exceeded",
            "{flow}: {problem}"
        );
    }
    tg.enable("f2")
        .await
        .assert_admin_problem(409, "entitlement-exceeded");
}

/// The free period ends while the sidecar runs: the limits apply from that moment, without
/// any other change to trigger a recompile.
#[cfg(feature = "test-clock")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_free_period_ends_on_time_in_a_running_sidecar() {
    let target = Upstream::plain("target").await;
    let mut toml = named_instances(
        &target.base_uri(),
        &[
            ("one", "netsuite", &[]),
            ("two", "salesforce", &[]),
            ("partner", "servicenow", &[]),
        ],
    );
    toml.push_str(&flows(&[
        ("f1", ["one", "partner"], true),
        ("f2", ["two", "partner"], true),
    ]));
    let subscription = with(
        subscription_license("SUB-TRIAL", "platform", [1, 10, 0, 0], [0, 0, 0, 0]),
        "unlimited_until",
        "2030-06-15T12:00:00Z",
    );
    let tg = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&subscription)
        // Mid-month and mid-day: no month rollover recompiles the snapshot by chance.
        .start_toml(&toml, &[("TOLLGATE_NOW", "2030-06-15T11:59:58Z")])
        .await;
    let e = tg.entitlements().await;
    assert_eq!(e["unlimited"], true, "{e}");
    assert_eq!(production(&e, "flows").0, 2, "{e}");

    let e = eventually(
        "the free period to end at 2030-06-15T12:00:00Z",
        std::time::Duration::from_secs(8),
        || async {
            let e = tg.entitlements().await;
            (e["unlimited"] == false).then_some(e)
        },
    )
    .await;
    assert_eq!(e["production"]["flows"]["limit"], 1, "{e}");
    assert_eq!(production(&e, "flows"), (1, strings(&["f1"])), "{e}");
    let problem = tg
        .get("/two/x", Some("f2"))
        .await
        .assert_problem(403, "flow-disabled");
    assert_eq!(problem["reason"], "entitlement-exceeded", "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_disables_the_most_recently_enabled_flows_first() {
    let target = Upstream::plain("target").await;
    let mut toml = named_instances(
        &target.base_uri(),
        &[
            ("one", "netsuite", &[]),
            ("two", "salesforce", &[]),
            ("three", "shopify", &[]),
            ("four", "jira", &[]),
            ("partner", "servicenow", &[]),
        ],
    );
    toml.push_str(&flows(&[
        ("f1", ["one", "partner"], true),
        ("f2", ["two", "partner"], true),
        ("f3", ["three", "partner"], true),
        ("f4", ["four", "partner"], true),
    ]));
    let roomy = subscription_license("SUB-D", "endpoint", [10, 10, 0, 0], [0, 0, 0, 0]);
    let tg = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&roomy)
        .start_toml(&toml, &[])
        .await;

    // Enabling order becomes f3, f4, f2, f1: the reverse of the config's for f1 and f2.
    tg.disable("f1").await;
    tg.disable("f2").await;
    assert_enabled(&tg.enable("f2").await, "f2");
    assert_enabled(&tg.enable("f1").await, "f1");
    let e = tg.entitlements().await;
    assert_eq!(production(&e, "flows").0, 4, "{e}");

    // Two flows only: f1 then f2 go, not the last ones in the config.
    let answer = upload(
        &tg,
        tg.sign(&subscription_license(
            "SUB-D",
            "endpoint",
            [2, 10, 0, 0],
            [0, 0, 0, 0],
        )),
    )
    .await;
    assert_eq!(answer["id"], "SUB-D", "{answer}");
    assert_eq!(disabled_flows(&answer), set(&["f1", "f2"]), "{answer}");
    assert_eq!(tg.licenses().await.len(), 1, "the same id replaces");
    let e = tg.entitlements().await;
    assert_eq!(production(&e, "flows"), (2, strings(&["f3", "f4"])), "{e}");
    assert_eq!(e["production"]["flows"]["limit"], 2, "{e}");
    for flow in ["f1", "f2"] {
        let listed = tg.flow(flow).await;
        assert_eq!(listed["enabled"], false, "{listed}");
        assert_eq!(listed["reason"], "entitlement-exceeded", "{listed}");
    }
    let problem = tg
        .get("/one/x", Some("f1"))
        .await
        .assert_problem(403, "flow-disabled");
    assert_eq!(problem["reason"], "entitlement-exceeded", "{problem}");
    tg.get("/three/x", Some("f3"))
        .await
        .assert_upstream_ok("target");

    // The audit trail says which flows went, and why.
    let events = tg.audit(100).await;
    let disabled: BTreeSet<String> = events
        .iter()
        .filter(|e| e["kind"] == "flow-disabled" && e["detail"]["reason"] == "entitlement-exceeded")
        .map(|e| e["detail"]["flow"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(disabled, set(&["f1", "f2"]), "{events:?}");

    // One endpoint app less than in use: f4 (enabled after f3) goes.
    let answer = upload(
        &tg,
        tg.sign(&subscription_license(
            "SUB-D",
            "endpoint",
            [2, 2, 0, 0],
            [0, 0, 0, 0],
        )),
    )
    .await;
    assert_eq!(disabled_flows(&answer), set(&["f4"]), "{answer}");
    let e = tg.entitlements().await;
    assert_eq!(production(&e, "flows"), (1, strings(&["f3"])), "{e}");
    assert_eq!(
        production(&e, "endpoint_apps"),
        (2, strings(&["app:servicenow", "app:shopify"])),
        "{e}"
    );

    // An upgrade disables nothing and enables nothing by itself.
    let answer = upload(&tg, tg.sign(&roomy)).await;
    assert_eq!(disabled_flows(&answer), set(&[]), "{answer}");
    assert_eq!(production(&tg.entitlements().await, "flows").0, 1);
    assert_enabled(&tg.enable("f4").await, "f4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enabling_order_survives_a_restart() {
    let target = Upstream::plain("target").await;
    let mut toml = named_instances(
        &target.base_uri(),
        &[
            ("one", "netsuite", &[]),
            ("two", "salesforce", &[]),
            ("three", "shopify", &[]),
            ("partner", "servicenow", &[]),
        ],
    );
    toml.push_str(&flows(&[
        ("f1", ["one", "partner"], true),
        ("f2", ["two", "partner"], true),
        ("f3", ["three", "partner"], true),
    ]));
    let mut tg = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&subscription_license(
            "SUB-R",
            "endpoint",
            [10, 10, 0, 0],
            [0, 0, 0, 0],
        ))
        .start_toml(&toml, &[])
        .await;
    // Enabling order f2, f3, f1.
    tg.disable("f1").await;
    assert_enabled(&tg.enable("f1").await, "f1");
    tg.restart(&[]).await;
    assert_eq!(production(&tg.entitlements().await, "flows").0, 3);

    let answer = upload(
        &tg,
        tg.sign(&subscription_license(
            "SUB-R",
            "endpoint",
            [2, 10, 0, 0],
            [0, 0, 0, 0],
        )),
    )
    .await;
    assert_eq!(disabled_flows(&answer), set(&["f1"]), "{answer}");
    let e = tg.entitlements().await;
    assert_eq!(production(&e, "flows"), (2, strings(&["f2", "f3"])), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_of_several_subscriptions_add_up_and_removing_one_downgrades() {
    let target = Upstream::plain("target").await;
    let mut toml = named_instances(
        &target.base_uri(),
        &[
            ("one", "netsuite", &[]),
            ("two", "salesforce", &[]),
            ("three", "shopify", &[]),
            ("partner", "servicenow", &[]),
        ],
    );
    toml.push_str(&flows(&[
        ("f1", ["one", "partner"], true),
        ("f2", ["two", "partner"], true),
        ("f3", ["three", "partner"], true),
    ]));
    let tg = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&subscription_license(
            "SUB-A",
            "endpoint",
            [1, 2, 0, 0],
            [1, 0, 0, 0],
        ))
        .license(&subscription_license(
            "SUB-B",
            "endpoint",
            [1, 1, 0, 0],
            [2, 0, 0, 0],
        ))
        .start_toml(&toml, &[])
        .await;

    let e = tg.entitlements().await;
    assert_eq!(e["production"]["flows"]["limit"], 2, "{e}");
    assert_eq!(e["production"]["endpoint_apps"]["limit"], 3, "{e}");
    assert_eq!(e["sandbox"]["flows"]["limit"], 3, "{e}");
    assert_eq!(production(&e, "flows"), (2, strings(&["f1", "f2"])), "{e}");
    assert_eq!(tg.flow("f3").await["reason"], "entitlement-exceeded");

    // Without SUB-B: one flow and two endpoint apps; f2, the most recent, goes.
    let resp = tg.admin_delete("/v1/licenses/SUB-B").await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{}", resp.text());
    let e = tg.entitlements().await;
    assert_eq!(e["production"]["flows"]["limit"], 1, "{e}");
    assert_eq!(production(&e, "flows"), (1, strings(&["f1"])), "{e}");
    let f2 = tg.flow("f2").await;
    assert_eq!(f2["enabled"], false, "{f2}");
    assert_eq!(f2["reason"], "entitlement-exceeded", "{f2}");
    tg.get("/one/x", Some("f1"))
        .await
        .assert_upstream_ok("target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_subscription_flows_are_license_invalid() {
    let target = Upstream::plain("target").await;
    let mut toml = named_instances(
        &target.base_uri(),
        &[("sn", "servicenow", &[]), ("jira", "jira", &[])],
    );
    toml.push_str(&flows(&[
        ("inc", ["sn", "jira"], true),
        ("off", ["jira", "sn"], false),
    ]));
    // A pair license is no subscription.
    let tg = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&pair_license("LIC-1", "servicenow", "jira", 5))
        .start_toml(&toml, &[])
        .await;

    let problem = tg
        .get("/jira/x", Some("inc"))
        .await
        .assert_problem(403, "license-invalid");
    assert_eq!(problem["reason"], "missing", "{problem}");
    let problem = tg
        .enable("off")
        .await
        .assert_admin_problem(409, "license-invalid");
    assert_eq!(problem["reason"], "missing", "{problem}");
    let e = tg.entitlements().await;
    assert_eq!(production(&e, "flows").0, 0, "{e}");
    assert!(e["production"]["flows"]["limit"].is_null(), "{e}");
    assert!(e.get("pricing").is_none(), "{e}");

    // An expired subscription.
    let expired = with(
        with(
            subscription_license("SUB-OLD", "endpoint", [5, 5, 0, 0], [0, 0, 0, 0]),
            "start",
            "2020-01-01T00:00:00Z",
        ),
        "expire",
        "2021-01-01T00:00:00Z",
    );
    upload(&tg, tg.sign(&expired)).await;
    let problem = tg
        .get("/jira/x", Some("inc"))
        .await
        .assert_problem(403, "license-invalid");
    assert_eq!(problem["reason"], "expired", "{problem}");
    assert_eq!(target.hits(), 0);

    // Renewed.
    upload(
        &tg,
        tg.sign(&subscription_license(
            "SUB-OLD",
            "endpoint",
            [5, 5, 0, 0],
            [0, 0, 0, 0],
        )),
    )
    .await;
    tg.get("/jira/x", Some("inc"))
        .await
        .assert_upstream_ok("target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pair_and_subscription_licensing_a_flow_needs_both() {
    let target = Upstream::plain("target").await;
    let mut toml = named_instances(
        &target.base_uri(),
        &[
            ("sn", "servicenow", &[]),
            ("jira", "jira", &[]),
            ("jira2", "jira", &[]),
        ],
    );
    toml.push_str(&flows(&[
        ("inc", ["sn", "jira"], true),
        ("other-pair", ["sn", "jira2"], false),
        ("same-pair", ["jira", "sn"], false),
        ("same-pair-2", ["sn", "jira"], false),
    ]));
    let subscription = subscription_license("SUB-1", "endpoint", [2, 10, 0, 0], [0, 0, 0, 0]);
    let tg = tollgate()
        .licensing_option("models = [\"pair\", \"subscription\"]")
        .license(&subscription)
        .start_toml(&toml, &[])
        .await;

    // Subscription room, no pair license.
    let problem = tg
        .get("/jira/x", Some("inc"))
        .await
        .assert_problem(403, "license-invalid");
    assert_eq!(problem["reason"], "missing", "{problem}");
    assert_eq!(production(&tg.entitlements().await, "flows").0, 0);

    // Both.
    upload(
        &tg,
        tg.sign(&pair_license("LIC-1", "servicenow", "jira", 1)),
    )
    .await;
    tg.get("/jira/x", Some("inc"))
        .await
        .assert_upstream_ok("target");
    let e = tg.entitlements().await;
    assert_eq!(production(&e, "flows"), (1, strings(&["inc"])), "{e}");
    assert_eq!(tg.flow("inc").await["license"], "LIC-1");

    // Subscription room, but no free point for a second pair.
    tg.enable("other-pair")
        .await
        .assert_admin_problem(409, "points-exhausted");
    // The pair's point is shared, so only the subscription decides.
    assert_enabled(&tg.enable("same-pair").await, "same-pair");
    let problem = tg
        .enable("same-pair-2")
        .await
        .assert_admin_problem(409, "entitlement-exceeded");
    assert_eq!(problem["entitlement"], "flows", "{problem}");
    assert_eq!(problem["would_be"], 3, "{problem}");

    // A point, but no subscription.
    let resp = tg.admin_delete("/v1/licenses/SUB-1").await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{}", resp.text());
    let hits = target.hits();
    for flow in ["inc", "same-pair"] {
        let problem = tg
            .get("/jira/x", Some(flow))
            .await
            .assert_problem(403, "license-invalid");
        assert_eq!(problem["reason"], "missing", "{flow}: {problem}");
    }
    assert_eq!(target.hits(), hits);
    assert_eq!(tg.license("LIC-1").await.unwrap()["state"], "valid");

    // Both again.
    upload(&tg, tg.sign(&subscription)).await;
    tg.get("/jira/x", Some("inc"))
        .await
        .assert_upstream_ok("target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscription_files_are_refused_with_400_and_the_reason() {
    let target = Upstream::plain("target").await;
    let mut toml = named_instances(
        &target.base_uri(),
        &[("sn", "servicenow", &[]), ("jira", "jira", &[])],
    );
    toml.push_str(&flows(&[("inc", ["sn", "jira"], true)]));
    let good = subscription_license("SUB-1", "endpoint", [1, 2, 0, 0], [0, 0, 0, 0]);
    let tg = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&good)
        .start_toml(&toml, &[])
        .await;
    tg.get("/jira/x", Some("inc"))
        .await
        .assert_upstream_ok("target");

    let edit = |change: &dyn Fn(&mut Value)| -> String {
        let mut payload = subscription_license("SUB-BAD", "endpoint", [9, 9, 9, 9], [9, 9, 9, 9]);
        change(&mut payload);
        payload.to_string()
    };
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "no sandbox",
            edit(&|p| {
                p.as_object_mut().unwrap().remove("sandbox");
            }),
            &["sandbox"],
        ),
        (
            "no production",
            edit(&|p| {
                p.as_object_mut().unwrap().remove("production");
            }),
            &["production"],
        ),
        (
            "an environment without agents",
            edit(&|p| {
                p["production"].as_object_mut().unwrap().remove("agents");
            }),
            &["agents"],
        ),
        (
            "a negative limit",
            edit(&|p| p["production"]["flows"] = json!(-1)),
            &["-1"],
        ),
        (
            "an absurd limit",
            edit(&|p| p["sandbox"]["endpoint_apps"] = json!(1_000_000_000_000u64)),
            &["sandbox.endpoint_apps"],
        ),
        (
            "an unknown pricing model",
            edit(&|p| p["pricing"] = json!("per-seat")),
            &["per-seat"],
        ),
        (
            "no pricing model",
            edit(&|p| {
                p.as_object_mut().unwrap().remove("pricing");
            }),
            &["pricing"],
        ),
    ];
    for (what, payload, mentions) in cases {
        let resp = tg
            .admin_post("/v1/licenses", tg.sign_unchecked(&payload))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            resp.text()
        );
        let problem = resp.json();
        assert_eq!(problem["status"], 400, "{what}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        for mention in mentions {
            assert!(
                detail.contains(mention),
                "{what}: the reason should mention {mention:?}: {problem}"
            );
        }
    }
    let licenses = tg.licenses().await;
    assert_eq!(licenses.len(), 1, "{licenses:?}");
    assert_eq!(licenses[0]["id"], "SUB-1");
    tg.get("/jira/x", Some("inc"))
        .await
        .assert_upstream_ok("target");
    // The unchecked signer does sign what tollgate accepts.
    upload(&tg, tg.sign_unchecked(&edit(&|_| {}))).await;
}

#[test]
fn a_trading_partner_that_is_not_ftp_sftp_ftps_or_as2_is_a_config_error() {
    for (connector, attributes) in [
        (
            "named",
            vec![
                ("app", "\"netsuite\""),
                ("base_uri", "\"https://bad.example\""),
            ],
        ),
        ("http", vec![("base_uri", "\"https://partner.example\"")]),
        (
            "rdbms",
            vec![("engine", "\"mysql\""), ("host", "\"db.partner.example\"")],
        ),
    ] {
        let mut attributes = attributes;
        attributes.push(("trading_partner", "true"));
        let mut toml = toml_instance("ok-ftp", "ftp", &[("host", "\"ftp.partner.example\"")]);
        toml.push_str(&toml_instance(
            "ok-as2",
            "as2",
            &[
                ("host", "\"as2.partner.example\""),
                ("trading_partner", "true"),
            ],
        ));
        toml.push_str(&toml_instance("bad", connector, &attributes));
        toml.push_str(&toml_flow(
            "edi",
            "flow",
            "production",
            &["ok-as2", "bad"],
            true,
        ));
        let builder = tollgate().licensing_option("models = [\"subscription\"]");
        let run = builder.check_toml(&toml);
        let stdout = String::from_utf8_lossy(&run.stdout);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(
            run.status.code(),
            Some(1),
            "{connector}: stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(
            stderr.contains("instances[2].trading_partner"),
            "{connector}: {stderr}"
        );
        assert!(
            !stderr.contains("instances[1]"),
            "{connector}: an AS2 trading partner is fine: {stderr}"
        );
    }
}
