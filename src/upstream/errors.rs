//! Error text of upstream connections: an error followed by the causes it does not say,
//! so a refused redirect or a TLS failure reaches `last_error` and the events. Shared by
//! the Streamable HTTP and legacy SSE clients.

use rmcp::transport::streamable_http_client::StreamableHttpError;

/// `text` (what `error` says) followed by each cause of `error` that it does not say yet.
pub fn with_causes(text: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = text.to_owned();
    let mut cause = cause_of(error);
    while let Some(current) = cause {
        let said = current.to_string();
        if !out.contains(&said) {
            out.push_str(": ");
            out.push_str(&said);
        }
        cause = cause_of(current);
    }
    out
}

/// The cause of `error`: its `source`, or the client error that rmcp's Streamable HTTP
/// error holds without naming it as a source.
fn cause_of<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    match error.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        Some(StreamableHttpError::Client(inner)) => Some(inner),
        _ => error.source(),
    }
}
