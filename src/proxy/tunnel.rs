//! `CONNECT` on the engine listener: HTTPS interception for engines behind `HTTPS_PROXY`.
//! With `server.forward_proxy` and `server.intercept_ca`, a `CONNECT` to the authority of a
//! configured instance answers 200 and the connection becomes a TLS connection tollgate
//! terminates with a certificate minted for the host; every request inside goes through
//! [`handle`] as an absolute-form request to that instance would ([`ListenerRole::Tunnel`]).
//! Every other `CONNECT` is a problem answer on the plain connection and opens nothing.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::credentials::ProxyCredentials;
use super::role::ListenerRole;
use super::service::{
    at, bad_request, check_head, check_proxy_password, finish, handle, instance_at, no_route,
};
use crate::control::{Live, Shared};
use crate::intercept::Leaves;
use crate::problem::{Problem, ProblemCode};
use crate::server::{serve_tunnel, Arrival, FramingWatch};

/// The port a `CONNECT` target without one means: tunnels carry TLS.
const TUNNEL_DEFAULT_PORT: u16 = 443;

/// Handles one request on an engine-facing listener: a `CONNECT` opens a tunnel (or is
/// refused), every other request goes to [`handle`].
pub async fn dispatch(
    shared: Arc<Shared>,
    role: Arc<ListenerRole>,
    leaves: Arc<Leaves>,
    req: Request<Incoming>,
    arrival: Arrival,
) -> Result<Response<ProxyBody>, Infallible> {
    if req.method() == Method::CONNECT {
        // Boxed: opening a tunnel is a large future every other request would carry.
        return Ok(Box::pin(connect(shared, &role, &leaves, req, arrival)).await);
    }
    handle(shared, role, req, arrival.conflicting_framing).await
}

/// A `host:port` in messages.
#[derive(Clone, Copy)]
pub(super) struct HostPort<'a>(pub &'a str, pub u16);

impl fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0, self.1)
    }
}

/// The target of a `CONNECT`: `host:port` (authority form), the host lowercase.
#[derive(Debug, PartialEq, Eq)]
struct ConnectTarget {
    /// As in a URI's authority: an IPv6 address keeps its brackets.
    host: Box<str>,
    port: u16,
}

impl ConnectTarget {
    /// Reads the request target of a `CONNECT`; a missing port means 443.
    fn of(uri: &Uri) -> Result<ConnectTarget, &'static str> {
        let authority = uri
            .authority()
            .ok_or("the CONNECT target must be host:port")?;
        if uri.scheme().is_some() || uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
            return Err("the CONNECT target must be host:port alone");
        }
        if authority.as_str().contains('@') {
            return Err("the CONNECT target must not carry user information");
        }
        let host = authority.host();
        if host.is_empty() {
            return Err("the CONNECT target has no host");
        }
        Ok(ConnectTarget {
            host: host.to_ascii_lowercase().into_boxed_str(),
            port: authority.port_u16().unwrap_or(TUNNEL_DEFAULT_PORT),
        })
    }

    /// The host as a certificate names it: an IPv6 address without its brackets.
    fn certificate_name(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

/// Whether `authority` (a `Host` value or an HTTP/2 `:authority`, inside a tunnel whose
/// engine speaks HTTPS) names `host:port`: the host without regard to case, a missing port
/// meaning 443.
pub(super) fn same_authority(authority: &str, host: &str, port: u16) -> bool {
    let (name, named_port) = match authority.rfind(':') {
        // A colon inside brackets is part of an IPv6 address, not a port separator.
        Some(colon) if !authority[colon..].contains(']') => {
            (&authority[..colon], &authority[colon + 1..])
        }
        _ => (authority, ""),
    };
    let named_port = if named_port.is_empty() {
        Some(TUNNEL_DEFAULT_PORT)
    } else {
        named_port.parse().ok()
    };
    name.eq_ignore_ascii_case(host) && named_port == Some(port)
}

/// Opens a tunnel or refuses the `CONNECT`; refusals are recorded like every other request's.
async fn connect(
    shared: Arc<Shared>,
    role: &ListenerRole,
    leaves: &Leaves,
    mut req: Request<Incoming>,
    arrival: Arrival,
) -> Response<ProxyBody> {
    let live = shared.live.load_full();
    let (target, tls, handoff, framing) = match open(&live, role, leaves, &req, arrival).await {
        Ok(opened) => opened,
        Err(problem) => return finish(&live, Err(problem)),
    };
    // The connection's next bytes are TLS, not requests: the scanner must stop before the
    // answer goes out.
    framing.stop_following();
    let upgrade = hyper::upgrade::on(&mut req);
    let credentials = ProxyCredentials::of(req.headers());
    let tunnel = Arc::new(ListenerRole::Tunnel {
        host: target.host,
        port: target.port,
        credentials,
    });
    tracing::debug!(tunnel = %tunnel, "tunnel opened");
    let name = tunnel.to_string();
    serve_tunnel(handoff, upgrade, tls, name, move |req, arrival: Arrival| {
        handle(
            shared.clone(),
            tunnel.clone(),
            req,
            arrival.conflicting_framing,
        )
    });
    let mut response = Response::new(ProxyBody::from(Bytes::new()));
    *response.status_mut() = StatusCode::OK;
    response
}

/// The decisions of a `CONNECT`, in order: head checks, the engine listener over HTTP/1,
/// forward-proxy mode with `intercept_ca`, the target, the one instance at it, the proxy
/// password; then the host's certificate and the connection's handoff.
async fn open(
    live: &Live,
    role: &ListenerRole,
    leaves: &Leaves,
    req: &Request<Incoming>,
    arrival: Arrival,
) -> Result<
    (
        ConnectTarget,
        Arc<rustls::ServerConfig>,
        crate::server::Handoff,
        Arc<FramingWatch>,
    ),
    Problem,
> {
    check_head(live, req, arrival.conflicting_framing)?;
    if *role != ListenerRole::Engine {
        return Err(no_route(
            "CONNECT is answered only on the main engine listener, in forward-proxy mode",
        ));
    }
    if req.version() >= Version::HTTP_2 {
        return Err(no_route(
            "CONNECT over HTTP/2 opens no tunnel: open tunnels over HTTP/1.1",
        ));
    }
    let server = &live.config.server;
    if !server.forward_proxy {
        return Err(no_route(
            "tunnels are not opened (server.forward_proxy is off)",
        ));
    }
    let Some(authority) = &server.intercept_authority else {
        return Err(no_route(
            "tunnels are not opened (server.intercept_ca is not set)",
        ));
    };
    let target = ConnectTarget::of(req.uri()).map_err(bad_request)?;
    let shown = HostPort(&target.host, target.port);
    let instance = instance_at(live, &target.host, target.port, shown)?;
    check_proxy_password(live, &ProxyCredentials::of(req.headers()), instance)?;
    let tls = leaves
        .server_config(authority, target.certificate_name())
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "no certificate for an intercepted host");
            at(
                live,
                Problem::new(ProblemCode::InternalError, err.to_string()),
                None,
                instance,
            )
        })?;
    let (framing, handoff) = arrival
        .tunnel
        .and_then(|(framing, seat)| Some((framing, seat.take()?)))
        .ok_or_else(|| {
            at(
                live,
                no_route("this connection cannot carry a tunnel"),
                None,
                instance,
            )
        })?;
    Ok((target, tls, handoff, framing))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn target(text: &str) -> Result<ConnectTarget, &'static str> {
        ConnectTarget::of(&text.parse::<Uri>().expect("a URI"))
    }

    #[test]
    fn connect_targets_are_host_and_port_with_443_implied() {
        assert_eq!(
            target("Jira.Acme.Example:8443"),
            Ok(ConnectTarget {
                host: "jira.acme.example".into(),
                port: 8443
            })
        );
        assert_eq!(target("jira.acme.example").map(|t| t.port), Ok(443));
        let v6 = target("[::1]:443").expect("an IPv6 target");
        assert_eq!((&*v6.host, v6.certificate_name()), ("[::1]", "::1"));
        assert_eq!(
            target("127.0.0.1:8443").map(|t| t.certificate_name().to_owned()),
            Ok("127.0.0.1".to_owned())
        );
        for refused in [
            "/path",
            "http://jira.example:443/",
            "user:pw@jira.example:443",
            "https://jira.example",
        ] {
            assert!(target(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_host_header_names_the_tunnel_only_with_its_host_and_port() {
        assert!(same_authority("jira.example", "jira.example", 443));
        assert!(same_authority("JIRA.example:443", "jira.example", 443));
        assert!(same_authority("jira.example:", "jira.example", 443));
        assert!(same_authority("127.0.0.1:8443", "127.0.0.1", 8443));
        assert!(same_authority("[::1]:8443", "[::1]", 8443));
        assert!(same_authority("[::1]", "[::1]", 443));
        assert!(!same_authority("jira.example", "jira.example", 8443));
        assert!(!same_authority("other.example:443", "jira.example", 443));
        assert!(!same_authority("jira.example:x", "jira.example", 443));
        assert!(!same_authority("[::1]:8443", "[::2]", 8443));
        assert!(!same_authority("", "jira.example", 443));
    }

    proptest! {
        /// Whatever the request target of a CONNECT, reading it never panics, and a target
        /// that is read comes back the same when written as host:port.
        #[test]
        fn any_connect_target_is_read_without_panicking(raw in "\\PC{0,80}") {
            if let Ok(uri) = raw.parse::<Uri>() {
                if let Ok(read) = ConnectTarget::of(&uri) {
                    let again = format!("{}:{}", read.host, read.port);
                    let reread = ConnectTarget::of(&again.parse::<Uri>().expect("host:port parses"));
                    prop_assert_eq!(reread, Ok(read));
                }
            }
        }

        /// Host names and ports round-trip, and a Host header naming the same authority
        /// (in any case, with or without the default port) names the tunnel.
        #[test]
        fn generated_authorities_round_trip(host in "[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?(\\.[a-z]{2,6}){0,3}",
                                            port in 1u16..) {
            let read = target(&format!("{host}:{port}")).expect("a host:port target");
            let lower = host.to_ascii_lowercase();
            prop_assert_eq!(&*read.host, lower.as_str());
            prop_assert_eq!(read.port, port);
            let shouted = format!("{}:{port}", host.to_ascii_uppercase());
            prop_assert!(same_authority(&shouted, &read.host, port));
            prop_assert_eq!(same_authority(&host, &read.host, port), port == 443);
        }

        /// Arbitrary Host values never panic the comparison.
        #[test]
        fn any_host_value_is_compared_without_panicking(value in "\\PC{0,40}", port in any::<u16>()) {
            let _ = same_authority(&value, "jira.example", port);
        }
    }
}
