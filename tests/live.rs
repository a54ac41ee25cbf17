//! The live stream over real WebSockets (awc) against a real gateway and our test MCP
//! server.

mod common;

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::time::Duration;

use awc::ws::Message;
use common::{TestDb, TestServer, WAIT, WsConn, stdio, ws_connect, ws_next};
use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

type Conn = WsConn;

async fn connect(server: &TestServer) -> Conn {
    ws_connect(server).await
}

/// The next JSON message, or the close frame as `{"closed": code}`.
async fn next(conn: &mut Conn, within: Duration) -> Value {
    ws_next(conn, within).await
}

/// Reads until a message satisfies `pred`; returns everything read, that one last.
async fn until(conn: &mut Conn, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = vec![];
    loop {
        let message = next(conn, WAIT).await;
        let done = pred(&message);
        let closed = message.get("closed").is_some();
        seen.push(message);
        if done {
            return seen;
        }
        assert!(!closed, "closed while waiting for {what}: {seen:?}");
    }
}

/// The value of an unlabelled series on `/metrics` (`name value`), if present.
async fn metric(server: &TestServer, name: &str) -> Option<f64> {
    let text = server.get_text("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse::<f64>().ok())
}

/// Polls `/metrics` until the series `name` reads `want`, or fails at the deadline.
async fn wait_metric(server: &TestServer, name: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = metric(server, name).await;
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {got:?}, never {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn send(conn: &mut Conn, value: Value) {
    conn.send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

#[actix_rt::test]
async fn initial_status_then_the_events_of_a_killed_upstream_in_order() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&stdio("victim")).await;
    // The status turns healthy just before the `connected` event is published; wait for
    // that event too, so the stream below cannot mistake it for the recovery.
    server.events.health("victim", "connected", WAIT).await;
    let mut ws = connect(&server).await;
    let first = next(&mut ws, WAIT).await;
    assert_eq!(first["type"], "initial_status");
    let servers = first["data"]["servers"].as_array().unwrap();
    let victim = servers.iter().find(|s| s["name"] == "victim").unwrap();
    assert_eq!(victim["status"], "healthy");
    assert_eq!(victim["circuit"], "closed");
    assert!(victim["tool_count"].as_u64().unwrap() > 0);
    // No probe has run yet (its interval is an hour), but the catalogue read at connect
    // counts as the first: the page has a latency and a last probe from the start.
    assert!(victim["last_probe_at"].is_string(), "{victim}");
    assert!(victim["latency_ms"].as_f64().is_some(), "{victim}");
    let metrics = &first["data"]["metrics"];
    assert_eq!(metrics["upstreams_total"], 1, "{metrics}");
    // The hub fetched the cache numbers when it started: a joining session has them.
    let cache = &first["data"]["cache"];
    for field in [
        "entries",
        "bytes",
        "hits",
        "misses",
        "hit_rate",
        "max_entries",
    ] {
        assert!(cache[field].is_number(), "cache.{field} missing: {cache}");
    }

    let pid = server.get_json("/api/v1/servers/victim").await["pid"]
        .as_i64()
        .unwrap();
    // SAFETY: kill(2) on a child this test's gateway started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);

    // Recovery is the first `connected` after the `exited` this kill causes.
    let exited = std::cell::Cell::new(false);
    let seen = until(&mut ws, "recovery", |m| {
        let event = &m["data"]["event"];
        if m["type"] == "health_event" && event == "exited" {
            exited.set(true);
        }
        exited.get() && m["type"] == "health_event" && event == "connected"
    })
    .await;
    let labels: Vec<String> = seen
        .iter()
        .filter(|m| m["data"]["server"] == "victim")
        .map(|m| match m["type"].as_str().unwrap() {
            "mcp_status_change" => format!("status:{}", m["data"]["new_status"].as_str().unwrap()),
            "health_event" => format!("event:{}", m["data"]["event"].as_str().unwrap()),
            other => other.to_owned(),
        })
        .collect();
    let expected = [
        "event:exited",
        "status:restarting",
        "event:restart_scheduled",
        "status:starting",
        "event:restarted",
        "status:healthy",
        "event:connected",
    ];
    let mut at = 0;
    for label in &labels {
        if at < expected.len() && label == expected[at] {
            at += 1;
        }
    }
    assert_eq!(
        at,
        expected.len(),
        "expected {expected:?} in order within {labels:?}"
    );
    for m in &seen {
        assert!(m["timestamp"].is_string(), "{m}");
    }
    server.stop().await;
}

#[actix_rt::test]
async fn system_metrics_carry_fresh_cache_stats_and_live_probe_numbers() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.live.metrics_interval = Duration::from_millis(300);
    let mut server = TestServer::start(settings).await;
    let mut body = common::cached("m");
    body["probe_interval"] = json!("200ms");
    server.register_healthy(&body).await;
    let mut ws = connect(&server).await;
    assert_eq!(next(&mut ws, WAIT).await["type"], "initial_status");

    // A miss, then a hit.
    for cached in [false, true] {
        let (status, answer) = server.call("m", "echo", json!({"text": "x"})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["cached"], cached, "{answer}");
    }
    let done = chrono::Utc::now() + chrono::Duration::milliseconds(20);
    // The first tick stamped after the calls counts them: its cache numbers are fetched
    // for that tick, not left over from the one before.
    let seen = until(&mut ws, "system_metrics after the calls", |m| {
        m["type"] == "system_metrics"
            && m["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t > done)
    })
    .await;
    let metrics = &seen.last().unwrap()["data"];
    assert_eq!(metrics["upstreams_total"], 1, "{metrics}");
    assert_eq!(metrics["upstreams_healthy"], 1, "{metrics}");
    assert!(metrics["live_sessions"].as_u64().unwrap() >= 1, "{metrics}");
    assert!(metrics["memory_bytes"].as_u64().unwrap() > 0, "{metrics}");
    assert!(
        metrics["requests_total"].as_u64().unwrap() >= 3,
        "{metrics}"
    );
    assert_eq!(metrics["errors_total"], 0, "{metrics}");
    assert!(
        metrics["requests_per_second"].as_f64().unwrap() >= 0.0,
        "{metrics}"
    );
    assert_eq!(metrics["cache_hit_rate"], 0.5, "{metrics}");
    assert_eq!(metrics["cache_entries"], 1, "{metrics}");
    let cache = &metrics["cache"];
    assert_eq!(cache["entries"], 1, "{cache}");
    assert_eq!(cache["hits"], 1, "{cache}");
    assert_eq!(cache["misses"], 1, "{cache}");
    assert_eq!(cache["hit_rate"], 0.5, "{cache}");
    assert!(cache["bytes"].as_u64().unwrap() > 0, "{cache}");
    assert_eq!(cache["invalidations"], 0, "{cache}");
    // The interval that held the calls shows them in its rate.
    assert!(
        seen.iter().any(|m| m["type"] == "system_metrics"
            && m["data"]["requests_per_second"].as_f64().unwrap() > 0.0),
        "{seen:?}"
    );

    // Per upstream: what probes change, though a successful probe publishes no event.
    let summary = &metrics["servers"]["m"];
    assert_eq!(summary["status"], "healthy", "{summary}");
    assert_eq!(summary["circuit"], "closed", "{summary}");
    assert!(summary["tool_count"].as_u64().unwrap() > 0, "{summary}");
    for field in ["latency_ms", "last_probe_at", "restart_count"] {
        assert!(summary.get(field).is_some(), "{field} missing: {summary}");
    }
    let probed = |m: &Value| -> Option<String> {
        (m["type"] == "system_metrics")
            .then(|| m["data"]["servers"]["m"]["last_probe_at"].as_str())
            .flatten()
            .map(str::to_owned)
    };
    let first = until(&mut ws, "a probe time", |m| probed(m).is_some()).await;
    let first = probed(first.last().unwrap()).unwrap();
    let later = until(&mut ws, "a later probe time", |m| {
        probed(m).is_some_and(|t| t != first)
    })
    .await;
    let later = &later.last().unwrap()["data"]["servers"]["m"];
    assert!(later["latency_ms"].as_f64().unwrap() >= 0.0, "{later}");
    server.stop().await;
}

/// `system_metrics` names upstreams, so each session gets only those its key may see.
#[actix_rt::test]
async fn system_metrics_show_a_key_only_the_upstreams_it_may_see() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.live.metrics_interval = Duration::from_millis(100);
    let mut server = TestServer::start(settings).await;
    server.register_healthy(&stdio("alpha")).await;
    server.register_healthy(&stdio("beta")).await;
    let (admin, watcher) = server
        .admin_and_key(json!({"name": "watcher", "role": "viewer", "allow": ["alpha/*"]}))
        .await;
    let connect_as = async |key: &str| -> Conn {
        let (resp, conn) = awc::Client::new()
            .ws(format!("ws://{}/ws", server.addr))
            .header("Authorization", format!("Bearer {key}"))
            .connect()
            .await
            .expect("websocket connects");
        assert_eq!(resp.status(), 101);
        conn
    };
    let names =
        |servers: &Value| -> Vec<String> { servers.as_object().unwrap().keys().cloned().collect() };
    for (key, visible) in [(&watcher, vec!["alpha"]), (&admin, vec!["alpha", "beta"])] {
        let mut ws = connect_as(key).await;
        let first = next(&mut ws, WAIT).await;
        assert_eq!(first["type"], "initial_status", "{first}");
        assert_eq!(first["data"]["metrics"]["upstreams_total"], visible.len());
        let seen = until(&mut ws, "system_metrics", |m| m["type"] == "system_metrics").await;
        let metrics = &seen.last().unwrap()["data"];
        assert_eq!(names(&metrics["servers"]), visible, "{metrics}");
        assert_eq!(metrics["upstreams_total"], visible.len(), "{metrics}");
        assert_eq!(metrics["upstreams_healthy"], visible.len(), "{metrics}");
    }
    server.stop().await;
}

/// A connection that goes away without a close frame leaves the hub and the session
/// count at once: nothing waits for a heartbeat timeout.
#[actix_rt::test]
async fn a_dropped_connection_leaves_the_hub() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.live.metrics_interval = Duration::from_millis(100);
    let server = TestServer::start(settings).await;
    let mut observer = connect(&server).await;
    assert_eq!(next(&mut observer, WAIT).await["type"], "initial_status");
    let before = metric(&server, "omni_ws_sessions").await.unwrap();

    let mut leaver = connect(&server).await;
    assert_eq!(next(&mut leaver, WAIT).await["type"], "initial_status");
    let sessions =
        |n: u64| move |m: &Value| m["type"] == "system_metrics" && m["data"]["live_sessions"] == n;
    until(&mut observer, "two sessions in the hub", sessions(2)).await;
    assert_eq!(
        metric(&server, "omni_ws_sessions").await,
        Some(before + 1.0)
    );

    drop(leaver);
    until(&mut observer, "one session in the hub", sessions(1)).await;
    wait_metric(&server, "omni_ws_sessions", before).await;
    server.stop().await;
}

#[actix_rt::test]
async fn pings_are_answered_and_a_silent_client_is_closed() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.live.ping_interval = Duration::from_millis(50);
    settings.live.ping_timeout = Duration::from_millis(300);
    let server = TestServer::start(settings).await;

    let mut silent = connect(&server).await;
    let mut polite = connect(&server).await;
    // The polite client answers ten pings (over ten ping intervals, longer than the timeout)
    // and is still open; the silent one is closed with 1001 in the meantime.
    let mut pongs = 0;
    while pongs < 10 {
        let m = next(&mut polite, WAIT).await;
        assert!(
            m.get("closed").is_none(),
            "the polite client was closed: {m}"
        );
        if m["type"] == "ping" {
            send(&mut polite, json!({"action": "pong"})).await;
            pongs += 1;
        }
    }
    let closed = until(&mut silent, "close", |m| m.get("closed").is_some()).await;
    assert_eq!(closed.last().unwrap()["closed"], 1001);
    server.stop().await;
}

#[actix_rt::test]
async fn subscriptions_filter_by_type_and_server() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&stdio("wanted")).await;
    server.register_healthy(&stdio("ignored")).await;
    let mut ws = connect(&server).await;
    assert_eq!(next(&mut ws, WAIT).await["type"], "initial_status");
    send(
        &mut ws,
        json!({"action": "subscribe", "event_types": ["health_event"], "servers": ["wanted"]}),
    )
    .await;
    let ack = until(&mut ws, "subscribed", |m| m["type"] == "subscribed").await;
    assert_eq!(
        ack.last().unwrap()["data"],
        json!({"event_types": ["health_event"], "servers": ["wanted"]})
    );
    for name in ["ignored", "wanted"] {
        let resp = server
            .http
            .post(server.url(&format!("/api/v1/servers/{name}/reload")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        server.events.health(name, "connected", WAIT).await;
    }
    let seen = until(&mut ws, "wanted's connected", |m| {
        m["data"]["event"] == "connected" && m["data"]["server"] == "wanted"
    })
    .await;
    for m in seen.iter().filter(|m| m["type"] != "ping") {
        assert_eq!(m["type"], "health_event", "only health events: {m}");
        assert_eq!(m["data"]["server"], "wanted", "only the wanted server: {m}");
    }
    assert!(seen.iter().any(|m| m["data"]["event"] == "reloading"));

    send(&mut ws, json!({"action": "unsubscribe"})).await;
    send(
        &mut ws,
        json!({"action": "subscribe", "event_types": ["cache_invalidated"]}),
    )
    .await;
    until(&mut ws, "second subscribed", |m| {
        m["type"] == "subscribed" && m["data"]["event_types"] == json!(["cache_invalidated"])
    })
    .await;
    let resp = server
        .http
        .delete(server.url("/api/v1/cache"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = until(&mut ws, "cache_invalidated", |m| {
        m["type"] == "cache_invalidated"
    })
    .await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    server.stop().await;
}

#[actix_rt::test]
async fn bad_messages_get_errors_then_the_client_is_closed() {
    let db = TestDb::new();
    let server = TestServer::start(db.stdio_settings()).await;
    let mut ws = connect(&server).await;
    assert_eq!(next(&mut ws, WAIT).await["type"], "initial_status");
    send(&mut ws, json!({"action": "dance"})).await;
    let error = until(&mut ws, "error", |m| m["type"] == "error").await;
    assert_eq!(error.last().unwrap()["data"]["code"], "invalid-message");
    // Garbage, again and again: closed with 1008 (policy).
    for _ in 0..10 {
        ws.send(Message::Text("garbage".into())).await.unwrap();
    }
    let closed = until(&mut ws, "close", |m| m.get("closed").is_some()).await;
    assert_eq!(closed.last().unwrap()["closed"], 1008);

    // A frame over the limit: closed with 1009 (too big).
    let mut ws = connect(&server).await;
    assert_eq!(next(&mut ws, WAIT).await["type"], "initial_status");
    let huge = format!(
        "{{\"action\":\"subscribe\",\"servers\":[\"{}\"]}}",
        "a".repeat(100_000)
    );
    ws.send(Message::Text(huge.into())).await.unwrap();
    let closed = until(&mut ws, "close", |m| m.get("closed").is_some()).await;
    assert_eq!(closed.last().unwrap()["closed"], 1009);

    // A flood of valid messages: closed with 1008.
    let mut ws = connect(&server).await;
    assert_eq!(next(&mut ws, WAIT).await["type"], "initial_status");
    for _ in 0..200 {
        if ws
            .send(Message::Text(json!({"action": "pong"}).to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let closed = until(&mut ws, "close", |m| m.get("closed").is_some()).await;
    assert_eq!(closed.last().unwrap()["closed"], 1008);
    server.stop().await;
}

/// A WebSocket client that completes the handshake and then never reads, with a small
/// receive buffer (fixed, so the kernel does not grow it) so that the server's queue for it
/// fills soon.
///
/// Much smaller fails: with a 1 KiB buffer Linux drops segments the sender was allowed
/// to send but that do not fit the buffer, and the server's socket retransmits them on a
/// timer that doubles each time (53 s once the client had not read for 90 s), so a client
/// that reads at last waited longer than any deadline here. With 64 KiB the sender just sees
/// a closed window, and the client's first read reopens it at once.
fn never_reading_client(addr: std::net::SocketAddr) -> std::net::TcpStream {
    // SAFETY: plain socket calls on a descriptor this function owns.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 64 * 1024;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        std::net::TcpStream::from_raw_fd(fd)
    };
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("IPv4 expected")
    };
    let sockaddr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    use std::os::fd::AsRawFd;
    // SAFETY: connecting the descriptor above to a loopback address.
    let rc = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            &sockaddr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let mut stream = stream;
    write!(
        stream,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Reads the server's (unmasked) frames from a raw connection until the close frame;
/// answers its code.
fn read_close_code(stream: &mut std::net::TcpStream) -> Result<u16, String> {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // Frames read so far, so that a failure says how far the backlog went.
    let mut frames = 0usize;
    let mut read = |n: usize, frames: usize| -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; n];
        stream
            .read_exact(&mut buf)
            .map_err(|e| format!("no close frame after {frames} frames: {e}"))?;
        Ok(buf)
    };
    loop {
        let head = read(2, frames)?;
        let opcode = head[0] & 0x0f;
        assert_eq!(head[1] & 0x80, 0, "server frames are never masked");
        let len = match head[1] & 0x7f {
            126 => u16::from_be_bytes(read(2, frames)?.try_into().unwrap()) as usize,
            127 => u64::from_be_bytes(read(8, frames)?.try_into().unwrap()) as usize,
            n => n as usize,
        };
        let payload = read(len, frames)?;
        frames += 1;
        if opcode == 0x8 {
            return payload
                .get(..2)
                .map(|code| u16::from_be_bytes([code[0], code[1]]))
                .ok_or_else(|| "a close frame without a code".to_owned());
        }
    }
}

async fn dropped_slow(server: &TestServer) -> u64 {
    metric(server, "omni_ws_dropped_slow_sessions_total")
        .await
        .unwrap_or(0.0) as u64
}

#[actix_rt::test]
async fn a_slow_client_is_dropped_while_a_normal_one_keeps_receiving() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.live.queue = 32;
    // The slow client never answers a ping; only its backlog may end it here, however long
    // a loaded machine takes to fill its socket buffers.
    settings.live.ping_timeout = Duration::from_secs(600);
    // Nor may its close frame's grace run out while a loaded machine gets round to reading.
    settings.live.close_grace = Duration::from_secs(600);
    let server = TestServer::start(settings).await;

    let mut normal = connect(&server).await;
    assert_eq!(next(&mut normal, WAIT).await["type"], "initial_status");
    send(
        &mut normal,
        json!({"action": "subscribe", "event_types": ["cache_invalidated"]}),
    )
    .await;
    until(&mut normal, "subscribed", |m| m["type"] == "subscribed").await;
    let before = dropped_slow(&server).await;
    let mut slow = never_reading_client(server.addr);

    // The normal client reads everything, concurrently, counting invalidations, and answers
    // the server's pings as the dashboard does.
    let (count_tx, mut count_rx) = tokio::sync::watch::channel(0usize);
    let reader = actix_rt::spawn(async move {
        let mut n = 0;
        loop {
            let m = next(&mut normal, Duration::from_secs(60)).await;
            if m.get("closed").is_some() {
                panic!("the normal client was closed: {m}");
            }
            if m["type"] == "ping" {
                send(&mut normal, json!({"action": "pong"})).await;
            }
            if m["type"] == "cache_invalidated" {
                n += 1;
                let _ = count_tx.send(n);
            }
        }
    });

    // Publish events until the hub gives up on the slow client. Each is about half a KiB
    // (the longest server and tool names an invalidation takes), so that the bytes in flight
    // that fill the slow client's path (its socket buffers and the server's) take fewer
    // requests.
    let long_name = "s".repeat(omni_bridge::registry::ServerName::MAX_LEN);
    let long_tool = "t".repeat(omni_bridge::http::text::MAX_NAME);
    let invalidate = server.url(&format!(
        "/api/v1/cache/servers/{long_name}/tools/{long_tool}"
    ));
    let mut sent = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while dropped_slow(&server).await == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow client was never dropped"
        );
        for _ in 0..16 {
            let resp = server.http.delete(&invalidate).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            sent += 1;
        }
        // Paced by the normal client: it has every event so far before the next batch, so
        // its own queue (32) never holds more than one batch, however loaded the machine
        // is, while the slow client's backlog only grows.
        let target = sent;
        tokio::time::timeout(WAIT, count_rx.wait_for(|n| *n >= target))
            .await
            .expect("the normal client keeps receiving")
            .unwrap();
    }
    eprintln!("the slow client was dropped after {sent} events");
    // Reading at last, the slow client finds what was queued, then a close frame that says
    // why; by then its session is gone, and it was counted once.
    let code = tokio::task::spawn_blocking(move || read_close_code(&mut slow))
        .await
        .unwrap();
    assert_eq!(code, Ok(1013), "slow consumer");
    assert_eq!(dropped_slow(&server).await, before + 1);
    // The normal client got every one of them, none lost or delayed for good.
    let target = sent;
    tokio::time::timeout(WAIT, count_rx.wait_for(|n| *n >= target))
        .await
        .expect("the normal client received every event")
        .unwrap();
    reader.abort();
    server.stop().await;
}

#[actix_rt::test]
async fn a_thousand_sessions_all_receive_one_broadcast() {
    let db = TestDb::new();
    let server = TestServer::start(db.stdio_settings()).await;
    let mut sessions = Vec::with_capacity(1000);
    for _ in 0..10 {
        let batch = futures_util::future::join_all((0..100).map(|_| async {
            let mut ws = connect(&server).await;
            assert_eq!(next(&mut ws, WAIT).await["type"], "initial_status");
            ws
        }))
        .await;
        sessions.extend(batch);
    }
    let resp = server
        .http
        .delete(server.url("/api/v1/cache"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let received = futures_util::future::join_all(sessions.iter_mut().map(|ws| async move {
        until(ws, "the broadcast", |m| m["type"] == "cache_invalidated")
            .await
            .len()
    }))
    .await;
    assert_eq!(received.len(), 1000);
    server.stop().await;
}

#[actix_rt::test]
async fn prometheus_metrics_describe_the_gateway() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&common::cached("promo")).await;
    let resp = server
        .http
        .post(server.url("/api/v1/servers/promo/tools/echo/call"))
        .json(&json!({"arguments": {"text": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut ws = connect(&server).await;
    // Its first message means its session actor has started (and counted itself).
    assert_eq!(next(&mut ws, WAIT).await["type"], "initial_status");
    let text = server.get_text("/metrics").await;
    for needle in [
        "omni_tool_calls_total{server=\"promo\",tool=\"echo\",outcome=\"ok\"} 1",
        "omni_tool_call_duration_seconds_bucket{",
        "omni_upstream_status{server=\"promo\",status=\"healthy\"} 1",
        "omni_upstream_circuit_open{server=\"promo\"} 0",
        "omni_upstream_restarts_total{server=\"promo\"} 0",
        "# TYPE omni_upstream_restarts counter",
        "omni_cache_entries 1",
        "omni_cache_misses_total 1",
        "omni_cache_hits_total 0",
        "# TYPE omni_cache_hits counter",
        "omni_cache_evictions_total 0",
        "omni_cache_expirations_total 0",
        "omni_cache_invalidations_total 0",
        "# TYPE omni_cache_entries gauge",
        "omni_ws_sessions 1",
        "omni_ws_dropped_slow_sessions_total 0",
        "omni_http_requests_total",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    // Concurrent scrapes each see every series: one scrape's refill never shows half
    // done in another's.
    let scrapes = futures_util::future::join_all((0..32).map(|_| async {
        let resp = server
            .http
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap();
        resp.text().await.unwrap()
    }))
    .await;
    for text in scrapes {
        for needle in [
            "omni_upstream_status{server=\"promo\",status=\"healthy\"} 1",
            "omni_upstream_restarts_total{server=\"promo\"} 0",
            "omni_upstream_tools{server=\"promo\"}",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
    server.stop().await;
}

/// `/ws` without a WebSocket upgrade is refused in the JSON error shape, not with actix's
/// bare 400 (found while fuzzing the API's error bodies).
#[actix_rt::test]
async fn a_plain_request_to_the_live_stream_gets_a_json_error() {
    let db = TestDb::new();
    let server = TestServer::start(db.stdio_settings()).await;
    let resp = server.http.get(server.url("/ws")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "websocket-handshake", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    server.stop().await;
}

#[actix_rt::test]
async fn the_dashboard_page_is_served() {
    let db = TestDb::new();
    let server = TestServer::start(db.stdio_settings()).await;
    let resp = server.http.get(server.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = resp.text().await.unwrap();
    assert!(page.contains("new WebSocket("));
    assert!(page.contains("/api/v1/cache"));
    server.stop().await;
}

/// A page opened on a quiet gateway shows what happened before: the stored history (from
/// before this gateway started), the cache numbers as they are at that moment (the API's),
/// and each upstream's calls of the last minutes, with latency from calls.
#[actix_rt::test]
async fn initial_status_carries_the_history_the_cache_as_it_is_and_the_recent_calls() {
    let db = TestDb::new();
    let server = TestServer::start(db.stdio_settings()).await;
    server.register(&common::cached("before")).await;
    // Written in batches: wait until the store has the connection before stopping.
    common::poll_until(async || {
        let stored = server.get_json("/api/v1/servers/before/events").await;
        let events = stored["events"].as_array().cloned().unwrap_or_default();
        match events.iter().any(|e| e["event"] == "connected") {
            true => Ok(()),
            false => Err(format!("no `connected` stored: {stored}")),
        }
    })
    .await;
    server.stop().await;
    let restarted_at = chrono::Utc::now();

    let mut server = TestServer::start(db.stdio_settings()).await;
    server.events.status("before", "healthy", WAIT).await;
    // One miss and two hits of a cached tool, and a call of another.
    for _ in 0..3 {
        let (status, _) = server.call("before", "add", json!({"a": 1, "b": 2})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = server.call("before", "echo", json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::OK);
    let stats = server.get_json("/api/v1/cache/stats").await;
    assert_eq!(stats["hits"], 2, "{stats}");

    let mut ws = connect(&server).await;
    let first = next(&mut ws, WAIT).await;
    assert_eq!(first["type"], "initial_status", "{first}");
    let data = &first["data"];

    let events = data["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{first}"));
    let earlier = events.iter().find(|e| {
        e["data"]["event"] == "connected"
            && e["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t < restarted_at)
    });
    assert!(earlier.is_some(), "no event of the first run: {events:?}");
    assert_eq!(earlier.unwrap()["type"], "health_event");
    let times: Vec<&str> = events
        .iter()
        .filter_map(|e| e["timestamp"].as_str())
        .collect();
    let parsed: Vec<_> = times
        .iter()
        .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap())
        .collect();
    assert!(parsed.is_sorted(), "not oldest first: {times:?}");

    // The cache as the API says it now, in both places the page reads it.
    for cache in [&data["cache"], &data["metrics"]["cache"]] {
        assert_eq!(cache["hits"], stats["hits"], "{cache}");
        assert_eq!(cache["misses"], stats["misses"], "{cache}");
    }

    let buckets = data["traffic"]["servers"]["before"].as_array().unwrap();
    let sum = |field: &str| {
        buckets
            .iter()
            .map(|b| b[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((sum("calls"), sum("errors")), (4, 0));
    assert_eq!(json!(sum("hits")), stats["hits"]);
    assert_eq!(json!(sum("misses")), stats["misses"]);
    assert!(
        buckets.iter().any(|b| b["p50_ms"].as_f64().is_some()),
        "{buckets:?}"
    );
    assert_eq!(data["traffic"]["bucket_seconds"], 10);
    let before = data["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "before")
        .unwrap();
    assert!(before["call_latency_ms"].as_f64().is_some(), "{before}");

    // The next system_metrics carries the latest buckets, for the page to go on with.
    let metrics = until(&mut ws, "system_metrics", |m| m["type"] == "system_metrics").await;
    let recent = &metrics.last().unwrap()["data"]["traffic"]["servers"]["before"];
    assert!(recent.as_array().is_some_and(|b| !b.is_empty()), "{recent}");
    server.stop().await;
}
