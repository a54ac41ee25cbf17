//! Liveness and readiness.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;
use crate::store::schema::servers;
use crate::store::{Store, StoreError};
use crate::with_conn;

/// The process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
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
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store =
        match tokio::time::timeout(Duration::from_secs(1), store_answers(&state.store)).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => {
                log::warn!("readiness: store check failed: {e}");
                "unavailable".to_owned()
            }
            Err(_) => "timeout".to_owned(),
        };
    let ready = store == "ok";
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {"store": store, "backend": state.store.backend_name()},
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
