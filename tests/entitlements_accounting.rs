//! Subscription entitlements, the accounting of what counts against them: every worked
//! case of the canonical endpoint rules read back from `GET /v1/entitlements` after enabling
//! flows that use those instances, the data-loader and integration-app rules under both
//! pricing models, and production and sandbox kept apart.
//!
//! Everything goes through the real binary: a config with raw `[[instances]]`/`[[flows]]`
//! tables, subscription licenses signed with `tollgate license sign`, and the admin API.

pub mod common;

use std::collections::BTreeSet;

use common::*;
use hyper::StatusCode;
use serde_json::{json, Value};

/// A limit no test comes near.
const ROOMY: [u64; 4] = [1000, 1000, 1000, 1000];

/// `(id, connector, attributes)` of one instance; attribute values are TOML.
type Inst = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

/// One worked case: its instances and the endpoint keys they make.
struct Case {
    name: &'static str,
    instances: Vec<Inst>,
    keys: Vec<&'static str>,
}

fn case(name: &'static str, instances: Vec<Inst>, keys: Vec<&'static str>) -> Case {
    Case {
        name,
        instances,
        keys,
    }
}

/// Every worked case of the canonical endpoint rules (and a few more from their table). Instance ids are
/// prefixed per case; the keys are what `GET /v1/entitlements` must list.
fn worked_cases() -> Vec<Case> {
    vec![
        case(
            "two NetSuite connections",
            vec![
                (
                    "ns-a",
                    "named",
                    vec![
                        ("app", "\"netsuite\""),
                        ("base_uri", "\"https://ns-a.example\""),
                    ],
                ),
                (
                    "ns-b",
                    "named",
                    vec![
                        ("app", "\"netsuite\""),
                        ("base_uri", "\"https://ns-b.example\""),
                    ],
                ),
            ],
            vec!["app:netsuite"],
        ),
        case(
            "NetSuite + NetSuite JDBC",
            vec![
                (
                    "ns",
                    "named",
                    vec![
                        ("app", "\"netsuite\""),
                        ("base_uri", "\"https://ns.example\""),
                    ],
                ),
                (
                    "jdbc",
                    "named",
                    vec![
                        ("app", "\"netsuite-jdbc\""),
                        ("base_uri", "\"https://jdbc.example\""),
                    ],
                ),
            ],
            vec!["app:netsuite", "app:netsuite-jdbc"],
        ),
        case(
            "NetSuite accounts 113156 and 668910",
            vec![
                (
                    "ns-113156",
                    "named",
                    vec![
                        ("app", "\"netsuite\""),
                        ("account", "\"113156\""),
                        ("base_uri", "\"https://113156.suitetalk.api.netsuite.com\""),
                    ],
                ),
                (
                    "ns-668910",
                    "named",
                    vec![
                        ("app", "\"NetSuite\""),
                        ("account", "\"668910\""),
                        ("base_uri", "\"https://668910.suitetalk.api.netsuite.com\""),
                    ],
                ),
            ],
            vec!["app:netsuite"],
        ),
        case(
            "Acumatica with basic auth + Acumatica with OAuth 2.0",
            vec![
                (
                    "acu-basic",
                    "named",
                    vec![
                        ("app", "\"acumatica\""),
                        ("base_uri", "\"https://acme.acumatica.com\""),
                    ],
                ),
                (
                    "acu-oauth",
                    "named",
                    vec![
                        ("app", "\"acumatica\""),
                        ("base_uri", "\"https://acme.acumatica.com/identity\""),
                    ],
                ),
            ],
            vec!["app:acumatica"],
        ),
        case(
            "three Shopify stores",
            vec![
                (
                    "shop-1",
                    "named",
                    vec![
                        ("app", "\"shopify\""),
                        ("base_uri", "\"https://store-one.myshopify.com\""),
                    ],
                ),
                (
                    "shop-2",
                    "named",
                    vec![
                        ("app", "\"Shopify\""),
                        ("base_uri", "\"https://store-two.myshopify.com\""),
                    ],
                ),
                (
                    "shop-3",
                    "named",
                    vec![
                        ("app", "\"SHOPIFY\""),
                        ("base_uri", "\"https://store-three.myshopify.com\""),
                    ],
                ),
            ],
            vec!["app:shopify"],
        ),
        case(
            "two MySQL databases on mysql.yoursql.io",
            vec![
                (
                    "mysql-orders",
                    "rdbms",
                    vec![("engine", "\"mysql\""), ("host", "\"mysql.yoursql.io\"")],
                ),
                (
                    "mysql-billing",
                    "rdbms",
                    vec![("engine", "\"MySQL\""), ("host", "\"MySQL.yoursql.io\"")],
                ),
            ],
            vec!["rdbms:mysql:mysql.yoursql.io"],
        ),
        case(
            "MySQL on mysql1.yoursql.io + mysql2.yoursql.io",
            vec![
                (
                    "mysql1",
                    "rdbms",
                    vec![("engine", "\"mysql\""), ("host", "\"mysql1.yoursql.io\"")],
                ),
                (
                    "mysql2",
                    "rdbms",
                    vec![("engine", "\"mysql\""), ("host", "\"mysql2.yoursql.io\"")],
                ),
            ],
            vec![
                "rdbms:mysql:mysql1.yoursql.io",
                "rdbms:mysql:mysql2.yoursql.io",
            ],
        ),
        case(
            "Snowflake, two connections to one account",
            vec![
                ("sf-a", "snowflake", vec![("account", "\"acme\"")]),
                ("sf-b", "snowflake", vec![("account", "\"ACME\"")]),
            ],
            vec!["snowflake:acme"],
        ),
        case(
            "Snowflake, two accounts",
            vec![
                ("sf-acme", "snowflake", vec![("account", "\"acme\"")]),
                ("sf-globex", "snowflake", vec![("account", "\"globex\"")]),
            ],
            vec!["snowflake:acme", "snowflake:globex"],
        ),
        case(
            "Redshift, same cluster and region",
            vec![
                (
                    "rs-a",
                    "redshift",
                    vec![("cluster", "\"dw\""), ("region", "\"us-east-1\"")],
                ),
                (
                    "rs-b",
                    "redshift",
                    vec![("cluster", "\"dw\""), ("region", "\"us-east-1\"")],
                ),
            ],
            vec!["redshift:dw:us-east-1"],
        ),
        case(
            "Redshift, same cluster name in another region",
            vec![
                (
                    "rs-us",
                    "redshift",
                    vec![("cluster", "\"dw\""), ("region", "\"us-east-1\"")],
                ),
                (
                    "rs-eu",
                    "redshift",
                    vec![("cluster", "\"dw\""), ("region", "\"eu-west-1\"")],
                ),
            ],
            vec!["redshift:dw:eu-west-1", "redshift:dw:us-east-1"],
        ),
        case(
            "DynamoDB, same access key id",
            vec![
                (
                    "ddb-a",
                    "dynamodb",
                    vec![("access_key_id", "\"AKIAIOSFODNN7EXAMPLE\"")],
                ),
                (
                    "ddb-b",
                    "dynamodb",
                    vec![("access_key_id", "\"AKIAIOSFODNN7EXAMPLE\"")],
                ),
            ],
            vec!["dynamodb:akiaiosfodnn7example"],
        ),
        case(
            "DynamoDB, two access key ids",
            vec![
                (
                    "ddb-1",
                    "dynamodb",
                    vec![("access_key_id", "\"AKIAIOSFODNN7EXAMPLE\"")],
                ),
                (
                    "ddb-2",
                    "dynamodb",
                    vec![("access_key_id", "\"AKIAI44QH8DHBEXAMPLE\"")],
                ),
            ],
            vec![
                "dynamodb:akiai44qh8dhbexample",
                "dynamodb:akiaiosfodnn7example",
            ],
        ),
        case(
            "HTTP base URI with basic auth + three with OAuth 2.0",
            vec![
                (
                    "http-basic",
                    "http",
                    vec![("base_uri", "\"https://my-app-host.com\"")],
                ),
                (
                    "http-oauth-1",
                    "http",
                    vec![("base_uri", "\"https://my-app-host.com\"")],
                ),
                (
                    "http-oauth-2",
                    "http",
                    vec![("base_uri", "\"https://my-app-host.com\"")],
                ),
                (
                    "http-oauth-3",
                    "http",
                    vec![("base_uri", "\"https://MY-APP-HOST.com\"")],
                ),
            ],
            vec!["http:https://my-app-host.com"],
        ),
        case(
            "https://my-app-host.com/api/ + https://api.my-app-host.com/",
            vec![
                (
                    "http-path",
                    "http",
                    vec![("base_uri", "\"https://my-app-host.com/api/\"")],
                ),
                (
                    "http-subdomain",
                    "http",
                    vec![("base_uri", "\"https://api.my-app-host.com/\"")],
                ),
            ],
            vec![
                "http:https://api.my-app-host.com/",
                "http:https://my-app-host.com/api/",
            ],
        ),
        case(
            "https://my-app-host.com/api/ + https://my-app-host.com/api/v3 (exact text)",
            vec![
                (
                    "http-api",
                    "rest",
                    vec![("base_uri", "\"https://my-app-host.com/api/\"")],
                ),
                (
                    "http-api-v3",
                    "rest",
                    vec![("base_uri", "\"https://my-app-host.com/api/v3\"")],
                ),
            ],
            vec![
                "http:https://my-app-host.com/api/",
                "http:https://my-app-host.com/api/v3",
            ],
        ),
        case(
            "HTTP, REST and GraphQL connectors on one base URI",
            vec![
                (
                    "uni-http",
                    "http",
                    vec![("base_uri", "\"https://my-app-host.com/graph\"")],
                ),
                (
                    "uni-rest",
                    "rest",
                    vec![("base_uri", "\"https://my-app-host.com/GRAPH\"")],
                ),
                (
                    "uni-graphql",
                    "graphql",
                    vec![("base_uri", "\"https://my-app-host.com/graph\"")],
                ),
            ],
            vec!["http:https://my-app-host.com/graph"],
        ),
        case(
            "universal HTTP to https://api.fieldaware.net + named FieldAware",
            vec![
                (
                    "fa-http",
                    "http",
                    vec![("base_uri", "\"https://api.fieldaware.net\"")],
                ),
                (
                    "fa-named",
                    "named",
                    vec![
                        ("app", "\"fieldaware\""),
                        ("base_uri", "\"https://fa-named.example\""),
                    ],
                ),
            ],
            vec!["app:fieldaware", "http:https://api.fieldaware.net"],
        ),
        case(
            "BigQuery, one client email in two projects",
            vec![
                (
                    "bq-a",
                    "bigquery",
                    vec![("client_email", "\"loader@acme.iam.gserviceaccount.com\"")],
                ),
                (
                    "bq-b",
                    "bigquery",
                    vec![("client_email", "\"Loader@ACME.iam.gserviceaccount.com\"")],
                ),
            ],
            vec!["bigquery:loader@acme.iam.gserviceaccount.com"],
        ),
        case(
            "two FTP connections to ftp.my-app-host.net port 21",
            vec![
                (
                    "ftp-a",
                    "ftp",
                    vec![("host", "\"ftp.my-app-host.net\""), ("port", "21")],
                ),
                // Default port 21.
                ("ftp-b", "ftp", vec![("host", "\"FTP.my-app-host.net\"")]),
            ],
            vec!["ftp:ftp.my-app-host.net:21"],
        ),
        case(
            "FTP to ftp.my-app-host.net ports 21 and 2121",
            vec![
                (
                    "ftp-21",
                    "ftp",
                    vec![("host", "\"ftp.my-app-host.net\""), ("port", "21")],
                ),
                (
                    "ftp-2121",
                    "ftp",
                    vec![("host", "\"ftp.my-app-host.net\""), ("port", "2121")],
                ),
            ],
            vec!["ftp:ftp.my-app-host.net:21", "ftp:ftp.my-app-host.net:2121"],
        ),
        case(
            "SFTP, FTPS and AS2 default ports",
            vec![
                ("sftp", "sftp", vec![("host", "\"files.partner.example\"")]),
                ("ftps", "ftps", vec![("host", "\"files.partner.example\"")]),
                ("as2", "as2", vec![("host", "\"edi.partner.example\"")]),
            ],
            vec![
                "as2:edi.partner.example:443",
                "ftp:files.partner.example:22",
                "ftp:files.partner.example:990",
            ],
        ),
        case(
            "one wrapper",
            vec![("Wrap-Solo", "wrapper", vec![])],
            vec!["wrapper:c22-wrap-solo"],
        ),
        case(
            "a wrapper each",
            vec![("Wrap-A", "wrapper", vec![]), ("wrap-b", "wrapper", vec![])],
            vec!["wrapper:c23-wrap-a", "wrapper:c23-wrap-b"],
        ),
        case(
            "webhooks",
            vec![("hook-a", "webhook", vec![]), ("hook-b", "webhook", vec![])],
            vec![],
        ),
    ]
}

/// The instance id of case `n`'s instance `suffix`.
fn case_instance(n: usize, suffix: &str) -> String {
    format!("c{n}-{suffix}")
}

/// The flow id that uses case `n`'s instance `suffix`.
fn case_flow(n: usize, suffix: &str) -> String {
    format!("c{n}-{suffix}-flow")
}

/// Sorted, as the API lists keys.
fn sorted<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Vec<String> {
    let mut items: Vec<String> = items.into_iter().map(|s| s.as_ref().to_owned()).collect();
    items.sort();
    items
}

/// `keys` of one entitlement in an entitlements answer, as strings.
fn keys_of(entitlement: &Value) -> Vec<String> {
    entitlement["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys array in {entitlement}"))
        .iter()
        .map(|k| {
            k.as_str()
                .unwrap_or_else(|| panic!("key {k} is not a string"))
                .to_owned()
        })
        .collect()
}

/// Asserts `used`, `limit` and `keys` of `entitlements[environment][name]`.
#[track_caller]
fn assert_entitlement(
    entitlements: &Value,
    environment: &str,
    name: &str,
    limit: Option<u64>,
    keys: &[&str],
    context: &str,
) {
    let entry = &entitlements[environment][name];
    let expected = sorted(keys);
    assert_eq!(
        keys_of(entry),
        expected,
        "{context}: {environment}.{name}.keys in {entitlements}"
    );
    assert_eq!(
        entry["used"],
        json!(expected.len()),
        "{context}: {environment}.{name}.used in {entitlements}"
    );
    assert_eq!(
        entry["limit"],
        json!(limit),
        "{context}: {environment}.{name}.limit in {entitlements}"
    );
}

/// Asserts that the enable answer is 200 with the flow enabled.
#[track_caller]
fn assert_enabled(resp: &Resp, flow: &str) {
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "enable {flow}: {}",
        resp.text()
    );
    assert_eq!(
        resp.json()["enabled"],
        true,
        "enable {flow}: {}",
        resp.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worked_case_of_the_canonical_endpoint_rules_counts_as_specified() {
    let cases = worked_cases();
    // Wrapper keys carry the (prefixed) instance id, so those two cases must stay at 22 and 23.
    assert_eq!(
        cases[22].name, "one wrapper",
        "wrapper case moved: fix its keys"
    );
    assert_eq!(
        cases[23].name, "a wrapper each",
        "wrapper case moved: fix its keys"
    );
    // One webhook is every flow's second system: it is never an endpoint, so each flow adds
    // exactly its case instance's key.
    let mut toml = toml_instance("hook", "webhook", &[]);
    for (n, case) in cases.iter().enumerate() {
        for (suffix, connector, attributes) in &case.instances {
            toml.push_str(&toml_instance(
                &case_instance(n, suffix),
                connector,
                attributes,
            ));
        }
    }
    for (n, case) in cases.iter().enumerate() {
        for (suffix, _, _) in &case.instances {
            toml.push_str(&toml_flow(
                &case_flow(n, suffix),
                "flow",
                "production",
                &[&case_instance(n, suffix), "hook"],
                true,
            ));
        }
    }
    let tg = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&subscription_license("SUB-ROOMY", "endpoint", ROOMY, ROOMY))
        .start_toml(&toml, &[])
        .await;

    // At start every flow is enabled, in config order: the union of all cases.
    let all_flows: Vec<String> = cases
        .iter()
        .enumerate()
        .flat_map(|(n, case)| case.instances.iter().map(move |(s, _, _)| case_flow(n, s)))
        .collect();
    let all_keys: BTreeSet<&str> = cases.iter().flat_map(|c| c.keys.iter().copied()).collect();
    let at_start = tg.entitlements().await;
    let flow_refs: Vec<&str> = all_flows.iter().map(String::as_str).collect();
    let key_refs: Vec<&str> = all_keys.iter().copied().collect();
    assert_entitlement(
        &at_start,
        "production",
        "flows",
        Some(1000),
        &flow_refs,
        "at start",
    );
    assert_entitlement(
        &at_start,
        "production",
        "endpoint_apps",
        Some(1000),
        &key_refs,
        "at start",
    );
    assert_eq!(at_start["pricing"], "endpoint", "{at_start}");
    assert_eq!(at_start["unlimited"], false, "{at_start}");
    let resp = tg
        .admin_request(hyper::Method::GET, "/v1/entitlements", None, "")
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text());

    // Then each case alone, enabled through the API.
    for flow in &all_flows {
        tg.disable(flow).await;
    }
    let none = tg.entitlements().await;
    assert_entitlement(&none, "production", "flows", Some(1000), &[], "all off");
    assert_entitlement(
        &none,
        "production",
        "endpoint_apps",
        Some(1000),
        &[],
        "all off",
    );

    for (n, case) in cases.iter().enumerate() {
        let flows: Vec<String> = case
            .instances
            .iter()
            .map(|(s, _, _)| case_flow(n, s))
            .collect();
        for flow in &flows {
            assert_enabled(&tg.enable(flow).await, flow);
        }
        let entitlements = tg.entitlements().await;
        let flow_refs: Vec<&str> = flows.iter().map(String::as_str).collect();
        assert_entitlement(
            &entitlements,
            "production",
            "endpoint_apps",
            Some(1000),
            &case.keys,
            case.name,
        );
        assert_entitlement(
            &entitlements,
            "production",
            "flows",
            Some(1000),
            &flow_refs,
            case.name,
        );
        for name in ["trading_partners", "agents"] {
            assert_entitlement(
                &entitlements,
                "production",
                name,
                Some(1000),
                &[],
                case.name,
            );
        }
        for name in ["flows", "endpoint_apps", "trading_partners", "agents"] {
            assert_entitlement(&entitlements, "sandbox", name, Some(1000), &[], case.name);
        }
        for flow in &flows {
            tg.disable(flow).await;
        }
    }
}

/// The instances and flows of the pricing rules: a regular flow, an integration app, two
/// data loaders, trading partners (one server on two ports, an AS2 partner), agents, and three
/// flows left disabled to enable later.
fn pricing_world() -> String {
    let mut toml = String::new();
    for (id, connector, attributes) in [
        (
            "sn",
            "named",
            vec![
                ("app", "\"servicenow\""),
                ("base_uri", "\"https://sn.example\""),
                ("agent", "\"agent-eu\""),
            ],
        ),
        (
            "jira",
            "named",
            vec![
                ("app", "\"jira\""),
                ("base_uri", "\"https://jira.example\""),
            ],
        ),
        (
            "ns",
            "named",
            vec![
                ("app", "\"netsuite\""),
                ("base_uri", "\"https://ns.example\""),
            ],
        ),
        (
            "ns2",
            "named",
            vec![
                ("app", "\"NetSuite\""),
                ("base_uri", "\"https://ns2.example\""),
            ],
        ),
        ("hook", "webhook", vec![]),
        ("hook2", "webhook", vec![]),
        (
            "db",
            "rdbms",
            vec![
                ("engine", "\"mysql\""),
                ("host", "\"db.example.com\""),
                ("agent", "\"agent-us\""),
            ],
        ),
        (
            "db2",
            "rdbms",
            vec![("engine", "\"postgres\""), ("host", "\"pg.example.com\"")],
        ),
        ("sf", "snowflake", vec![("account", "\"acme\"")]),
        (
            "db3",
            "rdbms",
            vec![("engine", "\"mysql\""), ("host", "\"db3.example.com\"")],
        ),
        (
            "sftp-tp",
            "sftp",
            vec![
                ("host", "\"Partner.Example.com\""),
                ("trading_partner", "true"),
            ],
        ),
        (
            "ftp-tp",
            "ftp",
            vec![
                ("host", "\"partner.example.com\""),
                ("port", "2121"),
                ("trading_partner", "true"),
            ],
        ),
        (
            "as2-tp",
            "as2",
            vec![
                ("host", "\"as2.other.example\""),
                ("trading_partner", "true"),
            ],
        ),
        ("ftp-plain", "ftp", vec![("host", "\"files.example.com\"")]),
        (
            "as2-late",
            "as2",
            vec![
                ("host", "\"edi.third.example\""),
                ("trading_partner", "true"),
            ],
        ),
    ] {
        toml.push_str(&toml_instance(id, connector, &attributes));
    }
    for (id, kind, systems, enabled) in [
        ("sync", "flow", vec!["sn", "jira"], true),
        ("app", "integration-app", vec!["ns", "hook"], true),
        ("load", "data-loader", vec!["db"], true),
        ("load2", "data-loader", vec!["db2", "sf"], true),
        ("partners", "flow", vec!["sftp-tp", "ftp-tp"], true),
        ("edi", "flow", vec!["as2-tp", "ftp-plain"], true),
        ("app-late", "integration-app", vec!["ns2", "hook2"], false),
        ("load-late", "data-loader", vec!["db3"], false),
        ("edi-late", "flow", vec!["as2-late", "jira"], false),
    ] {
        toml.push_str(&toml_flow(id, kind, "production", &systems, enabled));
    }
    toml
}

/// Endpoint keys of the flows enabled at start in [`pricing_world`]: data loaders' instances
/// are not endpoint apps, the integration app's are, one server on two ports is two.
const PRICING_ENDPOINTS: [&str; 7] = [
    "app:jira",
    "app:netsuite",
    "app:servicenow",
    "as2:as2.other.example:443",
    "ftp:files.example.com:21",
    "ftp:partner.example.com:22",
    "ftp:partner.example.com:2121",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_pricing_counts_trading_partners_but_neither_data_loaders_nor_integration_apps_as_flows(
) {
    // Production limits exactly what the flows enabled at start use, except one more flow
    // and one more endpoint app.
    let tg = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&subscription_license(
            "SUB-EP",
            "endpoint",
            [4, 8, 2, 2],
            [1, 1, 1, 1],
        ))
        .start_toml(&pricing_world(), &[])
        .await;

    let check = |e: Value, context: &'static str| {
        assert_entitlement(
            &e,
            "production",
            "flows",
            Some(4),
            &["edi", "partners", "sync"],
            context,
        );
        assert_entitlement(
            &e,
            "production",
            "endpoint_apps",
            Some(8),
            &PRICING_ENDPOINTS,
            context,
        );
        assert_entitlement(
            &e,
            "production",
            "trading_partners",
            Some(2),
            &["as2.other.example", "partner.example.com"],
            context,
        );
        assert_entitlement(
            &e,
            "production",
            "agents",
            Some(2),
            &["agent-eu", "agent-us"],
            context,
        );
        for name in ["flows", "endpoint_apps", "trading_partners", "agents"] {
            assert_entitlement(&e, "sandbox", name, Some(1), &[], context);
        }
        assert_eq!(e["pricing"], "endpoint", "{e}");
        assert_eq!(e["unlimited"], false, "{e}");
    };
    check(tg.entitlements().await, "at start");
    for flow in tg.flows().await {
        let late = flow["id"].as_str().unwrap().ends_with("-late");
        assert_eq!(flow["enabled"], !late, "{flow}");
    }

    // A data loader on a new database and an integration app on a known app add nothing.
    assert_enabled(&tg.enable("load-late").await, "load-late");
    assert_enabled(&tg.enable("app-late").await, "app-late");
    check(
        tg.entitlements().await,
        "after a data loader and an integration app",
    );

    // A third trading partner is one too many, though there is room for the flow and its
    // endpoint app.
    let problem = tg
        .enable("edi-late")
        .await
        .assert_admin_problem(409, "entitlement-exceeded");
    assert_eq!(problem["entitlement"], "trading_partners", "{problem}");
    assert_eq!(problem["environment"], "production", "{problem}");
    assert_eq!(problem["in_use"], 2, "{problem}");
    assert_eq!(problem["limit"], 2, "{problem}");
    assert_eq!(problem["would_be"], 3, "{problem}");
    assert_eq!(tg.flow("edi-late").await["enabled"], false);
    check(tg.entitlements().await, "after the refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_pricing_counts_integration_apps_as_flows_and_no_trading_partners() {
    // No trading partners at all: under platform pricing they are not an entitlement.
    let tg = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&subscription_license(
            "SUB-PF",
            "platform",
            [5, 8, 0, 2],
            [1, 1, 1, 1],
        ))
        .start_toml(&pricing_world(), &[])
        .await;

    let e = tg.entitlements().await;
    assert_entitlement(
        &e,
        "production",
        "flows",
        Some(5),
        &["app", "edi", "partners", "sync"],
        "at start",
    );
    assert_entitlement(
        &e,
        "production",
        "endpoint_apps",
        Some(8),
        &PRICING_ENDPOINTS,
        "at start",
    );
    assert_entitlement(
        &e,
        "production",
        "trading_partners",
        Some(0),
        &[],
        "at start",
    );
    assert_entitlement(
        &e,
        "production",
        "agents",
        Some(2),
        &["agent-eu", "agent-us"],
        "at start",
    );
    assert_eq!(e["pricing"], "platform", "{e}");
    assert_eq!(e["unlimited"], false, "{e}");
    for flow in ["sync", "app", "load", "load2", "partners", "edi"] {
        assert_eq!(tg.flow(flow).await["enabled"], true, "{flow}");
    }

    // A data loader still never counts; a new trading partner is just an endpoint app.
    assert_enabled(&tg.enable("load-late").await, "load-late");
    assert_enabled(&tg.enable("edi-late").await, "edi-late");
    let e = tg.entitlements().await;
    assert_entitlement(
        &e,
        "production",
        "flows",
        Some(5),
        &["app", "edi", "edi-late", "partners", "sync"],
        "after edi-late",
    );
    let mut endpoints = PRICING_ENDPOINTS.to_vec();
    endpoints.push("as2:edi.third.example:443");
    assert_entitlement(
        &e,
        "production",
        "endpoint_apps",
        Some(8),
        &endpoints,
        "after edi-late",
    );
    assert_entitlement(
        &e,
        "production",
        "trading_partners",
        Some(0),
        &[],
        "after edi-late",
    );

    // The flows are full now: another integration app is refused as a flow.
    let problem = tg
        .enable("app-late")
        .await
        .assert_admin_problem(409, "entitlement-exceeded");
    assert_eq!(problem["entitlement"], "flows", "{problem}");
    assert_eq!(problem["environment"], "production", "{problem}");
    assert_eq!(problem["in_use"], 5, "{problem}");
    assert_eq!(problem["limit"], 5, "{problem}");
    assert_eq!(problem["would_be"], 6, "{problem}");
    assert_eq!(tg.flow("app-late").await["enabled"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sandbox_never_blocks_production_and_a_full_production_never_blocks_the_sandbox() {
    let target = Upstream::plain("target").await;
    let uri = format!("\"{}\"", target.base_uri());
    let mut toml = String::new();
    for (id, app, environment) in [
        ("ns-p", "netsuite", "production"),
        ("jira-p", "jira", "production"),
        ("sn-p", "servicenow", "production"),
        ("ns-s", "netsuite", "sandbox"),
        ("jira-s", "jira", "sandbox"),
        ("sn-s", "servicenow", "sandbox"),
    ] {
        let app = format!("\"{app}\"");
        let environment = format!("\"{environment}\"");
        toml.push_str(&toml_instance(
            id,
            "named",
            &[
                ("app", app.as_str()),
                ("base_uri", uri.as_str()),
                ("environment", environment.as_str()),
                ("agent", "\"agent-1\""),
            ],
        ));
    }
    for (id, environment, systems, enabled) in [
        ("sb-1", "sandbox", ["ns-s", "jira-s"], true),
        // Enabled in the config, but the sandbox has room for one flow only.
        ("sb-2", "sandbox", ["sn-s", "jira-s"], true),
        ("p-1", "production", ["ns-p", "jira-p"], true),
        ("p-2", "production", ["sn-p", "jira-p"], false),
    ] {
        toml.push_str(&toml_flow(id, "flow", environment, &systems, enabled));
    }
    let tg = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&subscription_license(
            "SUB-ENV",
            "endpoint",
            [2, 3, 0, 1],
            [1, 2, 0, 1],
        ))
        .start_toml(&toml, &[])
        .await;

    // The same apps and agent in both environments are counted in each, separately.
    let e = tg.entitlements().await;
    assert_entitlement(&e, "sandbox", "flows", Some(1), &["sb-1"], "at start");
    assert_entitlement(
        &e,
        "sandbox",
        "endpoint_apps",
        Some(2),
        &["app:jira", "app:netsuite"],
        "at start",
    );
    assert_entitlement(&e, "sandbox", "agents", Some(1), &["agent-1"], "at start");
    assert_entitlement(&e, "production", "flows", Some(2), &["p-1"], "at start");
    assert_entitlement(
        &e,
        "production",
        "endpoint_apps",
        Some(3),
        &["app:jira", "app:netsuite"],
        "at start",
    );
    assert_entitlement(
        &e,
        "production",
        "agents",
        Some(1),
        &["agent-1"],
        "at start",
    );
    let sb2 = tg.flow("sb-2").await;
    assert_eq!(sb2["enabled"], false, "{sb2}");
    assert_eq!(sb2["reason"], "entitlement-exceeded", "{sb2}");
    assert_eq!(sb2["environment"], "sandbox", "{sb2}");

    // The sandbox is full ...
    let problem = tg
        .enable("sb-2")
        .await
        .assert_admin_problem(409, "entitlement-exceeded");
    assert_eq!(problem["environment"], "sandbox", "{problem}");
    assert_eq!(problem["entitlement"], "flows", "{problem}");
    assert_eq!(problem["in_use"], 1, "{problem}");
    assert_eq!(problem["limit"], 1, "{problem}");
    assert_eq!(problem["would_be"], 2, "{problem}");

    // ... and production still takes a flow, which then passes requests.
    assert_enabled(&tg.enable("p-2").await, "p-2");
    tg.get("/sn-p/x", Some("p-2"))
        .await
        .assert_upstream_ok("target");
    let e = tg.entitlements().await;
    assert_entitlement(&e, "production", "flows", Some(2), &["p-1", "p-2"], "p-2");
    assert_entitlement(
        &e,
        "production",
        "endpoint_apps",
        Some(3),
        &["app:jira", "app:netsuite", "app:servicenow"],
        "p-2",
    );
    assert_entitlement(&e, "sandbox", "flows", Some(1), &["sb-1"], "p-2");

    // Production is full now; the sandbox swaps its flow all the same.
    tg.disable("sb-1").await;
    assert_enabled(&tg.enable("sb-2").await, "sb-2");
    tg.get("/sn-s/x", Some("sb-2"))
        .await
        .assert_upstream_ok("target");
    let e = tg.entitlements().await;
    assert_entitlement(&e, "sandbox", "flows", Some(1), &["sb-2"], "sb-2");
    assert_entitlement(
        &e,
        "sandbox",
        "endpoint_apps",
        Some(2),
        &["app:jira", "app:servicenow"],
        "sb-2",
    );
    assert_entitlement(&e, "production", "flows", Some(2), &["p-1", "p-2"], "sb-2");
    // Each environment still holds its own limit.
    let problem = tg
        .enable("sb-1")
        .await
        .assert_admin_problem(409, "entitlement-exceeded");
    assert_eq!(problem["environment"], "sandbox", "{problem}");
}

#[test]
fn check_prints_the_same_accounting_offline() {
    let builder = tollgate()
        .licensing_option("models = [\"subscription\"]")
        .license(&subscription_license(
            "SUB-CHECK",
            "endpoint",
            [3, 7, 1, 2],
            [0, 0, 0, 0],
        ));
    // The trading partners are one too many: `edi` (the most recently enabled user of that
    // entitlement, in config order) is refused.
    let run = builder.check_toml(&pricing_world());
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(
        run.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("Entitlements in use / limit (subscription licensing)"),
        "{stdout}"
    );
    let row = |environment: &str| -> Vec<String> {
        stdout
            .lines()
            .map(|line| {
                line.split('|')
                    .map(|cell| cell.trim().to_owned())
                    .filter(|cell| !cell.is_empty())
                    .collect::<Vec<String>>()
            })
            .find(|cells| cells.len() == 5 && cells[0] == environment && cells[1].contains(" / "))
            .unwrap_or_else(|| panic!("no entitlements row for {environment} in:\n{stdout}"))
    };
    // Without `edi`: sync and partners; its AS2 and plain FTP endpoints are gone; one partner.
    assert_eq!(
        row("production")[1..],
        ["2 / 3", "5 / 7", "1 / 1", "2 / 2"],
        "{stdout}"
    );
    assert_eq!(
        row("sandbox")[1..],
        ["0 / 0", "0 / 0", "0 / 0", "0 / 0"],
        "{stdout}"
    );
    let edi = stdout
        .lines()
        .find(|line| {
            line.split('|')
                .nth(1)
                .is_some_and(|cell| cell.trim() == "edi")
        })
        .unwrap_or_else(|| panic!("no row for flow edi in:\n{stdout}"));
    assert!(
        edi.contains(
            "refused: entitlement-exceeded (trading_partners in production: would be 2, limit 1)"
        ),
        "{edi}"
    );

    // Without a subscription requirement, nothing is limited.
    let unlimited = tollgate().license(&pair_license("LIC-1", "servicenow", "jira", 1));
    let run = unlimited.check_toml(&pricing_world());
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert_eq!(run.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("no limit"), "{stdout}");
}
