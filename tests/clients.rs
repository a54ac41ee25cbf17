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

/// Runs a Python client; answers its JSON output and its stderr, failing on a non-zero
/// exit with both.
async fn run_client(mut command: Command) -> (Value, String) {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("client starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}\n{stdout}");
    (serde_json::from_str(&stdout).unwrap(), stderr)
}

/// What a client reports of `big`'s 5 MiB of "x" when it arrived intact.
fn five_mib_intact() -> Value {
    use sha2::Digest;
    let digest = sha2::Sha256::digest("x".repeat(5242880).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    serde_json::json!({"textLength": 5242880, "sha256": hex, "isError": false})
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
        let (out, stderr) = run_client(command).await;
        // Intact: the digest of what the tool sent.
        assert_eq!(out["call"], five_mib_intact(), "{mode}");
        assert!(!stderr.contains("termination failed"), "{mode}: {stderr}");
    }
    server.stop().await;
}

/// fastmcp's client asks for progress on every call; a call that sends none is still
/// one JSON body, so its 5 MiB result arrives (as an SSE event it was refused, over the
/// 1 MiB event limit of the SDK underneath).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs fastmcp in tests/interop/.venv; .ci/run installs it"]
async fn fastmcp_takes_a_5_mib_result() {
    let db = TestDb::new();
    let server = gateway(&db).await;
    let python = interop(".venv/bin/python");
    let mut command = Command::new(&python);
    command
        .arg(interop("fastmcp_client.py"))
        .arg(server.url("/mcp"))
        .args(["beta__big", r#"{"bytes": 5242880}"#]);
    let (out, _) = run_client(command).await;
    assert_eq!(out["call"], five_mib_intact());
    assert_eq!(
        out["tools"].as_u64(),
        Some(catalogue_order(&server).await.len() as u64)
    );
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

/// Runs a conformance suite's CLI (`package` under `tests/interop/node_modules`) in
/// server mode against `url` with `args`, on the Node 22 that `.ci/run` installs; answers
/// whether it passed and its summary.
async fn conformance(package: &str, url: &str, args: &[&str], expected: &str) -> (bool, String) {
    let dir = interop("");
    let results = tempfile::tempdir().unwrap();
    let mut command = Command::new(interop("node_modules/.bin/node"));
    command
        .current_dir(&dir)
        .arg(interop(&format!("node_modules/{package}/dist/index.js")))
        .args(["server", "--url", url])
        .args(args)
        .arg("--expected-failures")
        .arg(interop(expected))
        .arg("-o")
        .arg(results.path());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("node runs the conformance suite");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.split("=== SUMMARY ===").nth(1).unwrap_or(&stdout);
    let text = format!("{summary}\n{}", String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A gateway with our test MCP server's conformance fixtures behind it (stdio),
/// exposed without a prefix (the scenarios call fixed names).
async fn conformance_gateway(db: &TestDb) -> TestServer {
    let mut server = TestServer::start(db.stdio_settings()).await;
    let mut fixtures = stdio("conformance");
    fixtures["args"] = serde_json::json!(["--name", "conformance", "--conformance"]);
    fixtures["tool_prefix"] = serde_json::json!("");
    server.register_healthy(&fixtures).await;
    server
}

/// The official conformance suite 0.1.16, every scenario, against `/mcp`. Scenarios that
/// cannot pass through a gateway would be listed, with the reason, in
/// `tests/interop/conformance-expected-failures.yml`; the suite fails on any other
/// failure and on any listed scenario that starts passing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs @modelcontextprotocol/conformance and Node 22 from npm; .ci/run installs them"]
async fn conformance_suite_passes_against_the_gateway() {
    let db = TestDb::new();
    let server = conformance_gateway(&db).await;
    let url = server.url("/mcp");
    let (passed, summary) = conformance(
        "@modelcontextprotocol/conformance",
        &url,
        &["--suite", "all"],
        "conformance-expected-failures.yml",
    )
    .await;
    eprintln!("{summary}");
    assert!(passed, "conformance suite 0.1.16 failed:\n{summary}");
    server.stop().await;
}

/// The newer suite (0.2.0-alpha.12, npm alias `conformance-next`): its active suite, then
/// each 2026-07-28 input-required scenario and the custom-header one, one at a time (the
/// suite's `all` runs scenarios at once, and over stdio an upstream's request cannot say
/// which of several clients it is for). What cannot pass is listed with the reason in
/// `tests/interop/conformance-next-expected-failures.yml`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs @modelcontextprotocol/conformance 0.2 and Node 22 from npm; .ci/run installs them"]
async fn conformance_next_passes_its_active_suite_and_input_required() {
    let db = TestDb::new();
    let server = conformance_gateway(&db).await;
    let url = server.url("/mcp");
    let expected = "conformance-next-expected-failures.yml";
    let (passed, summary) = conformance("conformance-next", &url, &[], expected).await;
    assert!(passed, "conformance 0.2 active suite failed:\n{summary}");
    let scenarios = [
        "input-required-result-basic-elicitation",
        "input-required-result-basic-sampling",
        "input-required-result-basic-list-roots",
        "input-required-result-request-state",
        "input-required-result-multiple-input-requests",
        "input-required-result-multi-round",
        "input-required-result-missing-input-response",
        "input-required-result-non-tool-request",
        "input-required-result-result-type",
        "input-required-result-unsupported-methods",
        "input-required-result-tampered-state",
        "input-required-result-capability-check",
        "input-required-result-ignore-extra-params",
        "input-required-result-validate-input",
        "http-custom-header-server-validation",
    ];
    for scenario in scenarios {
        let (passed, summary) = conformance(
            "conformance-next",
            &url,
            &["--scenario", scenario],
            expected,
        )
        .await;
        assert!(passed, "{scenario}:\n{summary}");
    }
    server.stop().await;
}
