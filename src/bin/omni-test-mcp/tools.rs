//! The tools and their behaviour, shared by every session of one process.

// Logging is deprecated in 2026-07-28; this server still offers it to test older clients.
#![allow(deprecated)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    ContentBlock, GetPromptRequestParams, GetPromptResponse, Implementation, JsonObject,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, SetLevelRequestParams, SubscribeRequestParams, Tool, ToolAnnotations,
    UnsubscribeRequestParams,
};

use crate::conformance;
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::{Value, json};

/// State of the whole process: every session sees the same counter and tool list.
pub struct Shared {
    pub name: String,
    counter: AtomicU64,
    sleeping: AtomicU64,
    /// Pings go unanswered until this instant (for probe tests).
    frozen_until: Mutex<Option<tokio::time::Instant>>,
    extra: AtomicBool,
    /// What `write_note` wrote last; `read_note` answers it (a read-only tool whose
    /// answer a write changes, as a file server's are).
    note: Mutex<String>,
    peers: Mutex<Vec<Peer<RoleServer>>>,
    /// Resource URIs a client subscribed to; with the fixtures, `announce` tells only of
    /// these, as a real server does.
    subscribed: Mutex<std::collections::HashSet<String>>,
    /// Serve the conformance suite's fixtures too (see `conformance.rs`).
    conformance: bool,
    /// The tool list is padded to this many with read-only `pad_N` tools (echo-like), for
    /// catalogues of a realistic size.
    pub pad_to: usize,
}

impl Shared {
    pub fn new(name: String, conformance: bool) -> Self {
        Self {
            name,
            conformance,
            counter: AtomicU64::new(0),
            sleeping: AtomicU64::new(0),
            frozen_until: Mutex::new(None),
            extra: AtomicBool::new(false),
            note: Mutex::new(String::new()),
            peers: Mutex::new(Vec::new()),
            subscribed: Mutex::default(),
            pad_to: 0,
        }
    }
}

#[derive(Clone)]
pub struct TestServer {
    shared: Arc<Shared>,
}

fn schema(value: Value) -> Arc<JsonObject> {
    Arc::new(value.as_object().expect("schemas are objects").clone())
}

fn no_args() -> Arc<JsonObject> {
    schema(json!({"type": "object", "properties": {}}))
}

fn read_only() -> ToolAnnotations {
    ToolAnnotations::new().read_only(true)
}

fn catalogue(extra: bool) -> Vec<Tool> {
    let mut tools = vec![
        Tool::new(
            "echo",
            "Returns its text",
            schema(json!({
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            })),
        )
        .with_annotations(read_only()),
        Tool::new(
            "add",
            "Adds two numbers",
            schema(json!({
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"],
            })),
        )
        .with_annotations(read_only()),
        Tool::new(
            "sleep",
            "Answers after ms milliseconds",
            schema(json!({
                "type": "object",
                "properties": {"ms": {"type": "integer", "minimum": 0}},
                "required": ["ms"],
            })),
        ),
        Tool::new("sleeping", "How many sleep calls are running", no_args())
            .with_annotations(ToolAnnotations::new().read_only(false)),
        Tool::new(
            "freeze",
            "Leaves pings unanswered for ms milliseconds",
            schema(json!({
                "type": "object",
                "properties": {"ms": {"type": "integer", "minimum": 0}},
                "required": ["ms"],
            })),
        ),
        Tool::new("fail", "Answers with a protocol error", no_args()),
        Tool::new("tool_error", "Answers with isError: true", no_args())
            .with_annotations(read_only()),
        Tool::new("crash", "Exits the server process", no_args()),
        Tool::new(
            "counter",
            "Counts its calls (not read-only); answers after delay_ms",
            schema(json!({
                "type": "object",
                "properties": {"delay_ms": {"type": "integer", "minimum": 0}},
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(false)),
        Tool::new(
            "write_note",
            "Replaces the note (not read-only)",
            schema(json!({
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(false)),
        Tool::new("read_note", "Answers the note", no_args()).with_annotations(read_only()),
        Tool::new(
            "announce",
            "Sends notifications/resources/updated (kind \"updated\", for uri, by default \
             note://current) or notifications/resources/list_changed (kind \"list_changed\") \
             to every client",
            schema(json!({
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["updated", "list_changed"]},
                    "uri": {"type": "string"},
                },
                "required": ["kind"],
            })),
        ),
        Tool::new(
            "big",
            "Returns a text of the given number of bytes",
            schema(json!({
                "type": "object",
                "properties": {"bytes": {"type": "integer", "minimum": 0}},
                "required": ["bytes"],
            })),
        )
        .with_annotations(read_only()),
        Tool::new(
            "toggle_extra",
            "Adds or removes the tool 'extra' and notifies clients",
            no_args(),
        ),
    ];
    if extra {
        tools.push(Tool::new(
            "extra",
            "Present only after toggle_extra",
            no_args(),
        ));
    }
    tools
}

/// A filler tool: read-only, answers its text like `echo`.
fn pad_tool(n: usize) -> Tool {
    Tool::new(
        format!("pad_{n}"),
        "A filler tool (--tools): returns its text",
        schema(json!({
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        })),
    )
    .with_annotations(read_only())
}

fn text(t: impl Into<String>) -> CallToolResponse {
    CallToolResult::success(vec![ContentBlock::text(t)]).into()
}

fn arg<'a>(args: &'a Option<JsonObject>, key: &str) -> Option<&'a Value> {
    args.as_ref().and_then(|a| a.get(key))
}

fn bad_args(message: &str) -> ErrorData {
    ErrorData::invalid_params(message.to_owned(), None)
}

impl TestServer {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Resources, prompts, logging and completion exist only with `--conformance`.
    fn conformance_only(&self) -> Result<(), ErrorData> {
        if self.shared.conformance {
            Ok(())
        } else {
            Err(ErrorData::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                "start omni-test-mcp with --conformance for this",
                None,
            ))
        }
    }

    async fn notify_list_changed(&self) {
        let peers: Vec<Peer<RoleServer>> = {
            let mut peers = self.shared.peers.lock().unwrap();
            peers.retain(|p| !p.is_transport_closed());
            peers.clone()
        };
        for peer in peers {
            let _ = peer.notify_tool_list_changed().await;
        }
    }
}

impl ServerHandler for TestServer {
    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.conformance_only()?;
        Ok(ListResourcesResult {
            resources: conformance::resources(),
            ..Default::default()
        })
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.conformance_only()?;
        Ok(ListResourceTemplatesResult {
            resource_templates: conformance::templates(),
            ..Default::default()
        })
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.conformance_only()?;
        conformance::read(&request.uri).map(Into::into)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.conformance_only()?;
        self.shared.subscribed.lock().unwrap().insert(request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.conformance_only()?;
        self.shared.subscribed.lock().unwrap().remove(&request.uri);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        self.conformance_only()?;
        Ok(ListPromptsResult {
            prompts: conformance::prompts(),
            ..Default::default()
        })
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.conformance_only()?;
        if request.name == "test_input_required_result_prompt" {
            return conformance::prompt_with_input(&context)
                .await
                .map(Into::into);
        }
        conformance::prompt(&request.name, &request.arguments).map(Into::into)
    }

    async fn set_level(
        &self,
        _request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.conformance_only()
    }

    async fn complete(
        &self,
        _request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        self.conformance_only()?;
        Ok(CompleteResult::default())
    }

    fn get_info(&self) -> ServerConfig {
        let capabilities = if self.shared.conformance {
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_prompts()
                .enable_logging()
                .enable_completions()
                .build()
        } else {
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build()
        };
        ServerConfig::new(capabilities).with_server_info(Implementation::new(
            self.shared.name.clone(),
            env!("CARGO_PKG_VERSION"),
        ))
    }

    async fn ping(&self, _context: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        let until = *self.shared.frozen_until.lock().unwrap();
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
        Ok(())
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.shared.peers.lock().unwrap().push(context.peer.clone());
    }

    /// Pages of four tools, so that clients must follow `nextCursor`.
    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        const PAGE: usize = 4;
        let mut all = catalogue(self.shared.extra.load(Ordering::SeqCst));
        if self.shared.conformance {
            all.extend(conformance::tools());
        }
        for n in all.len()..self.shared.pad_to {
            all.push(pad_tool(n));
        }
        let start = match request.and_then(|r| r.cursor) {
            Some(cursor) => cursor
                .parse::<usize>()
                .ok()
                .filter(|n| *n < all.len())
                .ok_or_else(|| ErrorData::invalid_params("bad cursor", None))?,
            None => 0,
        };
        let end = (start + PAGE).min(all.len());
        Ok(ListToolsResult {
            tools: all[start..end].to_vec(),
            next_cursor: (end < all.len()).then(|| end.to_string()),
            ..Default::default()
        })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = &request.arguments;
        if self.shared.conformance
            && let Some(answer) = conformance::call(&request.name, args, &context).await
        {
            return answer;
        }
        match request.name.as_ref() {
            name if name.starts_with("pad_")
                && name[4..]
                    .parse::<usize>()
                    .is_ok_and(|n| n < self.shared.pad_to) =>
            {
                let t = arg(args, "text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad_args("text must be a string"))?;
                Ok(text(t))
            }
            "echo" => {
                let t = arg(args, "text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad_args("text must be a string"))?;
                Ok(text(t))
            }
            "add" => {
                let a = arg(args, "a").and_then(Value::as_f64);
                let b = arg(args, "b").and_then(Value::as_f64);
                match (a, b) {
                    (Some(a), Some(b)) => Ok(text((a + b).to_string())),
                    _ => Err(bad_args("a and b must be numbers")),
                }
            }
            "sleep" => {
                let ms = arg(args, "ms")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad_args("ms must be a non-negative integer"))?;
                self.shared.sleeping.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.shared.sleeping.fetch_sub(1, Ordering::SeqCst);
                Ok(text(format!("slept {ms} ms")))
            }
            "sleeping" => {
                let n = self.shared.sleeping.load(Ordering::SeqCst);
                Ok(text(n.to_string()))
            }
            "freeze" => {
                let ms = arg(args, "ms")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad_args("ms must be a non-negative integer"))?;
                let until = tokio::time::Instant::now() + Duration::from_millis(ms);
                *self.shared.frozen_until.lock().unwrap() = Some(until);
                Ok(text(format!("pings frozen for {ms} ms")))
            }
            "fail" => Err(ErrorData::internal_error("fail was called", None)),
            "tool_error" => {
                Ok(CallToolResult::error(vec![ContentBlock::text("this tool always errs")]).into())
            }
            "crash" => {
                eprintln!("omni-test-mcp: crash requested, exiting");
                std::process::exit(3);
            }
            "counter" => {
                let delay = arg(args, "delay_ms").and_then(Value::as_u64).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let n = self.shared.counter.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(text(n.to_string()))
            }
            "write_note" => {
                let note = arg(args, "text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad_args("text must be a string"))?;
                *self.shared.note.lock().unwrap() = note.to_owned();
                Ok(text("written"))
            }
            "read_note" => Ok(text(self.shared.note.lock().unwrap().clone())),
            "announce" => {
                let kind = arg(args, "kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let uri = arg(args, "uri")
                    .and_then(Value::as_str)
                    .unwrap_or("note://current")
                    .to_owned();
                if kind == "updated"
                    && self.shared.conformance
                    && !self.shared.subscribed.lock().unwrap().contains(&uri)
                {
                    return Ok(text(format!("no one is subscribed to {uri}")));
                }
                let peers: Vec<Peer<RoleServer>> = self.shared.peers.lock().unwrap().clone();
                for peer in peers.iter().filter(|p| !p.is_transport_closed()) {
                    let _ = match kind {
                        "updated" => {
                            let param =
                                rmcp::model::ResourceUpdatedNotificationParam::new(uri.clone());
                            peer.notify_resource_updated(param).await
                        }
                        _ => peer.notify_resource_list_changed().await,
                    };
                }
                Ok(text(format!("announced {kind}")))
            }
            "big" => {
                let n = arg(args, "bytes")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad_args("bytes must be a non-negative integer"))?;
                Ok(text("x".repeat(n as usize)))
            }
            "toggle_extra" | "test_trigger_tool_change" => {
                let now = !self.shared.extra.fetch_xor(true, Ordering::SeqCst);
                self.notify_list_changed().await;
                Ok(text(if now { "extra added" } else { "extra removed" }))
            }
            "extra" if self.shared.extra.load(Ordering::SeqCst) => Ok(text("extra")),
            other => Err(ErrorData::invalid_params(
                format!("no tool named {other}"),
                None,
            )),
        }
    }
}
