//! An upstream's validated declaration, [`ServerSpec`], and the types it is made of. It is
//! made only by `ServerInput::validate` (see `input`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::name::ServerName;

pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// A ping is tiny: an upstream that takes longer than this to answer one is unhealthy,
/// even when its tool calls may take the whole call timeout.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    Stdio,
    StreamableHttp,
    Sse,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::StreamableHttp => "streamable_http",
            Self::Sse => "sse",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "stdio" => Ok(Self::Stdio),
            "streamable_http" => Ok(Self::StreamableHttp),
            "sse" => Ok(Self::Sse),
            other => Err(format!(
                "unknown transport '{other}': use stdio, streamable_http or sse"
            )),
        }
    }
}

/// Which results of this upstream the cache may keep. Caching is a promise the operator
/// makes about a tool: no MCP annotation says a tool's answer never changes
/// (`readOnlyHint` says only that the tool changes nothing), so nothing is cached unless
/// asked for.
/// `auto`, the old name of `read-only`, is still accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum CachePolicy {
    /// Nothing: every call reaches the upstream.
    #[default]
    #[serde(rename = "never")]
    Never,
    /// Tools that the upstream marks `readOnlyHint: true`, except those that also say
    /// `openWorldHint: true` (their answers come from outside) unless named in `tools`.
    #[serde(rename = "read-only", alias = "auto")]
    ReadOnly,
    #[serde(rename = "always")]
    Always,
}

impl CachePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::ReadOnly => "read-only",
            Self::Always => "always",
        }
    }

    /// Parses a policy; `auto` is the old name of `read-only` and still accepted (the
    /// configuration warns about it at start).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "never" => Ok(Self::Never),
            "read-only" | "auto" => Ok(Self::ReadOnly),
            "always" => Ok(Self::Always),
            other => Err(format!(
                "unknown cache policy '{other}': use never, read-only or always"
            )),
        }
    }
}

/// Warm calls one tool may list.
pub const MAX_WARM_CALLS: usize = 32;

/// What a tool says of itself, as far as caching cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ToolHints {
    pub read_only: Option<bool>,
    pub open_world: Option<bool>,
}

impl ToolHints {
    pub fn of(tool: &rmcp::model::Tool) -> Self {
        let a = tool.annotations.as_ref();
        Self {
            read_only: a.and_then(|a| a.read_only_hint),
            open_world: a.and_then(|a| a.open_world_hint),
        }
    }
}

/// Why a tool's results are cached or not, for `GET /api/v1/tools`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheReason {
    /// The server's policy (`cache`, or the default `never`).
    Server,
    /// The tool's own `tools.NAME.cache`.
    Tool,
    /// `read-only`, and the tool's annotations decided.
    Annotation,
}

impl CacheReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server policy",
            Self::Tool => "tool override",
            Self::Annotation => "annotations",
        }
    }
}

/// Where a registry entry came from. Entries from the config file are the file's to
/// change: the API refuses to edit them, since the next start would undo the edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Config,
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Api => "api",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "config" => Ok(Self::Config),
            "api" => Ok(Self::Api),
            other => Err(format!("unknown source '{other}'")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<String>,
    },
    StreamableHttp {
        url: url::Url,
        headers: BTreeMap<String, String>,
    },
    Sse {
        url: url::Url,
        headers: BTreeMap<String, String>,
    },
}

impl Transport {
    pub fn kind(&self) -> TransportKind {
        match self {
            Self::Stdio { .. } => TransportKind::Stdio,
            Self::StreamableHttp { .. } => TransportKind::StreamableHttp,
            Self::Sse { .. } => TransportKind::Sse,
        }
    }
}

/// Settings of one tool of a server, overriding the server's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl_ms: Option<u64>,
    /// What a successful call of this tool invalidates, as globs over the server's tool
    /// names; `None`: every entry of the server when the tool is not read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidates: Option<Vec<String>>,
    /// Calls (their arguments) made when the server comes up and after each invalidation
    /// of this tool's entries, so the first caller finds them cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<Vec<serde_json::Map<String, Value>>>,
}

impl ToolOverride {
    pub fn cache_ttl(&self) -> Option<Duration> {
        self.cache_ttl_ms.map(Duration::from_millis)
    }
}

/// A validated upstream declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSpec {
    pub name: ServerName,
    pub transport: Transport,
    pub enabled: bool,
    pub probe_interval: Duration,
    /// `None` leaves the probe its default, see [`ServerSpec::probe_timeout`].
    pub probe_timeout: Option<Duration>,
    pub timeout: Duration,
    pub cache: CachePolicy,
    pub cache_ttl: Option<Duration>,
    /// Per-tool overrides, by the upstream's tool name.
    pub tools: BTreeMap<String, ToolOverride>,
    /// How this server's tools are named at `/mcp`: `None` means `{server}__{tool}`,
    /// `Some("")` the upstream's own names, `Some(p)` means `{p}__{tool}`.
    pub tool_prefix: Option<String>,
    /// Whether a write (a call of a tool neither read-only nor cached) drops the server's
    /// entries; a tool's own `invalidates` list applies either way.
    pub invalidate_on_write: bool,
}

impl ServerSpec {
    /// How long a health probe (MCP `ping`) may take: the server's own `probe_timeout`
    /// if set (the operator knows best), else [`DEFAULT_PROBE_TIMEOUT`], or the call
    /// timeout if that is shorter (by default a probe never waits longer than a call).
    pub fn probe_timeout(&self) -> Duration {
        self.probe_timeout
            .unwrap_or_else(|| DEFAULT_PROBE_TIMEOUT.min(self.timeout))
    }

    /// Whether the cache is on for any tool of this server.
    pub fn caches_anything(&self) -> bool {
        self.cache != CachePolicy::Never
            || self
                .tools
                .values()
                .any(|o| o.cache.is_some_and(|c| c != CachePolicy::Never))
    }

    /// How long a result of `tool` may be cached (`None`: not at all), and why.
    pub fn cache_decision(
        &self,
        tool: &str,
        hints: ToolHints,
        default_ttl: Duration,
    ) -> (Option<Duration>, CacheReason) {
        let over = self.tools.get(tool);
        let (policy, named) = match over.and_then(|o| o.cache) {
            Some(policy) => (policy, true),
            None => (self.cache, false),
        };
        let (cacheable, reason) = match policy {
            CachePolicy::Never | CachePolicy::Always if named => {
                (policy == CachePolicy::Always, CacheReason::Tool)
            }
            CachePolicy::Never => (false, CacheReason::Server),
            CachePolicy::Always => (true, CacheReason::Server),
            // An open-world tool (its answers come from outside) only when named.
            CachePolicy::ReadOnly => (
                hints.read_only == Some(true) && (named || hints.open_world != Some(true)),
                CacheReason::Annotation,
            ),
        };
        let ttl = cacheable.then(|| {
            over.and_then(ToolOverride::cache_ttl)
                .or(self.cache_ttl)
                .unwrap_or(default_ttl)
        });
        (ttl, reason)
    }

    /// How long a result of `tool` may be cached, or `None` if it may not be.
    pub fn cache_ttl_for(
        &self,
        tool: &str,
        hints: ToolHints,
        default_ttl: Duration,
    ) -> Option<Duration> {
        self.cache_decision(tool, hints, default_ttl).0
    }

    /// What a call of `tool` invalidates among the server's tools: `None` for nothing
    /// (caching is off; or the tool is read-only, or cached by the operator's word, and
    /// names nothing), else the globs of the tools to drop, or every entry of the server
    /// (`Some(None)`). A tool's `invalidates` list, when given, is the answer.
    pub fn invalidated_by(&self, tool: &str, hints: ToolHints) -> Option<Option<Vec<String>>> {
        if !self.caches_anything() {
            return None;
        }
        let cached = self.cache_decision(tool, hints, Duration::ZERO).0.is_some();
        match self.tools.get(tool).and_then(|o| o.invalidates.as_ref()) {
            Some(globs) if globs.is_empty() => None,
            Some(globs) => Some(Some(globs.clone())),
            None if hints.read_only == Some(true) || cached || !self.invalidate_on_write => None,
            None => Some(None),
        }
    }

    /// Whether a call of `writer` drops the entries of `target`.
    pub fn write_drops(&self, writer: &str, hints: ToolHints, target: &str) -> bool {
        match self.invalidated_by(writer, hints) {
            None => false,
            Some(None) => true,
            Some(Some(globs)) => globs.iter().any(|g| crate::glob::matches(g, target)),
        }
    }
}
