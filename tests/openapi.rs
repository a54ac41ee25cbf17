//! The OpenAPI document against the running gateway: it is served to viewers, and real
//! answers of every documented operation (successes and errors) are what the document
//! says they are. CI's schemathesis run fuzzes the same; this holds the document to the
//! code on every `cargo test`.

mod common;

use common::{TestDb, TestServer, cached};
use omni_bridge::http::openapi_json as document_json;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn document() -> Value {
    serde_json::from_str(document_json()).unwrap()
}

/// The schema the document gives the JSON answer of `template` `method` with `status`.
fn answer_schema(doc: &Value, method: &Method, template: &str, status: StatusCode) -> Value {
    let op = &doc["paths"][template][method.as_str().to_lowercase()];
    assert!(op.is_object(), "{method} {template} is not in the document");
    let response = &op["responses"][status.as_str()];
    assert!(
        response.is_object(),
        "{method} {template} answered {status}, which the document does not list"
    );
    response["content"]["application/json"]["schema"].clone()
}

/// Checks `body` against `schema`, whose references point into the document.
fn conforms(doc: &Value, schema: Value, body: &Value) -> Result<(), String> {
    let root = json!({"components": doc["components"], "allOf": [schema]});
    let validator = jsonschema::draft202012::new(&root).map_err(|e| e.to_string())?;
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[tokio::test]
async fn the_document_is_served_to_viewers_and_no_one_else() {
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;
    let (_admin, viewer) = server
        .admin_and_key(json!({"name": "reader", "role": "viewer"}))
        .await;
    let url = server.url("/api/v1/openapi.json");
    let anonymous = server.http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let served = server
        .http
        .get(&url)
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.json::<Value>().await.unwrap(), document());
    server.stop().await;
}

/// Every documented operation, reached for real (a stdio test server behind the
/// gateway), answers with a status the document lists and a body its schema accepts.
#[tokio::test]
async fn real_answers_are_what_the_document_says() {
    let doc = document();
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    server.register_healthy(&cached("demo")).await;

    let new_server = json!({"name": "other", "transport": "streamable_http",
                            "url": "http://127.0.0.1:9/mcp", "enabled": false});
    let call = json!({"arguments": {"text": "hi"}});
    // (method, template, path, body, expected status)
    let cases: Vec<(Method, &str, String, Option<Value>, StatusCode)> = vec![
        (
            Method::GET,
            "/healthz",
            "/healthz".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/readyz",
            "/readyz".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/servers",
            "/api/v1/servers".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            "/api/v1/servers".into(),
            Some(new_server.clone()),
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            "/api/v1/servers".into(),
            Some(new_server.clone()),
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            "/api/v1/servers".into(),
            Some(json!({"name": "Bad Name"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/api/v1/servers/{name}",
            "/api/v1/servers/other".into(),
            Some(new_server),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/servers/{name}",
            "/api/v1/servers/demo".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/servers/{name}",
            "/api/v1/servers/ghost".into(),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/v1/tools",
            "/api/v1/tools".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/servers/{name}/tools/{tool}/call",
            "/api/v1/servers/demo/tools/echo/call".into(),
            Some(call.clone()),
            StatusCode::OK,
        ),
        // Again: a cache hit, with `cached_at`.
        (
            Method::POST,
            "/api/v1/servers/{name}/tools/{tool}/call",
            "/api/v1/servers/demo/tools/echo/call".into(),
            Some(call),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/servers/{name}/tools/{tool}/call",
            "/api/v1/servers/demo/tools/echo/call".into(),
            Some(json!({"arguments": {"text": 1}})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/servers/{name}/tools/{tool}/call",
            "/api/v1/servers/demo/tools/nope/call".into(),
            Some(json!({})),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/v1/cache/stats",
            "/api/v1/cache/stats".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            "/api/v1/cache/servers/{name}/tools/{tool}",
            "/api/v1/cache/servers/demo/tools/echo".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            "/api/v1/cache/servers/{name}",
            "/api/v1/cache/servers/demo".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            "/api/v1/cache",
            "/api/v1/cache".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/invocations",
            "/api/v1/invocations?limit=1".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/invocations",
            "/api/v1/invocations?limit=0".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/v1/servers/{name}/events",
            "/api/v1/servers/demo/events?limit=2".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/mcp",
            "/api/v1/mcp".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/servers/{name}/reload",
            "/api/v1/servers/other/reload".into(),
            None,
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            "/api/v1/servers/{name}/reset",
            "/api/v1/servers/demo/reset".into(),
            None,
            StatusCode::ACCEPTED,
        ),
        (
            Method::DELETE,
            "/api/v1/servers/{name}",
            "/api/v1/servers/other".into(),
            None,
            StatusCode::NO_CONTENT,
        ),
        (
            Method::POST,
            "/api/v1/keys",
            "/api/v1/keys".into(),
            Some(json!({"name": "ops", "role": "admin"})),
            StatusCode::CREATED,
        ),
        (
            Method::GET,
            "/api/v1/keys",
            "/api/v1/keys".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            "/api/v1/keys/{name}",
            "/api/v1/keys/nobody".into(),
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    // The check itself bites, through the document's references too.
    let list = answer_schema(&doc, &Method::GET, "/api/v1/servers", StatusCode::OK);
    assert!(conforms(&doc, list.clone(), &json!({"servers": []})).is_ok());
    assert!(conforms(&doc, list.clone(), &json!({"servers": [{"name": 5}]})).is_err());
    assert!(conforms(&doc, list, &json!({"servers": [{}]})).is_err());

    let mut key: Option<String> = None;
    for (method, template, path, body, expected) in cases {
        let mut request = server.http.request(method.clone(), server.url(&path));
        if let Some(body) = &body {
            request = request.json(body);
        }
        // The first key made below closes the gateway: later requests carry it.
        if let Some(key) = &key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, expected, "{method} {path}: {text}");
        if status == StatusCode::NO_CONTENT {
            continue;
        }
        let answer: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        let schema = answer_schema(&doc, &method, template, status);
        if let Err(errors) = conforms(&doc, schema, &answer) {
            panic!("{method} {path} {status}: {errors}\n{answer:#}");
        }
        if template == "/api/v1/keys" && status == StatusCode::CREATED {
            key = answer["secret"].as_str().map(str::to_owned);
        }
    }
    server.stop().await;
}
