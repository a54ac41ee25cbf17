//! `GET /api/v1/mcp`: what the MCP endpoint serves right now.

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use super::AppState;

#[get("/mcp")]
pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    let catalogue = state.mcp.catalogue();
    let withheld: Vec<_> = catalogue
        .withheld
        .iter()
        .map(|w| json!({"server": w.server, "tool": w.tool, "name": w.exposed, "reason": w.reason}))
        .collect();
    HttpResponse::Ok().json(json!({
        "sessions": state.mcp.session_count().await,
        "tools": catalogue.tools.len(),
        "live_servers": catalogue.live,
        "withheld": withheld,
        "resource_servers": catalogue.resources.iter().map(|(s, _)| s).collect::<Vec<_>>(),
        "prompt_servers": catalogue.prompts.iter().map(|(s, _)| s).collect::<Vec<_>>(),
    }))
}
