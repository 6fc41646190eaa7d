//! HTTP towards tollgate with a real client (hyper, HTTP/1.1 or h2 with prior knowledge):
//! whole collected responses, the assertions on refusals and upstream answers, and
//! requests on the engine and dedicated listeners.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::process::Tollgate;

/// Upper bound on any single HTTP exchange made by a test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client the tests use towards tollgate (plain HTTP, HTTP/1.1 or h2).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A plain-HTTP/1.1 client.
pub fn http1_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A client that speaks HTTP/2 with prior knowledge over plain TCP.
pub fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A whole response as the test client received it.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: StatusCode,
    /// Protocol version of the answer.
    pub version: hyper::Version,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body, collected.
    pub body: Bytes,
}

impl Resp {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", self.text()))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a refusal by the proxy: status, `application/problem+json`,
    /// `Tollgate-Reason`, the `type` URN and the `status` field. Returns the problem body.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> Value {
        let problem = self.assert_admin_problem(status, code);
        assert_eq!(
            self.header("tollgate-reason"),
            Some(code),
            "Tollgate-Reason header for {code}: {:?}",
            self.headers
        );
        problem
    }

    /// Asserts a problem answer of the admin API: status, `application/problem+json`, the
    /// `type` URN and the `status` field.
    #[track_caller]
    pub fn assert_admin_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status} {code}, got {} with body {}",
            self.status,
            self.text()
        );
        let content_type = self.header("content-type").unwrap_or("");
        assert!(
            content_type.starts_with("application/problem+json"),
            "content-type {content_type:?} for {code}: {}",
            self.text()
        );
        let problem = self.json();
        assert_eq!(
            problem["type"],
            format!("urn:tollgate:problem:{code}"),
            "{problem}"
        );
        assert_eq!(problem["status"], status, "{problem}");
        assert!(
            problem["title"].is_string(),
            "problem without a title: {problem}"
        );
        problem
    }

    /// Asserts a 200 from upstream `name` and returns what it echoed as JSON.
    #[track_caller]
    pub fn assert_upstream_ok(&self, name: &str) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "expected 200 from upstream {name}, got {}: {}",
            self.status,
            self.text()
        );
        assert_eq!(self.header("x-upstream"), Some(name), "{:?}", self.headers);
        self.json()
    }
}

/// Sends one request with `client` and collects the answer (30 s bound).
pub async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Result<Resp, String> {
    let uri = req.uri().clone();
    let exchange = async {
        let response = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e:?}"))?
            .to_bytes();
        Ok(Resp {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer to {uri} within {REQUEST_TIMEOUT:?}")),
    }
}

/// A request with the flow header to `addr` (the engine listener), for load generators that
/// run in their own tasks.
pub async fn flow_request(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    flow: &str,
    body: impl Into<Bytes>,
) -> Result<Resp, String> {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("tollgate-flow", flow)
        .body(Full::new(body.into()))
        .unwrap_or_else(|err| panic!("a request for {addr}{path}: {err}"));
    send(client, req).await
}

/// Requests to the sidecar's listeners.
impl Tollgate {
    /// Sends a request to `addr` with `client`; panics (with tollgate's log) on transport errors.
    pub async fn request_with(
        &self,
        client: &HttpClient,
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder
            .body(Full::new(body.into()))
            .unwrap_or_else(|err| panic!("a request for {addr}{path} with {headers:?}: {err}"));
        match send(client, req).await {
            Ok(resp) => resp,
            Err(err) => panic!(
                "request to {addr}{path} failed: {err}\ntollgate log:\n{}",
                self.logs()
            ),
        }
    }

    /// A request on the engine listener with the HTTP/1.1 client.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        self.request_with(&self.client, self.engine, method, path, headers, body)
            .await
    }

    /// `GET path` on the engine listener, with the flow header when `flow` is given.
    pub async fn get(&self, path: &str, flow: Option<&str>) -> Resp {
        let headers: Vec<(&str, &str)> = flow.map(|f| ("tollgate-flow", f)).into_iter().collect();
        self.request(Method::GET, path, &headers, Bytes::new())
            .await
    }

    /// `POST path` on the engine listener with `body`.
    pub async fn post(&self, path: &str, flow: Option<&str>, body: impl Into<Bytes>) -> Resp {
        let headers: Vec<(&str, &str)> = flow.map(|f| ("tollgate-flow", f)).into_iter().collect();
        self.request(Method::POST, path, &headers, body).await
    }
}
