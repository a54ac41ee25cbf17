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

use super::errors::with_causes;

#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("GET {0} failed: {1}")]
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
    pub async fn connect(
        http: reqwest::Client,
        url: Url,
        headers: HeaderMap,
        timeout: Duration,
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
            .map_err(|e| fail(with_causes(&e.to_string(), &e)))?;
        if !response.status().is_success() {
            return Err(fail(response.status().to_string()));
        }
        let mut events = SseStream::from_bytes_stream(bounded(response.bytes_stream()));
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
            let response = request
                .send()
                .await
                .map_err(|e| SseError::Post(with_causes(&e.to_string(), &e)))?;
            if !response.status().is_success() {
                return Err(SseError::Post(response.status().to_string()));
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

/// One event may hold at most this many bytes (rmcp's cap for its own transports): a
/// server that never ends an event cannot make the gateway buffer without bound.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Ends the byte stream with an error once more than [`MAX_EVENT_BYTES`] arrive without
/// an event boundary (a blank line).
fn bounded<S, E>(inner: S) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>>,
    E: std::fmt::Display,
{
    use futures_util::StreamExt;
    let mut since_boundary = 0usize;
    // The last byte seen, so a boundary split across chunks ("\n" | "\n") is found.
    let mut last = 0u8;
    let mut over = false;
    inner.map(move |chunk| {
        if over {
            return Err(std::io::Error::other(
                "event stream ended after an oversized event",
            ));
        }
        let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
        for &b in chunk.iter() {
            if b == b'\n' && last == b'\n' {
                since_boundary = 0;
            } else if b != b'\r' {
                since_boundary += 1;
            }
            if b != b'\r' {
                last = b;
            }
        }
        if since_boundary > MAX_EVENT_BYTES {
            over = true;
            return Err(std::io::Error::other(format!(
                "an event exceeded {MAX_EVENT_BYTES} bytes; closing the stream"
            )));
        }
        Ok(chunk)
    })
}

#[cfg(test)]
mod bound_tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn events_within_the_cap_pass_and_an_endless_one_ends_the_stream() {
        let piece = bytes::Bytes::from(vec![b'x'; 1024 * 1024]);
        let boundary = bytes::Bytes::from_static(b"\n\n");
        // Many small events, each ended: never over the cap in total.
        let fine: Vec<Result<bytes::Bytes, std::io::Error>> = (0..40)
            .flat_map(|_| [Ok(piece.clone()), Ok(boundary.clone())])
            .collect();
        let passed = bounded(futures_util::stream::iter(fine))
            .filter(|r| std::future::ready(r.is_err()))
            .count()
            .await;
        assert_eq!(passed, 0);
        // One event that never ends: cut off just past the cap.
        let endless =
            futures_util::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(piece.clone())));
        let items: Vec<_> = bounded(endless).collect().await;
        let first_error = items.iter().position(Result::is_err).unwrap();
        assert_eq!(first_error, MAX_EVENT_BYTES / piece.len());
    }
}
