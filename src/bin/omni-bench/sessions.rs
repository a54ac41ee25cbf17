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
    let stateless = stateless_loops(&gateway_bin, &mcp_bin, work, sizes, &http).await;
    format!(
        "## How cost grows with /mcp sessions\n\n`cargo run --release --bin omni-bench -- --sessions {}`: \
         a fresh gateway per row with one stdio upstream; handshake-era sessions opened 64 at a \
         time and held. One run.\n\n{}\n\n{stateless}\n",
        sizes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        lines.join("\n")
    )
}

/// How long each row of clients calls.
const LOOP_FOR: Duration = Duration::from_secs(5);

/// N 2026-07-28 clients at once, each calling `tools/call` in a loop on a connection of
/// its own (no session: every request carries its `_meta`), for [`LOOP_FOR`].
async fn stateless_loops(
    gateway_bin: &Path,
    mcp_bin: &Path,
    work: &Path,
    sizes: &[usize],
    http: &reqwest::Client,
) -> String {
    let mut lines = vec![
        "| clients | calls/s | p50 (ms) | p99 (ms) | errors | resident (MiB) |".to_owned(),
        "| --- | --- | --- | --- | --- | --- |".to_owned(),
    ];
    for &n in sizes {
        let config = work.join(format!("stateless-{n}.toml"));
        std::fs::write(
            &config,
            format!(
                "[[servers]]\nname = \"echo\"\ntransport = \"stdio\"\ncommand = \"{}\"\n\
                 args = [\"--name\", \"echo\"]\n",
                mcp_bin.display()
            ),
        )
        .unwrap();
        let data = work.join(format!("stateless-{n}"));
        std::fs::create_dir_all(&data).unwrap();
        let (gateway, addr, _) = start_gateway(gateway_bin, &config, &data).await;
        let base = format!("http://{addr}");
        wait_healthy(http, &base, &["echo"]).await;
        let pid = gateway.0.id();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "echo__echo", "arguments": {"text": "x"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "omni-bench", "version": "0"},
        }}})
        .to_string();
        let url = format!("{base}/mcp");
        let until = Instant::now() + LOOP_FOR;
        let clients = (0..n).map(|_| {
            // A client of its own: its own connection, as separate agents would have.
            let client = reqwest::Client::new();
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move {
                let (mut took, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < until {
                    let t = Instant::now();
                    let sent = client
                        .post(&url)
                        .header("accept", "application/json, text/event-stream")
                        .header("content-type", "application/json")
                        .header("mcp-protocol-version", "2026-07-28")
                        .header("mcp-method", "tools/call")
                        .header("mcp-name", "echo__echo")
                        .body(body.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(resp) if resp.status() == 200 => {
                            let _ = resp.bytes().await;
                            took.push(t.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (took, errors)
            })
        });
        let done = futures_util::future::join_all(clients).await;
        let rss = rss_kib(pid);
        let (mut took, mut errors) = (Vec::new(), 0);
        for (t, e) in done.into_iter().flatten() {
            took.extend(t);
            errors += e;
        }
        took.sort();
        let at = |q: f64| {
            took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        lines.push(format!(
            "| {n} | {:.0} | {:.1} | {:.1} | {errors} | {:.1} |",
            took.len() as f64 / LOOP_FOR.as_secs_f64(),
            at(0.5),
            at(0.99),
            rss as f64 / 1024.0,
        ));
        eprintln!("{}", lines.last().unwrap());
        drop(gateway);
    }
    format!(
        "### 2026-07-28 clients calling in a loop\n\nEach of N clients has a connection of its \
         own and calls `tools/call` (no session) over and over for {} s.\n\n{}",
        LOOP_FOR.as_secs(),
        lines.join("\n")
    )
}
