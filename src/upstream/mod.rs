//! Upstream MCP servers: one actor per server keeps its session, and our own supervisor
//! restarts them. See DESIGN.md sections 1 and 2.

pub mod actor;
pub mod breaker;
pub mod connect;
pub mod errors;
pub mod history;
pub mod lane;
pub mod relay;
pub mod restart;
pub mod sse;
pub mod status;
pub mod supervisor;

pub use actor::{CallError, Forward, Forwarded, UpstreamActor};
pub use status::{Offers, Snapshot, StatusBoard, UpstreamStatus};
pub use supervisor::UpstreamSupervisor;

/// Tuning of breakers and restarts, for every upstream.
#[derive(Clone, Debug, Default)]
pub struct UpstreamSettings {
    pub breaker: breaker::BreakerConfig,
    pub restart: restart::RestartConfig,
}
