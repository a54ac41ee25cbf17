//! `omni-bench --growth`: how the gateway's costs grow with the number of upstreams. For
//! N = 1, 10, 100, 1,000 Streamable HTTP upstreams (one `omni-test-mcp --endpoints N`
//! process, 20 tools each), declared in the file: time from start to all of them offered
//! at `/mcp`, resident memory, idle CPU with the default probe interval, a `tools/list`
//! page and a walk of every page at `/mcp`, and the time from one upstream's tool change
//! to `list_changed` at a client.

use std::path::Path;
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::handler::client::ClientHandler;
use rmcp::model::{ClientConfig, PaginatedRequestParams};
use rmcp::service::{NotificationContext, RoleClient};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{rss_kib, start_gateway, start_test_mcp_with};

const TOOLS: usize = 20;

/// A client that says when the tool list changed.
#[derive(Clone)]
struct Listener(mpsc::UnboundedSender<Instant>);

impl ClientHandler for Listener {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::default()
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.0.send(Instant::now());
    }
}

/// User plus system CPU time of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|n| n.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

pub async fn run(bin_dir: &Path, work: &Path, sizes: &[usize]) -> String {
    let gateway_bin = bin_dir.join("omni-bridge");
    let mcp_bin = bin_dir.join("omni-test-mcp");
    let http = reqwest::Client::new();
    let mut lines = vec![
        "| upstreams | tools | to all offered (s) | resident (MiB) | per upstream (KiB) | idle CPU (% of a core) | tools/list page p50 (ms) | all pages (ms) | one change to list_changed p50 (ms) |".to_owned(),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |".to_owned(),
    ];
    // The same gateway with no upstream at all, for the per-upstream figure.
    let empty = work.join("growth-0.toml");
    std::fs::write(&empty, "").unwrap();
    let data = work.join("growth-0");
    std::fs::create_dir_all(&data).unwrap();
    let (gateway, _, _) = start_gateway(&gateway_bin, &empty, &data).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base_rss = rss_kib(gateway.0.id());
    drop(gateway);

    for &n in sizes {
        let (_mcp, mcp_addr) = start_test_mcp_with(
            &mcp_bin,
            &["--endpoints", &n.to_string(), "--tools", &TOOLS.to_string()],
        );
        let config = work.join(format!("growth-{n}.toml"));
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&format!(
                "[[servers]]\nname = \"u{i}\"\ntransport = \"streamable_http\"\n\
                 url = \"http://{mcp_addr}/e/{i}/mcp\"\n\n"
            ));
        }
        std::fs::write(&config, text).unwrap();
        let data = work.join(format!("growth-{n}"));
        std::fs::create_dir_all(&data).unwrap();
        let started = Instant::now();
        let (gateway, addr, _) = start_gateway(&gateway_bin, &config, &data).await;
        let base = format!("http://{addr}");
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let status: Value = http
                .get(format!("{base}/api/v1/mcp"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if status["live_servers"].as_array().map_or(0, Vec::len) == n {
                break;
            }
            assert!(Instant::now() < deadline, "{n} upstreams never all came up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let up = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = gateway.0.id();
        let rss = rss_kib(pid);
        let cpu0 = cpu_seconds(pid);
        let idle = Duration::from_secs(10);
        tokio::time::sleep(idle).await;
        let cpu = (cpu_seconds(pid) - cpu0) / idle.as_secs_f64() * 100.0;

        let (tx, mut changes) = mpsc::unbounded_channel();
        let client = Listener(tx)
            .serve(StreamableHttpClientTransport::from_uri(format!(
                "{base}/mcp"
            )))
            .await
            .expect("session with /mcp");
        let mut pages = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            client.list_tools(None).await.unwrap();
            pages.push(t.elapsed());
        }
        let mut walks = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let mut cursor = None;
            loop {
                let page = client
                    .list_tools(Some(PaginatedRequestParams::default().with_cursor(cursor)))
                    .await
                    .unwrap();
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            walks.push(t.elapsed());
        }
        // One upstream adds (then removes) a tool; the gateway re-reads that upstream's
        // list and tells its clients.
        let mut notified = Vec::new();
        for _ in 0..6 {
            let t = Instant::now();
            let resp = http
                .post(format!("{base}/api/v1/servers/u0/tools/toggle_extra/call"))
                .json(&serde_json::json!({"arguments": {}}))
                .send()
                .await
                .unwrap();
            assert!(
                resp.status().is_success(),
                "toggle_extra: {}",
                resp.status()
            );
            let at = tokio::time::timeout(Duration::from_secs(30), changes.recv())
                .await
                .expect("list_changed within 30 s")
                .unwrap();
            notified.push(at - t);
            // Changes that arrived together count once.
            while changes.try_recv().is_ok() {}
        }
        let _ = client.cancel().await;
        lines.push(format!(
            "| {n} | {} | {:.1} | {:.0} | {} | {:.1} | {} | {} | {} |",
            n * TOOLS,
            up.as_secs_f64(),
            rss as f64 / 1024.0,
            if n > 0 {
                (rss.saturating_sub(base_rss) / n as u64).to_string()
            } else {
                "-".into()
            },
            cpu,
            ms(median(pages)),
            ms(median(walks)),
            ms(median(notified)),
        ));
        eprintln!("{}", lines.last().unwrap());
    }
    format!(
        "## How cost grows with upstreams\n\n\
         `omni-bench --growth` (release build): N Streamable HTTP upstreams served by one \
         `omni-test-mcp --endpoints N --tools {TOOLS}` process, declared in the file, default \
         probe interval (30 s) and `/mcp` page size (100). \"To all offered\" runs from the \
         gateway's start to `/api/v1/mcp` listing every upstream live; \"per upstream\" is \
         resident memory over a gateway with none ({} MiB), divided by N; idle CPU is \
         measured over 10 s once all are up.\n\n{}\n",
        base_rss / 1024,
        lines.join("\n")
    )
}
