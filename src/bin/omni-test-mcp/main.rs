//! omni-test-mcp: a small MCP server of our own, for tests and demos. It serves stdio by
//! default, or with `--http ADDR` both Streamable HTTP (`/mcp`) and legacy HTTP+SSE
//! (`/sse` and `/messages`) on one listener, printing `LISTENING <addr>` on stdout.
//!
//! Tools: echo, add, sleep, sleeping (how many sleeps run), freeze
//! (pings go unanswered for a while), fail (protocol error), tool_error (isError), crash (exits the
//! process), counter (not read-only; counts calls), big (a result of N bytes), and
//! toggle_extra, which adds or removes the tool `extra` and notifies every client.
//! `--conformance` adds the fixtures of the MCP conformance suite's server scenarios
//! (tools, resources, prompts, logging, completion; see `conformance.rs`).

mod conformance;
mod http;
mod tools;

use std::sync::Arc;

use rmcp::ServiceExt;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut http_addr = None;
    let mut required_header = None;
    let mut name = "omni-test-mcp".to_owned();
    let mut conformance = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--http" => {
                http_addr = args.get(i + 1).cloned();
                i += 1;
            }
            "--name" => {
                if let Some(n) = args.get(i + 1) {
                    name = n.clone();
                }
                i += 1;
            }
            "--require-header" => {
                // NAME:VALUE that every HTTP request must carry, else 401.
                required_header = args.get(i + 1).and_then(|h| {
                    h.split_once(':')
                        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                });
                i += 1;
            }
            "--conformance" => conformance = true,
            "--help" | "-h" => {
                println!(
                    "usage: omni-test-mcp [--http ADDR:PORT] [--name NAME] [--require-header NAME:VALUE] [--conformance]"
                );
                return;
            }
            other => {
                eprintln!("omni-test-mcp: unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 1;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime starts");
    let shared = Arc::new(tools::Shared::new(name, conformance));
    runtime.block_on(async move {
        match http_addr {
            Some(addr) => http::serve(&addr, shared, required_header).await,
            None => {
                eprintln!("omni-test-mcp: serving stdio");
                let server = tools::TestServer::new(shared);
                match server.serve(rmcp::transport::stdio()).await {
                    Ok(running) => {
                        let _ = running.waiting().await;
                    }
                    Err(e) => eprintln!("omni-test-mcp: handshake failed: {e}"),
                }
            }
        }
    });
}
