//! What every upstream looks like right now, readable without a message round trip: the
//! registry API and the live dashboard read it; the actors and the supervisor write it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use rmcp::model::Tool;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::breaker::CircuitState;
use super::lane::Lane;
use crate::events::{Event, EventBus, EventType, HealthKind};
use crate::registry::{ServerName, ServerSpec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamStatus {
    Starting,
    Healthy,
    /// Answers, but some recent calls or probes failed.
    Degraded,
    /// Probes fail, or the circuit is open.
    Unhealthy,
    /// Stopped; a restart is scheduled.
    Restarting,
    /// Restart intensity exhausted; waits for an operator's reset.
    Failed,
    Disabled,
}

impl UpstreamStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
            Self::Disabled => "disabled",
        }
    }

    /// Whether it counts as up in `system_metrics` (`upstreams_healthy`): it answers.
    pub fn is_up(self) -> bool {
        matches!(self, Self::Healthy | Self::Degraded)
    }

    /// Whether calls can be sent to the upstream at all.
    pub fn is_connected(self) -> bool {
        matches!(self, Self::Healthy | Self::Degraded | Self::Unhealthy)
    }
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The declaration the supervisor runs this upstream with.
    pub spec: Option<Arc<ServerSpec>>,
    pub status: UpstreamStatus,
    pub circuit: CircuitState,
    pub tools: Arc<Vec<Tool>>,
    pub last_probe_at: Option<DateTime<Utc>>,
    pub last_probe_ok: Option<bool>,
    pub latency_ms: Option<f64>,
    pub restart_count: u64,
    pub last_error: Option<String>,
    pub pid: Option<u32>,
    pub connected_since: Option<DateTime<Utc>>,
    pub server_info: Option<Value>,
    pub next_restart_at: Option<DateTime<Utc>>,
    /// What the upstream said it offers besides tools, at its handshake.
    pub offers: Offers,
    /// The connected session's client handle, which tool calls use.
    pub lane: Option<Lane>,
}

/// The optional capabilities `/mcp` passes through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Offers {
    pub resources: bool,
    pub prompts: bool,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            spec: None,
            status: UpstreamStatus::Starting,
            circuit: CircuitState::Closed,
            tools: Arc::default(),
            last_probe_at: None,
            last_probe_ok: None,
            latency_ms: None,
            restart_count: 0,
            last_error: None,
            pid: None,
            connected_since: None,
            server_info: None,
            next_restart_at: None,
            offers: Offers::default(),
            lane: None,
        }
    }
}

impl Snapshot {
    pub fn to_json(&self) -> Value {
        json!({
            "status": self.status,
            "circuit": self.circuit,
            "tool_count": self.tools.len(),
            "last_probe_at": self.last_probe_at,
            "last_probe_ok": self.last_probe_ok,
            "latency_ms": self.latency_ms,
            "restart_count": self.restart_count,
            "last_error": self.last_error,
            "pid": self.pid,
            "connected_since": self.connected_since,
            "server_info": self.server_info,
            "next_restart_at": self.next_restart_at,
        })
    }
}

/// The shared table of snapshots. Cheap to clone.
#[derive(Clone, Default)]
pub struct StatusBoard {
    inner: Arc<RwLock<BTreeMap<ServerName, Snapshot>>>,
}

impl StatusBoard {
    pub fn get(&self, name: &ServerName) -> Option<Snapshot> {
        self.inner.read().expect("board lock").get(name).cloned()
    }

    /// Reads one entry in place, without cloning it (the call path needs a few fields).
    pub fn read<R>(&self, name: &ServerName, f: impl FnOnce(&Snapshot) -> R) -> Option<R> {
        self.inner.read().expect("board lock").get(name).map(f)
    }

    /// Reads every entry in place, under the read lock: for short reads only, since
    /// writers wait meanwhile.
    pub fn with_all<R>(&self, f: impl FnOnce(&BTreeMap<ServerName, Snapshot>) -> R) -> R {
        f(&self.inner.read().expect("board lock"))
    }

    pub fn all(&self) -> BTreeMap<ServerName, Snapshot> {
        self.inner.read().expect("board lock").clone()
    }

    /// Changes one entry in place (creating it if absent) and returns the result.
    pub fn update<R>(&self, name: &ServerName, change: impl FnOnce(&mut Snapshot) -> R) -> R {
        let mut map = self.inner.write().expect("board lock");
        change(map.entry(name.clone()).or_default())
    }

    /// Changes one entry only if it is there: for an actor that may be stopping after its
    /// server was removed, which must not bring the entry back.
    pub fn update_if_present(&self, name: &ServerName, change: impl FnOnce(&mut Snapshot)) {
        if let Some(snapshot) = self.inner.write().expect("board lock").get_mut(name) {
            change(snapshot);
        }
    }

    pub fn remove(&self, name: &ServerName) {
        self.inner.write().expect("board lock").remove(name);
    }

    /// `name`'s entry, for its actor: the supervisor creates and removes entries, an
    /// actor only changes its own while it is there.
    pub fn entry(&self, name: &ServerName) -> BoardEntry {
        BoardEntry {
            board: self.clone(),
            name: name.clone(),
        }
    }
}

/// One server's entry of the board as its actor holds it. It changes the entry only while
/// the entry is there, so an actor still stopping after its server was removed (a call's
/// `CallFinished` queued before its `Shutdown`, say) cannot bring the entry back: the
/// supervisor, which removed it, is the only one that creates entries.
#[derive(Clone)]
pub struct BoardEntry {
    board: StatusBoard,
    name: ServerName,
}

impl BoardEntry {
    pub fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        self.board.update_if_present(&self.name, change);
    }
}

/// The status a connected upstream shows, from what its probes and calls have shown: a
/// failing probe or a circuit that is not closed is unhealthy; failures the breaker is
/// counting, below its threshold, are degraded; otherwise healthy.
pub fn derive(
    probe_failing: bool,
    circuit: CircuitState,
    consecutive_failures: u32,
) -> UpstreamStatus {
    match (probe_failing, circuit) {
        (true, _) | (_, CircuitState::Open | CircuitState::HalfOpen) => UpstreamStatus::Unhealthy,
        (false, CircuitState::Closed) if consecutive_failures > 0 => UpstreamStatus::Degraded,
        (false, CircuitState::Closed) => UpstreamStatus::Healthy,
    }
}

/// Tells the event bus of something that happened to `server`.
pub fn publish_health(bus: &EventBus, server: &ServerName, kind: HealthKind, detail: Value) {
    bus.publish(Event::health(server, kind, detail));
}

/// Tells the event bus that `server`'s status moved from `old` to `new`.
pub fn publish_status(
    bus: &EventBus,
    server: &ServerName,
    old: UpstreamStatus,
    new: UpstreamStatus,
    circuit: CircuitState,
    reason: &str,
) {
    bus.publish(Event::new(
        EventType::McpStatusChange,
        Some(server.clone()),
        json!({"server": server, "old_status": old, "new_status": new,
               "circuit": circuit, "reason": reason}),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use UpstreamStatus::{Degraded, Healthy, Unhealthy};

    #[test]
    fn status_follows_the_probe_and_the_breaker() {
        let open = CircuitState::Open;
        let half = CircuitState::HalfOpen;
        let closed = CircuitState::Closed;
        // (last probe failed, circuit, failures counted) -> status
        let table = [
            ((false, closed, 0), Healthy),
            ((false, closed, 1), Degraded),
            ((false, closed, 4), Degraded),
            ((false, half, 0), Unhealthy),
            ((false, open, 5), Unhealthy),
            // A failing probe outweighs calls that succeed.
            ((true, closed, 0), Unhealthy),
            ((true, half, 0), Unhealthy),
            ((true, open, 5), Unhealthy),
        ];
        for ((probe_failing, circuit, failures), want) in table {
            assert_eq!(
                derive(probe_failing, circuit, failures),
                want,
                "{probe_failing} {circuit:?} {failures}"
            );
        }
    }

    /// An actor's entry changes only while the supervisor keeps it: once the server is
    /// removed, whatever its stopping actor still reports leaves no entry behind.
    #[test]
    fn an_actor_cannot_bring_a_removed_entry_back() {
        let board = StatusBoard::default();
        let name = ServerName::parse("gone").unwrap();
        board.update(&name, |s| s.status = UpstreamStatus::Healthy);
        let entry = board.entry(&name);
        entry.update(|s| s.last_error = Some("first".into()));
        assert_eq!(
            board.get(&name).and_then(|s| s.last_error),
            Some("first".into())
        );
        board.remove(&name);
        entry.update(|s| s.last_error = Some("after removal".into()));
        assert!(board.get(&name).is_none());
        assert!(board.all().is_empty());
    }
}
