//! The registry API: `/api/v1/servers`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::AppState;
use super::tools::caller_of;
use crate::error::ApiError;
use crate::registry::{ServerInput, ServerName, ServerSpec, Source, Transport, ValidationError};
use crate::store::StoreError;
use crate::store::servers::StoredServer;

pub fn parse_name(text: &str) -> Result<ServerName, ApiError> {
    ServerName::parse(text).map_err(|m| ApiError::InvalidField(ValidationError::new("name", m)))
}

/// The registry entry with its live state from the status board.
pub fn view(state: &AppState, stored: &StoredServer) -> Value {
    let mut out = stored.spec.to_public_json();
    let snapshot = state.board.get(&stored.spec.name).unwrap_or_default();
    if let (Some(fields), Value::Object(live)) = (out.as_object_mut(), snapshot.to_json()) {
        fields.extend(live);
    }
    out["instance"] = json!(state.settings.instance);
    out["peers"] = state.peers.of(stored.spec.name.as_str());
    out["source"] = json!(stored.source);
    out["revision"] = json!(stored.revision);
    out["created_at"] = json!(stored.created_at.and_utc());
    out["updated_at"] = json!(stored.updated_at.and_utc());
    out
}

fn etag(stored: &StoredServer) -> (header::HeaderName, String) {
    (header::ETAG, format!("\"{}\"", stored.revision))
}

/// Refuses a spec whose `/mcp` names would collide with another server's: the same
/// prefix, or (for a server whose tools are known) the same exposed tool name.
fn check_names(state: &AppState, spec: &ServerSpec) -> Result<(), ApiError> {
    let board = state.board.all();
    let tools = board
        .get(&spec.name)
        .map(|s| s.tools.clone())
        .unwrap_or_default();
    let found = crate::mcp::catalogue::collisions_with(
        &board,
        &spec.name,
        spec.tool_prefix.as_deref(),
        &tools,
    );
    if found.is_empty() {
        Ok(())
    } else {
        Err(ApiError::NameCollision(found.join("; ")))
    }
}

fn check_stdio_allowed(state: &AppState, spec: &ServerSpec) -> Result<(), ApiError> {
    if matches!(spec.transport, Transport::Stdio { .. }) && !state.settings.allow_stdio_via_api {
        return Err(ApiError::StdioNotAllowed);
    }
    Ok(())
}

/// The revision named by `If-Match` (`"3"` or `3`), if any.
fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::InvalidField(ValidationError::new(
                "If-Match",
                "must be a revision as given in ETag, e.g. \"3\"",
            ))
        })
}

pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = caller_of(&req)?;
    let servers = state.store.list_servers().await?;
    let items: Vec<Value> = servers
        .iter()
        .filter(|s| caller.may_see_server(s.spec.name.as_str()))
        .map(|s| view(&state, s))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"servers": items})))
}

pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&path)?;
    // A server outside the key's allow-list does not exist for it.
    let stored = state
        .store
        .get_server(&name)
        .await?
        .filter(|_| caller_of(&req).is_ok_and(|c| c.may_see_server(name.as_str())))
        .ok_or_else(|| ApiError::ServerNotFound(name.to_string()))?;
    Ok(HttpResponse::Ok()
        .insert_header(etag(&stored))
        .json(view(&state, &stored)))
}

pub async fn create(
    state: web::Data<AppState>,
    body: web::Json<ServerInput>,
) -> Result<HttpResponse, ApiError> {
    let spec = body
        .into_inner()
        .validate()
        .map_err(ApiError::InvalidField)?;
    check_stdio_allowed(&state, &spec)?;
    check_names(&state, &spec)?;
    let stored = match state.store.insert_server(&spec, Source::Api).await {
        Err(StoreError::Conflict) => return Err(ApiError::ServerExists(spec.name.to_string())),
        other => other?,
    };
    log::info!("server '{}' registered", spec.name);
    state.reconcile().await;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/servers/{}", spec.name)))
        .insert_header(etag(&stored))
        .json(view(&state, &stored)))
}

pub async fn update(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Json<ServerInput>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&path)?;
    let mut input = body.into_inner();
    match &input.name {
        Some(given) if given != name.as_str() => {
            return Err(ApiError::InvalidField(ValidationError::new(
                "name",
                format!("'{given}' differs from the path; a server cannot be renamed"),
            )));
        }
        _ => input.name = Some(name.to_string()),
    }
    let mut spec = input.validate().map_err(ApiError::InvalidField)?;
    check_stdio_allowed(&state, &spec)?;
    check_names(&state, &spec)?;
    let expected = if_match(&req)?;
    let current = state
        .store
        .get_server(&name)
        .await?
        .ok_or_else(|| ApiError::ServerNotFound(name.to_string()))?;
    if current.source == Source::Config {
        return Err(ApiError::ManagedByConfig(name.to_string()));
    }
    let restored = spec.restore_redacted(&current.spec)?;
    // Restored secrets came from `current`, so the write must replace exactly that
    // revision; otherwise, without If-Match, the client takes whatever revision it lands on.
    let guard = expected.or(restored.then_some(current.revision));
    let stored = match state.store.update_server(&spec, Source::Api, guard).await {
        Err(StoreError::NotFound) => return Err(ApiError::ServerNotFound(name.to_string())),
        Err(StoreError::RevisionMismatch { current: now }) => {
            return Err(ApiError::RevisionMismatch {
                expected: guard.unwrap_or(current.revision),
                current: now,
            });
        }
        other => other?,
    };
    log::info!("server '{name}' updated to revision {}", stored.revision);
    state.reconcile().await;
    Ok(HttpResponse::Ok()
        .insert_header(etag(&stored))
        .json(view(&state, &stored)))
}

pub async fn delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&path)?;
    if let Some(current) = state.store.get_server(&name).await?
        && current.source == Source::Config
    {
        return Err(ApiError::ManagedByConfig(name.to_string()));
    }
    if !state.store.delete_server(&name).await? {
        return Err(ApiError::ServerNotFound(name.to_string()));
    }
    log::info!("server '{name}' deleted");
    state.reconcile().await;
    Ok(HttpResponse::NoContent().finish())
}
