//! Several instances on one PostgreSQL, one gateway to their users. What one instance
//! changes (the registry, a reload or reset, a cache invalidation, the keys) it announces
//! with PostgreSQL `NOTIFY`; every other instance listens on a connection of its own and
//! applies the change locally. A dropped listener reconnects with backoff and then re-reads
//! the registry, so a change made while it was away is not missed. On SQLite there is one
//! instance, and announcing does nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::Addr;
use chrono::{DateTime, Utc};
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::KeyRing;
use crate::cache::{Cache, Scope};
use crate::events::{BusNote, Event, EventBus, EventType, HealthKind};
use crate::live::EventHub;
use crate::live::hub::Remote;
use crate::registry::ServerName;
use crate::store::Store;
use crate::upstream::UpstreamSupervisor;
use crate::upstream::{Reconcile, Reload, Reset};

/// The `LISTEN`/`NOTIFY` channel.
pub const CHANNEL: &str = "omni_bridge";
/// What the listener's connection calls itself in `pg_stat_activity`, followed by the
/// instance's origin (see [`listener_name`]).
pub const LISTENER_NAME: &str = "omni-bridge-listener";

/// The listener connection's `application_name`: PostgreSQL keeps 63 bytes of it.
pub fn listener_name(origin: &str) -> String {
    let mut name = format!("{LISTENER_NAME}.{origin}");
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

/// A change the other instances must apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Announcement {
    /// Servers were created, changed or deleted: re-read the registry.
    Registry,
    Reload {
        server: String,
    },
    Reset {
        server: String,
    },
    Invalidate {
        scope: Scope,
    },
    /// Keys were created or revoked: re-read them now rather than at the next refresh.
    Keys,
    /// An upstream's status change or health event as the announcing instance saw it,
    /// for the other instances' dashboards and their view of every instance.
    Event {
        event: RemoteEvent,
    },
    /// Something of an `/mcp` session that the instances holding it must apply.
    Session {
        note: SessionNote,
    },
    /// An announcement too long for a payload, in `cluster_notes` under this id.
    Stored {
        row: i64,
    },
}

/// PostgreSQL refuses a `NOTIFY` payload of 8,000 bytes or more. A longer announcement
/// (a client's long answer to a sampling request) is written to `cluster_notes` and
/// announced by its row.
const PAYLOAD_MAX: usize = 7_900;

/// How long a stored announcement is kept for the listeners to read (they read it within
/// milliseconds of its notification).
const STORED_KEPT: &str = "1 minute";

#[derive(diesel::QueryableByName)]
struct StoredRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

#[derive(diesel::QueryableByName)]
struct StoredPayload {
    #[diesel(sql_type = Text)]
    payload: String,
}

/// What changed of one handshake-era `/mcp` session, for every instance that holds it
/// (see `mcp::records`). The `/mcp` endpoint takes these from the channel in [`Targets`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum SessionNote {
    /// It ended (`DELETE`, or its key was revoked): close it here too.
    Ended { session: String },
    /// `logging/setLevel`.
    Level { session: String, level: String },
    Subscribed {
        session: String,
        server: String,
        uri: String,
    },
    Unsubscribed {
        session: String,
        server: String,
        uri: String,
    },
    /// The client's answer to a request the instance `to` sent it (sampling,
    /// elicitation), which reached another instance.
    Answer {
        to: String,
        session: String,
        message: Value,
    },
}

/// An event as it travels between instances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteEvent {
    pub event_type: EventType,
    pub timestamp: DateTime<Utc>,
    pub server: String,
    pub instance: String,
    pub data: Value,
}

impl RemoteEvent {
    fn into_event(self) -> Event {
        let mut event = Event::new(
            self.event_type,
            ServerName::parse(&self.server).ok(),
            self.data,
        );
        event.timestamp = self.timestamp;
        event.instance = Some(self.instance.into());
        event
    }
}

/// What every other instance last reported about each upstream: by server, then by
/// instance. Cheap to clone.
#[derive(Clone, Default)]
pub struct PeerBoard {
    inner: Arc<RwLock<BTreeMap<String, BTreeMap<String, Value>>>>,
}

impl PeerBoard {
    fn note(&self, event: &RemoteEvent) {
        let mut board = self.inner.write().expect("peer board");
        match event.event_type {
            EventType::McpStatusChange => {
                board.entry(event.server.clone()).or_default().insert(
                    event.instance.clone(),
                    json!({
                        "status": event.data["new_status"],
                        "circuit": event.data["circuit"],
                        "since": event.timestamp,
                    }),
                );
            }
            EventType::HealthEvent if HealthKind::of(&event.data) == Some(HealthKind::Removed) => {
                if let Some(instances) = board.get_mut(&event.server) {
                    instances.remove(&event.instance);
                }
            }
            _ => {}
        }
    }

    /// Each other instance's view of `server`.
    pub fn of(&self, server: &str) -> Value {
        let board = self.inner.read().expect("peer board");
        let views: Vec<Value> = board
            .get(server)
            .map(|instances| {
                instances
                    .iter()
                    .map(|(instance, view)| {
                        let mut view = view.clone();
                        view["instance"] = json!(instance);
                        view
                    })
                    .collect()
            })
            .unwrap_or_default();
        Value::Array(views)
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The announcing instance, which has applied the change already.
    origin: String,
    #[serde(flatten)]
    what: Announcement,
}

/// Announces this instance's changes. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    store: Store,
    origin: String,
    /// This instance's name, as events carry it.
    instance: String,
}

impl Cluster {
    pub fn new(store: Store, origin: String, instance: String) -> Self {
        Self {
            store,
            origin,
            instance,
        }
    }

    /// This start of this instance, unique among all instances and restarts.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether other instances may share the store (PostgreSQL).
    pub fn shared(&self) -> bool {
        matches!(self.store, Store::Postgres(_))
    }

    /// Whether the instance that started as `origin` is listening now: what a client
    /// names as another instance is taken at its word only then.
    pub async fn listening(&self, origin: &str) -> bool {
        #[derive(diesel::QueryableByName)]
        struct Found {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let Store::Postgres(pool) = &self.store else {
            return false;
        };
        let asked = async {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            diesel::sql_query(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind::<Text, _>(listener_name(origin))
            .get_result::<Found>(&mut *conn)
            .await
            .map_err(|e| e.to_string())
        };
        match asked.await {
            Ok(found) => found.n > 0,
            Err(e) => {
                log::warn!("could not tell whether instance {origin} listens: {e}");
                false
            }
        }
    }

    /// Tells the other instances. A failure is logged: the change itself is stored, and a
    /// peer picks it up at its next reconnect or restart.
    pub async fn announce(&self, what: Announcement) {
        let Store::Postgres(pool) = &self.store else {
            return;
        };
        let mut payload = serde_json::to_string(&Envelope {
            origin: self.origin.clone(),
            what,
        })
        .expect("announcements serialize");
        let sent = async {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            if payload.len() > PAYLOAD_MAX {
                let stored: StoredRow = diesel::sql_query(
                    "INSERT INTO cluster_notes (payload, created_at) \
                     VALUES ($1, now() AT TIME ZONE 'UTC') RETURNING id",
                )
                .bind::<Text, _>(&payload)
                .get_result(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
                diesel::sql_query(format!(
                    "DELETE FROM cluster_notes \
                     WHERE created_at < now() AT TIME ZONE 'UTC' - interval '{STORED_KEPT}'"
                ))
                .execute(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
                payload = serde_json::to_string(&Envelope {
                    origin: self.origin.clone(),
                    what: Announcement::Stored { row: stored.id },
                })
                .expect("announcements serialize");
            }
            diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<Text, _>(CHANNEL)
                .bind::<Text, _>(&payload)
                .execute(&mut *conn)
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(e) = sent.await {
            log::warn!("could not announce {payload} to other instances: {e}");
        }
    }
}

/// What a peer's announcement acts on here.
#[derive(Clone)]
pub struct Targets {
    pub supervisor: Addr<UpstreamSupervisor>,
    pub cache: Cache,
    pub keys: KeyRing,
    pub store: Store,
    pub hub: Addr<EventHub>,
    pub peers: PeerBoard,
    /// Where notes about `/mcp` sessions go.
    pub sessions: tokio::sync::mpsc::UnboundedSender<SessionNote>,
}

impl Targets {
    async fn apply(&self, what: Announcement) {
        let name = |s: &str| ServerName::parse(s).ok();
        match what {
            Announcement::Registry => self.reconcile().await,
            Announcement::Reload { server } => {
                if let Some(name) = name(&server) {
                    let _ = self.supervisor.send(Reload { name }).await;
                }
            }
            Announcement::Reset { server } => {
                if let Some(name) = name(&server) {
                    let _ = self.supervisor.send(Reset { name }).await;
                }
            }
            Announcement::Invalidate { scope } => {
                let reason = "another instance".to_owned();
                let _ = self.cache.invalidate(scope, reason).await;
            }
            Announcement::Keys => {
                if let Err(e) = self.keys.reload(&self.store).await {
                    log::warn!("keys not re-read after another instance's change: {e}");
                }
            }
            Announcement::Event { event } => {
                self.peers.note(&event);
                self.hub.do_send(Remote(Arc::new(event.into_event())));
            }
            Announcement::Session { note } => {
                let _ = self.sessions.send(note);
            }
            Announcement::Stored { row } => match self.stored(row).await {
                // What a stored row holds is never another row.
                Ok(Envelope {
                    what: Announcement::Stored { .. },
                    ..
                }) => {}
                Ok(envelope) => Box::pin(self.apply(envelope.what)).await,
                Err(e) => log::warn!("stored announcement {row} not read: {e}"),
            },
        }
    }

    async fn stored(&self, row: i64) -> Result<Envelope, String> {
        let Store::Postgres(pool) = &self.store else {
            return Err("no PostgreSQL".into());
        };
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        let stored: StoredPayload =
            diesel::sql_query("SELECT payload FROM cluster_notes WHERE id = $1")
                .bind::<diesel::sql_types::BigInt, _>(row)
                .get_result(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
        serde_json::from_str(&stored.payload).map_err(|e| e.to_string())
    }

    async fn reconcile(&self) {
        match self.supervisor.send(Reconcile).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("reconcile after another instance's change failed: {e}"),
            Err(e) => log::error!("supervisor unreachable: {e}"),
        }
    }
}

/// Announces this instance's upstream status changes and health events, so that every
/// instance's dashboard shows what each instance sees.
pub fn spawn_forwarder(cluster: Cluster, bus: EventBus) {
    actix_rt::spawn(async move {
        let mut events = bus.stream();
        while let Some(note) = events.next().await {
            let event = match note {
                BusNote::Event(event) => event,
                BusNote::Lagged(n) => {
                    log::warn!("{n} events not forwarded to other instances (too many at once)");
                    continue;
                }
            };
            let ours = event.instance.as_deref() == Some(cluster.instance.as_str());
            let forwarded = matches!(
                event.kind,
                EventType::McpStatusChange | EventType::HealthEvent
            );
            let (true, true, Some(server)) = (ours, forwarded, event.server.as_ref()) else {
                continue;
            };
            let remote = RemoteEvent {
                event_type: event.kind,
                timestamp: event.timestamp,
                server: server.to_string(),
                instance: cluster.instance.clone(),
                data: event.data.clone(),
            };
            cluster
                .announce(Announcement::Event { event: remote })
                .await;
        }
    });
}

/// Listens for the other instances' announcements for as long as the process runs.
pub fn spawn_listener(database_url: String, origin: String, targets: Targets) {
    actix_rt::spawn(async move {
        let mut delay = Duration::from_millis(100);
        let mut first = true;
        loop {
            match listen(&database_url, &origin, &targets, &mut first, &mut delay).await {
                Ok(()) => log::warn!("the announcement listener's connection closed; reconnecting"),
                Err(e) => log::warn!("announcement listener: {e}; reconnecting in {delay:?}"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
}

/// One connection's worth of listening; returns when the connection ends.
async fn listen(
    database_url: &str,
    origin: &str,
    targets: &Targets,
    first: &mut bool,
    delay: &mut Duration,
) -> Result<(), String> {
    let mut url = url::Url::parse(database_url).map_err(|e| e.to_string())?;
    url.query_pairs_mut()
        .append_pair("application_name", &listener_name(origin));
    let mut conn = AsyncPgConnection::establish(url.as_str())
        .await
        .map_err(|e| e.to_string())?;
    conn.batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| e.to_string())?;
    *delay = Duration::from_millis(100);
    if !*first {
        // Whatever changed while the listener was away: catch up from the store.
        log::info!("announcement listener reconnected; re-reading the registry and keys");
        targets.reconcile().await;
        targets.apply(Announcement::Keys).await;
    }
    *first = false;
    let notifications = conn.notifications_stream();
    tokio::pin!(notifications);
    while let Some(notification) = notifications.next().await {
        let notification = notification.map_err(|e| e.to_string())?;
        match serde_json::from_str::<Envelope>(&notification.payload) {
            Ok(envelope) if envelope.origin == origin => {}
            Ok(envelope) => {
                log::debug!("applying {:?} from {}", envelope.what, envelope.origin);
                targets.apply(envelope.what).await;
            }
            Err(e) => log::warn!("ignoring an announcement that does not parse: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_through_their_payload() {
        for what in [
            Announcement::Registry,
            Announcement::Reload { server: "a".into() },
            Announcement::Invalidate {
                scope: Scope::Tool {
                    server: "a".into(),
                    tool: "t".into(),
                },
            },
            Announcement::Keys,
        ] {
            let text = serde_json::to_string(&Envelope {
                origin: "i1".into(),
                what: what.clone(),
            })
            .unwrap();
            let back: Envelope = serde_json::from_str(&text).unwrap();
            assert_eq!((back.origin.as_str(), back.what), ("i1", what));
        }
    }
}
