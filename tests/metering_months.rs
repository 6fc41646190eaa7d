//! Time and transferred records: the count resets at 00:00 on the 1st
//! in `licensing.timezone`, old months stay readable, flows stopped by the records limit
//! resume at the reset (or not, with `resume_at_reset = false`), and a clock set back
//! beyond `max_clock_skew` invalidates every license until time catches up.
//!
//! Needs the `test-clock` feature: `TOLLGATE_NOW` puts the sidecar a few seconds before a
//! month boundary (its clock then advances in real time), so no test sleeps for a month.
//! Run with `cargo test --features test-clock --test metering_months`.

#![cfg(feature = "test-clock")]

pub mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use serde_json::Value;

const MAIN: &str = "/jira-1/rest/api/2/issue";
/// How long the sidecar may need to notice a new month after local midnight (1 s ticks).
const ROLLOVER: Duration = Duration::from_secs(15);

/// servicenow-1 ↔ jira-1, flow `incidents` whose main entity is `POST /rest/api/2/issue`,
/// licensed by `LIC-MON` (limit 10, hard limit 11).
fn world(target: &Upstream, licensing: &[&str]) -> Builder {
    let uri = target.base_uri();
    let mut builder = tollgate();
    for line in licensing {
        builder = builder.licensing_option(line);
    }
    builder
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .flow_with(
            "incidents",
            ["servicenow-1", "jira-1"],
            &[
                "[[flows.entities]]",
                "instance = \"jira-1\"",
                "role = \"main\"",
                "method = \"POST\"",
                "path = \"/rest/api/2/issue\"",
            ],
        )
        .license(&with(
            pair_license("LIC-MON", "servicenow", "jira", 1),
            "transferred_records",
            10,
        ))
}

/// Asserts the sidecar's clock started at `now` (within a minute): a binary built without
/// the `test-clock` feature ignores `TOLLGATE_NOW` (and cargo shares `target/debug/tollgate`
/// between feature sets, so a stale one can be picked up after a build without it).
async fn assert_pinned(tg: &Tollgate, now: &str) {
    let status = tg.status().await;
    let parse = |text: &str| chrono::DateTime::parse_from_rfc3339(text).ok();
    let seen = status["clock_high_water"].as_str().and_then(parse);
    let pinned = parse(now).unwrap();
    assert!(
        seen.is_some_and(|seen| (seen - pinned).num_seconds().abs() < 60),
        "the sidecar does not run at TOLLGATE_NOW={now} (build with --features test-clock): {status}"
    );
}

fn used(usage: &Value, section: &str, id: &str) -> u64 {
    usage[section]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["id"] == id))
        .and_then(|i| i["used"].as_u64())
        .unwrap_or_else(|| panic!("{section} {id} not in {usage}"))
}

/// Loads `incidents` up to its hard limit (11) in `old` month, which must still be current
/// afterwards; checks the refusal's `Retry-After` points at the imminent reset.
async fn exhaust(tg: &Tollgate, old: &str, started: Instant, midnight_in: Duration) {
    for n in 1..=11 {
        let resp = tg.post(MAIN, Some("incidents"), "{}").await;
        assert!(
            resp.status.is_success(),
            "load {n}: {} {}",
            resp.status,
            resp.text()
        );
    }
    let resp = tg.post(MAIN, Some("incidents"), "{}").await;
    resp.assert_problem(429, "records-limit-exceeded");
    let retry: u64 = resp.header("retry-after").unwrap().parse().unwrap();
    let left = midnight_in.saturating_sub(started.elapsed()).as_secs();
    assert!(
        retry >= 1 && retry <= left + 2,
        "Retry-After {retry} must count the seconds to local midnight (about {left} left)"
    );
    eventually(
        "incidents stopped by the records limit",
        Duration::from_secs(5),
        || async { (tg.flow("incidents").await["reason"] == "records-limit").then_some(()) },
    )
    .await;
    let records = tg.records("LIC-MON").await;
    assert_eq!(
        records["month"], old,
        "the month turned before the test could exhaust it (machine too slow?): {records}"
    );
    assert_eq!(records["used"], 11, "{records}");
    assert_eq!(records["warning"], true, "{records}");
}

/// Starts 4 s before local midnight of the last day of November 2026 (`now` is that
/// instant in UTC), exhausts November, and checks December starts from zero with
/// November kept in `/v1/usage?month=2026-11`.
async fn rollover(timezone: &str, now: &str, resume: bool) {
    let target = Upstream::plain("target").await;
    let mut licensing = vec![format!("timezone = \"{timezone}\"")];
    if !resume {
        licensing.push("resume_at_reset = false".to_owned());
    }
    let licensing: Vec<&str> = licensing.iter().map(String::as_str).collect();
    let started = Instant::now();
    let midnight_in = Duration::from_secs(4);
    let tg = world(&target, &licensing)
        .start_with(&[], &[("TOLLGATE_NOW", now)])
        .await;
    assert_pinned(&tg, now).await;

    let status = tg.status().await;
    assert_eq!(status["month"], "2026-11", "{status}");
    assert_eq!(tg.usage(None).await["timezone"], timezone);
    exhaust(&tg, "2026-11", started, midnight_in).await;

    // The reset: December counts from zero.
    eventually("the month to turn", midnight_in + ROLLOVER, || async {
        (tg.status().await["month"] == "2026-12").then_some(())
    })
    .await;
    let records = tg.records("LIC-MON").await;
    assert_eq!(records["month"], "2026-12", "{records}");
    assert_eq!(records["used"], 0, "{records}");
    assert_eq!(records["warning"], false, "{records}");
    let december = tg.usage(None).await;
    assert_eq!(december["month"], "2026-12", "{december}");
    assert_eq!(used(&december, "licenses", "LIC-MON"), 0, "{december}");
    assert_eq!(used(&december, "flows", "incidents"), 0, "{december}");
    assert_eq!(tg.usage(Some("2026-12")).await, december);
    let november = tg.usage(Some("2026-11")).await;
    assert_eq!(november["month"], "2026-11", "{november}");
    assert_eq!(used(&november, "licenses", "LIC-MON"), 11, "{november}");
    assert_eq!(used(&november, "flows", "incidents"), 11, "{november}");

    let audit = tg.audit(100).await;
    let reset = audit
        .iter()
        .find(|e| e["kind"] == "records-reset")
        .unwrap_or_else(|| panic!("no records-reset in the audit trail: {audit:?}"));
    assert_eq!(reset["detail"]["month"], "2026-12", "{reset}");

    if resume {
        eventually("incidents resumed at the reset", ROLLOVER, || async {
            (tg.flow("incidents").await["enabled"] == true).then_some(())
        })
        .await;
        let flow = tg.flow("incidents").await;
        assert!(flow["reason"].is_null(), "{flow}");
        assert_eq!(flow["license"], "LIC-MON", "{flow}");
        assert!(
            reset["detail"]["resumed"]
                .as_array()
                .is_some_and(|r| r.iter().any(|f| f == "incidents")),
            "{reset}"
        );
    } else {
        // Nothing resumed it (the reset and any resumption happen in one step, which
        // `/v1/status` showing December proves is over); the operator can, and then the new
        // month's budget applies.
        let flow = tg.flow("incidents").await;
        assert_eq!(flow["enabled"], false, "{flow}");
        assert_eq!(flow["reason"], "records-limit", "{flow}");
        let resp = tg.post(MAIN, Some("incidents"), "{}").await;
        let problem = resp.assert_problem(429, "records-limit-exceeded");
        assert_eq!(problem["reason"], "records-limit", "{problem}");
        assert_eq!(reset["detail"]["resumed"], serde_json::json!([]), "{reset}");
        let resp = tg.admin_post("/v1/flows/incidents/enable", "").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(resp.json()["enabled"], true);
    }

    // December counts from one; November keeps its 11.
    let hits = target.hits();
    let resp = tg.post(MAIN, Some("incidents"), "{}").await;
    resp.assert_upstream_ok("target");
    assert_eq!(resp.header("tollgate-warning"), None);
    assert_eq!(target.hits(), hits + 1);
    assert_eq!(tg.records("LIC-MON").await["used"], 1);
    assert_eq!(tg.usage_of_flow(Some("2026-12"), "incidents").await, 1);
    assert_eq!(tg.usage_of_license(Some("2026-11"), "LIC-MON").await, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_month_resets_at_midnight_utc_and_stopped_flows_resume() {
    rollover("UTC", "2026-11-30T23:59:56Z", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_month_resets_at_midnight_in_new_york_not_in_utc() {
    // 04:59:56 UTC on Dec 1 is 23:59:56 on Nov 30 in New York (EST, UTC-5): hours after UTC
    // midnight, the month there is still November.
    rollover("America/New_York", "2026-12-01T04:59:56Z", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resume_at_reset_stopped_flows_stay_stopped() {
    rollover("UTC", "2026-11-30T23:59:56Z", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_set_back_beyond_the_skew_invalidates_licenses_until_it_catches_up() {
    let target = Upstream::plain("target").await;
    let mut tg = world(&target, &["max_clock_skew = \"24h\""])
        .start_with(&[], &[("TOLLGATE_NOW", "2026-11-20T00:00:00Z")])
        .await;
    assert_pinned(&tg, "2026-11-20T00:00:00Z").await;
    assert_eq!(tg.status().await["clock_rollback"], false);
    tg.post(MAIN, Some("incidents"), "{}")
        .await
        .assert_upstream_ok("target");
    let status = tg.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "SIGTERM exit: {status}\n{}", tg.logs());

    // Ten days back: more than 24 h behind the latest time seen.
    tg.restart(&[("TOLLGATE_NOW", "2026-11-10T00:00:00Z")])
        .await;
    let hits = target.hits();
    let resp = tg.post(MAIN, Some("incidents"), "{}").await;
    let problem = resp.assert_problem(403, "license-invalid");
    assert_eq!(problem["reason"], "clock-rollback", "{problem}");
    assert_eq!(problem["flow"], "incidents", "{problem}");
    let resp = tg
        .get("/servicenow-1/api/now/table/incident", Some("incidents"))
        .await;
    assert_eq!(
        resp.assert_problem(403, "license-invalid")["reason"],
        "clock-rollback"
    );
    assert_eq!(
        target.hits(),
        hits,
        "a request reached the target during the rollback"
    );
    let status = tg.status().await;
    assert_eq!(status["clock_rollback"], true, "{status}");
    let license = tg.license("LIC-MON").await.unwrap();
    assert_eq!(license["state"], "clock-rollback", "{license}");
    let audit = tg.audit(100).await;
    assert!(
        audit.iter().any(|e| e["kind"] == "clock-rollback"),
        "no clock-rollback in the audit trail: {audit:?}"
    );
    let status = tg.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "SIGTERM exit: {status}\n{}", tg.logs());

    // Twelve hours behind the mark: within the skew, licenses are judged normally, and the
    // month's count has survived both restarts.
    tg.restart(&[("TOLLGATE_NOW", "2026-11-19T12:00:00Z")])
        .await;
    let status = tg.status().await;
    assert_eq!(status["clock_rollback"], false, "{status}");
    assert_eq!(tg.license("LIC-MON").await.unwrap()["state"], "valid");
    assert_eq!(tg.records("LIC-MON").await["used"], 1);
    tg.post(MAIN, Some("incidents"), "{}")
        .await
        .assert_upstream_ok("target");
    assert_eq!(tg.records("LIC-MON").await["used"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_that_turned_while_the_sidecar_was_down_resumes_stopped_flows() {
    let target = Upstream::plain("target").await;
    let started = Instant::now();
    let mut tg = world(&target, &[])
        .start_with(&[], &[("TOLLGATE_NOW", "2026-11-20T00:00:00Z")])
        .await;
    assert_pinned(&tg, "2026-11-20T00:00:00Z").await;
    exhaust(&tg, "2026-11", started, Duration::from_secs(11 * 86_400)).await;
    let status = tg.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "SIGTERM exit: {status}\n{}", tg.logs());

    // Back on December 2nd: the reset happened while tollgate was down.
    tg.restart(&[("TOLLGATE_NOW", "2026-12-02T00:00:00Z")])
        .await;
    let records = tg.records("LIC-MON").await;
    assert_eq!(records["month"], "2026-12", "{records}");
    assert_eq!(records["used"], 0, "{records}");
    assert_eq!(tg.usage_of_license(Some("2026-11"), "LIC-MON").await, 11);
    eventually(
        "incidents resumed after the missed reset",
        Duration::from_secs(5),
        || async { (tg.flow("incidents").await["enabled"] == true).then_some(()) },
    )
    .await;
    tg.post(MAIN, Some("incidents"), "{}")
        .await
        .assert_upstream_ok("target");
    assert_eq!(tg.records("LIC-MON").await["used"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_clock_set_back_across_a_months_start_does_not_open_its_budget_again() {
    let target = Upstream::plain("target").await;
    let started = Instant::now();
    let mut tg = world(&target, &["max_clock_skew = \"24h\""])
        .start_with(&[], &[("TOLLGATE_NOW", "2026-12-01T00:10:00Z")])
        .await;
    assert_pinned(&tg, "2026-12-01T00:10:00Z").await;
    exhaust(
        &tg,
        "2026-12",
        started,
        Duration::from_secs(31 * 86_400 - 600),
    )
    .await;
    let status = tg.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "SIGTERM exit: {status}\n{}", tg.logs());

    // Back to a few seconds before December began (within the skew), and on past midnight.
    tg.restart(&[("TOLLGATE_NOW", "2026-11-30T23:59:57Z")])
        .await;
    assert_eq!(tg.status().await["clock_rollback"], false);
    let hits = target.hits();
    // Past midnight and a few ticks more: time for a (wrong) second start of December to
    // resume the flow and count from zero. Nothing to wait for when it is right.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let flow = tg.flow("incidents").await;
    assert_eq!(flow["reason"], "records-limit", "{flow}");
    tg.post(MAIN, Some("incidents"), "{}")
        .await
        .assert_problem(429, "records-limit-exceeded");
    assert_eq!(target.hits(), hits, "a load reached the target");
    assert_eq!(tg.usage_of_license(Some("2026-12"), "LIC-MON").await, 11);
    let audit = tg.audit(100).await;
    assert_eq!(
        audit
            .iter()
            .filter(|e| e["kind"] == "records-reset")
            .count(),
        0,
        "December began once: {audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counted_load_stores_the_clock_high_water_mark() {
    let target = Upstream::plain("target").await;
    // One second past a multiple of ten: the periodic write of the mark is 9 s away.
    let mut tg = world(&target, &["max_clock_skew = \"24h\""])
        .start_with(&[], &[("TOLLGATE_NOW", "2026-11-20T00:00:01Z")])
        .await;
    assert_pinned(&tg, "2026-11-20T00:00:01Z").await;
    tg.post(MAIN, Some("incidents"), "{}")
        .await
        .assert_upstream_ok("target");
    tg.kill9();
    tg.wait_exit(Duration::from_secs(15))
        .await
        .expect("kill -9 did not end tollgate");

    tg.restart(&[("TOLLGATE_NOW", "2026-11-10T00:00:00Z")])
        .await;
    assert_eq!(
        tg.records("LIC-MON").await["used"],
        1,
        "the load's count is stored"
    );
    let resp = tg.post(MAIN, Some("incidents"), "{}").await;
    let problem = resp.assert_problem(403, "license-invalid");
    assert_eq!(problem["reason"], "clock-rollback", "{problem}");
    assert_eq!(tg.status().await["clock_rollback"], true);
}
