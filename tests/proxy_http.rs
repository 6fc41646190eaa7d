//! Malformed and hostile HTTP on the engine listener, the bad input the proxy refuses:
//! conflicting Content-Length and Transfer-Encoding, oversized heads, slow clients. None of
//! it is forwarded, and the proxy keeps serving.

pub mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const RAW_DEADLINE: Duration = Duration::from_secs(10);

async fn two_systems(server_options: &[&str]) -> (Upstream, Upstream, Tollgate) {
    let servicenow = Upstream::plain("servicenow").await;
    let jira = Upstream::plain("jira").await;
    let mut builder = tollgate();
    for option in server_options {
        builder = builder.server_option(option);
    }
    let tg = builder
        .instance("servicenow-1", "servicenow", &servicenow.base_uri())
        .instance("jira-1", "jira", &jira.base_uri())
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start()
        .await;
    (servicenow, jira, tg)
}

fn show(resp: &RawResp) -> String {
    String::from_utf8_lossy(&resp.bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_400_and_never_forwarded() {
    let (servicenow, jira, tg) = two_systems(&[]).await;

    let requests: [&[u8]; 4] = [
        b"POST /jira-1/echo HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\n\
Content-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
5\r\nhello\r\n0\r\n\r\n",
        b"POST /jira-1/echo HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\n\
Transfer-Encoding: chunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\n\
5\r\nhello\r\n0\r\n\r\n",
        // The classic smuggling shape: the "body" is a second request to another instance.
        b"POST /jira-1/x HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\n\
Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
0\r\n\r\nGET /servicenow-1/smuggled HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\n\r\n",
        b"POST /jira-1/x HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\n\
Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n\
0\r\n\r\nGET /servicenow-1/smuggled HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\n\r\n",
    ];
    for request in requests {
        let resp = raw(tg.engine, request, Duration::from_secs(3)).await;
        assert_eq!(resp.status, Some(400), "{}", show(&resp));
        assert_eq!(
            resp.responses(),
            1,
            "a second response came back: {}",
            show(&resp)
        );
    }
    assert_eq!(jira.hits(), 0, "{:?}", jira.seen());
    assert_eq!(servicenow.hits(), 0, "{:?}", servicenow.seen());

    tg.get("/jira-1/after", Some("incidents"))
        .await
        .assert_upstream_ok("jira");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_over_max_header_bytes_get_431() {
    // The harness sets max_header_bytes = 4096.
    let (_servicenow, jira, tg) = two_systems(&[]).await;

    let big = format!("X-Big: {}", "a".repeat(5000));
    let resp = raw(
        tg.engine,
        &raw_get("/jira-1/x", &["Tollgate-Flow: incidents", &big]),
        RAW_DEADLINE,
    )
    .await;
    assert_eq!(resp.status, Some(431), "{}", show(&resp));

    let many: Vec<String> = (0..120)
        .map(|i| format!("X-Header-{i:03}: {}", "b".repeat(40)))
        .collect();
    let mut headers: Vec<&str> = vec!["Tollgate-Flow: incidents"];
    headers.extend(many.iter().map(String::as_str));
    let resp = raw(tg.engine, &raw_get("/jira-1/x", &headers), RAW_DEADLINE).await;
    assert_eq!(resp.status, Some(431), "{}", show(&resp));

    let long_target = format!("/jira-1/{}", "c".repeat(5000));
    let resp = raw(
        tg.engine,
        &raw_get(&long_target, &["Tollgate-Flow: incidents"]),
        RAW_DEADLINE,
    )
    .await;
    assert!(
        matches!(resp.status, Some(431) | Some(414)),
        "{}",
        &show(&resp)[..show(&resp).len().min(300)]
    );
    assert_eq!(jira.hits(), 0);

    // A head comfortably under the limit passes.
    let fine = format!("X-Fine: {}", "d".repeat(2000));
    let resp = raw(
        tg.engine,
        &raw_get("/jira-1/x", &["Tollgate-Flow: incidents", &fine]),
        RAW_DEADLINE,
    )
    .await;
    assert_eq!(resp.status, Some(200), "{}", show(&resp));
    assert_eq!(jira.last().header("x-fine").map(str::len), Some(2000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_header_read_timeout() {
    let (_servicenow, jira, mut tg) = two_systems(&["header_read_timeout = \"500ms\""]).await;

    // Half a request head, then silence.
    let started = Instant::now();
    let mut stream = TcpStream::connect(tg.engine).await.unwrap();
    stream
        .write_all(b"GET /jira-1/x HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incid")
        .await
        .unwrap();
    let resp = read_raw(&mut stream, Duration::from_secs(8)).await;
    assert!(resp.closed, "the connection stayed open: {}", show(&resp));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed only after {:?}",
        started.elapsed()
    );
    assert!(matches!(resp.status, None | Some(408)), "{}", show(&resp));

    // A slowloris trickling one byte every 100 ms is cut off too.
    let started = Instant::now();
    let stream = TcpStream::connect(tg.engine).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        let head = b"GET /jira-1/x HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        for byte in head {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buf = [0u8; 1024];
    let outcome = tokio::time::timeout(Duration::from_secs(8), async {
        use tokio::io::AsyncReadExt;
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    trickle.abort();
    assert!(outcome.is_ok(), "a trickling client was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "trickling client cut off only after {:?}",
        started.elapsed()
    );
    assert_eq!(jira.hits(), 0);

    // Still serving, still alive.
    tg.get("/jira-1/after", Some("incidents"))
        .await
        .assert_upstream_ok("jira");
    assert!(tg.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_reaches_a_target_nor_takes_the_proxy_down() {
    let (servicenow, jira, mut tg) = two_systems(&[]).await;

    let inputs: Vec<Vec<u8>> = vec![
        b"\r\n\r\n".to_vec(),
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET /jira-1/x HTTP/9.9\r\nTollgate-Flow: incidents\r\n\r\n".to_vec(),
        b"GET /jira-1/x HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\nBad Header\r\n\r\n".to_vec(),
        b"GET /jira-1/x HTTP/1.1\r\nHost: t\r\nTollgate-Flow: inci\x00dents\r\n\r\n".to_vec(),
        b"GET /jira-1/x HTTP/1.1\r\nHost: t\r\nTollgate-Flow: \xff\xfe\r\nConnection: close\r\n\r\n".to_vec(),
        b"POST /jira-1/x HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"POST /jira-1/x HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
        b"POST /jira-1/x HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\nTransfer-Encoding: gzip\r\n\r\nxxxx".to_vec(),
        b"GET /jira-1/%zz HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /jira-1/%ff%fe/x HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET jira-1/x HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET * HTTP/1.1\r\nHost: t\r\nTollgate-Flow: incidents\r\nConnection: close\r\n\r\n".to_vec(),
    ];
    let mut jira_hits = 0;
    for input in &inputs {
        let resp = raw(tg.engine, input, Duration::from_secs(3)).await;
        let status = resp.status.unwrap_or(0);
        assert!(
            status == 0 || (400..500).contains(&status) || resp.header("x-upstream").is_some(),
            "{:?} → {}",
            String::from_utf8_lossy(input),
            show(&resp)
        );
        if resp.header("x-upstream").is_some() {
            jira_hits += 1;
        }
        assert!(
            tg.is_running(),
            "tollgate died on {:?}",
            String::from_utf8_lossy(input)
        );
    }
    // The only ones allowed through are well-formed enough to be jira-1's (%-junk paths).
    assert!(jira.hits() <= jira_hits, "{:?}", jira.seen());
    assert_eq!(servicenow.hits(), 0);
    tg.get("/jira-1/after", Some("incidents"))
        .await
        .assert_upstream_ok("jira");
    assert!(!tg.logs().contains("panicked"), "{}", tg.logs());
}
