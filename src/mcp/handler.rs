//! The MCP server behind `/mcp`: rmcp's transport calls this handler, one instance per
//! session (and per request for the stateless 2026-07-28 revision). Tools come from the
//! aggregate [`Catalogue`] and are called through the same [`Gateway`] path as the HTTP
//! API; resources and prompts are passed through to the upstreams that offer them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ResultType,
    ServerCapabilities, ServerConfig, SubscriptionFilter,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::catalogue::Catalogue;
use super::names;
use crate::error::ApiError;
use crate::gateway::{CacheMode, Gateway};
use crate::registry::ServerName;
use crate::upstream::{CallError, Forward, Forwarded};

/// What every session's handler shares.
pub struct Shared {
    pub gateway: Gateway,
    pub catalogue: watch::Receiver<Arc<Catalogue>>,
    /// Tools per `tools/list` page.
    pub page_size: usize,
    /// Where the last listings found each resource URI and each exposed prompt name, so
    /// that a read or get goes to the right upstream.
    routes: Mutex<Routes>,
}

#[derive(Default)]
struct Routes {
    resources: HashMap<String, ServerName>,
    /// URI template prefixes (the text before the first `{`) by server.
    templates: Vec<(String, ServerName)>,
    prompts: HashMap<String, (ServerName, String)>,
}

impl Shared {
    pub fn new(
        gateway: Gateway,
        catalogue: watch::Receiver<Arc<Catalogue>>,
        page_size: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            gateway,
            catalogue,
            page_size: page_size.max(1),
            routes: Mutex::default(),
        })
    }
}

/// One session's handler. Dropped when rmcp ends the session, which stops its
/// notification task.
pub struct McpHandler {
    shared: Arc<Shared>,
    closed: CancellationToken,
    _guard: DropGuard,
}

impl McpHandler {
    pub fn new(shared: Arc<Shared>) -> Self {
        let closed = CancellationToken::new();
        Self {
            shared,
            _guard: closed.clone().drop_guard(),
            closed,
        }
    }

    fn catalogue(&self) -> Arc<Catalogue> {
        self.shared.catalogue.borrow().clone()
    }
}

/// The versions this endpoint speaks: the three handshake revisions and 2026-07-28.
const VERSIONS: &[ProtocolVersion] = &[
    ProtocolVersion::V_2025_03_26,
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_11_25,
    ProtocolVersion::V_2026_07_28,
];

fn bad_cursor() -> ErrorData {
    ErrorData::invalid_params("invalid or expired cursor", None)
}

/// Page `n` starts at tool `n * page_size`; the cursor is that offset, opaque to clients.
fn page_start(cursor: Option<&str>, len: usize) -> Result<usize, ErrorData> {
    match cursor {
        None => Ok(0),
        Some(c) => c
            .strip_prefix("o")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n > 0 && n < len)
            .ok_or_else(bad_cursor),
    }
}

/// A failed call as the client sees it: a tool error (`isError`) whose text carries our
/// stable code, so an agent can read why; only an unknown tool is a protocol error.
fn call_failed(error: &ApiError) -> CallToolResponse {
    use actix_web::ResponseError;
    let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
        "{}: {error}",
        error.code()
    ))]);
    result.structured_content = Some(serde_json::json!({
        "error": {"code": error.code(), "status": error.status_code().as_u16(), "message": error.to_string()}
    }));
    result.into()
}

fn upstream_failed(error: CallError) -> ErrorData {
    match error {
        CallError::Upstream { code, message, .. } => ErrorData::new(ErrorCode(code), message, None),
        other => ErrorData::internal_error(other.to_string(), None),
    }
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new(
            "omni-bridge",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "omni-bridge: the tools of every healthy upstream MCP server, named server__tool.",
        )
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(VERSIONS)
    }

    /// A handshake-era session learns of catalogue changes on its GET stream.
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let mut changes = self.shared.catalogue.clone();
        changes.mark_unchanged();
        let closed = self.closed.clone();
        let peer = context.peer;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = closed.cancelled() => return,
                    changed = changes.changed() => {
                        if changed.is_err() || peer.notify_tool_list_changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.tools_list_changed = requested.tools_list_changed;
        Some(accepted)
    }

    /// The 2026-07-28 replacement of the GET stream.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.shared.catalogue.clone();
        changes.mark_unchanged();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                () = self.closed.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() || context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let catalogue = self.catalogue();
        let all = &catalogue.tools;
        let start = page_start(
            request.as_ref().and_then(|r| r.cursor.as_deref()),
            all.len(),
        )?;
        let end = (start + self.shared.page_size).min(all.len());
        Ok(ListToolsResult {
            tools: all[start..end].iter().map(|t| t.tool.clone()).collect(),
            next_cursor: (end < all.len()).then(|| format!("o{end}")),
            ..Default::default()
        })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let catalogue = self.catalogue();
        let Some(exposed) = catalogue.get(&request.name) else {
            let why = catalogue
                .withheld
                .iter()
                .find(|w| w.exposed.as_deref() == Some(&*request.name))
                .map(|w| format!(": {}", w.reason))
                .unwrap_or_default();
            return Err(ErrorData::invalid_params(
                format!("unknown tool '{}'{why}", request.name),
                None,
            ));
        };
        let outcome = self
            .shared
            .gateway
            .call(
                &exposed.server,
                &exposed.upstream_name,
                request.arguments,
                CacheMode::Use,
                None,
            )
            .await;
        match outcome {
            Ok(outcome) => {
                let mut result: CallToolResult = serde_json::from_value((*outcome.result).clone())
                    .map_err(|e| {
                        ErrorData::internal_error(format!("upstream result unreadable: {e}"), None)
                    })?;
                // An upstream on an older revision sends none; rmcp strips it again for
                // clients on those revisions, and 2026-07-28 clients require it.
                result.result_type.get_or_insert(ResultType::COMPLETE);
                Ok(result.into())
            }
            Err(ApiError::ToolNotFound { .. }) | Err(ApiError::ServerNotFound(_)) => Err(
                ErrorData::invalid_params(format!("unknown tool '{}'", request.name), None),
            ),
            Err(e) => Ok(call_failed(&e)),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let resources = self.refresh_resources().await;
        Ok(ListResourcesResult {
            resources,
            ..Default::default()
        })
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let catalogue = self.catalogue();
        let lists = join_all(
            catalogue
                .resources
                .iter()
                .map(|(server, prefix)| async move {
                    let got = self
                        .shared
                        .gateway
                        .forward(server, Forward::ListResourceTemplates)
                        .await;
                    (server, prefix, got)
                }),
        )
        .await;
        let mut templates = vec![];
        let mut routes = vec![];
        for (server, prefix, got) in lists {
            match got {
                Ok(Forwarded::ResourceTemplates(list)) => {
                    for mut t in list {
                        let stem = t.uri_template.split('{').next().unwrap_or_default();
                        routes.push((stem.to_owned(), server.clone()));
                        if let Ok(name) = names::expose(prefix.as_deref(), &t.name) {
                            t.name = name;
                        }
                        templates.push(t);
                    }
                }
                Ok(_) => {}
                Err(e) => log::warn!("[{server}] resources/templates/list failed: {e}"),
            }
        }
        self.shared.routes.lock().expect("routes lock").templates = routes;
        Ok(ListResourceTemplatesResult {
            resource_templates: templates,
            ..Default::default()
        })
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let mut server = self.resource_route(&request.uri);
        if server.is_none() {
            self.refresh_resources().await;
            server = self.resource_route(&request.uri);
        }
        let Some(server) = server else {
            return Err(ErrorData::new(
                ErrorCode::RESOURCE_NOT_FOUND,
                format!("no upstream offers resource '{}'", request.uri),
                Some(serde_json::json!({"uri": request.uri})),
            ));
        };
        match self
            .shared
            .gateway
            .forward(&server, Forward::ReadResource { uri: request.uri })
            .await
        {
            Ok(Forwarded::Read(mut result)) => {
                result.result_type.get_or_insert(ResultType::COMPLETE);
                Ok(result.into())
            }
            Ok(_) => Err(ErrorData::internal_error("unexpected answer", None)),
            Err(e) => Err(upstream_failed(e)),
        }
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let prompts = self.refresh_prompts().await;
        Ok(ListPromptsResult {
            prompts,
            ..Default::default()
        })
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let route = |shared: &Shared| {
            shared
                .routes
                .lock()
                .expect("routes lock")
                .prompts
                .get(&request.name)
                .cloned()
        };
        let mut found = route(&self.shared);
        if found.is_none() {
            self.refresh_prompts().await;
            found = route(&self.shared);
        }
        let Some((server, name)) = found else {
            return Err(ErrorData::invalid_params(
                format!("unknown prompt '{}'", request.name),
                None,
            ));
        };
        let forward = Forward::GetPrompt {
            name,
            arguments: request.arguments,
        };
        match self.shared.gateway.forward(&server, forward).await {
            Ok(Forwarded::Prompt(mut result)) => {
                result.result_type.get_or_insert(ResultType::COMPLETE);
                Ok(result.into())
            }
            Ok(_) => Err(ErrorData::internal_error("unexpected answer", None)),
            Err(e) => Err(upstream_failed(e)),
        }
    }
}

impl McpHandler {
    fn resource_route(&self, uri: &str) -> Option<ServerName> {
        let routes = self.shared.routes.lock().expect("routes lock");
        routes.resources.get(uri).cloned().or_else(|| {
            routes
                .templates
                .iter()
                .filter(|(stem, _)| !stem.is_empty() && uri.starts_with(stem.as_str()))
                .max_by_key(|(stem, _)| stem.len())
                .map(|(_, server)| server.clone())
        })
    }

    /// Lists every live upstream's resources (an upstream that fails is left out, not
    /// the whole list) and remembers which upstream holds each URI.
    async fn refresh_resources(&self) -> Vec<rmcp::model::Resource> {
        let catalogue = self.catalogue();
        let lists = join_all(
            catalogue
                .resources
                .iter()
                .map(|(server, prefix)| async move {
                    let got = self
                        .shared
                        .gateway
                        .forward(server, Forward::ListResources)
                        .await;
                    (server, prefix, got)
                }),
        )
        .await;
        let mut resources = vec![];
        let mut routes = HashMap::new();
        for (server, prefix, got) in lists {
            match got {
                Ok(Forwarded::Resources(list)) => {
                    for mut r in list {
                        // The first upstream to claim a URI keeps it; URIs are the
                        // upstreams' own, so a client can use what it already knows.
                        if routes.contains_key(&r.uri) {
                            log::warn!(
                                "[{server}] resource '{}' is also offered by another upstream; left out",
                                r.uri
                            );
                            continue;
                        }
                        routes.insert(r.uri.clone(), server.clone());
                        if let Ok(name) = names::expose(prefix.as_deref(), &r.name) {
                            r.name = name;
                        }
                        resources.push(r);
                    }
                }
                Ok(_) => {}
                Err(e) => log::warn!("[{server}] resources/list failed: {e}"),
            }
        }
        self.shared.routes.lock().expect("routes lock").resources = routes;
        resources
    }

    async fn refresh_prompts(&self) -> Vec<rmcp::model::Prompt> {
        let catalogue = self.catalogue();
        let lists = join_all(catalogue.prompts.iter().map(|(server, prefix)| async move {
            let got = self
                .shared
                .gateway
                .forward(server, Forward::ListPrompts)
                .await;
            (server, prefix, got)
        }))
        .await;
        let mut prompts = vec![];
        let mut routes = HashMap::new();
        for (server, prefix, got) in lists {
            match got {
                Ok(Forwarded::Prompts(list)) => {
                    for mut p in list {
                        let Ok(exposed) = names::expose(prefix.as_deref(), &p.name) else {
                            continue;
                        };
                        if routes.contains_key(&exposed) {
                            log::warn!("[{server}] prompt name '{exposed}' collides; left out");
                            continue;
                        }
                        routes.insert(exposed.clone(), (server.clone(), p.name.clone()));
                        p.name = exposed;
                        prompts.push(p);
                    }
                }
                Ok(_) => {}
                Err(e) => log::warn!("[{server}] prompts/list failed: {e}"),
            }
        }
        self.shared.routes.lock().expect("routes lock").prompts = routes;
        prompts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_offsets_inside_the_list() {
        assert_eq!(page_start(None, 0).unwrap(), 0);
        assert_eq!(page_start(Some("o3"), 5).unwrap(), 3);
        for bad in ["o5", "o0", "3", "ox", "", "o-1"] {
            assert_eq!(
                page_start(Some(bad), 5).unwrap_err().code,
                ErrorCode::INVALID_PARAMS,
                "{bad}"
            );
        }
    }
}
