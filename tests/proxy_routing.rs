//! Routing: the `/{instance-id}/…` prefix on the main listener, path
//! normalisation and traversal attempts, dedicated instance listeners with and without a
//! bound flow, and absolute-form requests with `forward_proxy` — tollgate is never an open
//! proxy.

pub mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use hyper::{Method, StatusCode};

const RAW_DEADLINE: Duration = Duration::from_secs(10);

/// `servicenow-1` and `jira-1` on separate upstreams, one flow between them (so a request
/// that slipped from one instance to the other would still pass the gate), one license.
async fn two_systems() -> (Upstream, Upstream, Tollgate) {
    let servicenow = Upstream::plain("servicenow").await;
    let jira = Upstream::plain("jira").await;
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &servicenow.base_uri())
        .instance("jira-1", "jira", &jira.base_uri())
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start()
        .await;
    (servicenow, jira, tg)
}

/// Sends `target` verbatim (no client-side normalisation) with the flow header.
async fn raw_on_flow(tg: &Tollgate, target: &str) -> RawResp {
    raw(
        tg.engine,
        &raw_get(target, &["Tollgate-Flow: incidents"]),
        RAW_DEADLINE,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_segment_names_the_instance() {
    let (servicenow, jira, tg) = two_systems().await;

    tg.get("/jira-1/rest/api/2/issue?x=1&y=2", Some("incidents"))
        .await
        .assert_upstream_ok("jira");
    let seen = jira.last();
    assert_eq!(seen.path, "/rest/api/2/issue");
    assert_eq!(seen.query.as_deref(), Some("x=1&y=2"));

    tg.get("/servicenow-1/api/now/table/incident", Some("incidents"))
        .await
        .assert_upstream_ok("servicenow");
    assert_eq!(servicenow.last().path, "/api/now/table/incident");

    // A trailing slash is kept.
    tg.get("/jira-1/rest/", Some("incidents"))
        .await
        .assert_upstream_ok("jira");
    assert_eq!(jira.last().path, "/rest/");

    // Unknown instances, and paths without an instance, are unknown routes — even with a
    // valid flow, and before the flow is looked at.
    let before = (servicenow.hits(), jira.hits());
    for path in [
        "/",
        "/nope/rest/x",
        "/jira-2/x",
        "/JIRA-1x/x",
        "/rest/api/2/issue",
    ] {
        let problem = tg
            .get(path, Some("incidents"))
            .await
            .assert_problem(404, "unknown-route");
        assert!(problem["detail"].is_string(), "{problem}");
        tg.get(path, None)
            .await
            .assert_problem(404, "unknown-route");
    }
    assert_eq!((servicenow.hits(), jira.hits()), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_can_never_reach_another_instance() {
    let (servicenow, jira, tg) = two_systems().await;

    // Each of these must end as 404 unknown-route.
    for target in [
        "/jira-1/../servicenow-1/x",
        "/jira-1/%2e%2e/servicenow-1/x",
        "/jira-1/%2E%2E/servicenow-1/x",
        "/jira-1/.%2e/servicenow-1/x",
        "/jira-1/a/../../servicenow-1/x",
        "/jira-1/a/%2e%2e/%2e%2e/servicenow-1/x",
        "/jira-1/..",
        "/jira-1/../",
        "/jira-1%2fx",
        "/jira-1%2F..%2Fservicenow-1/x",
        "/jira-1/./../servicenow-1/x",
    ] {
        let resp = raw_on_flow(&tg, target).await;
        assert_eq!(
            resp.status,
            Some(404),
            "{target}: {}",
            String::from_utf8_lossy(&resp.bytes)
        );
        assert_eq!(
            resp.header("tollgate-reason"),
            Some("unknown-route"),
            "{target}"
        );
        assert_eq!(
            resp.json()["type"],
            "urn:tollgate:problem:unknown-route",
            "{target}"
        );
    }
    assert_eq!(servicenow.hits(), 0, "{:?}", servicenow.seen());
    assert_eq!(jira.hits(), 0, "{:?}", jira.seen());

    // These may be refused or land on jira-1, but never on servicenow-1.
    for target in [
        "/%2e%2e/jira-1/x",
        "/./jira-1/x",
        "/jira-1/%2e%2e%2fservicenow-1/x",
        "/jira-1/..%2fservicenow-1/x",
        "/jira-1/..%5cservicenow-1/x",
        "/jira-1/..\\servicenow-1/x",
    ] {
        let resp = raw_on_flow(&tg, target).await;
        let status = resp.status.unwrap_or(0);
        let landed_on_jira = status == 200 && resp.header("x-upstream") == Some("jira");
        let refused = (400..500).contains(&status) && resp.header("x-upstream").is_none();
        assert!(
            landed_on_jira || refused,
            "{target}: {}",
            String::from_utf8_lossy(&resp.bytes)
        );
    }
    assert_eq!(servicenow.hits(), 0, "{:?}", servicenow.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_within_the_instance() {
    let (servicenow, jira, tg) = two_systems().await;

    for (target, expected) in [
        ("/jira-1/a/../b", "/b"),
        ("/jira-1/a/%2e%2e/b", "/b"),
        ("/jira-1/a/%2E%2E/b", "/b"),
        ("/jira-1/./b", "/b"),
        ("/jira-1//a///b", "/a/b"),
        ("/jira-1/%7Euser/%61bc", "/~user/abc"),
        ("/jira-1/a%2Fb/c", "/a%2Fb/c"),
        ("/jira-1/a%2fb/../c", "/c"),
        ("/jira-1/files/report%20Q1.pdf", "/files/report%20Q1.pdf"),
    ] {
        let resp = raw_on_flow(&tg, target).await;
        assert_eq!(
            resp.status,
            Some(200),
            "{target}: {}",
            String::from_utf8_lossy(&resp.bytes)
        );
        assert_eq!(resp.header("x-upstream"), Some("jira"), "{target}");
        assert_eq!(jira.last().path, expected, "{target}");
    }
    assert_eq!(servicenow.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_cannot_climb_out_of_the_instance_base_path() {
    let servicenow = Upstream::plain("servicenow").await;
    // Both instances live on one server, under different base paths.
    let shared = Upstream::plain("shared").await;
    let tg = tollgate()
        .instance(
            "servicenow-1",
            "servicenow",
            &format!("{}/sn", shared.base_uri()),
        )
        .instance("jira-1", "jira", &format!("{}/jira", shared.base_uri()))
        .instance("servicenow-2", "servicenow", &servicenow.base_uri())
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start()
        .await;

    for target in [
        "/jira-1/../sn/x",
        "/jira-1/%2e%2e/sn/x",
        "/jira-1/a/../../sn/x",
    ] {
        let resp = raw_on_flow(&tg, target).await;
        assert_eq!(
            resp.status,
            Some(404),
            "{target}: {}",
            String::from_utf8_lossy(&resp.bytes)
        );
    }
    assert_eq!(shared.hits(), 0, "{:?}", shared.seen());

    let resp = raw_on_flow(&tg, "/jira-1/a/../b").await;
    assert_eq!(resp.status, Some(200));
    assert_eq!(shared.last().path, "/jira/b");
    assert!(shared.seen().iter().all(|s| s.path.starts_with("/jira/")));
    assert_eq!(servicenow.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_listener_forwards_the_whole_path_on_its_bound_flow() {
    let servicenow = Upstream::plain("servicenow").await;
    let jira = Upstream::plain("jira").await;
    let jira2 = Upstream::plain("jira-2").await;
    let tg = tollgate()
        .dedicated_instance("servicenow-1", "servicenow", &servicenow.base_uri(), None)
        .dedicated_instance(
            "jira-1",
            "jira",
            &format!("{}/base", jira.base_uri()),
            Some("incidents"),
        )
        .instance("jira-2", "jira", &jira2.base_uri())
        .flow("incidents", ["servicenow-1", "jira-1"])
        .flow("other", ["servicenow-1", "jira-2"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 2))
        .start()
        .await;
    let jira_listener = tg.instance_listener("jira-1");
    let sn_listener = tg.instance_listener("servicenow-1");
    assert_ne!(jira_listener, tg.engine);

    // No flow header: the listener's bound flow applies; the whole path is forwarded.
    let resp = tg
        .request_with(
            &tg.client,
            jira_listener,
            Method::POST,
            "/jira-1/rest/api/2/issue?notify=false",
            &[],
            Bytes::from_static(b"{}"),
        )
        .await;
    resp.assert_upstream_ok("jira");
    let seen = jira.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.path, "/base/jira-1/rest/api/2/issue",
        "no prefix is taken off"
    );
    assert_eq!(seen.query.as_deref(), Some("notify=false"));

    // A flow header wins over the bound flow, and is still checked and stripped.
    let hits = jira.hits();
    let resp = tg
        .request_with(
            &tg.client,
            jira_listener,
            Method::GET,
            "/x",
            &[("tollgate-flow", "other")],
            Bytes::new(),
        )
        .await;
    let problem = resp.assert_problem(403, "flow-instance-mismatch");
    assert_eq!(problem["flow"], "other", "{problem}");
    assert_eq!(problem["instance"], "jira-1", "{problem}");
    let resp = tg
        .request_with(
            &tg.client,
            jira_listener,
            Method::GET,
            "/x",
            &[("tollgate-flow", "no-such-flow")],
            Bytes::new(),
        )
        .await;
    resp.assert_problem(403, "unknown-flow");
    assert_eq!(jira.hits(), hits);
    let resp = tg
        .request_with(
            &tg.client,
            jira_listener,
            Method::GET,
            "/y",
            &[("tollgate-flow", "incidents")],
            Bytes::new(),
        )
        .await;
    resp.assert_upstream_ok("jira");
    assert_eq!(jira.last().header("tollgate-flow"), None);

    // Without a bound flow, the header is required.
    let resp = tg
        .request_with(
            &tg.client,
            sn_listener,
            Method::GET,
            "/api/now/table/incident",
            &[],
            Bytes::new(),
        )
        .await;
    resp.assert_problem(403, "flow-required");
    assert_eq!(servicenow.hits(), 0);
    let resp = tg
        .request_with(
            &tg.client,
            sn_listener,
            Method::GET,
            "/api/now/table/incident",
            &[("tollgate-flow", "incidents")],
            Bytes::new(),
        )
        .await;
    resp.assert_upstream_ok("servicenow");
    assert_eq!(servicenow.last().path, "/api/now/table/incident");

    // A dedicated listener never leaves its instance, whatever the path says.
    for target in ["/../jira-1/x", "/%2e%2e/%2e%2e/x", "/jira-2/x"] {
        let resp = raw(
            sn_listener,
            &raw_get(target, &["Tollgate-Flow: incidents"]),
            RAW_DEADLINE,
        )
        .await;
        let status = resp.status.unwrap_or(0);
        assert!(
            status == 404 || resp.header("x-upstream") == Some("servicenow"),
            "{target}: {}",
            String::from_utf8_lossy(&resp.bytes)
        );
    }
    assert_eq!(jira2.hits(), 0);

    // The main listener still routes by prefix.
    tg.get("/jira-2/z", Some("other"))
        .await
        .assert_upstream_ok("jira-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_proxy_accepts_configured_authorities_only() {
    let servicenow = Upstream::plain("servicenow").await;
    let jira = Upstream::plain("jira").await;
    let stranger = Upstream::plain("stranger").await;
    let legacy = Upstream::plain("legacy").await;
    let tg = tollgate()
        .server_option("forward_proxy = true")
        .instance("servicenow-1", "servicenow", &servicenow.base_uri())
        .instance("jira-1", "jira", &jira.base_uri())
        .instance("legacy-1", "jira", &format!("{}/api", legacy.base_uri()))
        .flow("incidents", ["servicenow-1", "jira-1"])
        .flow("legacy", ["servicenow-1", "legacy-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 2))
        .start()
        .await;

    let request = format!(
        "GET http://{0}/rest/api/2/issue/ABC-1?expand=names HTTP/1.1\r\nHost: {0}\r\n\
         Tollgate-Flow: incidents\r\nConnection: close\r\n\r\n",
        jira.addr
    );
    let resp = raw(tg.engine, request.as_bytes(), RAW_DEADLINE).await;
    assert_eq!(
        resp.status,
        Some(200),
        "{}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert_eq!(resp.header("x-upstream"), Some("jira"));
    let seen = jira.last();
    assert_eq!(
        seen.path, "/rest/api/2/issue/ABC-1",
        "the path goes as it is"
    );
    assert_eq!(seen.query.as_deref(), Some("expand=names"));
    assert_eq!(seen.header("tollgate-flow"), None);

    // The path of an absolute-form request goes as it is where the instance's base_uri has
    // a path of its own: it must lie under that path (outside it is no route).
    let request = format!(
        "GET http://{0}/api/v2/items?page=3 HTTP/1.1\r\nHost: {0}\r\n\
         Tollgate-Flow: legacy\r\nConnection: close\r\n\r\n",
        legacy.addr
    );
    let resp = raw(tg.engine, request.as_bytes(), RAW_DEADLINE).await;
    assert_eq!(
        resp.status,
        Some(200),
        "{}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert_eq!(resp.header("x-upstream"), Some("legacy"));
    assert_eq!(legacy.last().path, "/api/v2/items");
    assert_eq!(legacy.last().query.as_deref(), Some("page=3"));
    let outside = format!(
        "GET http://{0}/v2/items HTTP/1.1\r\nHost: {0}\r\n\
         Tollgate-Flow: legacy\r\nConnection: close\r\n\r\n",
        legacy.addr
    );
    let resp = raw(tg.engine, outside.as_bytes(), RAW_DEADLINE).await;
    assert_eq!(
        resp.status,
        Some(404),
        "{}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert_eq!(
        legacy.last().path,
        "/api/v2/items",
        "nothing reached the target"
    );

    // The gate still applies to absolute-form requests.
    let request = format!(
        "GET http://{0}/x HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n",
        jira.addr
    );
    let resp = raw(tg.engine, request.as_bytes(), RAW_DEADLINE).await;
    assert_eq!(
        resp.status,
        Some(403),
        "{}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert_eq!(resp.header("tollgate-reason"), Some("flow-required"));

    // Any other authority: 404, and nothing is contacted.
    for authority in [
        stranger.addr.to_string(),
        "example.com".to_owned(),
        "example.com:80".to_owned(),
        format!("127.0.0.1:{}", closed_port().port()),
        format!("localhost:{}", jira.addr.port()),
    ] {
        let request = format!(
            "GET http://{authority}/jira-1/x HTTP/1.1\r\nHost: {authority}\r\n\
             Tollgate-Flow: incidents\r\nConnection: close\r\n\r\n"
        );
        let resp = raw(tg.engine, request.as_bytes(), RAW_DEADLINE).await;
        assert_eq!(
            resp.status,
            Some(404),
            "{authority}: {}",
            String::from_utf8_lossy(&resp.bytes)
        );
        assert_eq!(resp.header("tollgate-reason"), Some("unknown-route"));
    }
    // Tunnels are never opened.
    let request = format!(
        "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\nTollgate-Flow: incidents\r\nConnection: close\r\n\r\n",
        stranger.addr
    );
    let resp = raw(tg.engine, request.as_bytes(), Duration::from_secs(3)).await;
    assert_ne!(
        resp.status,
        Some(200),
        "{}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert!(
        resp.status.is_some_and(|s| s >= 400),
        "{}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert_eq!(stranger.hits(), 0);
    assert_eq!(jira.hits(), 1);
    assert_eq!(servicenow.hits(), 0);

    // Origin-form keeps working next to it.
    tg.get("/jira-1/plain", Some("incidents"))
        .await
        .assert_upstream_ok("jira");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_is_refused_without_forward_proxy() {
    let (servicenow, jira, tg) = two_systems().await;
    let request = format!(
        "GET http://{0}/rest/api/2/issue HTTP/1.1\r\nHost: {0}\r\n\
         Tollgate-Flow: incidents\r\nConnection: close\r\n\r\n",
        jira.addr
    );
    let resp = raw(tg.engine, request.as_bytes(), RAW_DEADLINE).await;
    assert_eq!(
        resp.status,
        Some(404),
        "{}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert_eq!(resp.header("tollgate-reason"), Some("unknown-route"));
    assert_eq!(jira.hits(), 0);
    assert_eq!(servicenow.hits(), 0);
    assert_eq!(
        tg.get("/jira-1/ok", Some("incidents")).await.status,
        StatusCode::OK
    );
}
