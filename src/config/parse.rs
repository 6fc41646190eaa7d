//! Reading config text into the schema. An error names the key path in the style validation
//! uses (`instances[2].connector`), the instance or flow whose table holds it, and the line
//! and column: `instances[2].connector (instance "crm"): unknown variant … (line 14, column 13)`.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

/// Config text that is not TOML of the expected shape: where, and what the parser said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Key path of the offending key or value; `None` when the text is not TOML at all.
    pub path: Option<String>,
    /// The instance or flow whose table holds the path, when that table has an id.
    pub owner: Option<Owner>,
    /// What is wrong, in the parser's words, on one line.
    pub message: String,
    /// Where in the text, when the parser knows.
    pub position: Option<Position>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            f.write_str(path)?;
            if let Some(owner) = &self.owner {
                write!(f, " ({owner})")?;
            }
            f.write_str(": ")?;
        }
        f.write_str(&self.message)?;
        if let Some(position) = self.position {
            write!(f, " ({position})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseError {}

/// The `[[instances]]` or `[[flows]]` table an error is in, named by its id for the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// An `[[instances]]` table with this id.
    Instance(String),
    /// A `[[flows]]` table with this id.
    Flow(String),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Instance(id) => write!(f, "instance {id:?}"),
            Owner::Flow(id) => write!(f, "flow {id:?}"),
        }
    }
}

/// A place in the config text, so the reader can go there in an editor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, counted from 1.
    pub line: usize,
    /// Column in characters, counted from 1.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Deserializes config text, naming the key path of the first key or value that does not fit.
pub(super) fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|err| syntax(text, &err))?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| describe(text, &err))
}

/// Text that is not TOML at all.
fn syntax(text: &str, err: &toml::de::Error) -> ParseError {
    ParseError {
        path: None,
        owner: None,
        message: one_line(err),
        position: position(text, err),
    }
}

/// Turns a deserialization error into a [`ParseError`]: a syntax error when the text is not
/// TOML, else a schema error at its key path.
fn describe(text: &str, err: &serde_path_to_error::Error<toml::de::Error>) -> ParseError {
    let document = match text.parse::<toml::Table>() {
        Ok(document) => document,
        Err(err) => return syntax(text, &err),
    };
    let inner = err.inner();
    let segments: Vec<&Segment> = err.path().iter().collect();
    ParseError {
        path: key_path(&segments, missing_field(inner.message())),
        owner: owner(&document, &segments),
        message: one_line(inner),
        position: position(text, inner),
    }
}

/// The key path in validation's style; a missing key is named as part of the path.
fn key_path(segments: &[&Segment], missing: Option<&str>) -> Option<String> {
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => push_key(&mut path, key),
            Segment::Unknown => push_part(&mut path, "?"),
        }
    }
    if let Some(key) = missing {
        push_key(&mut path, key);
    }
    (!path.is_empty()).then_some(path)
}

/// Appends one key, quoted as TOML would need it when it is not a bare key.
fn push_key(path: &mut String, key: &str) {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if bare {
        push_part(path, key);
    } else {
        push_part(path, &format!("{key:?}"));
    }
}

/// Appends one dotted part of a key path.
fn push_part(path: &mut String, part: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(part);
}

/// The key serde names in a "missing field" error, which the path leads to but not into.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// The instance or flow the path starts in, when its table has a string `id`.
fn owner(document: &toml::Table, segments: &[&Segment]) -> Option<Owner> {
    let (Some(Segment::Map { key }), Some(Segment::Seq { index })) =
        (segments.first(), segments.get(1))
    else {
        return None;
    };
    let id = document
        .get(key)?
        .as_array()?
        .get(*index)?
        .get("id")?
        .as_str()?
        .to_owned();
    match key.as_str() {
        "instances" => Some(Owner::Instance(id)),
        "flows" => Some(Owner::Flow(id)),
        _ => None,
    }
}

/// The parser's message without its line breaks.
fn one_line(err: &toml::de::Error) -> String {
    err.message().trim().replace('\n', "; ")
}

/// The line and column where the error's span starts.
fn position(text: &str, err: &toml::de::Error) -> Option<Position> {
    let before = text.get(..err.span()?.start)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Some(Position {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::testing::{load, HEADER};
    use super::super::{Config, LoadError};
    use super::*;

    /// The parse error of `HEADER` followed by `body`, and the line `body` starts on.
    fn parse_error(body: &str) -> (ParseError, usize) {
        let first_line = HEADER.lines().count() + 1;
        match load(body) {
            Err(LoadError::Parse(error)) => (error, first_line),
            Err(LoadError::Invalid(problems)) => panic!("expected a parse error, got {problems:?}"),
            Ok(_) => panic!("expected a parse error, the config is valid"),
        }
    }

    #[test]
    fn an_unknown_connector_names_its_key_path_the_instance_and_the_line() {
        let (error, first) = parse_error(
            r#"[[instances]]
id = "sn"
connector = "named"
[[instances]]
id = "jira"
connector = "named"
[[instances]]
id = "crm"
connector = "carrier-pigeon"
"#,
        );
        assert_eq!(error.path.as_deref(), Some("instances[2].connector"));
        assert_eq!(error.owner, Some(Owner::Instance("crm".to_owned())));
        assert_eq!(
            error.position,
            Some(Position {
                line: first + 8,
                column: 13
            })
        );
        assert_eq!(
            error.to_string(),
            format!(
                "instances[2].connector (instance \"crm\"): unknown variant `carrier-pigeon`, \
                 expected one of `named`, `http`, `rest`, `graphql`, `rdbms`, `snowflake`, \
                 `bigquery`, `redshift`, `dynamodb`, `ftp`, `sftp`, `ftps`, `as2`, `wrapper`, \
                 `webhook` (line {}, column 13)",
                first + 8
            )
        );
    }

    #[test]
    fn an_unknown_role_in_a_flow_entity_names_the_entity_and_the_flow() {
        let (error, first) = parse_error(
            r#"[[flows]]
id = "incidents"
systems = ["sn", "jira"]
[[flows.entities]]
instance = "jira"
role = "main"
method = "POST"
path = "/issue"
[[flows.entities]]
instance = "jira"
role = "boss"
method = "POST"
path = "/comment"
"#,
        );
        assert_eq!(
            error.to_string(),
            format!(
                "flows[0].entities[1].role (flow \"incidents\"): unknown variant `boss`, \
                 expected `main` or `child` (line {}, column 8)",
                first + 10
            )
        );
    }

    #[test]
    fn unknown_kinds_and_environments_name_their_flow_or_instance() {
        let (error, _) =
            parse_error("[[flows]]\nid = \"load\"\nkind = \"data-pump\"\nsystems = [\"db\"]\n");
        assert_eq!(error.path.as_deref(), Some("flows[0].kind"));
        assert_eq!(error.owner, Some(Owner::Flow("load".to_owned())));
        let (error, _) = parse_error(
            "[[instances]]\nid = \"sn\"\nconnector = \"named\"\nenvironment = \"staging\"\n",
        );
        assert_eq!(error.path.as_deref(), Some("instances[0].environment"));
        assert_eq!(error.owner, Some(Owner::Instance("sn".to_owned())));
        assert!(
            error.message.starts_with("unknown variant `staging`"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_model_names_its_index_in_the_list() {
        let text = HEADER.replace(
            "public_keys = [\"issuer.pub\"]",
            "models = [\"pair\", \"seats\"]\npublic_keys = [\"issuer.pub\"]",
        );
        let Err(LoadError::Parse(error)) = Config::from_toml(&text, Path::new("/")) else {
            panic!("expected a parse error")
        };
        assert_eq!(
            error.to_string(),
            "licensing.models[1]: unknown variant `seats`, expected `pair` or `subscription` \
             (line 8, column 19)"
        );
    }

    #[test]
    fn a_bad_duration_names_its_key_path_and_the_accepted_forms() {
        let (error, first) = parse_error("[state]\nflush_interval = \"soon\"\n");
        assert_eq!(
            error.to_string(),
            format!(
                "state.flush_interval: invalid duration \"soon\" (expected number at 0); \
                 write e.g. \"200ms\", \"5s\" or \"24h\" (line {}, column 18)",
                first + 1
            )
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key_path() {
        let text = HEADER.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\nmax_header_bytes = \"big\"",
        );
        let Err(LoadError::Parse(error)) = Config::from_toml(&text, Path::new("/")) else {
            panic!("expected a parse error")
        };
        assert_eq!(
            error.to_string(),
            "server.max_header_bytes: invalid type: string \"big\", expected usize (line 4, column 20)"
        );
        let (error, _) = parse_error("[[flows]]\nid = \"f\"\nsystems = [\"sn\", 5]\n");
        assert_eq!(error.path.as_deref(), Some("flows[0].systems[1]"));
        assert_eq!(error.owner, Some(Owner::Flow("f".to_owned())));
    }

    #[test]
    fn an_unknown_key_is_named_by_its_own_key_path() {
        let (error, first) = parse_error("[state]\ndurabilty = \"strict\"\n");
        assert_eq!(
            error.to_string(),
            format!(
                "state.durabilty: unknown field `durabilty`, expected one of `dir`, \
                 `durability`, `flush_interval`, `redis`, `fleet`, `node`, `lease_max`, \
                 `lease_ttl`, `redis_timeout`, `redis_password_file` (line {}, column 1)",
                first + 1
            )
        );
        let (error, _) = parse_error(
            "[[instances]]\nid = \"jira\"\nconnector = \"named\"\nbase_url = \"https://jira.example\"\n",
        );
        assert_eq!(error.path.as_deref(), Some("instances[0].base_url"));
        assert_eq!(error.owner, Some(Owner::Instance("jira".to_owned())));
    }

    #[test]
    fn a_key_that_is_not_bare_is_quoted_in_the_path() {
        let (error, _) = parse_error("[state]\n\"flush interval\" = \"1s\"\n");
        assert_eq!(error.path.as_deref(), Some("state.\"flush interval\""));
    }

    #[test]
    fn a_missing_key_is_named_at_the_end_of_the_path() {
        let (error, first) = parse_error("[[instances]]\nconnector = \"named\"\n");
        assert_eq!(
            error.to_string(),
            format!("instances[0].id: missing field `id` (line {first}, column 1)")
        );
        let (error, _) = parse_error("[[flows]]\nid = \"f\"\n");
        assert_eq!(error.path.as_deref(), Some("flows[0].systems"));
        assert_eq!(error.owner, Some(Owner::Flow("f".to_owned())));
        let text = HEADER.replace("[server]\nlisten = \"127.0.0.1:8080\"\n", "");
        let Err(LoadError::Parse(error)) = Config::from_toml(&text, Path::new("/")) else {
            panic!("expected a parse error")
        };
        assert_eq!(error.path.as_deref(), Some("server"));
    }

    #[test]
    fn the_owner_is_left_out_when_the_table_has_no_string_id() {
        let (error, first) = parse_error("[[instances]]\nid = 5\nconnector = \"named\"\n");
        assert_eq!(
            error.to_string(),
            format!(
                "instances[0].id: invalid type: integer `5`, expected a string (line {}, column 6)",
                first + 1
            )
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = format!("instances = [{{ id = \"zürich\", connector = \"tram\" }}]\n{HEADER}");
        let Err(LoadError::Parse(error)) = Config::from_toml(&text, Path::new("/")) else {
            panic!("expected a parse error")
        };
        assert_eq!(error.path.as_deref(), Some("instances[0].connector"));
        assert_eq!(error.owner, Some(Owner::Instance("zürich".to_owned())));
        assert_eq!(
            error.position,
            Some(Position {
                line: 1,
                column: 43
            })
        );
    }

    #[test]
    fn broken_toml_names_only_the_line_and_the_column() {
        let text = HEADER.replacen("[admin]", "[admin", 1);
        let Err(LoadError::Parse(error)) = Config::from_toml(&text, Path::new("/")) else {
            panic!("expected a parse error")
        };
        assert_eq!(error.path, None);
        assert_eq!(error.owner, None);
        assert_eq!(
            error.to_string(),
            "unclosed table, expected `]` (line 4, column 7)"
        );
    }

    #[test]
    fn an_error_without_a_position_reads_as_path_and_message() {
        let error = ParseError {
            path: Some("flows[1].enabled".to_owned()),
            owner: Some(Owner::Flow("sync".to_owned())),
            message: "invalid type: string \"yes\", expected a boolean".to_owned(),
            position: None,
        };
        assert_eq!(
            error.to_string(),
            "flows[1].enabled (flow \"sync\"): invalid type: string \"yes\", expected a boolean"
        );
    }
}
