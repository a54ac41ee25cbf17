//! Secrets in declarations: header and env values and URL passwords are redacted in every
//! answer, and a redacted value sent back keeps the stored one, but only for the same
//! origin: a secret never follows a changed URL (the client must give it again).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::invalid::ValidationError;
use super::spec::{ServerSpec, Transport};
use crate::duration;

/// Stands in for a secret (header or env value) in every answer. Sending it back in a
/// `PUT` keeps the stored value, so a client can round-trip what it read.
pub const REDACTED: &str = "<redacted>";

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
