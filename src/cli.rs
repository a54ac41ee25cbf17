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
    /// Bring servers from MCP client config files (Claude Desktop, Claude Code, Cursor,
    /// VS Code) behind the gateway: into its TOML file, or registered through its API.
    Import(ImportArgs),
    /// Point an MCP client (claude-code, claude-desktop, cursor, vscode) at this gateway's
    /// /mcp: prints its config entry, or merges it into the client's file.
    Connect(ConnectArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Client config files: claude_desktop_config.json, .mcp.json, mcp.json,
    /// .vscode/mcp.json.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Add the servers to this gateway TOML file as [[servers]] entries (created if
    /// missing; its comments and other content are kept, the old one is kept as a backup).
    #[arg(long, value_name = "FILE", conflicts_with = "url")]
    pub config: Option<PathBuf>,
    /// Register the servers through a running gateway's API instead, e.g.
    /// http://127.0.0.1:8080 (stdio servers need allow_stdio_via_api there).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The API key for --url (an operator or admin key).
    #[arg(
        long,
        env = "OMNI_API_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub key: Option<String>,
    /// Print what would be written or registered, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// claude-code, claude-desktop, cursor or vscode.
    #[arg(value_name = "CLIENT")]
    pub client: String,
    /// The gateway's address as the client reaches it [default: from --bind / the config,
    /// http://127.0.0.1:8080].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The entry's name in the client's file.
    #[arg(long, default_value = "omni-bridge")]
    pub name: String,
    /// Create an operator key with this name for the client (in the gateway's store).
    #[arg(long, value_name = "NAME", conflicts_with = "api_key")]
    pub key: Option<String>,
    /// Use this existing key's secret.
    #[arg(
        long,
        env = "OMNI_API_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Merge the entry into the client's file (a backup of it is kept).
    #[arg(long)]
    pub write: bool,
    /// The client's file [default: the client's usual one].
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub store: ServeArgs,
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

impl ServeArgs {
    /// These arguments, with what they leave unset taken from `outer`: the flags given
    /// before the subcommand (`omni-bridge --data-dir D keys create ...`). Without this,
    /// those flags were silently dropped, and a key meant for `D` went to `./data`, so the
    /// gateway on `D` ran open.
    pub fn under(self, outer: &ServeArgs) -> ServeArgs {
        let outer = outer.clone();
        ServeArgs {
            config: self.config.or(outer.config),
            bind: self.bind.or(outer.bind),
            database_url: self.database_url.or(outer.database_url),
            data_dir: self.data_dir.or(outer.data_dir),
            log: self.log.or(outer.log),
            redis_url: self.redis_url.or(outer.redis_url),
            insecure_no_auth: self.insecure_no_auth || outer.insecure_no_auth,
        }
    }
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
