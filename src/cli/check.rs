//! `tollgate check`: validate a config and its licenses offline and print what `run` would
//! do. It compiles the same snapshot `run` starts with, so the two cannot disagree.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use comfy_table::Table;

use super::output::say;
use super::{table, CliError};
use crate::catalog::{canonical_endpoint, flow_pair};
use crate::clock::{month_bounds, month_label};
use crate::config::{Config, Environment, FlowKind, Model};
use crate::license::{self, HostIdentity, Installed, Terms, TrustedKeys};
use crate::policy::{
    compile, Compiled, DisabledReason, Entitlement, FlowSetting, FlowState, InvalidReason, Moment,
    Resources, Snapshot,
};

/// Runs `check` at the current time (`TOLLGATE_NOW` under the `test-clock` feature).
pub(super) fn run(config_path: &Path, online: bool) -> Result<ExitCode, CliError> {
    let config = Arc::new(Config::load(config_path)?);
    let mut keys = TrustedKeys::new();
    for path in &config.licensing.public_keys {
        keys.load_pem_file(path)
            .map_err(|err| CliError::at(path.display(), err))?;
    }
    let host = HostIdentity::detect()
        .with_claims(config.licensing.host.as_deref().unwrap_or_default())
        .map(Arc::new)
        .map_err(|err| {
            CliError::at(
                config_path.display(),
                format!("licensing.host[{}]: {err}", err.index),
            )
        })?;
    let now = crate::clock::from_env()?.now();
    let dir = &config.licensing.license_dir;
    let listing = license::read_dir(dir, &keys).map_err(|err| {
        CliError::at(
            dir.display(),
            format!("cannot read the license directory: {err}"),
        )
    })?;
    let installed: Vec<Arc<Installed>> = listing.installed.into_iter().map(Arc::new).collect();
    let settings: Vec<FlowSetting> = config
        .flows
        .iter()
        .enumerate()
        .map(|(order, flow)| FlowSetting {
            enabled: flow.enabled,
            reason: DisabledReason::Operator,
            order: order as u64,
        })
        .collect();
    let compiled = compile(
        config.clone(),
        &installed,
        &settings,
        &mut Resources::default(),
        &host,
        Moment::at(now),
        None,
    )
    .map_err(|err| CliError::at(config_path.display(), err))?;

    say!("configuration {} is valid", config_path.display());
    say!("host identity: {}", host.entries().join(", "));
    if config.licensing.is_shadow() {
        say!("SHADOW MODE (licensing.enforcement = \"shadow\"): license decisions are marked (Tollgate-Shadow, decision=\"shadow:<code>\"), never refused; routing, framing and operator disables are enforced");
    }
    if let Some(ca) = &config.server.intercept_authority {
        let expires = chrono::DateTime::<chrono::Utc>::from(ca.not_after());
        say!(
            "HTTPS interception: on (CONNECT to configured authorities), CA \"{}\" from {}, expires {}",
            ca.subject(),
            config
                .server
                .intercept_ca
                .as_ref()
                .map_or_else(String::new, |files| files.cert.display().to_string()),
            expires.format("%Y-%m-%d")
        );
    }
    print_fleet(&config, online, now)?;
    say!();
    let report = Report {
        config: &config,
        compiled: &compiled,
        now: Moment::at(now),
    };
    report.print_licenses();
    report.print_flows();
    report.print_bulk_loads();
    report.print_endpoints();
    report.print_entitlements();
    report.print_records();
    let snapshot = &compiled.snapshot;
    let enabled = snapshot
        .flows
        .iter()
        .filter(|flow| matches!(flow.state, FlowState::Active { .. }))
        .count();
    let refused = snapshot
        .flows
        .iter()
        .filter(|flow| refusal(flow.state).is_some())
        .count();
    say!(
        "{} flows: {enabled} would be enabled, {refused} refused",
        snapshot.flows.len()
    );
    if listing.rejected.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for rejected in &listing.rejected {
        eprintln!("tollgate: {}: {}", rejected.path.display(), rejected.reason);
    }
    Ok(ExitCode::from(1))
}

/// The state store in use; in fleet mode its settings and, with `--online`, what Redis says.
fn print_fleet(
    config: &Config,
    online: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), CliError> {
    let Some(fleet) = config.state.fleet() else {
        say!("state: embedded store in {}", config.state.dir.display());
        if online {
            say!("--online: nothing to connect to (no state.redis)");
        }
        return Ok(());
    };
    say!(
        "state: fleet mode on Redis {}, fleet {:?}, node {:?}; lease_max {}, lease_ttl {}, redis_timeout {} ms; counts kept in {}",
        crate::config::redact(&fleet.url),
        fleet.fleet,
        fleet.node,
        fleet.lease_max,
        humantime::format_duration(fleet.lease_ttl),
        fleet.redis_timeout.as_millis(),
        config.state.dir.display()
    );
    if !online {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::at("check --online", err))?;
    let wait = fleet.redis_timeout.max(std::time::Duration::from_secs(2));
    let started = now.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    let probe = runtime
        .block_on(crate::store::fleet::probe(
            &fleet,
            || chrono::Utc::now().timestamp_millis() + started,
            wait,
        ))
        .map_err(|err| {
            CliError::at(
                "state.redis",
                format!("{}: {err}", crate::config::redact(&fleet.url)),
            )
        })?;
    say!(
        "Redis is reachable: round trip {} µs, its clock {} ms {} this machine's; the fleet holds {} flow settings (version {})",
        probe.round_trip.as_micros(),
        probe.clock_offset_ms.abs(),
        if probe.clock_offset_ms >= 0 { "ahead of" } else { "behind" },
        probe.flows,
        probe.version
    );
    let skew = config.licensing.max_clock_skew;
    if probe.clock_offset_ms.unsigned_abs() > u64::try_from(skew.as_millis()).unwrap_or(u64::MAX) {
        return Err(CliError::at(
            "licensing.max_clock_skew",
            format!(
                "this machine's clock and Redis' differ by {} ms, more than {}: counted loads would be refused",
                probe.clock_offset_ms.abs(),
                humantime::format_duration(skew)
            ),
        ));
    }
    Ok(())
}

/// Why a flow the config wants enabled would not run, if it would not.
fn refusal(state: FlowState) -> Option<String> {
    match state {
        FlowState::Unlicensed(reason) => Some(format!("license-invalid ({reason})")),
        FlowState::Disabled(
            reason @ (DisabledReason::PointsExhausted | DisabledReason::EntitlementExceeded),
        ) => Some(reason.as_str().to_owned()),
        _ => None,
    }
}

/// What `check` prints, from the compiled snapshot.
struct Report<'a> {
    config: &'a Config,
    compiled: &'a Compiled,
    now: Moment,
}

impl Report<'_> {
    fn snapshot(&self) -> &Snapshot {
        &self.compiled.snapshot
    }

    fn print_licenses(&self) {
        let mut table = table([
            "license",
            "kind",
            "covers",
            "points used/total",
            "records/month",
            "bound to",
            "expires",
            "state",
        ]);
        for entry in &self.snapshot().licenses {
            let payload = &entry.installed.file.payload;
            let (covers, points, records) = match &payload.terms {
                Terms::Pair(terms) => (
                    format!("{} ↔ {}", terms.system_a, terms.system_b),
                    format!("{}/{}", entry.points_used, terms.points),
                    terms
                        .transferred_records
                        .map_or("unlimited".to_owned(), |limit| limit.to_string()),
                ),
                Terms::Subscription(terms) => (
                    format!("{} pricing", terms.pricing.as_str()),
                    "-".to_owned(),
                    "-".to_owned(),
                ),
            };
            let days = (payload.common.expire - self.now.now).num_days();
            table.add_row([
                payload.common.id.clone(),
                payload.kind().to_owned(),
                covers,
                points,
                records,
                payload
                    .common
                    .bound_to
                    .clone()
                    .unwrap_or_else(|| "unbound".to_owned()),
                format!(
                    "{} ({days} days)",
                    payload.common.expire.format("%Y-%m-%d %H:%M UTC")
                ),
                entry
                    .usable_at(self.now)
                    .err()
                    .map_or("valid", InvalidReason::as_str)
                    .to_owned(),
            ]);
        }
        let title = format!(
            "Licenses in {}",
            self.config.licensing.license_dir.display()
        );
        print_section(&title, &table, self.snapshot().licenses.is_empty());
    }

    fn print_flows(&self) {
        let snapshot = self.snapshot();
        let mut table = table([
            "flow",
            "kind",
            "environment",
            "pair",
            "systems",
            "license",
            "state",
        ]);
        for (flow, entry) in self.config.flows.iter().zip(&snapshot.flows) {
            let pair = flow_pair(self.config, flow);
            let license = match entry.state {
                FlowState::Active {
                    license: Some(index),
                } => snapshot.licenses[index as usize].id().to_owned(),
                _ => "-".to_owned(),
            };
            let state = match (entry.state, refusal(entry.state)) {
                (FlowState::Active { .. }, _) => "enabled".to_owned(),
                (FlowState::Disabled(DisabledReason::EntitlementExceeded), _) => {
                    self.entitlement_refusal(&flow.id)
                }
                (_, Some(why)) => format!("refused: {why}"),
                (FlowState::Disabled(reason), None) => format!("disabled ({})", reason.as_str()),
                (FlowState::Unlicensed(_), None) => "refused".to_owned(),
            };
            table.add_row([
                flow.id.clone(),
                flow.kind.as_str().to_owned(),
                flow.environment.as_str().to_owned(),
                pair.as_ref()
                    .map_or("-".to_owned(), |(pair, _)| pair.to_string()),
                pair.as_ref()
                    .map_or("-".to_owned(), |(_, systems)| systems.to_string()),
                license,
                state,
            ]);
        }
        print_section(
            "Flows (enabled in config order)",
            &table,
            self.config.flows.is_empty(),
        );
    }

    /// `refused: entitlement-exceeded (…)` with the entitlement, environment and numbers.
    fn entitlement_refusal(&self, flow: &str) -> String {
        let snapshot = self.snapshot();
        self.compiled
            .entitlement_refusals
            .iter()
            .find(|refusal| &*snapshot.flow_info(refusal.flow).id == flow)
            .map_or_else(
                || "refused: entitlement-exceeded".to_owned(),
                |refusal| {
                    format!(
                        "refused: entitlement-exceeded ({} in {}: would be {}, limit {})",
                        refusal.entitlement, refusal.environment, refusal.would_be, refusal.limit
                    )
                },
            )
    }

    fn print_endpoints(&self) {
        let snapshot = self.snapshot();
        let mut table = table(["environment", "endpoint key", "instances"]);
        for environment in Environment::ALL {
            // Instances that give the environment its endpoint apps: those of active flows
            // other than data loaders.
            let in_use: BTreeSet<&str> = self
                .config
                .flows
                .iter()
                .zip(&snapshot.flows)
                .filter(|(flow, entry)| {
                    flow.environment == environment
                        && flow.kind != FlowKind::DataLoader
                        && matches!(entry.state, FlowState::Active { .. })
                })
                .flat_map(|(flow, _)| flow.systems.iter().map(String::as_str))
                .collect();
            let in_use_keys = &snapshot.entitlements.in_use[environment];
            for key in in_use_keys.keys(Entitlement::EndpointApps) {
                let instances: Vec<&str> = self
                    .config
                    .instances
                    .iter()
                    .filter(|i| {
                        in_use.contains(i.id.as_str())
                            && canonical_endpoint(i).as_deref() == Some(key)
                    })
                    .map(|i| i.id.as_str())
                    .collect();
                table.add_row([
                    environment.as_str().to_owned(),
                    key.to_owned(),
                    instances.join(", "),
                ]);
            }
        }
        print_section(
            "Endpoint apps of enabled flows",
            &table,
            table.row_count() == 0,
        );
    }

    fn print_entitlements(&self) {
        let entitlements = &self.snapshot().entitlements;
        let mut table = table([
            "environment",
            "active flows",
            "endpoint apps",
            "trading partners",
            "agents",
        ]);
        for environment in Environment::ALL {
            let used = entitlements.in_use[environment].used();
            let limits = entitlements.enforced(environment);
            let mut row = vec![environment.as_str().to_owned()];
            for entitlement in Entitlement::ALL {
                let limit = limits.map_or("no limit".to_owned(), |limits| {
                    limits[entitlement].to_string()
                });
                row.push(format!("{} / {limit}", used[entitlement]));
            }
            table.add_row(row);
        }
        let title = if self.config.requires(Model::Subscription) {
            "Entitlements in use / limit (subscription licensing)"
        } else {
            "Entitlements in use / limit (not enforced: licensing.models has no \"subscription\")"
        };
        print_section(title, &table, false);
    }

    /// The main entities counted by the records in their body, and what of the answer counts
    /// (printed only where a flow has one).
    fn print_bulk_loads(&self) {
        let mut table = table(["flow", "instance", "load", "records", "counted"]);
        for flow in &self.config.flows {
            for entity in &flow.entities {
                let Some(bulk) = entity.bulk() else {
                    continue;
                };
                // The empty pointer is the whole document.
                let at = |pointer: &crate::config::JsonPointer, whole: &str| match pointer.as_str()
                {
                    "" => whole.to_owned(),
                    text => text.to_owned(),
                };
                let counted = match (&bulk.accepted, &bulk.accepted_if) {
                    (None, _) => "every record, on a 2xx".to_owned(),
                    (Some(accepted), None) => {
                        format!("elements of {} in a 2xx", at(accepted, "the answer"))
                    }
                    (Some(accepted), Some(flag)) => format!(
                        "elements of {} in a 2xx whose {flag} is true",
                        at(accepted, "the answer")
                    ),
                };
                table.add_row([
                    flow.id.clone(),
                    entity.instance.to_string(),
                    format!("{} {}", entity.method, entity.path),
                    format!("elements of {}", at(&bulk.records, "the body")),
                    counted,
                ]);
            }
        }
        if table.row_count() == 0 {
            return;
        }
        let limit = self.config.server.max_counted_body_bytes;
        print_section(
            &format!("Bulk loads (counted by their records; bodies read up to {limit} bytes)"),
            &table,
            false,
        );
    }

    fn print_records(&self) {
        let tz = self.snapshot().tz;
        let now = self.now.now;
        let (start, end) = month_bounds(now, tz);
        let mut table = table([
            "license",
            "monthly limit",
            "warning at",
            "hard limit",
            "month",
            "resets at",
        ]);
        for entry in &self.snapshot().licenses {
            let (Some(limit), Some(hard)) = (entry.limit, entry.hard_limit) else {
                continue;
            };
            table.add_row([
                entry.id().to_owned(),
                limit.to_string(),
                limit.to_string(),
                hard.to_string(),
                format!(
                    "{} (from {})",
                    month_label(now, tz),
                    start.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z")
                ),
                end.with_timezone(&tz)
                    .format("%Y-%m-%d %H:%M %Z")
                    .to_string(),
            ]);
        }
        print_section(
            &format!("Transferred-records limits (months in {tz})"),
            &table,
            table.row_count() == 0,
        );
    }
}

fn print_section(title: &str, table: &Table, empty: bool) {
    say!("{title}");
    if empty {
        say!("  (none)");
    } else {
        say!("{table}");
    }
    say!();
}
