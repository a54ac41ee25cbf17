//! omni-test-mcp: a small MCP server of our own, for tests and demos. It serves stdio by
//! default, or with `--http ADDR` both Streamable HTTP (`/mcp`) and legacy HTTP+SSE
//! (`/sse` and `/messages`) on one listener, printing `LISTENING <addr>` on stdout.
//!
//! Tools: echo, add, sleep, sleeping (how many sleeps run), freeze
//! (pings go unanswered for a while), fail (protocol error), tool_error (isError), crash (exits the
//! process), counter (not read-only; counts calls), big (a result of N bytes), and
//! toggle_extra, which adds or removes the tool `extra` and notifies every client.
//! `--endpoints N` serves N more Streamable HTTP servers from the same process, on
//! `/e/0/mcp` ... `/e/{N-1}/mcp`, each with state of its own (many upstreams for little);
//! `--tools N` pads every tool list to N with read-only `pad_K` tools.
//! `--conformance` adds the fixtures of the MCP conformance suite's server scenarios
//! (tools, resources, prompts, logging, completion; see `conformance.rs`).

mod conformance;
mod http;
mod tools;

use std::sync::Arc;

use rmcp::ServiceExt;

fn number(arg: Option<&String>, flag: &str) -> usize {
    arg.and_then(|n| n.parse().ok()).unwrap_or_else(|| {
        eprintln!("omni-test-mcp: {flag} takes a number");
        std::process::exit(2);
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut http_addr = None;
    let mut required_header = None;
    let mut name = "omni-test-mcp".to_owned();
    let mut conformance = false;
    let mut endpoints = 0usize;
    let mut pad_to = 0usize;
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
            "--endpoints" => {
                // N more Streamable HTTP servers on /e/0/mcp ... /e/{N-1}/mcp, each with
                // state of its own: many upstreams from one process.
                endpoints = number(args.get(i + 1), "--endpoints");
                i += 1;
            }
            "--tools" => {
                pad_to = number(args.get(i + 1), "--tools");
                i += 1;
            }
            "--help" | "-h" => {
                println!(
                    "usage: omni-test-mcp [--http ADDR:PORT [--endpoints N]] [--tools N] [--name NAME] [--require-header NAME:VALUE] [--conformance]"
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
    let shared_of = |name: String| {
        let mut shared = tools::Shared::new(name, conformance);
        shared.pad_to = pad_to;
        Arc::new(shared)
    };
    let extra: Vec<_> = (0..endpoints)
        .map(|n| shared_of(format!("{name}-{n}")))
        .collect();
    let shared = shared_of(name);
    runtime.block_on(async move {
        match http_addr {
            Some(addr) => http::serve(&addr, shared, extra, required_header).await,
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
