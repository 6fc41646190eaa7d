//! Keys read only at start-up: a reload that changes one says so instead of ignoring it.

use crate::config::Config;

/// The keys read only at start-up whose value in `config` differs from the one `started`
/// applied: listeners and their connection settings, TLS, the admin token and the store.
pub(super) fn restart_required(started: &Config, config: &Config) -> Vec<&'static str> {
    let tls = |c: &Config| {
        c.server
            .tls
            .as_ref()
            .map(|t| (t.cert.clone(), t.key.clone()))
    };
    let dedicated = |c: &Config| -> Vec<_> {
        c.instances
            .iter()
            .map(|i| (i.id.clone(), i.listen, i.flow.clone()))
            .filter(|(_, listen, _)| listen.is_some())
            .collect()
    };
    [
        (
            "server.listen",
            started.server.listen != config.server.listen,
        ),
        ("server.tls", tls(started) != tls(config)),
        (
            "server.max_header_bytes",
            started.server.max_header_bytes != config.server.max_header_bytes,
        ),
        (
            "server.header_read_timeout",
            started.server.header_read_timeout != config.server.header_read_timeout,
        ),
        (
            "server.max_connections",
            started.server.max_connections != config.server.max_connections,
        ),
        (
            "instances[].listen",
            dedicated(started) != dedicated(config),
        ),
        ("admin.listen", started.admin.listen != config.admin.listen),
        (
            "admin.token_file",
            started.admin.token_file != config.admin.token_file,
        ),
        ("state.dir", started.state.dir != config.state.dir),
        (
            "state.durability",
            started.state.durability != config.state.durability,
        ),
        (
            "state.flush_interval",
            started.state.flush_interval != config.state.flush_interval,
        ),
        ("state.redis", started.state.redis != config.state.redis),
        ("state.fleet", started.state.fleet != config.state.fleet),
        ("state.node", started.state.node != config.state.node),
        (
            "state.lease_max",
            started.state.lease_max != config.state.lease_max,
        ),
        (
            "state.lease_ttl",
            started.state.lease_ttl != config.state.lease_ttl,
        ),
        (
            "state.redis_timeout",
            started.state.redis_timeout != config.state.redis_timeout,
        ),
        (
            "state.redis_password_file",
            started.state.redis_password_file != config.state.redis_password_file,
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}
