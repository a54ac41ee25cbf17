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

/// What happened to an upstream, as a `health_event` names it (`data.event`). Readers
/// match on this, never on the text; events relayed from other instances arrive as JSON
/// and are read back with [`Event::health_kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthKind {
    /// Added to the registry.
    Registered,
    /// Its declaration changed.
    Reconfigured,
    /// Taken out of the registry.
    Removed,
    /// Its session is up and its tools listed.
    Connected,
    /// Its session stopped (crash, exit, lost).
    Exited,
    /// A restart is waiting out its backoff.
    RestartScheduled,
    /// Started again after an exit.
    Restarted,
    /// The supervisor gave up: it kept crashing.
    Failed,
    /// An operator reset it (restart history forgotten).
    Reset,
    /// An operator reloaded it.
    Reloading,
    CircuitOpened,
    CircuitHalfOpen,
    CircuitClosed,
    /// Healthy again after failures.
    Recovered,
    /// Its tool list changed (seen when it was listed again).
    ToolsChanged,
    /// The upstream's own notice that its tools, resources or prompts changed.
    ListChanged,
    ProbeFailed,
}

impl HealthKind {
    /// The kind a `health_event`'s `data` names, if this build knows it.
    pub fn of(data: &Value) -> Option<Self> {
        serde_json::from_value(data.get("event")?.clone()).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Reconfigured => "reconfigured",
            Self::Removed => "removed",
            Self::Connected => "connected",
            Self::Exited => "exited",
            Self::RestartScheduled => "restart_scheduled",
            Self::Restarted => "restarted",
            Self::Failed => "failed",
            Self::Reset => "reset",
            Self::Reloading => "reloading",
            Self::CircuitOpened => "circuit_opened",
            Self::CircuitHalfOpen => "circuit_half_open",
            Self::CircuitClosed => "circuit_closed",
            Self::Recovered => "recovered",
            Self::ToolsChanged => "tools_changed",
            Self::ListChanged => "list_changed",
            Self::ProbeFailed => "probe_failed",
        }
    }
}

impl Event {
    /// A `health_event` of `server`.
    pub fn health(server: &ServerName, kind: HealthKind, detail: Value) -> Self {
        Self::new(
            EventType::HealthEvent,
            Some(server.clone()),
            serde_json::json!({"server": server, "event": kind, "detail": detail}),
        )
    }

    /// What a `health_event` says happened; `None` for other events (and for a kind
    /// this build does not know, from a newer instance).
    pub fn health_kind(&self) -> Option<HealthKind> {
        if self.kind != EventType::HealthEvent {
            return None;
        }
        HealthKind::of(&self.data)
    }
}

/// What a subscriber of the bus receives: an event, or word that it fell behind and
/// missed this many.
pub enum BusNote {
    Event(Arc<Event>),
    Lagged(u64),
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
    /// `history` receives upstream events for the store; see `upstream::history`.
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

    /// Every event from now on, as a stream an actor adds to its context; it ends when
    /// the bus does.
    pub fn stream(&self) -> impl futures_util::Stream<Item = BusNote> + Unpin + 'static {
        Box::pin(futures_util::stream::unfold(
            self.subscribe(),
            |mut rx| async move {
                match rx.recv().await {
                    Ok(event) => Some((BusNote::Event(event), rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => Some((BusNote::Lagged(n), rx)),
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        ))
    }
}
