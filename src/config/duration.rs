//! Human durations in the config file (`200ms`, `5s`, `24h`), parsed with `humantime`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Deserializes a duration written as text such as `200ms`, `5s`, `1h 30m` or `24h`.
pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Deserializes an optional duration (a key that may be left out).
pub fn deserialize_option<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    deserialize(de).map(Some)
}

/// Parses one duration, naming the accepted forms when the text is not one of them.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|err| {
        format!("invalid duration {text:?} ({err}); write e.g. \"200ms\", \"5s\" or \"24h\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_forms_the_spec_uses() {
        assert_eq!(parse("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5_400)));
    }

    #[test]
    fn refuses_numbers_without_units_and_garbage() {
        assert!(parse("5").is_err());
        assert!(parse("soon").is_err());
        assert!(parse("-5s").is_err());
    }
}
