//! A handshake-era `tools/call` answered without rmcp's session machinery, when nothing
//! of the call needs its stream.
//!
//! Through rmcp, each request of a session goes from the bridge to the session's worker
//! task, to its service loop, to a task of its own, and back as an SSE event that the
//! bridge reads again to answer JSON: measured, about 150 µs per call at concurrency 1
//! and half the HTTP API's throughput at 64, with the same client (BENCHMARKS.md). A call
//! whose answer is one JSON body and whose relays need no stream skips all that: the
//! session's own handler state (`copies::Copy`) answers it on the bridge's task.
//!
//! Nothing needs the request's stream when the client reads JSON, asked for no progress,
//! and declared neither sampling nor elicitation (an upstream's request of either is
//! then refused to the upstream, as for any client that cannot be asked). Log messages
//! are the session's: they go to its GET stream through rmcp, as for any call. Anything
//! else (a batch, another method, a session not held here) goes through rmcp.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use futures_util::future::LocalBoxFuture;
use rmcp::ServerHandler;
use rmcp::model::{CallToolRequestParams, NumberOrString, ProtocolVersion, ServerResult};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::SessionManager;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::copies::Copy;
use super::handler::{McpHandler, VERSIONS};
use super::request::JsonOnly;
use super::shared::Shared;
use super::tagged::TaggedSessions;
use crate::auth::Caller;

/// What the fast path needs of the endpoint.
pub struct Fast {
    pub shared: Arc<Shared>,
    pub manager: Arc<TaggedSessions>,
    /// rmcp ends a session its worker has not heard of for this long.
    pub session_idle: Duration,
}

/// Whether `version` is one of the handshake revisions this endpoint speaks (every one
/// of its versions but 2026-07-28, which has no session).
fn handshake(version: &str) -> bool {
    version != ProtocolVersion::V_2026_07_28.as_str()
        && VERSIONS.iter().any(|v| v.as_str() == version)
}

impl Fast {
    /// The JSON answer to `message` in session `id`, if this call may skip rmcp: whether
    /// it may is decided here, at once, and the call is the future returned. Boxed, and only
    /// for such a call: inline, the handler's call future made the `/mcp` handler's own
    /// future 34 KB for every request, held for the whole call and moved twice by actix.
    pub fn answer<'a>(
        &'a self,
        id: &str,
        message: &Value,
        version: Option<&str>,
        caller: Option<Caller>,
    ) -> Option<LocalBoxFuture<'a, HttpResponse>> {
        if message.get("method")?.as_str()? != "tools/call"
            || version.is_some_and(|v| !handshake(v))
        {
            return None;
        }
        // Read in place: the arguments may be most of a large body.
        let request_id = NumberOrString::deserialize(message.get("id")?).ok()?;
        let params = message.get("params")?;
        // Progress needs the stream; a `_meta` naming protocol fields (2026-07-28's
        // `io.modelcontextprotocol/...`) is for rmcp to check and route.
        let meta = params.get("_meta").and_then(Value::as_object);
        if meta.is_some_and(|m| {
            m.contains_key("progressToken")
                || m.keys().any(|k| k.starts_with("io.modelcontextprotocol/"))
        }) {
            return None;
        }
        let mut params = CallToolRequestParams::deserialize(params).ok()?;
        let copy = self.shared.copies.get(id)?;
        let info = copy.peer.peer_info()?;
        if !handshake(info.protocol_version.as_str())
            || info.capabilities.sampling.is_some()
            || info.capabilities.elicitation.is_some()
        {
            return None;
        }
        let id: Arc<str> = id.into();
        Some(Box::pin(async move {
            self.keep(&id, &copy).await;
            // What the handler reads of a request comes in its `http` parts, as rmcp hands them
            // over (`mcp::request`): the caller, and that the answer is one JSON body (so a
            // request of the upstream's, which would need a stream, is refused at once).
            let (mut parts, ()) = http::Request::new(()).into_parts();
            if let Some(caller) = caller {
                parts.extensions.insert(caller);
            }
            parts.extensions.insert(JsonOnly);
            let mut context = RequestContext::new(request_id.clone(), copy.peer.clone());
            context.extensions.insert(parts);
            // As rmcp does: the request's `_meta` moves to its context.
            context.meta = params.meta.take().unwrap_or_default();
            let handler = McpHandler::borrowed(self.shared.clone(), id, &copy);
            match handler
                .call_tool(params, context)
                .await
                .map(ServerResult::from)
            {
                Ok(ServerResult::InputRequiredResult(_)) => {
                    let error = rmcp::ErrorData::invalid_request(
                        "InputRequiredResult requires negotiated protocol version 2026-07-28 or newer",
                        None,
                    );
                    envelope(&request_id, "error", &error)
                }
                Ok(mut result) => {
                    // As rmcp answers a peer of a handshake revision: the shape before
                    // 2026-07-28 (no `resultType`, structured content only as an object).
                    result.strip_result_type_for_legacy_peer();
                    result.strip_non_object_output_for_legacy_peer();
                    envelope(&request_id, "result", &result)
                }
                Err(error) => envelope(&request_id, "error", &error),
            }
        }))
    }

    /// rmcp's worker ends a session it has not heard of for `session_idle`; calls answered
    /// here do not reach it, so it is told of them now and then (a message it passes over):
    /// at most an eighth of `session_idle` after the last, so a session ends no sooner than
    /// seven eighths of it after its last call.
    async fn keep(&self, id: &Arc<str>, copy: &Copy) {
        {
            let mut kept = copy.kept.lock().expect("kept");
            if kept.elapsed() < self.session_idle / 8 {
                return;
            }
            *kept = Instant::now();
        }
        let nudge = json!({"jsonrpc": "2.0", "id": "omni-bridge-keep", "result": {}});
        if let Ok(nudge) = serde_json::from_value(nudge) {
            let _ = self.manager.accept_message(id, nudge).await;
        }
    }
}

/// The JSON-RPC answer `{"jsonrpc", "id", field: value}`, written straight from `value`
/// rather than through a `serde_json::Value` of it (a tree allocated node by node, only
/// to be written out and dropped).
fn envelope(id: &NumberOrString, field: &str, value: &impl Serialize) -> HttpResponse {
    struct Answer<'a, T> {
        id: &'a NumberOrString,
        field: &'a str,
        value: &'a T,
    }
    impl<T: Serialize> Serialize for Answer<'_, T> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = s.serialize_map(Some(3))?;
            map.serialize_entry("jsonrpc", "2.0")?;
            map.serialize_entry("id", self.id)?;
            map.serialize_entry(self.field, self.value)?;
            map.end()
        }
    }
    let body = serde_json::to_vec(&Answer { id, field, value }).unwrap_or_else(|e| {
        let error = rmcp::ErrorData::internal_error(format!("answer not written: {e}"), None);
        json!({"jsonrpc": "2.0", "id": id, "error": error})
            .to_string()
            .into_bytes()
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}
