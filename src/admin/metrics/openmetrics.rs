//! OpenMetrics 1.0 through prometheus-client's encoder: counters are declared as the family
//! `foo` with samples `foo_total`, and the exposition ends with `# EOF`.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{escape_label, Family, Sample, Values};

/// Encodes `families` in OpenMetrics 1.0.
pub(super) fn encode(families: Vec<Family>) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families(families)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The families of one scrape, as prometheus-client's registry takes them.
#[derive(Debug)]
struct Families(Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.0
            .iter()
            .try_for_each(|family| encode_family(&mut encoder, family))
    }
}

fn encode_family(encoder: &mut DescriptorEncoder, family: &Family) -> fmt::Result {
    let kind = match family.values {
        Values::Counter(_) => MetricType::Counter,
        Values::Gauge(_) => MetricType::Gauge,
        Values::Histogram(_) => MetricType::Histogram,
    };
    let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
    match &family.values {
        Values::Counter(samples) => samples.iter().try_for_each(|sample| {
            if sample.labels.is_empty() {
                return metric.encode_counter::<(), _, u64>(&sample.value, None);
            }
            ConstCounter::new(sample.value).encode(metric.encode_family(&escaped(sample))?)
        }),
        Values::Gauge(samples) => samples.iter().try_for_each(|sample| {
            if sample.labels.is_empty() {
                return metric.encode_gauge(&sample.value);
            }
            ConstGauge::new(sample.value).encode(metric.encode_family(&escaped(sample))?)
        }),
        Values::Histogram(histogram) => {
            metric.encode_histogram::<()>(histogram.sum, histogram.count, &histogram.buckets, None)
        }
    }
}

/// A sample's labels with their values escaped (prometheus-client writes them as given).
fn escaped<V>(sample: &Sample<V>) -> Vec<(&'static str, String)> {
    sample
        .labels
        .iter()
        .map(|(key, value)| (*key, escape_label(value).into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::example_families;
    use super::*;

    #[test]
    fn encodes_every_kind_of_family_in_openmetrics() {
        let text = encode(example_families()).unwrap();
        let expected = "\
# HELP tollgate_requests Requests by flow, instance and decision
# TYPE tollgate_requests counter
tollgate_requests_total{flow=\"incidents\",decision=\"allowed\"} 3
tollgate_requests_total{flow=\"a\\\"b\\\\c\",decision=\"unknown-flow\"} 1
# HELP tollgate_records_limit Monthly transferred-records limit
# TYPE tollgate_records_limit gauge
# HELP tollgate_snapshot_generation Snapshots swapped in since start
# TYPE tollgate_snapshot_generation gauge
tollgate_snapshot_generation 7
# HELP tollgate_upstream_duration_seconds Time until the target's response head
# TYPE tollgate_upstream_duration_seconds histogram
tollgate_upstream_duration_seconds_sum 0.25
tollgate_upstream_duration_seconds_count 3
tollgate_upstream_duration_seconds_bucket{le=\"0.1\"} 1
tollgate_upstream_duration_seconds_bucket{le=\"1.0\"} 2
tollgate_upstream_duration_seconds_bucket{le=\"+Inf\"} 3
# EOF
";
        assert_eq!(text, expected);
    }
}
