//! `omni-bridge import` and `omni-bridge connect`, run as a user runs them: the real
//! binary on real files, then the real gateway on what they wrote.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{TestDb, TestMcp, TestServer};
use omni_bridge::cli::ServeArgs;
use omni_bridge::clients::read::{self, Environment};
use omni_bridge::store::DatabaseUrl;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_omni-bridge");

fn omni(args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("OMNI_CONFIG")
        .env_remove("OMNI_API_KEY")
        .output()
        .expect("omni-bridge runs");
    eprintln!(
        "omni-bridge {}\n--- stderr:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn backups_of(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}.bak-"))
        })
        .collect()
}

/// The servers a gateway TOML file declares, as the gateway itself reads it.
fn servers_of(config: &Path) -> Vec<omni_bridge::registry::ServerSpec> {
    let args = ServeArgs {
        config: Some(config.to_owned()),
        ..ServeArgs::default()
    };
    omni_bridge::config::resolve(&args)
        .expect("the written file is a valid gateway config")
        .servers
}

fn database_arg(db: &TestDb) -> String {
    match &db.url {
        DatabaseUrl::Postgres(url) => url.clone(),
        DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
    }
}

#[actix_rt::test]
async fn imported_servers_run_behind_the_gateway_and_a_second_import_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // An upstream behind a URL that refuses calls without its token.
    let remote = TestMcp::start_http_with(
        "127.0.0.1:0",
        "remote",
        &["--require-header", "Authorization:Bearer s3cret-token"],
    );
    let client_file = dir.path().join("claude_desktop_config.json");
    write(
        &client_file,
        &json!({"mcpServers": {
            "Echo Tools": {"command": TestMcp::BIN, "args": ["--name", "echo"]},
            "other_one": {"command": TestMcp::BIN, "args": ["--name", "other"],
                          "env": {"OTHER_MODE": "${env:IMPORT_TEST_MODE}"}},
            "Remote API": {"type": "http", "url": remote.mcp_url(),
                           "headers": {"Authorization": "Bearer ${env:IMPORT_TEST_TOKEN}"}}
        }})
        .to_string(),
    );
    // The operator's own file: comments, a setting, and a server whose name an imported
    // one normalizes to.
    let config = dir.path().join("omni.toml");
    let original = format!(
        "# my gateway: these comments stay\nmcp_page_size = 50\n\n[[servers]]\n# the first one\n\
         name = \"echo-tools\"\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"--name\", \"old\"]\n",
        TestMcp::BIN
    );
    write(&config, &original);
    let env = [
        ("IMPORT_TEST_TOKEN", "s3cret-token"),
        ("IMPORT_TEST_MODE", "plain"),
    ];
    let file_arg = client_file.to_str().unwrap();
    let config_arg = config.to_str().unwrap();
    // A second client's file listing one of the same servers: imported once.
    let cursor_file = dir.path().join("cursor-mcp.json");
    write(
        &cursor_file,
        &json!({"mcpServers": {"echo": {"command": TestMcp::BIN, "args": ["--name", "echo"]}}})
            .to_string(),
    );
    let cursor_arg = cursor_file.to_str().unwrap();

    // A dry run says what it would add and changes nothing; secrets are not printed.
    let dry = omni(
        &["import", "--config", config_arg, "--dry-run", file_arg],
        &env,
    );
    assert!(dry.status.success());
    let printed = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(printed.matches("[[servers]]").count(), 3, "{printed}");
    assert!(!printed.contains("s3cret-token"), "{printed}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);

    let first = omni(
        &["import", "--config", config_arg, file_arg, cursor_arg],
        &env,
    );
    assert!(first.status.success());
    let said = stderr(&first);
    assert!(
        said.contains("\"echo\": the same server as \"Echo Tools\""),
        "{said}"
    );
    assert!(
        said.contains("\"Echo Tools\": renamed to echo-tools-2 (that name is taken)"),
        "{said}"
    );
    assert!(
        said.contains("\"Remote API\": renamed to remote-api (the registry's name rules)"),
        "{said}"
    );
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.starts_with("# my gateway: these comments stay\n"));
    assert!(written.contains("# the first one\n"), "{written}");
    assert!(written.contains("mcp_page_size = 50"), "{written}");
    assert_eq!(backups_of(&config).len(), 1);
    let servers = servers_of(&config);
    let names: Vec<_> = servers.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(
        names,
        // In the client file's order (json! writes its keys sorted).
        ["echo-tools", "echo-tools-2", "remote-api", "other-one"]
    );

    // Again: every server is already there; the file is left as it is.
    let again = omni(&["import", "--config", config_arg, file_arg], &env);
    assert!(again.status.success());
    assert!(
        stderr(&again).contains("nothing to do"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);

    // The gateway runs what was imported: the stdio ones, and the remote one with the
    // token the import resolved from the environment.
    let db = TestDb::new();
    let mut settings = db.settings();
    settings.servers = servers;
    let server = TestServer::start(settings).await;
    for name in ["echo-tools", "echo-tools-2", "other-one", "remote-api"] {
        server.wait_mcp_live(name, true).await;
    }
    let (status, body) = server
        .call("remote-api", "echo", json!({"text": "through the import"}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert!(body.to_string().contains("through the import"), "{body}");
    server.stop().await;
}

#[actix_rt::test]
async fn entries_it_cannot_import_stop_it_with_a_line_each_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let vscode = dir.path().join(".vscode/mcp.json");
    write(
        &vscode,
        r#"{
          // a VS Code file: comments and prompts
          "inputs": [{"type": "promptString", "id": "token", "password": true}],
          "servers": {
            "fine": {"type": "stdio", "command": "uvx", "args": ["mcp-server-time"]},
            "prompted": {"type": "http", "url": "https://example.com/mcp",
                         "headers": {"Authorization": "Bearer ${input:token}"}},
            "nothing": {"type": "stdio"},
            "socket": {"type": "websocket", "url": "ws://127.0.0.1:1/"},
          }
        }"#,
    );
    let not_a_client_file = dir.path().join("package.json");
    write(&not_a_client_file, r#"{"name": "x", "dependencies": {}}"#);
    let config = dir.path().join("omni.toml");
    write(&config, "# untouched\n");
    let out = omni(
        &[
            "import",
            "--config",
            config.to_str().unwrap(),
            vscode.to_str().unwrap(),
            not_a_client_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let said = stderr(&out);
    let lines: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("omni-bridge import: "))
        .collect();
    assert_eq!(lines.len(), 5, "{said}");
    // In the file's order.
    assert!(lines[0].contains("servers.prompted: headers.Authorization: ${input:token}"));
    assert!(lines[1].ends_with("servers.nothing: type stdio needs a \"command\""));
    assert!(lines[2].contains("servers.socket: type \"websocket\""));
    assert!(lines[3].contains("package.json: no server list"));
    assert!(lines[4].contains("nothing imported"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# untouched\n");
    assert!(backups_of(&config).is_empty());
}

/// What `connect` wrote for the gateway, read back with the import's own reader.
fn written_entry(file: &Path) -> read::Entry {
    let read = read::read_file(file, &Environment::of_process()).expect("readable");
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    read.entries
        .into_iter()
        .find(|e| e.original == "omni-bridge")
        .expect("the entry is there")
}

#[actix_rt::test]
async fn connect_writes_an_entry_each_client_reads_and_its_new_key_opens_mcp() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let database = database_arg(&db);
    // Keys are created in the gateway's store before it starts, as `keys create` does.
    let claude_code = dir.path().join("project/.mcp.json");
    write(
        &claude_code,
        "{\n  // the team's servers\n  \"mcpServers\": {\n    \"time\": {\"command\": \"uvx\", \"args\": [\"mcp-server-time\"]}\n  }\n}\n",
    );
    let out = omni(
        &[
            "connect",
            "claude-code",
            "--key",
            "laptop-claude",
            "--write",
            "--file",
            claude_code.to_str().unwrap(),
            "--url",
            "http://127.0.0.1:1",
            "--database-url",
            &database,
        ],
        &[],
    );
    assert!(out.status.success());
    let text = std::fs::read_to_string(&claude_code).unwrap();
    assert!(text.contains("// the team's servers"), "{text}");
    assert_eq!(backups_of(&claude_code).len(), 1);
    let entry = written_entry(&claude_code);
    assert_eq!(entry.input.transport.as_deref(), Some("streamable_http"));
    let authorization = entry.input.headers.as_ref().unwrap()["Authorization"].clone();
    assert!(authorization.starts_with("Bearer "), "{authorization}");
    // The other server is still there, unchanged.
    let others = read::read_file(&claude_code, &Environment::of_process()).unwrap();
    assert!(others.entries.iter().any(|e| e.original == "time"));

    // The gateway on the same store takes that key at /mcp, as an operator.
    let server = TestServer::start(db.settings()).await;
    let mcp = server.url("/mcp");
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    let send = |auth: Option<&str>| {
        let mut request = server
            .http
            .post(&mcp)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    assert_eq!(send(None).await.unwrap().status(), 401);
    assert_eq!(send(Some(&authorization)).await.unwrap().status(), 200);
    server.stop().await;

    // Every client's entry, in its own shape, reads back pointing at the gateway.
    let url = "http://127.0.0.1:18080";
    for (client, file) in [
        ("claude-code", "a/.mcp.json"),
        ("cursor", "b/mcp.json"),
        ("vscode", "c/.vscode/mcp.json"),
        ("claude-desktop", "d/claude_desktop_config.json"),
    ] {
        let file = dir.path().join(file);
        let out = omni(
            &[
                "connect",
                client,
                "--api-key",
                "k-123",
                "--write",
                "--file",
                file.to_str().unwrap(),
                "--url",
                url,
            ],
            &[],
        );
        assert!(out.status.success(), "{client}");
        let entry = written_entry(&file);
        let input = &entry.input;
        if client == "claude-desktop" {
            assert_eq!(input.command.as_deref(), Some("npx"), "{client}");
            let args = input.args.as_ref().unwrap();
            assert!(
                args.iter().any(|a| a == "http://127.0.0.1:18080/mcp"),
                "{args:?}"
            );
            assert_eq!(
                input.env.as_ref().unwrap()[omni_bridge::clients::connect::AUTH_VARIABLE],
                "Bearer k-123"
            );
        } else {
            assert_eq!(
                input.url.as_deref(),
                Some("http://127.0.0.1:18080/mcp"),
                "{client}"
            );
            assert_eq!(
                input.headers.as_ref().unwrap()["Authorization"],
                "Bearer k-123"
            );
        }
        // Without --write it prints the same entry and writes nothing.
        let other = dir.path().join(format!("printed-{client}.json"));
        let printed = omni(
            &[
                "connect",
                client,
                "--api-key",
                "k-123",
                "--url",
                url,
                "--file",
                other.to_str().unwrap(),
            ],
            &[],
        );
        assert!(printed.status.success());
        assert!(!other.exists());
        let value: Value = serde_json::from_slice(&printed.stdout).unwrap();
        let key = if client == "vscode" {
            "servers"
        } else {
            "mcpServers"
        };
        assert!(value[key]["omni-bridge"].is_object(), "{value}");
    }

    // A client's file that is not JSON is refused and left as it was, and the key that
    // was asked for is not made.
    let broken = dir.path().join("broken/.mcp.json");
    write(&broken, "{ this is not json");
    let out = omni(
        &[
            "connect",
            "claude-code",
            "--key",
            "orphan",
            "--write",
            "--file",
            broken.to_str().unwrap(),
            "--url",
            url,
            "--database-url",
            &database,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not JSON"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&broken).unwrap(),
        "{ this is not json"
    );
    let keys = omni(&["keys", "--database-url", &database, "list"], &[]);
    let listed = String::from_utf8_lossy(&keys.stdout);
    assert!(
        listed.contains("laptop-claude") && !listed.contains("orphan"),
        "{listed}"
    );

    // A URL given with its path and a trailing slash is the same /mcp.
    let slash = dir.path().join("slash/.mcp.json");
    let out = omni(
        &[
            "connect",
            "claude-code",
            "--api-key",
            "k",
            "--write",
            "--file",
            slash.to_str().unwrap(),
            "--url",
            "http://127.0.0.1:18080/mcp/",
        ],
        &[],
    );
    assert!(out.status.success());
    assert_eq!(
        written_entry(&slash).input.url.as_deref(),
        Some("http://127.0.0.1:18080/mcp")
    );

    // Importing a client's file after connect leaves the gateway's own entry out.
    let desktop = dir.path().join("d/claude_desktop_config.json");
    let out = omni(&["import", "--dry-run", desktop.to_str().unwrap()], &[]);
    assert!(out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains("\"omni-bridge\": skipped: it points a client at an omni-bridge gateway"),
        "{said}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("[[servers]]"));
}

#[actix_rt::test]
async fn import_through_the_api_registers_what_the_gateway_allows_and_says_what_it_refused() {
    let dir = tempfile::tempdir().unwrap();
    let remote = TestMcp::start_http("127.0.0.1:0", "remote");
    let client_file = dir.path().join("mcp.json");
    write(
        &client_file,
        &json!({"mcpServers": {
            "remote": {"url": remote.mcp_url()},
            "local": {"command": TestMcp::BIN}
        }})
        .to_string(),
    );
    // Stdio servers only from the file here (the default).
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;
    let args = [
        "import",
        "--url",
        &server.base,
        client_file.to_str().unwrap(),
    ];
    let out = omni(&args, &[]);
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    assert!(said.contains("registered remote"), "{said}");
    assert!(said.contains("local: 403 stdio-not-allowed"), "{said}");
    server.wait_mcp_live("remote", true).await;
    let (status, body) = server.call("remote", "echo", json!({"text": "hi"})).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    // Again: the registered one is recognised and left alone.
    let out = omni(&args, &[]);
    let said = stderr(&out);
    assert!(
        said.contains("\"remote\": already there as remote"),
        "{said}"
    );
    assert!(!said.contains("registered remote"), "{said}");
    server.stop().await;
}

/// Runs `tests/interop/client_entry.py FILE omni-bridge`: the Python SDK connecting as the
/// client would from that file's entry; answers the tool names it lists.
async fn tools_seen_from(file: &Path) -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run .ci/run, which installs the interoperability clients",
        python.display()
    );
    let mut command = tokio::process::Command::new(python);
    command
        .arg(root.join("client_entry.py"))
        .arg(file)
        .arg("omni-bridge")
        .kill_on_drop(true);
    let output = tokio::time::timeout(std::time::Duration::from_secs(180), command.output())
        .await
        .expect("the client lists tools within 180 s")
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

/// The issue's user: a Claude Desktop config of `npx` and `uvx` servers, imported, then
/// Claude Code and Claude Desktop connected; both see those servers' tools through the
/// gateway (Claude Desktop's through `mcp-remote`, started from the entry written for it).
#[actix_rt::test]
#[ignore = "fetches npm and PyPI packages with npx and uvx, needs the Python SDK; .ci/run installs uv and the SDK"]
async fn a_claude_desktop_config_of_npx_and_uvx_servers_reaches_claude_code_and_desktop() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("notes.txt"), "hello").unwrap();
    let desktop = dir.path().join("claude_desktop_config.json");
    write(
        &desktop,
        &format!(
            r#"{{
  "mcpServers": {{
    "everything": {{"command": "npx", "args": ["-y", "@modelcontextprotocol/server-everything@2026.8.31", "stdio"]}},
    "filesystem": {{"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem@2026.8.31", "{}"]}},
    "time": {{"command": "uvx", "args": ["mcp-server-time@2026.10.19"]}}
  }}
}}"#,
            shared.display()
        ),
    );
    let config = dir.path().join("omni.toml");
    let out = omni(
        &[
            "import",
            "--config",
            config.to_str().unwrap(),
            desktop.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success());
    let mut servers = servers_of(&config);
    assert_eq!(servers.len(), 3);
    // Someone else's programs, fetched on first start: give them time.
    for spec in &mut servers {
        spec.timeout = std::time::Duration::from_secs(120);
    }
    let db = TestDb::new();
    let mut settings = db.settings();
    settings.servers = servers;
    let server = TestServer::start(settings).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let status = server.get_json("/api/v1/mcp").await;
        let live = status["live_servers"].as_array().map_or(0, Vec::len);
        if live == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all three came up: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // An operator key for the clients; from now on the gateway wants one.
    let secret = server
        .create_key(None, json!({"name": "clients", "role": "operator"}))
        .await;
    let anonymous = server
        .http
        .get(server.url("/api/v1/tools"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "the key must be what lets the clients in"
    );
    let base = server.base.clone();
    let expect = [
        "everything__echo",
        "filesystem__read_text_file",
        "time__get_current_time",
    ];

    for (client, file) in [
        ("claude-code", dir.path().join("project/.mcp.json")),
        (
            "claude-desktop",
            dir.path().join("desktop/claude_desktop_config.json"),
        ),
    ] {
        let out = omni(
            &[
                "connect",
                client,
                "--api-key",
                &secret,
                "--url",
                &base,
                "--write",
                "--file",
                file.to_str().unwrap(),
            ],
            &[],
        );
        assert!(out.status.success(), "{client}");
        let tools = tools_seen_from(&file).await;
        for name in expect {
            assert!(
                tools.iter().any(|t| t == name),
                "{client}: no {name} in {tools:?}"
            );
        }
    }
    server.stop().await;
}
