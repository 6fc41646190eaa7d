//! The Prometheus text exposition format 0.0.4: `# HELP` and `# TYPE` name the exposed
//! sample names (a counter is declared as `foo_total`), no `# UNIT`, no `_created`, no
//! `# EOF`.

use std::fmt::{self, Write};

use super::{escape_label, Family, Histogram, Sample, Values};

/// Encodes `families` in the text format 0.0.4.
pub(super) fn encode(families: &[Family]) -> Result<String, fmt::Error> {
    let mut out = String::new();
    for family in families {
        encode_family(&mut out, family)?;
    }
    Ok(out)
}

fn encode_family(out: &mut String, family: &Family) -> fmt::Result {
    match &family.values {
        Values::Counter(samples) => {
            let name = format!("{}_total", family.name);
            header(out, &name, family.help, "counter")?;
            samples
                .iter()
                .try_for_each(|sample| write_sample(out, &name, sample))
        }
        Values::Gauge(samples) => {
            header(out, family.name, family.help, "gauge")?;
            samples
                .iter()
                .try_for_each(|sample| write_sample(out, family.name, sample))
        }
        Values::Histogram(histogram) => {
            header(out, family.name, family.help, "histogram")?;
            write_histogram(out, family.name, histogram)
        }
    }
}

/// The `# HELP` and `# TYPE` lines; help text escapes backslash and newline.
fn header(out: &mut String, name: &str, help: &str, kind: &str) -> fmt::Result {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

fn write_sample<V: fmt::Display>(out: &mut String, name: &str, sample: &Sample<V>) -> fmt::Result {
    out.push_str(name);
    write_labels(out, &sample.labels, None)?;
    writeln!(out, " {}", sample.value)
}

/// `{a="x",b="y"}` (nothing when there are no labels), with `le` last for buckets.
fn write_labels(
    out: &mut String,
    labels: &[(&'static str, String)],
    le: Option<&str>,
) -> fmt::Result {
    if labels.is_empty() && le.is_none() {
        return Ok(());
    }
    out.push('{');
    let mut pairs = labels
        .iter()
        .map(|(key, value)| (*key, escape_label(value)))
        .chain(le.map(|bound| ("le", bound.into())));
    if let Some((key, value)) = pairs.next() {
        write!(out, "{key}=\"{value}\"")?;
    }
    for (key, value) in pairs {
        write!(out, ",{key}=\"{value}\"")?;
    }
    out.push('}');
    Ok(())
}

/// Cumulative `_bucket` lines ending with `le="+Inf"`, then `_sum` and `_count`.
fn write_histogram(out: &mut String, name: &str, histogram: &Histogram) -> fmt::Result {
    let mut cumulative = 0u64;
    for (bound, n) in &histogram.buckets {
        cumulative = cumulative.saturating_add(*n);
        write!(out, "{name}_bucket")?;
        write_labels(out, &[], Some(&bucket_bound(*bound)))?;
        writeln!(out, " {cumulative}")?;
    }
    writeln!(out, "{name}_sum {}", float(histogram.sum))?;
    writeln!(out, "{name}_count {}", histogram.count)
}

/// A bucket's `le`: `f64::MAX` stands for `+Inf`.
fn bucket_bound(bound: f64) -> String {
    if bound == f64::MAX {
        "+Inf".to_owned()
    } else {
        float(bound)
    }
}

/// A float as Go's `strconv.ParseFloat` reads it (`1.0`, `0.005`, `1e-7`, `+Inf`, `NaN`).
fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::example_families;
    use super::*;

    #[test]
    fn encodes_every_kind_of_family_in_the_text_format() {
        let text = encode(&example_families()).unwrap();
        let expected = "\
# HELP tollgate_requests_total Requests by flow, instance and decision
# TYPE tollgate_requests_total counter
tollgate_requests_total{flow=\"incidents\",decision=\"allowed\"} 3
tollgate_requests_total{flow=\"a\\\"b\\\\c\",decision=\"unknown-flow\"} 1
# HELP tollgate_records_limit Monthly transferred-records limit
# TYPE tollgate_records_limit gauge
# HELP tollgate_snapshot_generation Snapshots swapped in since start
# TYPE tollgate_snapshot_generation gauge
tollgate_snapshot_generation 7
# HELP tollgate_upstream_duration_seconds Time until the target's response head
# TYPE tollgate_upstream_duration_seconds histogram
tollgate_upstream_duration_seconds_bucket{le=\"0.1\"} 1
tollgate_upstream_duration_seconds_bucket{le=\"1.0\"} 2
tollgate_upstream_duration_seconds_bucket{le=\"+Inf\"} 3
tollgate_upstream_duration_seconds_sum 0.25
tollgate_upstream_duration_seconds_count 3
";
        assert_eq!(text, expected);
    }

    #[test]
    fn floats_are_written_the_way_prometheus_parses_them() {
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(0.005), "0.005");
        assert_eq!(float(1e-7), "1e-7");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(bucket_bound(f64::MAX), "+Inf");
    }

    #[test]
    fn help_text_escapes_backslash_and_newline() {
        let mut out = String::new();
        header(&mut out, "x", "a\\b\nc", "gauge").unwrap();
        assert_eq!(out, "# HELP x a\\\\b\\nc\n# TYPE x gauge\n");
    }
}
