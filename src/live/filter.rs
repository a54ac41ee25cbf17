//! What a session asked to receive, and client messages.

use std::collections::HashSet;

use serde::Deserialize;

use crate::events::{Event, EventType};

/// A session's subscription. `None` means everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub types: Option<HashSet<EventType>>,
    pub servers: Option<HashSet<String>>,
}

impl Filter {
    pub fn accepts(&self, event: &Event) -> bool {
        if let Some(types) = &self.types
            && !types.contains(&event.kind)
        {
            return false;
        }
        match (&self.servers, &event.server) {
            (Some(servers), Some(server)) => servers.contains(server.as_str()),
            // Events about no server in particular (system metrics, a full cache clear)
            // go to every subscriber of their type.
            _ => true,
        }
    }
}

/// A message from a dashboard.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Subscribe {
        #[serde(default)]
        event_types: Option<Vec<String>>,
        #[serde(default)]
        servers: Option<Vec<String>>,
    },
    Unsubscribe,
    Pong,
    /// The API key, as the first message of a client that sent no `Authorization` header.
    Auth {
        key: String,
    },
}

/// The key of an `auth` message, if `text` is one.
pub fn auth_key(text: &str) -> Option<String> {
    match serde_json::from_str(text) {
        Ok(ClientMessage::Auth { key }) => Some(key),
        _ => None,
    }
}

pub fn parse_event_type(text: &str) -> Option<EventType> {
    Some(match text {
        "mcp_status_change" => EventType::McpStatusChange,
        "health_event" => EventType::HealthEvent,
        "cache_invalidated" => EventType::CacheInvalidated,
        "system_metrics" => EventType::SystemMetrics,
        _ => return None,
    })
}

/// Parses a client's text frame: the new filter for `subscribe`/`unsubscribe`, nothing
/// for `pong`, or why it is refused.
pub fn parse_client_message(text: &str) -> Result<Option<Filter>, String> {
    let message: ClientMessage =
        serde_json::from_str(text).map_err(|e| format!("not a client message: {e}"))?;
    match message {
        // Authenticated already; a repeated key changes nothing.
        ClientMessage::Pong | ClientMessage::Auth { .. } => Ok(None),
        ClientMessage::Unsubscribe => Ok(Some(Filter {
            types: Some(HashSet::new()),
            servers: None,
        })),
        ClientMessage::Subscribe {
            event_types,
            servers,
        } => {
            let types = event_types
                .map(|list| {
                    list.iter()
                        .map(|t| {
                            parse_event_type(t).ok_or_else(|| format!("unknown event type '{t}'"))
                        })
                        .collect::<Result<HashSet<_>, _>>()
                })
                .transpose()?;
            Ok(Some(Filter {
                types,
                servers: servers.map(|s| s.into_iter().collect()),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ServerName;
    use proptest::prelude::*;
    use serde_json::json;

    fn event(kind: EventType, server: Option<&str>) -> Event {
        Event::new(
            kind,
            server.map(|s| ServerName::parse(s).unwrap()),
            json!({}),
        )
    }

    #[test]
    fn subscriptions_filter_by_type_and_server() {
        let filter = parse_client_message(
            r#"{"action":"subscribe","event_types":["health_event"],"servers":["a"]}"#,
        )
        .unwrap()
        .unwrap();
        assert!(filter.accepts(&event(EventType::HealthEvent, Some("a"))));
        assert!(!filter.accepts(&event(EventType::HealthEvent, Some("b"))));
        assert!(!filter.accepts(&event(EventType::McpStatusChange, Some("a"))));
        let all = Filter::default();
        assert!(all.accepts(&event(EventType::SystemMetrics, None)));
        let none = parse_client_message(r#"{"action":"unsubscribe"}"#)
            .unwrap()
            .unwrap();
        assert!(!none.accepts(&event(EventType::SystemMetrics, None)));
        assert_eq!(parse_client_message(r#"{"action":"pong"}"#).unwrap(), None);
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        for bad in [
            "",
            "not json",
            "{}",
            r#"{"action":"dance"}"#,
            r#"{"action":"subscribe","event_types":["gossip"]}"#,
            r#"{"action":"subscribe","event_types":"health_event"}"#,
        ] {
            assert!(parse_client_message(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in ".{0,200}") {
            let _ = parse_client_message(&text);
        }

        #[test]
        fn any_subscription_of_known_types_round_trips(
            types in prop::collection::vec(prop_oneof![
                Just("mcp_status_change"), Just("health_event"),
                Just("cache_invalidated"), Just("system_metrics")], 0..4),
            servers in prop::collection::vec("[a-z0-9-]{1,10}", 0..4),
        ) {
            let text = json!({"action": "subscribe", "event_types": types, "servers": servers}).to_string();
            let filter = parse_client_message(&text).unwrap().unwrap();
            prop_assert_eq!(filter.types.unwrap().len(), types.iter().collect::<HashSet<_>>().len());
            prop_assert_eq!(filter.servers.unwrap().len(), servers.iter().collect::<HashSet<_>>().len());
        }
    }
}
