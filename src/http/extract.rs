//! What every handler reads from a request the same way: who is calling, and a server
//! name from the path, each with the API's error when it is not there or not valid.

use actix_web::{HttpMessage, HttpRequest};

use crate::auth::{Caller, Identity};
use crate::error::ApiError;
use crate::registry::{ServerName, ValidationError};

/// Who is asking: the auth guard put it there (everyone, when the gateway runs open).
pub fn caller_of(req: &HttpRequest) -> Result<Caller, ApiError> {
    Identity::caller(&req.extensions())
        .ok_or_else(|| ApiError::Unauthorized("send an API key".into()))
}

/// A server name from the path, as the registry spells them.
pub fn parse_name(text: &str) -> Result<ServerName, ApiError> {
    ServerName::parse(text).map_err(|m| ApiError::InvalidField(ValidationError::new("name", m)))
}
