//! The admin API, first part: bearer token, licenses (list, upload, remove), flows (list,
//! enable, disable) and the allocation and release of a pair license's points.

pub mod common;

use bytes::Bytes;
use common::*;
use hyper::{Method, StatusCode};
use serde_json::Value;

/// servicenow-1 with jira-1 and jira-2 on one target.
fn three_instances(target: &Upstream) -> Builder {
    let uri = target.base_uri();
    tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .instance("jira-2", "jira", &uri)
}

fn find<'a>(items: &'a [Value], id: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {items:?}"))
}

/// The `*.lic` files in a directory, with their contents.
fn lic_files(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lic"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap_or_default(),
            )
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_route_needs_the_bearer_token() {
    let target = Upstream::plain("target").await;
    let tg = three_instances(&target)
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start()
        .await;
    let upload = tg.sign(&pair_license("LIC-2", "servicenow", "jira", 5));
    let wrong = format!("Bearer {}x", tg.token);
    let prefix = format!("Bearer {}", &tg.token[..tg.token.len() - 1]);
    let bare = tg.token.clone();

    let calls: Vec<(Method, &str, Bytes)> = vec![
        (Method::GET, "/v1/licenses", Bytes::new()),
        (Method::POST, "/v1/licenses", Bytes::from(upload.clone())),
        (Method::DELETE, "/v1/licenses/LIC-1", Bytes::new()),
        (Method::GET, "/v1/flows", Bytes::new()),
        (Method::POST, "/v1/flows/incidents/disable", Bytes::new()),
        (Method::POST, "/v1/flows/incidents/enable", Bytes::new()),
        (Method::GET, "/v1/status", Bytes::new()),
    ];
    for (method, path, body) in &calls {
        for auth in [
            None,
            Some(wrong.as_str()),
            Some(prefix.as_str()),
            Some(bare.as_str()),
            Some("Basic dXNlcjpwYXNz"),
            Some("Bearer "),
        ] {
            let resp = tg
                .admin_request(method.clone(), path, auth, body.clone())
                .await;
            assert_eq!(
                resp.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}: {}",
                resp.text()
            );
        }
    }
    // Nothing changed.
    let licenses = tg.licenses().await;
    assert_eq!(licenses.len(), 1, "{licenses:?}");
    assert_eq!(tg.flow("incidents").await["enabled"], true);
    tg.get("/jira-1/x", Some("incidents"))
        .await
        .assert_upstream_ok("target");

    // The scheme is case-insensitive and may be followed by several spaces (RFC 9110).
    for auth in [
        format!("bearer {}", tg.token),
        format!("BEARER {}", tg.token),
        format!("Bearer   {}", tg.token),
    ] {
        let resp = tg
            .admin_request(Method::GET, "/v1/licenses", Some(&auth), Bytes::new())
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{auth:?}: {}", resp.text());
    }
    let resp = tg
        .admin_request(
            Method::GET,
            "/v1/licenses",
            Some(&format!("bearer {}x", tg.token)),
            Bytes::new(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text());

    // Health needs no token.
    for path in ["/healthz", "/readyz"] {
        let resp = tg
            .admin_request(Method::GET, path, None, Bytes::new())
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_are_allocated_and_released_through_the_api() {
    let target = Upstream::plain("target").await;
    let tg = three_instances(&target)
        .flow("a", ["servicenow-1", "jira-1"])
        .flow("b", ["servicenow-1", "jira-2"])
        .flow("c", ["jira-1", "servicenow-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start()
        .await;

    let points = |license: &Value| -> (u64, u64) {
        (
            license["points"]["total"].as_u64().unwrap(),
            license["points"]["used"].as_u64().unwrap(),
        )
    };
    let used = || async { points(&tg.license("LIC-1").await.unwrap()) };

    // At start: a takes the only point, c shares a's pair, b has none left.
    let flows = tg.flows().await;
    let (a, b, c) = (find(&flows, "a"), find(&flows, "b"), find(&flows, "c"));
    assert_eq!(a["enabled"], true, "{a}");
    assert!(a["reason"].is_null(), "{a}");
    assert_eq!(a["license"], "LIC-1", "{a}");
    assert_eq!(a["kind"], "flow", "{a}");
    assert_eq!(a["environment"], "production", "{a}");
    assert_eq!(
        a["systems"],
        serde_json::json!(["servicenow-1", "jira-1"]),
        "{a}"
    );
    assert_eq!(c["enabled"], true, "{c}");
    assert_eq!(c["license"], "LIC-1", "{c}");
    assert_eq!(a["pair_key"], c["pair_key"], "one pair, whatever the order");
    assert_ne!(a["pair_key"], b["pair_key"]);
    assert_eq!(b["enabled"], false, "{b}");
    assert_eq!(b["reason"], "points-exhausted", "{b}");
    assert!(b["license"].is_null(), "{b}");
    assert_eq!(used().await, (1, 1));

    // b cannot be enabled while the point is held.
    let resp = tg.admin_post("/v1/flows/b/enable", "").await;
    resp.assert_admin_problem(409, "points-exhausted");
    tg.get("/jira-2/x", Some("b"))
        .await
        .assert_problem(403, "flow-disabled");

    // Disabling a keeps the point: c still uses the pair.
    let resp = tg.admin_post("/v1/flows/a/disable", "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["id"], "a");
    assert_eq!(body["enabled"], false);
    assert_eq!(body["reason"], "operator");
    assert_eq!(used().await, (1, 1));
    tg.admin_post("/v1/flows/b/enable", "")
        .await
        .assert_admin_problem(409, "points-exhausted");
    tg.get("/jira-1/x", Some("c"))
        .await
        .assert_upstream_ok("target");

    // Disabling c, the last enabled flow of the pair, releases the point ...
    let resp = tg.admin_post("/v1/flows/c/disable", "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(used().await, (1, 0));
    let c = tg.flow("c").await;
    assert!(c["license"].is_null(), "{c}");

    // ... so b can take it.
    let resp = tg.admin_post("/v1/flows/b/enable", "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["enabled"], true, "{body}");
    assert!(body["reason"].is_null(), "{body}");
    assert_eq!(body["license"], "LIC-1", "{body}");
    assert_eq!(used().await, (1, 1));
    tg.get("/jira-2/x", Some("b"))
        .await
        .assert_upstream_ok("target");

    // Now a's pair has no point.
    let problem = tg
        .admin_post("/v1/flows/a/enable", "")
        .await
        .assert_admin_problem(409, "points-exhausted");
    assert!(problem["detail"].is_string(), "{problem}");
    let problem = tg
        .get("/jira-1/x", Some("a"))
        .await
        .assert_problem(403, "flow-disabled");
    assert_eq!(
        problem["reason"], "points-exhausted",
        "a refused flow stays disabled with the refusal's reason: {problem}"
    );

    // Enabling and disabling are idempotent and don't leak points.
    for _ in 0..3 {
        let resp = tg.admin_post("/v1/flows/b/enable", "").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    }
    assert_eq!(used().await, (1, 1));
    for _ in 0..3 {
        let resp = tg.admin_post("/v1/flows/b/disable", "").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    }
    assert_eq!(used().await, (1, 0));

    // Back to a and c.
    for flow in ["a", "c"] {
        let resp = tg.admin_post(&format!("/v1/flows/{flow}/enable"), "").await;
        assert_eq!(resp.status, StatusCode::OK, "{flow}: {}", resp.text());
    }
    assert_eq!(used().await, (1, 1));
    tg.get("/jira-1/x", Some("a"))
        .await
        .assert_upstream_ok("target");

    // Points of another license for the same pair add up.
    let resp = tg
        .admin_post(
            "/v1/licenses",
            tg.sign(&pair_license("LIC-2", "jira", "servicenow", 1)),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    let resp = tg.admin_post("/v1/flows/b/enable", "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json()["license"], "LIC-2");
    let l2 = tg.license("LIC-2").await.unwrap();
    assert_eq!(points(&l2), (1, 1), "{l2}");

    // Unknown flows.
    let resp = tg.admin_post("/v1/flows/nope/enable", "").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licenses_are_uploaded_and_removed_through_the_api() {
    let target = Upstream::plain("target").await;
    let tg = three_instances(&target)
        .flow("incidents", ["servicenow-1", "jira-1"])
        .start()
        .await;

    assert!(tg.licenses().await.is_empty());
    let problem = tg
        .get("/jira-1/x", Some("incidents"))
        .await
        .assert_problem(403, "license-invalid");
    assert_eq!(problem["reason"], "missing");
    assert_eq!(target.hits(), 0);

    // Upload.
    let text = tg.sign(&pair_license("LIC-U", "servicenow", "jira", 2));
    let resp = tg.admin_post("/v1/licenses", text.clone()).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    let license = resp.json();
    assert_eq!(license["id"], "LIC-U", "{license}");
    assert_eq!(license["kind"], "pair", "{license}");
    assert_eq!(license["state"], "valid", "{license}");
    assert_eq!(license["company"], "Acme Corp", "{license}");
    assert_eq!(license["system_a"], "servicenow", "{license}");
    assert_eq!(license["system_b"], "jira", "{license}");
    assert_eq!(license["points"]["total"], 2, "{license}");
    let files = lic_files(&tg.license_dir());
    assert!(
        files
            .iter()
            .any(|(_, contents)| contents.trim() == text.trim()),
        "the upload is not in license_dir: {files:?}"
    );

    // It is in force at once (and at the latest after a short swap).
    eventually(
        "the uploaded license to cover incidents",
        std::time::Duration::from_secs(5),
        || async {
            (tg.get("/jira-1/x", Some("incidents")).await.status == StatusCode::OK).then_some(())
        },
    )
    .await;
    let listed = tg.license("LIC-U").await.expect("listed");
    assert_eq!(listed["points"]["used"], 1, "{listed}");
    assert_eq!(tg.flow("incidents").await["license"], "LIC-U");

    // Uploading the same id replaces it (no duplicate).
    let text2 = tg.sign(&pair_license("LIC-U", "servicenow", "jira", 3));
    let resp = tg.admin_post("/v1/licenses", text2).await;
    assert!(
        resp.status == StatusCode::CREATED || resp.status == StatusCode::OK,
        "{}",
        resp.text()
    );
    let licenses = tg.licenses().await;
    assert_eq!(licenses.len(), 1, "{licenses:?}");
    assert_eq!(licenses[0]["points"]["total"], 3);
    assert_eq!(licenses[0]["points"]["used"], 1);
    tg.get("/jira-1/x", Some("incidents"))
        .await
        .assert_upstream_ok("target");

    // Removal.
    let resp = tg.admin_delete("/v1/licenses/LIC-U").await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{}", resp.text());
    assert!(resp.body.is_empty());
    assert!(tg.license("LIC-U").await.is_none());
    assert!(
        lic_files(&tg.license_dir()).is_empty(),
        "{:?}",
        lic_files(&tg.license_dir())
    );
    let hits = target.hits();
    let problem = tg
        .get("/jira-1/x", Some("incidents"))
        .await
        .assert_problem(403, "flow-disabled");
    assert_eq!(problem["reason"], "license-removed", "{problem}");
    assert_eq!(target.hits(), hits);
    let flow = tg.flow("incidents").await;
    assert_eq!(flow["enabled"], false, "{flow}");
    assert_eq!(flow["reason"], "license-removed", "{flow}");

    // Removing again, or an unknown id: 404.
    for id in ["LIC-U", "NOPE", "..%2Fadmin.token"] {
        let resp = tg.admin_delete(&format!("/v1/licenses/{id}")).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{id}: {}", resp.text());
    }
    assert!(tg.dir().join("admin.token").exists());

    // A fresh upload and an explicit enable bring the flow back.
    let resp = tg
        .admin_post(
            "/v1/licenses",
            tg.sign(&pair_license("LIC-V", "servicenow", "jira", 1)),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    let resp = tg.admin_post("/v1/flows/incidents/enable", "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    tg.get("/jira-1/x", Some("incidents"))
        .await
        .assert_upstream_ok("target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_with_400_and_change_nothing() {
    let target = Upstream::plain("target").await;
    let tg = three_instances(&target)
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start()
        .await;
    let before = lic_files(&tg.license_dir());

    // A license signed by an issuer tollgate does not trust.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = Issuer::new(stranger_dir.path());
    let untrusted = stranger.sign(&pair_license("LIC-X", "servicenow", "jira", 9));

    // A valid license whose payload was altered after signing.
    let good = tg.sign(&pair_license("LIC-T", "servicenow", "jira", 1));
    let tampered = tampered(&good, |envelope| {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        let payload = pair_license("LIC-T", "servicenow", "jira", 1000);
        envelope["payload"] = Value::from(STANDARD.encode(payload.to_string()));
    });

    let bodies: Vec<(&str, Bytes)> = vec![
        ("empty", Bytes::new()),
        ("garbage", Bytes::from_static(b"this is not a license")),
        (
            "json payload",
            Bytes::from(pair_license("LIC-J", "servicenow", "jira", 1).to_string()),
        ),
        ("unknown issuer", Bytes::from(untrusted)),
        ("tampered", Bytes::from(tampered)),
        ("binary", Bytes::from_static(&[0xff, 0xfe, 0x00, 0x01])),
        (
            "over 64 KiB",
            Bytes::from(format!("{good}{}", "#".repeat(70 * 1024))),
        ),
    ];
    for (what, body) in bodies {
        let resp = tg.admin_post("/v1/licenses", body).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            resp.text()
        );
        assert!(
            resp.header("content-type")
                .unwrap_or("")
                .starts_with("application/problem+json"),
            "{what}: {:?}",
            resp.headers
        );
        let problem = resp.json();
        let detail = problem["detail"].as_str().unwrap_or("");
        assert!(!detail.trim().is_empty(), "{what}: no detail in {problem}");
        assert_eq!(problem["status"], 400, "{what}: {problem}");
    }
    let licenses = tg.licenses().await;
    assert_eq!(licenses.len(), 1, "{licenses:?}");
    assert_eq!(licenses[0]["id"], "LIC-1");
    assert_eq!(lic_files(&tg.license_dir()), before);
    tg.get("/jira-1/x", Some("incidents"))
        .await
        .assert_upstream_ok("target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pair_takes_its_point_from_the_license_expiring_first() {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .instance("jira-2", "jira", &uri)
        .instance("jira-3", "jira", &uri)
        .instance("jira-4", "jira", &uri)
        .flow("one", ["servicenow-1", "jira-1"])
        .flow("two", ["servicenow-1", "jira-2"])
        .flow("three", ["servicenow-1", "jira-3"])
        .flow("four", ["servicenow-1", "jira-4"])
        // Listed in no useful order: allocation must not depend on file order.
        .license(&with(
            pair_license("LIC-LATE", "servicenow", "jira", 1),
            "expire",
            "2099-01-01T00:00:00Z",
        ))
        .license(&with(
            pair_license("LIC-TIE-B", "servicenow", "jira", 1),
            "expire",
            "2095-01-01T00:00:00Z",
        ))
        .license(&with(
            pair_license("LIC-EARLY", "jira", "servicenow", 1),
            "expire",
            "2090-01-01T00:00:00Z",
        ))
        .license(&with(
            pair_license("LIC-TIE-A", "servicenow", "jira", 1),
            "expire",
            "2095-01-01T00:00:00Z",
        ))
        .start()
        .await;

    let flows = tg.flows().await;
    assert_eq!(find(&flows, "one")["license"], "LIC-EARLY", "{flows:?}");
    assert_eq!(find(&flows, "two")["license"], "LIC-TIE-A", "{flows:?}");
    assert_eq!(find(&flows, "three")["license"], "LIC-TIE-B", "{flows:?}");
    assert_eq!(find(&flows, "four")["license"], "LIC-LATE", "{flows:?}");
    for license in tg.licenses().await {
        assert_eq!(license["points"]["used"], 1, "{license}");
    }
    for (flow, instance) in [
        ("one", "jira-1"),
        ("two", "jira-2"),
        ("three", "jira-3"),
        ("four", "jira-4"),
    ] {
        tg.get(&format!("/{instance}/x"), Some(flow))
            .await
            .assert_upstream_ok("target");
    }

    // Releasing the earliest one's point and re-enabling takes it again.
    let resp = tg.admin_post("/v1/flows/one/disable", "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    // Pairs that hold a point keep it where it is: only the released point is free.
    let flows = tg.flows().await;
    for (flow, license) in [
        ("two", "LIC-TIE-A"),
        ("three", "LIC-TIE-B"),
        ("four", "LIC-LATE"),
    ] {
        assert_eq!(
            find(&flows, flow)["license"],
            license,
            "{flow}'s pair moved to another license when an unrelated pair released its point: {flows:?}"
        );
    }
    assert_eq!(tg.license("LIC-EARLY").await.unwrap()["points"]["used"], 0);
    let resp = tg.admin_post("/v1/flows/one/enable", "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json()["license"], "LIC-EARLY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_license_restores_the_flows_it_covers() {
    let target = Upstream::plain("target").await;
    let tg = three_instances(&target)
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&expired_pair_license("LIC-R", "servicenow", "jira", 1))
        .start()
        .await;

    let problem = tg
        .get("/jira-1/x", Some("incidents"))
        .await
        .assert_problem(403, "license-invalid");
    assert_eq!(problem["reason"], "expired", "{problem}");
    assert_eq!(tg.license("LIC-R").await.unwrap()["state"], "expired");
    assert_eq!(target.hits(), 0);

    // The renewal has the same id: it replaces the expired one.
    let renewed = tg.sign(&pair_license("LIC-R", "servicenow", "jira", 1));
    let resp = tg.admin_post("/v1/licenses", renewed).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    assert_eq!(resp.json()["state"], "valid");
    eventually(
        "the renewal to restore incidents",
        std::time::Duration::from_secs(5),
        || async {
            (tg.get("/jira-1/x", Some("incidents")).await.status == StatusCode::OK).then_some(())
        },
    )
    .await;
    let licenses = tg.licenses().await;
    assert_eq!(licenses.len(), 1, "{licenses:?}");
    assert_eq!(licenses[0]["points"]["used"], 1, "{licenses:?}");
    assert_eq!(tg.flow("incidents").await["license"], "LIC-R");
}

/// The fields the admin API's license list gives for every license entry.
const LICENSE_FIELDS: [&str; 10] = [
    "id",
    "kind",
    "company",
    "registered_to",
    "email",
    "bound_to",
    "start",
    "expire",
    "state",
    "reason",
];
/// The fields of a pair entry beside those (`transferred_records` as the payload names it).
const PAIR_FIELDS: [&str; 5] = [
    "system_a",
    "system_b",
    "transferred_records",
    "points",
    "records",
];
/// The fields of a subscription entry in place of the pair fields.
const SUBSCRIPTION_FIELDS: [&str; 4] = ["pricing", "unlimited_until", "production", "sandbox"];

/// Asserts that `entry` has every field of its kind, the others of the other kind absent.
#[track_caller]
fn assert_every_field(entry: &Value) {
    let (own, other): (&[&str], &[&str]) = match entry["kind"].as_str() {
        Some("pair") => (&PAIR_FIELDS, &SUBSCRIPTION_FIELDS),
        Some("subscription") => (&SUBSCRIPTION_FIELDS, &PAIR_FIELDS),
        kind => panic!("kind {kind:?}: {entry}"),
    };
    for field in LICENSE_FIELDS.iter().chain(own) {
        assert!(entry.get(*field).is_some(), "{field} missing: {entry}");
    }
    for field in other {
        assert!(entry.get(*field).is_none(), "{field} present: {entry}");
    }
    for field in ["total", "used"] {
        if entry["kind"] == "pair" {
            assert!(entry["points"][field].is_u64(), "points.{field}: {entry}");
        }
    }
    if entry["kind"] == "pair" {
        for field in ["month", "used", "limit", "hard_limit", "warning"] {
            assert!(
                entry["records"].get(field).is_some(),
                "records.{field} missing: {entry}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_license_entry_lists_every_field_null_where_the_license_does_not_set_it() {
    let target = Upstream::plain("target").await;
    let full = with(
        with(
            pair_license("LIC-FULL", "servicenow", "jira", 2),
            "transferred_records",
            500,
        ),
        "bound_to",
        "10.0.0.7",
    );
    let tg = three_instances(&target)
        .licensing_option("models = [\"pair\", \"subscription\"]")
        .license(&pair_license("LIC-BARE", "servicenow", "jira", 1))
        .license(&full)
        .license(&expired_pair_license("LIC-OLD", "servicenow", "jira", 1))
        .license(&subscription_license(
            "SUB-1",
            "endpoint",
            [1, 1, 1, 1],
            [1, 1, 1, 1],
        ))
        .start_with(&[], &[("TOLLGATE_TEST_HOST", "sidecar-a.example,10.0.0.7")])
        .await;

    let licenses = tg.licenses().await;
    assert_eq!(licenses.len(), 4, "{licenses:?}");
    for entry in &licenses {
        assert_every_field(entry);
    }
    let bare = find(&licenses, "LIC-BARE");
    for field in ["bound_to", "transferred_records", "reason"] {
        assert!(bare[field].is_null(), "{field}: {bare}");
    }
    assert!(bare["records"]["limit"].is_null(), "{bare}");
    assert!(bare["records"]["hard_limit"].is_null(), "{bare}");
    assert_eq!(bare["records"]["warning"], false, "{bare}");
    let full = find(&licenses, "LIC-FULL");
    assert_eq!(full["bound_to"], "10.0.0.7", "{full}");
    if cfg!(feature = "test-clock") {
        // TOLLGATE_TEST_HOST made this host 10.0.0.7.
        assert_eq!(full["state"], "valid", "{full}");
    }
    assert_eq!(full["transferred_records"], 500, "{full}");
    assert_eq!(full["records"]["limit"], 500, "{full}");
    assert_eq!(full["records"]["hard_limit"], 550, "{full}");
    let old = find(&licenses, "LIC-OLD");
    assert_eq!(old["state"], "expired", "{old}");
    assert!(old["reason"].is_string(), "{old}");
    let subscription = find(&licenses, "SUB-1");
    for field in ["bound_to", "unlimited_until", "reason"] {
        assert!(subscription[field].is_null(), "{field}: {subscription}");
    }
    assert_eq!(subscription["pricing"], "endpoint", "{subscription}");
    assert_eq!(subscription["production"]["flows"], 1, "{subscription}");

    // An upload answers with the same entry.
    let upload = tg.sign(&subscription_license(
        "SUB-2",
        "platform",
        [2, 2, 2, 2],
        [0, 0, 0, 0],
    ));
    let resp = tg.admin_post("/v1/licenses", upload).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    let answer = resp.json();
    assert_every_field(&answer);
    assert!(answer["unlimited_until"].is_null(), "{answer}");
}
