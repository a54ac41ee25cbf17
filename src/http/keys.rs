//! `/api/v1/keys` (admin): create, list and revoke API keys.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;
use crate::auth::manage::{self, KeyInput};
use crate::cluster::Announcement;
use crate::error::ApiError;

pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let keys: Vec<_> = state
        .store
        .list_keys()
        .await?
        .iter()
        .map(manage::public)
        .collect();
    Ok(HttpResponse::Ok().json(json!({"keys": keys})))
}

/// The answer is the only time the secret is shown.
pub async fn create(
    state: web::Data<AppState>,
    body: web::Json<KeyInput>,
) -> Result<HttpResponse, ApiError> {
    let (row, secret) = manage::create(&state.store, &body).await?;
    state.keys.reload(&state.store).await?;
    state.cluster.announce(Announcement::Keys).await;
    log::info!("API key '{}' ({}) created", row.name, row.role);
    let mut out = manage::public(&row);
    out["secret"] = json!(secret);
    Ok(HttpResponse::Created().json(out))
}

pub async fn revoke(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    super::text::name("name", &name)?;
    if !state.store.revoke_key(&name).await? {
        return Err(ApiError::KeyNotFound(name));
    }
    // Takes effect at once here, and at once on the other instances it reaches.
    state.keys.reload(&state.store).await?;
    state.cluster.announce(Announcement::Keys).await;
    log::info!("API key '{name}' revoked");
    Ok(HttpResponse::NoContent().finish())
}
