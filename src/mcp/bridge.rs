//! How `/mcp` requests reach rmcp's Streamable HTTP server (a `tower`-style service on
//! `http` 1.x types) from actix-web, and on which threads rmcp then works.
//!
//! rmcp spawns a session's tasks (its worker, the loop that dispatches each message,
//! a task per request) with `tokio::spawn`, on whatever runtime runs the request that
//! opened the session. Called straight from an actix worker, that is the worker's own
//! single-threaded runtime: every message of a session was then handled on one core,
//! whichever worker took the connection, and a busy session could not use the other
//! (one session at concurrency 64 served half of what four sessions served together).
//! So each request is handed to the multi-threaded runtime the upstream clients live on:
//! a session's work spreads over its threads, and a tool call reaches its upstream's
//! client without leaving that runtime. (A `tools/call` that needs no stream is answered
//! on the actix worker instead, without rmcp: see `mcp::fast`.)
//!
//! The request body is read here, bounded: past the limit the bridge answers 413 itself,
//! with a JSON-RPC error body, and stops reading. The `Authorization` header never reaches rmcp or the
//! handler (the auth guard has already read it; nothing downstream may forward it); the
//! guard's verdict travels as the request's [`Caller`] extension instead.
//!
//! Before rmcp sees a request, the [`Sessions`] say whether its key owns the session it
//! names, and whether an `initialize` finds room. Refusals carry a JSON-RPC error body,
//! since MCP clients read one from any 4xx or 5xx.

use std::sync::Arc;

use actix_web::http::header::{self as actix_header, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures_util::StreamExt;
use http_body_util::{BodyDataStream, Full};
use rmcp::transport::StreamableHttpService;
use serde_json::Value;

use super::answer::{self, Framed, ResponseMode};
use super::handler::McpHandler;
use super::sessions::Sessions;
use super::tagged::TaggedSessions;

pub type RmcpService = StreamableHttpService<McpHandler, TaggedSessions>;

/// What each `/mcp` request needs; shared by every actix worker.
pub struct Bridge {
    pub service: Arc<RmcpService>,
    /// Where rmcp's work runs (see the module's comment).
    pub runtime: tokio::runtime::Handle,
    pub body_limit: usize,
    pub sessions: Arc<Sessions>,
    /// When an answer may be plain JSON instead of a stream.
    pub response: ResponseMode,
    /// Calls answered without rmcp's session machinery.
    pub fast: super::fast::Fast,
}

/// How long a client refused for want of sessions should wait before it tries again.
const SESSIONS_FULL_RETRY_SECS: u64 = 5;

fn refusal(status: StatusCode, code: i32, message: String) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.insert_header((
            actix_header::RETRY_AFTER,
            SESSIONS_FULL_RETRY_SECS.to_string(),
        ));
    }
    response.json(serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": code, "message": message},
    }))
}

/// Whether a parsed POST body is (or holds, in a batch) an `initialize` request, read as
/// rmcp reads it (serde, so escapes such as `\u0069nitialize` are the same method).
fn is_initialize(value: &Value) -> bool {
    let one = |v: &Value| v.get("method").and_then(|m| m.as_str()) == Some("initialize");
    match value {
        Value::Array(items) => items.iter().any(one),
        v => one(v),
    }
}

/// Why one message is not a JSON-RPC 2.0 message, if it is not.
fn invalid_message(message: &Value) -> Option<&'static str> {
    let Value::Object(fields) = message else {
        return Some("a message must be a JSON object");
    };
    if fields.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some("\"jsonrpc\" must be \"2.0\"");
    }
    let id_ok = |id: &Value| id.is_string() || id.is_i64() || id.is_u64();
    match (fields.get("method"), fields.get("id")) {
        (Some(Value::String(_)), None) => None,
        (Some(Value::String(_)), Some(id)) if id_ok(id) => None,
        (Some(Value::String(_)), Some(_)) => Some("\"id\" must be a string or an integer"),
        (Some(_), _) => Some("\"method\" must be a string"),
        // A response to a request of ours (sampling, elicitation).
        (None, Some(id))
            if id_ok(id) && (fields.contains_key("result") || fields.contains_key("error")) =>
        {
            None
        }
        (None, _) => {
            Some("a request needs \"method\"; a response, \"id\" and \"result\" or \"error\"")
        }
    }
}

/// The POST body as JSON, or the JSON-RPC error answer for it (-32700 unparseable,
/// -32600 not a valid message), so every client reads a JSON error body.
#[allow(clippy::result_large_err)]
fn parse_post(body: &[u8]) -> Result<Value, HttpResponse> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| refusal(StatusCode::BAD_REQUEST, -32700, format!("Parse error: {e}")))?;
    let invalid = match &value {
        Value::Array(items) if items.is_empty() => Some("an empty batch"),
        Value::Array(items) => items.iter().find_map(invalid_message),
        one => invalid_message(one),
    };
    match invalid {
        Some(why) => Err(refusal(
            StatusCode::BAD_REQUEST,
            -32600,
            format!("Invalid Request: {why}"),
        )),
        None => Ok(value),
    }
}

/// The actix handler for every method on `/mcp`.
pub async fn handle(
    request: HttpRequest,
    mut payload: web::Payload,
    bridge: web::Data<Bridge>,
) -> actix_web::Result<HttpResponse> {
    let caller = crate::auth::Identity::caller(&request.extensions());
    let key = caller.as_ref().and_then(|c| c.key.clone());
    let session = request
        .headers()
        .get("mcp-session-id")
        .map(|id| id.to_str().unwrap_or_default().to_owned());
    if let Some(id) = &session
        && !bridge.sessions.belongs(id, key.as_deref()).await
    {
        // Not this key's, or not one we opened: as if it did not exist.
        let message = "Session not found: it ended, or it is not this key's".to_owned();
        return Ok(refusal(StatusCode::NOT_FOUND, -32001, message));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) if crate::deadline::is_timeout(&e) => {
                return Ok(refusal(StatusCode::REQUEST_TIMEOUT, -32600, e.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        if body.len() + chunk.len() > bridge.body_limit {
            // Answered here, as a JSON-RPC error like every other refusal (rmcp's own 413
            // is plain text).
            let message = format!("the request body is over {} bytes", bridge.body_limit);
            return Ok(refusal(StatusCode::PAYLOAD_TOO_LARGE, -32600, message));
        }
        body.extend_from_slice(&chunk);
    }
    let is_post = request.method() == Method::POST;
    let accepts = answer::Accepts::of_lines(
        request
            .headers()
            .get_all(actix_header::ACCEPT)
            .map(|v| v.to_str().ok()),
    );
    if is_post && accepts.neither() {
        let message = "Not Acceptable: accept application/json, text/event-stream or both".into();
        return Ok(refusal(StatusCode::NOT_ACCEPTABLE, -32600, message));
    }
    let json_body = request
        .headers()
        .get(actix_header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // As rmcp reads it: the media type, in any case (`Application/JSON` is JSON too,
        // and must meet the same checks and the same session bound).
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    let parsed = match is_post && json_body {
        true => match parse_post(&body) {
            Ok(value) => Some(value),
            Err(answer) => return Ok(answer),
        },
        false => None,
    };
    if let (Some(records), Some(id)) = (&bridge.sessions.records, &session) {
        // In a cluster: what belongs to another instance's copy of the session goes there.
        if request.method() == Method::DELETE && !bridge.sessions.holds(id).await {
            bridge.sessions.forget(id);
            records.end(id).await;
            return Ok(HttpResponse::NoContent().finish());
        }
        if let Some(message) = &parsed
            && let Some(to) = super::tagged::addressee(message)
            && to != records.origin()
        {
            records.answer(to, id, message.clone()).await;
            return Ok(HttpResponse::Accepted().finish());
        }
    }
    let collapse = parsed
        .as_ref()
        .is_some_and(|message| bridge.response.may_collapse(message, accepts));
    if collapse
        && let (Some(id), Some(message)) = (&session, &parsed)
        && bridge.sessions.holds(id).await
    {
        // A header that is not text is rmcp's to refuse.
        let version = request
            .headers()
            .get("mcp-protocol-version")
            .map(|v| v.to_str().ok());
        if version.is_none_or(|v| v.is_some())
            && let Some(call) = bridge
                .fast
                .answer(id, message, version.flatten(), caller.clone())
        {
            return Ok(call.await);
        }
    }
    // Everything else goes to rmcp, as an `http` request.
    let mut builder = http::Request::builder()
        .method(request.method().as_str())
        .uri(request.uri().to_string())
        .version(match request.version() {
            actix_web::http::Version::HTTP_10 => http::Version::HTTP_10,
            actix_web::http::Version::HTTP_2 => http::Version::HTTP_2,
            _ => http::Version::HTTP_11,
        });
    if is_post {
        // rmcp takes only a header listing both; what this client can read is decided
        // here (`accepts`), so rmcp is told what it requires.
        builder = builder.header(http::header::ACCEPT, "application/json, text/event-stream");
        if bridge.response.json_only(accepts) {
            builder = builder.extension(super::request::JsonOnly);
        }
    }
    for (name, value) in request.headers() {
        if name == actix_web::http::header::AUTHORIZATION
            || (is_post && name == actix_web::http::header::ACCEPT)
        {
            continue;
        }
        // actix's header types are `http` 0.2's; names and values are checked again.
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            builder = builder.header(name, value);
        }
    }
    if let Some(caller) = caller {
        builder = builder.extension(caller);
    }
    let sessionless_post = is_post && session.is_none();
    let turn = match sessionless_post && parsed.as_ref().is_some_and(is_initialize) {
        true => match bridge.sessions.clone().open_turn().await {
            Some(turn) => Some(turn),
            None => {
                let message = format!(
                    "{} MCP sessions are open, the most this gateway allows; retry later",
                    bridge.sessions.max
                );
                return Ok(refusal(StatusCode::SERVICE_UNAVAILABLE, -32000, message));
            }
        },
        false => None,
    };
    let bridged = builder
        .body(Full::new(body.freeze()))
        .map_err(|e| actix_web::error::ErrorBadRequest(format!("malformed request: {e}")))?;
    let service = bridge.service.clone();
    let sessions = bridge.sessions.clone();
    // The turn and the owner's record go with the request's task: if the client goes
    // away meanwhile, the session rmcp opens is still counted and owned.
    let response = bridge
        .runtime
        .spawn(async move {
            let response = service.handle(bridged).await;
            if sessionless_post
                && let Some(id) = response
                    .headers()
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
            {
                sessions.record(id, key).await;
            }
            drop(turn);
            response
        })
        .await
        .map_err(|e| actix_web::error::ErrorInternalServerError(format!("MCP transport: {e}")))?;
    let (parts, body) = response.into_parts();
    let mut status = parts.status.as_u16();
    if request.method() == Method::DELETE
        && parts.status.is_success()
        && let Some(id) = &session
    {
        bridge.sessions.forget(id);
        // rmcp says 202; clients expect 200 or 204 for a session that ended (the Python
        // SDK logs "Session termination failed: 202" at every close).
        status = 204;
    }
    let is_stream = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    // The body is polled here; rmcp's tasks feed it from the other runtime.
    let body = BodyDataStream::new(body);
    let framed = match collapse && is_stream && parts.status == http::StatusCode::OK {
        true => Ok(answer::frame(body, bridge.response.json_only(accepts)).await),
        false => Err(body),
    };
    let mut answer = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    );
    let json = matches!(framed, Ok(Framed::Json(_)));
    for (name, value) in &parts.headers {
        // A JSON body has its own type, and nothing of a stream's (`no-cache` is for
        // event streams that proxies must not buffer).
        if json && (name == http::header::CONTENT_TYPE || name == http::header::CACHE_CONTROL) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            answer.append_header((name, value));
        }
    }
    Ok(match framed {
        Err(body) => answer.streaming(body),
        Ok(Framed::Json(response)) => answer.content_type("application/json").body(response),
        Ok(Framed::Stream(read, rest)) => {
            let read = futures_util::stream::once(async move { Ok(read) });
            answer.streaming(read.chain(rest))
        }
    })
}
