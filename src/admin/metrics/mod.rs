//! `GET /metrics`, read at scrape time from the current snapshot, the record counters and the
//! request statistics, in the format the scraper asks for ([`Format::negotiate`]): the
//! Prometheus text format 0.0.4 by default, OpenMetrics 1.0 when `Accept` prefers it. Both
//! encode the same families, so names, labels and values never depend on the format. Label
//! sets are bounded: flows, instances and licenses come from the config and the license
//! directory, decisions from a fixed list.

mod accept;
mod openmetrics;
mod text;

use std::borrow::Cow;
use std::fmt;

pub use accept::Format;

use crate::clock::month_index;
use crate::config::Environment;
use crate::control::Control;
use crate::license::Terms;
use crate::policy::{Entitlement, LicenseEntry, Moment, PerEntitlement, Snapshot};
use crate::store::fleet::Fleet;

/// Encodes the running sidecar's metrics in `format`.
pub fn render(control: &Control, format: Format) -> Result<String, fmt::Error> {
    let families = families(control);
    match format {
        Format::Text => text::encode(&families),
        Format::OpenMetrics => openmetrics::encode(families),
    }
}

/// One metric family as read from the sidecar, before it is encoded in either format.
#[derive(Debug, Clone, PartialEq)]
struct Family {
    /// The family name; a counter's samples carry it with `_total`.
    name: &'static str,
    help: &'static str,
    values: Values,
}

/// A family's samples, by metric type.
#[derive(Debug, Clone, PartialEq)]
enum Values {
    Counter(Vec<Sample<u64>>),
    Gauge(Vec<Sample<i64>>),
    Histogram(Histogram),
}

/// One labelled value; label values are kept unescaped.
#[derive(Debug, Clone, PartialEq)]
struct Sample<V> {
    labels: Vec<(&'static str, String)>,
    value: V,
}

/// A histogram without labels: the sum, the count and the count of each bucket (not
/// cumulative), the last bucket's bound being `f64::MAX` for `+Inf`.
#[derive(Debug, Clone, PartialEq)]
struct Histogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

/// A label value escaped the way both text formats require (backslash, quote, newline).
fn escape_label(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A count as a gauge value (saturating: counts never come near `i64::MAX`).
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Every family, in the order they are exposed.
fn families(control: &Control) -> Vec<Family> {
    let snapshot = control.snapshot();
    let shared = control.shared();
    let now = shared.clock.now();
    let moment = Moment {
        now,
        floor: snapshot.clock_floor,
    };
    let month = month_index(now, snapshot.tz);
    let mut families = vec![requests(&snapshot)];
    families.extend(license_families(&snapshot, moment, month));
    families.extend(entitlement_families(&snapshot));
    families.push(Family {
        name: "tollgate_snapshot_generation",
        help: "Snapshots swapped in since start",
        values: Values::Gauge(vec![Sample {
            labels: Vec::new(),
            value: gauge(snapshot.generation),
        }]),
    });
    let (sum, count, buckets) = shared.upstream_durations.snapshot();
    families.push(Family {
        name: "tollgate_upstream_duration_seconds",
        help: "Time until the target's response head",
        values: Values::Histogram(Histogram {
            sum,
            count,
            buckets,
        }),
    });
    if let Some(fleet) = &shared.fleet {
        families.extend(fleet_families(fleet, &snapshot, month));
    }
    families
}

/// Fleet mode: the connection, round trips, errors and each license's lease.
fn fleet_families(fleet: &Fleet, snapshot: &Snapshot, month: u32) -> Vec<Family> {
    let unlabelled = |value| {
        vec![Sample {
            labels: Vec::new(),
            value,
        }]
    };
    let per_license = |value: &dyn Fn(&crate::meter::Lease) -> u64| -> Vec<Sample<i64>> {
        snapshot
            .licenses
            .iter()
            .filter_map(|entry| {
                let lease = entry.meter.lease()?;
                Some(Sample {
                    labels: vec![("license", entry.id().to_owned())],
                    value: gauge(value(lease)),
                })
            })
            .collect()
    };
    let (sum, count, buckets) = fleet.round_trips();
    vec![
        Family {
            name: "tollgate_fleet_redis_up",
            help: "Whether the last exchange with Redis succeeded (1) or not (0)",
            values: Values::Gauge(unlabelled(i64::from(fleet.is_connected()))),
        },
        Family {
            name: "tollgate_fleet_ready",
            help: "Whether this sidecar has joined the fleet and its clock agrees with Redis' (1) or not (0)",
            values: Values::Gauge(unlabelled(i64::from(fleet.is_ready()))),
        },
        Family {
            name: "tollgate_fleet_redis_errors",
            help: "Exchanges with Redis that failed or timed out",
            values: Values::Counter(vec![Sample { labels: Vec::new(), value: fleet.errors() }]),
        },
        Family {
            name: "tollgate_fleet_redis_seconds",
            help: "Round trips to Redis (its count is the number of round trips)",
            values: Values::Histogram(Histogram { sum, count, buckets }),
        },
        Family {
            name: "tollgate_fleet_lease_grants",
            help: "Blocks of the license's monthly budget granted to this sidecar",
            values: Values::Counter(
                per_license(&|lease| lease.grants())
                    .into_iter()
                    .map(|sample| Sample { labels: sample.labels, value: u64::try_from(sample.value).unwrap_or(0) })
                    .collect(),
            ),
        },
        Family {
            name: "tollgate_fleet_lease_records",
            help: "Records of the month's budget this sidecar holds and has not drawn yet",
            values: Values::Gauge(per_license(&|lease| lease.available(month))),
        },
        Family {
            name: "tollgate_fleet_lease_held",
            help: "Records of the month's budget granted to this sidecar, drawn or not",
            values: Values::Gauge(per_license(&|lease| lease.held(month))),
        },
    ]
}

/// `tollgate_requests_total{flow, instance, decision}`.
fn requests(snapshot: &Snapshot) -> Family {
    let counts = std::iter::once(&snapshot.unrouted)
        .chain(
            snapshot
                .instances
                .iter()
                .map(|instance| &instance.unclaimed),
        )
        .chain(
            snapshot
                .flow_infos()
                .iter()
                .flat_map(|flow| flow.requests.iter().map(|(_, counts)| counts)),
        );
    let mut samples = Vec::new();
    for counts in counts {
        for (decision, n) in counts.seen() {
            samples.push(Sample {
                labels: vec![
                    ("flow", counts.flow.to_string()),
                    ("instance", counts.instance.to_string()),
                    ("decision", decision.to_owned()),
                ],
                value: n,
            });
        }
    }
    Family {
        name: "tollgate_requests",
        help: "Requests by flow, instance and decision (allowed or the problem code)",
        values: Values::Counter(samples),
    }
}

/// A per-license gauge: its name, help and value (none where the license has no such value).
type LicenseGauge<'a> = (
    &'static str,
    &'static str,
    Box<dyn Fn(&LicenseEntry) -> Option<i64> + 'a>,
);

/// The gauges labelled `{license}`: records, points, expiry and validity.
fn license_families(snapshot: &Snapshot, moment: Moment, month: u32) -> Vec<Family> {
    let gauges: [LicenseGauge<'_>; 8] = [
        (
            "tollgate_records_transferred",
            "Main-entity records transferred this month",
            Box::new(|license| Some(gauge(license.meter.committed(month)))),
        ),
        (
            "tollgate_records_limit",
            "Monthly transferred-records limit",
            Box::new(|license| license.limit.map(gauge)),
        ),
        (
            "tollgate_records_hard_limit",
            "Monthly limit plus the 10% buffer",
            Box::new(|license| license.hard_limit.map(gauge)),
        ),
        (
            "tollgate_records_warning",
            "1 while records used this month are at or over the limit",
            Box::new(|license| {
                license
                    .limit
                    .map(|limit| i64::from(license.meter.committed(month) >= limit))
            }),
        ),
        (
            "tollgate_points_used",
            "License points held by pairs of instances",
            Box::new(|license| {
                matches!(license.installed.file.payload.terms, Terms::Pair(_))
                    .then(|| i64::from(license.points_used))
            }),
        ),
        (
            "tollgate_points_total",
            "License points granted",
            Box::new(|license| match &license.installed.file.payload.terms {
                Terms::Pair(terms) => Some(i64::from(terms.points)),
                Terms::Subscription(_) => None,
            }),
        ),
        (
            "tollgate_license_expiry_timestamp_seconds",
            "When the license expires (Unix time)",
            Box::new(|license| Some(license.installed.file.payload.common.expire.timestamp())),
        ),
        (
            "tollgate_license_valid",
            "1 while the license is valid",
            Box::new(move |license| Some(i64::from(license.usable_at(moment).is_ok()))),
        ),
    ];
    gauges
        .into_iter()
        .map(|(name, help, value)| Family {
            name,
            help,
            values: Values::Gauge(
                snapshot
                    .licenses
                    .iter()
                    .filter_map(|license| {
                        value(license).map(|value| Sample {
                            labels: vec![("license", license.id().to_owned())],
                            value,
                        })
                    })
                    .collect(),
            ),
        })
        .collect()
}

/// `tollgate_entitlement_used` and `tollgate_entitlement_limit{environment, entitlement}`.
fn entitlement_families(snapshot: &Snapshot) -> [Family; 2] {
    let entitlements = &snapshot.entitlements;
    let per_entitlement = |environment: Environment, values: PerEntitlement<u64>| {
        Entitlement::ALL.into_iter().map(move |entitlement| Sample {
            labels: vec![
                ("environment", environment.as_str().to_owned()),
                ("entitlement", entitlement.as_str().to_owned()),
            ],
            value: gauge(values[entitlement]),
        })
    };
    let used = Environment::ALL
        .into_iter()
        .flat_map(|environment| {
            per_entitlement(environment, entitlements.in_use[environment].used())
        })
        .collect();
    let limits = Environment::ALL
        .into_iter()
        .filter_map(|environment| {
            entitlements
                .enforced(environment)
                .map(|limits| per_entitlement(environment, limits))
        })
        .flatten()
        .collect();
    [
        Family {
            name: "tollgate_entitlement_used",
            help: "Entitlements in use by enabled flows",
            values: Values::Gauge(used),
        },
        Family {
            name: "tollgate_entitlement_limit",
            help: "Subscription entitlement limits in force",
            values: Values::Gauge(limits),
        },
    ]
}

/// Families covering every kind of value both encoders handle, for their tests.
#[cfg(test)]
fn example_families() -> Vec<Family> {
    vec![
        Family {
            name: "tollgate_requests",
            help: "Requests by flow, instance and decision",
            values: Values::Counter(vec![
                Sample {
                    labels: vec![("flow", "incidents".into()), ("decision", "allowed".into())],
                    value: 3,
                },
                Sample {
                    labels: vec![
                        ("flow", "a\"b\\c".into()),
                        ("decision", "unknown-flow".into()),
                    ],
                    value: 1,
                },
            ]),
        },
        Family {
            name: "tollgate_records_limit",
            help: "Monthly transferred-records limit",
            values: Values::Gauge(Vec::new()),
        },
        Family {
            name: "tollgate_snapshot_generation",
            help: "Snapshots swapped in since start",
            values: Values::Gauge(vec![Sample {
                labels: Vec::new(),
                value: 7,
            }]),
        },
        Family {
            name: "tollgate_upstream_duration_seconds",
            help: "Time until the target's response head",
            values: Values::Histogram(Histogram {
                sum: 0.25,
                count: 3,
                buckets: vec![(0.1, 1), (1.0, 1), (f64::MAX, 1)],
            }),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("incidents"), "incidents");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
