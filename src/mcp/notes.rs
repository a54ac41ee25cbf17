//! Other instances' notes about the sessions held here (`cluster::SessionNote`): a
//! session that ended, a level or subscription that changed, a client's answer to a
//! request this instance sent. See `mcp::records`.

use std::sync::Arc;

use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_server::SessionManager;

use super::copies::{Copy, parse_level};
use super::sessions::Sessions;
use super::shared::Shared;
use super::tagged::TaggedSessions;
use crate::cluster::SessionNote;
use crate::registry::ServerName;
use crate::upstream::Forward;

/// The copy of `session` held here, and the server a subscription note names.
fn held_copy(shared: &Shared, session: &str, server: &str) -> Option<(Copy, ServerName)> {
    Some((shared.copies.get(session)?, ServerName::parse(server).ok()?))
}

/// Applies another instance's note to the copy held here, if one is.
pub async fn apply(
    note: SessionNote,
    shared: &Shared,
    sessions: &Sessions,
    manager: &TaggedSessions,
    origin: &str,
) {
    match note {
        SessionNote::Ended { session } => {
            shared.copies.remove(&session);
            sessions.ended_elsewhere(&session).await;
        }
        SessionNote::Level { session, level } => {
            if let (Some(copy), Some(level)) = (shared.copies.get(&session), parse_level(&level)) {
                *copy.level.lock().expect("level lock") = Some(level);
            }
        }
        SessionNote::Subscribed {
            session,
            server,
            uri,
        } => {
            let Some((copy, name)) = held_copy(shared, &session, &server) else {
                return;
            };
            let fresh = copy
                .subscribed
                .lock()
                .expect("subscribed")
                .insert((server, uri.clone()));
            // The first subscriber here asks this instance's upstream connection, on a task
            // of its own: a slow upstream must not hold up the notes behind this one.
            if fresh
                && shared
                    .subscriptions
                    .add(&name, &uri, copy.client, copy.peer.clone())
            {
                let (gateway, subscriptions) =
                    (shared.gateway.clone(), shared.subscriptions.clone());
                tokio::spawn(async move {
                    let forward = Forward::Subscribe { uri: uri.clone() };
                    if let Err(e) = gateway.forward(&name, forward).await {
                        subscriptions.remove(&name, &uri, copy.client);
                        log::warn!(
                            "MCP session {session}'s subscription to {uri} not taken here: {e}"
                        );
                    }
                });
            }
        }
        SessionNote::Unsubscribed {
            session,
            server,
            uri,
        } => {
            let Some((copy, name)) = held_copy(shared, &session, &server) else {
                return;
            };
            let held = copy
                .subscribed
                .lock()
                .expect("subscribed")
                .remove(&(server, uri.clone()));
            if held && shared.subscriptions.remove(&name, &uri, copy.client) {
                let gateway = shared.gateway.clone();
                tokio::spawn(async move {
                    let _ = gateway.forward(&name, Forward::Unsubscribe { uri }).await;
                });
            }
        }
        SessionNote::Answer {
            to,
            session,
            message,
        } => {
            if to != origin {
                return;
            }
            match serde_json::from_value::<ClientJsonRpcMessage>(message) {
                Ok(message) => {
                    let id: Arc<str> = session.as_str().into();
                    if let Err(e) = manager.accept_message(&id, message).await {
                        log::debug!("an answer for MCP session {session} found it gone: {e}");
                    }
                }
                Err(e) => log::warn!("an answer for MCP session {session} does not parse: {e}"),
            }
        }
    }
}
