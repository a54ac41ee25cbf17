//! Access control against a real gateway: keys from the command line and the API, each
//! role against each class of endpoint, revocation, allow-lists over HTTP and `/mcp`,
//! rate limits, the audit trail of who called, and the refusal to run open beyond
//! loopback.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{TestDb, TestServer, WAIT, stdio};
use omni_bridge::store::DatabaseUrl;
use reqwest::{Method, StatusCode};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

const GATEWAY: &str = env!("CARGO_BIN_EXE_omni-bridge");

fn database_arg(db: &TestDb) -> String {
    match &db.url {
        DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        DatabaseUrl::Postgres(url) => url.clone(),
    }
}

/// `omni-bridge keys ...` against the test's database; answers stdout.
fn keys_cli(db: &TestDb, args: &[&str]) -> String {
    let output = Command::new(GATEWAY)
        .arg("keys")
        .args(["--database-url", &database_arg(db)])
        .args(args)
        .output()
        .expect("omni-bridge runs");
    assert!(
        output.status.success(),
        "keys {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = server.http.request(method, server.url(path));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_before_the_first_start_locks_the_gateway() {
    let db = TestDb::new();
    let secret = keys_cli(&db, &["create", "--name", "root", "--role", "admin"])
        .trim()
        .to_owned();
    assert!(secret.starts_with("obk_"), "{secret}");
    let listed = keys_cli(&db, &["list"]);
    assert!(
        listed.contains("\"root\"") && !listed.contains(&secret),
        "{listed}"
    );

    let server = TestServer::start(db.settings()).await;
    let resp = server
        .http
        .get(server.url("/api/v1/servers"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = send(
        &server,
        Method::GET,
        "/api/v1/servers",
        Some("obk_wrong"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(&server, Method::GET, "/api/v1/servers", Some(&secret), None).await;
    assert_eq!(status, StatusCode::OK);
    // The page, liveness and readiness stay open for browsers and orchestrators.
    for open in ["/", "/healthz", "/readyz"] {
        let (status, _) = send(&server, Method::GET, open, None, None).await;
        assert_eq!(status, StatusCode::OK, "{open}");
    }
    // The secret is nowhere in what the API shows.
    let (_, keys) = send(&server, Method::GET, "/api/v1/keys", Some(&secret), None).await;
    assert!(!keys.to_string().contains(&secret[4..]), "{keys}");
    assert_eq!(keys["keys"][0]["role"], "admin");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_reaches_its_endpoints_and_no_further() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&stdio("alpha")).await;
    // Open until the first key exists.
    let admin = server
        .create_key(None, json!({"name": "admin", "role": "admin"}))
        .await;
    let (status, _) = send(&server, Method::GET, "/api/v1/tools", None, None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the first key closes the gateway"
    );
    let operator = server
        .create_key(Some(&admin), json!({"name": "op", "role": "operator"}))
        .await;
    let viewer = server
        .create_key(Some(&admin), json!({"name": "view", "role": "viewer"}))
        .await;

    let call = Some(json!({"arguments": {"text": "hi"}}));
    let register = Some(stdio("beta"));
    let initialize = Some(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}}),
    );
    // (method, path, body, the least role allowed)
    let classes: Vec<(Method, &str, Option<Value>, &str)> = vec![
        (Method::GET, "/api/v1/tools", None, "viewer"),
        (Method::GET, "/api/v1/servers", None, "viewer"),
        (Method::GET, "/metrics", None, "admin"),
        (Method::GET, "/api/v1/cache/stats", None, "viewer"),
        (
            Method::POST,
            "/api/v1/servers/alpha/tools/echo/call",
            call,
            "operator",
        ),
        (Method::POST, "/mcp", initialize, "operator"),
        (Method::POST, "/api/v1/servers", register, "admin"),
        (Method::DELETE, "/api/v1/cache", None, "admin"),
        (Method::GET, "/api/v1/invocations", None, "admin"),
        (Method::GET, "/api/v1/keys", None, "admin"),
    ];
    let rank = |role: &str| {
        ["viewer", "operator", "admin"]
            .iter()
            .position(|r| *r == role)
    };
    for (method, path, body, least) in &classes {
        let (status, answer) = send(&server, method.clone(), path, None, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a key"
        );
        assert_eq!(answer["error"]["code"], "unauthorized");
        for (role, key) in [
            ("viewer", &viewer),
            ("operator", &operator),
            ("admin", &admin),
        ] {
            let mut req = server
                .http
                .request(method.clone(), server.url(path))
                .bearer_auth(key)
                .header("accept", "application/json, text/event-stream");
            if let Some(body) = body {
                req = req.json(body);
            }
            let status = req.send().await.unwrap().status();
            if rank(role) >= rank(least) {
                assert!(status.is_success(), "{role} {method} {path}: {status}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{role} {method} {path}");
            }
        }
        if *path == "/api/v1/servers" && *method == Method::POST {
            // Registered by the admin above; the viewer's and operator's attempts were refused.
            let (status, _) = send(
                &server,
                Method::DELETE,
                "/api/v1/servers/beta",
                Some(&admin),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::NO_CONTENT);
        }
    }

    // Revocation takes effect on the very next request.
    let (status, _) = send(
        &server,
        Method::DELETE,
        "/api/v1/keys/op",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send(&server, Method::GET, "/api/v1/tools", Some(&operator), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = send(
        &server,
        Method::DELETE,
        "/api/v1/keys/op",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // A revoked name stays taken, so the audit trail keeps meaning one key.
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/v1/keys",
        Some(&admin),
        Some(json!({"name": "op", "role": "viewer"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "key-exists");
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/v1/keys",
        Some(&admin),
        Some(json!({"name": "x", "role": "root"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "role");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_limits_what_a_key_sees_and_calls_everywhere() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&stdio("alpha")).await;
    server.register_healthy(&stdio("beta")).await;
    let (admin, narrow) = server
        .admin_and_key(json!({"name": "narrow", "role": "operator", "allow": ["alpha/e*"]}))
        .await;

    let (_, tools) = send(&server, Method::GET, "/api/v1/tools", Some(&narrow), None).await;
    let seen: Vec<String> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}/{}",
                t["server"].as_str().unwrap(),
                t["tool"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(seen, ["alpha/echo"]);
    // The registry shows it only the servers its list covers.
    let (_, servers) = send(&server, Method::GET, "/api/v1/servers", Some(&narrow), None).await;
    let names: Vec<&str> = servers["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha"]);
    let (status, _) = send(
        &server,
        Method::GET,
        "/api/v1/servers/beta",
        Some(&narrow),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(
        &server,
        Method::POST,
        "/api/v1/servers/alpha/tools/echo/call",
        Some(&narrow),
        Some(json!({"arguments": {"text": "in"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/v1/servers/beta/tools/echo/call",
        Some(&narrow),
        Some(json!({"arguments": {"text": "out"}})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "not-allowed");

    // The same list at /mcp: the narrow key sees one tool and cannot call another.
    let config =
        StreamableHttpClientTransportConfig::with_uri(server.url("/mcp")).auth_header(&narrow);
    let client =
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .expect("handshake with the narrow key");
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(names, ["alpha__echo"]);
    let refused = client
        .call_tool(
            CallToolRequestParams::new("beta__echo")
                .with_arguments(json!({"text": "x"}).as_object().unwrap().clone()),
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("unknown tool"), "{refused}");
    client.cancel().await.unwrap();

    // Each call is audited under the key that made it.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, rows) = send(
            &server,
            Method::GET,
            "/api/v1/invocations",
            Some(&admin),
            None,
        )
        .await;
        let rows = rows["invocations"].as_array().cloned().unwrap_or_default();
        if rows
            .iter()
            .any(|r| r["caller"] == "narrow" && r["server"] == "alpha")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no audit row: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_then_recovers() {
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;
    let admin = server
        .create_key(None, json!({"name": "admin", "role": "admin"}))
        .await;
    let slow = server
        .create_key(
            Some(&admin),
            json!({"name": "slow", "role": "viewer", "rate_limit": "3/s"}),
        )
        .await;
    for _ in 0..3 {
        let (status, _) = send(&server, Method::GET, "/api/v1/servers", Some(&slow), None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let resp = server
        .http
        .get(server.url("/api/v1/servers"))
        .bearer_auth(&slow)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate-limited");
    // Other keys are not held back by this one.
    let (status, _) = send(&server, Method::GET, "/api/v1/servers", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    // After the wait it names, the key is served again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (status, _) = send(&server, Method::GET, "/api/v1/servers", Some(&slow), None).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_it_refuses_to_listen_beyond_loopback() {
    let db = TestDb::new();
    let mut settings = db.settings();
    // Refused before anything binds, so nothing listens beyond loopback.
    settings.bind = "0.0.0.0:0".parse().unwrap();
    let error = TestServer::try_start(settings)
        .await
        .err()
        .expect("refused");
    assert!(error.contains("without API keys"), "{error}");
    let output = Command::new(GATEWAY)
        .args(["--bind", "0.0.0.0:0", "--database-url", &database_arg(&db)])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("--insecure-no-auth"), "{said}");
}

/// Before its key, a live connection gets a small budget: its first message within
/// `auth_timeout` (else close 1008), and no frame over 1 KiB (close 1009, read from the
/// frame's header). A key that fits is still taken.
#[actix_rt::test]
async fn a_live_connection_without_its_key_gets_little_time_and_room() {
    use awc::ws::Message;
    use futures_util::SinkExt;

    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.live.auth_timeout = Duration::from_millis(300);
    let server = TestServer::start(settings).await;
    let (admin, _) = server
        .admin_and_key(json!({"name": "watcher", "role": "viewer"}))
        .await;
    let url = format!("ws://{}/ws", server.addr);
    let next = async |conn: &mut common::WsConn| common::ws_next(conn, WAIT).await;

    // Silent: closed for want of a key.
    let (_, mut conn) = awc::Client::new().ws(&url).connect().await.unwrap();
    assert_eq!(next(&mut conn).await["closed"], 1008);

    // 2 KiB before the key: too big for a connection that has not said who it is, though
    // it is far below the 64 KiB an authenticated one may send.
    let (_, mut conn) = awc::Client::new().ws(&url).connect().await.unwrap();
    // (Padded with whitespace, which JSON allows between tokens.)
    let padded = format!(r#"{{"action":"auth",{}"key":"{admin}"}}"#, " ".repeat(2048));
    conn.send(Message::Text(padded.into())).await.unwrap();
    assert_eq!(next(&mut conn).await["closed"], 1009);

    // The same key in a message that fits is taken.
    let (_, mut conn) = awc::Client::new().ws(&url).connect().await.unwrap();
    let fits = format!(r#"{{"action":"auth",{}"key":"{admin}"}}"#, " ".repeat(512));
    conn.send(Message::Text(fits.into())).await.unwrap();
    let first = next(&mut conn).await;
    assert_eq!(first["type"], "initial_status", "{first}");
    server.stop().await;
}

/// The live stream takes the key as its first message (never in the URL), and sends a
/// key only the servers its allow-list covers.
#[actix_rt::test]
async fn the_live_stream_authenticates_in_its_first_message_and_filters_by_allow_list() {
    use awc::ws::Message;
    use futures_util::SinkExt;

    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&stdio("alpha")).await;
    server.register_healthy(&stdio("beta")).await;
    let (admin, watcher) = server
        .admin_and_key(json!({"name": "watcher", "role": "viewer", "allow": ["alpha/*"]}))
        .await;
    let url = format!("ws://{}/ws", server.addr);
    let next = async |conn: &mut common::WsConn| common::ws_next(conn, WAIT).await;

    // A wrong key ends the session with a policy close.
    let (_, mut conn) = awc::Client::new().ws(&url).connect().await.unwrap();
    let bad = json!({"action": "auth", "key": "obk_nope"}).to_string();
    conn.send(Message::Text(bad.into())).await.unwrap();
    assert_eq!(next(&mut conn).await["closed"], 1008);

    let (_, mut conn) = awc::Client::new().ws(&url).connect().await.unwrap();
    let good = json!({"action": "auth", "key": watcher}).to_string();
    conn.send(Message::Text(good.into())).await.unwrap();
    let first = next(&mut conn).await;
    assert_eq!(first["type"], "initial_status", "{first}");
    let names: Vec<&str> = first["data"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha"]);

    // beta's events come first on the bus, but only alpha's reach this key.
    for name in ["beta", "alpha"] {
        let (status, _) = send(
            &server,
            Method::POST,
            &format!("/api/v1/servers/{name}/reload"),
            Some(&admin),
            None,
        )
        .await;
        assert!(status.is_success(), "reload {name}: {status}");
    }
    loop {
        let message = next(&mut conn).await;
        assert!(message.get("closed").is_none(), "{message}");
        let server_name = &message["data"]["server"];
        assert_ne!(server_name, "beta", "{message}");
        if server_name == "alpha" {
            break;
        }
    }
    server.stop().await;
}
