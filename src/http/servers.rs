//! The registry API: `/api/v1/servers`.

use actix_web::http::header;
use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::extract::{caller_of, parse_name};
use crate::error::{ApiError, ErrorBody};
use crate::registry::{
    CachePolicy, ServerInput, ServerSpec, Source, Transport, TransportKind, ValidationError,
};
use crate::store::StoreError;
use crate::store::servers::StoredServer;

#[derive(Serialize, ToSchema)]
pub struct ServerList {
    /// By name.
    #[schema(value_type = Vec<ServerView>)]
    pub servers: Vec<Value>,
}

/// A server as the API shows it. [`view`] builds it as JSON from three parts (the
/// declaration with secrets redacted, the live snapshot, and [`ServerMeta`]); this type
/// describes that JSON for the OpenAPI document, and the test
/// `server_view_describes_what_view_writes` holds the two to the same field names.
#[derive(ToSchema)]
#[allow(dead_code)] // Never built: it describes the JSON that `view` builds.
pub struct ServerView {
    name: String,
    #[schema(value_type = TransportKind)]
    transport: String,
    enabled: bool,
    probe_interval: String,
    probe_timeout: Option<String>,
    timeout: String,
    #[schema(value_type = CachePolicy)]
    cache: String,
    cache_ttl: Option<String>,
    invalidate_on_write: bool,
    tool_prefix: Option<String>,
    tools: BTreeMap<String, ToolOverrideView>,
    /// stdio only.
    command: Option<String>,
    /// stdio only.
    args: Option<Vec<String>>,
    /// stdio only; every value `<redacted>`.
    env: Option<BTreeMap<String, String>>,
    /// stdio only.
    cwd: Option<String>,
    /// streamable_http and sse only; a password in it is `<redacted>`.
    url: Option<String>,
    /// streamable_http and sse only; every value `<redacted>`.
    headers: Option<BTreeMap<String, String>>,
    #[schema(value_type = crate::upstream::UpstreamStatus)]
    status: String,
    #[schema(value_type = crate::upstream::CircuitState)]
    circuit: String,
    tool_count: u64,
    last_probe_at: Option<DateTime<Utc>>,
    last_probe_ok: Option<bool>,
    latency_ms: Option<f64>,
    restart_count: u64,
    last_error: Option<String>,
    pid: Option<u32>,
    connected_since: Option<DateTime<Utc>>,
    server_info: Option<Value>,
    next_restart_at: Option<DateTime<Utc>>,
    /// This instance's name.
    instance: String,
    /// Each other instance's view of the server.
    peers: Vec<Value>,
    #[schema(value_type = Source)]
    source: String,
    /// Grows by one with each change; the `ETag`.
    revision: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(ToSchema)]
#[allow(dead_code)] // Describes `ServerSpec::to_public_json`'s `tools` values.
pub struct ToolOverrideView {
    #[schema(value_type = Option<CachePolicy>)]
    cache: Option<String>,
    cache_ttl: Option<String>,
    invalidates: Option<Vec<String>>,
    warm: Option<Vec<Value>>,
}

/// Where a server came from, and how the other instances see it.
#[derive(Serialize)]
pub struct ServerMeta {
    pub instance: String,
    pub peers: Vec<Value>,
    pub source: Source,
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The registry entry with its live state from the status board.
pub fn view(state: &AppState, stored: &StoredServer) -> Value {
    let mut out = stored.spec.to_public_json();
    let snapshot = state.board.get(&stored.spec.name).unwrap_or_default();
    let peers = match state.peers.of(stored.spec.name.as_str()) {
        Value::Array(peers) => peers,
        _ => Vec::new(),
    };
    let meta = ServerMeta {
        instance: state.settings.instance.clone(),
        peers,
        source: stored.source,
        revision: stored.revision,
        created_at: stored.created_at.and_utc(),
        updated_at: stored.updated_at.and_utc(),
    };
    if let (Some(fields), Value::Object(live), Ok(Value::Object(meta))) = (
        out.as_object_mut(),
        snapshot.to_json(),
        serde_json::to_value(meta),
    ) {
        fields.extend(live);
        fields.extend(meta);
    }
    out
}

fn etag(stored: &StoredServer) -> (header::HeaderName, String) {
    (header::ETAG, format!("\"{}\"", stored.revision))
}

/// Refuses a spec whose `/mcp` names would collide with another server's: the same
/// prefix, or (for a server whose tools are known) the same exposed tool name.
fn check_names(state: &AppState, spec: &ServerSpec) -> Result<(), ApiError> {
    // Read in place: a copy of every upstream's entry per registration cost as much as
    // the check itself at 1,000 upstreams.
    let found = state.board.with_all(|board| {
        let tools = board
            .get(&spec.name)
            .map(|s| s.tools.clone())
            .unwrap_or_default();
        crate::mcp::catalogue::collisions_with(
            board,
            &spec.name,
            spec.tool_prefix.as_deref(),
            &tools,
        )
    });
    if found.is_empty() {
        Ok(())
    } else {
        Err(ApiError::NameCollision(found.join("; ")))
    }
}

fn check_stdio_allowed(state: &AppState, spec: &ServerSpec) -> Result<(), ApiError> {
    if matches!(spec.transport, Transport::Stdio { .. }) && !state.settings.allow_stdio_via_api {
        return Err(ApiError::StdioNotAllowed);
    }
    Ok(())
}

/// The revision named by `If-Match` (`"3"` or `3`), if any.
fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::InvalidField(ValidationError::new(
                "If-Match",
                "must be a revision as given in ETag, e.g. \"3\"",
            ))
        })
}

#[utoipa::path(get, path = "/api/v1/servers", operation_id = "list_servers", tag = "servers",
    responses((status = 200, description = "Every server the caller may see", body = ServerList)))]
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = caller_of(&req)?;
    let servers = state.store.list_servers().await?;
    let items: Vec<Value> = servers
        .iter()
        .filter(|s| caller.may_see_server(s.spec.name.as_str()))
        .map(|s| view(&state, s))
        .collect();
    Ok(HttpResponse::Ok().json(ServerList { servers: items }))
}

#[utoipa::path(get, path = "/api/v1/servers/{name}", operation_id = "get_server", tag = "servers",
    params(("name" = String, Path, description = "The server's name")),
    responses(
        (status = 200, description = "The server", body = ServerView,
            headers(("ETag" = String, description = "The revision, quoted"))),
        (status = 404, description = "`server-not-found`", body = ErrorBody),
    ))]
pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&path)?;
    // A server outside the key's allow-list does not exist for it.
    let stored = state
        .store
        .get_server(&name)
        .await?
        .filter(|_| caller_of(&req).is_ok_and(|c| c.may_see_server(name.as_str())))
        .ok_or_else(|| ApiError::ServerNotFound(name.to_string()))?;
    Ok(HttpResponse::Ok()
        .insert_header(etag(&stored))
        .json(view(&state, &stored)))
}

#[utoipa::path(post, path = "/api/v1/servers", operation_id = "create_server", tag = "servers",
    request_body = ServerInput,
    responses(
        (status = 201, description = "Registered", body = ServerView, headers(
            ("Location" = String, description = "The server's URL"),
            ("ETag" = String, description = "The revision, quoted"))),
        (status = 403, description = "`stdio-not-allowed`", body = ErrorBody),
        (status = 409, description = "`server-exists`, `tool-name-collision`", body = ErrorBody),
    ))]
pub async fn create(
    state: web::Data<AppState>,
    body: web::Json<ServerInput>,
) -> Result<HttpResponse, ApiError> {
    let spec = body
        .into_inner()
        .validate()
        .map_err(ApiError::InvalidField)?;
    check_stdio_allowed(&state, &spec)?;
    check_names(&state, &spec)?;
    let stored = match state.store.insert_server(&spec, Source::Api).await {
        Err(StoreError::Conflict) => return Err(ApiError::ServerExists(spec.name.to_string())),
        other => other?,
    };
    log::info!("server '{}' registered", spec.name);
    state.reconcile(&spec.name).await;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/servers/{}", spec.name)))
        .insert_header(etag(&stored))
        .json(view(&state, &stored)))
}

#[utoipa::path(put, path = "/api/v1/servers/{name}", operation_id = "update_server", tag = "servers",
    params(
        ("name" = String, Path, description = "The server's name"),
        ("If-Match" = Option<String>, Header, description = "Replace only this revision, as given in `ETag`"),
    ),
    request_body = ServerInput,
    responses(
        (status = 200, description = "Replaced", body = ServerView,
            headers(("ETag" = String, description = "The new revision, quoted"))),
        (status = 403, description = "`stdio-not-allowed`", body = ErrorBody),
        (status = 404, description = "`server-not-found`", body = ErrorBody),
        (status = 409, description = "`managed-by-config`, `tool-name-collision`", body = ErrorBody),
        (status = 412, description = "`revision-mismatch`", body = ErrorBody),
    ))]
pub async fn update(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Json<ServerInput>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&path)?;
    let mut input = body.into_inner();
    match &input.name {
        Some(given) if given != name.as_str() => {
            return Err(ApiError::InvalidField(ValidationError::new(
                "name",
                format!("'{given}' differs from the path; a server cannot be renamed"),
            )));
        }
        _ => input.name = Some(name.to_string()),
    }
    let mut spec = input.validate().map_err(ApiError::InvalidField)?;
    check_stdio_allowed(&state, &spec)?;
    check_names(&state, &spec)?;
    let expected = if_match(&req)?;
    let current = state
        .store
        .get_server(&name)
        .await?
        .ok_or_else(|| ApiError::ServerNotFound(name.to_string()))?;
    if current.source == Source::Config {
        return Err(ApiError::ManagedByConfig(name.to_string()));
    }
    let restored = spec.restore_redacted(&current.spec)?;
    // Restored secrets came from `current`, so the write must replace exactly that
    // revision; otherwise, without If-Match, the client takes whatever revision it lands on.
    let guard = expected.or(restored.then_some(current.revision));
    let stored = match state.store.update_server(&spec, Source::Api, guard).await {
        Err(StoreError::NotFound) => return Err(ApiError::ServerNotFound(name.to_string())),
        Err(StoreError::RevisionMismatch { current: now }) => {
            return Err(ApiError::RevisionMismatch {
                expected: guard.unwrap_or(current.revision),
                current: now,
            });
        }
        other => other?,
    };
    log::info!("server '{name}' updated to revision {}", stored.revision);
    state.reconcile(&name).await;
    Ok(HttpResponse::Ok()
        .insert_header(etag(&stored))
        .json(view(&state, &stored)))
}

#[utoipa::path(delete, path = "/api/v1/servers/{name}", operation_id = "delete_server", tag = "servers",
    params(("name" = String, Path, description = "The server's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "`server-not-found`", body = ErrorBody),
        (status = 409, description = "`managed-by-config`", body = ErrorBody),
    ))]
pub async fn delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&path)?;
    if let Some(current) = state.store.get_server(&name).await?
        && current.source == Source::Config
    {
        return Err(ApiError::ManagedByConfig(name.to_string()));
    }
    if !state.store.delete_server(&name).await? {
        return Err(ApiError::ServerNotFound(name.to_string()));
    }
    log::info!("server '{name}' deleted");
    state.reconcile(&name).await;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::registry::ServerInput;
    use crate::upstream::Snapshot;

    fn keys(value: &Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    /// `ServerView` is written by hand beside `view`, which builds JSON: the two name the
    /// same fields, for every transport.
    #[test]
    fn server_view_describes_what_view_writes() {
        let schema = serde_json::to_value(<ServerView as utoipa::PartialSchema>::schema()).unwrap();
        let described = keys(&schema["properties"]);
        let meta = serde_json::to_value(ServerMeta {
            instance: "here".into(),
            peers: Vec::new(),
            source: Source::Api,
            revision: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        })
        .unwrap();
        let mut written = keys(&Snapshot::default().to_json());
        written.extend(keys(&meta));
        for input in [
            json!({"name": "a", "transport": "stdio", "command": "true"}),
            json!({"name": "b", "transport": "streamable_http", "url": "http://127.0.0.1:1/mcp"}),
            json!({"name": "c", "transport": "sse", "url": "http://127.0.0.1:1/sse"}),
        ] {
            let input: ServerInput = serde_json::from_value(input).unwrap();
            let spec = input.validate().unwrap();
            written.extend(keys(&spec.to_public_json()));
        }
        assert_eq!(written, described);
        let tools =
            serde_json::to_value(<ToolOverrideView as utoipa::PartialSchema>::schema()).unwrap();
        let tools = keys(&tools["properties"]);
        let spec: ServerInput = serde_json::from_value(json!({
            "name": "d", "transport": "stdio", "command": "true",
            "tools": {"t": {"cache": "always"}},
        }))
        .unwrap();
        let public = spec.validate().unwrap().to_public_json();
        assert_eq!(keys(&public["tools"]["t"]), tools);
    }
}
