//! Access control: API keys with roles, per-key allow-lists over `server/tool`, and
//! per-key rate limits. The [`guard`] middleware identifies every request's caller
//! against the [`KeyRing`] and puts its [`Identity`] in the request's extensions, where the
//! handlers that filter by allow-list (tool catalogue, calls, `/mcp`, the live stream)
//! find it; each route's [`door`] then admits or refuses by the [`Access`] declared with
//! the route.

pub mod access;
pub mod allow;
pub mod boundary;
pub mod door;
pub mod guard;
pub mod keyring;
pub mod manage;
pub mod rate;
pub mod secret;

use std::fmt;
use std::sync::Arc;

pub use access::{Access, Identity};
pub use allow::AllowList;
pub use keyring::KeyRing;

/// What a key may do; each role may do everything the roles before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Role {
    /// Status, catalogue, events, metrics and the live stream.
    Viewer,
    /// Also calls tools (HTTP and `/mcp`).
    Operator,
    /// Also changes servers, caches and keys, and reads the audit log.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "'{other}' is not a role: viewer, operator or admin"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is asking: a key, or nobody in particular when the gateway runs open.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The key's name; `None` when the gateway runs without keys.
    pub key: Option<String>,
    pub role: Role,
    pub allow: Arc<AllowList>,
}

impl Caller {
    /// Everyone, when no keys are required (loopback with no keys, or told so).
    pub fn open() -> Self {
        Self {
            key: None,
            role: Role::Admin,
            allow: Arc::default(),
        }
    }

    pub fn may_call(&self, server: &str, tool: &str) -> bool {
        self.allow.allows(server, tool)
    }

    pub fn may_see_server(&self, server: &str) -> bool {
        self.allow.allows_server(server)
    }
}
