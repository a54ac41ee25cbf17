//! Secrets stay with their origin: an upstream's stored header values and URL password
//! are never sent to another origin than the one they were given for, through the real
//! gateway on port 0.

mod common;

use std::net::SocketAddr;

use common::{TestDb, TestMcp, TestServer, WAIT, free_port};
use omni_bridge::registry::{ServerName, Transport};
use omni_bridge::store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

async fn put(server: &TestServer, name: &str, body: &Value) -> (StatusCode, Value) {
    let resp = server
        .http
        .put(server.url(&format!("/api/v1/servers/{name}")))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The stored (unredacted) declaration of `name`, read from the store itself.
async fn stored_transport(db: &TestDb, name: &str) -> Transport {
    let store = Store::open(&db.url, &Default::default()).unwrap();
    let stored = store
        .get_server(&ServerName::parse(name).unwrap())
        .await
        .unwrap()
        .unwrap();
    store.close();
    stored.spec.transport
}

fn headers_of(transport: &Transport) -> &std::collections::BTreeMap<String, String> {
    match transport {
        Transport::StreamableHttp { headers, .. } | Transport::Sse { headers, .. } => headers,
        Transport::Stdio { .. } => panic!("not an http transport"),
    }
}

#[tokio::test]
async fn a_url_moved_to_another_origin_needs_its_secrets_again() {
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;
    // Nothing listens on either port: this is about what the registry accepts.
    let old_port = free_port();
    let new_port = std::iter::repeat_with(free_port)
        .find(|&p| p != old_port)
        .unwrap();
    let old_url = format!("http://127.0.0.1:{old_port}/mcp");
    server
        .register(
            &json!({"name": "web", "transport": "streamable_http", "url": old_url,
                          "headers": {"Authorization": "Bearer top-secret", "X-Team": "blue"},
                          "probe_interval": "1h"}),
        )
        .await;
    let read = server.server_json("web").await;
    assert_eq!(read["headers"]["Authorization"], "<redacted>");
    let revision = read["revision"].clone();

    // Another port, host or scheme, with the values sent back as read: refused.
    for moved in [
        format!("http://127.0.0.1:{new_port}/mcp"),
        format!("http://localhost:{old_port}/mcp"),
        format!("https://127.0.0.1:{old_port}/mcp"),
    ] {
        let (status, body) = put(
            &server,
            "web",
            &json!({"transport": "streamable_http", "url": moved,
                    "headers": read["headers"], "probe_interval": "1h"}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{moved}: {body}");
        assert_eq!(body["error"]["code"], "secret-needs-reentry", "{body}");
        assert_eq!(body["error"]["field"], "headers.Authorization", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("headers.X-Team"), "{message}");
        assert!(!message.contains("top-secret"), "{message}");
    }
    // Nothing changed: the same revision, the old URL, the stored secret.
    let after = server.server_json("web").await;
    assert_eq!(after["url"], old_url.as_str());
    assert_eq!(after["revision"], revision);
    let stored = stored_transport(&db, "web").await;
    assert_eq!(headers_of(&stored)["Authorization"], "Bearer top-secret");

    // One value given again is not enough while another is left redacted.
    let new_url = format!("http://127.0.0.1:{new_port}/mcp");
    let (status, body) = put(
        &server,
        "web",
        &json!({"transport": "streamable_http", "url": new_url,
                "headers": {"Authorization": "Bearer for-new", "X-Team": "<redacted>"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "secret-needs-reentry", "{body}");
    assert_eq!(body["error"]["field"], "headers.X-Team", "{body}");

    // All values given again: the move is accepted, with the new values.
    let (status, body) = put(
        &server,
        "web",
        &json!({"transport": "streamable_http", "url": new_url,
                "headers": {"Authorization": "Bearer for-new", "X-Team": "green"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(server.server_json("web").await["url"], new_url.as_str());
    let stored = stored_transport(&db, "web").await;
    assert_eq!(headers_of(&stored)["Authorization"], "Bearer for-new");

    // Within the origin (another path), redacted values keep the stored secrets.
    let (status, body) = put(
        &server,
        "web",
        &json!({"transport": "sse", "url": format!("http://127.0.0.1:{new_port}/sse"),
                "headers": {"Authorization": "<redacted>", "X-Team": "<redacted>"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stored = stored_transport(&db, "web").await;
    assert_eq!(headers_of(&stored)["Authorization"], "Bearer for-new");
    assert_eq!(headers_of(&stored)["X-Team"], "green");
    server.stop().await;
}

/// `base64("alice:pw-s3cret")`: the `Authorization: Basic` value for the URL's credentials.
const ALICE_BASIC: &str = "YWxpY2U6cHctczNjcmV0";

#[tokio::test]
async fn url_credentials_are_redacted_and_kept_across_updates() {
    let mcp = TestMcp::start_http_with(
        "127.0.0.1:0",
        "basic",
        &[
            "--require-header",
            &format!("Authorization:Basic {ALICE_BASIC}"),
        ],
    );
    let db = TestDb::new();
    let mut server = TestServer::start(db.settings()).await;
    let with_password = format!("http://alice:pw-s3cret@{}/mcp", mcp.addr);
    let shown_url = format!("http://alice:<redacted>@{}/mcp", mcp.addr);
    let body = json!({"name": "basic", "transport": "streamable_http", "url": with_password,
                      "probe_interval": "1h", "timeout": "5s"});
    let resp = server
        .http
        .post(server.url("/api/v1/servers"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created = resp.text().await.unwrap();
    // The credentials work: the upstream refuses anyone without them.
    server.events.status("basic", "healthy", WAIT).await;

    let read = server.server_json("basic").await;
    assert_eq!(read["url"], shown_url.as_str(), "{read}");
    let list = server.get_text("/api/v1/servers").await;
    assert!(list.contains(&shown_url), "{list}");
    for text in [&created, &list, &read.to_string()] {
        assert!(!text.contains("pw-s3cret"), "{text}");
    }

    // Sent back as read (with a change that reconnects): the stored password is kept.
    let (status, body) = put(
        &server,
        "basic",
        &json!({"transport": "streamable_http", "url": read["url"],
                "probe_interval": "1h", "timeout": "6s"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["url"], shown_url.as_str());
    let Transport::StreamableHttp { url, .. } = stored_transport(&db, "basic").await else {
        panic!("transport changed")
    };
    assert_eq!(url.as_str(), with_password);
    server.events.status("basic", "healthy", WAIT).await;
    let (status, body) = server.call("basic", "echo", json!({"text": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // To another origin, or for another user, the password must be given again.
    for moved in [
        format!("http://alice:<redacted>@127.0.0.1:{}/mcp", free_port()),
        format!("http://bob:<redacted>@{}/mcp", mcp.addr),
    ] {
        let (status, body) = put(
            &server,
            "basic",
            &json!({"transport": "streamable_http", "url": moved}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{moved}: {body}");
        assert_eq!(body["error"]["code"], "secret-needs-reentry", "{body}");
        assert_eq!(body["error"]["field"], "url", "{body}");
    }
    assert_eq!(server.server_json("basic").await["url"], shown_url.as_str());
    server.stop().await;
}

#[tokio::test]
async fn url_passwords_stay_out_of_health_events_and_errors() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.settings()).await;
    // Nothing listens there: the connection fails, and the failure is reported.
    let port = free_port();
    for (name, transport, path) in [
        ("down-http", "streamable_http", "mcp"),
        ("down-sse", "sse", "sse"),
    ] {
        server
            .register(&json!({"name": name, "transport": transport,
                              "url": format!("http://carol:pw-h1dden@127.0.0.1:{port}/{path}"),
                              "probe_interval": "1h", "timeout": "5s"}))
            .await;
        let exited = server.events.health(name, "exited", WAIT).await;
        let reason = exited["detail"]["reason"].as_str().unwrap();
        assert!(!reason.is_empty());
        server.events.health(name, "restart_scheduled", WAIT).await;
        let read = server.server_json(name).await;
        assert!(read["last_error"].is_string(), "{read}");
        assert!(!read.to_string().contains("pw-h1dden"), "{read}");
    }
    let seen: Vec<String> = server
        .events
        .seen
        .iter()
        .map(|e| e.data.to_string())
        .collect();
    for event in &seen {
        assert!(!event.contains("pw-h1dden"), "{event}");
    }
    // A URL that does not parse is echoed without its password.
    let (status, body) = server
        .post_raw(
            "/api/v1/servers",
            json!({"name": "bad", "transport": "sse",
                   "url": "http://carol:pw-h1dden@bad host/sse"})
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "url");
    assert!(!body.to_string().contains("pw-h1dden"), "{body}");
    server.stop().await;
}

/// One HTTP request as a test listener read it.
#[derive(Debug)]
struct Seen {
    head: String,
}

/// Reads one request (head and `Content-Length` body) from `stream`; `None` at EOF.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    Some(head)
}

/// A loopback HTTP listener on port 0 that reports every request it reads to `seen` and
/// answers it with `answer(path)` (a whole HTTP response).
async fn listener(
    answer: impl Fn(&str) -> String + Send + Sync + 'static,
) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            let (tx, answer) = (tx.clone(), answer.clone());
            tokio::spawn(async move {
                while let Some(head) = read_request(&mut stream).await {
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    // Reported before the answer: whoever sees the answer, sees the record.
                    let _ = tx.send(Seen { head });
                    if stream.write_all(answer(&path).as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

fn redirect_to(location: &str) -> String {
    format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
}

fn not_found() -> String {
    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
}

/// Everything received so far.
fn drain(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
    let mut all = Vec::new();
    while let Ok(seen) = rx.try_recv() {
        all.push(seen);
    }
    all
}

fn carries_secret(seen: &Seen) -> bool {
    seen.head.to_ascii_lowercase().contains("x-api-key: s3cret")
}

#[tokio::test]
async fn a_cross_origin_redirect_is_refused_and_the_header_stays_home() {
    // The second origin records what it gets and has nothing to offer.
    let (elsewhere, mut elsewhere_seen) = listener(|_| not_found()).await;
    let target = format!("http://{elsewhere}/mcp");
    let (home, mut home_seen) = listener(move |_| redirect_to(&target)).await;

    let db = TestDb::new();
    let mut server = TestServer::start(db.settings()).await;
    for (name, transport, path) in [
        ("moved-http", "streamable_http", "mcp"),
        ("moved-sse", "sse", "sse"),
    ] {
        server
            .register(&json!({"name": name, "transport": transport,
                              "url": format!("http://{home}/{path}"),
                              "headers": {"X-Api-Key": "s3cret"},
                              "probe_interval": "1h", "timeout": "5s"}))
            .await;
        let exited = server.events.health(name, "exited", WAIT).await;
        let reason = exited["detail"]["reason"].as_str().unwrap().to_owned();

        // The first origin got the header it was configured with.
        let home_got = drain(&mut home_seen);
        let asked = format!(" /{path} HTTP/1.1");
        assert!(
            home_got
                .iter()
                .any(|s| s.head.contains(&asked) && carries_secret(s)),
            "{name}: {home_got:?}"
        );
        // The other never saw it (everything it read was recorded before it answered, and
        // the gateway's handshake is over).
        let elsewhere_got = drain(&mut elsewhere_seen);
        assert!(
            !elsewhere_got.iter().any(carries_secret),
            "{name}: the secret followed the redirect: {elsewhere_got:?}"
        );
        assert!(elsewhere_got.is_empty(), "{name}: {elsewhere_got:?}");

        // The refusal says what happened, naming both origins.
        let expected =
            format!("redirected to another origin (http://{home} -> http://{elsewhere})");
        assert!(reason.contains(&expected), "{name}: {reason}");
        // Announced after the exit is on the board.
        server.events.health(name, "restart_scheduled", WAIT).await;
        let read = server.server_json(name).await;
        let last_error = read["last_error"].as_str().unwrap_or_default();
        assert!(last_error.contains(&expected), "{read}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_same_origin_redirect_is_followed_with_the_header() {
    let (home, mut home_seen) = listener(|path| {
        if path == "/old" {
            redirect_to("/mcp")
        } else {
            not_found()
        }
    })
    .await;
    let db = TestDb::new();
    let mut server = TestServer::start(db.settings()).await;
    server
        .register(&json!({"name": "renamed", "transport": "streamable_http",
                          "url": format!("http://{home}/old"),
                          "headers": {"X-Api-Key": "s3cret"},
                          "probe_interval": "1h", "timeout": "5s"}))
        .await;
    let exited = server.events.health("renamed", "exited", WAIT).await;
    let reason = exited["detail"]["reason"].as_str().unwrap();
    assert!(!reason.contains("another origin"), "{reason}");
    let got = drain(&mut home_seen);
    assert!(
        got.iter()
            .any(|s| s.head.starts_with("POST /mcp ") && carries_secret(s)),
        "the redirect within the origin was not followed: {got:?}"
    );
    server.stop().await;
}
