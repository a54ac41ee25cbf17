//! The registry of upstream MCP servers: what an operator declares about each one.

pub mod spec;

pub use spec::{
    CachePolicy, CacheReason, REDACTED, RestoreError, ServerInput, ServerName, ServerSpec, Source,
    ToolHints, Transport, TransportKind, ValidationError, redact_url,
};
