//! The configuration file (docs/configuration.md): its schema, loading, and whole-file validation.
//!
//! Loading is two steps: serde parses the TOML strictly (unknown keys are errors) and [`parse`]
//! names the key path, the instance or flow and the line of what does not fit; then
//! [`validate`] checks the file as a whole and reports every problem with its key path.
//! Relative paths are resolved against the directory of the config file.

mod duration;
mod parse;
mod pieces;
mod pointer;
#[cfg(test)]
mod proptests;
mod shared_text;
mod validate;

use std::fmt;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::Deserialize;

use crate::intercept::Authority;

pub use parse::{Owner, ParseError, Position};
pub use pointer::{JsonPointer, PointerError};
pub(crate) use validate::template_key;
pub use validate::{redact, Problem};

/// Upper bound on a config file's size: a larger file is a mistake, not a configuration.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// A loaded, validated configuration with every path resolved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The engine-facing listener.
    pub server: Server,
    /// The admin listener.
    pub admin: Admin,
    /// Which licenses are required and where they come from.
    pub licensing: Licensing,
    /// Where durable state lives.
    #[serde(default)]
    pub state: State,
    /// The target system instances.
    #[serde(default)]
    pub instances: Vec<Instance>,
    /// The integration flows between instances.
    #[serde(default)]
    pub flows: Vec<Flow>,
    /// Where each instance and flow is in its list, by id (built when the text is read).
    #[serde(skip)]
    ids: Ids,
}

/// The position of each instance and flow id in [`Config::instances`] and [`Config::flows`]
/// by the id's hash (the first, where a hash repeats), so that look-ups by id take constant
/// time without a second copy of every id.
#[derive(Debug, Clone, Default)]
struct Ids {
    instances: FxHashMap<u64, usize>,
    flows: FxHashMap<u64, usize>,
}

/// An id's key in [`Ids`].
fn id_hash(id: &str) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(id)
}

impl Ids {
    fn of(config: &Config) -> Ids {
        let index = |ids: &mut dyn Iterator<Item = &str>| {
            let mut map = FxHashMap::default();
            for (i, id) in ids.enumerate() {
                map.entry(id_hash(id)).or_insert(i);
            }
            map
        };
        Ids {
            instances: index(&mut config.instances.iter().map(|i| i.id.as_str())),
            flows: index(&mut config.flows.iter().map(|f| f.id.as_str())),
        }
    }
}

/// Looks `id` up through `index` where it covers every entry of `entries` (ids and their
/// hashes are unique, as in every valid config), else by a scan (the first with that id).
fn by_id<'a, T>(
    entries: &'a [T],
    index: &FxHashMap<u64, usize>,
    id: &str,
    id_of: impl Fn(&T) -> &str,
) -> Option<&'a T> {
    if index.len() == entries.len() {
        index
            .get(&id_hash(id))
            .and_then(|&i| entries.get(i))
            .filter(|entry| id_of(entry) == id)
    } else {
        entries.iter().find(|entry| id_of(entry) == id)
    }
}

/// `[server]`: the listener the integration engine talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Address of the engine-facing listener.
    pub listen: SocketAddr,
    /// Header naming the flow of a request; stripped before forwarding.
    #[serde(default = "default_flow_header")]
    pub flow_header: String,
    /// Optional TLS on the engine-facing listener.
    pub tls: Option<Tls>,
    /// Accept absolute-form requests for the authorities of configured instances.
    #[serde(default)]
    pub forward_proxy: bool,
    /// Request heads larger than this get 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Clients that do not send a whole request head within this are cut off.
    #[serde(
        default = "default_header_read_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub header_read_timeout: Duration,
    /// Longest pause in a request body the engine is sending before the request is 408.
    #[serde(
        default = "default_body_read_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub body_read_timeout: Duration,
    /// Open engine connections at most; further ones wait in the listen backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests before closing their connections.
    #[serde(
        default = "default_shutdown_grace",
        deserialize_with = "duration::deserialize"
    )]
    pub shutdown_grace: Duration,
    /// A file holding the password forward-proxy requests must give in
    /// `Proxy-Authorization: Basic` (407 otherwise).
    pub proxy_token_file: Option<PathBuf>,
    /// The password read from `proxy_token_file` when the config was loaded.
    #[serde(skip)]
    pub proxy_token: Option<ProxyToken>,
    /// A request that names no flow goes to the one enabled flow with its instance.
    #[serde(default)]
    pub infer_flow: bool,
    /// Bulk-load bodies (and the answers they are counted from) are read whole up to this
    /// many bytes; a larger bulk request is 413.
    #[serde(default = "default_max_counted_body_bytes")]
    pub max_counted_body_bytes: usize,
    /// The CA whose certificates tunnels (`CONNECT`) to configured instances present: HTTPS
    /// interception for engines behind `HTTPS_PROXY`.
    pub intercept_ca: Option<InterceptCa>,
    /// The CA read from `intercept_ca` when the config was loaded.
    #[serde(skip)]
    pub intercept_authority: Option<Arc<Authority>>,
}

/// `server.intercept_ca`: the interception CA's certificate and private key (PEM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptCa {
    /// PEM CA certificate, which the engine trusts.
    pub cert: PathBuf,
    /// PEM PKCS#8 private key of the CA; a secret.
    pub key: PathBuf,
}

/// The proxy password, kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyToken(pub Box<[u8]>);

impl std::fmt::Debug for ProxyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyToken(***)")
    }
}

/// A certificate chain and private key for a TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[admin]`: the operator's API listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address of the admin listener.
    pub listen: SocketAddr,
    /// File holding the bearer token every `/v1` call must present.
    pub token_file: PathBuf,
}

/// A licensing scheme that flows must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// Points per pair of instances and a monthly transferred-records budget (docs/licenses.md).
    Pair,
    /// Entitlements per environment (docs/licenses.md).
    Subscription,
}

/// `[licensing]`: trusted issuers, the license directory and the rules' parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Licensing {
    /// Schemes a flow must satisfy; with both, a flow needs both.
    #[serde(default = "default_models")]
    pub models: Vec<Model>,
    /// Trusted issuer public keys (PEM, SubjectPublicKeyInfo).
    pub public_keys: Vec<PathBuf>,
    /// Directory whose `*.lic` files are the installed licenses.
    pub license_dir: PathBuf,
    /// IANA time zone in which months begin.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The host identity licenses' `bound_to` must match; detected when absent.
    pub host: Option<Vec<String>>,
    /// Re-enable flows stopped by the records limit when the month turns.
    #[serde(default = "default_true")]
    pub resume_at_reset: bool,
    /// How far the clock may fall behind the latest time seen before licenses stop working.
    #[serde(
        default = "default_max_clock_skew",
        deserialize_with = "duration::deserialize"
    )]
    pub max_clock_skew: Duration,
    /// Whether license decisions refuse (`enforce`) or only mark (`shadow`).
    #[serde(default)]
    pub enforcement: Enforcement,
}

/// What license decisions do to requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// Refuse what the licenses do not allow.
    #[default]
    Enforce,
    /// Forward and count as usual, and mark what would have been refused (a roll-out that
    /// watches before it refuses).
    Shadow,
}

impl Licensing {
    /// Whether license decisions only mark requests (shadow mode) instead of refusing them.
    pub fn is_shadow(&self) -> bool {
        self.enforcement == Enforcement::Shadow
    }
}

/// How eagerly counts reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// A counted load is answered only after its count is on disk.
    #[default]
    Strict,
    /// Counts are flushed every `flush_interval`.
    Batched,
}

/// `[state]`: the durable store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Directory of the embedded store.
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
    /// Strict or batched commits of counts.
    #[serde(default)]
    pub durability: Durability,
    /// Flush period in batched mode.
    #[serde(
        default = "default_flush_interval",
        deserialize_with = "duration::deserialize"
    )]
    pub flush_interval: Duration,
    /// Shared store for a fleet of sidecars (`redis://` or `rediss://`): fleet mode.
    pub redis: Option<String>,
    /// Key namespace the fleet's sidecars share (fleet mode; default `tollgate`).
    pub fleet: Option<String>,
    /// This sidecar's name in the fleet (fleet mode; default the hostname).
    pub node: Option<String>,
    /// The largest block of a month's budget one sidecar holds at once (fleet mode).
    pub lease_max: Option<u64>,
    /// How long a block nobody draws from stays with its sidecar (fleet mode).
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub lease_ttl: Option<Duration>,
    /// The longest any Redis exchange may hold up a request (fleet mode).
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub redis_timeout: Option<Duration>,
    /// A file holding the Redis password, for URLs that do not carry it (fleet mode).
    pub redis_password_file: Option<PathBuf>,
}

/// Fleet mode's settings with their defaults applied (from `[state]` with `redis` set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    /// The Redis URL as written.
    pub url: String,
    /// The key namespace.
    pub fleet: String,
    /// This sidecar's name.
    pub node: String,
    /// The largest block one sidecar holds.
    pub lease_max: u64,
    /// How long an idle block stays with its sidecar.
    pub lease_ttl: Duration,
    /// The bound on every Redis exchange a request waits for.
    pub redis_timeout: Duration,
    /// Where the password is read from, if anywhere.
    pub password_file: Option<PathBuf>,
}

/// A block large enough that a busy sidecar asks Redis about once per thousand loads, small
/// enough that a sidecar lost for good leaves at most that much of a month unused.
pub const DEFAULT_LEASE_MAX: u64 = 1000;
/// Long enough to ride out a GC pause or a slow deploy, short enough that an idle block comes
/// back to the fleet within a minute.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// A Redis round trip on a LAN is well under a millisecond: 250 ms means Redis is in trouble,
/// and an engine waiting longer than that for a refusal is worse than the refusal.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// The namespace of a fleet that does not name one.
pub const DEFAULT_FLEET: &str = "tollgate";

impl State {
    /// Fleet mode's settings, when `redis` is set.
    pub fn fleet(&self) -> Option<FleetSettings> {
        let url = self.redis.clone()?;
        Some(FleetSettings {
            url,
            fleet: self
                .fleet
                .clone()
                .unwrap_or_else(|| DEFAULT_FLEET.to_owned()),
            node: self.node.clone().unwrap_or_else(default_node),
            lease_max: self.lease_max.unwrap_or(DEFAULT_LEASE_MAX),
            lease_ttl: self.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL),
            redis_timeout: self.redis_timeout.unwrap_or(DEFAULT_REDIS_TIMEOUT),
            password_file: self.redis_password_file.clone(),
        })
    }
}

/// The node name of a sidecar that does not set one: its hostname.
fn default_node() -> String {
    let name: String = gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "node".to_owned()
    } else {
        name
    }
}

impl Default for State {
    fn default() -> Self {
        State {
            dir: default_state_dir(),
            durability: Durability::default(),
            flush_interval: default_flush_interval(),
            redis: None,
            fleet: None,
            node: None,
            lease_max: None,
            lease_ttl: None,
            redis_timeout: None,
            redis_password_file: None,
        }
    }
}

/// How tollgate talks to, and identifies, a kind of target system (docs/licenses.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Connector {
    /// A named application connector (`app`).
    Named,
    /// Universal HTTP connector (`base_uri`).
    Http,
    /// Universal REST connector (`base_uri`).
    Rest,
    /// Universal GraphQL connector (`base_uri`).
    Graphql,
    /// A relational database (`engine`, `host`).
    Rdbms,
    /// Snowflake (`account`).
    Snowflake,
    /// BigQuery (`client_email`).
    Bigquery,
    /// Redshift (`cluster`, `region`).
    Redshift,
    /// DynamoDB (`access_key_id`).
    Dynamodb,
    /// FTP (`host`, `port` default 21).
    Ftp,
    /// SFTP (`host`, `port` default 22).
    Sftp,
    /// FTPS (`host`, `port` default 990).
    Ftps,
    /// AS2 (`host`, `port` default 443).
    As2,
    /// A wrapper around custom code: always its own endpoint.
    Wrapper,
    /// An inbound webhook: never an endpoint.
    Webhook,
}

impl Connector {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Connector::Named => "named",
            Connector::Http => "http",
            Connector::Rest => "rest",
            Connector::Graphql => "graphql",
            Connector::Rdbms => "rdbms",
            Connector::Snowflake => "snowflake",
            Connector::Bigquery => "bigquery",
            Connector::Redshift => "redshift",
            Connector::Dynamodb => "dynamodb",
            Connector::Ftp => "ftp",
            Connector::Sftp => "sftp",
            Connector::Ftps => "ftps",
            Connector::As2 => "as2",
            Connector::Wrapper => "wrapper",
            Connector::Webhook => "webhook",
        }
    }
}

/// Production and sandbox are licensed separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Environment {
    /// Live systems.
    #[default]
    Production,
    /// Test systems.
    Sandbox,
}

impl Environment {
    /// Both environments, in display order.
    pub const ALL: [Environment; 2] = [Environment::Production, Environment::Sandbox];

    /// The name used in the config file and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Sandbox => "sandbox",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[instances]]`: one target system instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// Unique id; also the first path segment on the main listener.
    pub id: String,
    /// Connector kind, which decides the canonical endpoint attributes.
    pub connector: Connector,
    /// Application name (named connectors; any connector may set it to name its system type).
    pub app: Option<String>,
    /// Where proxied requests go; the endpoint attribute of HTTP-style connectors.
    pub base_uri: Option<String>,
    /// Database engine (rdbms).
    pub engine: Option<String>,
    /// Server name or IP (rdbms, ftp, sftp, ftps, as2).
    pub host: Option<String>,
    /// Server port (ftp, sftp, ftps, as2); defaults per connector.
    pub port: Option<u16>,
    /// Account name (snowflake).
    pub account: Option<String>,
    /// Service account e-mail (bigquery).
    pub client_email: Option<String>,
    /// Cluster name (redshift).
    pub cluster: Option<String>,
    /// Region (redshift).
    pub region: Option<String>,
    /// Access key id (dynamodb).
    pub access_key_id: Option<String>,
    /// Environment whose entitlements this instance uses.
    #[serde(default)]
    pub environment: Environment,
    /// Upstream connect timeout.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// Upstream response-head timeout.
    #[serde(
        default = "default_response_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub response_timeout: Duration,
    /// Extra trusted CA certificates (PEM) for this upstream.
    pub ca_file: Option<PathBuf>,
    /// Optional dedicated listener that forwards everything to this instance.
    pub listen: Option<SocketAddr>,
    /// Flow bound to the dedicated listener.
    pub flow: Option<String>,
    /// On-premise agent this instance is reached through.
    pub agent: Option<String>,
    /// Whether this instance is a trading partner (FTP/SFTP/FTPS/AS2 only).
    #[serde(default)]
    pub trading_partner: bool,
    /// Match entity patterns without regard to case (targets such as IIS that ignore it).
    #[serde(default)]
    pub paths_case_insensitive: bool,
}

/// What a flow is, which decides how it is licensed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FlowKind {
    /// A regular integration between two instances.
    #[default]
    Flow,
    /// A data-loader job: never counts as an active flow.
    DataLoader,
    /// A packaged integration app: counts as a flow only under platform pricing.
    IntegrationApp,
}

impl FlowKind {
    /// The name used in the config file and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowKind::Flow => "flow",
            FlowKind::DataLoader => "data-loader",
            FlowKind::IntegrationApp => "integration-app",
        }
    }
}

/// `[[flows]]`: one integration flow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Unique id, sent by the engine in the flow header.
    pub id: String,
    /// Kind of flow.
    #[serde(default)]
    pub kind: FlowKind,
    /// Environment whose entitlements this flow uses.
    #[serde(default)]
    pub environment: Environment,
    /// The instances the flow connects.
    pub systems: Vec<String>,
    /// Initial state; runtime changes persist in the store.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Request patterns that classify loads.
    #[serde(default)]
    pub entities: Vec<Entity>,
}

/// Whether a matched load is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A main-entity load: counted toward transferred records.
    Main,
    /// A child record (comment, attachment): never counted.
    Child,
}

/// `[[flows.entities]]`: a request pattern on one of the flow's instances.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    /// Instance the pattern applies to.
    #[serde(deserialize_with = "shared_text::deserialize")]
    pub instance: Arc<str>,
    /// Whether matching loads are counted.
    pub role: Role,
    /// HTTP method of the load.
    #[serde(deserialize_with = "shared_text::deserialize")]
    pub method: Arc<str>,
    /// Path template relative to the instance's base URI.
    #[serde(deserialize_with = "shared_text::deserialize")]
    pub path: Arc<str>,
    /// A bulk load: where the array of records is in the request body; one record is
    /// reserved per element. (Boxed, like the two below: most entities are not bulk loads,
    /// and a large config holds tens of thousands of entities.)
    pub records: Option<Box<JsonPointer>>,
    /// Where the array of created records is in a 2xx answer (bulk loads): what is counted.
    pub accepted: Option<Box<JsonPointer>>,
    /// The flag inside each accepted element that must be `true` for it to count.
    pub accepted_if: Option<Box<JsonPointer>>,
}

impl Entity {
    /// The entity's bulk-load settings, when it names where its records are.
    pub fn bulk(&self) -> Option<Bulk> {
        Some(Bulk {
            records: self.records.as_deref()?.clone(),
            accepted: self.accepted.as_deref().cloned(),
            accepted_if: self.accepted_if.as_deref().cloned(),
        })
    }
}

/// Where a bulk load's records are: in the request body, and in the target's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bulk {
    /// The array of records in the request body.
    pub records: JsonPointer,
    /// The array of created records in a 2xx answer (absent: every reserved record counts).
    pub accepted: Option<JsonPointer>,
    /// The flag in each accepted element that must be `true` for it to count.
    pub accepted_if: Option<JsonPointer>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the configuration: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than any configuration should be.
    #[error("{file}: the file is {size} bytes, over the {MAX_CONFIG_BYTES}-byte limit")]
    TooLarge {
        /// The config file.
        file: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The file is not TOML of the expected shape.
    #[error("{file}: {source}")]
    Parse {
        /// The config file.
        file: PathBuf,
        /// Where and what, with the key path when the text is TOML.
        source: Box<ParseError>,
    },
    /// The file parsed but is inconsistent; every problem is listed.
    #[error("{file}: {} problem{} in the configuration:\n{}", problems.len(), if problems.len() == 1 { "" } else { "s" }, ProblemList(problems))]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// Every problem found, each with its key path.
        problems: Vec<Problem>,
    },
}

/// Displays problems one per line, indented.
struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {problem}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads, parses and validates a config file; relative paths become relative to its directory.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let read_err = |source| ConfigError::Read {
            file: file.to_owned(),
            source,
        };
        let size = std::fs::metadata(file).map_err(read_err)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                file: file.to_owned(),
                size,
            });
        }
        let text = std::fs::read_to_string(file).map_err(read_err)?;
        let base = file.parent().unwrap_or_else(|| Path::new("."));
        Config::from_toml(&text, base).map_err(|err| match err {
            LoadError::Parse(source) => ConfigError::Parse {
                file: file.to_owned(),
                source: Box::new(source),
            },
            LoadError::Invalid(problems) => ConfigError::Invalid {
                file: file.to_owned(),
                problems,
            },
        })
    }

    /// Parses and validates config text whose relative paths are relative to `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, LoadError> {
        let sharing = shared_text::Sharing::begin();
        let mut config: Config = match pieces::read(text) {
            Some(config) => config,
            None => parse::parse(text).map_err(LoadError::Parse)?,
        };
        drop(sharing);
        config.ids = Ids::of(&config);
        config.resolve_paths(base);
        let mut problems = validate::validate(&config);
        if let Some(ca) = &config.server.intercept_ca {
            match Authority::load(&ca.cert, &ca.key) {
                Ok(authority) => config.server.intercept_authority = Some(Arc::new(authority)),
                Err(err) => problems.push(Problem {
                    path: err.file().key_path().to_owned(),
                    message: err.to_string(),
                }),
            }
        }
        if problems.is_empty() {
            // Validation read it already: a file that went away since is a problem like it.
            if let Some(file) = &config.server.proxy_token_file {
                let token = std::fs::read_to_string(file).map_err(|err| {
                    LoadError::Invalid(vec![Problem {
                        path: "server.proxy_token_file".to_owned(),
                        message: format!("cannot read {}: {err}", file.display()),
                    }])
                })?;
                config.server.proxy_token = Some(ProxyToken(token.trim().as_bytes().into()));
            }
            Ok(config)
        } else {
            Err(LoadError::Invalid(problems))
        }
    }

    /// The same settings without instances or flows.
    pub fn bare(&self) -> Config {
        Config {
            server: self.server.clone(),
            admin: self.admin.clone(),
            licensing: self.licensing.clone(),
            state: self.state.clone(),
            instances: Vec::new(),
            flows: Vec::new(),
            ids: Ids::default(),
        }
    }

    /// The flow with this id.
    pub fn flow(&self, id: &str) -> Option<&Flow> {
        by_id(&self.flows, &self.ids.flows, id, |flow| &flow.id)
    }

    /// The instance with this id.
    pub fn instance(&self, id: &str) -> Option<&Instance> {
        by_id(&self.instances, &self.ids.instances, id, |instance| {
            &instance.id
        })
    }

    /// Whether flows must hold a license of this scheme.
    pub fn requires(&self, model: Model) -> bool {
        self.licensing.models.contains(&model)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        if let Some(tls) = &mut self.server.tls {
            join(&mut tls.cert);
            join(&mut tls.key);
        }
        join(&mut self.admin.token_file);
        self.licensing.public_keys.iter_mut().for_each(join);
        join(&mut self.licensing.license_dir);
        join(&mut self.state.dir);
        if let Some(password) = &mut self.state.redis_password_file {
            join(password);
        }
        if let Some(token) = &mut self.server.proxy_token_file {
            join(token);
        }
        if let Some(ca) = &mut self.server.intercept_ca {
            join(&mut ca.cert);
            join(&mut ca.key);
        }
        for instance in &mut self.instances {
            if let Some(ca) = &mut instance.ca_file {
                join(ca);
            }
        }
    }
}

/// Why config text could not be loaded, before a file name is attached.
#[derive(Debug)]
pub enum LoadError {
    /// Not TOML of the expected shape.
    Parse(ParseError),
    /// Inconsistent; every problem is listed.
    Invalid(Vec<Problem>),
}

fn default_flow_header() -> String {
    "Tollgate-Flow".to_owned()
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
/// 16 MiB: a Salesforce collection of 200 records or a Jira bulk of 50 issues is far below it,
/// and a sidecar reading a few such bodies at once stays small.
pub const DEFAULT_MAX_COUNTED_BODY_BYTES: usize = 16 * 1024 * 1024;
fn default_max_counted_body_bytes() -> usize {
    DEFAULT_MAX_COUNTED_BODY_BYTES
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_models() -> Vec<Model> {
    vec![Model::Pair]
}
fn default_timezone() -> String {
    "UTC".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_max_clock_skew() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}
fn default_flush_interval() -> Duration {
    Duration::from_millis(200)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_response_timeout() -> Duration {
    Duration::from_secs(60)
}

/// A scratch directory with an issuer key and an admin token, for tests that load configs.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The sections every test config needs, pointing at files [`load`] creates.
    pub const HEADER: &str = r#"
[server]
listen = "127.0.0.1:8080"
[admin]
listen = "127.0.0.1:9901"
token_file = "admin.token"
[licensing]
public_keys = ["issuer.pub"]
license_dir = "licenses"
"#;

    /// A fresh directory holding the issuer key and admin token `HEADER` points at.
    pub fn scratch() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let (_, public) = crate::license::generate_keypair();
        std::fs::write(dir.path().join("issuer.pub"), public).unwrap();
        std::fs::write(dir.path().join("admin.token"), "secret\n").unwrap();
        dir
    }

    /// Loads whole config text from a fresh [`scratch`] directory.
    pub fn load_text(text: &str) -> Result<Config, LoadError> {
        Config::from_toml(text, scratch().path())
    }

    /// Loads `HEADER` followed by `body` from a fresh [`scratch`] directory.
    pub fn load(body: &str) -> Result<Config, LoadError> {
        load_text(&format!("{HEADER}{body}"))
    }

    /// The problems of a load expected to be invalid, as `path: message` lines.
    pub fn expect_problems(loaded: Result<Config, LoadError>) -> Vec<String> {
        match loaded {
            Err(LoadError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
            Err(LoadError::Parse(error)) => {
                panic!("expected validation problems, got a parse error: {error}")
            }
            Ok(_) => panic!("expected validation problems, the config is valid"),
        }
    }

    /// The problems of `HEADER` followed by `body`, expected to be invalid.
    pub fn problems(body: &str) -> Vec<String> {
        expect_problems(load(body))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{load, problems, HEADER};
    use super::*;

    const TWO_SYSTEMS: &str = r#"
[[instances]]
id = "servicenow-1"
connector = "named"
app = "servicenow"
base_uri = "https://sn1.example"
[[instances]]
id = "jira-1"
connector = "named"
app = "jira"
base_uri = "https://jira1.example"
"#;

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let config = load(TWO_SYSTEMS).unwrap();
        assert_eq!(config.server.flow_header, "Tollgate-Flow");
        assert_eq!(config.server.max_header_bytes, 65536);
        assert_eq!(config.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.server.body_read_timeout, Duration::from_secs(30));
        assert_eq!(config.server.max_connections, 10_000);
        assert_eq!(config.licensing.models, vec![Model::Pair]);
        assert_eq!(config.licensing.timezone, "UTC");
        assert!(config.licensing.resume_at_reset);
        assert_eq!(config.licensing.max_clock_skew, Duration::from_secs(86_400));
        assert_eq!(config.state.durability, Durability::Strict);
        assert_eq!(config.state.flush_interval, Duration::from_millis(200));
        assert_eq!(config.instances[0].environment, Environment::Production);
        assert_eq!(config.instances[0].connect_timeout, Duration::from_secs(5));
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let config = load(TWO_SYSTEMS).unwrap();
        assert!(config.admin.token_file.is_absolute());
        assert!(config.licensing.license_dir.ends_with("licenses"));
        assert_eq!(
            config.licensing.license_dir.parent(),
            config.admin.token_file.parent()
        );
        assert_eq!(config.state.dir.parent(), config.admin.token_file.parent());
    }

    #[test]
    fn bad_durations_name_the_accepted_forms() {
        let Err(LoadError::Parse(error)) = load("[state]\nflush_interval = \"fast\"\n") else {
            panic!("expected a parse error")
        };
        let message = error.to_string();
        assert!(message.contains("\"200ms\""), "{message}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let found = problems(&format!(
            r#"{TWO_SYSTEMS}
[[instances]]
id = "jira-1"
connector = "named"
[[instances]]
id = "db"
connector = "rdbms"
engine = "mysql"
trading_partner = true
[[flows]]
id = "incidents"
systems = ["servicenow-1", "jira-9"]
[[flows.entities]]
instance = "db"
role = "main"
method = "post"
path = "rest/api/2/issue"
[[flows]]
id = "incidents"
systems = ["servicenow-1"]
"#
        ));
        let expected = [
            "instances[2].id: duplicate instance id \"jira-1\" (first at instances[1])",
            "instances[2].app: is required for connector \"named\"",
            "instances[3].host: is required for connector \"rdbms\"",
            "instances[3].trading_partner: only FTP, SFTP, FTPS and AS2 instances can be trading partners, not \"rdbms\"",
            "flows[0].systems[1]: unknown instance \"jira-9\"",
            "flows[0].entities[0].instance: instance \"db\" is not one of the flow's systems",
            "flows[0].entities[0].method: \"post\" is not an HTTP method in upper case (e.g. \"POST\")",
            "flows[0].entities[0].path: \"rest/api/2/issue\" must start with '/'",
            "flows[1].id: duplicate flow id \"incidents\" (first at flows[0])",
            "flows[1].systems: a flow of kind \"flow\" needs exactly two systems, not 1",
        ];
        for line in expected {
            assert!(
                found.iter().any(|f| f == line),
                "missing {line:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn fleet_mode_applies_its_defaults_and_names_every_bad_key() {
        let config = load(&format!(
            "{TWO_SYSTEMS}\n[state]\nredis = \"redis://127.0.0.1:6379/0\"\nnode = \"a\"\n"
        ))
        .unwrap();
        let fleet = config.state.fleet().unwrap();
        assert_eq!(
            (fleet.fleet.as_str(), fleet.node.as_str()),
            ("tollgate", "a")
        );
        assert_eq!(fleet.lease_max, DEFAULT_LEASE_MAX);
        assert_eq!(fleet.lease_ttl, DEFAULT_LEASE_TTL);
        assert_eq!(fleet.redis_timeout, DEFAULT_REDIS_TIMEOUT);
        let found = problems(
            r#"
[state]
redis = "redis://:secret@127.0.0.1/0"
fleet = "acme{prod}"
lease_max = 0
lease_ttl = "1ms"
redis_timeout = "0s"
redis_password_file = "missing.pass"
"#,
        );
        for key in [
            "state.fleet",
            "state.lease_max",
            "state.lease_ttl",
            "state.redis_timeout",
            "state.redis_password_file",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(&format!("{key}: "))),
                "{key} in {found:?}"
            );
        }
        assert!(!found.iter().any(|p| p.contains("secret")), "{found:?}");
        let found = problems("[state]\nnode = \"a\"\nlease_max = 5\n");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("state.node: applies to fleet mode only")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("state.lease_max: applies to fleet mode only")),
            "{found:?}"
        );
    }

    #[test]
    fn redis_passwords_are_redacted() {
        assert_eq!(validate::redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(
            validate::redact("rediss://user:pw@h/0"),
            "rediss://user:***@h/0"
        );
        assert_eq!(validate::redact("redis://token@h"), "redis://***@h");
        assert_eq!(validate::redact("redis://h:6379/0"), "redis://h:6379/0");
    }

    #[test]
    fn licensing_and_files_are_checked() {
        let found = problems(
            r#"
[state]
redis = "http://127.0.0.1/0"
"#,
        );
        assert!(
            found.iter().any(|p| p.starts_with("state.redis: ")),
            "{found:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        // A directory without the key and token files, and a bad time zone.
        let text = testing::HEADER.replace(
            "license_dir = \"licenses\"",
            "license_dir = \"licenses\"\ntimezone = \"Mars/Olympus\"",
        );
        let Err(LoadError::Invalid(found)) = Config::from_toml(&text, dir.path()) else {
            panic!("expected problems")
        };
        let found: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("admin.token_file: cannot read ")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("licensing.public_keys[0]: ")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("licensing.timezone: \"Mars/Olympus\" is not an IANA")),
            "{found:?}"
        );
    }

    #[test]
    fn templates_and_uris_are_checked() {
        let found = problems(&format!(
            r#"{TWO_SYSTEMS}
[[instances]]
id = "api"
connector = "http"
base_uri = "ftp://api.example/?x=1"
[[flows]]
id = "f"
systems = ["servicenow-1", "jira-1"]
[[flows.entities]]
instance = "jira-1"
role = "main"
method = "POST"
path = "/rest/{{*rest}}/issue"
[[flows.entities]]
instance = "jira-1"
role = "main"
method = "POST"
path = "/issue/{{key}}"
[[flows.entities]]
instance = "jira-1"
role = "child"
method = "POST"
path = "/issue/{{id}}"
[[flows.entities]]
instance = "jira-1"
role = "child"
method = "POST"
path = "/issue/../x"
[[flows.entities]]
instance = "jira-1"
role = "main"
method = "PUT"
path = "/rest//issue"
[[flows.entities]]
instance = "jira-1"
role = "main"
method = "PATCH"
path = "/rest/issue;v=2"
[[flows.entities]]
instance = "jira-1"
role = "main"
method = "DELETE"
path = "/rest/issue/"
"#
        ));
        assert!(
            found.iter().any(|p| p.starts_with(
                "instances[2].base_uri: \"ftp://api.example/?x=1\" must start with http"
            )),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("flows[0].entities[0].path: ")
                    && p.contains("must be the last segment")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("flows[0].entities[2].path: ")
                    && p.contains("cannot be told apart")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("flows[0].entities[3].path: ") && p.contains("not allowed")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("flows[0].entities[4].path: ") && p.contains("'//'")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("flows[0].entities[5].path: ") && p.contains("';'")),
            "{found:?}"
        );
        // A trailing '/' is allowed (it means nothing to classification).
        assert_eq!(found.len(), 6, "{found:#?}");
    }

    #[test]
    fn a_pattern_with_and_without_a_trailing_slash_is_one_pattern_that_counts_one_way() {
        let found = problems(&format!(
            r#"{TWO_SYSTEMS}
[[flows]]
id = "f"
systems = ["servicenow-1", "jira-1"]
[[flows.entities]]
instance = "jira-1"
role = "main"
method = "POST"
path = "/issue/bulk"
records = "/issueUpdates"
[[flows]]
id = "g"
systems = ["servicenow-1", "jira-1"]
[[flows.entities]]
instance = "jira-1"
role = "main"
method = "POST"
path = "/issue/bulk/"
"#
        ));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("flows[1].entities[0].records: ")
                    && p.contains("counted differently")),
            "{found:#?}"
        );
        assert_eq!(found.len(), 1, "{found:#?}");
    }

    #[test]
    fn flow_kinds_environments_and_listeners_are_checked() {
        let found = problems(&format!(
            r#"{TWO_SYSTEMS}
[[instances]]
id = "sb"
connector = "named"
app = "jira"
environment = "sandbox"
base_uri = "https://sb.example"
listen = "127.0.0.1:8080"
flow = "loader"
[[flows]]
id = "loader"
kind = "data-loader"
systems = ["jira-1"]
[[flows]]
id = "app"
kind = "integration-app"
systems = ["servicenow-1", "sb"]
"#
        ));
        let expected = [
            "instances[2].listen: listen address 127.0.0.1:8080 is already used by server.listen",
            "instances[2].flow: flow \"loader\" does not include instance \"sb\"",
            "flows[1].systems[1]: instance \"sb\" is in sandbox but the flow is in production",
        ];
        for line in expected {
            assert!(
                found.iter().any(|f| f == line),
                "missing {line:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    /// `HEADER` with extra `[server]` keys, loaded from a fresh scratch directory.
    fn load_server(extra: &str) -> Result<Config, LoadError> {
        testing::load_text(&testing::HEADER.replacen(
            "listen = \"127.0.0.1:8080\"\n",
            &format!("listen = \"127.0.0.1:8080\"\n{extra}\n"),
            1,
        ))
    }

    /// The problems of `HEADER` with extra `[server]` keys, as `path: message` lines.
    fn server_problems(extra: &str) -> Vec<String> {
        testing::expect_problems(load_server(extra))
    }

    #[test]
    fn an_oversized_file_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tollgate.toml");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(MAX_CONFIG_BYTES + 1)
            .unwrap();
        let err = Config::load(&file).unwrap_err();
        assert!(
            matches!(err, ConfigError::TooLarge { size, .. } if size == MAX_CONFIG_BYTES + 1),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{}: the file is 16777217 bytes, over the 16777216-byte limit",
                file.display()
            )
        );
    }

    #[test]
    fn max_connections_must_allow_at_least_one_connection() {
        assert_eq!(
            server_problems("max_connections = 0"),
            ["server.max_connections: must be at least 1"]
        );
        let config = load_server("max_connections = 1").unwrap();
        assert_eq!(config.server.max_connections, 1);
        let Err(LoadError::Parse(error)) = load_server("max_connections = -1") else {
            panic!("a negative count is not a usize")
        };
        assert_eq!(error.path.as_deref(), Some("server.max_connections"));
    }

    #[test]
    fn body_read_timeout_must_be_longer_than_zero() {
        assert_eq!(
            server_problems("body_read_timeout = \"0s\""),
            ["server.body_read_timeout: must be longer than zero"]
        );
        let config = load_server("body_read_timeout = \"1ms\"").unwrap();
        assert_eq!(config.server.body_read_timeout, Duration::from_millis(1));
        let Err(LoadError::Parse(error)) = load_server("body_read_timeout = 30") else {
            panic!("a bare number is not a duration")
        };
        assert_eq!(error.path.as_deref(), Some("server.body_read_timeout"));
    }

    /// A flow between a named instance without `base_uri` and `jira-1`.
    const NAMED_WITHOUT_BASE_URI: &str = r#"
[[instances]]
id = "crm"
connector = "named"
app = "salesforce"
[[flows]]
id = "leads"
systems = ["crm", "jira-1"]
"#;

    #[test]
    fn a_named_instance_a_flow_uses_needs_a_base_uri() {
        assert_eq!(
            problems(&format!("{TWO_SYSTEMS}{NAMED_WITHOUT_BASE_URI}")),
            [
                r#"instances[2].base_uri: is required because flow "leads" sends requests to this instance through tollgate"#
            ]
        );
        let two_flows = format!(
            "{TWO_SYSTEMS}{NAMED_WITHOUT_BASE_URI}[[flows]]\nid = \"contacts\"\nsystems = [\"servicenow-1\", \"crm\"]\n"
        );
        assert_eq!(
            problems(&two_flows),
            [
                r#"instances[2].base_uri: is required because flows "leads", "contacts" send requests to this instance through tollgate"#
            ]
        );
    }

    #[test]
    fn a_flow_listed_twice_is_named_once_among_those_needing_a_base_uri() {
        let again = format!(
            "{TWO_SYSTEMS}{NAMED_WITHOUT_BASE_URI}[[flows]]\nid = \"leads\"\nsystems = [\"crm\", \"servicenow-1\"]\n"
        );
        assert_eq!(
            problems(&again),
            [
                r#"instances[2].base_uri: is required because flow "leads" sends requests to this instance through tollgate"#,
                r#"flows[1].id: duplicate flow id "leads" (first at flows[0])"#,
            ]
        );
    }

    #[test]
    fn instances_and_flows_are_found_by_id_and_bare_keeps_only_the_settings() {
        let flows = "[[flows]]\nid = \"a\"\nsystems = [\"servicenow-1\", \"jira-1\"]\n\
                     [[flows]]\nid = \"b\"\nsystems = [\"jira-1\", \"servicenow-1\"]\n";
        let config = load(&format!("{TWO_SYSTEMS}{flows}")).unwrap();
        assert_eq!(
            config.instance("jira-1").map(|i| i.app.as_deref()),
            Some(Some("jira"))
        );
        assert_eq!(
            config.flow("b").map(|f| f.systems[0].as_str()),
            Some("jira-1")
        );
        assert!(config.instance("JIRA-1").is_none() && config.flow("c").is_none());
        let bare = config.bare();
        assert!(bare.instances.is_empty() && bare.flows.is_empty());
        assert!(bare.instance("jira-1").is_none() && bare.flow("a").is_none());
        assert_eq!(bare.server.flow_header, config.server.flow_header);
    }

    #[test]
    fn flows_with_the_same_patterns_are_each_checked_for_patterns_a_router_cannot_tell_apart() {
        let flow = |id: &str, systems: [&str; 2], second: &str| {
            format!(
                "[[flows]]\nid = \"{id}\"\nsystems = [\"{}\", \"{}\"]\n\
                 [[flows.entities]]\ninstance = \"{}\"\nrole = \"main\"\nmethod = \"POST\"\npath = \"/issue/{{key}}\"\n\
                 [[flows.entities]]\ninstance = \"{}\"\nrole = \"child\"\nmethod = \"POST\"\npath = \"{second}\"\n",
                systems[0], systems[1], systems[1], systems[1]
            )
        };
        let (sn, jira) = ("servicenow-1", "jira-1");
        let found = problems(&format!(
            "{TWO_SYSTEMS}{}{}{}{}",
            flow("a", [sn, jira], "/issue/{key}/comment"),
            flow("b", [jira, sn], "/issue/{key}/comment"),
            flow("c", [sn, jira], "/issue/{id}"),
            flow("d", [sn, jira], "/issue/{id}"),
        ));
        assert_eq!(found.len(), 2, "{found:#?}");
        for (problem, flow) in found.iter().zip([2, 3]) {
            assert!(
                problem.starts_with(&format!("flows[{flow}].entities[1].path: "))
                    && problem.contains("cannot be told apart"),
                "{found:#?}"
            );
        }
    }

    #[test]
    fn with_a_repeated_id_the_first_is_found() {
        let text = format!(
            "{HEADER}{TWO_SYSTEMS}[[instances]]\nid = \"jira-1\"\nconnector = \"named\"\napp = \"other\"\n"
        );
        let config: Config = parse::parse(&text).unwrap();
        let config = Config {
            ids: Ids::of(&config),
            ..config
        };
        assert_eq!(
            config.instance("jira-1").map(|i| i.app.as_deref()),
            Some(Some("jira"))
        );
    }

    #[test]
    fn a_named_instance_no_flow_uses_needs_no_base_uri() {
        let unused = NAMED_WITHOUT_BASE_URI
            .replace("[\"crm\", \"jira-1\"]", "[\"servicenow-1\", \"jira-1\"]");
        load(&format!("{TWO_SYSTEMS}{unused}")).unwrap();
    }

    #[test]
    fn an_http_style_instance_without_base_uri_is_reported_once() {
        for connector in ["http", "rest", "graphql"] {
            let body = format!(
                "{TWO_SYSTEMS}[[instances]]\nid = \"api\"\nconnector = \"{connector}\"\n[[flows]]\nid = \"f\"\nsystems = [\"api\", \"jira-1\"]\n"
            );
            assert_eq!(
                problems(&body),
                [format!(
                    "instances[2].base_uri: is required for connector \"{connector}\""
                )]
            );
        }
    }

    #[test]
    fn instances_tollgate_does_not_carry_need_no_base_uri() {
        let instances = [
            ("rdbms", "engine = \"mysql\"\nhost = \"db.example\""),
            ("snowflake", "account = \"acme\""),
            ("bigquery", "client_email = \"loader@acme.example\""),
            ("redshift", "cluster = \"c1\"\nregion = \"eu-west-1\""),
            ("dynamodb", "access_key_id = \"AKIA\""),
            ("ftp", "host = \"ftp.example\""),
            ("sftp", "host = \"sftp.example\""),
            ("ftps", "host = \"ftps.example\""),
            ("as2", "host = \"as2.example\""),
            ("wrapper", ""),
            ("webhook", ""),
        ];
        let mut body = TWO_SYSTEMS.to_owned();
        for (connector, attributes) in instances {
            body.push_str(&format!(
                "[[instances]]\nid = \"{connector}-1\"\nconnector = \"{connector}\"\n{attributes}\n\
                 [[flows]]\nid = \"to-{connector}\"\nsystems = [\"{connector}-1\", \"jira-1\"]\n"
            ));
        }
        let config = load(&body).unwrap();
        assert_eq!(config.flows.len(), instances.len());
    }
}
