//! Handshake-era MCP sessions as the gateway sees them: which key opened each, and the
//! bound on how many are open. rmcp keeps the sessions themselves; it knows nothing of
//! keys, so without this any key holding a session's id could use it, read its stream
//! or end it.
//!
//! A session belongs to the key that opened it (`None` when the gateway ran open). A
//! request naming a session it does not own, or one the gateway did not open, is
//! answered as if the session did not exist. Opening is serialized, so a burst of
//! `initialize` requests cannot overshoot `max_sessions`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::transport::streamable_http_server::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use crate::auth::keyring::KeyState;

pub struct Sessions {
    pub manager: Arc<LocalSessionManager>,
    /// Session id -> the key that opened it.
    owners: Mutex<HashMap<Arc<str>, Option<String>>>,
    /// Held while an `initialize` is handled: count, open, record, one at a time.
    opening: Arc<tokio::sync::Mutex<()>>,
    pub max: usize,
    /// The keys in force: a session whose key was revoked while it opened is ended.
    keys: tokio::sync::watch::Receiver<KeyState>,
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
    ) -> Self {
        Self {
            manager,
            owners: Mutex::default(),
            opening: Arc::default(),
            max,
            keys,
        }
    }

    /// Open sessions `key` owns.
    pub async fn count_owned(&self, key: &str) -> usize {
        let live = self.manager.sessions.read().await;
        let owners = self.owners.lock().expect("session owners");
        owners
            .iter()
            .filter(|(id, owner)| owner.as_deref() == Some(key) && live.contains_key(*id))
            .count()
    }

    /// Handshake-era sessions open now.
    pub async fn count(&self) -> usize {
        self.manager.sessions.read().await.len()
    }

    /// Whether `key` may use the session `id`.
    pub fn belongs(&self, id: &str, key: Option<&str>) -> bool {
        self.owners
            .lock()
            .expect("session owners")
            .get(id)
            .is_some_and(|owner| owner.as_deref() == key)
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
            let id: Arc<str> = id.into();
            let _ = self.manager.close_session(&id).await;
            return;
        }
        let open = self.count().await;
        let mut owners = self.owners.lock().expect("session owners");
        owners.insert(id.into(), key);
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
                .filter(|(_, key)| !state.admits(key.as_deref()))
                .map(|(id, _)| id.clone())
                .collect();
            owners.retain(|_, key| state.admits(key.as_deref()));
            ended
        };
        for id in &ended {
            if let Err(e) = self.manager.close_session(id).await {
                log::debug!("MCP session {id} already gone: {e}");
            }
        }
        if !ended.is_empty() {
            log::info!("ended {} MCP session(s) of revoked keys", ended.len());
        }
        ended.len()
    }
}
