//! Upstream actors and the supervisor against real MCP servers (our omni-test-mcp over
//! stdio, Streamable HTTP and legacy SSE), through the real gateway on port 0.

mod common;

use std::time::Duration;

use common::{TestDb, TestMcp, TestServer, WAIT, free_port, stdio, text_of};
use omni_bridge::config::Settings;
use omni_bridge::upstream::UpstreamSettings;
use omni_bridge::upstream::{BreakerConfig, RestartConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Fast restarts and breakers, so that tests take seconds.
fn fast(db: &TestDb) -> Settings {
    let mut settings = db.stdio_settings();
    settings.upstreams = UpstreamSettings {
        breaker: BreakerConfig {
            failure_threshold: 5,
            base_cooldown: Duration::from_millis(300),
            max_cooldown: Duration::from_secs(2),
        },
        restart: RestartConfig {
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
            jitter: 0.2,
            max_restarts: 3,
            window: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
        },
        ..Default::default()
    };
    settings
}

/// Registers, waits for healthy, and exercises the catalogue and a few calls.
async fn healthy_and_callable(server: &mut TestServer, mut body: Value) {
    let name = body["name"].as_str().unwrap().to_owned();
    // Caching is asked for, so the catalogue and the second call show it.
    body["cache"] = json!("read-only");
    server.register(&body).await;
    server.events.status(&name, "healthy", WAIT).await;

    let got = server.server_json(&name).await;
    assert_eq!(got["status"], "healthy");
    assert_eq!(got["circuit"], "closed");
    assert_eq!(got["server_info"]["name"], name);

    let tools: Value = server.get_json("/api/v1/tools").await;
    let mine: Vec<&Value> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["server"] == name.as_str())
        .collect();
    let tool_names: Vec<&str> = mine.iter().map(|t| t["tool"].as_str().unwrap()).collect();
    assert_eq!(got["tool_count"], mine.len(), "{got}");
    for expected in [
        "echo",
        "add",
        "sleep",
        "fail",
        "tool_error",
        "crash",
        "counter",
    ] {
        assert!(tool_names.contains(&expected), "{expected} missing");
    }
    assert!(!tool_names.contains(&"extra"));
    let echo = mine.iter().find(|t| t["tool"] == "echo").unwrap();
    assert_eq!(echo["cache"]["cached"], true);
    let counter = mine.iter().find(|t| t["tool"] == "counter").unwrap();
    assert_eq!(counter["cache"]["cached"], false);
    assert_eq!(echo["annotations"]["readOnlyHint"], true);

    let (status, body) = server.call(&name, "echo", json!({"text": "hello"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(text_of(&body), "hello");
    assert_eq!(body["cached"], false);
    let (status, body) = server.call(&name, "add", json!({"a": 2, "b": 3.5})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text_of(&body), "5.5");
    let (status, body) = server.call(&name, "tool_error", json!({})).await;
    assert_eq!(status, StatusCode::OK, "a tool error is a result");
    assert_eq!(body["result"]["isError"], true);
    let (status, body) = server.call(&name, "no_such_tool", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "tool-not-found");
}

#[tokio::test]
async fn stdio_upstream_is_healthy_and_callable() {
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    healthy_and_callable(&mut server, stdio("local")).await;
    server.stop().await;
}

#[tokio::test]
async fn streamable_http_upstream_is_healthy_and_callable() {
    let mcp = TestMcp::start_http("127.0.0.1:0", "remote");
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    let body = json!({"name": "remote", "transport": "streamable_http", "url": mcp.mcp_url(),
                      "headers": {"X-Test": "1"}, "probe_interval": "1h"});
    healthy_and_callable(&mut server, body).await;
    server.stop().await;
}

#[tokio::test]
async fn legacy_sse_upstream_is_healthy_and_callable() {
    let mcp = TestMcp::start_http("127.0.0.1:0", "legacy");
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    let body = json!({"name": "legacy", "transport": "sse", "url": mcp.sse_url(),
                      "probe_interval": "1h"});
    healthy_and_callable(&mut server, body).await;
    server.stop().await;
}

#[tokio::test]
async fn an_upstream_down_at_start_is_retried_until_it_appears() {
    let port = free_port();
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    let url = format!("http://127.0.0.1:{port}/mcp");
    server
        .register(
            &json!({"name": "late", "transport": "streamable_http", "url": url, "timeout": "2s"}),
        )
        .await;
    // Retries keep coming, with growing delays, and never end in `failed`.
    let mut delays = vec![];
    for _ in 0..5 {
        let event = server
            .events
            .health("late", "restart_scheduled", WAIT)
            .await;
        delays.push(event["detail"]["delay_ms"].as_u64().unwrap());
    }
    assert!(delays.windows(2).take(3).all(|w| w[0] < w[1]), "{delays:?}");
    assert_eq!(server.server_json("late").await["status"], "restarting");

    let _mcp = TestMcp::start_http(&format!("127.0.0.1:{port}"), "late");
    server.events.status("late", "healthy", WAIT).await;
    assert!(
        !server
            .events
            .seen
            .iter()
            .any(|e| e.data["event"] == "failed"),
        "an unreachable upstream is never given up on"
    );
    let (status, body) = server.call("late", "echo", json!({"text": "up"})).await;
    assert_eq!((status, text_of(&body)), (StatusCode::OK, "up"));
    server.stop().await;
}

/// Settings whose breaker cool-down is long enough that, on a loaded machine, the call
/// meant to fail fast cannot turn into the half-open trial.
fn slow_cooldown(db: &TestDb) -> Settings {
    let mut settings = fast(db);
    settings.upstreams.breaker.base_cooldown = Duration::from_secs(2);
    settings.upstreams.breaker.max_cooldown = Duration::from_secs(4);
    settings
}

/// Five failures open the breaker; the next call fails fast without reaching the upstream
/// (its `counter` proves it); after the cool-down a probe is the trial and closes it.
async fn breaker_opens_fails_fast_then_half_opens_and_closes(server: &mut TestServer, body: Value) {
    let name = body["name"].as_str().unwrap().to_owned();
    server.register(&body).await;
    server.events.status(&name, "healthy", WAIT).await;

    for i in 0..5 {
        let (status, body) = server.call(&name, "fail", json!({})).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "call {i}: {body}");
        assert_eq!(body["error"]["code"], "upstream-error");
    }
    let opened = server.events.health(&name, "circuit_opened", WAIT).await;
    assert_eq!(opened["detail"]["cooldown_ms"], 2000, "{opened}");

    // Open: refused at once, without reaching the upstream (the counter proves it below).
    let resp = server
        .http
        .post(server.url(&format!("/api/v1/servers/{name}/tools/counter/call")))
        .json(&json!({"arguments": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "circuit-open");
    assert_eq!(server.server_json(&name).await["circuit"], "open");

    // After the cool-down a probe is the trial; the upstream answers, so it closes.
    server.events.health(&name, "circuit_half_open", WAIT).await;
    server.events.health(&name, "circuit_closed", WAIT).await;
    server.events.status(&name, "healthy", WAIT).await;
    let (status, body) = server.call(&name, "counter", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        text_of(&body),
        "1",
        "the refused call never reached the upstream"
    );
}

#[tokio::test]
async fn failures_open_the_breaker_which_fails_fast_then_half_opens_and_closes() {
    let db = TestDb::new();
    let mut server = TestServer::start(slow_cooldown(&db)).await;
    breaker_opens_fails_fast_then_half_opens_and_closes(&mut server, stdio("flaky")).await;
    server.stop().await;
}

#[tokio::test]
async fn over_streamable_http_failures_open_the_breaker_which_half_opens_and_closes() {
    let mcp = TestMcp::start_http("127.0.0.1:0", "flaky-http");
    let db = TestDb::new();
    let mut server = TestServer::start(slow_cooldown(&db)).await;
    let body = json!({"name": "flaky-http", "transport": "streamable_http",
                      "url": mcp.mcp_url(), "probe_interval": "1h"});
    breaker_opens_fails_fast_then_half_opens_and_closes(&mut server, body).await;
    server.stop().await;
}

#[tokio::test]
async fn a_call_past_its_deadline_is_504() {
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    let mut body = stdio("slow");
    body["timeout"] = json!("300ms");
    server.register(&body).await;
    server.events.status("slow", "healthy", WAIT).await;
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(5),
        server.call("slow", "sleep", json!({"ms": 10_000})),
    )
    .await
    .expect("the gateway answers at the deadline, not when the upstream does");
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"]["code"], "upstream-timeout");
    // The upstream is slow, not broken for everything: other calls still work.
    let (status, _) = server.call("slow", "echo", json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn crashes_are_restarted_with_growing_delays_then_failed_and_reset() {
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    server.register(&stdio("crashy")).await;
    server.events.status("crashy", "healthy", WAIT).await;

    let mut delays = vec![];
    for _ in 0..3 {
        let (status, _) = server.call("crashy", "crash", json!({})).await;
        assert!(status.is_server_error(), "{status}");
        // The test server's `crash` exits with 3: the reason says so, in words.
        let exited = server.events.health("crashy", "exited", WAIT).await;
        let reason = exited["detail"]["reason"].as_str().unwrap();
        assert_eq!(reason, "process exited with code 3", "{exited}");
        let event = server
            .events
            .health("crashy", "restart_scheduled", WAIT)
            .await;
        delays.push(event["detail"]["delay_ms"].as_u64().unwrap());
        server.events.health("crashy", "restarted", WAIT).await;
        server.events.status("crashy", "healthy", WAIT).await;
    }
    assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
    let got = server.server_json("crashy").await;
    assert_eq!(got["restart_count"], 3);

    // A fourth crash inside the window is one too many: failed, and left alone.
    server.call("crashy", "crash", json!({})).await;
    let failed = server.events.health("crashy", "failed", WAIT).await;
    assert_eq!(failed["detail"]["max_restarts"], 3);
    assert_eq!(server.server_json("crashy").await["status"], "failed");
    let (status, body) = server.call("crashy", "echo", json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "upstream-unavailable");

    let resp = server
        .http
        .post(server.url("/api/v1/servers/crashy/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    server.events.status("crashy", "healthy", WAIT).await;
    let (status, body) = server.call("crashy", "echo", json!({"text": "back"})).await;
    assert_eq!((status, text_of(&body)), (StatusCode::OK, "back"));
    server.stop().await;
}

fn process_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok()
}

/// Waits (with a deadline) until the process is gone and reaped.
async fn wait_gone(pid: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while process_alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} still there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes a server while a 30 s `sleep` runs on it: the call ends at once with a clear
/// 503 `upstream-gone`, long before the sleep would.
async fn deleting_fails_calls_in_flight(server: &mut TestServer, name: &str) {
    let in_flight = {
        let http = server.http.clone();
        let url = server.url(&format!("/api/v1/servers/{name}/tools/sleep/call"));
        tokio::spawn(async move {
            let resp = http
                .post(url)
                .json(&json!({"arguments": {"ms": 30_000}}))
                .send()
                .await
                .unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        })
    };
    // Wait until the upstream is really running the call.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = server.call(name, "sleeping", json!({})).await;
        if text_of(&body) == "1" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sleep call never started"
        );
    }
    let resp = server
        .http
        .delete(server.url(&format!("/api/v1/servers/{name}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the in-flight call ends with the server, not with its sleep")
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "upstream-gone");
    server.events.health(name, "removed", WAIT).await;
    // The call failed when the stopping actor closed its session, after it cleaned up its
    // place on the status board: nothing of the server may be left there.
    let gone = server
        .http
        .get(server.url(&format!("/api/v1/servers/{name}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let listed = server.get_json("/api/v1/servers").await;
    assert!(
        !listed.to_string().contains(&format!("\"{name}\"")),
        "a deleted server is still listed: {listed}"
    );
    let (status, body) = server.call(name, "echo", json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "server-not-found");
}

#[tokio::test]
async fn deleting_a_server_fails_its_calls_in_flight_and_reaps_its_process() {
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    server.register(&stdio("doomed")).await;
    server.events.status("doomed", "healthy", WAIT).await;
    let pid = server.server_json("doomed").await["pid"].as_u64().unwrap();
    assert!(process_alive(pid));
    deleting_fails_calls_in_flight(&mut server, "doomed").await;
    wait_gone(pid).await;
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_streamable_http_server_fails_its_calls_in_flight() {
    let mcp = TestMcp::start_http("127.0.0.1:0", "doomed-http");
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    let body = json!({"name": "doomed-http", "transport": "streamable_http",
                      "url": mcp.mcp_url(), "probe_interval": "1h"});
    server.register(&body).await;
    server.events.status("doomed-http", "healthy", WAIT).await;
    deleting_fails_calls_in_flight(&mut server, "doomed-http").await;
    server.stop().await;
}

/// Our children, as (pid, state, cmdline) from /proc.
fn children_matching(marker: &str) -> Vec<(u64, char)> {
    let me = std::process::id().to_string();
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.trim()) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().unwrap_or_default();
        if ppid != me {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        // A zombie has no cmdline left; count it whatever it was.
        if state == 'Z' || String::from_utf8_lossy(&cmdline).contains(marker) {
            out.push((pid, state));
        }
    }
    out
}

#[tokio::test]
async fn a_hundred_crash_restart_cycles_leave_one_child_and_no_zombie() {
    let db = TestDb::new();
    let mut settings = fast(&db);
    settings.upstreams.restart = RestartConfig {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        jitter: 0.0,
        max_restarts: 100_000,
        window: Duration::from_secs(1),
        stable_after: Duration::from_millis(1),
    };
    let mut server = TestServer::start(settings).await;
    let marker = format!("zombie-check-{}", rand::random::<u32>());
    server.register(&stdio(&marker)).await;
    server.events.status(&marker, "healthy", WAIT).await;
    for cycle in 0..100 {
        let (status, _) = server.call(&marker, "crash", json!({})).await;
        assert!(status.is_server_error(), "cycle {cycle}: {status}");
        server.events.health(&marker, "restarted", WAIT).await;
        server.events.status(&marker, "healthy", WAIT).await;
    }
    let pid = server.server_json(&marker).await["pid"].as_u64().unwrap();
    // Reaping of the last crashed child can trail its restart by a moment.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let children = children_matching(&marker);
        if children == [(pid, 'S')] || children == [(pid, 'R')] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected only {pid}, found {children:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.server_json(&marker).await["restart_count"], 100);
    server.stop().await;
}

#[tokio::test]
async fn reload_reconnects_and_disable_stops() {
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    server.register(&stdio("tuned")).await;
    server.events.status("tuned", "healthy", WAIT).await;
    let first_pid = server.server_json("tuned").await["pid"].as_u64().unwrap();

    let resp = server
        .http
        .post(server.url("/api/v1/servers/tuned/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    server.events.health("tuned", "reloading", WAIT).await;
    server.events.status("tuned", "healthy", WAIT).await;
    let second_pid = server.server_json("tuned").await["pid"].as_u64().unwrap();
    assert_ne!(first_pid, second_pid);
    wait_gone(first_pid).await;

    let mut body = stdio("tuned");
    body["enabled"] = json!(false);
    let resp = server
        .http
        .put(server.url("/api/v1/servers/tuned"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    server.events.status("tuned", "disabled", WAIT).await;
    wait_gone(second_pid).await;
    let (status, body) = server.call("tuned", "echo", json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let resp = server
        .http
        .post(server.url("/api/v1/servers/tuned/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);

    let body = stdio("tuned");
    let resp = server
        .http
        .put(server.url("/api/v1/servers/tuned"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    server.events.status("tuned", "healthy", WAIT).await;
    server.stop().await;
}

/// `toggle_extra` makes the upstream send `notifications/tools/list_changed`; the
/// gateway re-reads the catalogue and serves the new tool.
async fn a_changed_tool_list_is_refreshed(server: &mut TestServer, body: Value) {
    let name = body["name"].as_str().unwrap().to_owned();
    server.register(&body).await;
    server.events.status(&name, "healthy", WAIT).await;
    let before = server.server_json(&name).await["tool_count"]
        .as_u64()
        .unwrap();
    let (status, _) = server.call(&name, "toggle_extra", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let changed = server.events.health(&name, "tools_changed", WAIT).await;
    assert_eq!(changed["detail"]["tool_count"], before + 1);
    assert_eq!(server.server_json(&name).await["tool_count"], before + 1);
    let (status, body) = server.call(&name, "extra", json!({})).await;
    assert_eq!((status, text_of(&body)), (StatusCode::OK, "extra"));
}

#[tokio::test]
async fn a_changed_tool_list_refreshes_the_catalogue() {
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    a_changed_tool_list_is_refreshed(&mut server, stdio("shifty")).await;
    server.stop().await;
}

#[tokio::test]
async fn over_streamable_http_a_changed_tool_list_refreshes_the_catalogue() {
    let mcp = TestMcp::start_http("127.0.0.1:0", "shifty-http");
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    let body = json!({"name": "shifty-http", "transport": "streamable_http",
                      "url": mcp.mcp_url(), "probe_interval": "1h"});
    a_changed_tool_list_is_refreshed(&mut server, body).await;
    server.stop().await;
}

#[tokio::test]
async fn health_history_is_stored_and_paged() {
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    server.register(&stdio("recorded")).await;
    server.events.status("recorded", "healthy", WAIT).await;
    server.call("recorded", "crash", json!({})).await;
    server.events.status("recorded", "healthy", WAIT).await;

    // The writer batches off the request path: wait until the history has caught up.
    let url = server.url("/api/v1/servers/recorded/events?limit=100");
    let deadline = tokio::time::Instant::now() + WAIT;
    let all = loop {
        let page: Value = server
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let names: Vec<String> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect();
        if names.iter().filter(|n| *n == "connected").count() == 2 {
            break names;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history so far: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for expected in ["registered", "exited", "restart_scheduled", "restarted"] {
        assert!(
            all.iter().any(|n| n == expected),
            "{expected} missing from {all:?}"
        );
    }

    // Paging: two at a time, newest first, until the end; the pages add up to the whole.
    let mut paged = vec![];
    let mut before: Option<i64> = None;
    loop {
        let mut url = server.url("/api/v1/servers/recorded/events?limit=2");
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let page: Value = server
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in page["events"].as_array().unwrap() {
            paged.push(e["event"].as_str().unwrap().to_owned());
        }
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert!(paged.len() >= all.len(), "{paged:?} vs {all:?}");
    assert_eq!(paged[..all.len()], all[..]);

    let resp = server
        .http
        .get(server.url("/api/v1/servers/recorded/events?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = server
        .http
        .get(server.url("/api/v1/servers/nobody/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn a_hanging_upstream_fails_its_probes_opens_the_circuit_and_recovers() {
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    let mut body = stdio("hangs");
    body["probe_interval"] = json!("100ms");
    body["timeout"] = json!("200ms");
    server.register(&body).await;
    server.events.status("hangs", "healthy", WAIT).await;
    server.events.health("hangs", "connected", WAIT).await;

    // Pings hang for 3 s: probes time out, the status turns unhealthy, and after five
    // failures the circuit opens; calls then fail fast instead of waiting.
    let (status, _) = server.call("hangs", "freeze", json!({"ms": 3000})).await;
    assert_eq!(status, StatusCode::OK);
    let failed = server.events.health("hangs", "probe_failed", WAIT).await;
    assert!(
        failed["detail"]["error"]
            .as_str()
            .unwrap()
            .contains("within"),
        "{failed}"
    );
    server.events.status("hangs", "unhealthy", WAIT).await;
    server.events.health("hangs", "circuit_opened", WAIT).await;
    let (status, body) = server.call("hangs", "echo", json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let got = server.server_json("hangs").await;
    assert_eq!(got["last_probe_ok"], false);
    assert_eq!(got["status"], "unhealthy");

    // Once pings answer again, a half-open probe closes the circuit: recovered.
    server.events.health("hangs", "recovered", WAIT).await;
    server.events.status("hangs", "healthy", WAIT).await;
    let got = server.server_json("hangs").await;
    assert_eq!(got["circuit"], "closed");
    assert_eq!(got["last_probe_ok"], true);
    assert!(got["latency_ms"].as_f64().unwrap() >= 0.0);
    let (status, _) = server.call("hangs", "echo", json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn configured_headers_reach_http_and_sse_upstreams() {
    let mcp = TestMcp::start_http_with(
        "127.0.0.1:0",
        "guarded",
        &["--require-header", "Authorization:Bearer s3cret"],
    );
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    for (name, transport, url) in [
        ("guarded-http", "streamable_http", mcp.mcp_url()),
        ("guarded-sse", "sse", mcp.sse_url()),
    ] {
        let body = json!({"name": name, "transport": transport, "url": url,
                          "headers": {"Authorization": "Bearer s3cret"}, "probe_interval": "1h"});
        server.register(&body).await;
        server.events.status(name, "healthy", WAIT).await;
        let (status, _) = server.call(name, "echo", json!({"text": "in"})).await;
        assert_eq!(status, StatusCode::OK);
    }
    // Without the header the upstream refuses the handshake: retried, never healthy.
    let body = json!({"name": "unguarded", "transport": "streamable_http", "url": mcp.mcp_url()});
    server.register(&body).await;
    let exited = server.events.health("unguarded", "exited", WAIT).await;
    assert!(
        exited["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("handshake"),
        "{exited}"
    );
    server
        .events
        .health("unguarded", "restart_scheduled", WAIT)
        .await;
    // The secret never shows in what the API answers.
    let list = server.get_text("/api/v1/servers").await;
    assert!(!list.contains("s3cret"));
    server.stop().await;
}

/// A Streamable HTTP upstream that dies while it answers a call: the call fails within a
/// few seconds, not at its deadline. rmcp used to try to resume the broken stream for
/// ever, so the call waited out its whole timeout (found by schemathesis calling
/// `crash`). Probes are off here, so nothing else ends the session early.
#[tokio::test]
async fn a_call_whose_streamable_http_upstream_dies_fails_at_once() {
    let mcp = TestMcp::start_http("127.0.0.1:0", "fragile");
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    let body = json!({"name": "fragile", "transport": "streamable_http", "url": mcp.mcp_url(),
                      "probe_interval": "1h", "timeout": "60s"});
    server.register(&body).await;
    server.events.status("fragile", "healthy", WAIT).await;
    let started = std::time::Instant::now();
    let (status, body) = server.call("fragile", "crash", json!({})).await;
    let took = started.elapsed();
    assert!(
        [StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE].contains(&status),
        "{status} {body}"
    );
    let code = body["error"]["code"].as_str().unwrap_or_default();
    assert!(code.starts_with("upstream-"), "{body}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {body}");
    drop(mcp);
    server.stop().await;
}

#[tokio::test]
async fn a_streamable_http_upstream_that_dies_is_restarted_and_comes_back() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let first = TestMcp::start_http(&addr, "phoenix");
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    let url = format!("http://{addr}/mcp");
    let body = json!({"name": "phoenix", "transport": "streamable_http", "url": url,
                      "probe_interval": "200ms", "timeout": "1s"});
    server.register(&body).await;
    server.events.status("phoenix", "healthy", WAIT).await;
    let (status, body) = server.call("phoenix", "echo", json!({"text": "one"})).await;
    assert_eq!((status, text_of(&body)), (StatusCode::OK, "one"));

    // The upstream process dies: the gateway notices on its own (no call needed) and
    // ends the session, so that the supervisor reconnects.
    drop(first);
    server.events.health("phoenix", "probe_failed", WAIT).await;
    let exited = server.events.health("phoenix", "exited", WAIT).await;
    let reason = exited["detail"]["reason"].as_str().unwrap();
    assert!(reason.contains("could not reach the upstream"), "{exited}");
    server
        .events
        .health("phoenix", "restart_scheduled", WAIT)
        .await;

    // It comes back on the same port, knowing nothing of the old session.
    let _second = TestMcp::start_http(&addr, "phoenix");
    server.events.status("phoenix", "healthy", WAIT).await;
    let (status, body) = server.call("phoenix", "echo", json!({"text": "two"})).await;
    assert_eq!((status, text_of(&body)), (StatusCode::OK, "two"), "{body}");
    let (status, body) = server.call("phoenix", "counter", json!({})).await;
    assert_eq!((status, text_of(&body)), (StatusCode::OK, "1"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_streamable_http_upstream_that_restarts_at_once_gets_a_new_session() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let first = TestMcp::start_http(&addr, "amnesiac");
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    let url = format!("http://{addr}/mcp");
    let body = json!({"name": "amnesiac", "transport": "streamable_http", "url": url,
                      "probe_interval": "200ms", "timeout": "1s"});
    server.register(&body).await;
    server.events.status("amnesiac", "healthy", WAIT).await;
    let (status, body) = server.call("amnesiac", "counter", json!({})).await;
    assert_eq!((status, text_of(&body)), (StatusCode::OK, "1"));

    // Replaced before the probes can count it lost: the new process answers 404 to our
    // session id, which the gateway takes as the end of the session, not as a blip.
    drop(first);
    let _second = TestMcp::start_http(&addr, "amnesiac");
    let exited = server.events.health("amnesiac", "exited", WAIT).await;
    let reason = exited["detail"]["reason"].as_str().unwrap();
    assert!(reason.contains("session lost"), "{exited}");
    server.events.health("amnesiac", "restarted", WAIT).await;
    server.events.status("amnesiac", "healthy", WAIT).await;
    // A fresh process behind a fresh session: its counter starts again.
    let (status, body) = server.call("amnesiac", "counter", json!({})).await;
    assert_eq!((status, text_of(&body)), (StatusCode::OK, "1"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_stdio_upstream_whose_command_is_missing_at_start_comes_up_when_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let command = dir.path().join("omni-test-mcp-late");
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    let mut body = stdio("late-stdio");
    body["command"] = json!(command.to_str().unwrap());
    server.register(&body).await;

    // It cannot start: retried again and again, never given up on.
    let exited = server.events.health("late-stdio", "exited", WAIT).await;
    assert!(
        exited["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot start"),
        "{exited}"
    );
    for _ in 0..3 {
        server
            .events
            .health("late-stdio", "restart_scheduled", WAIT)
            .await;
    }
    assert_eq!(
        server.server_json("late-stdio").await["status"],
        "restarting"
    );

    std::os::unix::fs::symlink(TestMcp::BIN, &command).unwrap();
    server.events.status("late-stdio", "healthy", WAIT).await;
    assert!(
        !server
            .events
            .seen
            .iter()
            .any(|e| e.data["server"] == "late-stdio" && e.data["event"] == "failed"),
        "a command that is not there yet is never given up on"
    );
    let (status, body) = server
        .call("late-stdio", "echo", json!({"text": "up"}))
        .await;
    assert_eq!((status, text_of(&body)), (StatusCode::OK, "up"));
    server.stop().await;
}

/// Twenty `sleep` calls of a second each, sent together, run together on the one session:
/// the upstream counts all twenty sleeping at once, and they end in far less than the
/// twenty seconds that one at a time would take.
async fn many_calls_run_at_once(server: &TestServer, name: &str) {
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..20u64)
        .map(|i| {
            let http = server.http.clone();
            let url = server.url(&format!("/api/v1/servers/{name}/tools/sleep/call"));
            tokio::spawn(async move {
                // Distinct arguments: identical calls could share one upstream call.
                let resp = http
                    .post(url)
                    .json(&json!({"arguments": {"ms": 1000 + i}}))
                    .send()
                    .await
                    .unwrap();
                (resp.status(), resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut most = 0;
    while most < 20 && !calls.iter().all(|c| c.is_finished()) {
        let (status, body) = server.call(name, "sleeping", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        most = most.max(text_of(&body).parse::<u64>().unwrap());
    }
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let elapsed = started.elapsed();
    assert_eq!(most, 20, "the upstream never ran all twenty at once");
    assert!(
        elapsed < Duration::from_secs(5),
        "twenty one-second calls took {elapsed:?}"
    );
}

#[tokio::test]
async fn many_calls_run_at_once_on_one_stdio_session() {
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    server.register(&stdio("busy")).await;
    server.events.status("busy", "healthy", WAIT).await;
    many_calls_run_at_once(&server, "busy").await;
    server.stop().await;
}

#[tokio::test]
async fn many_calls_run_at_once_on_one_streamable_http_session() {
    let mcp = TestMcp::start_http("127.0.0.1:0", "busy-http");
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    let body = json!({"name": "busy-http", "transport": "streamable_http",
                      "url": mcp.mcp_url(), "probe_interval": "1h"});
    server.register(&body).await;
    server.events.status("busy-http", "healthy", WAIT).await;
    many_calls_run_at_once(&server, "busy-http").await;
    server.stop().await;
}

#[tokio::test]
async fn a_child_flooding_stderr_is_never_blocked() {
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    // 2 MB on stderr, in one line, before the server even starts: far more than a pipe
    // holds, so the child would hang at once if the gateway stopped reading.
    let script = r#"head -c 2000000 /dev/zero | tr '\0' x >&2; exec "$0" --name loud"#;
    let body = json!({"name": "loud", "transport": "stdio", "command": "sh",
                      "args": ["-c", script, TestMcp::BIN], "probe_interval": "1h"});
    server.register(&body).await;
    server.events.status("loud", "healthy", WAIT).await;
    let (status, body) = server.call("loud", "echo", json!({"text": "heard"})).await;
    assert_eq!((status, text_of(&body)), (StatusCode::OK, "heard"));
    server.stop().await;
}

/// The children of `pid`, as (pid, process group, command name), from /proc.
fn children_of(pid: u64) -> Vec<(u64, u64, String)> {
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c).to_owned();
        // After the command: state, ppid, pgrp, ...
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u64>().ok()) == Some(pid) {
            let pgrp = fields.get(2).and_then(|p| p.parse().ok()).unwrap_or(0);
            out.push((child, pgrp, comm));
        }
    }
    out
}

/// Whether `pid` is dead: gone, or a zombie left for init to reap (an orphan is not ours).
fn process_dead(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn deleting_a_stdio_server_kills_its_whole_process_group() {
    let db = TestDb::new();
    let mut server = TestServer::start(fast(&db)).await;
    // A helper the upstream started and never tells us about.
    let body = json!({"name": "family", "transport": "stdio", "command": "sh",
                      "args": ["-c", r#"sleep 1000 & exec "$0" --name family"#, TestMcp::BIN],
                      "probe_interval": "1h"});
    server.register(&body).await;
    server.events.status("family", "healthy", WAIT).await;
    let pid = server.server_json("family").await["pid"].as_u64().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let (helper, pgrp) = loop {
        if let Some((child, pgrp, _)) = children_of(pid).into_iter().find(|c| c.2 == "sleep") {
            break (child, pgrp);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sleep under {pid}: {:?}",
            children_of(pid)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pgrp, pid, "the upstream leads the group its helper is in");

    let resp = server
        .http
        .delete(server.url("/api/v1/servers/family"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    wait_gone(pid).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !process_dead(helper) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the helper {helper} outlived its server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_streamable_http_upstream_lost_behind_an_open_circuit_is_reconnected() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let first = TestMcp::start_http(&addr, "shy");
    let db = TestDb::new();
    let mut server = TestServer::start(slow_cooldown(&db)).await;
    let url = format!("http://{addr}/mcp");
    let body = json!({"name": "shy", "transport": "streamable_http", "url": url,
                      "probe_interval": "1h", "timeout": "1s"});
    server.register(&body).await;
    server.events.status("shy", "healthy", WAIT).await;
    for _ in 0..5 {
        server.call("shy", "fail", json!({})).await;
    }
    server.events.health("shy", "circuit_opened", WAIT).await;

    // Gone while the circuit is open: the half-open trial cannot reach it, and that one
    // probe ends the session instead of waiting out ever longer cool-downs.
    drop(first);
    server.events.health("shy", "circuit_half_open", WAIT).await;
    let exited = server.events.health("shy", "exited", WAIT).await;
    let reason = exited["detail"]["reason"].as_str().unwrap();
    assert!(reason.contains("with the circuit open"), "{exited}");

    let _second = TestMcp::start_http(&addr, "shy");
    server.events.status("shy", "healthy", WAIT).await;
    let got = server.server_json("shy").await;
    assert_eq!(got["circuit"], "closed", "{got}");
    let (status, body) = server.call("shy", "echo", json!({"text": "back"})).await;
    assert_eq!((status, text_of(&body)), (StatusCode::OK, "back"), "{body}");
    server.stop().await;
}
