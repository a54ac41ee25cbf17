//! Many upstreams at once: 200 Streamable HTTP servers hosted by one test server process
//! (`omni-test-mcp --endpoints`), declared in the file as an operator would. How long they
//! take and what they cost is omni-bench's business (BENCHMARKS.md); this checks what must
//! hold at that size.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestDb, TestMcp, TestServer, poll_until};
use omni_bridge::registry::{ServerInput, ServerSpec};
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;

const UPSTREAMS: usize = 200;
const TOOLS: usize = 20;

fn specs(mcp: &TestMcp, probe_interval: &str) -> Vec<ServerSpec> {
    (0..UPSTREAMS)
        .map(|n| {
            ServerInput {
                name: Some(format!("u{n}")),
                transport: Some("streamable_http".into()),
                url: Some(format!("http://{}/e/{n}/mcp", mcp.addr)),
                probe_interval: Some(probe_interval.into()),
                ..ServerInput::default()
            }
            .validate()
            .unwrap()
        })
        .collect()
}

fn endpoints() -> TestMcp {
    TestMcp::start_http_with(
        "127.0.0.1:0",
        "many",
        &[
            "--endpoints",
            &UPSTREAMS.to_string(),
            "--tools",
            &TOOLS.to_string(),
        ],
    )
}

async fn all_live(server: &TestServer) {
    poll_until(async || {
        let status = server.get_json("/api/v1/mcp").await;
        let live = status["live_servers"].as_array().map_or(0, Vec::len);
        if live == UPSTREAMS {
            Ok(())
        } else {
            Err(format!("{live} of {UPSTREAMS} upstreams live"))
        }
    })
    .await;
}

#[actix_rt::test]
async fn two_hundred_http_upstreams_come_up_and_every_tool_lists_through_mcp_pages() {
    let mcp = endpoints();
    let db = TestDb::new();
    let mut settings = db.settings();
    settings.servers = specs(&mcp, "1h");
    let server = TestServer::start(settings).await;
    all_live(&server).await;

    let client =
        ().serve(StreamableHttpClientTransport::from_uri(server.url("/mcp")))
            .await
            .expect("MCP handshake with the gateway");
    // Page by page, as a client walks them: every page full but the last, no name twice.
    let mut names = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = client
            .list_tools(Some(
                rmcp::model::PaginatedRequestParams::default().with_cursor(cursor),
            ))
            .await
            .unwrap();
        pages += 1;
        names.extend(page.tools.iter().map(|t| t.name.to_string()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let total = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), total, "a tool was listed twice");
    // Each endpoint's tool list padded to TOOLS, under its server's prefix.
    assert_eq!(total, UPSTREAMS * TOOLS);
    assert!(
        names
            .binary_search(&format!("u{}__pad_{}", UPSTREAMS - 1, TOOLS - 1))
            .is_ok()
    );
    assert_eq!(pages, total.div_ceil(100), "pages of the default size 100");
    // And a call reaches the right one of them.
    let result = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("u137__echo").with_arguments(
                serde_json::json!({"text": "one of many"})
                    .as_object()
                    .cloned()
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false));
    client.cancel().await.unwrap();
    server.stop().await;
}

#[actix_rt::test]
async fn probes_of_upstreams_that_came_up_together_spread_over_the_interval() {
    let mcp = endpoints();
    let db = TestDb::new();
    let mut settings = db.settings();
    let interval = Duration::from_secs(2);
    settings.servers = specs(&mcp, "2s");
    let server = TestServer::start(settings).await;
    all_live(&server).await;
    // Reading the tool list at connect counts as a probe too: only later ones are probes
    // the interval scheduled.
    let live_at = chrono::Utc::now();
    // Each upstream's scheduled probe, read from the registry API once all have one: they
    // came up within moments of each other, so without a spread the probes would too.
    let first_probes: BTreeMap<String, chrono::DateTime<chrono::Utc>> = poll_until(async || {
        let listed = server.get_json("/api/v1/servers").await;
        let probed: BTreeMap<_, _> = listed["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| {
                let at: chrono::DateTime<chrono::Utc> =
                    s["last_probe_at"].as_str()?.parse().ok()?;
                (at > live_at).then(|| (s["name"].as_str().unwrap().to_owned(), at))
            })
            .collect();
        if probed.len() == UPSTREAMS {
            Ok(probed)
        } else {
            Err(format!("{} of {UPSTREAMS} probed", probed.len()))
        }
    })
    .await;
    // Probes that came after a later one replaced the first are in the next interval;
    // fold every time into one interval, in tenths.
    let mut tenths = [0usize; 10];
    for at in first_probes.values() {
        let ms = at
            .timestamp_millis()
            .rem_euclid(interval.as_millis() as i64);
        tenths[(ms * 10 / interval.as_millis() as i64) as usize] += 1;
    }
    // A fair share is 20 a tenth; all at once would put 200 in one or two.
    let fair = UPSTREAMS / tenths.len();
    assert!(
        tenths.iter().all(|&n| n <= 2 * fair + 10),
        "probes bunch up: {tenths:?} per tenth of the interval"
    );
    server.stop().await;
}
