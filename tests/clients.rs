//! `/mcp` against MCP clients nobody here wrote: the official Python SDK (PyPI `mcp`) and
//! `@modelcontextprotocol/inspector-cli` (npm). They need programs a fresh machine lacks,
//! so they are ignored by `cargo test`; `.ci/run` installs them (a venv under
//! `tests/interop/.venv`, `npm install --prefix tests/interop`) and runs them with
//! `cargo test -- --ignored`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{TestDb, TestServer, stdio};
use serde_json::Value;

fn interop(path: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(path);
    assert!(
        path.exists(),
        "{} is missing: run .ci/run, which installs the interoperability clients",
        path.display()
    );
    path
}

/// A gateway with two upstreams and pages of three tools, so clients must paginate.
async fn gateway(db: &TestDb) -> TestServer {
    let mut settings = db.stdio_settings();
    settings.mcp.page_size = 3;
    let mut server = TestServer::start(settings).await;
    server.register_healthy(&stdio("alpha")).await;
    server.register_healthy(&stdio("beta")).await;
    server
}

/// Every tool the gateway should expose, as `server__tool`, in catalogue order (by
/// server, then the upstream's own order).
async fn catalogue_order(server: &TestServer) -> Vec<String> {
    let catalogue = server.get_json("/api/v1/tools").await;
    catalogue["tools"]
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
        .collect()
}

async fn expected_names(server: &TestServer) -> Vec<String> {
    let mut names = catalogue_order(server).await;
    names.sort();
    names
}

fn names_in(tools: &Value) -> Vec<String> {
    let mut names: Vec<String> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Runs a client to completion off the async runtime; answers its stdout as JSON.
async fn run(mut command: Command) -> Value {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("client starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client failed ({}): {}\n{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python MCP SDK in tests/interop/.venv; .ci/run installs it"]
async fn python_sdk_lists_and_calls_in_both_eras() {
    let db = TestDb::new();
    let server = gateway(&db).await;
    let expected = expected_names(&server).await;
    let python = interop(".venv/bin/python");
    // `auto` probes server/discover and stays on 2026-07-28; `legacy` uses initialize.
    for (mode, version) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        let mut command = Command::new(&python);
        command
            .arg(interop("mcp_client.py"))
            .arg(server.url("/mcp"))
            .args(["beta__add", r#"{"a": 2, "b": 40}"#, "--mode", mode]);
        let out = run(command).await;
        assert_eq!(out["protocolVersion"], version, "{mode}: {out}");
        assert_eq!(out["serverInfo"]["name"], "omni-bridge", "{mode}");
        assert_eq!(names_in(&out["tools"]), expected, "{mode}");
        assert_eq!(out["call"]["content"][0]["text"], "42", "{mode}: {out}");
    }
    server.stop().await;
}

/// A result far over the 1 MiB the Python SDK allows one SSE event reaches it intact in
/// both modes (the gateway answers it as one JSON body), and closing a session draws no
/// complaint from the SDK (it logged "Session termination failed: 202" at every close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python MCP SDK in tests/interop/.venv; .ci/run installs it"]
async fn python_sdk_takes_a_5_mib_result_and_closes_cleanly() {
    let db = TestDb::new();
    let server = gateway(&db).await;
    let python = interop(".venv/bin/python");
    for mode in ["auto", "legacy"] {
        let mut command = Command::new(&python);
        command
            .arg(interop("mcp_client.py"))
            .arg(server.url("/mcp"))
            .args(["beta__big", r#"{"bytes": 5242880}"#, "--mode", mode])
            .arg("--text-length");
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("client starts");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{mode}: {stderr}\n{stdout}");
        let out: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            out["call"],
            serde_json::json!({"textLength": 5242880, "isError": false}),
            "{mode}"
        );
        assert!(!stderr.contains("termination failed"), "{mode}: {stderr}");
    }
    server.stop().await;
}

/// In its default mode (2026-07-28), the Python SDK gets an upstream's sampling and
/// elicitation through the gateway: its callbacks answer the `input_required` results
/// and the calls complete (they were refused before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python MCP SDK in tests/interop/.venv; .ci/run installs it"]
async fn python_sdk_answers_sampling_and_elicitation_in_its_default_mode() {
    let db = TestDb::new();
    let mut server = gateway(&db).await;
    let mut fixtures = stdio("fx");
    fixtures["args"] = serde_json::json!(["--name", "fx", "--conformance"]);
    server.register_healthy(&fixtures).await;
    let python = interop(".venv/bin/python");
    for (tool, args, expected) in [
        (
            "fx__test_sampling",
            r#"{"prompt": "capital of France?"}"#,
            "LLM response: Paris",
        ),
        (
            "fx__test_elicitation",
            r#"{"message": "who are you?"}"#,
            "action=accept",
        ),
    ] {
        let mut command = Command::new(&python);
        command
            .arg(interop("mcp_client.py"))
            .arg(server.url("/mcp"))
            .args([tool, args])
            .args(["--sampling-answer", "Paris"])
            .args([
                "--elicitation-content",
                r#"{"username": "ada", "email": "a@b.c"}"#,
            ]);
        let out = run(command).await;
        assert_eq!(out["protocolVersion"], "2026-07-28", "{out}");
        let text = out["call"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(text.contains(expected), "{tool}: {out}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs @modelcontextprotocol/inspector-cli from npm; .ci/run installs it"]
async fn inspector_cli_lists_and_calls() {
    let db = TestDb::new();
    let server = gateway(&db).await;
    let expected = catalogue_order(&server).await;
    // inspector-cli 1.0.3 must run from a directory whose parent holds a package.json.
    let build = interop("node_modules/@modelcontextprotocol/inspector-cli/build");
    let inspector = |args: &[&str]| {
        let mut command = Command::new("node");
        command
            .current_dir(&build)
            .arg("index.js")
            .arg(server.url("/mcp"))
            .args(["--transport", "http"])
            .args(args);
        command
    };
    // It reads only the first page, so it sees the first three tools in order.
    let listed = run(inspector(&["--method", "tools/list"])).await;
    let first_page: Vec<String> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(first_page, expected[..3], "{listed}");
    let called = run(inspector(&[
        "--method",
        "tools/call",
        "--tool-name",
        "alpha__echo",
        "--tool-arg",
        r#"text="hello""#,
    ]))
    .await;
    assert_eq!(called["content"][0]["text"], "hello", "{called}");
    server.stop().await;
}

/// The official conformance suite, in server mode, against `/mcp` with our test MCP
/// server's conformance fixtures behind it, exposed without a prefix (the scenarios call
/// fixed names). Scenarios that cannot pass through a gateway are listed, with the
/// reason, in `tests/interop/conformance-expected-failures.yml`; the suite fails on any
/// other failure and on any listed scenario that starts passing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs @modelcontextprotocol/conformance and Node 22 from npm; .ci/run installs them"]
async fn conformance_suite_passes_against_the_gateway() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    let mut fixtures = stdio("conformance");
    fixtures["args"] = serde_json::json!(["--name", "conformance", "--conformance"]);
    fixtures["tool_prefix"] = serde_json::json!("");
    server.register_healthy(&fixtures).await;
    let dir = interop("");
    let results = tempfile::tempdir().unwrap();
    let mut command = Command::new("npx");
    command
        .current_dir(&dir)
        .args([
            "--no-install",
            "conformance",
            "server",
            "--suite",
            "all",
            "--url",
        ])
        .arg(server.url("/mcp"))
        .arg("--expected-failures")
        .arg(interop("conformance-expected-failures.yml"))
        .arg("-o")
        .arg(results.path());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("npx runs the conformance suite");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.split("=== SUMMARY ===").nth(1).unwrap_or(&stdout);
    eprintln!("{summary}");
    assert!(
        output.status.success(),
        "conformance suite failed ({}):\n{summary}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    server.stop().await;
}
