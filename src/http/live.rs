//! The live surfaces: the dashboard page, the WebSocket stream, Prometheus metrics.

use actix_web::{HttpMessage, HttpRequest, HttpResponse, get, web};

use super::AppState;
use crate::auth::Caller;
use crate::cache::actor::GetStats;
use crate::error::ApiError;
use crate::live::session::{Access, SessionActor};

/// The dashboard: one static page, embedded in the binary.
#[get("/")]
pub async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("static/dashboard.html"))
}

/// Upgrades to a WebSocket and hands the connection to its own session actor.
#[get("/ws")]
pub async fn websocket(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    // The auth guard let the upgrade through without a caller only when no key came
    // with it; the session then takes the key as its first message.
    let access = match req.extensions().get::<Caller>() {
        Some(caller) => Access::Granted(caller.allow.clone()),
        None => Access::Pending(state.keys.clone()),
    };
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    SessionActor::start(
        session,
        stream,
        state.hub.clone(),
        state.settings.live.clone(),
        state.metrics.clone(),
        access,
    );
    Ok(response)
}

/// Prometheus text format.
#[get("/metrics")]
pub async fn prometheus(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state.gateway.cache().send(GetStats).await.ok();
    let text = state.metrics.render(&state.board, stats.as_ref());
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
