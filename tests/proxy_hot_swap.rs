//! Hot swap: licenses added and removed under load through the admin
//! API and the watched license directory, bad files refused while the running snapshot
//! stays, and SIGHUP reloads of the configuration (a broken one keeps the old one serving).

pub mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use serde_json::Value;

const SWAP_WAIT: Duration = Duration::from_secs(10);

/// `steady` (servicenow-1/jira-1, license A) and `churn` (salesforce-1/netsuite-1, license B).
async fn two_pairs(target: &Upstream, with_b: bool) -> Tollgate {
    let uri = target.base_uri();
    let mut builder = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .instance("salesforce-1", "salesforce", &uri)
        .instance("netsuite-1", "netsuite", &uri)
        .flow("steady", ["servicenow-1", "jira-1"])
        .flow("churn", ["salesforce-1", "netsuite-1"])
        .license(&pair_license("LIC-A", "servicenow", "jira", 1));
    if with_b {
        builder = builder.license(&pair_license("LIC-B", "salesforce", "netsuite", 1));
    }
    builder.start().await
}

/// Keeps sending requests on `flow` to `path` until `stop`; records every status.
fn load(
    tg: &Tollgate,
    path: &str,
    flow: &'static str,
    stop: Arc<AtomicBool>,
    statuses: Arc<Mutex<Vec<(u16, String)>>>,
) -> tokio::task::JoinHandle<()> {
    let client = tg.client.clone();
    let url = format!("http://{}{path}", tg.engine);
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let req = Request::get(&url)
                .header("tollgate-flow", flow)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let entry = match send(&client, req).await {
                Ok(resp) => (
                    resp.status.as_u16(),
                    resp.header("tollgate-reason").unwrap_or("").to_owned(),
                ),
                Err(err) => (0, err),
            };
            statuses.lock().unwrap().push(entry);
            // Continuous but not CPU-bound: the admin API must get a word in on 2 cores.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

/// Adds license B, enables `churn`, checks a request of it passes, removes B and checks the
/// flow is then disabled for it, `rounds` times.
async fn churn_license_b(tg: &Tollgate, license_b: &str, rounds: usize) {
    for round in 0..rounds {
        let resp = tg.admin_post("/v1/licenses", license_b.to_owned()).await;
        assert_eq!(
            resp.status,
            StatusCode::CREATED,
            "round {round}: {}",
            resp.text()
        );
        // The churn flow was disabled by the previous removal; bring it back.
        let resp = tg.admin_post("/v1/flows/churn/enable", "").await;
        assert_eq!(
            resp.status,
            StatusCode::OK,
            "round {round}: {}",
            resp.text()
        );
        tg.get("/netsuite-1/record", Some("churn"))
            .await
            .assert_upstream_ok("target");
        let resp = tg.admin_delete("/v1/licenses/LIC-B").await;
        assert_eq!(
            resp.status,
            StatusCode::NO_CONTENT,
            "round {round}: {}",
            resp.text()
        );
        let problem = tg
            .get("/netsuite-1/record", Some("churn"))
            .await
            .assert_problem(403, "flow-disabled");
        assert_eq!(
            problem["reason"], "license-removed",
            "round {round}: {problem}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keep_flowing_while_a_license_is_added_and_removed_50_times() {
    let target = Upstream::plain("target").await;
    let tg = two_pairs(&target, false).await;
    let license_b = tg.sign(&pair_license("LIC-B", "salesforce", "netsuite", 1));

    let stop = Arc::new(AtomicBool::new(false));
    let steady = Arc::new(Mutex::new(Vec::new()));
    let churn = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(load(
            &tg,
            "/jira-1/rest/api/2/issue",
            "steady",
            stop.clone(),
            steady.clone(),
        ));
    }
    tasks.push(load(
        &tg,
        "/netsuite-1/record",
        "churn",
        stop.clone(),
        churn.clone(),
    ));

    churn_license_b(&tg, &license_b, 50).await;
    // Let the load run a little past the last swap.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }

    let steady = steady.lock().unwrap().clone();
    let failures: Vec<_> = steady.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failures.is_empty(),
        "{} of {} steady requests failed, e.g. {:?}\nlog:\n{}",
        failures.len(),
        steady.len(),
        &failures[..failures.len().min(5)],
        tg.logs()
    );
    assert!(
        steady.len() >= 100,
        "only {} requests during the churn",
        steady.len()
    );

    // The churned flow only ever got what a license change must give it.
    let churn = churn.lock().unwrap().clone();
    for (status, reason) in &churn {
        assert!(
            *status == 200
                || (*status == 403
                    && ["flow-disabled", "license-invalid"].contains(&reason.as_str())),
            "churn flow got {status} {reason}"
        );
    }

    // Every allowed request reached the target exactly once (50 of them sent by the loop).
    let allowed = steady.len() + churn.iter().filter(|(s, _)| *s == 200).count() + 50;
    assert_eq!(target.hits(), allowed);

    // License A is untouched, B is gone, and the churn flow says why it is off.
    let a = tg.license("LIC-A").await.unwrap();
    assert_eq!(a["points"]["used"], 1, "{a}");
    assert!(tg.license("LIC-B").await.is_none());
    let flow = tg.flow("churn").await;
    assert_eq!(flow["enabled"], false, "{flow}");
    assert_eq!(flow["reason"], "license-removed", "{flow}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_license_directory_is_watched() {
    let target = Upstream::plain("target").await;
    let tg = two_pairs(&target, false).await;
    let file = tg.license_dir().join("dropped-b.lic");

    let problem = tg
        .get("/netsuite-1/x", Some("churn"))
        .await
        .assert_problem(403, "license-invalid");
    assert_eq!(problem["reason"], "missing");

    // A file dropped into the directory is picked up (written atomically, as an operator would).
    let text = tg.sign(&pair_license("LIC-B", "salesforce", "netsuite", 1));
    let tmp = tg.dir().join("dropped-b.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    eventually("LIC-B from the license directory", SWAP_WAIT, || async {
        tg.license("LIC-B").await
    })
    .await;
    eventually("churn to go through", SWAP_WAIT, || async {
        (tg.get("/netsuite-1/x", Some("churn")).await.status == StatusCode::OK).then_some(())
    })
    .await;
    let b = tg.license("LIC-B").await.unwrap();
    assert_eq!(b["points"]["used"], 1, "{b}");

    // A bad file is refused, reported, and the running snapshot stays.
    let bad = tg.license_dir().join("broken.lic");
    std::fs::write(
        &bad,
        "-----BEGIN TOLLGATE LICENSE-----\nnot base64\n-----END TOLLGATE LICENSE-----\n",
    )
    .unwrap();
    let rejected = eventually("broken.lic in /v1/status rejected", SWAP_WAIT, || async {
        let status = tg.status().await;
        let rejected = status["rejected"].as_array().cloned().unwrap_or_default();
        rejected.into_iter().find(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("broken.lic"))
        })
    })
    .await;
    assert!(
        rejected["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{rejected}"
    );
    tg.get("/netsuite-1/x", Some("churn"))
        .await
        .assert_upstream_ok("target");
    tg.get("/jira-1/x", Some("steady"))
        .await
        .assert_upstream_ok("target");
    assert!(tg.license("LIC-B").await.is_some());
    assert!(tg.license("LIC-A").await.is_some());
    std::fs::remove_file(&bad).unwrap();

    // Deleting the file removes the license and disables the flow that held its point.
    std::fs::remove_file(&file).unwrap();
    eventually("LIC-B to disappear", SWAP_WAIT, || async {
        tg.license("LIC-B").await.is_none().then_some(())
    })
    .await;
    let problem = eventually("churn to be refused", SWAP_WAIT, || async {
        let resp = tg.get("/netsuite-1/x", Some("churn")).await;
        (resp.status == StatusCode::FORBIDDEN).then(|| resp.assert_problem(403, "flow-disabled"))
    })
    .await;
    assert_eq!(problem["reason"], "license-removed", "{problem}");
    tg.get("/jira-1/x", Some("steady"))
        .await
        .assert_upstream_ok("target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_and_a_broken_one_keeps_serving() {
    let target = Upstream::plain("target").await;
    let other = Upstream::plain("other").await;
    let tg = two_pairs(&target, true).await;
    let original = tg.config_text().to_owned();
    tg.get("/jira-1/x", Some("steady"))
        .await
        .assert_upstream_ok("target");
    assert!(tg.status().await["config_error"].is_null());

    // A valid change: a new instance and a new flow, with a license for its pair.
    let changed = format!(
        "{original}\n[[instances]]\nid = \"zendesk-9\"\nconnector = \"named\"\napp = \"zendesk\"\nbase_uri = \"{}\"\n\n\
         [[flows]]\nid = \"late\"\nkind = \"flow\"\nsystems = [\"zendesk-9\", \"jira-1\"]\n",
        other.base_uri()
    );
    std::fs::write(
        tg.license_dir().join("LIC-ZJ.lic"),
        tg.sign(&pair_license("LIC-ZJ", "zendesk", "jira", 1)),
    )
    .unwrap();
    std::fs::write(tg.config_path(), &changed).unwrap();
    tg.signal("HUP");
    eventually(
        "the reloaded flow `late` to route to zendesk-9",
        SWAP_WAIT,
        || async {
            let resp = tg.get("/zendesk-9/x", Some("late")).await;
            (resp.status == StatusCode::OK && resp.header("x-upstream") == Some("other"))
                .then_some(())
        },
    )
    .await;
    assert!(tg.status().await["config_error"].is_null());

    // A broken config: the reload is refused, reported, and the running one keeps serving.
    for broken in [
        format!("{changed}\n[[flows]]\nid = \"bad\"\nsystems = [\"nope-1\", \"jira-1\"]\n"),
        format!("{changed}\nthis is = not [toml\n"),
    ] {
        std::fs::write(tg.config_path(), &broken).unwrap();
        tg.signal("HUP");
        let error: Value = eventually("config_error in /v1/status", SWAP_WAIT, || async {
            let status = tg.status().await;
            (!status["config_error"].is_null()).then(|| status["config_error"].clone())
        })
        .await;
        let text = error.as_str().unwrap_or("");
        assert!(
            text.contains("tollgate.toml"),
            "the error names the file: {text}"
        );
        tg.get("/jira-1/x", Some("steady"))
            .await
            .assert_upstream_ok("target");
        tg.get("/zendesk-9/x", Some("late"))
            .await
            .assert_upstream_ok("other");
        tg.get("/netsuite-1/x", Some("churn"))
            .await
            .assert_upstream_ok("target");

        // Fixing it clears the error.
        std::fs::write(tg.config_path(), &changed).unwrap();
        tg.signal("HUP");
        eventually("config_error to clear", SWAP_WAIT, || async {
            tg.status().await["config_error"].is_null().then_some(())
        })
        .await;
    }
    assert!(
        tg.logs().to_lowercase().contains("nope-1"),
        "the refusal is logged:\n{}",
        tg.logs()
    );

    // Reverting the change removes the flow again.
    std::fs::write(tg.config_path(), &original).unwrap();
    tg.signal("HUP");
    eventually("`late` to be gone", SWAP_WAIT, || async {
        let resp = tg.get("/zendesk-9/x", Some("late")).await;
        (resp.status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    tg.get("/jira-1/x", Some("steady"))
        .await
        .assert_upstream_ok("target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_the_snapshot_they_started_with() {
    let target = Upstream::plain("target").await;
    let tg = two_pairs(&target, true).await;

    // A slow load on churn, whose license is removed while the target is still answering.
    let client = tg.client.clone();
    let url = format!("http://{}/netsuite-1/slow/1000/record", tg.engine);
    let in_flight = tokio::spawn(async move {
        let req = Request::post(url)
            .header("tollgate-flow", "churn")
            .body(Full::new(Bytes::from_static(b"{\"name\":\"x\"}")))
            .unwrap();
        send(&client, req).await
    });
    eventually(
        "the slow request to reach the target",
        SWAP_WAIT,
        || async { (target.hits() == 1).then_some(()) },
    )
    .await;
    let resp = tg.admin_delete("/v1/licenses/LIC-B").await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{}", resp.text());
    let resp = tg.admin_post("/v1/flows/steady/disable", "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());

    // New requests see the new snapshot at once ...
    tg.get("/netsuite-1/record", Some("churn"))
        .await
        .assert_problem(403, "flow-disabled");
    tg.get("/jira-1/x", Some("steady"))
        .await
        .assert_problem(403, "flow-disabled");
    assert!(!in_flight.is_finished());
    // ... while the one in flight completes normally.
    let resp = in_flight.await.unwrap().expect("an answer");
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("x-upstream"), Some("target"));
    assert_eq!(target.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_through_tunnels_keep_flowing_while_a_license_is_added_and_removed() {
    // `steady` goes to a TLS jira-1 through a tunnel per request (as n8n behind HTTPS_PROXY);
    // `churn`'s license comes and goes meanwhile.
    let jira = Upstream::tls("jira").await;
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let (builder, ca_pem) = intercepting(tollgate());
    let tg = tls_instance(
        builder.instance("servicenow-1", "servicenow", "http://127.0.0.1:9"),
        "jira-1",
        "jira",
        &jira,
    )
    .instance("salesforce-1", "salesforce", &uri)
    .instance("netsuite-1", "netsuite", &uri)
    .flow("steady", ["servicenow-1", "jira-1"])
    .flow("churn", ["salesforce-1", "netsuite-1"])
    .license(&pair_license("LIC-A", "servicenow", "jira", 1))
    .start()
    .await;
    let license_b = tg.sign(&pair_license("LIC-B", "salesforce", "netsuite", 1));

    let stop = Arc::new(AtomicBool::new(false));
    let steady = Arc::new(Mutex::new(Vec::new()));
    let engine = TunnelClient {
        engine: tg.engine,
        target: jira.addr,
        credentials: Some("steady:x".to_owned()),
        config: client_config(&ca_pem, &[b"h2", b"http/1.1"]),
    };
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (engine, stop, steady) = (engine.clone(), stop.clone(), steady.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let entry = match engine
                        .request(hyper::Method::GET, "/rest/api/2/issue", &[], "")
                        .await
                    {
                        Ok(resp) => (
                            resp.status.as_u16(),
                            resp.header("tollgate-reason").unwrap_or("").to_owned(),
                        ),
                        Err(err) => (0, err),
                    };
                    steady.lock().unwrap().push(entry);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();

    churn_license_b(&tg, &license_b, 20).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let steady = steady.lock().unwrap().clone();
    let failures: Vec<_> = steady.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failures.is_empty(),
        "{} of {} tunnelled requests failed, e.g. {:?}\nlog:\n{}",
        failures.len(),
        steady.len(),
        &failures[..failures.len().min(5)],
        tg.logs()
    );
    assert!(
        steady.len() >= 20,
        "only {} tunnelled requests during the churn",
        steady.len()
    );
    assert_eq!(
        jira.hits(),
        steady.len(),
        "every tunnelled request reached the target once"
    );
}
