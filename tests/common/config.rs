//! The scratch directory and config builder: a temporary directory with an issuer key pair,
//! an admin token file and a license directory, a `tollgate.toml` described piece by piece
//! (server, licensing and state options, named instances, flows, signed licenses), and the
//! ways to check it with `tollgate check` or start `tollgate run` on it.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use super::licenses::Issuer;
use super::process::{tollgate_output, LogLevel, Tollgate};

/// The admin token every harness-made config uses.
const ADMIN_TOKEN: &str = "test-admin-token-5f0c2d";

/// Starts describing a sidecar.
pub fn tollgate() -> Builder {
    Builder::new()
}

/// The scratch directory of one sidecar: `issuer.key` and `issuer.pub`, `admin.token`,
/// `licenses/`, and later the config, the state and the ready file.
pub struct ScratchDir {
    dir: tempfile::TempDir,
    issuer: Issuer,
}

impl ScratchDir {
    fn new() -> ScratchDir {
        let dir = tempfile::tempdir().expect("create a scratch directory");
        let issuer = Issuer::new(dir.path());
        let token_file = dir.path().join("admin.token");
        std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n"))
            .unwrap_or_else(|err| panic!("write {}: {err}", token_file.display()));
        let licenses = dir.path().join("licenses");
        std::fs::create_dir_all(&licenses)
            .unwrap_or_else(|err| panic!("create {}: {err}", licenses.display()));
        ScratchDir { dir, issuer }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The issuer whose public key the config trusts.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// The admin bearer token in `admin.token`.
    pub fn token(&self) -> &str {
        ADMIN_TOKEN
    }
}

/// One `[[instances]]` table of the named connector.
struct InstanceSpec {
    id: String,
    app: String,
    base_uri: String,
    extra: Vec<String>,
    dedicated: bool,
    flow: Option<String>,
}

/// Builds a scratch directory with keys, token, licenses and a `tollgate.toml`, then checks
/// it or starts `tollgate run` on it.
pub struct Builder {
    scratch: ScratchDir,
    server: Vec<String>,
    licensing: Vec<String>,
    state: Vec<String>,
    instances: Vec<InstanceSpec>,
    flows: Vec<String>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            scratch: ScratchDir::new(),
            server: vec!["max_header_bytes = 4096".to_owned()],
            licensing: Vec::new(),
            state: Vec::new(),
            instances: Vec::new(),
            flows: Vec::new(),
        }
    }

    /// Adds a `key = value` line to `[server]` (replacing `max_header_bytes` if given).
    pub fn server_option(mut self, line: &str) -> Builder {
        if line.trim_start().starts_with("max_header_bytes") {
            self.server.retain(|l| !l.starts_with("max_header_bytes"));
        }
        self.server.push(line.to_owned());
        self
    }

    /// The scratch directory the config is written into (relative paths in it resolve here).
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// Adds a `key = value` line to `[licensing]`.
    pub fn licensing_option(mut self, line: &str) -> Builder {
        self.licensing.push(line.to_owned());
        self
    }

    /// Adds a `key = value` line to `[state]` (e.g. `redis = "redis://…"`).
    pub fn state_option(mut self, line: &str) -> Builder {
        self.state.push(line.to_owned());
        self
    }

    /// Trusts and signs with `issuer`'s key pair instead of the scratch directory's own:
    /// its `issuer.key` and `issuer.pub` are copied over the scratch ones, so several
    /// sidecars (a fleet) trust one key and accept the same license files.
    pub fn issuer_from(self, issuer: &Issuer) -> Builder {
        for name in ["issuer.key", "issuer.pub"] {
            let to = self.scratch.path().join(name);
            std::fs::copy(issuer.path(name), &to)
                .unwrap_or_else(|err| panic!("copy {name} to {}: {err}", to.display()));
        }
        self
    }

    /// Installs license file text as it is (e.g. one file shared by a fleet), as
    /// `licenses/<name>` before start.
    pub fn license_text(self, name: &str, text: &str) -> Builder {
        self.file(&format!("licenses/{name}"), text);
        self
    }

    /// A named-connector instance of system type `app` forwarding to `base_uri`.
    pub fn instance(self, id: &str, app: &str, base_uri: &str) -> Builder {
        self.instance_with(id, app, base_uri, &[])
    }

    /// Like [`Builder::instance`] with extra `key = value` lines (e.g. `response_timeout`).
    pub fn instance_with(mut self, id: &str, app: &str, base_uri: &str, extra: &[&str]) -> Builder {
        self.instances.push(InstanceSpec {
            id: id.to_owned(),
            app: app.to_owned(),
            base_uri: base_uri.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            dedicated: false,
            flow: None,
        });
        self
    }

    /// An instance with its own dedicated listener (on a loopback port chosen by the OS),
    /// optionally bound to `flow`.
    pub fn dedicated_instance(
        mut self,
        id: &str,
        app: &str,
        base_uri: &str,
        flow: Option<&str>,
    ) -> Builder {
        self.instances.push(InstanceSpec {
            id: id.to_owned(),
            app: app.to_owned(),
            base_uri: base_uri.to_owned(),
            extra: Vec::new(),
            dedicated: true,
            flow: flow.map(str::to_owned),
        });
        self
    }

    /// A flow of kind `flow` between two instances, enabled at start.
    pub fn flow(self, id: &str, systems: [&str; 2]) -> Builder {
        self.flow_with(id, systems, &[])
    }

    /// A flow with extra `key = value` lines (e.g. `enabled = false`).
    pub fn flow_with(mut self, id: &str, systems: [&str; 2], extra: &[&str]) -> Builder {
        let mut text = format!(
            "[[flows]]\nid = \"{id}\"\nkind = \"flow\"\nsystems = [\"{}\", \"{}\"]\n",
            systems[0], systems[1]
        );
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        self.flows.push(text);
        self
    }

    /// Signs `payload` and installs it in `licenses/` before start, as `<id>.lic`.
    pub fn license(self, payload: &Value) -> Builder {
        let text = self.scratch.issuer().sign(payload);
        let name = payload["id"].as_str().unwrap_or("license");
        self.file(&format!("licenses/{name}.lic"), &text);
        self
    }

    /// Writes an arbitrary file into the scratch directory; returns its path.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.scratch.path().join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        path
    }

    /// The `tollgate.toml` this builder writes.
    pub fn config_text(&self) -> String {
        let mut text = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
        for line in &self.server {
            text.push_str(line);
            text.push('\n');
        }
        // Distinct loopback addresses, so port 0 is never "the same address" twice.
        text.push_str(
            "\n[admin]\nlisten = \"127.0.0.2:0\"\ntoken_file = \"admin.token\"\n\n[licensing]\n\
             public_keys = [\"issuer.pub\"]\nlicense_dir = \"licenses\"\n",
        );
        for line in &self.licensing {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("\n[state]\ndir = \"state\"\n");
        for line in &self.state {
            text.push_str(line);
            text.push('\n');
        }
        text.push('\n');
        let mut dedicated = 0;
        for instance in &self.instances {
            text.push_str(&format!(
                "[[instances]]\nid = \"{}\"\nconnector = \"named\"\napp = \"{}\"\nbase_uri = \"{}\"\n",
                instance.id, instance.app, instance.base_uri
            ));
            if instance.dedicated {
                dedicated += 1;
                text.push_str(&format!("listen = \"127.0.0.{}:0\"\n", 2 + dedicated));
            }
            if let Some(flow) = &instance.flow {
                text.push_str(&format!("flow = \"{flow}\"\n"));
            }
            for line in &instance.extra {
                text.push_str(line);
                text.push('\n');
            }
            text.push('\n');
        }
        for flow in &self.flows {
            text.push_str(flow);
            text.push('\n');
        }
        text
    }

    /// The config this builder writes with `toml` appended: raw `[[instances]]` and
    /// `[[flows]]` tables (any connector, kind and environment; see [`toml_instance`] and
    /// [`toml_flow`]).
    fn config_text_with(&self, toml: &str) -> String {
        format!("{}\n{toml}", self.config_text())
    }

    /// Writes the config with `toml` appended as `tollgate.toml` and runs
    /// `tollgate check --config` on it.
    pub fn check_toml(&self, toml: &str) -> Output {
        let config = self.file("tollgate.toml", &self.config_text_with(toml));
        tollgate_output(["check".as_ref(), "--config".as_ref(), config.as_os_str()])
    }

    /// Writes the config and starts `tollgate run`; returns once it is ready.
    pub async fn start(self) -> Tollgate {
        self.start_with(&[], &[]).await
    }

    /// Like [`Builder::start`], with `key = value` lines added to `[state]` (e.g.
    /// `durability = "batched"`) and `env` set on the process (e.g. `TOLLGATE_NOW`, which
    /// only a binary built with the `test-clock` feature reads).
    pub async fn start_with(mut self, state: &[&str], env: &[(&str, &str)]) -> Tollgate {
        self.state
            .extend(state.iter().map(|line| (*line).to_owned()));
        let config_text = self.config_text();
        Tollgate::launch(self.scratch, config_text, env, &[], LogLevel::TestOverride).await
    }

    /// Like [`Builder::start_with`] (with `env`), but returns once the ready file is
    /// written, without waiting for `/readyz` to answer 200 (a sidecar whose store is not
    /// reachable yet).
    pub async fn start_unready(self, env: &[(&str, &str)]) -> Tollgate {
        let config_text = self.config_text();
        Tollgate::launch_unready(self.scratch, config_text, env).await
    }

    /// Writes the config with `toml` appended (see [`toml_instance`] and [`toml_flow`]) and
    /// starts `tollgate run` with `env` set; returns once it is ready.
    pub async fn start_toml(self, toml: &str, env: &[(&str, &str)]) -> Tollgate {
        let config_text = self.config_text_with(toml);
        Tollgate::launch(self.scratch, config_text, env, &[], LogLevel::TestOverride).await
    }

    /// Like [`Builder::start`], with `extra` arguments after `run --config FILE` (e.g.
    /// `["--log-format", "json"]`). `RUST_LOG` is never set, so the log is at the default
    /// level.
    pub async fn start_args(self, extra: &[&str]) -> Tollgate {
        let config_text = self.config_text();
        Tollgate::launch(self.scratch, config_text, &[], extra, LogLevel::Default).await
    }
}

/// An `[[instances]]` table with `connector` and raw `key = value` attribute lines (values
/// already in TOML syntax, e.g. `("host", "\"db.example\"")`, `("port", "2121")`).
pub fn toml_instance(id: &str, connector: &str, attributes: &[(&str, &str)]) -> String {
    let mut text = format!("[[instances]]\nid = \"{id}\"\nconnector = \"{connector}\"\n");
    for (key, value) in attributes {
        text.push_str(&format!("{key} = {value}\n"));
    }
    text.push('\n');
    text
}

/// A `[[flows]]` table of `kind` in `environment` between `systems`, enabled at start or not.
pub fn toml_flow(
    id: &str,
    kind: &str,
    environment: &str,
    systems: &[&str],
    enabled: bool,
) -> String {
    let systems: Vec<String> = systems.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[[flows]]\nid = \"{id}\"\nkind = \"{kind}\"\nenvironment = \"{environment}\"\nsystems = [{}]\nenabled = {enabled}\n\n",
        systems.join(", ")
    )
}
