//! Many `/mcp` sessions against the real binary: 2,000 opened, used and closed leave its
//! resident memory near where it started. How much each session costs, and how the
//! costs grow, are omni-bench's figures (BENCHMARKS.md); this only holds the gateway to
//! giving the memory back.

mod common;

use std::process::Command;

use common::binary::{BIN, Gateway, client, rss_kib, runtime};
use common::poll_until;
use futures_util::future::join_all;
use serde_json::json;

const SESSIONS: usize = 2_000;
/// Sessions opened at once: each is a request of its own.
const AT_ONCE: usize = 50;

fn initialize() -> serde_json::Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "scale", "version": "0"}}})
}

/// Opens `n` sessions, calls a tool in each, and closes them all.
async fn open_use_close(base: &str, n: usize) -> usize {
    let http = client();
    let mut ids = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(AT_ONCE) {
        let opened = join_all((0..AT_ONCE.min(n - batch * AT_ONCE)).map(|_| {
            http.post(format!("{base}/mcp"))
                .header("accept", "application/json, text/event-stream")
                .json(&initialize())
                .send()
        }))
        .await;
        for resp in opened {
            let resp = resp.unwrap();
            assert_eq!(resp.status(), 200);
            ids.push(
                resp.headers()["mcp-session-id"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    for chunk in ids.chunks(AT_ONCE) {
        let called = join_all(chunk.iter().map(|id| {
            http.post(format!("{base}/mcp"))
                .header("accept", "application/json, text/event-stream")
                .header("mcp-session-id", id)
                .header("mcp-protocol-version", "2025-06-18")
                .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "demo__echo", "arguments": {"text": "hi"}}}))
                .send()
        }))
        .await;
        for resp in called {
            assert_eq!(resp.unwrap().status(), 200);
        }
    }
    for chunk in ids.chunks(AT_ONCE) {
        let closed = join_all(chunk.iter().map(|id| {
            http.delete(format!("{base}/mcp"))
                .header("mcp-session-id", id)
                .header("mcp-protocol-version", "2025-06-18")
                .send()
        }))
        .await;
        for resp in closed {
            assert_eq!(resp.unwrap().status(), 204);
        }
    }
    ids.len()
}

#[test]
fn two_thousand_mcp_sessions_opened_used_and_closed_give_their_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("omni.toml");
    std::fs::write(
        &config,
        format!(
            "mcp_max_sessions = {}\n\
             [[servers]]\nname = \"demo\"\ntransport = \"stdio\"\ncommand = \"{}\"\n\
             args = [\"--name\", \"demo\"]\nprobe_interval = \"1h\"\n",
            SESSIONS + 100,
            common::TestMcp::BIN
        ),
    )
    .unwrap();
    let gateway = Gateway::start(
        Command::new(BIN)
            .args(["--bind", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            // The trim says when it ran; the test waits for that line.
            .args(["--log", "info,omni_bridge::trim=debug"]),
    );
    let rt = runtime();
    let base = gateway.base();
    // The upstream's tools reach the catalogue.
    rt.block_on(poll_until(async || {
        let tools: serde_json::Value = client()
            .get(format!("{base}/api/v1/tools"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match tools["tools"].as_array().is_some_and(|t| !t.is_empty()) {
            true => Ok(()),
            false => Err(format!("no tools yet: {tools}")),
        }
    }));
    // A first round brings every pool and thread the gateway starts lazily to its size;
    // what it holds once that round is given back (its trim, logged) is the baseline.
    rt.block_on(open_use_close(&base, 200));
    gateway.wait_log("malloc_trim");
    let settled = rss_kib(gateway.pid);
    assert_eq!(rt.block_on(open_use_close(&base, SESSIONS)), SESSIONS);
    let loaded = rss_kib(gateway.pid);
    gateway.wait_log("malloc_trim");
    // Given back: within half again of the baseline (and a few MiB for the allocator's
    // own rounding).
    let bound = settled * 3 / 2 + 4 * 1024;
    let back = rss_kib(gateway.pid);
    assert!(
        back <= bound,
        "resident memory {back} KiB; baseline {settled} KiB, with {SESSIONS} sessions \
         {loaded} KiB, bound {bound} KiB"
    );
    eprintln!(
        "resident memory: baseline {settled} KiB, after {SESSIONS} sessions {loaded} KiB, \
         then {back} KiB"
    );
    drop(gateway);
}
