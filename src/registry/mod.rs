//! The registry of upstream MCP servers: what an operator declares about each one.

pub mod input;
pub mod invalid;
pub mod name;
pub mod names;
pub mod secrets;
pub mod spec;

pub use input::{ServerInput, ToolOverrideInput};
pub use invalid::ValidationError;
pub use name::ServerName;
pub use secrets::{REDACTED, RestoreError, redact_url};
pub use spec::{CachePolicy, CacheReason, ServerSpec, Source, ToolHints, Transport, TransportKind};
