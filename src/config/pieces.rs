//! Reading a large config text in pieces. A TOML document is parsed whole into a tree before
//! serde reads it; for a file of 10,000 flows that tree takes twenty times the text's size,
//! and the allocator keeps much of it after it is freed. A config's bulk is its
//! `[[instances]]` and `[[flows]]` tables, so the text is cut at the lines that open them
//! (exactly `[[instances]]` or `[[flows]]`) into pieces of about [`PIECE_BYTES`], and each
//! piece is parsed on its own.
//!
//! A piece stands for itself only when it holds nothing but those tables (its own
//! `[[flows.entities]]` included); anything else (another table, a string that spans a cut,
//! `instances` or `flows` in the head, a mistake) makes a piece fail, and then the text is
//! parsed whole, so every error is reported exactly as the whole parse reports it.

use serde::Deserialize;

use super::{Config, Flow, Instance};

/// About how much text each piece holds.
const PIECE_BYTES: usize = 64 * 1024;

/// A piece after the head: instances and flows only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Piece {
    #[serde(default)]
    instances: Vec<Instance>,
    #[serde(default)]
    flows: Vec<Flow>,
}

/// The config read piece by piece, or `None` where the text is small or a piece does not
/// stand for itself (the caller then parses it whole).
pub(super) fn read(text: &str) -> Option<Config> {
    read_in(text, PIECE_BYTES)
}

/// [`read`] with pieces of about `piece_bytes`.
pub(super) fn read_in(text: &str, piece_bytes: usize) -> Option<Config> {
    let cuts = cuts(text, piece_bytes);
    let (&first, rest) = cuts.split_first()?;
    let head: toml::Table = text[..first].parse().ok()?;
    if head.contains_key("instances") || head.contains_key("flows") {
        return None;
    }
    let mut config: Config = head.try_into().ok()?;
    let ends = rest.iter().copied().chain([text.len()]);
    for (start, end) in cuts.iter().copied().zip(ends) {
        let piece: Piece = toml::from_str(&text[start..end]).ok()?;
        config.instances.extend(piece.instances);
        config.flows.extend(piece.flows);
    }
    Some(config)
}

/// Where pieces start: the first `[[instances]]` or `[[flows]]` line, then such lines about
/// `piece_bytes` apart. Empty where the text has no such line or fits in one piece.
fn cuts(text: &str, piece_bytes: usize) -> Vec<usize> {
    if text.len() <= piece_bytes {
        return Vec::new();
    }
    let mut cuts: Vec<usize> = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let opens = matches!(
            line.trim_end_matches(['\n', '\r']),
            "[[instances]]" | "[[flows]]"
        );
        if opens && cuts.last().is_none_or(|&last| at - last >= piece_bytes) {
            cuts.push(at);
        }
        at += line.len();
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::super::testing::HEADER;
    use super::*;

    fn whole(text: &str) -> String {
        format!(
            "{:?}",
            super::super::parse::parse::<Config>(text).map(|c| (c.instances, c.flows))
        )
    }

    fn in_pieces(text: &str) -> Option<String> {
        read_in(text, 1).map(|c| format!("{:?}", Ok::<_, ()>((c.instances, c.flows))))
    }

    const BODY: &str = r#"
[[instances]]
id = "sn"
connector = "named"
app = "servicenow"
base_uri = "https://sn.example"

[[flows]]
id = "incidents"
systems = ["sn", "jira"]
[[flows.entities]]
instance = "jira"
role = "main"
method = "POST"
path = "/rest/api/2/issue"

[[instances]]
id = "jira"
connector = "named"
app = "jira"
base_uri = "https://jira.example"

[[flows]]
id = "escalations"
systems = ["jira", "sn"]
"#;

    #[test]
    fn pieces_read_what_the_whole_text_says() {
        let text = format!("{HEADER}{BODY}");
        assert_eq!(cuts(&text, 1).len(), 4);
        assert_eq!(in_pieces(&text).as_deref(), Some(whole(&text).as_str()));
        let config = read_in(&text, 1).unwrap();
        assert_eq!(config.server.flow_header, "Tollgate-Flow");
        assert!(
            cuts(&text, text.len()).is_empty(),
            "a small text is one piece"
        );
    }

    #[test]
    fn a_piece_that_does_not_stand_for_itself_leaves_the_text_to_the_whole_parse() {
        let cases = [
            // Another table after the instances: its key is not a piece's.
            format!("{HEADER}{BODY}[state]\ndir = \"elsewhere\"\n"),
            // A string that spans a cut.
            format!("{HEADER}{BODY}").replacen(
                "path = \"/rest/api/2/issue\"",
                "path = \"\"\"\n[[flows]]\n\"\"\"",
                1,
            ),
            // The head holds flows of its own.
            HEADER.replacen("[server]", "flows = []\n[server]", 1) + BODY,
            // Entities of a flow in an earlier piece.
            format!("{HEADER}{BODY}[[instances]]\nid = \"x\"\nconnector = \"webhook\"\n[[flows.entities]]\ninstance = \"sn\"\nrole = \"child\"\nmethod = \"POST\"\npath = \"/x\"\n"),
            // A mistake inside a piece.
            format!("{HEADER}{BODY}").replacen("role = \"main\"", "role = \"boss\"", 1),
        ];
        for text in cases {
            assert_eq!(read_in(&text, 1).map(|_| ()), None, "{text}");
        }
    }
}
