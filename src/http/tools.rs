//! The tool catalogue and tool invocation over plain HTTP.

use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use rmcp::model::JsonObject;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::servers::parse_name;
use crate::auth::{Caller, Identity};
use crate::error::ApiError;
use crate::gateway::CacheMode;
use crate::registry::ValidationError;

/// Who is asking: the auth guard put it there (everyone, when the gateway runs open).
pub fn caller_of(req: &HttpRequest) -> Result<Caller, ApiError> {
    Identity::caller(&req.extensions())
        .ok_or_else(|| ApiError::Unauthorized("send an API key".into()))
}

/// Every connected upstream's tools that the caller may use.
pub async fn catalogue(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_of(&req)?;
    let default_ttl = state.settings.cache.default_ttl;
    let catalogue = state.mcp.catalogue();
    let exposed: std::collections::HashMap<_, _> = catalogue
        .tools
        .iter()
        .map(|t| ((&t.server, t.upstream_name.as_str()), &*t.tool.name))
        .collect();
    let withheld: std::collections::HashMap<_, _> = catalogue
        .withheld
        .iter()
        .map(|w| ((&w.server, w.tool.as_str()), w.reason.as_str()))
        .collect();
    let mut tools = Vec::new();
    for (server, snapshot) in state.board.all() {
        for tool in snapshot.tools.iter() {
            if !caller.may_call(server.as_str(), &tool.name) {
                continue;
            }
            let hints = crate::registry::ToolHints::of(tool);
            let (ttl, why, invalidates, invalidated_by) = match snapshot.spec.as_ref() {
                Some(spec) => {
                    let (ttl, why) = spec.cache_decision(&tool.name, hints, default_ttl);
                    let invalidates = match spec.invalidated_by(&tool.name, hints) {
                        None => json!([]),
                        Some(None) => json!(["*"]),
                        Some(Some(globs)) => json!(globs),
                    };
                    // Which of the server's tools, when called, drop this one's entries.
                    let writers: Vec<&str> = snapshot
                        .tools
                        .iter()
                        .filter(|w| {
                            spec.write_drops(&w.name, crate::registry::ToolHints::of(w), &tool.name)
                        })
                        .map(|w| &*w.name)
                        .collect();
                    (ttl, Some(why.as_str()), invalidates, json!(writers))
                }
                None => (None, None, json!([]), json!([])),
            };
            tools.push(json!({
                "server": server,
                "tool": tool.name,
                "description": tool.description,
                "inputSchema": tool.input_schema,
                "annotations": tool.annotations,
                "cache": {
                    "cached": ttl.is_some(),
                    "why": why,
                    "ttl": ttl.map(crate::duration::format),
                    // What a call of this tool drops from the cache, as globs.
                    "invalidates": invalidates,
                    "invalidated_by": invalidated_by,
                },
                "mcp": {
                    "name": exposed.get(&(&server, &*tool.name)),
                    "withheld": withheld.get(&(&server, &*tool.name)),
                },
            }));
        }
    }
    Ok(HttpResponse::Ok().json(json!({"tools": tools})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallBody {
    #[serde(default)]
    arguments: Option<JsonObject>,
}

#[derive(Deserialize)]
pub struct CallQuery {
    cache: Option<String>,
}

/// `?cache=refresh` or `?cache=bypass`, else `Cache-Control: no-cache` (or `no-store`)
/// bypasses; otherwise the cache is used.
fn cache_mode(req: &HttpRequest, query: &CallQuery) -> Result<CacheMode, ApiError> {
    match query.cache.as_deref() {
        Some("refresh") => return Ok(CacheMode::Refresh),
        Some("bypass") => return Ok(CacheMode::Bypass),
        Some("use") | None => {}
        Some(other) => {
            return Err(ApiError::InvalidField(ValidationError::new(
                "cache",
                format!("'{other}' is not one of use, refresh, bypass"),
            )));
        }
    }
    let no_cache = req
        .headers()
        .get_all(header::CACHE_CONTROL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| matches!(d.trim(), "no-cache" | "no-store"));
    Ok(if no_cache {
        CacheMode::Bypass
    } else {
        CacheMode::Use
    })
}

pub async fn call(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<CallQuery>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let (name, tool) = path.into_inner();
    let name = parse_name(&name)?;
    super::text::name("tool", &tool)?;
    // serde reads a struct from an array too; a call body is an object or nothing.
    let body = body.into_inner();
    if !body.is_object() {
        return Err(ApiError::InvalidBody(
            "the body must be a JSON object: {\"arguments\": {...}}".into(),
        ));
    }
    let body: CallBody = serde_json::from_value(body)
        .map_err(|e| ApiError::InvalidBody(format!("invalid JSON body: {e}")))?;
    let mode = cache_mode(&req, &query)?;
    let caller = caller_of(&req)?;
    if !caller.may_call(name.as_str(), &tool) {
        return Err(ApiError::NotAllowed(caller.key.unwrap_or_default()));
    }
    let outcome = state
        .gateway
        .call(
            &name,
            &tool,
            body.arguments,
            mode,
            caller.key.as_deref(),
            None,
        )
        .await?;
    let mut answer = HttpResponse::Ok();
    answer.insert_header(("x-cache", if outcome.cached { "hit" } else { "miss" }));
    let mut body = json!({
        "server": name,
        "tool": tool,
        "cached": outcome.cached,
        "duration_ms": outcome.duration.as_secs_f64() * 1000.0,
        "result": &*outcome.result,
    });
    // How old a cached answer is: `Age` in whole seconds (RFC 9111), and when.
    if let Some(produced) = outcome.produced_at {
        let age = std::time::SystemTime::now()
            .duration_since(produced)
            .unwrap_or_default();
        answer.insert_header((header::AGE, age.as_secs().to_string()));
        body["cached_at"] = json!(chrono::DateTime::<chrono::Utc>::from(produced));
    }
    Ok(answer.json(body))
}
