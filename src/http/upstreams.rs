//! Operating on running upstreams: reset, reload, and their health history.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::servers::parse_name;
use super::tools::caller_of;
use crate::cluster::Announcement;
use crate::error::ApiError;
use crate::registry::{ServerName, ValidationError};
use crate::upstream::UpstreamSupervisor;
use crate::upstream::supervisor::{Reload, Reset, SupervisorError};

fn supervisor_error(e: SupervisorError) -> ApiError {
    match e {
        SupervisorError::NotFound(name) => ApiError::ServerNotFound(name.to_string()),
        SupervisorError::Disabled(name) => ApiError::ServerDisabled(name.to_string()),
    }
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
    Ok(HttpResponse::Accepted().json(json!({"name": name, "status": snapshot.status})))
}

/// Closes the breaker, clears `failed`, forgets the restart history, and starts the server.
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

#[derive(Deserialize)]
pub struct Page {
    before: Option<i64>,
    limit: Option<i64>,
}

/// The health history of one server, newest first. Pass `next_before` back as `before`
/// for the next page.
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
    let events: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "server": r.server,
                "instance": r.instance,
                "event": r.event,
                "status": r.status,
                "detail": serde_json::from_str::<Value>(&r.detail).unwrap_or(Value::Null),
                "timestamp": r.created_at.and_utc(),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"events": events, "next_before": next_before})))
}
