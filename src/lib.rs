//! omni-bridge: an MCP gateway on actix. README.md says how to run it, and docs/layout.md
//! which module holds what. docs/ARCHITECTURE.md maps the actors, who owns which state,
//! and the files a tool call, a `/mcp` call, a status change and a restart pass through.

pub mod audit;
pub mod auth;
pub mod bare_errors;
pub mod batch;
pub mod cache;
pub mod call_failure;
pub mod cli;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod connect_cli;
pub mod deadline;
pub mod duration;
pub mod error;
pub mod events;
pub mod gateway;
pub mod glob;
pub mod http;
pub mod import_cli;
pub mod keys_cli;
pub mod linger;
pub mod live;
pub mod mcp;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod store;
pub mod tls;
pub mod traffic;
pub mod trim;
pub mod upstream;
pub mod warm;
