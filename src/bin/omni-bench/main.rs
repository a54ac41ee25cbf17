//! omni-bench: a reproducible load run against a real gateway. It starts the test MCP
//! server and the gateway (release builds from the same target directory), then measures
//! from the client side, with HDR histograms:
//!
//! - time from process start to `/readyz` answering 200, and idle resident memory;
//! - cached tool calls over HTTP at concurrency 1 and 64;
//! - uncached calls through the gateway, over its HTTP API (cache bypassed) and over its
//!   MCP endpoint (an upstream whose cache policy is `never`), against the same upstream
//!   called directly by the same MCP client, for a Streamable HTTP and a stdio upstream;
//! - resident memory idle, with 100,000 cache entries, and with 10,000 live sessions;
//! - WebSocket fan-out to 1,000 and 10,000 sessions.
//!
//! Usage: `cargo run --release --bin omni-bench -- [--seconds 5] [--out BENCHMARKS.md]
//! [--mcp-response auto|json|sse]`, or `-- --growth [1,10,100,1000]` for how costs grow
//! with the number of upstreams (growth.rs).

mod fanout;
mod growth;
mod raw;
mod sessions;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{Peer, RoleClient, ServiceExt};
use serde_json::{Value, json};

const CRITERION_HEADING: &str = "## Hot paths (criterion)";
/// Entries put in the cache for the memory figure (and the cache's bound in this run).
const CACHE_FILL: usize = 100_000;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy)]
struct Measured {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
}

/// Runs `concurrency` loops of `op` for `duration`; latency per operation in microseconds.
async fn load<F, Fut>(concurrency: usize, duration: Duration, op: F) -> Measured
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut errors = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                if !op().await {
                    errors += 1;
                }
                hist.saturating_record(t.elapsed().as_micros() as u64);
            }
            (hist, errors)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut errors = 0;
    for task in tasks {
        let (hist, e) = task.await.unwrap();
        all.add(hist).unwrap();
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Measured {
        rps: all.len() as f64 / elapsed,
        p50_us: all.value_at_quantile(0.5),
        p99_us: all.value_at_quantile(0.99),
        errors,
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn start_test_mcp(bin: &Path) -> (Killed, String) {
    start_test_mcp_with(bin, &[])
}

fn start_test_mcp_with(bin: &Path, extra: &[&str]) -> (Killed, String) {
    let mut child = Command::new(bin)
        .args(["--http", "127.0.0.1:0", "--name", "bench"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("omni-test-mcp starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("LISTENING ")
        .expect("LISTENING line")
        .to_owned();
    (Killed(child), addr)
}

/// Starts the gateway; returns it, its address, and the time to a 200 from `/readyz`.
async fn start_gateway(bin: &Path, config: &Path, data: &Path) -> (Killed, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("OMNI_LOG", "warn,omni_bridge::server=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("omni-bridge starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("gateway address");
    let http = reqwest::Client::new();
    // Polled: readiness is only visible from outside. 1 ms apart, so the figure is honest.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = http.get(format!("http://{addr}/readyz")).send().await
            && resp.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (Killed(child), addr, started.elapsed())
}

async fn wait_healthy(http: &reqwest::Client, base: &str, names: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in names {
        loop {
            let got: Value = http
                .get(format!("{base}/api/v1/servers/{name}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if got["status"] == "healthy" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never became healthy: {got}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn gateway_call(
    http: reqwest::Client,
    url: String,
    bypass: bool,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Clone + Send + 'static {
    let body = Arc::new(json!({"arguments": {"text": "bench"}}).to_string());
    move || {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        Box::pin(async move {
            let mut req = http
                .post(&url)
                .header("content-type", "application/json")
                .body((*body).clone());
            if bypass {
                req = req.header("cache-control", "no-cache");
            }
            match req.send().await {
                Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
                Err(_) => false,
            }
        })
    }
}

/// Opens a handshake-era `/mcp` session with plain HTTP requests; answers its id.
async fn mcp_session(http: &reqwest::Client, url: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "omni-bench", "version": "0"}}});
    let resp = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .expect("initialize");
    let id = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = resp.bytes().await;
    http.post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &id)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .expect("initialized");
    id
}

/// `tool` called over `/mcp` in one session by the same HTTP client as the HTTP API rows,
/// accepting JSON and SSE as MCP clients do, so each answer is a plain JSON body: the
/// gateway's `/mcp` path, without an MCP client library's own cost in the figure.
fn mcp_json_call(
    http: reqwest::Client,
    url: String,
    session: String,
    tool: &'static str,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Clone + Send + 'static {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
    move || {
        let (http, url, session) = (http.clone(), url.clone(), session.clone());
        let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move {
            let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": tool, "arguments": {"text": "bench"}}});
            let sent = http
                .post(&url)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .header("mcp-session-id", &session)
                .header("mcp-protocol-version", "2025-06-18")
                .body(body.to_string())
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => resp
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["result"].is_object() && v["result"]["isError"] != true),
                _ => false,
            }
        })
    }
}

/// `tool` called by an MCP client: the upstream itself, or the gateway's `/mcp`.
fn direct_call(
    peer: Peer<RoleClient>,
    tool: &'static str,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Clone + Send + 'static {
    move || {
        let peer = peer.clone();
        Box::pin(async move {
            let args = json!({"text": "bench"}).as_object().cloned().unwrap();
            peer.call_tool(CallToolRequestParams::new(tool).with_arguments(args))
                .await
                .is_ok_and(|r| r.is_error != Some(true))
        })
    }
}

/// Makes `count` distinct cacheable calls (64 at a time); answers how many succeeded.
async fn fill_cache(http: &reqwest::Client, url: &str, count: usize) -> usize {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (http, url, next) = (http.clone(), url.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return ok;
                }
                let body = json!({"arguments": {"text": format!("entry {i}")}});
                if let Ok(resp) = http.post(&url).json(&body).send().await
                    && resp.status().is_success()
                    && resp.bytes().await.is_ok()
                {
                    ok += 1;
                }
            }
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += task.await.unwrap_or(0);
    }
    ok
}

fn row(label: &str, c: usize, m: Measured) -> String {
    format!(
        "| {label} | {c} | {:.0} | {} | {} | {} |",
        m.rps, m.p50_us, m.p99_us, m.errors
    )
}

/// Where this program's siblings (the gateway, the test MCP server) are, and a fresh
/// working directory for a scenario run alone.
fn scenario_dirs(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let bin_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let work = std::env::temp_dir().join(format!("omni-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    (bin_dir, work)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let out: Option<PathBuf> = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    // How the gateway answers `/mcp` requests (`mcp_response`), to compare the modes.
    let mcp_response = args
        .iter()
        .position(|a| a == "--mcp-response")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "auto".to_owned());
    omni_bridge::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `--growth [N,N,...]`: only the growth scenario (see growth.rs).
    let growth: Option<Vec<usize>> = args.iter().position(|a| a == "--growth").map(|i| {
        args.get(i + 1)
            .filter(|s| !s.starts_with("--"))
            .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 10, 100, 1000])
    });
    // `--sessions [N,N,...]`: only the /mcp sessions scenario (see sessions.rs).
    let sessions: Option<Vec<usize>> = args.iter().position(|a| a == "--sessions").map(|i| {
        args.get(i + 1)
            .filter(|s| !s.starts_with("--"))
            .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_else(|| vec![1_000, 10_000])
    });
    if let Some(sizes) = sessions {
        let (bin_dir, work) = scenario_dirs("sessions");
        let report = runtime.block_on(sessions::run(&bin_dir, &work, &sizes));
        println!("{report}");
        let _ = std::fs::remove_dir_all(&work);
        return;
    }
    if let Some(sizes) = growth {
        let (bin_dir, work) = scenario_dirs("growth");
        let report = runtime.block_on(growth::run(&bin_dir, &work, &sizes));
        println!("{report}");
        let _ = std::fs::remove_dir_all(&work);
        return;
    }
    let report = runtime.block_on(run(Duration::from_secs(seconds), &mcp_response));
    println!("{report}");
    if let Some(path) = out {
        // Keep the criterion section (written by hand from `cargo bench`) if there is one.
        let kept = std::fs::read_to_string(&path)
            .ok()
            .and_then(|old| old.find(CRITERION_HEADING).map(|at| old[at..].to_owned()))
            .unwrap_or_default();
        std::fs::write(&path, format!("{report}\n{kept}")).expect("report written");
        eprintln!("wrote {}", path.display());
    }
}

async fn run(duration: Duration, mcp_response: &str) -> String {
    let bin_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let gateway_bin = bin_dir.join("omni-bridge");
    let mcp_bin = bin_dir.join("omni-test-mcp");
    let work = std::env::temp_dir().join(format!("omni-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();

    let (_mcp, mcp_addr) = start_test_mcp(&mcp_bin);
    let config = work.join("omni.toml");
    std::fs::write(
        &config,
        format!(
            "cache_max_entries = {CACHE_FILL}\nmcp_response = \"{mcp_response}\"\n\n\
             [[servers]]\nname = \"http-echo\"\ntransport = \"streamable_http\"\n\
             url = \"http://{mcp_addr}/mcp\"\nprobe_interval = \"1h\"\ncache = \"read-only\"\n\n\
             [[servers]]\nname = \"stdio-echo\"\ntransport = \"stdio\"\n\
             command = \"{mcp}\"\nprobe_interval = \"1h\"\ncache = \"read-only\"\n\n\
             [[servers]]\nname = \"mcp-http\"\ntransport = \"streamable_http\"\n\
             url = \"http://{mcp_addr}/mcp\"\nprobe_interval = \"1h\"\ncache = \"never\"\n\n\
             [[servers]]\nname = \"mcp-stdio\"\ntransport = \"stdio\"\n\
             command = \"{mcp}\"\nprobe_interval = \"1h\"\ncache = \"never\"\n",
            mcp = mcp_bin.display()
        ),
    )
    .unwrap();
    let (gateway, addr, ready) = start_gateway(&gateway_bin, &config, &work).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()
        .unwrap();
    wait_healthy(
        &http,
        &base,
        &["http-echo", "stdio-echo", "mcp-http", "mcp-stdio"],
    )
    .await;
    let idle_rss = rss_kib(gateway.0.id());

    let mut lines = vec![
        "| scenario | concurrency | requests/s | p50 µs | p99 µs | errors |".to_owned(),
        "| --- | --- | --- | --- | --- | --- |".to_owned(),
    ];
    let mut cached = Vec::new();
    let url = |server: &str| format!("{base}/api/v1/servers/{server}/tools/echo/call");
    gateway_call(http.clone(), url("http-echo"), false)().await; // prime the cache
    let cached_call = raw::RawPost::new(
        &addr,
        "/api/v1/servers/http-echo/tools/echo/call",
        &json!({"arguments": {"text": "bench"}}).to_string(),
    );
    for c in [1, 64] {
        let post = cached_call.clone();
        let m = load(c, duration, move || {
            let post = post.clone();
            async move { post.send().await }
        })
        .await;
        lines.push(row("cached call, HTTP API", c, m));
        cached.push((c, m));
    }

    // The same upstreams, reached directly by an MCP client.
    let http_peer = ()
        .serve(StreamableHttpClientTransport::from_uri(format!(
            "http://{mcp_addr}/mcp"
        )))
        .await
        .expect("direct HTTP session");
    let stdio_peer =
        ().serve(TokioChildProcess::new(tokio::process::Command::new(&mcp_bin)).unwrap())
            .await
            .expect("direct stdio session");
    // And the gateway's own MCP endpoint, by the same client, for upstreams it never caches.
    let via_mcp = ()
        .serve(StreamableHttpClientTransport::from_uri(format!(
            "{base}/mcp"
        )))
        .await
        .expect("session with the gateway's /mcp");
    let json_session = mcp_session(&http, &format!("{base}/mcp")).await;
    let mut comparisons = Vec::new();
    let mut against_api = Vec::new();
    for (server, peer, mcp_tool) in [
        ("http-echo", http_peer.peer().clone(), "mcp-http__echo"),
        ("stdio-echo", stdio_peer.peer().clone(), "mcp-stdio__echo"),
    ] {
        for c in [1, 64] {
            let direct = load(c, duration, direct_call(peer.clone(), "echo")).await;
            let api = load(c, duration, gateway_call(http.clone(), url(server), true)).await;
            let mcp = load(c, duration, direct_call(via_mcp.peer().clone(), mcp_tool)).await;
            let json_call = mcp_json_call(
                http.clone(),
                format!("{base}/mcp"),
                json_session.clone(),
                mcp_tool,
            );
            let mcp_json = load(c, duration, json_call).await;
            lines.push(row(&format!("direct MCP call, {server}"), c, direct));
            lines.push(row(
                &format!("uncached call via gateway HTTP API, {server}"),
                c,
                api,
            ));
            lines.push(row(
                &format!("uncached call via gateway /mcp, {server}"),
                c,
                mcp,
            ));
            lines.push(row(
                &format!("uncached call via gateway /mcp, JSON answers to reqwest, {server}"),
                c,
                mcp_json,
            ));
            comparisons.push(("HTTP API", server, c, direct, api));
            comparisons.push(("/mcp", server, c, direct, mcp));
            against_api.push((server, c, api, mcp, mcp_json));
        }
    }
    let busy_rss = rss_kib(gateway.0.id());
    // What the gateway keeps once the load is over: it gives memory back after a quiet
    // interval (`trim::QUIET`); read after two and a half of them.
    tokio::time::sleep(omni_bridge::trim::QUIET * 5 / 2).await;
    let rested_rss = rss_kib(gateway.0.id());
    let filled = fill_cache(&http, &url("http-echo"), CACHE_FILL).await;
    let entries = http
        .get(format!("{base}/api/v1/cache/stats"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["entries"]
        .as_u64()
        .unwrap_or(0);
    let filled_rss = rss_kib(gateway.0.id());
    let mut fan = Vec::new();
    for sessions in [1_000, 10_000] {
        fan.push(fanout::measure(&addr, &http, gateway.0.id(), sessions, 100, rss_kib).await);
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(&work);

    let mut report = String::new();
    report.push_str("# omni-bridge benchmarks\n\n");
    report.push_str(&format!(
        "Produced by `cargo run --release --bin omni-bench -- --seconds {}`: the gateway and \
         the test MCP server run as separate processes on this machine ({} cores); \
         latencies are measured by the client, in microseconds. One run; these machines \
         are shared and noisy. The cached rows use a lean keep-alive HTTP/1.1 client (one \
         connection per concurrent caller, like wrk); each uncached comparison uses the \
         same general clients on both sides (reqwest for the HTTP API, rmcp's MCP client \
         for the upstream and for `/mcp`); the rows marked \"JSON answers to reqwest\" call \
         `/mcp` in one session with the HTTP API's client, so that the two routes differ \
         only in the gateway.\n\n",
        duration.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    report.push_str(&lines.join("\n"));
    report.push_str("\n\n## Gateway versus direct (uncached)\n\n");
    report.push_str(
        "| route | upstream | concurrency | added p50 µs | p50 ratio | throughput ratio |\n",
    );
    report.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for (route, server, c, direct, through) in &comparisons {
        report.push_str(&format!(
            "| {route} | {server} | {c} | {} | {:.2} | {:.2} |\n",
            through.p50_us as i64 - direct.p50_us as i64,
            through.p50_us as f64 / direct.p50_us.max(1) as f64,
            through.rps / direct.rps.max(1.0),
        ));
    }
    report.push_str("\n## WebSocket fan-out\n\n");
    report.push_str(
        "Each round is one cache invalidation through the API, timed from the request to the \
         event's arrival at the last session (100 rounds).\n\n\
         | sessions | event to last session p50 ms | p99 ms | memory per idle session KiB | resident memory MiB |\n",
    );
    report.push_str("| --- | --- | --- | --- | --- |\n");
    for f in &fan {
        report.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            f.sessions,
            f.p50.as_secs_f64() * 1000.0,
            f.p99.as_secs_f64() * 1000.0,
            f.rss_per_session_bytes / 1024.0,
            f.rss_kib as f64 / 1024.0,
        ));
    }
    report.push_str("\n## Process\n\n");
    report.push_str(&format!(
        "- start to `/readyz` 200 (SQLite, two upstreams declared): {:.1} ms\n\
         - resident memory idle (two upstreams connected): {:.1} MiB\n\
         - resident memory after the load: {:.1} MiB, and {:.1} MiB {:.0} s later\n\
         - resident memory with {entries} cache entries ({filled} of {CACHE_FILL} fill calls \
         answered): {:.1} MiB\n",
        ready.as_secs_f64() * 1000.0,
        idle_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0,
        rested_rss as f64 / 1024.0,
        (omni_bridge::trim::QUIET * 5 / 2).as_secs_f64(),
        filled_rss as f64 / 1024.0,
    ));
    report.push_str("\n## Against the targets\n\n");
    if let Some((_, m)) = cached.iter().find(|(c, _)| *c == 64) {
        report.push_str(&format!(
            "- cached call at concurrency 64: {:.0} requests/s (target 30,000): {}; p99 {} µs (target < 2,000): {}\n",
            m.rps,
            if m.rps >= 30_000.0 { "met" } else { "missed" },
            m.p99_us,
            if m.p99_us < 2_000 { "met" } else { "missed" },
        ));
    }
    for (route, server, c, direct, through) in &comparisons {
        let added = through.p50_us as i64 - direct.p50_us as i64;
        let ratio = through.p50_us as f64 / direct.p50_us.max(1) as f64;
        let tput = through.rps / direct.rps.max(1.0);
        report.push_str(&format!(
            "- uncached, {route}, {server}, concurrency {c}: p50 ratio {ratio:.2} or +{added} µs (target ≤ 1.15 or ≤ 150 µs): {}; throughput ratio {tput:.2} (target ≥ 0.85): {}\n",
            if ratio <= 1.15 || added <= 150 { "met" } else { "missed" },
            if tput >= 0.85 { "met" } else { "missed" },
        ));
    }
    for (server, c, api, mcp, mcp_json) in &against_api {
        let ratio = |m: &Measured| m.p50_us as f64 / api.p50_us.max(1) as f64;
        report.push_str(&format!(
            "- /mcp against the HTTP API, {server}, concurrency {c}, p50: {:.2}x with JSON answers to the same client (target ≤ 1.2x): {}; {:.2}x through rmcp's client\n",
            ratio(mcp_json),
            if ratio(mcp_json) <= 1.2 { "met" } else { "missed" },
            ratio(mcp),
        ));
    }
    for f in fan.iter().filter(|f| f.sessions == 10_000) {
        report.push_str(&format!(
            "- fan-out to 10,000 sessions: p99 {:.1} ms (target < 100 ms): {}; {:.1} KiB per idle session (target < 32 KiB): {}\n",
            f.p99.as_secs_f64() * 1000.0,
            if f.p99 < Duration::from_millis(100) { "met" } else { "missed" },
            f.rss_per_session_bytes / 1024.0,
            if f.rss_per_session_bytes < 32.0 * 1024.0 { "met" } else { "missed" },
        ));
    }
    report.push_str(&format!(
        "- start to ready: {:.1} ms (target < 300 ms): {}\n- idle memory: {:.1} MiB (target < 30 MiB): {}\n\
         - memory after the load comes back: {:.1} MiB, {:.2}x idle (target within 1.5x): {}\n",
        ready.as_secs_f64() * 1000.0,
        if ready < Duration::from_millis(300) { "met" } else { "missed" },
        idle_rss as f64 / 1024.0,
        if idle_rss < 30 * 1024 { "met" } else { "missed" },
        rested_rss as f64 / 1024.0,
        rested_rss as f64 / idle_rss.max(1) as f64,
        if rested_rss * 2 <= idle_rss * 3 { "met" } else { "missed" },
    ));
    report
}
