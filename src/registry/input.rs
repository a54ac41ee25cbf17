//! An upstream's declaration as written in the TOML file or sent to the registry API, and
//! its one check, [`ServerInput::validate`]: both surfaces accept and refuse exactly the
//! same things.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::invalid::ValidationError;
use super::name::ServerName;
use super::secrets::redact_url_text;
use super::spec::*;
use crate::duration;

const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(50);
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(24 * 3600);
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Durations are stored in whole milliseconds: anything shorter would become 0.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_CACHE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

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
            .map(|p| crate::registry::names::validate_prefix(&p).map(|()| p))
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
    use crate::registry::secrets::*;

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
