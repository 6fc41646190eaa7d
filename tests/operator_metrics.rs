//! Operator experience: `GET /metrics` after known traffic agrees with the admin
//! API in both exposition formats (the text format 0.0.4 by default, OpenMetrics 1.0 when
//! `Accept` prefers it, each checked line by line against its format), and the logs (`--log-format json`) carry one event per license change, flow change,
//! warning and limit, and no line per request at the default level.

pub mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use hyper::{Method, StatusCode};
use serde_json::Value;

/// One sample of an exposition: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The two exposition formats `/metrics` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

/// What Prometheus sends when it prefers OpenMetrics.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `{a="x",b="y"}` after the metric name: strict syntax (quoted values, only `\\`, `\"` and
/// `\n` escapes, no duplicate names); returns the labels and the rest of the line.
fn parse_labels(line: &str, text: &str) -> (BTreeMap<String, String>, String) {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    if chars.peek() != Some(&'{') {
        return (labels, chars.collect());
    }
    chars.next();
    loop {
        if chars.peek() == Some(&'}') {
            chars.next();
            break;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert!(is_label_name(&key), "label name {key:?} in {line:?}");
        assert_eq!(chars.next(), Some('"'), "label value quote in {line:?}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("escape \\{other:?} in {line:?}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        }
        assert!(
            labels.insert(key.clone(), value).is_none(),
            "label {key} twice in {line:?}"
        );
        match chars.next() {
            Some(',') => {}
            Some('}') => break,
            other => panic!("{other:?} after a label in {line:?}"),
        }
    }
    (labels, chars.collect())
}

/// One sample line: `name{labels} value` (no timestamps: tollgate writes none).
fn parse_sample(line: &str) -> Sample {
    let end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
    let name = &line[..end];
    assert!(is_metric_name(name), "metric name {name:?} in {line:?}");
    let (labels, rest) = parse_labels(line, &line[end..]);
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before the value in {line:?}"));
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// The samples of an exposition (comment lines skipped).
fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(parse_sample)
        .collect()
}

/// The samples of `name` whose labels include every `(key, value)` of `labels`.
fn matching<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The value of the one sample of `name` with exactly `labels`; panics if absent.
#[track_caller]
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = matching(samples, name, labels)
        .into_iter()
        .filter(|s| s.labels.len() == labels.len())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one sample {name}{labels:?}, found {found:?}"
    );
    found[0].value
}

/// The declared family a sample belongs to: the name its `# TYPE` line gives and its type.
fn family_of<'t>(
    format: Format,
    sample: &str,
    types: &'t HashMap<String, String>,
) -> Option<(&'t str, &'t str)> {
    let declared = |name: &str| {
        types
            .get_key_value(name)
            .map(|(n, t)| (n.as_str(), t.as_str()))
    };
    let suffixed = |suffix: &str, kind: &str| {
        sample
            .strip_suffix(suffix)
            .and_then(declared)
            .filter(|(_, t)| *t == kind)
    };
    let exact = declared(sample).filter(|(_, kind)| match format {
        Format::Text => *kind == "counter" || *kind == "gauge",
        Format::OpenMetrics => *kind == "gauge",
    });
    exact
        .or_else(|| match format {
            Format::Text => None,
            Format::OpenMetrics => suffixed("_total", "counter"),
        })
        .or_else(|| suffixed("_bucket", "histogram"))
        .or_else(|| suffixed("_sum", "histogram"))
        .or_else(|| suffixed("_count", "histogram"))
}

/// Checks an exposition line by line against its format: only `# HELP` and `# TYPE` comments
/// (and OpenMetrics' final `# EOF`), each family declared once before its samples, every
/// sample in the family declared just before it, counters named the format's way, no
/// `_created` samples, cumulative histogram buckets ending in `+Inf` = `_count`.
fn assert_valid_exposition(format: Format, text: &str) {
    let body = match format {
        Format::Text => {
            assert!(!text.contains("# EOF"), "0.0.4 has no # EOF:\n{text}");
            text
        }
        Format::OpenMetrics => text
            .strip_suffix("# EOF\n")
            .unwrap_or_else(|| panic!("OpenMetrics ends with # EOF:\n{text}")),
    };
    assert!(body.ends_with('\n'), "the last line ends with a newline");
    let kinds: &[&str] = match format {
        Format::Text => &["counter", "gauge", "histogram", "summary", "untyped"],
        Format::OpenMetrics => &[
            "counter",
            "gauge",
            "histogram",
            "summary",
            "unknown",
            "info",
            "stateset",
            "gaugehistogram",
        ],
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let mut count = None;
    for line in body.lines() {
        assert!(!line.is_empty(), "blank line in:\n{text}");
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment
                .strip_prefix(' ')
                .unwrap_or_else(|| panic!("comment {line:?}"));
            let (keyword, rest) = comment.split_once(' ').unwrap_or((comment, ""));
            let (name, detail) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(is_metric_name(name), "{line:?}");
            match keyword {
                "HELP" => assert!(helps.insert(name.to_owned()), "HELP twice: {line:?}"),
                "TYPE" => {
                    assert!(kinds.contains(&detail), "type in {line:?}");
                    assert!(
                        types.insert(name.to_owned(), detail.to_owned()).is_none(),
                        "TYPE twice: {line:?}"
                    );
                    assert!(helps.contains(name), "TYPE before HELP: {line:?}");
                    current = Some(name.to_owned());
                }
                other => panic!("`# {other}` has no place in a {format:?} exposition:\n{text}"),
            }
            continue;
        }
        let sample = parse_sample(line);
        assert!(
            !sample.name.ends_with("_created"),
            "no _created samples: {line:?}"
        );
        let (family, kind) = family_of(format, &sample.name, &types)
            .unwrap_or_else(|| panic!("{line:?} belongs to no family declared before it:\n{text}"));
        assert_eq!(
            Some(family),
            current.as_deref(),
            "{line:?} is not with its family:\n{text}"
        );
        if format == Format::Text && kind == "counter" {
            assert!(
                family.ends_with("_total"),
                "0.0.4 declares counters as foo_total: {line:?}"
            );
        }
        if kind == "histogram" {
            if sample.name.ends_with("_bucket") {
                let le = &sample.labels["le"];
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                if let Some((previous, n)) = buckets.last() {
                    assert!(
                        bound > *previous && sample.value >= *n,
                        "buckets ascend: {line:?}"
                    );
                }
                buckets.push((bound, sample.value));
            } else if sample.name.ends_with("_count") {
                count = Some(sample.value);
            }
        }
    }
    let inf = buckets.last().expect("a histogram with buckets");
    assert_eq!(inf.0, f64::INFINITY, "the last bucket is +Inf:\n{text}");
    assert_eq!(Some(inf.1), count, "the +Inf bucket is the count:\n{text}");
}

/// `GET /metrics` with `accept` (none: no header); asserts the format it answered in and
/// that the answer is valid for it.
async fn scrape_as(tg: &Tollgate, accept: Option<&str>, format: Format) -> (String, Vec<Sample>) {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
    let resp = tg
        .request_with(
            &tg.client,
            tg.admin,
            Method::GET,
            "/metrics",
            &headers,
            Bytes::new(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "GET /metrics: {}", resp.text());
    let expected = match format {
        Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
    };
    assert_eq!(
        resp.header("content-type"),
        Some(expected),
        "content-type of /metrics with Accept {accept:?}"
    );
    let text = resp.text();
    assert_valid_exposition(format, &text);
    let samples = parse_metrics(&text);
    (text, samples)
}

/// The samples in name and label order (the formats order a histogram's lines differently).
fn sorted(samples: &[Sample]) -> Vec<&Sample> {
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
    sorted
}

/// Scrapes in both formats (0.0.4 without `Accept`, OpenMetrics as Prometheus asks for it)
/// until both carry the same samples; returns the 0.0.4 exposition and its samples.
async fn scrape(tg: &Tollgate) -> (String, Vec<Sample>) {
    let mut attempts = 0;
    loop {
        let (text, samples) = scrape_as(tg, None, Format::Text).await;
        let (open, open_samples) =
            scrape_as(tg, Some(PROMETHEUS_ACCEPT), Format::OpenMetrics).await;
        if sorted(&samples) == sorted(&open_samples) {
            return (text, samples);
        }
        attempts += 1;
        assert!(
            attempts < 20,
            "the formats disagree on the samples:\n{text}\n{open}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `[[flows.entities]]` lines for jira-1: a main load, a second main pattern answered by the
/// upstream with any status, and a child load.
const JIRA_ENTITIES: &[&str] = &[
    "[[flows.entities]]",
    "instance = \"jira-1\"",
    "role = \"main\"",
    "method = \"POST\"",
    "path = \"/rest/api/2/issue\"",
    "[[flows.entities]]",
    "instance = \"jira-1\"",
    "role = \"main\"",
    "method = \"POST\"",
    "path = \"/status/{code}\"",
    "[[flows.entities]]",
    "instance = \"jira-1\"",
    "role = \"child\"",
    "method = \"POST\"",
    "path = \"/rest/api/2/issue/{key}/comment\"",
];

/// Waits until the log has not grown for 300 ms; returns its JSON events.
async fn settled_events(tg: &Tollgate) -> Vec<Value> {
    let mut last = tg.logs().len();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = tg.logs().len();
        if now == last {
            return json_log_events(&tg.logs());
        }
        last = now;
    }
}

fn message(event: &Value) -> &str {
    event["fields"]["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_known_traffic_agree_with_the_admin_api_and_logs_are_events() {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let dead = format!("http://{}", closed_port());
    let mut licensed = pair_license("LIC-1", "servicenow", "jira", 3);
    licensed["transferred_records"] = 1000.into();
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .instance("jira-2", "jira", &dead)
        .instance("salesforce-1", "salesforce", &uri)
        .flow_with("incidents", ["servicenow-1", "jira-1"], JIRA_ENTITIES)
        .flow("other", ["servicenow-1", "jira-1"])
        .flow("dead", ["servicenow-1", "jira-2"])
        .flow("nolicense", ["servicenow-1", "salesforce-1"])
        .license(&licensed)
        .start_args(&["--log-format", "json"])
        .await;

    // Every line on stderr is one JSON object with the documented shape.
    let startup = settled_events(&tg).await;
    let log = tg.logs();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("log line is not JSON ({err}): {line:?}\n{log}"));
        for key in ["timestamp", "level", "fields", "target"] {
            assert!(!event[key].is_null(), "log event without {key}: {line}");
        }
        assert!(event["fields"]["message"].is_string(), "{line}");
    }
    assert!(
        startup.iter().any(|e| message(e) == "listening"),
        "no listening event: {log}"
    );

    // An operator disables `other`: one structured flow event.
    tg.disable("other").await;
    let events = settled_events(&tg).await;
    let new: Vec<&Value> = events[startup.len()..].iter().collect();
    assert!(
        new.iter().any(|e| e["fields"]["flow"] == "other"),
        "no log event for the flow change: {new:?}"
    );
    let before_traffic = events.len();

    // Known traffic.
    let (gets_jira, gets_sn, mains, childs, main_500) = (3, 2, 4, 2, 1);
    for _ in 0..gets_jira {
        tg.get("/jira-1/rest/api/2/issue/K-1", Some("incidents"))
            .await
            .assert_upstream_ok("target");
    }
    for _ in 0..gets_sn {
        tg.get("/servicenow-1/api/now/table/incident", Some("incidents"))
            .await
            .assert_upstream_ok("target");
    }
    for i in 0..mains {
        let resp = tg
            .post(
                "/jira-1/rest/api/2/issue",
                Some("incidents"),
                format!("{{\"n\":{i}}}"),
            )
            .await;
        resp.assert_upstream_ok("target");
    }
    for _ in 0..childs {
        tg.post(
            "/jira-1/rest/api/2/issue/K-1/comment",
            Some("incidents"),
            "c",
        )
        .await
        .assert_upstream_ok("target");
    }
    for _ in 0..main_500 {
        let resp = tg.post("/jira-1/status/500", Some("incidents"), "x").await;
        assert_eq!(
            resp.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            resp.text()
        );
    }
    let forwarded = gets_jira + gets_sn + mains + childs + main_500;
    // Refusals of three kinds and one unreachable target.
    for _ in 0..2 {
        tg.get("/nowhere/x", Some("incidents"))
            .await
            .assert_problem(404, "unknown-route");
    }
    for _ in 0..3 {
        tg.get("/jira-1/x", Some("other"))
            .await
            .assert_problem(403, "flow-disabled");
    }
    tg.get("/salesforce-1/x", Some("nolicense"))
        .await
        .assert_problem(403, "license-invalid");
    tg.get("/jira-2/x", Some("dead"))
        .await
        .assert_problem(502, "upstream-unavailable");

    // No line per request at the default level.
    let events = settled_events(&tg).await;
    assert_eq!(
        events.len(),
        before_traffic,
        "requests were logged at the default level: {:?}",
        &events[before_traffic..]
    );

    let (text, samples) = scrape(&tg).await;
    // Each format declares the request counter its own way; asking for one gets it.
    assert!(
        text.contains("\n# TYPE tollgate_requests_total counter\n"),
        "{text}"
    );
    let (open, _) = scrape_as(
        &tg,
        Some("application/openmetrics-text"),
        Format::OpenMetrics,
    )
    .await;
    assert!(
        open.contains("\n# TYPE tollgate_requests counter\n"),
        "{open}"
    );
    scrape_as(&tg, Some("text/plain"), Format::Text).await;
    scrape_as(&tg, Some("text/plain;version=0.0.4"), Format::Text).await;
    let requests = "tollgate_requests_total";
    let req = |flow: &str, instance: &str, decision: &str| {
        value(
            &samples,
            requests,
            &[
                ("flow", flow),
                ("instance", instance),
                ("decision", decision),
            ],
        )
    };
    assert_eq!(
        req("incidents", "jira-1", "allowed"),
        (gets_jira + mains + childs + main_500) as f64,
        "{text}"
    );
    assert_eq!(
        req("incidents", "servicenow-1", "allowed"),
        gets_sn as f64,
        "{text}"
    );
    assert_eq!(req("-", "-", "unknown-route"), 2.0, "{text}");
    assert_eq!(req("other", "jira-1", "flow-disabled"), 3.0, "{text}");
    assert_eq!(
        req("nolicense", "salesforce-1", "license-invalid"),
        1.0,
        "{text}"
    );
    assert_eq!(req("dead", "jira-2", "upstream-unavailable"), 1.0, "{text}");
    // Nothing else was counted, and every decision label is allowed or a problem code.
    let total: f64 = matching(&samples, requests, &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(total, (forwarded + 2 + 3 + 1 + 1) as f64, "{text}");
    for sample in matching(&samples, requests, &[]) {
        let keys: Vec<&str> = sample.labels.keys().map(String::as_str).collect();
        assert_eq!(keys, ["decision", "flow", "instance"], "{sample:?}");
    }

    // Records, points, expiry: the same numbers as the admin API.
    let lic = [("license", "LIC-1")];
    assert_eq!(
        value(&samples, "tollgate_records_transferred", &lic),
        mains as f64,
        "{text}"
    );
    let usage = tg.usage_of_license(None, "LIC-1").await;
    let records = tg.records("LIC-1").await;
    assert_eq!(usage, mains as u64);
    assert_eq!(records["used"], mains as u64, "{records}");
    assert_eq!(tg.usage_of_flow(None, "incidents").await, mains as u64);
    assert_eq!(
        value(&samples, "tollgate_records_limit", &lic),
        1000.0,
        "{text}"
    );
    assert_eq!(
        value(&samples, "tollgate_records_hard_limit", &lic),
        1100.0,
        "{text}"
    );
    assert_eq!(
        value(&samples, "tollgate_records_warning", &lic),
        0.0,
        "{text}"
    );
    let license = tg.license("LIC-1").await.unwrap();
    assert_eq!(license["points"]["used"], 2, "{license}");
    assert_eq!(value(&samples, "tollgate_points_used", &lic), 2.0, "{text}");
    assert_eq!(
        value(&samples, "tollgate_points_total", &lic),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(&samples, "tollgate_license_expiry_timestamp_seconds", &lic),
        4_070_908_800.0,
        "{text}"
    );
    assert_eq!(
        value(&samples, "tollgate_license_valid", &lic),
        1.0,
        "{text}"
    );
    let entitlements = tg.entitlements().await;
    for environment in ["production", "sandbox"] {
        for name in ["flows", "endpoint_apps", "trading_partners", "agents"] {
            let used = entitlements[environment][name]["used"].as_u64().unwrap();
            assert_eq!(
                value(
                    &samples,
                    "tollgate_entitlement_used",
                    &[("environment", environment), ("entitlement", name)]
                ),
                used as f64,
                "{environment} {name}: {text}"
            );
        }
    }
    // No subscription: no limits in force.
    assert!(
        matching(&samples, "tollgate_entitlement_limit", &[]).is_empty(),
        "{text}"
    );

    // The histogram saw every forwarded request, and only those (not the 502).
    let count = value(&samples, "tollgate_upstream_duration_seconds_count", &[]);
    assert_eq!(count, forwarded as f64, "{text}");
    let inf = value(
        &samples,
        "tollgate_upstream_duration_seconds_bucket",
        &[("le", "+Inf")],
    );
    assert_eq!(inf, forwarded as f64, "{text}");
    let buckets = matching(&samples, "tollgate_upstream_duration_seconds_bucket", &[]);
    assert!(buckets.len() > 2, "{text}");
    let mut previous = 0.0;
    for bucket in &buckets {
        assert!(bucket.value >= previous, "buckets are cumulative: {text}");
        previous = bucket.value;
    }
    let sum = value(&samples, "tollgate_upstream_duration_seconds_sum", &[]);
    assert!(sum > 0.0 && sum < 30.0, "{text}");
    let generation = value(&samples, "tollgate_snapshot_generation", &[]);

    // A license upload: one structured event naming it, a new snapshot, its own series.
    let upload = tg.sign(&pair_license("LIC-2", "servicenow", "jira", 1));
    let resp = tg.admin_post("/v1/licenses", upload).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    let events = settled_events(&tg).await;
    let new = &events[before_traffic..];
    assert!(
        new.iter().any(|e| e["fields"]["license"] == "LIC-2"),
        "no log event for the license upload: {new:?}"
    );
    let (text, samples) = scrape(&tg).await;
    assert!(
        value(&samples, "tollgate_snapshot_generation", &[]) > generation,
        "{text}"
    );
    let lic2 = [("license", "LIC-2")];
    assert_eq!(
        value(&samples, "tollgate_points_total", &lic2),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&samples, "tollgate_points_used", &lic2),
        0.0,
        "{text}"
    );
    assert_eq!(
        value(&samples, "tollgate_records_transferred", &lic2),
        0.0,
        "{text}"
    );
    assert!(
        matching(&samples, "tollgate_records_limit", &lic2).is_empty(),
        "a license without transferred_records has no limit: {text}"
    );
    // Counters survive the swap.
    assert_eq!(
        value(
            &samples,
            requests,
            &[
                ("flow", "incidents"),
                ("instance", "jira-1"),
                ("decision", "allowed")
            ]
        ),
        (gets_jira + mains + childs + main_500) as f64,
        "{text}"
    );

    // A removal: one event naming it; its series go away.
    let resp = tg.admin_delete("/v1/licenses/LIC-2").await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{}", resp.text());
    let before_removal = events.len();
    let events = settled_events(&tg).await;
    assert!(
        events[before_removal..]
            .iter()
            .any(|e| e["fields"]["license"] == "LIC-2" && message(e).contains("removed")),
        "no log event for the license removal: {:?}",
        &events[before_removal..]
    );
    let (text, samples) = scrape(&tg).await;
    assert!(
        matching(&samples, "tollgate_points_total", &lic2).is_empty(),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warning_and_the_hard_limit_show_in_metrics_and_are_logged_once() {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let mut licensed = pair_license("LIC-1", "servicenow", "jira", 1);
    licensed["transferred_records"] = 10.into();
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .flow_with("incidents", ["servicenow-1", "jira-1"], JIRA_ENTITIES)
        .license(&licensed)
        .start_args(&["--log-format", "json"])
        .await;
    let startup = settled_events(&tg).await.len();

    for i in 1..=9u64 {
        let resp = tg
            .post("/jira-1/rest/api/2/issue", Some("incidents"), "r")
            .await;
        resp.assert_upstream_ok("target");
        assert_eq!(resp.header("tollgate-warning"), None, "record {i}");
    }
    let (text, samples) = scrape(&tg).await;
    let lic = [("license", "LIC-1")];
    assert_eq!(
        value(&samples, "tollgate_records_transferred", &lic),
        9.0,
        "{text}"
    );
    assert_eq!(
        value(&samples, "tollgate_records_warning", &lic),
        0.0,
        "{text}"
    );
    assert_eq!(
        settled_events(&tg).await.len(),
        startup,
        "loads under the limit were logged"
    );

    // Record 10 reaches the limit (warning), record 11 the hard limit, 12 is refused.
    let resp = tg
        .post("/jira-1/rest/api/2/issue", Some("incidents"), "r")
        .await;
    resp.assert_upstream_ok("target");
    assert_eq!(
        resp.header("tollgate-warning"),
        Some("records-limit-reached; used=10; limit=10; hard_limit=11")
    );
    let (text, samples) = scrape(&tg).await;
    assert_eq!(
        value(&samples, "tollgate_records_warning", &lic),
        1.0,
        "{text}"
    );
    // A burst of 8 concurrent loads: exactly one more fits under the hard limit; the others
    // are refused, whether by the admission check or by the stopped flow, and every refusal
    // names its flow and instance, which are also its metric labels.
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let client = tg.client.clone();
            let engine = tg.engine;
            tokio::spawn(async move {
                flow_request(
                    &client,
                    engine,
                    Method::POST,
                    "/jira-1/rest/api/2/issue",
                    "incidents",
                    "r",
                )
                .await
                .expect("burst request")
            })
        })
        .collect();
    let mut refused = Vec::new();
    for handle in burst {
        let resp = handle.await.unwrap();
        if resp.status == StatusCode::OK {
            resp.assert_upstream_ok("target");
        } else {
            refused.push(resp.assert_problem(429, "records-limit-exceeded"));
        }
    }
    assert_eq!(refused.len(), 7, "{refused:?}");
    for problem in &refused {
        assert_eq!(problem["flow"], "incidents", "{problem}");
        assert_eq!(problem["license"], "LIC-1", "{problem}");
        assert_eq!(
            problem["instance"], "jira-1",
            "429 without its instance: {problem}"
        );
    }

    let usage = tg.usage_of_license(None, "LIC-1").await;
    let records = tg.records("LIC-1").await;
    let (text, samples) = scrape(&tg).await;
    assert_eq!(usage, 11);
    assert_eq!(records["used"], 11, "{records}");
    assert_eq!(records["warning"], true, "{records}");
    assert_eq!(
        value(&samples, "tollgate_records_transferred", &lic),
        11.0,
        "{text}"
    );
    assert_eq!(
        value(&samples, "tollgate_records_limit", &lic),
        10.0,
        "{text}"
    );
    assert_eq!(
        value(&samples, "tollgate_records_hard_limit", &lic),
        11.0,
        "{text}"
    );
    assert_eq!(
        value(&samples, "tollgate_records_warning", &lic),
        1.0,
        "{text}"
    );
    let req = |decision: &str| {
        value(
            &samples,
            "tollgate_requests_total",
            &[
                ("flow", "incidents"),
                ("instance", "jira-1"),
                ("decision", decision),
            ],
        )
    };
    assert_eq!(req("allowed"), 11.0, "{text}");
    assert_eq!(req("records-limit-exceeded"), 7.0, "{text}");
    assert_eq!(
        value(&samples, "tollgate_upstream_duration_seconds_count", &[]),
        11.0,
        "{text}"
    );
    // The load that reached the hard limit was answered once the flow was stopped.
    assert_eq!(tg.flow("incidents").await["reason"], "records-limit");

    // One warning event, one limit event, one flow event; no line per request.
    let events = settled_events(&tg).await;
    let new = &events[startup..];
    let about_license = |word: &str| {
        new.iter()
            .filter(|e| e["fields"]["license"] == "LIC-1" && message(e).contains(word))
            .count()
    };
    assert_eq!(
        about_license("reached the monthly limit"),
        1,
        "warning events: {new:#?}"
    );
    assert_eq!(
        about_license("reached the hard limit"),
        1,
        "limit events: {new:#?}"
    );
    for event in new.iter().filter(|e| e["fields"]["license"] == "LIC-1") {
        assert_eq!(event["level"], "WARN", "{event}");
    }
    let flow_events: Vec<&Value> = new
        .iter()
        .filter(|e| e["fields"]["flow"] == "incidents")
        .collect();
    assert_eq!(flow_events.len(), 1, "flow events: {new:#?}");
    assert!(
        flow_events[0].to_string().contains("records-limit"),
        "{}",
        flow_events[0]
    );
    assert!(
        new.len() <= 4,
        "{} events for 19 requests and one limit: {new:#?}",
        new.len()
    );
}
