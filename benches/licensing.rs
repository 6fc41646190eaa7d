//! What a reload costs: verifying a license file and planning points for many flows.

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::catalog::SystemPair;
use tollgate::license::{self, HostIdentity, LicenseFile, SigningKey, TrustedKeys};
use tollgate::policy::{PointLedger, PointSource};

const PAYLOAD: &str = r#"{"version":1,"id":"LIC-BENCH","kind":"pair","company":"Acme Corp","registered_to":"Jane Doe",
 "email":"jane@acme.example","start":"2026-01-01T00:00:00Z","expire":"2030-01-01T00:00:00Z",
 "system_a":"servicenow","system_b":"jira","points":10000,"transferred_records":100000}"#;

fn verify(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut keys = TrustedKeys::new();
    keys.add(key.verifying_key());
    let text = license::sign(PAYLOAD.as_bytes(), &key).expect("the bench payload is valid");
    let host = HostIdentity::from_entries(&["bench.example".to_owned()]);
    let now = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    c.bench_function("license parse + verify + validity", |b| {
        b.iter(|| {
            let file = LicenseFile::parse(black_box(text.as_bytes())).expect("parses");
            black_box(file.verify(&keys).is_ok());
            black_box(license::judge(
                &file.payload.common,
                &host,
                license::Moment::at(now),
            ))
        })
    });
}

fn plan(c: &mut Criterion) {
    let expire = Utc
        .with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    let sources: Vec<PointSource> = (0..100)
        .map(|i| PointSource {
            id: format!("LIC-{i:03}"),
            systems: SystemPair::new("servicenow", "jira").into(),
            points: 100,
            expire,
            invalid: None,
        })
        .collect();
    let systems = SystemPair::new("jira", "servicenow");
    c.bench_function("allocate points for 10000 pairs over 100 licenses", |b| {
        b.iter(|| {
            let mut ledger = PointLedger::new(sources.clone());
            // Pairs as the compiler numbers them.
            for pair in 0..10_000 {
                let _ = black_box(ledger.enable(pair, &systems));
            }
            ledger
        })
    });
}

criterion_group!(benches, verify, plan);
criterion_main!(benches);
