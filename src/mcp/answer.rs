//! How `/mcp` frames the answer to a POSTed request: one JSON body or an SSE stream.
//!
//! rmcp answers every request of a session with an SSE stream. Most calls send nothing
//! but their result, and for them the stream only costs: framing, a chunked body, and
//! clients that cap one event (the Python SDK and fastmcp refuse events over 1 MiB, so a
//! large tool result failed there). So when the client accepts `application/json` and
//! the request is a single request, the bridge reads rmcp's stream up to its first
//! message: if that message is the response, it is sent as a plain JSON body. If
//! something comes first (progress, an upstream's sampling or elicitation request), the
//! answer stays a stream: what was read is sent as it was, then the rest, so nothing is
//! lost or reordered, and the client can answer the request it was sent. Asking for
//! progress does not make a stream by itself: fastmcp asks for it on every call, and a
//! call that sends none has nothing to stream. (rmcp sends a handshake-era session's log
//! messages on its GET stream, so they never make a call's answer a stream.)
//!
//! `mcp_response` (`auto`, `json`, `sse`) changes the choice: `sse` never collapses;
//! `json` answers every request as JSON, shaped as for a client that accepts only JSON
//! ([`Accepts::json_only`]): what would come before the result is passed over, and the
//! handler sends such a call nothing that needs an answer.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::Value;

/// How `/mcp` answers a POSTed request (configuration key `mcp_response`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseMode {
    /// JSON when the result is the first thing the call sends, a stream otherwise (or
    /// when the client accepts only SSE).
    #[default]
    Auto,
    /// JSON whenever the client accepts it: what would come before the result (progress)
    /// is passed over, and requests of the upstream's are refused to it.
    Json,
    /// Always an SSE stream, as rmcp answers, unless the client accepts only JSON.
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
    /// to JSON for a client that `accepts` what it does. A client that reads only JSON
    /// gets JSON whatever the mode: it could not read a stream.
    pub fn may_collapse(self, request: &Value, accepts: Accepts) -> bool {
        let is_request = request.get("method").is_some() && request.get("id").is_some();
        is_request && accepts.json && (self != Self::Sse || accepts.json_only())
    }

    /// Whether the answer must be JSON with nothing before it: the client reads only
    /// JSON, or the operator asked for JSON answers.
    pub fn json_only(self, accepts: Accepts) -> bool {
        accepts.json_only() || (self == Self::Json && accepts.json)
    }
}

/// What a POST's `Accept` header lets `/mcp` answer with. The transport asks clients to
/// list both types; rmcp refuses any other header with 406. A client that lists one is
/// served in that one instead, and one that sends none (or `*/*`) is taken to accept both,
/// as HTTP reads a missing `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepts {
    pub json: bool,
    pub sse: bool,
}

impl Accepts {
    pub fn parse(header: Option<&str>) -> Self {
        let Some(header) = header.filter(|h| !h.trim().is_empty()) else {
            return Self {
                json: true,
                sse: true,
            };
        };
        let mut accepts = Self {
            json: false,
            sse: false,
        };
        for range in header.split(',') {
            let mut fields = range.split(';');
            let essence = fields.next().unwrap_or_default().trim();
            let is = |media: &str| essence.eq_ignore_ascii_case(media);
            // `q=0` says "not acceptable".
            let refused = fields.any(|f| {
                f.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            // Compared in place: a client's header is not copied per request.
            if is("*/*") {
                (accepts.json, accepts.sse) = (true, true);
            } else if is("application/json") || is("application/*") {
                accepts.json = true;
            } else if is("text/event-stream") || is("text/*") {
                accepts.sse = true;
            }
        }
        accepts
    }

    /// Every `Accept` line of a request, as one list (HTTP allows a header in several
    /// lines); a line that is not text accepts nothing.
    pub fn of_lines<'a>(lines: impl Iterator<Item = Option<&'a str>>) -> Self {
        let mut seen = false;
        let mut all = Self {
            json: false,
            sse: false,
        };
        for line in lines {
            seen = true;
            let Some(line) = line else { continue };
            let one = Self::parse(Some(line));
            all.json |= one.json;
            all.sse |= one.sse;
        }
        if seen { all } else { Self::parse(None) }
    }

    /// Neither a JSON body nor a stream: nothing `/mcp` sends could be read.
    pub fn neither(self) -> bool {
        !self.json && !self.sse
    }

    pub fn json_only(self) -> bool {
        self.json && !self.sse
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
    !crate::upstream::is_request(data)
}

/// Reads `body` (an SSE stream answering one request) up to its first message. For a
/// client that reads only JSON (`json_only`), messages before the response are passed
/// over: it could not read them, and the handler sends it none that needs an answer.
pub async fn frame<S, E>(mut body: S, json_only: bool) -> Framed<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut buffered = BytesMut::new();
    let mut scan = 0;
    loop {
        while let Some(event) = next_data(&buffered, &mut scan) {
            if let Some(data) = event {
                match (is_response(&data), json_only) {
                    (true, _) => return Framed::Json(data),
                    (false, true) => continue,
                    (false, false) => return Framed::Stream(buffered.freeze(), body),
                }
            }
        }
        if json_only {
            // What was passed over is not kept: only the event still arriving is.
            let _ = buffered.split_to(scan);
            scan = 0;
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
        match frame(body, false).await {
            Framed::Json(data) => assert_eq!(data, response.as_bytes()),
            Framed::Stream(..) => panic!("not collapsed"),
        }
    }

    #[tokio::test]
    async fn anything_before_the_response_keeps_the_stream_whole() {
        let log = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
        let first = format!("data: {log}\n\n");
        let second = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        match frame(chunks(&[&first, second]), false).await {
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
            frame(chunks(&[sampling]), false).await,
            Framed::Stream(..)
        ));
    }

    #[test]
    fn single_requests_collapse_unless_the_mode_or_the_client_says_stream() {
        let plain = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}});
        let progress = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"_meta": {"progressToken": 5}}});
        let notification = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let both = Accepts::parse(Some("application/json, text/event-stream"));
        // Asking for progress is no reason to stream: only progress that comes is.
        assert!(ResponseMode::Auto.may_collapse(&plain, both));
        assert!(ResponseMode::Auto.may_collapse(&progress, both));
        assert!(ResponseMode::Json.may_collapse(&progress, both));
        assert!(!ResponseMode::Sse.may_collapse(&plain, both));
        assert!(!ResponseMode::Auto.may_collapse(&notification, both));
        let sse_only = Accepts::parse(Some("text/event-stream"));
        assert!(!ResponseMode::Auto.may_collapse(&plain, sse_only));
        assert!(!ResponseMode::Json.may_collapse(&plain, sse_only));
        // A client that reads only JSON gets JSON whatever the mode.
        let json_only = Accepts::parse(Some("application/json"));
        assert!(ResponseMode::Sse.may_collapse(&plain, json_only));
        let both = Accepts::parse(Some("text/event-stream;q=0.5, Application/JSON"));
        assert!(ResponseMode::Auto.may_collapse(&plain, both));
        // What must be JSON with nothing before it.
        assert!(!ResponseMode::Auto.json_only(both));
        assert!(ResponseMode::Json.json_only(both));
        assert!(!ResponseMode::Json.json_only(sse_only));
        assert!(ResponseMode::Sse.json_only(json_only));
    }

    #[test]
    fn accept_headers_are_read_as_http_reads_them() {
        let cases = [
            (None, (true, true)),
            (Some(""), (true, true)),
            (Some("*/*"), (true, true)),
            (Some("application/json"), (true, false)),
            (Some("text/event-stream"), (false, true)),
            (Some("application/*, text/*"), (true, true)),
            (
                Some("application/json, text/event-stream;q=0"),
                (true, false),
            ),
            (Some("text/html"), (false, false)),
            (Some("application/json;q=0"), (false, false)),
        ];
        for (header, (json, sse)) in cases {
            assert_eq!(Accepts::parse(header), Accepts { json, sse }, "{header:?}");
        }
    }

    #[test]
    fn accept_in_several_lines_is_one_list() {
        let lines = |l: &[Option<&'static str>]| Accepts::of_lines(l.iter().copied());
        let both = Accepts {
            json: true,
            sse: true,
        };
        assert_eq!(lines(&[]), both);
        assert_eq!(
            lines(&[Some("application/json"), Some("text/event-stream")]),
            both
        );
        assert_eq!(
            lines(&[Some("application/json")]),
            Accepts {
                json: true,
                sse: false
            }
        );
        // A line that is not text accepts nothing: neither, when it is the only one.
        assert!(lines(&[None]).neither());
    }

    #[tokio::test]
    async fn a_json_only_client_gets_the_response_without_what_came_before() {
        let log = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
        let response = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        let body = chunks(&[
            &format!("data: {log}\n\n"),
            &format!("data: {response}\n\n"),
        ]);
        match frame(body, true).await {
            Framed::Json(data) => assert_eq!(data, response.as_bytes()),
            Framed::Stream(..) => panic!("a JSON-only client was sent a stream"),
        }
    }
}
