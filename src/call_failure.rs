//! Why a tool call through the gateway failed, in the gateway's own terms: what
//! `Gateway::call` answers. The HTTP API turns it into its error answer (`crate::error`),
//! the MCP endpoint into a tool error or a protocol error (`mcp::handler`); both take the
//! stable code from [`CallFailure::code`], and the audit log stores [`CallFailure::status`].

use crate::registry::ValidationError;
use crate::upstream::CallError;

#[derive(Clone, Debug, thiserror::Error)]
pub enum CallFailure {
    #[error("no server named '{0}'")]
    ServerNotFound(String),
    #[error("server '{server}' has no tool named '{tool}'")]
    ToolNotFound { server: String, tool: String },
    /// The arguments do not match the tool's `inputSchema`; names the field.
    #[error("{0}")]
    InvalidArguments(ValidationError),
    /// The upstream, or the way to it, failed.
    #[error("{0}")]
    Upstream(CallError),
    /// A call that ended in a way the gateway did not expect (logged where it happened).
    #[error("internal error")]
    Internal,
}

impl CallFailure {
    /// The stable code clients read (kebab-case, as every error of the API).
    pub fn code(&self) -> &'static str {
        match self {
            Self::ServerNotFound(_) => "server-not-found",
            Self::ToolNotFound { .. } => "tool-not-found",
            Self::InvalidArguments(_) => "invalid-arguments",
            Self::Upstream(e) => match e {
                CallError::NotConnected { .. } => "upstream-unavailable",
                CallError::CircuitOpen { .. } => "circuit-open",
                CallError::Timeout { .. } => "upstream-timeout",
                CallError::Upstream { .. } => "upstream-error",
                CallError::Transport { .. } => "upstream-unreachable",
                CallError::Gone { .. } => "upstream-gone",
                CallError::TooLarge { .. } => "upstream-result-too-large",
            },
            Self::Internal => "internal",
        }
    }

    /// The HTTP status the API answers it with, which the audit log also records (so
    /// `/mcp` calls and HTTP calls read alike there).
    pub fn status(&self) -> u16 {
        match self {
            Self::ServerNotFound(_) | Self::ToolNotFound { .. } => 404,
            Self::InvalidArguments(_) => 400,
            Self::Upstream(e) => match e {
                CallError::NotConnected { .. }
                | CallError::CircuitOpen { .. }
                | CallError::Gone { .. } => 503,
                CallError::Timeout { .. } => 504,
                CallError::Upstream { .. }
                | CallError::Transport { .. }
                | CallError::TooLarge { .. } => 502,
            },
            Self::Internal => 500,
        }
    }

    /// The call named a server or tool the gateway does not know.
    pub fn is_unknown_name(&self) -> bool {
        matches!(self, Self::ServerNotFound(_) | Self::ToolNotFound { .. })
    }
}

impl From<CallError> for CallFailure {
    fn from(e: CallError) -> Self {
        Self::Upstream(e)
    }
}
