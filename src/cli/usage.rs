//! `tollgate usage`: usage tables from a running sidecar's admin API (or `--json`).

use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::output::say;
use super::{table, CliError};

/// Fetches licenses, flows, entitlements and this month's usage and prints them.
pub(super) fn run(
    admin: &str,
    token_file: Option<&Path>,
    as_json: bool,
) -> Result<ExitCode, CliError> {
    let base: Uri = admin
        .trim_end_matches('/')
        .parse()
        .map_err(|err| CliError::at(format!("--admin {admin:?}"), format!("not a URL: {err}")))?;
    let token = match token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|err| {
                    CliError::at(path.display(), format!("cannot read the token: {err}"))
                })?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let report = runtime.block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let get = |path: &'static str| fetch(&client, &base, token.as_deref(), path);
        Ok::<Value, CliError>(json!({
            "licenses": get("/v1/licenses").await?,
            "flows": get("/v1/flows").await?,
            "entitlements": get("/v1/entitlements").await?,
            "usage": get("/v1/usage").await?,
        }))
    })?;
    if as_json {
        say!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_tables(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// The admin API client `usage` and `demo` read with.
pub(super) type HttpClient =
    Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// GETs one admin API path and parses its JSON; refusals become one-sentence errors.
pub(super) async fn fetch(
    client: &HttpClient,
    base: &Uri,
    token: Option<&str>,
    path: &str,
) -> Result<Value, CliError> {
    let (Some(scheme), Some(authority)) = (base.scheme_str(), base.authority()) else {
        return Err(CliError::at(
            format!("--admin {base}"),
            "must be an absolute http:// URL",
        ));
    };
    let url = format!(
        "{scheme}://{authority}{}{path}",
        base.path().trim_end_matches('/')
    );
    let mut request = Request::get(url.as_str());
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::new())
        .map_err(|err| CliError::at(&url, err))?;
    let response = client
        .request(request)
        .await
        .map_err(|err| CliError::at(&url, format!("cannot reach the admin API: {err}")))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| CliError::at(&url, err))?
        .to_bytes();
    if status == StatusCode::UNAUTHORIZED {
        return Err(CliError::at(
            &url,
            "the admin API refused the token (pass the admin token with --token-file)",
        ));
    }
    if !status.is_success() {
        return Err(CliError::at(
            &url,
            format!("{status}: {}", String::from_utf8_lossy(&body)),
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|err| CliError::at(&url, format!("the answer is not JSON: {err}")))
}

/// `[#########+....]` — used against the limit, `+` inside the 10% buffer.
pub(crate) fn bar(used: u64, limit: u64, hard: u64) -> String {
    const WIDTH: u64 = 20;
    if hard == 0 {
        return String::new();
    }
    let cells = |n: u64| (n.min(hard) * WIDTH).div_ceil(hard);
    let (filled, at_limit) = (cells(used), cells(limit));
    let body: String = (0..WIDTH)
        .map(|i| match (i < filled, i < at_limit) {
            (true, true) => '#',
            (true, false) => '+',
            (false, _) => '.',
        })
        .collect();
    format!("[{body}] {:.0}%", used as f64 * 100.0 / limit.max(1) as f64)
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_tables(report: &Value) {
    say!(
        "Licenses ({})\n{}\n",
        text(&report["usage"]["month"]),
        licenses_table(report)
    );
    if let Some(leases) = fleet_table(report) {
        say!("Fleet leases (records this month)\n{leases}\n");
    }
    say!("Flows\n{}\n", flows_table(report));
    say!(
        "Entitlements in use / limit\n{}",
        entitlements_table(report)
    );
}

/// One row per license: state, points, this month's records and a usage bar.
fn licenses_table(report: &Value) -> comfy_table::Table {
    let mut licenses = table([
        "license",
        "kind",
        "state",
        "points used/total",
        "records this month",
        "usage",
    ]);
    for license in report["licenses"].as_array().into_iter().flatten() {
        let records = &license["records"];
        let (used, limit, hard) = (
            records["used"].as_u64(),
            records["limit"].as_u64(),
            records["hard_limit"].as_u64(),
        );
        let (records_text, usage) = match (used, limit, hard) {
            (Some(used), Some(limit), Some(hard)) => (
                format!("{used} / {limit} (hard {hard})"),
                bar(used, limit, hard),
            ),
            (Some(used), _, _) => (format!("{used} (no limit)"), String::new()),
            _ => ("-".to_owned(), String::new()),
        };
        let points = match (
            license["points"]["used"].as_u64(),
            license["points"]["total"].as_u64(),
        ) {
            (Some(used), Some(total)) => format!("{used}/{total}"),
            _ => "-".to_owned(),
        };
        licenses.add_row([
            text(&license["id"]),
            text(&license["kind"]),
            text(&license["state"]),
            points,
            records_text,
            usage,
        ]);
    }
    licenses
}

/// Fleet mode: one row per license and sidecar with what it holds and has counted.
fn fleet_table(report: &Value) -> Option<comfy_table::Table> {
    let mut leases = table(["license", "sidecar", "held", "counted", "live"]);
    let mut any = false;
    for license in report["licenses"].as_array().into_iter().flatten() {
        let fleet = &license["fleet"];
        for node in fleet["nodes"].as_array().into_iter().flatten() {
            any = true;
            let mut name = text(&node["node"]);
            if node["node"] == fleet["node"] {
                name.push_str(" (this one)");
            }
            let live = if node["live"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            };
            leases.add_row([
                text(&license["id"]),
                name,
                text(&node["held"]),
                text(&node["committed"]),
                live.to_owned(),
            ]);
        }
    }
    any.then_some(leases)
}

/// One row per flow: environment, pair, state, license and this month's records.
fn flows_table(report: &Value) -> comfy_table::Table {
    let used_by_flow = |id: &Value| {
        report["usage"]["flows"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["id"] == *id)
            .map_or("-".to_owned(), |f| text(&f["used"]))
    };
    let mut flows = table([
        "flow",
        "environment",
        "pair",
        "state",
        "license",
        "records this month",
    ]);
    for flow in report["flows"].as_array().into_iter().flatten() {
        let state = if flow["enabled"] == true {
            "enabled".to_owned()
        } else {
            format!("disabled ({})", text(&flow["reason"]))
        };
        flows.add_row([
            text(&flow["id"]),
            text(&flow["environment"]),
            text(&flow["pair_key"]),
            state,
            text(&flow["license"]),
            used_by_flow(&flow["id"]),
        ]);
    }
    flows
}

/// One row per environment: each entitlement in use against its limit.
fn entitlements_table(report: &Value) -> comfy_table::Table {
    let mut entitlements = table([
        "environment",
        "active flows",
        "endpoint apps",
        "trading partners",
        "agents",
    ]);
    for environment in ["production", "sandbox"] {
        let env = &report["entitlements"][environment];
        let cell = |name: &str| {
            let limit = env[name]["limit"]
                .as_u64()
                .map_or("no limit".to_owned(), |l| l.to_string());
            format!("{} / {limit}", text(&env[name]["used"]))
        };
        entitlements.add_row([
            environment.to_owned(),
            cell("flows"),
            cell("endpoint_apps"),
            cell("trading_partners"),
            cell("agents"),
        ]);
    }
    entitlements
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn bars_show_the_limit_and_the_buffer() {
        assert_eq!(bar(0, 100, 110), "[....................] 0%");
        assert_eq!(bar(50, 100, 110), "[##########..........] 50%");
        assert_eq!(bar(105, 100, 110), "[###################+] 105%");
        assert_eq!(bar(110, 100, 110), "[###################+] 110%");
    }
}
