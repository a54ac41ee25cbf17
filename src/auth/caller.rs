//! Who a request comes from: its key's name, role and allow-list, as the guard found them.

use std::fmt;
use std::sync::Arc;

use super::allow::AllowList;

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
