//! What the parts of one upstream tell each other: a lane reports calls to its actor, an
//! actor reports to the supervisor, the supervisor commands its actors. Kept apart from
//! the three so that none of them needs another's module to speak to it (the lane and the
//! actor hold `Recipient`s of these, not each other's addresses).

use actix::prelude::*;

use super::breaker::Transition;
use crate::registry::ServerName;

/// A call on a lane ended in a way that may change this upstream's status: it failed, it
/// followed failures, or it moved the circuit. The breaker has already counted it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CallFinished {
    pub error: Option<String>,
    pub transition: Option<Transition>,
    /// The upstream could not be reached: a probe should ask whether the session stands.
    pub unreachable: bool,
}

/// A lane's request for the breaker's verdict moved the circuit (open to half-open).
#[derive(Message)]
#[rtype(result = "()")]
pub struct BreakerMoved {
    pub transition: Transition,
}

/// Stop this actor and end its session (the supervisor's command).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub reason: String,
}

/// A child completed its handshake and listed its tools.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChildUp {
    pub name: ServerName,
    pub generation: u64,
}

/// A child stopped, for whatever reason.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    pub name: ServerName,
    pub generation: u64,
    pub reason: String,
    pub was_up: bool,
}
