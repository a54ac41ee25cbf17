//! The one error type every HTTP surface answers with. Each variant has a stable
//! kebab-case `code` that clients may match on; the message is for people. Internal causes
//! are logged here and never sent.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::call_failure::CallFailure;
use crate::registry::ValidationError;
use crate::store::StoreError;
use crate::upstream::CallError;

/// The body of every error answer: `{"error": {"code", "message", "field"?}}`. The
/// OpenAPI document describes errors with this type, and [`ApiError`] answers with it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, kebab-case; clients may match on it.
    #[schema(example = "server-not-found")]
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// The offending field, on validation errors only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidField(ValidationError),
    #[error("{0}")]
    InvalidBody(String),
    /// Redacted secrets sent with a URL on another origin: they must be given again.
    #[error("{0}")]
    SecretNeedsReentry(ValidationError),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body did not arrive within its deadline.
    #[error("{0}")]
    BodyTimeout(String),
    /// `/ws` reached without a valid WebSocket upgrade (actix answered these with a bare
    /// 400 and no body).
    #[error("a WebSocket upgrade is expected here: {0}")]
    WebSocketHandshake(String),
    #[error("the request target is {0} bytes, over the limit of {1}")]
    UriTooLong(usize, usize),
    #[error("no server named '{0}'")]
    ServerNotFound(String),
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("a server named '{0}' already exists")]
    ServerExists(String),
    #[error("tool names at /mcp would collide: {0}")]
    NameCollision(String),
    #[error("server '{0}' is declared in the config file; change it there")]
    ManagedByConfig(String),
    #[error(
        "stdio servers start local processes and may only come from the config file unless it sets allow_stdio_via_api = true"
    )]
    StdioNotAllowed,
    #[error("the server changed since revision {expected}; it is now at revision {current}")]
    RevisionMismatch { expected: i64, current: i64 },
    #[error("server '{0}' is disabled")]
    ServerDisabled(String),
    /// A tool call failed; its code and status are the call's own.
    #[error("{0}")]
    Call(CallFailure),
    #[error("the store is busy; try again")]
    StoreBusy,
    #[error("the store is unavailable")]
    StoreUnavailable,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// Bound to loopback (or given `allowed_hosts`), a request for another name: DNS
    /// rebinding, or a proxy that needs listing.
    #[error("{0}")]
    HostNotAllowed(String),
    /// A browser page from another origin.
    #[error("{0}")]
    OriginNotAllowed(String),
    #[error("too many requests for key '{key}'; retry in {} s", retry_after.as_secs().max(1))]
    RateLimited {
        key: String,
        retry_after: std::time::Duration,
    },
    #[error("key '{0}' may not call this tool (outside its allow-list)")]
    NotAllowed(String),
    #[error("an API key named '{0}' already exists (names stay taken after revocation)")]
    KeyExists(String),
    #[error("no active API key named '{0}'")]
    KeyNotFound(String),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidField(_) => "invalid-field",
            Self::InvalidBody(_) => "invalid-body",
            Self::SecretNeedsReentry(_) => "secret-needs-reentry",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::BodyTimeout(_) => "body-timeout",
            Self::UriTooLong(..) => "uri-too-long",
            Self::WebSocketHandshake(_) => "websocket-handshake",
            Self::ServerNotFound(_) => "server-not-found",
            Self::RouteNotFound(_) => "not-found",
            Self::ServerExists(_) => "server-exists",
            Self::NameCollision(_) => "tool-name-collision",
            Self::ManagedByConfig(_) => "managed-by-config",
            Self::StdioNotAllowed => "stdio-not-allowed",
            Self::RevisionMismatch { .. } => "revision-mismatch",
            Self::ServerDisabled(_) => "server-disabled",
            Self::Call(f) => f.code(),
            Self::StoreBusy => "store-busy",
            Self::StoreUnavailable => "store-unavailable",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::HostNotAllowed(_) => "host-not-allowed",
            Self::OriginNotAllowed(_) => "origin-not-allowed",
            Self::RateLimited { .. } => "rate-limited",
            Self::NotAllowed(_) => "not-allowed",
            Self::KeyExists(_) => "key-exists",
            Self::KeyNotFound(_) => "key-not-found",
            Self::Internal => "internal",
        }
    }

    /// Logs the internal cause and hides it from the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        log::error!("internal error: {cause}");
        Self::Internal
    }
}

impl From<crate::registry::RestoreError> for ApiError {
    fn from(err: crate::registry::RestoreError) -> Self {
        use crate::registry::RestoreError;
        match err {
            RestoreError::Invalid(v) => Self::InvalidField(v),
            RestoreError::NeedsReentry(v) => Self::SecretNeedsReentry(v),
        }
    }
}

impl From<CallFailure> for ApiError {
    fn from(f: CallFailure) -> Self {
        Self::Call(f)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Busy => Self::StoreBusy,
            StoreError::Unavailable(cause) => {
                log::warn!("store unavailable: {cause}");
                Self::StoreUnavailable
            }
            other => Self::internal(other),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidField(_)
            | Self::InvalidBody(_)
            | Self::SecretNeedsReentry(_)
            | Self::WebSocketHandshake(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UriTooLong(..) => StatusCode::URI_TOO_LONG,
            Self::ServerNotFound(_) | Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::ServerDisabled(_) => StatusCode::CONFLICT,
            Self::Call(f) => {
                StatusCode::from_u16(f.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Self::ServerExists(_) | Self::ManagedByConfig(_) | Self::NameCollision(_) => {
                StatusCode::CONFLICT
            }
            Self::StdioNotAllowed
            | Self::Forbidden(_)
            | Self::HostNotAllowed(_)
            | Self::OriginNotAllowed(_)
            | Self::NotAllowed(_) => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::KeyExists(_) => StatusCode::CONFLICT,
            Self::KeyNotFound(_) => StatusCode::NOT_FOUND,
            Self::RevisionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            Self::StoreBusy | Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let field = match self {
            Self::InvalidField(v)
            | Self::SecretNeedsReentry(v)
            | Self::Call(CallFailure::InvalidArguments(v)) => Some(v.field.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                field,
            },
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::StoreBusy
            | Self::Call(CallFailure::Upstream(
                CallError::NotConnected { .. } | CallError::Gone { .. },
            )) => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            Self::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::Call(CallFailure::Upstream(CallError::CircuitOpen { retry_after, .. }))
            | Self::RateLimited { retry_after, .. } => {
                let secs = retry_after.as_secs().max(1).to_string();
                if let Ok(value) = HeaderValue::from_str(&secs) {
                    response.insert_header((header::RETRY_AFTER, value));
                }
            }
            _ => {}
        }
        response.json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// A call's failure reads the same over HTTP, at `/mcp` and in the audit log: the
    /// API's answer takes the call's own code and status.
    #[test]
    fn a_call_failure_keeps_its_code_and_status_over_http() {
        use std::time::Duration;
        let server = || "s".to_owned();
        let failures = [
            CallFailure::ServerNotFound(server()),
            CallFailure::ToolNotFound {
                server: server(),
                tool: "t".into(),
            },
            CallFailure::InvalidArguments(ValidationError::new("arguments.x", "no")),
            CallFailure::Internal,
            CallError::NotConnected {
                server: server(),
                status: "down",
            }
            .into(),
            CallError::CircuitOpen {
                server: server(),
                retry_after: Duration::from_secs(3),
            }
            .into(),
            CallError::Timeout {
                server: server(),
                timeout: Duration::from_secs(1),
            }
            .into(),
            CallError::Upstream {
                server: server(),
                code: -1,
                message: "m".into(),
            }
            .into(),
            CallError::Transport {
                server: server(),
                detail: "d".into(),
            }
            .into(),
            CallError::Gone { server: server() }.into(),
            CallError::TooLarge {
                server: server(),
                size: 2,
                limit: 1,
            }
            .into(),
        ];
        let mut codes = std::collections::HashSet::new();
        for failure in failures {
            let (code, status) = (failure.code(), failure.status());
            assert!(codes.insert(code), "{code} twice");
            let api = ApiError::from(failure);
            assert_eq!((api.code(), api.status_code().as_u16()), (code, status));
            let body: serde_json::Value = serde_json::from_slice(
                &actix_web::body::to_bytes(api.error_response().into_body())
                    .now_or_never()
                    .unwrap()
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(body["error"]["code"], code);
        }
    }
}
