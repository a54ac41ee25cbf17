//! The audit log: `GET /api/v1/invocations`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::registry::ValidationError;
use crate::store::invocations::InvocationFilter;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Query {
    /// Only calls of this server.
    server: Option<String>,
    /// Only calls of this tool.
    tool: Option<String>,
    /// Rows older than this id: the `next_before` of the previous page.
    before: Option<i64>,
    /// 1 to 500; default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct InvocationPage {
    /// Newest first.
    pub invocations: Vec<Invocation>,
    /// Pass back as `before` for the next page; null on the last.
    pub next_before: Option<i64>,
}

/// One audited call, over HTTP or `/mcp`.
#[derive(Serialize, ToSchema)]
pub struct Invocation {
    pub id: i64,
    pub server: String,
    pub tool: String,
    /// The key's name; null when the gateway ran open.
    pub caller: Option<String>,
    pub arguments_hash: String,
    pub cached: bool,
    /// `ok`, `tool_error`, or the error code.
    pub outcome: String,
    /// The HTTP status answered.
    pub status: i64,
    pub duration_ms: f64,
    pub timestamp: DateTime<Utc>,
}

/// Newest first; pass `next_before` back as `before` for the next page.
#[utoipa::path(get, path = "/api/v1/invocations", operation_id = "list_invocations", tag = "audit", params(Query),
    responses(
        (status = 200, description = "A page of the audit log", body = InvocationPage),
        (status = 400, description = "`invalid-field`", body = ErrorBody),
    ))]
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
    let invocations: Vec<Invocation> = rows
        .into_iter()
        .map(|r| Invocation {
            id: r.id,
            server: r.server,
            tool: r.tool,
            caller: r.caller,
            arguments_hash: r.arguments_hash,
            cached: r.cached,
            outcome: r.outcome,
            status: r.status,
            duration_ms: r.duration_us as f64 / 1000.0,
            timestamp: r.created_at.and_utc(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(InvocationPage {
        invocations,
        next_before,
    }))
}
