//! Error text of upstream connections, in two registers. What a person sees (`last_error`,
//! health events, status reasons, call errors) is a short phrase and what it was trying
//! to reach: `connection refused: http://127.0.0.1:9/mcp`. The whole chain of causes, with
//! the transport's type names, goes to the log ([`with_causes`]) for whoever debugs it.

use std::error::Error;
use std::io::ErrorKind;

use rmcp::ServiceError;
use rmcp::service::ClientInitializeError;
use rmcp::transport::streamable_http_client::StreamableHttpError;

use crate::registry::{ServerSpec, Transport};

/// How many causes are looked at; a chain is a handful in practice.
const MAX_DEPTH: usize = 16;

/// What an upstream is reached at, as a person would recognise it: its URL (credentials
/// redacted) or its command.
pub fn target(spec: &ServerSpec) -> String {
    match &spec.transport {
        Transport::Stdio { command, .. } => command.clone(),
        Transport::StreamableHttp { url, .. } | Transport::Sse { url, .. } => {
            crate::registry::redact_url(url)
        }
    }
}

/// `error` phrased for a person, followed by `target`.
pub fn for_user(error: &(dyn Error + 'static), target: &str) -> String {
    format!("{}: {target}", phrase(error))
}

/// `error` as a short phrase: what went wrong, not which layers it went through.
///
/// The deepest cause of a known kind wins (a refused TCP connection under an HTTP error
/// under a transport error is "connection refused"); then words that name a kind at any
/// depth (DNS, TLS); failing both, the deepest cause's own text, which names the trouble
/// itself (a refused redirect, say) rather than the type that carried it.
pub fn phrase(error: &(dyn Error + 'static)) -> String {
    let chain: Vec<&(dyn Error + 'static)> = std::iter::successors(Some(error), |e| cause_of(*e))
        .take(MAX_DEPTH)
        .collect();
    if let Some(known) = chain.iter().rev().find_map(|e| by_type(*e)) {
        return known;
    }
    if let Some(known) = chain
        .iter()
        .find_map(|e| by_words(*e, chain[chain.len() - 1]))
    {
        return known;
    }
    chain[chain.len() - 1].to_string()
}

fn by_type(error: &(dyn Error + 'static)) -> Option<String> {
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        return io_phrase(io.kind()).map(str::to_owned);
    }
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(format!("TLS failure ({tls})"));
    }
    if let Some(http) = error.downcast_ref::<reqwest::Error>() {
        if http.is_timeout() {
            return Some("timed out".into());
        }
        return http.status().map(|status| format!("HTTP {status}"));
    }
    if let Some(streamable) = error.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        return match streamable {
            StreamableHttpError::SessionExpired => {
                Some("the upstream no longer knows our session (HTTP 404)".into())
            }
            StreamableHttpError::HttpStatus(e) => {
                Some(match http::StatusCode::from_u16(e.status) {
                    Ok(status) => format!("HTTP {status}"),
                    Err(_) => format!("HTTP {}", e.status),
                })
            }
            StreamableHttpError::AuthRequired(_) => Some("HTTP 401: authorization required".into()),
            StreamableHttpError::InsufficientScope(_) => {
                Some("HTTP 403: insufficient scope".into())
            }
            StreamableHttpError::UnexpectedContentType(kind) => Some(format!(
                "not an MCP endpoint (it answered with content type {})",
                kind.as_deref().unwrap_or("none")
            )),
            StreamableHttpError::UnexpectedEndOfStream => {
                Some("connection closed in the middle of an answer".into())
            }
            _ => None,
        };
    }
    if let Some(service) = error.downcast_ref::<ServiceError>() {
        return match service {
            ServiceError::TransportClosed => Some("connection closed".into()),
            ServiceError::Timeout { .. } => Some("timed out".into()),
            _ => None,
        };
    }
    if let Some(ClientInitializeError::ConnectionClosed(_)) =
        error.downcast_ref::<ClientInitializeError>()
    {
        return Some("connection closed before the handshake completed".into());
    }
    None
}

fn io_phrase(kind: ErrorKind) -> Option<&'static str> {
    Some(match kind {
        ErrorKind::ConnectionRefused => "connection refused",
        ErrorKind::ConnectionReset => "connection reset",
        ErrorKind::ConnectionAborted => "connection aborted",
        ErrorKind::NotConnected | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof => {
            "connection closed"
        }
        ErrorKind::TimedOut => "timed out",
        ErrorKind::AddrNotAvailable | ErrorKind::HostUnreachable => "host unreachable",
        ErrorKind::NetworkUnreachable => "network unreachable",
        ErrorKind::NotFound => "not found",
        ErrorKind::PermissionDenied => "permission denied",
        _ => return None,
    })
}

/// Kinds told only by their words (hyper's resolver and rustls carry no type to match).
fn by_words(error: &(dyn Error + 'static), deepest: &(dyn Error + 'static)) -> Option<String> {
    // An upstream's own JSON-RPC error says what it likes ("certificate store missing"):
    // its words are not ours to read as a transport failure.
    if let Some(ServiceError::McpError(_)) = error.downcast_ref::<ServiceError>() {
        return None;
    }
    let text = error.to_string().to_ascii_lowercase();
    if text.contains("dns error") || text.contains("failed to lookup address") {
        return Some("DNS lookup failed".into());
    }
    if text.contains("certificate") || text.contains("tls") || text.contains("ssl") {
        return Some(format!("TLS failure ({deepest})"));
    }
    None
}

/// `text` (what `error` says) followed by each cause of `error` that it does not say yet:
/// the technical chain, for the log.
pub fn with_causes(text: &str, error: &(dyn Error + 'static)) -> String {
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

/// The cause of `error`: its `source`, or the error that rmcp or an `io::Error` holds
/// without naming it as a source (the client error of Streamable HTTP, the transport
/// error of a handshake, the error a custom I/O error wraps).
fn cause_of<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    match error.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        Some(StreamableHttpError::Client(inner)) => return Some(inner),
        Some(_) => return error.source(),
        None => {}
    }
    if let Some(ClientInitializeError::TransportError { error, .. }) =
        error.downcast_ref::<ClientInitializeError>()
    {
        return Some(error);
    }
    // An I/O error that wraps another names the wrapped one's source, skipping it (a TLS
    // failure under hyper's connector is such a one).
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        return Some(inner);
    }
    error.source()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port with nothing listening: bound, then closed.
    fn closed_port() -> u16 {
        crate::tls::install_crypto_provider();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_refused_connection_reads_as_such_through_reqwest() {
        let url = format!("http://127.0.0.1:{}/mcp", closed_port());
        let error = reqwest::get(&url).await.unwrap_err();
        assert_eq!(for_user(&error, &url), format!("connection refused: {url}"));
        // The log keeps the layers.
        assert!(with_causes(&error.to_string(), &error).len() > "connection refused".len());
    }

    #[tokio::test]
    async fn a_refused_connection_reads_as_such_through_rmcp() {
        let url = format!("http://127.0.0.1:{}/mcp", closed_port());
        let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url.as_str());
        let error = rmcp::ServiceExt::serve((), transport)
            .await
            .map(|_| ())
            .unwrap_err();
        let technical = with_causes(&error.to_string(), &error);
        assert!(technical.contains("Transport"), "{technical}");
        let shown = for_user(&error, &url);
        assert_eq!(shown, format!("connection refused: {url}"), "{technical}");
    }

    #[tokio::test]
    async fn an_http_status_is_named() {
        crate::tls::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let error = reqwest::get(&url)
            .await
            .unwrap()
            .error_for_status()
            .unwrap_err();
        assert_eq!(phrase(&error), "HTTP 503 Service Unavailable");
    }

    #[tokio::test]
    async fn https_to_a_plain_http_port_is_a_tls_failure() {
        crate::tls::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/mcp", listener.local_addr().unwrap());
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let error = reqwest::get(&url).await.unwrap_err();
        let shown = phrase(&error);
        assert!(shown.starts_with("TLS failure ("), "{shown}: {error:?}");
    }

    #[test]
    fn an_upstreams_own_error_is_not_read_as_tls() {
        let error = ServiceError::McpError(rmcp::model::ErrorData::internal_error(
            "certificate store missing",
            None,
        ));
        assert!(by_words(&error, &error).is_none());
    }

    #[test]
    fn a_resolver_failure_is_told_by_its_words() {
        // hyper's resolver error carries no type to match; these are its words.
        let error = std::io::Error::other(
            "dns error: failed to lookup address information: Name or service not known",
        );
        assert_eq!(phrase(&error), "DNS lookup failed");
    }

    #[test]
    fn a_missing_command_is_not_found() {
        let error = std::process::Command::new("/nonexistent/omni-bridge-mcp")
            .spawn()
            .unwrap_err();
        assert_eq!(phrase(&error), "not found");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("Transport [some::Type<Generic>] error: {0}")]
    struct Layer(#[source] crate::upstream::connect::CrossOriginRedirect);

    #[test]
    fn an_unknown_error_says_its_deepest_cause() {
        let refused = crate::upstream::connect::CrossOriginRedirect {
            from: "http://a".into(),
            to: "http://b".into(),
        };
        let said = refused.to_string();
        assert_eq!(phrase(&Layer(refused)), said);
        assert!(!said.contains("some::Type"));
    }
}
