//! Whole-file validation: every problem in a parsed config, each with its key path.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use rustc_hash::{FxHashMap, FxHashSet};

use super::{Config, Connector, FlowKind, Instance};

/// One thing wrong with a configuration, at a key path such as `flows[2].systems[1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the file, as a TOML key path.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects problems as validation walks the file.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Smallest `max_header_bytes` that can hold a realistic request head.
const MIN_HEADER_BYTES: usize = 1024;

/// Checks a parsed config as a whole; an empty list means it is valid.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut problems = Problems::default();
    server(config, &mut problems);
    licensing(config, &mut problems);
    state(config, &mut problems);
    listeners(config, &mut problems);
    let instances = instances(config, &mut problems);
    flows(config, &instances, &mut problems);
    bulk_agreement(config, &mut problems);
    problems.0
}

fn server(config: &Config, problems: &mut Problems) {
    let server = &config.server;
    if http::HeaderName::from_bytes(server.flow_header.as_bytes()).is_err() {
        problems.add(
            "server.flow_header",
            format!("{:?} is not a valid HTTP header name", server.flow_header),
        );
    }
    if server.max_header_bytes < MIN_HEADER_BYTES {
        problems.add(
            "server.max_header_bytes",
            format!("must be at least {MIN_HEADER_BYTES}"),
        );
    }
    if server.header_read_timeout.is_zero() {
        problems.add("server.header_read_timeout", "must be longer than zero");
    }
    if server.body_read_timeout.is_zero() {
        problems.add("server.body_read_timeout", "must be longer than zero");
    }
    if server.max_connections == 0 {
        problems.add("server.max_connections", "must be at least 1");
    }
    if server.max_counted_body_bytes == 0 {
        problems.add("server.max_counted_body_bytes", "must be at least 1");
    }
    if let Some(tls) = &server.tls {
        readable_file("server.tls.cert", &tls.cert, problems);
        readable_file("server.tls.key", &tls.key, problems);
    }
    if let Some(file) = &server.proxy_token_file {
        match std::fs::read_to_string(file) {
            Ok(token) if token.trim().is_empty() => problems.add(
                "server.proxy_token_file",
                format!("{} is empty", file.display()),
            ),
            Ok(_) => {}
            Err(err) => problems.add(
                "server.proxy_token_file",
                format!("cannot read {}: {err}", file.display()),
            ),
        }
    }
    if server.intercept_ca.is_some() && !server.forward_proxy {
        problems.add(
            "server.intercept_ca",
            "needs server.forward_proxy = true: tunnels are opened only for engines that use tollgate as their HTTPS_PROXY",
        );
    }
    match std::fs::read_to_string(&config.admin.token_file) {
        Ok(token) if token.trim().is_empty() => problems.add(
            "admin.token_file",
            format!("{} is empty", config.admin.token_file.display()),
        ),
        Ok(_) => {}
        Err(err) => problems.add(
            "admin.token_file",
            format!("cannot read {}: {err}", config.admin.token_file.display()),
        ),
    }
}

fn licensing(config: &Config, problems: &mut Problems) {
    let licensing = &config.licensing;
    if licensing.models.is_empty() {
        problems.add(
            "licensing.models",
            "must name at least one of \"pair\", \"subscription\"",
        );
    }
    let mut seen = HashSet::new();
    for model in &licensing.models {
        if !seen.insert(model) {
            problems.add("licensing.models", format!("{model:?} is listed twice"));
        }
    }
    if licensing.public_keys.is_empty() {
        problems.add(
            "licensing.public_keys",
            "must name at least one trusted issuer key",
        );
    }
    for (i, key) in licensing.public_keys.iter().enumerate() {
        if let Err(err) = crate::license::read_verifying_key(key) {
            problems.add(
                format!("licensing.public_keys[{i}]"),
                format!("{}: {err}", key.display()),
            );
        }
    }
    if licensing.license_dir.exists() && !licensing.license_dir.is_dir() {
        problems.add(
            "licensing.license_dir",
            format!("{} is not a directory", licensing.license_dir.display()),
        );
    }
    if licensing.timezone.parse::<chrono_tz::Tz>().is_err() {
        problems.add(
            "licensing.timezone",
            format!(
                "{:?} is not an IANA time zone name (e.g. \"UTC\", \"Europe/Berlin\")",
                licensing.timezone
            ),
        );
    }
    if let Some(hosts) = &licensing.host {
        if hosts.is_empty() {
            problems.add(
                "licensing.host",
                "must list at least one FQDN or IP address, or be left out to detect the host",
            );
        }
        for (i, host) in hosts.iter().enumerate() {
            if host.trim().is_empty() || host.contains(char::is_whitespace) {
                problems.add(
                    format!("licensing.host[{i}]"),
                    format!("{host:?} is not an FQDN or IP address"),
                );
            }
        }
    }
}

fn state(config: &Config, problems: &mut Problems) {
    if config.state.flush_interval.is_zero() {
        problems.add("state.flush_interval", "must be longer than zero");
    }
    fleet(&config.state, problems);
    if config.state.dir.exists() && !config.state.dir.is_dir() {
        problems.add(
            "state.dir",
            format!("{} is not a directory", config.state.dir.display()),
        );
    }
}

/// Fleet mode's keys: a usable Redis URL, names that fit in a Redis hash tag, and no fleet
/// key without `redis` (a fleet setting on a lone sidecar is a mistake, not a no-op).
fn fleet(state: &super::State, problems: &mut Problems) {
    let Some(url) = &state.redis else {
        let set = [
            ("state.fleet", state.fleet.is_some()),
            ("state.node", state.node.is_some()),
            ("state.lease_max", state.lease_max.is_some()),
            ("state.lease_ttl", state.lease_ttl.is_some()),
            ("state.redis_timeout", state.redis_timeout.is_some()),
            (
                "state.redis_password_file",
                state.redis_password_file.is_some(),
            ),
        ];
        for (key, _) in set.iter().filter(|(_, set)| *set) {
            problems.add(
                *key,
                "applies to fleet mode only: set state.redis too, or remove it",
            );
        }
        return;
    };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        problems.add(
            "state.redis",
            format!(
                "{:?} is not a Redis URL: write redis://HOST:PORT/DB, or rediss:// for TLS",
                redact(url)
            ),
        );
    } else if let Err(err) = redis::Client::open(url.as_str()) {
        problems.add(
            "state.redis",
            format!("{:?} is not a usable Redis URL: {err}", redact(url)),
        );
    }
    for (key, value) in [("state.fleet", &state.fleet), ("state.node", &state.node)] {
        if let Some(value) = value {
            if !is_fleet_name(value) {
                problems.add(
                    key,
                    format!("{value:?} must be 1 to 64 letters, digits, '.', '_' or '-'"),
                );
            }
        }
    }
    if state.lease_max == Some(0) {
        problems.add("state.lease_max", "must be at least 1");
    }
    if state
        .lease_ttl
        .is_some_and(|ttl| ttl < std::time::Duration::from_millis(100))
    {
        problems.add("state.lease_ttl", "must be at least 100ms");
    }
    if state.redis_timeout.is_some_and(|t| t.is_zero()) {
        problems.add("state.redis_timeout", "must be longer than zero");
    }
    if let Some(file) = &state.redis_password_file {
        if !file.is_file() {
            problems.add(
                "state.redis_password_file",
                format!("{} is not a readable file", file.display()),
            );
        }
    }
}

/// Whether a fleet or node name is safe inside Redis keys and hash tags.
fn is_fleet_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A Redis URL with its password, if any, replaced by `***` (for messages and status).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or("", |(user, _)| user);
            let user = if credentials.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

fn listeners(config: &Config, problems: &mut Problems) {
    let mut bound: HashMap<SocketAddr, String> = HashMap::new();
    let mut claim = |addr: SocketAddr, path: String, problems: &mut Problems| {
        if addr.port() == 0 {
            // Port 0 asks the system for a free port: never a collision.
            return;
        }
        if let Some(first) = bound.get(&addr) {
            problems.add(
                path,
                format!("listen address {addr} is already used by {first}"),
            );
        } else {
            bound.insert(addr, path);
        }
    };
    claim(config.server.listen, "server.listen".to_owned(), problems);
    claim(config.admin.listen, "admin.listen".to_owned(), problems);
    for (i, instance) in config.instances.iter().enumerate() {
        if let Some(addr) = instance.listen {
            claim(addr, format!("instances[{i}].listen"), problems);
        }
    }
}

/// Where in the config a problem is, written out only when there is one (a large config
/// has tens of thousands of places and, usually, no problem).
#[derive(Clone, Copy)]
enum At {
    /// `instances[i]`
    Instance(usize),
    /// `flows[i]`
    Flow(usize),
    /// `flows[i].entities[k]`
    Entity(usize, usize),
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Instance(i) => write!(f, "instances[{i}]"),
            At::Flow(i) => write!(f, "flows[{i}]"),
            At::Entity(i, k) => write!(f, "flows[{i}].entities[{k}]"),
        }
    }
}

/// Validates every instance; returns the index of each valid-looking id for flow checks.
fn instances<'a>(config: &'a Config, problems: &mut Problems) -> FxHashMap<&'a str, &'a Instance> {
    let mut by_id: FxHashMap<&str, &Instance> = FxHashMap::default();
    let mut lowercase_ids: FxHashMap<String, usize> = FxHashMap::default();
    for (i, instance) in config.instances.iter().enumerate() {
        let at = At::Instance(i);
        if !is_path_segment(&instance.id) {
            problems.add(format!("{at}.id"), format!("{:?} is not a valid instance id (letters, digits, '.', '_', '~', '-'; it is the first path segment of proxied requests)", instance.id));
        }
        let lowercase = instance.id.to_ascii_lowercase();
        match lowercase_ids.get(&lowercase) {
            Some(first) => problems.add(
                format!("{at}.id"),
                format!(
                    "duplicate instance id {:?} (first at instances[{first}])",
                    instance.id
                ),
            ),
            None => {
                lowercase_ids.insert(lowercase, i);
                by_id.insert(&instance.id, instance);
            }
        }
        connector_attributes(instance, at, problems);
        base_uri(config, instance, at, problems);
        if instance.trading_partner
            && !matches!(
                instance.connector,
                Connector::Ftp | Connector::Sftp | Connector::Ftps | Connector::As2
            )
        {
            problems.add(
                format!("{at}.trading_partner"),
                format!(
                    "only FTP, SFTP, FTPS and AS2 instances can be trading partners, not {:?}",
                    instance.connector.as_str()
                ),
            );
        }
        if instance.connect_timeout.is_zero() {
            problems.add(format!("{at}.connect_timeout"), "must be longer than zero");
        }
        if instance.response_timeout.is_zero() {
            problems.add(format!("{at}.response_timeout"), "must be longer than zero");
        }
        if let Some(ca) = &instance.ca_file {
            readable_file(&format!("{at}.ca_file"), ca, problems);
        }
        if let Some(agent) = &instance.agent {
            if agent.trim().is_empty() {
                problems.add(format!("{at}.agent"), "must not be empty");
            }
        }
        if instance.flow.is_some() && instance.listen.is_none() {
            problems.add(
                format!("{at}.flow"),
                "binds a flow to a dedicated listener, so it needs `listen` too",
            );
        }
    }
    for (i, instance) in config.instances.iter().enumerate() {
        if let Some(flow_id) = &instance.flow {
            match config.flow(flow_id) {
                None => problems.add(
                    format!("instances[{i}].flow"),
                    format!("unknown flow {flow_id:?}"),
                ),
                Some(flow) if !flow.systems.contains(&instance.id) => problems.add(
                    format!("instances[{i}].flow"),
                    format!(
                        "flow {flow_id:?} does not include instance {:?}",
                        instance.id
                    ),
                ),
                Some(_) => {}
            }
        }
    }
    by_id
}

/// A base URI must be well formed, and present wherever tollgate forwards the instance's
/// requests: behind a dedicated listener, or for a flow on a named connector (HTTP-style
/// connectors require it anyway; the others are not HTTP, so tollgate does not carry them).
fn base_uri(config: &Config, instance: &Instance, at: At, problems: &mut Problems) {
    if let Some(uri) = &instance.base_uri {
        if let Err(why) = check_base_uri(uri) {
            problems.add(format!("{at}.base_uri"), why);
        }
    } else if instance.listen.is_some() {
        problems.add(
            format!("{at}.base_uri"),
            "is required where the instance has a dedicated listener",
        );
    } else if instance.connector == Connector::Named {
        if let Some(why) = needed_by_flows(config, &instance.id) {
            problems.add(format!("{at}.base_uri"), why);
        }
    }
}

/// Why the instance needs a base URI, naming each flow that uses it once; `None` if none does.
fn needed_by_flows(config: &Config, id: &str) -> Option<String> {
    let mut users: Vec<String> = Vec::new();
    for flow in config
        .flows
        .iter()
        .filter(|f| f.systems.iter().any(|s| s == id))
    {
        let name = format!("{:?}", flow.id);
        if !users.contains(&name) {
            users.push(name);
        }
    }
    let (noun, verb) = match users.len() {
        0 => return None,
        1 => ("flow", "sends"),
        _ => ("flows", "send"),
    };
    Some(format!(
        "is required because {noun} {} {verb} requests to this instance through tollgate",
        users.join(", ")
    ))
}

/// The attributes each connector needs to name its canonical endpoint (docs/licenses.md).
fn connector_attributes(instance: &Instance, at: At, problems: &mut Problems) {
    let required: &[(&str, &Option<String>)] = match instance.connector {
        Connector::Named => &[("app", &instance.app)],
        Connector::Http | Connector::Rest | Connector::Graphql => {
            &[("base_uri", &instance.base_uri)]
        }
        Connector::Rdbms => &[("engine", &instance.engine), ("host", &instance.host)],
        Connector::Snowflake => &[("account", &instance.account)],
        Connector::Bigquery => &[("client_email", &instance.client_email)],
        Connector::Redshift => &[("cluster", &instance.cluster), ("region", &instance.region)],
        Connector::Dynamodb => &[("access_key_id", &instance.access_key_id)],
        Connector::Ftp | Connector::Sftp | Connector::Ftps | Connector::As2 => {
            &[("host", &instance.host)]
        }
        Connector::Wrapper | Connector::Webhook => &[],
    };
    for (name, value) in required {
        if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
            problems.add(
                format!("{at}.{name}"),
                format!(
                    "is required for connector {:?}",
                    instance.connector.as_str()
                ),
            );
        }
    }
    if instance.port == Some(0) {
        problems.add(format!("{at}.port"), "must be between 1 and 65535");
    }
}

fn flows(config: &Config, instances: &FxHashMap<&str, &Instance>, problems: &mut Problems) {
    let mut seen: FxHashMap<&str, usize> = FxHashMap::default();
    let mut told_apart = ToldApart::default();
    for (i, flow) in config.flows.iter().enumerate() {
        let at = At::Flow(i);
        if flow.id.is_empty() || !flow.id.bytes().all(|b| b.is_ascii_graphic()) {
            problems.add(format!("{at}.id"), format!("{:?} is not a valid flow id (visible ASCII without spaces; it travels in a header)", flow.id));
        }
        if let Some(first) = seen.insert(&flow.id, i) {
            problems.add(
                format!("{at}.id"),
                format!("duplicate flow id {:?} (first at flows[{first}])", flow.id),
            );
        }
        let count_ok = match flow.kind {
            FlowKind::Flow | FlowKind::IntegrationApp => flow.systems.len() == 2,
            FlowKind::DataLoader => (1..=2).contains(&flow.systems.len()),
        };
        if !count_ok {
            let wanted = if flow.kind == FlowKind::DataLoader {
                "one or two systems"
            } else {
                "exactly two systems"
            };
            problems.add(
                format!("{at}.systems"),
                format!(
                    "a flow of kind {:?} needs {wanted}, not {}",
                    flow.kind.as_str(),
                    flow.systems.len()
                ),
            );
        }
        for (j, system) in flow.systems.iter().enumerate() {
            match instances.get(system.as_str()) {
                None => problems.add(
                    format!("{at}.systems[{j}]"),
                    format!("unknown instance {system:?}"),
                ),
                Some(instance) if instance.environment != flow.environment => problems.add(
                    format!("{at}.systems[{j}]"),
                    format!(
                        "instance {system:?} is in {} but the flow is in {}",
                        instance.environment, flow.environment
                    ),
                ),
                Some(_) => {}
            }
            if flow.systems[..j].contains(system) {
                problems.add(
                    format!("{at}.systems[{j}]"),
                    format!("instance {system:?} is listed twice"),
                );
            }
        }
        entities(flow, i, &mut told_apart, problems);
    }
}

/// The entity lists already found free of patterns a router cannot tell apart, with each
/// entity's instance named by its place among the flow's systems: the flows of one kind of
/// integration repeat one list, which is checked once.
#[derive(Default)]
struct ToldApart<'a>(FxHashSet<Vec<(usize, &'a str, &'a str)>>);

impl<'a> ToldApart<'a> {
    /// The flow's list in that form, when every entity's instance is one of its systems.
    fn key(flow: &'a super::Flow) -> Option<Vec<(usize, &'a str, &'a str)>> {
        flow.entities
            .iter()
            .map(|entity| {
                let system = flow.systems.iter().position(|s| **s == *entity.instance)?;
                Some((system, &*entity.method, &*entity.path))
            })
            .collect()
    }
}

fn entities<'a>(
    flow: &'a super::Flow,
    index: usize,
    told_apart: &mut ToldApart<'a>,
    problems: &mut Problems,
) {
    let key = ToldApart::key(flow);
    let known = key.as_ref().is_some_and(|key| told_apart.0.contains(key));
    let before = problems.0.len();
    let mut routers: FxHashMap<(&str, &str), matchit::Router<()>> = FxHashMap::default();
    for (k, entity) in flow.entities.iter().enumerate() {
        let at = At::Entity(index, k);
        if !flow.systems.iter().any(|s| **s == *entity.instance) {
            problems.add(
                format!("{at}.instance"),
                format!(
                    "instance {:?} is not one of the flow's systems",
                    entity.instance
                ),
            );
        }
        if http::Method::from_bytes(entity.method.as_bytes()).is_err()
            || entity.method.bytes().any(|b| b.is_ascii_lowercase())
        {
            problems.add(
                format!("{at}.method"),
                format!(
                    "{:?} is not an HTTP method in upper case (e.g. \"POST\")",
                    entity.method
                ),
            );
        }
        bulk(entity, at, problems);
        if let Err(why) = check_template(&entity.path) {
            problems.add(format!("{at}.path"), why);
            continue;
        }
        if known {
            continue;
        }
        let router = routers
            .entry((&entity.instance, &entity.method))
            .or_default();
        if let Err(err) = router.insert(&*entity.path, ()) {
            problems.add(
                format!("{at}.path"),
                format!(
                    "{:?} cannot be told apart from another pattern of this flow: {err}",
                    entity.path
                ),
            );
        }
    }
    if let (Some(key), false) = (key, known || problems.0.len() > before) {
        told_apart.0.insert(key);
    }
}

/// A bulk load's settings: records on main entities only, `accepted` with `records`,
/// `accepted_if` with `accepted`.
fn bulk(entity: &super::Entity, at: At, problems: &mut Problems) {
    if entity.records.is_some() && entity.role == super::Role::Child {
        problems.add(
            format!("{at}.records"),
            "applies to main entities only (child loads are never counted)",
        );
    }
    if entity.accepted.is_some() && entity.records.is_none() {
        problems.add(
            format!("{at}.accepted"),
            "needs records (the array of records in the request body) on the same entity",
        );
    }
    if entity.accepted_if.is_some() && entity.accepted.is_none() {
        problems.add(
            format!("{at}.accepted_if"),
            "needs accepted (the array of created records in the answer) on the same entity",
        );
    }
}

/// Patterns apply per instance across flows, so one main pattern (instance, method, path)
/// counts one way: two flows that give it different bulk settings are a problem.
fn bulk_agreement(config: &Config, problems: &mut Problems) {
    let folds: FxHashMap<&str, bool> = config
        .instances
        .iter()
        .map(|instance| (instance.id.as_str(), instance.paths_case_insensitive))
        .collect();
    // The first entity of each (instance, method, path), by flow and entity index.
    let mut first: FxHashMap<(&str, &str, Cow<str>), (usize, usize)> = FxHashMap::default();
    for (i, flow) in config.flows.iter().enumerate() {
        for (k, entity) in flow.entities.iter().enumerate() {
            if entity.role != super::Role::Main {
                continue;
            }
            let path = template_key(&entity.path);
            let path = if folds.get(&*entity.instance) == Some(&true) {
                Cow::Owned(path.to_lowercase())
            } else {
                Cow::Borrowed(path)
            };
            let key = (&*entity.instance, &*entity.method, path);
            let Some(&(fi, fk)) = first.get(&key) else {
                first.insert(key, (i, k));
                continue;
            };
            let earlier = &config.flows[fi].entities[fk];
            // As `Entity::bulk` compares them: without `records` the others do not count.
            let same = earlier.records == entity.records
                && (entity.records.is_none()
                    || (earlier.accepted == entity.accepted
                        && earlier.accepted_if == entity.accepted_if));
            if !same {
                problems.add(
                    format!("flows[{i}].entities[{k}].records"),
                    format!(
                        "{} {} on instance {:?} is counted differently at flows[{fi}].entities[{fk}]: every flow must give one pattern the same records, accepted and accepted_if",
                        entity.method, entity.path, entity.instance
                    ),
                );
            }
        }
    }
}

/// A template as classification holds it: a trailing `/` means nothing (`/x/` is `/x`).
pub(crate) fn template_key(path: &str) -> &str {
    path.strip_suffix('/')
        .filter(|path| !path.is_empty())
        .unwrap_or(path)
}

/// A path template: absolute, segments literal, `{name}` or a final `{*rest}`.
pub(crate) fn check_template(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with '/'"));
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if segment.contains(['{', '}']) {
            let inner = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
            let name = match inner {
                Some(rest) if rest.starts_with('*') => {
                    if i + 1 != segments.len() {
                        return Err(format!(
                            "{path:?}: the catch-all {segment} must be the last segment"
                        ));
                    }
                    &rest[1..]
                }
                Some(name) => name,
                None => {
                    return Err(format!(
                        "{path:?}: segment {segment:?} must be a literal, {{name}} or {{*rest}}"
                    ))
                }
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "{path:?}: parameter name {name:?} must be letters, digits or '_'"
                ));
            }
        } else if matches!(*segment, "." | "..") || segment.contains(['?', '#', '%']) {
            return Err(format!(
                "{path:?}: segment {segment:?} is not allowed in a template"
            ));
        } else if segment.is_empty() && i + 1 != segments.len() {
            return Err(format!(
                "{path:?}: an empty segment ('//') never matches: targets read '//' as '/'"
            ));
        } else if segment.contains(';') {
            return Err(format!(
                "{path:?}: segment {segment:?} holds ';', which starts parameters that targets strip and classification ignores: leave them out"
            ));
        }
    }
    Ok(())
}

/// A base URI: absolute http(s) with a host, without query or fragment.
fn check_base_uri(uri: &str) -> Result<(), String> {
    let parsed: http::Uri = uri
        .parse()
        .map_err(|err| format!("{uri:?} is not a URI: {err}"))?;
    match parsed.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{uri:?} must start with http:// or https://")),
    }
    if parsed.host().is_none_or(str::is_empty) {
        return Err(format!("{uri:?} has no host"));
    }
    if parsed.query().is_some() || uri.contains('#') {
        return Err(format!("{uri:?} must not have a query or fragment"));
    }
    Ok(())
}

/// Whether an id is safe as one URL path segment.
fn is_path_segment(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

fn readable_file(path: &str, file: &Path, problems: &mut Problems) {
    if let Err(err) = std::fs::File::open(file) {
        problems.add(path, format!("cannot read {}: {err}", file.display()));
    }
}
