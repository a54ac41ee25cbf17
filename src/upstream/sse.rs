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
        let fail = |e: &dyn std::fmt::Display| SseError::Connect(url.to_string(), e.to_string());
        let response = http
            .get(url.clone())
            .headers(headers.clone())
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| fail(&e))?;
        if !response.status().is_success() {
            return Err(fail(&response.status()));
        }
        let mut events = SseStream::from_bytes_stream(response.bytes_stream());
        let endpoint = tokio::time::timeout(timeout, async {
            while let Some(event) = events.next().await {
                let event = event.map_err(|e| fail(&e))?;
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
                .map_err(|e| SseError::Post(e.to_string()))?;
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
