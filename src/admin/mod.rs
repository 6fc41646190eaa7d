//! The admin listener (SPEC §6): health, readiness and the `/v1` API. Reads go to the
//! current snapshot; changes go through the control plane's compile-and-swap.

mod auth;
mod metrics;
mod views;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;

pub use auth::Token;

use crate::clock::{month_index, parse_month};
use crate::control::{Control, Refusal};
use crate::license::MAX_LICENSE_BYTES;
use crate::proxy::{ListenerRole, Problem};

/// The web console (SPEC §6), embedded in the binary: no build step, no CDN.
const CONSOLE_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// What the admin handler needs.
pub struct Admin {
    /// The control plane the API reads and changes (and `/metrics` reads).
    pub control: Arc<Control>,
    /// The bearer token of the `/v1` routes.
    pub token: Token,
}

impl Admin {
    /// The admin handler's state for a running sidecar.
    pub fn new(control: Arc<Control>, token: Token) -> Admin {
        Admin { control, token }
    }
}

type AdminResponse = Response<Full<Bytes>>;

/// Handles one admin request.
pub async fn handle(
    admin: Arc<Admin>,
    _role: Arc<ListenerRole>,
    req: Request<Incoming>,
) -> Result<AdminResponse, Infallible> {
    Ok(route(&admin, req).await.unwrap_or_else(problem_response))
}

async fn route(admin: &Admin, req: Request<Incoming>) -> Result<AdminResponse, Problem> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => return Ok(text(StatusCode::OK, "ok\n")),
        (&Method::GET, "/readyz") => {
            return Ok(if admin.control.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            });
        }
        _ => {}
    }
    if method == Method::GET {
        let page = match path.as_str() {
            "/" | "/index.html" => Some((CONSOLE_HTML, "text/html; charset=utf-8")),
            "/console.js" => Some((CONSOLE_JS, "text/javascript; charset=utf-8")),
            "/console.css" => Some((CONSOLE_CSS, "text/css; charset=utf-8")),
            _ => None,
        };
        if let Some((body, content_type)) = page {
            let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
                .headers_mut()
                .insert("cache-control", HeaderValue::from_static("no-cache"));
            return Ok(response);
        }
    }
    if method == Method::GET && path == "/metrics" {
        let format = metrics::Format::negotiate(req.headers());
        let body = metrics::render(&admin.control, format).map_err(|_| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the metrics could not be encoded",
            )
        })?;
        let mut response = Response::new(Full::new(Bytes::from(body)));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        return Ok(response);
    }
    let Some(api) = path.strip_prefix("/v1/") else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no admin route {path}"),
        ));
    };
    if !admin.token.admits(req.headers()) {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <admin token>",
        ));
    }
    let control = &admin.control;
    let segments: Vec<&str> = api.split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["licenses"]) => Ok(json(
            StatusCode::OK,
            &views::licenses(&control.snapshot(), control.shared().clock.as_ref()),
        )),
        (&Method::POST, ["licenses"]) => {
            let body = read_body(req).await?;
            let (id, disabled) = control.upload_license(&body).await.map_err(refusal)?;
            let snapshot = control.snapshot();
            let now = control.shared().clock.now();
            let mut view = snapshot.license(&id).map_or(Value::Null, |i| {
                views::license(&snapshot, &snapshot.licenses[i as usize], now)
            });
            if let Value::Object(map) = &mut view {
                map.insert("disabled_flows".into(), disabled.into());
            }
            Ok(json(StatusCode::CREATED, &view))
        }
        (&Method::DELETE, ["licenses", id]) => {
            control.remove_license(id).await.map_err(refusal)?;
            Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Full::default())
                .unwrap_or_default())
        }
        (&Method::GET, ["flows"]) => Ok(json(StatusCode::OK, &views::flows(&control.snapshot()))),
        (&Method::POST, ["flows", id, action @ ("enable" | "disable")]) => {
            if *action == "enable" {
                control.enable_flow(id).await.map_err(refusal)?;
            } else {
                control.disable_flow(id).await.map_err(refusal)?;
            }
            let snapshot = control.snapshot();
            let index = snapshot.flow(id).ok_or_else(|| {
                refusal(Refusal::NotFound(format!("flow {id:?} is not configured")))
            })?;
            Ok(json(StatusCode::OK, &views::flow(&snapshot, index)))
        }
        (&Method::GET, ["entitlements"]) => Ok(json(
            StatusCode::OK,
            &views::entitlements(&control.snapshot()),
        )),
        (&Method::GET, ["status"]) => Ok(json(StatusCode::OK, &control.status().await)),
        (&Method::GET, ["usage"]) => {
            let month = match query_param(req.uri().query(), "month") {
                Some(label) => parse_month(label)
                    .ok_or_else(|| bad_query(format!("month={label:?} is not YYYY-MM")))?,
                None => {
                    let snapshot = control.snapshot();
                    month_index(control.shared().clock.now(), snapshot.tz)
                }
            };
            let usage = control.usage(month).map_err(|err| {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", err)
            })?;
            Ok(json(StatusCode::OK, &usage))
        }
        (&Method::GET, ["audit"]) => {
            let query = req.uri().query();
            let limit = match query_param(query, "limit") {
                Some(text) => text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_AUDIT_PAGE).contains(n))
                    .ok_or_else(|| {
                        bad_query(format!(
                            "limit={text:?} must be a number from 1 to {MAX_AUDIT_PAGE}"
                        ))
                    })?,
                None => DEFAULT_AUDIT_PAGE,
            };
            let before = match query_param(query, "before") {
                Some(text) => Some(
                    text.parse::<u64>()
                        .map_err(|_| bad_query(format!("before={text:?} is not a cursor")))?,
                ),
                None => None,
            };
            let page = control.audit(limit, before).map_err(|err| {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", err)
            })?;
            Ok(json(StatusCode::OK, &page))
        }
        (
            _,
            ["licenses"]
            | ["licenses", _]
            | ["flows"]
            | ["flows", _, _]
            | ["status"]
            | ["usage"]
            | ["audit"],
        ) => Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no admin route {path}"),
        )),
    }
}

/// Audit entries per page unless `limit` says otherwise, and the most a page may hold.
const DEFAULT_AUDIT_PAGE: usize = 50;
const MAX_AUDIT_PAGE: usize = 1000;

/// The value of one query parameter (values here are plain tokens, never escaped).
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn bad_query(detail: String) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
}

/// Reads an upload, at most one byte past the license size limit.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Problem> {
    let limited = Limited::new(req.into_body(), MAX_LICENSE_BYTES + 1);
    let bytes = limited
        .collect()
        .await
        .map_err(|err| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-license",
                format!("cannot read the upload: {err}"),
            )
        })?
        .to_bytes();
    if bytes.len() > MAX_LICENSE_BYTES {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-license",
            format!(
                "the upload is over the {} KiB limit of a license file",
                MAX_LICENSE_BYTES / 1024
            ),
        ));
    }
    Ok(bytes)
}

fn refusal(refusal: Refusal) -> Problem {
    match refusal {
        Refusal::NotFound(detail) => Problem::new(StatusCode::NOT_FOUND, "not-found", detail),
        Refusal::BadInput(detail) => {
            Problem::new(StatusCode::BAD_REQUEST, "invalid-license", detail)
        }
        Refusal::Failed(detail) => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
        }
        Refusal::Conflict {
            code,
            reason,
            detail,
            fields,
        } => {
            let mut problem = Problem::new(StatusCode::CONFLICT, code, detail);
            problem.fields.extend(fields);
            match reason {
                Some(reason) => problem.with("reason", reason),
                None => problem,
            }
        }
    }
}

fn problem_response(problem: Problem) -> AdminResponse {
    let body = serde_json::to_vec(&problem.to_json()).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = problem.status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn json(status: StatusCode, value: &Value) -> AdminResponse {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
