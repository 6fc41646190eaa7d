//! `GET /metrics`: Prometheus text format (prometheus-client), read at scrape time from the
//! current snapshot, the record counters and the request statistics. Label sets are bounded:
//! flows, instances and licenses come from the config and the license directory, decisions
//! from a fixed list.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::clock::month_index;
use crate::config::Environment;
use crate::control::Control;
use crate::license::Terms;
use crate::policy::{env_index, Moment, ENTITLEMENTS};

/// The registry `/metrics` encodes: one collector over the running sidecar.
pub fn registry(control: Arc<Control>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SidecarCollector(control)));
    registry
}

/// Encodes the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

struct SidecarCollector(Arc<Control>);

impl fmt::Debug for SidecarCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SidecarCollector")
    }
}

/// Encodes one labelled value of a metric family.
fn sample<M: EncodeMetric>(
    encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
    labels: &[(&str, &str)],
    metric: M,
) -> fmt::Result {
    metric.encode(encoder.encode_family(&labels)?)
}

impl Collector for SidecarCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let snapshot = self.0.snapshot();
        let shared = self.0.shared();
        let now = shared.clock.now();
        let moment = Moment {
            now,
            floor: snapshot.clock_floor,
        };
        let month = month_index(now, snapshot.tz);

        let mut requests = encoder.encode_descriptor(
            "tollgate_requests",
            "Requests by flow, instance and decision (allowed or the problem code)",
            None,
            MetricType::Counter,
        )?;
        let counts = std::iter::once(&snapshot.unrouted)
            .chain(
                snapshot
                    .instances
                    .iter()
                    .map(|instance| &instance.unclaimed),
            )
            .chain(
                snapshot
                    .flows
                    .iter()
                    .flat_map(|flow| flow.requests.iter().map(|(_, counts)| counts)),
            );
        for counts in counts {
            for (decision, n) in counts.seen() {
                let labels = [
                    ("flow", &*counts.flow),
                    ("instance", &*counts.instance),
                    ("decision", decision),
                ];
                sample(&mut requests, &labels, ConstCounter::new(n))?;
            }
        }

        let license_gauge = |encoder: &mut DescriptorEncoder,
                             name: &str,
                             help: &str,
                             value: &dyn Fn(usize) -> Option<i64>|
         -> fmt::Result {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (index, license) in snapshot.licenses.iter().enumerate() {
                if let Some(value) = value(index) {
                    sample(
                        &mut metric,
                        &[("license", license.id())],
                        ConstGauge::new(value),
                    )?;
                }
            }
            Ok(())
        };
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        license_gauge(
            &mut encoder,
            "tollgate_records_transferred",
            "Main-entity records transferred this month",
            &|i| Some(count(snapshot.licenses[i].meter.committed(month))),
        )?;
        license_gauge(
            &mut encoder,
            "tollgate_records_limit",
            "Monthly transferred-records limit",
            &|i| snapshot.licenses[i].limit.map(count),
        )?;
        license_gauge(
            &mut encoder,
            "tollgate_records_hard_limit",
            "Monthly limit plus the 10% buffer",
            &|i| snapshot.licenses[i].hard_limit.map(count),
        )?;
        license_gauge(
            &mut encoder,
            "tollgate_records_warning",
            "1 while records used this month are at or over the limit",
            &|i| {
                let license = &snapshot.licenses[i];
                license
                    .limit
                    .map(|limit| i64::from(license.meter.committed(month) >= limit))
            },
        )?;
        license_gauge(
            &mut encoder,
            "tollgate_points_used",
            "License points held by pairs of instances",
            &|i| {
                matches!(
                    snapshot.licenses[i].installed.file.payload.terms,
                    Terms::Pair(_)
                )
                .then(|| i64::from(snapshot.licenses[i].points_used))
            },
        )?;
        license_gauge(
            &mut encoder,
            "tollgate_points_total",
            "License points granted",
            &|i| match &snapshot.licenses[i].installed.file.payload.terms {
                Terms::Pair(terms) => Some(i64::from(terms.points)),
                Terms::Subscription(_) => None,
            },
        )?;
        license_gauge(
            &mut encoder,
            "tollgate_license_expiry_timestamp_seconds",
            "When the license expires (Unix time)",
            &|i| {
                Some(
                    snapshot.licenses[i]
                        .installed
                        .file
                        .payload
                        .common
                        .expire
                        .timestamp(),
                )
            },
        )?;
        license_gauge(
            &mut encoder,
            "tollgate_license_valid",
            "1 while the license is valid",
            &|i| Some(i64::from(snapshot.licenses[i].usable_at(moment).is_ok())),
        )?;

        let mut used = encoder.encode_descriptor(
            "tollgate_entitlement_used",
            "Entitlements in use by enabled flows",
            None,
            MetricType::Gauge,
        )?;
        for environment in Environment::ALL {
            let in_use = snapshot.entitlements.in_use[env_index(environment)].used();
            for (slot, name) in ENTITLEMENTS.iter().enumerate() {
                sample(
                    &mut used,
                    &[("environment", environment.as_str()), ("entitlement", name)],
                    ConstGauge::new(count(in_use[slot])),
                )?;
            }
        }
        let mut limit = encoder.encode_descriptor(
            "tollgate_entitlement_limit",
            "Subscription entitlement limits in force",
            None,
            MetricType::Gauge,
        )?;
        for environment in Environment::ALL {
            if let Some(limits) = snapshot.entitlements.enforced(environment) {
                for (slot, name) in ENTITLEMENTS.iter().enumerate() {
                    sample(
                        &mut limit,
                        &[("environment", environment.as_str()), ("entitlement", name)],
                        ConstGauge::new(count(limits[slot])),
                    )?;
                }
            }
        }

        let mut generation = encoder.encode_descriptor(
            "tollgate_snapshot_generation",
            "Snapshots swapped in since start",
            None,
            MetricType::Gauge,
        )?;
        generation.encode_gauge(&count(snapshot.generation))?;

        let (sum, total, buckets) = shared.upstream_durations.snapshot();
        let mut histogram = encoder.encode_descriptor(
            "tollgate_upstream_duration_seconds",
            "Time until the target's response head",
            None,
            MetricType::Histogram,
        )?;
        histogram.encode_histogram::<()>(sum, total, &buckets, None)
    }
}
