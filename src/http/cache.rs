//! Cache statistics and invalidation: `/api/v1/cache`.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::extract::parse_name;
use crate::cache::{CacheStats, Scope};

use crate::error::ApiError;

/// What an invalidation dropped: its scope, and how many entries.
#[derive(Serialize, ToSchema)]
pub struct Invalidated {
    #[serde(flatten)]
    pub scope: Scope,
    /// Entries dropped here.
    pub invalidated: usize,
}

#[utoipa::path(get, path = "/api/v1/cache/stats", operation_id = "cache_stats", tag = "cache",
    responses((status = 200, description = "This instance's cache", body = CacheStats)))]
pub async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state
        .gateway
        .cache()
        .stats()
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(stats))
}

async fn invalidate(state: &AppState, scope: Scope) -> Result<HttpResponse, ApiError> {
    let entries = state
        .gateway
        .cache()
        .invalidate(scope.clone(), "admin".into())
        .await
        .map_err(ApiError::internal)?;
    state
        .cluster
        .announce(crate::cluster::Announcement::Invalidate {
            scope: scope.clone(),
        })
        .await;
    Ok(HttpResponse::Ok().json(Invalidated {
        scope,
        invalidated: entries,
    }))
}

#[utoipa::path(delete, path = "/api/v1/cache", operation_id = "clear_cache", tag = "cache",
    responses((status = 200, description = "Every entry dropped", body = Invalidated)))]
pub async fn clear(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    invalidate(&state, Scope::All).await
}

#[utoipa::path(delete, path = "/api/v1/cache/servers/{name}", operation_id = "clear_server_cache", tag = "cache",
    params(("name" = String, Path, description = "The server's name")),
    responses((status = 200, description = "The server's entries dropped", body = Invalidated)))]
pub async fn clear_server(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&path)?;
    invalidate(
        &state,
        Scope::Server {
            server: name.to_string(),
        },
    )
    .await
}

#[utoipa::path(delete, path = "/api/v1/cache/servers/{name}/tools/{tool}", operation_id = "clear_tool_cache", tag = "cache",
    params(
        ("name" = String, Path, description = "The server's name"),
        ("tool" = String, Path, description = "The upstream's tool name"),
    ),
    responses((status = 200, description = "The tool's entries dropped", body = Invalidated)))]
pub async fn clear_tool(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (name, tool) = path.into_inner();
    let name = parse_name(&name)?;
    super::text::name("tool", &tool)?;
    invalidate(
        &state,
        Scope::Tool {
            server: name.to_string(),
            tool,
        },
    )
    .await
}
