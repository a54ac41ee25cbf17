//! Queries on `health_events`: the history of every upstream's state changes.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::health_events;
use super::{Store, StoreError};
use crate::with_conn;

#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = health_events, treat_none_as_default_value = false)]
pub struct NewHealthEvent {
    pub server: String,
    pub instance: String,
    pub event: String,
    pub status: Option<String>,
    pub detail: String,
    pub created_at: NaiveDateTime,
}

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = health_events)]
pub struct HealthEventRow {
    pub id: i64,
    pub server: String,
    pub instance: String,
    pub event: String,
    pub status: Option<String>,
    pub detail: String,
    pub created_at: NaiveDateTime,
}

impl Store {
    /// Writes a batch in one statement.
    pub async fn insert_health_events(&self, rows: Vec<NewHealthEvent>) -> Result<(), StoreError> {
        crate::insert_batch!(self, health_events::table, rows)
    }

    /// Newest first; `before` is an id from a previous page.
    pub async fn list_health_events(
        &self,
        server: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<HealthEventRow>, StoreError> {
        let rows = with_conn!(self, |conn| {
            let mut query = health_events::table
                .filter(health_events::server.eq(server))
                .order(health_events::id.desc())
                .limit(limit)
                .select(HealthEventRow::as_select())
                .into_boxed();
            if let Some(before) = before {
                query = query.filter(health_events::id.lt(before));
            }
            query.load(conn).await?
        });
        Ok(rows)
    }

    /// The newest `limit` events of every server, newest first.
    pub async fn recent_health_events(
        &self,
        limit: i64,
    ) -> Result<Vec<HealthEventRow>, StoreError> {
        let rows = with_conn!(self, |conn| {
            health_events::table
                .order(health_events::id.desc())
                .limit(limit)
                .select(HealthEventRow::as_select())
                .load(conn)
                .await?
        });
        Ok(rows)
    }
}
