//! Operator experience: `tollgate usage --admin URL --token-file F` against a
//! running sidecar — `--json` is exactly the four admin answers, the tables show the
//! licenses and flows, and a missing or wrong token exits 1 naming the problem.

pub mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::*;
use serde_json::Value;

/// A sidecar with two licenses, three flows (one disabled by the operator) and some loads.
async fn sidecar_with_traffic(target: &Upstream) -> Tollgate {
    let uri = target.base_uri();
    let mut limited = pair_license("LIC-1", "servicenow", "jira", 2);
    limited["transferred_records"] = 20.into();
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .instance("jira-2", "jira", &uri)
        .flow_with(
            "incidents",
            ["servicenow-1", "jira-1"],
            &[
                "[[flows.entities]]",
                "instance = \"jira-1\"",
                "role = \"main\"",
                "method = \"POST\"",
                "path = \"/rest/api/2/issue\"",
            ],
        )
        .flow("problems", ["servicenow-1", "jira-2"])
        .flow("changes", ["servicenow-1", "jira-1"])
        .license(&limited)
        .license(&pair_license("LIC-2", "servicenow", "salesforce", 1))
        .start()
        .await;
    for _ in 0..5 {
        tg.post("/jira-1/rest/api/2/issue", Some("incidents"), "r")
            .await
            .assert_upstream_ok("target");
    }
    tg.get("/jira-2/x", Some("problems"))
        .await
        .assert_upstream_ok("target");
    tg.disable("changes").await;
    tg
}

fn usage(tg: &Tollgate, token_file: Option<&Path>, json: bool) -> std::process::Output {
    let admin = format!("http://{}", tg.admin);
    let mut args: Vec<&OsStr> = vec!["usage".as_ref(), "--admin".as_ref(), admin.as_ref()];
    if let Some(file) = token_file {
        args.push("--token-file".as_ref());
        args.push(file.as_os_str());
    }
    if json {
        args.push("--json".as_ref());
    }
    tollgate_output(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_json_is_the_four_admin_answers() {
    let target = Upstream::plain("target").await;
    let tg = sidecar_with_traffic(&target).await;
    let token_file = tg.dir().join("admin.token");

    let out = usage(&tg, Some(&token_file), true);
    assert!(
        out.status.success(),
        "usage --json failed ({}): {}",
        out.status,
        stderr(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("usage --json is not JSON ({err}): {}", stdout(&out)));
    let keys: Vec<&String> = report.as_object().expect("an object").keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["entitlements", "flows", "licenses", "usage"],
        "{report}"
    );

    for (key, path) in [
        ("licenses", "/v1/licenses"),
        ("flows", "/v1/flows"),
        ("entitlements", "/v1/entitlements"),
        ("usage", "/v1/usage"),
    ] {
        let direct = tg.admin_json(path).await;
        assert_eq!(
            report[key], direct,
            "usage --json .{key} differs from GET {path}"
        );
    }

    // And the numbers are the traffic's.
    let usage = &report["usage"];
    let lic1 = usage["licenses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "LIC-1")
        .unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(lic1["used"], 5, "{usage}");
    let incidents = usage["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "incidents")
        .unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(incidents["used"], 5, "{usage}");
    let licenses = report["licenses"].as_array().unwrap();
    let lic1 = licenses.iter().find(|l| l["id"] == "LIC-1").unwrap();
    assert_eq!(lic1["points"]["used"], 2, "{lic1}");
    assert_eq!(lic1["records"]["used"], 5, "{lic1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_tables_show_licenses_flows_and_entitlements() {
    let target = Upstream::plain("target").await;
    let tg = sidecar_with_traffic(&target).await;
    let token_file = tg.dir().join("admin.token");

    let out = usage(&tg, Some(&token_file), false);
    assert!(
        out.status.success(),
        "usage failed ({}): {}",
        out.status,
        stderr(&out)
    );
    let text = stdout(&out);
    let row = |first: &str| -> String {
        text.lines()
            .find(|l| l.split('|').nth(1).is_some_and(|cell| cell.trim() == first))
            .unwrap_or_else(|| panic!("no table row for {first}:\n{text}"))
            .to_owned()
    };
    let lic1 = row("LIC-1");
    assert!(lic1.contains("pair"), "{lic1}");
    assert!(lic1.contains("valid"), "{lic1}");
    assert!(lic1.contains("2/2"), "points of LIC-1: {lic1}");
    assert!(lic1.contains("5 / 20"), "records of LIC-1: {lic1}");
    assert!(lic1.contains("[#####"), "a text bar for LIC-1: {lic1}");
    assert!(lic1.contains("25%"), "{lic1}");
    let lic2 = row("LIC-2");
    assert!(lic2.contains("0/1"), "points of LIC-2: {lic2}");

    let incidents = row("incidents");
    assert!(incidents.contains("enabled"), "{incidents}");
    assert!(incidents.contains("LIC-1"), "{incidents}");
    assert!(incidents.contains("production"), "{incidents}");
    let cells: Vec<&str> = incidents.split('|').map(str::trim).collect();
    assert_eq!(
        cells[cells.len() - 2],
        "5",
        "records of incidents: {incidents}"
    );
    let problems = row("problems");
    assert!(problems.contains("enabled"), "{problems}");
    let changes = row("changes");
    assert!(changes.contains("disabled (operator)"), "{changes}");

    let production = row("production");
    assert!(production.contains("no limit"), "{production}");
    row("sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_without_a_valid_token_exits_1_naming_the_problem() {
    let target = Upstream::plain("target").await;
    let tg = sidecar_with_traffic(&target).await;

    // No token at all.
    for json in [false, true] {
        let out = usage(&tg, None, json);
        assert_eq!(out.status.code(), Some(1), "no token: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "no token printed: {}", stdout(&out));
        let message = stderr(&out);
        assert!(
            message.to_lowercase().contains("token"),
            "the message names the token: {message}"
        );
    }

    // A wrong token.
    let wrong = tg.dir().join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let out = usage(&tg, Some(&wrong), true);
    assert_eq!(out.status.code(), Some(1), "wrong token: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    let message = stderr(&out);
    assert!(
        message.to_lowercase().contains("token"),
        "the message names the token: {message}"
    );

    // A token file that does not exist: the message names it.
    let missing = tg.dir().join("missing.token");
    let out = usage(&tg, Some(&missing), false);
    assert_eq!(out.status.code(), Some(1), "missing file: {}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("missing.token"),
        "the message names the file: {message}"
    );

    // Nothing listening at --admin.
    let closed = closed_port();
    let out = tollgate_output([
        "usage".as_ref(),
        "--admin".as_ref(),
        format!("http://{closed}").as_ref(),
        "--token-file".as_ref(),
        tg.dir().join("admin.token").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&closed.to_string()),
        "the message names the address: {}",
        stderr(&out)
    );
}
