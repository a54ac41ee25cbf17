//! An upstream's declaration, as written in the TOML file or sent to the registry API, and
//! its validated form. Both surfaces go through [`ServerInput::validate`] so they accept
//! and refuse exactly the same things.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::duration;

/// Stands in for a secret (header or env value) in every answer. Sending it back in a
/// `PUT` keeps the stored value, so a client can round-trip what it read.
pub const REDACTED: &str = "<redacted>";

pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// A ping is tiny: an upstream that takes longer than this to answer one is unhealthy,
/// even when its tool calls may take the whole call timeout.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(50);
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(24 * 3600);
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Durations are stored in whole milliseconds: anything shorter would become 0.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_CACHE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A validated upstream name: `[a-z0-9-]`, 1 to 64 characters, never `__` (which later
/// separates server and tool in exposed tool names).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ServerName(String);

impl ServerName {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > 64 {
            return Err(format!(
                "must be 1 to 64 characters, got {}",
                text.chars().count()
            ));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!("may hold only a-z, 0-9 and '-', found {bad:?}"));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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

impl ServerSpec {
    /// The JSON an API client sees: every field of the input form, secrets redacted.
    pub fn to_public_json(&self) -> Value {
        let redact = |map: &BTreeMap<String, String>| -> BTreeMap<String, &'static str> {
            map.keys().map(|k| (k.clone(), REDACTED)).collect()
        };
        let mut out = json!({
            "name": self.name,
            "transport": self.transport.kind(),
            "enabled": self.enabled,
            "probe_interval": duration::format(self.probe_interval),
            "probe_timeout": self.probe_timeout.map(duration::format),
            "timeout": duration::format(self.timeout),
            "cache": self.cache,
            "cache_ttl": self.cache_ttl.map(duration::format),
            "invalidate_on_write": self.invalidate_on_write,
            "tool_prefix": self.tool_prefix,
            "tools": self.tools.iter().map(|(name, o)| {
                (name.clone(), json!({
                    "cache": o.cache,
                    "cache_ttl": o.cache_ttl().map(duration::format),
                    "invalidates": o.invalidates,
                    "warm": o.warm,
                }))
            }).collect::<serde_json::Map<String, Value>>(),
        });
        let fields = out.as_object_mut().expect("built as an object");
        match &self.transport {
            Transport::Stdio {
                command,
                args,
                env,
                cwd,
            } => {
                fields.insert("command".into(), json!(command));
                fields.insert("args".into(), json!(args));
                fields.insert("env".into(), json!(redact(env)));
                fields.insert("cwd".into(), json!(cwd));
            }
            Transport::StreamableHttp { url, headers } | Transport::Sse { url, headers } => {
                fields.insert("url".into(), json!(redact_url(url)));
                fields.insert("headers".into(), json!(redact(headers)));
            }
        }
        out
    }

    /// Secret values an update left as [`REDACTED`] take the stored value: header and env
    /// values, and the password of an upstream URL. A redacted value with no stored
    /// counterpart is an error: we cannot invent the secret. Stored secrets stay with
    /// their origin: when the URL moves to another origin (scheme, host, port), or names
    /// another user for a redacted password, redacted values are refused
    /// ([`RestoreError::NeedsReentry`]) and must be sent again. Answers whether any value
    /// was restored.
    pub fn restore_redacted(&mut self, stored: &ServerSpec) -> Result<bool, RestoreError> {
        fn fill(
            field: &str,
            new: &mut BTreeMap<String, String>,
            old: Option<&BTreeMap<String, String>>,
        ) -> Result<bool, ValidationError> {
            let mut restored = false;
            for (key, value) in new.iter_mut() {
                if value == REDACTED {
                    match old.and_then(|o| o.get(key)) {
                        Some(kept) => {
                            *value = kept.clone();
                            restored = true;
                        }
                        None => {
                            return Err(ValidationError::new(
                                format!("{field}.{key}"),
                                "is redacted but no stored value exists to keep; send the value",
                            ));
                        }
                    }
                }
            }
            Ok(restored)
        }
        let old_url = match &stored.transport {
            Transport::StreamableHttp { url, .. } | Transport::Sse { url, .. } => Some(url),
            Transport::Stdio { .. } => None,
        };
        match &mut self.transport {
            Transport::Stdio { env, .. } => {
                let old = match &stored.transport {
                    Transport::Stdio { env: old, .. } => Some(old),
                    _ => None,
                };
                fill("env", env, old).map_err(RestoreError::Invalid)
            }
            Transport::StreamableHttp { url, headers } | Transport::Sse { url, headers } => {
                if let Some(old_url) = old_url {
                    check_same_origin(url, headers, old_url)?;
                }
                let old = match &stored.transport {
                    Transport::StreamableHttp { headers: old, .. }
                    | Transport::Sse { headers: old, .. } => Some(old),
                    Transport::Stdio { .. } => None,
                };
                let mut restored = fill("headers", headers, old).map_err(RestoreError::Invalid)?;
                if password_is_redacted(url) {
                    let kept = old_url.and_then(|o| o.password()).ok_or_else(|| {
                        RestoreError::Invalid(ValidationError::new(
                            "url",
                            "its password is redacted but no stored password exists to keep; \
                             send the password",
                        ))
                    })?;
                    url.set_password(Some(kept)).map_err(|()| {
                        RestoreError::Invalid(ValidationError::new(
                            "url",
                            "cannot carry a password",
                        ))
                    })?;
                    restored = true;
                }
                Ok(restored)
            }
        }
    }
}

/// Why the redacted values of an update could not be kept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// A redacted value has nothing stored behind it.
    #[error("{0}")]
    Invalid(ValidationError),
    /// The URL moved to another origin (or user) while secrets were left redacted: the
    /// stored secrets were given for the old one, so they must be sent again.
    #[error("{0}")]
    NeedsReentry(ValidationError),
}

/// Refuses redacted secrets (header values, the URL's password) when `url` leaves the
/// origin of `old`, or names another user than `old` for a redacted password.
fn check_same_origin(
    url: &url::Url,
    headers: &BTreeMap<String, String>,
    old: &url::Url,
) -> Result<(), RestoreError> {
    let password = password_is_redacted(url);
    let mut redacted: Vec<String> = headers
        .iter()
        .filter(|(_, value)| value.as_str() == REDACTED)
        .map(|(key, _)| format!("headers.{key}"))
        .collect();
    if password {
        redacted.insert(0, "the url's password".to_owned());
    }
    let Some(first) = redacted.first() else {
        return Ok(());
    };
    let (from, to) = (origin_of(old), origin_of(url));
    let moved = if from != to {
        format!("the url moves from {from} to {to}")
    } else if password && url.username() != old.username() {
        format!(
            "the url's user changes from '{}' to '{}'",
            old.username(),
            url.username()
        )
    } else {
        return Ok(());
    };
    let field = if password { "url" } else { first.as_str() };
    Err(RestoreError::NeedsReentry(ValidationError::new(
        field,
        format!(
            "{moved}; stored secrets stay with their origin, so send the value of {} \
             again instead of \"{REDACTED}\"",
            redacted.join(", ")
        ),
    )))
}

/// `scheme://host:port` of `url`, never its credentials or path.
pub fn origin_of(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// Whether the URL's password is the [`REDACTED`] stand-in, as shown by
/// [`redact_url`] or percent-encoded.
fn password_is_redacted(url: &url::Url) -> bool {
    url.password()
        .is_some_and(|p| p == REDACTED || percent_decode_lossy(p) == REDACTED)
}

fn percent_decode_lossy(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL as the API and messages show it: a password becomes [`REDACTED`], the user
/// name stays.
pub fn redact_url(url: &url::Url) -> String {
    use url::Position;
    if url.password().is_none() {
        return url.as_str().to_owned();
    }
    format!(
        "{}:{REDACTED}@{}",
        &url[..Position::AfterUsername],
        &url[Position::BeforeHost..]
    )
}

/// [`redact_url`] for text that may not parse as a URL (to echo bad input): whatever
/// sits between the first ':' and the last '@' of the authority is taken as a password.
pub fn redact_url_text(text: &str) -> String {
    if let Ok(url) = url::Url::parse(text) {
        return redact_url(&url);
    }
    let after_scheme = text.find("://").map_or(0, |i| i + 3);
    let rest = &text[after_scheme..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return text.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return text.to_owned();
    };
    format!(
        "{}{}:{REDACTED}{}",
        &text[..after_scheme],
        &authority[..colon],
        &rest[at..]
    )
}

/// A field that did not validate, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A tool's overrides as a person writes them.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolOverrideInput {
    #[schema(value_type = Option<CachePolicy>)]
    pub cache: Option<String>,
    pub cache_ttl: Option<String>,
    /// Globs over the server's tool names that a call of this tool invalidates.
    #[serde(default)]
    pub invalidates: Option<Vec<String>>,
    /// Arguments of calls that keep this tool's cache warm.
    #[serde(default)]
    pub warm: Option<Vec<Value>>,
}

/// An upstream as a person writes it: every field optional, strings where the validated
/// form has types, so that mistakes are reported by field with our own words.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "demo", "transport": "streamable_http", "url": "http://127.0.0.1:3001/mcp"}))]
pub struct ServerInput {
    /// Lower-case letters, digits and `-`. Required on create; on update it must match the
    /// path if given.
    #[schema(pattern = "^[a-z0-9-]+$", min_length = 1, max_length = 64)]
    pub name: Option<String>,
    /// Required.
    #[schema(value_type = Option<TransportKind>)]
    pub transport: Option<String>,
    /// stdio: the program to run.
    pub command: Option<String>,
    pub args: Option<Vec<String>>,
    /// stdio: variables added to the child's environment (shown as `<redacted>`).
    pub env: Option<BTreeMap<String, String>>,
    pub cwd: Option<String>,
    /// streamable_http and sse: the upstream's endpoint.
    pub url: Option<String>,
    /// streamable_http and sse: headers sent upstream (shown as `<redacted>`).
    pub headers: Option<BTreeMap<String, String>>,
    pub enabled: Option<bool>,
    /// A duration such as `30s`.
    pub probe_interval: Option<String>,
    pub probe_timeout: Option<String>,
    pub timeout: Option<String>,
    #[schema(value_type = Option<CachePolicy>)]
    pub cache: Option<String>,
    pub cache_ttl: Option<String>,
    /// Default true: a write drops the server's cached results.
    pub invalidate_on_write: Option<bool>,
    /// Per-tool overrides, by the upstream's tool name.
    pub tools: Option<BTreeMap<String, ToolOverrideInput>>,
    /// How the tools are named at `/mcp`: absent `{server}__{tool}`, `""` the upstream's
    /// names, else `{prefix}__{tool}`.
    pub tool_prefix: Option<String>,
}

impl ServerInput {
    pub fn validate(self) -> Result<ServerSpec, ValidationError> {
        let name = self
            .name
            .as_deref()
            .ok_or_else(|| ValidationError::new("name", "is required"))
            .and_then(|n| ServerName::parse(n).map_err(|m| ValidationError::new("name", m)))?;
        let kind = self
            .transport
            .as_deref()
            .ok_or_else(|| {
                ValidationError::new("transport", "is required: stdio, streamable_http or sse")
            })
            .and_then(|t| {
                TransportKind::parse(t).map_err(|m| ValidationError::new("transport", m))
            })?;
        let transport = match kind {
            TransportKind::Stdio => {
                refuse_field("url", self.url.is_some(), kind)?;
                refuse_field("headers", self.headers.is_some(), kind)?;
                let command = self
                    .command
                    .filter(|c| !c.trim().is_empty())
                    .ok_or_else(|| ValidationError::new("command", "is required for stdio"))?;
                let env = self.env.unwrap_or_default();
                for (key, value) in &env {
                    if key.is_empty() || key.contains('=') || key.contains('\0') {
                        return Err(ValidationError::new(
                            format!("env.{key}"),
                            "an environment variable name must be non-empty, without '=' or NUL",
                        ));
                    }
                    if value.contains('\0') {
                        return Err(ValidationError::new(format!("env.{key}"), "contains NUL"));
                    }
                }
                let args = self.args.unwrap_or_default();
                if args.iter().any(|a| a.contains('\0')) || command.contains('\0') {
                    return Err(ValidationError::new("args", "contains NUL"));
                }
                Transport::Stdio {
                    command,
                    args,
                    env,
                    cwd: self.cwd.filter(|c| !c.is_empty()),
                }
            }
            TransportKind::StreamableHttp | TransportKind::Sse => {
                refuse_field("command", self.command.is_some(), kind)?;
                refuse_field("args", self.args.is_some(), kind)?;
                refuse_field("env", self.env.is_some(), kind)?;
                refuse_field("cwd", self.cwd.is_some(), kind)?;
                let url = self
                    .url
                    .as_deref()
                    .ok_or_else(|| ValidationError::new("url", "is required for this transport"))
                    .and_then(parse_http_url)?;
                let headers = self.headers.unwrap_or_default();
                for (key, value) in &headers {
                    validate_header(key, value)?;
                }
                if kind == TransportKind::Sse {
                    Transport::Sse { url, headers }
                } else {
                    Transport::StreamableHttp { url, headers }
                }
            }
        };
        let probe_interval = optional_duration(
            "probe_interval",
            self.probe_interval.as_deref(),
            MIN_PROBE_INTERVAL,
            MAX_PROBE_INTERVAL,
        )?
        .unwrap_or(DEFAULT_PROBE_INTERVAL);
        let probe_timeout = optional_duration(
            "probe_timeout",
            self.probe_timeout.as_deref(),
            MIN_PROBE_TIMEOUT,
            MAX_TIMEOUT,
        )?;
        let timeout =
            optional_duration("timeout", self.timeout.as_deref(), MIN_TIMEOUT, MAX_TIMEOUT)?
                .unwrap_or(DEFAULT_TIMEOUT);
        let cache = self
            .cache
            .as_deref()
            .map(CachePolicy::parse)
            .transpose()
            .map_err(|m| ValidationError::new("cache", m))?
            .unwrap_or_default();
        let cache_ttl = optional_duration(
            "cache_ttl",
            self.cache_ttl.as_deref(),
            Duration::from_millis(1),
            MAX_CACHE_TTL,
        )?;
        let mut tools = BTreeMap::new();
        for (tool, input) in self.tools.unwrap_or_default() {
            if tool.is_empty() || tool.len() > 128 {
                return Err(ValidationError::new(
                    format!("tools.{tool}"),
                    "a tool name is 1 to 128 characters",
                ));
            }
            let cache = input
                .cache
                .as_deref()
                .map(CachePolicy::parse)
                .transpose()
                .map_err(|m| ValidationError::new(format!("tools.{tool}.cache"), m))?;
            let ttl = optional_duration(
                &format!("tools.{tool}.cache_ttl"),
                input.cache_ttl.as_deref(),
                Duration::from_millis(1),
                MAX_CACHE_TTL,
            )?;
            if let Some(globs) = &input.invalidates {
                for glob in globs {
                    if glob.is_empty() || glob.len() > 128 || glob.chars().any(char::is_control) {
                        return Err(ValidationError::new(
                            format!("tools.{tool}.invalidates"),
                            "each entry is a glob over tool names of 1 to 128 characters",
                        ));
                    }
                }
            }
            let warm = match input.warm {
                None => None,
                Some(calls) if calls.len() > MAX_WARM_CALLS => {
                    return Err(ValidationError::new(
                        format!("tools.{tool}.warm"),
                        format!("at most {MAX_WARM_CALLS} calls"),
                    ));
                }
                Some(calls) => Some(
                    calls
                        .into_iter()
                        .map(|call| match call {
                            Value::Object(args) => Ok(args),
                            _ => Err(ValidationError::new(
                                format!("tools.{tool}.warm"),
                                "each call is an object of arguments",
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            tools.insert(
                tool,
                ToolOverride {
                    cache,
                    cache_ttl_ms: ttl.map(|d| d.as_millis() as u64),
                    invalidates: input.invalidates,
                    warm,
                },
            );
        }
        let tool_prefix = self
            .tool_prefix
            .map(|p| crate::mcp::names::validate_prefix(&p).map(|()| p))
            .transpose()
            .map_err(|m| ValidationError::new("tool_prefix", m))?;
        Ok(ServerSpec {
            name,
            transport,
            enabled: self.enabled.unwrap_or(true),
            probe_interval,
            probe_timeout,
            timeout,
            cache,
            cache_ttl,
            tools,
            tool_prefix,
            invalidate_on_write: self.invalidate_on_write.unwrap_or(true),
        })
    }
}

fn refuse_field(field: &str, present: bool, kind: TransportKind) -> Result<(), ValidationError> {
    if present {
        Err(ValidationError::new(
            field,
            format!("does not apply to transport {}", kind.as_str()),
        ))
    } else {
        Ok(())
    }
}

fn optional_duration(
    field: &str,
    text: Option<&str>,
    min: Duration,
    max: Duration,
) -> Result<Option<Duration>, ValidationError> {
    text.map(|t| duration::parse_within(t, min, max))
        .transpose()
        .map_err(|m| ValidationError::new(field, m))
}

fn parse_http_url(text: &str) -> Result<url::Url, ValidationError> {
    let url = url::Url::parse(text).map_err(|e| {
        ValidationError::new(
            "url",
            format!("'{}' is not a URL: {e}", redact_url_text(text)),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ValidationError::new(
            "url",
            format!("scheme must be http or https, got '{}'", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ValidationError::new("url", "has no host"));
    }
    Ok(url)
}

fn validate_header(key: &str, value: &str) -> Result<(), ValidationError> {
    use actix_web::http::header::{HeaderName, HeaderValue};
    HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
        ValidationError::new(format!("headers.{key}"), "is not a valid header name")
    })?;
    // The value is not echoed: it is likely a secret.
    HeaderValue::from_str(value).map_err(|_| {
        ValidationError::new(
            format!("headers.{key}"),
            "value holds characters a header cannot carry",
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio() -> ServerInput {
        ServerInput {
            name: Some("time".into()),
            transport: Some("stdio".into()),
            command: Some("python3".into()),
            args: Some(vec!["-m".into(), "mcp_server_time".into()]),
            env: Some([("TZ".to_string(), "UTC".to_string())].into()),
            ..Default::default()
        }
    }

    fn http() -> ServerInput {
        ServerInput {
            name: Some("web".into()),
            transport: Some("streamable_http".into()),
            url: Some("http://127.0.0.1:3001/mcp".into()),
            headers: Some([("Authorization".to_string(), "Bearer s3cret".to_string())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_the_rules() {
        assert!(ServerName::parse("time-2").is_ok());
        assert!(ServerName::parse(&"a".repeat(64)).is_ok());
        assert!(ServerName::parse(&"a".repeat(65)).is_err());
        assert!(ServerName::parse("").is_err());
        assert!(ServerName::parse("Time").is_err());
        assert!(ServerName::parse("a__b").is_err());
        assert!(ServerName::parse("a b").is_err());
    }

    #[test]
    fn defaults_apply() {
        let spec = stdio().validate().unwrap();
        assert_eq!(spec.probe_interval, DEFAULT_PROBE_INTERVAL);
        assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
        // Nothing is cached unless the operator says so.
        assert_eq!(spec.cache, CachePolicy::Never);
        assert!(!spec.caches_anything());
        assert!(spec.enabled);
    }

    #[test]
    fn transport_must_match_its_fields() {
        let mut wrong = stdio();
        wrong.url = Some("http://x".into());
        assert_eq!(wrong.validate().unwrap_err().field, "url");
        let mut wrong = http();
        wrong.command = Some("x".into());
        assert_eq!(wrong.validate().unwrap_err().field, "command");
        let mut missing = http();
        missing.url = None;
        assert_eq!(missing.validate().unwrap_err().field, "url");
    }

    #[test]
    fn urls_need_http_and_a_host() {
        for bad in ["ftp://x/y", "not a url", "http://"] {
            let mut input = http();
            input.url = Some(bad.into());
            assert_eq!(input.validate().unwrap_err().field, "url", "{bad}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_public_json() {
        let out = http().validate().unwrap().to_public_json();
        assert_eq!(out["headers"]["Authorization"], REDACTED);
        assert!(!out.to_string().contains("s3cret"));
        let out = stdio().validate().unwrap().to_public_json();
        assert_eq!(out["env"]["TZ"], REDACTED);
    }

    #[test]
    fn redacted_values_keep_the_stored_secret() {
        let stored = http().validate().unwrap();
        let mut update = http();
        update.headers = Some(
            [
                ("Authorization".to_string(), REDACTED.to_string()),
                ("X-New".to_string(), "v".to_string()),
            ]
            .into(),
        );
        let mut spec = update.validate().unwrap();
        assert!(spec.restore_redacted(&stored).unwrap());
        let Transport::StreamableHttp { headers, .. } = &spec.transport else {
            panic!("transport changed")
        };
        assert_eq!(headers["Authorization"], "Bearer s3cret");
        assert_eq!(headers["X-New"], "v");

        let mut unknown = http();
        unknown.headers = Some([("X-Other".to_string(), REDACTED.to_string())].into());
        let mut spec = unknown.validate().unwrap();
        assert_eq!(
            spec.restore_redacted(&stored).unwrap_err(),
            RestoreError::Invalid(ValidationError::new(
                "headers.X-Other",
                "is redacted but no stored value exists to keep; send the value"
            ))
        );
    }

    fn http_at(url: &str, headers: &[(&str, &str)]) -> ServerInput {
        ServerInput {
            url: Some(url.into()),
            headers: Some(
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..http()
        }
    }

    fn url_of(spec: &ServerSpec) -> &url::Url {
        match &spec.transport {
            Transport::StreamableHttp { url, .. } | Transport::Sse { url, .. } => url,
            Transport::Stdio { .. } => panic!("not an http transport"),
        }
    }

    #[test]
    fn redacted_secrets_stay_with_their_origin() {
        let stored = http().validate().unwrap();
        let secret = [("Authorization", REDACTED)];
        // Same origin, another path: the stored secret is kept.
        let mut spec = http_at("http://127.0.0.1:3001/other", &secret)
            .validate()
            .unwrap();
        assert!(spec.restore_redacted(&stored).unwrap());
        // Another port, host or scheme: refused, naming the field and both origins.
        for moved in [
            "http://127.0.0.1:3002/mcp",
            "http://localhost:3001/mcp",
            "https://127.0.0.1:3001/mcp",
        ] {
            let mut spec = http_at(moved, &secret).validate().unwrap();
            let RestoreError::NeedsReentry(err) = spec.restore_redacted(&stored).unwrap_err()
            else {
                panic!("{moved}: not a re-entry refusal")
            };
            assert_eq!(err.field, "headers.Authorization", "{moved}");
            assert!(err.message.contains("http://127.0.0.1:3001"), "{err}");
            assert!(!err.message.contains("s3cret"), "{err}");
        }
        // Given again, the secret may go to the new origin.
        let mut spec = http_at(
            "http://127.0.0.1:3002/mcp",
            &[("Authorization", "Bearer new")],
        )
        .validate()
        .unwrap();
        assert!(!spec.restore_redacted(&stored).unwrap());
        // No secrets at all: nothing to keep, nothing to refuse.
        let mut spec = http_at("http://127.0.0.1:3002/mcp", &[])
            .validate()
            .unwrap();
        assert!(!spec.restore_redacted(&stored).unwrap());
    }

    #[test]
    fn url_passwords_are_redacted_and_kept_for_the_same_origin() {
        let stored = http_at("http://alice:p%40ss:w0rd@127.0.0.1:3001/mcp", &[])
            .validate()
            .unwrap();
        let shown = stored.to_public_json()["url"].as_str().unwrap().to_owned();
        assert_eq!(shown, "http://alice:<redacted>@127.0.0.1:3001/mcp");
        // What was shown, sent back (parsed, it is percent-encoded): the password is kept.
        let mut spec = http_at(&shown, &[]).validate().unwrap();
        assert!(spec.restore_redacted(&stored).unwrap());
        assert_eq!(url_of(&spec), url_of(&stored));
        // Another origin, or another user: the password must be given again.
        for moved in [
            "http://alice:<redacted>@127.0.0.1:3002/mcp",
            "http://bob:<redacted>@127.0.0.1:3001/mcp",
        ] {
            let mut spec = http_at(moved, &[]).validate().unwrap();
            let RestoreError::NeedsReentry(err) = spec.restore_redacted(&stored).unwrap_err()
            else {
                panic!("{moved}: not a re-entry refusal")
            };
            assert_eq!(err.field, "url");
        }
        // Nothing stored to keep.
        let no_password = http_at("http://alice@127.0.0.1:3001/mcp", &[])
            .validate()
            .unwrap();
        let mut spec = http_at(&shown, &[]).validate().unwrap();
        assert!(matches!(
            spec.restore_redacted(&no_password),
            Err(RestoreError::Invalid(_))
        ));
        let plain = http().validate().unwrap();
        // A URL without a password is shown as it is.
        assert_eq!(plain.to_public_json()["url"], "http://127.0.0.1:3001/mcp");
    }

    #[test]
    fn a_bad_url_is_echoed_without_its_password() {
        let mut input = http();
        input.url = Some("http://alice:hunter2@exa mple/mcp".into());
        let err = input.validate().unwrap_err();
        assert_eq!(err.field, "url");
        assert!(!err.message.contains("hunter2"), "{err}");
        assert!(err.message.contains("alice:<redacted>@exa mple"), "{err}");
        assert_eq!(redact_url_text("no password here"), "no password here");
        assert_eq!(
            redact_url_text("http://a:b@h:1/x"),
            "http://a:<redacted>@h:1/x"
        );
    }

    #[test]
    fn cache_policy_decides_per_tool() {
        let default = Duration::from_secs(300);
        let hints = |read_only, open_world| ToolHints {
            read_only,
            open_world,
        };
        let mut input = stdio();
        input.cache = Some("read-only".into());
        input.cache_ttl = Some("1m".into());
        let over = |cache: Option<&str>, ttl: Option<&str>| ToolOverrideInput {
            cache: cache.map(str::to_owned),
            cache_ttl: ttl.map(str::to_owned),
            invalidates: None,
            warm: None,
        };
        input.tools = Some(
            [
                ("pinned".to_string(), over(Some("always"), Some("5s"))),
                ("secret".to_string(), over(Some("never"), None)),
                ("search".to_string(), over(Some("read-only"), None)),
            ]
            .into(),
        );
        let spec = input.validate().unwrap();
        let ttl = |tool, h| spec.cache_ttl_for(tool, h, default);
        assert_eq!(
            ttl("read", hints(Some(true), None)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(ttl("write", hints(Some(false), None)), None);
        assert_eq!(ttl("unmarked", hints(None, None)), None);
        assert_eq!(
            ttl("pinned", hints(Some(false), None)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(ttl("secret", hints(Some(true), None)), None);
        // Read-only but open-world (its answers come from outside): only when named.
        assert_eq!(ttl("fetch", hints(Some(true), Some(true))), None);
        assert_eq!(
            ttl("search", hints(Some(true), Some(true))),
            Some(Duration::from_secs(60))
        );
        let (_, why) = spec.cache_decision("pinned", hints(None, None), default);
        assert_eq!(why, CacheReason::Tool);
        let (_, why) = spec.cache_decision("read", hints(Some(true), None), default);
        assert_eq!(why, CacheReason::Annotation);

        let mut auto = stdio();
        auto.cache = Some("auto".into());
        assert_eq!(auto.validate().unwrap().cache, CachePolicy::ReadOnly);
        let never = stdio().validate().unwrap();
        assert_eq!(
            never.cache_ttl_for("read", hints(Some(true), None), default),
            None
        );
        assert_eq!(
            never.invalidated_by("write", hints(Some(false), None)),
            None
        );
        let mut always = stdio();
        always.cache = Some("always".into());
        let always = always.validate().unwrap();
        assert_eq!(
            always.cache_ttl_for("w", hints(Some(false), None), default),
            Some(default)
        );
        // With caching on, a tool that is not read-only drops the server's entries,
        // unless the operator made it cacheable: then it is taken at its word.
        assert_eq!(
            spec.invalidated_by("write", hints(Some(false), None)),
            Some(None)
        );
        assert_eq!(spec.invalidated_by("read", hints(Some(true), None)), None);
        assert_eq!(always.invalidated_by("w", hints(Some(false), None)), None);
        assert!(spec.write_drops("write", hints(None, None), "read"));
        // invalidate_on_write = false: writes drop nothing, unless a tool says what.
        let mut quiet = spec.clone();
        quiet.invalidate_on_write = false;
        assert_eq!(
            quiet.invalidated_by("write", hints(Some(false), None)),
            None
        );
        quiet.tools.entry("write".into()).or_default().invalidates = Some(vec!["read".into()]);
        assert!(quiet.write_drops("write", hints(Some(false), None), "read"));
        let mut bad = stdio();
        bad.tools = Some(
            [(
                "t".to_string(),
                ToolOverrideInput {
                    cache: Some("sometimes".into()),
                    cache_ttl: None,
                    invalidates: None,
                    warm: None,
                },
            )]
            .into(),
        );
        assert_eq!(bad.validate().unwrap_err().field, "tools.t.cache");
    }

    #[test]
    fn a_probe_waits_10_s_or_the_call_timeout_if_shorter() {
        let spec = stdio().validate().unwrap();
        assert_eq!(spec.probe_timeout(), DEFAULT_PROBE_TIMEOUT);
        assert_eq!(DEFAULT_PROBE_TIMEOUT, Duration::from_secs(10));
        let mut input = stdio();
        input.timeout = Some("2s".into());
        let spec = input.validate().unwrap();
        assert_eq!(spec.probe_timeout(), Duration::from_secs(2));
        let mut input = stdio();
        input.timeout = Some("5m".into());
        let spec = input.validate().unwrap();
        assert_eq!(spec.probe_timeout(), DEFAULT_PROBE_TIMEOUT);
    }

    #[test]
    fn a_set_probe_timeout_overrides_the_default() {
        let mut input = stdio();
        input.probe_timeout = Some("2s".into());
        let spec = input.validate().unwrap();
        assert_eq!(spec.probe_timeout, Some(Duration::from_secs(2)));
        assert_eq!(spec.probe_timeout(), Duration::from_secs(2));
        assert_eq!(spec.to_public_json()["probe_timeout"], "2s");
        // Set, it is taken as written, even when longer than the default or the call
        // timeout.
        let mut input = stdio();
        input.timeout = Some("1s".into());
        input.probe_timeout = Some("45s".into());
        assert_eq!(
            input.validate().unwrap().probe_timeout(),
            Duration::from_secs(45)
        );
        let mut input = stdio();
        input.probe_timeout = Some("250ms".into());
        assert_eq!(
            input.validate().unwrap().probe_timeout(),
            Duration::from_millis(250)
        );
        // Unset, the default applies and the answer says so with null.
        let spec = stdio().validate().unwrap();
        assert_eq!(spec.probe_timeout, None);
        assert_eq!(spec.probe_timeout(), DEFAULT_PROBE_TIMEOUT);
        assert!(spec.to_public_json()["probe_timeout"].is_null());
    }

    #[test]
    fn a_probe_timeout_must_be_a_positive_duration() {
        for bad in ["0s", "0ms", "500us", "10", "soon", "", "2h"] {
            let mut input = stdio();
            input.probe_timeout = Some(bad.into());
            let err = input.validate().unwrap_err();
            assert_eq!(err.field, "probe_timeout", "{bad:?}");
            assert!(!err.message.is_empty());
        }
        let mut input = stdio();
        input.probe_timeout = Some("1ms".into());
        assert!(input.validate().is_ok());
    }

    #[test]
    fn a_probe_timeout_is_read_from_the_config_file_form() {
        let input: ServerInput = toml::from_str(
            "name = \"time\"\ntransport = \"stdio\"\ncommand = \"x\"\nprobe_timeout = \"3s\"\n",
        )
        .unwrap();
        assert_eq!(
            input.validate().unwrap().probe_timeout(),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn durations_are_checked() {
        let mut input = stdio();
        input.probe_interval = Some("1ms".into());
        assert_eq!(input.validate().unwrap_err().field, "probe_interval");
        let mut input = stdio();
        input.timeout = Some("ten".into());
        assert_eq!(input.validate().unwrap_err().field, "timeout");
    }
}
