//! Interoperability with MCP servers nobody here wrote. They need programs a fresh machine
//! lacks, so they are ignored by `cargo test`; `.ci/run` installs the programs
//! (`npm install --prefix tests/interop`, `pip install mcp-server-time`) and runs them with
//! `cargo test -- --ignored`.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TestDb, TestServer, free_port};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn everything_bin() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop/node_modules/.bin/mcp-server-everything");
    assert!(
        path.exists(),
        "{} is missing: run `npm install --prefix tests/interop` (.ci/run does)",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// A server process of someone else's, killed on drop.
struct Foreign(Child);

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `mcp-server-everything <mode>` on a free port and waits until it accepts
/// connections on loopback.
async fn everything_http(mode: &str) -> (Foreign, u16) {
    let port = free_port();
    let child = Command::new(everything_bin())
        .arg(mode)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mcp-server-everything starts");
    let child = Foreign(child);
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{mode} server never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, port)
}

async fn gateway() -> (TestDb, TestServer) {
    let db = TestDb::new();
    let mut settings = db.settings();
    settings.allow_stdio_via_api = true;
    let server = TestServer::start(settings).await;
    (db, server)
}

/// Registers the upstream, waits for it to be healthy, calls one tool, returns the result.
async fn register_and_call(server: &mut TestServer, body: Value, tool: &str, args: Value) -> Value {
    let name = body["name"].as_str().unwrap().to_owned();
    let resp = server
        .http
        .post(server.url("/api/v1/servers"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    server.events.status(&name, "healthy", WAIT).await;
    let resp = server
        .http
        .post(server.url(&format!("/api/v1/servers/{name}/tools/{tool}/call")))
        .json(&json!({"arguments": args}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["result"]["isError"], true, "{body}");
    body["result"].clone()
}

fn first_text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
#[ignore = "needs @modelcontextprotocol/server-everything from npm; .ci/run installs it"]
async fn server_everything_over_stdio() {
    let (_db, mut server) = gateway().await;
    let body = json!({"name": "everything", "transport": "stdio",
                      "command": everything_bin(), "args": ["stdio"], "timeout": "30s"});
    let result = register_and_call(&mut server, body, "echo", json!({"message": "hi"})).await;
    assert_eq!(first_text(&result), "Echo: hi");
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs @modelcontextprotocol/server-everything from npm; .ci/run installs it"]
async fn server_everything_over_sse() {
    let (_child, port) = everything_http("sse").await;
    let (_db, mut server) = gateway().await;
    let body = json!({"name": "everything-sse", "transport": "sse",
                      "url": format!("http://127.0.0.1:{port}/sse")});
    let result = register_and_call(&mut server, body, "get-sum", json!({"a": 2, "b": 40})).await;
    assert!(first_text(&result).contains("42"), "{result}");
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs @modelcontextprotocol/server-everything from npm; .ci/run installs it"]
async fn server_everything_over_streamable_http() {
    let (_child, port) = everything_http("streamableHttp").await;
    let (_db, mut server) = gateway().await;
    let body = json!({"name": "everything-http", "transport": "streamable_http",
                      "url": format!("http://127.0.0.1:{port}/mcp")});
    let result =
        register_and_call(&mut server, body, "echo", json!({"message": "over http"})).await;
    assert_eq!(first_text(&result), "Echo: over http");
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs mcp-server-time from PyPI; .ci/run installs it"]
async fn mcp_server_time_over_stdio() {
    let (_db, mut server) = gateway().await;
    let body = json!({"name": "time", "transport": "stdio", "command": "python3",
                      "args": ["-m", "mcp_server_time"], "timeout": "30s"});
    let result = register_and_call(
        &mut server,
        body,
        "get_current_time",
        json!({"timezone": "UTC"}),
    )
    .await;
    let text = first_text(&result);
    assert!(text.contains("UTC"), "{text}");
    server.stop().await;
}
