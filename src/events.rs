//! The in-process event bus. Every state change of an upstream is published here once; the
//! live dashboard fans it out, and the health writer stores it in batches off the request
//! path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use crate::registry::ServerName;

/// The `type` of a message on the live stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    McpStatusChange,
    HealthEvent,
    CacheInvalidated,
    SystemMetrics,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::McpStatusChange => "mcp_status_change",
            Self::HealthEvent => "health_event",
            Self::CacheInvalidated => "cache_invalidated",
            Self::SystemMetrics => "system_metrics",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub timestamp: DateTime<Utc>,
    /// The upstream it concerns, if any (also inside `data`, for clients).
    #[serde(skip)]
    pub server: Option<ServerName>,
    /// The instance that saw it (several may share one database; see `cluster`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<Arc<str>>,
    pub data: Value,
}

impl Event {
    pub fn new(kind: EventType, server: Option<ServerName>, data: Value) -> Self {
        Self {
            kind,
            timestamp: Utc::now(),
            server,
            instance: None,
            data,
        }
    }

    /// The name stored in `health_events.event`: the health event's own name, or the
    /// message type.
    pub fn history_name(&self) -> &str {
        self.data
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or(self.kind.as_str())
    }
}

/// Publishes events to live subscribers and to the history writer. Cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    /// Stamped on every event published here.
    instance: Option<Arc<str>>,
    live: broadcast::Sender<Arc<Event>>,
    history: Option<mpsc::Sender<Arc<Event>>>,
    history_dropped: Arc<AtomicU64>,
}

impl EventBus {
    /// `history` receives upstream events for the store; see [`crate::upstream::history`].
    pub fn new(history: Option<mpsc::Sender<Arc<Event>>>) -> Self {
        let (live, _) = broadcast::channel(4096);
        Self {
            instance: None,
            live,
            history,
            history_dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn with_history(mut self, history: mpsc::Sender<Arc<Event>>) -> Self {
        self.history = Some(history);
        self
    }

    /// Names the instance on every event published from now on.
    pub fn with_instance(mut self, instance: &str) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Whether `event` was seen by this instance (not relayed from another one).
    pub fn is_local(&self, event: &Event) -> bool {
        event.instance == self.instance
    }

    pub fn publish(&self, mut event: Event) {
        if event.instance.is_none() {
            event.instance = self.instance.clone();
        }
        let event = Arc::new(event);
        log::debug!("event {} {}", event.kind.as_str(), event.data);
        if let Some(history) = &self.history
            && matches!(
                event.kind,
                EventType::McpStatusChange | EventType::HealthEvent
            )
            && history.try_send(event.clone()).is_err()
        {
            // The writer is far behind (the store is down or slow): losing history is
            // better than growing without bound, but never silent.
            let n = self.history_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                log::warn!("health history writer is behind; {n} events dropped so far");
            }
        }
        // No live subscriber is fine.
        let _ = self.live.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }
}
