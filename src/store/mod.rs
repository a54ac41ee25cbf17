//! The SQL store: one enum over a PostgreSQL pool and a SQLite pool, with query code written
//! once and expanded for each backend by [`with_conn!`].

pub mod files;
pub mod health;
pub mod invocations;
pub mod keys;
pub mod migrate;
pub mod schema;
pub mod servers;
pub mod sessions;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;

pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// Where the data lives, as parsed from `--database-url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// `postgres://…` or `postgresql://…` for PostgreSQL; `sqlite://PATH` or `sqlite:PATH`
    /// for a SQLite file.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres(text.to_owned()));
        }
        let path = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                format!(
                    "'{}' is neither postgres://… nor sqlite://PATH",
                    redact_url(text)
                )
            })?;
        if path.is_empty() || path == ":memory:" || path.starts_with("file::memory") {
            return Err(
                "SQLite needs a file path: an in-memory database would be lost at exit".into(),
            );
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }

    pub fn default_in(data_dir: &Path) -> Self {
        Self::Sqlite(data_dir.join("omni-bridge.db"))
    }

    /// The URL with any password masked, for logs.
    pub fn display(&self) -> String {
        match self {
            Self::Postgres(url) => redact_url(url),
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
        }
    }
}

fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => text.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("unique constraint violated")]
    Conflict,
    #[error("revision mismatch: now at {current}")]
    RevisionMismatch { current: i64 },
    /// A locked SQLite database: a transient condition, answered with 503.
    #[error("database is busy")]
    Busy,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    #[error("query failed: {0}")]
    Query(DieselError),
    #[error("migration failed: {0}")]
    Migration(String),
}

impl From<DieselError> for StoreError {
    fn from(err: DieselError) -> Self {
        match &err {
            DieselError::NotFound => Self::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Self::Conflict,
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                Self::Unavailable(info.message().to_owned())
            }
            DieselError::DatabaseError(_, info)
                if info.message().contains("database is locked")
                    || info.message().contains("database is busy") =>
            {
                Self::Busy
            }
            _ => Self::Query(err),
        }
    }
}

impl StoreError {
    /// Whether a query failed because a table does not exist (the database was dropped and
    /// created again under the gateway): the migrations can mend it.
    pub fn is_missing_table(&self) -> bool {
        let Self::Query(DieselError::DatabaseError(_, info)) = self else {
            return false;
        };
        let message = info.message();
        message.contains("no such table")
            || (message.starts_with("relation ") && message.ends_with("does not exist"))
    }

    pub fn from_pool(err: impl std::fmt::Display) -> Self {
        Self::Unavailable(err.to_string())
    }
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend `$store`
/// holds. The body is expanded once per backend, so it must compile for both.
#[macro_export]
macro_rules! with_conn {
    ($store:expr, |$conn:ident| $body:expr) => {
        match $store {
            $crate::store::Store::Postgres(pool) => {
                let mut guard = pool
                    .get()
                    .await
                    .map_err($crate::store::StoreError::from_pool)?;
                let $conn: &mut diesel_async::AsyncPgConnection = &mut guard;
                $body
            }
            $crate::store::Store::Sqlite(pool) => {
                let mut guard = pool
                    .get()
                    .await
                    .map_err($crate::store::StoreError::from_pool)?;
                let $conn: &mut $crate::store::SqliteConn = &mut guard;
                $body
            }
        }
    };
}

/// Inserts `$rows` (a `Vec` of an `Insertable` struct) into `$table` in one statement on
/// either backend. diesel-async cannot compile multi-row inserts for SQLite
/// (diesel_async#277), so there synchronous diesel runs on the wrapper's blocking thread.
#[macro_export]
macro_rules! insert_batch {
    ($store:expr, $table:expr, $rows:expr) => {{
        let rows = $rows;
        if !rows.is_empty() {
            match $store {
                $crate::store::Store::Postgres(pool) => {
                    let mut conn = pool
                        .get()
                        .await
                        .map_err($crate::store::StoreError::from_pool)?;
                    diesel_async::RunQueryDsl::execute(
                        diesel::insert_into($table).values(&rows),
                        &mut *conn,
                    )
                    .await?;
                }
                $crate::store::Store::Sqlite(pool) => {
                    let mut conn = pool
                        .get()
                        .await
                        .map_err($crate::store::StoreError::from_pool)?;
                    conn.spawn_blocking(move |c| {
                        diesel::RunQueryDsl::execute(diesel::insert_into($table).values(&rows), c)
                    })
                    .await?;
                }
            }
        }
        Ok::<(), $crate::store::StoreError>(())
    }};
}

/// The connection pool, over one backend or the other. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

/// Pool and connection settings an operator may tune.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub max_connections: usize,
    pub connect_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Pooled connections are opened on this process-wide runtime. A connection belongs to
/// the runtime that opened it (the PostgreSQL driver task lives there); opened on an actix
/// worker's runtime it would die with that worker, or hang while the worker is blocked.
fn connection_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("omni-db")
            .enable_all()
            .build()
            .expect("the database runtime starts")
    })
}

pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

impl Store {
    /// Opens the pool. Does not touch the database until the first query; call
    /// [`migrate::run`] first.
    pub fn open(url: &DatabaseUrl, options: &StoreOptions) -> Result<Self, StoreError> {
        let timeouts = deadpool::managed::Timeouts {
            wait: Some(options.connect_timeout),
            create: Some(options.connect_timeout),
            recycle: Some(options.connect_timeout),
        };
        match url {
            DatabaseUrl::Postgres(url) => {
                let mut config = ManagerConfig::default();
                config.custom_setup = Box::new(|url| {
                    let url = url.to_owned();
                    connection_runtime()
                        .spawn(async move { AsyncPgConnection::establish(&url).await })
                        .map(|joined| {
                            joined.unwrap_or_else(|e| {
                                Err(diesel::ConnectionError::BadConnection(e.to_string()))
                            })
                        })
                        .boxed()
                });
                let manager = AsyncDieselConnectionManager::new_with_config(url, config);
                let pool = Pool::builder(manager)
                    .max_size(options.max_connections)
                    .timeouts(timeouts)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Ok(Self::Postgres(pool))
            }
            DatabaseUrl::Sqlite(path) => {
                let mut config = ManagerConfig::default();
                config.custom_setup = Box::new(|url| {
                    let url = url.to_owned();
                    connection_runtime()
                        .spawn(async move {
                            let mut conn = SqliteConn::establish(&url).await?;
                            conn.batch_execute(SQLITE_PRAGMAS)
                                .await
                                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                            Ok(conn)
                        })
                        .map(|joined| {
                            joined.unwrap_or_else(|e| {
                                Err(diesel::ConnectionError::BadConnection(e.to_string()))
                            })
                        })
                        .boxed()
                });
                let manager =
                    AsyncDieselConnectionManager::new_with_config(path.to_string_lossy(), config);
                let pool = Pool::builder(manager)
                    .max_size(options.max_connections)
                    .timeouts(timeouts)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Ok(Self::Sqlite(pool))
            }
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Answers whether the database takes a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            conn.batch_execute("SELECT 1").await?;
            Ok(())
        })
    }

    /// Closes the pool: idle connections are dropped, new checkouts fail.
    pub fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close(),
            Self::Sqlite(pool) => pool.close(),
        }
    }
}

/// Now, in UTC, truncated to microseconds so both backends hand back the value stored.
pub fn now() -> chrono::NaiveDateTime {
    use chrono::{SubsecRound, Utc};
    Utc::now().naive_utc().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_parse() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/x.db").unwrap(),
            DatabaseUrl::Sqlite("data/x.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:/tmp/x.db").unwrap(),
            DatabaseUrl::Sqlite("/tmp/x.db".into())
        );
        assert!(matches!(
            DatabaseUrl::parse("postgresql://u@127.0.0.1/db").unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        assert!(DatabaseUrl::parse("sqlite://:memory:").is_err());
        assert!(DatabaseUrl::parse("mysql://x").is_err());
    }

    #[test]
    fn passwords_never_reach_logs() {
        let url = DatabaseUrl::parse("postgres://u:hunter2@127.0.0.1/db").unwrap();
        assert!(!url.display().contains("hunter2"));
        let err = DatabaseUrl::parse("mysql://u:hunter2@h/db").unwrap_err();
        assert!(!err.contains("hunter2"));
    }
}
