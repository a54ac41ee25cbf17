//! Closing a connection without destroying the answer on it ("lingering close").
//!
//! When the gateway answers before it has read the whole request (a head over actix's
//! 128 KiB buffer gets 431; a body over its limit gets 413) and then closes, the bytes
//! the client is still sending arrive at a socket nobody reads. Linux answers a close with
//! unread data by sending RST, and a client that receives RST may lose the answer still
//! waiting in its receive buffer: a client sending a 1 MB header saw "connection reset"
//! instead of 431.
//!
//! So every accepted socket is wrapped in [`Lingering`]. When actix drops it, the socket
//! is handed to a small task that half-closes it (FIN: the client sees the answer and the
//! end of it) and reads and discards what the client still sends, until the client closes
//! too, [`LINGER_BYTES`] have been read, or [`LINGER_TIME`] has passed. Only then is it
//! closed. At most [`MAX_LINGERING`] drain at once; beyond, a connection closes at once. A client that closes first (every well-behaved one) costs one read returning
//! end-of-file.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The longest a closed connection is drained.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// The most a closed connection's client may still send before it is cut off.
pub const LINGER_BYTES: usize = 64 << 20;

/// Connections draining at once; past it a connection closes at once. A drained socket
/// no longer counts against actix's connection limit, so this bounds them.
pub const MAX_LINGERING: usize = 1024;

static LINGERING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A client's socket that drains before it closes (see the module's comment).
pub struct Lingering {
    io: Option<TcpStream>,
}

impl Lingering {
    pub fn new(io: TcpStream) -> Self {
        Self { io: Some(io) }
    }

    fn io(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.io.as_mut().expect("taken only by drop"))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        let Some(io) = self.io.take() else { return };
        // Dropped outside a runtime (a worker stopping): nothing can wait; close now.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if LINGERING.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
            LINGERING.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        runtime.spawn(async move {
            drain(io).await;
            LINGERING.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Half-closes `io` and discards what its client still sends, within the bounds above.
async fn drain(mut io: TcpStream) {
    if io.shutdown().await.is_err() {
        return;
    }
    let mut scratch = [0u8; 4 * 1024];
    let mut read = 0usize;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while read < LINGER_BYTES {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}
