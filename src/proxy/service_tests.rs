//! The decision phases on a compiled snapshot, without sockets: every refusal in decision
//! order, classification, and the path and method rules.

use std::sync::Arc;

use chrono::TimeZone;
use http::Request;

use super::*;
use crate::config::testing::load;
use crate::license::fixtures::installed;
use crate::policy::{compile, FlowSetting, Resources};

const CONFIG: &str = r#"
[[instances]]
id = "sn-1"
connector = "named"
app = "servicenow"
base_uri = "https://sn.example/api"
[[instances]]
id = "jira-1"
connector = "named"
app = "jira"
base_uri = "https://jira.example"
[[instances]]
id = "jira-2"
connector = "named"
app = "jira"
base_uri = "https://jira2.example"
[[flows]]
id = "incidents"
systems = ["sn-1", "jira-1"]
[[flows.entities]]
instance = "jira-1"
role = "main"
method = "POST"
path = "/rest/api/2/issue"
[[flows.entities]]
instance = "jira-1"
role = "child"
method = "POST"
path = "/rest/api/2/issue/{key}/comment"
[[flows]]
id = "changes"
systems = ["sn-1", "jira-1"]
[[flows]]
id = "off"
systems = ["sn-1", "jira-2"]
enabled = false
"#;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).single().unwrap()
}

fn snapshot(licensed: bool) -> Snapshot {
    snapshot_of(CONFIG, licensed)
}

fn snapshot_of(text: &str, licensed: bool) -> Snapshot {
    let config = Arc::new(load(text).unwrap());
    let payload = r#"{"version":1,"id":"L","kind":"pair","company":"A","registered_to":"B","email":"c@d.example","start":"2026-01-01T00:00:00Z","expire":"2030-01-01T00:00:00Z","system_a":"jira","system_b":"servicenow","points":2,"transferred_records":10}"#;
    let licenses = if licensed {
        vec![installed("L", payload)]
    } else {
        Vec::new()
    };
    let settings: Vec<FlowSetting> = config
        .flows
        .iter()
        .enumerate()
        .map(|(order, flow)| FlowSetting {
            enabled: flow.enabled,
            reason: DisabledReason::Operator,
            order: order as u64,
        })
        .collect();
    compile(
        config,
        &licenses,
        &settings,
        &mut Resources::default(),
        &Arc::default(),
        Moment::at(now()),
        None,
    )
    .unwrap()
    .snapshot
}

fn request(method: &str, target: &str, flow: Option<&str>) -> Request<()> {
    let mut builder = Request::builder().method(method).uri(target);
    if let Some(flow) = flow {
        builder = builder.header("tollgate-flow", flow);
    }
    builder.body(()).unwrap()
}

fn decided(
    snapshot: &Snapshot,
    req: &Request<()>,
) -> Result<(Option<u32>, u32, LoadClass), ProblemCode> {
    decide(snapshot, &ListenerRole::Engine, now(), req, false)
        .map(|d| (d.flow, d.instance, d.class))
        .map_err(|problem| problem.code)
}

#[test]
fn refusals_come_in_decision_order() {
    let licensed = snapshot(true);
    let cases = [
        (
            request("GET", "/nowhere/x", Some("incidents")),
            ProblemCode::UnknownRoute,
        ),
        (request("GET", "/jira-1/x", None), ProblemCode::FlowRequired),
        (
            request("GET", "/jira-1/x", Some("nope")),
            ProblemCode::UnknownFlow,
        ),
        (
            request("GET", "/jira-2/x", Some("incidents")),
            ProblemCode::FlowInstanceMismatch,
        ),
        (
            request("GET", "/jira-2/x", Some("off")),
            ProblemCode::FlowDisabled,
        ),
        (
            request("GET", "/jira-1/..%2Fsn-1", Some("incidents")),
            ProblemCode::BadRequest,
        ),
        (
            request("GET", "/jira-1/../sn-1/x", Some("incidents")),
            ProblemCode::UnknownRoute,
        ),
        (
            request("post", "/jira-1/x", Some("incidents")),
            ProblemCode::BadRequest,
        ),
    ];
    for (req, code) in &cases {
        assert_eq!(
            decided(&licensed, req).err(),
            Some(*code),
            "{} {}",
            req.method(),
            req.uri()
        );
    }
    let unlicensed = snapshot(false);
    assert_eq!(
        decided(&unlicensed, &request("GET", "/jira-1/x", Some("incidents"))).err(),
        Some(ProblemCode::LicenseInvalid)
    );
}

#[test]
fn refusals_name_their_flow_and_instance_by_index_for_the_metrics() {
    let snapshot = snapshot(true);
    let problem = decide(
        &snapshot,
        &ListenerRole::Engine,
        now(),
        &request("GET", "/jira-2/x", Some("off")),
        false,
    )
    .unwrap_err();
    assert_eq!(problem.flow, snapshot.flow("off"));
    assert_eq!(problem.instance, snapshot.instance("jira-2"));
    assert_eq!(problem.to_json()["flow"], "off");
    assert_eq!(problem.to_json()["instance"], "jira-2");
    let no_flow = decide(
        &snapshot,
        &ListenerRole::Engine,
        now(),
        &request("GET", "/jira-1/x", None),
        false,
    )
    .unwrap_err();
    assert_eq!(
        (no_flow.flow, no_flow.instance),
        (None, snapshot.instance("jira-1"))
    );
}

#[test]
fn main_patterns_apply_to_every_flow_of_the_instance() {
    let snapshot = snapshot(true);
    let jira = snapshot.instance("jira-1").unwrap();
    for flow in ["incidents", "changes"] {
        let (_, instance, class) = decided(
            &snapshot,
            &request("POST", "/jira-1/rest/api/2/issue", Some(flow)),
        )
        .unwrap();
        assert_eq!((instance, class), (jira, LoadClass::Main), "{flow}");
    }
    let (_, _, child) = decided(
        &snapshot,
        &request(
            "POST",
            "/jira-1/rest/api/2/issue/A-1/comment",
            Some("changes"),
        ),
    )
    .unwrap();
    assert_eq!(child, LoadClass::Child);
    let (_, _, read) = decided(
        &snapshot,
        &request("GET", "/jira-1/rest/api/2/issue", Some("incidents")),
    )
    .unwrap();
    assert_eq!(read, LoadClass::Other);
}

#[test]
fn an_override_header_makes_a_read_a_load() {
    let snapshot = snapshot(true);
    let mut req = request("GET", "/jira-1/rest/api/2/issue", Some("incidents"));
    req.headers_mut()
        .insert("x-http-method-override", "post".parse().unwrap());
    assert_eq!(decided(&snapshot, &req).unwrap().2, LoadClass::Main);
}

/// `CONFIG` with Jira's bulk create and a main `PUT` whose template also matches the bulk path.
fn with_bulk() -> String {
    CONFIG.replace(
        "[[flows]]\nid = \"changes\"",
        r#"[[flows.entities]]
instance = "jira-1"
role = "main"
method = "POST"
path = "/rest/api/2/issue/bulk"
records = "/issueUpdates"
[[flows.entities]]
instance = "jira-1"
role = "main"
method = "PUT"
path = "/rest/api/2/issue/{key}"
[[flows]]
id = "changes""#,
    )
}

#[test]
fn an_override_header_never_makes_a_load_count_less() {
    let snapshot = snapshot_of(&with_bulk(), true);
    let bulk = |method: &str, overrides: &[(&str, &str)]| {
        let mut req = request(method, "/jira-1/rest/api/2/issue/bulk", Some("changes"));
        for (name, value) in overrides {
            req.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        decided(&snapshot, &req).unwrap().2
    };
    assert!(matches!(bulk("POST", &[]), LoadClass::Bulk(_)));
    assert_eq!(bulk("PUT", &[]), LoadClass::Main);
    // A target that ignores the override creates the batch; one that honours it, too.
    assert!(matches!(
        bulk("POST", &[("x-http-method-override", "PUT")]),
        LoadClass::Bulk(_)
    ));
    assert!(matches!(
        bulk("PUT", &[("x-http-method-override", "POST")]),
        LoadClass::Bulk(_)
    ));
    // Every value counts, however many and however listed.
    let many = [
        ("x-http-method-override", "GET"),
        ("x-http-method-override", "GET"),
        ("x-http-method-override", "GET"),
        ("x-http-method", "POST"),
    ];
    assert!(matches!(bulk("PUT", &many), LoadClass::Bulk(_)));
    assert!(matches!(
        bulk("GET", &[("x-method-override", "GET, post")]),
        LoadClass::Bulk(_)
    ));
    assert_eq!(
        bulk("GET", &[("x-http-method-override", "DELETE")]),
        LoadClass::Other
    );
}

#[test]
fn a_method_override_in_the_query_is_classified_too() {
    let snapshot = snapshot(true);
    let class = |target: &str| {
        decided(&snapshot, &request("GET", target, Some("incidents")))
            .unwrap()
            .2
    };
    for target in [
        "/jira-1/rest/api/2/issue?_HttpMethod=POST",
        "/jira-1/rest/api/2/issue?a=1&_method=post",
        "/jira-1/rest/api/2/issue?%5Fmethod=P%4FST",
        "/jira-1/rest/api/2/issue?_HTTPMETHOD=GET,POST",
    ] {
        assert_eq!(class(target), LoadClass::Main, "{target}");
    }
    for target in [
        "/jira-1/rest/api/2/issue?x_method=POST",
        "/jira-1/rest/api/2/issue?_method",
        "/jira-1/rest/api/2/issue?method=POST",
    ] {
        assert_eq!(class(target), LoadClass::Other, "{target}");
    }
}

#[test]
fn transfer_codings_other_than_chunked_alone_are_not_forwarded() {
    let snapshot = snapshot(true);
    for coding in ["gzip, chunked", "identity"] {
        let mut req = request("POST", "/jira-1/x", Some("incidents"));
        req.headers_mut()
            .insert(TRANSFER_ENCODING, coding.parse().unwrap());
        assert_eq!(
            decided(&snapshot, &req).err(),
            Some(ProblemCode::NotImplemented),
            "{coding}"
        );
    }
    let mut chunked = request("POST", "/jira-1/x", Some("incidents"));
    chunked
        .headers_mut()
        .insert(TRANSFER_ENCODING, "Chunked".parse().unwrap());
    assert!(decided(&snapshot, &chunked).is_ok());
}

#[test]
fn absolute_form_is_no_route_without_forward_proxy() {
    let snapshot = snapshot(true);
    let req = request(
        "GET",
        "http://jira.example/rest/api/2/issue",
        Some("incidents"),
    );
    assert_eq!(
        decided(&snapshot, &req).err(),
        Some(ProblemCode::UnknownRoute)
    );
}

#[test]
fn paths_under_a_base_keep_their_remainder() {
    let borrowed = |p: &'static str| Cow::Borrowed(p);
    assert_eq!(
        under_base(&borrowed("/jira/rest/api/2/issue"), "/jira").as_deref(),
        Some("/rest/api/2/issue")
    );
    assert_eq!(
        under_base(&borrowed("/jira"), "/jira").as_deref(),
        Some("/")
    );
    assert_eq!(
        under_base(&borrowed("/jira/"), "/jira").as_deref(),
        Some("/")
    );
    assert_eq!(under_base(&borrowed("/jirax/a"), "/jira"), None);
    assert_eq!(under_base(&borrowed("/admin/secret"), "/jira"), None);
    assert_eq!(
        under_base(&borrowed("/anything"), "").as_deref(),
        Some("/anything")
    );
    let owned: Cow<'static, str> = Cow::Owned("/jira/x;y".to_owned());
    assert_eq!(under_base(&owned, "/jira").as_deref(), Some("/x;y"));
}

#[test]
fn methods_spelt_in_another_case_are_refused_and_extensions_pass() {
    for method in ["post", "Get", "pAtCh", "delete"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        assert_eq!(
            check_method(&method).unwrap_err().code,
            ProblemCode::BadRequest,
            "{method}"
        );
    }
    for method in ["POST", "GET", "PROPFIND", "purge"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        assert!(check_method(&method).is_ok(), "{method}");
    }
}
