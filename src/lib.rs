//! omni-bridge: an MCP gateway on actix. README.md says how to run it and, under "Layout",
//! which module holds what.

pub mod audit;
pub mod auth;
pub mod bare_errors;
pub mod batch;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod deadline;
pub mod duration;
pub mod error;
pub mod events;
pub mod gateway;
pub mod glob;
pub mod http;
pub mod keys_cli;
pub mod linger;
pub mod live;
pub mod mcp;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod warm;
