//! Whether a license is in force (SPEC §1.1 "Validity"), as a pure function of its inputs.

use chrono::{DateTime, Utc};

use super::{HostIdentity, LicenseFile, SignatureError, TrustedKeys};

/// Validity state of a license at one instant, on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Validity {
    /// Signed by a trusted key, within its time window, on its host.
    Valid,
    /// `now >= expire`.
    Expired,
    /// `now < start`.
    NotYetValid,
    /// Bound to a host this one is not.
    WrongHost,
    /// Altered, or not signed by the key it names.
    InvalidSignature,
    /// Names an issuer key that is not trusted.
    UnknownIssuer,
}

impl Validity {
    /// The state's name as status output and the admin API spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Validity::Valid => "valid",
            Validity::Expired => "expired",
            Validity::NotYetValid => "not-yet-valid",
            Validity::WrongHost => "wrong-host",
            Validity::InvalidSignature => "invalid-signature",
            Validity::UnknownIssuer => "unknown-issuer",
        }
    }

    /// Whether the license may cover transfers.
    pub fn is_valid(&self) -> bool {
        matches!(self, Validity::Valid)
    }
}

impl std::fmt::Display for Validity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The license's state: signature first, then the window `start <= now < expire`, then the host.
pub fn validity(
    file: &LicenseFile,
    keys: &TrustedKeys,
    host: &HostIdentity,
    now: DateTime<Utc>,
) -> Validity {
    match file.verify(keys) {
        Err(SignatureError::UnknownIssuer { .. }) => return Validity::UnknownIssuer,
        Err(SignatureError::InvalidSignature) => return Validity::InvalidSignature,
        Ok(()) => {}
    }
    let common = &file.payload.common;
    if now < common.start {
        return Validity::NotYetValid;
    }
    if now >= common.expire {
        return Validity::Expired;
    }
    match &common.bound_to {
        Some(bound_to) if !host.matches(bound_to) => Validity::WrongHost,
        _ => Validity::Valid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::fixtures::{at, edit_envelope, edit_json, key, trusting, PAIR_JSON};
    use crate::license::sign;

    fn license(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> LicenseFile {
        let json = edit_json(PAIR_JSON, edit);
        LicenseFile::parse(sign(json.as_bytes(), &key(1)).unwrap().as_bytes()).unwrap()
    }

    fn unbound() -> LicenseFile {
        license(|m| {
            m.remove("bound_to");
        })
    }

    fn state(file: &LicenseFile, host: &HostIdentity, now: &str) -> Validity {
        validity(file, &trusting(&key(1)), host, at(now))
    }

    fn host(entries: &[&str]) -> HostIdentity {
        HostIdentity::from_entries(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_time_window_is_start_inclusive_and_expire_exclusive() {
        let file = unbound();
        let any = HostIdentity::default();
        assert_eq!(
            state(&file, &any, "2025-12-31T23:59:59Z"),
            Validity::NotYetValid
        );
        assert_eq!(state(&file, &any, "2026-01-01T00:00:00Z"), Validity::Valid);
        assert_eq!(state(&file, &any, "2026-12-31T23:59:59Z"), Validity::Valid);
        assert_eq!(
            state(&file, &any, "2027-01-01T00:00:00Z"),
            Validity::Expired
        );
    }

    #[test]
    fn bound_to_matches_a_name_case_insensitively() {
        let file = license(|_| {});
        let named = host(&["Integration-Host.ACME.example.", "10.0.0.1"]);
        assert_eq!(
            state(&file, &named, "2026-06-01T00:00:00Z"),
            Validity::Valid
        );
        let other = host(&["other-host.acme.example", "10.0.0.1"]);
        assert_eq!(
            state(&file, &other, "2026-06-01T00:00:00Z"),
            Validity::WrongHost
        );
    }

    #[test]
    fn bound_to_matches_an_ip_address() {
        let file = license(|m| {
            m.insert("bound_to".into(), "10.1.2.3".into());
        });
        assert_eq!(
            state(
                &file,
                &host(&["somehost", "10.1.2.3"]),
                "2026-06-01T00:00:00Z"
            ),
            Validity::Valid
        );
        assert_eq!(
            state(
                &file,
                &host(&["somehost", "10.1.2.4"]),
                "2026-06-01T00:00:00Z"
            ),
            Validity::WrongHost
        );
        let v6 = license(|m| {
            m.insert("bound_to".into(), "2001:db8::1".into());
        });
        assert_eq!(
            state(&v6, &host(&["2001:0db8:0:0::1"]), "2026-06-01T00:00:00Z"),
            Validity::Valid
        );
    }

    #[test]
    fn signature_comes_before_time_and_host() {
        let file = license(|_| {});
        let nowhere = HostIdentity::default();
        let expired = "2030-01-01T00:00:00Z";
        assert_eq!(
            validity(&file, &trusting(&key(2)), &nowhere, at(expired)),
            Validity::UnknownIssuer
        );
        let forged = edit_envelope(&sign(PAIR_JSON.as_bytes(), &key(2)).unwrap(), |env| {
            env.insert(
                "kid".into(),
                crate::license::kid(&key(1).verifying_key()).into(),
            );
        });
        let forged = LicenseFile::parse(forged.as_bytes()).unwrap();
        assert_eq!(
            state(&forged, &nowhere, expired),
            Validity::InvalidSignature
        );
        // Time comes before host.
        assert_eq!(state(&file, &nowhere, expired), Validity::Expired);
    }

    #[test]
    fn state_names_match_the_spec() {
        let names: Vec<&str> = [
            Validity::Valid,
            Validity::Expired,
            Validity::NotYetValid,
            Validity::WrongHost,
            Validity::InvalidSignature,
            Validity::UnknownIssuer,
        ]
        .iter()
        .map(Validity::as_str)
        .collect();
        assert_eq!(
            names,
            [
                "valid",
                "expired",
                "not-yet-valid",
                "wrong-host",
                "invalid-signature",
                "unknown-issuer"
            ]
        );
        assert!(Validity::Valid.is_valid());
        assert!(!Validity::WrongHost.is_valid());
        assert_eq!(Validity::NotYetValid.to_string(), "not-yet-valid");
    }
}
