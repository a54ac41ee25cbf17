//! What goes toward a live client: the items a session's writer task sends on the socket,
//! and the command that closes a session. The hub and the sessions both speak these; the
//! hub reaches a session only through a `Recipient<CloseWith>` and its queue, never
//! through the session's own type.

use std::sync::Arc;

use actix::prelude::*;
use actix_ws::{CloseCode, CloseReason};
use bytes::Bytes;

/// What the writer task sends on the socket.
#[derive(Debug)]
pub enum Outgoing {
    Text(Arc<str>),
    Pong(Bytes),
}

/// Close the session with this code and reason.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct CloseWith(pub CloseReason);

impl CloseWith {
    pub fn slow_consumer() -> Self {
        Self(CloseReason {
            code: CloseCode::Again,
            description: Some("slow consumer: too many messages waiting".into()),
        })
    }

    /// The session's key was revoked, or keys became required while it ran open.
    pub fn revoked() -> Self {
        Self::new(
            CloseCode::Policy,
            "API key revoked, or keys are now required",
        )
    }

    pub fn shutting_down() -> Self {
        Self::new(CloseCode::Away, "server shutting down")
    }

    pub fn new(code: CloseCode, description: &str) -> Self {
        Self(CloseReason {
            code,
            description: Some(description.into()),
        })
    }
}
