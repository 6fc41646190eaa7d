//! Building a snapshot from the scale configuration (10,000 flows over 10,000 instances, 100
//! pair licenses of 100 points; `benches/common/scale.rs`): reading the config text (parse and
//! validation), reading the license directory, the first compile (counters created) and a
//! recompile beside the previous snapshot (what every hot swap costs). Each case also prints
//! the heap allocations one run makes.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tollgate::config::Config;
use tollgate::license::{self, HostIdentity, Installed, SigningKey, TrustedKeys};
use tollgate::policy::{compile, DisabledReason, FlowSetting, Moment, Resources, Snapshot};

#[path = "common/scale.rs"]
mod scale;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// What a compile needs, read from the written configuration.
struct Inputs {
    text: String,
    dir: tempfile::TempDir,
    keys: TrustedKeys,
    config: Arc<Config>,
    licenses: Vec<Arc<Installed>>,
    settings: Vec<FlowSetting>,
    host: Arc<HostIdentity>,
    moment: Moment,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut keys = TrustedKeys::new();
    keys.add(key.verifying_key());
    let (_, public) = license::generate_keypair();
    let addresses = scale::Addresses {
        engine: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        upstream: None,
    };
    scale::write(dir.path(), scale::Scale::ISSUE, &addresses, &key, &public).expect("written");
    let text = std::fs::read_to_string(dir.path().join("tollgate.toml")).expect("config text");
    let config = Arc::new(Config::from_toml(&text, dir.path()).expect("valid scale config"));
    let listing = license::read_dir(&config.licensing.license_dir, &keys).expect("licenses");
    assert!(listing.rejected.is_empty(), "{:?}", listing.rejected);
    let licenses: Vec<Arc<Installed>> = listing.installed.into_iter().map(Arc::new).collect();
    let settings = (0..config.flows.len())
        .map(|i| FlowSetting {
            enabled: true,
            reason: DisabledReason::Operator,
            order: i as u64,
        })
        .collect();
    let now = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .expect("date");
    Inputs {
        text,
        dir,
        keys,
        config,
        licenses,
        settings,
        host: Arc::new(HostIdentity::from_entries(&["bench.example".to_owned()])),
        moment: Moment::at(now),
    }
}

impl Inputs {
    fn compile(&self, resources: &mut Resources, previous: Option<&Snapshot>) -> Snapshot {
        compile(
            self.config.clone(),
            &self.licenses,
            &self.settings,
            resources,
            &self.host,
            self.moment,
            previous,
        )
        .expect("compiles")
        .snapshot
    }
}

/// Prints how many heap allocations (and bytes) one run of `f` makes.
fn allocations<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let region = Region::new(GLOBAL);
    let out = f();
    let stats = region.change();
    println!(
        "{name}: {} allocations, {:.1} MiB allocated",
        stats.allocations,
        stats.bytes_allocated as f64 / (1024.0 * 1024.0)
    );
    out
}

fn bench(c: &mut Criterion) {
    let inputs = inputs();
    let base: &Path = inputs.dir.path();
    let first = allocations("compile, first", || {
        inputs.compile(&mut Resources::default(), None)
    });
    let flows = first.flows.len();
    assert_eq!(flows, 10_000);
    let mut resources = Resources::default();
    let previous = inputs.compile(&mut resources, None);
    allocations("compile, beside the previous snapshot", || {
        inputs.compile(&mut resources, Some(&previous))
    });
    allocations("Config::from_toml", || {
        Config::from_toml(&inputs.text, base).is_ok()
    });
    allocations("license::read_dir (100 licenses)", || {
        license::read_dir(&inputs.config.licensing.license_dir, &inputs.keys).is_ok()
    });

    let mut group = c.benchmark_group("snapshot (10k instances, 10k flows, 100 licenses)");
    group.sample_size(10);
    group.bench_function("Config::from_toml", |b| {
        b.iter(|| Config::from_toml(black_box(&inputs.text), base).is_ok())
    });
    group.bench_function("license::read_dir", |b| {
        b.iter(|| license::read_dir(&inputs.config.licensing.license_dir, &inputs.keys).is_ok())
    });
    group.bench_function("compile, first", |b| {
        b.iter(|| inputs.compile(&mut Resources::default(), None).generation)
    });
    group.bench_function("compile, beside the previous snapshot", |b| {
        b.iter(|| inputs.compile(&mut resources, Some(&previous)).generation)
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
