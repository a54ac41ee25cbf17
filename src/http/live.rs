//! The live surfaces: the dashboard page, the WebSocket stream, Prometheus metrics.

use std::pin::Pin;

use actix_web::error::PayloadError;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::Stream;

use super::AppState;
use crate::error::ApiError;
use crate::live::frames::{BEFORE_AUTH, FrameBudget, FrameGuard};
use crate::live::session::{Access, SessionActor};

/// The dashboard: one static page, embedded in the binary.
pub async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("static/dashboard.html"))
}

/// Upgrades to a WebSocket and hands the connection to its own session actor.
pub async fn websocket(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    // The auth guard let the upgrade through without a caller only when no key came
    // with it; the session then takes the key as its first message.
    let caller = crate::auth::Identity::caller(&req.extensions());
    let access = match caller {
        Some(caller) => Access::Granted(caller),
        None => Access::Pending(state.keys.clone()),
    };
    // Frames are bounded from their headers; before the key, to the size of a key.
    let max_frame = state.settings.live.max_frame;
    let budget = FrameBudget::new(match access {
        Access::Granted(_) => max_frame,
        Access::Pending(_) => BEFORE_AUTH.min(max_frame),
    });
    let guarded: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
        Box::pin(FrameGuard::new(body, budget.clone()));
    let mut payload = actix_web::dev::Payload::from(guarded);
    let body = web::Payload::from_request(&req, &mut payload).into_inner()?;
    let (response, session, stream) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::WebSocketHandshake(e.to_string()))?;
    SessionActor::start(
        session,
        stream,
        state.hub.clone(),
        state.settings.live.clone(),
        state.metrics.clone(),
        access,
        budget,
    );
    Ok(response)
}

/// The OpenMetrics text format (what prometheus-client writes: counters' samples end in
/// `_total`, and the text ends with `# EOF`). Said as such, so Prometheus parses it as
/// OpenMetrics and keeps each family's type; as `text/plain; version=0.0.4` it read the
/// counters as untyped.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "meta",
    responses((status = 200, description = "Every series, in the OpenMetrics text format",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn prometheus(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state.gateway.cache().stats().await.ok();
    let text = state.metrics.render(&state.board, stats.as_ref());
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}
