//! Bad input and bad upstreams against a real gateway: each gets a clear error with a
//! stable code, and nothing already stored is lost.

mod common;

use std::time::Duration;

use common::{SqliteWriteLock, TestDb, TestMcp, TestServer, WAIT, stdio};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_or_oversized_bodies_are_refused_and_the_registry_keeps_its_data() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.body_limit = 64 * 1024;
    let mut server = TestServer::start(settings).await;
    server.register_healthy(&stdio("keep")).await;
    let before = server.get_json("/api/v1/servers").await;

    // JSON nested past serde_json's depth limit (128) is refused as invalid, not a crash.
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let (status, body) = server.post_raw("/api/v1/servers", deep.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid-body");
    let nested_args = format!(
        r#"{{"arguments": {{"text": {}1{}}}}}"#,
        "[".repeat(500),
        "]".repeat(500)
    );
    let (status, body) = server
        .post_raw("/api/v1/servers/keep/tools/echo/call", nested_args)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Over the body limit: 413 on the API and at /mcp.
    let big = json!({"name": "x".repeat(100 * 1024)}).to_string();
    let (status, body) = server.post_raw("/api/v1/servers", big.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "payload-too-large");
    let resp = server
        .http
        .post(server.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Names and paths that do not validate.
    let (status, body) = server
        .post_raw(
            "/api/v1/servers/BAD%20NAME/tools/echo/call",
            r#"{"arguments": {}}"#.into(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid-field");

    assert_eq!(
        server.get_json("/api/v1/servers").await["servers"],
        before["servers"]
    );
    server.stop().await;
}

/// A result over `max_result_bytes` is 502 `upstream-result-too-large` on every upstream
/// transport, not a timeout or a lost session: the transport stops keeping the message
/// at the limit and answers the call in its place (a hang would be 504 after the 20 s
/// deadline; a lost session 503 and a restart). The upstream stays healthy, its breaker
/// clean, and the next call works. Also over /mcp, as a tool error with the code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_limit_is_a_502_of_its_own_on_every_transport() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.max_result_bytes = 256 * 1024;
    let mut server = TestServer::start(settings).await;
    let http = TestMcp::start_http("127.0.0.1:0", "remote");
    let mut over_stdio = stdio("huge");
    over_stdio["timeout"] = json!("20s");
    server.register_healthy(&over_stdio).await;
    let over_http = json!({"name": "huge-http", "transport": "streamable_http",
        "url": http.mcp_url(), "timeout": "20s"});
    server.register_healthy(&over_http).await;
    let over_sse = json!({"name": "huge-sse", "transport": "sse",
        "url": http.sse_url(), "timeout": "20s"});
    server.register_healthy(&over_sse).await;
    // Streamable HTTP answering with a JSON body instead of an SSE stream.
    let over_json = json!({"name": "huge-json", "transport": "streamable_http",
        "url": http.json_url(), "timeout": "20s"});
    server.register_healthy(&over_json).await;
    for name in ["huge", "huge-http", "huge-json", "huge-sse"] {
        // Just over (the gateway's own check) and far over (cut in the transport, past
        // what rmcp itself would take).
        for bytes in [300 * 1024, 20 << 20] {
            let started = std::time::Instant::now();
            let (status, body) = server.call(name, "big", json!({"bytes": bytes})).await;
            // Answered as the limit is crossed, not when the call's 20 s deadline ends.
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{name}, {bytes}: answered after {:?}",
                started.elapsed()
            );
            let shown = body.to_string();
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (StatusCode::BAD_GATEWAY, Some("upstream-result-too-large")),
                "{name}, {bytes}: {}",
                &shown[..300.min(shown.len())]
            );
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("262144"),
                "{name}: {body}"
            );
        }
        // Under the limit, and other calls, still work; the upstream stays healthy.
        let (status, body) = server.call(name, "big", json!({"bytes": 1000})).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        let (status, _) = server
            .call(name, "echo", json!({"text": "still here"}))
            .await;
        assert_eq!(status, StatusCode::OK, "{name}");
        let shown = server.server_json(name).await;
        assert_eq!(
            (shown["status"].as_str(), shown["restart_count"].as_u64()),
            (Some("healthy"), Some(0)),
            "{name}: {shown}"
        );
        assert_eq!(
            (shown["circuit"].as_str(), &shown["last_error"]),
            (Some("closed"), &Value::Null),
            "{name}: {shown}"
        );
    }
    // At /mcp the same refusal is a tool error that starts with the code.
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
    "name": "huge__big", "arguments": {"bytes": 20 << 20},
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
    }}});
    let answer: Value = server
        .http
        .post(server.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "huge__big")
        .json(&call)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.starts_with("upstream-result-too-large"), "{answer}");
    server.stop().await;
}

/// Rows written while the store refuses writes wait in the buffer and all arrive later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_wait_out_a_locked_store_and_none_is_lost() {
    let db = TestDb::new();
    if db.is_postgres() {
        // The lock below is SQLite's; the PostgreSQL run covers the same buffer through
        // the SQLite one (the writer is backend-blind).
        return;
    }
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&stdio("audited")).await;
    // Another connection takes SQLite's write lock and holds it.
    let lock = SqliteWriteLock::hold(&db)
        .await
        .expect("a SQLite test database");
    const CALLS: usize = 25;
    for i in 0..CALLS {
        let (status, _) = server
            .call("audited", "echo", json!({"text": format!("call {i}")}))
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "calls do not wait for the audit log"
        );
    }
    // Nothing could be written while the lock was held (readers still read, in WAL mode).
    let rows = server.get_json("/api/v1/invocations?server=audited").await;
    assert_eq!(
        rows["invocations"].as_array().map(Vec::len),
        Some(0),
        "{rows}"
    );
    lock.release();

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = server
            .get_json("/api/v1/invocations?server=audited&limit=100")
            .await;
        let n = rows["invocations"].as_array().map_or(0, Vec::len);
        if n == CALLS {
            break;
        }
        assert!(n <= CALLS, "{rows}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {n} of {CALLS} rows: {rows}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = server.get_text("/metrics").await;
    let lost: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("omni_audit_rows_dropped"))
        .collect();
    assert_eq!(lost, ["omni_audit_rows_dropped_total 0"], "{metrics}");
    server.stop().await;
}

/// Upstream secrets (headers, env) appear in no answer and in no log line, even at debug
/// level and even when the upstream fails and its errors are logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_secrets_stay_out_of_answers_and_logs() {
    const SECRET: &str = "s3cr3t-9f8e7d";
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = dir.path().join("omni.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[servers]]
name = "web"
transport = "streamable_http"
url = "http://127.0.0.1:{dead}/mcp"
headers = {{ Authorization = "Bearer {SECRET}" }}
timeout = "200ms"

[[servers]]
name = "local"
transport = "stdio"
command = "{bin}"
env = {{ API_TOKEN = "{SECRET}" }}
"#,
            dead = common::free_port(),
            bin = common::TestMcp::BIN,
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_omni-bridge"))
        .arg("--config")
        .arg(&config)
        .args(["--bind", &format!("127.0.0.1:{port}"), "--log", "debug"])
        .arg("--database-url")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("db.sqlite").display()
        ))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    omni_bridge::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + WAIT;
    // Ready, and the dead upstream has failed at least once (its errors are logged).
    loop {
        let listed = http.get(format!("{base}/api/v1/servers")).send().await;
        if let Ok(resp) = listed {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let failed_once = body["servers"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == "web"))
                .is_some_and(|web| !web["last_error"].is_null());
            if failed_once {
                assert!(!body.to_string().contains(SECRET), "{body}");
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in [
        "/api/v1/servers/web",
        "/api/v1/servers/local",
        "/api/v1/tools",
        "/metrics",
    ] {
        let text = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains(SECRET), "{path}: {text}");
    }
    // SAFETY: SIGTERM to the gateway this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        let mut log = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        log
    })
    .await
    .unwrap();
    assert!(output.contains("web"), "the log is there: {output}");
    assert!(!output.contains(SECRET), "a secret in the log:\n{output}");
}
