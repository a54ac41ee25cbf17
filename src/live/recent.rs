//! The health history a dashboard shows the moment it opens: the newest upstream events
//! (`mcp_status_change` and `health_event`), kept by the hub as they pass and seeded from
//! the store's `health_events` when the hub starts, so that a page opened on a quiet
//! gateway is not empty until something new happens.
//!
//! Bounded: [`KEPT`] events in memory (a few hundred bytes each), of which a joining
//! session gets the newest [`SHOWN`] its key may see. A key restricted to a few upstreams
//! can therefore get fewer than [`SHOWN`] when the others were busy; the full history is
//! paged by `GET /api/v1/servers/{name}/health`.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;

use crate::auth::AllowList;
use crate::events::{Event, EventType};
use crate::registry::ServerName;
use crate::store::health::HealthEventRow;

/// Events kept.
pub const KEPT: usize = 500;
/// Events in `initial_status`.
pub const SHOWN: usize = 50;

#[derive(Default)]
pub struct RecentEvents {
    events: VecDeque<Arc<Event>>,
    /// What the stored rows held, so that an event both stored and still on its way to
    /// the hub when the rows were read is not kept twice (at most [`KEPT`] entries).
    seeded: std::collections::HashSet<(Option<ServerName>, i64, String)>,
}

/// What tells one event from another across the store: its upstream, its time to the
/// millisecond (what every store keeps), and what it says.
fn identity(event: &Event) -> (Option<ServerName>, i64, String) {
    (
        event.server.clone(),
        event.timestamp.timestamp_millis(),
        event.data.to_string(),
    )
}

impl RecentEvents {
    /// Keeps `event` if it is part of an upstream's history.
    pub fn remember(&mut self, event: &Arc<Event>) {
        if !matches!(
            event.kind,
            EventType::McpStatusChange | EventType::HealthEvent
        ) {
            return;
        }
        if !self.seeded.is_empty() && self.seeded.remove(&identity(event)) {
            return;
        }
        if self.events.len() == KEPT {
            self.events.pop_front();
        }
        self.events.push_back(event.clone());
    }

    /// Puts stored rows (newest first, as the store lists them) before what is kept.
    pub fn seed(&mut self, rows: Vec<HealthEventRow>) {
        for row in rows {
            if self.events.len() == KEPT {
                break;
            }
            if let Some(event) = from_row(row) {
                self.seeded.insert(identity(&event));
                self.events.push_front(Arc::new(event));
            }
        }
    }

    /// The newest [`SHOWN`] events `allow` admits, oldest first, as stream messages.
    pub fn for_allow(&self, allow: &AllowList) -> Vec<Value> {
        let mut shown: Vec<Value> = self
            .events
            .iter()
            .rev()
            .filter(|e| {
                e.server
                    .as_ref()
                    .is_none_or(|s| allow.allows_server(s.as_str()))
            })
            .take(SHOWN)
            .map(|e| serde_json::to_value(&**e).unwrap_or_default())
            .collect();
        shown.reverse();
        shown
    }
}

/// A stored row as the event it was written from (see `upstream::history`).
fn from_row(row: HealthEventRow) -> Option<Event> {
    let server = ServerName::parse(&row.server).ok()?;
    let data: Value = serde_json::from_str(&row.detail).ok()?;
    let kind = if row.event == EventType::McpStatusChange.as_str() {
        EventType::McpStatusChange
    } else {
        EventType::HealthEvent
    };
    let mut event = Event::new(kind, Some(server), data);
    event.timestamp = row.created_at.and_utc();
    event.instance = Some(row.instance.into());
    Some(event)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn health(server: &str, n: u64) -> Arc<Event> {
        Arc::new(Event::new(
            EventType::HealthEvent,
            Some(ServerName::parse(server).unwrap()),
            json!({"server": server, "event": "probe_failed", "detail": {"n": n}}),
        ))
    }

    #[test]
    fn keeps_the_newest_and_shows_the_newest_fifty_oldest_first() {
        let mut recent = RecentEvents::default();
        for n in 0..(KEPT as u64 + 10) {
            recent.remember(&health("a", n));
        }
        recent.remember(&Arc::new(Event::new(
            EventType::SystemMetrics,
            None,
            json!({}),
        )));
        assert_eq!(recent.events.len(), KEPT);
        let shown = recent.for_allow(&AllowList::default());
        assert_eq!(shown.len(), SHOWN);
        let n = |v: &Value| v["data"]["detail"]["n"].as_u64().unwrap();
        assert_eq!(n(&shown[SHOWN - 1]), KEPT as u64 + 9);
        assert_eq!(n(&shown[0]), KEPT as u64 + 10 - SHOWN as u64);
        assert_eq!(shown[0]["type"], "health_event");
    }

    #[test]
    fn an_event_both_stored_and_on_its_way_is_kept_once() {
        let event = health("a", 1);
        let row = HealthEventRow {
            id: 1,
            server: "a".into(),
            instance: "i".into(),
            event: "health_event".into(),
            status: None,
            detail: event.data.to_string(),
            created_at: event.timestamp.naive_utc(),
        };
        let mut recent = RecentEvents::default();
        recent.seed(vec![row]);
        recent.remember(&event);
        assert_eq!(recent.events.len(), 1);
        recent.remember(&health("a", 2));
        assert_eq!(recent.events.len(), 2);
    }

    #[test]
    fn a_restricted_key_sees_only_its_upstreams() {
        let mut recent = RecentEvents::default();
        for n in 0..10 {
            recent.remember(&health(if n % 2 == 0 { "mine" } else { "theirs" }, n));
        }
        let allow = AllowList::parse(&["mine/*"]).unwrap();
        let shown = recent.for_allow(&allow);
        assert_eq!(shown.len(), 5);
        assert!(
            shown.iter().all(|e| e["data"]["server"] == "mine"),
            "{shown:?}"
        );
    }
}
