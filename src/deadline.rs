//! A request body must arrive within `body_timeout` ([`BODY_DEADLINE`] unless configured)
//! of the request's head. Without it,
//! an authenticated client sending its body a byte at a time held a connection (and a
//! worker's buffer) for as long as it liked. The stream ends with a timed-out I/O error,
//! which the JSON extractor's handler and the `/mcp` bridge answer 408 `body-timeout`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_util::Stream;

/// How long a whole body may take to arrive, by default.
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);

/// A request payload as actix holds a replaced one.
pub type Boxed = Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>;

pub struct Deadline<S> {
    inner: S,
    timer: Pin<Box<tokio::time::Sleep>>,
    within: Duration,
    expired: bool,
}

impl<S> Deadline<S> {
    pub fn new(inner: S, within: Duration) -> Self {
        Self {
            inner,
            timer: Box::pin(tokio::time::sleep(within)),
            within,
            expired: false,
        }
    }
}

/// The error a body past its deadline ends with.
fn timed_out(within: Duration) -> PayloadError {
    PayloadError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the request body did not arrive within {}",
            crate::duration::format(within)
        ),
    ))
}

/// Whether a payload error is this deadline's.
pub fn is_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

impl<S> Stream for Deadline<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.expired = true;
            return Poll::Ready(Some(Err(timed_out(self.within))));
        }
        Poll::Pending
    }
}
