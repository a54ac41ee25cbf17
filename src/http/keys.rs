//! `/api/v1/keys` (admin): create, list and revoke API keys.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::auth::manage::{self, KeyInput, KeyView};
use crate::cluster::Announcement;
use crate::error::{ApiError, ErrorBody};

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    /// Active and revoked keys, without secrets.
    pub keys: Vec<KeyView>,
}

/// A key just made: the only answer that shows its secret.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// `obk_...`: send as `Authorization: Bearer obk_...`. Shown once; only its SHA-256
    /// is stored.
    pub secret: String,
}

#[utoipa::path(get, path = "/api/v1/keys", operation_id = "list_keys", tag = "keys",
    responses((status = 200, description = "Every key, never a secret", body = KeyList)))]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let keys: Vec<_> = state
        .store
        .list_keys()
        .await?
        .iter()
        .map(manage::public)
        .collect();
    Ok(HttpResponse::Ok().json(KeyList { keys }))
}

/// The answer is the only time the secret is shown.
#[utoipa::path(post, path = "/api/v1/keys", operation_id = "create_key", tag = "keys", request_body = KeyInput,
    responses(
        (status = 201, description = "Created", body = CreatedKey),
        (status = 409, description = "`key-exists`", body = ErrorBody),
    ))]
pub async fn create(
    state: web::Data<AppState>,
    body: web::Json<KeyInput>,
) -> Result<HttpResponse, ApiError> {
    let (row, secret) = manage::create(&state.store, &body).await?;
    state.keys.reload(&state.store).await?;
    state.cluster.announce(Announcement::Keys).await;
    log::info!("API key '{}' ({}) created", row.name, row.role);
    Ok(HttpResponse::Created().json(CreatedKey {
        key: manage::public(&row),
        secret,
    }))
}

#[utoipa::path(delete, path = "/api/v1/keys/{name}", operation_id = "revoke_key", tag = "keys",
    params(("name" = String, Path, description = "The key's name")),
    responses(
        (status = 204, description = "Revoked; it stops working at once"),
        (status = 404, description = "`key-not-found`", body = ErrorBody),
    ))]
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

/// A key refused by `auth::manage`, as the API answers it.
impl From<crate::auth::manage::KeyError> for ApiError {
    fn from(err: crate::auth::manage::KeyError) -> Self {
        use crate::auth::manage::KeyError;
        match err {
            KeyError::Invalid(v) => Self::InvalidField(v),
            KeyError::Exists(name) => Self::KeyExists(name),
            KeyError::Store(e) => e.into(),
        }
    }
}
