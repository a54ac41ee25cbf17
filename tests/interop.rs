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
    interop_bin("mcp-server-everything")
}

/// A program that `npm install --prefix tests/interop` put in place.
fn interop_bin(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop/node_modules/.bin")
        .join(name);
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
    register_healthy_foreign(server, body).await;
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
    // A clock is read-only but its answer changes: by default it is never cached.
    let (status, again) = server
        .call("time", "get_current_time", json!({"timezone": "UTC"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["cached"], false, "{again}");
    server.stop().await;
}

/// A call through the HTTP API that must succeed; answers `cached` and the first text.
async fn call_text(server: &TestServer, name: &str, tool: &str, args: Value) -> (bool, String) {
    let (status, body) = server.call(name, tool, args).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["result"]["isError"], true, "{body}");
    (body["cached"] == true, first_text(&body["result"]))
}

async fn register_healthy_foreign(server: &mut TestServer, body: Value) {
    server.register(&body).await;
    // Someone else's program: it may take longer to start than ours.
    let name = body["name"].as_str().unwrap();
    server.events.status(name, "healthy", WAIT).await;
}

/// server-filesystem behind the gateway: by default a read after a write through the
/// gateway is fresh; with caching opted in, a repeated read is a hit and a write makes the
/// next read a miss with the new content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs @modelcontextprotocol/server-filesystem from npm; .ci/run installs it"]
async fn server_filesystem_reads_after_writes_are_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let file = root.join("notes.txt").to_string_lossy().into_owned();
    let (_db, mut server) = gateway().await;
    for (name, cache) in [("fs", None), ("fscached", Some("read-only"))] {
        let mut body = json!({"name": name, "transport": "stdio",
            "command": interop_bin("mcp-server-filesystem"),
            "args": [root.to_string_lossy()], "timeout": "30s"});
        if let Some(cache) = cache {
            body["cache"] = json!(cache);
        }
        register_healthy_foreign(&mut server, body).await;
    }
    let write = |name: &'static str, content: &'static str| {
        let args = json!({"path": file, "content": content});
        let server = &server;
        async move { call_text(server, name, "write_file", args).await }
    };
    let read = |name: &'static str| {
        let args = json!({"path": file});
        let server = &server;
        async move { call_text(server, name, "read_text_file", args).await }
    };
    write("fs", "version 1").await;
    assert_eq!(read("fs").await, (false, "version 1".to_owned()));
    write("fs", "version 2").await;
    assert_eq!(read("fs").await, (false, "version 2".to_owned()));

    // Opted in: hits until a write through the gateway.
    assert_eq!(read("fscached").await, (false, "version 2".to_owned()));
    assert_eq!(read("fscached").await, (true, "version 2".to_owned()));
    write("fscached", "version 3").await;
    assert_eq!(read("fscached").await, (false, "version 3".to_owned()));

    // The same over /mcp, by default and opted in.
    use rmcp::ServiceExt;
    let client = ()
        .serve(rmcp::transport::StreamableHttpClientTransport::from_uri(
            server.url("/mcp"),
        ))
        .await
        .expect("handshake");
    let call = async |tool: &str, args: Value| {
        let params = rmcp::model::CallToolRequestParams::new(tool.to_owned())
            .with_arguments(args.as_object().unwrap().clone());
        let result = client.call_tool(params).await.unwrap();
        let text = result.content[0]
            .as_text()
            .map(|t| t.text.clone())
            .unwrap_or_default();
        let hit = result
            .meta
            .as_ref()
            .and_then(|m| m.get("io.omni-bridge/cache"))
            .is_some_and(|c| c["hit"] == true);
        (hit, text)
    };
    for (prefix, version) in [("fs", "version 4"), ("fscached", "version 5")] {
        let (write, read) = (
            format!("{prefix}__write_file"),
            format!("{prefix}__read_text_file"),
        );
        call(&read, json!({"path": file})).await;
        call(&write, json!({"path": file, "content": version})).await;
        assert_eq!(
            call(&read, json!({"path": file})).await,
            (false, version.to_owned())
        );
    }
    client.cancel().await.unwrap();
    server.stop().await;
}

/// mcp-server-git behind the gateway, default configuration: git_log shows the commit
/// just made through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mcp-server-git from PyPI and git; .ci/run installs it"]
async fn mcp_server_git_log_shows_the_commit_just_made() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().canonicalize().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q"]);
    git(&["config", "user.email", "test@example.invalid"]);
    git(&["config", "user.name", "Test"]);
    std::fs::write(repo.join("a.txt"), "one").unwrap();
    git(&["add", "a.txt"]);
    git(&["commit", "-q", "-m", "first commit"]);
    let (_db, mut server) = gateway().await;
    let path = repo.to_string_lossy().into_owned();
    register_healthy_foreign(
        &mut server,
        json!({"name": "git", "transport": "stdio", "command": "python3",
               "args": ["-m", "mcp_server_git", "--repository", path], "timeout": "30s"}),
    )
    .await;
    let log = json!({"repo_path": path});
    let (cached, before) = call_text(&server, "git", "git_log", log.clone()).await;
    assert!(!cached && before.contains("first commit"), "{before}");
    std::fs::write(repo.join("b.txt"), "two").unwrap();
    call_text(
        &server,
        "git",
        "git_add",
        json!({"repo_path": path, "files": ["b.txt"]}),
    )
    .await;
    call_text(
        &server,
        "git",
        "git_commit",
        json!({"repo_path": path, "message": "second commit"}),
    )
    .await;
    let (cached, after) = call_text(&server, "git", "git_log", log).await;
    assert!(!cached && after.contains("second commit"), "{after}");
    server.stop().await;
}
