//! The tool catalogue and tool invocation over plain HTTP.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use rmcp::model::JsonObject;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{caller_of, parse_name};
use crate::error::{ApiError, ErrorBody};
use crate::gateway::CacheMode;
use crate::registry::ValidationError;

#[derive(Serialize, ToSchema)]
pub struct Catalogue {
    pub tools: Vec<CatalogueTool>,
}

#[derive(Serialize, ToSchema)]
pub struct CatalogueTool {
    pub server: String,
    pub tool: String,
    pub description: Option<String>,
    /// The tool's JSON Schema for its arguments, as the upstream gave it.
    #[serde(rename = "inputSchema")]
    #[schema(value_type = Object)]
    pub input_schema: std::sync::Arc<JsonObject>,
    /// The upstream's MCP tool annotations (`readOnlyHint`, ...).
    #[schema(value_type = Option<Object>)]
    pub annotations: Option<rmcp::model::ToolAnnotations>,
    pub cache: ToolCache,
    pub mcp: McpName,
}

/// Whether and how long the tool's results are cached, and what its calls drop.
#[derive(Serialize, ToSchema)]
pub struct ToolCache {
    pub cached: bool,
    /// `server policy`, `tool override` or `annotations`; null for a server not running.
    pub why: Option<&'static str>,
    /// The TTL its entries get; null when not cached.
    pub ttl: Option<String>,
    /// What a call of it drops, as globs over the server's tool names; `["*"]`: every
    /// entry of the server.
    pub invalidates: Vec<String>,
    /// The server's tools whose calls drop this tool's entries.
    pub invalidated_by: Vec<String>,
}

/// The tool at `/mcp`.
#[derive(Serialize, ToSchema)]
pub struct McpName {
    /// The name `/mcp` offers it under, when offered.
    pub name: Option<String>,
    /// Why `/mcp` withholds it, when it does.
    pub withheld: Option<String>,
}

/// Every connected upstream's tools that the caller may use.
#[utoipa::path(get, path = "/api/v1/tools", operation_id = "list_tools", tag = "tools",
    responses((status = 200, description = "The tools the caller may use", body = Catalogue)))]
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
                        None => Vec::new(),
                        Some(None) => vec!["*".to_owned()],
                        Some(Some(globs)) => globs,
                    };
                    // Which of the server's tools, when called, drop this one's entries.
                    let writers: Vec<String> = snapshot
                        .tools
                        .iter()
                        .filter(|w| {
                            spec.write_drops(&w.name, crate::registry::ToolHints::of(w), &tool.name)
                        })
                        .map(|w| w.name.to_string())
                        .collect();
                    (ttl, Some(why.as_str()), invalidates, writers)
                }
                None => (None, None, Vec::new(), Vec::new()),
            };
            tools.push(CatalogueTool {
                server: server.to_string(),
                tool: tool.name.to_string(),
                description: tool.description.as_deref().map(str::to_owned),
                input_schema: tool.input_schema.clone(),
                annotations: tool.annotations.clone(),
                cache: ToolCache {
                    cached: ttl.is_some(),
                    why,
                    ttl: ttl.map(crate::duration::format),
                    invalidates,
                    invalidated_by,
                },
                mcp: McpName {
                    name: exposed.get(&(&server, &*tool.name)).map(|n| n.to_string()),
                    withheld: withheld.get(&(&server, &*tool.name)).map(|w| w.to_string()),
                },
            });
        }
    }
    Ok(HttpResponse::Ok().json(Catalogue { tools }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"arguments": {"text": "hello"}}))]
pub struct CallBody {
    /// The tool's arguments; checked against its `inputSchema` before any upstream call.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    arguments: Option<JsonObject>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallQuery {
    /// `use` (default), `refresh` (skip the lookup, store the fresh result) or `bypass`
    /// (skip the cache both ways).
    cache: Option<String>,
}

/// A call's answer. A tool's own `isError: true` is a result here, not an HTTP error.
#[derive(Serialize, ToSchema)]
pub struct CallAnswer {
    pub server: String,
    pub tool: String,
    pub cached: bool,
    pub duration_ms: f64,
    /// The MCP `CallToolResult`.
    #[schema(value_type = Object)]
    pub result: std::sync::Arc<Value>,
    /// When the upstream produced a cached result; only on hits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_at: Option<chrono::DateTime<chrono::Utc>>,
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

#[utoipa::path(post, path = "/api/v1/servers/{name}/tools/{tool}/call", operation_id = "call_tool", tag = "tools",
    params(
        ("name" = String, Path, description = "The server's name"),
        ("tool" = String, Path, description = "The upstream's tool name"),
        CallQuery,
        ("Cache-Control" = Option<String>, Header, description = "`no-cache` or `no-store` bypasses the cache"),
    ),
    request_body = CallBody,
    responses(
        (status = 200, description = "The tool's result", body = CallAnswer, headers(
            ("X-Cache" = String, description = "`hit` or `miss`"),
            ("Age" = Option<String>, description = "On hits: seconds since the upstream produced it"))),
        (status = 400, description = "`invalid-arguments` (with `field`), `invalid-body`, `invalid-field`", body = ErrorBody),
        (status = 403, description = "`not-allowed`: outside the key's allow-list", body = ErrorBody),
        (status = 404, description = "`server-not-found`, `tool-not-found`", body = ErrorBody),
        (status = 409, description = "`server-disabled`", body = ErrorBody),
        (status = 502, description = "`upstream-error`, `upstream-unreachable`, `upstream-result-too-large`", body = ErrorBody),
        (status = 503, description = "`upstream-unavailable`, `circuit-open`, `upstream-gone` (with `Retry-After`)", body = ErrorBody),
        (status = 504, description = "`upstream-timeout`", body = ErrorBody),
    ))]
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
    let mut body = CallAnswer {
        server: name.to_string(),
        tool,
        cached: outcome.cached,
        duration_ms: outcome.duration.as_secs_f64() * 1000.0,
        result: outcome.result.clone(),
        cached_at: None,
    };
    // How old a cached answer is: `Age` in whole seconds (RFC 9111), and when.
    if let Some(produced) = outcome.produced_at {
        let age = std::time::SystemTime::now()
            .duration_since(produced)
            .unwrap_or_default();
        answer.insert_header((header::AGE, age.as_secs().to_string()));
        body.cached_at = Some(chrono::DateTime::<chrono::Utc>::from(produced));
    }
    Ok(answer.json(body))
}
