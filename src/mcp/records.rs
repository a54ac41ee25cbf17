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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::model::InitializeRequestParams;
use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};

use crate::cluster::{Announcement, Cluster, SessionNote};
use crate::store::Store;
use crate::store::sessions::SessionRow;

/// One session's record, as a restore hands it to the session's new handler.
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
    /// What a restore read, until the restored session's handler takes it.
    restored: Mutex<HashMap<String, Restored>>,
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
            subscriptions: "[]".into(),
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

    /// What a restore of `id` read, for the handler that now serves it.
    pub fn take_restored(&self, id: &str) -> Option<Restored> {
        self.restored.lock().expect("restored").remove(id)
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

    /// The session's subscriptions are now `all`, after `note` changed them.
    pub async fn subscriptions(&self, id: &str, all: &[(String, String)], note: SessionNote) {
        let text = serde_json::to_string(all).expect("subscriptions serialize");
        if let Err(e) = self.store.set_session_subscriptions(id, &text).await {
            log::warn!("MCP session {id}'s subscriptions not recorded: {e}");
        }
        self.announce(note).await;
    }

    /// Sends a client's answer to the instance whose request it answers.
    pub async fn answer(&self, to: &str, session: &str, message: serde_json::Value) {
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
        let subscriptions = serde_json::from_str(&row.subscriptions).unwrap_or_default();
        self.0.restored.lock().expect("restored").insert(
            id.to_owned(),
            Restored {
                log_level: row.log_level,
                subscriptions,
            },
        );
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
