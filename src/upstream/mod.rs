//! Upstream MCP servers: one actor per server keeps its session, and our own supervisor
//! restarts them (`supervisor`, with its policy in `restart`).

pub mod actor;
pub mod breaker;
pub mod connect;
pub mod errors;
pub mod history;
pub mod lane;
pub mod limited_http;
pub mod oversize;
pub mod relay;
pub mod restart;
pub mod sse;
pub mod status;
pub mod supervisor;

pub use actor::{CallError, Forward, Forwarded, UpstreamActor};
pub use status::{Offers, Snapshot, StatusBoard, UpstreamStatus};
pub use supervisor::UpstreamSupervisor;

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
            message_limit: oversize::transport_limit(crate::config::DEFAULT_MAX_RESULT_BYTES),
        }
    }
}
