//! The proxy service, as named phases, top to bottom: [`check_head`] → [`route`] →
//! [`identify`] → [`gate`] → [`classify`] → ([`read_batch`] for a bulk load) → [`admit`] →
//! [`send`] (forward) → [`count`]. Each phase either passes what the next needs or answers with a
//! [`Problem`]. Nothing here takes a lock; the live snapshot is loaded once per request.
//!
//! A counted load's exchange with the target is finished whatever the engine does: hyper
//! drops a request's future when the engine hangs up, and a load the target accepted must
//! still be counted (the reservation must never go back for a record that was created), so
//! the exchange goes on in a task of its own when that happens ([`Counted`]).

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use http::header::{HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::uri::Scheme;
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use serde_json::Value;

use super::body::ProxyBody;
use super::bulk::{self, Answer, ReadError};
use super::counted::Counted;
use super::credentials::ProxyCredentials;
use super::path::{decode_segment, normalize, split_first, Normal, PathError};
use super::role::ListenerRole;
use super::tunnel::HostPort;
use crate::catalog::{count_accepted, count_records};
use crate::clock::{month_bounds, month_index};
use crate::control::{Live, Shared};
use crate::meter::{MeterEvent, MeterEventKind, MeterReport, Reservation, Shortfall};
use crate::observe::Decision as Outcome;
use crate::policy::{DisabledReason, FlowState, LicenseEntry, LoadClass, Moment, Snapshot};
use crate::problem::{Problem, ProblemCode};
use crate::store::fleet::{Budget, Fleet, FleetError, Refill};
use crate::store::CountItem;
use crate::upstream::{default_port, EngineBody, EngineBodyError, ForwardError, Upstream};

/// The header on allowed loads once the month's limit is reached.
pub const TOLLGATE_WARNING: &str = "tollgate-warning";

/// Shadow mode: the header naming the license decision that would have refused a request.
pub const TOLLGATE_SHADOW: &str = "tollgate-shadow";

/// Longest the load reaching the hard limit waits for the license's flows to be stopped.
const LIMIT_ACT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Headers with which clients ask a target to treat a request as another method; a load is
/// classified under each method it may mean.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Query parameters that name the method a target should take a request for.
const QUERY_METHOD_OVERRIDES: [&str; 2] = ["_httpmethod", "_method"];

/// Where a routed request goes.
#[derive(Debug)]
struct Target<'a> {
    /// Index of the instance.
    instance: u32,
    /// The normalised path relative to the instance's base URI.
    path: Normal<'a>,
    /// For absolute-form requests: the whole path the target receives, base path included.
    absolute: Option<Cow<'a, str>>,
}

/// What the decision phases found out about an admitted request.
#[derive(Debug)]
pub struct Decision<'r> {
    /// Index of the target instance in the snapshot.
    pub instance: u32,
    /// Index of the flow in the snapshot (`None` only in shadow mode, for a request that
    /// names no flow, or one that is not configured).
    pub flow: Option<u32>,
    /// Whether the request is a counted load.
    pub class: LoadClass,
    /// Shadow mode: the license decision that would have refused the request.
    pub shadow: Option<ProblemCode>,
    target: Target<'r>,
}

/// A request that passed the decision phases: where it goes and what it is, before admission.
struct Plan {
    flow: Option<u32>,
    /// Shadow mode: what would have refused it (its answer says so).
    shadow: Option<ProblemCode>,
    instance: u32,
    class: LoadClass,
    upstream: Arc<Upstream>,
    path_and_query: String,
}

/// A request that passed every decision phase and admission, ready to go to its target.
struct Exchange {
    plan: Plan,
    reservation: Option<Reservation>,
}

/// An answer that got as far as an instance (and, but in shadow mode, a flow), with what
/// shadow mode let through.
type Answered = (Response<ProxyBody>, Option<u32>, u32, Option<ProblemCode>);

/// Why a counted load is not admitted (yet).
enum Unadmitted {
    /// Refused with this problem.
    Refused(Problem),
    /// Fleet mode: the lease holds fewer records than the load needs; Redis is asked for a
    /// block and admission tried again.
    LeaseEmpty,
}

/// Handles one request on an engine-facing listener (`conflicting_framing`: the framing
/// scanner saw both framing headers in its head); never fails, refusals are problem answers.
pub async fn handle(
    shared: Arc<Shared>,
    role: Arc<ListenerRole>,
    req: Request<Incoming>,
    conflicting_framing: bool,
) -> Result<Response<ProxyBody>, Infallible> {
    let live = shared.live.load_full();
    let now = shared.clock.now();
    let plan = match prepare(&live, &role, now, &req, conflicting_framing) {
        Ok(plan) => plan,
        Err(problem) => return Ok(finish(&live, Err(problem))),
    };
    let idle = live.config.server.body_read_timeout;
    let (req, records) = match plan.class {
        // A bulk load's body is read and its records counted before anything is reserved.
        // Boxed, as every path below that few requests take: the request's future stays small
        // (it is moved into place for every request).
        LoadClass::Bulk(bulk) => match Box::pin(read_batch(&live, &plan, bulk, req)).await {
            Ok(read) => read,
            Err(problem) => return Ok(finish(&live, Err(problem))),
        },
        class => (
            req.map(|body| EngineBody::new(body, idle)),
            u64::from(class == LoadClass::Main),
        ),
    };
    let mut deadline = None;
    let (reservation, over_limit) = loop {
        match admit(&live, &plan, now, records) {
            Ok(admitted) => break admitted,
            Err(Unadmitted::Refused(problem)) => return Ok(finish(&live, Err(problem))),
            Err(Unadmitted::LeaseEmpty) => {
                let deadline = *deadline.get_or_insert_with(|| fleet_deadline(&shared));
                let replenished =
                    Box::pin(replenish(&live, &shared, &plan, records, now, deadline)).await;
                if let Err(problem) = replenished {
                    return Ok(finish(&live, Err(problem)));
                }
            }
        }
    };
    let mut plan = plan;
    plan.shadow = plan.shadow.or(over_limit);
    if let Some(code) = plan.shadow {
        log_shadow(&live, plan.flow, plan.instance, code, now);
    }
    if let (Some(fleet), Some(_), Some(flow)) = (&shared.fleet, &reservation, plan.flow) {
        top_up_if_low(fleet, &live, flow, now);
    }
    let exchange = Exchange { plan, reservation };
    if exchange.reservation.is_none() {
        let result = send(&live, &shared, exchange, req, now).await;
        return Ok(finish(&live, result));
    }
    // A counted load: the exchange is finished and counted whatever the engine does.
    let exchange = {
        let (live, shared) = (live.clone(), shared.clone());
        async move {
            let result = send(&live, &shared, exchange, req, now).await;
            finish(&live, result)
        }
    };
    Ok(Counted::new(&shared.exchanges, exchange).await)
}

/// Records the request's decision in the metrics and turns it into the engine's answer.
pub(super) fn finish(
    snapshot: &Snapshot,
    result: Result<Answered, Problem>,
) -> Response<ProxyBody> {
    match result {
        Ok((response, flow, instance, shadow)) => {
            let outcome = shadow.map_or(Outcome::Allowed, Outcome::Shadowed);
            snapshot
                .request_counts(flow, Some(instance))
                .record(outcome);
            response
        }
        Err(problem) => {
            snapshot
                .request_counts(problem.flow, problem.instance)
                .record(Outcome::Refused(problem.code));
            problem.into_response()
        }
    }
}

/// The moment by which a counted load waiting for the fleet is answered.
fn fleet_deadline(shared: &Shared) -> Instant {
    let timeout = shared
        .fleet
        .as_ref()
        .map_or(std::time::Duration::ZERO, |fleet| {
            fleet.settings().redis_timeout
        });
    Instant::now() + timeout
}

/// Fleet mode: asks Redis for a block of the flow's license budget large enough for `records`,
/// by `deadline`; a 503 `store-unavailable` when Redis cannot answer in time, a 429 when the
/// fleet cannot grant a batch that large now.
async fn replenish(
    live: &Live,
    shared: &Shared,
    plan: &Plan,
    records: u64,
    now: DateTime<Utc>,
    deadline: Instant,
) -> Result<(), Problem> {
    let instance = plan.instance;
    let entry = plan.flow.and_then(|flow| live.budget_of(flow));
    let (Some(fleet), Some(entry)) = (&shared.fleet, entry) else {
        return Err(at(
            live,
            Problem::new(
                ProblemCode::InternalError,
                "a fleet lease without fleet mode",
            ),
            plan.flow,
            instance,
        ));
    };
    let budget = Budget {
        meter: &entry.meter,
        limit: entry.limit,
        hard: entry.hard_limit,
    };
    let month = month_index(now, live.tz);
    let outcome = if Instant::now() >= deadline {
        Err(FleetError::Timeout(fleet.settings().redis_timeout))
    } else {
        fleet.replenish(budget, month, records, deadline).await
    };
    match outcome {
        Ok(Refill::Ready) => Ok(()),
        Ok(Refill::Short { remaining }) => {
            let used = entry.meter.used(month);
            let hard = entry.hard_limit.unwrap_or(used);
            // Records other sidecars hold and do not use come back to the fleet shortly.
            let elsewhere = used.saturating_add(records) <= hard;
            let over = OverLimit {
                license: entry.id(),
                used,
                hard,
                requested: records,
                remaining,
                elsewhere,
            };
            Err(at(live, over.problem(live, now), plan.flow, instance))
        }
        Err(err) => {
            tracing::debug!(license = %entry.id(), error = %err, "no block of the fleet's budget");
            let mut problem = Problem::new(
                ProblemCode::StoreUnavailable,
                format!(
                    "the fleet's budget of license {} cannot be drawn on: {err}",
                    entry.id()
                ),
            )
            .with("license", entry.id());
            problem.retry_after = Some(1);
            Err(at(live, problem, plan.flow, instance))
        }
    }
}

/// Fleet mode: tops the lease up in the background once it runs low, so busy sidecars seldom
/// wait for Redis.
fn top_up_if_low(fleet: &Arc<Fleet>, live: &Arc<Live>, flow: u32, now: DateTime<Utc>) {
    let Some(entry) = live.budget_of(flow) else {
        return;
    };
    let month = month_index(now, live.tz);
    if entry.hard_limit.is_none() || !fleet.wants_top_up(&entry.meter, month) {
        return;
    }
    let (fleet, meter, limit, hard) = (
        fleet.clone(),
        entry.meter.clone(),
        entry.limit,
        entry.hard_limit,
    );
    tokio::spawn(async move {
        let budget = Budget {
            meter: &meter,
            limit,
            hard,
        };
        fleet.top_up(budget, month).await;
    });
}

/// Runs the decision phases; returns where the request goes and what it is.
fn prepare(
    live: &Live,
    role: &ListenerRole,
    now: DateTime<Utc>,
    req: &Request<Incoming>,
    conflicting_framing: bool,
) -> Result<Plan, Problem> {
    let decision = decide(live, role, now, req, conflicting_framing)?;
    let upstream = live
        .upstream(decision.instance)
        .cloned()
        .ok_or_else(|| no_route("the instance has no base_uri"))?;
    let target = &decision.target;
    let mut path_and_query = String::with_capacity(target.path.forward.len() + 64);
    match &target.absolute {
        Some(whole) => path_and_query.push_str(whole),
        None => {
            path_and_query.push_str(&live.instances[decision.instance as usize].base_path);
            path_and_query.push_str(&target.path.forward);
        }
    }
    if let Some(query) = req.uri().query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    Ok(Plan {
        flow: decision.flow,
        shadow: decision.shadow,
        instance: decision.instance,
        class: decision.class,
        upstream,
        path_and_query,
    })
}

/// A bulk load: reads its body (bounded by `server.max_counted_body_bytes`) and counts the
/// records in it; a body too large is 413, one that is not JSON or lacks the array 400.
async fn read_batch(
    snapshot: &Snapshot,
    plan: &Plan,
    bulk: u32,
    req: Request<Incoming>,
) -> Result<(Request<EngineBody>, u64), Problem> {
    let server = &snapshot.config.server;
    let refuse = |problem: Problem| at(snapshot, problem, plan.flow, plan.instance);
    let Some(settings) = snapshot.bulk(plan.instance, bulk) else {
        return Err(refuse(Problem::new(
            ProblemCode::InternalError,
            "a bulk load without bulk settings",
        )));
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
    let (mut parts, body) = req.into_parts();
    let body = EngineBody::new(body, server.body_read_timeout);
    let read = bulk::read_request(body, declared, server.max_counted_body_bytes).await;
    let bytes = read.map_err(|err| {
        refuse(match err {
            ReadError::TooLarge { limit, .. } => {
                Problem::new(ProblemCode::BodyTooLarge, err.to_string())
                    .with("limit", u64::try_from(limit).unwrap_or(u64::MAX))
            }
            ReadError::Body(EngineBodyError::Stalled(after)) => Problem::new(
                ProblemCode::RequestTimeout,
                format!(
                    "the engine sent no part of the request body for {} ms",
                    after.as_millis()
                ),
            ),
            ReadError::Body(malformed) => {
                Problem::new(ProblemCode::BadRequest, malformed.to_string())
            }
        })
    })?;
    let records = count_records(&bytes, &settings.records).map_err(|err| {
        refuse(
            Problem::new(
                ProblemCode::BadRequest,
                format!("the bulk load's records cannot be counted: {err}"),
            )
            .with("records", settings.records.as_str()),
        )
    })?;
    // The body goes on as read: its length is known now, whatever framing it came in.
    parts.headers.remove(TRANSFER_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok((Request::from_parts(parts, EngineBody::read(bytes)), records))
}

/// Shadow mode: says, at most once a minute per flow and code, that a request went through
/// that this license decision would have refused.
fn log_shadow(
    snapshot: &Snapshot,
    flow: Option<u32>,
    instance: u32,
    code: ProblemCode,
    now: DateTime<Utc>,
) {
    let log = flow.map_or(&snapshot.flowless_shadow_log, |flow| {
        &snapshot.flow_info(flow).shadow_log
    });
    if log.should_log(code, u64::try_from(now.timestamp()).unwrap_or(0)) {
        let flow = flow.map_or("-", |flow| &*snapshot.flow_info(flow).id);
        let instance = &snapshot.instances[instance as usize].id;
        tracing::warn!(flow, instance = %instance, decision = code.as_str(), "shadow mode: forwarded a request this license decision would refuse (logged at most once a minute per flow and decision)");
    }
}

/// Runs the decision phases on a request head: head checks, route, identify, gate, classify
/// (`conflicting_framing`: the head had both framing headers on the wire).
pub fn decide<'r, B>(
    snapshot: &Snapshot,
    role: &ListenerRole,
    now: DateTime<Utc>,
    req: &'r Request<B>,
    conflicting_framing: bool,
) -> Result<Decision<'r>, Problem> {
    check_head(snapshot, req, conflicting_framing)?;
    let target = route(snapshot, role, req)?;
    let shadow_mode = snapshot.config.licensing.is_shadow();
    // Shadow mode lets license decisions through, marked; everything else refuses as always.
    let mut shadow = None;
    let flow = match identify(snapshot, role, req, &target) {
        Ok(flow) => Some(flow),
        Err(problem) if shadow_mode && problem.code.is_license_decision() => {
            shadow = Some(problem.code);
            None
        }
        Err(problem) => return Err(problem),
    };
    if let Some(flow) = flow {
        if let Err(problem) = gate(snapshot, now, flow, target.instance) {
            let operator = matches!(
                snapshot.flows[flow as usize].state,
                FlowState::Disabled(DisabledReason::Operator)
            );
            if !(shadow_mode && problem.code.is_license_decision() && !operator) {
                return Err(problem);
            }
            shadow = Some(problem.code);
        }
    }
    let class = match flow {
        Some(_) => classify(snapshot, req, &target),
        None => LoadClass::Other,
    };
    Ok(Decision {
        instance: target.instance,
        flow,
        class,
        shadow,
        target,
    })
}

/// Refuses request heads the server must not forward: conflicting framing, transfer codings
/// other than `chunked` alone, methods spelt in another case, oversized heads.
pub(super) fn check_head<B>(
    snapshot: &Snapshot,
    req: &Request<B>,
    conflicting_framing: bool,
) -> Result<(), Problem> {
    let headers = req.headers();
    if conflicting_framing
        || headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH)
    {
        return Err(bad_request(
            "the request has both Content-Length and Transfer-Encoding",
        ));
    }
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        let chunked = first
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked");
        if codings.next().is_some() || !chunked {
            return Err(Problem::new(
                ProblemCode::NotImplemented,
                format!(
                    "Transfer-Encoding {:?} is not forwarded: only \"chunked\" alone is",
                    String::from_utf8_lossy(first.as_bytes())
                ),
            ));
        }
    }
    check_method(req.method())?;
    let limit = snapshot.config.server.max_header_bytes;
    let mut size = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |pq| pq.as_str().len())
        + 12;
    for (name, value) in headers {
        size += name.as_str().len() + value.len() + 4;
    }
    if size > limit {
        return Err(Problem::new(
            ProblemCode::HeaderTooLarge,
            format!("the request head is about {size} bytes, over the {limit}-byte limit"),
        ));
    }
    Ok(())
}

/// Methods are case-sensitive (RFC 9110): one that equals a standard method only without
/// regard to case (`post`, `Get`) would be a second spelling of a counted request.
fn check_method(method: &Method) -> Result<(), Problem> {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    if STANDARD.contains(method) {
        return Ok(());
    }
    match STANDARD
        .iter()
        .find(|standard| standard.as_str().eq_ignore_ascii_case(method.as_str()))
    {
        Some(standard) => Err(bad_request(format!(
            "method {:?} is not {standard}: methods are case-sensitive",
            method.as_str()
        ))),
        None => Ok(()),
    }
}

/// Finds the instance and the path relative to its base URI; anything else is `unknown-route`.
fn route<'r, B>(
    snapshot: &Snapshot,
    role: &ListenerRole,
    req: &'r Request<B>,
) -> Result<Target<'r>, Problem> {
    let uri = req.uri();
    let raw = uri.path();
    match role {
        ListenerRole::Instance { id, .. } => {
            let instance = snapshot
                .instance(id)
                .ok_or_else(|| no_route("the listener's instance is no longer configured"))?;
            Ok(Target {
                instance,
                path: normalize(raw).map_err(path_problem)?,
                absolute: None,
            })
        }
        ListenerRole::Engine if uri.authority().is_some() && req.version() < Version::HTTP_2 => {
            absolute_form(snapshot, req)
        }
        ListenerRole::Tunnel { host, port, .. } => tunnelled(snapshot, req, host, *port),
        ListenerRole::Engine => {
            let (first, rest) = split_first(raw);
            let instance = decode_segment(first)
                .and_then(|id| snapshot.instance(&id))
                .ok_or_else(|| no_route(format!("no instance is configured at /{first}")))?;
            Ok(Target {
                instance,
                path: normalize(rest).map_err(path_problem)?,
                absolute: None,
            })
        }
    }
}

/// Routes an absolute-form request (forward-proxy mode) to the one instance serving its
/// authority, if its path lies under that instance's base path.
fn absolute_form<'r, B>(snapshot: &Snapshot, req: &'r Request<B>) -> Result<Target<'r>, Problem> {
    let uri = req.uri();
    if !snapshot.config.server.forward_proxy {
        return Err(no_route(
            "absolute-form requests are not accepted (server.forward_proxy is off)",
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| no_route("the request has no authority"))?;
    let port = authority
        .port_u16()
        .unwrap_or(default_port(Some(uri.scheme().unwrap_or(&Scheme::HTTP))));
    let instance = instance_at(snapshot, authority.host(), port, authority)?;
    under_instance(snapshot, instance, uri.path(), authority)
}

/// Routes a request inside a tunnel to the one instance at the tunnel's authority, exactly as
/// an absolute-form request to that authority; a request naming another authority (its
/// `Host`, or its HTTP/2 `:authority`) is refused, never sent elsewhere.
fn tunnelled<'r, B>(
    snapshot: &Snapshot,
    req: &'r Request<B>,
    host: &str,
    port: u16,
) -> Result<Target<'r>, Problem> {
    let shown = HostPort(host, port);
    if req.method() == Method::CONNECT {
        return Err(no_route(format!(
            "the tunnel to {shown} opens no tunnels of its own"
        )));
    }
    let server = &snapshot.config.server;
    if !server.forward_proxy || server.intercept_authority.is_none() {
        return Err(no_route(
            "tunnels are no longer served (server.forward_proxy or server.intercept_ca was turned off)",
        ));
    }
    let uri = req.uri();
    let named = uri
        .authority()
        .map(http::uri::Authority::as_str)
        .into_iter()
        .chain(
            req.headers()
                .get_all(http::header::HOST)
                .iter()
                .map(|value| value.to_str().unwrap_or("")),
        );
    for authority in named {
        if !super::tunnel::same_authority(authority, host, port) {
            return Err(bad_request(format!(
                "the request names {authority:?}, but its tunnel was opened to {shown}"
            )));
        }
    }
    let instance = instance_at(snapshot, host, port, shown)?;
    under_instance(snapshot, instance, uri.path(), shown)
}

/// The one instance whose base URI has this host and port; none or several are `unknown-route`.
pub(super) fn instance_at(
    snapshot: &Snapshot,
    host: &str,
    port: u16,
    shown: impl std::fmt::Display,
) -> Result<u32, Problem> {
    let mut matching = snapshot.instances_at(host, port);
    match (matching.next(), matching.next()) {
        (Some(instance), None) => Ok(instance),
        (None, _) => Err(no_route(format!(
            "{shown} is not the authority of a configured instance"
        ))),
        (Some(_), Some(_)) => Err(no_route(format!(
            "{shown} is the authority of several instances: send requests to /{{instance-id}}/ instead"
        ))),
    }
}

/// The target of a request to `instance` whose whole path is `raw`: the normalised path must
/// lie under the instance's base path; it is forwarded whole and classified below the base.
fn under_instance<'r>(
    snapshot: &Snapshot,
    instance: u32,
    raw: &'r str,
    shown: impl std::fmt::Display,
) -> Result<Target<'r>, Problem> {
    let whole = normalize(raw).map_err(path_problem)?;
    let base = &*snapshot.instances[instance as usize].base_path;
    let outside = || {
        no_route(format!(
            "{} is outside the base path {base:?} of the instance at {shown}",
            whole.forward
        ))
    };
    let forward = under_base(&whole.forward, base).ok_or_else(outside)?;
    // The spellings patterns see are those of the part below the base, read on its own (a
    // base path may hold escapes of its own).
    let (classified, variant) = if whole.classified.is_some() || whole.variant.is_some() {
        let below = normalize(&forward).map_err(path_problem)?;
        (below.classified, below.variant)
    } else {
        (None, None)
    };
    let path = Normal {
        forward,
        classified,
        variant,
    };
    Ok(Target {
        instance,
        path,
        absolute: Some(whole.forward),
    })
}

/// The part of a normalised path below `base` (a path without trailing `/`), if it lies there.
fn under_base<'p>(path: &Cow<'p, str>, base: &str) -> Option<Cow<'p, str>> {
    let rest = path.strip_prefix(base)?;
    if rest.is_empty() {
        return Some(Cow::Borrowed("/"));
    }
    if !rest.starts_with('/') {
        return None;
    }
    Some(match path {
        Cow::Borrowed(whole) => Cow::Borrowed(&whole[base.len()..]),
        Cow::Owned(_) => Cow::Owned(rest.to_owned()),
    })
}

/// Names the request's flow: the flow header, else the dedicated listener's flow, else (a
/// forward-proxy request, or one inside a tunnel) the user name of `Proxy-Authorization:
/// Basic` (a tunnel's: the one its `CONNECT` carried), else, with `server.infer_flow`, the one
/// enabled flow that has the instance. The instance must be one of the flow's systems. With
/// `server.proxy_token_file` set, a forward-proxy request must give that password (407
/// otherwise), whatever names its flow.
fn identify<B>(
    snapshot: &Snapshot,
    role: &ListenerRole,
    req: &Request<B>,
    target: &Target<'_>,
) -> Result<u32, Problem> {
    let instance = target.instance;
    let read;
    let proxy = match role {
        // The tunnel's credentials came with its CONNECT; the password is checked again
        // here, since a reload may have changed the token since.
        ListenerRole::Tunnel { credentials, .. } => {
            check_proxy_password(snapshot, credentials, instance)?;
            credentials
        }
        _ if target.absolute.is_some() => {
            read = proxy_credentials(snapshot, req, instance)?;
            &read
        }
        _ => &ProxyCredentials::Absent,
    };
    let named = match req.headers().get(&snapshot.flow_header) {
        Some(value) => Some(value.to_str().map_err(|_| {
            at(
                snapshot,
                Problem::new(
                    ProblemCode::UnknownFlow,
                    "the flow header is not visible ASCII",
                ),
                None,
                instance,
            )
        })?),
        None => match role {
            ListenerRole::Instance {
                flow: Some(flow), ..
            } => Some(&**flow),
            _ => proxy.user(),
        },
    };
    let flow = match named {
        Some(name) => snapshot.flow(name).ok_or_else(|| {
            let problem = Problem::new(
                ProblemCode::UnknownFlow,
                format!("flow {name:?} is not configured"),
            )
            .with("flow", name);
            at(snapshot, problem, None, instance)
        })?,
        None => infer(snapshot, target)?,
    };
    if !snapshot.flow_info(flow).systems.contains(&instance) {
        let name = &snapshot.flow_info(flow).id;
        let instance_id = &snapshot.instances[instance as usize].id;
        let detail = format!("instance {instance_id:?} is not one of the systems of flow {name:?}");
        let problem = Problem::new(ProblemCode::FlowInstanceMismatch, detail).with("flow", &**name);
        return Err(at(snapshot, problem, None, instance));
    }
    Ok(flow)
}

/// A forward-proxy request's `Proxy-Authorization`, checked against `server.proxy_token_file`
/// where one is set: a missing or wrong password is 407 (the header never reaches the target).
fn proxy_credentials<B>(
    snapshot: &Snapshot,
    req: &Request<B>,
    instance: u32,
) -> Result<ProxyCredentials, Problem> {
    let credentials = ProxyCredentials::of(req.headers());
    check_proxy_password(snapshot, &credentials, instance)?;
    Ok(credentials)
}

/// With `server.proxy_token_file` set, `credentials` must give its token as the password:
/// 407 otherwise.
pub(super) fn check_proxy_password(
    snapshot: &Snapshot,
    credentials: &ProxyCredentials,
    instance: u32,
) -> Result<(), Problem> {
    let Some(token) = &snapshot.config.server.proxy_token else {
        return Ok(());
    };
    if credentials.password_is(&token.0) {
        return Ok(());
    }
    let detail = match credentials {
        ProxyCredentials::Absent => "this proxy needs credentials: give the flow as the user name and the proxy token as the password (http://FLOW:TOKEN@host:port)",
        ProxyCredentials::Malformed => "Proxy-Authorization must be Basic credentials (the flow as the user name, the proxy token as the password)",
        ProxyCredentials::Basic { .. } => "the proxy password is wrong",
    };
    Err(at(
        snapshot,
        Problem::new(ProblemCode::ProxyAuthRequired, detail),
        None,
        instance,
    ))
}

/// No flow named: with `server.infer_flow`, the one enabled flow that has the instance among
/// its systems; else, or where none or several have it, `flow-required`.
fn infer(snapshot: &Snapshot, target: &Target<'_>) -> Result<u32, Problem> {
    let instance = target.instance;
    let infer = snapshot.config.server.infer_flow;
    let inferred = infer
        .then(|| snapshot.inferred_flows.get(instance as usize).copied())
        .flatten()
        .flatten();
    if let Some(flow) = inferred {
        return Ok(flow);
    }
    let how = if target.absolute.is_some() {
        format!(
            "send the {} header or give the flow as the proxy user name",
            snapshot.flow_header
        )
    } else {
        format!("send the {} header", snapshot.flow_header)
    };
    let detail = if infer {
        let instance_id = &snapshot.instances[instance as usize].id;
        let enabled = snapshot
            .flows
            .iter()
            .zip(snapshot.flow_infos())
            .filter(|(flow, info)| {
                info.systems.contains(&instance) && !matches!(flow.state, FlowState::Disabled(_))
            })
            .count();
        format!("the request names no flow and {enabled} enabled flows have instance {instance_id:?}, so none can be inferred: {how}")
    } else {
        format!("the request names no flow: {how}")
    };
    Err(at(
        snapshot,
        Problem::new(ProblemCode::FlowRequired, detail),
        None,
        instance,
    ))
}

/// Lets the request through only while its flow is enabled and a valid license covers it.
fn gate(snapshot: &Snapshot, now: DateTime<Utc>, flow: u32, instance: u32) -> Result<(), Problem> {
    let entry = &snapshot.flows[flow as usize];
    let id = &snapshot.flow_info(flow).id;
    let refuse = |code, detail: String, license: Option<&str>, reason: &str| {
        let problem = Problem::new(code, detail)
            .with("license", license.map_or(Value::Null, Value::from))
            .with("reason", reason);
        at(snapshot, problem, Some(flow), instance)
    };
    let license_id = |index: Option<u32>| index.map(|i| snapshot.licenses[i as usize].id());
    match entry.state {
        FlowState::Disabled(DisabledReason::RecordsLimit) => {
            let resumes = if snapshot.config.licensing.resume_at_reset {
                "it resumes when the month resets"
            } else {
                "an operator must enable it again"
            };
            let detail = format!(
                "flow {:?} is stopped: its license reached the transferred-records hard limit; {resumes}",
                id
            );
            let mut problem = refuse(
                ProblemCode::RecordsLimitExceeded,
                detail,
                license_id(entry.refusal_license),
                DisabledReason::RecordsLimit.as_str(),
            );
            problem.retry_after = Some(seconds_to_reset(snapshot, now));
            Err(problem)
        }
        FlowState::Disabled(reason) => Err(refuse(
            ProblemCode::FlowDisabled,
            format!("flow {id:?} is disabled ({})", reason.as_str()),
            None,
            reason.as_str(),
        )),
        FlowState::Unlicensed(reason) => {
            let license = license_id(entry.refusal_license);
            let detail = match license {
                Some(license) => {
                    format!("no valid license covers flow {id:?}: license {license} is {reason}")
                }
                None => format!("no valid license covers flow {id:?} ({reason})"),
            };
            Err(refuse(
                ProblemCode::LicenseInvalid,
                detail,
                license,
                reason.as_str(),
            ))
        }
        FlowState::Active {
            license: Some(license),
        } => {
            let license = &snapshot.licenses[license as usize];
            let moment = Moment {
                now,
                floor: snapshot.clock_floor,
            };
            license.usable_at(moment).map_err(|reason| {
                let detail = format!("license {} covering flow {id:?} is {reason}", license.id(),);
                refuse(
                    ProblemCode::LicenseInvalid,
                    detail,
                    Some(license.id()),
                    reason.as_str(),
                )
            })
        }
        FlowState::Active { license: None } => Ok(()),
    }
}

/// Classifies a request under every method it may mean and every spelling of its path a
/// target may read.
fn classify<B>(snapshot: &Snapshot, req: &Request<B>, target: &Target<'_>) -> LoadClass {
    let classifier = &snapshot.instances[target.instance as usize].classifier;
    if classifier.is_empty() {
        return LoadClass::Other;
    }
    let path = &target.path;
    let both: [&str; 2];
    let one: [&str; 1];
    let paths: &[&str] = match &path.variant {
        Some(variant) => {
            both = [path.classify(), variant];
            &both
        }
        None => {
            one = [path.classify()];
            &one
        }
    };
    let class = classifier.classify([req.method()], paths);
    if class.counts_most(classifier.has_bulk()) {
        return class;
    }
    // A target may honour a method override header, or ignore it: the request is classified
    // under its own method and every override, and the class that counts most wins (an
    // override never turns a bulk load into a single one). Every value of every override
    // header is read, comma-separated lists included (usually there are none).
    let mut class = class;
    let mut consider = |text: &str| {
        for spelling in text.split(',') {
            let spelling = spelling.trim();
            // Only a method the instance has patterns for can change the class: a spelling is
            // compared with those few, so however many values a request sends, nothing is
            // allocated and each costs a handful of comparisons.
            if let Some(method) = classifier
                .methods()
                .find(|method| method.as_str().eq_ignore_ascii_case(spelling))
            {
                class = class.or_stronger(classifier.classify([method], paths));
            }
        }
    };
    for (name, value) in req.headers() {
        if !name.as_str().starts_with("x-") || !METHOD_OVERRIDES.contains(&name.as_str()) {
            continue;
        }
        if let Ok(text) = value.to_str() {
            consider(text);
        }
    }
    // Overrides in the query: Salesforce's `_HttpMethod`, and the `_method` of Symfony or
    // Laravel (a target decodes the query, so escapes of unreserved characters are decoded).
    for pair in req.uri().query().unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Longer than `_HttpMethod` with every character escaped: another parameter.
        if name.len() > 3 * "_httpmethod".len() {
            continue;
        }
        let Some(name) = decode_segment(name) else {
            continue;
        };
        if QUERY_METHOD_OVERRIDES
            .iter()
            .any(|known| name.eq_ignore_ascii_case(known))
        {
            if let Some(value) = decode_segment(value) {
                consider(&value);
            }
        }
    }
    class
}

/// Reserves a counted load's records of the month's budget (one, or a bulk load's batch, all
/// or none); 429 where they do not fit below the hard limit (in shadow mode, the load is
/// counted past it, and the second value says so).
fn admit(
    snapshot: &Snapshot,
    plan: &Plan,
    now: DateTime<Utc>,
    records: u64,
) -> Result<(Option<Reservation>, Option<ProblemCode>), Unadmitted> {
    let Some(flow_index) = plan.flow.filter(|_| plan.class.is_counted()) else {
        return Ok((None, None));
    };
    if records == 0 {
        // A batch without records: nothing to reserve or count.
        return Ok((None, None));
    }
    let flow = snapshot.flow_info(flow_index);
    let license = snapshot.budget_of(flow_index);
    let month = month_index(now, snapshot.tz);
    let budget = license.map(|l| (&l.meter, l.hard_limit));
    let shadow_mode = snapshot.config.licensing.is_shadow();
    Reservation::take(budget, &flow.meter, month, records)
        .map(|reservation| (Some(reservation), None))
        .or_else(|shortfall| match shortfall {
            Shortfall::AtLimit(_) if shadow_mode => {
                let unlimited = license.map(|l| (&l.meter, None));
                Reservation::take(unlimited, &flow.meter, month, records)
                    .map(|reservation| (Some(reservation), Some(ProblemCode::RecordsLimitExceeded)))
            }
            other => Err(other),
        })
        .map_err(|shortfall| {
            let refused = match shortfall {
                Shortfall::AtLimit(refused) => refused,
                Shortfall::LeaseEmpty => return Unadmitted::LeaseEmpty,
            };
            let hard = license.and_then(|l| l.hard_limit).unwrap_or(refused.used);
            let over = OverLimit {
                license: license.map(LicenseEntry::id).unwrap_or_default(),
                used: refused.used,
                hard,
                requested: records,
                remaining: hard.saturating_sub(refused.used),
                // Fleet mode: the whole budget is granted but not all of it counted yet;
                // records other sidecars do not use come back to the fleet within seconds.
                elsewhere: license.is_some_and(|l| l.meter.lease().is_some())
                    && refused.used.saturating_add(records) <= hard,
            };
            Unadmitted::Refused(at(
                snapshot,
                over.problem(snapshot, now),
                Some(flow_index),
                plan.instance,
            ))
        })
}

/// A counted load refused because its records do not fit below the hard limit.
struct OverLimit<'a> {
    license: &'a str,
    /// Committed and reserved when refused (the fleet's, in fleet mode).
    used: u64,
    hard: u64,
    /// The records the load needs (a bulk load's batch).
    requested: u64,
    /// What could still be reserved.
    remaining: u64,
    /// Fleet mode: records granted to other sidecars, not counted, come back shortly.
    elsewhere: bool,
}

impl OverLimit<'_> {
    /// The 429 `records-limit-exceeded` answer, with `Retry-After` to the month's reset (or a
    /// second, where records come back from other sidecars).
    fn problem(&self, snapshot: &Snapshot, now: DateTime<Utc>) -> Problem {
        let OverLimit {
            license: id,
            used,
            hard,
            requested,
            remaining,
            elsewhere,
        } = *self;
        let detail = if requested > 1 && remaining > 0 {
            let back = if elsewhere {
                "; records other sidecars of the fleet do not use come back shortly"
            } else {
                ""
            };
            format!(
                "a batch of {requested} records does not fit: license {id} has {remaining} of its {hard} records left this month{back}; nothing was forwarded"
            )
        } else if elsewhere {
            format!(
                "license {id}'s {hard} records for this month are all granted to the fleet's sidecars ({used} counted so far); records they leave unused come back shortly"
            )
        } else {
            format!(
                "license {id} has transferred its {hard} records for this month (limit plus 10%)"
            )
        };
        let mut problem = Problem::new(ProblemCode::RecordsLimitExceeded, detail)
            .with("license", id)
            .with("reason", "hard-limit")
            .with("used", used)
            .with("hard_limit", hard)
            .with("requested", requested)
            .with("remaining", remaining);
        problem.retry_after = Some(if elsewhere {
            1
        } else {
            seconds_to_reset(snapshot, now)
        });
        problem
    }
}

/// Forwards an admitted request and, for a counted load the target accepted, counts it.
async fn send(
    snapshot: &Snapshot,
    shared: &Shared,
    exchange: Exchange,
    req: Request<EngineBody>,
    now: DateTime<Utc>,
) -> Result<Answered, Problem> {
    let Exchange { plan, reservation } = exchange;
    let Plan {
        flow,
        shadow,
        instance,
        class,
        upstream,
        path_and_query,
    } = plan;
    let started = Instant::now();
    // Forward: the answer's body streams back to the engine.
    let response = match upstream
        .send(req, path_and_query, &snapshot.flow_header)
        .await
    {
        Ok(response) => response.map(ProxyBody::Upstream),
        Err(err) => return Err(forward_problem(snapshot, flow, instance, &upstream, err)),
    };
    shared.upstream_durations.observe(started.elapsed());
    let mut response = match (reservation, flow) {
        (Some(reservation), Some(flow)) if response.status().is_success() => {
            let load = Load {
                flow,
                instance,
                reservation,
                now,
            };
            match class {
                LoadClass::Bulk(bulk) => {
                    Box::pin(count_batch(
                        snapshot, shared, load, bulk, &upstream, response,
                    ))
                    .await?
                }
                _ => warned(response, count(snapshot, shared, load, None).await?),
            }
        }
        // A refused or failed load gives its reservation back when it is dropped here.
        _ => response,
    };
    if let Some(code) = shadow {
        response
            .headers_mut()
            .insert(TOLLGATE_SHADOW, HeaderValue::from_static(code.as_str()));
    }
    Ok((response, flow, instance, shadow))
}

/// The problem answer for a request that could not be forwarded.
fn forward_problem(
    snapshot: &Snapshot,
    flow: Option<u32>,
    instance: u32,
    upstream: &Upstream,
    err: ForwardError,
) -> Problem {
    let problem = match err {
        ForwardError::Unavailable(why) => {
            let instance_id = &snapshot.instances[instance as usize].id;
            tracing::debug!(instance = %instance_id, error = %why, "upstream unavailable");
            Problem::new(
                ProblemCode::UpstreamUnavailable,
                format!(
                    "cannot reach {} for instance {instance_id:?}: {why}",
                    upstream.origin()
                ),
            )
        }
        ForwardError::Timeout(after) => Problem::new(
            ProblemCode::UpstreamTimeout,
            format!(
                "{} did not answer within {} ms",
                upstream.origin(),
                after.as_millis()
            ),
        )
        .with(
            "timeout_ms",
            u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
        ),
        ForwardError::MalformedBody(why) => Problem::new(ProblemCode::BadRequest, why),
        ForwardError::StalledBody(after) => Problem::new(
            ProblemCode::RequestTimeout,
            format!(
                "the engine sent no part of the request body for {} ms",
                after.as_millis()
            ),
        ),
    };
    at(snapshot, problem, flow, instance)
}

/// A counted load the target answered 2xx: what counting it needs.
struct Load {
    flow: u32,
    instance: u32,
    reservation: Reservation,
    now: DateTime<Utc>,
}

/// A bulk load the target answered 2xx: counts the records the answer says were created (at
/// most the batch) where the entity names them, else the whole batch, and gives the rest back.
/// An answer that cannot be read or understood counts the whole batch: tollgate never counts
/// fewer records than it cannot prove were refused.
async fn count_batch(
    snapshot: &Snapshot,
    shared: &Shared,
    load: Load,
    bulk: u32,
    upstream: &Upstream,
    response: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, Problem> {
    let settings = snapshot.bulk(load.instance, bulk);
    let Some((accepted, settings)) =
        settings.and_then(|s| s.accepted.as_ref().map(|accepted| (accepted, s)))
    else {
        let warning = count(snapshot, shared, load, None).await?;
        return Ok(warned(response, warning));
    };
    let (parts, body) = response.into_parts();
    let ProxyBody::Upstream(body) = body else {
        let warning = count(snapshot, shared, load, None).await?;
        return Ok(warned(Response::from_parts(parts, body), warning));
    };
    let limit = snapshot.config.server.max_counted_body_bytes;
    let reserved = load.reservation.records();
    let (flow, instance) = (load.flow, load.instance);
    let (body, created) = match bulk::read_answer(body, limit, upstream.response_timeout()).await {
        Answer::Whole(bytes) => {
            let created = count_accepted(&bytes, accepted, settings.accepted_if.as_ref())
                .map_err(|err| err.to_string());
            (ProxyBody::from(bytes), created)
        }
        Answer::TooLarge { read, rest } => (
            ProxyBody::Resumed {
                read: Some(read),
                rest,
            },
            Err(format!(
                "the answer is larger than server.max_counted_body_bytes ({limit} bytes)"
            )),
        ),
        Answer::Broken(why) => {
            // The target accepted the batch: its records count even though its answer is lost.
            count(snapshot, shared, load, None).await?;
            let problem = Problem::new(
                ProblemCode::UpstreamUnavailable,
                format!(
                    "{} accepted the bulk load but its answer broke off ({why}); its {reserved} records are counted",
                    upstream.origin()
                ),
            );
            return Err(at(snapshot, problem, Some(flow), instance));
        }
    };
    let created = match created {
        Ok(created) => Some(created),
        Err(why) => {
            tracing::warn!(
                flow = %snapshot.flow_info(flow).id,
                accepted = accepted.as_str(),
                reason = %why,
                "the answer to a bulk load does not say which records were created; all {reserved} reserved records are counted"
            );
            None
        }
    };
    let warning = count(snapshot, shared, load, created).await?;
    Ok(warned(Response::from_parts(parts, body), warning))
}

/// The answer with the `Tollgate-Warning` a count returned, if any.
fn warned(mut response: Response<ProxyBody>, warning: Option<HeaderValue>) -> Response<ProxyBody> {
    if let Some(warning) = warning {
        response.headers_mut().insert(TOLLGATE_WARNING, warning);
    }
    response
}

/// Commits a load the target accepted: counts it (a bulk load's `accepted` records, or every
/// reserved record), waits for the store in strict durability and raises the warning and
/// limit events; returns the `Tollgate-Warning` its answer carries once the limit is reached.
async fn count(
    snapshot: &Snapshot,
    shared: &Shared,
    load: Load,
    accepted: Option<u64>,
) -> Result<Option<HeaderValue>, Problem> {
    let Load {
        flow,
        instance,
        reservation,
        now,
    } = load;
    let entry = snapshot.flow_info(flow);
    let license = snapshot.budget_of(flow);
    let committed = match accepted {
        Some(accepted) => reservation.commit_accepted(accepted),
        None => reservation.commit(),
    };
    if committed.records == 0 {
        return Ok(None);
    }
    let item = CountItem {
        records: committed.records,
        license: license.map(|l| l.meter.id.clone()),
        flow: entry.meter.id.clone(),
        month: committed.month,
        day: now.with_timezone(&snapshot.tz).date_naive(),
        at: now,
    };
    if let Err(err) = shared.recorder.record(item).await {
        tracing::error!(flow = %entry.id, error = %err, "a counted load could not be stored; answering 503");
        let problem = Problem::new(
            ProblemCode::StoreUnavailable,
            format!("the target accepted the load but its count could not be stored: {err}"),
        )
        .with(
            "license",
            license.map_or(Value::Null, |l| Value::from(l.id())),
        );
        return Err(at(snapshot, problem, Some(flow), instance));
    }
    let Some(license) = license else {
        return Ok(None);
    };
    let (Some(limit), Some(hard)) = (license.limit, license.hard_limit) else {
        return Ok(None);
    };
    let event = |kind| MeterEvent {
        kind,
        license: license.meter.id.clone(),
        month: committed.month,
        used: committed.after,
        limit,
        hard_limit: hard,
    };
    if committed.before < limit && committed.after >= limit {
        shared.report(MeterReport {
            event: event(MeterEventKind::Warning),
            acted: None,
        });
    }
    if committed.before < hard && committed.after >= hard {
        // The load that reaches the hard limit is answered once the license's flows are
        // stopped, so whoever sees its answer sees them stopped (bounded: never hangs).
        let (acted, done) = tokio::sync::oneshot::channel();
        shared.report(MeterReport {
            event: event(MeterEventKind::Limit),
            acted: Some(acted),
        });
        let _ = tokio::time::timeout(LIMIT_ACT_WAIT, done).await;
    }
    if committed.after < limit {
        return Ok(None);
    }
    let warning = format!(
        "records-limit-reached; used={}; limit={limit}; hard_limit={hard}",
        committed.after
    );
    Ok(HeaderValue::from_str(&warning).ok())
}

/// Whole seconds until the month resets in the licensing time zone (at least 1).
fn seconds_to_reset(snapshot: &Snapshot, now: DateTime<Utc>) -> u64 {
    let (_, next) = month_bounds(now, snapshot.tz);
    let millis = (next - now).num_milliseconds().max(0) as u64;
    millis.div_ceil(1000).max(1)
}

/// Names the flow (if the request got that far) and the instance in a problem's fields and
/// ties it to them for the request metrics.
pub(super) fn at(
    snapshot: &Snapshot,
    problem: Problem,
    flow: Option<u32>,
    instance: u32,
) -> Problem {
    let problem = match flow {
        Some(flow) => problem.with("flow", &*snapshot.flow_info(flow).id),
        None => problem,
    };
    problem
        .with("instance", &*snapshot.instances[instance as usize].id)
        .tied_to(flow, Some(instance))
}

pub(super) fn no_route(detail: impl Into<String>) -> Problem {
    Problem::new(ProblemCode::UnknownRoute, detail)
}

pub(super) fn bad_request(detail: impl Into<String>) -> Problem {
    Problem::new(ProblemCode::BadRequest, detail)
}

/// A path climbing above its root is no route; every other refused spelling is a bad request.
fn path_problem(err: PathError) -> Problem {
    match err {
        PathError::AboveRoot => no_route(err.describe()),
        PathError::BadEscape | PathError::HiddenDotSegment | PathError::Nul => {
            bad_request(err.describe())
        }
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
