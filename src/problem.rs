//! Problem answers (RFC 9457): `application/problem+json` with `type`
//! `urn:tollgate:problem:<code>`, the fields a refusal names (`flow`, `instance`, `license`,
//! `reason`, numbers), and a `Tollgate-Reason` header. Every code is a [`ProblemCode`]: its
//! spelling, default status, title and metric label live in one place.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use serde_json::{Map, Value};

/// The header every refused response carries, naming the problem code.
pub const TOLLGATE_REASON: &str = "tollgate-reason";

macro_rules! problem_codes {
    ($($variant:ident => $code:literal, $status:ident, $title:literal;)*) => {
        /// Every way a request or an admin call can be refused or fail.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProblemCode {
            $(
                #[doc = $title]
                $variant,
            )*
        }

        impl ProblemCode {
            /// Every code, in a fixed order (metric slots follow it).
            pub const ALL: &'static [ProblemCode] = &[$(ProblemCode::$variant),*];

            /// The code as `type`, `Tollgate-Reason` and the metrics' `decision` label spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ProblemCode::$variant => $code,)*
                }
            }

            /// The status it answers with, unless the caller says otherwise (the admin API
            /// answers licensing conflicts with 409).
            pub fn status(self) -> StatusCode {
                match self {
                    $(ProblemCode::$variant => StatusCode::$status,)*
                }
            }

            /// The metrics' `decision` label of a request shadow mode let through that this
            /// code would have refused.
            pub fn shadow_label(self) -> &'static str {
                match self {
                    $(ProblemCode::$variant => concat!("shadow:", $code),)*
                }
            }

            /// Whether shadow mode lets a request through that this code refuses: the
            /// license decisions (routing, framing and operator disables are enforced always).
            pub fn is_license_decision(self) -> bool {
                self.license_decision_index().is_some()
            }

            /// The code's place in [`ProblemCode::LICENSE_DECISIONS`] (metric and log slots).
            pub fn license_decision_index(self) -> Option<usize> {
                ProblemCode::LICENSE_DECISIONS.iter().position(|&code| code == self)
            }

            /// A short, fixed summary: the problem's `title`.
            pub fn title(self) -> &'static str {
                match self {
                    $(ProblemCode::$variant => $title,)*
                }
            }
        }
    };
}

problem_codes! {
    UnknownRoute => "unknown-route", NOT_FOUND, "No route to a configured instance";
    ProxyAuthRequired => "proxy-auth-required", PROXY_AUTHENTICATION_REQUIRED, "The proxy password is missing or wrong";
    FlowRequired => "flow-required", FORBIDDEN, "The request names no flow";
    UnknownFlow => "unknown-flow", FORBIDDEN, "The flow is not configured";
    FlowInstanceMismatch => "flow-instance-mismatch", FORBIDDEN, "The instance is not one of the flow's systems";
    FlowDisabled => "flow-disabled", FORBIDDEN, "The flow is disabled";
    RecordsLimitExceeded => "records-limit-exceeded", TOO_MANY_REQUESTS, "The transferred-records limit is reached";
    LicenseInvalid => "license-invalid", FORBIDDEN, "No valid license covers the flow";
    UpstreamUnavailable => "upstream-unavailable", BAD_GATEWAY, "The target system is unreachable";
    UpstreamTimeout => "upstream-timeout", GATEWAY_TIMEOUT, "The target system did not answer in time";
    StoreUnavailable => "store-unavailable", SERVICE_UNAVAILABLE, "The count could not be stored";
    BadRequest => "bad-request", BAD_REQUEST, "The request is malformed";
    RequestTimeout => "request-timeout", REQUEST_TIMEOUT, "The request body stopped arriving";
    NotImplemented => "not-implemented", NOT_IMPLEMENTED, "The request uses a feature tollgate does not forward";
    HeaderTooLarge => "header-too-large", REQUEST_HEADER_FIELDS_TOO_LARGE, "The request head is too large";
    BodyTooLarge => "body-too-large", PAYLOAD_TOO_LARGE, "The bulk load's body is larger than tollgate reads";
    InternalError => "internal-error", INTERNAL_SERVER_ERROR, "tollgate failed to handle the request";
    PointsExhausted => "points-exhausted", CONFLICT, "No license point is free";
    EntitlementExceeded => "entitlement-exceeded", CONFLICT, "A subscription entitlement would be exceeded";
    Unauthorized => "unauthorized", UNAUTHORIZED, "A valid admin token is required";
    NotFound => "not-found", NOT_FOUND, "No such resource";
    InvalidLicense => "invalid-license", BAD_REQUEST, "The license file is refused";
    MethodNotAllowed => "method-not-allowed", METHOD_NOT_ALLOWED, "Method not allowed";
}

impl ProblemCode {
    /// The codes shadow mode lets through: the license decisions.
    pub const LICENSE_DECISIONS: [ProblemCode; 5] = [
        ProblemCode::FlowDisabled,
        ProblemCode::RecordsLimitExceeded,
        ProblemCode::LicenseInvalid,
        ProblemCode::UnknownFlow,
        ProblemCode::FlowRequired,
    ];
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal or failure to answer with.
#[derive(Debug, Clone)]
pub struct Problem {
    /// What went wrong.
    pub code: ProblemCode,
    /// HTTP status (the code's, unless overridden).
    pub status: StatusCode,
    /// Human explanation.
    pub detail: String,
    /// Extra members: `flow`, `instance`, `license`, `reason`, numbers.
    pub fields: Map<String, Value>,
    /// Seconds until a retry makes sense (`Retry-After`).
    pub retry_after: Option<u64>,
    /// The flow the request was tied to (its index), for the request metrics.
    pub flow: Option<u32>,
    /// The instance the request was tied to (its index), for the request metrics.
    pub instance: Option<u32>,
}

impl Problem {
    /// A problem with the code's status, a detail and no extra fields.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Problem {
        Problem {
            code,
            status: code.status(),
            detail: detail.into(),
            fields: Map::new(),
            retry_after: None,
            flow: None,
            instance: None,
        }
    }

    /// The same problem answered with another status.
    pub fn with_status(mut self, status: StatusCode) -> Problem {
        self.status = status;
        self
    }

    /// Adds a member.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Problem {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    /// Ties the problem to a flow and an instance (by index) for the request metrics.
    pub fn tied_to(mut self, flow: Option<u32>, instance: Option<u32>) -> Problem {
        self.flow = flow;
        self.instance = instance;
        self
    }

    /// The problem document as JSON.
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            format!("urn:tollgate:problem:{}", self.code).into(),
        );
        body.insert("title".into(), self.code.title().into());
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("detail".into(), self.detail.clone().into());
        for (name, value) in &self.fields {
            body.insert(name.clone(), value.clone());
        }
        Value::Object(body)
    }

    /// The HTTP response, in any body type that can hold bytes.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let body = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        let mut response = Response::new(B::from(Bytes::from(body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(
            TOLLGATE_REASON,
            HeaderValue::from_static(self.code.as_str()),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.code == ProblemCode::ProxyAuthRequired {
            // What clients (curl, libraries behind HTTPS_PROXY) need to send credentials.
            headers.insert(
                http::header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tollgate\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;

    use super::*;

    #[test]
    fn problems_carry_type_status_fields_and_reason_header() {
        let problem = Problem::new(ProblemCode::FlowDisabled, "flow \"x\" is disabled")
            .with("flow", "x")
            .with("reason", "operator")
            .tied_to(Some(3), Some(1));
        assert_eq!((problem.flow, problem.instance), (Some(3), Some(1)));
        let json = problem.to_json();
        assert_eq!(json["type"], "urn:tollgate:problem:flow-disabled");
        assert_eq!(json["title"], "The flow is disabled");
        assert_eq!(json["status"], 403);
        assert_eq!(json["flow"], "x");
        assert_eq!(json["reason"], "operator");
        let response: Response<Full<Bytes>> = problem.into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[TOLLGATE_REASON], "flow-disabled");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    }

    #[test]
    fn every_code_is_spelt_once_and_answers_an_error_status() {
        let mut seen = std::collections::HashSet::new();
        for code in ProblemCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!(code.status().as_u16() >= 400, "{code}");
            assert!(!code.title().is_empty());
            assert!(code
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-'));
        }
        let conflict =
            Problem::new(ProblemCode::LicenseInvalid, "x").with_status(StatusCode::CONFLICT);
        assert_eq!(conflict.to_json()["status"], 409);
    }
}
