//! The handshake-era sessions held on this instance, by id, with what another instance's
//! note may change of them (`cluster::SessionNote`, applied by `mcp::notes`): the log
//! level, the subscriptions. See `mcp::records` for how several instances share a session.
//! `mcp::fast` finds here what it needs to answer a session's call itself.

// Logging is deprecated in 2026-07-28; handshake-era sessions still set their level.
#![allow(deprecated)]

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use rmcp::model::LoggingLevel;
use rmcp::{Peer, RoleServer};

/// What a session's handler shares with the notes about it.
#[derive(Clone)]
pub struct Copy {
    /// The session's number among the upstreams' relay clients.
    pub client: u64,
    pub peer: Peer<RoleServer>,
    pub level: Arc<Mutex<Option<LoggingLevel>>>,
    /// `(server, uri)` the session subscribed to.
    pub subscribed: Arc<Mutex<BTreeSet<(String, String)>>>,
    /// When a call answered without rmcp (`mcp::fast`) last told rmcp's worker that the
    /// session is in use.
    pub kept: Arc<Mutex<std::time::Instant>>,
}

#[derive(Default)]
pub struct Copies {
    by_id: Mutex<HashMap<Arc<str>, Copy>>,
}

impl Copies {
    pub fn insert(&self, id: Arc<str>, copy: Copy) {
        self.by_id.lock().expect("copies").insert(id, copy);
    }

    pub fn remove(&self, id: &str) {
        self.by_id.lock().expect("copies").remove(id);
    }

    pub fn get(&self, id: &str) -> Option<Copy> {
        self.by_id.lock().expect("copies").get(id).cloned()
    }
}

/// The level a note names (as the specification spells it).
pub fn parse_level(text: &str) -> Option<LoggingLevel> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

pub fn level_text(level: LoggingLevel) -> String {
    serde_json::to_value(level)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
