//! `tollgate check`: validate a config and its licenses offline and print what `run` would do.

use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use comfy_table::{presets, Table};

use super::CliError;
use crate::catalog::canonical_endpoint;
use crate::clock::{month_bounds, month_label, Clock, SystemClock};
use crate::config::{Config, Environment, Model};
use crate::license::{self, EnvLimits, HostIdentity, Installed, Pricing, Terms, TrustedKeys};
use crate::policy::{
    plan_flows, tally, FlowOutcome, FlowPlan, PointLedger, PointRefusal, PointSource,
};

/// Runs `check` against the system clock.
pub(super) fn run(config_path: &Path) -> Result<ExitCode, CliError> {
    let config = Config::load(config_path).map_err(|err| CliError(err.to_string()))?;
    let mut keys = TrustedKeys::new();
    for path in &config.licensing.public_keys {
        keys.load_pem_file(path)
            .map_err(|err| CliError::at(path.display(), err))?;
    }
    let host = match &config.licensing.host {
        Some(entries) => HostIdentity::from_entries(entries),
        None => HostIdentity::detect(),
    };
    let now = SystemClock.now();
    let dir = &config.licensing.license_dir;
    let listing = license::read_dir(dir, &keys, &host, now).map_err(|err| {
        CliError::at(
            dir.display(),
            format!("cannot read the license directory: {err}"),
        )
    })?;
    let report = Report::new(&config, &listing.installed, now);

    println!("configuration {} is valid", config_path.display());
    println!("host identity: {}", host.entries().join(", "));
    println!();
    report.print_licenses();
    report.print_flows();
    report.print_endpoints();
    report.print_records();

    let refused = report
        .plans
        .iter()
        .filter(|plan| matches!(plan.outcome, FlowOutcome::Refused(_)))
        .count();
    let enabled = report
        .plans
        .iter()
        .filter(|plan| matches!(plan.outcome, FlowOutcome::Enabled { .. }))
        .count();
    println!(
        "{} flows: {enabled} would be enabled, {refused} refused",
        report.plans.len()
    );
    if listing.rejected.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for rejected in &listing.rejected {
        eprintln!("tollgate: {}: {}", rejected.path.display(), rejected.reason);
    }
    Ok(ExitCode::from(1))
}

/// Everything `check` prints, computed once.
struct Report<'a> {
    config: &'a Config,
    licenses: &'a [Installed],
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
    /// Index into `licenses` of each point source.
    pair_licenses: Vec<usize>,
    plans: Vec<FlowPlan>,
    ledger: PointLedger,
}

impl<'a> Report<'a> {
    fn new(config: &'a Config, licenses: &'a [Installed], now: DateTime<Utc>) -> Self {
        let mut pair_licenses = Vec::new();
        let mut sources = Vec::new();
        for (index, installed) in licenses.iter().enumerate() {
            if let Terms::Pair(terms) = &installed.file.payload.terms {
                pair_licenses.push(index);
                sources.push(PointSource {
                    id: installed.file.payload.common.id.clone(),
                    systems: crate::catalog::SystemPair::new(&terms.system_a, &terms.system_b),
                    points: terms.points,
                    expire: installed.file.payload.common.expire,
                    invalid: (!installed.validity.is_valid()).then(|| installed.validity.as_str()),
                });
            }
        }
        let (plans, ledger) = plan_flows(config, sources);
        // The timezone was validated with the config.
        let tz = config
            .licensing
            .timezone
            .parse()
            .unwrap_or(chrono_tz::Tz::UTC);
        Report {
            config,
            licenses,
            now,
            tz,
            pair_licenses,
            plans,
            ledger,
        }
    }

    fn print_licenses(&self) {
        let mut table = new_table([
            "license",
            "kind",
            "covers",
            "points used/total",
            "records/month",
            "bound to",
            "expires",
            "state",
        ]);
        for (index, installed) in self.licenses.iter().enumerate() {
            let payload = &installed.file.payload;
            let (covers, points, records) = match &payload.terms {
                Terms::Pair(terms) => {
                    let used = self
                        .pair_licenses
                        .iter()
                        .position(|&i| i == index)
                        .map_or(0, |source| self.ledger.used(source));
                    let records = terms
                        .transferred_records
                        .map_or("unlimited".to_owned(), |limit| limit.to_string());
                    (
                        format!("{} ↔ {}", terms.system_a, terms.system_b),
                        format!("{used}/{}", terms.points),
                        records,
                    )
                }
                Terms::Subscription(terms) => (
                    format!("{} pricing", terms.pricing.as_str()),
                    "-".to_owned(),
                    "-".to_owned(),
                ),
            };
            let days = (payload.common.expire - self.now).num_days();
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
                installed.validity.as_str().to_owned(),
            ]);
        }
        print_section(
            &format!(
                "Licenses in {}",
                self.config.licensing.license_dir.display()
            ),
            &table,
            self.licenses.is_empty(),
        );
    }

    fn print_flows(&self) {
        let mut table = new_table([
            "flow",
            "kind",
            "environment",
            "pair",
            "systems",
            "license",
            "state",
        ]);
        for (flow, plan) in self.config.flows.iter().zip(&self.plans) {
            let (license, state) = match &plan.outcome {
                FlowOutcome::Enabled {
                    license: Some(source),
                } => (
                    self.ledger.sources()[*source].id.clone(),
                    "enabled".to_owned(),
                ),
                FlowOutcome::Enabled { license: None } => ("-".to_owned(), "enabled".to_owned()),
                FlowOutcome::Disabled => ("-".to_owned(), "disabled (operator)".to_owned()),
                FlowOutcome::Refused(refusal @ PointRefusal::PointsExhausted) => {
                    ("-".to_owned(), format!("refused: {}", refusal.code()))
                }
                FlowOutcome::Refused(refusal @ PointRefusal::LicenseInvalid(reason)) => (
                    "-".to_owned(),
                    format!("refused: {} ({reason})", refusal.code()),
                ),
            };
            table.add_row([
                flow.id.clone(),
                flow.kind.as_str().to_owned(),
                flow.environment.as_str().to_owned(),
                plan.pair
                    .as_ref()
                    .map_or("-".to_owned(), ToString::to_string),
                plan.systems
                    .as_ref()
                    .map_or("-".to_owned(), ToString::to_string),
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

    fn print_endpoints(&self) {
        let subscriptions: Vec<(&Installed, &license::SubscriptionTerms)> = self
            .licenses
            .iter()
            .filter(|installed| installed.validity.is_valid())
            .filter_map(|installed| match &installed.file.payload.terms {
                Terms::Subscription(terms) => Some((installed, terms)),
                Terms::Pair(_) => None,
            })
            .collect();
        let pricing = subscriptions
            .first()
            .map_or(Pricing::Endpoint, |(_, terms)| terms.pricing);
        let free = subscriptions
            .iter()
            .any(|(_, terms)| terms.unlimited_until.is_some_and(|until| self.now < until));
        let mut keys = new_table(["environment", "endpoint key", "instances"]);
        let mut limits = new_table([
            "environment",
            "active flows",
            "endpoint apps",
            "trading partners",
            "agents",
        ]);
        for environment in Environment::ALL {
            let used = tally(self.config, environment, pricing, |flow| {
                matches!(self.plans[flow].outcome, FlowOutcome::Enabled { .. })
            });
            // Instances that give the environment its endpoint apps: those of enabled flows
            // other than data loaders.
            let in_use: std::collections::BTreeSet<&str> = self
                .config
                .flows
                .iter()
                .zip(&self.plans)
                .filter(|(flow, plan)| {
                    flow.environment == environment
                        && flow.kind != crate::config::FlowKind::DataLoader
                        && matches!(plan.outcome, FlowOutcome::Enabled { .. })
                })
                .flat_map(|(flow, _)| flow.systems.iter().map(String::as_str))
                .collect();
            for key in &used.endpoint_apps {
                let instances: Vec<&str> = self
                    .config
                    .instances
                    .iter()
                    .filter(|instance| {
                        in_use.contains(instance.id.as_str())
                            && canonical_endpoint(instance).as_ref() == Some(key)
                    })
                    .map(|instance| instance.id.as_str())
                    .collect();
                keys.add_row([
                    environment.as_str().to_owned(),
                    key.clone(),
                    instances.join(", "),
                ]);
            }
            let limit = |pick: fn(&EnvLimits) -> u32| -> String {
                if subscriptions.is_empty() || free {
                    return "no limit".to_owned();
                }
                let total: u64 = subscriptions
                    .iter()
                    .map(|(_, terms)| {
                        u64::from(pick(match environment {
                            Environment::Production => &terms.production,
                            Environment::Sandbox => &terms.sandbox,
                        }))
                    })
                    .sum();
                total.to_string()
            };
            limits.add_row([
                environment.as_str().to_owned(),
                format!("{} / {}", used.flows.len(), limit(|l| l.flows)),
                format!(
                    "{} / {}",
                    used.endpoint_apps.len(),
                    limit(|l| l.endpoint_apps)
                ),
                format!(
                    "{} / {}",
                    used.trading_partners.len(),
                    limit(|l| l.trading_partners)
                ),
                format!("{} / {}", used.agents.len(), limit(|l| l.agents)),
            ]);
        }
        print_section(
            "Endpoint apps of enabled flows",
            &keys,
            keys.row_count() == 0,
        );
        let title = if self.config.requires(Model::Subscription) {
            "Entitlements in use / limit (subscription licensing)"
        } else {
            "Entitlements in use / limit (not enforced: licensing.models has no \"subscription\")"
        };
        print_section(title, &limits, false);
    }

    fn print_records(&self) {
        let (start, end) = month_bounds(self.now, self.tz);
        let mut table = new_table([
            "license",
            "monthly limit",
            "warning at",
            "hard limit",
            "month",
            "resets at",
        ]);
        for installed in self.licenses {
            if let Terms::Pair(terms) = &installed.file.payload.terms {
                let Some(limit) = terms.transferred_records else {
                    continue;
                };
                table.add_row([
                    installed.file.payload.common.id.clone(),
                    limit.to_string(),
                    limit.to_string(),
                    (limit + limit / 10).to_string(),
                    format!(
                        "{} (from {})",
                        month_label(self.now, self.tz),
                        start.with_timezone(&self.tz).format("%Y-%m-%d %H:%M %Z")
                    ),
                    end.with_timezone(&self.tz)
                        .format("%Y-%m-%d %H:%M %Z")
                        .to_string(),
                ]);
            }
        }
        print_section(
            &format!("Transferred-records limits (months in {})", self.tz),
            &table,
            table.row_count() == 0,
        );
    }
}

fn new_table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::ASCII_MARKDOWN)
        .set_header(header);
    table
}

fn print_section(title: &str, table: &Table, empty: bool) {
    println!("{title}");
    if empty {
        println!("  (none)");
    } else {
        println!("{table}");
    }
    println!();
}
