//! Resource subscriptions of `/mcp` sessions: which session wants to hear of which
//! upstream's URI, and the task that passes an upstream's
//! `notifications/resources/updated` to exactly those sessions.
//!
//! The upstream is asked to subscribe when the first session subscribes to a URI, and
//! told to unsubscribe when the last one leaves (by `resources/unsubscribe` or by its
//! session ending), so one session's unsubscribe never silences another's. An upstream
//! announces an update on its session with the gateway; the upstream actor publishes it
//! on the event bus as a `list_changed` health event naming the URI, and [`relay`] reads
//! it there. Only this instance's own events are relayed: each instance subscribes on its
//! own upstream sessions, and hears of their updates itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::model::ResourceUpdatedNotificationParam;
use rmcp::{Peer, RoleServer};

use crate::events::{BusNote, EventBus, EventType, HealthKind};
use crate::gateway::Gateway;
use crate::registry::ServerName;
use crate::upstream::Forward;
use futures_util::StreamExt;

type Key = (ServerName, String);

/// How long one session's update may take to be handed to its stream.
const NOTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Who is subscribed to what. Bounded by the sessions' own bound (`mcp_max_sessions`)
/// times the URIs each names, and emptied as sessions end.
#[derive(Default)]
pub struct Subscriptions {
    by_uri: Mutex<HashMap<Key, HashMap<u64, Peer<RoleServer>>>>,
}

impl Subscriptions {
    /// Records `client`'s subscription; true if it is the URI's first subscriber, so the
    /// upstream must be asked.
    pub fn add(&self, server: &ServerName, uri: &str, client: u64, peer: Peer<RoleServer>) -> bool {
        let mut by_uri = self.by_uri.lock().expect("subscriptions lock");
        let subscribers = by_uri.entry((server.clone(), uri.to_owned())).or_default();
        let first = subscribers.is_empty();
        subscribers.insert(client, peer);
        first
    }

    /// Removes `client`'s subscription; true if no one is subscribed any more, so the
    /// upstream may be told.
    pub fn remove(&self, server: &ServerName, uri: &str, client: u64) -> bool {
        let mut by_uri = self.by_uri.lock().expect("subscriptions lock");
        let key = (server.clone(), uri.to_owned());
        let Some(subscribers) = by_uri.get_mut(&key) else {
            return false;
        };
        let was = subscribers.remove(&client).is_some();
        if subscribers.is_empty() {
            by_uri.remove(&key);
            return was;
        }
        false
    }

    /// Removes every subscription of a client whose session ended; answers the URIs no
    /// one is subscribed to any more.
    pub fn forget(&self, client: u64) -> Vec<(ServerName, String)> {
        let mut by_uri = self.by_uri.lock().expect("subscriptions lock");
        let mut emptied = vec![];
        by_uri.retain(|key, subscribers| {
            if subscribers.remove(&client).is_some() && subscribers.is_empty() {
                emptied.push(key.clone());
            }
            !subscribers.is_empty()
        });
        emptied
    }

    /// The URIs of `server` someone is subscribed to.
    fn uris_of(&self, server: &ServerName) -> Vec<String> {
        let by_uri = self.by_uri.lock().expect("subscriptions lock");
        by_uri
            .keys()
            .filter(|(s, _)| s == server)
            .map(|(_, uri)| uri.clone())
            .collect()
    }

    fn subscribers(&self, server: &ServerName, uri: &str) -> Vec<Peer<RoleServer>> {
        let by_uri = self.by_uri.lock().expect("subscriptions lock");
        by_uri
            .get(&(server.clone(), uri.to_owned()))
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// Passes every update of a subscribed URI from this instance's upstreams to the sessions
/// subscribed to it, until the bus closes. An upstream that connects again (a restart, a
/// reload) has a new session that knows no subscription: it is asked again for every URI
/// someone still holds.
pub async fn relay(subscriptions: Arc<Subscriptions>, bus: EventBus, gateway: Gateway) {
    let mut events = bus.stream();
    while let Some(note) = events.next().await {
        let event = match note {
            BusNote::Event(event) => event,
            // Updates missed under load are lost to their subscribers, as a dropped
            // notification is; the next update reaches them.
            BusNote::Lagged(missed) => {
                log::warn!("/mcp missed {missed} events; resource updates among them are lost");
                continue;
            }
        };
        if event.kind != EventType::HealthEvent || !bus.is_local(&event) {
            continue;
        }
        if let (Some(server), Some(HealthKind::Connected)) =
            (event.server.as_ref(), event.health_kind())
        {
            for uri in subscriptions.uris_of(server) {
                if let Err(e) = gateway
                    .forward(server, Forward::Subscribe { uri: uri.clone() })
                    .await
                {
                    log::warn!("[{server}] subscribing again to '{uri}' failed: {e}");
                }
            }
            continue;
        }
        let detail = &event.data["detail"];
        let (Some(server), Some("resources/updated"), Some(uri)) = (
            event.server.as_ref(),
            detail["notification"].as_str(),
            detail["uri"].as_str(),
        ) else {
            continue;
        };
        // Each session on its own: one that does not read its stream must not hold up
        // the others' updates (or this loop).
        for peer in subscriptions.subscribers(server, uri) {
            let param = ResourceUpdatedNotificationParam::new(uri);
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(NOTIFY_TIMEOUT, peer.notify_resource_updated(param)).await;
            });
        }
    }
}
