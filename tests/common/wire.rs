//! Requests written byte for byte, as no HTTP client would send them (percent-encoded
//! letters, control bytes, bodies that are not JSON), and the answer read off the socket.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::WAIT;

/// What came back: the status, the body, and the error code of a JSON error body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub code: Option<String>,
}

/// Sends `request` on a new connection and reads the answer to its end (send
/// `Connection: close`).
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    // The gateway may close while the request is still being written (a refusal); what
    // was read by then is the answer.
    let _ = tokio::time::timeout(WAIT, conn.read_to_end(&mut bytes))
        .await
        .expect("an answer in time");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    let code = body
        .find('{')
        .and_then(|start| serde_json::from_str::<Value>(body[start..].trim_end()).ok())
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    Answer { status, body, code }
}
