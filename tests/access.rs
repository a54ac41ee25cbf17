//! Who may reach what, tried every way around: every route the router serves (read from
//! the same declarations the app registers) x every kind of caller x spellings of its
//! path; MCP sessions bound to their key; the session bound under a burst; a closed
//! gateway staying closed; `Host` and `Origin` on the whole surface; revocation ending
//! live sessions; allow-lists wherever a server shows.

mod common;

use common::wire::{Answer, exchange};
use common::{TestDb, TestServer, WAIT, stdio};
use omni_bridge::auth::{Access, Role};
use omni_bridge::http::routes::{self, Route};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Sends one request exactly as written (no client normalizes the path).
async fn raw(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {}\r\n", server.addr));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    exchange(server.addr, request.as_bytes()).await
}

/// The kinds of caller.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Nobody,
    WrongKey,
    Revoked,
    Viewer,
    Operator,
    /// An operator narrowed to `demo/echo`.
    Narrowed,
    Admin,
}

impl Who {
    const ALL: [Who; 7] = [
        Who::Nobody,
        Who::WrongKey,
        Who::Revoked,
        Who::Viewer,
        Who::Operator,
        Who::Narrowed,
        Who::Admin,
    ];

    fn role(self) -> Option<Role> {
        match self {
            Who::Viewer => Some(Role::Viewer),
            Who::Operator | Who::Narrowed => Some(Role::Operator),
            Who::Admin => Some(Role::Admin),
            _ => None,
        }
    }
}

/// What the door must answer `who` on `access`: `None` when it must let the request on
/// to the handler, else the refusal's status and code.
fn expected(access: Access, who: Who) -> Option<(u16, &'static str)> {
    let role = match access {
        Access::Probe | Access::Open => return None,
        Access::LiveStream if who == Who::Nobody => return None,
        Access::Role(role) => role,
        Access::LiveStream => Role::Viewer,
    };
    match who.role() {
        None => Some((401, "unauthorized")),
        Some(held) if held < role => Some((403, "forbidden")),
        Some(_) => None,
    }
}

/// The path with its parameters filled: a server that does not exist, so no handler
/// reached by an allowed caller changes anything that matters to the next request.
fn concrete(path: &str) -> String {
    path.replace("{name}", "ghost").replace("{tool}", "echo")
}

/// Spellings of `path` that a router might take for the same route, or not.
fn variants(path: &str) -> Vec<String> {
    let mut out = vec![format!("{path}/"), path.to_uppercase()];
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let (head, tail) = (&path[..i], &path[i + 1..]);
        if b.is_ascii_alphanumeric() {
            out.push(format!("{head}%{b:02x}{tail}"));
            out.push(format!("{head}%{b:02X}{tail}"));
        }
        if b == b'/' {
            out.push(format!("{head}//{tail}"));
            if i > 0 {
                out.push(format!("{head}%2F{tail}"));
                out.push(format!("{head}%2f{tail}"));
            }
            out.push(format!("{head}/./{tail}"));
            out.push(format!("{head}/x/../{tail}"));
            out.push(format!("{head}/%2e/{tail}"));
        }
    }
    out
}

struct Keys {
    viewer: String,
    operator: String,
    narrowed: String,
    admin: String,
    revoked: String,
}

impl Keys {
    async fn create(server: &TestServer) -> Self {
        let unlimited =
            |name: &str, role: &str| json!({"name": name, "role": role, "rate_limit": "100000/s"});
        let admin = server.create_key(None, unlimited("admin", "admin")).await;
        let key = |body: Value| server.create_key(Some(&admin), body);
        let viewer = key(unlimited("viewer", "viewer")).await;
        let operator = key(unlimited("operator", "operator")).await;
        let mut narrowed = unlimited("narrowed", "operator");
        narrowed["allow"] = json!(["demo/echo"]);
        let narrowed = key(narrowed).await;
        let revoked = key(unlimited("gone", "viewer")).await;
        let resp = server
            .http
            .delete(server.url("/api/v1/keys/gone"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        Self {
            viewer,
            operator,
            narrowed,
            admin,
            revoked,
        }
    }

    fn secret(&self, who: Who) -> Option<&str> {
        match who {
            Who::Nobody => None,
            Who::WrongKey => Some("obk_not-a-key-of-this-gateway"),
            Who::Revoked => Some(&self.revoked),
            Who::Viewer => Some(&self.viewer),
            Who::Operator => Some(&self.operator),
            Who::Narrowed => Some(&self.narrowed),
            Who::Admin => Some(&self.admin),
        }
    }
}

fn methods(route: &Route) -> Vec<String> {
    match &route.method {
        Some(m) => vec![m.to_string()],
        None => vec!["GET".into(), "POST".into(), "DELETE".into()],
    }
}

/// Whether an answer came from the door (refused) or the router (no route), not from
/// the route's handler.
fn stopped_before_handler(answer: &Answer) -> bool {
    matches!(
        (answer.status, answer.code.as_deref()),
        (401, Some("unauthorized")) | (403, Some("forbidden")) | (404, Some("not-found"))
    )
}

#[actix_web::test]
async fn every_route_every_caller_every_spelling() {
    let db = TestDb::new();
    let server = TestServer::start(db.stdio_settings()).await;
    let keys = Keys::create(&server).await;
    let table = routes::table();
    assert!(
        table.len() >= 25,
        "the router declares {} routes",
        table.len()
    );
    let mut checked = 0;
    for route in &table {
        let path = concrete(route.path);
        for method in methods(route) {
            for who in Who::ALL {
                let auth = keys.secret(who).map(|k| format!("Bearer {k}"));
                let headers: Vec<(&str, &str)> = auth
                    .as_deref()
                    .map(|a| vec![("Authorization", a)])
                    .unwrap_or_default();
                let answer = raw(&server, &method, &path, &headers, "").await;
                checked += 1;
                match expected(route.access, who) {
                    Some((status, code)) => {
                        assert_eq!(
                            (answer.status, answer.code.as_deref()),
                            (status, Some(code)),
                            "{who:?} {method} {path}: {}",
                            answer.body
                        );
                        // However the path is spelled, it never gets further.
                        for variant in variants(&path) {
                            let answer = raw(&server, &method, &variant, &headers, "").await;
                            checked += 1;
                            assert!(
                                stopped_before_handler(&answer),
                                "{who:?} {method} {variant} reached a handler: {} {}",
                                answer.status,
                                answer.body
                            );
                        }
                    }
                    None => assert!(
                        !stopped_before_handler(&answer),
                        "{who:?} {method} {path} was refused: {} {}",
                        answer.status,
                        answer.body
                    ),
                }
            }
        }
    }
    eprintln!("{checked} requests checked over {} routes", table.len());
    server.stop().await;
}

#[actix_web::test]
async fn the_reported_walkarounds_are_refused() {
    let db = TestDb::new();
    let server = TestServer::start(db.stdio_settings()).await;
    let keys = Keys::create(&server).await;
    let viewer = format!("Bearer {}", keys.viewer);
    for path in [
        "/api/v1/key%73",
        "/ap%69/v1/keys",
        "/api/%761/invocations",
        "/api/v1/invocation%73",
        "/%61pi/v1/keys",
    ] {
        let answer = raw(&server, "GET", path, &[("Authorization", &viewer)], "").await;
        assert_eq!(
            (answer.status, answer.code.as_deref()),
            (403, Some("forbidden")),
            "{path}: {}",
            answer.body
        );
    }
    let answer = raw(&server, "GET", "/mc%70", &[("Authorization", &viewer)], "").await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    server.stop().await;
}

fn initialize() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}})
    .to_string()
}

const ACCEPT: (&str, &str) = ("Accept", "application/json, text/event-stream");

/// Opens an MCP session with `key`; answers its id.
async fn open_session(server: &TestServer, key: &str) -> String {
    let resp = server
        .http
        .post(server.url("/mcp"))
        .bearer_auth(key)
        .header(ACCEPT.0, ACCEPT.1)
        .header("content-type", "application/json")
        .body(initialize())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    drop(resp);
    let resp = server
        .http
        .post(server.url("/mcp"))
        .bearer_auth(key)
        .header(ACCEPT.0, ACCEPT.1)
        .header("mcp-session-id", &id)
        .header("mcp-protocol-version", "2025-06-18")
        .header("content-type", "application/json")
        .body(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    id
}

async fn list_tools(server: &TestServer, key: &str, session: &str) -> StatusCode {
    server
        .http
        .post(server.url("/mcp"))
        .bearer_auth(key)
        .header(ACCEPT.0, ACCEPT.1)
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-06-18")
        .header("content-type", "application/json")
        .body(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string())
        .send()
        .await
        .unwrap()
        .status()
}

#[actix_web::test]
async fn an_mcp_session_belongs_to_the_key_that_opened_it() {
    let db = TestDb::new();
    let server = TestServer::start(db.stdio_settings()).await;
    let keys = Keys::create(&server).await;
    let session = open_session(&server, &keys.operator).await;
    assert_eq!(list_tools(&server, &keys.operator, &session).await, 200);

    // Another key, with every method: as if the session did not exist.
    for key in [&keys.narrowed, &keys.admin] {
        assert_eq!(list_tools(&server, key, &session).await, 404);
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let resp = server
                .http
                .request(method.clone(), server.url("/mcp"))
                .bearer_auth(key)
                .header(ACCEPT.0, ACCEPT.1)
                .header("mcp-session-id", &session)
                .header("mcp-protocol-version", "2025-06-18")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 404, "{method} with another key");
        }
    }
    // The owner's session survived the other keys' DELETE.
    assert_eq!(list_tools(&server, &keys.operator, &session).await, 200);
    // Its owner ends it; then it is gone for the owner too.
    let resp = server
        .http
        .delete(server.url("/mcp"))
        .bearer_auth(&keys.operator)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(list_tools(&server, &keys.operator, &session).await, 404);
    server.stop().await;
}

#[actix_web::test]
async fn a_burst_of_initialize_never_exceeds_the_session_bound() {
    let db = TestDb::new();
    let mut settings = db.stdio_settings();
    settings.mcp.max_sessions = 20;
    let server = TestServer::start(settings).await;
    let (admin, _) = server
        .admin_and_key(json!({"name": "unused", "role": "viewer"}))
        .await;
    let resp = server
        .http
        .post(server.url("/api/v1/keys"))
        .bearer_auth(&admin)
        .json(&json!({"name": "burst", "role": "operator", "rate_limit": "100000/s"}))
        .send()
        .await
        .unwrap();
    let key = resp.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // Half of them spell the method with an escape, as JSON allows: the same method.
    let escaped = initialize().replace("\"initialize\"", "\"\\u0069nitialize\"");
    assert!(escaped.contains("u0069"), "{escaped}");
    let attempts = (0..100).map(|n| {
        server
            .http
            .post(server.url("/mcp"))
            .bearer_auth(&key)
            .header(ACCEPT.0, ACCEPT.1)
            .header("content-type", "application/json")
            .body(if n % 2 == 0 {
                initialize()
            } else {
                escaped.clone()
            })
            .send()
    });
    let answers = futures_util::future::join_all(attempts).await;
    let statuses: Vec<u16> = answers
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    let opened = statuses.iter().filter(|s| **s == 200).count();
    let full = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!((opened, full), (20, 80), "{statuses:?}");
    let status = server.get_json_with("/api/v1/mcp", &admin).await;
    assert_eq!(status["sessions"], 20, "{status}");
    server.stop().await;
}

#[actix_web::test]
async fn host_and_origin_are_checked_on_the_whole_surface() {
    // Open (loopback, no keys): the case DNS rebinding aims at.
    let db = TestDb::new();
    let server = TestServer::start(db.stdio_settings()).await;
    let evil = ("Host", "evil.example:8080");
    for (method, path, body) in [
        ("GET", "/api/v1/servers", String::new()),
        ("POST", "/api/v1/servers", stdio("x").to_string()),
        ("POST", "/api/v1/servers/demo/tools/echo/call", "{}".into()),
        ("GET", "/ws", String::new()),
        ("GET", "/", String::new()),
        ("POST", "/mcp", initialize()),
        ("GET", "/metrics", String::new()),
    ] {
        let answer = raw(&server, method, path, &[evil, ACCEPT], &body).await;
        assert_eq!(
            (answer.status, answer.code.as_deref()),
            (403, Some("host-not-allowed")),
            "{method} {path}: {}",
            answer.body
        );
    }
    // Nothing was registered by the refused POST.
    assert_eq!(
        server.get_json("/api/v1/servers").await["servers"],
        json!([])
    );
    // Probes answer whatever the name.
    assert_eq!(
        raw(&server, "GET", "/healthz", &[evil], "").await.status,
        200
    );
    // Loopback names pass.
    let port = server.addr.port().to_string();
    for host in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let answer = raw(&server, "GET", "/api/v1/servers", &[("Host", &host)], "").await;
        assert_eq!(answer.status, 200, "{host}");
    }
    // A page from another origin can neither change state nor open the live stream.
    let foreign = ("Origin", "http://evil.example");
    let answer = raw(
        &server,
        "POST",
        "/api/v1/servers",
        &[foreign],
        &stdio("x").to_string(),
    )
    .await;
    assert_eq!(answer.code.as_deref(), Some("origin-not-allowed"));
    let upgrade = [
        foreign,
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let answer = raw(&server, "GET", "/ws", &upgrade, "").await;
    assert_eq!(answer.code.as_deref(), Some("origin-not-allowed"));
    // The gateway's own origin may.
    let own = format!("http://{}", server.addr);
    let answer = raw(
        &server,
        "POST",
        "/api/v1/servers",
        &[("Origin", &own)],
        &stdio("x").to_string(),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    server.stop().await;
}

/// The WebSocket's next frame is its close, with this code, within the deadline.
async fn closed_with(conn: &mut common::WsConn, code: u16) {
    loop {
        let message = common::ws_next(conn, WAIT).await;
        if let Some(got) = message.get("closed") {
            assert_eq!(got, code, "{message}");
            return;
        }
    }
}

#[actix_web::test]
async fn revoking_a_key_ends_its_live_sessions() {
    let db = TestDb::new();
    let server = TestServer::start(db.stdio_settings()).await;
    let keys = Keys::create(&server).await;
    // A live stream authenticated in its first message, and an MCP session.
    let mut ws = common::ws_connect(&server).await;
    use futures_util::SinkExt;
    ws.send(awc::ws::Message::Text(
        json!({"action": "auth", "key": keys.operator})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let first = common::ws_next(&mut ws, WAIT).await;
    assert_eq!(first["type"], "initial_status", "{first}");
    let session = open_session(&server, &keys.operator).await;
    let other = open_session(&server, &keys.narrowed).await;
    let before = server.get_json_with("/api/v1/mcp", &keys.admin).await["sessions"]
        .as_u64()
        .unwrap();
    assert_eq!(before, 2);

    let resp = server
        .http
        .delete(server.url("/api/v1/keys/operator"))
        .bearer_auth(&keys.admin)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    closed_with(&mut ws, 1008).await;
    // The MCP session ended with it; the other key's did not.
    common::poll_until(async || {
        let status = server.get_json_with("/api/v1/mcp", &keys.admin).await;
        match status["sessions"].as_u64() {
            Some(1) => Ok(()),
            _ => Err(format!("sessions: {status}")),
        }
    })
    .await;
    assert_eq!(list_tools(&server, &keys.narrowed, &other).await, 200);
    assert_eq!(list_tools(&server, &keys.operator, &session).await, 401);
    server.stop().await;
}

#[actix_web::test]
async fn a_narrowed_key_sees_only_its_servers() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&stdio("demo")).await;
    server.register_healthy(&stdio("web")).await;
    let keys = Keys::create(&server).await;
    let narrowed = &keys.narrowed;

    let events = raw(
        &server,
        "GET",
        "/api/v1/servers/web/events",
        &[("Authorization", &format!("Bearer {narrowed}"))],
        "",
    )
    .await;
    assert_eq!(
        (events.status, events.code.as_deref()),
        (404, Some("server-not-found"))
    );
    let own = server
        .get_json_with("/api/v1/servers/demo/events", narrowed)
        .await;
    assert!(own["events"].is_array(), "{own}");

    let mcp = server.get_json_with("/api/v1/mcp", narrowed).await;
    assert_eq!(mcp["live_servers"], json!(["demo"]), "{mcp}");
    assert_eq!(mcp["tools"], 1, "{mcp}");
    let everything = server.get_json_with("/api/v1/mcp", &keys.admin).await;
    assert!(everything["tools"].as_u64().unwrap() > 2, "{everything}");

    let tools = server.get_json_with("/api/v1/tools", narrowed).await;
    let names: Vec<String> = tools["tools"]
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
    assert_eq!(names, vec!["demo/echo".to_owned()]);

    for key in [narrowed, &keys.viewer, &keys.operator] {
        let resp = server
            .http
            .get(server.url("/metrics"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
    }
    let metrics = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(&keys.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("server=\"web\""),
        "admin sees every server"
    );
    server.stop().await;
}

/// The access table in docs/security.md is the router's: every declared route is a row with
/// the access it declares, and no row names a route the router does not declare.
#[test]
fn the_documented_table_is_the_router() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md"))
        .expect("docs/security.md");
    // The table under its header row, up to the first line that is not a row.
    let rows: Vec<&str> = doc
        .lines()
        .skip_while(|l| *l != "| route | who may reach it |")
        .skip(2)
        .take_while(|l| l.starts_with("| `"))
        .collect();
    let table = routes::table();
    let expected: Vec<String> = table
        .iter()
        .map(|r| {
            let method = r
                .method
                .as_ref()
                .map_or("any".to_owned(), |m| m.to_string());
            format!("| `{method} {}` | {} |", r.path, r.access.describe())
        })
        .collect();
    for row in &expected {
        assert!(
            rows.contains(&row.as_str()),
            "docs/security.md lacks the row {row}"
        );
    }
    assert_eq!(
        rows.len(),
        expected.len(),
        "docs/security.md rows: {rows:#?}"
    );
}

/// Routes reach the router only through the declarations: no code registers a service,
/// resource, scope or route macro elsewhere, so the matrix above covers the real router.
#[test]
fn nothing_registers_a_route_outside_the_declarations() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut stack = vec![std::path::PathBuf::from(root)];
    let mut offenders = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // The test MCP server and the bench are other programs, not the gateway.
            if path.ends_with("bin") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let registering = [
                ".service(",
                "web::resource(",
                "web::scope(",
                "web::route(",
                ".default_service(",
                "#[get(",
                "#[post(",
                "#[put(",
                "#[delete(",
                "#[route(",
            ];
            for (n, line) in text.lines().enumerate() {
                if registering.iter().any(|r| line.contains(r)) {
                    offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    // The one registrar: http::configure, from the declarations.
    offenders.retain(|o| !o.contains("src/http/mod.rs"));
    assert!(offenders.is_empty(), "{offenders:#?}");
    let registrar = std::fs::read_to_string(format!("{root}/http/mod.rs")).unwrap();
    assert_eq!(registrar.matches("web::resource(").count(), 1);
    assert_eq!(registrar.matches(".service(").count(), 1);
}
