//! Upstream MCP servers: one actor per server keeps its session, and our own supervisor
//! restarts them (`supervisor`, with its policy in `restart`).

mod actor;
mod breaker;
mod call_error;
mod connect;
mod errors;
mod history;
mod lane;
mod limited_http;
mod messages;
mod oversize;
mod relay;
mod restart;
mod settings;
mod sse;
mod status;
mod supervisor;

// The module's face: what the rest of the gateway may name. Everything else here is
// how an upstream is kept, and may change without anyone outside noticing.
pub use actor::{Forward, Forwarded, UpstreamActor};
pub use breaker::{Breaker, BreakerConfig, CircuitState};
pub use call_error::CallError;
pub use connect::upstream_runtime;
pub use history::start as start_history;
pub use lane::Lane;
pub use oversize::{is_request, transport_limit};
pub use relay::{INPUT_KEY_META, Relay, RelayItem, Relayed, new_client as new_relay_client};
pub use restart::RestartConfig;
pub use settings::{DEFAULT_MAX_RESULT_BYTES, UpstreamSettings};
pub use status::{Offers, Snapshot, StatusBoard, UpstreamStatus};
pub use supervisor::{
    GetUpstream, Reconcile, ReconcileOne, Reload, Reset, SupervisorError, UpstreamSupervisor,
};
