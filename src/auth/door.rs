//! The middleware each route is wrapped in where it is declared (`http::routes`): it
//! holds that route's [`Access`] and checks the request against it after the router has
//! chosen the route. However a path is spelled (percent-encoded letters, case, slashes),
//! a handler is reached only through its own door, so access never depends on how the
//! path is written. It also applies the [`Boundary`] (`Host`, `Origin`) to every route
//! but the probes.

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, ResponseError};

use super::access::{Access, Identity};
use super::boundary::Boundary;
use crate::error::ApiError;

#[derive(Clone)]
pub struct Door {
    pub access: Access,
    pub boundary: Arc<Boundary>,
}

impl Door {
    pub async fn check(
        self,
        req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        if let Err(refusal) = self.admit(&req) {
            return Ok(req.into_response(refusal.error_response()));
        }
        Ok(next.call(req).await?.map_into_boxed_body())
    }

    fn admit(&self, req: &ServiceRequest) -> Result<(), ApiError> {
        if self.access == Access::Probe {
            return Ok(());
        }
        let host =
            match req.headers().get(header::HOST) {
                Some(value) => Some(value.to_str().map_err(|_| {
                    ApiError::HostNotAllowed("the Host header is not text".to_owned())
                })?),
                None => None,
            };
        let extensions = req.extensions();
        let identity = extensions.get::<Identity>();
        // Only an open gateway's caller is known without a key.
        let open = matches!(identity, Some(Identity::Known(c)) if c.key.is_none());
        if !self.boundary.host_allowed(host, open) {
            return Err(ApiError::HostNotAllowed(format!(
                "this gateway does not answer to Host '{}'; list it in allowed_hosts",
                host.unwrap_or_default()
            )));
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("(not text)");
            if !self.boundary.origin_allowed(origin, host) {
                return Err(ApiError::OriginNotAllowed(format!(
                    "origin '{origin}' may not use this gateway; list it in allowed_origins"
                )));
            }
        }
        let Some(needed) = self.access.role() else {
            return Ok(());
        };
        match identity {
            Some(Identity::Known(caller)) if caller.role < needed => {
                Err(ApiError::Forbidden(format!(
                    "key '{}' is a {}; this needs {needed}",
                    caller.key.as_deref().unwrap_or("-"),
                    caller.role
                )))
            }
            Some(Identity::Known(_)) => Ok(()),
            Some(Identity::Rejected) => {
                Err(ApiError::Unauthorized("unknown or revoked API key".into()))
            }
            // The live stream takes its key as the first message instead.
            Some(Identity::Anonymous) | None if self.access == Access::LiveStream => Ok(()),
            Some(Identity::Anonymous) | None => Err(ApiError::Unauthorized(
                "send an API key: Authorization: Bearer <key>".into(),
            )),
        }
    }
}
