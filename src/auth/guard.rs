//! The middleware in front of every route: which role each route needs, who the caller
//! is (a bearer key, or everyone when the gateway runs open), whether the key's rate
//! allows one more request. The [`Caller`] goes into the request's extensions.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, ResponseError};

use super::{Caller, KeyRing, Role};
use crate::error::ApiError;

/// The role a route needs; `None` for the open ones (the dashboard page, liveness and
/// readiness, which orchestrators probe without credentials).
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    let path = path.trim_end_matches('/');
    match path {
        "" | "/healthz" | "/readyz" => return None,
        _ => {}
    }
    if path == "/mcp" || path.starts_with("/mcp/") {
        return Some(Role::Operator);
    }
    if path == "/api/v1/invocations" || path == "/api/v1/keys" || path.starts_with("/api/v1/keys/")
    {
        return Some(Role::Admin);
    }
    if *method == Method::POST && path.starts_with("/api/v1/servers/") && path.ends_with("/call") {
        return Some(Role::Operator);
    }
    if *method == Method::GET || *method == Method::HEAD {
        return Some(Role::Viewer);
    }
    Some(Role::Admin)
}

/// The secret of `Authorization: Bearer <secret>`, if sent.
fn bearer(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| secret.trim().to_owned())
}

#[derive(Clone)]
pub struct Guard {
    pub ring: KeyRing,
    /// Whether the gateway may run open while it has no keys (bound to loopback, or
    /// started with `--insecure-no-auth`).
    pub open_without_keys: bool,
}

fn refuse(req: ServiceRequest, error: ApiError) -> ServiceResponse<BoxBody> {
    let response = error.error_response();
    req.into_response(response)
}

impl Guard {
    pub async fn check(
        self,
        req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let Some(needed) = required_role(req.method(), req.path()) else {
            return Ok(next.call(req).await?.map_into_boxed_body());
        };
        let caller = if self.open_without_keys && self.ring.is_empty() {
            Caller::open()
        } else {
            match bearer(&req) {
                Some(secret) => match self.ring.authenticate(&secret) {
                    Some(caller) => caller,
                    None => {
                        let e = ApiError::Unauthorized("unknown or revoked API key".into());
                        return Ok(refuse(req, e));
                    }
                },
                // The live stream may authenticate in its first message instead, so the
                // key stays out of URLs and proxy logs.
                None if req.path() == "/ws" => {
                    return Ok(next.call(req).await?.map_into_boxed_body());
                }
                None => {
                    let e = ApiError::Unauthorized(
                        "send an API key: Authorization: Bearer <key>".into(),
                    );
                    return Ok(refuse(req, e));
                }
            }
        };
        if caller.role < needed {
            let e = ApiError::Forbidden(format!(
                "key '{}' is a {}; this needs {needed}",
                caller.key.as_deref().unwrap_or("-"),
                caller.role
            ));
            return Ok(refuse(req, e));
        }
        if let Err(retry_after) = self.ring.admit(&caller, Instant::now()) {
            let key = caller.key.clone().unwrap_or_default();
            return Ok(refuse(req, ApiError::RateLimited { key, retry_after }));
        }
        req.extensions_mut().insert(caller);
        Ok(next.call(req).await?.map_into_boxed_body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_roles_of_the_design() {
        let get = Method::GET;
        let post = Method::POST;
        let cases = [
            (&get, "/", None),
            (&get, "/healthz", None),
            (&get, "/metrics", Some(Role::Viewer)),
            (&get, "/ws", Some(Role::Viewer)),
            (&get, "/api/v1/tools", Some(Role::Viewer)),
            (&get, "/api/v1/servers/x/events", Some(Role::Viewer)),
            (
                &post,
                "/api/v1/servers/x/tools/y/call",
                Some(Role::Operator),
            ),
            (&post, "/mcp", Some(Role::Operator)),
            (&get, "/mcp", Some(Role::Operator)),
            (&post, "/api/v1/servers", Some(Role::Admin)),
            (&Method::DELETE, "/api/v1/cache", Some(Role::Admin)),
            (&post, "/api/v1/servers/x/reload", Some(Role::Admin)),
            (&get, "/api/v1/invocations", Some(Role::Admin)),
            (&get, "/api/v1/keys", Some(Role::Admin)),
        ];
        for (method, path, role) in cases {
            assert_eq!(required_role(method, path), role, "{method} {path}");
        }
    }
}
