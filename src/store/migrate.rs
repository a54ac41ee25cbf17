//! Schema migrations, embedded in the binary and applied before the HTTP server starts.

use diesel::Connection;
use diesel::RunQueryDsl;
use diesel::sqlite::SqliteConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{DatabaseUrl, SQLITE_PRAGMAS, StoreError};

const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Key of the PostgreSQL advisory lock held while migrating, so that instances starting
/// together against one database migrate it exactly once. ("omni-br" in ASCII.)
const MIGRATION_LOCK: i64 = 0x006f_6d6e_692d_6272;

/// Applies every pending migration and returns how many ran. Idempotent.
/// Makes the store whole again: what a batch writer runs when a table is missing.
pub type Repair = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send>>
        + Send
        + Sync,
>;

/// The migrations as a batch writer's repair: for a database dropped and made again
/// under a running gateway.
pub fn repair(url: DatabaseUrl) -> Repair {
    std::sync::Arc::new(move || {
        let url = url.clone();
        Box::pin(async move { run(&url).await.map(|_| ()) })
    })
}

pub async fn run(url: &DatabaseUrl) -> Result<usize, StoreError> {
    let url = url.clone();
    // Migrations are synchronous diesel; diesel-async's own harness panics on actix's
    // current-thread runtime, so they run on a blocking thread.
    tokio::task::spawn_blocking(move || match url {
        DatabaseUrl::Sqlite(path) => migrate_sqlite(&path.to_string_lossy()),
        DatabaseUrl::Postgres(url) => migrate_postgres(&url),
    })
    .await
    .map_err(|e| StoreError::Migration(e.to_string()))?
}

fn migrate_sqlite(path: &str) -> Result<usize, StoreError> {
    let mut conn =
        SqliteConnection::establish(path).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    diesel::connection::SimpleConnection::batch_execute(&mut conn, SQLITE_PRAGMAS)?;
    let applied = conn
        .run_pending_migrations(SQLITE)
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    Ok(applied.len())
}

fn migrate_postgres(url: &str) -> Result<usize, StoreError> {
    let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(url)
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).execute(&mut conn)?;
    let result = conn
        .run_pending_migrations(POSTGRES)
        .map(|applied| applied.len())
        .map_err(|e| StoreError::Migration(e.to_string()));
    // The lock also ends with the session; unlocking explicitly lets a waiting instance go on
    // at once.
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(&mut conn)?;
    result
}
