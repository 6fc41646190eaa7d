//! Bearer-token check for the `/v1` routes, in constant time.

use http::header::AUTHORIZATION;
use http::HeaderMap;
use subtle::ConstantTimeEq;

/// The admin token, read once from `admin.token_file`.
pub struct Token(Box<[u8]>);

impl Token {
    /// Reads and trims the token file.
    pub fn read(path: &std::path::Path) -> Result<Token, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("{}: cannot read the admin token: {err}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("{}: the admin token file is empty", path.display()));
        }
        Ok(Token(token.as_bytes().into()))
    }

    /// Whether the request carries `Authorization: Bearer <token>`.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return false;
        };
        let Some(presented) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return false;
        };
        presented.ct_eq(&self.0).into()
    }
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
}
