//! Why a flow does not run: disabled (by the operator or a licensing rule) or not covered by
//! any valid license. The names are those of the admin API and the problem answers.

use crate::license::Validity;

/// Why a flow is disabled; the `reason` of `flow-disabled` answers and of `GET /v1/flows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisabledReason {
    /// The operator disabled it (config `enabled = false` or the admin API).
    Operator,
    /// No covering license had a free point when it was enabled.
    PointsExhausted,
    /// The license whose point its pair held was removed.
    LicenseRemoved,
    /// Enabling it would exceed a subscription entitlement.
    EntitlementExceeded,
    /// Its license reached the transferred-records hard limit.
    RecordsLimit,
}

impl DisabledReason {
    /// Every reason.
    pub const ALL: [DisabledReason; 5] = [
        DisabledReason::Operator,
        DisabledReason::PointsExhausted,
        DisabledReason::LicenseRemoved,
        DisabledReason::EntitlementExceeded,
        DisabledReason::RecordsLimit,
    ];

    /// The reason as the API spells it (and the store keeps it).
    pub fn as_str(self) -> &'static str {
        match self {
            DisabledReason::Operator => "operator",
            DisabledReason::PointsExhausted => "points-exhausted",
            DisabledReason::LicenseRemoved => "license-removed",
            DisabledReason::EntitlementExceeded => "entitlement-exceeded",
            DisabledReason::RecordsLimit => "records-limit",
        }
    }

    /// The reason a stored spelling names.
    pub fn parse(text: &str) -> Option<DisabledReason> {
        DisabledReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
    }
}

/// Why no valid license covers a flow: the `reason` of `license-invalid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    /// No installed license covers it at all.
    Missing,
    /// The covering license has expired.
    Expired,
    /// The covering license starts later.
    NotYetValid,
    /// The covering license is bound to another host.
    WrongHost,
    /// The clock is behind the latest time seen by more than `max_clock_skew`.
    ClockRollback,
}

impl InvalidReason {
    /// The reason as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::Missing => "missing",
            InvalidReason::Expired => "expired",
            InvalidReason::NotYetValid => "not-yet-valid",
            InvalidReason::WrongHost => "wrong-host",
            InvalidReason::ClockRollback => "clock-rollback",
        }
    }

    /// Why a license in this state covers nothing; `None` for a valid one.
    pub fn of(validity: Validity) -> Option<InvalidReason> {
        match validity {
            Validity::Valid => None,
            Validity::Expired => Some(InvalidReason::Expired),
            Validity::NotYetValid => Some(InvalidReason::NotYetValid),
            Validity::WrongHost => Some(InvalidReason::WrongHost),
            Validity::ClockRollback => Some(InvalidReason::ClockRollback),
        }
    }
}

impl std::fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_their_spelling() {
        for reason in DisabledReason::ALL {
            assert_eq!(DisabledReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(DisabledReason::parse("tired"), None);
    }

    #[test]
    fn every_invalid_state_has_its_reason() {
        assert_eq!(InvalidReason::of(Validity::Valid), None);
        for validity in [
            Validity::Expired,
            Validity::NotYetValid,
            Validity::WrongHost,
            Validity::ClockRollback,
        ] {
            assert_eq!(
                InvalidReason::of(validity).map(InvalidReason::as_str),
                Some(validity.as_str())
            );
        }
    }
}
