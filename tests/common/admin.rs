//! The admin API client: authenticated requests on the admin listener and the views the
//! tests read through it (flows, licenses, status, usage, audit, entitlements), plus
//! enabling and disabling flows.

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::Value;

use super::client::Resp;
use super::process::Tollgate;

/// The admin API of a running sidecar.
impl Tollgate {
    /// An admin request with an explicit `Authorization` (None: no header).
    pub async fn admin_request(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Resp {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        self.request_with(&self.client, self.admin, method, path, &headers, body)
            .await
    }

    /// An admin request with the right bearer token.
    pub async fn admin(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Resp {
        let auth = format!("Bearer {}", self.token);
        self.admin_request(method, path, Some(&auth), body).await
    }

    /// `GET` on the admin API with the token.
    pub async fn admin_get(&self, path: &str) -> Resp {
        self.admin(Method::GET, path, Bytes::new()).await
    }

    /// `POST` on the admin API with the token.
    pub async fn admin_post(&self, path: &str, body: impl Into<Bytes>) -> Resp {
        self.admin(Method::POST, path, body).await
    }

    /// `DELETE` on the admin API with the token.
    pub async fn admin_delete(&self, path: &str) -> Resp {
        self.admin(Method::DELETE, path, Bytes::new()).await
    }

    /// The status of `GET /readyz` (no token).
    pub async fn readyz(&self) -> StatusCode {
        self.admin_request(Method::GET, "/readyz", None, Bytes::new())
            .await
            .status
    }

    /// The status of `GET /healthz` (no token).
    pub async fn healthz(&self) -> StatusCode {
        self.admin_request(Method::GET, "/healthz", None, Bytes::new())
            .await
            .status
    }

    /// The text of `GET /metrics` (Prometheus text format), asserting 200.
    pub async fn metrics_text(&self) -> String {
        let resp = self
            .admin_request(Method::GET, "/metrics", None, Bytes::new())
            .await;
        assert_eq!(resp.status, StatusCode::OK, "GET /metrics: {}", resp.text());
        resp.text()
    }

    /// `GET path` on the admin API with the token, as JSON, asserting 200.
    pub async fn admin_json(&self, path: &str) -> Value {
        let resp = self.admin_get(path).await;
        assert_eq!(resp.status, StatusCode::OK, "GET {path}: {}", resp.text());
        resp.json()
    }

    /// `GET /v1/flows`, asserting 200.
    pub async fn flows(&self) -> Vec<Value> {
        match self.admin_json("/v1/flows").await {
            Value::Array(flows) => flows,
            other => panic!("/v1/flows is not an array: {other}"),
        }
    }

    /// One flow from `GET /v1/flows`.
    pub async fn flow(&self, id: &str) -> Value {
        self.flows()
            .await
            .into_iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("flow {id} not in /v1/flows"))
    }

    /// `GET /v1/licenses`, asserting 200.
    pub async fn licenses(&self) -> Vec<Value> {
        match self.admin_json("/v1/licenses").await {
            Value::Array(licenses) => licenses,
            other => panic!("/v1/licenses is not an array: {other}"),
        }
    }

    /// One license from `GET /v1/licenses`, if installed.
    pub async fn license(&self, id: &str) -> Option<Value> {
        self.licenses().await.into_iter().find(|l| l["id"] == id)
    }

    /// `records` of license `id` from `GET /v1/licenses`.
    pub async fn records(&self, id: &str) -> Value {
        let license = self
            .license(id)
            .await
            .unwrap_or_else(|| panic!("license {id} not in /v1/licenses"));
        license["records"].clone()
    }

    /// `GET /v1/status`, as JSON, asserting 200.
    pub async fn status(&self) -> Value {
        self.admin_json("/v1/status").await
    }

    /// `GET /v1/entitlements`, as JSON, asserting 200.
    pub async fn entitlements(&self) -> Value {
        self.admin_json("/v1/entitlements").await
    }

    /// `GET /v1/usage` (current month) or `GET /v1/usage?month=…`, as JSON, asserting 200.
    pub async fn usage(&self, month: Option<&str>) -> Value {
        match month {
            Some(month) => self.admin_json(&format!("/v1/usage?month={month}")).await,
            None => self.admin_json("/v1/usage").await,
        }
    }

    /// `used` of license `id` in a `/v1/usage` answer (panics if it is not listed).
    pub async fn usage_of_license(&self, month: Option<&str>, id: &str) -> u64 {
        let usage = self.usage(month).await;
        usage["licenses"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["id"] == id))
            .and_then(|l| l["used"].as_u64())
            .unwrap_or_else(|| panic!("license {id} not in /v1/usage: {usage}"))
    }

    /// `used` of flow `id` in a `/v1/usage` answer (panics if it is not listed).
    pub async fn usage_of_flow(&self, month: Option<&str>, id: &str) -> u64 {
        let usage = self.usage(month).await;
        usage["flows"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["id"] == id))
            .and_then(|f| f["used"].as_u64())
            .unwrap_or_else(|| panic!("flow {id} not in /v1/usage: {usage}"))
    }

    /// The newest `limit` audit events (`GET /v1/audit?limit=…`), newest first.
    pub async fn audit(&self, limit: usize) -> Vec<Value> {
        let path = format!("/v1/audit?limit={limit}");
        let answer = self.admin_json(&path).await;
        answer["events"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("GET {path}: no events array: {answer}"))
    }

    /// `POST /v1/flows/{id}/enable`.
    pub async fn enable(&self, id: &str) -> Resp {
        self.admin_post(&format!("/v1/flows/{id}/enable"), "").await
    }

    /// `POST /v1/flows/{id}/disable`, asserting 200.
    pub async fn disable(&self, id: &str) {
        let resp = self
            .admin_post(&format!("/v1/flows/{id}/disable"), "")
            .await;
        assert_eq!(resp.status, StatusCode::OK, "disable {id}: {}", resp.text());
    }
}
