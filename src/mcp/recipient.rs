//! Where what an upstream sends during one `/mcp` call goes: progress under the caller's
//! own token, log messages at the level its session (or request) asked for, and the
//! upstream's sampling and elicitation requests, relayed to the client or refused to the
//! upstream when the client cannot be asked (a 2026-07-28 request; an answer that must be
//! one JSON body).

// Logging, sampling and elicitation are deprecated in 2026-07-28; the handshake-era
// clients this endpoint serves still use them, so the gateway relays them.
#![allow(deprecated)]

use std::sync::{Arc, Mutex};

use rmcp::model::LoggingLevel;
use rmcp::{ErrorData, RoleServer};

use crate::upstream::{RelayItem, Relayed};

/// Messages an upstream may queue for one caller before the rest are dropped.
pub(super) const RELAY_QUEUE: usize = 64;
/// Passes on what the upstream sent just before the result, then hands the rest to a
/// task of its own.
pub(super) async fn linger(mut relayed: Relayed, recipient: Recipient) {
    // Notifications sent just before the result go out before it; any later ones
    // (see `upstream::relay`) follow it until the upstream's side lets go.
    while let Ok(item) = relayed.try_recv() {
        recipient.relay(*item).await;
    }
    // This task outlives the call by the relay's linger (seconds), so at thousands of
    // calls a second thousands of them wait at once: the relaying future, which holds
    // rmcp's request futures and is kilobytes, is boxed only when something comes.
    tokio::spawn(async move {
        while let Some(item) = relayed.recv().await {
            Box::pin(recipient.relay(*item)).await;
        }
    });
}

pub(super) fn service_error(e: rmcp::ServiceError) -> ErrorData {
    match e {
        rmcp::ServiceError::McpError(e) => e,
        other => ErrorData::internal_error(other.to_string(), None),
    }
}

/// Severity rank of a log level, for `logging/setLevel` filtering.
pub(super) fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// Where one call's relayed messages go: its client, under its progress token, at the
/// log level its session (or, in 2026-07-28, its request) asked for.
#[derive(Clone)]
pub(super) struct Recipient {
    pub(super) peer: rmcp::Peer<RoleServer>,
    pub(super) progress_token: Option<rmcp::model::ProgressToken>,
    /// Whether the client takes log messages at all: a 2026-07-28 request opts in with
    /// `_meta` logLevel; a session takes them unless it set a level that filters them.
    pub(super) logs: bool,
    pub(super) log_level: Option<LoggingLevel>,
    /// A 2026-07-28 request: the server may not send it requests. That revision asks for
    /// input through `input_required` results (`mcp::input`, when the request declared the
    /// capability); anything else the upstream asks of it is refused with `not_relayed`.
    pub(super) stateless: bool,
    /// The client reads only a JSON body (`mcp::request::JsonOnly`): a request of the
    /// upstream's would need a stream to reach it, so it is refused at once (a 2026-07-28
    /// client still gets its input requests, which are a result, not a stream).
    pub(super) json_only: bool,
    /// The client capability the upstream needed and the request lacked, if any.
    pub(super) needed: Arc<Mutex<Option<&'static str>>>,
}

fn not_relayed(what: &str) -> ErrorData {
    ErrorData::invalid_request(
        format!("the caller uses MCP 2026-07-28, to which omni-bridge cannot relay {what} yet"),
        None,
    )
}

fn unreachable_by_json(what: &str) -> ErrorData {
    ErrorData::invalid_request(
        format!(
            "this call is answered as one JSON body (its client accepts only application/json, \
             declared neither sampling nor elicitation, or the gateway's mcp_response is \
             \"json\"), so the upstream's {what} request cannot reach the client"
        ),
        None,
    )
}

impl Recipient {
    /// Passes one message from an upstream to the client.
    pub(super) async fn relay(&self, item: RelayItem) {
        let peer = &self.peer;
        match item {
            RelayItem::Progress(mut progress) => {
                // Only a client that asked for progress gets it, under its own token.
                if let Some(token) = &self.progress_token {
                    progress.progress_token = token.clone();
                    let _ = peer.notify_progress(progress).await;
                }
            }
            RelayItem::Log(message) => {
                let wanted = self.log_level;
                if self.logs && wanted.is_none_or(|min| severity(message.level) >= severity(min)) {
                    let _ = peer.notify_logging_message(message).await;
                }
            }
            RelayItem::Sample(_, reply) if self.stateless => {
                self.needed
                    .lock()
                    .expect("needed lock")
                    .get_or_insert("sampling");
                let _ = reply.send(Err(not_relayed("sampling")));
            }
            RelayItem::Elicit(_, reply) if self.stateless => {
                self.needed
                    .lock()
                    .expect("needed lock")
                    .get_or_insert("elicitation");
                let _ = reply.send(Err(not_relayed("elicitation")));
            }
            RelayItem::Sample(_, reply) if self.json_only => {
                let _ = reply.send(Err(unreachable_by_json("sampling")));
            }
            RelayItem::Elicit(_, reply) if self.json_only => {
                let _ = reply.send(Err(unreachable_by_json("elicitation")));
            }
            RelayItem::Sample(params, reply) => {
                let _ = reply.send(peer.create_message(params).await.map_err(service_error));
            }
            RelayItem::Elicit(params, reply) => {
                let answer = peer.create_elicitation(params).await.map_err(service_error);
                let _ = reply.send(answer);
            }
        }
    }
}
