//! The audit writer against a real store: a row the store refuses never blocks the rows
//! behind it, and a database made again under the writer gets its tables back. On
//! PostgreSQL (the CI's second pass) the refused row is the real case: a NUL byte.

mod common;

use common::{TestDb, poll_until};
use omni_bridge::audit::AuditLog;
use omni_bridge::store::invocations::{InvocationFilter, NewInvocation};
use omni_bridge::store::{Store, StoreOptions, migrate};
use prometheus_client::metrics::counter::Counter;

fn row(tool: &str) -> NewInvocation {
    NewInvocation {
        server: "demo".into(),
        tool: tool.into(),
        caller: Some("tester".into()),
        arguments_hash: "00".repeat(32),
        cached: false,
        outcome: "ok".into(),
        status: 200,
        duration_us: 1,
        created_at: omni_bridge::store::now(),
    }
}

async fn tools(store: &Store) -> Vec<String> {
    let filter = InvocationFilter {
        server: None,
        tool: None,
        before: None,
        limit: 100,
    };
    let mut tools: Vec<String> = store
        .list_invocations(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.tool)
        .collect();
    tools.sort();
    tools
}

async fn open(db: &TestDb) -> Store {
    migrate::run(&db.url).await.unwrap();
    Store::open(&db.url, &StoreOptions::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_store_refuses_does_not_block_the_others() {
    let db = TestDb::new();
    let store = open(&db).await;
    let dropped = Counter::default();
    let audit = AuditLog::start(store.clone(), db.url.clone(), dropped.clone());
    for tool in ["first", "poison\0ed", "second"] {
        audit.record(row(tool));
    }
    audit.close().await;
    let written = tools(&store).await;
    if db.is_postgres() {
        // PostgreSQL refuses the NUL: the row is written with it replaced.
        assert_eq!(written, ["first", "poison\u{fffd}ed", "second"]);
    } else {
        assert_eq!(written.len(), 3, "{written:?}");
    }
    assert_eq!(dropped.get(), 0);
    // After close, a row is counted, not silently lost.
    audit.record(row("late"));
    assert_eq!(dropped.get(), 1);
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_recovers_when_the_database_is_made_again() {
    let db = TestDb::new();
    if !db.is_postgres() {
        eprintln!("skipped: needs OMNI_TEST_DATABASE_URL (PostgreSQL)");
        return;
    }
    let store = open(&db).await;
    let audit = AuditLog::start(store.clone(), db.url.clone(), Counter::default());
    audit.record(row("before"));
    poll_until(async || match tools(&store).await.len() {
        1 => Ok(()),
        n => Err(format!("{n} rows")),
    })
    .await;
    assert!(db.recreate());
    audit.record(row("after"));
    // The writer finds the table missing, runs the migrations and writes the row.
    poll_until(async || {
        match store
            .list_invocations(&InvocationFilter {
                server: None,
                tool: None,
                before: None,
                limit: 10,
            })
            .await
        {
            Ok(rows) if rows.iter().any(|r| r.tool == "after") => Ok(()),
            other => Err(format!("{:?}", other.map(|r| r.len()))),
        }
    })
    .await;
    audit.close().await;
    store.close();
}
