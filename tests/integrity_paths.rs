//! No request reaches a target outside its instance's base path, whatever the spelling: the
//! traversal corpus (`tests/corpus/traversal.txt`) on the engine listener and the
//! absolute-form corpus (`tests/corpus/forward_proxy.txt`) in forward-proxy mode, each case
//! with the exact outcome it must have, and every forwarded path checked the way a lenient
//! target would resolve it (decode once, `\` as `/`, `;parameters` stripped).

pub mod common;

use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(5);

/// One corpus case: a request target and what must happen to it.
struct Case {
    target: String,
    expect: Expect,
}

enum Expect {
    Refused(u16),
    Forwarded(String),
}

/// Reads a corpus file: `<target> TAB <expectation>` lines, `#` comments.
fn corpus(name: &str, replace: &[(&str, String)]) -> Vec<Case> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (target, expect) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("{name}: no tab in {line:?}"));
            let mut target = target.to_owned();
            for (from, to) in replace {
                target = target.replace(from, to);
            }
            let expect = match expect.strip_prefix("-> ") {
                Some(path) => Expect::Forwarded(path.to_owned()),
                None => Expect::Refused(
                    expect
                        .parse()
                        .unwrap_or_else(|_| panic!("{name}: bad expectation {expect:?}")),
                ),
            };
            Case { target, expect }
        })
        .collect()
}

/// How a target that decodes once, reads `\` as `/` and strips `;parameters` resolves a
/// path: its segments, or `None` where it climbs above the root.
fn lenient_resolve(path: &str) -> Option<Vec<String>> {
    let raw = path.as_bytes();
    let mut bytes = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let escape = (raw[i] == b'%' && i + 2 < raw.len())
            .then(|| std::str::from_utf8(&raw[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(byte) => {
                bytes.push(byte);
                i += 3;
            }
            None => {
                bytes.push(raw[i]);
                i += 1;
            }
        }
    }
    let text = String::from_utf8_lossy(&bytes).replace('\\', "/");
    let mut out: Vec<String> = Vec::new();
    for segment in text.split('/') {
        match segment.split(';').next().unwrap_or("") {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            other => out.push(other.to_owned()),
        }
    }
    Some(out)
}

/// Sends every case and checks its outcome; returns a description of every failure.
async fn run_cases(
    tg: &Tollgate,
    shared: &Upstream,
    cases: &[Case],
    authority: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let before = shared.hits();
        let request = RawRequest::get(&case.target)
            .host(authority)
            .flow("incidents");
        let resp = raw(tg.engine, &request.bytes(), DEADLINE).await;
        let answer = String::from_utf8_lossy(&resp.bytes).into_owned();
        match &case.expect {
            Expect::Refused(status) => {
                if resp.status != Some(*status) || shared.hits() != before {
                    failures.push(format!(
                        "{}: expected {status} and nothing forwarded, got {:?} (target hits +{}): {answer}",
                        case.target,
                        resp.status,
                        shared.hits() - before
                    ));
                }
            }
            Expect::Forwarded(path) => {
                let seen = (shared.hits() == before + 1).then(|| shared.last().path);
                if resp.status != Some(200) || seen.as_deref() != Some(path.as_str()) {
                    failures.push(format!(
                        "{}: expected the target to receive {path}, got {:?} and {seen:?}: {answer}",
                        case.target, resp.status
                    ));
                    continue;
                }
                let resolved = lenient_resolve(path).unwrap_or_default();
                if resolved.first().map(String::as_str) != Some("jira") {
                    failures.push(format!(
                        "{}: forwarded as {path}, which a lenient target resolves to {resolved:?}",
                        case.target
                    ));
                }
            }
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traversal_corpus_never_leaves_the_base_path() {
    let shared = Upstream::plain("shared").await;
    let tg = tollgate()
        .instance("jira-1", "jira", &format!("{}/jira", shared.base_uri()))
        .instance("sn-1", "servicenow", &format!("{}/sn", shared.base_uri()))
        .flow("incidents", ["sn-1", "jira-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start()
        .await;
    let cases = corpus("traversal.txt", &[]);
    assert!(cases.len() > 40, "the corpus is missing cases");
    let failures = run_cases(&tg, &shared, &cases, "tollgate.test").await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        shared.seen().iter().all(|s| !s.path.starts_with("/sn")),
        "{:?}",
        shared.seen()
    );
    assert!(!tg.logs().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_requests_stay_under_their_base_path() {
    let shared = Upstream::plain("shared").await;
    let twin = Upstream::plain("twin").await;
    let tg = tollgate()
        .server_option("forward_proxy = true")
        .instance("jira-1", "jira", &format!("{}/jira", shared.base_uri()))
        .instance(
            "sn-1",
            "servicenow",
            &format!("{}/sn", shared.base_uri().replace("127.0.0.1", "localhost")),
        )
        .instance("twin-1", "jira", &format!("{}/a", twin.base_uri()))
        .instance("twin-2", "jira", &format!("{}/b", twin.base_uri()))
        .flow("incidents", ["sn-1", "jira-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start()
        .await;
    let cases = corpus(
        "forward_proxy.txt",
        &[
            ("{jira}", shared.addr.to_string()),
            ("{twin}", twin.addr.to_string()),
        ],
    );
    let failures = run_cases(&tg, &shared, &cases, &shared.addr.to_string()).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(twin.hits(), 0, "a shared authority was routed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_loads_are_classified_relative_to_the_base_path() {
    let shared = Upstream::plain("shared").await;
    let entity = [
        "[[flows.entities]]",
        "instance = \"jira-1\"",
        "role = \"main\"",
        "method = \"POST\"",
        "path = \"/rest/api/2/issue\"",
    ];
    let tg = tollgate()
        .server_option("forward_proxy = true")
        .instance("jira-1", "jira", &format!("{}/jira", shared.base_uri()))
        .instance("sn-1", "servicenow", "http://sn.invalid")
        .flow_with("incidents", ["sn-1", "jira-1"], &entity)
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start()
        .await;
    let load = |path: &str| {
        format!(
            "POST http://{0}{path} HTTP/1.1\r\nHost: {0}\r\nTollgate-Flow: incidents\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}",
            shared.addr
        )
    };
    let resp = raw(
        tg.engine,
        load("/jira/rest/api/2/issue").as_bytes(),
        DEADLINE,
    )
    .await;
    assert_eq!(
        resp.status,
        Some(200),
        "{}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert_eq!(shared.last().path, "/jira/rest/api/2/issue");
    assert_eq!(
        tg.usage_of_flow(None, "incidents").await,
        1,
        "the load was not counted"
    );
    // Outside the base path is no route, so no uncounted way around it.
    let resp = raw(tg.engine, load("/rest/api/2/issue").as_bytes(), DEADLINE).await;
    assert_eq!(
        resp.status,
        Some(404),
        "{}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert_eq!(shared.hits(), 1);
}
