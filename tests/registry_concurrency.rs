//! 100 concurrent creates, updates and deletes against one gateway leave the registry
//! consistent: no duplicate name, no lost update, no 500.

mod common;

use common::{TestDb, TestServer};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

const N: usize = 100;

fn body(name: &str, n: usize) -> Value {
    json!({
        "name": name,
        "transport": "streamable_http",
        "url": format!("http://127.0.0.1:3001/mcp/{n}"),
    })
}

async fn names(server: &TestServer) -> Vec<String> {
    let list: Value = server.get_json("/api/v1/servers").await;
    list["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn concurrent_creates_updates_and_deletes_stay_consistent() {
    let db = TestDb::new();
    let server = TestServer::start(db.settings()).await;
    let url = server.url("/api/v1/servers");

    // The same name, 100 times at once: exactly one wins.
    let same =
        join_all((0..N).map(|n| server.http.post(&url).json(&body("contested", n)).send())).await;
    let statuses: Vec<StatusCode> = same.into_iter().map(|r| r.unwrap().status()).collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        N - 1,
        "{statuses:?}"
    );

    // 100 distinct names at once: all stored.
    let created = join_all((0..N).map(|n| {
        server
            .http
            .post(&url)
            .json(&body(&format!("s{n}"), n))
            .send()
    }))
    .await;
    for r in created {
        assert_eq!(r.unwrap().status(), StatusCode::CREATED);
    }
    assert_eq!(names(&server).await.len(), N + 1);

    // 100 updates of one server at once: every one lands (revision counts them all).
    let updates = join_all((0..N).map(|n| {
        server
            .http
            .put(server.url("/api/v1/servers/contested"))
            .json(&body("contested", 1000 + n))
            .send()
    }))
    .await;
    for r in updates {
        assert_eq!(r.unwrap().status(), StatusCode::OK);
    }
    let got: Value = server.get_json("/api/v1/servers/contested").await;
    assert_eq!(got["revision"], json!(1 + N));
    let last: usize = got["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1000..1000 + N).contains(&last));

    // 100 conditional updates from the same revision: exactly one wins, none is lost
    // silently.
    let rev = got["revision"].as_i64().unwrap();
    let conditional = join_all((0..N).map(|n| {
        server
            .http
            .put(server.url("/api/v1/servers/contested"))
            .header("if-match", format!("\"{rev}\""))
            .json(&body("contested", 2000 + n))
            .send()
    }))
    .await;
    let statuses: Vec<StatusCode> = conditional
        .into_iter()
        .map(|r| r.unwrap().status())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
            .count(),
        N - 1
    );

    // Deletes of every distinct server mixed with updates of half of them: each delete
    // succeeds once; an update either lands before its delete or finds nothing.
    let deletes = (0..N).map(|n| {
        server
            .http
            .delete(server.url(&format!("/api/v1/servers/s{n}")))
            .send()
    });
    let updates = (0..N / 2).map(|n| {
        server
            .http
            .put(server.url(&format!("/api/v1/servers/s{n}")))
            .json(&body(&format!("s{n}"), 3000 + n))
            .send()
    });
    let (deleted, updated) = futures_util::join!(join_all(deletes), join_all(updates));
    for r in deleted {
        assert_eq!(r.unwrap().status(), StatusCode::NO_CONTENT);
    }
    for r in updated {
        let status = r.unwrap().status();
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{status}"
        );
    }
    assert_eq!(names(&server).await, ["contested"]);

    // And the same name deleted 100 times at once: once 204, otherwise 404.
    let again = join_all((0..N).map(|_| {
        server
            .http
            .delete(server.url("/api/v1/servers/contested"))
            .send()
    }))
    .await;
    let statuses: Vec<StatusCode> = again.into_iter().map(|r| r.unwrap().status()).collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::NO_CONTENT)
            .count(),
        1
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::NOT_FOUND)
            .count(),
        N - 1
    );
    assert!(names(&server).await.is_empty());
    server.stop().await;
}
