//! Queries on `tool_invocations`: the audit log of tool calls.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::tool_invocations;
use super::{Store, StoreError};
use crate::with_conn;

#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = tool_invocations, treat_none_as_default_value = false)]
pub struct NewInvocation {
    pub server: String,
    pub tool: String,
    pub caller: Option<String>,
    pub arguments_hash: String,
    pub cached: bool,
    pub outcome: String,
    pub status: i64,
    pub duration_us: i64,
    pub created_at: NaiveDateTime,
}

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = tool_invocations)]
pub struct InvocationRow {
    pub id: i64,
    pub server: String,
    pub tool: String,
    pub caller: Option<String>,
    pub arguments_hash: String,
    pub cached: bool,
    pub outcome: String,
    pub status: i64,
    pub duration_us: i64,
    pub created_at: NaiveDateTime,
}

/// Which rows to list.
#[derive(Clone, Debug, Default)]
pub struct InvocationFilter {
    pub server: Option<String>,
    pub tool: Option<String>,
    pub before: Option<i64>,
    pub limit: i64,
}

impl Store {
    pub async fn insert_invocations(&self, rows: Vec<NewInvocation>) -> Result<(), StoreError> {
        crate::insert_batch!(self, tool_invocations::table, rows)
    }

    /// Newest first.
    pub async fn list_invocations(
        &self,
        filter: &InvocationFilter,
    ) -> Result<Vec<InvocationRow>, StoreError> {
        let rows = with_conn!(self, |conn| {
            let mut query = tool_invocations::table
                .order(tool_invocations::id.desc())
                .limit(filter.limit)
                .select(InvocationRow::as_select())
                .into_boxed();
            if let Some(server) = &filter.server {
                query = query.filter(tool_invocations::server.eq(server));
            }
            if let Some(tool) = &filter.tool {
                query = query.filter(tool_invocations::tool.eq(tool));
            }
            if let Some(before) = filter.before {
                query = query.filter(tool_invocations::id.lt(before));
            }
            query.load(conn).await?
        });
        Ok(rows)
    }
}
