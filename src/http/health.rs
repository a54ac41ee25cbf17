//! Liveness and readiness.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::store::schema::servers;
use crate::store::{Store, StoreError};
use crate::with_conn;

#[derive(Serialize, ToSchema)]
pub struct Alive {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    pub checks: ReadyChecks,
}

#[derive(Serialize, ToSchema)]
pub struct ReadyChecks {
    /// `ok`, `unavailable` or `timeout`.
    pub store: &'static str,
    /// `sqlite` or `postgres`.
    pub backend: String,
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "probes",
    responses((status = 200, description = "The process serves HTTP", body = Alive)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Alive { status: "ok" })
}

/// Reads one row id of the registry. A bare `SELECT 1` answers even when the schema is
/// gone or unreadable; this fails when the registry cannot be read.
async fn store_answers(store: &Store) -> Result<(), StoreError> {
    use diesel::QueryDsl;
    use diesel_async::RunQueryDsl;
    with_conn!(store, |conn| {
        servers::table
            .select(servers::id)
            .limit(1)
            .load::<i64>(conn)
            .await?;
        Ok(())
    })
}

/// Ready to serve: the store answers a query on the registry within a second.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "probes", responses(
    (status = 200, description = "The store answers", body = Readiness),
    (status = 503, description = "The store does not answer; `checks.store` says why", body = Readiness),
))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store =
        match tokio::time::timeout(Duration::from_secs(1), store_answers(&state.store)).await {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                log::warn!("readiness: store check failed: {e}");
                "unavailable"
            }
            Err(_) => "timeout",
        };
    let ready = store == "ok";
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks: ReadyChecks {
            store,
            backend: state.store.backend_name().to_string(),
        },
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
