//! Queries on `mcp_sessions`: the record of each handshake-era `/mcp` session, which any
//! instance on the database reads to serve a session another instance opened (see
//! `mcp::records`). Nothing secret is kept: the owner is a key's name.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::{mcp_session_subscriptions as subscriptions, mcp_sessions};
use super::{Store, StoreError};
use crate::with_conn;

#[derive(Clone, Debug, Insertable, Queryable, Selectable)]
#[diesel(table_name = mcp_sessions)]
pub struct SessionRow {
    pub id: String,
    pub owner: Option<String>,
    /// The client's `initialize` params, as JSON.
    pub initialize_params: String,
    pub log_level: Option<String>,
    pub created_at: NaiveDateTime,
    pub seen_at: NaiveDateTime,
}

impl Store {
    /// Records a session that just opened.
    pub async fn insert_session(&self, row: &SessionRow) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::insert_into(mcp_sessions::table)
                .values(row)
                .execute(conn)
                .await?
        });
        Ok(())
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        Ok(with_conn!(self, |conn| {
            mcp_sessions::table
                .find(id)
                .select(SessionRow::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// Which of `ids` have a record.
    pub async fn sessions_recorded(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        Ok(with_conn!(self, |conn| {
            mcp_sessions::table
                .filter(mcp_sessions::id.eq_any(ids))
                .select(mcp_sessions::id)
                .load(conn)
                .await?
        }))
    }

    /// Answers whether the session was there.
    pub async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        let n = with_conn!(self, |conn| {
            diesel::delete(subscriptions::table.filter(subscriptions::session.eq(id)))
                .execute(conn)
                .await?;
            diesel::delete(mcp_sessions::table.find(id))
                .execute(conn)
                .await?
        });
        Ok(n > 0)
    }

    /// The `(server, uri)` a session subscribed to.
    pub async fn session_subscriptions(
        &self,
        id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(with_conn!(self, |conn| {
            subscriptions::table
                .filter(subscriptions::session.eq(id))
                .select((subscriptions::server, subscriptions::uri))
                .load(conn)
                .await?
        }))
    }

    pub async fn add_session_subscription(
        &self,
        id: &str,
        server: &str,
        uri: &str,
    ) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::insert_into(subscriptions::table)
                .values((
                    subscriptions::session.eq(id),
                    subscriptions::server.eq(server),
                    subscriptions::uri.eq(uri),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?
        });
        Ok(())
    }

    pub async fn remove_session_subscription(
        &self,
        id: &str,
        server: &str,
        uri: &str,
    ) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::delete(
                subscriptions::table
                    .filter(subscriptions::session.eq(id))
                    .filter(subscriptions::server.eq(server))
                    .filter(subscriptions::uri.eq(uri)),
            )
            .execute(conn)
            .await?
        });
        Ok(())
    }

    pub async fn set_session_level(&self, id: &str, level: &str) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::update(mcp_sessions::table.find(id))
                .set(mcp_sessions::log_level.eq(level))
                .execute(conn)
                .await?
        });
        Ok(())
    }

    /// Marks sessions as used at `at` (one statement for many), never moving a mark back.
    pub async fn touch_sessions(
        &self,
        ids: &[String],
        at: NaiveDateTime,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        with_conn!(self, |conn| {
            diesel::update(
                mcp_sessions::table
                    .filter(mcp_sessions::id.eq_any(ids))
                    .filter(mcp_sessions::seen_at.lt(at)),
            )
            .set(mcp_sessions::seen_at.eq(at))
            .execute(conn)
            .await?
        });
        Ok(())
    }

    /// Forgets sessions no instance has used since `before`; answers how many.
    pub async fn sweep_sessions(&self, before: NaiveDateTime) -> Result<usize, StoreError> {
        Ok(with_conn!(self, |conn| {
            let swept =
                diesel::delete(mcp_sessions::table.filter(mcp_sessions::seen_at.lt(before)))
                    .execute(conn)
                    .await?;
            if swept > 0 {
                diesel::sql_query(
                    "DELETE FROM mcp_session_subscriptions \
                     WHERE session NOT IN (SELECT id FROM mcp_sessions)",
                )
                .execute(conn)
                .await?;
            }
            swept
        }))
    }
}
