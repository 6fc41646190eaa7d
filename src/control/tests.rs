//! The control plane's operations, driven directly on its state (no thread, no sockets):
//! start-up from disk, enabling and disabling flows with their refusals, license upload and
//! removal, config reload, the records limit and the month rollover.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::plane::{Command, Plane};
use super::Refusal;
use crate::clock::{Clock, ManualClock};
use crate::license::{generate_keypair, sign, signing_key_from_pem, SigningKey};
use crate::meter::{MeterEvent, MeterEventKind};
use crate::policy::{DisabledReason, FlowState, InvalidReason};
use crate::problem::ProblemCode;

/// A scratch directory with an issuer key, a token, a license directory and a config.
struct Scratch {
    dir: tempfile::TempDir,
    key: SigningKey,
}

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.2:0"
token_file = "admin.token"
[licensing]
public_keys = ["issuer.pub"]
license_dir = "licenses"
[state]
dir = "state"
[[instances]]
id = "sn-1"
connector = "named"
app = "servicenow"
base_uri = "https://sn.example"
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
[[flows]]
id = "second"
systems = ["sn-1", "jira-2"]
enabled = false
"#;

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = generate_keypair();
        std::fs::write(dir.path().join("issuer.pub"), public).unwrap();
        std::fs::write(dir.path().join("admin.token"), "secret\n").unwrap();
        std::fs::create_dir(dir.path().join("licenses")).unwrap();
        std::fs::write(dir.path().join("tollgate.toml"), CONFIG).unwrap();
        Scratch {
            key: signing_key_from_pem(&private).unwrap(),
            dir,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("tollgate.toml")
    }

    /// A signed servicenow ↔ jira license with `points` points and a records limit.
    fn license(&self, id: &str, points: u32, records: u64) -> String {
        let payload = format!(
            r#"{{"version":1,"id":"{id}","kind":"pair","company":"A","registered_to":"B","email":"c@d.example","start":"2026-01-01T00:00:00Z","expire":"2030-01-01T00:00:00Z","system_a":"servicenow","system_b":"jira","points":{points},"transferred_records":{records}}}"#
        );
        sign(payload.as_bytes(), &self.key).unwrap()
    }

    fn install(&self, id: &str, points: u32) {
        let path = self.dir.path().join("licenses").join(format!("{id}.lic"));
        std::fs::write(path, self.license(id, points, 100)).unwrap();
    }

    fn start_at(&self, clock: Arc<ManualClock>) -> Plane {
        let (commands, _received) = mpsc::channel::<Command>();
        let clock: Arc<dyn Clock> = clock;
        Plane::start(&self.config(), clock, commands, None, 1).unwrap()
    }

    fn start(&self) -> Plane {
        self.start_at(Arc::new(ManualClock::new(at("2026-06-15T12:00:00Z"))))
    }
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn state(plane: &Plane, flow: &str) -> FlowState {
    let live = plane.shared.live.load();
    live.flows[live.flow(flow).unwrap() as usize].state
}

fn conflict_code(refusal: Refusal) -> ProblemCode {
    match refusal {
        Refusal::Conflict { code, .. } => code,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn start_up_compiles_the_flows_on_the_installed_licenses() {
    let scratch = Scratch::new();
    scratch.install("LIC-1", 1);
    let plane = scratch.start();
    assert!(matches!(
        state(&plane, "first"),
        FlowState::Active { license: Some(_) }
    ));
    assert_eq!(
        state(&plane, "second"),
        FlowState::Disabled(DisabledReason::Operator)
    );
    assert_eq!(plane.shared.live.load().upstreams.len(), 3);
}

#[test]
fn enabling_a_flow_without_a_free_point_is_refused_and_remembered() {
    let scratch = Scratch::new();
    scratch.install("LIC-1", 1);
    let mut plane = scratch.start();
    let refusal = plane.enable_flow("second").unwrap_err();
    assert_eq!(conflict_code(refusal), ProblemCode::PointsExhausted);
    assert_eq!(
        state(&plane, "second"),
        FlowState::Disabled(DisabledReason::PointsExhausted)
    );
    assert!(matches!(
        plane.enable_flow("nope"),
        Err(Refusal::NotFound(_))
    ));
    // Disabling the first frees the point for the second.
    plane.disable_flow("first").unwrap();
    plane.enable_flow("second").unwrap();
    assert!(matches!(
        state(&plane, "second"),
        FlowState::Active { license: Some(_) }
    ));
}

#[test]
fn enabling_without_any_license_is_license_invalid_missing() {
    let scratch = Scratch::new();
    let mut plane = scratch.start();
    assert_eq!(
        state(&plane, "first"),
        FlowState::Unlicensed(InvalidReason::Missing)
    );
    let refusal = plane.enable_flow("second").unwrap_err();
    assert_eq!(conflict_code(refusal), ProblemCode::LicenseInvalid);
}

#[test]
fn uploads_install_licenses_and_removals_disable_their_flows() {
    let scratch = Scratch::new();
    let mut plane = scratch.start();
    let (id, disabled) = plane
        .upload_license(scratch.license("LIC-UP", 2, 100).as_bytes())
        .unwrap();
    assert_eq!((id.as_str(), disabled.len()), ("LIC-UP", 0));
    assert!(Path::new(&scratch.dir.path().join("licenses/LIC-UP.lic")).exists());
    assert!(matches!(
        state(&plane, "first"),
        FlowState::Active { license: Some(_) }
    ));
    assert!(matches!(
        plane.upload_license(b"not a license"),
        Err(Refusal::BadInput(_))
    ));
    plane.remove_license("LIC-UP").unwrap();
    assert_eq!(
        state(&plane, "first"),
        FlowState::Disabled(DisabledReason::LicenseRemoved)
    );
    assert!(matches!(
        plane.remove_license("LIC-UP"),
        Err(Refusal::NotFound(_))
    ));
}

/// Installed licenses as (file name, id).
type Named = Vec<(String, String)>;

/// The installed licenses: as the plane holds them, and as a fresh read of the license
/// directory finds them (the same signed payload each).
fn installed_and_on_disk(plane: &Plane) -> (Named, Named) {
    let named = |path: &Path, file: &crate::license::LicenseFile| {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        (name, file.payload.common.id.clone())
    };
    let listing =
        crate::license::read_dir(&plane.config.licensing.license_dir, &plane.keys).unwrap();
    for (held, read) in plane.licenses.iter().zip(&listing.installed) {
        assert!(
            held.file.signs_the_same(&read.file),
            "{}",
            read.path.display()
        );
    }
    (
        plane
            .licenses
            .iter()
            .map(|l| named(&l.path, &l.file))
            .collect(),
        listing
            .installed
            .iter()
            .map(|l| named(&l.path, &l.file))
            .collect(),
    )
}

fn pairs(items: &[(&str, &str)]) -> Named {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[test]
fn an_upload_installs_what_a_re_read_of_the_directory_would() {
    let scratch = Scratch::new();
    let dir = scratch.dir.path().join("licenses");
    // LIC-A under another name; LIC-B twice (the second refused as a duplicate); a file
    // named for LIC-C that holds LIC-D; a file named for LIC-E that is no license.
    std::fs::write(dir.join("old-name.lic"), scratch.license("LIC-A", 1, 100)).unwrap();
    std::fs::write(dir.join("a.lic"), scratch.license("LIC-B", 1, 100)).unwrap();
    std::fs::write(dir.join("b.lic"), scratch.license("LIC-B", 1, 100)).unwrap();
    std::fs::write(dir.join("LIC-C.lic"), scratch.license("LIC-D", 1, 100)).unwrap();
    std::fs::write(dir.join("LIC-E.lic"), "no license").unwrap();
    let mut plane = scratch.start();
    // As the watcher's start tells the plane: uploads then install their own file alone.
    plane.watched = Some(dir.clone());
    let (held, read) = installed_and_on_disk(&plane);
    assert_eq!(held, read);

    for (id, points) in [
        ("LIC-NEW", 1),
        ("LIC-A", 2),
        ("LIC-B", 3),
        ("LIC-C", 1),
        ("LIC-E", 1),
    ] {
        plane
            .upload_license(scratch.license(id, points, 100).as_bytes())
            .unwrap();
        let (held, read) = installed_and_on_disk(&plane);
        assert_eq!(held, read, "after uploading {id}");
        let live = plane.shared.live.load();
        let index = live.license(id).unwrap() as usize;
        let crate::license::Terms::Pair(terms) = &live.licenses[index].installed.file.payload.terms
        else {
            panic!("{id} is a pair license");
        };
        assert_eq!(
            terms.points, points,
            "the uploaded {id} is the one in force"
        );
    }
    // Every other file of an uploaded id is gone, the duplicate refused before included; the
    // file that held LIC-D was overwritten by LIC-C.
    let (held, _) = installed_and_on_disk(&plane);
    assert_eq!(
        held,
        pairs(&[
            ("LIC-A.lic", "LIC-A"),
            ("LIC-B.lic", "LIC-B"),
            ("LIC-C.lic", "LIC-C"),
            ("LIC-E.lic", "LIC-E"),
            ("LIC-NEW.lic", "LIC-NEW"),
        ])
    );
    assert!(plane.rejected.is_empty(), "{:?}", plane.rejected);
}

#[test]
fn an_upload_into_a_directory_nobody_watches_also_applies_changes_made_there_by_hand() {
    // Nothing watches the directory (the watch failed to start), then the one watched is
    // not the one the config names (license_dir changed by a reload).
    for watch_another in [false, true] {
        let scratch = Scratch::new();
        let dir = scratch.dir.path().join("licenses");
        let watched = watch_another.then(|| scratch.dir.path().to_owned());
        scratch.install("LIC-OLD", 1);
        let mut plane = scratch.start();
        plane.watched = watched.clone();
        assert!(matches!(
            state(&plane, "first"),
            FlowState::Active { license: Some(_) }
        ));
        // The operator revokes LIC-OLD by deleting its file and adds LIC-HAND by hand.
        std::fs::remove_file(dir.join("LIC-OLD.lic")).unwrap();
        std::fs::write(
            dir.join("LIC-HAND.lic"),
            scratch.license("LIC-HAND", 1, 100),
        )
        .unwrap();
        plane
            .upload_license(scratch.license("LIC-NEW", 1, 100).as_bytes())
            .unwrap();
        let (held, read) = installed_and_on_disk(&plane);
        assert_eq!(held, read, "watched: {watched:?}");
        assert_eq!(
            held,
            pairs(&[("LIC-HAND.lic", "LIC-HAND"), ("LIC-NEW.lic", "LIC-NEW")])
        );
        let live = plane.shared.live.load();
        assert!(live.license("LIC-OLD").is_none(), "watched: {watched:?}");
        assert_eq!(
            state(&plane, "first"),
            FlowState::Disabled(DisabledReason::LicenseRemoved),
            "the flow that held LIC-OLD's point, watched: {watched:?}"
        );
    }
}

#[test]
fn a_removal_deletes_the_files_refused_as_duplicates_of_the_license_too() {
    let scratch = Scratch::new();
    let dir = scratch.dir.path().join("licenses");
    std::fs::write(dir.join("a.lic"), scratch.license("LIC-1", 1, 100)).unwrap();
    std::fs::write(dir.join("b.lic"), scratch.license("LIC-1", 2, 100)).unwrap();
    let mut plane = scratch.start();
    assert_eq!(plane.rejected.len(), 1, "b.lic is refused as a duplicate");
    plane.remove_license("LIC-1").unwrap();
    let (held, read) = installed_and_on_disk(&plane);
    assert_eq!((held.len(), read.len()), (0, 0), "{held:?} {read:?}");
    assert!(plane.shared.live.load().license("LIC-1").is_none());
    assert!(!dir.join("b.lic").exists());
    assert_eq!(
        state(&plane, "first"),
        FlowState::Disabled(DisabledReason::LicenseRemoved)
    );
}

#[test]
fn a_flow_new_to_the_config_at_a_restart_comes_after_the_flows_already_running() {
    let scratch = Scratch::new();
    scratch.install("LIC-1", 1);
    let plane = scratch.start();
    assert!(matches!(
        state(&plane, "first"),
        FlowState::Active { license: Some(_) }
    ));
    plane.shared.recorder.stop_blocking();
    drop(plane);
    // While stopped, a flow on another pair is written above the running one.
    let config = CONFIG.replace(
        "[[flows]]\nid = \"first\"",
        "[[flows]]\nid = \"early\"\nsystems = [\"sn-1\", \"jira-2\"]\n[[flows]]\nid = \"first\"",
    );
    std::fs::write(scratch.config(), config).unwrap();
    let plane = scratch.start();
    assert!(
        matches!(
            state(&plane, "first"),
            FlowState::Active { license: Some(_) }
        ),
        "the running flow keeps its point: {:?}",
        state(&plane, "first")
    );
    assert_eq!(
        state(&plane, "early"),
        FlowState::Disabled(DisabledReason::PointsExhausted)
    );
}

#[test]
fn setting_the_clock_back_within_the_skew_again_and_again_does_not_hold_time_still() {
    let scratch = Scratch::new();
    scratch.install("LIC-1", 1); // expires 2030-01-01T00:00:00Z
    let clock = Arc::new(ManualClock::new(at("2029-12-31T23:00:00Z")));
    let mut plane = scratch.start_at(clock.clone());
    // Set back 23 hours, within the 24 h skew: licenses are judged normally.
    clock.set(at("2029-12-31T00:00:00Z"));
    plane.tick();
    assert!(!plane.rollback);
    // A day passes (up to an hour before the expiry again), and it is set back once more.
    clock.advance(std::time::Duration::from_secs(23 * 3600));
    plane.tick();
    assert!(!plane.rollback);
    clock.set(at("2029-12-31T00:00:00Z"));
    plane.tick();
    assert!(
        plane.rollback,
        "46 hours behind the time that has passed: the expiry cannot be put off for ever"
    );
    assert_eq!(
        plane.high_water,
        at("2030-01-01T22:00:00Z"),
        "the mark moved on with the time that passed"
    );
    // In the rollback the mark waits: once the wall clock is within the skew of it again,
    // licenses are judged normally (LIC-1 has expired by then).
    clock.advance(std::time::Duration::from_secs(22 * 3600));
    plane.tick();
    assert_eq!(plane.high_water, at("2030-01-01T22:00:00Z"));
    assert!(!plane.rollback, "time caught up with the mark");
}

#[test]
fn a_license_file_that_no_longer_reads_leaves_its_license_in_force_until_it_is_deleted() {
    let scratch = Scratch::new();
    scratch.install("LIC-1", 1);
    let mut plane = scratch.start();
    let generation = plane.shared.live.load().generation;
    let path = scratch.dir.path().join("licenses/LIC-1.lic");
    // A truncated copy, then a renewal signed by a key that is not trusted (yet).
    let (untrusted, _) = generate_keypair();
    let renewal = {
        let key = signing_key_from_pem(&untrusted).unwrap();
        sign(
            br#"{"version":1,"id":"LIC-1","kind":"pair","company":"A","registered_to":"B","email":"c@d.example","start":"2026-01-01T00:00:00Z","expire":"2031-01-01T00:00:00Z","system_a":"servicenow","system_b":"jira","points":5,"transferred_records":100}"#,
            &key,
        )
        .unwrap()
    };
    for broken in ["-----BEGIN TOLLGATE LICENSE-----\n".to_owned(), renewal] {
        std::fs::write(&path, broken).unwrap();
        plane.reload_licenses();
        assert_eq!(plane.rejected.len(), 1, "the broken file is reported");
        let live = plane.shared.live.load();
        assert_eq!(live.generation, generation, "the running snapshot is kept");
        assert!(live.license("LIC-1").is_some());
        assert!(matches!(
            state(&plane, "first"),
            FlowState::Active { license: Some(_) }
        ));
    }
    // A reload of the config that changes no trusted key keeps it too.
    plane.reload_config();
    assert!(plane.config_error.is_none(), "{:?}", plane.config_error);
    assert!(plane.shared.live.load().license("LIC-1").is_some());
    std::fs::remove_file(&path).unwrap();
    plane.reload_licenses();
    assert!(plane.shared.live.load().license("LIC-1").is_none());
    assert_eq!(
        state(&plane, "first"),
        FlowState::Disabled(DisabledReason::LicenseRemoved)
    );
}

#[test]
fn a_removal_succeeds_when_one_of_its_files_is_gone_already() {
    let scratch = Scratch::new();
    let dir = scratch.dir.path().join("licenses");
    std::fs::write(dir.join("a.lic"), scratch.license("LIC-1", 1, 100)).unwrap();
    std::fs::write(dir.join("b.lic"), scratch.license("LIC-1", 2, 100)).unwrap();
    let mut plane = scratch.start();
    // The refused duplicate is deleted by hand, and nothing has read the directory since.
    std::fs::remove_file(dir.join("b.lic")).unwrap();
    plane.remove_license("LIC-1").unwrap();
    assert!(plane.shared.live.load().license("LIC-1").is_none());
    assert!(!dir.join("a.lic").exists());
}

#[test]
fn a_directory_event_that_changes_no_license_swaps_nothing() {
    let scratch = Scratch::new();
    scratch.install("LIC-1", 1);
    let mut plane = scratch.start();
    let generation = plane.shared.live.load().generation;
    // A file that is no license, and one touched without a change.
    let dir = scratch.dir.path().join("licenses");
    std::fs::write(dir.join("notes.lic"), "no license").unwrap();
    std::fs::write(dir.join("LIC-1.lic"), scratch.license("LIC-1", 1, 100)).unwrap();
    plane.reload_licenses();
    assert_eq!(plane.shared.live.load().generation, generation);
    assert_eq!(
        plane.rejected.len(),
        1,
        "the refused file is still reported"
    );

    scratch.install("LIC-2", 1);
    plane.reload_licenses();
    let live = plane.shared.live.load();
    assert_eq!(live.generation, generation + 1);
    assert!(live.license("LIC-2").is_some());
}

#[test]
fn a_reload_with_a_broken_config_keeps_the_running_one() {
    let scratch = Scratch::new();
    scratch.install("LIC-1", 1);
    let mut plane = scratch.start();
    let generation = plane.shared.live.load().generation;
    std::fs::write(scratch.config(), "[server\nbroken").unwrap();
    plane.reload_config();
    assert!(plane.config_error.is_some());
    assert_eq!(plane.shared.live.load().generation, generation);
    std::fs::write(
        scratch.config(),
        CONFIG.replace("enabled = false", "enabled = true"),
    )
    .unwrap();
    plane.reload_config();
    assert_eq!(plane.config_error, None);
    assert!(plane.shared.live.load().generation > generation);
}

#[test]
fn the_hard_limit_stops_the_flows_of_its_license_until_the_month_turns() {
    let scratch = Scratch::new();
    scratch.install("LIC-1", 1);
    let clock = Arc::new(ManualClock::new(at("2026-06-30T23:59:59Z")));
    let mut plane = scratch.start_at(clock.clone());
    let month = plane.month;
    plane.on_meter_event(MeterEvent {
        kind: MeterEventKind::Limit,
        license: "LIC-1".into(),
        month,
        used: 110,
        limit: 100,
        hard_limit: 110,
    });
    assert_eq!(
        state(&plane, "first"),
        FlowState::Disabled(DisabledReason::RecordsLimit)
    );
    let audit = plane.store.audit_page(10, None).unwrap();
    let kinds: Vec<&str> = audit.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"records-limit"), "{kinds:?}");
    // Past midnight, the next tick resets the month and the flow resumes.
    clock.set(at("2026-07-01T00:00:01Z"));
    plane.tick();
    assert_eq!(plane.month, month + 1);
    assert!(matches!(
        state(&plane, "first"),
        FlowState::Active { license: Some(_) }
    ));
}

#[test]
fn a_limit_reached_in_a_month_the_tick_has_not_begun_yet_is_acted_on_in_that_month() {
    let scratch = Scratch::new();
    scratch.install("LIC-1", 1);
    let clock = Arc::new(ManualClock::new(at("2026-06-30T23:59:59Z")));
    let mut plane = scratch.start_at(clock.clone());
    let june = plane.month;
    // June's hard limit stopped the flow.
    plane.on_meter_event(MeterEvent {
        kind: MeterEventKind::Limit,
        license: "LIC-1".into(),
        month: june,
        used: 110,
        limit: 100,
        hard_limit: 110,
    });
    assert_eq!(
        state(&plane, "first"),
        FlowState::Disabled(DisabledReason::RecordsLimit)
    );
    // Midnight has passed, the tick has not run, and a load reaches July's hard limit.
    clock.set(at("2026-07-01T00:00:00.200Z"));
    plane.on_meter_event(MeterEvent {
        kind: MeterEventKind::Limit,
        license: "LIC-1".into(),
        month: june + 1,
        used: 110,
        limit: 100,
        hard_limit: 110,
    });
    assert_eq!(plane.month, june + 1);
    assert_eq!(
        state(&plane, "first"),
        FlowState::Disabled(DisabledReason::RecordsLimit)
    );
    let audit = plane.store.audit_page(20, None).unwrap();
    let july: Vec<&str> = audit
        .iter()
        .filter(|e| e.time.starts_with("2026-07"))
        .map(|e| e.kind.as_str())
        .collect();
    for kind in ["records-reset", "records-warning", "records-limit"] {
        assert!(july.contains(&kind), "{kind} missing from July's {july:?}");
    }
    // The tick that follows does not begin July again (which would resume the flow).
    clock.set(at("2026-07-01T00:00:01Z"));
    plane.tick();
    assert_eq!(
        state(&plane, "first"),
        FlowState::Disabled(DisabledReason::RecordsLimit)
    );
}
