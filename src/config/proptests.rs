//! Property tests of loading: no text makes [`Config::from_toml`] panic, and a valid config
//! damaged at random key paths is refused with an error naming a damaged path.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use toml::{Table, Value};

use super::testing::scratch;
use super::{Config, LoadError, Owner, ParseError};

/// A valid config that spells out every key whose value can be damaged.
const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"
flow_header = "Tollgate-Flow"
forward_proxy = false
max_header_bytes = 65536
header_read_timeout = "10s"
body_read_timeout = "30s"
max_connections = 100
shutdown_grace = "30s"

[admin]
listen = "127.0.0.1:9901"
token_file = "admin.token"

[licensing]
models = ["pair", "subscription"]
public_keys = ["issuer.pub"]
license_dir = "licenses"
timezone = "UTC"
host = ["sidecar.example"]
resume_at_reset = true
max_clock_skew = "24h"

[state]
dir = "state"
durability = "batched"
flush_interval = "200ms"

[[instances]]
id = "sn-1"
connector = "named"
app = "servicenow"
base_uri = "https://sn1.example"
environment = "production"
connect_timeout = "5s"
response_timeout = "60s"
paths_case_insensitive = false

[[instances]]
id = "jira-1"
connector = "named"
app = "jira"
base_uri = "https://jira1.example"
environment = "production"
agent = "agent-eu"

[[instances]]
id = "files"
connector = "sftp"
host = "sftp.example"
port = 22
trading_partner = true

[[flows]]
id = "incidents"
kind = "flow"
environment = "production"
systems = ["sn-1", "jira-1"]
enabled = true

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
id = "upload"
kind = "data-loader"
environment = "sandbox"
systems = ["files-sb"]

[[instances]]
id = "files-sb"
connector = "ftp"
host = "ftp.example"
environment = "sandbox"
"#;

/// Keys holding one of a fixed set of names, with the names the schema accepts.
const ENUMS: &[(&str, &[&str])] = &[
    (
        "instances[*].connector",
        &[
            "named",
            "http",
            "rest",
            "graphql",
            "rdbms",
            "snowflake",
            "bigquery",
            "redshift",
            "dynamodb",
            "ftp",
            "sftp",
            "ftps",
            "as2",
            "wrapper",
            "webhook",
        ],
    ),
    ("instances[*].environment", &["production", "sandbox"]),
    ("flows[*].environment", &["production", "sandbox"]),
    ("flows[*].kind", &["flow", "data-loader", "integration-app"]),
    ("flows[*].entities[*].role", &["main", "child"]),
    ("licensing.models[*]", &["pair", "subscription"]),
    ("state.durability", &["strict", "batched"]),
];

/// Values of the right type that parse but are out of range, which validation refuses.
fn out_of_range_values(key: &str) -> Vec<Value> {
    match key {
        "instances[*].port" | "server.max_connections" => vec![Value::from(0)],
        "server.max_header_bytes" => vec![Value::from(0), Value::from(100)],
        "server.header_read_timeout"
        | "server.body_read_timeout"
        | "state.flush_interval"
        | "instances[*].connect_timeout"
        | "instances[*].response_timeout" => vec![Value::from("0s")],
        "licensing.models" | "licensing.public_keys" | "licensing.host" => {
            vec![Value::Array(Vec::new())]
        }
        _ => Vec::new(),
    }
}

/// Values of the right TOML type that the parser refuses: beyond the integer type, or text
/// that is not a duration or a socket address.
fn malformed_values(key: &str) -> Vec<Value> {
    let strings = |values: &[&str]| values.iter().map(|v| Value::from(*v)).collect();
    match key {
        "instances[*].port" => vec![Value::from(70_000), Value::from(-1)],
        "server.max_header_bytes" | "server.max_connections" => vec![Value::from(-1)],
        "server.header_read_timeout"
        | "server.body_read_timeout"
        | "server.shutdown_grace"
        | "state.flush_interval"
        | "licensing.max_clock_skew"
        | "instances[*].connect_timeout"
        | "instances[*].response_timeout" => strings(&["soon", "5", "-5s", ""]),
        "server.listen" | "admin.listen" => strings(&["localhost", "127.0.0.1", "1.2.3.4:99999"]),
        _ => Vec::new(),
    }
}

/// Keys the schema requires.
const REQUIRED: &[&str] = &[
    "server",
    "admin",
    "licensing",
    "server.listen",
    "admin.listen",
    "admin.token_file",
    "licensing.public_keys",
    "licensing.license_dir",
    "instances[*].id",
    "instances[*].connector",
    "flows[*].id",
    "flows[*].systems",
    "flows[*].entities[*].instance",
    "flows[*].entities[*].role",
    "flows[*].entities[*].method",
    "flows[*].entities[*].path",
];

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A path in validation's style: `flows[0].entities[1].role`.
fn render(path: &[Step]) -> String {
    let mut text = String::new();
    for step in path {
        match step {
            Step::Key(key) if text.is_empty() => text.push_str(key),
            Step::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Step::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

/// The path with indices written `[*]`, as the schema tables above name keys.
fn schema_key(path: &[Step]) -> String {
    let generic: Vec<Step> = path
        .iter()
        .map(|step| match step {
            Step::Index(_) => Step::Key("[*]".to_owned()),
            key => key.clone(),
        })
        .collect();
    render(&generic).replace(".[*]", "[*]")
}

/// The base config as a TOML document.
fn base() -> Table {
    BASE.parse().expect("the base config is TOML")
}

/// Every value's path in a document (the root excluded), parents before children.
fn sites(table: &Table) -> Vec<Vec<Step>> {
    let mut found = Vec::new();
    for (key, value) in table {
        walk(vec![Step::Key(key.clone())], value, &mut found);
    }
    found
}

fn walk(path: Vec<Step>, value: &Value, found: &mut Vec<Vec<Step>>) {
    found.push(path.clone());
    match value {
        Value::Table(table) => {
            for (key, child) in table {
                let mut next = path.clone();
                next.push(Step::Key(key.clone()));
                walk(next, child, found);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                let mut next = path.clone();
                next.push(Step::Index(index));
                walk(next, child, found);
            }
        }
        _ => {}
    }
}

/// The value at a path of a document.
fn value_at<'a>(table: &'a Table, path: &[Step]) -> Option<&'a Value> {
    let (Step::Key(first), rest) = path.split_first()? else {
        return None;
    };
    rest.iter()
        .try_fold(table.get(first)?, |value, step| match step {
            Step::Key(key) => value.get(key.as_str()),
            Step::Index(index) => value.get(*index),
        })
}

/// The value at a path of a document, to change it.
fn value_at_mut<'a>(table: &'a mut Table, path: &[Step]) -> Option<&'a mut Value> {
    let (Step::Key(first), rest) = path.split_first()? else {
        return None;
    };
    rest.iter()
        .try_fold(table.get_mut(first)?, |value, step| match step {
            Step::Key(key) => value.get_mut(key.as_str()),
            Step::Index(index) => value.get_mut(*index),
        })
}

/// The table at a path; the root for the empty path.
fn table_at_mut<'a>(table: &'a mut Table, path: &[Step]) -> Option<&'a mut Table> {
    if path.is_empty() {
        return Some(table);
    }
    value_at_mut(table, path)?.as_table_mut()
}

/// The container holding the last step of a path.
enum Slot<'a> {
    InTable(&'a mut Table, String),
    InArray(&'a mut Vec<Value>, usize),
}

fn slot<'a>(table: &'a mut Table, path: &[Step]) -> Option<Slot<'a>> {
    let (last, parent) = path.split_last()?;
    match last {
        Step::Key(key) => Some(Slot::InTable(table_at_mut(table, parent)?, key.clone())),
        Step::Index(index) => Some(Slot::InArray(
            value_at_mut(table, parent)?.as_array_mut()?,
            *index,
        )),
    }
}

/// One change that makes a valid config invalid.
#[derive(Debug, Clone)]
enum Damage {
    /// The value at the path becomes another type, an unknown name or an out-of-range value.
    Replace { path: Vec<Step>, value: Value },
    /// A required key is left out.
    Remove { path: Vec<Step> },
    /// The table at `table` gains a key the schema does not know.
    Add {
        table: Vec<Step>,
        key: String,
        value: Value,
    },
}

impl Damage {
    /// What the damage touches: two damages conflict when one touches within the other.
    fn target(&self) -> &[Step] {
        match self {
            Damage::Replace { path, .. } | Damage::Remove { path } => path,
            Damage::Add { table, .. } => table,
        }
    }

    /// The key path an error about this damage must name.
    fn reported(&self) -> Vec<Step> {
        match self {
            Damage::Replace { path, .. } | Damage::Remove { path } => path.clone(),
            Damage::Add { table, key, .. } => {
                let mut path = table.clone();
                path.push(Step::Key(key.clone()));
                path
            }
        }
    }

    fn conflicts_with(&self, other: &Damage) -> bool {
        let (a, b) = (self.target(), other.target());
        a.starts_with(b) || b.starts_with(a)
    }

    /// Applies the damage; `false` when its place no longer exists.
    fn apply(&self, document: &mut Table) -> bool {
        match self {
            Damage::Replace { path, value } => match slot(document, path) {
                Some(Slot::InTable(table, key)) => table.insert(key, value.clone()).is_some(),
                Some(Slot::InArray(items, index)) => items
                    .get_mut(index)
                    .map(|item| *item = value.clone())
                    .is_some(),
                None => false,
            },
            Damage::Remove { path } => match slot(document, path) {
                Some(Slot::InTable(table, key)) => table.remove(&key).is_some(),
                _ => false,
            },
            Damage::Add { table, key, value } => table_at_mut(document, table)
                .map(|table| table.insert(key.clone(), value.clone()))
                .is_some(),
        }
    }
}

/// Values of every TOML type but tables (a struct may be read from an array, so an array
/// never replaces a table).
fn other_values() -> Vec<Value> {
    vec![
        Value::from("x"),
        Value::from(""),
        Value::from(7),
        Value::from(-1),
        Value::from(1.5),
        Value::from(true),
        Value::Array(vec![Value::from(1)]),
        Value::Array(vec![Value::from("a"), Value::from(2)]),
    ]
}

/// Replacements by a value of another type, at every path of the base config.
fn wrong_types(document: &Table) -> Vec<Damage> {
    let mut damages = Vec::new();
    for path in sites(document) {
        let Some(original) = value_at(document, &path) else {
            continue;
        };
        for value in other_values() {
            let same_type = value.type_str() == original.type_str();
            let array_for_table = original.is_table() && value.is_array();
            if !same_type && !array_for_table {
                damages.push(Damage::Replace {
                    path: path.clone(),
                    value,
                });
            }
        }
    }
    damages
}

/// Replacements by each of `values(key)` at every path whose key has some.
fn replacements(document: &Table, values: fn(&str) -> Vec<Value>) -> Vec<Damage> {
    sites(document)
        .into_iter()
        .flat_map(|path| {
            values(&schema_key(&path))
                .into_iter()
                .map(move |value| Damage::Replace {
                    path: path.clone(),
                    value,
                })
        })
        .collect()
}

/// Required keys left out.
fn removals(document: &Table) -> Vec<Damage> {
    sites(document)
        .into_iter()
        .filter(|path| REQUIRED.contains(&schema_key(path).as_str()))
        .map(|path| Damage::Remove { path })
        .collect()
}

/// Unknown names at the keys that hold a name.
fn unknown_variant(document: &Table) -> impl Strategy<Value = Damage> {
    let enum_sites: Vec<(Vec<Step>, Vec<&'static str>)> = sites(document)
        .into_iter()
        .filter_map(|path| {
            let key = schema_key(&path);
            let (_, names) = ENUMS.iter().find(|(k, _)| *k == key)?;
            Some((path, names.to_vec()))
        })
        .collect();
    let word = prop_oneof![
        "[a-z]{1,12}(-[a-z]{1,8})?",
        Just("Named".to_owned()),
        Just(" pair".to_owned()),
        Just(String::new()),
    ];
    (select(enum_sites), word)
        .prop_filter("a name the schema knows", |((_, names), word)| {
            !names.contains(&word.as_str())
        })
        .prop_map(|((path, _), word)| Damage::Replace {
            path,
            value: Value::from(word),
        })
}

/// Unknown keys added to any table, the root included.
fn unknown_keys(document: &Table) -> impl Strategy<Value = Damage> {
    let mut tables: Vec<Vec<Step>> = vec![Vec::new()];
    tables.extend(
        sites(document)
            .into_iter()
            .filter(|path| value_at(document, path).is_some_and(Value::is_table)),
    );
    (select(tables), "x_[a-z]{1,8}", select(other_values()))
        .prop_map(|(table, key, value)| Damage::Add { table, key, value })
}

/// Any single damage to the base config; out-of-range values weigh more, as only they
/// (alone or with others of their kind) get past the parser to whole-file validation.
fn damage() -> impl Strategy<Value = Damage> {
    let document = base();
    prop_oneof![
        2 => select(wrong_types(&document)),
        4 => select(replacements(&document, out_of_range_values)),
        2 => select(replacements(&document, malformed_values)),
        1 => select(removals(&document)),
        2 => unknown_variant(&document),
        2 => unknown_keys(&document),
    ]
}

/// Applies damages that do not touch one another, in order; returns those applied.
fn damaged(damages: &[Damage]) -> (Table, Vec<Damage>) {
    let mut document = base();
    let mut applied: Vec<Damage> = Vec::new();
    for damage in damages {
        if applied.iter().all(|done| !done.conflicts_with(damage)) && damage.apply(&mut document) {
            applied.push(damage.clone());
        }
    }
    (document, applied)
}

/// The instance or flow an error at `path` of `document` should name.
fn expected_owner(document: &Table, path: &[Step]) -> Option<Owner> {
    let [Step::Key(list), Step::Index(index), ..] = path else {
        return None;
    };
    let id = value_at(document, &[Step::Key(list.clone()), Step::Index(*index)])?
        .get("id")?
        .as_str()?
        .to_owned();
    match list.as_str() {
        "instances" => Some(Owner::Instance(id)),
        "flows" => Some(Owner::Flow(id)),
        _ => None,
    }
}

/// The last key of a path: what the line of an error about a value or key must show.
fn last_key(path: &[Step]) -> Option<&str> {
    path.iter().rev().find_map(|step| match step {
        Step::Key(key) => Some(key.as_str()),
        Step::Index(_) => None,
    })
}

/// Checks a parse error against the damages: it names one of them, its id and its line.
fn check_parse_error(
    text: &str,
    document: &Table,
    applied: &[Damage],
    error: &ParseError,
) -> Result<(), TestCaseError> {
    let Some(path) = &error.path else {
        return Err(TestCaseError::fail(format!(
            "no key path in {error}\n{text}"
        )));
    };
    let Some(damage) = applied.iter().find(|d| render(&d.reported()) == *path) else {
        return Err(TestCaseError::fail(format!(
            "{error} names none of {applied:?}\n{text}"
        )));
    };
    let reported = damage.reported();
    prop_assert_eq!(
        &error.owner,
        &expected_owner(document, &reported),
        "{}",
        error
    );
    let Some(position) = error.position else {
        return Err(TestCaseError::fail(format!("no position in {error}")));
    };
    if !matches!(damage, Damage::Remove { .. }) {
        let line = text.lines().nth(position.line - 1).unwrap_or("");
        let key = last_key(&reported).unwrap_or("");
        prop_assert!(
            line.contains(key),
            "{} points at {:?}, not at {:?}\n{}",
            error,
            line,
            key,
            text
        );
    }
    Ok(())
}

fn runner() -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

#[test]
fn the_base_config_of_the_properties_is_valid() {
    let dir = scratch();
    Config::from_toml(BASE, dir.path()).unwrap();
}

#[test]
fn a_damaged_config_is_refused_naming_the_damaged_key_path() {
    let dir = scratch();
    let result = runner().run(&prop::collection::vec(damage(), 1..=3), |damages| {
        let (document, applied) = damaged(&damages);
        let text = toml::to_string(&document)
            .map_err(|err| TestCaseError::fail(format!("cannot write the document: {err}")))?;
        match Config::from_toml(&text, dir.path()) {
            Ok(_) => Err(TestCaseError::fail(format!(
                "accepted after {applied:?}\n{text}"
            ))),
            Err(LoadError::Parse(error)) => check_parse_error(&text, &document, &applied, &error),
            Err(LoadError::Invalid(problems)) => {
                let found: BTreeSet<&str> = problems.iter().map(|p| p.path.as_str()).collect();
                let expected: Vec<String> = applied.iter().map(|d| render(&d.reported())).collect();
                let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
                prop_assert_eq!(found, expected, "{:?}\n{}", problems, text);
                Ok(())
            }
        }
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Text near TOML: the base config with characters deleted and TOML punctuation inserted.
fn mangled_base() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\""),
        Just("'"),
        Just("\"\"\""),
        Just("["),
        Just("[["),
        Just("]"),
        Just("="),
        Just("{"),
        Just("}"),
        Just(","),
        Just("."),
        Just("\n"),
        Just("#"),
        Just("\\u"),
        Just("1e999"),
        Just("-"),
        Just("ä"),
        Just("\u{0}"),
    ];
    let edit = (any::<prop::sample::Index>(), 0..4usize, piece);
    prop::collection::vec(edit, 1..8).prop_map(|edits| {
        let mut chars: Vec<char> = BASE.chars().collect();
        for (at, delete, piece) in edits {
            let at = at.index(chars.len() + 1);
            let end = (at + delete).min(chars.len());
            chars.splice(at..end, piece.chars());
        }
        chars.into_iter().collect()
    })
}

/// What a config text says, as read in pieces of one `[[instances]]` or `[[flows]]` table each
/// (`None` where a piece does not stand for itself) and as read whole.
fn pieces_and_whole(text: &str) -> (Option<String>, String) {
    let pieces = super::pieces::read_in(text, 1).map(|config| format!("{:?}", Ok::<_, ()>(config)));
    let whole = super::parse::parse::<Config>(text).map_err(|_| ());
    (pieces, format!("{whole:?}"))
}

#[test]
fn a_config_read_in_pieces_says_what_it_says_read_whole() {
    let result = runner().run(
        &prop_oneof![
            mangled_base(),
            prop::collection::vec(damage(), 1..=3)
                .prop_map(|damages| { toml::to_string(&damaged(&damages).0).unwrap_or_default() }),
        ],
        |text| {
            let (pieces, whole) = pieces_and_whole(&text);
            if let Some(pieces) = pieces {
                prop_assert_eq!(pieces, whole, "{}", text);
            }
            Ok(())
        },
    );
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let (pieces, whole) = pieces_and_whole(BASE);
    assert_eq!(
        pieces.as_deref(),
        Some(whole.as_str()),
        "the base config is read in pieces"
    );
}

#[test]
fn no_text_makes_loading_panic() {
    let dir = scratch();
    let text = prop_oneof![
        any::<String>(),
        "[ -~\n\t]{0,300}",
        "([a-z_.\\[\\]]{1,12} ?= ?(\"[a-z]*\"|[0-9]{1,5}|true|\\[\\]|\\{\\})?\n){0,12}",
        mangled_base(),
    ];
    let result = runner().run(&text, |text| {
        let lines = text.split('\n').count();
        match Config::from_toml(&text, dir.path()) {
            Ok(_) | Err(LoadError::Invalid(_)) => {}
            Err(LoadError::Parse(error)) => {
                let shown = error.to_string();
                prop_assert!(!shown.is_empty());
                if let Some(position) = error.position {
                    prop_assert!(
                        (1..=lines).contains(&position.line) && position.column >= 1,
                        "{} is outside the text",
                        shown
                    );
                }
                if error.owner.is_some() {
                    let path = error.path.as_deref().unwrap_or("");
                    prop_assert!(
                        path.starts_with("instances[") || path.starts_with("flows["),
                        "{}",
                        shown
                    );
                }
            }
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
