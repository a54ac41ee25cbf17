//! Operating on running upstreams: reset, reload, and their health history.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{caller_of, parse_name};
use crate::cluster::Announcement;
use crate::error::{ApiError, ErrorBody};
use crate::registry::{ServerName, ValidationError};
use crate::upstream::{Reload, Reset, SupervisorError};
use crate::upstream::{UpstreamStatus, UpstreamSupervisor};

fn supervisor_error(e: SupervisorError) -> ApiError {
    match e {
        SupervisorError::NotFound(name) => ApiError::ServerNotFound(name.to_string()),
        SupervisorError::Disabled(name) => ApiError::ServerDisabled(name.to_string()),
    }
}

/// The answer to reset and reload: the command is taken; the status is the one now.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub name: String,
    pub status: UpstreamStatus,
}

/// Sends an operator's command about one server to the supervisor; 202 with the status.
async fn command<M>(
    state: &AppState,
    path: &str,
    make: impl FnOnce(ServerName) -> M,
) -> Result<HttpResponse, ApiError>
where
    M: actix::Message<Result = Result<(), SupervisorError>> + Send + 'static,
    UpstreamSupervisor: actix::Handler<M>,
{
    let name = parse_name(path)?;
    state
        .supervisor
        .send(make(name.clone()))
        .await
        .map_err(ApiError::internal)?
        .map_err(supervisor_error)?;
    let snapshot = state.board.get(&name).unwrap_or_default();
    Ok(HttpResponse::Accepted().json(Accepted {
        name: name.to_string(),
        status: snapshot.status,
    }))
}

/// Closes the breaker, clears `failed`, forgets the restart history, and starts the server.
#[utoipa::path(post, path = "/api/v1/servers/{name}/reset", operation_id = "reset_server", tag = "upstreams",
    params(("name" = String, Path, description = "The server's name")),
    responses(
        (status = 202, description = "Reset; the server starts", body = Accepted),
        (status = 404, description = "`server-not-found`", body = ErrorBody),
    ))]
pub async fn reset(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let answer = command(&state, &path, |name| Reset { name }).await?;
    let server = path.into_inner();
    state.cluster.announce(Announcement::Reset { server }).await;
    Ok(answer)
}

/// Reconnects: a fresh session and catalogue.
#[utoipa::path(post, path = "/api/v1/servers/{name}/reload", operation_id = "reload_server", tag = "upstreams",
    params(("name" = String, Path, description = "The server's name")),
    responses(
        (status = 202, description = "Reloading", body = Accepted),
        (status = 404, description = "`server-not-found`", body = ErrorBody),
        (status = 409, description = "`server-disabled`", body = ErrorBody),
    ))]
pub async fn reload(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let answer = command(&state, &path, |name| Reload { name }).await?;
    let server = path.into_inner();
    state
        .cluster
        .announce(Announcement::Reload { server })
        .await;
    Ok(answer)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Rows older than this id: the `next_before` of the previous page.
    before: Option<i64>,
    /// 1 to 500; default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<HealthEvent>,
    /// Pass back as `before` for the next page; null on the last.
    pub next_before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct HealthEvent {
    pub id: i64,
    pub server: String,
    /// The instance that saw it.
    pub instance: String,
    pub event: String,
    pub status: Option<String>,
    /// What the event carries, by kind.
    pub detail: Value,
    pub timestamp: DateTime<Utc>,
}

/// The health history of one server, newest first. Pass `next_before` back as `before`
/// for the next page.
#[utoipa::path(get, path = "/api/v1/servers/{name}/events", operation_id = "list_server_events", tag = "upstreams",
    params(("name" = String, Path, description = "The server's name"), Page),
    responses(
        (status = 200, description = "A page of the history", body = EventPage),
        (status = 400, description = "`invalid-field`", body = ErrorBody),
        (status = 404, description = "`server-not-found`", body = ErrorBody),
    ))]
pub async fn events(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&path)?;
    // A server outside the key's allow-list does not exist for it, as in GET /servers/{name}.
    if !caller_of(&req)?.may_see_server(name.as_str()) {
        return Err(ApiError::ServerNotFound(name.to_string()));
    }
    let limit = page.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::InvalidField(ValidationError::new(
            "limit",
            "must be between 1 and 500",
        )));
    }
    if state.store.get_server(&name).await?.is_none() {
        return Err(ApiError::ServerNotFound(name.to_string()));
    }
    let rows = state
        .store
        .list_health_events(name.as_str(), page.before, limit)
        .await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let events: Vec<HealthEvent> = rows
        .into_iter()
        .map(|r| HealthEvent {
            id: r.id,
            server: r.server,
            instance: r.instance,
            event: r.event,
            status: r.status,
            detail: serde_json::from_str::<Value>(&r.detail).unwrap_or(Value::Null),
            timestamp: r.created_at.and_utc(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(EventPage {
        events,
        next_before,
    }))
}
