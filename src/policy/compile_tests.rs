//! Tests of compilation: each stage on its own, then the whole pipeline.

use http::Method;

use super::*;
use crate::config::testing::load;
use crate::license::fixtures::{at, installed};

use crate::policy::entitlements::Entitlement;
use crate::policy::LoadClass;

/// Compiles a first snapshot (fresh counters, any host) at `now`.
fn compile_at(
    config: Arc<Config>,
    licenses: &[Arc<Installed>],
    settings: &[FlowSetting],
    now: chrono::DateTime<chrono::Utc>,
) -> Compiled {
    compile(
        config,
        licenses,
        settings,
        &mut Resources::default(),
        &Arc::default(),
        Moment::at(now),
        None,
    )
    .unwrap()
}

mod pipeline {
    use super::*;

    const CONFIG: &str = r#"
[[instances]]
id = "sn-1"
connector = "named"
app = "servicenow"
base_uri = "https://sn.example/api/"
[[instances]]
id = "jira-1"
connector = "named"
app = "jira"
base_uri = "https://jira.example"
[[instances]]
id = "jira-2"
connector = "named"
app = "jira"
base_uri = "https://jira2.example"
[[flows]]
id = "first"
systems = ["sn-1", "jira-1"]
[[flows.entities]]
instance = "jira-1"
role = "main"
method = "POST"
path = "/rest/api/2/issue"
[[flows]]
id = "second"
systems = ["sn-1", "jira-2"]
[[flows]]
id = "off"
systems = ["sn-1", "jira-1"]
"#;

    fn pair_license(id: &str, points: u32, expire: &str) -> Arc<Installed> {
        let payload = format!(
            r#"{{"version":1,"id":"{id}","kind":"pair","company":"A","registered_to":"B","email":"c@d.example","start":"2026-01-01T00:00:00Z","expire":"{expire}","system_a":"jira","system_b":"servicenow","points":{points}}}"#
        );
        installed(id, &payload)
    }

    fn setting(enabled: bool, order: u64) -> FlowSetting {
        FlowSetting {
            enabled,
            reason: DisabledReason::Operator,
            order,
        }
    }

    #[test]
    fn points_go_to_flows_in_enabling_order_and_the_rest_are_exhausted() {
        let config = Arc::new(load(CONFIG).unwrap());
        let licenses = [pair_license("L", 1, "2030-01-01T00:00:00Z")];
        let now = at("2026-06-01T00:00:00Z");
        // "second" was enabled before "first": it takes the only point.
        let settings = [setting(true, 5), setting(true, 2), setting(false, 0)];
        let compiled = compile_at(config, &licenses, &settings, now);
        let snapshot = &compiled.snapshot;
        assert_eq!(snapshot.generation, 1);
        assert_eq!(
            snapshot.flows[1].state,
            FlowState::Active { license: Some(0) }
        );
        assert_eq!(
            snapshot.flows[0].state,
            FlowState::Disabled(DisabledReason::PointsExhausted)
        );
        assert_eq!(
            snapshot.flows[2].state,
            FlowState::Disabled(DisabledReason::Operator)
        );
        assert_eq!(compiled.refused, vec![(0, DisabledReason::PointsExhausted)]);
        assert_eq!(snapshot.licenses[0].points_used, 1);
        assert_eq!(
            snapshot.flow_info(0).pair_key.as_deref(),
            Some("jira-1+sn-1")
        );
    }

    #[test]
    fn tables_answer_lookups_and_classification() {
        let config = Arc::new(load(CONFIG).unwrap());
        let licenses = [pair_license("L", 5, "2030-01-01T00:00:00Z")];
        let settings = [setting(true, 0), setting(true, 1), setting(true, 2)];
        let now = at("2026-06-01T00:00:00Z");
        let snapshot = compile_at(config, &licenses, &settings, now).snapshot;
        let (jira, sn) = (
            snapshot.instance("jira-1").unwrap(),
            snapshot.instance("sn-1").unwrap(),
        );
        assert!(snapshot.flow("first").is_some());
        // The pattern is the first flow's, but it applies to every request to jira-1.
        assert_eq!(
            snapshot.instances[jira as usize]
                .classifier
                .classify([&Method::POST], &["/rest/api/2/issue"]),
            LoadClass::Main
        );
        assert_eq!(
            snapshot.instances[sn as usize]
                .classifier
                .classify([&Method::POST], &["/rest/api/2/issue"]),
            LoadClass::Other
        );
        assert_eq!(&*snapshot.instances[sn as usize].base_path, "/api");
        assert_eq!(snapshot.flow("nope"), None);
        assert_eq!(snapshot.license("L"), Some(0));
    }

    #[test]
    fn licenses_given_in_any_order_are_tabled_and_found_by_id() {
        let config = Arc::new(load(CONFIG).unwrap());
        let expire = "2030-01-01T00:00:00Z";
        let licenses = ["M", "B", "Z", "A-1", "A"].map(|id| pair_license(id, 1, expire));
        let settings = [setting(true, 0), setting(true, 1), setting(true, 2)];
        let snapshot =
            compile_at(config, &licenses, &settings, at("2026-06-01T00:00:00Z")).snapshot;
        let ids: Vec<&str> = snapshot.licenses.iter().map(LicenseEntry::id).collect();
        assert_eq!(ids, ["A", "A-1", "B", "M", "Z"]);
        for (index, id) in ids.iter().enumerate() {
            assert_eq!(snapshot.license(id), Some(index as u32));
        }
        for missing in ["", "0", "AA", "N", "ZZ"] {
            assert_eq!(snapshot.license(missing), None);
        }
    }

    #[test]
    fn a_recompile_of_the_same_config_shares_its_tables_and_a_new_config_gets_its_own() {
        let config = Arc::new(load(CONFIG).unwrap());
        let licenses = [pair_license("L", 1, "2030-01-01T00:00:00Z")];
        let now = Moment::at(at("2026-06-01T00:00:00Z"));
        let mut resources = Resources::default();
        let mut compile_with = |config: &Arc<Config>, settings: &[FlowSetting], previous| {
            compile(
                config.clone(),
                &licenses,
                settings,
                &mut resources,
                &Arc::default(),
                now,
                previous,
            )
            .unwrap()
            .snapshot
        };
        let first = compile_with(
            &config,
            &[setting(true, 0), setting(true, 1), setting(false, 2)],
            None,
        );
        // The operator disables "first" and enables "off" (same pair): the point moves over.
        let second = compile_with(
            &config,
            &[setting(false, 0), setting(true, 1), setting(true, 3)],
            Some(&first),
        );
        assert!(Arc::ptr_eq(&first.tables, &second.tables));
        assert!(Arc::ptr_eq(&first.instances, &second.instances));
        assert!(Arc::ptr_eq(
            &first.flow_info(2).meter,
            &second.flow_info(2).meter
        ));
        assert_eq!(
            second.flows[2].state,
            FlowState::Active { license: Some(0) }
        );
        assert_eq!(
            second.flows[1].state,
            FlowState::Disabled(DisabledReason::PointsExhausted)
        );
        assert_eq!(second.flow("off"), Some(2));
        let reloaded = Arc::new(load(CONFIG).unwrap());
        let third = compile_with(
            &reloaded,
            &[setting(false, 0), setting(true, 1), setting(true, 3)],
            Some(&second),
        );
        assert!(
            !Arc::ptr_eq(&second.tables, &third.tables),
            "a reloaded config is compiled anew"
        );
        assert!(
            Arc::ptr_eq(&second.flow_info(2).meter, &third.flow_info(2).meter),
            "counters outlive the config"
        );
        assert_eq!(third.flows[2].state, FlowState::Active { license: Some(0) });
    }

    #[test]
    fn expiry_makes_flows_unlicensed_and_the_snapshot_stale() {
        let config = Arc::new(load(CONFIG).unwrap());
        let licenses = [pair_license("L", 5, "2026-07-01T00:00:00Z")];
        let settings = [setting(true, 0), setting(true, 1), setting(false, 2)];
        let before = at("2026-06-30T23:59:59Z");
        let after = at("2026-07-01T00:00:00Z");
        let snapshot = compile_at(config.clone(), &licenses, &settings, before).snapshot;
        assert!(!snapshot.is_stale(Moment::at(before)));
        assert!(snapshot.is_stale(Moment::at(after)));
        assert_eq!(
            snapshot.licenses[0].usable_at(Moment::at(after)),
            Err(InvalidReason::Expired)
        );
        let expired = compile_at(config, &licenses, &settings, after).snapshot;
        assert_eq!(
            expired.flows[0].state,
            FlowState::Unlicensed(InvalidReason::Expired)
        );
        assert_eq!(
            expired.flows[0].refusal_license,
            Some(0),
            "the refusal names the expired license"
        );
        assert_eq!(expired.licenses[0].points_used, 0);
    }
}

mod subscriptions {
    use super::*;

    fn subscription(id: &str, endpoint_apps: u32, unlimited_until: Option<&str>) -> Arc<Installed> {
        let until = unlimited_until
            .map(|u| format!(r#","unlimited_until":"{u}""#))
            .unwrap_or_default();
        installed(
            id,
            &format!(
                r#"{{"version":1,"id":"{id}","kind":"subscription","company":"A","registered_to":"B","email":"c@d.example","start":"2026-01-01T00:00:00Z","expire":"2030-01-01T00:00:00Z","pricing":"endpoint"{until},"production":{{"flows":10,"endpoint_apps":{endpoint_apps},"trading_partners":5,"agents":5}},"sandbox":{{"flows":1,"endpoint_apps":1,"trading_partners":1,"agents":1}}}}"#
            ),
        )
    }

    fn pair(points: u32) -> Arc<Installed> {
        installed(
            "P",
            &format!(
                r#"{{"version":1,"id":"P","kind":"pair","company":"A","registered_to":"B","email":"c@d.example","start":"2026-01-01T00:00:00Z","expire":"2030-01-01T00:00:00Z","system_a":"netsuite","system_b":"shopify","points":{points}}}"#
            ),
        )
    }

    /// Four flows, each adding one endpoint app (netsuite is shared); enabled in the order `orders`.
    fn config(models: &str) -> Arc<Config> {
        let body = r#"
[[instances]]
id = "ns"
connector = "named"
app = "netsuite"
base_uri = "https://ns.example"
[[instances]]
id = "shop"
connector = "named"
app = "shopify"
base_uri = "https://shop.example"
[[instances]]
id = "db"
connector = "rdbms"
engine = "mysql"
host = "db.example"
[[instances]]
id = "api"
connector = "http"
base_uri = "https://api.example"
[[instances]]
id = "loader-src"
connector = "snowflake"
account = "acme"
[[flows]]
id = "a"
systems = ["ns", "shop"]
[[flows]]
id = "b"
systems = ["ns", "db"]
[[flows]]
id = "c"
systems = ["ns", "api"]
[[flows]]
id = "load"
kind = "data-loader"
systems = ["loader-src"]
"#;
        let mut config = load(body).unwrap();
        config.licensing.models = match models {
            "subscription" => vec![Model::Subscription],
            _ => vec![Model::Pair, Model::Subscription],
        };
        Arc::new(config)
    }

    fn compile_with(
        config: Arc<Config>,
        licenses: &[Arc<Installed>],
        orders: [u64; 4],
        now: &str,
    ) -> Compiled {
        let settings: Vec<FlowSetting> = orders
            .iter()
            .map(|&order| FlowSetting {
                enabled: true,
                reason: DisabledReason::Operator,
                order,
            })
            .collect();
        compile_at(config, licenses, &settings, at(now))
    }

    fn states(compiled: &Compiled) -> Vec<FlowState> {
        compiled
            .snapshot
            .flows
            .iter()
            .map(|flow| flow.state)
            .collect()
    }

    const ACTIVE: FlowState = FlowState::Active { license: None };
    const EXCEEDED: FlowState = FlowState::Disabled(DisabledReason::EntitlementExceeded);

    #[test]
    fn the_most_recently_enabled_flows_give_way_until_everything_fits() {
        // 4 endpoint apps in use (netsuite, shopify, mysql, api) against a limit of 2.
        let compiled = compile_with(
            config("subscription"),
            &[subscription("S", 2, None)],
            [0, 2, 1, 3],
            "2026-06-01T00:00:00Z",
        );
        // Enabling order: a, c, b; b is the most recent, then c.
        assert_eq!(states(&compiled), vec![ACTIVE, EXCEEDED, EXCEEDED, ACTIVE]);
        let refusals: Vec<(u32, Entitlement, u64, u64, u64)> = compiled
            .entitlement_refusals
            .iter()
            .map(|r| (r.flow, r.entitlement, r.in_use, r.limit, r.would_be))
            .collect();
        assert_eq!(
            refusals,
            vec![
                (1, Entitlement::EndpointApps, 3, 2, 4),
                (2, Entitlement::EndpointApps, 2, 2, 3)
            ]
        );
        assert_eq!(
            compiled
                .snapshot
                .entitlements
                .in_use
                .production
                .keys(Entitlement::EndpointApps),
            vec!["app:netsuite", "app:shopify"]
        );
        assert_eq!(compiled.refused.len(), 2);
    }

    #[test]
    fn several_subscriptions_add_up_and_a_free_period_lifts_every_limit() {
        let both = compile_with(
            config("subscription"),
            &[subscription("S1", 2, None), subscription("S2", 2, None)],
            [0, 1, 2, 3],
            "2026-06-01T00:00:00Z",
        );
        assert_eq!(states(&both), vec![ACTIVE; 4]);
        assert_eq!(
            both.snapshot
                .entitlements
                .enforced(Environment::Production)
                .map(|l| l.endpoint_apps),
            Some(4)
        );
        let free = compile_with(
            config("subscription"),
            &[subscription("S", 1, Some("2026-07-01T00:00:00Z"))],
            [0, 1, 2, 3],
            "2026-06-01T00:00:00Z",
        );
        assert_eq!(states(&free), vec![ACTIVE; 4]);
        assert_eq!(
            free.snapshot.entitlements.enforced(Environment::Production),
            None
        );
        let after = compile_with(
            config("subscription"),
            &[subscription("S", 1, Some("2026-07-01T00:00:00Z"))],
            [0, 1, 2, 3],
            "2026-07-01T00:00:00Z",
        );
        assert_eq!(
            states(&after)[0],
            EXCEEDED,
            "one endpoint app: even the first flow uses two"
        );
    }

    #[test]
    fn without_a_valid_subscription_no_flow_runs() {
        let compiled = compile_with(
            config("subscription"),
            &[],
            [0, 1, 2, 3],
            "2026-06-01T00:00:00Z",
        );
        assert_eq!(
            states(&compiled),
            vec![FlowState::Unlicensed(InvalidReason::Missing); 4]
        );
        let expired = compile_with(
            config("subscription"),
            &[subscription("S", 9, None)],
            [0, 1, 2, 3],
            "2031-01-01T00:00:00Z",
        );
        assert_eq!(
            states(&expired),
            vec![FlowState::Unlicensed(InvalidReason::Expired); 4]
        );
    }

    #[test]
    fn a_pair_whose_flows_lose_their_subscription_gives_its_point_back() {
        let first = compile_with(
            config("both"),
            &[subscription("S", 9, None), pair(1)],
            [0, 1, 2, 3],
            "2026-06-01T00:00:00Z",
        );
        assert!(matches!(
            states(&first)[0],
            FlowState::Active { license: Some(_) }
        ));
        let settings: Vec<FlowSetting> = (0..4)
            .map(|order| FlowSetting {
                enabled: true,
                reason: DisabledReason::Operator,
                order,
            })
            .collect();
        let moment = Moment::at(at("2026-06-01T00:00:00Z"));
        let second = compile(
            config("both"),
            &[pair(1)],
            &settings,
            &mut Resources::default(),
            &Arc::default(),
            moment,
            Some(&first.snapshot),
        )
        .unwrap();
        assert_eq!(
            states(&second)[0],
            FlowState::Unlicensed(InvalidReason::Missing)
        );
        assert_eq!(
            second.snapshot.licenses[0].points_used, 0,
            "no flow of the pair runs, so no point is held"
        );
    }

    #[test]
    fn pair_and_subscription_together_need_both() {
        let compiled = compile_with(
            config("both"),
            &[subscription("S", 9, None), pair(1)],
            [0, 1, 2, 3],
            "2026-06-01T00:00:00Z",
        );
        let states = states(&compiled);
        assert!(
            matches!(states[0], FlowState::Active { license: Some(_) }),
            "netsuite ↔ shopify has a pair license and fits"
        );
        assert_eq!(
            states[1],
            FlowState::Unlicensed(InvalidReason::Missing),
            "no pair license covers netsuite ↔ rdbms"
        );
        assert_eq!(states[3], ACTIVE, "a one-system data loader needs no point");
    }
}

mod stages {
    use super::*;
    use crate::observe::RequestStats;
    use crate::policy::tables::index_instances;

    fn setting(enabled: bool, order: u64, reason: DisabledReason) -> FlowSetting {
        FlowSetting {
            enabled,
            reason,
            order,
        }
    }

    #[test]
    fn enabled_flows_take_points_in_setting_order_then_config_order() {
        let settings = [
            setting(true, 7, DisabledReason::Operator),
            setting(false, 0, DisabledReason::Operator),
            setting(true, 3, DisabledReason::Operator),
            setting(true, 7, DisabledReason::Operator),
        ];
        assert_eq!(enabling_order(&settings, 4), vec![2, 0, 3]);
        assert_eq!(
            enabling_order(&settings, 2),
            vec![0],
            "flows past the config are ignored"
        );
    }

    #[test]
    fn disabled_flows_keep_their_reason_until_allocation() {
        let settings = [
            setting(false, 0, DisabledReason::RecordsLimit),
            setting(true, 1, DisabledReason::Operator),
        ];
        let plan = disabled_states(&settings, 3);
        assert_eq!(
            plan.states,
            vec![
                FlowState::Disabled(DisabledReason::RecordsLimit),
                FlowState::Disabled(DisabledReason::Operator),
                FlowState::Disabled(DisabledReason::Operator),
            ]
        );
        assert!(plan.refused.is_empty());
    }

    #[test]
    fn instances_are_indexed_by_id_base_path_and_authority() {
        let config = load(
            r#"
[[instances]]
id = "a"
connector = "http"
base_uri = "https://API.example/v2/"
[[instances]]
id = "b"
connector = "http"
base_uri = "http://api.example:8080"
[[instances]]
id = "db"
connector = "rdbms"
engine = "mysql"
host = "db.example"
"#,
        )
        .unwrap();
        let table = index_instances(&config, &mut RequestStats::default());
        assert_eq!(table.ids.get("b"), Some(&1));
        assert_eq!(&*table.entries[0].base_path, "/v2");
        assert_eq!(&*table.entries[1].base_path, "");
        assert_eq!(&*table.entries[2].base_path, "", "no base_uri, no path");
        let mut at_host = table.authorities["api.example"].clone();
        at_host.sort();
        assert_eq!(at_host, vec![(443, 0), (8080, 1)]);
        assert_eq!(table.authorities.len(), 1);
    }

    #[test]
    fn a_single_system_loader_draws_on_the_covering_license_that_expires_first() {
        let config = Arc::new(
            load(
                r#"
[[instances]]
id = "jira-1"
connector = "named"
app = "jira"
base_uri = "https://jira.example"
[[flows]]
id = "loader"
kind = "data-loader"
systems = ["jira-1"]
"#,
            )
            .unwrap(),
        );
        let license = |id: &str, expire: &str, systems: (&str, &str)| {
            let payload = format!(
                r#"{{"version":1,"id":"{id}","kind":"pair","company":"A","registered_to":"B","email":"c@d.example","start":"2026-01-01T00:00:00Z","expire":"{expire}","system_a":"{}","system_b":"{}","points":1,"transferred_records":5}}"#,
                systems.0, systems.1
            );
            installed(id, &payload)
        };
        let licenses = [
            license("LATE", "2031-01-01T00:00:00Z", ("jira", "servicenow")),
            license("EARLY", "2029-01-01T00:00:00Z", ("Jira", "zendesk")),
            license("OTHER", "2028-01-01T00:00:00Z", ("netsuite", "servicenow")),
            license("GONE", "2026-02-01T00:00:00Z", ("jira", "servicenow")),
        ];
        let compiled = compile_at(
            config,
            &licenses,
            &[setting(true, 0, DisabledReason::Operator)],
            at("2026-06-01T00:00:00Z"),
        );
        let snapshot = &compiled.snapshot;
        let budget = snapshot.budget_of(0).map(LicenseEntry::id);
        assert_eq!(budget, Some("EARLY"), "valid, covers jira, expires first");
        assert_eq!(snapshot.flows[0].state, FlowState::Active { license: None });
        assert!(
            snapshot.licenses.iter().all(|l| l.points_used == 0),
            "a loader holds no point"
        );
    }
}
