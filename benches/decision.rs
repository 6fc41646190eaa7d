//! The decision path of the proxy (route + identify + gate + classify) on a snapshot with
//! 10,000 instances, 10,000 flows and 100 licenses: what tollgate adds to every request
//! before it is forwarded.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use tollgate::config::Config;
use tollgate::license::{self, HostIdentity, SigningKey, TrustedKeys};
use tollgate::policy::{compile, DisabledReason, FlowSetting, Moment, Resources, Snapshot};
use tollgate::proxy::{decide, ListenerRole};

const PAIRS_PER_SIDE: usize = 5_000;
const FLOWS: usize = 10_000;
const LICENSES: usize = 100;

fn snapshot() -> Snapshot {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = SigningKey::from_bytes(&[9; 32]);
    std::fs::write(dir.path().join("admin.token"), "bench\n").expect("token");
    let (_, public) = license::generate_keypair();
    std::fs::write(dir.path().join("other.pub"), public).expect("key");
    let public = key.verifying_key();
    let mut keys = TrustedKeys::new();
    keys.add(public);
    std::fs::create_dir(dir.path().join("licenses")).expect("license dir");
    for i in 0..LICENSES {
        let payload = format!(
            r#"{{"version":1,"id":"LIC-{i:03}","kind":"pair","company":"Bench","registered_to":"Bench","email":"b@bench.example","start":"2026-01-01T00:00:00Z","expire":"2030-01-01T00:00:00Z","system_a":"servicenow","system_b":"jira","points":{},"transferred_records":1000000}}"#,
            FLOWS / LICENSES
        );
        let text = license::sign(payload.as_bytes(), &key).expect("sign");
        std::fs::write(
            dir.path().join("licenses").join(format!("LIC-{i:03}.lic")),
            text,
        )
        .expect("write license");
    }
    let mut toml = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n[licensing]\npublic_keys = [\"other.pub\"]\nlicense_dir = \"licenses\"\n",
    );
    for i in 0..PAIRS_PER_SIDE {
        let _ = write!(toml, "[[instances]]\nid = \"sn-{i}\"\nconnector = \"named\"\napp = \"servicenow\"\nbase_uri = \"http://127.0.0.1:9/sn{i}\"\n");
        let _ = write!(toml, "[[instances]]\nid = \"jira-{i}\"\nconnector = \"named\"\napp = \"jira\"\nbase_uri = \"http://127.0.0.1:9/jira{i}\"\n");
    }
    for i in 0..FLOWS {
        let (sn, jira) = (i % PAIRS_PER_SIDE, i / 2);
        let _ = write!(
            toml,
            "[[flows]]\nid = \"flow-{i}\"\nsystems = [\"sn-{sn}\", \"jira-{jira}\"]\n\
             [[flows.entities]]\ninstance = \"jira-{jira}\"\nrole = \"main\"\nmethod = \"POST\"\npath = \"/rest/api/2/issue\"\n\
             [[flows.entities]]\ninstance = \"jira-{jira}\"\nrole = \"child\"\nmethod = \"POST\"\npath = \"/rest/api/2/issue/{{key}}/comment\"\n"
        );
    }
    let config = Arc::new(Config::from_toml(&toml, dir.path()).expect("valid bench config"));
    let now = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .expect("date");
    let host = Arc::new(HostIdentity::from_entries(&["bench.example".to_owned()]));
    let listing = license::read_dir(&dir.path().join("licenses"), &keys).expect("licenses");
    assert_eq!(
        listing.installed.len(),
        LICENSES,
        "rejected: {:?}",
        listing.rejected
    );
    let installed: Vec<_> = listing.installed.into_iter().map(Arc::new).collect();
    let settings: Vec<FlowSetting> = (0..FLOWS)
        .map(|i| FlowSetting {
            enabled: true,
            reason: DisabledReason::Operator,
            order: i as u64,
        })
        .collect();
    compile(
        config,
        &installed,
        &settings,
        &mut Resources::default(),
        &host,
        Moment::at(now),
        None,
    )
    .expect("compiles")
    .snapshot
}

/// Times each decision case on the large snapshot.
fn decision(c: &mut Criterion) {
    let snapshot = snapshot();
    let now = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .expect("date");
    let role = ListenerRole::Engine;
    let request = |path: &str, flow: &str| {
        Request::post(path)
            .header("tollgate-flow", flow)
            .body(())
            .expect("request")
    };
    let main_load = request("/jira-4321/rest/api/2/issue", "flow-8642");
    let child = request("/jira-4321/rest/api/2/issue/ABC-1/comment", "flow-8642");
    let traversal = request("/jira-4321/rest/%2e%2e/api/./2/issue", "flow-8642");
    let unknown_flow = request("/jira-4321/rest/api/2/issue", "no-such-flow");
    if let Err(problem) = decide(&snapshot, &role, now, &main_load, false) {
        panic!(
            "the bench's main load must be admitted: {}",
            problem.to_json()
        );
    }

    let mut group = c.benchmark_group("decide (10k instances, 10k flows, 100 licenses)");
    group.bench_function("main load admitted", |b| {
        b.iter(|| decide(&snapshot, &role, now, black_box(&main_load), false).map(|d| d.class))
    });
    group.bench_function("child load admitted", |b| {
        b.iter(|| decide(&snapshot, &role, now, black_box(&child), false).map(|d| d.class))
    });
    group.bench_function("path needing normalisation", |b| {
        b.iter(|| decide(&snapshot, &role, now, black_box(&traversal), false).map(|d| d.class))
    });
    group.bench_function("unknown flow refused", |b| {
        b.iter(|| decide(&snapshot, &role, now, black_box(&unknown_flow), false).is_err())
    });
    let swap = ArcSwap::from_pointee(snapshot);
    group.bench_function("ArcSwap::load_full + main load", |b| {
        b.iter(|| {
            let snapshot = swap.load_full();
            decide(&snapshot, &role, now, black_box(&main_load), false)
                .map(|d| d.class)
                .is_ok()
        })
    });
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
