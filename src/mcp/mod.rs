//! The MCP endpoint at `/mcp`: one Streamable HTTP server whose tools are every healthy
//! upstream's tools. rmcp's transport (mounted in actix-web by [`bridge`]) speaks
//! the protocol for both eras: the handshake revisions 2025-03-26, 2025-06-18 and
//! 2025-11-25 with sessions, and the stateless 2026-07-28. We supply the handler
//! ([`handler`]), the aggregate catalogue ([`catalogue`]), the naming rule (`registry::names`)
//! and what rmcp does not have: sessions bound to the key that opened them and an
//! atomic bound on how many are open ([`sessions`]). `Host`, `Origin` and the role are
//! checked at the route, as for every route (`auth::door`). On PostgreSQL any instance
//! serves any session: sessions have records in the store ([`records`]), each instance
//! holds copies of the sessions it was asked about ([`copies`]), and request ids sent to
//! clients name the instance that sent them ([`tagged`]).

pub mod answer;
pub mod bridge;
pub mod catalogue;
pub mod copies;
pub mod fast;
pub mod handler;
pub mod input;
pub mod notes;
pub mod recipient;
pub mod records;
pub mod request;
pub mod sessions;
pub mod shared;
pub mod subscriptions;
pub mod tagged;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, SessionNote};
use crate::gateway::Gateway;
use bridge::Bridge;
use catalogue::Catalogue;
use handler::McpHandler;
use records::{RecordStore, Records};
use sessions::Sessions;
use shared::Shared;
use tagged::TaggedSessions;

/// Bounds and knobs of `/mcp`.
/// How long an answered request's stream stays resumable (see `McpEndpoint::new`).
const COMPLETED_STREAMS_KEPT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct McpSettings {
    /// Tools per `tools/list` page.
    pub page_size: usize,
    /// Handshake-era sessions open at once; `initialize` beyond it gets 503.
    pub max_sessions: usize,
    /// A session with no request for this long is ended and its memory released.
    pub session_idle: Duration,
    /// Whether a request's answer may be a plain JSON body (see [`answer`]).
    pub response: answer::ResponseMode,
}

impl Default for McpSettings {
    fn default() -> Self {
        Self {
            page_size: 100,
            // Measured (omni-bench --sessions): about 61 KiB each in a release build, so
            // 10,000 open sessions hold about 600 MiB; see docs/configuration.md.
            max_sessions: 10_000,
            session_idle: Duration::from_secs(600),
            response: answer::ResponseMode::Auto,
        }
    }
}

/// What `/mcp` needs of the cluster: its announcer, and the notes other instances send
/// about sessions (see [`records`]).
pub struct McpCluster {
    pub cluster: Cluster,
    pub store: crate::store::Store,
    pub notes: tokio::sync::mpsc::UnboundedReceiver<SessionNote>,
}

/// How often, at most, an instance marks the sessions it was asked about as used, and
/// forgets the records of sessions no instance used for `session_idle`; a quarter of
/// `session_idle` when that is shorter, so a record is never much older than its use.
const RECORDS_KEPT_EVERY: Duration = Duration::from_secs(60);

/// The running endpoint: what the HTTP server mounts and the stopper cancels.
#[derive(Clone)]
pub struct McpEndpoint {
    shared: Arc<Shared>,
    sessions: Arc<Sessions>,
    /// rmcp's service, built once for every worker; the app holds it as data.
    pub bridge: web::Data<Bridge>,
    /// Ends every session and stream at shutdown.
    pub shutdown: CancellationToken,
}

impl McpEndpoint {
    pub fn new(
        gateway: Gateway,
        catalogue: watch::Receiver<Arc<Catalogue>>,
        settings: McpSettings,
        body_limit: usize,
        keys: tokio::sync::watch::Receiver<crate::auth::keyring::KeyState>,
        bus: crate::events::EventBus,
        cluster: McpCluster,
    ) -> Self {
        let mut sessions = LocalSessionManager::default();
        sessions.session_config.keep_alive = Some(settings.session_idle);
        // rmcp keeps every answered request's stream (a queue sized for 16 messages) so
        // that a client can resume it, for 60 s by default, and evicts them only as the
        // session's next message comes. Under load that held a minute of requests; 5 s
        // still covers a client that reconnects after the 3 s retry it is told.
        sessions.session_config.completed_cache_ttl = COMPLETED_STREAMS_KEPT;
        let sessions = Arc::new(sessions);
        let McpCluster {
            cluster,
            store,
            notes,
        } = cluster;
        let records = cluster
            .shared()
            .then(|| Records::new(store, cluster.clone(), settings.session_idle));
        let tag = records.as_ref().map(|_| Arc::<str>::from(cluster.origin()));
        let manager = Arc::new(TaggedSessions::new(sessions.clone(), tag));
        let relayed = gateway.clone();
        let shared = Shared::new(gateway, catalogue, settings.page_size, records.clone());
        crate::upstream::upstream_runtime().spawn(subscriptions::relay(
            shared.subscriptions.clone(),
            bus,
            relayed,
        ));
        let shutdown = CancellationToken::new();
        // `Host` and `Origin` are checked at the route for the whole gateway, with the
        // operator's lists; rmcp's own loopback-only check would refuse listed names.
        let mut config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(true)
            .with_sse_keep_alive(Some(Duration::from_secs(15)))
            .with_max_request_body_bytes(body_limit)
            .with_cancellation_token(shutdown.clone())
            .disable_allowed_hosts()
            .disable_allowed_origins();
        if let Some(records) = &records {
            config.session_store = Some(Arc::new(RecordStore(records.clone())));
        }
        let factory = shared.clone();
        let service = StreamableHttpService::new(
            move || Ok(McpHandler::new(factory.clone())),
            manager.clone(),
            config,
        );
        let sessions = Arc::new(Sessions::new(
            sessions,
            settings.max_sessions,
            keys,
            records.clone(),
        ));
        let fast = fast::Fast {
            shared: shared.clone(),
            manager: manager.clone(),
            session_idle: settings.session_idle,
        };
        if let Some(records) = records {
            let runtime = crate::upstream::upstream_runtime();
            runtime.spawn(take_notes(
                notes,
                shared.clone(),
                sessions.clone(),
                manager,
                cluster.origin().to_owned(),
            ));
            runtime.spawn(keep_records(
                records,
                shared.clone(),
                sessions.clone(),
                settings.session_idle,
            ));
        }
        Self {
            shared,
            sessions: sessions.clone(),
            bridge: web::Data::new(Bridge {
                service: Arc::new(service),
                runtime: crate::upstream::upstream_runtime().handle().clone(),
                body_limit,
                sessions,
                response: settings.response,
                fast,
            }),
            shutdown,
        }
    }

    /// Handshake-era sessions open now.
    pub async fn session_count(&self) -> usize {
        self.sessions.count().await
    }

    /// Open sessions a key owns.
    pub async fn sessions_of(&self, key: &str) -> usize {
        self.sessions.count_owned(key).await
    }

    /// Ends the sessions of keys no longer in force.
    pub async fn end_unadmitted(&self, state: &crate::auth::keyring::KeyState) -> usize {
        self.sessions.end_unadmitted(state).await
    }

    /// Resources, templates and prompts left out of the last listings because another
    /// upstream offered the same first.
    pub fn shadowed(&self) -> Vec<shared::Shadowed> {
        self.shared.shadowed()
    }

    pub fn catalogue(&self) -> Arc<Catalogue> {
        self.shared.catalogue.borrow().clone()
    }
}

/// Applies the other instances' notes about sessions held here.
async fn take_notes(
    mut notes: tokio::sync::mpsc::UnboundedReceiver<SessionNote>,
    shared: Arc<Shared>,
    sessions: Arc<Sessions>,
    manager: Arc<TaggedSessions>,
    origin: String,
) {
    while let Some(note) = notes.recv().await {
        notes::apply(note, &shared, &sessions, &manager, &origin).await;
    }
}

/// Keeps the records of the sessions used here, sweeps the unused ones, and ends the
/// copies here of sessions whose record is gone.
async fn keep_records(
    records: Arc<Records>,
    shared: Arc<Shared>,
    sessions: Arc<Sessions>,
    idle: Duration,
) {
    let mut every = tokio::time::interval(
        RECORDS_KEPT_EVERY
            .min(idle / 4)
            .max(Duration::from_millis(10)),
    );
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Each round marks what was used since the last one as used at its start: no later
    // than the use, so a record never outlives its session.
    let mut since = (std::time::Instant::now(), crate::store::now());
    loop {
        every.tick().await;
        let now = (std::time::Instant::now(), crate::store::now());
        records.keep(sessions.used_since(since.0), since.1).await;
        for id in records.gone(sessions.known()).await {
            log::info!("MCP session {id} ended elsewhere; its copy here ends too");
            shared.copies.remove(&id);
            sessions.ended_elsewhere(&id).await;
        }
        since = now;
    }
}
