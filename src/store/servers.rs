//! Queries on the `servers` table: the registry of upstreams.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;

use super::schema::servers;
use super::{Store, StoreError, now};
use crate::registry::{CachePolicy, ServerName, ServerSpec, Source, Transport, TransportKind};
use crate::with_conn;

/// A registry entry as stored: the spec plus bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredServer {
    pub spec: ServerSpec,
    pub source: Source,
    /// Grows by one with every update; clients send it back in `If-Match` to refuse
    /// overwriting a change they have not seen.
    pub revision: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = servers)]
struct ServerRow {
    name: String,
    transport: String,
    command: Option<String>,
    args: String,
    env: String,
    cwd: Option<String>,
    url: Option<String>,
    headers: String,
    enabled: bool,
    probe_interval_ms: i64,
    probe_timeout_ms: Option<i64>,
    timeout_ms: i64,
    cache_policy: String,
    cache_ttl_ms: Option<i64>,
    tool_overrides: String,
    tool_prefix: Option<String>,
    source: String,
    revision: i64,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    invalidate_on_write: bool,
}

/// The columns a create or update writes.
#[derive(Insertable, AsChangeset)]
#[diesel(table_name = servers, treat_none_as_null = true)]
struct ServerFields {
    name: String,
    transport: String,
    command: Option<String>,
    args: String,
    env: String,
    cwd: Option<String>,
    url: Option<String>,
    headers: String,
    enabled: bool,
    probe_interval_ms: i64,
    probe_timeout_ms: Option<i64>,
    timeout_ms: i64,
    cache_policy: String,
    cache_ttl_ms: Option<i64>,
    tool_overrides: String,
    tool_prefix: Option<String>,
    source: String,
    updated_at: NaiveDateTime,
    invalidate_on_write: bool,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("maps and lists of strings serialize")
}

impl ServerFields {
    fn from_spec(spec: &ServerSpec, source: Source) -> Self {
        let empty: BTreeMap<String, String> = BTreeMap::new();
        let (command, args, env, cwd, url, headers) = match &spec.transport {
            Transport::Stdio {
                command,
                args,
                env,
                cwd,
            } => (
                Some(command.clone()),
                to_json(args),
                to_json(env),
                cwd.clone(),
                None,
                to_json(&empty),
            ),
            Transport::StreamableHttp { url, headers } | Transport::Sse { url, headers } => (
                None,
                "[]".to_owned(),
                to_json(&empty),
                None,
                Some(url.to_string()),
                to_json(headers),
            ),
        };
        Self {
            name: spec.name.as_str().to_owned(),
            transport: spec.transport.kind().as_str().to_owned(),
            command,
            args,
            env,
            cwd,
            url,
            headers,
            enabled: spec.enabled,
            probe_interval_ms: millis(spec.probe_interval),
            probe_timeout_ms: spec.probe_timeout.map(millis),
            timeout_ms: millis(spec.timeout),
            cache_policy: spec.cache.as_str().to_owned(),
            cache_ttl_ms: spec.cache_ttl.map(millis),
            tool_overrides: to_json(&spec.tools),
            tool_prefix: spec.tool_prefix.clone(),
            invalidate_on_write: spec.invalidate_on_write,
            source: source.as_str().to_owned(),
            updated_at: now(),
        }
    }
}

impl TryFrom<ServerRow> for StoredServer {
    type Error = StoreError;

    fn try_from(row: ServerRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("server '{}': {what}: {e}", row.name))
        };
        let name = ServerName::parse(&row.name).map_err(|e| corrupt("name", &e))?;
        let kind = TransportKind::parse(&row.transport).map_err(|e| corrupt("transport", &e))?;
        let map = |text: &str, what: &str| -> Result<BTreeMap<String, String>, StoreError> {
            serde_json::from_str(text).map_err(|e| corrupt(what, &e))
        };
        let transport = match kind {
            TransportKind::Stdio => Transport::Stdio {
                command: row
                    .command
                    .clone()
                    .ok_or_else(|| corrupt("command", &"missing"))?,
                args: serde_json::from_str(&row.args).map_err(|e| corrupt("args", &e))?,
                env: map(&row.env, "env")?,
                cwd: row.cwd.clone(),
            },
            TransportKind::StreamableHttp | TransportKind::Sse => {
                let url = row
                    .url
                    .as_deref()
                    .ok_or_else(|| corrupt("url", &"missing"))?;
                let url = url::Url::parse(url).map_err(|e| corrupt("url", &e))?;
                let headers = map(&row.headers, "headers")?;
                if kind == TransportKind::Sse {
                    Transport::Sse { url, headers }
                } else {
                    Transport::StreamableHttp { url, headers }
                }
            }
        };
        let duration = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        Ok(StoredServer {
            spec: ServerSpec {
                name,
                transport,
                enabled: row.enabled,
                probe_interval: duration(row.probe_interval_ms),
                probe_timeout: row.probe_timeout_ms.map(duration),
                timeout: duration(row.timeout_ms),
                cache: CachePolicy::parse(&row.cache_policy).map_err(|e| corrupt("cache", &e))?,
                cache_ttl: row.cache_ttl_ms.map(duration),
                tools: serde_json::from_str(&row.tool_overrides)
                    .map_err(|e| corrupt("tool_overrides", &e))?,
                tool_prefix: row.tool_prefix.clone(),
                invalidate_on_write: row.invalidate_on_write,
            },
            source: Source::parse(&row.source).map_err(|e| corrupt("source", &e))?,
            revision: row.revision,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl Store {
    /// Adds a server. A taken name is [`StoreError::Conflict`].
    pub async fn insert_server(
        &self,
        spec: &ServerSpec,
        source: Source,
    ) -> Result<StoredServer, StoreError> {
        let fields = ServerFields::from_spec(spec, source);
        let created_at = fields.updated_at;
        let row: ServerRow = with_conn!(self, |conn| {
            diesel::insert_into(servers::table)
                .values((&fields, servers::created_at.eq(created_at)))
                .returning(ServerRow::as_returning())
                .get_result(conn)
                .await?
        });
        row.try_into()
    }

    pub async fn get_server(&self, name: &ServerName) -> Result<Option<StoredServer>, StoreError> {
        let row: Option<ServerRow> = with_conn!(self, |conn| {
            servers::table
                .filter(servers::name.eq(name.as_str()))
                .select(ServerRow::as_select())
                .first(conn)
                .await
                .optional()?
        });
        row.map(TryInto::try_into).transpose()
    }

    /// Every server, by name.
    pub async fn list_servers(&self) -> Result<Vec<StoredServer>, StoreError> {
        let rows: Vec<ServerRow> = with_conn!(self, |conn| {
            servers::table
                .order(servers::name.asc())
                .select(ServerRow::as_select())
                .load(conn)
                .await?
        });
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Replaces a server's spec in one statement, bumping its revision. With
    /// `expected_revision`, only that revision is replaced ([`StoreError::RevisionMismatch`]
    /// otherwise), so a client never overwrites a change it has not seen.
    pub async fn update_server(
        &self,
        spec: &ServerSpec,
        source: Source,
        expected_revision: Option<i64>,
    ) -> Result<StoredServer, StoreError> {
        let fields = ServerFields::from_spec(spec, source);
        let name = spec.name.as_str();
        let updated: Option<ServerRow> = with_conn!(self, |conn| {
            let target = servers::table.filter(servers::name.eq(name));
            let changes = (&fields, servers::revision.eq(servers::revision + 1));
            match expected_revision {
                Some(rev) => diesel::update(target.filter(servers::revision.eq(rev)))
                    .set(changes)
                    .returning(ServerRow::as_returning())
                    .get_result(conn)
                    .await
                    .optional()?,
                None => diesel::update(target)
                    .set(changes)
                    .returning(ServerRow::as_returning())
                    .get_result(conn)
                    .await
                    .optional()?,
            }
        });
        match updated {
            Some(row) => row.try_into(),
            None => match self.get_server(&spec.name).await? {
                Some(current) => Err(StoreError::RevisionMismatch {
                    current: current.revision,
                }),
                None => Err(StoreError::NotFound),
            },
        }
    }

    /// Removes a server; answers whether it existed.
    pub async fn delete_server(&self, name: &ServerName) -> Result<bool, StoreError> {
        let deleted = with_conn!(self, |conn| {
            diesel::delete(servers::table.filter(servers::name.eq(name.as_str())))
                .execute(conn)
                .await?
        });
        Ok(deleted > 0)
    }

    /// Makes the registry hold exactly the config file's servers among those that came
    /// from the file: each is inserted or overwritten, and file servers no longer in the
    /// file are removed. API-made entries are left alone, unless the file now declares the
    /// same name, in which case the file wins and the entry becomes the file's.
    pub async fn sync_config_servers(&self, specs: &[ServerSpec]) -> Result<(), StoreError> {
        let now = now();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        with_conn!(self, |conn| {
            for spec in specs {
                let fields = ServerFields::from_spec(spec, Source::Config);
                diesel::insert_into(servers::table)
                    .values((&fields, servers::created_at.eq(now)))
                    .on_conflict(servers::name)
                    .do_update()
                    .set((
                        servers::transport.eq(excluded(servers::transport)),
                        servers::command.eq(excluded(servers::command)),
                        servers::args.eq(excluded(servers::args)),
                        servers::env.eq(excluded(servers::env)),
                        servers::cwd.eq(excluded(servers::cwd)),
                        servers::url.eq(excluded(servers::url)),
                        servers::headers.eq(excluded(servers::headers)),
                        servers::enabled.eq(excluded(servers::enabled)),
                        servers::probe_interval_ms.eq(excluded(servers::probe_interval_ms)),
                        servers::probe_timeout_ms.eq(excluded(servers::probe_timeout_ms)),
                        servers::timeout_ms.eq(excluded(servers::timeout_ms)),
                        servers::cache_policy.eq(excluded(servers::cache_policy)),
                        servers::cache_ttl_ms.eq(excluded(servers::cache_ttl_ms)),
                        servers::tool_overrides.eq(excluded(servers::tool_overrides)),
                        servers::tool_prefix.eq(excluded(servers::tool_prefix)),
                        servers::invalidate_on_write.eq(excluded(servers::invalidate_on_write)),
                        servers::source.eq(excluded(servers::source)),
                        servers::updated_at.eq(excluded(servers::updated_at)),
                        servers::revision.eq(servers::revision + 1),
                    ))
                    .execute(conn)
                    .await?;
            }
            diesel::delete(
                servers::table
                    .filter(servers::source.eq(Source::Config.as_str()))
                    .filter(servers::name.ne_all(&names)),
            )
            .execute(conn)
            .await?;
        });
        Ok(())
    }
}
