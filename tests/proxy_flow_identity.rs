//! The flow of a request that carries no flow header: an engine that only knows a proxy URL
//! (`http://incidents:x@127.0.0.1:8080`) names it as the proxy user name, checked against
//! `server.proxy_token_file` where one is set (407 otherwise, compared in constant time), and
//! with `server.infer_flow` the one enabled flow that has the instance is taken. Driven with
//! curl as the engine, the way libcurl-based engines use `-x` / `HTTP_PROXY`.

pub mod common;

use std::process::Command;

use common::*;

const LICENSE: &str = "LIC-1";
const MAIN_LINES: [&str; 5] = [
    "[[flows.entities]]",
    "instance = \"jira-1\"",
    "role = \"main\"",
    "method = \"POST\"",
    "path = \"/rest/api/2/issue\"",
];

/// What curl saw: the status and the response head.
struct Curl {
    status: u16,
    head: String,
    body: String,
}

/// `curl -x PROXY URL` with `args`, as an engine with only a proxy URL would send it.
fn curl(proxy: &str, url: &str, args: &[&str]) -> Curl {
    let output = Command::new("curl")
        .args(["-s", "-D", "-", "--max-time", "10", "-x", proxy])
        .args(args)
        .arg(url)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no status from curl: {text:?} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    Curl {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

fn reason(resp: &Curl) -> Option<&str> {
    resp.head
        .lines()
        .find_map(|line| line.strip_prefix("tollgate-reason: "))
        .map(str::trim)
}

async fn used(tg: &Tollgate) -> u64 {
    tg.records(LICENSE).await["used"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_with_only_a_proxy_url_names_its_flow_as_the_proxy_user() {
    let jira = Upstream::plain("jira").await;
    let tg = tollgate()
        .server_option("forward_proxy = true")
        .instance("servicenow-1", "servicenow", "http://127.0.0.1:9")
        .instance("jira-1", "jira", &jira.base_uri())
        .flow_with("incidents", ["servicenow-1", "jira-1"], &MAIN_LINES)
        .license(&with(
            pair_license(LICENSE, "servicenow", "jira", 1),
            "transferred_records",
            100,
        ))
        .start()
        .await;
    let engine = tg.engine;
    let url = format!("http://{}/rest/api/2/issue", jira.addr);

    let ok = curl(
        &format!("http://incidents:x@{engine}"),
        &url,
        &["-X", "POST", "-d", "{}"],
    );
    assert_eq!(ok.status, 200, "{} {}", ok.head, ok.body);
    assert_eq!(
        used(&tg).await,
        1,
        "the load is counted against the flow named as the user"
    );
    let seen = jira.last();
    assert_eq!(seen.path, "/rest/api/2/issue");
    assert_eq!(
        seen.header("proxy-authorization"),
        None,
        "the credentials are never forwarded"
    );

    let unknown = curl(
        &format!("http://nosuchflow:x@{engine}"),
        &url,
        &["-X", "POST", "-d", "{}"],
    );
    assert_eq!(
        (unknown.status, reason(&unknown)),
        (403, Some("unknown-flow")),
        "{}",
        unknown.body
    );
    let anonymous = curl(
        &format!("http://{engine}"),
        &url,
        &["-X", "POST", "-d", "{}"],
    );
    assert_eq!(
        (anonymous.status, reason(&anonymous)),
        (403, Some("flow-required"))
    );
    assert!(
        anonymous.body.contains("proxy user name"),
        "{}",
        anonymous.body
    );
    assert_eq!(jira.hits(), 1, "refused requests reach nobody");
    assert_eq!(used(&tg).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_proxy_token_a_missing_or_wrong_password_is_407_and_nothing_is_forwarded() {
    let jira = Upstream::plain("jira").await;
    let builder = tollgate();
    builder.file("proxy.token", "pr0xy-t0ken\n");
    let tg = builder
        .server_option("forward_proxy = true")
        .server_option("proxy_token_file = \"proxy.token\"")
        .instance("servicenow-1", "servicenow", "http://127.0.0.1:9")
        .instance("jira-1", "jira", &jira.base_uri())
        .flow_with("incidents", ["servicenow-1", "jira-1"], &MAIN_LINES)
        .license(&with(
            pair_license(LICENSE, "servicenow", "jira", 1),
            "transferred_records",
            100,
        ))
        .start()
        .await;
    let engine = tg.engine;
    let url = format!("http://{}/rest/api/2/issue", jira.addr);

    for (proxy, extra) in [
        (format!("http://incidents:wrong@{engine}"), vec![]),
        (format!("http://incidents:pr0xy-t0ke@{engine}"), vec![]),
        (
            format!("http://{engine}"),
            vec!["-H", "Tollgate-Flow: incidents"],
        ),
    ] {
        let mut args = vec!["-X", "POST", "-d", "{}"];
        args.extend(extra);
        let refused = curl(&proxy, &url, &args);
        assert_eq!(
            (refused.status, reason(&refused)),
            (407, Some("proxy-auth-required")),
            "{proxy}: {}",
            refused.body
        );
        assert!(
            refused
                .head
                .contains("proxy-authenticate: basic realm=\"tollgate\""),
            "a 407 says how to authenticate: {}",
            refused.head
        );
    }
    assert_eq!(jira.hits(), 0, "nothing is forwarded without the password");

    let ok = curl(
        &format!("http://incidents:pr0xy-t0ken@{engine}"),
        &url,
        &["-X", "POST", "-d", "{}"],
    );
    assert_eq!(ok.status, 200, "{} {}", ok.head, ok.body);
    assert_eq!(used(&tg).await, 1);
    assert_eq!(jira.last().header("proxy-authorization"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_flow_takes_the_one_enabled_flow_of_the_instance_and_refuses_when_there_are_several()
{
    let jira = Upstream::plain("jira").await;
    let servicenow = Upstream::plain("servicenow").await;
    let start = |infer: bool| {
        let mut builder = tollgate();
        if infer {
            builder = builder.server_option("infer_flow = true");
        }
        builder
            .instance("servicenow-1", "servicenow", &servicenow.base_uri())
            .instance("jira-1", "jira", &jira.base_uri())
            .instance("jira-2", "jira", &jira.base_uri())
            .flow_with("incidents", ["servicenow-1", "jira-1"], &MAIN_LINES)
            .flow("changes", ["servicenow-1", "jira-2"])
            .license(&with(
                pair_license(LICENSE, "servicenow", "jira", 2),
                "transferred_records",
                100,
            ))
            .start()
    };
    let tg = start(true).await;
    let load = tg.post("/jira-1/rest/api/2/issue", None, "{}").await;
    assert_eq!(
        load.status,
        200,
        "jira-1 has one enabled flow: {}",
        load.text()
    );
    assert_eq!(used(&tg).await, 1, "the inferred flow's load is counted");
    let shared = tg.get("/servicenow-1/api/now/table/incident", None).await;
    assert_eq!(shared.status, 403);
    assert_eq!(shared.header("tollgate-reason"), Some("flow-required"));
    assert!(
        shared.text().contains("2 enabled flows"),
        "{}",
        shared.text()
    );
    assert_eq!(servicenow.hits(), 0);

    // The operator disables the other flow: servicenow-1 has one enabled flow again.
    let disabled = tg.admin_post("/v1/flows/changes/disable", "").await;
    assert_eq!(disabled.status, 200);
    let now_one = tg.get("/servicenow-1/api/now/table/incident", None).await;
    assert_eq!(now_one.status, 200, "{}", now_one.text());

    let strict = start(false).await;
    let unnamed = strict.post("/jira-1/rest/api/2/issue", None, "{}").await;
    assert_eq!(
        unnamed.status, 403,
        "without infer_flow a flow must be named"
    );
    assert_eq!(unnamed.header("tollgate-reason"), Some("flow-required"));
}
