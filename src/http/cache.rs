//! Cache statistics and invalidation: `/api/v1/cache`.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;
use super::servers::parse_name;
use crate::cache::Scope;
use crate::cache::actor::{GetStats, Invalidate};
use crate::error::ApiError;

pub async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state
        .gateway
        .cache()
        .send(GetStats)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(stats))
}

async fn invalidate(state: &AppState, scope: Scope) -> Result<HttpResponse, ApiError> {
    let entries = state
        .gateway
        .cache()
        .send(Invalidate {
            scope: scope.clone(),
            reason: "admin".into(),
        })
        .await
        .map_err(ApiError::internal)?;
    state
        .cluster
        .announce(crate::cluster::Announcement::Invalidate {
            scope: scope.clone(),
        })
        .await;
    let mut body = serde_json::to_value(&scope).unwrap_or_default();
    body["invalidated"] = json!(entries);
    Ok(HttpResponse::Ok().json(body))
}

pub async fn clear(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    invalidate(&state, Scope::All).await
}

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
