//! `tollgate check --config FILE` end to end: the real binary against the
//! committed example and against configurations and licenses built in scratch directories,
//! with licenses signed by the binary's own `license keygen` / `license sign` verbs.
//!
//! Tables are parsed into cells, so the assertions are exact without depending on column
//! widths. Cells that depend on the current time (days to expiry, the current month) are
//! computed here from the instants just before and just after the run.

pub mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, Utc};
use common::licenses::{during, pair_license, subscription_license, tamper, with, Issuer};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------

/// One run of the binary, with the instants around it for time-dependent cells.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    before: DateTime<Utc>,
    after: DateTime<Utc>,
}

fn tollgate<I: AsRef<OsStr>>(cwd: &Path, args: impl IntoIterator<Item = I>) -> Run {
    tollgate_as(cwd, args, None)
}

/// Runs the binary; with `host`, on a machine with that identity (`TOLLGATE_TEST_HOST`, which
/// only a binary built with the `test-clock` feature reads).
fn tollgate_as<I: AsRef<OsStr>>(
    cwd: &Path,
    args: impl IntoIterator<Item = I>,
    host: Option<&str>,
) -> Run {
    let before = Utc::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LOG")
        .env_remove("TOLLGATE_TEST_HOST");
    if let Some(host) = host {
        command.env("TOLLGATE_TEST_HOST", host);
    }
    let output = command.output().unwrap();
    let after = Utc::now();
    let run = Run {
        code: output
            .status
            .code()
            .expect("tollgate was killed by a signal"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        before,
        after,
    };
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"),
        "tollgate panicked:\n{}",
        run.stderr
    );
    run
}

fn check(config: &Path) -> Run {
    // Run from elsewhere: relative paths in the config must not depend on the working directory.
    tollgate(
        Path::new("/"),
        [OsStr::new("check"), "--config".as_ref(), config.as_os_str()],
    )
}

impl Run {
    fn report(&self) -> Report {
        Report::parse(&self.stdout)
    }

    /// Asserts exit 0 and nothing on stderr.
    fn assert_ok(&self) -> Report {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert_eq!(self.stderr, "", "stdout:\n{}", self.stdout);
        self.report()
    }

    /// Asserts that `actual` is what `expected` computes at the instant before the run or
    /// at the instant after it (a day or a month may turn while the binary runs).
    fn assert_at_run_time<T: PartialEq + std::fmt::Debug>(
        &self,
        actual: &T,
        expected: impl Fn(DateTime<Utc>) -> T,
    ) {
        if *actual != expected(self.before) {
            assert_eq!(*actual, expected(self.after), "stdout:\n{}", self.stdout);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing the report
// ---------------------------------------------------------------------------------------

/// A titled section: a markdown table, or `(none)`.
#[derive(Debug)]
struct Section {
    title: String,
    /// Empty for `(none)`.
    header: Vec<String>,
    /// Data rows, cells trimmed; empty for `(none)`.
    rows: Vec<Vec<String>>,
    none: bool,
}

/// `check`'s stdout: free lines (config, host identity, summary) and titled sections.
#[derive(Debug)]
struct Report {
    lines: Vec<String>,
    sections: Vec<Section>,
}

fn cells(line: &str) -> Vec<String> {
    let inner = line
        .trim()
        .strip_prefix('|')
        .and_then(|l| l.strip_suffix('|'))
        .unwrap_or_else(|| panic!("not a table line: {line:?}"));
    inner.split('|').map(|c| c.trim().to_owned()).collect()
}

impl Report {
    fn parse(stdout: &str) -> Report {
        let lines: Vec<&str> = stdout.lines().collect();
        let mut report = Report {
            lines: Vec::new(),
            sections: Vec::new(),
        };
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            let next = lines.get(i + 1).copied().unwrap_or("");
            if line.is_empty() {
                i += 1;
                continue;
            }
            assert!(!line.starts_with('|'), "table without a title: {line:?}");
            if next == "  (none)" {
                report.sections.push(Section {
                    title: line.to_owned(),
                    header: Vec::new(),
                    rows: Vec::new(),
                    none: true,
                });
                i += 2;
            } else if next.starts_with('|') {
                let mut j = i + 1;
                let mut table = Vec::new();
                while j < lines.len() && lines[j].starts_with('|') {
                    table.push(lines[j]);
                    j += 1;
                }
                assert!(table.len() >= 2, "table without separator: {table:?}");
                assert!(
                    table[1].chars().all(|c| matches!(c, '|' | '-' | ':')),
                    "second table line is not a separator: {:?}",
                    table[1]
                );
                let header = cells(table[0]);
                let rows: Vec<Vec<String>> = table[2..].iter().map(|l| cells(l)).collect();
                for row in &rows {
                    assert_eq!(row.len(), header.len(), "ragged row {row:?}");
                }
                report.sections.push(Section {
                    title: line.to_owned(),
                    header,
                    rows,
                    none: false,
                });
                i = j;
            } else {
                report.lines.push(line.to_owned());
                i += 1;
            }
        }
        report
    }

    fn titles(&self) -> Vec<&str> {
        self.sections.iter().map(|s| s.title.as_str()).collect()
    }

    fn section(&self, title_prefix: &str) -> &Section {
        let found: Vec<&Section> = self
            .sections
            .iter()
            .filter(|s| s.title.starts_with(title_prefix))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "sections starting with {title_prefix:?}: {:?}",
            self.titles()
        );
        found[0]
    }

    fn rows(&self, title_prefix: &str) -> Vec<Vec<String>> {
        let section = self.section(title_prefix);
        assert!(!section.none, "section {:?} is (none)", section.title);
        section.rows.clone()
    }

    /// The rows of a section, only the given columns (by header name).
    fn columns(&self, title_prefix: &str, names: &[&str]) -> Vec<Vec<String>> {
        let section = self.section(title_prefix);
        let indexes: Vec<usize> = names
            .iter()
            .map(|name| {
                section
                    .header
                    .iter()
                    .position(|h| h == name)
                    .unwrap_or_else(|| panic!("no column {name:?} in {:?}", section.header))
            })
            .collect();
        section
            .rows
            .iter()
            .map(|row| indexes.iter().map(|&i| row[i].clone()).collect())
            .collect()
    }

    /// The last line: the summary.
    fn summary(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }
}

/// A table row written as the report shows it: cells separated by `" | "`.
fn row(cells: &str) -> Vec<String> {
    cells.split(" | ").map(str::to_owned).collect()
}

fn table(rows: &[&str]) -> Vec<Vec<String>> {
    rows.iter().map(|r| row(r)).collect()
}

const LICENSES_HEADER: [&str; 8] = [
    "license",
    "kind",
    "covers",
    "points used/total",
    "records/month",
    "bound to",
    "expires",
    "state",
];
const FLOWS_HEADER: [&str; 7] = [
    "flow",
    "kind",
    "environment",
    "pair",
    "systems",
    "license",
    "state",
];
const ENDPOINTS_HEADER: [&str; 3] = ["environment", "endpoint key", "instances"];
const ENTITLEMENTS_HEADER: [&str; 5] = [
    "environment",
    "active flows",
    "endpoint apps",
    "trading partners",
    "agents",
];
const RECORDS_HEADER: [&str; 6] = [
    "license",
    "monthly limit",
    "warning at",
    "hard limit",
    "month",
    "resets at",
];
const PAIR_ONLY_ENTITLEMENTS: &str =
    "Entitlements in use / limit (not enforced: licensing.models has no \"subscription\")";

/// The `expires` cell: the instant in UTC and whole days left (negative once expired).
fn expires_cell(expire: &str, now: DateTime<Utc>) -> String {
    let expire = DateTime::parse_from_rfc3339(expire)
        .unwrap()
        .with_timezone(&Utc);
    format!(
        "{} ({} days)",
        expire.format("%Y-%m-%d %H:%M UTC"),
        (expire - now).num_days()
    )
}

/// A licenses-table row whose `EXPIRES` cell is [`expires_cell`] of `expire` at `now`.
fn license_row(cells: &str, expire: &str, now: DateTime<Utc>) -> Vec<String> {
    row(&cells.replace("EXPIRES", &expires_cell(expire, now)))
}

/// The `month` and `resets at` cells for a zone at a fixed offset from UTC without daylight
/// saving time (`UTC`, `Asia/Tokyo`), computed independently of the product's month code.
fn month_cells(now: DateTime<Utc>, offset_hours: i64, abbreviation: &str) -> [String; 2] {
    let local = (now + Duration::hours(offset_hours)).date_naive();
    let first = NaiveDate::from_ymd_opt(local.year(), local.month(), 1).unwrap();
    let next = first + Months::new(1);
    [
        format!(
            "{} (from {} 00:00 {abbreviation})",
            first.format("%Y-%m"),
            first.format("%Y-%m-%d")
        ),
        format!("{} 00:00 {abbreviation}", next.format("%Y-%m-%d")),
    ]
}

// ---------------------------------------------------------------------------------------
// Scratch configurations and licenses
// ---------------------------------------------------------------------------------------

/// A scratch directory with an issuer key pair (`issuer/`), an admin token, a license
/// directory (`licenses/`) and a config file (`tollgate.toml`) written per test.
struct Scratch {
    dir: tempfile::TempDir,
    issuer: Issuer,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::new(&dir.path().join("issuer"));
        std::fs::write(dir.path().join("admin.token"), "secret\n").unwrap();
        std::fs::create_dir(dir.path().join("licenses")).unwrap();
        Scratch { dir, issuer }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config_path(&self) -> PathBuf {
        self.path("tollgate.toml")
    }

    /// The standard sections with extra `[licensing]` keys, then `body`.
    fn text(licensing_extra: &str, body: &str) -> String {
        format!(
            r#"[server]
listen = "127.0.0.1:8080"

[admin]
listen = "127.0.0.1:9901"
token_file = "admin.token"

[licensing]
public_keys = ["issuer/issuer.pub"]
license_dir = "licenses"
{licensing_extra}
{body}"#
        )
    }

    /// Writes the config file; returns its path.
    fn write_config(&self, text: &str) -> PathBuf {
        std::fs::write(self.config_path(), text).unwrap();
        self.config_path()
    }

    fn config(&self, licensing_extra: &str, body: &str) -> PathBuf {
        self.write_config(&Scratch::text(licensing_extra, body))
    }

    /// Signs `payload` with the scratch issuer into `licenses/<file>`.
    fn license(&self, file: &str, payload: &Value) -> PathBuf {
        install(&self.issuer, &self.path("licenses").join(file), payload)
    }

    fn check(&self) -> Run {
        check(&self.config_path())
    }

    /// `check` on a machine known by `host` (comma-separated names and addresses).
    fn check_as(&self, host: &str) -> Run {
        let config = self.config_path();
        tollgate_as(
            Path::new("/"),
            [OsStr::new("check"), "--config".as_ref(), config.as_os_str()],
            Some(host),
        )
    }
}

/// Signs `payload` by `issuer` into the license file `out` (the payload file the signing
/// needs stays in the issuer's directory, so none lands beside the license).
fn install(issuer: &Issuer, out: &Path, payload: &Value) -> PathBuf {
    std::fs::write(out, issuer.sign(payload)).unwrap();
    out.to_owned()
}

/// An unbound pair license payload without a records limit, valid from `start` to `expire`.
fn pair(id: &str, a: &str, b: &str, points: u32, start: &str, expire: &str) -> Value {
    during(pair_license(id, a, b, points), start, expire)
}

const LONG_AGO: &str = "2020-01-01T00:00:00Z";
const EXPIRED: &str = "2021-01-01T00:00:00Z";
const EARLY: &str = "2080-01-01T00:00:00Z";
const LATE: &str = "2090-01-01T00:00:00Z";
const FUTURE_START: &str = "2088-01-01T00:00:00Z";

/// Subscription `SUB-0001` with `pricing`, free of limits until `unlimited_until`.
fn subscription(pricing: &str, unlimited_until: &str) -> Value {
    let payload = subscription_license("SUB-0001", pricing, [10, 6, 2, 3], [5, 3, 1, 1]);
    with(
        during(payload, LONG_AGO, LATE),
        "unlimited_until",
        unlimited_until,
    )
}

/// Four named instances: ServiceNow 1 and 2, Jira 1 and 2.
const SN_JIRA: &str = r#"
[[instances]]
id = "sn-1"
connector = "named"
app = "servicenow"
base_uri = "https://sn1.example"

[[instances]]
id = "sn-2"
connector = "named"
app = "ServiceNow"
base_uri = "https://sn-2.example"

[[instances]]
id = "jira-1"
connector = "named"
app = "jira"
base_uri = "https://jira-1.example"

[[instances]]
id = "jira-2"
connector = "named"
app = "Jira"
base_uri = "https://jira-2.example"
"#;

// ---------------------------------------------------------------------------------------
// 1. The committed example
// ---------------------------------------------------------------------------------------

#[test]
fn the_example_config_checks_and_refuses_the_third_pair() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = tollgate(root, ["check", "--config", "config/tollgate.toml"]);
    let report = run.assert_ok();

    assert_eq!(
        report.titles(),
        [
            "Licenses in config/licenses",
            "Flows (enabled in config order)",
            "Bulk loads (counted by their records; bodies read up to 16777216 bytes)",
            "Endpoint apps of enabled flows",
            PAIR_ONLY_ENTITLEMENTS,
            "Transferred-records limits (months in UTC)",
        ]
    );
    assert_eq!(report.lines.len(), 4, "{:?}", report.lines);
    assert_eq!(
        report.lines[0],
        "configuration config/tollgate.toml is valid"
    );
    // No licensing.host: the identity is detected and names at least this machine.
    let hostname = gethostname::gethostname()
        .to_string_lossy()
        .to_ascii_lowercase();
    let identity = report.lines[1]
        .strip_prefix("host identity: ")
        .unwrap_or_else(|| panic!("{:?}", report.lines[1]));
    assert!(
        identity.split(", ").any(|entry| entry == hostname),
        "{identity:?} does not name {hostname:?}"
    );
    assert_eq!(report.lines[2], "state: embedded store in config/state");
    assert_eq!(report.summary(), "4 flows: 3 would be enabled, 1 refused");

    let licenses = report.section("Licenses in ");
    assert_eq!(licenses.header, LICENSES_HEADER);
    run.assert_at_run_time(&licenses.rows, |now| {
        vec![license_row(
            "LIC-DEMO | pair | servicenow ↔ jira | 2/2 | 100000 | unbound | EXPIRES | valid",
            "2031-01-01T00:00:00Z",
            now,
        )]
    });

    let flows = report.section("Flows");
    assert_eq!(flows.header, FLOWS_HEADER);
    assert_eq!(
        flows.rows,
        table(&[
            "incidents | flow | production | jira-1 ↔ servicenow-1 | jira ↔ servicenow | LIC-DEMO | enabled",
            "changes | flow | production | jira-1 ↔ servicenow-1 | jira ↔ servicenow | LIC-DEMO | enabled",
            "problems | flow | production | jira-2 ↔ servicenow-2 | jira ↔ servicenow | LIC-DEMO | enabled",
            "escalations | flow | production | jira-2 ↔ servicenow-1 | jira ↔ servicenow | - | refused: points-exhausted",
        ])
    );

    let bulk = report.section("Bulk loads");
    assert_eq!(
        bulk.header,
        row("flow | instance | load | records | counted")
    );
    assert_eq!(
        bulk.rows,
        table(&[
            "incidents | jira-1 | POST /rest/api/2/issue/bulk | elements of /issueUpdates | elements of /issues in a 2xx",
            "changes | servicenow-1 | POST /api/now/import/{table}/insertMultiple | elements of /records | every record, on a 2xx",
        ])
    );

    let endpoints = report.section("Endpoint apps of enabled flows");
    assert_eq!(endpoints.header, ENDPOINTS_HEADER);
    assert_eq!(
        endpoints.rows,
        table(&[
            "production | app:jira | jira-1, jira-2",
            "production | app:servicenow | servicenow-1, servicenow-2",
        ])
    );

    let entitlements = report.section(PAIR_ONLY_ENTITLEMENTS);
    assert_eq!(entitlements.header, ENTITLEMENTS_HEADER);
    assert_eq!(
        entitlements.rows,
        table(&[
            "production | 3 / no limit | 2 / no limit | 0 / no limit | 0 / no limit",
            "sandbox | 0 / no limit | 0 / no limit | 0 / no limit | 0 / no limit",
        ])
    );

    let records = report.section("Transferred-records limits");
    assert_eq!(records.header, RECORDS_HEADER);
    run.assert_at_run_time(&records.rows, |now| {
        let [month, resets] = month_cells(now, 0, "UTC");
        vec![row(&format!(
            "LIC-DEMO | 100000 | 100000 | 110000 | {month} | {resets}"
        ))]
    });
}

#[test]
fn the_example_config_checks_from_its_own_directory_too() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let run = tollgate(&dir, ["check", "--config", "tollgate.toml"]);
    let report = run.assert_ok();
    assert_eq!(report.lines[0], "configuration tollgate.toml is valid");
    assert_eq!(report.summary(), "4 flows: 3 would be enabled, 1 refused");
    assert_eq!(report.section("Licenses in ").title, "Licenses in licenses");
}

// ---------------------------------------------------------------------------------------
// 2. Points, validity, subscriptions and endpoint apps in scratch configs
// ---------------------------------------------------------------------------------------

#[test]
fn licenses_for_one_system_pair_add_up_and_the_first_to_expire_lends_first() {
    let scratch = Scratch::new();
    scratch.config(
        "timezone = \"Asia/Tokyo\"",
        &format!(
            r#"{SN_JIRA}
[[flows]]
id = "first"
systems = ["sn-1", "jira-1"]

[[flows]]
id = "same-pair"
environment = "production"
systems = ["jira-1", "sn-1"]

[[flows]]
id = "second"
systems = ["sn-1", "jira-2"]

[[flows]]
id = "third"
systems = ["sn-2", "jira-2"]

[[flows]]
id = "off"
systems = ["sn-2", "jira-1"]
enabled = false
"#
        ),
    );
    // File order is not expiry order: the later license is read first.
    scratch.license(
        "a-late.lic",
        &with(
            pair("LIC-LATE", "jira", "ServiceNow", 1, LONG_AGO, LATE),
            "transferred_records",
            json!(1005),
        ),
    );
    scratch.license(
        "b-early.lic",
        &pair("LIC-EARLY", "servicenow", "jira", 1, LONG_AGO, EARLY),
    );
    // Expired with many points: lends none, and the pair left over is exhausted, not invalid.
    scratch.license(
        "c-old.lic",
        &pair("LIC-OLD", "servicenow", "jira", 5, LONG_AGO, EXPIRED),
    );

    let run = scratch.check();
    let report = run.assert_ok();
    assert_eq!(
        report.lines[0],
        format!("configuration {} is valid", scratch.config_path().display())
    );
    assert_eq!(report.summary(), "5 flows: 3 would be enabled, 1 refused");
    assert_eq!(
        report.section("Licenses in ").title,
        format!("Licenses in {}", scratch.path("licenses").display())
    );
    run.assert_at_run_time(&report.rows("Licenses in "), |now| {
        vec![
            license_row("LIC-EARLY | pair | servicenow ↔ jira | 1/1 | unlimited | unbound | EXPIRES | valid", EARLY, now),
            license_row("LIC-LATE | pair | jira ↔ ServiceNow | 1/1 | 1005 | unbound | EXPIRES | valid", LATE, now),
            license_row("LIC-OLD | pair | servicenow ↔ jira | 0/5 | unlimited | unbound | EXPIRES | expired", EXPIRED, now),
        ]
    });
    assert_eq!(
        report.rows("Flows"),
        table(&[
            "first | flow | production | jira-1 ↔ sn-1 | jira ↔ servicenow | LIC-EARLY | enabled",
            "same-pair | flow | production | jira-1 ↔ sn-1 | jira ↔ servicenow | LIC-EARLY | enabled",
            "second | flow | production | jira-2 ↔ sn-1 | jira ↔ servicenow | LIC-LATE | enabled",
            "third | flow | production | jira-2 ↔ sn-2 | jira ↔ servicenow | - | refused: points-exhausted",
            "off | flow | production | jira-1 ↔ sn-2 | jira ↔ servicenow | - | disabled (operator)",
        ])
    );
    assert_eq!(
        report.columns("Endpoint apps", &["environment", "endpoint key"]),
        table(&["production | app:jira", "production | app:servicenow"])
    );
    assert_eq!(
        report.rows(PAIR_ONLY_ENTITLEMENTS),
        table(&[
            "production | 3 / no limit | 2 / no limit | 0 / no limit | 0 / no limit",
            "sandbox | 0 / no limit | 0 / no limit | 0 / no limit | 0 / no limit",
        ])
    );
    // Only the license with a limit; hard limit = limit + limit / 10 with integer division.
    let records = report.section("Transferred-records limits");
    assert_eq!(
        records.title,
        "Transferred-records limits (months in Asia/Tokyo)"
    );
    run.assert_at_run_time(&records.rows, |now| {
        let [month, resets] = month_cells(now, 9, "JST");
        vec![row(&format!(
            "LIC-LATE | 1005 | 1005 | 1105 | {month} | {resets}"
        ))]
    });
}

#[test]
fn licenses_expiring_together_lend_by_lowest_id() {
    let scratch = Scratch::new();
    scratch.config(
        "",
        &format!(
            r#"{SN_JIRA}
[[flows]]
id = "one"
systems = ["sn-1", "jira-1"]

[[flows]]
id = "two"
systems = ["sn-2", "jira-2"]

[[flows]]
id = "three"
systems = ["sn-1", "jira-2"]
"#
        ),
    );
    scratch.license(
        "a.lic",
        &pair("LIC-Y", "servicenow", "jira", 1, LONG_AGO, LATE),
    );
    scratch.license(
        "b.lic",
        &pair("LIC-X", "servicenow", "jira", 1, LONG_AGO, LATE),
    );
    let report = scratch.check().assert_ok();
    assert_eq!(
        report.columns("Licenses in ", &["license", "points used/total"]),
        table(&["LIC-X | 1/1", "LIC-Y | 1/1"])
    );
    assert_eq!(
        report.columns("Flows", &["flow", "license", "state"]),
        table(&[
            "one | LIC-X | enabled",
            "two | LIC-Y | enabled",
            "three | - | refused: points-exhausted",
        ])
    );
    assert_eq!(report.summary(), "3 flows: 2 would be enabled, 1 refused");
    assert!(report.section("Transferred-records limits").none);
}

#[test]
#[cfg_attr(
    not(feature = "test-clock"),
    ignore = "plays a host named integration-host.acme.example: needs the test-clock feature"
)]
fn invalid_licenses_refuse_their_flows_with_the_reason() {
    let scratch = Scratch::new();
    scratch.config(
        r#"host = ["Integration-Host.ACME.example.", "10.1.2.3"]"#,
        r#"
[[instances]]
id = "sn-1"
connector = "named"
app = "servicenow"
base_uri = "https://sn-1.example"

[[instances]]
id = "jira-1"
connector = "named"
app = "jira"
base_uri = "https://jira-1.example"

[[instances]]
id = "ns-1"
connector = "named"
app = "netsuite"
base_uri = "https://ns-1.example"

[[instances]]
id = "sf-1"
connector = "named"
app = "salesforce"
base_uri = "https://sf-1.example"

[[instances]]
id = "zd-1"
connector = "named"
app = "zendesk"
base_uri = "https://zd-1.example"

[[instances]]
id = "hs-1"
connector = "named"
app = "hubspot"
base_uri = "https://hs-1.example"

[[instances]]
id = "db"
connector = "rdbms"
engine = "postgres"
host = "db.example"

[[flows]]
id = "expired"
systems = ["sn-1", "jira-1"]

[[flows]]
id = "future"
systems = ["ns-1", "sn-1"]

[[flows]]
id = "elsewhere"
systems = ["sf-1", "jira-1"]

[[flows]]
id = "uncovered"
systems = ["zd-1", "jira-1"]

[[flows]]
id = "bound-ip"
systems = ["zd-1", "sn-1"]

[[flows]]
id = "bound-name"
systems = ["jira-1", "hs-1"]

[[flows]]
id = "loader"
kind = "data-loader"
systems = ["db"]
"#,
    );
    scratch.license(
        "LIC-OLD.lic",
        &pair("LIC-OLD", "servicenow", "jira", 3, LONG_AGO, EXPIRED),
    );
    scratch.license(
        "LIC-FUTURE.lic",
        &pair(
            "LIC-FUTURE",
            "netsuite",
            "servicenow",
            3,
            FUTURE_START,
            LATE,
        ),
    );
    scratch.license(
        "LIC-HOST.lic",
        &with(
            pair("LIC-HOST", "salesforce", "jira", 3, LONG_AGO, LATE),
            "bound_to",
            json!("other-host.acme.example"),
        ),
    );
    // Covers zendesk ↔ servicenow, not zendesk ↔ jira.
    scratch.license(
        "LIC-IP.lic",
        &with(
            pair("LIC-IP", "zendesk", "servicenow", 3, LONG_AGO, LATE),
            "bound_to",
            json!("10.1.2.3"),
        ),
    );
    scratch.license(
        "LIC-NAME.lic",
        &with(
            pair("LIC-NAME", "hubspot", "jira", 3, LONG_AGO, LATE),
            "bound_to",
            json!("INTEGRATION-HOST.acme.example"),
        ),
    );

    // The config may claim the names and addresses the machine has.
    let run = scratch.check_as("integration-host.acme.example,10.1.2.3");
    let report = run.assert_ok();
    assert_eq!(
        report.lines[1],
        "host identity: integration-host.acme.example, 10.1.2.3"
    );
    assert_eq!(report.summary(), "7 flows: 3 would be enabled, 4 refused");
    run.assert_at_run_time(&report.rows("Licenses in "), |now| {
        // In license-id order.
        vec![
            license_row("LIC-FUTURE | pair | netsuite ↔ servicenow | 0/3 | unlimited | unbound | EXPIRES | not-yet-valid", LATE, now),
            license_row("LIC-HOST | pair | salesforce ↔ jira | 0/3 | unlimited | other-host.acme.example | EXPIRES | wrong-host", LATE, now),
            license_row("LIC-IP | pair | zendesk ↔ servicenow | 1/3 | unlimited | 10.1.2.3 | EXPIRES | valid", LATE, now),
            license_row("LIC-NAME | pair | hubspot ↔ jira | 1/3 | unlimited | INTEGRATION-HOST.acme.example | EXPIRES | valid", LATE, now),
            license_row("LIC-OLD | pair | servicenow ↔ jira | 0/3 | unlimited | unbound | EXPIRES | expired", EXPIRED, now),
        ]
    });
    assert_eq!(
        report.rows("Flows"),
        table(&[
            "expired | flow | production | jira-1 ↔ sn-1 | jira ↔ servicenow | - | refused: license-invalid (expired)",
            "future | flow | production | ns-1 ↔ sn-1 | netsuite ↔ servicenow | - | refused: license-invalid (not-yet-valid)",
            "elsewhere | flow | production | jira-1 ↔ sf-1 | jira ↔ salesforce | - | refused: license-invalid (wrong-host)",
            "uncovered | flow | production | jira-1 ↔ zd-1 | jira ↔ zendesk | - | refused: license-invalid (missing)",
            "bound-ip | flow | production | sn-1 ↔ zd-1 | servicenow ↔ zendesk | LIC-IP | enabled",
            "bound-name | flow | production | hs-1 ↔ jira-1 | hubspot ↔ jira | LIC-NAME | enabled",
            "loader | data-loader | production | - | - | - | enabled",
        ])
    );
    assert!(report.section("Transferred-records limits").none);
}

#[test]
fn without_licensing_host_a_bound_license_is_on_the_wrong_host() {
    let scratch = Scratch::new();
    scratch.config(
        "",
        &format!(
            r#"{SN_JIRA}
[[flows]]
id = "f"
systems = ["sn-1", "jira-1"]
"#
        ),
    );
    // The detected identity never includes a reserved .invalid name.
    scratch.license(
        "l.lic",
        &with(
            pair("LIC-1", "servicenow", "jira", 1, LONG_AGO, LATE),
            "bound_to",
            json!("integration-host.acme.invalid"),
        ),
    );
    let report = scratch.check().assert_ok();
    assert_eq!(
        report.columns("Licenses in ", &["license", "bound to", "state"]),
        table(&["LIC-1 | integration-host.acme.invalid | wrong-host"])
    );
    assert_eq!(
        report.columns("Flows", &["flow", "state"]),
        table(&["f | refused: license-invalid (wrong-host)"])
    );
    assert_eq!(report.summary(), "1 flows: 0 would be enabled, 1 refused");
}

/// Instances of every kind the endpoint rules distinguish, and flows of every kind.
const MIXED: &str = r#"
[[instances]]
id = "ns-1"
connector = "named"
app = "netsuite"
base_uri = "https://ns-1.example"
agent = "agent-1"

[[instances]]
id = "ns-2"
connector = "named"
app = "NetSuite"
base_uri = "https://ns-2.example"
agent = "agent-1"

[[instances]]
id = "db"
connector = "rdbms"
engine = "MySQL"
host = "DB.example.com"

[[instances]]
id = "ftp-21"
connector = "ftp"
host = "ftp.partner.example"
trading_partner = true

[[instances]]
id = "ftp-2121"
connector = "ftp"
host = "FTP.partner.example"
port = 2121
trading_partner = true

[[instances]]
id = "hook"
connector = "webhook"

[[instances]]
id = "Wrap-1"
connector = "wrapper"

[[instances]]
id = "snow"
connector = "snowflake"
account = "ACME"
agent = "agent-9"

[[instances]]
id = "sb-jira"
connector = "named"
app = "jira"
base_uri = "https://sb-jira.example"
environment = "sandbox"

[[instances]]
id = "sb-ns"
connector = "named"
app = "netsuite"
base_uri = "https://sb-ns.example"
environment = "sandbox"

[[flows]]
id = "orders"
systems = ["ns-1", "ftp-21"]

[[flows]]
id = "invoices"
systems = ["ns-2", "ftp-2121"]

[[flows]]
id = "sync"
systems = ["db", "hook"]

[[flows]]
id = "app"
kind = "integration-app"
systems = ["Wrap-1", "ns-1"]

[[flows]]
id = "load"
kind = "data-loader"
systems = ["snow"]

[[flows]]
id = "sb"
environment = "sandbox"
systems = ["sb-jira", "sb-ns"]

[[flows]]
id = "off"
enabled = false
systems = ["ns-1", "db"]
"#;

#[test]
fn a_subscription_shows_its_pricing_and_limits_and_the_endpoint_apps_in_use() {
    let scratch = Scratch::new();
    scratch.config(r#"models = ["subscription"]"#, MIXED);
    scratch.license("sub.lic", &subscription("endpoint", "2021-01-31T00:00:00Z"));

    let run = scratch.check();
    let report = run.assert_ok();
    assert_eq!(
        report.titles()[3],
        "Entitlements in use / limit (subscription licensing)"
    );
    run.assert_at_run_time(&report.rows("Licenses in "), |now| {
        vec![license_row(
            "SUB-0001 | subscription | endpoint pricing | - | - | unbound | EXPIRES | valid",
            LATE,
            now,
        )]
    });
    assert_eq!(
        report.rows("Flows"),
        table(&[
            "orders | flow | production | ftp-21 ↔ ns-1 | ftp ↔ netsuite | - | enabled",
            "invoices | flow | production | ftp-2121 ↔ ns-2 | ftp ↔ netsuite | - | enabled",
            "sync | flow | production | db ↔ hook | rdbms ↔ webhook | - | enabled",
            "app | integration-app | production | Wrap-1 ↔ ns-1 | netsuite ↔ wrapper | - | enabled",
            "load | data-loader | production | - | - | - | enabled",
            "sb | flow | sandbox | sb-jira ↔ sb-ns | jira ↔ netsuite | - | enabled",
            "off | flow | production | db ↔ ns-1 | netsuite ↔ rdbms | - | disabled (operator)",
        ])
    );
    // Two NetSuite instances are one endpoint; FTP ports 21 (default) and 2121 are two;
    // the webhook is none; the data loader's Snowflake instance is not considered.
    assert_eq!(
        report.rows("Endpoint apps of enabled flows"),
        table(&[
            "production | app:netsuite | ns-1, ns-2",
            "production | ftp:ftp.partner.example:21 | ftp-21",
            "production | ftp:ftp.partner.example:2121 | ftp-2121",
            "production | rdbms:mysql:db.example.com | db",
            "production | wrapper:wrap-1 | Wrap-1",
            "sandbox | app:jira | sb-jira",
            "sandbox | app:netsuite | sb-ns",
        ])
    );
    // Endpoint pricing: the integration app is no active flow, the data loader never is;
    // one trading partner whatever the port; agents include the data loader's.
    assert_eq!(
        report.rows("Entitlements in use / limit"),
        table(&[
            "production | 3 / 10 | 5 / 6 | 1 / 2 | 2 / 3",
            "sandbox | 1 / 5 | 2 / 3 | 0 / 1 | 0 / 1",
        ])
    );
    assert!(report.section("Transferred-records limits").none);
    assert_eq!(report.summary(), "7 flows: 6 would be enabled, 0 refused");

    // Platform pricing: the integration app counts as a flow, trading partners do not.
    scratch.license("sub.lic", &subscription("platform", "2021-01-31T00:00:00Z"));
    let report = scratch.check().assert_ok();
    assert_eq!(
        report.columns("Licenses in ", &["license", "covers"]),
        table(&["SUB-0001 | platform pricing"])
    );
    assert_eq!(
        report.rows("Entitlements in use / limit"),
        table(&[
            "production | 4 / 10 | 5 / 6 | 0 / 2 | 2 / 3",
            "sandbox | 1 / 5 | 2 / 3 | 0 / 1 | 0 / 1",
        ])
    );

    // In the free period there are no limits.
    scratch.license("sub.lic", &subscription("endpoint", "2089-01-01T00:00:00Z"));
    let report = scratch.check().assert_ok();
    assert_eq!(
        report.rows("Entitlements in use / limit"),
        table(&[
            "production | 3 / no limit | 5 / no limit | 1 / no limit | 2 / no limit",
            "sandbox | 1 / no limit | 2 / no limit | 0 / no limit | 0 / no limit",
        ])
    );
}

#[test]
fn a_missing_license_directory_holds_no_licenses() {
    let scratch = Scratch::new();
    std::fs::remove_dir(scratch.path("licenses")).unwrap();
    scratch.config(
        "",
        &format!(
            r#"{SN_JIRA}
[[flows]]
id = "f"
systems = ["sn-1", "jira-1"]
"#
        ),
    );
    let report = scratch.check().assert_ok();
    assert!(report.section("Licenses in ").none);
    assert!(report.section("Endpoint apps of enabled flows").none);
    assert_eq!(
        report.columns("Flows", &["flow", "license", "state"]),
        table(&["f | - | refused: license-invalid (missing)"])
    );
    assert_eq!(report.summary(), "1 flows: 0 would be enabled, 1 refused");
}

// ---------------------------------------------------------------------------------------
// 3. License files that are rejected
// ---------------------------------------------------------------------------------------

/// Two pairs of flows and one good license with one point.
fn scratch_with_a_good_license() -> (Scratch, PathBuf) {
    let scratch = Scratch::new();
    scratch.config(
        "",
        &format!(
            r#"{SN_JIRA}
[[flows]]
id = "one"
systems = ["sn-1", "jira-1"]

[[flows]]
id = "two"
systems = ["sn-2", "jira-2"]
"#
        ),
    );
    let good = scratch.license(
        "a-good.lic",
        &pair("LIC-GOOD", "servicenow", "jira", 1, LONG_AGO, LATE),
    );
    (scratch, good)
}

/// A second issuer, not trusted by the scratch config; signs `payload` into `licenses/<file>`.
fn stranger_license(scratch: &Scratch, file: &str, payload: &Value) -> (PathBuf, String) {
    let stranger = Issuer::new(&scratch.path("stranger"));
    let out = install(&stranger, &scratch.path("licenses").join(file), payload);
    (out, stranger.kid())
}

/// The good license and its flows are still reported when other files are rejected.
fn assert_good_license_reported(report: &Report) {
    assert_eq!(
        report.columns("Licenses in ", &["license", "points used/total", "state"]),
        table(&["LIC-GOOD | 1/1 | valid"])
    );
    assert_eq!(
        report.columns("Flows", &["flow", "license", "state"]),
        table(&[
            "one | LIC-GOOD | enabled",
            "two | - | refused: points-exhausted",
        ])
    );
    assert_eq!(report.summary(), "2 flows: 1 would be enabled, 1 refused");
}

#[test]
fn each_kind_of_bad_license_file_fails_check_naming_the_file() {
    type Make = fn(&Scratch, &Path) -> (PathBuf, String);
    let cases: Vec<(&str, Make)> = vec![
        ("tampered payload", |scratch, good| {
            let bad = scratch.path("licenses/b-tampered.lic");
            std::fs::copy(good, &bad).unwrap();
            tamper(&bad, |envelope| {
                let payload = STANDARD
                    .decode(envelope["payload"].as_str().unwrap())
                    .unwrap();
                let mut payload: Value = serde_json::from_slice(&payload).unwrap();
                payload["id"] = json!("LIC-MORE");
                payload["points"] = json!(50);
                envelope["payload"] = json!(STANDARD.encode(payload.to_string()));
            });
            (
                bad,
                "invalid signature: the license was altered or signed by another key".into(),
            )
        }),
        (
            "signed by a stranger claiming the trusted kid",
            |scratch, _| {
                let (bad, _) = stranger_license(
                    scratch,
                    "b-forged.lic",
                    &pair("LIC-FORGED", "servicenow", "jira", 9, LONG_AGO, LATE),
                );
                let trusted = scratch.issuer.kid();
                tamper(&bad, |envelope| envelope["kid"] = json!(trusted));
                (
                    bad,
                    "invalid signature: the license was altered or signed by another key".into(),
                )
            },
        ),
        ("unknown kid", |scratch, _| {
            let (bad, kid) = stranger_license(
                scratch,
                "b-stranger.lic",
                &pair("LIC-STRANGER", "servicenow", "jira", 9, LONG_AGO, LATE),
            );
            (bad, format!("signed by unknown issuer key {kid}"))
        }),
        ("garbage", |scratch, _| {
            let bad = scratch.path("licenses/b-garbage.lic");
            std::fs::write(&bad, "this is not a license\n").unwrap();
            (
                bad,
                "missing the -----BEGIN TOLLGATE LICENSE----- line".into(),
            )
        }),
        ("duplicate id", |scratch, good| {
            let bad = scratch.license(
                "b-duplicate.lic",
                &pair("LIC-GOOD", "servicenow", "jira", 7, LONG_AGO, EARLY),
            );
            (
                bad,
                format!(
                    "license id \"LIC-GOOD\" is already installed from {}",
                    good.display()
                ),
            )
        }),
    ];
    for (name, make) in cases {
        let (scratch, good) = scratch_with_a_good_license();
        let (bad, reason) = make(&scratch, &good);
        let run = scratch.check();
        assert_eq!(run.code, 1, "{name}: {}", run.stderr);
        assert_eq!(
            run.stderr,
            format!("tollgate: {}: {reason}\n", bad.display()),
            "{name}"
        );
        assert_good_license_reported(&run.report());
    }
}

#[test]
fn every_rejected_file_is_named_and_other_files_are_ignored() {
    let (scratch, good) = scratch_with_a_good_license();
    std::fs::copy(&good, scratch.path("licenses/b-duplicate.lic")).unwrap();
    let (stranger, kid) = stranger_license(
        &scratch,
        "c-stranger.lic",
        &pair("LIC-STRANGER", "servicenow", "jira", 9, LONG_AGO, LATE),
    );
    std::fs::write(scratch.path("licenses/d-garbage.lic"), [0xff, 0xfe, 0x00]).unwrap();
    let tampered = scratch.path("licenses/e-tampered.lic");
    std::fs::copy(&good, &tampered).unwrap();
    tamper(&tampered, |envelope| {
        let sig = STANDARD.decode(envelope["sig"].as_str().unwrap()).unwrap();
        let flipped: Vec<u8> = sig.iter().map(|b| b ^ 0x01).collect();
        envelope["sig"] = json!(STANDARD.encode(flipped));
    });
    // Not *.lic: never read.
    std::fs::write(scratch.path("licenses/README.txt"), "garbage").unwrap();
    std::fs::write(scratch.path("licenses/a-good.lic.bak"), "garbage").unwrap();

    let run = scratch.check();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let dir = scratch.path("licenses");
    assert_eq!(
        run.stderr.lines().collect::<Vec<_>>(),
        [
            format!(
                "tollgate: {}: license id \"LIC-GOOD\" is already installed from {}",
                dir.join("b-duplicate.lic").display(),
                good.display()
            ),
            format!(
                "tollgate: {}: signed by unknown issuer key {kid}",
                stranger.display()
            ),
            format!(
                "tollgate: {}: license file is not UTF-8 text",
                dir.join("d-garbage.lic").display()
            ),
            format!(
                "tollgate: {}: invalid signature: the license was altered or signed by another key",
                tampered.display()
            ),
        ]
    );
    assert_good_license_reported(&run.report());
}

// ---------------------------------------------------------------------------------------
// 4. Broken configurations and usage errors
// ---------------------------------------------------------------------------------------

/// A valid body that the broken-config cases alter.
const VALID_BODY: &str = r#"
[[instances]]
id = "sn-1"
connector = "named"
app = "servicenow"
base_uri = "https://sn-1.example"

[[instances]]
id = "jira-1"
connector = "named"
app = "jira"
base_uri = "https://jira-1.example"

[[flows]]
id = "incidents"
systems = ["sn-1", "jira-1"]

[[flows.entities]]
instance = "jira-1"
role = "main"
method = "POST"
path = "/rest/api/2/issue"
"#;

#[test]
fn the_valid_body_of_the_broken_config_cases_is_valid() {
    let scratch = Scratch::new();
    scratch.config("", VALID_BODY);
    let report = scratch.check().assert_ok();
    assert_eq!(report.summary(), "1 flows: 0 would be enabled, 1 refused");
}

/// Asserts `check` fails with exactly these problems, naming the file, and prints nothing.
fn assert_problems(scratch: &Scratch, text: &str, problems: &[String]) {
    let config = scratch.write_config(text);
    let run = check(&config);
    assert_eq!(run.code, 1, "{text}\n{}", run.stderr);
    assert_eq!(run.stdout, "", "{text}");
    let count = match problems.len() {
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    };
    let mut expected = format!(
        "tollgate: {}: {count} in the configuration:\n",
        config.display()
    );
    for problem in problems {
        expected.push_str(&format!("  {problem}\n"));
    }
    assert_eq!(run.stderr, expected, "{text}");
}

#[test]
fn config_problems_name_their_key_paths() {
    let scratch = Scratch::new();
    let dir = scratch.dir.path().display();
    let body = |from: &str, to: &str| {
        assert!(VALID_BODY.contains(from), "{from:?}");
        Scratch::text("", &VALID_BODY.replacen(from, to, 1))
    };
    let header = |from: &str, to: &str| {
        let text = Scratch::text("", VALID_BODY);
        assert!(text.contains(from), "{from:?}");
        text.replacen(from, to, 1)
    };
    std::fs::create_dir(scratch.path("a-directory")).unwrap();
    std::fs::write(scratch.path("blank.token"), " \n").unwrap();
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            body(r#"["sn-1", "jira-1"]"#, r#"["sn-1", "jira-9"]"#),
            vec![
                r#"flows[0].systems[1]: unknown instance "jira-9""#.into(),
                r#"flows[0].entities[0].instance: instance "jira-1" is not one of the flow's systems"#.into(),
            ],
        ),
        (
            body(r#"id = "jira-1""#, r#"id = "SN-1""#),
            vec![
                r#"instances[1].id: duplicate instance id "SN-1" (first at instances[0])"#.into(),
                r#"flows[0].systems[1]: unknown instance "jira-1""#.into(),
            ],
        ),
        (
            format!(
                "{}\n[[flows]]\nid = \"incidents\"\nsystems = [\"jira-1\", \"sn-1\"]\n",
                Scratch::text("", VALID_BODY)
            ),
            vec![r#"flows[1].id: duplicate flow id "incidents" (first at flows[0])"#.into()],
        ),
        (
            body(r#"instance = "jira-1""#, r#"instance = "jira-2""#),
            vec![r#"flows[0].entities[0].instance: instance "jira-2" is not one of the flow's systems"#.into()],
        ),
        (
            body(r#""/rest/api/2/issue""#, r#""rest/api/2/issue""#),
            vec![r#"flows[0].entities[0].path: "rest/api/2/issue" must start with '/'"#.into()],
        ),
        (
            body(r#""/rest/api/2/issue""#, r#""/rest/{*rest}/issue""#),
            vec![r#"flows[0].entities[0].path: "/rest/{*rest}/issue": the catch-all {*rest} must be the last segment"#.into()],
        ),
        (
            body(r#""/rest/api/2/issue""#, r#""/rest/{issue-key}""#),
            vec![r#"flows[0].entities[0].path: "/rest/{issue-key}": parameter name "issue-key" must be letters, digits or '_'"#.into()],
        ),
        (
            body(r#"method = "POST""#, r#"method = "post""#),
            vec![r#"flows[0].entities[0].method: "post" is not an HTTP method in upper case (e.g. "POST")"#.into()],
        ),
        (
            body(r#"systems = ["sn-1", "jira-1"]"#, r#"systems = ["jira-1"]"#),
            vec![r#"flows[0].systems: a flow of kind "flow" needs exactly two systems, not 1"#.into()],
        ),
        (
            body(r#"systems = ["sn-1", "jira-1"]"#, r#"kind = "integration-app"
systems = ["jira-1"]"#),
            vec![r#"flows[0].systems: a flow of kind "integration-app" needs exactly two systems, not 1"#.into()],
        ),
        (
            body("app = \"jira\"\n", ""),
            vec![r#"instances[1].app: is required for connector "named""#.into()],
        ),
        (
            body(
                "connector = \"named\"\napp = \"jira\"\n",
                "connector = \"rdbms\"\nengine = \"mysql\"\n",
            ),
            vec![r#"instances[1].host: is required for connector "rdbms""#.into()],
        ),
        (
            body("connector = \"named\"\napp = \"jira\"\n", "connector = \"sftp\"\n"),
            vec![r#"instances[1].host: is required for connector "sftp""#.into()],
        ),
        (
            body("app = \"jira\"\n", "app = \"jira\"\nenvironment = \"sandbox\"\n"),
            vec![r#"flows[0].systems[1]: instance "jira-1" is in sandbox but the flow is in production"#.into()],
        ),
        (
            header("license_dir = \"licenses\"", "license_dir = \"licenses\"\ntimezone = \"Europe/Berlinn\""),
            vec![r#"licensing.timezone: "Europe/Berlinn" is not an IANA time zone name (e.g. "UTC", "Europe/Berlin")"#.into()],
        ),
        (
            header("\"admin.token\"", "\"missing.token\""),
            vec![format!("admin.token_file: cannot read {dir}/missing.token: No such file or directory (os error 2)")],
        ),
        (
            header("\"admin.token\"", "\"a-directory\""),
            vec![format!("admin.token_file: cannot read {dir}/a-directory: Is a directory (os error 21)")],
        ),
        (
            header("\"admin.token\"", "\"blank.token\""),
            vec![format!("admin.token_file: {dir}/blank.token is empty")],
        ),
        (
            header("\"issuer/issuer.pub\"", "\"issuer/missing.pub\""),
            vec![format!("licensing.public_keys[0]: {dir}/issuer/missing.pub: cannot be read: No such file or directory (os error 2)")],
        ),
        (
            header("\"issuer/issuer.pub\"", "\"issuer/issuer.pub\", \"issuer/issuer.key\""),
            vec![format!(r#"licensing.public_keys[1]: {dir}/issuer/issuer.key: PEM label is "PRIVATE KEY"; expected "PUBLIC KEY""#)],
        ),
        (
            header("\"issuer/issuer.pub\"", "\"admin.token\""),
            vec![format!("licensing.public_keys[0]: {dir}/admin.token: not a PEM file: no -----BEGIN PUBLIC KEY----- line")],
        ),
        (
            header("license_dir = \"licenses\"", "license_dir = \"admin.token\""),
            vec![format!("licensing.license_dir: {dir}/admin.token is not a directory")],
        ),
        (
            header("listen = \"127.0.0.1:9901\"", "listen = \"127.0.0.1:8080\""),
            vec!["admin.listen: listen address 127.0.0.1:8080 is already used by server.listen".into()],
        ),
        (
            body("path = \"/rest/api/2/issue\"", "path = \"/rest/api/2/issue\"\naccepted = \"/issues\"\naccepted_if = \"/ok\""),
            vec![
                "flows[0].entities[0].accepted: needs records (the array of records in the request body) on the same entity".into(),
            ],
        ),
        (
            body("path = \"/rest/api/2/issue\"", "path = \"/rest/api/2/issue\"\nrecords = \"/issueUpdates\"\naccepted_if = \"/ok\""),
            vec![
                "flows[0].entities[0].accepted_if: needs accepted (the array of created records in the answer) on the same entity".into(),
            ],
        ),
        (
            body("role = \"main\"", "role = \"child\"\nrecords = \"/issueUpdates\""),
            vec![
                "flows[0].entities[0].records: applies to main entities only (child loads are never counted)".into(),
            ],
        ),
        (
            format!(
                "{}\n[[flows]]\nid = \"resolutions\"\nsystems = [\"sn-1\", \"jira-1\"]\n\n[[flows.entities]]\ninstance = \"jira-1\"\nrole = \"main\"\nmethod = \"POST\"\npath = \"/rest/api/2/issue\"\nrecords = \"/issueUpdates\"\n",
                Scratch::text("", VALID_BODY)
            ),
            vec![
                "flows[1].entities[0].records: POST /rest/api/2/issue on instance \"jira-1\" is counted differently at flows[0].entities[0]: every flow must give one pattern the same records, accepted and accepted_if".into(),
            ],
        ),
        (
            header("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:8080\"\nmax_counted_body_bytes = 0"),
            vec!["server.max_counted_body_bytes: must be at least 1".into()],
        ),
    ];
    for (text, problems) in &cases {
        assert_problems(&scratch, text, problems);
    }
}

#[test]
fn every_problem_of_a_config_is_reported_at_once() {
    let scratch = Scratch::new();
    let text = Scratch::text(
        "timezone = \"Nowhere/Special\"",
        r#"
[[instances]]
id = "sn-1"
connector = "named"
base_uri = "https://sn-1.example"

[[instances]]
id = "sn-1"
connector = "named"
app = "servicenow"
base_uri = "https://sn-1.example"

[[flows]]
id = "a"
systems = ["sn-1", "jira-9"]

[[flows.entities]]
instance = "jira-2"
role = "child"
method = "POST"
path = "/x/{*rest}/y"

[[flows]]
id = "a"
systems = ["sn-1"]
"#,
    )
    .replace("\"admin.token\"", "\"gone.token\"");
    let dir = scratch.dir.path();
    assert_problems(
        &scratch,
        &text,
        &[
            format!(
                "admin.token_file: cannot read {}/gone.token: No such file or directory (os error 2)",
                dir.display()
            ),
            r#"licensing.timezone: "Nowhere/Special" is not an IANA time zone name (e.g. "UTC", "Europe/Berlin")"#.into(),
            r#"instances[0].app: is required for connector "named""#.into(),
            r#"instances[1].id: duplicate instance id "sn-1" (first at instances[0])"#.into(),
            r#"flows[0].systems[1]: unknown instance "jira-9""#.into(),
            r#"flows[0].entities[0].instance: instance "jira-2" is not one of the flow's systems"#.into(),
            r#"flows[0].entities[0].path: "/x/{*rest}/y": the catch-all {*rest} must be the last segment"#.into(),
            r#"flows[1].id: duplicate flow id "a" (first at flows[0])"#.into(),
            r#"flows[1].systems: a flow of kind "flow" needs exactly two systems, not 1"#.into(),
        ],
    );
}

/// The 1-based number of the first line of `text` that starts with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?}"))
        + 1
}

/// Asserts `check` fails with one line on stderr that names the file; returns the rest.
fn assert_parse_error(config: &Path) -> String {
    let run = check(config);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    let prefix = format!("tollgate: {}: ", config.display());
    run.stderr
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{:?} does not start with {prefix:?}", run.stderr))
        .trim_end()
        .to_owned()
}

#[test]
fn a_toml_syntax_error_names_the_file_and_the_line() {
    let scratch = Scratch::new();
    // Line 4 opens a table header that never closes.
    let text = Scratch::text("", VALID_BODY).replacen("[admin]", "[admin", 1);
    assert_eq!(text.lines().nth(3), Some("[admin"));
    let config = scratch.write_config(&text);
    assert_eq!(
        assert_parse_error(&config),
        "unclosed table, expected `]` (line 4, column 7)"
    );
}

#[test]
fn an_unknown_key_names_the_file_its_key_path_the_instance_and_the_line() {
    let scratch = Scratch::new();
    let text = Scratch::text("", VALID_BODY).replacen(
        "app = \"jira\"",
        "app = \"jira\"\nbase_url = \"https://jira.example\"",
        1,
    );
    let line = line_of(&text, "base_url");
    let message = assert_parse_error(&scratch.write_config(&text));
    let prefix =
        r#"instances[1].base_url (instance "jira-1"): unknown field `base_url`, expected one of "#;
    assert!(message.starts_with(prefix), "{message}");
    assert!(message.contains("`base_uri`"), "{message}");
    assert!(
        message.ends_with(&format!(" (line {line}, column 1)")),
        "{message}"
    );
}

#[test]
fn a_bad_value_names_the_file_its_key_path_and_the_line() {
    let scratch = Scratch::new();
    let text = Scratch::text("max_clock_skew = \"a day\"", VALID_BODY);
    let line = line_of(&text, "max_clock_skew");
    let message = assert_parse_error(&scratch.write_config(&text));
    assert!(
        message.starts_with(r#"licensing.max_clock_skew: invalid duration "a day""#),
        "{message}"
    );
    assert!(
        message.ends_with(&format!(" (line {line}, column 18)")),
        "{message}"
    );
}

/// `VALID_BODY` with a third instance whose connector does not exist.
fn with_a_carrier_pigeon() -> String {
    Scratch::text(
        "",
        &format!("{VALID_BODY}\n[[instances]]\nid = \"crm\"\nconnector = \"carrier-pigeon\"\n"),
    )
}

#[test]
fn an_unknown_connector_names_the_file_its_key_path_the_instance_and_the_line() {
    let scratch = Scratch::new();
    let text = with_a_carrier_pigeon();
    let line = line_of(&text, "connector = \"carrier-pigeon\"");
    let message = assert_parse_error(&scratch.write_config(&text));
    assert_eq!(
        message,
        format!(
            "instances[2].connector (instance \"crm\"): unknown variant `carrier-pigeon`, \
             expected one of `named`, `http`, `rest`, `graphql`, `rdbms`, `snowflake`, \
             `bigquery`, `redshift`, `dynamodb`, `ftp`, `sftp`, `ftps`, `as2`, `wrapper`, \
             `webhook` (line {line}, column 13)"
        )
    );
}

#[test]
fn run_refuses_an_unknown_connector_with_the_same_message() {
    let scratch = Scratch::new();
    let text = with_a_carrier_pigeon();
    let config = scratch.write_config(&text);
    let run = tollgate(
        Path::new("/"),
        [OsStr::new("run"), "--config".as_ref(), config.as_os_str()],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "tollgate: {}: {}",
            config.display(),
            assert_parse_error(&config)
        )
    );
}

#[test]
fn an_unknown_role_names_the_entity_and_its_flow() {
    let scratch = Scratch::new();
    let text = Scratch::text(
        "",
        &VALID_BODY.replacen("role = \"main\"", "role = \"boss\"", 1),
    );
    let line = line_of(&text, "role = \"boss\"");
    let message = assert_parse_error(&scratch.write_config(&text));
    assert_eq!(
        message,
        format!(
            "flows[0].entities[0].role (flow \"incidents\"): unknown variant `boss`, \
             expected `main` or `child` (line {line}, column 8)"
        )
    );
}

#[test]
fn a_bad_records_pointer_names_the_entity_its_flow_and_the_line() {
    let scratch = Scratch::new();
    let text = Scratch::text(
        "",
        &VALID_BODY.replacen(
            "path = \"/rest/api/2/issue\"",
            "path = \"/rest/api/2/issue/bulk\"\nrecords = \"issueUpdates\"",
            1,
        ),
    );
    let line = line_of(&text, "records = ");
    let message = assert_parse_error(&scratch.write_config(&text));
    assert_eq!(
        message,
        format!(
            "flows[0].entities[0].records (flow \"incidents\"): \"issueUpdates\" is not a JSON pointer: \
             it must be empty (the whole document) or start with '/' (e.g. \"/records\") (line {line}, column 11)"
        )
    );
}

#[test]
fn a_named_instance_a_flow_uses_without_base_uri_is_a_config_problem() {
    let scratch = Scratch::new();
    let body = VALID_BODY.replacen("base_uri = \"https://jira-1.example\"\n", "", 1);
    assert_ne!(body, VALID_BODY);
    assert_problems(
        &scratch,
        &Scratch::text("", &body),
        &[r#"instances[1].base_uri: is required because flow "incidents" sends requests to this instance through tollgate"#.into()],
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.toml");
    let run = check(&missing);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        format!(
            "tollgate: {}: cannot read the configuration: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    let run = check(dir.path());
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        format!(
            "tollgate: {}: cannot read the configuration: Is a directory (os error 21)\n",
            dir.path().display()
        )
    );
}

#[test]
fn usage_errors_exit_2() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // clap names the optional flags (`[OPTIONS]`) in some of these messages and not in others.
    let usage = "--config <CONFIG>\n\nFor more information, try '--help'.";
    let cases: [(&[&str], &str); 4] = [
        (
            &["check"],
            "error: the following required arguments were not provided:\n  --config <CONFIG>\n",
        ),
        (
            &["check", "--config"],
            "error: a value is required for '--config <CONFIG>' but none was supplied",
        ),
        (
            &["check", "--conf", "config/tollgate.toml"],
            "error: unexpected argument '--conf' found",
        ),
        (
            &["check", "--config", "config/tollgate.toml", "extra"],
            "error: unexpected argument 'extra' found",
        ),
    ];
    for (args, message) in cases {
        let run = tollgate(root, args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(run.stderr.starts_with(message), "{args:?}: {}", run.stderr);
        if args != ["check", "--config"] {
            assert!(run.stderr.contains(usage), "{args:?}: {}", run.stderr);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Known product bugs: run with `cargo test --test check_cli -- --ignored`.
// ---------------------------------------------------------------------------------------

#[test]
fn endpoint_apps_list_only_instances_of_enabled_flows() {
    let scratch = Scratch::new();
    scratch.config(
        "",
        &format!(
            r#"{SN_JIRA}
[[flows]]
id = "one"
systems = ["sn-1", "jira-1"]

[[flows]]
id = "refused"
systems = ["sn-2", "jira-2"]
"#
        ),
    );
    scratch.license(
        "l.lic",
        &pair("LIC-1", "servicenow", "jira", 1, LONG_AGO, LATE),
    );
    let report = scratch.check().assert_ok();
    assert_eq!(
        report.rows("Endpoint apps of enabled flows"),
        table(&[
            "production | app:jira | jira-1",
            "production | app:servicenow | sn-1",
        ])
    );
}

#[test]
fn a_flow_over_an_entitlement_is_refused() {
    let scratch = Scratch::new();
    scratch.config(r#"models = ["subscription"]"#, MIXED);
    let mut payload = subscription("endpoint", "2021-01-31T00:00:00Z");
    payload["production"]["endpoint_apps"] = json!(3);
    scratch.license("sub.lic", &payload);
    let report = scratch.check().assert_ok();
    // orders and invoices use 3 endpoint apps; sync would add a fourth.
    let flows = report.columns("Flows", &["flow", "state"]);
    assert_eq!(flows[2][0], "sync");
    assert!(
        flows[2][1].starts_with("refused: entitlement-exceeded"),
        "{flows:?}"
    );
    let entitlements = report.rows("Entitlements in use / limit");
    assert!(
        !entitlements.iter().flatten().any(|cell| cell == "4 / 3"),
        "{entitlements:?}"
    );
}

#[test]
fn subscription_licensing_without_a_subscription_refuses_flows() {
    let scratch = Scratch::new();
    scratch.config(r#"models = ["subscription"]"#, MIXED);
    let report = scratch.check().assert_ok();
    assert_eq!(report.summary(), "7 flows: 0 would be enabled, 6 refused");
}

#[test]
fn a_toml_syntax_error_is_one_line() {
    let scratch = Scratch::new();
    let text = Scratch::text("", VALID_BODY).replacen("[admin]", "[admin", 1);
    let run = check(&scratch.write_config(&text));
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}
