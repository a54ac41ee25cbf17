//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
//! playwright-core (npm). Ignored by `cargo test` because a fresh machine lacks both;
//! `.ci/run` installs them and runs it with `--ignored`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestDb, TestMcp, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

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
    let mut server = TestServer::start(settings).await;
    let body = json!({"name": "watched", "transport": "stdio", "command": TestMcp::BIN,
                      "args": ["--name", "watched"], "probe_interval": "1h"});
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
    let pid = server
        .http
        .get(server.url("/api/v1/servers/watched"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["pid"]
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
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let ready = tokio::task::spawn_blocking(move || {
        let line = lines.next().and_then(Result::ok);
        (line, lines)
    })
    .await
    .unwrap();
    let (first, mut lines) = ready;
    assert_eq!(
        first.as_deref(),
        Some("READY"),
        "the page never showed the upstream healthy"
    );
    // SAFETY: kill(2) on the upstream process our gateway started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let rest: Vec<String> =
        tokio::task::spawn_blocking(move || lines.by_ref().map_while(Result::ok).collect())
            .await
            .unwrap();
    let status = node.wait().unwrap();
    assert!(status.success(), "the browser script failed: {rest:?}");
    let changed = rest
        .iter()
        .find_map(|l| l.strip_prefix("CHANGED "))
        .expect("the page showed a change");
    assert_ne!(changed, "healthy");
    let feed = rest
        .iter()
        .find_map(|l| l.strip_prefix("FEED "))
        .unwrap_or_default();
    assert!(feed.contains("watched"), "{feed}");
    server.stop().await;
}
