//! `GET /api/v1/mcp`: what the MCP endpoint serves right now, as far as the caller's
//! allow-list may see it.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::extract::caller_of;
use crate::error::ApiError;

#[derive(Serialize, ToSchema)]
pub struct McpStatus {
    /// Resources, templates and prompts two servers offer: the later one's is left out.
    pub shadowed: Vec<Shadowed>,
    /// Open MCP sessions: every one for an admin, else the caller's key's.
    pub sessions: usize,
    /// Tools offered at `/mcp` that the caller may call.
    pub tools: usize,
    pub live_servers: Vec<String>,
    pub withheld: Vec<WithheldTool>,
    /// Servers whose resources `/mcp` passes through.
    pub resource_servers: Vec<String>,
    /// Servers whose prompts `/mcp` passes through.
    pub prompt_servers: Vec<String>,
}

/// A name one server's offer loses to another's.
#[derive(Serialize, ToSchema)]
pub struct Shadowed {
    /// `resource`, `resource_template` or `prompt`.
    pub kind: &'static str,
    /// The URI, the template, or the exposed prompt name.
    pub name: String,
    pub server: String,
    /// The server that keeps it.
    pub kept_by: String,
}

/// A tool `/mcp` does not offer, and why.
#[derive(Serialize, ToSchema)]
pub struct WithheldTool {
    pub server: String,
    pub tool: String,
    /// The name it would have had.
    pub name: Option<String>,
    pub reason: String,
}

#[utoipa::path(get, path = "/api/v1/mcp", operation_id = "mcp_status", tag = "mcp",
    responses((status = 200, description = "The MCP endpoint now", body = McpStatus)))]
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
    let withheld = catalogue
        .withheld
        .iter()
        .filter(|w| caller.may_call(w.server.as_str(), &w.tool))
        .map(|w| WithheldTool {
            server: w.server.to_string(),
            tool: w.tool.clone(),
            name: w.exposed.clone(),
            reason: w.reason.clone(),
        })
        .collect();
    let sees = |server: &crate::registry::ServerName| caller.may_see_server(server.as_str());
    let tools = catalogue
        .tools
        .iter()
        .filter(|t| caller.may_call(t.server.as_str(), &t.upstream_name))
        .count();
    let shadowed = state
        .mcp
        .shadowed()
        .into_iter()
        .filter(|s| sees(&s.server) && sees(&s.kept_by))
        .map(|s| Shadowed {
            kind: s.kind,
            name: s.name,
            server: s.server.to_string(),
            kept_by: s.kept_by.to_string(),
        })
        .collect();
    let names = |servers: &mut dyn Iterator<Item = &crate::registry::ServerName>| -> Vec<String> {
        servers.filter(|s| sees(s)).map(|s| s.to_string()).collect()
    };
    Ok(HttpResponse::Ok().json(McpStatus {
        shadowed,
        sessions,
        tools,
        live_servers: names(&mut catalogue.live.iter()),
        withheld,
        resource_servers: names(&mut catalogue.resources.iter().map(|(s, _)| s)),
        prompt_servers: names(&mut catalogue.prompts.iter().map(|(s, _)| s)),
    }))
}
