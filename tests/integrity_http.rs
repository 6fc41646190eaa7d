//! Hostile HTTP on the engine listener: the smuggling corpus (`tests/corpus/smuggling.txt`),
//! idle and slow connections, a connection flood against `server.max_connections`, and
//! request bodies the engine breaks or stops sending.

pub mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One corpus case: raw bytes and the answers they must get.
struct Case {
    name: String,
    /// Per response, the statuses accepted.
    statuses: Vec<Vec<u16>>,
    /// The most requests the target may see, and whether exactly that many.
    hits: (usize, bool),
    bytes: Vec<u8>,
}

fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('0') => out.push(0),
            Some('\\') => out.push(b'\\'),
            other => panic!("unknown escape \\{other:?}"),
        }
    }
    out
}

fn smuggling_corpus() -> Vec<Case> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/smuggling.txt");
    let text = std::fs::read_to_string(path).unwrap();
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("=== ") {
            let parts: Vec<&str> = header.split(" | ").collect();
            let [name, statuses, hits] = parts[..] else {
                panic!("bad case header {line:?}")
            };
            let statuses = statuses
                .split_whitespace()
                .filter(|s| *s != "-")
                .map(|s| s.split('/').map(|c| c.parse().unwrap()).collect())
                .collect();
            let hits = match hits.strip_prefix("<=") {
                Some(n) => (n.parse().unwrap(), false),
                None => (hits.parse().unwrap(), true),
            };
            cases.push(Case {
                name: name.to_owned(),
                statuses,
                hits,
                bytes: Vec::new(),
            });
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let case = cases.last_mut().expect("bytes before the first case");
            case.bytes.extend(unescape(line));
        }
    }
    cases
}

async fn one_instance(server: &[&str]) -> (Upstream, Tollgate) {
    let target = Upstream::plain("target").await;
    let mut builder = tollgate()
        .instance("servicenow-1", "servicenow", &target.base_uri())
        .instance("jira-1", "jira", &target.base_uri())
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 1));
    for line in server {
        builder = builder.server_option(line);
    }
    (target, builder.start().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smuggling_corpus_is_refused_and_never_smuggles() {
    let (target, tg) = one_instance(&[]).await;
    let cases = smuggling_corpus();
    assert!(cases.len() >= 25, "the corpus is missing cases");
    let mut failures = Vec::new();
    for case in &cases {
        let before = target.hits();
        let resp = raw(tg.engine, &case.bytes, Duration::from_secs(3)).await;
        let seen = resp.statuses();
        let hits = target.hits() - before;
        let statuses_ok = seen.len() == case.statuses.len()
            && seen
                .iter()
                .zip(&case.statuses)
                .all(|(s, ok)| ok.contains(s));
        let hits_ok = if case.hits.1 {
            hits == case.hits.0
        } else {
            hits <= case.hits.0
        };
        if !statuses_ok || !hits_ok {
            failures.push(format!(
                "{}: expected statuses {:?} and target hits {:?}, got {seen:?} and {hits}: {}",
                case.name,
                case.statuses,
                case.hits,
                String::from_utf8_lossy(&resp.bytes)
            ));
        }
    }
    let smuggled: Vec<_> = target
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("smuggled"))
        .collect();
    assert!(smuggled.is_empty(), "smuggled past tollgate: {smuggled:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(!tg.logs().contains("panicked"));
}

/// Reads from `stream` until the server closes it; returns how long that took.
async fn time_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(tokio::time::Instant::now() + limit, stream.read(&mut buf))
            .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_a_byte_is_closed_at_the_header_timeout() {
    let (_target, tg) = one_instance(&["header_read_timeout = \"500ms\""]).await;
    let mut silent = TcpStream::connect(tg.engine).await.unwrap();
    let closed = time_to_close(&mut silent, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "a silent connection stayed open");
    // Idle between requests on a kept-alive connection: closed too.
    let mut kept = TcpStream::connect(tg.engine).await.unwrap();
    let request = RawRequest::get("/jira-1/x")
        .host("t")
        .flow("incidents")
        .keep_alive();
    kept.write_all(&request.bytes()).await.unwrap();
    let closed = time_to_close(&mut kept, Duration::from_secs(5)).await;
    assert!(
        closed.is_some(),
        "an idle kept-alive connection stayed open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_waits_in_the_backlog_and_spares_the_admin_listener() {
    let (target, tg) = one_instance(&["max_connections = 8", "header_read_timeout = \"2s\""]).await;
    // Twice the limit, all silent.
    let mut flood = Vec::new();
    for _ in 0..16 {
        flood.push(TcpStream::connect(tg.engine).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The admin listener answers at once.
    let health = tg.admin_get("/healthz").await;
    assert_eq!(health.status.as_u16(), 200);
    // A request on the engine listener waits for a slot, then is served once the silent
    // connections are cut off by the header timeout: it is delayed, never refused.
    let started = Instant::now();
    let resp = raw(
        tg.engine,
        &raw_get("/jira-1/after-flood", &["Tollgate-Flow: incidents"]),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        resp.status,
        Some(200),
        "{}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "served at once: the limit did not hold ({:?})",
        started.elapsed()
    );
    assert_eq!(target.last().path, "/after-flood");
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_body_is_400_and_a_stalled_body_is_408() {
    let (_target, tg) = one_instance(&["body_read_timeout = \"300ms\""]).await;
    // A bad chunk size after the first chunk has gone out: the engine's fault, not the target's.
    let mut stream = TcpStream::connect(tg.engine).await.unwrap();
    stream
        .write_all(
            b"POST /jira-1/echo HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"zz\r\nmore\r\n0\r\n\r\n").await.unwrap();
    let resp = read_raw(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(
        resp.status,
        Some(400),
        "{}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert_eq!(resp.header("tollgate-reason"), Some("bad-request"));

    // A body the engine stops sending.
    let mut stream = TcpStream::connect(tg.engine).await.unwrap();
    stream
        .write_all(
            b"POST /jira-1/echo HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\n\
              Content-Length: 100\r\n\r\nonly part of it",
        )
        .await
        .unwrap();
    let resp = read_raw(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(
        resp.status,
        Some(408),
        "{}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert_eq!(resp.header("tollgate-reason"), Some("request-timeout"));
}
