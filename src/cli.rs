//! The command line. Every `serve` flag also reads an `OMNI_*` environment variable; clap
//! applies "flag beats environment", and [`crate::config`] puts both above the file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "omni-bridge",
    version,
    about = "An MCP gateway: one front door for many MCP servers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Print the OpenAPI 3.1 document of the HTTP API (what `docs/openapi.json` holds).
    Openapi,
    /// Manage API keys (works before the first start; uses the same store).
    Keys {
        #[command(flatten)]
        store: ServeArgs,
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key; its secret is printed once, and only its SHA-256 is stored.
    Create {
        #[arg(long)]
        name: String,
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// A `server/tool` glob the key may use (repeatable); none means every tool.
        #[arg(long = "allow", value_name = "SERVER/TOOL")]
        allow: Vec<String>,
        /// The key's own rate limit, e.g. 10/s (else its role's).
        #[arg(long, value_name = "N/s|N/m|N/h")]
        rate_limit: Option<String>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by name; it stops working at once.
    Revoke { name: String },
}

#[derive(Clone, Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "OMNI_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "OMNI_BIND", value_name = "ADDR:PORT")]
    pub bind: Option<String>,
    /// postgres://… or sqlite://PATH [default: sqlite://DATA_DIR/omni-bridge.db].
    #[arg(long, env = "OMNI_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Directory for the default SQLite database [default: ./data].
    #[arg(long, env = "OMNI_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log filter, e.g. "info" or "omni_bridge=debug" [default: info].
    #[arg(long, env = "OMNI_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// redis://… for a cache tier shared by every instance (optional).
    #[arg(long, env = "OMNI_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
    /// Run without API keys on a non-loopback address (refused otherwise).
    #[arg(long, env = "OMNI_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}
