//! The MCP endpoint at `/mcp`: one Streamable HTTP server whose tools are every healthy
//! upstream's tools. rmcp's transport (mounted in actix-web by `rmcp-actix-web`) speaks
//! the protocol for both eras: the handshake revisions 2025-03-26, 2025-06-18 and
//! 2025-11-25 with sessions, and the stateless 2026-07-28. We supply the handler
//! ([`handler`]), the aggregate catalogue ([`catalogue`]), the naming rule ([`names`])
//! and the guards rmcp does not have: an `Origin` check and a bound on sessions
//! ([`guard`]).

pub mod catalogue;
pub mod guard;
pub mod handler;
pub mod names;

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp_actix_web::transport::StreamableHttpService;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
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
    loopback: bool,
    body_limit: usize,
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
        Self {
            shared: Shared::new(gateway, catalogue, settings.page_size),
            sessions: Arc::new(sessions),
            settings,
            loopback,
            body_limit,
            shutdown: CancellationToken::new(),
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
        let shared = self.shared.clone();
        let hosts = if !self.settings.allowed_hosts.is_empty() {
            Some(self.settings.allowed_hosts.clone())
        } else if self.loopback {
            None
        } else {
            // Bound beyond loopback with no list: any Host (rmcp's default would refuse
            // every name but localhost). Origin is still checked by our guard.
            Some(vec![])
        };
        let transport = StreamableHttpService::builder()
            .service_factory(Arc::new(move || Ok(McpHandler::new(shared.clone()))))
            .session_manager(self.sessions.clone())
            .stateful_mode(true)
            .sse_keep_alive(Duration::from_secs(15))
            .max_request_body_bytes(self.body_limit)
            .maybe_allowed_hosts(hosts)
            .cancellation_token(self.shutdown.clone())
            // The auth guard's verdict, for the handler's allow-list checks.
            .on_request_fn(|req, extensions| {
                use actix_web::HttpMessage;
                if let Some(caller) = req.extensions().get::<crate::auth::Caller>() {
                    extensions.insert(caller.clone());
                }
            })
            .build();
        let guard = guard::Guard {
            sessions: self.sessions.clone(),
            max_sessions: self.settings.max_sessions,
            allowed_origins: Arc::new(self.settings.allowed_origins.clone()),
        };
        transport
            .scope_with_path("/mcp")
            .wrap(actix_web::middleware::from_fn(move |req, next| {
                let guard = guard.clone();
                async move { guard.check(req, next).await }
            }))
    }
}
