//! The audit log: `GET /api/v1/invocations`.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::error::ApiError;
use crate::registry::ValidationError;
use crate::store::invocations::InvocationFilter;

#[derive(Deserialize)]
pub struct Query {
    server: Option<String>,
    tool: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

/// Newest first; pass `next_before` back as `before` for the next page.
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<Query>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    for (field, value) in [("server", &query.server), ("tool", &query.tool)] {
        if let Some(value) = value {
            super::text::name(field, value)?;
        }
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::InvalidField(ValidationError::new(
            "limit",
            "must be between 1 and 500",
        )));
    }
    let rows = state
        .store
        .list_invocations(&InvocationFilter {
            server: query.server,
            tool: query.tool,
            before: query.before,
            limit,
        })
        .await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let items: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "server": r.server,
                "tool": r.tool,
                "caller": r.caller,
                "arguments_hash": r.arguments_hash,
                "cached": r.cached,
                "outcome": r.outcome,
                "status": r.status,
                "duration_ms": r.duration_us as f64 / 1000.0,
                "timestamp": r.created_at.and_utc(),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"invocations": items, "next_before": next_before})))
}
