//! omni-bridge: an MCP gateway on actix. See DESIGN.md in the shared folder for the picture
//! of the actors, states, surfaces and tables; README.md for how to run it.

pub mod audit;
pub mod auth;
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
