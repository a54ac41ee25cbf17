//! Starting and stopping the gateway: store, migrations, registry seed, HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::Actor;
use actix_web::{App, middleware, web};

use crate::audit::AuditLog;
use crate::auth::KeyRing;
use crate::auth::boundary::Boundary;
use crate::auth::guard::Guard;
use crate::auth::keyring::OpenPolicy;
use crate::cache::{Cache, CacheActor, SharedTier};
use crate::cluster::{Cluster, PeerBoard, Targets};
use crate::config::Settings;
use crate::gateway::Gateway;
use crate::http::{self, AppState};
use crate::live::EventHub;
use crate::mcp::McpEndpoint;
use crate::mcp::catalogue::CatalogueActor;
use crate::metrics::Metrics;
use crate::store::{DatabaseUrl, Store, StoreError, migrate};
use crate::upstream::Reconcile;
use crate::upstream::{StatusBoard, UpstreamSupervisor};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(
        "refusing to listen on {0} without API keys: anyone who can reach it could use every \
         upstream. Create a key first (omni-bridge keys create --name NAME --role admin), or \
         pass --insecure-no-auth"
    )]
    NoKeys(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A gateway that is listening. Await `server` to run it until shutdown.
pub struct Running {
    pub addr: SocketAddr,
    pub server: actix_web::dev::Server,
    pub store: Store,
    /// The event bus, for in-process observers (tests, embedders).
    pub bus: crate::events::EventBus,
    pub stopper: Stopper,
    /// Await `audit.close()` after the server: rows still waiting get a bounded attempt.
    pub audit: AuditLog,
}

/// Stops the gateway gracefully: live sessions are closed (1001) first, since a
/// WebSocket would otherwise hold the graceful stop for its whole timeout; then the
/// listener stops and in-flight requests get `shutdown_timeout` to finish.
#[derive(Clone)]
pub struct Stopper {
    hub: actix::Addr<EventHub>,
    mcp: tokio_util::sync::CancellationToken,
    handle: actix_web::dev::ServerHandle,
}

impl Stopper {
    pub async fn stop(&self) {
        let _ = self.hub.send(crate::live::hub::CloseAll).await;
        // MCP sessions hold SSE streams open just like WebSockets.
        self.mcp.cancel();
        self.handle.stop(true).await;
    }

    /// Stops on SIGINT or SIGTERM. The handlers are in place when this returns (not when
    /// a spawned task first runs), so a signal sent just after start is not fatal.
    pub fn on_signals(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            log::error!("cannot listen for signals; stop the process with SIGKILL");
            return;
        };
        actix_rt::spawn(async move {
            tokio::select! {
                _ = term.recv() => log::info!("SIGTERM received; shutting down"),
                _ = int.recv() => log::info!("SIGINT received; shutting down"),
            }
            self.stop().await;
        });
    }
}

/// The log target of the access log (one line per request, at `info`).
const ACCESS_LOG: &str = "omni_bridge::access";
/// How often the keys are re-read, so that one revoked through another instance stops
/// working here too.
const KEY_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

fn spawn_key_refresh(keys: KeyRing, store: Store) {
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(KEY_REFRESH);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = keys.reload(&store).await {
                log::warn!("API keys not refreshed: {e}");
            }
        }
    });
}

/// Ends the live sessions (WebSocket and MCP) of keys that are no longer in force, as
/// soon as the ring learns of it: a revocation here, one announced by another instance,
/// or one the timer finds.
fn spawn_session_reaper(
    mut keys: tokio::sync::watch::Receiver<crate::auth::keyring::KeyState>,
    hub: actix::Addr<EventHub>,
    mcp: McpEndpoint,
) {
    actix_rt::spawn(async move {
        while keys.changed().await.is_ok() {
            let state = keys.borrow_and_update().clone();
            hub.do_send(crate::live::hub::RetainKeys(state.clone()));
            mcp.end_unadmitted(&state).await;
        }
    });
}

/// actix takes the graceful-stop timeout in whole seconds. Truncating would turn "500ms"
/// (or "0s") into no grace at all, cutting every in-flight request; so round up, to at
/// least one second.
fn grace_secs(timeout: std::time::Duration) -> u64 {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    secs.max(1)
}

/// Requests a client may queue before the gateway accepts them (actix-web's default).
const BACKLOG: i32 = 1024;

/// Binds `bind` and serves `app` on it, HTTP/1.1, every connection closed by lingering
/// (see [`crate::linger`]). This is what `actix_web::HttpServer` assembles, with its
/// defaults (keep-alive 5 s, 5 s for a request's head, 1 s for a client to read the end),
/// except that it lets us wrap the socket, which `HttpServer` does not.
fn listen<F, I, S, B>(
    bind: SocketAddr,
    grace_secs: u64,
    app: F,
) -> std::io::Result<(SocketAddr, actix_web::dev::Server)>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, actix_http::Request>,
    S: actix_service::ServiceFactory<
            actix_http::Request,
            Config = actix_web::dev::AppConfig,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        > + 'static,
    S::InitError: std::fmt::Debug,
    <S::Service as actix_service::Service<actix_http::Request>>::Future: 'static,
    B: actix_web::body::MessageBody + 'static,
{
    use actix_service::{ServiceFactoryExt, fn_service, map_config};
    use std::time::Duration;

    let socket = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&bind.into())?;
    socket.listen(BACKLOG)?;
    let listener: std::net::TcpListener = socket.into();
    let addr = listener.local_addr()?;

    let builder = actix_server::Server::build()
        .shutdown_timeout(grace_secs)
        .disable_signals();
    // Idle keep-alive connections close at once when the server stops, as HttpServer does.
    let stopping = builder.graceful_shutdown_signal();
    let server = builder
        .listen("omni-bridge", listener, move || {
            let stopping = stopping.clone();
            let http = actix_http::HttpService::build()
                .graceful_shutdown_signal(move || {
                    let stopping = stopping.clone();
                    async move { stopping.notified().await }
                })
                .keep_alive(actix_http::KeepAlive::default())
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(addr)
                .finish(map_config(
                    app()
                        .into_factory()
                        .map_err(|e: actix_web::Error| e.error_response()),
                    |_| actix_web::dev::AppConfig::default(),
                ));
            fn_service(|io: tokio::net::TcpStream| async move {
                // Streamed answers (an `/mcp` call's SSE events, live-stream frames) are
                // several small writes; under Nagle's algorithm each one after the first
                // waits for the client's ACK, which a client delays up to 40 ms.
                let _ = io.set_nodelay(true);
                let peer = io.peer_addr().ok();
                Ok::<_, actix_http::error::DispatchError>((
                    // actix's own refusals (400, 408, 431) get the JSON error body.
                    crate::bare_errors::JsonErrors::new(crate::linger::Lingering::new(io)),
                    actix_http::Protocol::Http1,
                    peer,
                ))
            })
            .and_then(http)
        })?
        .run();
    Ok((addr, server))
}

/// Prepares everything and binds the listener. Must run inside an actix system.
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    for warning in &settings.warnings {
        log::warn!("configuration: {warning}");
    }
    if let DatabaseUrl::Sqlite(path) = &settings.database {
        crate::store::files::prepare_sqlite(path).map_err(|source| StartError::DataDir {
            path: path.display().to_string(),
            source,
        })?;
    }
    let applied = migrate::run(&settings.database).await?;
    if applied > 0 {
        log::info!(
            "applied {applied} migration(s) to {}",
            settings.database.display()
        );
    }
    let store = Store::open(&settings.database, &settings.store)?;
    store.sync_config_servers(&settings.servers).await?;

    let loopback = settings.bind.ip().is_loopback();
    let policy = OpenPolicy {
        loopback,
        insecure_no_auth: settings.auth.insecure_no_auth,
    };
    let keys = KeyRing::new(settings.auth.rates, policy);
    // Logs the mode (open, closed with every key revoked, or keys required).
    keys.reload(&store).await?;
    if keys.is_empty() && !loopback && !settings.auth.insecure_no_auth {
        return Err(StartError::NoKeys(settings.bind));
    }
    spawn_key_refresh(keys.clone(), store.clone());

    crate::tls::install_crypto_provider();
    let bus = crate::upstream::start_history(
        store.clone(),
        settings.database.clone(),
        settings.instance.clone(),
    );
    let board = StatusBoard::default();
    let mut upstream_settings = settings.upstreams.clone();
    upstream_settings.message_limit = crate::upstream::transport_limit(settings.max_result_bytes);
    let supervisor =
        UpstreamSupervisor::new(store.clone(), bus.clone(), board.clone(), upstream_settings)
            .start();
    supervisor
        .send(Reconcile)
        .await
        .map_err(|e| StartError::Store(StoreError::Unavailable(e.to_string())))??;

    let shared = match &settings.cache.redis_url {
        Some(url) => Some(
            SharedTier::new(url, &settings.cache.redis_prefix)
                .map_err(|e| StartError::Store(StoreError::Unavailable(format!("redis: {e}"))))?,
        ),
        None => None,
    };
    let cache = CacheActor::new(
        settings.cache.limits.clone(),
        bus.clone(),
        settings.cache.sweep_interval,
    )
    .with_shared(shared.clone());
    let warmed = cache.warmed();
    let cache = Cache::start(cache);
    // Unique per start, even for several gateways in one process (tests).
    let origin = format!("{}-{:08x}", settings.instance, rand::random::<u32>());
    let cluster = Cluster::new(store.clone(), origin.clone(), settings.instance.clone());
    let metrics = Arc::new(Metrics::new());
    crate::trim::spawn(&metrics);
    let traffic = crate::traffic::Traffic::default();
    let audit = AuditLog::start(
        store.clone(),
        settings.database.clone(),
        metrics.audit_rows_dropped.clone(),
    );
    let gateway = Gateway::new(
        board.clone(),
        supervisor.clone(),
        cache.clone(),
        settings.cache.default_ttl,
        audit.clone(),
        metrics.clone(),
        settings.max_result_bytes,
    )
    .with_cluster(cluster.clone())
    .with_traffic(traffic.clone());
    crate::warm::spawn(
        gateway.clone(),
        board.clone(),
        &bus,
        settings.cache.default_ttl,
        warmed,
    );
    let hub = EventHub::new(
        bus.clone(),
        board.clone(),
        metrics.clone(),
        cache,
        settings.live.metrics_interval,
        keys.subscribe(),
    )
    .with_traffic(traffic)
    .with_store(store.clone())
    .start();

    let catalogue = CatalogueActor::spawn(board.clone(), bus.clone());
    let (session_notes, session_notes_in) = tokio::sync::mpsc::unbounded_channel();
    let mcp = McpEndpoint::new(
        gateway.clone(),
        catalogue,
        settings.mcp.clone(),
        settings.body_limit,
        keys.subscribe(),
        bus.clone(),
        crate::mcp::McpCluster {
            cluster: cluster.clone(),
            store: store.clone(),
            notes: session_notes_in,
        },
    );
    spawn_session_reaper(keys.subscribe(), hub.clone(), mcp.clone());

    let peers = PeerBoard::default();
    if let DatabaseUrl::Postgres(url) = &settings.database {
        let targets = Targets {
            supervisor: supervisor.clone(),
            cache: gateway.cache().clone(),
            keys: keys.clone(),
            store: store.clone(),
            hub: hub.clone(),
            peers: peers.clone(),
            sessions: session_notes,
        };
        crate::cluster::spawn_listener(url.clone(), origin, targets);
        crate::cluster::spawn_forwarder(cluster.clone(), bus.clone());
    }

    let settings = Arc::new(settings);
    let hub_for_stop = hub.clone();
    let state = web::Data::new(AppState {
        gateway,
        hub,
        metrics: metrics.clone(),
        store: store.clone(),
        settings: settings.clone(),
        supervisor,
        board,
        bus: bus.clone(),
        mcp: mcp.clone(),
        keys: keys.clone(),
        cluster,
        peers,
    });
    let guard = Guard {
        ring: keys,
        body_timeout: settings.body_timeout,
    };
    let boundary = Arc::new(Boundary::new(
        loopback,
        settings.auth.allowed_hosts.clone(),
        settings.auth.allowed_origins.clone(),
    ));
    let body_limit = settings.body_limit;
    let mcp_for_stop = mcp.shutdown.clone();
    let access_log = log::log_enabled!(target: ACCESS_LOG, log::Level::Info);
    let app = move || {
        let counted = metrics.clone();
        let guard = guard.clone();
        let boundary = boundary.clone();
        App::new()
            .app_data(mcp.bridge.clone())
            .wrap(middleware::from_fn(move |req, next| {
                let guard = guard.clone();
                async move { guard.check(req, next).await }
            }))
            .app_data(state.clone())
            .wrap_fn(move |req, srv| {
                use actix_web::dev::Service;
                let metrics = counted.clone();
                let fut = srv.call(req);
                async move {
                    let res = fut.await?;
                    metrics.record_request(res.status().is_server_error());
                    Ok(res)
                }
            })
            // Off unless its target is logged: the logger formats every request's fields
            // (peer address, clock) before it knows whether the line will be kept.
            .wrap(middleware::Condition::new(
                access_log,
                middleware::Logger::new("%a \"%r\" %s %Dms").log_target(ACCESS_LOG),
            ))
            .configure(|cfg| http::configure(cfg, body_limit, boundary))
    };
    let (addr, server) = listen(settings.bind, grace_secs(settings.shutdown_timeout), app)
        .map_err(|source| StartError::Bind {
            addr: settings.bind,
            source,
        })?;
    let stopper = Stopper {
        hub: hub_for_stop,
        mcp: mcp_for_stop,
        handle: server.handle(),
    };
    log::info!(
        "omni-bridge listening on http://{addr} (store: {})",
        settings.database.display()
    );
    Ok(Running {
        addr,
        server,
        store,
        bus,
        stopper,
        audit,
    })
}

#[cfg(test)]
mod tests {
    use super::grace_secs;
    use std::time::Duration;

    #[test]
    fn grace_rounds_up_to_whole_seconds_and_never_to_zero() {
        assert_eq!(grace_secs(Duration::ZERO), 1);
        assert_eq!(grace_secs(Duration::from_millis(500)), 1);
        assert_eq!(grace_secs(Duration::from_secs(1)), 1);
        assert_eq!(grace_secs(Duration::from_millis(1001)), 2);
        assert_eq!(grace_secs(Duration::from_secs(30)), 30);
    }
}
