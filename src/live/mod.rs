//! The live stream: one EventHub fans events out to one SessionActor per WebSocket
//! connection. The hub's messages are in `hub`, a session's in `session`, and what both
//! send toward a client in `outgoing`.

pub mod filter;
pub mod frames;
pub mod hub;
pub mod outgoing;
pub mod recent;
pub mod session;

use std::time::Duration;

pub use hub::EventHub;

/// Timers and bounds of the live stream.
#[derive(Clone, Debug)]
pub struct LiveSettings {
    /// How often `system_metrics` is sent.
    pub metrics_interval: Duration,
    /// How often the server pings each session.
    pub ping_interval: Duration,
    /// A session that has not answered (pong, or any valid message) for this long is closed.
    pub ping_timeout: Duration,
    /// Messages waiting for one session before it counts as too slow and is dropped.
    pub queue: usize,
    /// Largest frame a client may send.
    pub max_frame: usize,
    /// Bad messages in a row before a client is closed.
    pub max_strikes: u32,
    /// Messages per second a client may send before it counts as flooding.
    pub max_messages_per_second: u32,
    /// How long a closing session waits for room to send its close frame. A slow consumer's
    /// socket is full when it is dropped; this gives it a moment to read on and learn why
    /// (1013) before the connection is simply cut. Only the close frame waits: the queue is
    /// dropped at once.
    pub close_grace: Duration,
    /// How long a connection to a gateway with keys may stay without sending its key.
    pub auth_timeout: Duration,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            metrics_interval: Duration::from_secs(5),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(45),
            queue: 256,
            max_frame: 64 * 1024,
            max_strikes: 10,
            max_messages_per_second: 50,
            close_grace: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(10),
        }
    }
}
