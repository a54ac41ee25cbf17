//! `omni-bench --sessions [N,...]`: what `/mcp` sessions cost as they grow. For each N
//! (1,000 and 10,000 by default) a fresh gateway with one stdio upstream opens N
//! handshake-era sessions, 64 at a time, and keeps them open: time to open them all,
//! resident memory and its share per session, a tool call's p50 while they are open (one
//! call in each of 1,000 of them), then every session closed and resident memory once the
//! gateway has been quiet.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;
use serde_json::json;

use super::{rss_kib, start_gateway, wait_healthy};

/// Requests in flight at once.
const AT_ONCE: usize = 64;

fn initialize() -> serde_json::Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "omni-bench", "version": "0"}}})
}

pub async fn run(bin_dir: &Path, work: &Path, sizes: &[usize]) -> String {
    let gateway_bin = bin_dir.join("omni-bridge");
    let mcp_bin = bin_dir.join("omni-test-mcp");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(AT_ONCE)
        .build()
        .unwrap();
    let mut lines = vec![
        "| sessions | to open all (s) | resident (MiB) | per session (KiB) | tools/call p50 with them open (µs) | resident once closed and quiet (MiB) |".to_owned(),
        "| --- | --- | --- | --- | --- | --- |".to_owned(),
    ];
    for &n in sizes {
        let config = work.join(format!("sessions-{n}.toml"));
        std::fs::write(
            &config,
            format!(
                "mcp_max_sessions = {}\nmcp_session_idle = \"1h\"\n\n[[servers]]\nname = \"echo\"\n\
                 transport = \"stdio\"\ncommand = \"{}\"\nargs = [\"--name\", \"echo\"]\n",
                n + 100,
                mcp_bin.display()
            ),
        )
        .unwrap();
        let data = work.join(format!("sessions-{n}"));
        std::fs::create_dir_all(&data).unwrap();
        let (gateway, addr, _) = start_gateway(&gateway_bin, &config, &data).await;
        let base = format!("http://{addr}");
        wait_healthy(&http, &base, &["echo"]).await;
        let pid = gateway.0.id();
        // Quiet first, so the baseline is what an idle gateway holds.
        tokio::time::sleep(omni_bridge::trim::QUIET * 2).await;
        let idle = rss_kib(pid);

        let url = format!("{base}/mcp");
        let started = Instant::now();
        let ids: Vec<String> = stream::iter(0..n)
            .map(|_| {
                let request = http
                    .post(&url)
                    .header("accept", "application/json, text/event-stream")
                    .json(&initialize());
                async move {
                    let resp = request.send().await.expect("initialize");
                    assert_eq!(resp.status(), 200, "initialize");
                    resp.headers()["mcp-session-id"]
                        .to_str()
                        .unwrap()
                        .to_owned()
                }
            })
            .buffer_unordered(AT_ONCE)
            .collect()
            .await;
        let opened = started.elapsed();
        let held = rss_kib(pid);

        let mut calls: Vec<Duration> = stream::iter(ids.iter().take(1_000))
            .map(|id| {
                let request = http
                    .post(&url)
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-session-id", id)
                    .header("mcp-protocol-version", "2025-06-18")
                    .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                        "params": {"name": "echo__echo", "arguments": {"text": "x"}}}));
                async move {
                    let t = Instant::now();
                    let resp = request.send().await.expect("tools/call");
                    assert_eq!(resp.status(), 200, "tools/call");
                    let _ = resp.bytes().await;
                    t.elapsed()
                }
            })
            .buffer_unordered(1)
            .collect()
            .await;
        calls.sort();
        let call_p50 = calls.get(calls.len() / 2).copied().unwrap_or_default();

        stream::iter(ids.iter())
            .map(|id| {
                let request = http
                    .delete(&url)
                    .header("mcp-session-id", id)
                    .header("mcp-protocol-version", "2025-06-18");
                async move {
                    let _ = request.send().await;
                }
            })
            .buffer_unordered(AT_ONCE)
            .collect::<Vec<()>>()
            .await;
        tokio::time::sleep(omni_bridge::trim::QUIET * 5 / 2).await;
        let rested = rss_kib(pid);
        drop(gateway);

        lines.push(format!(
            "| {n} | {:.2} | {:.1} | {:.1} | {} | {:.1} |",
            opened.as_secs_f64(),
            held as f64 / 1024.0,
            held.saturating_sub(idle) as f64 / n as f64,
            call_p50.as_micros(),
            rested as f64 / 1024.0,
        ));
        eprintln!("{}", lines.last().unwrap());
    }
    format!(
        "## How cost grows with /mcp sessions\n\n`cargo run --release --bin omni-bench -- --sessions {}`: \
         a fresh gateway per row with one stdio upstream; handshake-era sessions opened 64 at a \
         time and held. One run.\n\n{}\n",
        sizes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        lines.join("\n")
    )
}
