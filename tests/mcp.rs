//! The MCP endpoint `/mcp` against real gateways, real upstreams (our test MCP server
//! over stdio) and a real MCP client (rmcp), plus the transport rules checked on the wire.

mod common;

use std::time::Duration;

use common::{TestDb, TestServer, WAIT, poll_until, stdio};
use omni_bridge::config::Settings;
use reqwest::StatusCode;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// An MCP client that reports `notifications/tools/list_changed`, progress and log
/// messages, and answers sampling requests as a canned LLM.
#[derive(Clone)]
struct Client {
    changes: mpsc::UnboundedSender<()>,
    heard: mpsc::UnboundedSender<String>,
}

#[allow(deprecated)] // sampling and logging, relayed for clients before 2026-07-28
impl ClientHandler for Client {
    fn get_info(&self) -> ClientConfig {
        let capabilities: ClientCapabilities =
            serde_json::from_value(json!({"sampling": {}})).unwrap();
        ClientConfig::new(capabilities, Implementation::new("omni-bridge-tests", "0"))
            .with_protocol_version(ProtocolVersion::V_2025_06_18)
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.changes.send(());
    }

    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.heard.send(format!("progress {}", params.progress));
    }

    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.heard.send(format!("log {}", params.data));
    }

    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.heard.send(format!("updated {}", params.uri));
    }

    async fn create_message(
        &self,
        params: rmcp::model::CreateMessageRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        let asked = serde_json::to_value(&params.messages).unwrap()[0]["content"]["text"].clone();
        let _ = self.heard.send(format!("sampling {asked}"));
        Ok(serde_json::from_value(json!({
            "role": "assistant", "model": "canned", "stopReason": "endTurn",
            "content": {"type": "text", "text": format!("canned answer to {asked}")},
        }))
        .unwrap())
    }
}

async fn connect(
    server: &TestServer,
) -> (
    RunningService<RoleClient, Client>,
    mpsc::UnboundedReceiver<()>,
) {
    let (client, changes, _heard) = connect_listening(server).await;
    (client, changes)
}

async fn connect_listening(
    server: &TestServer,
) -> (
    RunningService<RoleClient, Client>,
    mpsc::UnboundedReceiver<()>,
    mpsc::UnboundedReceiver<String>,
) {
    let (changes, changes_rx) = mpsc::unbounded_channel();
    let (heard, heard_rx) = mpsc::unbounded_channel();
    let transport = StreamableHttpClientTransport::from_uri(server.url("/mcp"));
    let client = Client { changes, heard }
        .serve(transport)
        .await
        .expect("MCP handshake with the gateway");
    (client, changes_rx, heard_rx)
}

async fn names(client: &RunningService<RoleClient, Client>) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    names
}

fn call(name: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_owned()).with_arguments(args.as_object().unwrap().clone())
}

fn first_text(result: &rmcp::model::CallToolResult) -> String {
    let value = serde_json::to_value(result).unwrap();
    value["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn small_pages(db: &TestDb) -> Settings {
    let mut settings = db.stdio_settings();
    settings.mcp.page_size = 3;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sees_every_upstreams_tools_and_calls_them_through_the_gateway() {
    let db = TestDb::new();
    let mut server = TestServer::start(small_pages(&db)).await;
    server.register_healthy(&stdio("alpha")).await;
    server.register_healthy(&stdio("beta")).await;
    let (client, _changes) = connect(&server).await;
    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "omni-bridge");

    // The upstream's own catalogue, as the HTTP API shows it, prefixed per server.
    let catalogue = server.get_json("/api/v1/tools").await;
    let mut expected: Vec<String> = catalogue["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}__{}",
                t["server"].as_str().unwrap(),
                t["tool"].as_str().unwrap()
            )
        })
        .collect();
    expected.sort();
    assert!(expected.len() > 6, "enough tools for several pages of 3");
    assert_eq!(names(&client).await, expected);

    let result = client
        .call_tool(call("beta__add", json!({"a": 2, "b": 3})))
        .await
        .unwrap();
    assert_eq!(first_text(&result), "5");
    assert_ne!(result.is_error, Some(true));

    // The same gateway path as the HTTP API: arguments are checked against the schema.
    let bad = client
        .call_tool(call("beta__add", json!({"a": "two"})))
        .await
        .unwrap();
    assert_eq!(bad.is_error, Some(true));
    assert!(
        first_text(&bad).starts_with("invalid-arguments"),
        "{}",
        first_text(&bad)
    );

    // An unknown tool is a protocol error.
    let unknown = client
        .call_tool(call("beta__nope", json!({})))
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("beta__nope"), "{unknown}");

    // Each call was audited like an HTTP one.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = server.get_json("/api/v1/invocations?server=beta").await;
        let items = rows["invocations"].as_array().cloned().unwrap_or_default();
        if items
            .iter()
            .any(|r| r["tool"] == "add" && r["outcome"] == "ok")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no audit row: {rows}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_upstream_leaves_the_list_and_clients_are_told_both_ways() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&stdio("steady")).await;
    server.register_healthy(&stdio("victim")).await;
    let (client, mut changes) = connect(&server).await;
    assert!(names(&client).await.iter().any(|n| n == "victim__echo"));

    let pid = server.server_json("victim").await["pid"].as_i64().unwrap();
    // SAFETY: kill(2) on a child this test's gateway started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    // Told it went, then that it came back; the list follows.
    tokio::time::timeout(WAIT, changes.recv())
        .await
        .expect("list_changed on exit");
    server.events.health("victim", "connected", WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        tokio::time::timeout_at(deadline, changes.recv())
            .await
            .expect("list_changed on recovery");
        if names(&client).await.iter().any(|n| n == "victim__echo") {
            break;
        }
    }
    // A removal is a change too.
    let resp = server
        .http
        .delete(server.url("/api/v1/servers/victim"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    tokio::time::timeout(WAIT, changes.recv())
        .await
        .expect("list_changed on removal");
    let now = names(&client).await;
    assert!(now.iter().all(|n| !n.starts_with("victim__")), "{now:?}");
    assert!(now.iter().any(|n| n == "steady__echo"));
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_are_configurable_and_collisions_are_refused_or_withheld_never_merged() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    let mut plain = stdio("plain");
    plain["tool_prefix"] = json!("");
    server.register_healthy(&plain).await;
    let mut short = stdio("long-name");
    short["tool_prefix"] = json!("ln");
    server.register_healthy(&short).await;
    server.events.health("long-name", "connected", WAIT).await;
    let (client, mut changes) = connect(&server).await;
    let listed = names(&client).await;
    assert!(listed.iter().any(|n| n == "echo"), "{listed:?}");
    assert!(listed.iter().any(|n| n == "ln__echo"), "{listed:?}");
    let result = client
        .call_tool(call("echo", json!({"text": "hi"})))
        .await
        .unwrap();
    assert_eq!(first_text(&result), "hi");

    // Refused at registration: a prefix already in use, and a bad prefix.
    let mut taken = stdio("other");
    taken["tool_prefix"] = json!("ln");
    let (status, body) = server.post_raw("/api/v1/servers", taken.to_string()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "tool-name-collision");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("long-name"),
        "{body}"
    );
    let mut bad = stdio("bad");
    bad["tool_prefix"] = json!("a b");
    let (status, body) = server.post_raw("/api/v1/servers", bad.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "tool_prefix");

    // Refused at update: unprefixing a connected server whose tools are known.
    short["tool_prefix"] = json!("");
    let resp = server
        .http
        .put(server.url("/api/v1/servers/long-name"))
        .json(&short)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'echo'"),
        "{body}"
    );

    // A collision only visible once a new server connects: the name stays with the
    // server that had it first, the newcomer's tool is withheld, said so everywhere.
    let mut twin = stdio("twin");
    twin["tool_prefix"] = json!("");
    server.register_healthy(&twin).await;
    // The catalogue follows the upstream's events; its change is announced.
    tokio::time::timeout(WAIT, changes.recv())
        .await
        .expect("list_changed after the twin connects");
    let status = server.get_json("/api/v1/mcp").await;
    let withheld = status["withheld"].as_array().unwrap();
    let sides: Vec<(&str, &str)> = withheld
        .iter()
        .filter(|w| w["tool"] == "echo")
        .map(|w| (w["server"].as_str().unwrap(), w["tool"].as_str().unwrap()))
        .collect();
    assert_eq!(sides, [("twin", "echo")], "{status}");
    let listed = names(&client).await;
    assert!(listed.iter().any(|n| n == "echo"), "{listed:?}");
    let result = client
        .call_tool(call("echo", json!({"text": "still plain's"})))
        .await
        .unwrap();
    assert_eq!(first_text(&result), "still plain's");
    let tools = server.get_json("/api/v1/tools").await;
    let entry = |name: &str| {
        tools["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["server"] == name && t["tool"] == "echo")
            .unwrap()
            .clone()
    };
    assert_eq!(entry("plain")["mcp"]["name"], "echo");
    assert!(entry("twin")["mcp"]["name"].is_null());
    assert!(
        entry("twin")["mcp"]["withheld"]
            .as_str()
            .unwrap()
            .contains("server 'plain'"),
        "{}",
        entry("twin")
    );
    client.cancel().await.unwrap();
    server.stop().await;
}

/// One raw exchange with `/mcp`: status, headers, and the JSON-RPC message (from a JSON
/// body or from the SSE stream's data lines).
async fn raw(
    server: &TestServer,
    method: reqwest::Method,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = server
        .http
        .request(method, server.url("/mcp"))
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let sse = headers
        .get("content-type")
        .is_some_and(|c| c.to_str().unwrap().starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    let message = if sse {
        events(&text)
            .into_iter()
            .find(|m| m.get("id").is_some())
            .unwrap_or(Value::Null)
    } else {
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    (status, headers, message)
}

fn initialize(version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    }})
}

/// Initializes a session at `version`; answers its id.
async fn open_session(server: &TestServer, version: &str) -> String {
    let (status, headers, message) = raw(
        server,
        reqwest::Method::POST,
        &[],
        Some(initialize(version)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert_eq!(message["result"]["protocolVersion"], version);
    let id = headers["mcp-session-id"].to_str().unwrap().to_owned();
    let (status, _, _) = raw(
        server,
        reqwest::Method::POST,
        &[("mcp-session-id", &id), ("mcp-protocol-version", version)],
        Some(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_era_transport_rules_hold_on_the_wire() {
    let db = TestDb::new();
    let mut server = TestServer::start(small_pages(&db)).await;
    server.register_healthy(&stdio("wire")).await;
    let list = |id: u32, cursor: Option<&str>| {
        let mut m = json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {}});
        if let Some(c) = cursor {
            m["params"]["cursor"] = json!(c);
        }
        m
    };
    use reqwest::Method;

    // Each handshake revision is negotiated as asked; an unknown one gets the newest.
    for version in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        open_session(&server, version).await;
    }
    let (_, _, message) = raw(&server, Method::POST, &[], Some(initialize("2099-01-01"))).await;
    assert_eq!(message["result"]["protocolVersion"], "2025-11-25");

    let session = open_session(&server, "2025-06-18").await;
    let s = session.as_str();
    let v = ("mcp-protocol-version", "2025-06-18");

    // A request without a session, with an unknown one, with a bad version header.
    let (status, _, _) = raw(&server, Method::POST, &[v], Some(list(2, None))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = raw(
        &server,
        Method::POST,
        &[("mcp-session-id", "no-such-session"), v],
        Some(list(3, None)),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = raw(
        &server,
        Method::POST,
        &[
            ("mcp-session-id", s),
            ("mcp-protocol-version", "1999-01-01"),
        ],
        Some(list(4, None)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Pages follow the cursor; a made-up cursor is -32602; an unknown method -32601.
    let (status, _, first) = raw(
        &server,
        Method::POST,
        &[("mcp-session-id", s), v],
        Some(list(5, None)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["result"]["tools"].as_array().unwrap().len(), 3);
    let cursor = first["result"]["nextCursor"].as_str().unwrap();
    let (_, _, second) = raw(
        &server,
        Method::POST,
        &[("mcp-session-id", s), v],
        Some(list(6, Some(cursor))),
    )
    .await;
    assert_ne!(
        second["result"]["tools"][0]["name"],
        first["result"]["tools"][0]["name"]
    );
    let (_, _, bad) = raw(
        &server,
        Method::POST,
        &[("mcp-session-id", s), v],
        Some(list(7, Some("made-up"))),
    )
    .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    let (_, _, unknown) = raw(
        &server,
        Method::POST,
        &[("mcp-session-id", s), v],
        Some(json!({"jsonrpc": "2.0", "id": 8, "method": "no/such/method"})),
    )
    .await;
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    let (_, _, pong) = raw(
        &server,
        Method::POST,
        &[("mcp-session-id", s), v],
        Some(json!({"jsonrpc": "2.0", "id": 9, "method": "ping"})),
    )
    .await;
    assert_eq!(pong["result"], json!({}), "{pong}");

    // The server-to-client stream opens as SSE.
    let resp = server
        .http
        .get(server.url("/mcp"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", s)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(resp);

    // A browser page from elsewhere is refused; the gateway's own origin is not.
    let evil = ("origin", "http://evil.example");
    let (status, _, refusal) = raw(
        &server,
        Method::POST,
        &[evil],
        Some(initialize("2025-06-18")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        refusal["error"]["message"]
            .as_str()
            .unwrap()
            .contains("evil.example")
    );
    let own = format!("http://{}", server.addr);
    let (status, _, _) = raw(
        &server,
        Method::POST,
        &[("origin", &own)],
        Some(initialize("2025-06-18")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // DELETE ends the session; it is unknown afterwards.
    let (status, _, _) = raw(&server, Method::DELETE, &[("mcp-session-id", s), v], None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = raw(
        &server,
        Method::POST,
        &[("mcp-session-id", s), v],
        Some(list(10, None)),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// POSTs `body` to `/mcp` accepting `accept`; answers the status, the content type and
/// the body's text.
async fn post_accepting(
    server: &TestServer,
    accept: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (StatusCode, String, String) {
    let resp = post_with(server, headers)
        .header("accept", accept)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let kind = resp
        .headers()
        .get("content-type")
        .map(|c| c.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, resp.text().await.unwrap())
}

/// A POST to `/mcp` carrying `headers` (a session's id and version, say).
fn post_with(server: &TestServer, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
    headers
        .iter()
        .fold(server.http.post(server.url("/mcp")), |req, (k, v)| {
            req.header(*k, *v)
        })
}

// The `data` of each event of an SSE body, parsed.
use common::sse_messages as events;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_json_unless_something_must_come_before_the_result() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&fixtures("fx")).await;
    let both = "application/json, text/event-stream";
    let tool = |id: u32, name: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": name, "arguments": args}})
    };

    // The handshake itself answers JSON, with its session id.
    let (status, kind, text) = post_accepting(&server, both, &[], &initialize("2025-06-18")).await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::OK, "application/json"),
        "{text}"
    );
    let session = open_session(&server, "2025-06-18").await;
    let s = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];

    // A call that sends nothing before its result: one JSON body, the response itself.
    let (status, kind, text) = post_accepting(
        &server,
        both,
        &s,
        &tool(2, "fx__echo", json!({"text": "hi"})),
    )
    .await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::OK, "application/json"),
        "{text}"
    );
    let answer: Value = serde_json::from_str(&text).expect("a JSON body");
    assert_eq!(
        (
            answer["id"].clone(),
            answer["result"]["content"][0]["text"].clone()
        ),
        (json!(2), json!("hi"))
    );

    // A result far over the 1 MiB that some clients allow one SSE event, in one piece.
    let (_, kind, text) = post_accepting(
        &server,
        both,
        &s,
        &tool(3, "fx__big", json!({"bytes": 5 << 20})),
    )
    .await;
    assert_eq!(kind, "application/json");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["result"]["content"][0]["text"]
            .as_str()
            .map(str::len),
        Some(5 << 20)
    );

    // Asked for progress: a stream, progress first, then the result.
    let mut progress = tool(4, "fx__test_tool_with_progress", json!({}));
    progress["params"]["_meta"] = json!({"progressToken": "p4"});
    let (_, kind, text) = post_accepting(&server, both, &s, &progress).await;
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let sent = events(&text);
    assert_eq!(
        sent.first().map(|m| m["method"].clone()),
        Some(json!("notifications/progress")),
        "{text}"
    );
    assert_eq!(
        sent.last().map(|m| m["id"].clone()),
        Some(json!(4)),
        "{text}"
    );

    // An upstream's request during the call (sampling) comes before the result: the
    // answer turns into a stream there, starting with that request, which the client
    // answers; the result follows on the same stream.
    let mut init = initialize("2025-06-18");
    init["params"]["capabilities"] = json!({"sampling": {}});
    let resp = server
        .http
        .post(server.url("/mcp"))
        .header("accept", both)
        .json(&init)
        .send()
        .await
        .unwrap();
    let sampler = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let with_sampler = [
        ("mcp-session-id", sampler.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    post_accepting(&server, both, &with_sampler, &initialized).await;
    let resp = post_with(&server, &with_sampler)
        .header("accept", both)
        .json(&tool(5, "fx__test_sampling", json!({"prompt": "q?"})))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp.bytes_stream();
    let mut read = String::new();
    let mut answered = false;
    let result = tokio::time::timeout(WAIT, async {
        loop {
            use futures_util::StreamExt;
            let chunk = stream.next().await.expect("the stream goes on").unwrap();
            read.push_str(&String::from_utf8_lossy(&chunk));
            let sent = events(&read);
            if let Some(ask) = sent
                .iter()
                .find(|m| m["method"] == "sampling/createMessage")
                && !answered
            {
                answered = true;
                let reply = json!({"jsonrpc": "2.0", "id": ask["id"], "result": {
                    "role": "assistant", "model": "raw", "stopReason": "endTurn",
                    "content": {"type": "text", "text": "raw answer"}}});
                let (status, _, _) = post_accepting(&server, both, &with_sampler, &reply).await;
                assert_eq!(status, StatusCode::ACCEPTED);
            }
            if let Some(done) = sent.into_iter().find(|m| m["id"] == 5) {
                break done;
            }
        }
    })
    .await
    .expect("the result in time");
    assert_eq!(
        result["result"]["content"][0]["text"], "LLM response: raw answer",
        "{read}"
    );
    // The request came first on the stream, then the result.
    assert_eq!(
        events(&read)[0]["method"],
        "sampling/createMessage",
        "{read}"
    );

    // Log messages are the session's, not the call's: they go to its GET stream, and the
    // call is answered JSON.
    let mut get = server
        .http
        .get(server.url("/mcp"))
        .header("accept", "text/event-stream");
    for (k, v) in s {
        get = get.header(k, v);
    }
    let listening = get.send().await.unwrap();
    assert_eq!(listening.status(), StatusCode::OK);
    let (_, kind, text) = post_accepting(
        &server,
        both,
        &s,
        &tool(6, "fx__test_tool_with_logging", json!({})),
    )
    .await;
    assert_eq!(kind, "application/json", "{text}");
    let mut stream = listening.bytes_stream();
    let mut heard = String::new();
    tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        while events(&heard)
            .iter()
            .filter(|m| m["method"] == "notifications/message")
            .count()
            < 3
        {
            let chunk = stream
                .next()
                .await
                .expect("the GET stream goes on")
                .unwrap();
            heard.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("three log messages on the GET stream: {heard}"));

    // A client that accepts only JSON gets JSON, even when it asks for progress (which
    // it then does not get); one that accepts only SSE gets a stream; one that sends no
    // Accept is read as accepting both; one that accepts neither gets 406 in JSON-RPC.
    let (status, kind, text) = post_accepting(&server, "application/json", &s, &progress).await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::OK, "application/json"),
        "{text}"
    );
    let answer: Value = serde_json::from_str(&text).expect("a JSON body");
    assert_eq!(answer["id"], 4, "{text}");
    assert!(answer["result"].is_object(), "{text}");
    // `Accept` in two lines is one list: both, so progress that comes makes a stream.
    let resp = post_with(&server, &s)
        .header("accept", "application/json")
        .header("accept", "text/event-stream")
        .json(&progress)
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let _ = resp.text().await;
    let echo = tool(9, "fx__echo", json!({"text": "sse"}));
    let (status, kind, text) = post_accepting(&server, "text/event-stream", &s, &echo).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    assert_eq!(
        events(&text)
            .last()
            .map(|m| m["result"]["content"][0]["text"].clone()),
        Some(json!("sse")),
        "{text}"
    );
    let resp = post_with(&server, &s)
        .json(&tool(10, "fx__echo", json!({"text": "any"})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let (status, _, text) = post_accepting(&server, "text/html", &s, &echo).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{text}");
    let refusal: Value = serde_json::from_str(&text).expect("a JSON-RPC error body");
    assert_eq!(refusal["error"]["code"], -32600, "{text}");

    // A JSON-only client cannot be sent the upstream's sampling request during its call:
    // the upstream is told so at once and the call ends, answered as JSON, instead of
    // waiting for an answer that could never come.
    let sampling = tool(11, "fx__test_sampling", json!({"prompt": "q?"}));
    let (status, kind, text) = tokio::time::timeout(
        WAIT,
        post_accepting(&server, "application/json", &with_sampler, &sampling),
    )
    .await
    .expect("answered at once, not at the call's deadline");
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::OK, "application/json"),
        "{text}"
    );
    let answer: Value = serde_json::from_str(&text).expect("a JSON body");
    assert_eq!(answer["id"], 11, "{text}");
    assert!(
        text.contains("accepts only application/json"),
        "the reason reaches the caller: {text}"
    );

    // Asking for progress (fastmcp does on every call) streams only when progress comes:
    // a call that sends none is one JSON body, however large its result.
    let mut quiet = tool(12, "fx__big", json!({"bytes": 2 << 20}));
    quiet["params"]["_meta"] = json!({"progressToken": "p12"});
    let (_, kind, text) = post_accepting(&server, both, &s, &quiet).await;
    assert_eq!(kind, "application/json");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["result"]["content"][0]["text"]
            .as_str()
            .map(str::len),
        Some(2 << 20)
    );

    // 2026-07-28: the same rule without a session.
    let v = ("mcp-protocol-version", "2026-07-28");
    let call = modern(
        "tools/call",
        7,
        json!({"name": "fx__echo", "arguments": {"text": "now"}}),
    );
    let (status, kind, text) = post_accepting(
        &server,
        both,
        &[v, ("mcp-method", "tools/call"), ("mcp-name", "fx__echo")],
        &call,
    )
    .await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::OK, "application/json"),
        "{text}"
    );
    server.stop().await;

    // `mcp_response = "json"` answers JSON even when progress comes first (it is passed
    // over); `"sse"` keeps every answer a stream.
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.mcp.response = omni_bridge::mcp::answer::ResponseMode::Json;
    let mut server = TestServer::start(settings).await;
    server.register_healthy(&fixtures("fx")).await;
    let session = open_session(&server, "2025-06-18").await;
    let s = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let (_, kind, text) = post_accepting(&server, both, &s, &progress).await;
    assert_eq!(kind, "application/json", "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["id"], 4, "{text}");
    server.stop().await;

    // `mcp_response = "sse"` keeps every answer a stream.
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.mcp.response = omni_bridge::mcp::answer::ResponseMode::Sse;
    let mut server = TestServer::start(settings).await;
    server.register_healthy(&fixtures("fx")).await;
    let (_, kind, _) = post_accepting(&server, both, &[], &initialize("2025-06-18")).await;
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    server.stop().await;
}

fn modern(method: &str, id: u32, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stateless_revision_discovers_lists_and_calls_without_a_session() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&stdio("now")).await;
    use reqwest::Method;
    let v = ("mcp-protocol-version", "2026-07-28");

    let started = std::time::Instant::now();
    let (status, headers, found) = raw(
        &server,
        Method::POST,
        &[v, ("mcp-method", "server/discover")],
        Some(modern("server/discover", 1, json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert!(headers.get("mcp-session-id").is_none());
    let versions = found["result"]["supportedVersions"].as_array().unwrap();
    for v in ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"] {
        assert!(versions.iter().any(|x| x == v), "{found}");
    }
    assert_eq!(
        found["result"]["capabilities"]["tools"]["listChanged"],
        true
    );
    log_duration("server/discover", started.elapsed());

    let (status, _, listed) = raw(
        &server,
        Method::POST,
        &[v, ("mcp-method", "tools/list")],
        Some(modern("tools/list", 2, json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let tools = listed["result"]["tools"].as_array().unwrap();
    assert!(tools.iter().any(|t| t["name"] == "now__echo"), "{listed}");

    let (status, _, called) = raw(
        &server,
        Method::POST,
        &[v, ("mcp-method", "tools/call"), ("mcp-name", "now__echo")],
        Some(modern(
            "tools/call",
            3,
            json!({"name": "now__echo", "arguments": {"text": "hey"}}),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{called}");
    assert_eq!(called["result"]["content"][0]["text"], "hey");
    // Required of every 2026-07-28 result, even when the upstream speaks an older one.
    assert_eq!(called["result"]["resultType"], "complete", "{called}");

    // An unsupported version is named, with what is supported.
    let mut odd = modern("tools/list", 4, json!({}));
    odd["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let (status, _, refused) = raw(
        &server,
        Method::POST,
        &[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/list"),
        ],
        Some(odd),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"]["code"], -32022, "{refused}");
    server.stop().await;
}

fn log_duration(what: &str, took: Duration) {
    eprintln!("{what} answered in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bounded_and_idle_ones_expire() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.mcp.max_sessions = 2;
    settings.mcp.session_idle = Duration::from_millis(500);
    let server = TestServer::start(settings).await;
    use reqwest::Method;
    let first = open_session(&server, "2025-06-18").await;
    open_session(&server, "2025-06-18").await;
    let (status, headers, refused) =
        raw(&server, Method::POST, &[], Some(initialize("2025-06-18"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    assert!(headers.contains_key("retry-after"));
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 MCP sessions")
    );
    // The media type in another case is still JSON, and meets the same bound.
    let resp = server
        .http
        .post(server.url("/mcp"))
        .header("content-type", "Application/JSON")
        .header("accept", "application/json, text/event-stream")
        .body(initialize("2025-06-18").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Idle sessions end and are forgotten, which makes room again.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.get_json("/api/v1/mcp").await["sessions"] != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sessions never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, _) = raw(
        &server,
        Method::POST,
        &[
            ("mcp-session-id", &first),
            ("mcp-protocol-version", "2025-06-18"),
        ],
        Some(json!({"jsonrpc": "2.0", "id": 2, "method": "ping"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    open_session(&server, "2025-06-18").await;
    server.stop().await;
}

/// Our test MCP server with the conformance fixtures (resources, prompts, progress,
/// logging, sampling), as a registry entry.
fn fixtures(name: &str) -> Value {
    let mut body = stdio(name);
    body["args"] = json!(["--name", name, "--conformance"]);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_and_prompts_pass_through_under_the_servers_prefix() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&fixtures("fx")).await;
    server.register_healthy(&stdio("plain")).await;
    let (client, _changes) = connect(&server).await;

    let resources = client.list_all_resources().await.unwrap();
    let names: Vec<&str> = resources.iter().map(|r| r.name.as_str()).collect();
    assert!(names.contains(&"fx__static-text"), "{names:?}");
    // URIs stay the upstream's own, so a client can use one it already knows.
    let read = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "test://static-text",
        ))
        .await
        .unwrap();
    let read = serde_json::to_value(&read).unwrap();
    assert_eq!(
        read["contents"][0]["text"],
        "This is the content of the static text resource."
    );
    // A templated URI finds its upstream without a listing first.
    let templated = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "test://template/42/data",
        ))
        .await
        .unwrap();
    assert!(
        serde_json::to_value(&templated).unwrap()["contents"][0]["text"]
            .as_str()
            .unwrap()
            .contains("42")
    );
    let missing = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "test://nowhere",
        ))
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("test://nowhere"), "{missing}");

    let prompts = client.list_all_prompts().await.unwrap();
    let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert!(
        names.contains(&"fx__test_prompt_with_arguments"),
        "{names:?}"
    );

    // Another server offering the same URIs and templates, added later, with a name that
    // sorts first: what the first server offered stays its own; the newcomer's copies
    // are left out and listed, and every template name carries its prefix, spaces or not.
    server.register_healthy(&fixtures("early")).await;
    let mut templates = vec![];
    let mut listed = vec![];
    let mut status = Value::Null;
    // Listed until the catalogue has `early` live and a listing has judged its copies.
    poll_until(async || {
        listed = client.list_all_resources().await.unwrap();
        templates = client.list_all_resource_templates().await.unwrap();
        status = server.get_json("/api/v1/mcp").await;
        match status["shadowed"].as_array().map(Vec::len) {
            Some(n) if n >= 5 => Ok(()),
            _ => Err(format!("{status}")),
        }
    })
    .await;
    assert!(
        !listed.iter().any(|r| r.name.starts_with("early__")),
        "{listed:?}"
    );
    let uris: Vec<&str> = listed.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(
        uris.iter().filter(|u| **u == "test://static-text").count(),
        1,
        "{uris:?}"
    );
    let template_names: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        template_names,
        ["fx__template", "fx__Dynamic Text Resource"],
        "{template_names:?}"
    );
    let shadowed = status["shadowed"].as_array().unwrap();
    assert!(
        shadowed.iter().any(|s| s["kind"] == "resource"
            && s["name"] == "test://static-text"
            && s["server"] == "early"
            && s["kept_by"] == "fx"),
        "{status}"
    );
    assert!(
        shadowed
            .iter()
            .any(|s| s["kind"] == "resource_template" && s["name"] == "test://dynamic/{id}"),
        "{status}"
    );
    // Reads still go to the first server (its text is the same; the route is checked
    // through the status above).
    let read = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "test://static-text",
        ))
        .await
        .unwrap();
    assert!(
        serde_json::to_string(&read)
            .unwrap()
            .contains("static text")
    );
    let prompt = client
        .get_prompt(
            rmcp::model::GetPromptRequestParams::new("fx__test_prompt_with_arguments")
                .with_arguments(
                    json!({"arg1": "one", "arg2": "two"})
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
        )
        .await
        .unwrap();
    let text = serde_json::to_string(&prompt.messages).unwrap();
    assert!(
        text.contains("arg1='one'") && text.contains("arg2='two'"),
        "{text}"
    );
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_logs_and_sampling_reach_the_client_that_made_the_call() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&fixtures("fx")).await;
    let (client, _changes, mut heard) = connect_listening(&server).await;

    let sampled = client
        .call_tool(call(
            "fx__test_sampling",
            json!({"prompt": "capital of France?"}),
        ))
        .await
        .unwrap();
    assert_eq!(
        first_text(&sampled),
        "LLM response: canned answer to \"capital of France?\""
    );
    let mut seen = vec![];
    let want = |seen: &[String]| {
        seen.iter().any(|h| h.starts_with("sampling"))
            && seen.iter().filter(|h| h.starts_with("log")).count() == 3
            && seen.iter().any(|h| h == "progress 100")
    };
    client
        .call_tool(call("fx__test_tool_with_logging", json!({})))
        .await
        .unwrap();
    client
        .call_tool(call("fx__test_tool_with_progress", json!({})))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !want(&seen) {
        match tokio::time::timeout_at(deadline, heard.recv()).await {
            Ok(Some(h)) => seen.push(h),
            _ => panic!("not everything relayed: {seen:?}"),
        }
    }
    assert!(
        seen.contains(&"log \"Tool processing data\"".to_owned()),
        "{seen:?}"
    );

    // Over plain HTTP there is no client to ask: the upstream is told so, and says so.
    let (status, body) = server
        .call("fx", "test_sampling", json!({"prompt": "x"}))
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot tell"),
        "{body}"
    );
    client.cancel().await.unwrap();
    server.stop().await;
}

/// A 2026-07-28 client cannot be sent requests: an upstream's sampling and elicitation
/// during its call come back as an `input_required` result, and the client's retry with
/// the answers completes the call (the upstream call waited, parked, meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_clients_answer_sampling_and_elicitation_through_input_required() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&fixtures("fx")).await;
    let both = "application/json, text/event-stream";
    let call = |id: u32, tool: &str, args: Value, extra: Value| {
        let mut body = modern("tools/call", id, json!({"name": tool, "arguments": args}));
        body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
            json!({"sampling": {}, "elicitation": {}});
        for (k, v) in extra.as_object().unwrap() {
            body["params"][k] = v.clone();
        }
        body
    };
    let send = async |body: &Value, tool: &str| {
        let headers = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", tool),
        ];
        let (status, _, text) = post_accepting(&server, both, &headers, body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let message: Value = serde_json::from_str(&text)
            .ok()
            .or_else(|| events(&text).into_iter().find(|m| m.get("id").is_some()))
            .unwrap_or_else(|| panic!("no answer in {text}"));
        message
    };

    // Sampling: the first answer asks for input.
    let tool = "fx__test_sampling";
    let first = send(
        &call(1, tool, json!({"prompt": "capital?"}), json!({})),
        tool,
    )
    .await;
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required", "{first}");
    let requests = result["inputRequests"].as_object().unwrap();
    assert_eq!(requests.len(), 1, "{first}");
    let (key, asked) = requests.iter().next().unwrap();
    assert_eq!(asked["method"], "sampling/createMessage");
    assert_eq!(
        asked["params"]["messages"][0]["content"]["text"],
        "capital?"
    );
    let state = result["requestState"].as_str().unwrap().to_owned();
    // A forged state is refused, and does not spend the real one.
    let forged = json!({"requestState": format!("{state}-TAMPERED"),
        "inputResponses": {key.as_str(): {}}});
    let refused = send(&call(2, tool, json!({"prompt": "capital?"}), forged), tool).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    // The retry with the answer completes the call.
    let answer = json!({"requestState": state, "inputResponses": {key.as_str(): {
        "role": "assistant", "model": "raw", "stopReason": "endTurn",
        "content": {"type": "text", "text": "Paris"}}}});
    let done = send(
        &call(3, tool, json!({"prompt": "capital?"}), answer.clone()),
        tool,
    )
    .await;
    assert_eq!(
        done["result"]["content"][0]["text"], "LLM response: Paris",
        "{done}"
    );
    // A state is good once.
    let again = send(&call(4, tool, json!({"prompt": "capital?"}), answer), tool).await;
    assert_eq!(again["error"]["code"], -32602, "{again}");

    // Elicitation, answered in a retry that first forgets the answer: asked again.
    let tool = "fx__test_elicitation";
    let first = send(&call(5, tool, json!({"message": "who?"}), json!({})), tool).await;
    let state = first["result"]["requestState"].as_str().unwrap().to_owned();
    let key = first["result"]["inputRequests"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let empty = json!({"requestState": state, "inputResponses": {}});
    let asked_again = send(&call(6, tool, json!({"message": "who?"}), empty), tool).await;
    assert_eq!(
        asked_again["result"]["resultType"], "input_required",
        "{asked_again}"
    );
    assert!(
        asked_again["result"]["inputRequests"].get(&key).is_some(),
        "{asked_again}"
    );
    let state = asked_again["result"]["requestState"].as_str().unwrap();
    let answer = json!({"requestState": state, "inputResponses": {key.as_str(): {
        "action": "accept", "content": {"username": "ada", "email": "ada@example.com"}}}});
    let done = send(&call(7, tool, json!({"message": "who?"}), answer), tool).await;
    let text = done["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("action=accept") && text.contains("ada"),
        "{done}"
    );

    // prompts/get asks the same way while the upstream builds the prompt.
    let name = "fx__test_input_required_result_prompt";
    let get = |id: u32, extra: Value| {
        let mut body = modern("prompts/get", id, json!({"name": name}));
        body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
            json!({"elicitation": {}});
        for (k, v) in extra.as_object().unwrap() {
            body["params"][k] = v.clone();
        }
        body
    };
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "prompts/get"),
        ("mcp-name", name),
    ];
    let (_, _, text) = post_accepting(&server, both, &headers, &get(8, json!({}))).await;
    let first: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let key = first["result"]["inputRequests"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let answer = json!({"requestState": first["result"]["requestState"],
        "inputResponses": {key.as_str(): {"action": "accept", "content": {"context": "tests"}}}});
    let (_, _, text) = post_accepting(&server, both, &headers, &get(9, answer)).await;
    let done: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        done["result"]["messages"][0]["content"]["text"], "Use this context: \"tests\"",
        "{done}"
    );
    server.stop().await;
}

/// Waits for the next message a client heard that starts with `prefix`; answers it and
/// everything heard before it.
async fn hear(heard: &mut mpsc::UnboundedReceiver<String>, prefix: &str) -> Vec<String> {
    let mut seen = vec![];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, heard.recv()).await {
            Ok(Some(h)) => {
                let done = h.starts_with(prefix);
                seen.push(h);
                if done {
                    return seen;
                }
            }
            _ => panic!("never heard {prefix}: {seen:?}"),
        }
    }
}

/// An update of a subscribed resource reaches the sessions subscribed to that URI, and
/// no other; after unsubscribing, a session hears no more of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)] // resources/subscribe: handshake-era sessions, which this covers
async fn resource_updates_reach_exactly_the_subscribed_sessions() {
    use rmcp::model::{SubscribeRequestParams, UnsubscribeRequestParams};
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&fixtures("fx")).await;
    let (a, _, mut heard_a) = connect_listening(&server).await;
    let (b, _, mut heard_b) = connect_listening(&server).await;
    let watched = "test://watched-resource";
    let other = "test://static-text";
    a.subscribe(SubscribeRequestParams::new(watched))
        .await
        .unwrap();
    b.subscribe(SubscribeRequestParams::new(other))
        .await
        .unwrap();
    let announce = |uri: &str| call("fx__announce", json!({"kind": "updated", "uri": uri}));

    a.call_tool(announce(watched)).await.unwrap();
    assert_eq!(
        hear(&mut heard_a, "updated").await,
        [format!("updated {watched}")]
    );
    // B hears its own URI's update, and nothing before it: the first went to A only
    // (both reach B in order, on its one stream).
    a.call_tool(announce(other)).await.unwrap();
    assert_eq!(
        hear(&mut heard_b, "updated").await,
        [format!("updated {other}")]
    );

    // A leaves `watched` and takes `other`: the next `watched` update is no one's.
    a.unsubscribe(UnsubscribeRequestParams::new(watched))
        .await
        .unwrap();
    a.subscribe(SubscribeRequestParams::new(other))
        .await
        .unwrap();
    a.call_tool(announce(watched)).await.unwrap();
    a.call_tool(announce(other)).await.unwrap();
    assert_eq!(
        hear(&mut heard_a, "updated").await,
        [format!("updated {other}")]
    );
    assert_eq!(
        hear(&mut heard_b, "updated").await,
        [format!("updated {other}")]
    );
    // The upstream restarts (a reload: a new process that knows no subscription); the
    // gateway subscribes it again, and updates still arrive.
    server
        .post_raw("/api/v1/servers/fx/reload", String::new())
        .await;
    server.events.health("fx", "connected", WAIT).await;
    poll_until(async || {
        let said = a
            .call_tool(announce(other))
            .await
            .map_err(|e| e.to_string())?;
        match first_text(&said).starts_with("announced") {
            true => Ok(()),
            false => Err(first_text(&said)),
        }
    })
    .await;
    assert_eq!(
        hear(&mut heard_a, "updated").await,
        [format!("updated {other}")]
    );
    // When both leave, the upstream is told: it has no one to tell.
    a.unsubscribe(UnsubscribeRequestParams::new(other))
        .await
        .unwrap();
    let said = a.call_tool(announce(other)).await.unwrap();
    assert!(
        first_text(&said).starts_with("announced"),
        "B still holds it"
    );
    b.unsubscribe(UnsubscribeRequestParams::new(other))
        .await
        .unwrap();
    let said = a.call_tool(announce(other)).await.unwrap();
    assert_eq!(
        first_text(&said),
        format!("no one is subscribed to {other}")
    );
    // A URI no upstream offers cannot be subscribed to.
    let missing = a
        .subscribe(SubscribeRequestParams::new("test://nowhere"))
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("test://nowhere"), "{missing}");
    a.cancel().await.unwrap();
    b.cancel().await.unwrap();
    server.stop().await;
}

/// Over stdio an upstream's request names no call; when every call in flight is one
/// session's, the request is that session's, however many calls it has in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_sampling_calls_of_one_session_all_reach_it() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&fixtures("fx")).await;
    let (client, _changes, _heard) = connect_listening(&server).await;
    let questions = ["one?", "two?", "three?"];
    let calls =
        questions.map(|q| client.call_tool(call("fx__test_sampling", json!({"prompt": q}))));
    let answers = futures_util::future::join_all(calls).await;
    for (question, answer) in questions.iter().zip(answers) {
        let answer = answer.expect("sampled through the gateway");
        // Every answer is its own question's: none went to another call.
        assert_eq!(
            first_text(&answer),
            format!("LLM response: canned answer to \"{question}\""),
        );
    }
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_listen_stream_is_acknowledged_then_told_of_list_changes() {
    use futures_util::StreamExt;
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&stdio("first")).await;
    let body = modern(
        "subscriptions/listen",
        7,
        json!({"notifications": {"toolsListChanged": true, "promptsListChanged": true}}),
    );
    let resp = server
        .http
        .post(server.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    let mut buffer = String::new();
    // The next JSON-RPC message on the stream, within the deadline.
    let mut next = async || -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if let Some(data) = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .find(|d| !d.is_empty())
                {
                    return serde_json::from_str(data).unwrap();
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, stream.next())
                .await
                .expect("a message on the listen stream")
                .expect("the stream stays open")
                .unwrap();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    let ack = next().await;
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    // Only what the gateway can honour is acknowledged: tool list changes.
    assert_eq!(
        ack["params"]["notifications"]["toolsListChanged"], true,
        "{ack}"
    );
    assert!(
        ack["params"]["notifications"]
            .get("promptsListChanged")
            .is_none(),
        "{ack}"
    );

    server.register_healthy(&stdio("second")).await;
    let change = next().await;
    assert_eq!(
        change["method"], "notifications/tools/list_changed",
        "{change}"
    );
    assert_eq!(
        change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 7,
        "{change}"
    );
    server.stop().await;
}

/// The socket the gateway accepted for a client connected from `client`, found among
/// this process's descriptors (the test server runs in this process).
fn accepted_socket(server: std::net::SocketAddr, client: std::net::SocketAddr) -> Option<bool> {
    use std::os::fd::FromRawFd;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // Borrowed, never closed: ManuallyDrop keeps the gateway's descriptor open.
        let socket = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
        if socket.local_addr().ok() == Some(server) && socket.peer_addr().ok() == Some(client) {
            return socket.nodelay().ok();
        }
    }
    None
}

/// An `/mcp` call's answer is an SSE stream written in several small pieces (a priming
/// event, the result, the end of the body). With Nagle's algorithm on, each piece after
/// the first waits for the client's ACK, which a client may delay by 40 ms: a plain
/// HTTP/1.1 client saw every call take 44 ms. The gateway turns Nagle off on every
/// connection it accepts; this reads that back from the accepted socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_connections_send_small_writes_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::new();
    let server = TestServer::start(db.stdio_settings()).await;
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let client = conn.local_addr().unwrap();
    // One answered request: the connection has been accepted and set up.
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    tokio::time::timeout(WAIT, conn.read_exact(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let addr = server.addr;
    let nodelay = tokio::task::spawn_blocking(move || accepted_socket(addr, client))
        .await
        .unwrap();
    assert_eq!(nodelay, Some(true), "Nagle's algorithm is off");
    drop(conn);
    server.stop().await;
}

/// A session whose calls are all answered as plain JSON (answered without rmcp's session
/// worker) is still in use for the idle timer: calls spaced over three idle periods keep
/// it open, and the session ends once they stop. An upstream's request that such a client
/// did not declare it can answer (sampling) is refused to the upstream at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answered_calls_keep_their_session_and_refuse_what_needs_a_stream() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    let idle = Duration::from_millis(800);
    settings.mcp.session_idle = idle;
    let mut server = TestServer::start(settings).await;
    server.register_healthy(&fixtures("fx")).await;
    let id = open_session(&server, "2025-06-18").await;
    let headers = [
        ("mcp-session-id", id.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let tool = |id: u32, name: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": name, "arguments": args}})
    };
    let started = tokio::time::Instant::now();
    let mut n = 10;
    while started.elapsed() < idle * 3 {
        n += 1;
        let (status, resp, answer) = raw(
            &server,
            reqwest::Method::POST,
            &headers,
            Some(tool(n, "fx__test_simple_text", json!({}))),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "call {n}: {answer}");
        assert!(
            resp["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        assert!(answer["result"]["content"].is_array(), "{answer}");
        // The shape a handshake revision's client reads: no 2026-07-28 `resultType`.
        assert!(answer["result"].get("resultType").is_none(), "{answer}");
        // A client's pace: a call every quarter of the idle period.
        tokio::time::sleep(idle / 4).await;
    }
    // Sampling during such a call: the client did not declare it, and is not asked.
    let (status, _, answer) = raw(
        &server,
        reqwest::Method::POST,
        &headers,
        Some(tool(1, "fx__test_sampling", json!({"prompt": "q?"}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["id"], 1, "{answer}");
    assert!(
        answer.to_string().contains("cannot reach the client"),
        "{answer}"
    );
    // Quiet for longer than the idle period: the session ends.
    poll_until(
        async || match server.get_json("/api/v1/mcp").await["sessions"].as_u64() {
            Some(0) => Ok(()),
            open => Err(format!("sessions still open: {open:?}")),
        },
    )
    .await;
    server.stop().await;
}
