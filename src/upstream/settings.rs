//! How every upstream is kept: breaker and restart tuning, and the most one message may
//! hold.

use super::{breaker, oversize, restart};

/// The most a tool result may hold (`max_result_bytes`), unless configured: 16 MiB, rmcp's
/// own cap on one message over stdio and SSE.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;

/// Tuning of breakers and restarts, for every upstream.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub breaker: breaker::BreakerConfig,
    pub restart: restart::RestartConfig,
    /// The most one message from an upstream may hold (see [`oversize`]); the server sets
    /// it from `max_result_bytes`.
    pub message_limit: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            breaker: Default::default(),
            restart: Default::default(),
            message_limit: oversize::transport_limit(DEFAULT_MAX_RESULT_BYTES),
        }
    }
}
