//! The registry of upstream MCP servers: what an operator declares about each one.

pub mod spec;

pub use spec::{
    CachePolicy, REDACTED, RestoreError, ServerInput, ServerName, ServerSpec, Source, Transport,
    TransportKind, ValidationError, redact_url,
};
