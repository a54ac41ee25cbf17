//! Queries on `api_keys`. Only the SHA-256 of a secret is ever stored.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::api_keys;
use super::{Store, StoreError, now};
use crate::with_conn;

#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = api_keys)]
pub struct NewKey {
    pub name: String,
    pub role: String,
    pub secret_sha256: String,
    /// JSON list of `server/tool` globs.
    pub allow: String,
    pub rate_limit: Option<String>,
    pub created_at: NaiveDateTime,
}

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct KeyRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub secret_sha256: String,
    pub allow: String,
    pub rate_limit: Option<String>,
    pub created_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
}

impl Store {
    /// Adds a key. A taken name is [`StoreError::Conflict`].
    pub async fn insert_key(&self, key: &NewKey) -> Result<KeyRow, StoreError> {
        Ok(with_conn!(self, |conn| {
            diesel::insert_into(api_keys::table)
                .values(key)
                .returning(KeyRow::as_returning())
                .get_result(conn)
                .await?
        }))
    }

    /// Every key, revoked ones too, by name.
    pub async fn list_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        Ok(with_conn!(self, |conn| {
            api_keys::table
                .order(api_keys::name.asc())
                .select(KeyRow::as_select())
                .load(conn)
                .await?
        }))
    }

    /// Keys that are not revoked.
    pub async fn active_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        Ok(with_conn!(self, |conn| {
            api_keys::table
                .filter(api_keys::revoked_at.is_null())
                .select(KeyRow::as_select())
                .load(conn)
                .await?
        }))
    }

    /// Whether any key was ever stored, revoked ones included: a store that held keys
    /// never lets the gateway run open again.
    pub async fn any_key_ever(&self) -> Result<bool, StoreError> {
        let n: i64 = with_conn!(self, |conn| {
            api_keys::table.count().get_result(conn).await?
        });
        Ok(n > 0)
    }

    /// Revokes a key by name; answers whether an active key of that name existed.
    pub async fn revoke_key(&self, name: &str) -> Result<bool, StoreError> {
        let at = now();
        let n = with_conn!(self, |conn| {
            diesel::update(
                api_keys::table
                    .filter(api_keys::name.eq(name))
                    .filter(api_keys::revoked_at.is_null()),
            )
            .set(api_keys::revoked_at.eq(Some(at)))
            .execute(conn)
            .await?
        });
        Ok(n > 0)
    }
}
