//! Problem answers (RFC 9457): `application/problem+json` with `type`
//! `urn:tollgate:problem:<code>`, the SPEC §5 fields, and a `Tollgate-Reason` header.

use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use serde_json::{Map, Value};

use super::body::ProxyBody;

/// The header every denied response carries, naming the problem code.
pub const TOLLGATE_REASON: &str = "tollgate-reason";

/// A refusal or failure to answer with, built on the request path.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Problem code: the `type` suffix and the `Tollgate-Reason` value.
    pub code: &'static str,
    /// Human explanation.
    pub detail: String,
    /// Extra members: `flow`, `instance`, `license`, `reason`, numbers.
    pub fields: Map<String, Value>,
    /// Seconds until a retry makes sense (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem with a status, code and detail and no extra fields.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            detail: detail.into(),
            fields: Map::new(),
            retry_after: None,
        }
    }

    /// Adds a member when it has a value.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Problem {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    /// The problem document as JSON.
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            format!("urn:tollgate:problem:{}", self.code).into(),
        );
        body.insert("title".into(), title(self.code).into());
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("detail".into(), self.detail.clone().into());
        for (name, value) in &self.fields {
            body.insert(name.clone(), value.clone());
        }
        Value::Object(body)
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<ProxyBody> {
        let body = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        let mut response = Response::new(ProxyBody::local(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(TOLLGATE_REASON, HeaderValue::from_static(self.code));
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A short, fixed summary of each problem code.
fn title(code: &str) -> &'static str {
    match code {
        "unknown-route" => "No route to a configured instance",
        "flow-required" => "The request names no flow",
        "unknown-flow" => "The flow is not configured",
        "flow-instance-mismatch" => "The instance is not one of the flow's systems",
        "flow-disabled" => "The flow is disabled",
        "records-limit-exceeded" => "The transferred-records limit is reached",
        "license-invalid" => "No valid license covers the flow",
        "upstream-unavailable" => "The target system is unreachable",
        "upstream-timeout" => "The target system did not answer in time",
        "store-unavailable" => "The count could not be stored",
        "bad-request" => "The request is malformed",
        "header-too-large" => "The request head is too large",
        "request-timeout" => "The request body stopped arriving",
        "internal-error" => "tollgate failed to handle the request",
        "not-implemented" => "The request uses a feature tollgate does not forward",
        "points-exhausted" => "No license point is free",
        "entitlement-exceeded" => "A subscription entitlement would be exceeded",
        "unauthorized" => "A valid admin token is required",
        "not-found" => "No such resource",
        "invalid-license" => "The license file is refused",
        "method-not-allowed" => "Method not allowed",
        _ => "Request refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_carry_type_status_fields_and_reason_header() {
        let problem = Problem::new(
            StatusCode::FORBIDDEN,
            "flow-disabled",
            "flow \"x\" is disabled",
        )
        .with("flow", "x")
        .with("reason", "operator");
        let json = problem.to_json();
        assert_eq!(json["type"], "urn:tollgate:problem:flow-disabled");
        assert_eq!(json["status"], 403);
        assert_eq!(json["flow"], "x");
        assert_eq!(json["reason"], "operator");
        let response = problem.into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[TOLLGATE_REASON], "flow-disabled");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    }
}
