//! Graceful shutdown: on SIGTERM tollgate stops accepting, lets the
//! requests in flight finish, and exits 0.

pub mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use tokio::net::TcpStream;

async fn started(target: &Upstream) -> Tollgate {
    let uri = target.base_uri();
    tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_request_in_flight_and_exits_0() {
    let target = Upstream::plain("target").await;
    let mut tg = started(&target).await;
    tg.get("/jira-1/warm-up", Some("incidents"))
        .await
        .assert_upstream_ok("target");

    // A request the target answers only after 2 s.
    let client = http1_client();
    let req = Request::post(format!("http://{}/jira-1/slow/2000/echo", tg.engine))
        .header("tollgate-flow", "incidents")
        .body(Full::new(Bytes::from_static(b"in flight")))
        .unwrap();
    let in_flight = tokio::spawn(async move { send(&client, req).await });
    eventually(
        "the slow request to reach the target",
        Duration::from_secs(5),
        || async { (target.hits() == 2).then_some(()) },
    )
    .await;

    let signalled = Instant::now();
    tg.signal("TERM");

    // New connections are refused while the old request is still being served.
    let engine = tg.engine;
    eventually(
        "the engine listener to refuse connections",
        Duration::from_millis(1500),
        || async { TcpStream::connect(engine).await.is_err().then_some(()) },
    )
    .await;
    assert!(
        !in_flight.is_finished(),
        "the in-flight request ended before the listener closed"
    );

    let resp = in_flight
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("the in-flight request failed: {err}\n{}", tg.logs()));
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(&resp.body[..], b"in flight");
    assert!(signalled.elapsed() >= Duration::from_millis(1000));

    let status = tg
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("tollgate did not exit after SIGTERM\n{}", tg.logs()));
    assert_eq!(status.code(), Some(0), "{status}\n{}", tg.logs());
    assert_eq!(target.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_idle_keep_alive_connections_exits_promptly() {
    let target = Upstream::plain("target").await;
    let mut tg = started(&target).await;

    // Pooled keep-alive connections to both listeners, idle.
    for _ in 0..3 {
        tg.get("/jira-1/x", Some("incidents"))
            .await
            .assert_upstream_ok("target");
        assert_eq!(tg.admin_get("/v1/flows").await.status, StatusCode::OK);
    }
    let h2 = h2_client();
    let resp = tg
        .request_with(
            &h2,
            tg.engine,
            hyper::Method::GET,
            "/jira-1/h2",
            &[("tollgate-flow", "incidents")],
            Bytes::new(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    // And a raw connection that never sends anything.
    let _silent = TcpStream::connect(tg.engine).await.unwrap();

    let signalled = Instant::now();
    tg.signal("TERM");
    let status = tg
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("tollgate did not exit after SIGTERM\n{}", tg.logs()));
    assert_eq!(status.code(), Some(0), "{status}\n{}", tg.logs());
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "idle connections held the shutdown for {:?}",
        signalled.elapsed()
    );
    assert!(TcpStream::connect(tg.admin).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_shuts_down_gracefully_too() {
    let target = Upstream::plain("target").await;
    let mut tg = started(&target).await;
    let client = http1_client();
    let req = Request::get(format!("http://{}/jira-1/slow/800/x", tg.engine))
        .header("tollgate-flow", "incidents")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let in_flight = tokio::spawn(async move { send(&client, req).await });
    eventually(
        "the slow request to reach the target",
        Duration::from_secs(5),
        || async { (target.hits() == 1).then_some(()) },
    )
    .await;
    tg.signal("INT");
    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let status = tg
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("tollgate did not exit after SIGINT\n{}", tg.logs()));
    assert_eq!(status.code(), Some(0), "{status}\n{}", tg.logs());
}
