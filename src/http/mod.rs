//! The HTTP surface: routes, shared state, and the JSON error shape for everything actix
//! itself refuses (bad JSON, too large, unknown route).

pub mod cache;
pub mod extract;
pub mod health;
pub mod invocations;
pub mod keys;
pub mod live;
pub mod mcp;
pub mod openapi;
pub mod route;
pub mod routes;
pub mod servers;
pub mod text;
pub mod tools;
pub mod upstreams;

use std::sync::{Arc, OnceLock};

use actix_web::error::JsonPayloadError;
use actix_web::{FromRequest, Handler, HttpRequest, Responder, guard, middleware, web};

use actix::Addr;

use crate::auth::boundary::Boundary;
use crate::auth::door::Door;
use crate::config::Settings;
use crate::error::ApiError;
use crate::events::EventBus;
use crate::gateway::Gateway;
use crate::store::Store;
use crate::upstream::ReconcileOne;
use crate::upstream::{StatusBoard, UpstreamSupervisor};

/// What every handler can reach (it lives in `web::Data`).
pub struct AppState {
    pub gateway: Gateway,
    pub hub: Addr<crate::live::EventHub>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub store: Store,
    pub settings: Arc<Settings>,
    pub supervisor: Addr<UpstreamSupervisor>,
    pub board: StatusBoard,
    pub bus: EventBus,
    pub mcp: crate::mcp::McpEndpoint,
    pub keys: crate::auth::KeyRing,
    /// Tells the other instances on the same PostgreSQL what changed here.
    pub cluster: crate::cluster::Cluster,
    /// What the other instances report about each upstream.
    pub peers: crate::cluster::PeerBoard,
}

impl AppState {
    /// Makes the running upstreams match the registry after a change. The change is already
    /// stored; if this fails, the next reconcile (or restart) applies it.
    /// After an API change of the server `name`: its child follows its registry entry,
    /// and the other instances are told.
    pub async fn reconcile(&self, name: &crate::registry::ServerName) {
        match self.supervisor.send(ReconcileOne(name.clone())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("reconcile after a registry change failed: {e}"),
            Err(e) => log::error!("supervisor unreachable: {e}"),
        }
        self.cluster
            .announce(crate::cluster::Announcement::Registry)
            .await;
    }
}

/// Registers every declared route, each behind the door of its own access.
struct AppRoutes<'a> {
    cfg: &'a mut web::ServiceConfig,
    boundary: Arc<Boundary>,
}

impl routes::Declare for AppRoutes<'_> {
    fn route<F, Args>(&mut self, route: routes::Route, handler: F)
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let door = Door {
            access: route.access,
            boundary: self.boundary.clone(),
        };
        let mut resource = web::resource(route.path);
        if let Some(method) = route.method {
            resource = resource.guard(guard::Method(method));
        }
        self.cfg.service(
            resource
                .to(handler)
                .wrap(middleware::from_fn(move |req, next| {
                    let door = door.clone();
                    async move { door.check(req, next).await }
                })),
        );
    }
}

/// The OpenAPI document of the routes [`routes::declare`] registers, built once: served at
/// `/api/v1/openapi.json` and written by `omni-bridge openapi`.
pub fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| openapi::build(&routes::table()))
}

pub fn configure(cfg: &mut web::ServiceConfig, body_limit: usize, boundary: Arc<Boundary>) {
    cfg.app_data(web::Data::new(openapi::Document(openapi_json())))
        .app_data(
            web::JsonConfig::default()
                .limit(body_limit)
                .error_handler(json_error),
        )
        .app_data(
            web::PathConfig::default()
                .error_handler(|err, _| ApiError::InvalidBody(format!("bad path: {err}")).into()),
        )
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            ApiError::InvalidField(crate::registry::ValidationError::new(
                "query",
                format!("bad query string: {err}"),
            ))
            .into()
        }));
    routes::declare(&mut AppRoutes {
        cfg: &mut *cfg,
        boundary,
    });
    cfg.default_service(web::to(not_found));
}

fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    match err {
        JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::PayloadTooLarge(
            format!("body of {length} bytes is over the limit of {limit}"),
        ),
        JsonPayloadError::Overflow { limit } => {
            ApiError::PayloadTooLarge(format!("body is over the limit of {limit} bytes"))
        }
        JsonPayloadError::ContentType => {
            ApiError::InvalidBody("send the body as application/json".into())
        }
        JsonPayloadError::Payload(e) if crate::deadline::is_timeout(&e) => {
            ApiError::BodyTimeout(e.to_string())
        }
        JsonPayloadError::Deserialize(e) => {
            ApiError::InvalidBody(format!("invalid JSON body: {e}"))
        }
        other => ApiError::InvalidBody(format!("unreadable body: {other}")),
    }
    .into()
}

async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound(format!(
        "{} {}",
        req.method(),
        req.path()
    )))
}
