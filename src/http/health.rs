//! Liveness and readiness.

use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use super::AppState;

/// The process is up and serving HTTP.
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready to serve: the store answers within a second.
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = match tokio::time::timeout(Duration::from_secs(1), state.store.ping()).await {
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
