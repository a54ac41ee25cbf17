//! rmcp's Streamable HTTP client (on reqwest) with answers over the limit replaced.
//!
//! rmcp stops reading a JSON body or an SSE event over its configured size, which bounds
//! memory, but then fails the request as if the connection had broken: the call read as
//! "upstream gone" and counted against the upstream. This client passes everything to
//! reqwest's implementation and, for a POSTed request whose answer crossed the limit,
//! answers with the error of `upstream::oversize` for that request's id instead, so the
//! call reads as "too large" and the session and breaker are untouched.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, RequestId, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use sse_stream::Sse;

use super::oversize;

/// reqwest's Streamable HTTP client, with oversize answers replaced (see the module).
#[derive(Clone)]
pub struct LimitedHttp(pub reqwest::Client);

/// The substitute for the answer to `id`, as rmcp reads a message.
fn substitute(id: &RequestId, limit: usize) -> ServerJsonRpcMessage {
    let id = serde_json::to_value(id).unwrap_or_default();
    let bytes = oversize::substitute(&id, oversize::result_limit(limit), limit + 1);
    serde_json::from_slice(&bytes).expect("the substitute is a JSON-RPC error")
}

/// Whether an SSE stream error is rmcp's "event too large" (its error type is private;
/// it is known by its text).
fn is_event_too_large(error: &SseError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current
            .to_string()
            .contains("SSE event exceeded the maximum size")
        {
            return true;
        }
        source = current.source();
    }
    false
}

impl StreamableHttpClient for LimitedHttp {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default(),
        )
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let request_id = match &message {
            ClientJsonRpcMessage::Request(request) => Some(request.id.clone()),
            _ => None,
        };
        let answer = self
            .0
            .post_message_with_response_limits(
                uri,
                message,
                session_id.clone(),
                auth_header,
                custom_headers,
                limits,
            )
            .await;
        let Some(id) = request_id else {
            return answer;
        };
        match answer {
            Err(StreamableHttpError::ResponseBodyTooLarge { max_size }) => {
                log::warn!("an upstream's JSON answer is over {max_size} bytes; discarded");
                let session = session_id.map(|s| s.to_string());
                Ok(StreamableHttpPostResponse::Json(
                    substitute(&id, max_size),
                    session,
                ))
            }
            Ok(StreamableHttpPostResponse::Sse(events, session)) => {
                let limit = limits.max_sse_event_size;
                let events: BoxStream<'static, Result<Sse, SseError>> = events
                    .scan(false, move |ended, event| {
                        let item = match event {
                            _ if *ended => None,
                            Err(e) if is_event_too_large(&e) => {
                                *ended = true;
                                log::warn!(
                                    "an upstream's SSE event is over {limit} bytes; discarded"
                                );
                                let error = serde_json::to_string(&substitute(&id, limit))
                                    .expect("a message serializes");
                                Some(Ok(Sse::default().data(error)))
                            }
                            other => Some(other),
                        };
                        std::future::ready(item)
                    })
                    .boxed();
                Ok(StreamableHttpPostResponse::Sse(events, session))
            }
            other => other,
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.0
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.0
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.0
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}
