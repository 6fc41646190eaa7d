//! Counting a bulk load's records: the streaming scan along a JSON pointer beside building a
//! `serde_json::Value` and following the pointer, for a Jira bulk create of 50 issues and for
//! a body at the 16 MiB limit.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use tollgate::catalog::count_records;
use tollgate::config::JsonPointer;

/// A Jira bulk-create body of `issues` issues with realistic fields.
fn jira_body(issues: usize) -> Vec<u8> {
    let updates: Vec<Value> = (0..issues)
        .map(|i| {
            json!({"fields": {
                "project": {"key": "ABC"},
                "summary": format!("Incident INC{i:07} escalated from ServiceNow"),
                "description": "Customer reports that the integration stopped syncing; see the attached log lines for the failing records and their timestamps.",
                "issuetype": {"name": "Bug"},
                "labels": ["servicenow", "sync", "p2"],
                "customfield_10010": [i, i + 1, i + 2]
            }})
        })
        .collect();
    serde_json::to_vec(&json!({"issueUpdates": updates})).expect("serializable")
}

fn count(c: &mut Criterion) {
    let pointer = JsonPointer::parse("/issueUpdates").expect("a pointer");
    let fifty = jira_body(50);
    // About 16 MiB: the default server.max_counted_body_bytes.
    let per_issue = fifty.len() / 50;
    let large = jira_body((16 << 20) / per_issue);
    for (name, body) in [("50 issues", &fifty), ("16 MiB", &large)] {
        let mut group = c.benchmark_group(format!("bulk records, {name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        if body.len() > 1 << 20 {
            group.sample_size(10);
        }
        group.bench_function("streaming scan (count_records)", |b| {
            b.iter(|| count_records(black_box(body), &pointer).expect("counts"))
        });
        group.bench_function("serde_json::Value + pointer", |b| {
            b.iter(|| {
                let value: Value = serde_json::from_slice(black_box(body)).expect("parses");
                value
                    .pointer("/issueUpdates")
                    .and_then(Value::as_array)
                    .map(Vec::len)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, count);
criterion_main!(benches);
