//! Several gateways on one PostgreSQL database behave as one: a change made on one
//! instance reaches the others through LISTEN/NOTIFY, and a listener that loses its
//! connection reconnects and catches up. These need PostgreSQL: they run in the
//! PostgreSQL-backed pass of `.ci/run` (`OMNI_TEST_DATABASE_URL`) and return at once on
//! SQLite, where there is one instance by design.

mod common;

use std::time::Duration;

use common::{TestDb, TestServer, WAIT, cached, poll_until};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use omni_bridge::store::DatabaseUrl;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn postgres(db: &TestDb) -> Option<String> {
    match &db.url {
        DatabaseUrl::Postgres(url) => Some(url.clone()),
        DatabaseUrl::Sqlite(_) => {
            eprintln!("skipped: needs OMNI_TEST_DATABASE_URL (PostgreSQL)");
            None
        }
    }
}

#[derive(diesel::QueryableByName)]
struct Pid {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
}

/// The backends of this database's announcement listeners.
async fn listener_pids(url: &str) -> Vec<i32> {
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    let mut pids: Vec<i32> = diesel::sql_query(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name LIKE 'omni-bridge-listener.%'",
    )
    .load::<Pid>(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|p| p.pid)
    .collect();
    pids.sort();
    pids
}

async fn wait_for_listeners(url: &str, n: usize, not: &[i32]) -> Vec<i32> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pids = listener_pids(url).await;
        if pids.len() == n && pids.iter().all(|p| !not.contains(p)) {
            return pids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "listeners: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two gateways, `inst-a` and `inst-b`, on the test's PostgreSQL database, both listening;
/// `tune` adjusts the settings of each.
async fn two_instances(
    db: &TestDb,
    url: &str,
    tune: impl Fn(&mut omni_bridge::config::Settings),
) -> (TestServer, TestServer) {
    let named = |name: &str| {
        let mut settings = db.stdio_settings();
        settings.instance = name.into();
        tune(&mut settings);
        settings
    };
    let a = TestServer::start(named("inst-a")).await;
    let b = TestServer::start(named("inst-b")).await;
    wait_for_listeners(url, 2, &[]).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_instance_reaches_the_other() {
    let db = TestDb::new();
    let Some(url) = postgres(&db) else { return };
    let (mut a, mut b) = two_instances(&db, &url, |_| {}).await;

    // Registered on A: B starts its own connection to it, and serves it.
    a.register_healthy(&cached("shared")).await;
    b.events.status("shared", "healthy", WAIT).await;
    let (status, body) = b.call("shared", "echo", json!({"text": "via b"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A shows what B sees of it, next to its own view.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let view = a.server_json("shared").await;
        assert_eq!(view["instance"], "inst-a");
        let b_view = view["peers"]
            .as_array()
            .and_then(|p| p.iter().find(|v| v["instance"] == "inst-b").cloned());
        if b_view.is_some_and(|v| v["status"] == "healthy") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never heard B: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Both have a cached answer; an invalidation on B makes A miss next time.
    for server in [&a, &b] {
        server.call("shared", "echo", json!({"text": "c"})).await;
        let (_, hit) = server.call("shared", "echo", json!({"text": "c"})).await;
        assert_eq!(hit["cached"], true);
    }
    let resp = b
        .http
        .delete(b.url("/api/v1/cache/servers/shared"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    a.events
        .wait_for(WAIT, "an invalidation from B", |e| {
            e.kind == omni_bridge::events::EventType::CacheInvalidated
                && e.data["reason"] == "another instance"
        })
        .await;
    let (_, after) = a.call("shared", "echo", json!({"text": "c"})).await;
    assert_eq!(after["cached"], false, "{after}");

    // Deleted on B: A lets it go.
    let resp = b
        .http
        .delete(b.url("/api/v1/servers/shared"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    a.events.health("shared", "removed", WAIT).await;
    let (status, _) = a.call("shared", "echo", json!({"text": "gone"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_loses_its_connection_reconnects_and_catches_up() {
    let db = TestDb::new();
    let Some(url) = postgres(&db) else { return };
    let a = TestServer::start(db.stdio_settings()).await;
    let mut b = TestServer::start(db.stdio_settings()).await;
    let before = wait_for_listeners(&url, 2, &[]).await;

    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name LIKE 'omni-bridge-listener.%'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // A change while the listeners are down (or coming back): B learns of it either way.
    let resp = a
        .http
        .post(a.url("/api/v1/servers"))
        .json(&cached("late"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    b.events.status("late", "healthy", WAIT).await;
    // Both listeners are back, on new connections.
    wait_for_listeners(&url, 2, &before).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_started_together_on_an_empty_database_all_become_ready() {
    let db = TestDb::new();
    let Some(_) = postgres(&db) else { return };
    let (a, b, c) = tokio::join!(
        TestServer::start(db.settings()),
        TestServer::start(db.settings()),
        TestServer::start(db.settings()),
    );
    for server in [&a, &b, &c] {
        let resp = server.http.get(server.url("/readyz")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    for server in [a, b, c] {
        server.stop().await;
    }
}

/// The machine's Redis for the shared-tier tests (`.ci/run` sets it), with a key prefix
/// of this test's own so that tests running at once never meet.
fn redis() -> Option<(String, String)> {
    let url = std::env::var("OMNI_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("skipped: needs OMNI_TEST_REDIS_URL");
    }
    url.map(|u| (u, format!("omni-test-{:08x}:", rand::random::<u32>())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_cached_through_one_instance_is_served_to_another_from_redis() {
    let db = TestDb::new();
    let Some(_) = postgres(&db) else { return };
    let Some((redis_url, prefix)) = redis() else {
        return;
    };
    let settings = || {
        let mut s = db.stdio_settings();
        s.cache.redis_url = Some(redis_url.clone());
        s.cache.redis_prefix = prefix.clone();
        s
    };
    let mut a = TestServer::start(settings()).await;
    let mut b = TestServer::start(settings()).await;
    // One upstream both instances reach over HTTP, counting the calls it really gets.
    let upstream = common::TestMcp::start_http("127.0.0.1:0", "counted");
    a.register_healthy(&json!({
        "name": "counted", "transport": "streamable_http", "url": upstream.mcp_url(),
        "cache": "always", "probe_interval": "1h",
    }))
    .await;
    b.events.status("counted", "healthy", WAIT).await;

    let (_, first) = a.call("counted", "counter", json!({})).await;
    assert_eq!(
        (first["cached"].clone(), common::text_of(&first)),
        (json!(false), "1")
    );
    // A shares it off its request path; wait until Redis holds it.
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}cache:counted:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never shared its result"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B has never seen it: the answer comes from Redis, and the upstream is not called.
    let (_, shared) = b.call("counted", "counter", json!({})).await;
    assert_eq!(shared["cached"], true, "{shared}");
    assert_eq!(common::text_of(&shared), "1", "{shared}");

    // Cleared through B: gone from Redis and from A's own tier.
    let resp = b.http.delete(b.url("/api/v1/cache")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    a.events
        .wait_for(WAIT, "the invalidation from B", |e| {
            e.kind == omni_bridge::events::EventType::CacheInvalidated
                && e.data["reason"] == "another instance"
        })
        .await;
    let (_, after) = a.call("counted", "counter", json!({})).await;
    assert_eq!(after["cached"], false, "{after}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_down_costs_only_its_tier() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.cache.redis_url = Some(format!("redis://127.0.0.1:{}", common::free_port()));
    let mut server = TestServer::start(settings).await;
    server.register_healthy(&cached("alone")).await;
    let (status, first) = server.call("alone", "echo", json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["cached"], false);
    let (status, second) = server.call("alone", "echo", json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["cached"], true, "the local tier still works");
    server.stop().await;
}

/// A fill that began before another instance cleared Redis must not land in Redis after
/// the clear, where every instance would take it up. The two gateways here share only
/// Redis (each has its own store), so A never hears of B's clear: only Redis can refuse
/// A's late fill, by the invalidation counter A read before it asked its upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_begun_before_another_instance_cleared_redis_is_not_shared() {
    let Some((redis_url, prefix)) = redis() else {
        return;
    };
    let (db_a, db_b) = (TestDb::new(), TestDb::new());
    let settings = |db: &TestDb| {
        let mut s = db.stdio_settings();
        s.cache.redis_url = Some(redis_url.clone());
        s.cache.redis_prefix = prefix.clone();
        s
    };
    let mut a = TestServer::start(settings(&db_a)).await;
    let mut b = TestServer::start(settings(&db_b)).await;
    let mut race = cached("race");
    // `sleeping` (how the test sees the call in flight) changes nothing: no write.
    race["tools"] = json!({"sleep": {"cache": "always"}, "sleeping": {"invalidates": []}});
    a.register_healthy(&race).await;
    b.register_healthy(&race).await;
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let epoch_key = format!("{prefix}cache-epoch");
    let epoch = async |conn: &mut redis::aio::MultiplexedConnection| -> u64 {
        let e: Option<u64> = redis::cmd("GET")
            .arg(&epoch_key)
            .query_async(conn)
            .await
            .unwrap();
        e.unwrap_or(0)
    };
    let before = epoch(&mut conn).await;

    // A's call is with its upstream when B clears the cache, Redis included.
    let args = json!({"ms": 1500});
    let (status, first) = a
        .across_a_slow_call("race", args.clone(), async |_| {
            let resp = b.http.delete(b.url("/api/v1/cache")).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            // B clears Redis off its request path; no event says when, so poll.
            poll_until(async || match epoch(&mut conn).await {
                now if now == before => Err("B never cleared Redis".to_owned()),
                _ => Ok(()),
            })
            .await;
        })
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["cached"], false);
    // A offers its fill to Redis off its request path; its stats tell when Redis answered.
    let shared = |stats: &Value| -> u64 {
        ["stored", "refused"]
            .iter()
            .map(|k| stats["shared"][k].as_u64().unwrap_or(0))
            .sum()
    };
    let stats = poll_until(async || {
        let stats = a.get_json("/api/v1/cache/stats").await;
        match shared(&stats) {
            0 => Err(format!("A never offered its fill to Redis: {stats}")),
            _ => Ok(stats),
        }
    })
    .await;
    assert_eq!(
        stats["shared"],
        json!({"stored": 0, "refused": 1}),
        "Redis took a fill begun before the clear"
    );
    // So B, which cleared, does not get it back from Redis; A keeps its own copy (it never
    // heard of the clear).
    let (_, at_b) = b.call("race", "sleep", args.clone()).await;
    assert_eq!(at_b["cached"], false, "{at_b}");
    let (_, at_a) = a.call("race", "sleep", args.clone()).await;
    assert_eq!(at_a["cached"], true, "{at_a}");
    // With no clear in between, B's fill is shared as before.
    poll_until(async || {
        let stats = b.get_json("/api/v1/cache/stats").await;
        match stats["shared"]["stored"] == 1 {
            true => Ok(()),
            false => Err(format!(
                "B's fill, begun after the clear, was never shared: {stats}"
            )),
        }
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// A key revoked through one instance ends that key's live stream on another within
/// moments: the revocation is announced, the other instance reloads its keys, and its
/// sessions of that key are closed (1008).
#[actix_web::test]
async fn a_key_revoked_on_one_instance_closes_its_stream_on_another() {
    let db = TestDb::new();
    let Some(url) = postgres(&db) else { return };
    let a = TestServer::start(db.settings()).await;
    let b = TestServer::start(db.settings()).await;
    wait_for_listeners(&url, 2, &[]).await;
    let (admin, viewer) = a
        .admin_and_key(json!({"name": "watcher", "role": "viewer"}))
        .await;
    // B learns of the keys (announced) before the stream authenticates there.
    poll_until(async || {
        let status = b
            .http
            .get(b.url("/api/v1/servers"))
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("B answers the viewer {status}"))
        }
    })
    .await;
    let mut ws = common::ws_connect(&b).await;
    use futures_util::SinkExt;
    ws.send(awc::ws::Message::Text(
        json!({"action": "auth", "key": viewer}).to_string().into(),
    ))
    .await
    .unwrap();
    let first = common::ws_next(&mut ws, WAIT).await;
    assert_eq!(first["type"], "initial_status", "{first}");

    let resp = a
        .http
        .delete(a.url("/api/v1/keys/watcher"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    loop {
        let message = common::ws_next(&mut ws, WAIT).await;
        if let Some(code) = message.get("closed") {
            assert_eq!(code, 1008, "{message}");
            break;
        }
    }
    a.stop().await;
    b.stop().await;
}

/// One `/mcp` client's view of two instances behind a round-robin balancer: each of its
/// requests goes to the instance it names, with its key, session and version.
struct Balanced<'a> {
    instances: [&'a TestServer; 2],
    key: String,
    session: Option<String>,
}

const VERSION: &str = "2025-06-18";

impl Balanced<'_> {
    fn request(&self, to: usize, method: reqwest::Method) -> reqwest::RequestBuilder {
        let server = self.instances[to];
        let mut req = server
            .http
            .request(method, server.url("/mcp"))
            .bearer_auth(&self.key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", VERSION);
        if let Some(id) = &self.session {
            req = req.header("mcp-session-id", id);
        }
        req
    }

    /// POSTs one message to instance `to`; answers the status and the response, read as
    /// it comes (`Events`).
    async fn post(&self, to: usize, body: Value) -> (StatusCode, Events) {
        let resp = self
            .request(to, reqwest::Method::POST)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (resp.status(), Events::of(resp))
    }

    /// Waits until both instances' catalogues hold the fixtures' tools (asked without a
    /// session, in 2026-07-28).
    async fn wait_for_tools(&self) {
        for server in self.instances {
            poll_until(async || {
                let list = json!({"jsonrpc": "2.0", "id": 0, "method": "tools/list", "params": {
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {},
                    "io.modelcontextprotocol/clientInfo": {"name": "balanced", "version": "0"},
                }}});
                let resp = server
                    .http
                    .post(server.url("/mcp"))
                    .bearer_auth(&self.key)
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-protocol-version", "2026-07-28")
                    .header("mcp-method", "tools/list")
                    .json(&list)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let text = resp.text().await.map_err(|e| e.to_string())?;
                match text.contains("fx__test_sampling") {
                    true => Ok(()),
                    false => Err(format!("{} lists {text}", server.base)),
                }
            })
            .await;
        }
    }

    /// POSTs a request to `to` and waits for its answer.
    async fn ask(&self, to: usize, id: u32, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let (status, mut answer) = self.post(to, body).await;
        assert_eq!(status, StatusCode::OK, "{method} on instance {to}");
        answer.until(|m| m["id"] == id).await
    }
}

/// The JSON-RPC messages of one response, JSON body or event stream, as they arrive.
struct Events {
    rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
}

impl Events {
    fn of(resp: reqwest::Response) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let sse = resp
            .headers()
            .get("content-type")
            .is_some_and(|c| c.to_str().unwrap().starts_with("text/event-stream"));
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut body = resp.bytes_stream();
            let mut text = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                if !sse {
                    continue;
                }
                while let Some(end) = text.find("\n\n") {
                    let event: String = text.drain(..end + 2).collect();
                    for message in common::sse_messages(&event) {
                        let _ = tx.send(message);
                    }
                }
            }
            if !sse && let Ok(message) = serde_json::from_str(&text) {
                let _ = tx.send(message);
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first message `wanted` takes; what came before it is kept in `seen`.
    async fn until(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let message = self.rx.recv().await?;
                if wanted(&message) {
                    return Some(message);
                }
                self.seen.push(message);
            }
        })
        .await;
        match found {
            Ok(Some(message)) => message,
            Ok(None) => panic!("the stream ended first; it carried {:?}", self.seen),
            Err(_) => panic!("not in time; the stream carried {:?}", self.seen),
        }
    }

    /// Waits for the stream to end, keeping what it still carried.
    async fn end(&mut self) {
        tokio::time::timeout(WAIT, async {
            while let Some(message) = self.rx.recv().await {
                self.seen.push(message);
            }
        })
        .await
        .expect("the stream ends");
    }
}

/// Registers our test MCP server with its conformance fixtures (sampling, logging,
/// resources) as `fx` through A, and waits until both instances have it.
async fn register_fixtures(a: &mut TestServer, b: &mut TestServer, admin: &str) {
    let mut body = common::stdio("fx");
    body["args"] = json!(["--name", "fx", "--conformance"]);
    let resp = a
        .http
        .post(a.url("/api/v1/servers"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    a.events.status("fx", "healthy", WAIT).await;
    b.events.status("fx", "healthy", WAIT).await;
}

/// A session opened on one instance is used, streamed and ended through both, every
/// request of it going to the other instance than the one before, as a round-robin
/// balancer sends them: no affinity anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_is_served_by_two_instances_in_turn() {
    let db = TestDb::new();
    let Some(url) = postgres(&db) else { return };
    let (mut a, mut b) = two_instances(&db, &url, |_| {}).await;
    let (admin, op) = a
        .admin_and_key(json!({"name": "op", "role": "operator"}))
        .await;
    let other = a
        .create_key(Some(&admin), json!({"name": "other", "role": "operator"}))
        .await;
    register_fixtures(&mut a, &mut b, &admin).await;

    let mut client = Balanced {
        instances: [&a, &b],
        key: op.clone(),
        session: None,
    };
    const A: usize = 0;
    const B: usize = 1;
    client.wait_for_tools().await;
    // 1 (A): the session opens on A.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": VERSION,
        "capabilities": {"sampling": {}},
        "clientInfo": {"name": "balanced", "version": "0"},
    }});
    let resp = client
        .request(A, reqwest::Method::POST)
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    client.session = Some(resp.headers()["mcp-session-id"].to_str().unwrap().into());
    // 2 (B): B has never seen it, and serves it from its record.
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _) = client.post(B, initialized).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Another key cannot use it on either instance.
    for to in [A, B] {
        let stranger = Balanced {
            instances: [&a, &b],
            key: other.clone(),
            session: client.session.clone(),
        };
        let (status, _) = stranger
            .post(to, json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "instance {to}");
    }
    // 3 (A): the tools, as on any instance.
    let listed = client.ask(A, 2, "tools/list", json!({})).await;
    let tools = listed["result"]["tools"].as_array().unwrap();
    assert!(
        tools.iter().any(|t| t["name"] == "fx__test_sampling"),
        "{listed}"
    );
    // 4 (B): the session's GET stream is held on B.
    let resp = client
        .request(B, reqwest::Method::GET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = Events::of(resp);
    // 5 (A): a subscription taken on A.
    let watched = "test://watched-resource";
    let subscribed = client
        .ask(A, 3, "resources/subscribe", json!({"uri": watched}))
        .await;
    assert!(subscribed.get("result").is_some(), "{subscribed}");
    // 6 (B): a call's log messages reach the session's stream on B.
    let logging = json!({"name": "fx__test_tool_with_logging", "arguments": {}});
    let called = client.ask(B, 4, "tools/call", logging.clone()).await;
    assert!(called.get("result").is_some(), "{called}");
    stream
        .until(|m| m["params"]["data"] == "Tool execution completed")
        .await;
    // 7 (A): the session wants errors only, from now on, wherever it is served.
    let level = client
        .ask(A, 5, "logging/setLevel", json!({"level": "error"}))
        .await;
    assert!(level.get("result").is_some(), "{level}");
    // 8 (B): a call whose upstream asks the client's LLM, on B's stream...
    let sampling = json!({"name": "fx__test_sampling", "arguments": {"prompt": "q?"}});
    let body = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": sampling});
    let (status, mut call) = client.post(B, body).await;
    assert_eq!(status, StatusCode::OK);
    let ask = call
        .until(|m| m["method"] == "sampling/createMessage")
        .await;
    // 9 (A): ...answered through A, which passes the answer to B. It is longer than a
    // PostgreSQL notification may be (8,000 bytes), as an LLM's answers often are.
    let long = "Paris is the capital of France. ".repeat(500);
    let reply = json!({"jsonrpc": "2.0", "id": ask["id"], "result": {
        "role": "assistant", "model": "balanced", "stopReason": "endTurn",
        "content": {"type": "text", "text": long}}});
    let (status, _) = client.post(A, reply).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let result = call.until(|m| m["id"] == 6).await;
    assert_eq!(
        result["result"]["content"][0]["text"].as_str(),
        Some(format!("LLM response: {long}").as_str())
    );
    // 10 (B): the level set on A holds on B: this call's info messages are not sent.
    let called = client.ask(B, 7, "tools/call", logging).await;
    assert!(called.get("result").is_some(), "{called}");
    // 11 (A): a ping, so that the next request is B's again.
    let pong = client.ask(A, 8, "ping", json!({})).await;
    assert!(pong.get("result").is_some(), "{pong}");
    // 12 (B): the subscription taken on A holds on B: B's upstream announces an update,
    // and the stream on B carries it, with no info message of call 10 before it.
    let announce =
        json!({"name": "fx__announce", "arguments": {"kind": "updated", "uri": watched}});
    let called = client.ask(B, 9, "tools/call", announce).await;
    assert!(called.get("result").is_some(), "{called}");
    stream.seen.clear();
    let updated = stream
        .until(|m| m["method"] == "notifications/resources/updated")
        .await;
    assert_eq!(updated["params"]["uri"], watched);
    assert!(
        !stream
            .seen
            .iter()
            .any(|m| m["method"] == "notifications/message"),
        "a message below the session's level: {:?}",
        stream.seen
    );
    // A server registered through A changes both catalogues: the stream on B says so.
    let late = a
        .http
        .post(a.url("/api/v1/servers"))
        .bearer_auth(&admin)
        .json(&common::stdio("late"))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), StatusCode::CREATED);
    stream
        .until(|m| m["method"] == "notifications/tools/list_changed")
        .await;
    // 13 (A): the session ends on A; its stream on B ends with it...
    let resp = client
        .request(A, reqwest::Method::DELETE)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    stream.end().await;
    // 14, 15: ...and neither instance knows it any more.
    for to in [B, A] {
        let (status, _) = client
            .post(to, json!({"jsonrpc": "2.0", "id": 10, "method": "ping"}))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "instance {to}");
    }
    drop(client);
    a.stop().await;
    b.stop().await;
}

/// A copy restored on an instance that was never told of the session's changes takes
/// them up from the record (its level, its subscriptions), and ends once the record is
/// gone even if the end's announcement never reached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_copy_follows_its_record_and_ends_with_it() {
    let db = TestDb::new();
    let Some(url) = postgres(&db) else { return };
    // Records are kept, and checked, every quarter of this (10 s): sooner than the test's
    // wait, which is sooner than a copy idling out.
    let (mut a, mut b) = two_instances(&db, &url, |settings| {
        settings.mcp.session_idle = Duration::from_secs(40);
    })
    .await;
    let (admin, op) = a
        .admin_and_key(json!({"name": "op", "role": "operator"}))
        .await;
    register_fixtures(&mut a, &mut b, &admin).await;
    let mut client = Balanced {
        instances: [&a, &b],
        key: op,
        session: None,
    };
    const A: usize = 0;
    const B: usize = 1;
    client.wait_for_tools().await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": VERSION, "capabilities": {},
        "clientInfo": {"name": "restored", "version": "0"}}});
    let resp = client
        .request(A, reqwest::Method::POST)
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    client.session = Some(resp.headers()["mcp-session-id"].to_str().unwrap().into());
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(client.post(A, initialized).await.0, StatusCode::ACCEPTED);
    // Everything on A, before B ever hears of the session.
    let watched = "test://watched-resource";
    let subscribed = client
        .ask(A, 2, "resources/subscribe", json!({"uri": watched}))
        .await;
    assert!(subscribed.get("result").is_some(), "{subscribed}");
    let level = client
        .ask(A, 3, "logging/setLevel", json!({"level": "error"}))
        .await;
    assert!(level.get("result").is_some(), "{level}");
    // B restores it for its GET stream, with the record's level and subscription.
    let resp = client
        .request(B, reqwest::Method::GET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = Events::of(resp);
    let logging = json!({"name": "fx__test_tool_with_logging", "arguments": {}});
    let called = client.ask(B, 4, "tools/call", logging).await;
    assert!(called.get("result").is_some(), "{called}");
    let announce =
        json!({"name": "fx__announce", "arguments": {"kind": "updated", "uri": watched}});
    let called = client.ask(B, 5, "tools/call", announce).await;
    assert!(called.get("result").is_some(), "{called}");
    let updated = stream
        .until(|m| m["method"] == "notifications/resources/updated")
        .await;
    assert_eq!(updated["params"]["uri"], watched);
    assert!(
        !stream
            .seen
            .iter()
            .any(|m| m["method"] == "notifications/message"),
        "a message below the record's level: {:?}",
        stream.seen
    );
    // The record goes behind every instance's back (as if the end's announcement had
    // been missed): B's copy ends at its next round, and its stream with it.
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let deleted = diesel::sql_query("DELETE FROM mcp_sessions")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    stream.end().await;
    let (status, _) = client
        .post(B, json!({"jsonrpc": "2.0", "id": 6, "method": "ping"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop(client);
    a.stop().await;
    b.stop().await;
}
