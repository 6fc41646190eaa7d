//! No load the target accepted goes uncounted, whatever a hostile or careless engine does:
//! it hangs up before the answer (closes, half-closes, resets an HTTP/2 stream), names
//! another flow of the pair, loads through a single-system data loader, spells the method in
//! another case or asks for it through an override header, adds `;jsessionid`, or changes the
//! case of a path on a case-insensitive target. And no more records are created than counted.

pub mod common;

use std::time::Duration;

use common::*;
use hyper::Method;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Mid-month, so no test is cut in two by a month boundary.
const NOW: &str = "2026-11-15T12:00:00Z";

fn env() -> [(&'static str, &'static str); 1] {
    [("TOLLGATE_NOW", NOW)]
}

/// `[[flows.entities]]` lines for one main pattern.
fn main_entity(instance: &str, method: &str, path: &str) -> Vec<String> {
    vec![
        "[[flows.entities]]".to_owned(),
        format!("instance = \"{instance}\""),
        "role = \"main\"".to_owned(),
        format!("method = \"{method}\""),
        format!("path = \"{path}\""),
    ]
}

fn refs(lines: &[String]) -> Vec<&str> {
    lines.iter().map(String::as_str).collect()
}

/// A pair license for servicenow ↔ jira with a monthly records limit.
fn metered(id: &str, records: u64) -> Value {
    with(
        pair_license(id, "servicenow", "jira", 2),
        "transferred_records",
        records,
    )
}

/// One sidecar: `incidents` counts `POST /slow/{ms}/issue` and `POST /rest/api/2/issue` on
/// jira-1; `changes`, on the same pair, has no pattern for jira-1 at all.
async fn world(records: u64, extra_server: &[&str]) -> (Upstream, Tollgate) {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let mut entities = main_entity("jira-1", "POST", "/slow/{ms}/issue");
    entities.extend(main_entity("jira-1", "POST", "/rest/api/2/issue"));
    let mut builder = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .flow_with("incidents", ["servicenow-1", "jira-1"], &refs(&entities))
        .flow("changes", ["servicenow-1", "jira-1"])
        .license(&metered("LIC-1", records));
    for line in extra_server {
        builder = builder.server_option(line);
    }
    let tg = builder.start_with(&[], &env()).await;
    (target, tg)
}

/// The raw bytes of a counted load of `flow` whose target answers after `ms`.
fn slow_load(flow: &str, ms: u64) -> Vec<u8> {
    format!(
        "POST /jira-1/slow/{ms}/issue HTTP/1.1\r\nHost: t\r\nTollgate-Flow: {flow}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .into_bytes()
}

fn hits(target: &Upstream, path: &str) -> usize {
    target
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path == path)
        .count()
}

/// Waits until `used` of the license is `expected` (counts land when the target answers).
async fn await_used(tg: &Tollgate, expected: u64) {
    eventually(
        &format!("LIC-1 to have counted {expected}"),
        Duration::from_secs(10),
        || async { (tg.usage_of_license(None, "LIC-1").await == expected).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_engine_closes_the_connection_is_still_counted() {
    let (target, tg) = world(1000, &[]).await;
    let mut socket = TcpStream::connect(tg.engine).await.unwrap();
    socket
        .write_all(&slow_load("incidents", 300))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(socket);
    await_used(&tg, 1).await;
    assert_eq!(hits(&target, "/slow/300/issue"), 1);
    assert_eq!(tg.usage_of_flow(None, "incidents").await, 1);
    // It stays counted, and nothing else is.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(tg.usage_of_license(None, "LIC-1").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_engine_half_closes_is_still_counted() {
    let (target, tg) = world(1000, &[]).await;
    let mut socket = TcpStream::connect(tg.engine).await.unwrap();
    socket
        .write_all(&slow_load("incidents", 300))
        .await
        .unwrap();
    // The load is with the target (which answers at 300 ms) when the engine half-closes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hits(&target, "/slow/300/issue"), 1, "{}", tg.logs());
    socket.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(socket);
    await_used(&tg, 1).await;
    assert_eq!(hits(&target, "/slow/300/issue"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_load_whose_engine_times_out_is_still_counted() {
    let (target, tg) = world(1000, &[]).await;
    let h2 = h2_client();
    let abandoned = tokio::time::timeout(
        Duration::from_millis(100),
        tg.request_with(
            &h2,
            tg.engine,
            Method::POST,
            "/jira-1/slow/300/issue",
            &[("tollgate-flow", "incidents")],
            "{}",
        ),
    )
    .await;
    assert!(abandoned.is_err(), "the slow load answered within 100 ms");
    await_used(&tg, 1).await;
    assert_eq!(hits(&target, "/slow/300/issue"), 1);
    // The connection is still good for the next request.
    tg.request_with(
        &h2,
        tg.engine,
        Method::GET,
        "/jira-1/x",
        &[("tollgate-flow", "incidents")],
        "",
    )
    .await
    .assert_upstream_ok("target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_that_hang_up_never_get_more_records_created_than_the_hard_limit() {
    // Limit 10, hard limit 11: twenty loads that each hang up before the answer.
    let (target, tg) = world(10, &[]).await;
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let mut socket = TcpStream::connect(tg.engine).await.unwrap();
        socket
            .write_all(&slow_load("incidents", 300))
            .await
            .unwrap();
        sockets.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(sockets);
    await_used(&tg, 11).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tg.usage_of_license(None, "LIC-1").await, 11);
    assert_eq!(
        hits(&target, "/slow/300/issue"),
        11,
        "every record the target created is counted, and no more were let through"
    );
    assert_eq!(tg.flow("incidents").await["reason"], "records-limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naming_another_flow_of_the_pair_does_not_dodge_the_count() {
    let (target, tg) = world(1000, &[]).await;
    tg.post("/jira-1/rest/api/2/issue", Some("changes"), "{}")
        .await
        .assert_upstream_ok("target");
    assert_eq!(tg.usage_of_license(None, "LIC-1").await, 1);
    assert_eq!(tg.usage_of_flow(None, "changes").await, 1);
    assert_eq!(tg.usage_of_flow(None, "incidents").await, 0);
    assert_eq!(hits(&target, "/rest/api/2/issue"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_system_data_loader_counts_against_the_covering_license() {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let toml = format!(
        "{}{}{}[[flows.entities]]\ninstance = \"jira-1\"\nrole = \"main\"\nmethod = \"POST\"\npath = \"/rest/api/2/issue\"\n",
        toml_instance("jira-1", "named", &[("app", "\"jira\""), ("base_uri", &format!("\"{uri}\""))]),
        toml_instance("servicenow-1", "named", &[("app", "\"servicenow\""), ("base_uri", &format!("\"{uri}\""))]),
        toml_flow("loader", "data-loader", "production", &["jira-1"], true),
    );
    // Limit 2, hard limit 2: the loader's third load is refused.
    let tg = tollgate()
        .license(&metered("LIC-1", 2))
        .start_toml(&toml, &env())
        .await;
    for _ in 0..2 {
        tg.post("/jira-1/rest/api/2/issue", Some("loader"), "{}")
            .await
            .assert_upstream_ok("target");
    }
    assert_eq!(tg.usage_of_license(None, "LIC-1").await, 2);
    assert_eq!(tg.usage_of_flow(None, "loader").await, 2);
    let problem = tg
        .post("/jira-1/rest/api/2/issue", Some("loader"), "{}")
        .await
        .assert_problem(429, "records-limit-exceeded");
    assert_eq!(problem["license"], "LIC-1", "{problem}");
    assert_eq!(target.hits(), 2);
    // The loader holds no point of the license.
    let license = tg.license("LIC-1").await.unwrap();
    assert_eq!(license["points"]["used"], 0, "{license}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_spellings_and_overrides_cannot_dodge_the_count() {
    let (target, tg) = world(1000, &[]).await;
    for method in ["post", "Post", "pOST"] {
        let request = format!(
            "{method} /jira-1/rest/api/2/issue HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let resp = raw(tg.engine, request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(
            resp.status,
            Some(400),
            "{method}: {}",
            String::from_utf8_lossy(&resp.bytes)
        );
        assert_eq!(resp.header("tollgate-reason"), Some("bad-request"));
    }
    assert_eq!(target.hits(), 0, "a case-variant method reached the target");
    // A GET that asks the target to act as a POST is a POST to the meter.
    for header in [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ] {
        tg.request(
            Method::GET,
            "/jira-1/rest/api/2/issue",
            &[("tollgate-flow", "incidents"), (header, "post")],
            "",
        )
        .await
        .assert_upstream_ok("target");
    }
    assert_eq!(tg.usage_of_license(None, "LIC-1").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameters_and_encoded_spellings_of_a_counted_path_are_counted() {
    let (target, tg) = world(1000, &[]).await;
    let spellings = [
        "/jira-1/rest/api/2/issue;jsessionid=ABC123",
        "/jira-1/rest;x=1/api/2/issue",
        "/jira-1/rest/api/2/issue/",
        "/jira-1/rest/api/2/%69ssue",
        "/jira-1/rest//api/2/./issue",
        "/jira-1/rest%2Fapi%2F2%2Fissue",
        "/jira-1/rest%5Capi%5C2%5Cissue",
        "/jira-1/rest/api/2/issue%3Bjsessionid=ABC123",
        "/jira-1/rest/;v=2/api/2/issue",
    ];
    for (n, path) in spellings.iter().enumerate() {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let resp = raw(tg.engine, request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(
            resp.status,
            Some(200),
            "{path}: {}",
            String::from_utf8_lossy(&resp.bytes)
        );
        assert_eq!(
            tg.usage_of_license(None, "LIC-1").await,
            n as u64 + 1,
            "{path} reached the target uncounted"
        );
    }
    assert_eq!(target.hits(), spellings.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_spellings_of_reserved_characters_in_a_pattern_are_counted() {
    let target = Upstream::plain("odata").await;
    let uri = target.base_uri();
    let mut entities = main_entity("erp-1", "POST", "/api/data/v9.2/$batch");
    entities.extend(main_entity(
        "erp-1",
        "POST",
        "/_api/web/lists/getbytitle('Tasks')/items/",
    ));
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("erp-1", "jira", &uri)
        .flow_with("orders", ["servicenow-1", "erp-1"], &refs(&entities))
        .license(&metered("LIC-1", 1000))
        .start_with(&[], &env())
        .await;
    let spellings = [
        "/erp-1/api/data/v9.2/$batch",
        "/erp-1/api/data/v9.2/%24batch",
        "/erp-1/api/data/v9.2/%24batch/",
        "/erp-1/_api/web/lists/getbytitle('Tasks')/items",
        "/erp-1/_api/web/lists/getbytitle%28%27Tasks%27%29/items",
        "/erp-1/_api/web/lists/getbytitle%28'Tasks%27)/items/",
    ];
    for (n, path) in spellings.iter().enumerate() {
        tg.post(path, Some("orders"), "{}")
            .await
            .assert_upstream_ok("odata");
        assert_eq!(
            tg.usage_of_license(None, "LIC-1").await,
            n as u64 + 1,
            "{path} reached the target uncounted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_insensitive_target_counts_every_case_of_its_paths() {
    let target = Upstream::plain("iis").await;
    let uri = target.base_uri();
    let entities = main_entity("erp-1", "POST", "/api/Orders");
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance_with("erp-1", "jira", &uri, &["paths_case_insensitive = true"])
        .flow_with("orders", ["servicenow-1", "erp-1"], &refs(&entities))
        .license(&metered("LIC-1", 1000))
        .start_with(&[], &env())
        .await;
    for path in [
        "/erp-1/api/Orders",
        "/erp-1/API/ORDERS",
        "/erp-1/api/orders/",
    ] {
        tg.post(path, Some("orders"), "{}")
            .await
            .assert_upstream_ok("iis");
    }
    assert_eq!(tg.usage_of_license(None, "LIC-1").await, 3);
    // Reads stay uncounted whatever their case.
    tg.get("/erp-1/API/orders", Some("orders"))
        .await
        .assert_upstream_ok("iis");
    assert_eq!(tg.usage_of_license(None, "LIC-1").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_counted_exchanges_whose_engine_left() {
    let (target, mut tg) = world(1000, &[]).await;
    let mut socket = TcpStream::connect(tg.engine).await.unwrap();
    socket
        .write_all(&slow_load("incidents", 800))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(socket);
    tg.signal("TERM");
    let status = tg.wait_exit(Duration::from_secs(20)).await.expect("exit");
    assert!(status.success(), "{status:?}");
    assert_eq!(hits(&target, "/slow/800/issue"), 1);
    tg.restart(&env()).await;
    assert_eq!(
        tg.usage_of_license(None, "LIC-1").await,
        1,
        "the load the target accepted after the engine left was counted before exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_half_closed_at_once_is_either_never_forwarded_or_counted() {
    // hyper may see the end of the stream before it hands the request over (then nothing
    // reaches the target) or after (then the exchange finishes and counts): never between.
    let (target, tg) = world(1000, &[]).await;
    for round in 0..8 {
        let mut socket = TcpStream::connect(tg.engine).await.unwrap();
        socket
            .write_all(&slow_load("incidents", 200))
            .await
            .unwrap();
        socket.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        drop(socket);
        let used = tg.usage_of_license(None, "LIC-1").await;
        assert_eq!(
            hits(&target, "/slow/200/issue") as u64,
            used,
            "round {round}: a record reached the target uncounted"
        );
    }
}
