//! The admin listener: health, readiness, `/metrics`, the web console and the `/v1` API.
//! Reads go to the current snapshot; changes (and reads of the store) go through the control
//! plane. Routes are a `matchit` router; each route is one small handler.

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

pub use auth::{Token, TokenError};

use crate::clock::{month_index, parse_month};
use crate::control::{Control, ControlError, Refusal};
use crate::license::MAX_LICENSE_BYTES;
use crate::problem::{Problem, ProblemCode};

/// The web console, embedded in the binary: no build step, no CDN.
const CONSOLE_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// Audit entries per page unless `limit` says otherwise, and the most a page may hold.
const DEFAULT_AUDIT_PAGE: usize = 50;
const MAX_AUDIT_PAGE: usize = 1000;

/// Every route of the admin listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Healthz,
    Readyz,
    Metrics,
    /// A console file: its body and content type.
    Console(&'static str, &'static str),
    Licenses,
    License,
    Flows,
    FlowAction,
    Entitlements,
    Status,
    Usage,
    Audit,
}

/// What the admin handler needs.
pub struct Admin {
    /// The control plane the API reads and changes (and `/metrics` reads).
    pub control: Arc<Control>,
    /// The bearer token of the `/v1` routes.
    pub token: Token,
    routes: matchit::Router<Route>,
}

impl Admin {
    /// The admin handler's state for a running sidecar.
    pub fn new(control: Arc<Control>, token: Token) -> Admin {
        Admin {
            control,
            token,
            routes: routes(),
        }
    }
}

/// The route table.
fn routes() -> matchit::Router<Route> {
    let table = [
        ("/healthz", Route::Healthz),
        ("/readyz", Route::Readyz),
        ("/metrics", Route::Metrics),
        (
            "/",
            Route::Console(CONSOLE_HTML, "text/html; charset=utf-8"),
        ),
        (
            "/index.html",
            Route::Console(CONSOLE_HTML, "text/html; charset=utf-8"),
        ),
        (
            "/console.js",
            Route::Console(CONSOLE_JS, "text/javascript; charset=utf-8"),
        ),
        (
            "/console.css",
            Route::Console(CONSOLE_CSS, "text/css; charset=utf-8"),
        ),
        ("/v1/licenses", Route::Licenses),
        ("/v1/licenses/{id}", Route::License),
        ("/v1/flows", Route::Flows),
        ("/v1/flows/{id}/{action}", Route::FlowAction),
        ("/v1/entitlements", Route::Entitlements),
        ("/v1/status", Route::Status),
        ("/v1/usage", Route::Usage),
        ("/v1/audit", Route::Audit),
    ];
    let mut router = matchit::Router::new();
    for (path, route) in table {
        // The table is fixed and its templates are distinct: an insert cannot fail.
        let _ = router.insert(path, route);
    }
    router
}

type AdminResponse = Response<Full<Bytes>>;

/// Handles one admin request.
pub async fn handle(
    admin: Arc<Admin>,
    req: Request<Incoming>,
) -> Result<AdminResponse, Infallible> {
    Ok(dispatch(&admin, req)
        .await
        .unwrap_or_else(|problem| problem.into_response()))
}

/// Finds the route, checks the token of `/v1` routes and the method, and runs the handler.
async fn dispatch(admin: &Admin, req: Request<Incoming>) -> Result<AdminResponse, Problem> {
    let path = req.uri().path().to_owned();
    let api = path.starts_with("/v1/");
    if api && !admin.token.admits(req.headers()) {
        return Err(Problem::new(
            ProblemCode::Unauthorized,
            "send Authorization: Bearer <admin token>",
        ));
    }
    let not_found = || Problem::new(ProblemCode::NotFound, format!("no admin route {path}"));
    let matched = admin.routes.at(&path).map_err(|_| not_found())?;
    let route = *matched.value;
    let param = |name: &str| matched.params.get(name).map(str::to_owned);
    let (id, action) = (param("id"), param("action"));
    let control = &admin.control;
    let method = req.method().clone();
    match (route, &method) {
        (Route::Healthz, &Method::GET) => Ok(text(StatusCode::OK, "ok\n")),
        (Route::Readyz, &Method::GET) => Ok(readiness(control)),
        (Route::Metrics, &Method::GET) => metrics(control, &req),
        (Route::Console(body, content_type), &Method::GET) => Ok(page(body, content_type)),
        (Route::Licenses, &Method::GET) => Ok(json(
            StatusCode::OK,
            &views::licenses(
                &control.snapshot(),
                control.shared().clock.as_ref(),
                control.shared().fleet.as_deref(),
            ),
        )),
        (Route::Licenses, &Method::POST) => upload_license(control, req).await,
        (Route::License, &Method::DELETE) => remove_license(control, id.as_deref()).await,
        (Route::Flows, &Method::GET) => {
            Ok(json(StatusCode::OK, &views::flows(&control.snapshot())))
        }
        (Route::FlowAction, &Method::POST) if is_flow_action(action.as_deref()) => {
            flow_action(control, id.as_deref(), action.as_deref()).await
        }
        (Route::Entitlements, &Method::GET) => Ok(json(
            StatusCode::OK,
            &views::entitlements(&control.snapshot()),
        )),
        (Route::Status, &Method::GET) => Ok(json(
            StatusCode::OK,
            &control.status().await.map_err(failed)?,
        )),
        (Route::Usage, &Method::GET) => usage(control, req.uri().query()).await,
        (Route::Audit, &Method::GET) => audit(control, req.uri().query()).await,
        (Route::Healthz | Route::Readyz | Route::Metrics | Route::Console(..), _) => {
            Err(not_found())
        }
        _ => Err(Problem::new(
            ProblemCode::MethodNotAllowed,
            format!("{method} is not allowed on {path}"),
        )),
    }
}

fn is_flow_action(action: Option<&str>) -> bool {
    matches!(action, Some("enable" | "disable"))
}

fn readiness(control: &Control) -> AdminResponse {
    if control.is_ready() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// `GET /metrics` in the format the scraper's `Accept` prefers.
fn metrics(control: &Control, req: &Request<Incoming>) -> Result<AdminResponse, Problem> {
    let format = metrics::Format::negotiate(req.headers());
    let body = metrics::render(control, format).map_err(|_| {
        Problem::new(
            ProblemCode::InternalError,
            "the metrics could not be encoded",
        )
    })?;
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(response)
}

/// `POST /v1/licenses`: 201 and the license, with the flows it disabled.
async fn upload_license(
    control: &Control,
    req: Request<Incoming>,
) -> Result<AdminResponse, Problem> {
    let body = read_license_upload(req).await?;
    let (id, disabled) = control.upload_license(body).await.map_err(Problem::from)?;
    let snapshot = control.snapshot();
    let now = control.shared().clock.now();
    let mut view = snapshot.license(&id).map_or(Value::Null, |i| {
        views::license(
            &snapshot,
            &snapshot.licenses[i as usize],
            now,
            control.shared().fleet.as_deref(),
        )
    });
    if let Value::Object(map) = &mut view {
        map.insert("disabled_flows".into(), disabled.into());
    }
    Ok(json(StatusCode::CREATED, &view))
}

/// `DELETE /v1/licenses/{id}`: 204.
async fn remove_license(control: &Control, id: Option<&str>) -> Result<AdminResponse, Problem> {
    control
        .remove_license(id.unwrap_or_default())
        .await
        .map_err(Problem::from)?;
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// `POST /v1/flows/{id}/enable|disable`: 200 and the flow.
async fn flow_action(
    control: &Control,
    id: Option<&str>,
    action: Option<&str>,
) -> Result<AdminResponse, Problem> {
    let id = id.unwrap_or_default();
    if action == Some("enable") {
        control.enable_flow(id).await.map_err(Problem::from)?;
    } else {
        control.disable_flow(id).await.map_err(Problem::from)?;
    }
    let snapshot = control.snapshot();
    let index = snapshot.flow(id).ok_or_else(|| {
        Problem::from(Refusal::NotFound(format!("flow {id:?} is not configured")))
    })?;
    Ok(json(StatusCode::OK, &views::flow(&snapshot, index)))
}

/// `GET /v1/usage?month=YYYY-MM`: records per license and flow (this month by default).
async fn usage(control: &Control, query: Option<&str>) -> Result<AdminResponse, Problem> {
    let month = match query_param(query, "month") {
        Some(label) => parse_month(&label)
            .ok_or_else(|| bad_query(format!("month={label:?} is not YYYY-MM")))?,
        None => month_index(control.shared().clock.now(), control.snapshot().tz),
    };
    let usage = control.usage(month).await.map_err(store_failed)?;
    Ok(json(StatusCode::OK, &usage))
}

/// `GET /v1/audit?limit=N&before=CURSOR`: a page of the audit trail, newest first.
async fn audit(control: &Control, query: Option<&str>) -> Result<AdminResponse, Problem> {
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
    let page = control.audit(limit, before).await.map_err(store_failed)?;
    Ok(json(StatusCode::OK, &page))
}

/// The value of one query parameter, percent-decoded (`+` as space, as forms write it).
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn bad_query(detail: String) -> Problem {
    Problem::new(ProblemCode::BadRequest, detail)
}

fn failed(err: ControlError) -> Problem {
    Problem::new(ProblemCode::InternalError, err.to_string())
}

fn store_failed(err: ControlError) -> Problem {
    Problem::new(ProblemCode::StoreUnavailable, err.to_string())
}

/// Reads an upload, at most one byte past the license size limit.
async fn read_license_upload(req: Request<Incoming>) -> Result<Bytes, Problem> {
    let limited = Limited::new(req.into_body(), MAX_LICENSE_BYTES + 1);
    let bytes = limited
        .collect()
        .await
        .map_err(|err| {
            Problem::new(
                ProblemCode::InvalidLicense,
                format!("cannot read the upload: {err}"),
            )
        })?
        .to_bytes();
    if bytes.len() > MAX_LICENSE_BYTES {
        return Err(Problem::new(
            ProblemCode::InvalidLicense,
            format!(
                "the upload is over the {} KiB limit of a license file",
                MAX_LICENSE_BYTES / 1024
            ),
        ));
    }
    Ok(bytes)
}

fn page(body: &'static str, content_type: &'static str) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_found_and_unknown_paths_are_not() {
        let routes = routes();
        let cases = [
            ("/healthz", Route::Healthz),
            (
                "/",
                Route::Console(CONSOLE_HTML, "text/html; charset=utf-8"),
            ),
            ("/v1/licenses", Route::Licenses),
            ("/v1/licenses/LIC-1", Route::License),
            ("/v1/flows/incidents/enable", Route::FlowAction),
            ("/v1/audit", Route::Audit),
        ];
        for (path, route) in cases {
            assert_eq!(*routes.at(path).unwrap().value, route, "{path}");
        }
        let flow = routes.at("/v1/flows/incidents/disable").unwrap();
        assert_eq!(flow.params.get("id"), Some("incidents"));
        assert_eq!(flow.params.get("action"), Some("disable"));
        for path in [
            "/v1",
            "/v1/nope",
            "/v1/licenses/a/b",
            "/metrics/x",
            "/v2/flows",
        ] {
            assert!(routes.at(path).is_err(), "{path}");
        }
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query_param(Some("month=2026%2D11&limit=5"), "month").as_deref(),
            Some("2026-11")
        );
        assert_eq!(query_param(Some("a=1&b=x+y"), "b").as_deref(), Some("x y"));
        assert_eq!(query_param(Some("a=1"), "b"), None);
        assert_eq!(query_param(None, "a"), None);
        assert!(is_flow_action(Some("enable")) && !is_flow_action(Some("frob")));
    }
}
