//! A client transport for the legacy HTTP+SSE protocol (MCP 2024-11-05), which rmcp no longer
//! ships. The client GETs an event stream; the server's first event, `endpoint`, names the
//! URL to POST messages to; every answer then arrives as a `message` event on the stream.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, HeaderMap};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use sse_stream::SseStream;
use tokio::sync::mpsc;
use url::Url;

use super::errors::{phrase, with_causes};

#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("{1}: {0}")]
    Connect(String, String),
    #[error("the server sent no endpoint event")]
    NoEndpoint,
    #[error("endpoint '{0}' is not on the server's origin")]
    ForeignEndpoint(String),
    #[error("POST failed: {0}")]
    Post(String),
}

pub struct LegacySseTransport {
    http: reqwest::Client,
    post_url: Url,
    headers: HeaderMap,
    inbox: mpsc::Receiver<ServerJsonRpcMessage>,
    reader: tokio::task::JoinHandle<()>,
}

impl LegacySseTransport {
    /// Opens the event stream and waits (up to `timeout`) for the endpoint event.
    /// `limit` bounds one event (see `upstream::oversize`); `server` names it in logs.
    pub async fn connect(
        http: reqwest::Client,
        url: Url,
        headers: HeaderMap,
        timeout: Duration,
        server: String,
        limit: usize,
    ) -> Result<Self, SseError> {
        // The URL may hold a password: messages show it redacted.
        let shown = crate::registry::redact_url(&url);
        let fail = |text: String| SseError::Connect(shown.clone(), text);
        let response = http
            .get(url.clone())
            .headers(headers.clone())
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| {
                log::warn!(
                    "sse: GET {shown} failed: {}",
                    with_causes(&e.to_string(), &e)
                );
                fail(phrase(&e))
            })?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        let mut events =
            SseStream::from_bytes_stream(cut_events(response.bytes_stream(), server, limit));
        let endpoint = tokio::time::timeout(timeout, async {
            while let Some(event) = events.next().await {
                let event = event.map_err(|e| fail(e.to_string()))?;
                if event.event.as_deref() == Some("endpoint") {
                    return event.data.ok_or(SseError::NoEndpoint);
                }
            }
            Err(SseError::NoEndpoint)
        })
        .await
        .map_err(|_| SseError::NoEndpoint)??;
        let post_url = url
            .join(endpoint.trim())
            .map_err(|_| SseError::ForeignEndpoint(endpoint.clone()))?;
        // Headers carry secrets: never send them to another origin than the one configured.
        if post_url.origin() != url.origin() {
            return Err(SseError::ForeignEndpoint(endpoint));
        }
        let (tx, inbox) = mpsc::channel(256);
        let reader = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let Ok(event) = event else { break };
                if !matches!(event.event.as_deref(), None | Some("message")) {
                    continue;
                }
                let Some(data) = event.data else { continue };
                match serde_json::from_str::<ServerJsonRpcMessage>(&data) {
                    Ok(message) => {
                        if tx.send(message).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => log::warn!("sse: skipping a message that is not JSON-RPC: {e}"),
                }
            }
            // Dropping `tx` ends `receive`, which ends the session.
        });
        Ok(Self {
            http,
            post_url,
            headers,
            inbox,
            reader,
        })
    }
}

impl rmcp::transport::Transport<rmcp::RoleClient> for LegacySseTransport {
    type Error = SseError;

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let request = self
            .http
            .post(self.post_url.clone())
            .headers(self.headers.clone())
            .json(&item);
        async move {
            let response = request.send().await.map_err(|e| {
                log::debug!("sse: POST failed: {}", with_causes(&e.to_string(), &e));
                SseError::Post(phrase(&e))
            })?;
            if !response.status().is_success() {
                return Err(SseError::Post(format!("HTTP {}", response.status())));
            }
            Ok(())
        }
    }

    async fn receive(&mut self) -> Option<ServerJsonRpcMessage> {
        self.inbox.recv().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.reader.abort();
        self.inbox.close();
        Ok(())
    }
}

impl Drop for LegacySseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Replaces every event of more than `limit` bytes (between blank lines) with a
/// `message` event carrying the error that answers its request (see
/// `upstream::oversize`): the part already passed on is ended as an event of its own
/// (skipped as not JSON-RPC), the rest is discarded as it arrives. A server that never
/// ends an event therefore costs nothing but reading.
fn cut_events<S, E>(
    inner: S,
    server: String,
    limit: usize,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>>,
    E: std::fmt::Display,
{
    use super::oversize::Cut;
    let mut cut = Cut::new(limit);
    // The last byte seen other than `\r`, so a boundary split across chunks is found.
    let mut last = 0u8;
    inner.map(move |chunk| {
        let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut out = bytes::BytesMut::new();
        let feed = |cut: &mut Cut, segment: &[u8], out: &mut bytes::BytesMut| {
            let was_discarding = cut.discarding;
            if cut.take(segment) {
                out.extend_from_slice(b"\n\n");
            } else if !was_discarding {
                out.extend_from_slice(segment);
            }
        };
        let mut start = 0;
        for (i, &b) in chunk.iter().enumerate() {
            if b == b'\r' {
                continue;
            }
            let boundary = b == b'\n' && last == b'\n';
            last = b;
            if boundary {
                feed(&mut cut, &chunk[start..=i], &mut out);
                start = i + 1;
                last = 0;
                if let Some(error) = cut.end(&server) {
                    out.extend_from_slice(b"event: message\ndata: ");
                    out.extend_from_slice(error.trim_ascii_end());
                    out.extend_from_slice(b"\n\n");
                }
            }
        }
        feed(&mut cut, &chunk[start..], &mut out);
        Ok(out.freeze())
    })
}

#[cfg(test)]
mod bound_tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn an_event_over_the_limit_becomes_the_error_for_its_request() {
        let big = format!(
            "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{{\"t\":\"{}\"}}}}\n\n",
            "x".repeat(64 * 1024 + 300)
        );
        let small = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":10,\"result\":{}}\n\n";
        let text = format!("{big}{small}");
        // In pieces of 7 bytes, boundaries split across them.
        let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = text
            .as_bytes()
            .chunks(7)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let limit = super::super::oversize::transport_limit(100);
        let out: Vec<_> = cut_events(futures_util::stream::iter(pieces), "s".into(), limit)
            .collect()
            .await;
        let bytes: Vec<u8> = out.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
        let mut events =
            SseStream::from_bytes_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(
                bytes::Bytes::from(bytes),
            )]));
        let mut data = vec![];
        while let Some(event) = events.next().await {
            if let Some(d) = event.unwrap().data {
                data.push(d);
            }
        }
        // The cut-off start (not JSON), the substitute for id 9, then id 10 untouched.
        assert_eq!(data.len(), 3, "{data:?}");
        assert!(serde_json::from_str::<serde_json::Value>(&data[0]).is_err());
        let error: serde_json::Value = serde_json::from_str(&data[1]).unwrap();
        assert_eq!(error["id"], 9);
        assert!(super::super::oversize::is_too_large(error["error"].get("data")).is_some());
        assert_eq!(data[2], small["event: message\ndata: ".len()..].trim_end());
    }
}
