//! The live stream over real WebSockets (awc) against a real gateway and our test MCP
//! server.

mod common;

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::time::Duration;

use actix_codec::Framed;
use awc::BoxedSocket;
use awc::ws::{Codec, Frame, Message};
use common::{TestDb, TestServer, WAIT, stdio};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};

type Conn = Framed<BoxedSocket, Codec>;

async fn connect(server: &TestServer) -> Conn {
    let (resp, conn) = awc::Client::new()
        .ws(format!("ws://{}/ws", server.addr))
        .connect()
        .await
        .expect("websocket connects");
    assert_eq!(resp.status(), 101);
    conn
}

/// The next JSON message, or the close frame as `{"closed": code}`.
async fn next(conn: &mut Conn, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, conn.next())
            .await
            .expect("a message within the deadline");
        match frame {
            Some(Ok(Frame::Text(bytes))) => return serde_json::from_slice(&bytes).unwrap(),
            Some(Ok(Frame::Close(reason))) => {
                let code: u16 = reason.map_or(1005, |r| r.code.into());
                return json!({"closed": code});
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("protocol error: {e}"),
            None => return json!({"closed": 1006}),
        }
    }
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
    assert!(victim["tool_count"].as_u64().unwrap() > 0);
    assert!(first["data"]["metrics"].is_object());

    let pid = server
        .http
        .get(server.url("/api/v1/servers/victim"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["pid"]
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
async fn system_metrics_arrive_on_their_interval() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.live.metrics_interval = Duration::from_millis(100);
    let mut server = TestServer::start(settings).await;
    server.register_healthy(&stdio("m")).await;
    let mut ws = connect(&server).await;
    let seen = until(&mut ws, "system_metrics", |m| m["type"] == "system_metrics").await;
    let metrics = &seen.last().unwrap()["data"];
    assert_eq!(metrics["upstreams_total"], 1);
    assert_eq!(metrics["upstreams_healthy"], 1);
    assert!(metrics["live_sessions"].as_u64().unwrap() >= 1, "{metrics}");
    assert!(metrics["memory_bytes"].as_u64().unwrap() > 0);
    assert!(metrics["requests_total"].as_u64().unwrap() >= 1);
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

/// A WebSocket client that completes the handshake and then never reads, with a tiny
/// receive buffer so that the server's queue for it fills quickly.
fn never_reading_client(addr: std::net::SocketAddr) -> std::net::TcpStream {
    // SAFETY: plain socket calls on a descriptor this function owns.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 1024;
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

async fn dropped_slow(server: &TestServer) -> u64 {
    let text = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("omni_ws_dropped_slow_sessions_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[actix_rt::test]
async fn a_slow_client_is_dropped_while_a_normal_one_keeps_receiving() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.live.queue = 32;
    let server = TestServer::start(settings).await;

    let mut normal = connect(&server).await;
    assert_eq!(next(&mut normal, WAIT).await["type"], "initial_status");
    send(
        &mut normal,
        json!({"action": "subscribe", "event_types": ["cache_invalidated"]}),
    )
    .await;
    until(&mut normal, "subscribed", |m| m["type"] == "subscribed").await;
    let _slow = never_reading_client(server.addr);

    // The normal client reads everything, concurrently, counting invalidations.
    let (count_tx, mut count_rx) = tokio::sync::watch::channel(0usize);
    let reader = actix_rt::spawn(async move {
        let mut n = 0;
        loop {
            let m = next(&mut normal, Duration::from_secs(60)).await;
            if m.get("closed").is_some() {
                panic!("the normal client was closed: {m}");
            }
            if m["type"] == "cache_invalidated" {
                n += 1;
                let _ = count_tx.send(n);
            }
        }
    });

    // Publish events until the hub gives up on the slow client.
    let mut sent = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while dropped_slow(&server).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow client was never dropped"
        );
        for _ in 0..50 {
            let resp = server
                .http
                .delete(server.url("/api/v1/cache"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            sent += 1;
        }
    }
    assert_eq!(dropped_slow(&server).await, 1);
    eprintln!("the slow client was dropped after {sent} events");
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
    server.register_healthy(&stdio("promo")).await;
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
    let text = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "omni_tool_calls_total{server=\"promo\",tool=\"echo\",outcome=\"ok\"} 1",
        "omni_tool_call_duration_seconds_bucket{",
        "omni_upstream_status{server=\"promo\",status=\"healthy\"} 1",
        "omni_upstream_circuit_open{server=\"promo\"} 0",
        "omni_upstream_restarts{server=\"promo\"} 0",
        "omni_cache{name=\"misses\"} 1",
        "omni_ws_sessions 1",
        "omni_ws_dropped_slow_sessions_total 0",
        "omni_http_requests_total",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
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
