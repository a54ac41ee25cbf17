//! The cache never serves a stale answer unless the operator asked for caching: with the
//! default configuration every read reaches the upstream (over the HTTP API and `/mcp`);
//! with caching opted in, a write through the gateway makes the next read fresh, on one
//! instance and across two sharing PostgreSQL and Redis; calls of a tool that is not
//! cached are never merged. The test MCP server's `write_note` / `read_note` stand for a
//! file server's write and read.

mod common;

use common::{TestDb, TestMcp, TestServer, WAIT, text_of};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

async fn write(server: &TestServer, name: &str, text: &str) {
    let (status, body) = server.call(name, "write_note", json!({"text": text})).await;
    assert_eq!(status, 200, "{body}");
}

async fn read(server: &TestServer, name: &str) -> (bool, String) {
    let (status, body) = server.call(name, "read_note", json!({})).await;
    assert_eq!(status, 200, "{body}");
    (body["cached"] == true, text_of(&body).to_owned())
}

fn note_server(name: &str, cache: Option<&str>) -> Value {
    let mut body = common::stdio(name);
    if let Some(cache) = cache {
        body["cache"] = json!(cache);
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_read_after_a_write_is_fresh_over_http_and_mcp() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&note_server("files", None)).await;
    write(&server, "files", "version 1").await;
    assert_eq!(read(&server, "files").await, (false, "version 1".into()));
    assert_eq!(read(&server, "files").await, (false, "version 1".into()));
    write(&server, "files", "version 2").await;
    assert_eq!(read(&server, "files").await, (false, "version 2".into()));

    // The same through /mcp.
    let client =
        ().serve(StreamableHttpClientTransport::from_uri(server.url("/mcp")))
            .await
            .expect("handshake");
    let call = |name: &str, args: Value| {
        CallToolRequestParams::new(name.to_owned())
            .with_arguments(args.as_object().unwrap().clone())
    };
    let text = |result: rmcp::model::CallToolResult| {
        result.content[0]
            .as_text()
            .map(|t| t.text.clone())
            .unwrap_or_default()
    };
    client
        .call_tool(call("files__write_note", json!({"text": "version 3"})))
        .await
        .unwrap();
    let first = client
        .call_tool(call("files__read_note", json!({})))
        .await
        .unwrap();
    assert_eq!(text(first), "version 3");
    client
        .call_tool(call("files__write_note", json!({"text": "version 4"})))
        .await
        .unwrap();
    let second = client
        .call_tool(call("files__read_note", json!({})))
        .await
        .unwrap();
    assert_eq!(text(second), "version 4");
    client.cancel().await.unwrap();

    // Nothing was cached at all.
    let stats = server.get_json("/api/v1/cache/stats").await;
    assert_eq!(
        (stats["entries"].as_u64(), stats["hits"].as_u64()),
        (Some(0), Some(0))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_in_a_write_through_the_gateway_makes_the_next_read_fresh() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server
        .register_healthy(&note_server("files", Some("read-only")))
        .await;
    write(&server, "files", "version 1").await;
    assert_eq!(read(&server, "files").await, (false, "version 1".into()));
    assert_eq!(read(&server, "files").await, (true, "version 1".into()));
    write(&server, "files", "version 2").await;
    // The write's answer came after its invalidation: this read cannot be stale.
    assert_eq!(read(&server, "files").await, (false, "version 2".into()));
    assert_eq!(read(&server, "files").await, (true, "version 2".into()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_listing_what_it_invalidates_drops_only_that() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    let mut body = note_server("files", Some("read-only"));
    body["tools"] = json!({"write_note": {"invalidates": ["read_*"]}});
    server.register_healthy(&body).await;
    let (_, first) = server.call("files", "echo", json!({"text": "kept"})).await;
    assert_eq!(first["cached"], false);
    write(&server, "files", "a").await;
    assert_eq!(read(&server, "files").await, (false, "a".into()));
    write(&server, "files", "b").await;
    assert_eq!(read(&server, "files").await, (false, "b".into()));
    // echo is not a read_*: still cached.
    let (_, again) = server.call("files", "echo", json!({"text": "kept"})).await;
    assert_eq!(again["cached"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_calls_of_an_uncached_tool_both_reach_the_upstream() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    // Caching on for the server, but `counter` is not read-only: never merged.
    server
        .register_healthy(&note_server("side", Some("read-only")))
        .await;
    let args = json!({"delay_ms": 300});
    let (a, b) = tokio::join!(
        server.call("side", "counter", args.clone()),
        server.call("side", "counter", args.clone())
    );
    let mut counts = [text_of(&a.1).to_owned(), text_of(&b.1).to_owned()];
    counts.sort();
    assert_eq!(counts, ["1", "2"], "{a:?} {b:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_makes_the_next_read_on_another_fresh() {
    let db = TestDb::new();
    if !db.is_postgres() {
        eprintln!("skipped: needs OMNI_TEST_DATABASE_URL (PostgreSQL)");
        return;
    }
    let redis = std::env::var("OMNI_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let prefix = format!("omni-fresh-{:08x}:", rand::random::<u32>());
    // One upstream both reach, so both see the same note; declared in both files, so
    // neither instance depends on hearing of the other's registration.
    let upstream = TestMcp::start_http("127.0.0.1:0", "files");
    let declared: omni_bridge::registry::ServerInput = serde_json::from_value(json!({
        "name": "files", "transport": "streamable_http", "url": upstream.mcp_url(),
        "cache": "read-only", "probe_interval": "1h",
    }))
    .unwrap();
    let settings = || {
        let mut s = db.stdio_settings();
        s.cache.redis_url = redis.clone();
        s.cache.redis_prefix = prefix.clone();
        s.servers = vec![declared.clone().validate().unwrap()];
        s
    };
    let a = TestServer::start(settings()).await;
    let mut b = TestServer::start(settings()).await;
    for server in [&a, &b] {
        common::poll_until(
            async || match server.server_json("files").await["status"].as_str() {
                Some("healthy") => Ok(()),
                other => Err(format!("files is {other:?}")),
            },
        )
        .await;
    }

    let hears_a_write = async |b: &mut TestServer| {
        b.events
            .wait_for(WAIT, "B hears of A's write", |e| {
                e.kind == omni_bridge::events::EventType::CacheInvalidated
                    && e.data["reason"] == "another instance"
            })
            .await;
    };
    write(&a, "files", "version 1").await;
    hears_a_write(&mut b).await;
    for server in [&a, &b] {
        read(server, "files").await;
        assert_eq!(read(server, "files").await, (true, "version 1".into()));
    }
    write(&a, "files", "version 2").await;
    // A's write was announced before its answer; B drops its entry when it hears.
    hears_a_write(&mut b).await;
    assert_eq!(read(&b, "files").await, (false, "version 2".into()));
    // A dropped its entry before answering the write; what it reads now is fresh (B's
    // read may already have shared it through Redis: a hit of the new note).
    assert_eq!(read(&a, "files").await.1, "version 2");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_answer_says_how_old_it_is_and_a_client_can_ask_for_a_fresh_one() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server
        .register_healthy(&note_server("files", Some("read-only")))
        .await;
    write(&server, "files", "v1").await;
    let url = server.url("/api/v1/servers/files/tools/read_note/call");
    let first = server
        .http
        .post(&url)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(first.headers().get("age").is_none(), "a miss has no Age");
    let hit = server
        .http
        .post(&url)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let age: u64 = hit.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!(age < 60, "{age}");
    let body: Value = hit.json().await.unwrap();
    assert_eq!(body["cached"], true);
    let cached_at = chrono::DateTime::parse_from_rfc3339(body["cached_at"].as_str().unwrap())
        .expect("cached_at is RFC 3339");
    assert!(cached_at <= chrono::Utc::now());

    // Over /mcp: the result's _meta says so; a request's _meta can ask for a fresh one.
    let client =
        ().serve(StreamableHttpClientTransport::from_uri(server.url("/mcp")))
            .await
            .expect("handshake");
    let cache_meta = |result: &rmcp::model::CallToolResult| {
        result
            .meta
            .as_ref()
            .and_then(|m| m.get("io.omni-bridge/cache"))
            .cloned()
    };
    let read = CallToolRequestParams::new("files__read_note");
    let hit = client.call_tool(read.clone()).await.unwrap();
    let meta = cache_meta(&hit).expect("a cache _meta");
    assert_eq!(meta["hit"], true, "{meta}");
    assert!(meta["age_ms"].as_u64().is_some(), "{meta}");
    let mut fresh = read.clone();
    let mut asked = serde_json::Map::new();
    asked.insert("io.omni-bridge/cache".into(), json!({"fresh": true}));
    fresh.meta = Some(rmcp::model::RequestMetaObject(rmcp::model::MetaObject(
        asked,
    )));
    let answer = client.call_tool(fresh).await.unwrap();
    assert_eq!(cache_meta(&answer).unwrap()["hit"], false);
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_calls_fill_the_cache_at_start_and_after_each_invalidation() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    // Caching off: its warm list is never run.
    let mut off = note_server("cold", None);
    off["tools"] = json!({"echo": {"warm": [{"text": "w"}]}});
    server.register_healthy(&off).await;
    let mut on = note_server("warm", Some("read-only"));
    on["tools"] = json!({"echo": {"warm": [{"text": "w"}, {"text": "v"}]}});
    server.register_healthy(&on).await;
    let warmed_to = async |n: u64| {
        common::poll_until(async || {
            let stats = server.get_json("/api/v1/cache/stats").await;
            match stats["warmed"].as_u64() {
                Some(w) if w >= n => Ok(w),
                _ => Err(format!("{stats}")),
            }
        })
        .await
    };
    assert_eq!(
        warmed_to(2).await,
        2,
        "both warm calls of the cached server, and only they"
    );
    // The first caller finds the answer cached.
    let (_, first) = server.call("warm", "echo", json!({"text": "v"})).await;
    assert_eq!(first["cached"], true, "{first}");
    let (_, cold) = server.call("cold", "echo", json!({"text": "w"})).await;
    assert_eq!(cold["cached"], false, "{cold}");

    // After an invalidation, warm again.
    let resp = server
        .http
        .delete(server.url("/api/v1/cache/servers/warm"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(warmed_to(4).await, 4);
    let (_, again) = server.call("warm", "echo", json!({"text": "w"})).await;
    assert_eq!(again["cached"], true, "{again}");
    // Warm calls are audited under their own caller (rows are written in batches).
    common::poll_until(async || {
        let rows = server.get_json("/api/v1/invocations?server=warm").await;
        let warm_rows = rows["invocations"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter(|r| r["caller"] == "omni-bridge:warm")
                    .count()
            })
            .unwrap_or(0);
        if warm_rows >= 2 {
            Ok(())
        } else {
            Err(format!("{rows}"))
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_on_write_false_leaves_the_entries_to_their_ttl() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    let mut body = note_server("files", Some("read-only"));
    body["invalidate_on_write"] = json!(false);
    server.register_healthy(&body).await;
    assert_eq!(
        server.server_json("files").await["invalidate_on_write"],
        false
    );
    write(&server, "files", "version 1").await;
    read(&server, "files").await;
    write(&server, "files", "version 2").await;
    // The operator said writes do not matter here: the entry stands until its TTL.
    assert_eq!(read(&server, "files").await, (true, "version 1".into()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_at_the_upstream_invalidates_too() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server
        .register_healthy(&note_server("files", Some("read-only")))
        .await;
    write(&server, "files", "version 1").await;
    read(&server, "files").await;
    assert_eq!(read(&server, "files").await, (true, "version 1".into()));
    // `fail` is not read-only and answers a protocol error: it reached the upstream, so it
    // may have written, and the entries go.
    let (status, body) = server.call("files", "fail", json!({})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(read(&server, "files").await, (false, "version 1".into()));
    server.stop().await;
}
