//! Handshake-era MCP sessions as the gateway sees them: which key opened each, and the
//! bound on how many are open. rmcp keeps the sessions themselves; it knows nothing of
//! keys, so without this any key holding a session's id could use it, read its stream
//! or end it.
//!
//! A session belongs to the key that opened it (`None` when the gateway ran open). A
//! request naming a session it does not own, or one the gateway did not open, is
//! answered as if the session did not exist. Opening is serialized, so a burst of
//! `initialize` requests cannot overshoot `max_sessions`.
//!
//! In a cluster a session may have been opened on another instance: its owner is then
//! read from its record (`mcp::records`), and rmcp restores it here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rmcp::transport::streamable_http_server::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use super::records::Records;
use crate::auth::keyring::KeyState;

pub struct Sessions {
    pub manager: Arc<LocalSessionManager>,
    /// Session id -> the key that opened it.
    owners: Mutex<HashMap<Arc<str>, Owner>>,
    /// Held while an `initialize` is handled: count, open, record, one at a time.
    opening: Arc<tokio::sync::Mutex<()>>,
    pub max: usize,
    /// The keys in force: a session whose key was revoked while it opened is ended.
    keys: tokio::sync::watch::Receiver<KeyState>,
    /// The sessions' records, in a cluster.
    pub records: Option<Arc<Records>>,
}

/// Who opened a session, and when a request last named it here.
struct Owner {
    key: Option<String>,
    used: Instant,
}

impl Owner {
    fn new(key: Option<String>) -> Self {
        Self {
            key,
            used: Instant::now(),
        }
    }
}

/// A held turn to open a session; see [`Sessions::open_turn`].
pub struct OpenTurn {
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Sessions {
    pub fn new(
        manager: Arc<LocalSessionManager>,
        max: usize,
        keys: tokio::sync::watch::Receiver<KeyState>,
        records: Option<Arc<Records>>,
    ) -> Self {
        Self {
            manager,
            owners: Mutex::default(),
            opening: Arc::default(),
            max,
            keys,
            records,
        }
    }

    /// Open sessions `key` owns.
    pub async fn count_owned(&self, key: &str) -> usize {
        let live = self.manager.sessions.read().await;
        let owners = self.owners.lock().expect("session owners");
        owners
            .iter()
            .filter(|(id, owner)| owner.key.as_deref() == Some(key) && live.contains_key(*id))
            .count()
    }

    /// Handshake-era sessions open now.
    pub async fn count(&self) -> usize {
        self.manager.sessions.read().await.len()
    }

    /// Whether `key` may use the session `id`: one opened here, or, in a cluster, one
    /// whose record says so (then it is known here from now on).
    pub async fn belongs(&self, id: &str, key: Option<&str>) -> bool {
        if let Some(owner) = self.owners.lock().expect("session owners").get_mut(id) {
            owner.used = Instant::now();
            return owner.key.as_deref() == key;
        }
        let Some(records) = &self.records else {
            return false;
        };
        match records.owner(id).await {
            Some(owner) if owner.as_deref() == key => {
                self.owners
                    .lock()
                    .expect("session owners")
                    .insert(id.into(), Owner::new(owner));
                true
            }
            _ => false,
        }
    }

    /// Whether a copy of the session is held here.
    pub async fn holds(&self, id: &str) -> bool {
        self.manager.sessions.read().await.contains_key(id)
    }

    /// The sessions whose owner is known here.
    pub fn known(&self) -> Vec<String> {
        let owners = self.owners.lock().expect("session owners");
        owners.keys().map(|id| id.to_string()).collect()
    }

    /// The sessions a request named here since `since`.
    pub fn used_since(&self, since: Instant) -> Vec<String> {
        let owners = self.owners.lock().expect("session owners");
        owners
            .iter()
            .filter(|(_, owner)| owner.used >= since)
            .map(|(id, _)| id.to_string())
            .collect()
    }

    /// Another instance ended the session: the copy here ends too.
    pub async fn ended_elsewhere(&self, id: &str) {
        self.forget(id);
        let id: Arc<str> = id.into();
        let _ = self.manager.close_session(&id).await;
    }

    /// Waits for the turn to open a session; `None` when no room is left. Hold the turn
    /// until the new session's owner is recorded.
    pub async fn open_turn(self: Arc<Self>) -> Option<OpenTurn> {
        let turn = self.opening.clone().lock_owned().await;
        (self.count().await < self.max).then_some(OpenTurn { _turn: turn })
    }

    /// Records who opened a session, and forgets the owners of sessions that ended. A
    /// session whose key is no longer in force (revoked while it opened) is ended.
    pub async fn record(&self, id: &str, key: Option<String>) {
        if !self.keys.borrow().admits(key.as_deref()) {
            if let Some(records) = &self.records {
                records.discard(id);
            }
            let id: Arc<str> = id.into();
            let _ = self.manager.close_session(&id).await;
            return;
        }
        if let Some(records) = &self.records {
            records.opened(id, key.clone()).await;
        }
        let open = self.count().await;
        let mut owners = self.owners.lock().expect("session owners");
        owners.insert(id.into(), Owner::new(key));
        if owners.len() > open + 64 {
            let live = self.manager.sessions.try_read();
            if let Ok(live) = live {
                owners.retain(|id, _| live.contains_key(id));
            }
        }
    }

    /// The session ended at the client's request.
    pub fn forget(&self, id: &str) {
        self.owners.lock().expect("session owners").remove(id);
    }

    /// Ends every session whose key is no longer in force (or opened while the gateway
    /// ran open, once it no longer does). Answers how many ended.
    pub async fn end_unadmitted(&self, state: &KeyState) -> usize {
        let ended: Vec<Arc<str>> = {
            let mut owners = self.owners.lock().expect("session owners");
            let ended = owners
                .iter()
                .filter(|(_, owner)| !state.admits(owner.key.as_deref()))
                .map(|(id, _)| id.clone())
                .collect();
            owners.retain(|_, owner| state.admits(owner.key.as_deref()));
            ended
        };
        for id in &ended {
            if let Err(e) = self.manager.close_session(id).await {
                log::debug!("MCP session {id} already gone: {e}");
            }
            if let Some(records) = &self.records {
                records.end(id).await;
            }
        }
        if !ended.is_empty() {
            log::info!("ended {} MCP session(s) of revoked keys", ended.len());
        }
        ended.len()
    }
}
