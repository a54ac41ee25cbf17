//! The tool-call path with its cache, against the real gateway and our test MCP server.

mod common;

use std::time::Duration;

use common::{TestDb, TestServer, WAIT, cached, text_of};
use futures_util::future::join_all;
use omni_bridge::config::Settings;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Starts a gateway with one healthy stdio upstream declared by `body`.
async fn with_upstream(settings: Settings, body: Value) -> TestServer {
    let mut server = TestServer::start(settings).await;
    server.register_healthy(&body).await;
    server
}

async fn stats(server: &TestServer) -> Value {
    server.get_json("/api/v1/cache/stats").await
}

#[tokio::test]
async fn a_read_only_call_misses_then_hits_whatever_the_key_order() {
    let db = TestDb::new();
    let server = with_upstream(db.stdio_settings(), cached("ro")).await;
    let path = "/api/v1/servers/ro/tools/add/call";
    let (status, first) = server
        .post_raw(path, r#"{"arguments":{"a":1,"b":2}}"#.into())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (first["cached"].clone(), text_of(&first)),
        (json!(false), "3")
    );
    let (_, second) = server
        .post_raw(path, "{ \"arguments\" : { \"b\" : 2,\n \"a\": 1 } }".into())
        .await;
    assert_eq!(second["cached"], true);
    assert_eq!(second["result"], first["result"]);
    let (_, other) = server
        .post_raw(path, r#"{"arguments":{"a":1,"b":3}}"#.into())
        .await;
    assert_eq!(
        (other["cached"].clone(), text_of(&other)),
        (json!(false), "4")
    );
    server.stop().await;
}

#[tokio::test]
async fn non_read_only_tools_and_tool_errors_are_never_cached() {
    let db = TestDb::new();
    let server = with_upstream(db.stdio_settings(), cached("rw")).await;
    for expected in ["1", "2", "3"] {
        let (status, body) = server.call("rw", "counter", json!({})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (body["cached"].clone(), text_of(&body)),
            (json!(false), expected)
        );
    }
    for _ in 0..2 {
        let (_, body) = server.call("rw", "tool_error", json!({})).await;
        assert_eq!(body["result"]["isError"], true);
        assert_eq!(body["cached"], false);
    }
    let s = stats(&server).await;
    assert_eq!(s["insertions"], 0, "{s}");
    assert_eq!(s["entries"], 0);
    server.stop().await;
}

#[tokio::test]
async fn fifty_identical_concurrent_misses_make_one_upstream_call() {
    let db = TestDb::new();
    let mut body = cached("flight");
    body["tools"] = json!({"counter": {"cache": "always"}});
    let server = with_upstream(db.stdio_settings(), body).await;
    let calls = (0..50).map(|_| server.call("flight", "counter", json!({"delay_ms": 1000})));
    let results = join_all(calls).await;
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(text_of(body), "1", "every caller got the one call's result");
    }
    // Bypassing the cache reaches the upstream: its counter proves one call so far.
    let resp = server
        .http
        .post(server.url("/api/v1/servers/flight/tools/counter/call"))
        .header("cache-control", "no-cache")
        .json(&json!({"arguments": {"delay_ms": 1000}}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["cached"].clone(), text_of(&body)),
        (json!(false), "2")
    );
    server.stop().await;
}

#[tokio::test]
async fn bypass_and_refresh() {
    let db = TestDb::new();
    let mut body = cached("modes");
    body["tools"] = json!({"counter": {"cache": "always"}});
    let server = with_upstream(db.stdio_settings(), body).await;
    let (_, first) = server.call("modes", "counter", json!({})).await;
    assert_eq!(
        (first["cached"].clone(), text_of(&first)),
        (json!(false), "1")
    );
    let (_, hit) = server.call("modes", "counter", json!({})).await;
    assert_eq!((hit["cached"].clone(), text_of(&hit)), (json!(true), "1"));

    // no-cache: straight to the upstream, and the cache keeps what it had.
    let resp = server
        .http
        .post(server.url("/api/v1/servers/modes/tools/counter/call"))
        .header("cache-control", "no-cache")
        .json(&json!({"arguments": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-cache"], "miss");
    let bypassed: Value = resp.json().await.unwrap();
    assert_eq!(text_of(&bypassed), "2");
    let (_, still) = server.call("modes", "counter", json!({})).await;
    assert_eq!(
        (still["cached"].clone(), text_of(&still)),
        (json!(true), "1")
    );

    // refresh: a fresh call whose result replaces the entry.
    let (_, refreshed) = server
        .post_raw(
            "/api/v1/servers/modes/tools/counter/call?cache=refresh",
            json!({"arguments": {}}).to_string(),
        )
        .await;
    assert_eq!(
        (refreshed["cached"].clone(), text_of(&refreshed)),
        (json!(false), "3")
    );
    let (_, after) = server.call("modes", "counter", json!({})).await;
    assert_eq!(
        (after["cached"].clone(), text_of(&after)),
        (json!(true), "3")
    );
    let (status, bad) = server
        .post_raw(
            "/api/v1/servers/modes/tools/counter/call?cache=sometimes",
            "{}".into(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    server.stop().await;
}

#[tokio::test]
async fn stats_are_exact_after_a_scripted_sequence() {
    let db = TestDb::new();
    let server = with_upstream(db.stdio_settings(), cached("counted")).await;
    // Not cacheable, so no lookup; a write, but with nothing cached yet it drops nothing.
    server.call("counted", "counter", json!({})).await;
    server.call("counted", "echo", json!({"text": "a"})).await; // miss
    server.call("counted", "echo", json!({"text": "a"})).await; // hit
    server.call("counted", "echo", json!({"text": "b"})).await; // miss
    server.call("counted", "add", json!({"a": 1, "b": 1})).await; // miss
    let resp = server
        .http
        .delete(server.url("/api/v1/cache/servers/counted/tools/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["invalidated"], 2);
    let s = stats(&server).await;
    assert_eq!(
        (
            s["hits"].as_u64(),
            s["misses"].as_u64(),
            s["insertions"].as_u64(),
            s["invalidations"].as_u64(),
            s["entries"].as_u64(),
            s["evictions"].as_u64(),
            s["expirations"].as_u64()
        ),
        (
            Some(1),
            Some(3),
            Some(3),
            Some(2),
            Some(1),
            Some(0),
            Some(0)
        ),
        "{s}"
    );
    assert_eq!(s["hit_rate"], 0.25);
    assert!(s["bytes"].as_u64().unwrap() > 0);
    server.stop().await;
}

#[tokio::test]
async fn the_count_bound_evicts_the_least_recently_used() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.cache.limits.max_entries = 2;
    let server = with_upstream(settings, cached("small")).await;
    for text in ["a", "b", "c"] {
        server.call("small", "echo", json!({ "text": text })).await;
    }
    let s = stats(&server).await;
    assert_eq!(
        (s["entries"].as_u64(), s["evictions"].as_u64()),
        (Some(2), Some(1))
    );
    let (_, a) = server.call("small", "echo", json!({"text": "a"})).await;
    assert_eq!(a["cached"], false, "a was the least recently used");
    let (_, c) = server.call("small", "echo", json!({"text": "c"})).await;
    assert_eq!(c["cached"], true);
    server.stop().await;
}

/// Primes the cache with one echo result, then checks that `trigger` empties it: an
/// invalidation event names the server and the reason, and the next call misses.
async fn assert_invalidates(server: &mut TestServer, name: &str, reason: &str, reconnects: bool) {
    if reconnects {
        server.events.status(name, "healthy", WAIT).await;
    }
    let event = server
        .events
        .seen_or_wait(WAIT, &format!("cache_invalidated ({reason})"), |e| {
            e.kind == omni_bridge::events::EventType::CacheInvalidated && e.data["reason"] == reason
        })
        .await;
    assert_eq!(event.data["server"], name, "{}", event.data);
    assert_eq!(event.data["entries"], 1, "{}", event.data);
    let (status, body) = server.call(name, "echo", json!({"text": "primed"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cached"], false, "{reason} left a stale entry");
}

async fn prime(server: &TestServer, name: &str) {
    server.call(name, "echo", json!({"text": "primed"})).await;
    let (_, body) = server.call(name, "echo", json!({"text": "primed"})).await;
    assert_eq!(body["cached"], true);
}

#[tokio::test]
async fn every_automatic_invalidation_path() {
    let db = TestDb::new();
    // These two tools change things but, as the operator says here, no result: the
    // invalidations under test are the automatic ones, not a write's.
    let mut body = cached("auto");
    body["tools"] = json!({
        "toggle_extra": {"invalidates": []},
        "crash": {"invalidates": []},
        "announce": {"invalidates": []},
    });
    let mut server = with_upstream(db.stdio_settings(), body.clone()).await;

    prime(&server, "auto").await;
    let resp = server
        .http
        .post(server.url("/api/v1/servers/auto/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_invalidates(&mut server, "auto", "reloading", true).await;

    prime(&server, "auto").await;
    let resp = server
        .http
        .post(server.url("/api/v1/servers/auto/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_invalidates(&mut server, "auto", "reset", true).await;

    // The upstream's own signals: tools/list_changed, resources/list_changed and
    // resources/updated each drop its entries.
    prime(&server, "auto").await;
    server.call("auto", "toggle_extra", json!({})).await;
    assert_invalidates(&mut server, "auto", "list_changed", false).await;
    // The list did change: its refresh drops the entries once more; let it pass.
    server
        .events
        .seen_or_wait(WAIT, "cache_invalidated (tools_changed)", |e| {
            e.kind == omni_bridge::events::EventType::CacheInvalidated
                && e.data["reason"] == "tools_changed"
        })
        .await;
    for kind in ["updated", "list_changed"] {
        prime(&server, "auto").await;
        server.call("auto", "announce", json!({"kind": kind})).await;
        let event = server
            .events
            .wait_for(
                WAIT,
                &format!("cache_invalidated (resources {kind})"),
                |e| {
                    e.kind == omni_bridge::events::EventType::CacheInvalidated
                        && e.data["reason"] == "list_changed"
                },
            )
            .await;
        assert_eq!(event.data["entries"], 1, "{}", event.data);
        let (_, body) = server.call("auto", "echo", json!({"text": "primed"})).await;
        assert_eq!(body["cached"], false, "resources {kind} left a stale entry");
    }

    prime(&server, "auto").await;
    server.call("auto", "crash", json!({})).await;
    assert_invalidates(&mut server, "auto", "restarted", true).await;

    prime(&server, "auto").await;
    let mut changed = body;
    changed["timeout"] = json!("6s");
    let resp = server
        .http
        .put(server.url("/api/v1/servers/auto"))
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_invalidates(&mut server, "auto", "reconfigured", true).await;

    prime(&server, "auto").await;
    let resp = server
        .http
        .delete(server.url("/api/v1/servers/auto"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let event = server
        .events
        .wait_for(WAIT, "cache_invalidated (removed)", |e| {
            e.kind == omni_bridge::events::EventType::CacheInvalidated
                && e.data["reason"] == "removed"
        })
        .await;
    assert_eq!(event.data["entries"], 1);
    assert_eq!(stats(&server).await["entries"], 0);
    server.stop().await;
}

#[tokio::test]
async fn admin_invalidation_by_tool_server_and_all() {
    let db = TestDb::new();
    let server = with_upstream(db.stdio_settings(), cached("adm")).await;
    let fill = || async {
        server.call("adm", "echo", json!({"text": "x"})).await;
        server.call("adm", "add", json!({"a": 1, "b": 2})).await;
    };
    fill().await;
    let delete = |path: &'static str| {
        let url = server.url(path);
        let http = server.http.clone();
        async move {
            let resp = http.delete(url).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<Value>().await.unwrap()["invalidated"]
                .as_u64()
                .unwrap()
        }
    };
    assert_eq!(delete("/api/v1/cache/servers/adm/tools/echo").await, 1);
    let (_, add) = server.call("adm", "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(add["cached"], true, "other tools keep their entries");
    assert_eq!(delete("/api/v1/cache/servers/adm").await, 1);
    fill().await;
    assert_eq!(delete("/api/v1/cache").await, 2);
    assert_eq!(stats(&server).await["entries"], 0);
    let resp = server
        .http
        .delete(server.url("/api/v1/cache/servers/Bad_Name"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test]
async fn every_error_status_of_the_call_endpoint() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.body_limit = 64 * 1024;
    let mut body = cached("errs");
    body["timeout"] = json!("300ms");
    let mut server = with_upstream(settings, body).await;

    let (status, body) = server.call("nobody", "echo", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("server-not-found"))
    );
    let (status, body) = server.call("errs", "nothing", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("tool-not-found"))
    );

    // Arguments are checked against the tool's inputSchema before any upstream call.
    let (status, body) = server.call("errs", "echo", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid-arguments");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("text"),
        "{body}"
    );
    let (status, body) = server
        .call("errs", "add", json!({"a": 1, "b": "two"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "arguments.b", "{body}");
    let (status, _) = server
        .post_raw("/api/v1/servers/errs/tools/echo/call", "{".into())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let big = "x".repeat(100 * 1024);
    let (status, body) = server.call("errs", "echo", json!({ "text": big })).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "payload-too-large", "{body}");

    let (status, body) = server.call("errs", "sleep", json!({"ms": 5000})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::GATEWAY_TIMEOUT, Some("upstream-timeout"))
    );

    let (status, body) = server.call("errs", "fail", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("upstream-error"))
    );

    // Three more failures open the circuit (five in a row with the two above).
    for _ in 0..3 {
        server.call("errs", "fail", json!({})).await;
    }
    server.events.health("errs", "circuit_opened", WAIT).await;
    let resp = server
        .http
        .post(server.url("/api/v1/servers/errs/tools/echo/call"))
        .json(&json!({"arguments": {"text": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "circuit-open"
    );
    server.stop().await;
}

#[tokio::test]
async fn every_call_is_audited() {
    let db = TestDb::new();
    let server = with_upstream(db.stdio_settings(), cached("audited")).await;
    server.call("audited", "echo", json!({"text": "a"})).await;
    server.call("audited", "echo", json!({"text": "a"})).await;
    server.call("audited", "tool_error", json!({})).await;
    server.call("audited", "nothing", json!({})).await;
    // Rows are written in batches off the request path; wait until all four are there.
    let deadline = tokio::time::Instant::now() + WAIT;
    let rows = loop {
        let page: Value = server.get_json("/api/v1/invocations?server=audited").await;
        let rows = page["invocations"].as_array().unwrap().clone();
        if rows.len() == 4 {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "audit rows so far: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let summary: Vec<(String, bool, String, i64)> = rows
        .iter()
        .rev()
        .map(|r| {
            (
                r["tool"].as_str().unwrap().to_owned(),
                r["cached"].as_bool().unwrap(),
                r["outcome"].as_str().unwrap().to_owned(),
                r["status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("echo".to_owned(), false, "ok".to_owned(), 200),
            ("echo".to_owned(), true, "ok".to_owned(), 200),
            ("tool_error".to_owned(), false, "tool_error".to_owned(), 200),
            (
                "nothing".to_owned(),
                false,
                "tool-not-found".to_owned(),
                404
            ),
        ]
    );
    assert_eq!(rows[3]["arguments_hash"], rows[2]["arguments_hash"]);
    assert_eq!(rows[3]["arguments_hash"].as_str().unwrap().len(), 64);
    server.stop().await;
}

/// Polls the cache stats until `done` accepts them. The sweep timer publishes no event,
/// so this polls, with a deadline.
async fn wait_stats(server: &TestServer, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = stats(server).await;
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cache stats never showed {what}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a `sleep` call of `ms` (cacheable), runs `invalidate` while the upstream holds
/// it, then checks that its fill was refused and that the next fill is kept.
async fn a_fill_is_refused_across(
    server: &mut TestServer,
    ms: u64,
    what: &str,
    invalidate: impl AsyncFnOnce(&mut TestServer),
) {
    let (status, first) = server
        .across_a_slow_call("race", json!({"ms": ms}), invalidate)
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["cached"], false);
    let (_, again) = server.call("race", "sleep", json!({"ms": ms})).await;
    assert_eq!(
        again["cached"], false,
        "the fill of a call started before {what} brought its result back"
    );
    let (_, third) = server.call("race", "sleep", json!({"ms": ms})).await;
    assert_eq!(
        third["cached"], true,
        "with no invalidation in between, a fill is kept"
    );
}

#[tokio::test]
async fn an_invalidation_during_a_call_is_not_undone_by_its_fill() {
    let db = TestDb::new();
    let mut body = cached("race");
    // `sleeping` (how the test sees the call in flight) is no write: only the
    // invalidation under test may refuse the fill.
    body["tools"] = json!({"sleep": {"cache": "always"}, "sleeping": {"invalidates": []}});
    let mut server = with_upstream(db.stdio_settings(), body).await;

    // An admin invalidation while the call waits on the upstream.
    a_fill_is_refused_across(&mut server, 1500, "the invalidation", async |server| {
        let resp = server
            .http
            .delete(server.url("/api/v1/cache/servers/race"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    })
    .await;

    // A changed catalogue while the call waits on the upstream.
    a_fill_is_refused_across(&mut server, 1501, "the catalogue changed", async |server| {
        let (status, toggled) = server.call("race", "toggle_extra", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{toggled}");
        server
            .events
            .wait_for(WAIT, "cache_invalidated (tools_changed)", |e| {
                e.kind == omni_bridge::events::EventType::CacheInvalidated
                    && e.data["reason"] == "tools_changed"
            })
            .await;
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn the_sweep_timer_drops_expired_entries_without_a_lookup() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.cache.sweep_interval = Duration::from_millis(20);
    let mut body = cached("swept");
    body["cache_ttl"] = json!("50ms");
    let server = with_upstream(settings, body).await;
    let (status, first) = server.call("swept", "echo", json!({"text": "a"})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["cached"], false);
    let s = wait_stats(&server, "the entry swept", |s| s["entries"] == 0).await;
    assert_eq!(
        (
            s["insertions"].as_u64(),
            s["expirations"].as_u64(),
            s["hits"].as_u64(),
            s["misses"].as_u64(),
            s["bytes"].as_u64(),
        ),
        (Some(1), Some(1), Some(0), Some(1), Some(0)),
        "{s}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_tool_ttl_overrides_the_servers_end_to_end() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.cache.sweep_interval = Duration::from_millis(20);
    let mut body = cached("ttls");
    body["cache_ttl"] = json!("1h");
    body["tools"] = json!({"echo": {"cache_ttl": "100ms"}});
    let server = with_upstream(settings, body).await;

    let catalogue = server.get_json("/api/v1/tools").await;
    let cache_of = |tool: &str| {
        catalogue["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["server"] == "ttls" && t["tool"] == tool)
            .unwrap_or_else(|| panic!("{tool} not listed: {catalogue}"))["cache"]
            .clone()
    };
    let policy = |tool: &str| {
        let mut cache = cache_of(tool);
        let writers = cache["invalidated_by"].take();
        (cache, writers)
    };
    let (echo, writers) = policy("echo");
    assert_eq!(
        echo,
        json!({"cached": true, "why": "annotations", "ttl": "100ms", "invalidates": [], "invalidated_by": null})
    );
    // The tools that are not read-only drop it when called; the read-only ones do not.
    let writers: Vec<&str> = writers
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        writers.contains(&"counter") && writers.contains(&"write_note"),
        "{writers:?}"
    );
    assert!(
        !writers.contains(&"add") && !writers.contains(&"echo"),
        "{writers:?}"
    );
    assert_eq!(policy("add").0["ttl"], "1h");
    // Not read-only: never cached, and a call of it drops the server's entries.
    let (counter, _) = policy("counter");
    assert_eq!(
        counter,
        json!({"cached": false, "why": "annotations", "ttl": null, "invalidates": ["*"], "invalidated_by": null})
    );
    server.call("ttls", "echo", json!({"text": "a"})).await;
    server.call("ttls", "add", json!({"a": 1, "b": 2})).await;
    let s = wait_stats(&server, "an expiration", |s| {
        s["expirations"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(
        (
            s["insertions"].as_u64(),
            s["expirations"].as_u64(),
            s["entries"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "only echo's entry has a short TTL: {s}"
    );
    let (_, add) = server.call("ttls", "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(add["cached"], true, "add keeps the server's 1h TTL");
    let (_, echo) = server.call("ttls", "echo", json!({"text": "a"})).await;
    assert_eq!(echo["cached"], false, "echo's 100ms TTL is over");
    server.stop().await;
}

#[tokio::test]
async fn each_admin_invalidation_publishes_one_event() {
    let db = TestDb::new();
    let mut server = with_upstream(db.stdio_settings(), cached("evt")).await;
    async fn fill(server: &TestServer) {
        server.call("evt", "echo", json!({"text": "x"})).await;
        server.call("evt", "add", json!({"a": 1, "b": 2})).await;
    }
    fill(&server).await;
    let steps = [
        (
            "/api/v1/cache/servers/evt/tools/echo",
            json!({"scope": "tool", "server": "evt", "tool": "echo", "entries": 1, "reason": "admin"}),
        ),
        (
            "/api/v1/cache/servers/evt",
            json!({"scope": "server", "server": "evt", "entries": 1, "reason": "admin"}),
        ),
        (
            "/api/v1/cache",
            json!({"scope": "all", "entries": 0, "reason": "admin"}),
        ),
    ];
    for (path, expected) in &steps {
        let resp = server.http.delete(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.json::<Value>().await.unwrap()["invalidated"],
            expected["entries"]
        );
        let event = server
            .events
            .wait_for(WAIT, &format!("cache_invalidated for {path}"), |e| {
                e.kind == omni_bridge::events::EventType::CacheInvalidated
                    && e.data["reason"] == "admin"
            })
            .await;
        assert_eq!(&event.data, expected, "{path}");
        let server_name = event.server.as_ref().map(|s| s.to_string());
        assert_eq!(
            server_name.as_deref(),
            expected["server"].as_str(),
            "{path}"
        );
    }
    // A last one that drops two entries: the events of the steps above are all before it
    // on the bus, so a duplicate of any of them would show up in `seen` by now.
    fill(&server).await;
    let resp = server
        .http
        .delete(server.url("/api/v1/cache"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["invalidated"], 2);
    server
        .events
        .wait_for(WAIT, "cache_invalidated of two entries", |e| {
            e.kind == omni_bridge::events::EventType::CacheInvalidated
                && e.data["reason"] == "admin"
                && e.data["entries"] == 2
        })
        .await;
    let admin: Vec<&Value> = server
        .events
        .seen
        .iter()
        .filter(|e| {
            e.kind == omni_bridge::events::EventType::CacheInvalidated
                && e.data["reason"] == "admin"
        })
        .map(|e| &e.data)
        .collect();
    assert_eq!(admin.len(), steps.len() + 1, "one event each: {admin:#?}");
    server.stop().await;
}

#[tokio::test]
async fn refused_arguments_never_reach_the_upstream() {
    let db = TestDb::new();
    let server = with_upstream(db.stdio_settings(), cached("guard")).await;
    for bad in [json!({"delay_ms": -1}), json!({"delay_ms": "soon"})] {
        let (status, body) = server.call("guard", "counter", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            (
                body["error"]["code"].as_str(),
                body["error"]["field"].as_str()
            ),
            (Some("invalid-arguments"), Some("arguments.delay_ms")),
            "{body}"
        );
    }
    let (status, body) = server.call("guard", "counter", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(text_of(&body), "1", "the refused calls did not count");
    server.stop().await;
}
