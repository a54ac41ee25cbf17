//! JSON bodies for the answers actix-http gives by itself, before any route runs: a
//! request that is not valid HTTP (400: a control byte in a header, a bad request line or
//! `Content-Length`), a head over its 128 KiB buffer (431), a head that did not arrive
//! within 5 s (408). actix writes these with no body at all, while every other error of
//! the gateway is `{"error": {"code", "message"}}`; found by schemathesis's probe of
//! NUL bytes in headers.
//!
//! [`JsonErrors`] wraps a client's socket and rewrites such an answer as actix writes it:
//! it is recognized by its status and `content-length: 0` (no answer of a handler has
//! that: its errors carry a body), and only at the start of a write, so the check costs
//! a few byte comparisons per write. actix writes these answers last, into the buffer
//! its previous answers were flushed from; one that shares a write with a pipelined
//! answer before it goes out bare, as before.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{ErrorBody, ErrorDetail};

/// A socket whose bare actix error answers get a JSON body.
pub struct JsonErrors<T> {
    inner: T,
    /// An answer being written in place of the one actix gave.
    pending: Option<Rewrite>,
}

struct Rewrite {
    bytes: Vec<u8>,
    written: usize,
    /// How many bytes of actix's buffer it replaces.
    replaces: usize,
}

impl<T> JsonErrors<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The code and message for a status actix answers by itself.
fn error_for(status: &[u8]) -> Option<(&'static str, &'static str)> {
    Some(match status {
        b"400" => (
            "malformed-request",
            "the request is not valid HTTP/1.1 (its request line, a header, or its framing)",
        ),
        b"408" => ("head-timeout", "the request's head did not arrive in time"),
        b"431" => (
            "headers-too-large",
            "the request's head is over the limit of 128 KiB",
        ),
        _ => return None,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `buf` with a bare actix error answer at its start, rewritten with a JSON body.
fn rewrite(buf: &[u8]) -> Option<Rewrite> {
    // "HTTP/1.1 400 "
    let line = buf.get(..13)?;
    if !line.starts_with(b"HTTP/1.") || line[8] != b' ' || line[12] != b' ' {
        return None;
    }
    let (code, message) = error_for(&line[9..12])?;
    let head_len = find(buf, b"\r\n\r\n")? + 4;
    let head = &buf[..head_len];
    const EMPTY: &[u8] = b"\r\ncontent-length: 0\r\n";
    let at = find(head, EMPTY)?;
    let body = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
            field: None,
        },
    })
    .ok()?;
    let mut bytes = Vec::with_capacity(head_len + body.len() + 64);
    bytes.extend_from_slice(&head[..at]);
    bytes.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    bytes.extend_from_slice(body.len().to_string().as_bytes());
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(&head[at + EMPTY.len()..]);
    bytes.extend_from_slice(&body);
    Some(Rewrite {
        bytes,
        written: 0,
        replaces: head_len,
    })
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            this.pending = rewrite(buf);
        }
        let Some(pending) = this.pending.as_mut() else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        // The caller offers the same bytes again after `Pending` (it has not seen them
        // taken), so the rewrite goes on where it stopped.
        while pending.written < pending.bytes.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &pending.bytes[pending.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(n)) => pending.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let replaced = pending.replaces;
        this.pending = None;
        Poll::Ready(Ok(replaced))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if this.pending.is_some() || rewrite(first).is_some() {
            return Pin::new(this).poll_write(cx, first);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_answers_of_actix_are_rewritten() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: x\r\n\r\n";
        let out = rewrite(bare).expect("rewritten");
        assert_eq!(out.replaces, bare.len());
        let text = String::from_utf8(out.bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("connection: close"), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "malformed-request");

        // A handler's error has a body; other statuses and other bytes pass as they are.
        for kept in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 61\r\n\r\n{}"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"{\"result\": \"HTTP/1.1 400 \"}",
            b"HTTP/1.1 400",
        ] {
            assert!(rewrite(kept).is_none(), "{}", String::from_utf8_lossy(kept));
        }
    }
}
