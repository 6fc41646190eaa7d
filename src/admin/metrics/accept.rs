//! Which exposition format a scraper gets: the Prometheus text format 0.0.4 unless its
//! `Accept` header ranks OpenMetrics higher (RFC 9110, section 12.5.1: the most specific range that
//! matches a format gives that format's weight).

use http::header::ACCEPT;
use http::HeaderMap;

/// The exposition formats of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4, the default.
    Text,
    /// OpenMetrics 1.0, for scrapers that prefer it.
    OpenMetrics,
}

impl Format {
    /// The format the request's `Accept` headers prefer; ties and absence mean [`Format::Text`].
    pub fn negotiate(headers: &HeaderMap) -> Format {
        let ranges: Vec<MediaRange<'_>> = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(MediaRange::parse)
            .collect();
        if Format::OpenMetrics.weight(&ranges) > Format::Text.weight(&ranges) {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` of an exposition in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// `(type, subtype, versions this encoding satisfies)`.
    fn media_type(self) -> (&'static str, &'static str, &'static [&'static str]) {
        match self {
            Format::Text => ("text", "plain", &["0.0.4"]),
            Format::OpenMetrics => ("application", "openmetrics-text", &["1.0.0", "0.0.1"]),
        }
    }

    /// The `q` of the most specific ranges matching this format (the highest among equals);
    /// 0 when none matches.
    fn weight(self, ranges: &[MediaRange<'_>]) -> f32 {
        ranges
            .iter()
            .filter_map(|range| Some((range.specificity(self)?, range.q)))
            .fold(None, |best: Option<(u8, f32)>, (rank, q)| match best {
                Some((best_rank, best_q)) if best_rank > rank => Some((best_rank, best_q)),
                Some((best_rank, best_q)) if best_rank == rank => Some((rank, best_q.max(q))),
                _ => Some((rank, q)),
            })
            .map_or(0.0, |(_, q)| q)
    }
}

/// One element of an `Accept` header.
#[derive(Debug)]
struct MediaRange<'a> {
    kind: &'a str,
    subtype: &'a str,
    version: Option<&'a str>,
    q: f32,
}

impl<'a> MediaRange<'a> {
    /// Parses `type/subtype;param=value;q=0.5`; a malformed element (or `q`) expresses no
    /// preference and is skipped.
    fn parse(element: &'a str) -> Option<MediaRange<'a>> {
        let mut parts = element.split(';');
        let (kind, subtype) = parts.next()?.trim().split_once('/')?;
        if kind.is_empty() || subtype.is_empty() {
            return None;
        }
        let mut range = MediaRange {
            kind,
            subtype,
            version: None,
            q: 1.0,
        };
        for param in parts {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match name.trim() {
                n if n.eq_ignore_ascii_case("q") => range.q = quality(value)?,
                n if n.eq_ignore_ascii_case("version") => range.version = Some(value),
                _ => {}
            }
        }
        Some(range)
    }

    /// How specifically this range names `format`: 3 with a matching version, 2 for the exact
    /// type, 1 for `type/*`, 0 for `*/*`; `None` when it does not match.
    fn specificity(&self, format: Format) -> Option<u8> {
        let (kind, subtype, versions) = format.media_type();
        if self.kind == "*" && self.subtype == "*" {
            return Some(0);
        }
        if !self.kind.eq_ignore_ascii_case(kind) {
            return None;
        }
        if self.subtype == "*" {
            return Some(1);
        }
        if !self.subtype.eq_ignore_ascii_case(subtype) {
            return None;
        }
        match self.version {
            None => Some(2),
            Some(version) if versions.contains(&version) => Some(3),
            Some(_) => None,
        }
    }
}

/// A qvalue: a number from 0 to 1.
fn quality(text: &str) -> Option<f32> {
    text.parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(accept: &[&str]) -> Format {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(ACCEPT, value.parse().unwrap());
        }
        Format::negotiate(&headers)
    }

    #[test]
    fn prometheus_asking_for_openmetrics_first_gets_it() {
        assert_eq!(
            negotiate(&["application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"]),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(&["application/openmetrics-text; version=1.0.0"]),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(&["APPLICATION/OpenMetrics-Text;Version=\"1.0.0\""]),
            Format::OpenMetrics
        );
        assert_eq!(negotiate(&["application/*"]), Format::OpenMetrics);
    }

    #[test]
    fn the_text_format_is_the_default() {
        assert_eq!(negotiate(&[]), Format::Text);
        assert_eq!(negotiate(&["text/plain"]), Format::Text);
        assert_eq!(negotiate(&["text/plain;version=0.0.4"]), Format::Text);
        assert_eq!(negotiate(&["*/*"]), Format::Text);
        assert_eq!(negotiate(&["application/json"]), Format::Text);
        assert_eq!(negotiate(&["garbage"]), Format::Text);
    }

    #[test]
    fn q_values_decide() {
        assert_eq!(
            negotiate(&["text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"]),
            Format::Text
        );
        assert_eq!(
            negotiate(&["text/plain;q=0.1, application/openmetrics-text;q=0.2"]),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(&["application/openmetrics-text;q=0.5, text/plain;q=0.5"]),
            Format::Text,
            "a tie keeps the default"
        );
        assert_eq!(
            negotiate(&["application/openmetrics-text;q=0, */*"]),
            Format::Text,
            "q=0 refuses OpenMetrics even though */* would take it"
        );
        assert_eq!(
            negotiate(&["application/*;q=0.9, text/plain;q=0.8"]),
            Format::OpenMetrics
        );
    }

    #[test]
    fn the_most_specific_range_gives_the_weight() {
        // `text/plain;q=0.1` is more specific than `*/*`, so the text format weighs 0.1.
        assert_eq!(
            negotiate(&["*/*;q=1, text/plain;q=0.1, application/openmetrics-text;q=0.5"]),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(&["application/openmetrics-text;version=1.0.0;q=0.2, application/openmetrics-text;q=0.9, text/plain;q=0.5"]),
            Format::Text,
            "the versioned range is more specific than the bare one"
        );
    }

    #[test]
    fn unknown_versions_and_malformed_elements_do_not_match() {
        assert_eq!(
            negotiate(&["application/openmetrics-text;version=2.0.0"]),
            Format::Text
        );
        assert_eq!(
            negotiate(&["application/openmetrics-text;q=high, text/plain;q=0.1"]),
            Format::Text
        );
        assert_eq!(
            negotiate(&["application/openmetrics-text;q=1.5"]),
            Format::Text
        );
        assert_eq!(negotiate(&["/openmetrics-text, text/"]), Format::Text);
    }

    #[test]
    fn several_accept_fields_are_one_list() {
        assert_eq!(
            negotiate(&["text/plain;q=0.3", "application/openmetrics-text;q=0.6"]),
            Format::OpenMetrics
        );
    }

    #[test]
    fn content_types_name_the_version() {
        assert_eq!(
            Format::Text.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(
            Format::OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }
}
