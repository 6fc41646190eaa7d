//! The sidecar as a process: spawning `tollgate run --ready-file …` on a scratch directory,
//! waiting until it is ready, its collected log, signals by process id, restarts and
//! `kill -9`; and one-shot runs of the binary's other verbs.
//!
//! Listener addresses come from the binary itself: `--ready-file` makes it write, once
//! every listener is bound and it is ready, `{"engine", "admin", "instances", "pid"}` as
//! JSON through a temporary file and a rename. The harness waits for that file, then for
//! `GET /readyz` to answer 200.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::client::{http1_client, send, HttpClient};
use super::config::ScratchDir;

/// How long tollgate may take to write its ready file, and then to answer `/readyz`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How often start-up and exits are polled.
const POLL: Duration = Duration::from_millis(20);
/// The ready file's name in the scratch directory.
const READY_FILE: &str = "tollgate.ready.json";

/// The log level a spawned sidecar runs at.
#[derive(Clone, Copy)]
pub(crate) enum LogLevel {
    /// `RUST_LOG` from `TOLLGATE_TEST_RUST_LOG` when that is set, else the default.
    TestOverride,
    /// Always the binary's default level (for tests that assert on the log's shape).
    Default,
}

/// The ready file as `tollgate run --ready-file` writes it (its `pid` is not needed: the
/// harness signals the child it spawned).
#[derive(Deserialize)]
struct ReadyFile {
    engine: SocketAddr,
    admin: SocketAddr,
    instances: HashMap<String, SocketAddr>,
}

/// Kills the child (`Child::kill`, by its pid) and reaps it when dropped.
struct ChildGuard {
    child: Child,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `tollgate run` and the means to talk to it.
pub struct Tollgate {
    process: ChildGuard,
    pid: u32,
    /// The engine-facing listener.
    pub engine: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The dedicated listener of each instance that has one, by instance id.
    instances: HashMap<String, SocketAddr>,
    /// The admin bearer token.
    pub token: String,
    /// An HTTP/1.1 client (pooled).
    pub client: HttpClient,
    log: Arc<Mutex<String>>,
    config_path: PathBuf,
    config_text: String,
    scratch: ScratchDir,
}

impl Tollgate {
    /// Writes `config_text` as `tollgate.toml` in the scratch directory and starts
    /// `tollgate run --config FILE --ready-file FILE <args>` with `env` set; returns once
    /// the ready file is written and `/readyz` answers 200.
    pub(crate) async fn launch(
        scratch: ScratchDir,
        config_text: String,
        env: &[(&str, &str)],
        args: &[&str],
        level: LogLevel,
    ) -> Tollgate {
        let mut tollgate = Tollgate::spawned(scratch, config_text, env, args, level);
        tollgate.await_ready().await;
        tollgate
    }

    /// Like [`Tollgate::launch`], but returns once the ready file is written, without
    /// waiting for `/readyz` (see [`Tollgate::readyz`]).
    pub(crate) async fn launch_unready(
        scratch: ScratchDir,
        config_text: String,
        env: &[(&str, &str)],
    ) -> Tollgate {
        let mut tollgate =
            Tollgate::spawned(scratch, config_text, env, &[], LogLevel::TestOverride);
        tollgate.take_ready_file().await;
        tollgate
    }

    /// Writes the config and spawns the process; the listener addresses are not known yet.
    fn spawned(
        scratch: ScratchDir,
        config_text: String,
        env: &[(&str, &str)],
        args: &[&str],
        level: LogLevel,
    ) -> Tollgate {
        let config_path = scratch.path().join("tollgate.toml");
        std::fs::write(&config_path, &config_text)
            .unwrap_or_else(|err| panic!("write {}: {err}", config_path.display()));
        let (process, log) = spawn(&config_path, scratch.path(), env, args, level);
        let unbound: SocketAddr = ([0, 0, 0, 0], 0).into();
        Tollgate {
            pid: process.child.id(),
            process,
            engine: unbound,
            admin: unbound,
            instances: HashMap::new(),
            token: scratch.token().to_owned(),
            client: http1_client(),
            log,
            config_path,
            config_text,
            scratch,
        }
    }

    /// Starts `tollgate run` again on the same scratch directory, config and state, with
    /// `env`, after the previous process has exited (it is killed if it has not). The log
    /// starts afresh; the listeners get new addresses, read from the new ready file.
    pub async fn restart(&mut self, env: &[(&str, &str)]) {
        if self.is_running() {
            self.kill9();
            self.wait_exit(Duration::from_secs(10)).await;
        }
        let (process, log) = spawn(
            &self.config_path,
            self.scratch.path(),
            env,
            &[],
            LogLevel::TestOverride,
        );
        self.pid = process.child.id();
        self.process = process;
        self.log = log;
        self.client = http1_client();
        self.await_ready().await;
    }

    /// The process id of the running sidecar.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the ready file and takes the listener addresses from it.
    async fn take_ready_file(&mut self) {
        let ready = self.await_ready_file().await;
        self.engine = ready.engine;
        self.admin = ready.admin;
        self.instances = ready.instances;
    }

    /// Waits for the ready file, takes the listener addresses from it, then waits for
    /// `/readyz` to answer 200.
    async fn await_ready(&mut self) {
        self.take_ready_file().await;
        let start = Instant::now();
        loop {
            let req = Request::get(format!("http://{}/readyz", self.admin))
                .body(Full::new(Bytes::new()))
                .expect("a GET /readyz request");
            if let Ok(resp) = send(&self.client, req).await {
                if resp.status == StatusCode::OK {
                    return;
                }
            }
            self.panic_if_exited("answering /readyz").await;
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "GET /readyz on {} did not answer 200 within {START_TIMEOUT:?}; log:\n{}",
                    self.admin,
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls for the ready file this process writes once every listener is bound.
    async fn await_ready_file(&mut self) -> ReadyFile {
        let path = ready_file(self.scratch.path());
        let start = Instant::now();
        loop {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    return serde_json::from_str(&text).unwrap_or_else(|err| {
                        panic!(
                            "the ready file {} is not what `--ready-file` promises ({err}): \
                             {text}\nlog:\n{}",
                            path.display(),
                            self.logs()
                        )
                    })
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => panic!("read {}: {err}", path.display()),
            }
            self.panic_if_exited("writing its ready file").await;
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "tollgate did not write its ready file {} within {START_TIMEOUT:?}; log:\n{}",
                    path.display(),
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Panics with the log if the process has exited (before `what`).
    async fn panic_if_exited(&mut self, what: &str) {
        if let Ok(Some(status)) = self.process.child.try_wait() {
            // Give the pipe readers a moment to collect the last words.
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!(
                "tollgate exited ({status}) before {what}; log:\n{}",
                self.logs()
            );
        }
    }

    /// Everything tollgate wrote to stderr and stdout so far.
    pub fn logs(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The scratch directory (config, keys, token, licenses, state).
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// `licenses/` in the scratch directory.
    pub fn license_dir(&self) -> PathBuf {
        self.scratch.path().join("licenses")
    }

    /// The config file tollgate runs on.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The config text tollgate was started with.
    pub fn config_text(&self) -> &str {
        &self.config_text
    }

    /// Signs a payload with the trusted issuer key; returns the license text.
    pub fn sign(&self, payload: &Value) -> String {
        self.scratch.issuer().sign(payload)
    }

    /// Signs payload text with the trusted issuer key without checking it (see
    /// [`super::licenses::Issuer::sign_unchecked`]).
    pub fn sign_unchecked(&self, payload_json: &str) -> String {
        self.scratch.issuer().sign_unchecked(payload_json)
    }

    /// The dedicated listener of instance `id`.
    pub fn instance_listener(&self, id: &str) -> SocketAddr {
        *self
            .instances
            .get(id)
            .unwrap_or_else(|| panic!("no dedicated listener for {id}: {:?}", self.instances))
    }

    /// Sends `signal` (`HUP`, `TERM`, `KILL`, …) to the sidecar by pid with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid);
    }

    /// Sends SIGKILL (`kill -9`) to the sidecar by pid.
    pub fn kill9(&self) {
        self.signal("KILL");
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; panics if it does not exit.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        match self.wait_exit(timeout).await {
            Some(status) => status,
            None => panic!(
                "tollgate did not exit within {timeout:?} of SIGTERM; log:\n{}",
                self.logs()
            ),
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.process.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.process.child.try_wait(), Ok(None))
    }
}

/// Where a sidecar on the scratch directory `dir` writes its ready file.
fn ready_file(dir: &Path) -> PathBuf {
    dir.join(READY_FILE)
}

/// A `tollgate` command with an environment that does not leak into the test: no colours,
/// no `RUST_LOG`, and neither test-clock variable unless the test sets it.
fn tollgate_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("TOLLGATE_NOW")
        .env_remove("TOLLGATE_TEST_HOST")
        .stdin(Stdio::null());
    command
}

/// Spawns `tollgate run --config config --ready-file FILE <args>` in `dir` with `env` set,
/// after removing the ready file of any earlier run; its stdout and stderr are collected
/// into the returned log.
fn spawn(
    config: &Path,
    dir: &Path,
    env: &[(&str, &str)],
    args: &[&str],
    level: LogLevel,
) -> (ChildGuard, Arc<Mutex<String>>) {
    let ready = ready_file(dir);
    match std::fs::remove_file(&ready) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => panic!("remove the old ready file {}: {err}", ready.display()),
    }
    let mut command = tollgate_command();
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--ready-file")
        .arg(&ready)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let (LogLevel::TestOverride, Ok(level)) = (level, std::env::var("TOLLGATE_TEST_RUST_LOG")) {
        command.env("RUST_LOG", level);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn tollgate run");
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("tollgate's stderr is piped");
    let stdout = child.stdout.take().expect("tollgate's stdout is piped");
    collect(stderr, log.clone());
    collect(stdout, log.clone());
    (ChildGuard { child }, log)
}

/// Copies lines from a child's pipe into `log` until the pipe closes.
fn collect(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    log.push_str(&text);
                    if !text.ends_with('\n') {
                        log.push('\n');
                    }
                }
            }
        }
    });
}

/// Every line of `log` that is a JSON object, parsed (other lines are skipped).
pub fn json_log_events(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(Value::is_object)
        .collect()
}

/// Runs the tollgate binary with `args` (no `RUST_LOG`, no colours, no test clock) and
/// returns its output.
pub fn tollgate_output<I: AsRef<OsStr>>(args: impl IntoIterator<Item = I>) -> Output {
    tollgate_command()
        .args(args)
        .output()
        .expect("run the tollgate binary")
}

/// A command's stdout as text (lossy).
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A command's stderr as text (lossy).
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
