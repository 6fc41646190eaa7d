//! Whether a verified license is in force: one pure function of the license, the host
//! identity, the instant and the clock high-water mark, judged afresh every time. Nothing
//! here remembers an earlier verdict, so no verdict can go stale as time moves on.

use chrono::{DateTime, Utc};

use super::{Common, HostIdentity};

/// The state of a verified license at one instant, on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Validity {
    /// Within its time window, on its host, with a trustworthy clock.
    Valid,
    /// Bound to a host this one is not (whatever its dates).
    WrongHost,
    /// The clock is further behind the latest time seen than `max_clock_skew` allows.
    ClockRollback,
    /// `now < start`.
    NotYetValid,
    /// `now >= expire`.
    Expired,
}

impl Validity {
    /// The state's name as status output and the admin API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Validity::Valid => "valid",
            Validity::WrongHost => "wrong-host",
            Validity::ClockRollback => "clock-rollback",
            Validity::NotYetValid => "not-yet-valid",
            Validity::Expired => "expired",
        }
    }

    /// Whether the license may cover transfers.
    pub fn is_valid(self) -> bool {
        self == Validity::Valid
    }

    /// `Ok` when valid, else the `license-invalid` reason.
    pub fn as_result(self) -> Result<(), &'static str> {
        match self {
            Validity::Valid => Ok(()),
            invalid => Err(invalid.as_str()),
        }
    }
}

impl std::fmt::Display for Validity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The instant a license is judged at, with the clock-rollback floor: before the floor the
/// clock has gone back further than `max_clock_skew` and no license is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// Now.
    pub now: DateTime<Utc>,
    /// The latest time seen minus `max_clock_skew`, if any time was seen.
    pub floor: Option<DateTime<Utc>>,
}

impl Moment {
    /// A moment without a rollback floor.
    pub fn at(now: DateTime<Utc>) -> Moment {
        Moment { now, floor: None }
    }
}

/// The state of a verified license: the host binding first (a license for another host is
/// `wrong-host` before, during and after its window), then the clock, then the window
/// `start <= now < expire`. The signature is checked before a license is ever installed.
pub fn judge(license: &Common, host: &HostIdentity, moment: Moment) -> Validity {
    if license
        .bound_to
        .as_deref()
        .is_some_and(|bound_to| !host.matches(bound_to))
    {
        Validity::WrongHost
    } else if moment.floor.is_some_and(|floor| moment.now < floor) {
        Validity::ClockRollback
    } else if moment.now < license.start {
        Validity::NotYetValid
    } else if moment.now >= license.expire {
        Validity::Expired
    } else {
        Validity::Valid
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::license::fixtures::{at, edit_json, key, PAIR_JSON};
    use crate::license::{sign, LicenseFile};

    fn license(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Common {
        let json = edit_json(PAIR_JSON, edit);
        LicenseFile::parse(sign(json.as_bytes(), &key(1)).unwrap().as_bytes())
            .unwrap()
            .payload
            .common
    }

    fn bound(to: &str) -> Common {
        license(|m| {
            m.insert("bound_to".into(), to.into());
        })
    }

    fn unbound() -> Common {
        license(|m| {
            m.remove("bound_to");
        })
    }

    fn state(license: &Common, host: &HostIdentity, now: &str) -> Validity {
        judge(license, host, Moment::at(at(now)))
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
    fn a_license_for_another_host_is_wrong_host_before_during_and_after_its_window() {
        let file = bound("other-host.example");
        let here = host(&["integration-host.acme.example", "10.0.0.1"]);
        for now in [
            "2025-06-01T00:00:00Z",
            "2026-06-01T00:00:00Z",
            "2030-01-01T00:00:00Z",
        ] {
            assert_eq!(state(&file, &here, now), Validity::WrongHost, "{now}");
        }
        let rolled_back = Moment {
            now: at("2026-06-01T00:00:00Z"),
            floor: Some(at("2026-07-01T00:00:00Z")),
        };
        assert_eq!(judge(&file, &here, rolled_back), Validity::WrongHost);
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
    fn bound_to_matches_an_ip_address_or_a_fleet_domain() {
        let here = host(&["sidecar-b.engines.acme.example", "10.1.2.3"]);
        let june = "2026-06-01T00:00:00Z";
        assert_eq!(state(&bound("10.1.2.3"), &here, june), Validity::Valid);
        assert_eq!(state(&bound("10.1.2.4"), &here, june), Validity::WrongHost);
        assert_eq!(
            state(&bound("*.engines.acme.example"), &here, june),
            Validity::Valid
        );
        assert_eq!(
            state(&bound("*.engines.other.example"), &here, june),
            Validity::WrongHost
        );
        let v6 = bound("2001:db8::1");
        assert_eq!(
            state(&v6, &host(&["2001:0db8:0:0::1"]), june),
            Validity::Valid
        );
    }

    #[test]
    fn a_clock_behind_the_floor_invalidates_every_license_on_its_host() {
        let file = unbound();
        let moment = Moment {
            now: at("2026-06-01T00:00:00Z"),
            floor: Some(at("2026-06-01T00:00:01Z")),
        };
        assert_eq!(
            judge(&file, &HostIdentity::default(), moment),
            Validity::ClockRollback
        );
        let caught_up = Moment {
            floor: Some(at("2026-06-01T00:00:00Z")),
            ..moment
        };
        assert_eq!(
            judge(&file, &HostIdentity::default(), caught_up),
            Validity::Valid
        );
    }

    #[test]
    fn state_names_match_the_contract() {
        let names: Vec<&str> = [
            Validity::Valid,
            Validity::Expired,
            Validity::NotYetValid,
            Validity::WrongHost,
            Validity::ClockRollback,
        ]
        .iter()
        .map(|v| v.as_str())
        .collect();
        assert_eq!(
            names,
            [
                "valid",
                "expired",
                "not-yet-valid",
                "wrong-host",
                "clock-rollback"
            ]
        );
        assert!(Validity::Valid.is_valid());
        assert!(!Validity::WrongHost.is_valid());
        assert_eq!(Validity::NotYetValid.to_string(), "not-yet-valid");
        assert_eq!(Validity::Expired.as_result(), Err("expired"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Judging twice, or at any instant, never turns a license of another host valid.
        #[test]
        fn validity_is_a_pure_function_and_another_host_is_never_valid(
            start in 0i64..4_000_000_000,
            length in 1i64..400_000_000,
            now in 0i64..4_500_000_000,
            skew in proptest::option::of(0i64..100_000_000),
        ) {
            let mut file = bound("other-host.example");
            file.start = DateTime::from_timestamp(start, 0).unwrap();
            file.expire = DateTime::from_timestamp(start + length, 0).unwrap();
            let moment = Moment {
                now: DateTime::from_timestamp(now, 0).unwrap(),
                floor: skew.and_then(|s| DateTime::from_timestamp(now + s - 50_000_000, 0)),
            };
            let here = host(&["integration-host.acme.example"]);
            prop_assert_eq!(judge(&file, &here, moment), Validity::WrongHost);
            let mut unbound = file.clone();
            unbound.bound_to = None;
            let first = judge(&unbound, &here, moment);
            prop_assert_eq!(first, judge(&unbound, &here, moment));
            let in_window = moment.now >= unbound.start && moment.now < unbound.expire;
            let rolled_back = moment.floor.is_some_and(|floor| moment.now < floor);
            prop_assert_eq!(first.is_valid(), in_window && !rolled_back);
        }
    }
}
