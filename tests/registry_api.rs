//! The registry API against a real gateway and store (SQLite, or PostgreSQL when
//! OMNI_TEST_DATABASE_URL is set).

mod common;

use common::{SqliteWriteLock, TestDb, TestServer};
use omni_bridge::registry::ServerInput;
use omni_bridge::store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn http_server(name: &str) -> Value {
    json!({
        "name": name,
        "transport": "streamable_http",
        "url": "http://127.0.0.1:3001/mcp",
        "headers": {"Authorization": "Bearer top-secret-token"},
        "probe_interval": "10s",
    })
}

fn stdio_server(name: &str) -> Value {
    json!({
        "name": name,
        "transport": "stdio",
        "command": "python3",
        "args": ["-m", "mcp_server_time"],
        "env": {"API_KEY": "env-secret-value"},
    })
}

async fn post(server: &TestServer, body: &Value) -> reqwest::Response {
    server
        .http
        .post(server.url("/api/v1/servers"))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn error_code(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.unwrap();
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn create_list_get_update_delete() {
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;

    let resp = post(&server, &http_server("web")).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["location"], "/api/v1/servers/web");
    assert_eq!(resp.headers()["etag"], "\"1\"");
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["name"], "web");
    assert_eq!(created["transport"], "streamable_http");
    assert_eq!(created["probe_interval"], "10s");
    assert_eq!(created["timeout"], "30s");
    assert_eq!(created["source"], "api");

    let list: Value = server.get_json("/api/v1/servers").await;
    assert_eq!(list["servers"].as_array().unwrap().len(), 1);
    assert_eq!(
        declarations(&list)[0],
        declarations(&json!({"servers": [created.clone()]}))[0]
    );

    let got = server
        .http
        .get(server.url("/api/v1/servers/web"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    // The declaration as created; the live fields move on (the URL answers nobody).
    let got = got.json::<Value>().await.unwrap();
    assert_eq!(
        declarations(&json!({"servers": [got]})),
        declarations(&json!({"servers": [created.clone()]}))
    );

    let mut changed = http_server("web");
    changed["url"] = json!("https://mcp.example.test/v2");
    changed["enabled"] = json!(false);
    let resp = server
        .http
        .put(server.url("/api/v1/servers/web"))
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["etag"], "\"2\"");
    let updated: Value = resp.json().await.unwrap();
    assert_eq!(updated["url"], "https://mcp.example.test/v2");
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["created_at"], created["created_at"]);

    let resp = server
        .http
        .delete(server.url("/api/v1/servers/web"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = server
        .http
        .get(server.url("/api/v1/servers/web"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "server-not-found");
    let resp = server
        .http
        .delete(server.url("/api/v1/servers/web"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = server
        .http
        .put(server.url("/api/v1/servers/web"))
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_400_with_the_field() {
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": "Bad_Name", "transport": "sse", "url": "http://h/x"}),
            "name",
        ),
        (
            json!({"name": "a__b", "transport": "sse", "url": "http://h/x"}),
            "name",
        ),
        (
            json!({"name": "x".repeat(65), "transport": "sse", "url": "http://h/x"}),
            "name",
        ),
        (json!({"transport": "sse", "url": "http://h/x"}), "name"),
        (
            json!({"name": "a", "transport": "carrier-pigeon"}),
            "transport",
        ),
        (json!({"name": "a", "transport": "sse"}), "url"),
        (
            json!({"name": "a", "transport": "sse", "url": "ftp://h/x"}),
            "url",
        ),
        (
            json!({"name": "a", "transport": "sse", "url": "not a url"}),
            "url",
        ),
        (
            json!({"name": "a", "transport": "sse", "url": "http://h/", "command": "x"}),
            "command",
        ),
        (
            json!({"name": "a", "transport": "stdio", "command": "x", "url": "http://h/"}),
            "url",
        ),
        (json!({"name": "a", "transport": "stdio"}), "command"),
        (
            json!({"name": "a", "transport": "sse", "url": "http://h/", "timeout": "30"}),
            "timeout",
        ),
        (
            json!({"name": "a", "transport": "sse", "url": "http://h/", "cache": "maybe"}),
            "cache",
        ),
        (
            json!({"name": "a", "transport": "sse", "url": "http://h/", "headers": {"bad header": "v"}}),
            "headers.bad header",
        ),
    ];
    for (body, field) in cases {
        let resp = post(&server, &body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "invalid-field", "{body}");
        assert_eq!(err["error"]["field"], field, "{body}");
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    }

    // Not JSON, an unknown field, a wrong type: the body itself is refused.
    let resp = server
        .http
        .post(server.url("/api/v1/servers"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(resp).await, "invalid-body");
    for body in [
        json!({"name": "a", "transport": "sse", "url": "http://h/", "colour": "red"}),
        json!({"name": "a", "transport": "sse", "url": "http://h/", "enabled": "yes"}),
    ] {
        let resp = post(&server, &body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(resp).await, "invalid-body");
    }

    // A path name that cannot be a server, and a PUT that tries to rename.
    let resp = server
        .http
        .get(server.url("/api/v1/servers/NOPE"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        post(&server, &http_server("web")).await.status(),
        StatusCode::CREATED
    );
    let resp = server
        .http
        .put(server.url("/api/v1/servers/web"))
        .json(&http_server("other"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Nothing bad was stored along the way.
    let list: Value = server.get_json("/api/v1/servers").await;
    let names: Vec<&str> = list["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web"]);
    server.stop().await;
}

#[tokio::test]
async fn probe_timeout_is_set_read_changed_and_checked() {
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;
    let get = |name: &'static str| {
        let req = server
            .http
            .get(server.url(&format!("/api/v1/servers/{name}")));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };

    let mut body = http_server("web");
    body["probe_timeout"] = json!("2s");
    let resp = post(&server, &body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["probe_timeout"], "2s");
    assert_eq!(get("web").await["probe_timeout"], "2s");

    body["probe_timeout"] = json!("750ms");
    let resp = server
        .http
        .put(server.url("/api/v1/servers/web"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["probe_timeout"],
        "750ms"
    );
    assert_eq!(get("web").await["probe_timeout"], "750ms");

    // Left out, it goes back to the default, which the answer shows as null.
    body.as_object_mut().unwrap().remove("probe_timeout");
    let resp = server
        .http
        .put(server.url("/api/v1/servers/web"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(get("web").await["probe_timeout"].is_null());

    for bad in ["0s", "10", "soon"] {
        let mut body = http_server("bad");
        body["probe_timeout"] = json!(bad);
        let resp = post(&server, &body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "invalid-field", "{bad}");
        assert_eq!(err["error"]["field"], "probe_timeout", "{bad}");
        let mut body = http_server("web");
        body["probe_timeout"] = json!(bad);
        let resp = server
            .http
            .put(server.url("/api/v1/servers/web"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["field"], "probe_timeout", "{bad}");
    }
    assert!(get("web").await["probe_timeout"].is_null());
    server.stop().await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let db = TestDb::new();
    let mut settings = db.settings();
    settings.body_limit = 4096;
    let server = TestServer::start(settings).await;
    let mut body = http_server("big");
    body["headers"] = json!({"X-Padding": "p".repeat(8192)});
    let resp = post(&server, &body).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(resp).await, "payload-too-large");
    server.stop().await;
}

#[tokio::test]
async fn duplicate_name_is_409() {
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;
    assert_eq!(
        post(&server, &http_server("web")).await.status(),
        StatusCode::CREATED
    );
    let resp = post(&server, &http_server("web")).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(resp).await, "server-exists");
    server.stop().await;
}

#[tokio::test]
async fn stdio_through_the_api_needs_the_files_permission() {
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;
    let resp = post(&server, &stdio_server("time")).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(resp).await, "stdio-not-allowed");
    // Nor may an update turn an HTTP server into a process.
    assert_eq!(
        post(&server, &http_server("web")).await.status(),
        StatusCode::CREATED
    );
    let resp = server
        .http
        .put(server.url("/api/v1/servers/web"))
        .json(&stdio_server("web"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    server.stop().await;

    let mut settings = db.settings();
    settings.allow_stdio_via_api = true;
    let server = TestServer::start(settings).await;
    let resp = post(&server, &stdio_server("time")).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    server.stop().await;
}

#[tokio::test]
async fn secrets_are_never_returned_and_survive_round_trips() {
    let db = TestDb::new();
    let mut settings = db.settings();
    settings.allow_stdio_via_api = true;
    let server = TestServer::start(settings).await;

    let mut bodies = vec![];
    let resp = post(&server, &http_server("web")).await;
    bodies.push(resp.text().await.unwrap());
    let resp = post(&server, &stdio_server("time")).await;
    bodies.push(resp.text().await.unwrap());
    for path in [
        "/api/v1/servers",
        "/api/v1/servers/web",
        "/api/v1/servers/time",
    ] {
        bodies.push(server.get_text(path).await);
    }

    // Send back what was read: the redacted values keep the stored secrets.
    let read: Value = server.get_json("/api/v1/servers/web").await;
    assert_eq!(read["headers"]["Authorization"], "<redacted>");
    let input = json!({
        "name": "web", "transport": "streamable_http", "url": read["url"],
        "headers": {"Authorization": read["headers"]["Authorization"], "X-Team": "blue"},
    });
    let resp = server
        .http
        .put(server.url("/api/v1/servers/web"))
        .json(&input)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    bodies.push(resp.text().await.unwrap());

    for body in &bodies {
        assert!(!body.contains("top-secret-token"), "{body}");
        assert!(!body.contains("env-secret-value"), "{body}");
        assert!(!body.contains("blue"), "{body}");
    }

    let store = Store::open(&db.url, &Default::default()).unwrap();
    let stored = store
        .get_server(&omni_bridge::registry::ServerName::parse("web").unwrap())
        .await
        .unwrap()
        .unwrap();
    let omni_bridge::registry::Transport::StreamableHttp { headers, .. } = &stored.spec.transport
    else {
        panic!("transport changed: {stored:?}")
    };
    assert_eq!(headers["Authorization"], "Bearer top-secret-token");
    assert_eq!(headers["X-Team"], "blue");

    // A redacted value with nothing stored behind it cannot be kept.
    let input = json!({
        "name": "web", "transport": "streamable_http", "url": read["url"],
        "headers": {"X-Unknown": "<redacted>"},
    });
    let resp = server
        .http
        .put(server.url("/api/v1/servers/web"))
        .json(&input)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    store.close();
    server.stop().await;
}

#[tokio::test]
async fn if_match_refuses_stale_updates() {
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;
    assert_eq!(
        post(&server, &http_server("web")).await.status(),
        StatusCode::CREATED
    );
    let put = |etag: &'static str| {
        server
            .http
            .put(server.url("/api/v1/servers/web"))
            .header("if-match", etag)
            .json(&http_server("web"))
            .send()
    };
    assert_eq!(put("\"1\"").await.unwrap().status(), StatusCode::OK);
    let stale = put("\"1\"").await.unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(error_code(stale).await, "revision-mismatch");
    assert_eq!(put("\"2\"").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        put("garbage").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    server.stop().await;
}

#[tokio::test]
async fn the_registry_survives_a_restart() {
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;
    assert_eq!(
        post(&server, &http_server("web")).await.status(),
        StatusCode::CREATED
    );
    let before: Value = server.get_json("/api/v1/servers").await;
    server.stop().await;

    // A second start on the same database: migrations have nothing to do, data is there.
    assert_eq!(omni_bridge::store::migrate::run(&db.url).await.unwrap(), 0);
    let server = TestServer::start(db.settings()).await;
    let after: Value = server.get_json("/api/v1/servers").await;
    // The declarations are the same; the live state (status, last error) may differ.
    assert_eq!(declarations(&before), declarations(&after));
    server.stop().await;
}

const LIVE_FIELDS: &[&str] = &[
    "instance",
    "peers",
    "status",
    "circuit",
    "tool_count",
    "last_probe_at",
    "last_probe_ok",
    "latency_ms",
    "restart_count",
    "last_error",
    "pid",
    "connected_since",
    "server_info",
    "next_restart_at",
];

fn declarations(list: &Value) -> Vec<Value> {
    list["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut s = s.clone();
            for field in LIVE_FIELDS {
                s.as_object_mut().unwrap().remove(*field);
            }
            s
        })
        .collect()
}

#[tokio::test]
async fn migrations_apply_once_to_an_empty_database() {
    let db = TestDb::new();
    let first = omni_bridge::store::migrate::run(&db.url).await.unwrap();
    assert!(first >= 1, "an empty database gets every migration");
    assert_eq!(omni_bridge::store::migrate::run(&db.url).await.unwrap(), 0);
}

#[tokio::test]
async fn config_file_servers_are_loaded_and_owned_by_the_file() {
    let db = TestDb::new();
    let spec = |name: &str| {
        ServerInput {
            name: Some(name.into()),
            transport: Some("sse".into()),
            url: Some("http://127.0.0.1:9/sse".into()),
            ..Default::default()
        }
        .validate()
        .unwrap()
    };
    let mut settings = db.settings();
    settings.servers = vec![spec("from-file"), spec("also-file")];
    let server = TestServer::start(settings).await;
    let got: Value = server.get_json("/api/v1/servers/from-file").await;
    assert_eq!(got["source"], "config");
    let resp = server
        .http
        .put(server.url("/api/v1/servers/from-file"))
        .json(&http_server("from-file"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(resp).await, "managed-by-config");
    let resp = server
        .http
        .delete(server.url("/api/v1/servers/from-file"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(
        post(&server, &http_server("by-api")).await.status(),
        StatusCode::CREATED
    );
    server.stop().await;

    // The file drops one server: it leaves the registry; the API's entry stays.
    let mut settings = db.settings();
    settings.servers = vec![spec("from-file")];
    let server = TestServer::start(settings).await;
    let list: Value = server.get_json("/api/v1/servers").await;
    let names: Vec<&str> = list["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["by-api", "from-file"]);
    server.stop().await;
}

#[tokio::test]
async fn a_config_file_probe_timeout_is_stored_and_follows_the_file() {
    let db = TestDb::new();
    let spec = |probe_timeout: Option<&str>| {
        ServerInput {
            name: Some("from-file".into()),
            transport: Some("sse".into()),
            url: Some("http://127.0.0.1:9/sse".into()),
            probe_timeout: probe_timeout.map(str::to_owned),
            ..Default::default()
        }
        .validate()
        .unwrap()
    };
    // The second start overwrites the first's row, the third clears the value.
    for probe_timeout in [Some("3s"), Some("4s"), None] {
        let mut settings = db.settings();
        settings.servers = vec![spec(probe_timeout)];
        let server = TestServer::start(settings).await;
        let got: Value = server.get_json("/api/v1/servers/from-file").await;
        assert_eq!(got["probe_timeout"], json!(probe_timeout));
        server.stop().await;
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;
    let resp = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = server.http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["checks"]["store"], "ok");
    assert_eq!(
        body["checks"]["backend"],
        if db.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        }
    );
    let resp = server
        .http
        .get(server.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "not-found");
    server.stop().await;
}

/// Three instances started together on one empty PostgreSQL database all come up; the
/// advisory lock makes the migrations run once. (SQLite is one process's file.)
#[tokio::test]
async fn three_instances_start_together_on_an_empty_postgres_database() {
    let db = TestDb::new();
    if !db.is_postgres() {
        eprintln!("skipped: needs OMNI_TEST_DATABASE_URL (runs in .ci/run)");
        return;
    }
    let (a, b, c) = futures_util::join!(
        TestServer::start(db.settings()),
        TestServer::start(db.settings()),
        TestServer::start(db.settings()),
    );
    for server in [&a, &b, &c] {
        let resp = server.http.get(server.url("/readyz")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_eq!(
        post(&a, &http_server("shared")).await.status(),
        StatusCode::CREATED
    );
    let resp = c
        .http
        .get(c.url("/api/v1/servers/shared"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for server in [a, b, c] {
        server.stop().await;
    }
}

/// Runs `sql` on the test's own database from a connection of the test's, not the
/// gateway's.
async fn run_on_store(db: &TestDb, sql: &str) {
    use omni_bridge::store::DatabaseUrl;
    match &db.url {
        DatabaseUrl::Postgres(url) => {
            use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
            let mut conn = AsyncPgConnection::establish(url).await.unwrap();
            conn.batch_execute(sql).await.unwrap();
        }
        DatabaseUrl::Sqlite(path) => {
            use diesel::connection::SimpleConnection;
            use diesel::{Connection, SqliteConnection};
            let (path, sql) = (path.clone(), format!("PRAGMA busy_timeout = 20000; {sql}"));
            tokio::task::spawn_blocking(move || {
                let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
                conn.batch_execute(&sql).unwrap();
            })
            .await
            .unwrap();
        }
    }
}

async fn readyz(server: &TestServer) -> (StatusCode, Value) {
    let resp = server.http.get(server.url("/readyz")).send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

/// `/readyz` answers 503 and names the failing check when the store cannot answer a
/// registry query, and 200 again once it can. The registry table is renamed away (a
/// bare `SELECT 1` would still pass); on PostgreSQL the database is then dropped outright.
/// SQLite has no honest whole-store outage for a test: a deleted or replaced file stays
/// readable through the descriptors the pool already holds, and a lock does not stop
/// WAL readers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_naming_the_store_when_it_cannot_answer() {
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;
    assert_eq!(readyz(&server).await.0, StatusCode::OK);

    run_on_store(&db, "ALTER TABLE servers RENAME TO servers_away").await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(body["checks"]["store"], "unavailable", "{body}");

    run_on_store(&db, "ALTER TABLE servers_away RENAME TO servers").await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["store"], "ok", "{body}");

    if let omni_bridge::store::DatabaseUrl::Postgres(url) = &db.url {
        let mut admin = url::Url::parse(url).unwrap();
        let name = admin.path().trim_start_matches('/').to_owned();
        admin.set_path("/postgres");
        {
            use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
            let mut conn = AsyncPgConnection::establish(admin.as_str()).await.unwrap();
            conn.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .await
                .unwrap();
        }
        let (status, body) = readyz(&server).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["checks"]["store"], "unavailable", "{body}");
    }
    server.stop().await;
}

/// A write that finds SQLite locked by another connection waits out the busy timeout,
/// then answers 503 `store-busy` with Retry-After and nothing of the SQL; once the lock
/// is gone the same request succeeds. (PostgreSQL has no such lock.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_store_answers_503_store_busy() {
    let db = TestDb::new();
    if !matches!(db.url, omni_bridge::store::DatabaseUrl::Sqlite(_)) {
        eprintln!("skipped: the lock is SQLite's");
        return;
    }
    let server = TestServer::start(db.settings()).await;
    let lock = SqliteWriteLock::hold(&db)
        .await
        .expect("a SQLite test database");

    let resp = post(&server, &http_server("late")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "store-busy", "{text}");
    let lower = text.to_lowercase();
    for leak in ["insert", "select", "servers", "sqlite", "locked"] {
        assert!(!lower.contains(leak), "{leak:?} in {text}");
    }

    lock.release();
    let resp = post(&server, &http_server("late")).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    server.stop().await;
}
