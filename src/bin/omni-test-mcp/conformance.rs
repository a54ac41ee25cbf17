//! The fixtures the MCP conformance suite's server scenarios call by name (enabled with
//! `--conformance`): tools with each kind of content, logging, progress, sampling and
//! elicitation; static and templated resources; prompts; completion. Behaviour follows
//! each scenario's description in `@modelcontextprotocol/conformance`.

use std::time::Duration;

use rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock, GetPromptResult, JsonObject, Prompt,
    ReadResourceResult, Resource, ResourceTemplate, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A 1x1 red PNG.
const IMAGE: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A WAV header with two bytes of silence.
const AUDIO: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

fn typed<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("fixtures match the MCP schema")
}

fn tool(name: &str, description: &str, schema: Value) -> Tool {
    typed(json!({"name": name, "description": description, "inputSchema": schema}))
}

fn no_args() -> Value {
    json!({"type": "object", "properties": {}})
}

pub fn tools() -> Vec<Tool> {
    let string_arg = |name: &str, description: &str| json!({"type": "object", "properties": {name: {"type": "string", "description": description}}, "required": [name]});
    vec![
        tool("test_simple_text", "Returns a simple text", no_args()),
        // SEP-2243: an argument mirrored into an `Mcp-Param-Region` header.
        tool(
            "test_custom_header",
            "Answers the region it was given, which the client also sends as a header",
            json!({"type": "object", "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"}},
                "required": ["region"]}),
        ),
        // The 2026-07-28 input-required scenarios (conformance 0.2.0): this server speaks a
        // handshake revision and asks the gateway's client in the old way; the gateway
        // turns each request into an input request (see the gateway's `mcp::input`).
        tool(
            "test_input_required_result_elicitation",
            "Asks the user's name (key user_name)",
            no_args(),
        ),
        tool(
            "test_input_required_result_sampling",
            "Asks the client's LLM",
            no_args(),
        ),
        tool(
            "test_input_required_result_request_state",
            "Asks the user, then answers state-ok",
            no_args(),
        ),
        tool(
            "test_input_required_result_multi_round",
            "Asks the user twice: two rounds",
            no_args(),
        ),
        tool(
            "test_input_required_result_tampered_state",
            "Asks the user",
            no_args(),
        ),
        tool(
            "test_input_required_result_capabilities",
            "Asks the client's LLM only",
            no_args(),
        ),
        tool(
            "test_input_required_result_multiple_inputs",
            "Asks the user and the LLM at once",
            no_args(),
        ),
        tool("test_image_content", "Returns an image", no_args()),
        tool("test_audio_content", "Returns audio", no_args()),
        tool(
            "test_embedded_resource",
            "Returns an embedded resource",
            no_args(),
        ),
        tool(
            "test_multiple_content_types",
            "Returns text, image and resource",
            no_args(),
        ),
        tool(
            "test_tool_with_logging",
            "Logs three messages while it runs",
            no_args(),
        ),
        tool(
            "test_tool_with_progress",
            "Reports progress three times",
            no_args(),
        ),
        tool("test_error_handling", "Always answers isError", no_args()),
        tool(
            "test_sampling",
            "Asks the client's LLM",
            string_arg("prompt", "The prompt to send to the LLM"),
        ),
        tool(
            "test_elicitation",
            "Asks the user",
            string_arg("message", "The message to show the user"),
        ),
        tool(
            "test_elicitation_sep1034_defaults",
            "Asks the user with defaults",
            no_args(),
        ),
        tool(
            "test_elicitation_sep1330_enums",
            "Asks the user with enums",
            no_args(),
        ),
        // For the 2026-07-28 scenarios (the suite's alpha).
        tool(
            "test_missing_capability",
            "Needs the client's sampling",
            no_args(),
        ),
        tool(
            "test_streaming_elicitation",
            "Asks the user mid-call",
            no_args(),
        ),
        tool("test_logging_tool", "Logs one message", no_args()),
        tool(
            "test_trigger_tool_change",
            "Changes the tool list",
            no_args(),
        ),
        tool(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)",
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {"address": {"type": "object", "properties": {
                    "street": {"type": "string"}, "city": {"type": "string"}}}},
                "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
                "additionalProperties": false,
            }),
        ),
    ]
}

fn result(content: Value) -> CallToolResponse {
    let mut r: CallToolResult = typed(json!({"content": content}));
    r.is_error = Some(false);
    r.into()
}

/// Answers a conformance tool, or `None` if `name` is not one.
#[allow(deprecated)] // sampling and logging are deprecated in 2026-07-28, still tested here
pub async fn call(
    name: &str,
    args: &Option<JsonObject>,
    context: &RequestContext<RoleServer>,
) -> Option<Result<CallToolResponse, ErrorData>> {
    let arg = |key: &str| {
        args.as_ref()
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let peer = &context.peer;
    // The requests of the input-required fixtures, with the key the gateway shows them by.
    let ask_name = || {
        typed::<rmcp::model::ElicitRequestParams>(json!({
            "message": "What is your name?",
            "requestedSchema": {"type": "object", "properties": {
                "user_name": {"type": "string", "description": "Your name"}},
                "required": ["user_name"]},
            "_meta": {"io.omni-bridge/inputKey": "user_name"},
        }))
    };
    let ask_llm = || {
        typed::<rmcp::model::CreateMessageRequestParams>(json!({
            "messages": [{"role": "user", "content": {"type": "text", "text": "Say hello"}}],
            "maxTokens": 50,
        }))
    };
    let said = |value: &Value| serde_json::to_string(value).unwrap_or_default();
    let answer = match name {
        "test_custom_header" => result(json!([{"type": "text", "text": arg("region")}])),
        "test_input_required_result_elicitation" | "test_input_required_result_tampered_state" => {
            match peer.create_elicitation(ask_name()).await {
                Ok(answer) => {
                    let answer = serde_json::to_value(&answer).unwrap_or_default();
                    result(
                        json!([{"type": "text", "text": format!("Hello, {}", said(&answer["content"]))}]),
                    )
                }
                Err(e) => return Some(Err(ErrorData::internal_error(e.to_string(), None))),
            }
        }
        "test_input_required_result_sampling" | "test_input_required_result_capabilities" => {
            match peer.create_message(ask_llm()).await {
                Ok(answer) => {
                    let answer = serde_json::to_value(&answer).unwrap_or_default();
                    result(
                        json!([{"type": "text", "text": format!("LLM said {}", said(&answer["content"]))}]),
                    )
                }
                Err(e) => return Some(Err(ErrorData::internal_error(e.to_string(), None))),
            }
        }
        "test_input_required_result_request_state" => {
            match peer.create_elicitation(ask_name()).await {
                Ok(_) => result(json!([{"type": "text", "text": "state-ok"}])),
                Err(e) => return Some(Err(ErrorData::internal_error(e.to_string(), None))),
            }
        }
        "test_input_required_result_multi_round" => {
            let first = peer.create_elicitation(ask_name()).await;
            let ask_color = typed::<rmcp::model::ElicitRequestParams>(json!({
                "message": "Your favourite colour?",
                "requestedSchema": {"type": "object", "properties": {
                    "color": {"type": "string"}}, "required": ["color"]},
            }));
            let second = match first {
                Ok(_) => peer.create_elicitation(ask_color).await,
                Err(e) => return Some(Err(ErrorData::internal_error(e.to_string(), None))),
            };
            match second {
                Ok(_) => result(json!([{"type": "text", "text": "two rounds done"}])),
                Err(e) => return Some(Err(ErrorData::internal_error(e.to_string(), None))),
            }
        }
        "test_input_required_result_multiple_inputs" => {
            let (name, llm) = tokio::join!(
                peer.create_elicitation(ask_name()),
                peer.create_message(ask_llm())
            );
            match (name, llm) {
                (Ok(_), Ok(_)) => result(json!([{"type": "text", "text": "both answered"}])),
                (Err(e), _) | (_, Err(e)) => {
                    return Some(Err(ErrorData::internal_error(e.to_string(), None)));
                }
            }
        }
        "test_simple_text" => {
            result(json!([{"type": "text", "text": "This is a simple text response for testing."}]))
        }
        "test_image_content" => {
            result(json!([{"type": "image", "data": IMAGE, "mimeType": "image/png"}]))
        }
        "test_audio_content" => {
            result(json!([{"type": "audio", "data": AUDIO, "mimeType": "audio/wav"}]))
        }
        "test_embedded_resource" => result(json!([{"type": "resource", "resource": {
            "uri": "test://embedded-resource", "mimeType": "text/plain",
            "text": "This is an embedded resource content."}}])),
        "test_multiple_content_types" => result(json!([
            {"type": "text", "text": "Multiple content types test:"},
            {"type": "image", "data": IMAGE, "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": "test://mixed-content-resource",
                "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}"}},
        ])),
        "test_tool_with_logging" => {
            for (i, message) in [
                "Tool execution started",
                "Tool processing data",
                "Tool execution completed",
            ]
            .into_iter()
            .enumerate()
            {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = peer
                    .notify_logging_message(typed(json!({"level": "info", "data": message})))
                    .await;
            }
            result(json!([{"type": "text", "text": "Tool with logging executed successfully"}]))
        }
        "test_tool_with_progress" => {
            let token = context.meta.get_progress_token();
            for (i, progress) in [0, 50, 100].into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if let Some(token) = &token {
                    let _ = peer
                        .notify_progress(typed(json!({
                            "progressToken": token, "progress": progress, "total": 100,
                            "message": format!("Completed step {progress} of 100"),
                        })))
                        .await;
                }
            }
            let shown = token.map(|t| serde_json::to_string(&t).unwrap_or_default());
            result(json!([{"type": "text", "text": shown.unwrap_or_else(|| "no token".into())}]))
        }
        "test_logging_tool" => {
            let _ = peer
                .notify_logging_message(typed(json!({"level": "info", "data": "logged"})))
                .await;
            result(json!([{"type": "text", "text": "logged once"}]))
        }
        "test_error_handling" => CallToolResult::error(vec![ContentBlock::text(
            "This tool intentionally returns an error for testing",
        )])
        .into(),
        "test_sampling" | "test_missing_capability" => {
            let params = typed(json!({
                "messages": [{"role": "user", "content": {"type": "text", "text": arg("prompt")}}],
                "maxTokens": 100,
            }));
            match peer.create_message(params).await {
                Ok(answer) => {
                    let value = serde_json::to_value(&answer).unwrap_or_default();
                    let text = value["content"]["text"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    result(json!([{"type": "text", "text": format!("LLM response: {text}")}]))
                }
                Err(e) => return Some(Err(ErrorData::internal_error(e.to_string(), None))),
            }
        }
        "test_elicitation" | "test_streaming_elicitation" => {
            return Some(
                elicit(
                    context,
                    arg("message"),
                    json!({"type": "object", "properties": {
                        "username": {"type": "string", "description": "User's response"},
                        "email": {"type": "string", "description": "User's email address"},
                    }, "required": ["username", "email"]}),
                    "User response",
                )
                .await,
            );
        }
        "test_elicitation_sep1034_defaults" => {
            return Some(
                elicit(
                    context,
                    "Please review and update the form fields with defaults".into(),
                    json!({"type": "object", "properties": {
                        "name": {"type": "string", "description": "Name", "default": "John Doe"},
                        "age": {"type": "integer", "description": "Age", "default": 30},
                        "score": {"type": "number", "description": "Score", "default": 95.5},
                        "status": {"type": "string", "description": "Status",
                            "enum": ["active", "inactive", "pending"], "default": "active"},
                        "verified": {"type": "boolean", "description": "Verified", "default": true},
                    }, "required": []}),
                    "Elicitation completed",
                )
                .await,
            );
        }
        "test_elicitation_sep1330_enums" => {
            let titled =
                |prefix: &str, word: &str| {
                    json!([1, 2, 3].iter().zip(["First", "Second", "Third"]).map(|(n, t)| {
                    json!({"const": format!("{prefix}{n}"), "title": format!("{t} {word}")})
                }).collect::<Vec<_>>())
                };
            return Some(
                elicit(
                    context,
                    "Please select options from the enum fields".into(),
                    json!({"type": "object", "properties": {
                        "untitledSingle": {"type": "string", "description": "Pick one",
                            "enum": ["option1", "option2", "option3"]},
                        "titledSingle": {"type": "string", "description": "Pick one",
                            "oneOf": titled("value", "Option")},
                        "legacyEnum": {"type": "string", "description": "Pick one",
                            "enum": ["opt1", "opt2", "opt3"],
                            "enumNames": ["Option One", "Option Two", "Option Three"]},
                        "untitledMulti": {"type": "array", "description": "Pick some",
                            "minItems": 1, "maxItems": 3,
                            "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                        "titledMulti": {"type": "array", "description": "Pick some",
                            "minItems": 1, "maxItems": 3,
                            "items": {"anyOf": titled("value", "Choice")}},
                    }, "required": []}),
                    "Elicitation completed",
                )
                .await,
            );
        }
        "json_schema_2020_12_tool" => result(json!([{"type": "text",
            "text": format!("JSON Schema 2020-12 tool called with: {}", json!(args))}])),
        _ => return None,
    };
    Some(Ok(answer))
}

async fn elicit(
    context: &RequestContext<RoleServer>,
    message: String,
    schema: Value,
    label: &str,
) -> Result<CallToolResponse, ErrorData> {
    let params = typed(json!({"message": message, "requestedSchema": schema}));
    match context.peer.create_elicitation(params).await {
        Ok(answer) => {
            let value = serde_json::to_value(&answer).unwrap_or_default();
            let text = format!(
                "{label}: action={}, content={}",
                value["action"].as_str().unwrap_or_default(),
                value.get("content").cloned().unwrap_or(Value::Null)
            );
            Ok(result(json!([{"type": "text", "text": text}])))
        }
        Err(e) => Err(ErrorData::internal_error(e.to_string(), None)),
    }
}

pub fn resources() -> Vec<Resource> {
    typed(json!([
        {"uri": "test://static-text", "name": "static-text", "description": "A static text resource", "mimeType": "text/plain"},
        {"uri": "test://static-binary", "name": "static-binary", "description": "A static PNG", "mimeType": "image/png"},
        {"uri": "test://watched-resource", "name": "watched-resource", "description": "A resource to subscribe to", "mimeType": "text/plain"},
    ]))
}

pub fn templates() -> Vec<ResourceTemplate> {
    typed(
        json!([{"uriTemplate": "test://template/{id}/data", "name": "template",
        "description": "A resource template with parameter substitution", "mimeType": "application/json"},
        // A name with spaces, as real servers give them (server-everything does).
        {"uriTemplate": "test://dynamic/{id}", "name": "Dynamic Text Resource",
        "description": "A template whose name holds spaces", "mimeType": "text/plain"}]),
    )
}

pub fn read(uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let contents = match uri {
        "test://static-text" => json!({"uri": uri, "mimeType": "text/plain",
            "text": "This is the content of the static text resource."}),
        "test://static-binary" => json!({"uri": uri, "mimeType": "image/png", "blob": IMAGE}),
        "test://watched-resource" => {
            json!({"uri": uri, "mimeType": "text/plain", "text": "Watched resource content."})
        }
        _ => match uri
            .strip_prefix("test://template/")
            .and_then(|rest| rest.strip_suffix("/data"))
        {
            Some(id) => json!({"uri": uri, "mimeType": "application/json",
                "text": json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")}).to_string()}),
            None => {
                return Err(ErrorData::resource_not_found(
                    format!("no resource {uri}"),
                    Some(json!({"uri": uri})),
                ));
            }
        },
    };
    Ok(typed(json!({"contents": [contents]})))
}

pub fn prompts() -> Vec<Prompt> {
    typed(json!([
        {"name": "test_simple_prompt", "description": "A simple prompt without arguments"},
        {"name": "test_prompt_with_arguments", "description": "A prompt with arguments", "arguments": [
            {"name": "arg1", "description": "First test argument", "required": true},
            {"name": "arg2", "description": "Second test argument", "required": true}]},
        {"name": "test_prompt_with_embedded_resource", "description": "A prompt with an embedded resource",
            "arguments": [{"name": "resourceUri", "description": "URI of the resource to embed", "required": true}]},
        {"name": "test_prompt_with_image", "description": "A prompt with an image"},
        {"name": "test_input_required_result_prompt",
            "description": "Asks the user for context while it builds the prompt"},
    ]))
}

/// `test_input_required_result_prompt`: asks the client's user (the handshake way, which
/// the gateway turns into `input_required` for a 2026-07-28 client), then answers.
pub async fn prompt_with_input(
    context: &RequestContext<RoleServer>,
) -> Result<GetPromptResult, ErrorData> {
    let params = typed::<rmcp::model::ElicitRequestParams>(json!({
        "message": "What context should the prompt use?",
        "requestedSchema": {"type": "object", "properties": {
            "context": {"type": "string"}}, "required": ["context"]},
    }));
    let answer = context
        .peer
        .create_elicitation(params)
        .await
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    let answer = serde_json::to_value(&answer).unwrap_or_default();
    let text = format!("Use this context: {}", answer["content"]["context"]);
    Ok(typed(json!({"messages": [
        {"role": "user", "content": {"type": "text", "text": text}}]})))
}

pub fn prompt(name: &str, args: &Option<JsonObject>) -> Result<GetPromptResult, ErrorData> {
    let arg = |key: &str| {
        args.as_ref()
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let user = |content: Value| json!({"role": "user", "content": content});
    let messages = match name {
        "test_simple_prompt" => {
            vec![user(
                json!({"type": "text", "text": "This is a simple prompt for testing."}),
            )]
        }
        "test_prompt_with_arguments" => vec![user(json!({"type": "text", "text": format!(
            "Prompt with arguments: arg1='{}', arg2='{}'", arg("arg1"), arg("arg2"))}))],
        "test_prompt_with_embedded_resource" => vec![
            user(
                json!({"type": "resource", "resource": {"uri": arg("resourceUri"),
                "mimeType": "text/plain", "text": "Embedded resource content for testing."}}),
            ),
            user(json!({"type": "text", "text": "Please process the embedded resource above."})),
        ],
        "test_prompt_with_image" => vec![
            user(json!({"type": "image", "data": IMAGE, "mimeType": "image/png"})),
            user(json!({"type": "text", "text": "Please analyze the image above."})),
        ],
        other => {
            return Err(ErrorData::invalid_params(
                format!("no prompt named {other}"),
                None,
            ));
        }
    };
    Ok(typed(json!({"messages": messages})))
}
