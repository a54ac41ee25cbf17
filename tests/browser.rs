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
