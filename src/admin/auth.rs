//! Bearer-token check for the `/v1` routes, in constant time.

use http::header::AUTHORIZATION;
use http::HeaderMap;
use subtle::ConstantTimeEq;

/// The admin token, read once from `admin.token_file`.
pub struct Token(Box<[u8]>);

/// Why the admin token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("{}: cannot read the admin token: {source}", path.display())]
    Read {
        /// `admin.token_file`.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds nothing but white space.
    #[error("{}: the admin token file is empty", path.display())]
    Empty {
        /// `admin.token_file`.
        path: std::path::PathBuf,
    },
}

impl Token {
    /// Reads and trims the token file.
    pub fn read(path: &std::path::Path) -> Result<Token, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Token(token.as_bytes().into()))
    }

    /// Whether the request carries `Authorization: Bearer <token>` (the scheme in any case).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        headers
            .get(AUTHORIZATION)
            .and_then(|value| bearer_credentials(value.as_bytes()))
            .is_some_and(|presented| presented.ct_eq(&self.0).into())
    }
}

/// The credentials of a `Bearer` authorization: RFC 9110, section 11.1 matches the scheme
/// case-insensitively and separates it from the credentials by one or more spaces.
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    Some(&rest[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let token = Token(b"s3cret".to_vec().into_boxed_slice());
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert!(token.admits(&with("Bearer s3cret")));
        assert!(!token.admits(&with("Bearer s3cre")));
        assert!(!token.admits(&with("Bearer s3cret2")));
        assert!(!token.admits(&with("Basic s3cret")));
        assert!(!token.admits(&HeaderMap::new()));
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn the_scheme_is_matched_in_any_case() {
        let token = Token(b"s3cret".to_vec().into_boxed_slice());
        for value in ["bearer s3cret", "BEARER s3cret", "bEaReR s3cret"] {
            assert!(token.admits(&headers(value)), "{value}");
        }
        assert!(
            !token.admits(&headers("bearer S3CRET")),
            "the token is exact"
        );
        assert!(!token.admits(&headers("bearerx s3cret")));
        assert!(!token.admits(&headers("Bearers3cret")));
    }

    #[test]
    fn one_or_more_spaces_separate_the_scheme_and_the_token() {
        let token = Token(b"s3cret".to_vec().into_boxed_slice());
        assert!(token.admits(&headers("Bearer   s3cret")));
        assert!(token.admits(&headers("bearer  s3cret")));
        assert!(
            !token.admits(&headers("Bearer\ts3cret")),
            "only SP separates"
        );
        assert!(!token.admits(&headers("Bearer    ")));
        assert!(!token.admits(&headers("Bearer")));
        assert!(!token.admits(&headers("Bearer s3cret extra")));
    }
}
