//! A license works on its own host only, at every instant: a license bound to another host is
//! `wrong-host` before its start and after it, a config cannot claim another host's identity,
//! and a fleet license bound to `*.domain` works on every host under that domain.

pub mod common;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use serde_json::Value;

/// The sidecar's clock (test-clock) starts here.
const NOW: &str = "2026-06-01T12:00:00Z";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// A servicenow ↔ jira license bound to `bound_to` that starts `start_in` after `NOW`.
fn bound(id: &str, bound_to: &str, start_in: TimeDelta) -> Value {
    let start = (at(NOW) + start_in).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    with(
        with(
            pair_license(id, "servicenow", "jira", 1),
            "bound_to",
            bound_to,
        ),
        "start",
        start,
    )
}

async fn world(license: &Value, env: &[(&str, &str)]) -> (Upstream, Tollgate) {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(license)
        .start_with(&[], env)
        .await;
    (target, tg)
}

async fn state_of(tg: &Tollgate, id: &str) -> String {
    tg.license(id).await.expect("installed")["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_license_for_another_host_stays_wrong_host_when_its_start_passes() {
    let license = bound("LIC-ELSEWHERE", "other-host.example", TimeDelta::seconds(2));
    let (target, tg) = world(&license, &[("TOLLGATE_NOW", NOW)]).await;
    assert_eq!(state_of(&tg, "LIC-ELSEWHERE").await, "wrong-host");
    let problem = tg
        .get("/jira-1/x", Some("incidents"))
        .await
        .assert_problem(403, "license-invalid");
    assert_eq!(problem["reason"], "wrong-host", "{problem}");

    // Past the start (and a tick of the control plane): still another host's license.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(state_of(&tg, "LIC-ELSEWHERE").await, "wrong-host");
    let problem = tg
        .get("/jira-1/x", Some("incidents"))
        .await
        .assert_problem(403, "license-invalid");
    assert_eq!(problem["reason"], "wrong-host", "{problem}");
    assert_eq!(tg.enable("incidents").await.status.as_u16(), 200);
    tg.get("/jira-1/x", Some("incidents"))
        .await
        .assert_problem(403, "license-invalid");
    assert_eq!(
        target.hits(),
        0,
        "another host's license let a request through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "test-clock"),
    ignore = "needs the test-clock feature: TOLLGATE_NOW and TOLLGATE_TEST_HOST"
)]
async fn a_license_for_this_host_becomes_valid_at_its_start() {
    let hostname = gethostname::gethostname().to_string_lossy().to_uppercase();
    let license = bound("LIC-HERE", &hostname, TimeDelta::seconds(2));
    let (target, tg) = world(&license, &[("TOLLGATE_NOW", NOW)]).await;
    assert_eq!(state_of(&tg, "LIC-HERE").await, "not-yet-valid");
    eventually(
        "the license to become valid at its start",
        Duration::from_secs(10),
        || async { (state_of(&tg, "LIC-HERE").await == "valid").then_some(()) },
    )
    .await;
    // The flow takes its point at the control plane's next tick (at most a second later).
    eventually(
        "the flow to run on the license",
        Duration::from_secs(5),
        || async { (tg.get("/jira-1/x", Some("incidents")).await.status == 200).then_some(()) },
    )
    .await;
    assert_eq!(target.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "test-clock"),
    ignore = "needs the test-clock feature: TOLLGATE_NOW and TOLLGATE_TEST_HOST"
)]
async fn a_fleet_license_works_on_every_host_under_its_domain() {
    let fleet = with(
        pair_license("LIC-FLEET", "servicenow", "jira", 1),
        "bound_to",
        "*.engines.acme.example",
    );
    let (target, tg) = world(
        &fleet,
        &[(
            "TOLLGATE_TEST_HOST",
            "sidecar-b.Engines.acme.example,10.0.0.7",
        )],
    )
    .await;
    assert_eq!(state_of(&tg, "LIC-FLEET").await, "valid");
    tg.get("/jira-1/x", Some("incidents"))
        .await
        .assert_upstream_ok("target");

    let other = with(fleet.clone(), "bound_to", "*.other.example");
    let other = with(other, "id", "LIC-OTHER");
    let (_, tg) = world(
        &other,
        &[("TOLLGATE_TEST_HOST", "sidecar-b.engines.acme.example")],
    )
    .await;
    assert_eq!(state_of(&tg, "LIC-OTHER").await, "wrong-host");
    assert_eq!(target.hits(), 1);
}

/// Runs `tollgate <verb> --config` on the builder's config with `[licensing] host = …`.
fn with_claims(verb: &str, claims: &str, test_host: &str) -> std::process::Output {
    let builder = tollgate()
        .licensing_option(&format!("host = {claims}"))
        .instance("servicenow-1", "servicenow", "http://127.0.0.1:9")
        .instance("jira-1", "jira", "http://127.0.0.1:9")
        .flow("incidents", ["servicenow-1", "jira-1"]);
    let config = builder.file("tollgate.toml", &builder.config_text());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([verb, "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env("TOLLGATE_TEST_HOST", test_host)
        .output()
        .expect("run tollgate");
    drop(builder);
    out
}

#[test]
#[cfg_attr(
    not(feature = "test-clock"),
    ignore = "needs the test-clock feature: TOLLGATE_NOW and TOLLGATE_TEST_HOST"
)]
fn a_config_that_claims_another_host_is_refused_naming_the_entry() {
    let machine = "sidecar-b.engines.acme.example,10.0.0.7";
    for verb in ["check", "run"] {
        let out = with_claims(verb, r#"["10.0.0.7", "other-host.invalid"]"#, machine);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{verb}: {stderr}");
        assert!(
            stderr.contains("tollgate.toml"),
            "{verb} does not name the file: {stderr}"
        );
        assert!(
            stderr.contains("licensing.host[1]") && stderr.contains("other-host.invalid"),
            "{verb} does not name the entry: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        let out = with_claims(verb, r#"["192.0.2.250"]"#, machine);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{verb}: {stderr}");
        assert!(stderr.contains("licensing.host[0]"), "{stderr}");
    }
    // Claiming what the machine is passes.
    let out = with_claims(
        "check",
        r#"["SIDECAR-B.engines.acme.example.", "10.0.0.7"]"#,
        machine,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
