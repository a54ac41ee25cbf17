//! The MCP endpoint at `/mcp`: one Streamable HTTP server whose tools are every healthy
//! upstream's tools. rmcp's transport (mounted in actix-web by [`bridge`]) speaks
//! the protocol for both eras: the handshake revisions 2025-03-26, 2025-06-18 and
//! 2025-11-25 with sessions, and the stateless 2026-07-28. We supply the handler
//! ([`handler`]), the aggregate catalogue ([`catalogue`]), the naming rule ([`names`])
//! and the guards rmcp does not have: an `Origin` check and a bound on sessions
//! ([`guard`]).

pub mod bridge;
pub mod catalogue;
pub mod guard;
pub mod handler;
pub mod names;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
use bridge::Bridge;
use catalogue::Catalogue;
use handler::{McpHandler, Shared};

/// Bounds and knobs of `/mcp`.
#[derive(Clone, Debug)]
pub struct McpSettings {
    /// Tools per `tools/list` page.
    pub page_size: usize,
    /// Handshake-era sessions open at once; `initialize` beyond it gets 503.
    pub max_sessions: usize,
    /// A session with no request for this long is ended and its memory released.
    pub session_idle: Duration,
    /// Browser origins allowed besides the gateway's own (`scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// `Host` values accepted; empty means rmcp's loopback-only default when bound to a
    /// loopback address, and no check otherwise.
    pub allowed_hosts: Vec<String>,
}

impl Default for McpSettings {
    fn default() -> Self {
        Self {
            page_size: 100,
            max_sessions: 1000,
            session_idle: Duration::from_secs(600),
            allowed_origins: vec![],
            allowed_hosts: vec![],
        }
    }
}

/// The running endpoint: what the HTTP server mounts and the stopper cancels.
#[derive(Clone)]
pub struct McpEndpoint {
    shared: Arc<Shared>,
    sessions: Arc<LocalSessionManager>,
    settings: McpSettings,
    /// rmcp's service, built once for every worker.
    bridge: web::Data<Bridge>,
    /// Ends every session and stream at shutdown.
    pub shutdown: CancellationToken,
}

impl McpEndpoint {
    pub fn new(
        gateway: Gateway,
        catalogue: watch::Receiver<Arc<Catalogue>>,
        settings: McpSettings,
        loopback: bool,
        body_limit: usize,
    ) -> Self {
        let mut sessions = LocalSessionManager::default();
        sessions.session_config.keep_alive = Some(settings.session_idle);
        let sessions = Arc::new(sessions);
        let shared = Shared::new(gateway, catalogue, settings.page_size);
        let shutdown = CancellationToken::new();
        let mut config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(true)
            .with_sse_keep_alive(Some(Duration::from_secs(15)))
            .with_max_request_body_bytes(body_limit)
            .with_cancellation_token(shutdown.clone());
        if !settings.allowed_hosts.is_empty() {
            config = config.with_allowed_hosts(settings.allowed_hosts.clone());
        } else if !loopback {
            // Bound beyond loopback with no list: any Host (rmcp's default would refuse
            // every name but localhost). Origin is still checked by our guard.
            config = config.disable_allowed_hosts();
        }
        let factory = shared.clone();
        let service = StreamableHttpService::new(
            move || Ok(McpHandler::new(factory.clone())),
            sessions.clone(),
            config,
        );
        Self {
            shared,
            sessions,
            settings,
            bridge: web::Data::new(Bridge {
                service: Arc::new(service),
                runtime: crate::upstream::connect::upstream_runtime()
                    .handle()
                    .clone(),
                body_limit,
            }),
            shutdown,
        }
    }

    /// Handshake-era sessions open now.
    pub async fn session_count(&self) -> usize {
        self.sessions.sessions.read().await.len()
    }

    pub fn catalogue(&self) -> Arc<Catalogue> {
        self.shared.catalogue.borrow().clone()
    }

    /// The actix-web service for `/mcp`, with the guards in front of rmcp's transport.
    pub fn service(&self) -> impl actix_web::dev::HttpServiceFactory + 'static {
        let guard = guard::Guard {
            sessions: self.sessions.clone(),
            max_sessions: self.settings.max_sessions,
            allowed_origins: Arc::new(self.settings.allowed_origins.clone()),
        };
        // "/mcp" and "/mcp/" alike.
        web::scope("/mcp")
            .app_data(self.bridge.clone())
            .route("", web::route().to(bridge::handle))
            .route("/", web::route().to(bridge::handle))
            .wrap(actix_web::middleware::from_fn(move |req, next| {
                let guard = guard.clone();
                async move { guard.check(req, next).await }
            }))
    }
}
