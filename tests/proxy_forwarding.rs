//! Forwarding: what the target receives and what the engine gets back —
//! method, path, query, headers (hop-by-hop removed, flow header stripped), multi-megabyte
//! bodies both ways byte for byte, HTTP/2 to the listener, and TLS upstreams with `ca_file`.

pub mod common;

use bytes::Bytes;
use common::*;
use hyper::{Method, StatusCode};

/// Two plain upstreams behind `servicenow-1` and `jira-1` (jira-1 with a base path), one
/// flow between them, and a license covering it.
async fn two_systems() -> (Upstream, Upstream, Tollgate) {
    let servicenow = Upstream::plain("servicenow").await;
    let jira = Upstream::plain("jira").await;
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &servicenow.base_uri())
        .instance("jira-1", "jira", &format!("{}/base", jira.base_uri()))
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start()
        .await;
    (servicenow, jira, tg)
}

/// Deterministic pseudo-random bytes (xorshift), so corruption cannot hide in a pattern.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[track_caller]
fn assert_same_bytes(got: &[u8], want: &[u8]) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "bodies differ: got {} bytes, want {}; first difference at {:?}",
            got.len(),
            want.len(),
            first
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_path_query_and_end_to_end_headers_reach_the_target() {
    let (servicenow, jira, tg) = two_systems().await;

    let resp = tg
        .request(
            Method::PATCH,
            "/jira-1/rest/api/2/issue/ABC-1?fields=summary,status&q=a%20b",
            &[
                ("tollgate-flow", "incidents"),
                ("x-custom", "hello"),
                ("x-multi-req", "1"),
                ("x-multi-req", "2"),
                ("content-type", "application/json"),
                // Hop-by-hop (RFC 9110): Connection and every header it names.
                ("connection", "x-hop"),
                ("x-hop", "must-not-pass"),
                ("keep-alive", "timeout=5"),
            ],
            Bytes::from_static(b"{\"fields\":{}}"),
        )
        .await;
    let echoed = resp.assert_upstream_ok("jira");
    assert_eq!(echoed["method"], "PATCH");

    let seen = jira.last();
    assert_eq!(seen.method, "PATCH");
    assert_eq!(
        seen.path, "/base/rest/api/2/issue/ABC-1",
        "base path joined with the rest"
    );
    assert_eq!(seen.query.as_deref(), Some("fields=summary,status&q=a%20b"));
    assert_eq!(seen.header("x-custom"), Some("hello"));
    assert_eq!(seen.header_all("x-multi-req"), vec!["1", "2"]);
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(
        seen.header("tollgate-flow"),
        None,
        "the flow header is stripped"
    );
    assert_eq!(
        seen.header("x-hop"),
        None,
        "a header named by Connection is hop-by-hop"
    );
    assert_eq!(seen.header("keep-alive"), None, "Keep-Alive is hop-by-hop");
    if let Some(connection) = seen.header("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-hop"),
            "the client's Connection header was forwarded: {connection}"
        );
    }
    assert_eq!(
        seen.header("host"),
        Some(jira.addr.to_string().as_str()),
        "the target is addressed by its own authority"
    );
    assert_eq!(servicenow.hits(), 0);

    // Each request reaches the target exactly once.
    assert_eq!(jira.hits(), 1);
    for method in [Method::GET, Method::DELETE, Method::PUT, Method::OPTIONS] {
        let resp = tg
            .request(
                method.clone(),
                "/jira-1/x",
                &[("tollgate-flow", "incidents")],
                Bytes::new(),
            )
            .await;
        resp.assert_upstream_ok("jira");
        assert_eq!(jira.last().method, method.as_str());
    }
    assert_eq!(jira.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_answers_pass_back_with_hop_by_hop_headers_removed() {
    let (_servicenow, jira, tg) = two_systems().await;

    let resp = tg
        .get("/jira-1/hop-response/status/201", Some("incidents"))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    assert_eq!(resp.header("x-upstream"), Some("jira"));
    assert_eq!(
        resp.header("x-resp-hop"),
        None,
        "named by the target's Connection header"
    );
    assert_eq!(resp.header("keep-alive"), None);
    let multi: Vec<_> = resp
        .headers
        .get_all("x-multi")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(multi, vec!["one", "two"]);
    assert_eq!(jira.last().path, "/base/hop-response/status/201");

    // The target's own errors are passed through, not mistaken for tollgate's.
    let resp = tg
        .get("/jira-1/missing/status/404", Some("incidents"))
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.header("x-upstream"), Some("jira"));
    assert_eq!(resp.header("tollgate-reason"), None);
    let resp = tg.get("/jira-1/broken/status/503", Some("incidents")).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.header("tollgate-reason"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_flow_header_is_read_and_stripped() {
    let servicenow = Upstream::plain("servicenow").await;
    let jira = Upstream::plain("jira").await;
    let tg = tollgate()
        .server_option("flow_header = \"X-Integration-Flow\"")
        .instance("servicenow-1", "servicenow", &servicenow.base_uri())
        .instance("jira-1", "jira", &jira.base_uri())
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start()
        .await;

    let resp = tg
        .request(
            Method::GET,
            "/jira-1/rest/x",
            &[("x-integration-flow", "incidents")],
            Bytes::new(),
        )
        .await;
    resp.assert_upstream_ok("jira");
    assert_eq!(jira.last().header("x-integration-flow"), None);

    // The default header name means nothing now.
    let resp = tg.get("/jira-1/rest/x", Some("incidents")).await;
    resp.assert_problem(403, "flow-required");
    assert_eq!(jira.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_mebibyte_bodies_travel_both_ways_byte_exact() {
    let (_servicenow, jira, tg) = two_systems().await;
    let body = noise(8 * 1024 * 1024 + 17, 0x9e37_79b9_7f4a_7c15);

    let resp = tg
        .post("/jira-1/upload/echo", Some("incidents"), body.clone())
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("x-upstream"), Some("jira"));
    assert_same_bytes(&resp.body, &body);
    assert_eq!(jira.last().path, "/base/upload/echo");

    // A second one on the same (pooled) connection, of another content.
    let body = noise(8 * 1024 * 1024, 42);
    let resp = tg
        .request(
            Method::PUT,
            "/jira-1/echo",
            &[("tollgate-flow", "incidents")],
            body.clone(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_same_bytes(&resp.body, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_bodies_are_forwarded() {
    let (_servicenow, jira, tg) = two_systems().await;
    let request =
        b"POST /jira-1/echo HTTP/1.1\r\nHost: tollgate.test\r\nTollgate-Flow: incidents\r\n\
Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
5\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\n\r\n";
    let resp = raw(tg.engine, request, std::time::Duration::from_secs(10)).await;
    assert_eq!(
        resp.status,
        Some(200),
        "{}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert_eq!(resp.body, b"hello, world");
    assert_eq!(jira.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_on_the_engine_listener() {
    let (_servicenow, jira, tg) = two_systems().await;
    let h2 = h2_client();

    let resp = tg
        .request_with(
            &h2,
            tg.engine,
            Method::GET,
            "/jira-1/rest/api/2/search?jql=project%3DABC",
            &[("tollgate-flow", "incidents"), ("x-custom", "over-h2")],
            Bytes::new(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.version, hyper::Version::HTTP_2);
    let seen = jira.last();
    assert_eq!(seen.path, "/base/rest/api/2/search");
    assert_eq!(seen.query.as_deref(), Some("jql=project%3DABC"));
    assert_eq!(seen.header("x-custom"), Some("over-h2"));
    assert_eq!(seen.header("tollgate-flow"), None);

    let body = noise(2 * 1024 * 1024 + 3, 7);
    let resp = tg
        .request_with(
            &h2,
            tg.engine,
            Method::POST,
            "/jira-1/echo",
            &[("tollgate-flow", "incidents")],
            body.clone(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_same_bytes(&resp.body, &body);

    // Refusals are the same over HTTP/2.
    let hits = jira.hits();
    let resp = tg
        .request_with(&h2, tg.engine, Method::GET, "/jira-1/x", &[], Bytes::new())
        .await;
    resp.assert_problem(403, "flow-required");
    assert_eq!(jira.hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_is_trusted_through_ca_file_and_refused_without_it() {
    let servicenow = Upstream::plain("servicenow").await;
    let secure = Upstream::tls("jira-tls").await;
    let builder = tollgate();
    builder.file("jira-ca.pem", secure.ca_pem.as_deref().unwrap());
    let tg = builder
        .instance("servicenow-1", "servicenow", &servicenow.base_uri())
        .instance_with(
            "jira-tls",
            "jira",
            &secure.base_uri(),
            &["ca_file = \"jira-ca.pem\""],
        )
        .instance("jira-untrusted", "jira", &secure.base_uri())
        .flow("secure", ["servicenow-1", "jira-tls"])
        .flow("untrusted", ["servicenow-1", "jira-untrusted"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 2))
        .start()
        .await;

    let resp = tg
        .get("/jira-tls/rest/api/2/issue/ABC-1?x=1", Some("secure"))
        .await;
    resp.assert_upstream_ok("jira-tls");
    let seen = secure.last();
    assert_eq!(seen.path, "/rest/api/2/issue/ABC-1");
    assert_eq!(seen.query.as_deref(), Some("x=1"));
    assert_eq!(seen.header("tollgate-flow"), None);
    assert_eq!(
        seen.version, "HTTP/2.0",
        "the TLS target offers h2 by ALPN, so tollgate speaks HTTP/2 to it"
    );

    let body = noise(1024 * 1024 + 1, 3);
    let resp = tg
        .post("/jira-tls/echo", Some("secure"), body.clone())
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_same_bytes(&resp.body, &body);
    let hits = secure.hits();

    // Same server, no ca_file: the certificate is not trusted, so the handshake fails.
    let resp = tg.get("/jira-untrusted/rest/x", Some("untrusted")).await;
    let problem = resp.assert_problem(502, "upstream-unavailable");
    assert_eq!(problem["instance"], "jira-untrusted", "{problem}");
    assert_eq!(
        secure.hits(),
        hits,
        "no request may pass an untrusted handshake"
    );

    // The proxy is still fine afterwards.
    tg.get("/jira-tls/again", Some("secure"))
        .await
        .assert_upstream_ok("jira-tls");
}
