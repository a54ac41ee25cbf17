//! Warming: a cacheable tool may list calls (`tools.NAME.warm = [{...arguments...}]`) that
//! the gateway makes itself when the tool's server comes up and after each invalidation
//! of the tool's entries, so the first caller after a restart or a write finds the answer
//! cached. The calls run off every request path, a few at a time, through the same call
//! path as any caller's (`CacheMode::Refresh`: no lookup, the result stored), audited with
//! the caller `omni-bridge:warm`, and only for tools whose results may be cached: never
//! against a server whose cache is off.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use futures_util::StreamExt;

use crate::events::{BusNote, EventBus, EventType};
use crate::gateway::{CacheMode, Gateway};
use crate::registry::{ServerName, ToolHints};
use crate::upstream::StatusBoard;

/// Warm calls running at once.
const WORKERS: usize = 4;
/// Warm calls waiting; past it, a trigger's calls are dropped (and logged): the next
/// trigger warms again.
const QUEUE: usize = 1024;
/// The caller audit rows name.
pub const CALLER: &str = "omni-bridge:warm";

struct Job {
    server: ServerName,
    tool: String,
    arguments: serde_json::Map<String, Value>,
}

/// Starts the warmer: it listens on `bus` and adds each filled entry to `warmed`.
pub fn spawn(
    gateway: Gateway,
    board: StatusBoard,
    bus: &EventBus,
    default_ttl: Duration,
    warmed: Arc<AtomicU64>,
) {
    let (jobs, queue) = mpsc::channel::<Job>(QUEUE);
    let queue = Arc::new(tokio::sync::Mutex::new(queue));
    for _ in 0..WORKERS {
        let (queue, gateway, warmed) = (queue.clone(), gateway.clone(), warmed.clone());
        actix_rt::spawn(async move {
            loop {
                let Some(job) = queue.lock().await.recv().await else {
                    return;
                };
                let outcome = gateway
                    .call(
                        &job.server,
                        &job.tool,
                        Some(job.arguments),
                        CacheMode::Refresh,
                        Some(CALLER),
                        None,
                    )
                    .await;
                match outcome {
                    Ok(o) if o.result.get("isError") != Some(&Value::Bool(true)) => {
                        warmed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => log::debug!(
                        "[{}] warm call of {} was a tool error",
                        job.server,
                        job.tool
                    ),
                    Err(e) => log::debug!("[{}] warm call of {} failed: {e}", job.server, job.tool),
                }
            }
        });
    }
    // Subscribed now, before this returns: no event after it is missed.
    let mut events = bus.stream();
    actix_rt::spawn(async move {
        while let Some(note) = events.next().await {
            let BusNote::Event(event) = note else {
                continue;
            };
            // Which servers (and, for a tool's invalidation, which tool) to warm.
            let servers: Vec<(ServerName, Option<String>)> = match event.kind {
                EventType::McpStatusChange if event.data["new_status"] == "healthy" => event
                    .server
                    .clone()
                    .map(|s| (s, None))
                    .into_iter()
                    .collect(),
                EventType::CacheInvalidated => match (&event.server, event.data["tool"].as_str()) {
                    (Some(server), tool) => vec![(server.clone(), tool.map(str::to_owned))],
                    (None, _) => board.all().into_keys().map(|s| (s, None)).collect(),
                },
                _ => continue,
            };
            for (server, only) in servers {
                enqueue(&board, &jobs, &server, only.as_deref(), default_ttl);
            }
        }
    });
}

/// Queues the warm calls of `server`'s cacheable tools (or of `only`).
fn enqueue(
    board: &StatusBoard,
    jobs: &mpsc::Sender<Job>,
    server: &ServerName,
    only: Option<&str>,
    default_ttl: Duration,
) {
    let Some(snapshot) = board.get(server) else {
        return;
    };
    let Some(spec) = snapshot.spec.as_ref() else {
        return;
    };
    for (tool, over) in &spec.tools {
        let Some(calls) = &over.warm else { continue };
        if only.is_some_and(|o| o != tool) {
            continue;
        }
        let Some(declared) = snapshot.tools.iter().find(|t| t.name == *tool) else {
            continue;
        };
        // Only what may be cached: a warm call of anything else would be a plain call.
        if spec
            .cache_ttl_for(tool, ToolHints::of(declared), default_ttl)
            .is_none()
        {
            continue;
        }
        for arguments in calls {
            let job = Job {
                server: server.clone(),
                tool: tool.clone(),
                arguments: arguments.clone(),
            };
            if jobs.try_send(job).is_err() {
                log::warn!("[{server}] warm queue full; {tool} is warmed at the next trigger");
                return;
            }
        }
    }
}
