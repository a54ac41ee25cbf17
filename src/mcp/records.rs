//! Handshake-era sessions that any instance on one PostgreSQL can serve.
//!
//! Each session has a record in the store (`mcp_sessions`): who opened it, the client's
//! `initialize` params (protocol version, capabilities), its log level and its
//! subscriptions. An instance asked about a session it does not hold reads the record,
//! checks the key, and has rmcp restore the session from it (rmcp replays the handshake
//! to a handler of ours; see `SessionStore`). From then on that instance holds a copy of
//! the session, and every instance that holds one produces what the session's GET
//! stream carries (list changes, resource updates) from its own upstream connections:
//! whichever instance the client's GET stream reached sends them.
//!
//! What changes a session after it opened (its level, its subscriptions, its end) is
//! written to the record and announced (`cluster::SessionNote`), so every copy follows.
//! A client's answer to a request of the gateway's reaches the instance that asked by the
//! id the request carried (`mcp::tagged`). Alone (SQLite) there are no records, and
//! sessions live in memory only, as before.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rmcp::model::InitializeRequestParams;
use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};

use crate::cluster::{Announcement, Cluster, SessionNote};
use crate::store::Store;
use crate::store::sessions::SessionRow;

/// What a restored copy takes up of its session's record.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub log_level: Option<String>,
    pub subscriptions: Vec<(String, String)>,
}

pub struct Records {
    store: Store,
    cluster: Cluster,
    /// A record not marked as used for this long is of a session that ended.
    idle: std::time::Duration,
    /// What rmcp handed over as a session opened, until its owner is recorded with it.
    opening: Mutex<HashMap<String, InitializeRequestParams>>,
    /// Sessions just restored here, until their handlers take up their records.
    restored: Mutex<HashSet<String>>,
}

impl Records {
    pub fn new(store: Store, cluster: Cluster, idle: std::time::Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            cluster,
            idle,
            opening: Mutex::default(),
            restored: Mutex::default(),
        })
    }

    /// This start of this instance, as tagged request ids name it.
    pub fn origin(&self) -> &str {
        self.cluster.origin()
    }

    /// Stores the record of a session that just opened, owned by `owner`. Done before the
    /// client learns the session's id, so no instance can be asked about it earlier.
    pub async fn opened(&self, id: &str, owner: Option<String>) {
        let Some(params) = self.opening.lock().expect("opening").remove(id) else {
            log::warn!("MCP session {id} opened without its initialize params");
            return;
        };
        let now = crate::store::now();
        let row = SessionRow {
            id: id.to_owned(),
            owner,
            initialize_params: serde_json::to_string(&params).expect("params serialize"),
            log_level: None,
            created_at: now,
            seen_at: now,
        };
        if let Err(e) = self.store.insert_session(&row).await {
            log::warn!("MCP session {id} not recorded (other instances cannot serve it): {e}");
        }
    }

    /// A session that opened and was ended at once (its key was revoked meanwhile).
    pub fn discard(&self, id: &str) {
        self.opening.lock().expect("opening").remove(id);
    }

    /// The record of a session still in use somewhere: one that no instance used for
    /// `idle` has ended, as each copy of it has (its record may not be swept yet).
    async fn live(&self, id: &str) -> Result<Option<SessionRow>, crate::store::StoreError> {
        let row = self.store.session(id).await?;
        let idle = chrono::Duration::from_std(self.idle).unwrap_or(chrono::Duration::MAX);
        Ok(row.filter(|row| row.seen_at >= crate::store::now() - idle))
    }

    /// Who owns a session no copy of which is here: `None` when there is no record,
    /// `Some(None)` when it was opened while the gateway ran open.
    pub async fn owner(&self, id: &str) -> Option<Option<String>> {
        match self.live(id).await {
            Ok(row) => row.map(|row| row.owner),
            Err(e) => {
                log::warn!("MCP session {id} not read: {e}");
                None
            }
        }
    }

    /// Whether `id` was just restored here (its handler then reads the record afresh).
    pub fn take_restored(&self, id: &str) -> bool {
        self.restored.lock().expect("restored").remove(id)
    }

    /// The level and subscriptions the record holds now. A restored copy reads them once
    /// it is registered for notes, so a change made between the restore's read and the
    /// registration is not lost.
    pub async fn current(&self, id: &str) -> Option<Restored> {
        let row = self.live(id).await.ok()??;
        let subscriptions = self.store.session_subscriptions(id).await.ok()?;
        Some(Restored {
            log_level: row.log_level,
            subscriptions,
        })
    }

    /// Which of the sessions known here no longer have a record (ended on another
    /// instance while this one missed the note, or swept).
    pub async fn gone(&self, known: Vec<String>) -> Vec<String> {
        let mut gone = Vec::new();
        for some in known.chunks(10_000) {
            match self.store.sessions_recorded(some).await {
                Ok(recorded) => {
                    let recorded: std::collections::HashSet<String> =
                        recorded.into_iter().collect();
                    gone.extend(some.iter().filter(|id| !recorded.contains(*id)).cloned());
                }
                Err(e) => log::warn!("MCP session records not read: {e}"),
            }
        }
        gone
    }

    async fn announce(&self, note: SessionNote) {
        self.cluster.announce(Announcement::Session { note }).await;
    }

    /// The session ended here: its record goes, and every other copy ends.
    pub async fn end(&self, id: &str) {
        if let Err(e) = self.store.delete_session(id).await {
            log::warn!("MCP session {id}'s record not deleted: {e}");
        }
        let session = id.to_owned();
        self.announce(SessionNote::Ended { session }).await;
    }

    pub async fn level(&self, id: &str, level: String) {
        if let Err(e) = self.store.set_session_level(id, &level).await {
            log::warn!("MCP session {id}'s level not recorded: {e}");
        }
        let session = id.to_owned();
        self.announce(SessionNote::Level { session, level }).await;
    }

    /// The session subscribed to (`Subscribed`) or left (`Unsubscribed`) a resource.
    pub async fn subscription(&self, note: SessionNote) {
        let recorded = match &note {
            SessionNote::Subscribed {
                session,
                server,
                uri,
            } => {
                self.store
                    .add_session_subscription(session, server, uri)
                    .await
            }
            SessionNote::Unsubscribed {
                session,
                server,
                uri,
            } => {
                self.store
                    .remove_session_subscription(session, server, uri)
                    .await
            }
            _ => Ok(()),
        };
        if let Err(e) = recorded {
            log::warn!("an MCP session's subscription not recorded: {e}");
        }
        self.announce(note).await;
    }

    /// Sends a client's answer to the instance whose request it answers, if that instance
    /// is listening (an answer naming one that is not has nothing left to answer, and is
    /// not worth a notification, let alone a stored row).
    pub async fn answer(&self, to: &str, session: &str, message: serde_json::Value) {
        if !self.cluster.listening(to).await {
            log::debug!("an answer for MCP session {session} names {to}, which is not listening");
            return;
        }
        self.announce(SessionNote::Answer {
            to: to.to_owned(),
            session: session.to_owned(),
            message,
        })
        .await;
    }

    /// Marks the sessions used here since `since` (a wall-clock time: no later than
    /// their use) as used then, and forgets the records no instance has used for `idle`
    /// (each copy ends on its own after that long unused).
    pub async fn keep(&self, used: Vec<String>, since: chrono::NaiveDateTime) {
        // PostgreSQL binds at most 65,535 parameters in one statement.
        for some in used.chunks(10_000) {
            if let Err(e) = self.store.touch_sessions(some, since).await {
                log::warn!("MCP session records not refreshed: {e}");
            }
        }
        let idle = chrono::Duration::from_std(self.idle).unwrap_or(chrono::Duration::MAX);
        let before = crate::store::now() - idle;
        match self.store.sweep_sessions(before).await {
            Ok(0) => {}
            Ok(n) => log::info!("forgot {n} MCP session record(s) unused for {idle}"),
            Err(e) => log::warn!("MCP session records not swept: {e}"),
        }
    }
}

/// rmcp's view of the records: it stores the params of each session that opens, reads
/// them back to restore one, and deletes the record at the client's `DELETE`.
pub struct RecordStore(pub Arc<Records>);

#[async_trait::async_trait]
impl SessionStore for RecordStore {
    async fn load(&self, id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let Some(row) = self.0.live(id).await? else {
            return Ok(None);
        };
        let params: InitializeRequestParams = serde_json::from_str(&row.initialize_params)?;
        self.0
            .restored
            .lock()
            .expect("restored")
            .insert(id.to_owned());
        Ok(Some(SessionState::new(params)))
    }

    async fn store(&self, id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        self.0
            .opening
            .lock()
            .expect("opening")
            .insert(id.to_owned(), state.initialize_params.clone());
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), SessionStoreError> {
        self.0.end(id).await;
        Ok(())
    }
}
