//! `GET /api/v1/mcp`: what the MCP endpoint serves right now, as far as the caller's
//! allow-list may see it.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::AppState;
use super::tools::caller_of;
use crate::error::ApiError;

pub async fn status(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_of(&req)?;
    // Every session for an admin (or everyone, open); a narrower key sees its own.
    let sessions = match (&caller.key, caller.role) {
        (Some(key), role) if role < crate::auth::Role::Admin => state.mcp.sessions_of(key).await,
        _ => state.mcp.session_count().await,
    };
    let catalogue = state.mcp.catalogue();
    let withheld: Vec<_> = catalogue
        .withheld
        .iter()
        .filter(|w| caller.may_call(w.server.as_str(), &w.tool))
        .map(|w| json!({"server": w.server, "tool": w.tool, "name": w.exposed, "reason": w.reason}))
        .collect();
    let sees = |server: &crate::registry::ServerName| caller.may_see_server(server.as_str());
    let tools = catalogue
        .tools
        .iter()
        .filter(|t| caller.may_call(t.server.as_str(), &t.upstream_name))
        .count();
    let shadowed: Vec<_> = state
        .mcp
        .shadowed()
        .into_iter()
        .filter(|s| sees(&s.server) && sees(&s.kept_by))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "shadowed": shadowed,
        "sessions": sessions,
        "tools": tools,
        "live_servers": catalogue.live.iter().filter(|s| sees(s)).collect::<Vec<_>>(),
        "withheld": withheld,
        "resource_servers": catalogue.resources.iter().map(|(s, _)| s).filter(|s| sees(s)).collect::<Vec<_>>(),
        "prompt_servers": catalogue.prompts.iter().map(|(s, _)| s).filter(|s| sees(s)).collect::<Vec<_>>(),
    })))
}
