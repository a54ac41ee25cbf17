//! The MCP server behind `/mcp`: rmcp's transport calls this handler, one instance per
//! session (and per request for the stateless 2026-07-28 revision). Tools come from the
//! aggregate [`Catalogue`] and are called through the same [`Gateway`] path as the HTTP
//! API; resources and prompts are passed through to the upstreams that offer them.

// Logging, sampling and elicitation are deprecated in 2026-07-28; the handshake-era
// clients this endpoint serves still use them, so the gateway relays them.
#![allow(deprecated)]

use std::sync::{Arc, Mutex, OnceLock};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    ContentBlock, ErrorCode, GetPromptRequestParams, GetPromptResponse, Implementation,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    LoggingLevel, PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams,
    ReadResourceResponse, Reference, ResultType, ServerCapabilities, ServerConfig,
    SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::model::{InitializeRequestParams, InitializeResult};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::catalogue::Catalogue;
use super::copies::{self, Copy};
use super::input;
use super::recipient::{RELAY_QUEUE, Recipient, linger};
use super::shared::Shared;
use super::tagged::SessionOf;
use crate::auth::Caller;
use crate::call_failure::CallFailure;
use crate::gateway::CacheMode;
use crate::registry::ServerName;
use crate::upstream::{CallError, Forward, Forwarded};
use crate::upstream::{Relay, RelayItem};

/// One session's handler. Dropped when rmcp ends the session, which stops its
/// notification task.
pub struct McpHandler {
    shared: Arc<Shared>,
    /// The least severe log level this session wants relayed (`logging/setLevel`).
    log_level: Arc<Mutex<Option<LoggingLevel>>>,
    /// This session's number among the clients of the upstreams (see `upstream::relay`).
    client: u64,
    /// The session's id, once known (at `notifications/initialized`, or at a restore).
    id: OnceLock<Arc<str>>,
    /// `(server, uri)` this session subscribed to, for its record.
    subscribed: Arc<Mutex<std::collections::BTreeSet<(String, String)>>>,
    closed: CancellationToken,
    _guard: DropGuard,
    /// Made by `mcp::fast` for one call of a session whose handler rmcp holds: dropping
    /// it ends nothing of the session's.
    borrowed: bool,
}

impl McpHandler {
    pub fn new(shared: Arc<Shared>) -> Self {
        let closed = CancellationToken::new();
        Self {
            shared,
            log_level: Arc::default(),
            client: crate::upstream::new_relay_client(),
            id: OnceLock::new(),
            subscribed: Arc::default(),
            _guard: closed.clone().drop_guard(),
            closed,
            borrowed: false,
        }
    }

    /// A handler for one call of the session `copy` is of, sharing its state.
    pub fn borrowed(shared: Arc<Shared>, id: Arc<str>, copy: &Copy) -> Self {
        let closed = CancellationToken::new();
        Self {
            shared,
            log_level: copy.level.clone(),
            client: copy.client,
            id: OnceLock::from(id),
            subscribed: copy.subscribed.clone(),
            _guard: closed.clone().drop_guard(),
            closed,
            borrowed: true,
        }
    }

    fn catalogue(&self) -> Arc<Catalogue> {
        self.shared.catalogue.borrow().clone()
    }

    /// Tells the session of each catalogue change until it ends.
    fn tell_of_changes(&self, peer: rmcp::Peer<RoleServer>) {
        let mut changes = self.shared.catalogue.clone();
        changes.mark_unchanged();
        let closed = self.closed.clone();
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

    /// The session's id is now known: `mcp::fast` may answer its calls, in a cluster other
    /// instances' notes reach this copy of it, and a restored copy takes up the session's
    /// record.
    async fn adopt(&self, id: Arc<str>, peer: &rmcp::Peer<RoleServer>) {
        if self.id.set(id.clone()).is_err() {
            return;
        }
        let copy = Copy {
            client: self.client,
            peer: peer.clone(),
            level: self.log_level.clone(),
            subscribed: self.subscribed.clone(),
            kept: Arc::new(Mutex::new(std::time::Instant::now())),
        };
        self.shared.copies.insert(id.clone(), copy);
        let Some(records) = &self.shared.records else {
            return;
        };
        if !records.take_restored(&id) {
            return;
        }
        let Some(restored) = records.current(&id).await else {
            return;
        };
        *self.log_level.lock().expect("level lock") =
            restored.log_level.as_deref().and_then(copies::parse_level);
        for (server, uri) in restored.subscriptions {
            let Ok(name) = ServerName::parse(&server) else {
                continue;
            };
            self.subscribed
                .lock()
                .expect("subscribed")
                .insert((server, uri.clone()));
            if let Err(e) = self.shared.subscribe(&name, &uri, self.client, peer).await {
                log::warn!("MCP session {id}'s subscription to {uri} not taken up here: {e}");
            }
        }
    }
}

impl Drop for McpHandler {
    /// The session ended: its subscriptions go, and an upstream left with no subscriber
    /// for a URI is told so (best effort: an upstream that is gone has forgotten it too).
    fn drop(&mut self) {
        if self.borrowed {
            return;
        }
        if let Some(id) = self.id.get() {
            self.shared.copies.remove(id);
        }
        let emptied = self.shared.subscriptions.forget(self.client);
        if emptied.is_empty() {
            return;
        }
        let gateway = self.shared.gateway.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for (server, uri) in emptied {
                    let _ = gateway.forward(&server, Forward::Unsubscribe { uri }).await;
                }
            });
        }
    }
}

/// The versions this endpoint speaks: the three handshake revisions and 2026-07-28.
pub(super) const VERSIONS: &[ProtocolVersion] = &[
    ProtocolVersion::V_2025_03_26,
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_11_25,
    ProtocolVersion::V_2026_07_28,
];

/// The caller of this request, as the auth guard found it. None only if the guard did
/// not run, which the routes do not allow; such a request may see and call nothing.
fn caller_of(context: &RequestContext<RoleServer>) -> Option<Caller> {
    super::request::caller_of(&context.extensions)
}

fn may_call(caller: Option<&Caller>, server: &ServerName, tool: &str) -> bool {
    caller.is_some_and(|c| c.may_call(server.as_str(), tool))
}

fn may_see(caller: Option<&Caller>, server: &ServerName) -> bool {
    caller.is_some_and(|c| c.may_see_server(server.as_str()))
}

/// The items of the servers the caller may see.
fn visible<T>(caller: Option<&Caller>, items: Vec<(ServerName, T)>) -> Vec<T> {
    items
        .into_iter()
        .filter(|(server, _)| may_see(caller, server))
        .map(|(_, item)| item)
        .collect()
}

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
fn call_failed(error: &CallFailure) -> CallToolResponse {
    let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
        "{}: {error}",
        error.code()
    ))]);
    result.structured_content = Some(serde_json::json!({
        "error": {"code": error.code(), "status": error.status(), "message": error.to_string()}
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
                .enable_resources_subscribe()
                .enable_prompts()
                .enable_logging()
                .enable_completions()
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

    /// A handshake-era session learns of catalogue changes on its GET stream. In a
    /// cluster the session's `notifications/initialized` may go to another instance than
    /// this copy's `initialize` (a fresh one, or the replay of a restore), so it all
    /// starts here; a restored copy takes up the session's record before its first
    /// request.
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        context.peer.set_peer_info(request.clone());
        if let Some(SessionOf(id)) = context.extensions.get::<SessionOf>() {
            self.adopt(id.clone(), &context.peer).await;
        }
        self.tell_of_changes(context.peer.clone());
        self.negotiate_initialize(&request)
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
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let catalogue = self.catalogue();
        let caller = caller_of(&context);
        let all: Vec<_> = catalogue
            .tools
            .iter()
            .filter(|t| may_call(caller.as_ref(), &t.server, &t.upstream_name))
            .collect();
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

    /// The exposed tool of that name, so that rmcp checks a call's `Mcp-Param-*` headers
    /// against the arguments its schema marks `x-mcp-header` (SEP-2243). Not a listing:
    /// whether the caller may call it is decided in `call_tool`.
    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        self.catalogue().get(name).map(|t| t.tool.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let catalogue = self.catalogue();
        let caller = caller_of(&context);
        let exposed = catalogue
            .get(&request.name)
            .filter(|t| may_call(caller.as_ref(), &t.server, &t.upstream_name));
        let Some(exposed) = exposed else {
            let why = catalogue
                .withheld
                .iter()
                .find(|w| w.exposed.as_deref() == Some(&*request.name))
                .filter(|w| may_call(caller.as_ref(), &w.server, &w.tool))
                .map(|w| format!(": {}", w.reason))
                .unwrap_or_default();
            return Err(ErrorData::invalid_params(
                format!("unknown tool '{}'{why}", request.name),
                None,
            ));
        };
        // What the upstream sends during the call comes back through `relayed`, and is
        // passed on from this task, so that rmcp puts it on this request's stream.
        let (relay, mut relayed) = mpsc::channel(RELAY_QUEUE);
        // A 2026-07-28 request has no session: each call is a client of its own (two
        // people may share a key; see `upstream::relay`).
        let client = match context.meta.protocol_version() {
            Some(_) => crate::upstream::new_relay_client(),
            None => self.client,
        };
        let relay = Relay::new(relay, client);
        let waiting = relay.waiting();
        // A client may ask for a fresh result, as `Cache-Control: no-cache` does over HTTP.
        let fresh = [request.meta.as_ref().map(|m| &m.0), Some(&context.meta.0)]
            .into_iter()
            .flatten()
            .any(|meta| {
                meta.get(CACHE_META).and_then(|c| c.get("fresh"))
                    == Some(&serde_json::Value::Bool(true))
            });
        let mode = if fresh {
            CacheMode::Bypass
        } else {
            CacheMode::Use
        };
        let stateless = context.meta.protocol_version().is_some();
        let recipient = self.recipient(&context);
        let needed = recipient.needed.clone();
        let caller_key = caller.as_ref().and_then(|c| c.key.clone());
        let outcome = if stateless {
            // 2026-07-28: the call runs on its own, so that it can wait for its client's
            // input between two requests (see `mcp::input`).
            let declared = Declared::of(&context);
            let driven = match request.request_state.as_deref() {
                Some(state) => {
                    let mut parked = self
                        .shared
                        .parked
                        .take(
                            state,
                            caller_key.as_deref(),
                            &format!("tools/call {}", request.name),
                        )
                        .ok_or_else(|| {
                            ErrorData::invalid_params(
                                "requestState is unknown, expired, already used, or not this \
                                 call's",
                                None,
                            )
                        })?;
                    // An answer of the wrong shape drops the call: the client starts over.
                    parked.answer(request.input_responses.unwrap_or_default())?;
                    let input::Parked { running, asks, .. } = parked;
                    self.drive(
                        running,
                        asks,
                        &recipient,
                        Asker {
                            declared,
                            caller: caller_key,
                            tool: format!("tools/call {}", request.name),
                        },
                        Default::default(),
                    )
                    .await?
                }
                None => {
                    let gateway = self.shared.gateway.clone();
                    let (server, tool) = (exposed.server.clone(), exposed.upstream_name.clone());
                    let (arguments, key) = (request.arguments, caller_key.clone());
                    let call = tokio::spawn(async move {
                        let key = key.as_deref();
                        input::Finished::Call(
                            gateway
                                .call(&server, &tool, arguments, mode, key, Some(relay))
                                .await,
                        )
                    });
                    let running = input::Running {
                        outcome: tokio_util::task::AbortOnDropHandle::new(call),
                        relayed,
                        waiting,
                    };
                    let asks = Default::default();
                    // Answers a first call already brings are used when their request comes.
                    let early = request.input_responses.unwrap_or_default();
                    self.drive(
                        running,
                        asks,
                        &recipient,
                        Asker {
                            declared,
                            caller: caller_key,
                            tool: format!("tools/call {}", request.name),
                        },
                        early,
                    )
                    .await?
                }
            };
            match driven {
                Driven::Done(Some(input::Finished::Call(outcome))) => outcome,
                Driven::Done(_) => Err(CallFailure::Internal),
                Driven::Input(result) => return Ok(result.into()),
            }
        } else {
            let call = self.shared.gateway.call(
                &exposed.server,
                &exposed.upstream_name,
                request.arguments,
                mode,
                caller_key.as_deref(),
                Some(relay),
            );
            tokio::pin!(call);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut call => break outcome,
                    Some(item) = relayed.recv() => recipient.relay(*item).await,
                }
            };
            linger(relayed, recipient).await;
            outcome
        };
        // A capability the request did not declare is the client's error (-32021); one
        // it declared but we cannot relay was refused to the upstream, whose own answer
        // (usually a tool error saying so) goes back as it is.
        if let Some(capability) = *needed.lock().expect("needed lock") {
            let declared = context
                .meta
                .client_capabilities()
                .and_then(|c| serde_json::to_value(c).ok())
                .is_some_and(|c| c.get(capability).is_some());
            if !declared {
                return Err(ErrorData::new(
                    ErrorCode(-32021),
                    format!("the tool needs the client capability '{capability}'"),
                    Some(serde_json::json!({"requiredCapabilities": {capability: {}}})),
                ));
            }
        }
        match outcome {
            Ok(outcome) => {
                // Read from the shared result in place: cloning it first copied the whole
                // result tree only to drop it once read.
                let mut result = <CallToolResult as serde::Deserialize>::deserialize(
                    &*outcome.result,
                )
                .map_err(|e| {
                    ErrorData::internal_error(format!("upstream result unreadable: {e}"), None)
                })?;
                // An upstream on an older revision sends none; rmcp strips it again for
                // clients on those revisions, and 2026-07-28 clients require it.
                result.result_type.get_or_insert(ResultType::COMPLETE);
                // Whether the answer came from the cache, and how old it is.
                let cache = match outcome.produced_at {
                    Some(produced) => {
                        let age = std::time::SystemTime::now()
                            .duration_since(produced)
                            .unwrap_or_default();
                        serde_json::json!({"hit": true, "age_ms": age.as_millis() as u64})
                    }
                    None => serde_json::json!({"hit": false}),
                };
                result
                    .meta
                    .get_or_insert_with(Default::default)
                    .insert(CACHE_META.to_owned(), cache);
                Ok(result.into())
            }
            Err(e) if e.is_unknown_name() => Err(ErrorData::invalid_params(
                format!("unknown tool '{}'", request.name),
                None,
            )),
            Err(e) => Ok(call_failed(&e)),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let caller = caller_of(&context);
        let resources = visible(caller.as_ref(), self.shared.refresh_resources().await);
        Ok(ListResourcesResult {
            resources,
            ..Default::default()
        })
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let caller = caller_of(&context);
        let templates = visible(caller.as_ref(), self.shared.refresh_templates().await);
        Ok(ListResourceTemplatesResult {
            resource_templates: templates,
            ..Default::default()
        })
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let mut server = self.shared.resource_route(&request.uri);
        if server.is_none() {
            self.shared.refresh_resources().await;
            self.shared.refresh_templates().await;
            server = self.shared.resource_route(&request.uri);
        }
        let caller = caller_of(&context);
        let Some(server) = server.filter(|s| may_see(caller.as_ref(), s)) else {
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

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self.log_level.lock().expect("level lock") = Some(request.level);
        if let (Some(records), Some(id)) = (&self.shared.records, self.id.get()) {
            records.level(id, copies::level_text(request.level)).await;
        }
        Ok(())
    }

    async fn complete(
        &self,
        mut request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let caller = caller_of(&context);
        let server = match &mut request.r#ref {
            Reference::Prompt(prompt) => {
                if self.shared.prompt_route(&prompt.name).is_none() {
                    self.shared.refresh_prompts().await;
                }
                self.shared
                    .prompt_route(&prompt.name)
                    .map(|(server, name)| {
                        prompt.name = name;
                        server
                    })
            }
            Reference::Resource(template) => {
                if self.shared.resource_route(&template.uri).is_none() {
                    self.shared.refresh_templates().await;
                }
                self.shared.resource_route(&template.uri)
            }
            _ => None,
        };
        // Nothing to complete from is an empty answer, as the specification allows.
        let Some(server) = server.filter(|s| may_see(caller.as_ref(), s)) else {
            return Ok(CompleteResult::default());
        };
        match self
            .shared
            .gateway
            .forward(&server, Forward::Complete(request))
            .await
        {
            Ok(Forwarded::Completion(result)) => Ok(result),
            Ok(_) => Err(ErrorData::internal_error("unexpected answer", None)),
            Err(e) => Err(upstream_failed(e)),
        }
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let uri = request.uri;
        let caller = caller_of(&context);
        let server = self.subscription_route(caller, &uri).await?;
        self.shared
            .subscribe(&server, &uri, self.client, &context.peer)
            .await
            .map_err(upstream_failed)?;
        let fresh = self
            .subscribed
            .lock()
            .expect("subscribed")
            .insert((server.to_string(), uri.clone()));
        if fresh {
            let note = crate::cluster::SessionNote::Subscribed {
                session: String::new(),
                server: server.to_string(),
                uri,
            };
            self.note_subscriptions(note).await;
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let uri = request.uri;
        let caller = caller_of(&context);
        let server = self.subscription_route(caller, &uri).await?;
        let held = self
            .subscribed
            .lock()
            .expect("subscribed")
            .remove(&(server.to_string(), uri.clone()));
        if held {
            let note = crate::cluster::SessionNote::Unsubscribed {
                session: String::new(),
                server: server.to_string(),
                uri: uri.clone(),
            };
            self.note_subscriptions(note).await;
        }
        self.shared
            .unsubscribe(&server, &uri, self.client)
            .await
            .map_err(upstream_failed)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let caller = caller_of(&context);
        let prompts = visible(caller.as_ref(), self.shared.refresh_prompts().await);
        Ok(ListPromptsResult {
            prompts,
            ..Default::default()
        })
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let mut found = self.shared.prompt_route(&request.name);
        if found.is_none() {
            self.shared.refresh_prompts().await;
            found = self.shared.prompt_route(&request.name);
        }
        let caller = caller_of(&context);
        let Some((server, name)) = found.filter(|(s, _)| may_see(caller.as_ref(), s)) else {
            return Err(ErrorData::invalid_params(
                format!("unknown prompt '{}'", request.name),
                None,
            ));
        };
        // What the upstream sends while it builds the prompt (an elicitation) goes to
        // this client, as during a tool call.
        let (relay, mut relayed) = mpsc::channel(RELAY_QUEUE);
        let caller_key = caller.as_ref().and_then(|c| c.key.clone());
        let stateless = context.meta.protocol_version().is_some();
        let client = match stateless {
            true => crate::upstream::new_relay_client(),
            false => self.client,
        };
        let relay = Relay::new(relay, client);
        let waiting = relay.waiting();
        let forward = Forward::GetPrompt {
            name,
            arguments: request.arguments,
            relay: Some(relay),
        };
        let recipient = self.recipient(&context);
        let what = format!("prompts/get {}", request.name);
        let outcome = if stateless {
            let asker = Asker {
                declared: Declared::of(&context),
                caller: caller_key.clone(),
                tool: what.clone(),
            };
            let driven = match request.request_state.as_deref() {
                Some(state) => {
                    let mut parked = self
                        .shared
                        .parked
                        .take(state, caller_key.as_deref(), &what)
                        .ok_or_else(|| {
                            ErrorData::invalid_params(
                                "requestState is unknown, expired, already used, or not this \
                                 request's",
                                None,
                            )
                        })?;
                    parked.answer(request.input_responses.unwrap_or_default())?;
                    let input::Parked { running, asks, .. } = parked;
                    self.drive(running, asks, &recipient, asker, Default::default())
                        .await?
                }
                None => {
                    let gateway = self.shared.gateway.clone();
                    let prompt = tokio::spawn(async move {
                        input::Finished::Prompt(gateway.forward(&server, forward).await)
                    });
                    let running = input::Running {
                        outcome: tokio_util::task::AbortOnDropHandle::new(prompt),
                        relayed,
                        waiting,
                    };
                    let early = request.input_responses.unwrap_or_default();
                    self.drive(running, Default::default(), &recipient, asker, early)
                        .await?
                }
            };
            match driven {
                Driven::Done(Some(input::Finished::Prompt(outcome))) => outcome,
                Driven::Done(_) => return Err(ErrorData::internal_error("prompt failed", None)),
                Driven::Input(result) => return Ok(result.into()),
            }
        } else {
            let asked = self.shared.gateway.forward(&server, forward);
            tokio::pin!(asked);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut asked => break outcome,
                    Some(item) = relayed.recv() => recipient.relay(*item).await,
                }
            };
            linger(relayed, recipient).await;
            outcome
        };
        match outcome {
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
    /// In a cluster: records a subscription change of this session, and tells the other
    /// copies (`note`, whose session is filled in here).
    async fn note_subscriptions(&self, mut note: crate::cluster::SessionNote) {
        let (Some(records), Some(id)) = (&self.shared.records, self.id.get()) else {
            return;
        };
        use crate::cluster::SessionNote::{Subscribed, Unsubscribed};
        if let Subscribed { session, .. } | Unsubscribed { session, .. } = &mut note {
            *session = id.to_string();
        }
        records.subscription(note).await;
    }

    /// Where what an upstream sends during `context`'s request goes: its client, under its
    /// progress token, at the log level its session (or, in 2026-07-28, its request) asked.
    fn recipient(&self, context: &RequestContext<RoleServer>) -> Recipient {
        let stateless = context.meta.protocol_version().is_some();
        let json_only = super::request::json_only(&context.extensions);
        Recipient {
            peer: context.peer.clone(),
            // A client that reads only JSON gets no stream, so no progress.
            progress_token: context.meta.get_progress_token().filter(|_| !json_only),
            logs: !stateless || context.meta.log_level().is_some(),
            log_level: if stateless {
                context.meta.log_level()
            } else {
                *self.log_level.lock().expect("level lock")
            },
            stateless,
            json_only,
            needed: Arc::default(),
        }
    }
}

/// How long a 2026-07-28 call that needs input waits for more requests of the upstream
/// before it answers `input_required`: requests sent together are asked together.
const GATHER: std::time::Duration = std::time::Duration::from_millis(50);

/// The input a 2026-07-28 request said its client can give.
#[derive(Clone, Copy)]
struct Declared {
    sampling: bool,
    elicitation: bool,
}

impl Declared {
    fn of(context: &RequestContext<RoleServer>) -> Self {
        let capabilities = context
            .meta
            .client_capabilities()
            .and_then(|c| serde_json::to_value(c).ok())
            .unwrap_or_default();
        Self {
            sampling: capabilities.get("sampling").is_some(),
            elicitation: capabilities.get("elicitation").is_some(),
        }
    }
}

/// Whose 2026-07-28 call it is, and what its client can answer.
struct Asker {
    declared: Declared,
    caller: Option<String>,
    tool: String,
}

/// What driving a 2026-07-28 call came to.
enum Driven {
    /// It ended (None: its task failed).
    Done(Option<input::Finished>),
    /// It waits for its client's input: the `input_required` result to send.
    Input(rmcp::model::InputRequiredResult),
}

impl McpHandler {
    /// Drives a 2026-07-28 call until its result, or until it needs input from the client
    /// it cannot be given now (sampling, elicitation: there is no stream to send a request
    /// on), when it is parked and the client told what to answer.
    ///
    /// Boxed: inline, its future (the largest of a call's) made every `tools/call` and
    /// `prompts/get` future as large, handshake-era calls included, which never drive it;
    /// each move of such a future copies all of it.
    fn drive<'a>(
        &'a self,
        mut running: input::Running,
        mut asks: std::collections::BTreeMap<String, (rmcp::model::InputRequest, input::Reply)>,
        recipient: &'a Recipient,
        asker: Asker,
        mut early: rmcp::model::InputResponses,
    ) -> futures_util::future::BoxFuture<'a, Result<Driven, ErrorData>> {
        Box::pin(async move {
            let Asker {
                declared,
                caller,
                tool,
            } = asker;
            // Resumed: it may take the upstream's unnamed requests again.
            running
                .waiting
                .store(false, std::sync::atomic::Ordering::Relaxed);
            // An upstream request the client can answer becomes an input request, under the
            // key the upstream named (`_meta` "io.omni-bridge/inputKey") or one of ours; one
            // the request already brought the answer to is answered at once. Anything else is
            // relayed as for any call (and a request the client cannot answer is refused).
            let take = async |item: RelayItem,
                              asks: &mut std::collections::BTreeMap<_, _>,
                              early: &mut rmcp::model::InputResponses|
                   -> Result<(), ErrorData> {
                let (kind, params) = match &item {
                    RelayItem::Sample(p, _) if declared.sampling => {
                        ("sampling", serde_json::to_value(p).unwrap_or_default())
                    }
                    RelayItem::Elicit(p, _) if declared.elicitation => {
                        ("elicitation", serde_json::to_value(p).unwrap_or_default())
                    }
                    _ => {
                        recipient.relay(item).await;
                        return Ok(());
                    }
                };
                let (request, reply) = match input::ask(item) {
                    Ok(asked) => asked,
                    Err(item) => {
                        recipient.relay(*item).await;
                        return Ok(());
                    }
                };
                let named = params["_meta"][input::KEY_META]
                    .as_str()
                    .filter(|k| input::is_key(k) && !asks.contains_key(*k))
                    .map(str::to_owned);
                let key = named.unwrap_or_else(|| {
                    loop {
                        let key = format!("{kind}-{:08x}", rand::random::<u32>());
                        if !asks.contains_key(&key) {
                            break key;
                        }
                    }
                });
                match early.remove(&key) {
                    Some(answer) => reply.answer(answer).map_err(|(_, why)| {
                        ErrorData::invalid_params(format!("inputResponses['{key}']: {why}"), None)
                    }),
                    None => {
                        asks.insert(key, (request, reply));
                        Ok(())
                    }
                }
            };
            loop {
                if !asks.is_empty() {
                    let window = tokio::time::sleep(GATHER);
                    tokio::pin!(window);
                    loop {
                        tokio::select! {
                            () = &mut window => break,
                            Some(item) = running.relayed.recv() => take(*item, &mut asks, &mut early).await?,
                        }
                    }
                    running
                        .waiting
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    let parked = input::Parked::new(running, asks, caller, tool);
                    let requests = parked.requests();
                    let token = self
                        .shared
                        .parked
                        .park(parked)
                        .map_err(|why| ErrorData::internal_error(why, None))?;
                    return Ok(Driven::Input(rmcp::model::InputRequiredResult::new(
                        Some(requests),
                        Some(token),
                    )));
                }
                tokio::select! {
                    outcome = &mut running.outcome => {
                        linger(running.relayed, recipient.clone()).await;
                        return Ok(Driven::Done(outcome.ok()));
                    }
                    Some(item) = running.relayed.recv() => take(*item, &mut asks, &mut early).await?,
                }
            }
        })
    }
}

/// The `_meta` key under which a result says whether it came from the cache
/// (`{"hit": true, "age_ms": ...}`), and under which a request may ask for a fresh result
/// (`{"fresh": true}`, as `Cache-Control: no-cache` does over HTTP).
pub const CACHE_META: &str = "io.omni-bridge/cache";

impl McpHandler {
    /// The upstream that holds `uri`, for a (un)subscription by `caller`.
    async fn subscription_route(
        &self,
        caller: Option<Caller>,
        uri: &str,
    ) -> Result<ServerName, ErrorData> {
        let mut server = self.shared.resource_route(uri);
        if server.is_none() {
            self.shared.refresh_resources().await;
            server = self.shared.resource_route(uri);
        }
        server
            .filter(|s| may_see(caller.as_ref(), s))
            .ok_or_else(|| {
                ErrorData::new(
                    ErrorCode::RESOURCE_NOT_FOUND,
                    format!("no upstream offers resource '{uri}'"),
                    Some(serde_json::json!({"uri": uri})),
                )
            })
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
