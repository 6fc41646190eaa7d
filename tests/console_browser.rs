//! Operator experience: the web console at `/` on the admin listener, driven in a
//! real headless Chromium over WebDriver (chromedriver + fantoccini).
//!
//! The operator pastes the token, sees the licenses with their points, uploads a license
//! file, disables and enables flows, sees a refusal's problem detail, watches the usage
//! meters and removes a license after confirming. With `TOLLGATE_SCREENSHOTS=1` the pages
//! are saved to `docs/screenshots/` (otherwise the tree is left alone).

pub mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper::StatusCode;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long any one thing may take to show up on the page.
const UI_TIMEOUT: Duration = Duration::from_secs(15);

/// A chromedriver on a free loopback port, in its own process group; the group (the driver
/// and the browsers it started) is killed by id when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start {CHROMEDRIVER} ({err}): the console test needs Chromium and its \
                     WebDriver (Debian packages `chromium` and `chromium-driver`, installed by .ci/run)"
                )
            });
        ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Opens a headless Chromium session, retrying while chromedriver starts up.
    async fn session(&mut self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1400,900",
                ],
                "binary": CHROMIUM,
            }),
        );
        capabilities.insert("unhandledPromptBehavior".to_owned(), json!("ignore"));
        let start = Instant::now();
        loop {
            let attempt = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&self.url)
                .await;
            match attempt {
                Ok(client) => return client,
                Err(err) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("{CHROMEDRIVER} exited ({status}) before a session opened: {err}");
                    }
                    if start.elapsed() > Duration::from_secs(30) {
                        panic!(
                            "no WebDriver session from {CHROMEDRIVER} at {} within 30 s \
                             (is {CHROMIUM} installed?): {err}",
                            self.url
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The browser, the page's URL and where screenshots go (if anywhere).
struct Console {
    client: Client,
    screenshots: Option<PathBuf>,
}

impl Console {
    /// Runs `script` (which must `return` a value) in the page.
    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|err| panic!("script {script:?} failed: {err}"))
    }

    /// What the page shows in its banners, for failure messages.
    async fn banners(&self) -> String {
        let value = self
            .js(
                "return JSON.stringify({error: document.getElementById('error').textContent, \
                 notice: document.getElementById('notice').textContent});",
            )
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Polls `script` until it returns a truthy value; returns that value.
    async fn until(&self, what: &str, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let value = self.js(script).await;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if start.elapsed() > UI_TIMEOUT {
                let banners = self.banners().await;
                let text = self.js("return document.body.innerText;").await;
                panic!(
                    "timed out waiting for {what} (last value {value}); banners {banners}; page:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the text of the first element matching `selector` is `expected`.
    async fn until_text(&self, selector: &str, expected: &str) {
        let script = format!(
            "const n = document.querySelector({sel}); return n !== null && n.textContent.trim() === {exp};",
            sel = json!(selector),
            exp = json!(expected)
        );
        self.until(&format!("{selector} to read {expected:?}"), &script)
            .await;
    }

    /// The trimmed text of the first element matching `selector` (null if none).
    async fn text(&self, selector: &str) -> Option<String> {
        let script = format!(
            "const n = document.querySelector({}); return n === null ? null : n.textContent.trim();",
            json!(selector)
        );
        self.js(&script).await.as_str().map(str::to_owned)
    }

    async fn click(&self, selector: &str) {
        let element = self
            .client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|err| panic!("no element {selector}: {err}"));
        element
            .click()
            .await
            .unwrap_or_else(|err| panic!("click on {selector}: {err}"));
    }

    /// Waits for the visible page section `page` (licenses, flows, usage).
    async fn open(&self, page: &str) {
        self.click(&format!("#nav-{page}")).await;
        let script = format!(
            "return !document.getElementById('page-{page}').hidden && \
             document.getElementById('nav-{page}').classList.contains('active');"
        );
        self.until(&format!("the {page} page"), &script).await;
    }

    /// Waits for `window.confirm` to be open, checks its text, and accepts or dismisses it.
    async fn answer_confirm(&self, contains: &str, accept: bool) {
        let start = Instant::now();
        let text = loop {
            match self.client.get_alert_text().await {
                Ok(text) => break text,
                Err(err) if start.elapsed() > UI_TIMEOUT => {
                    panic!("no confirmation dialog appeared: {err}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        assert!(
            text.contains(contains),
            "confirmation {text:?} should mention {contains:?}"
        );
        if accept {
            self.client.accept_alert().await.expect("accept the dialog");
        } else {
            self.client
                .dismiss_alert()
                .await
                .expect("dismiss the dialog");
        }
    }

    /// Saves a PNG of the window as `docs/screenshots/<name>.png` when screenshots are on.
    async fn screenshot(&self, name: &str) {
        let Some(dir) = &self.screenshots else {
            return;
        };
        let png = self.client.screenshot().await.expect("take a screenshot");
        assert!(
            png.starts_with(b"\x89PNG"),
            "screenshot {name} is not a PNG"
        );
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// `[[flows.entities]]` lines making `POST /rest/api/2/issue` on `instance` a main load.
fn main_load(instance: &str) -> Vec<String> {
    vec![
        "[[flows.entities]]".to_owned(),
        format!("instance = \"{instance}\""),
        "role = \"main\"".to_owned(),
        "method = \"POST\"".to_owned(),
        "path = \"/rest/api/2/issue\"".to_owned(),
    ]
}

fn refs(lines: &[String]) -> Vec<&str> {
    lines.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_manages_licenses_flows_and_shows_usage_in_a_real_browser() {
    let target = Upstream::plain("target").await;
    let uri = target.base_uri();
    let mut lic1 = pair_license("LIC-1", "servicenow", "jira", 1);
    lic1["transferred_records"] = 50.into();
    let (jira1, jira2) = (main_load("jira-1"), main_load("jira-2"));
    let tg = tollgate()
        .instance("servicenow-1", "servicenow", &uri)
        .instance("jira-1", "jira", &uri)
        .instance("jira-2", "jira", &uri)
        .instance("jira-3", "jira", &uri)
        .instance("jira-4", "jira", &uri)
        .flow_with("incidents", ["servicenow-1", "jira-1"], &refs(&jira1))
        .flow_with("problems", ["servicenow-1", "jira-2"], &{
            let mut lines = refs(&jira2);
            lines.insert(0, "enabled = false");
            lines
        })
        .flow_with("changes", ["servicenow-1", "jira-3"], &["enabled = false"])
        .flow_with("tasks", ["servicenow-1", "jira-4"], &["enabled = false"])
        .license(&lic1)
        .start()
        .await;
    let mut lic2 = pair_license("LIC-2", "servicenow", "jira", 2);
    lic2["transferred_records"] = 100.into();
    lic2["company"] = "Acme Europe GmbH".into();
    let lic2_file = tg.dir().join("LIC-2.lic");
    std::fs::write(&lic2_file, tg.sign(&lic2)).unwrap();

    let screenshots = (std::env::var("TOLLGATE_SCREENSHOTS").as_deref() == Ok("1"))
        .then(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots"));
    let mut driver = ChromeDriver::start();
    let client = driver.session().await;
    let console = Console {
        client,
        screenshots,
    };

    // The page itself needs no token; it asks for one.
    let url = format!("http://{}/", tg.admin);
    console.client.goto(&url).await.expect("open the console");
    assert_eq!(console.client.title().await.unwrap(), "tollgate console");
    console
        .until(
            "the token prompt",
            "return !document.getElementById('error').hidden && \
             document.getElementById('error').textContent.includes('token');",
        )
        .await;

    // A wrong token: the API's refusal is shown, nothing is listed.
    let token_input = console.client.find(Locator::Css("#token")).await.unwrap();
    token_input.send_keys("not-the-token").await.unwrap();
    console.click("#save-token").await;
    console
        .until(
            "the refusal of a wrong token",
            "return document.getElementById('error').textContent.startsWith('unauthorized: ');",
        )
        .await;
    assert_eq!(
        console
            .js("return document.querySelectorAll('#licenses tbody tr').length;")
            .await,
        0
    );

    // Paste the token: the license is listed with its points.
    let token_input = console.client.find(Locator::Css("#token")).await.unwrap();
    token_input.send_keys(&tg.token).await.unwrap();
    console.click("#save-token").await;
    console
        .until_text("#licenses tbody tr[data-id='LIC-1'] td.points", "1/1")
        .await;
    assert_eq!(console.text("#error").await.as_deref(), Some(""));
    let stored = console
        .js("return sessionStorage.getItem('tollgate-token');")
        .await;
    assert_eq!(
        stored,
        json!(tg.token),
        "the token is kept in session storage"
    );
    let row = console
        .text("#licenses tbody tr[data-id='LIC-1']")
        .await
        .unwrap();
    for attribute in [
        "Acme Corp",
        "Jane Doe",
        "jane@acme.example",
        "valid",
        "0 / 50",
    ] {
        assert!(
            row.contains(attribute),
            "LIC-1 row lacks {attribute:?}: {row}"
        );
    }

    // Upload a second license file: it is listed with its points.
    let file_input = console
        .client
        .find(Locator::Css("#license-file"))
        .await
        .unwrap();
    file_input
        .send_keys(lic2_file.to_str().unwrap())
        .await
        .expect("choose the license file");
    console.click("#upload").await;
    console
        .until_text("#licenses tbody tr[data-id='LIC-2'] td.points", "0/2")
        .await;
    console
        .until(
            "the upload notice",
            "return document.getElementById('notice').textContent.includes('LIC-2');",
        )
        .await;
    let row = console
        .text("#licenses tbody tr[data-id='LIC-2']")
        .await
        .unwrap();
    assert!(row.contains("Acme Europe GmbH"), "{row}");
    assert!(
        tg.license("LIC-2").await.is_some(),
        "the upload reached the sidecar"
    );

    // Flows: disable and enable a flow.
    console.open("flows").await;
    let state = "#flows tbody tr[data-id='incidents'] td.state";
    console.until_text(state, "enabled").await;
    console
        .until_text(
            "#flows tbody tr[data-id='tasks'] td.state",
            "disabled (operator)",
        )
        .await;
    console
        .click("#flows tbody tr[data-id='incidents'] button.disable")
        .await;
    console.until_text(state, "disabled (operator)").await;
    assert_eq!(tg.flow("incidents").await["enabled"], false);
    console
        .until(
            "the disable notice",
            "return document.getElementById('notice').textContent.includes('incidents');",
        )
        .await;
    console
        .click("#flows tbody tr[data-id='incidents'] button.enable")
        .await;
    console.until_text(state, "enabled").await;
    assert_eq!(tg.flow("incidents").await["enabled"], true);
    // Two more pairs take LIC-2's two points.
    for flow in ["problems", "changes"] {
        console
            .click(&format!("#flows tbody tr[data-id='{flow}'] button.enable"))
            .await;
        console
            .until_text(
                &format!("#flows tbody tr[data-id='{flow}'] td.state"),
                "enabled",
            )
            .await;
    }
    console.screenshot("flows").await;

    // A fourth pair finds no free point: the refusal's problem detail is shown.
    console
        .click("#flows tbody tr[data-id='tasks'] button.enable")
        .await;
    let error = console
        .until(
            "the points-exhausted refusal",
            "const e = document.getElementById('error'); \
             return !e.hidden && e.textContent.startsWith('points-exhausted: ') && e.textContent;",
        )
        .await;
    let resp = tg.enable("tasks").await;
    let problem = resp.assert_admin_problem(409, "points-exhausted");
    assert_eq!(
        error.as_str().unwrap(),
        format!("points-exhausted: {}", problem["detail"].as_str().unwrap()),
        "the banner shows the problem's detail"
    );
    console
        .until(
            "tasks to stay disabled",
            "const n = document.querySelector(\"#flows tbody tr[data-id='tasks'] td.state\"); \
             return n !== null && n.textContent.startsWith('disabled');",
        )
        .await;
    assert_eq!(tg.flow("tasks").await["enabled"], false);
    console.screenshot("refusal").await;

    // Loads through the engine listener, so the usage bars are not empty: LIC-1 into its
    // 10% buffer, LIC-2 an eighth of its limit.
    for _ in 0..53 {
        tg.post("/jira-1/rest/api/2/issue", Some("incidents"), "r")
            .await
            .assert_upstream_ok("target");
    }
    for _ in 0..12 {
        tg.post("/jira-2/rest/api/2/issue", Some("problems"), "r")
            .await
            .assert_upstream_ok("target");
    }
    assert_eq!(tg.usage_of_license(None, "LIC-1").await, 53);
    assert_eq!(tg.usage_of_license(None, "LIC-2").await, 12);

    // Usage: a meter per license against its limit and buffer, points, entitlements, daily chart.
    console.open("usage").await;
    console
        .until(
            "two record meters",
            "return document.querySelectorAll('#records .meter').length === 2;",
        )
        .await;
    let meters = console
        .js("return Array.from(document.querySelectorAll('#records .meter')).map(m => m.textContent);")
        .await;
    let meters: Vec<String> = serde_json::from_value(meters).unwrap();
    assert!(
        meters
            .iter()
            .any(|m| m.contains("LIC-1") && m.contains("53 / 50 (hard limit 55)")),
        "{meters:?}"
    );
    assert!(
        meters
            .iter()
            .any(|m| m.contains("LIC-2") && m.contains("12 / 100 (hard limit 110)")),
        "{meters:?}"
    );
    assert_eq!(
        console
            .js("return document.querySelectorAll('#records .meter .used.warning').length;")
            .await,
        1,
        "LIC-1's bar is in the buffer"
    );
    assert_eq!(
        console
            .js("return document.querySelectorAll('#records .meter .buffer').length;")
            .await,
        2
    );
    let points = console
        .js("return Array.from(document.querySelectorAll('#points .meter')).map(m => m.textContent);")
        .await;
    let points: Vec<String> = serde_json::from_value(points).unwrap();
    assert_eq!(points.len(), 2, "{points:?}");
    assert!(
        points
            .iter()
            .any(|p| p.contains("LIC-2") && p.contains("2 / 2 points used")),
        "{points:?}"
    );
    console
        .until(
            "the entitlements table",
            "return document.querySelectorAll('#entitlements tbody tr').length === 2;",
        )
        .await;
    let production = console
        .text("#entitlements tbody tr:first-child")
        .await
        .unwrap();
    assert!(
        production.starts_with("production") && production.contains("3 / no limit"),
        "three enabled flows in production: {production}"
    );
    let bars = console
        .js("return Array.from(document.querySelectorAll('#daily svg.chart rect title')).map(t => t.textContent);")
        .await;
    let bars: Vec<String> = serde_json::from_value(bars).unwrap();
    assert!(
        bars.iter().any(|b| b.ends_with(": 53")) && bars.iter().any(|b| b.ends_with(": 12")),
        "daily chart bars: {bars:?}"
    );
    // Tall enough for both daily charts.
    console.client.set_window_size(1400, 1250).await.unwrap();
    console.screenshot("usage").await;
    console.client.set_window_size(1400, 900).await.unwrap();

    // Licenses again: points and records as the sidecar counts them.
    console.open("licenses").await;
    console
        .until_text("#licenses tbody tr[data-id='LIC-2'] td.points", "2/2")
        .await;
    let row = console
        .text("#licenses tbody tr[data-id='LIC-1']")
        .await
        .unwrap();
    assert!(row.contains("53 / 50 ⚠"), "LIC-1 is past its limit: {row}");
    console.screenshot("licenses").await;

    // Remove LIC-2: dismissing the confirmation keeps it; accepting removes it.
    console
        .click("#licenses tbody tr[data-id='LIC-2'] button.remove")
        .await;
    console.answer_confirm("LIC-2", false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        console
            .text("#licenses tbody tr[data-id='LIC-2']")
            .await
            .is_some(),
        "dismissing the confirmation removed the license"
    );
    assert!(tg.license("LIC-2").await.is_some());
    console
        .click("#licenses tbody tr[data-id='LIC-2'] button.remove")
        .await;
    console.answer_confirm("LIC-2", true).await;
    console
        .until(
            "LIC-2 to disappear",
            "return document.querySelector(\"#licenses tbody tr[data-id='LIC-2']\") === null \
             && document.querySelector(\"#licenses tbody tr[data-id='LIC-1']\") !== null;",
        )
        .await;
    console
        .until(
            "the removal notice",
            "return document.getElementById('notice').textContent.includes('LIC-2 removed');",
        )
        .await;
    assert!(tg.license("LIC-2").await.is_none());
    let resp = tg.admin_get("/v1/licenses").await;
    assert_eq!(resp.status, StatusCode::OK);

    // The flows that held its points are stopped, and the console says why.
    console.open("flows").await;
    for flow in ["problems", "changes"] {
        console
            .until_text(
                &format!("#flows tbody tr[data-id='{flow}'] td.state"),
                "disabled (license-removed)",
            )
            .await;
    }
    console.until_text(state, "enabled").await;

    console.client.close().await.expect("close the browser");
    drop(driver);
}
