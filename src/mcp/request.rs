//! What the bridge attaches to a `/mcp` request for the handler: who is calling (the auth
//! guard's verdict, since the `Authorization` header never reaches rmcp) and whether the
//! client can read only a JSON body. rmcp hands the request's `http` parts to the handler
//! in its context's extensions; both travel there.

use crate::auth::Caller;

/// The answer is one JSON body whatever happens during the call (the client accepts
/// `application/json` and not `text/event-stream`, or `mcp_response = "json"`), so
/// nothing may need a stream. What the handler relays to such a caller is limited
/// accordingly (see `recipient::Recipient`).
#[derive(Clone, Copy, Debug)]
pub struct JsonOnly;

fn parts(extensions: &rmcp::model::Extensions) -> Option<&http::request::Parts> {
    extensions.get::<http::request::Parts>()
}

/// The caller a request came with, as the auth guard found it.
pub fn caller_of(extensions: &rmcp::model::Extensions) -> Option<Caller> {
    parts(extensions).and_then(|p| p.extensions.get::<Caller>().cloned())
}

/// Whether the request's client reads only a JSON body.
pub fn json_only(extensions: &rmcp::model::Extensions) -> bool {
    parts(extensions).is_some_and(|p| p.extensions.get::<JsonOnly>().is_some())
}
