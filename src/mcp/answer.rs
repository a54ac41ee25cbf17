//! How `/mcp` frames the answer to a POSTed request: one JSON body or an SSE stream.
//!
//! rmcp answers every request of a session with an SSE stream. Most calls send nothing
//! but their result, and for them the stream only costs: framing, a chunked body, and
//! clients that cap one event (the Python SDK and fastmcp refuse events over 1 MiB, so a
//! large tool result failed there). So when the client accepts `application/json`, did
//! not ask for progress (no `progressToken`), and the request is a single request, the
//! bridge reads rmcp's stream up to its first message: if that message is the response,
//! it is sent as a plain JSON body. If something comes first (a log message, progress,
//! an upstream's sampling or elicitation request), the answer stays a stream: what was
//! read is sent as it was, then the rest, so nothing is lost or reordered, and the client
//! can answer the request it was sent. `mcp_response` (`auto`, `json`, `sse`) changes
//! the choice: `json` also collapses calls that asked for progress, `sse` never collapses.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::Value;

/// How `/mcp` answers a POSTed request (configuration key `mcp_response`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseMode {
    /// JSON unless the request asked for progress or the client accepts only SSE.
    #[default]
    Auto,
    /// JSON whenever the client accepts it, progress requests included (their progress
    /// is dropped unless something else makes the answer a stream).
    Json,
    /// Always an SSE stream, as rmcp answers.
    Sse,
}

impl ResponseMode {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "json" => Ok(Self::Json),
            "sse" => Ok(Self::Sse),
            other => Err(format!(
                "'{other}' is not one of \"auto\", \"json\", \"sse\""
            )),
        }
    }

    /// Whether the answer to `request` (one parsed JSON-RPC message) may be collapsed
    /// to JSON for a client whose `Accept` header is `accept`.
    pub fn may_collapse(self, request: &Value, accept: &str) -> bool {
        let is_request = request.get("method").is_some() && request.get("id").is_some();
        let wants_progress = request
            .pointer("/params/_meta/progressToken")
            .is_some_and(|t| !t.is_null());
        let accepts_json = accept.split(',').any(|media| {
            let essence = media.split(';').next().unwrap_or_default().trim();
            essence.eq_ignore_ascii_case("application/json")
        });
        is_request
            && accepts_json
            && match self {
                Self::Auto => !wants_progress,
                Self::Json => true,
                Self::Sse => false,
            }
    }
}

/// What the first message of an SSE answer turned out to be.
pub enum Framed<S> {
    /// The response itself, to be sent as the JSON body.
    Json(Bytes),
    /// Something came before the response: the bytes read so far, then the rest.
    Stream(Bytes, S),
}

/// The `data` of the next complete event in `buffered` from `scan`, with the offset just
/// past the event; `None` when no complete event is there yet. Comments, `id`, `retry`
/// and events without data (rmcp's priming event, keep-alives) are passed over.
fn next_data(buffered: &[u8], scan: &mut usize) -> Option<Option<Bytes>> {
    let rest = &buffered[*scan..];
    let end = rest.windows(2).position(|w| w == b"\n\n")?;
    let event = &rest[..end];
    *scan += end + 2;
    let mut data = BytesMut::new();
    for line in event.split(|b| *b == b'\n') {
        if let Some(value) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.extend_from_slice(b"\n");
            }
            data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
        }
    }
    Some((!data.is_empty()).then(|| data.freeze()))
}

/// Whether `data` (a message rmcp wrote) is a JSON-RPC response (a result or an error),
/// not a notification or a request of the server's. Only its start is read: a call's
/// result is not parsed a second time to learn it is one.
fn is_response(data: &[u8]) -> bool {
    !crate::upstream::oversize::is_request(data)
}

/// Reads `body` (an SSE stream answering one request) up to its first message.
pub async fn frame<S, E>(mut body: S) -> Framed<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut buffered = BytesMut::new();
    let mut scan = 0;
    loop {
        while let Some(event) = next_data(&buffered, &mut scan) {
            if let Some(data) = event {
                return match is_response(&data) {
                    true => Framed::Json(data),
                    false => Framed::Stream(buffered.freeze(), body),
                };
            }
        }
        match body.next().await {
            Some(Ok(chunk)) => buffered.extend_from_slice(&chunk),
            // Ended or failed before any message: pass on what there is, as it was.
            _ => return Framed::Stream(buffered.freeze(), body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunks(parts: &[&str]) -> impl Stream<Item = Result<Bytes, ()>> + Unpin + use<> {
        let owned: Vec<Result<Bytes, ()>> = parts
            .iter()
            .map(|p| Ok(Bytes::from(p.as_bytes().to_vec())))
            .collect();
        futures_util::stream::iter(owned)
    }

    #[tokio::test]
    async fn a_response_after_priming_and_keep_alives_becomes_the_json_body() {
        let response = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        // Split mid-event, as a network would.
        let body = chunks(&[
            "id: 0\nretry: 3000\ndata:\n\n:\n\n",
            "id: 1\ndata: ",
            &format!("{response}\n\n"),
        ]);
        match frame(body).await {
            Framed::Json(data) => assert_eq!(data, response.as_bytes()),
            Framed::Stream(..) => panic!("not collapsed"),
        }
    }

    #[tokio::test]
    async fn anything_before_the_response_keeps_the_stream_whole() {
        let log = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
        let first = format!("data: {log}\n\n");
        let second = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        match frame(chunks(&[&first, second])).await {
            Framed::Stream(read, rest) => {
                let rest: Vec<_> = rest.collect().await;
                let mut all = read.to_vec();
                for chunk in rest {
                    all.extend_from_slice(&chunk.unwrap());
                }
                assert_eq!(all, format!("{first}{second}").into_bytes());
            }
            Framed::Json(_) => panic!("a log message was dropped"),
        }
        // A request of the server's (sampling) is not the response either.
        let sampling =
            "data: {\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"sampling/createMessage\"}\n\n";
        assert!(matches!(
            frame(chunks(&[sampling])).await,
            Framed::Stream(..)
        ));
    }

    #[test]
    fn progress_requests_keep_their_stream_unless_json_is_forced() {
        let plain = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}});
        let progress = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"_meta": {"progressToken": 5}}});
        let notification = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let both = "application/json, text/event-stream";
        assert!(ResponseMode::Auto.may_collapse(&plain, both));
        assert!(!ResponseMode::Auto.may_collapse(&progress, both));
        assert!(ResponseMode::Json.may_collapse(&progress, both));
        assert!(!ResponseMode::Sse.may_collapse(&plain, both));
        assert!(!ResponseMode::Auto.may_collapse(&notification, both));
        assert!(!ResponseMode::Auto.may_collapse(&plain, "text/event-stream"));
        assert!(
            ResponseMode::Auto.may_collapse(&plain, "text/event-stream;q=0.5, Application/JSON")
        );
    }
}
