//! How a call or a forwarded request to an upstream failed, in the upstream's own terms.
//! `crate::error` maps it to an HTTP answer and the MCP handler to a tool error; both read
//! the stable code from there.

use std::time::Duration;

#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    #[error("server '{server}' is {status}, not connected")]
    NotConnected {
        server: String,
        status: &'static str,
    },
    #[error("the circuit of server '{server}' is open; retry in {} s", retry_after.as_secs())]
    CircuitOpen {
        server: String,
        retry_after: Duration,
    },
    #[error("server '{server}' did not answer within {} ms", timeout.as_millis())]
    Timeout { server: String, timeout: Duration },
    #[error("server '{server}' answered with error {code}: {message}")]
    Upstream {
        server: String,
        code: i32,
        message: String,
    },
    #[error("cannot reach server '{server}': {detail}")]
    Transport { server: String, detail: String },
    #[error("server '{server}' was removed or restarted while the call was in flight")]
    Gone { server: String },
    #[error("server '{server}' answered with about {size} bytes, over the limit of {limit}")]
    TooLarge {
        server: String,
        size: usize,
        limit: usize,
    },
}
