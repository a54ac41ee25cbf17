//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
//! playwright-core (npm). Ignored by `cargo test` because a fresh machine lacks both;
//! `.ci/run` installs them and runs it with `--ignored`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestDb, TestMcp, TestServer, WAIT, free_port};
use reqwest::StatusCode;
use serde_json::json;

/// Lines the browser script prints, as they come.
struct Script {
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Script {
    fn read(stdout: std::process::ChildStdout) -> Self {
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { lines }
    }

    /// The rest of the next line that starts with `step`; fails if the script ends first.
    async fn expect(&mut self, step: &str) -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("the browser script said nothing for 60 s ({step})"))
                .unwrap_or_else(|| panic!("the browser script ended before {step}"));
            if let Some(rest) = line.strip_prefix(step) {
                return rest.trim().to_owned();
            }
        }
    }
}

#[tokio::test]
#[ignore = "needs Debian's chromium and playwright-core from npm; .ci/run installs them"]
async fn the_dashboard_shows_an_upstream_going_down_without_a_reload() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join("tests/interop/node_modules/playwright-core");
    assert!(
        modules.exists(),
        "run `npm install --prefix tests/interop` (.ci/run does)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "install Debian's chromium (.ci/run does)"
    );
    let db = TestDb::new();
    let mut settings = db.settings();
    settings.allow_stdio_via_api = true;
    // A long backoff keeps the upstream visibly down after the kill.
    settings.upstreams.restart.base_delay = Duration::from_secs(30);
    settings.upstreams.restart.max_delay = Duration::from_secs(30);
    // Probes publish nothing; system_metrics brings their numbers to the page.
    settings.live.metrics_interval = Duration::from_millis(300);
    let mut server = TestServer::start(settings).await;
    let body = json!({"name": "watched", "transport": "stdio", "command": TestMcp::BIN,
                      "args": ["--name", "watched"], "probe_interval": "300ms"});
    let resp = server
        .http
        .post(server.url("/api/v1/servers"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    server
        .events
        .status("watched", "healthy", Duration::from_secs(20))
        .await;
    let pid = server.get_json("/api/v1/servers/watched").await["pid"]
        .as_i64()
        .unwrap();

    let screenshot = std::env::temp_dir().join("omni-dashboard.png");
    let mut node = Command::new("node")
        .arg(root.join("tests/interop/dashboard.mjs"))
        .arg(server.url("/"))
        .arg("watched")
        .arg(&screenshot)
        .current_dir(root.join("tests/interop"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let mut script = Script::read(node.stdout.take().unwrap());
    script.expect("READY").await;
    // A later probe shows on the page without a reload, latency included.
    let latency = script.expect("PROBED").await;
    assert!(latency.ends_with(" ms"), "latency shown as {latency:?}");
    // SAFETY: kill(2) on the upstream process our gateway started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let changed = script.expect("CHANGED").await;
    assert_ne!(changed, "healthy");
    let feed = script.expect("FEED").await;
    assert!(feed.contains("watched"), "{feed}");
    // How it ended, in words: the SIGKILL above.
    assert!(feed.contains("process killed by signal 9"), "{feed}");
    // The gateway goes away: the page says so and that it is reconnecting.
    server.stop().await;
    let banner = script.expect("BANNER").await;
    assert!(banner.contains("reconnecting"), "{banner}");
    let status = tokio::task::spawn_blocking(move || node.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the browser script failed");
}

/// Fails with how to get them when Chromium or playwright-core is missing.
fn browser_installed(root: &std::path::Path) {
    assert!(
        root.join("tests/interop/node_modules/playwright-core")
            .exists(),
        "run `npm install --prefix tests/interop` (.ci/run does)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "install Debian's chromium (.ci/run does)"
    );
}

/// What a person sees opening the page on a gateway that has been serving: three
/// upstreams, two serving calls (one through the cache) and one whose port is closed.
/// The screenshot is kept at `$OMNI_DASHBOARD_PNG` when set (README's docs/dashboard.png).
#[tokio::test]
#[ignore = "needs Debian's chromium and playwright-core from npm; .ci/run installs them"]
async fn the_dashboard_opened_late_shows_history_current_numbers_and_charts() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    browser_installed(&root);
    let http = TestMcp::start_http("127.0.0.1:0", "search");
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register(&common::cached("files")).await;
    server
        .register(&json!({"name": "search", "transport": "streamable_http",
                          "url": http.mcp_url(), "probe_interval": "1h"}))
        .await;
    let closed = format!("http://127.0.0.1:{}/mcp", free_port());
    server
        .register(&json!({"name": "billing", "transport": "streamable_http", "url": closed}))
        .await;
    server.events.status("files", "healthy", WAIT).await;
    server.events.status("search", "healthy", WAIT).await;
    server.events.health("billing", "exited", WAIT).await;

    // Calls and cache hits before the page is opened.
    for a in [1, 2, 1, 1, 2, 3] {
        let (status, body) = server.call("files", "add", json!({"a": a, "b": 1})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for text in ["a", "b", "c", "d"] {
        let (status, body) = server.call("search", "echo", json!({"text": text})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let stats = server.get_json("/api/v1/cache/stats").await;
    assert!(stats["hits"].as_u64().unwrap() > 0, "{stats}");

    let screenshot = std::env::var_os("OMNI_DASHBOARD_PNG")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("omni-dashboard-opened.png"));
    let mut node = Command::new("node")
        .arg(root.join("tests/interop/dashboard_open.mjs"))
        .arg(server.url("/"))
        .arg(&screenshot)
        .args(["files", "search", "billing"])
        .current_dir(root.join("tests/interop"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let mut script = Script::read(node.stdout.take().unwrap());
    let state: serde_json::Value = serde_json::from_str(&script.expect("STATE").await).unwrap();
    let status = tokio::task::spawn_blocking(move || node.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the browser script failed");

    // History: `files` connected before the page was opened, so only the stored history
    // can have put it in the feed.
    let feed: Vec<&str> = state["feed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert!(
        feed.iter().any(|l| l.contains("files: connected")),
        "{feed:?}"
    );
    // The cache numbers are the API's, not those of the last tick before the page opened.
    assert_eq!(
        state["cache"]["hits / misses"],
        format!("{} / {}", stats["hits"], stats["misses"]),
        "{state}"
    );
    // Latency and last probe on the upstreams that serve calls.
    for name in ["files", "search"] {
        let row = &state["rows"][name];
        assert!(
            row["latency"].as_str().unwrap().ends_with(" ms"),
            "{name}: {row}"
        );
        assert_ne!(row["probe"], "—", "{name}: {row}");
    }
    // The closed port reads as such, with its URL, and nothing of the transport's types.
    let billing = &state["rows"]["billing"];
    let shown = billing["errorTitle"].as_str().unwrap();
    assert!(
        shown.contains(&format!("connection refused: {closed}")),
        "{billing}"
    );
    for internal in ["rmcp::", "WorkerTransport", "Client error", "reqwest"] {
        assert!(!shown.contains(internal), "{internal} in {shown}");
    }
    assert_eq!(billing["error"].as_str(), Some(shown), "{billing}");
    assert_eq!(billing["errorFits"], true, "{billing}");
    // Charts drawn by the page from the gateway's own numbers, no script from elsewhere.
    for name in ["files", "search"] {
        let chart = &state["charts"][name];
        assert!(chart["calls"].as_u64().unwrap() >= 2, "{name}: {chart}");
        assert!(chart["p50"].as_u64().unwrap() >= 1, "{name}: {chart}");
        assert!(chart["p99"].as_u64().unwrap() >= 1, "{name}: {chart}");
    }
    assert!(
        state["charts"]["files"]["hits"].as_u64().unwrap() >= 1,
        "{state}"
    );
    assert_eq!(
        state["charts"]["billing"],
        serde_json::Value::Null,
        "no calls, no chart"
    );
    assert_eq!(state["scripts"], json!([]), "{state}");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 0);
    server.stop().await;
}
