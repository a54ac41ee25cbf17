//! The tool catalogue and tool invocation over plain HTTP.

use std::time::Instant;

use actix_web::{HttpResponse, get, post, web};
use rmcp::model::JsonObject;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::servers::parse_name;
use crate::error::ApiError;
use crate::upstream::CallTool;
use crate::upstream::supervisor::GetUpstream;

/// Every connected upstream's tools.
#[get("/tools")]
pub async fn catalogue(state: web::Data<AppState>) -> HttpResponse {
    let mut tools = Vec::new();
    for (server, snapshot) in state.board.all() {
        for tool in snapshot.tools.iter() {
            tools.push(json!({
                "server": server,
                "name": tool.name,
                "description": tool.description,
                "inputSchema": tool.input_schema,
                "annotations": tool.annotations,
            }));
        }
    }
    HttpResponse::Ok().json(json!({"tools": tools}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallBody {
    #[serde(default)]
    arguments: Option<JsonObject>,
}

#[post("/servers/{name}/tools/{tool}/call")]
pub async fn call(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<CallBody>,
) -> Result<HttpResponse, ApiError> {
    let (name, tool) = path.into_inner();
    let name = parse_name(&name)?;
    let Some(snapshot) = state.board.get(&name) else {
        return Err(ApiError::ServerNotFound(name.to_string()));
    };
    if snapshot.status.is_connected() && !snapshot.tools.iter().any(|t| t.name == tool) {
        return Err(ApiError::ToolNotFound {
            server: name.to_string(),
            tool,
        });
    }
    let upstream = state
        .supervisor
        .send(GetUpstream { name: name.clone() })
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::Call(crate::upstream::CallError::NotConnected {
                server: name.to_string(),
                status: snapshot.status.as_str(),
            })
        })?;
    let started = Instant::now();
    let result = upstream
        .send(CallTool {
            tool: tool.clone(),
            arguments: body.into_inner().arguments,
        })
        .await
        // The actor stopped with the call in flight: removed, reloaded or crashed.
        .map_err(|_| {
            ApiError::Call(crate::upstream::CallError::Gone {
                server: name.to_string(),
            })
        })?
        .map_err(ApiError::Call)?;
    Ok(HttpResponse::Ok().json(json!({
        "server": name,
        "tool": tool,
        "cached": false,
        "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
        "result": serde_json::to_value(&result).unwrap_or(Value::Null),
    })))
}
