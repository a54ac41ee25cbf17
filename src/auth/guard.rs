//! The middleware in front of every request: who the caller is (a bearer key, everyone
//! while the gateway runs open, nobody, or a rejected key), and whether the key's rate
//! allows one more request. It decides nothing about routes: each route's own
//! [`door`](super::door) does, from the [`Identity`] this puts in the request's
//! extensions, where the handlers find the [`Caller`] too (`Identity::caller`).

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, ResponseError};

use super::access::Identity;
use super::caller::Caller;
use super::keyring::KeyRing;
use crate::error::ApiError;

/// Longest request target (path and query) accepted, in bytes; longer ones get 414.
pub const MAX_TARGET: usize = 8 * 1024;

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
    /// How long a request body may take to arrive.
    pub body_timeout: std::time::Duration,
}

impl Guard {
    fn identify(&self, req: &ServiceRequest) -> Identity {
        if self.ring.is_open() {
            return Identity::Known(Caller::open());
        }
        match bearer(req) {
            Some(secret) => match self.ring.authenticate(&secret) {
                Some(caller) => Identity::Known(caller),
                None => Identity::Rejected,
            },
            None if req.headers().contains_key(header::AUTHORIZATION) => Identity::Rejected,
            None => Identity::Anonymous,
        }
    }

    pub async fn check(
        self,
        mut req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if target > MAX_TARGET {
            let response = ApiError::UriTooLong(target, MAX_TARGET).error_response();
            return Ok(req.into_response(response));
        }
        // Every body has a deadline; a WebSocket's frames are the live stream, not a body.
        let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|n| n.as_bytes() != b"0");
        if has_body && !req.headers().contains_key(header::UPGRADE) {
            let payload = req.take_payload();
            let bounded: crate::deadline::Boxed =
                Box::pin(crate::deadline::Deadline::new(payload, self.body_timeout));
            req.set_payload(actix_web::dev::Payload::from(bounded));
        }
        let identity = self.identify(&req);
        if let Identity::Known(caller) = &identity
            && let Err(retry_after) = self.ring.admit(caller, Instant::now())
        {
            let key = caller.key.clone().unwrap_or_default();
            let response = ApiError::RateLimited { key, retry_after }.error_response();
            return Ok(req.into_response(response));
        }
        req.extensions_mut().insert(identity);
        Ok(next.call(req).await?.map_into_boxed_body())
    }
}
