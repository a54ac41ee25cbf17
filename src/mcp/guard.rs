//! What `/mcp` checks before rmcp's transport sees a request: the browser `Origin` (the
//! specification asks servers to refuse a foreign origin, against DNS rebinding and
//! cross-site requests) and the bound on open sessions. Refusals carry a JSON-RPC error
//! body, since MCP clients read one from any 4xx or 5xx.

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, web};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde_json::json;

/// How long a client refused for want of sessions should wait before it tries again.
const SESSIONS_FULL_RETRY_SECS: u64 = 5;

#[derive(Clone)]
pub struct Guard {
    pub sessions: Arc<LocalSessionManager>,
    pub max_sessions: usize,
    pub allowed_origins: Arc<Vec<String>>,
}

fn refusal(status: StatusCode, code: i32, message: String) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.insert_header((header::RETRY_AFTER, SESSIONS_FULL_RETRY_SECS.to_string()));
    }
    response.json(json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": code, "message": message},
    }))
}

/// Whether a browser origin may use the endpoint: one the operator listed, or the
/// gateway's own (the origin's authority is the `Host` the request was sent to).
pub fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    let origin = origin.trim_end_matches('/');
    if allowed.iter().any(|a| a.trim_end_matches('/') == origin) {
        return true;
    }
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    let Some(origin_host) = url.host_str() else {
        return false;
    };
    let authority = match url.port() {
        Some(port) => format!("{origin_host}:{port}"),
        None => origin_host.to_owned(),
    };
    host.is_some_and(|h| h.eq_ignore_ascii_case(&authority))
}

/// Whether a POST body is (or holds, in a batch) an `initialize` request.
fn is_initialize(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let one =
        |v: &serde_json::Value| v.get("method").and_then(|m| m.as_str()) == Some("initialize");
    match &value {
        serde_json::Value::Array(items) => items.iter().any(one),
        v => one(v),
    }
}

impl Guard {
    pub async fn check(
        self,
        mut req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok());
            let origin = origin.to_str().unwrap_or("");
            if !origin_allowed(origin, host, &self.allowed_origins) {
                let message = format!("origin '{origin}' may not use this endpoint");
                return Ok(req.into_response(refusal(StatusCode::FORBIDDEN, -32600, message)));
            }
        }
        // Only a request that could open a session is looked at, and only at capacity.
        if req.method() == Method::POST
            && !req.headers().contains_key("mcp-session-id")
            && self.sessions.sessions.read().await.len() >= self.max_sessions
        {
            let body = req.extract::<web::Bytes>().await?;
            if is_initialize(&body) {
                let message = format!(
                    "{} MCP sessions are open, the most this gateway allows; retry later",
                    self.max_sessions
                );
                return Ok(req.into_response(refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    -32000,
                    message,
                )));
            }
            req.set_payload(actix_web::dev::Payload::from(body));
        }
        Ok(next.call(req).await?.map_into_boxed_body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_and_listed_origins_pass_others_do_not() {
        let listed = vec!["https://app.example".to_owned()];
        assert!(origin_allowed(
            "http://127.0.0.1:8080",
            Some("127.0.0.1:8080"),
            &[]
        ));
        assert!(origin_allowed(
            "https://app.example/",
            Some("gw:1"),
            &listed
        ));
        assert!(!origin_allowed(
            "http://evil.example",
            Some("127.0.0.1:8080"),
            &listed
        ));
        assert!(!origin_allowed(
            "http://127.0.0.1:9999",
            Some("127.0.0.1:8080"),
            &[]
        ));
        assert!(!origin_allowed("null", Some("127.0.0.1:8080"), &[]));
        assert!(!origin_allowed("http://127.0.0.1:8080", None, &[]));
    }

    #[test]
    fn initialize_is_found_alone_or_in_a_batch() {
        assert!(is_initialize(
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#
        ));
        assert!(is_initialize(
            br#"[{"method":"ping"},{"method":"initialize"}]"#
        ));
        assert!(!is_initialize(br#"{"method":"tools/list"}"#));
        assert!(!is_initialize(b"not json"));
    }
}
