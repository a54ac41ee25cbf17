//! Who may reach a route, as declared beside the route (`http::routes`), and who the
//! caller turned out to be (`guard`). The two meet in [`door`](super::door), which every
//! route is wrapped in: nothing decides access from the request's path.

use super::caller::{Caller, Role};

/// What a route asks of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Liveness and readiness: anyone, whatever `Host` they used (orchestrators probe by
    /// address), since they tell nothing about servers or tools.
    Probe,
    /// Anyone who reached the gateway under an accepted `Host`: the dashboard page, which
    /// holds no data of its own.
    Open,
    /// A key of at least this role, or anyone while the gateway runs open.
    Role(Role),
    /// The live stream: a viewer key with the upgrade request, or none there and the key
    /// as the stream's first message (keeps it out of URLs and proxy logs).
    LiveStream,
}

impl Access {
    /// The role a caller needs, if any.
    pub fn role(self) -> Option<Role> {
        match self {
            Self::Probe | Self::Open => None,
            Self::Role(role) => Some(role),
            Self::LiveStream => Some(Role::Viewer),
        }
    }

    /// How the access table in docs/security.md names it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Probe => "open, any `Host`",
            Self::Open => "open",
            Self::Role(role) => role.as_str(),
            Self::LiveStream => "viewer (key in the first message allowed)",
        }
    }
}

/// Who sent a request, as the identifying middleware found it; in every request's
/// extensions, where the doors and the handlers read it ([`Identity::caller`]).
#[derive(Clone, Debug)]
pub enum Identity {
    /// A valid key, or everyone while the gateway runs open.
    Known(Caller),
    /// No `Authorization` header.
    Anonymous,
    /// A key that is unknown or revoked.
    Rejected,
}

impl Identity {
    /// The caller a request's identity names, if it is known.
    pub fn caller(extensions: &actix_web::dev::Extensions) -> Option<Caller> {
        match extensions.get::<Identity>() {
            Some(Identity::Known(caller)) => Some(caller.clone()),
            _ => None,
        }
    }
}
