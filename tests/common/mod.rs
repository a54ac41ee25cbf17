//! Shared test harness: a real gateway on port 0 with its real store, on SQLite by
//! default or on PostgreSQL when `OMNI_TEST_DATABASE_URL` names a server (each test then
//! gets a database of its own, dropped afterwards).

#![allow(dead_code)]

pub mod binary;
pub mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use omni_bridge::config::Settings;
use omni_bridge::events::Event;
use omni_bridge::store::DatabaseUrl;
use serde_json::Value;
use std::sync::Arc;

/// The database of one test.
pub struct TestDb {
    pub url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

/// Runs a statement on PostgreSQL from any context (tests run it from drop, too).
fn pg_admin(admin_url: &str, sql: String) {
    let admin_url = admin_url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut conn = AsyncPgConnection::establish(&admin_url)
                .await
                .expect("OMNI_TEST_DATABASE_URL answers");
            conn.batch_execute(&sql)
                .await
                .expect("admin statement runs");
        })
    })
    .join()
    .expect("admin thread");
}

impl TestDb {
    pub fn new() -> Self {
        match std::env::var("OMNI_TEST_DATABASE_URL") {
            Ok(admin) if !admin.is_empty() => Self::postgres(&admin),
            _ => Self::sqlite(),
        }
    }

    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = DatabaseUrl::Sqlite(dir.path().join("omni.db"));
        Self {
            url,
            _dir: Some(dir),
            postgres: None,
        }
    }

    pub fn postgres(admin: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "omni_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        pg_admin(admin, format!("CREATE DATABASE {name}"));
        let mut url = url::Url::parse(admin).expect("OMNI_TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        Self {
            url: DatabaseUrl::Postgres(url.to_string()),
            _dir: None,
            postgres: Some((admin.to_owned(), name)),
        }
    }

    /// Drops the PostgreSQL database (ending its connections) and creates it again, empty;
    /// false on SQLite.
    pub fn recreate(&self) -> bool {
        let Some((admin, name)) = &self.postgres else {
            return false;
        };
        pg_admin(
            admin,
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        pg_admin(admin, format!("CREATE DATABASE {name}"));
        true
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    pub fn settings(&self) -> Settings {
        Settings::with_database(self.url.clone())
    }

    /// Settings that let the API register stdio servers (our test MCP server).
    pub fn stdio_settings(&self) -> Settings {
        let mut settings = self.settings();
        settings.allow_stdio_via_api = true;
        settings
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.postgres {
            pg_admin(
                admin,
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// A gateway running on its own actix system in its own thread.
pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    /// Every event the gateway publishes from the moment it listens.
    pub events: Events,
    handle: omni_bridge::server::Stopper,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(settings: Settings) -> Self {
        Self::try_start(settings).await.expect("gateway starts")
    }

    pub async fn try_start(settings: Settings) -> Result<Self, String> {
        omni_bridge::tls::install_crypto_provider();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match omni_bridge::server::start(settings).await {
                    Ok(running) => {
                        let events = running.bus.subscribe();
                        let _ = tx.send(Ok((running.addr, running.stopper.clone(), events)));
                        let _ = running.server.await;
                        running.audit.close().await;
                        running.store.close();
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            })
        });
        let (addr, handle, events) = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .map_err(|_| "gateway did not start within 60 s".to_string())?
            .map_err(|_| "gateway thread ended".to_string())??;
        Ok(Self {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            handle,
            thread: Some(thread),
            events: Events {
                rx: events,
                seen: Vec::new(),
            },
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Registers an upstream through the API; it must be accepted.
    pub async fn register(&self, body: &Value) {
        let resp = self
            .http
            .post(self.url("/api/v1/servers"))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    }

    /// Registers an upstream and waits until it is healthy.
    /// Registers and waits until the upstream is healthy and `/mcp` offers its tools.
    pub async fn register_healthy(&mut self, body: &Value) {
        self.register(body).await;
        let name = body["name"].as_str().unwrap().to_owned();
        self.events.status(&name, "healthy", WAIT).await;
        self.wait_mcp_live(&name, true).await;
    }

    /// Waits until `/mcp` offers (or no longer offers) the tools of `name`: its catalogue
    /// follows the upstream's events a moment later.
    pub async fn wait_mcp_live(&self, name: &str, live: bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = self.get_json("/api/v1/mcp").await;
            let listed = status["live_servers"]
                .as_array()
                .is_some_and(|s| s.iter().any(|n| n == name));
            if listed == live {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/mcp never {} {name}: {status}",
                if live { "offered" } else { "dropped" }
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs a raw body; answers the status and the JSON body (null if none).
    pub async fn post_raw(&self, path: &str, body: String) -> (reqwest::StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Calls a tool through the HTTP API.
    pub async fn call(
        &self,
        server: &str,
        tool: &str,
        args: Value,
    ) -> (reqwest::StatusCode, Value) {
        let path = format!("/api/v1/servers/{server}/tools/{tool}/call");
        self.post_raw(&path, serde_json::json!({"arguments": args}).to_string())
            .await
    }

    /// Creates an API key with `admin`'s key (or none while the gateway is open); answers
    /// its secret.
    pub async fn create_key(&self, admin: Option<&str>, body: Value) -> String {
        let mut req = self.http.post(self.url("/api/v1/keys")).json(&body);
        if let Some(admin) = admin {
            req = req.bearer_auth(admin);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let created: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, reqwest::StatusCode::CREATED, "{created}");
        created["secret"].as_str().unwrap().to_owned()
    }

    /// Creates an admin key on an open gateway, then with it the key `body` describes;
    /// answers both secrets.
    pub async fn admin_and_key(&self, body: Value) -> (String, String) {
        let admin = self
            .create_key(None, serde_json::json!({"name": "admin", "role": "admin"}))
            .await;
        let key = self.create_key(Some(&admin), body).await;
        (admin, key)
    }

    /// Starts a call in the background, so the test can act while it is in flight.
    pub fn start_call(
        &self,
        name: &str,
        tool: &str,
        args: Value,
    ) -> tokio::task::JoinHandle<(reqwest::StatusCode, Value)> {
        let request = self
            .http
            .post(self.url(&format!("/api/v1/servers/{name}/tools/{tool}/call")))
            .json(&serde_json::json!({ "arguments": args }));
        tokio::spawn(async move {
            let resp = request.send().await.unwrap();
            let status = resp.status();
            (status, resp.json().await.unwrap_or(Value::Null))
        })
    }

    /// How many `sleep` calls the test upstream `name` is running now (its `sleeping`
    /// tool, which is not read-only and so never cached).
    pub async fn sleeping(&self, name: &str) -> String {
        let (status, body) = self.call(name, "sleeping", serde_json::json!({})).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        assert_eq!(body["cached"], false);
        text_of(&body).to_owned()
    }

    /// Waits until the upstream runs `n` sleep calls. No event says that a call reached
    /// the upstream, so this polls, with a deadline.
    pub async fn wait_sleeping(&self, name: &str, n: &str) {
        poll_until(async || {
            let now = self.sleeping(name).await;
            if now == n {
                Ok(())
            } else {
                Err(format!(
                    "{name} never had {n} sleep calls running (last: {now})"
                ))
            }
        })
        .await
    }

    /// Starts a `sleep` call of `tool args` on `name`, runs `meanwhile` while the upstream
    /// holds it (and checks it still does afterwards), then answers the call's outcome.
    pub async fn across_a_slow_call(
        &mut self,
        name: &str,
        args: Value,
        meanwhile: impl AsyncFnOnce(&mut TestServer),
    ) -> (reqwest::StatusCode, Value) {
        let slow = self.start_call(name, "sleep", args);
        self.wait_sleeping(name, "1").await;
        meanwhile(self).await;
        assert_eq!(
            self.sleeping(name).await,
            "1",
            "the call must still be upstream when what ran meanwhile is done"
        );
        slow.await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// GETs `path` with `key`; the answer must be 200 JSON.
    pub async fn get_json_with(&self, path: &str, key: &str) -> Value {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.unwrap()
    }

    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// One registry entry with its live state.
    pub async fn server_json(&self, name: &str) -> Value {
        self.get_json(&format!("/api/v1/servers/{name}")).await
    }

    /// Graceful stop; returns when the server's thread has ended.
    pub async fn stop(mut self) {
        self.handle.stop().await;
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // A test that failed before `stop`: end the server without waiting on it.
            let handle = self.handle.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(handle.stop());
            });
        }
    }
}

/// How long a test waits for any one thing to happen.
pub const WAIT: Duration = Duration::from_secs(20);

/// For state that no event announces: asks `probe` every 10 ms until it answers `Ok`,
/// and fails with its last `Err` (what was awaited, and what was seen) after `WAIT`.
pub async fn poll_until<T>(mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(why) => assert!(tokio::time::Instant::now() < deadline, "{why}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Our test MCP server over stdio, as a registry entry.
pub fn stdio(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "transport": "stdio",
        "command": TestMcp::BIN,
        "args": ["--name", name],
        "probe_interval": "1h",
        "timeout": "5s",
    })
}

/// [`stdio`] with its read-only tools' results cached: caching is off unless asked for.
pub fn cached(name: &str) -> Value {
    let mut body = stdio(name);
    body["cache"] = serde_json::json!("read-only");
    body
}

/// The text of a call answer's first content block.
pub fn text_of(body: &Value) -> &str {
    body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

/// The gateway's event stream, as a test sees it.
pub struct Events {
    rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    /// Everything received so far, in order.
    pub seen: Vec<Arc<Event>>,
}

impl Events {
    /// Waits for the next event (after those already seen) that `pred` accepts; panics
    /// with what was seen if none comes within `within`.
    pub async fn wait_for(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&Event) -> bool,
    ) -> Arc<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Ok(event)) => {
                    self.seen.push(event.clone());
                    if pred(&event) {
                        return event;
                    }
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                    panic!("test fell {n} events behind while waiting for {what}")
                }
                Ok(Err(e)) => panic!("event bus closed while waiting for {what}: {e}"),
                Err(_) => panic!(
                    "no {what} within {within:?}; seen: {:#?}",
                    self.seen
                        .iter()
                        .map(|e| e.data.to_string())
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Like [`Self::wait_for`], but an event already seen counts too.
    pub async fn seen_or_wait(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&Event) -> bool,
    ) -> Arc<Event> {
        if let Some(event) = self.seen.iter().find(|e| pred(e)) {
            return event.clone();
        }
        self.wait_for(within, what, pred).await
    }

    /// Waits for a health event named `name` of `server`.
    pub async fn health(&mut self, server: &str, name: &str, within: Duration) -> Value {
        let what = format!("health event {name} of {server}");
        let event = self
            .wait_for(within, &what, |e| {
                e.data["server"] == server && e.data["event"] == name
            })
            .await;
        event.data.clone()
    }

    /// Waits for `server` to reach `status`.
    pub async fn status(&mut self, server: &str, status: &str, within: Duration) -> Value {
        let what = format!("status {status} of {server}");
        let event = self
            .wait_for(within, &what, |e| {
                e.data["server"] == server && e.data["new_status"] == status
            })
            .await;
        event.data.clone()
    }
}

/// A test MCP server (our own binary) serving HTTP on a loopback port; killed on drop.
pub struct TestMcp {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl TestMcp {
    pub const BIN: &str = env!("CARGO_BIN_EXE_omni-test-mcp");

    /// Starts it on `addr` (port 0 for any free port), calling itself `name` in its
    /// handshake, and waits until it listens.
    pub fn start_http(addr: &str, name: &str) -> Self {
        Self::start_http_with(addr, name, &[])
    }

    /// As [`Self::start_http`], with more arguments (e.g. `--require-header`).
    pub fn start_http_with(addr: &str, name: &str, extra: &[&str]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(Self::BIN)
            .args(["--http", addr, "--name", name])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("omni-test-mcp starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Self { child, addr }
    }

    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// The same tools without sessions, answered as plain JSON bodies.
    pub fn json_url(&self) -> String {
        format!("http://{}/json/mcp", self.addr)
    }

    pub fn sse_url(&self) -> String {
        format!("http://{}/sse", self.addr)
    }
}

impl Drop for TestMcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Another connection holding SQLite's write lock (`BEGIN EXCLUSIVE`) until released: the
/// store then refuses every write while reads go on (WAL).
pub struct SqliteWriteLock {
    release: std::sync::mpsc::Sender<()>,
    holder: std::thread::JoinHandle<()>,
}

impl SqliteWriteLock {
    /// Takes the lock on the test database's file and answers once it is held; `None` on
    /// PostgreSQL, which has no such lock.
    pub async fn hold(db: &TestDb) -> Option<Self> {
        let omni_bridge::store::DatabaseUrl::Sqlite(path) = &db.url else {
            return None;
        };
        let path = path.clone();
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            use diesel::connection::SimpleConnection;
            use diesel::{Connection, SqliteConnection};
            let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            // The gateway writes too (health history): wait our turn for the lock.
            conn.batch_execute("PRAGMA busy_timeout = 20000; BEGIN EXCLUSIVE")
                .unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
            conn.batch_execute("COMMIT").unwrap();
        });
        locked_rx.await.unwrap();
        Some(Self { release, holder })
    }

    pub fn release(self) {
        self.release.send(()).unwrap();
        self.holder.join().unwrap();
    }
}

/// A dashboard WebSocket connection, as awc opens it.
pub type WsConn = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// Opens `/ws` on the gateway.
pub async fn ws_connect(server: &TestServer) -> WsConn {
    let (resp, conn) = awc::Client::new()
        .ws(format!("ws://{}/ws", server.addr))
        .connect()
        .await
        .expect("websocket connects");
    assert_eq!(resp.status(), 101);
    conn
}

/// The next JSON message within `within`, or the close frame as `{"closed": code}`
/// (1006 if the connection ended without one). Pings and other control frames are skipped.
pub async fn ws_next(conn: &mut WsConn, within: Duration) -> Value {
    use awc::ws::Frame;
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, conn.next())
            .await
            .expect("a message within the deadline");
        match frame {
            Some(Ok(Frame::Text(bytes))) => return serde_json::from_slice(&bytes).unwrap(),
            Some(Ok(Frame::Close(reason))) => {
                let code: u16 = reason.map_or(1005, |r| r.code.into());
                return serde_json::json!({"closed": code});
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("protocol error: {e}"),
            None => return serde_json::json!({"closed": 1006}),
        }
    }
}

/// The `data` of each event in `text` (an SSE body, or part of one), parsed as JSON; what
/// does not parse is passed over.
pub fn sse_messages(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect()
}
