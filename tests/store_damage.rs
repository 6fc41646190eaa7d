//! A damaged store file (the store is never reset) stops `tollgate run` with exit
//! code 1 and one sentence naming the file and saying it is kept as it is, and the file is
//! left byte for byte as it was: cut to 4 KiB, cut inside its header, or overwritten. The
//! count journal beside it likewise: its counts are never silently dropped.

pub mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `tollgate run --config <config>` until it exits (killed after 20 s); returns its exit
/// code and stderr.
fn run_to_exit(config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("TOLLGATE_NOW")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tollgate run");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait for tollgate").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect tollgate's output");
            panic!(
                "tollgate ran on a damaged store; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("collect tollgate's output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `tollgate run` on the damaged `file` (holding `bytes`) and checks that it stops with
/// exit code 1, one line naming the file as damaged and kept, and the file unchanged.
fn refused_and_kept(config: &Path, file: &Path, damage: &str, bytes: &[u8]) {
    std::fs::write(file, bytes).unwrap();
    let (code, stderr) = run_to_exit(config);
    assert_eq!(code, Some(1), "{damage}: exit code; stderr:\n{stderr}");
    assert!(
        !stderr.contains("panicked"),
        "{damage}: a panic reached stderr:\n{stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains(&file.display().to_string()))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{damage}: one line names the file; stderr:\n{stderr}"
    );
    assert!(
        errors[0].contains("is damaged") && errors[0].contains("kept as it is"),
        "{damage}: {}",
        errors[0]
    );
    assert!(
        std::fs::read(file).unwrap() == bytes,
        "{damage}: the file was changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_stops_start_up_with_exit_1_and_stays_as_it_is() {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let mut tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start()
        .await;
    tg.disable("incidents").await;
    let status = tg.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}\n{}", tg.logs());

    let file = tg.dir().join("state").join("tollgate.redb");
    let intact = std::fs::read(&file).expect("the first run created the store");
    assert!(intact.len() > 4096, "a store of {} bytes", intact.len());
    let garbage: Vec<u8> = (0..intact.len() as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    for (damage, bytes) in [
        ("cut to 4 KiB", intact[..4096].to_vec()),
        ("cut inside the header", intact[..100].to_vec()),
        ("overwritten with garbage", garbage),
    ] {
        refused_and_kept(tg.config_path(), &file, damage, &bytes);
    }

    // Put back, the store opens with what it held.
    std::fs::write(&file, &intact).unwrap();
    tg.restart(&[]).await;
    assert_eq!(tg.flow("incidents").await["enabled"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_count_journal_stops_start_up_with_exit_1_and_its_counts_come_back_with_it() {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let entity = [
        "[[flows.entities]]",
        "instance = \"jira-1\"",
        "role = \"main\"",
        "method = \"POST\"",
        "path = \"/rest/api/2/issue\"",
    ];
    let mut tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .flow_with("incidents", ["servicenow-1", "jira-1"], &entity)
        .license(&pair_license("LIC-1", "servicenow", "jira", 1))
        .start_with(&["durability = \"strict\""], &[])
        .await;
    for _ in 0..3 {
        tg.post("/jira-1/rest/api/2/issue", Some("incidents"), "{}")
            .await
            .assert_upstream_ok("target");
    }
    // Killed: the answered counts may be in the journal only.
    tg.kill9();
    tg.wait_exit(Duration::from_secs(20))
        .await
        .expect("kill -9 did not end tollgate");

    let file = tg.dir().join("state").join("tollgate.journal");
    let intact = std::fs::read(&file).expect("strict durability keeps a journal");
    let mut overwritten = intact.clone();
    overwritten[..64].fill(b'x');
    for (damage, bytes) in [
        ("cut short", intact[..intact.len() / 2].to_vec()),
        ("header overwritten", overwritten),
    ] {
        refused_and_kept(tg.config_path(), &file, damage, &bytes);
    }

    // Put back, the journal's counts are there.
    std::fs::write(&file, &intact).unwrap();
    tg.restart(&[]).await;
    assert_eq!(tg.records("LIC-1").await["used"], 3);
}
