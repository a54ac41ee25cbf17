//! Bounds a WebSocket client's frames from their headers, before any payload is kept.
//!
//! actix's frame decoder waits for a whole frame before it compares its length with the
//! limit, and the stream in front of it buffers every byte that has arrived: a client
//! announcing a frame of 2^62 bytes and streaming it had the gateway hold hundreds of
//! megabytes, unauthenticated. [`FrameGuard`] sits between the request's payload and
//! that decoder; it reads each frame header as the bytes go by and ends the stream the
//! moment a header announces more than the budget allows, so at most one chunk beyond
//! the limit is ever held. The budget is small until the session has authenticated
//! (its first message is a key) and the full frame size after.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_util::Stream;

/// Largest frame a client that has not authenticated may send: room for
/// `{"action": "auth", "key": "obk_..."}` and then some.
pub const BEFORE_AUTH: usize = 1024;

/// The frame size a session allows now, and whether a client went over it.
#[derive(Debug, Default)]
pub struct FrameBudget {
    limit: AtomicUsize,
    exceeded: AtomicBool,
}

impl FrameBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: AtomicUsize::new(limit),
            exceeded: AtomicBool::new(false),
        })
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Whether the stream ended because a frame was announced over the limit.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }
}

/// Where the guard is within the client's frames.
#[derive(Debug)]
enum Position {
    /// Reading a header: the bytes of it seen so far.
    Header { bytes: [u8; 14], have: usize },
    /// Passing a payload: how many bytes of it are still to come.
    Payload { left: u64 },
    /// A frame was over the limit; nothing more is read.
    Stopped,
}

/// The header's length once its first two bytes are known.
fn header_len(first_two: [u8; 2]) -> usize {
    let extended = match first_two[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if first_two[1] & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// The payload length a complete header announces.
fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => u64::from_be_bytes(header[2..10].try_into().expect("eight bytes")),
        n => u64::from(n),
    }
}

/// Follows frame boundaries through a byte stream; answers `Err` with the announced
/// length of the first frame over `limit`.
#[derive(Debug)]
pub struct Framing {
    position: Position,
}

impl Default for Framing {
    fn default() -> Self {
        Self {
            position: Position::Header {
                bytes: [0; 14],
                have: 0,
            },
        }
    }
}

impl Framing {
    pub fn feed(&mut self, mut chunk: &[u8], limit: usize) -> Result<(), u64> {
        while !chunk.is_empty() {
            match &mut self.position {
                Position::Stopped => return Err(0),
                Position::Payload { left } => {
                    let take = (*left).min(chunk.len() as u64);
                    *left -= take;
                    chunk = &chunk[take as usize..];
                    if *left == 0 {
                        self.position = Position::Header {
                            bytes: [0; 14],
                            have: 0,
                        };
                    }
                }
                Position::Header { bytes, have } => {
                    let needed = if *have < 2 {
                        2
                    } else {
                        header_len([bytes[0], bytes[1]])
                    };
                    let take = (needed - *have).min(chunk.len());
                    bytes[*have..*have + take].copy_from_slice(&chunk[..take]);
                    *have += take;
                    chunk = &chunk[take..];
                    if *have < 2 || *have < header_len([bytes[0], bytes[1]]) {
                        continue;
                    }
                    let announced = payload_len(&bytes[..*have]);
                    if announced > limit as u64 {
                        self.position = Position::Stopped;
                        return Err(announced);
                    }
                    self.position = if announced == 0 {
                        Position::Header {
                            bytes: [0; 14],
                            have: 0,
                        }
                    } else {
                        Position::Payload { left: announced }
                    };
                }
            }
        }
        Ok(())
    }
}

/// The request's payload, ended at the first frame over the budget.
pub struct FrameGuard<S> {
    inner: S,
    framing: Framing,
    budget: Arc<FrameBudget>,
}

impl<S> FrameGuard<S> {
    pub fn new(inner: S, budget: Arc<FrameBudget>) -> Self {
        Self {
            inner,
            framing: Framing::default(),
            budget,
        }
    }
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.budget.exceeded() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match this.framing.feed(&chunk, this.budget.limit()) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(_) => {
                    this.budget.exceeded.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(PayloadError::Overflow)))
                }
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header announcing `len` bytes.
    fn header(len: u64) -> Vec<u8> {
        let mut h = vec![0x81];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len <= u64::from(u16::MAX) {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    #[test]
    fn frames_within_the_limit_pass_in_any_split() {
        let mut stream = Vec::new();
        for len in [0u64, 5, 125, 126, 1000, 65_535] {
            stream.extend(header(len));
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for split in [1, 2, 3, 7, 13, 4096, stream.len()] {
            let mut framing = Framing::default();
            for chunk in stream.chunks(split) {
                assert_eq!(framing.feed(chunk, 65_535), Ok(()), "split {split}");
            }
            assert!(matches!(framing.position, Position::Header { have: 0, .. }));
        }
    }

    #[test]
    fn a_header_over_the_limit_stops_before_its_payload() {
        for split in [1, 3, 100] {
            let mut framing = Framing::default();
            let mut stream = header(10);
            stream.extend([0u8; 10]);
            stream.extend(header(1 << 62));
            let mut result = Ok(());
            for chunk in stream.chunks(split) {
                result = framing.feed(chunk, 1024);
                if result.is_err() {
                    break;
                }
            }
            assert_eq!(result, Err(1 << 62), "split {split}");
            assert_eq!(framing.feed(&[0; 8], 1024), Err(0), "stays stopped");
        }
        let mut framing = Framing::default();
        assert_eq!(framing.feed(&header(1025), 1024), Err(1025));
    }
}
