//! `Proxy-Authorization: Basic` on forward-proxy requests: an engine that only knows a proxy
//! URL (`http://incidents:x@127.0.0.1:8080`, `HTTPS_PROXY`) names its flow as the user name,
//! and, where `server.proxy_token_file` is set, proves it may use the proxy with the password.

use base64::Engine as _;
use http::HeaderMap;
use subtle::ConstantTimeEq;

/// What a `Proxy-Authorization` header says.
#[derive(Clone, PartialEq, Eq)]
pub enum ProxyCredentials {
    /// No `Proxy-Authorization` header.
    Absent,
    /// A header that is not `Basic` with base64 of `user:password` in UTF-8.
    Malformed,
    /// Basic credentials.
    Basic {
        /// The user name: the flow.
        user: String,
        /// The password.
        password: Vec<u8>,
    },
}

impl std::fmt::Debug for ProxyCredentials {
    /// Never shows the password (a tunnel keeps its credentials for its whole life).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyCredentials::Absent => f.write_str("Absent"),
            ProxyCredentials::Malformed => f.write_str("Malformed"),
            ProxyCredentials::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"***")
                .finish(),
        }
    }
}

impl ProxyCredentials {
    /// Reads the request's `Proxy-Authorization` (only the first one counts; several are
    /// malformed).
    pub fn of(headers: &HeaderMap) -> ProxyCredentials {
        let mut values = headers.get_all(http::header::PROXY_AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return ProxyCredentials::Absent;
        };
        if values.next().is_some() {
            return ProxyCredentials::Malformed;
        }
        parse(value.as_bytes()).unwrap_or(ProxyCredentials::Malformed)
    }

    /// Whether the password equals `token`, compared in constant time.
    pub fn password_is(&self, token: &[u8]) -> bool {
        match self {
            ProxyCredentials::Basic { password, .. } => {
                password.len() == token.len() && bool::from(password.as_slice().ct_eq(token))
            }
            _ => false,
        }
    }

    /// The user name, where one is given.
    pub fn user(&self) -> Option<&str> {
        match self {
            ProxyCredentials::Basic { user, .. } if !user.is_empty() => Some(user),
            _ => None,
        }
    }
}

/// `Basic <base64(user:password)>`, the scheme in any case (RFC 9110 section 11.1).
fn parse(value: &[u8]) -> Option<ProxyCredentials> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some(ProxyCredentials::Basic {
        user,
        password: decoded[colon + 1..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                http::header::PROXY_AUTHORIZATION,
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn basic(user_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[test]
    fn the_user_name_is_the_flow_and_the_password_is_compared_exactly() {
        let credentials = ProxyCredentials::of(&headers(&[&basic("incidents:s3cret:x")]));
        assert_eq!(credentials.user(), Some("incidents"));
        assert!(
            credentials.password_is(b"s3cret:x"),
            "the password may hold a colon"
        );
        assert!(!credentials.password_is(b"s3cret"));
        assert!(!credentials.password_is(b"s3cret:x "));
        let lower =
            ProxyCredentials::of(&headers(&[&basic("incidents:x").replace("Basic", "bAsIc")]));
        assert_eq!(
            lower.user(),
            Some("incidents"),
            "the scheme is case-insensitive"
        );
    }

    #[test]
    fn other_schemes_bad_base64_and_repeated_headers_are_malformed() {
        assert_eq!(
            ProxyCredentials::of(&HeaderMap::new()),
            ProxyCredentials::Absent
        );
        for bad in [
            vec!["Bearer abc".to_owned()],
            vec!["Basic !!!".to_owned()],
            vec![basic("no-colon")],
            vec!["Basic".to_owned()],
            vec![basic("a:b"), basic("c:d")],
        ] {
            let refs: Vec<&str> = bad.iter().map(String::as_str).collect();
            assert_eq!(
                ProxyCredentials::of(&headers(&refs)),
                ProxyCredentials::Malformed,
                "{bad:?}"
            );
        }
        let empty_user = ProxyCredentials::of(&headers(&[&basic(":x")]));
        assert_eq!(empty_user.user(), None);
    }

    proptest! {
        /// Whatever the header holds, reading it never panics, and credentials that encode
        /// a user and a password come back exactly.
        #[test]
        fn any_header_value_is_read_without_panicking(raw in prop::collection::vec(any::<u8>(), 0..200),
                                                       user in "[^:]{0,20}", password in any::<Vec<u8>>()) {
            if let Ok(value) = HeaderValue::from_bytes(&raw) {
                let mut map = HeaderMap::new();
                map.insert(http::header::PROXY_AUTHORIZATION, value);
                let _ = ProxyCredentials::of(&map);
            }
            let mut plain = user.clone().into_bytes();
            plain.push(b':');
            plain.extend_from_slice(&password);
            let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(&plain));
            let read = ProxyCredentials::of(&headers(&[&value]));
            prop_assert!(read.password_is(&password));
            prop_assert_eq!(read.user(), (!user.is_empty()).then_some(user.as_str()));
        }
    }
}
