//! Creating, listing and revoking keys: one validation for the command line and the API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::allow::AllowList;
use super::caller::Role;
use super::rate::Rate;
use super::secret;
use crate::registry::ValidationError;
use crate::store::keys::{KeyRow, NewKey};
use crate::store::{Store, StoreError, now};

/// A key as asked for.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ci", "role": "operator", "allow": ["demo/*"], "rate_limit": "10/s"}))]
pub struct KeyInput {
    /// 1 to 256 bytes; names stay taken after revocation.
    pub name: Option<String>,
    /// Required.
    #[schema(value_type = Option<super::Role>)]
    pub role: Option<String>,
    /// `server/tool` globs the key may use; none means every tool.
    #[serde(default)]
    pub allow: Vec<String>,
    /// e.g. `10/s`, `100/m`; else the role's.
    pub rate_limit: Option<String>,
}

/// A key as shown: never its secret. Fields in name order, as the command line has always
/// printed them.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub allow: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub name: String,
    pub rate_limit: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    #[schema(value_type = super::Role)]
    pub role: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(ValidationError),
    #[error("an API key named '{0}' already exists (names stay taken after revocation)")]
    Exists(String),
    #[error("store: {0}")]
    Store(StoreError),
}

fn invalid(field: &str, message: impl Into<String>) -> KeyError {
    KeyError::Invalid(ValidationError::new(field, message))
}

impl KeyInput {
    fn validate(&self) -> Result<(String, Role, AllowList, Option<Rate>), KeyError> {
        let name = self
            .name
            .clone()
            .ok_or_else(|| invalid("name", "is required"))?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                "name",
                "must be 1 to 64 of A-Z, a-z, 0-9, '-', '_' and '.'",
            ));
        }
        let role = self
            .role
            .as_deref()
            .ok_or_else(|| invalid("role", "is required: viewer, operator or admin"))
            .and_then(|r| Role::parse(r).map_err(|m| invalid("role", m)))?;
        let allow = AllowList::parse(&self.allow).map_err(|m| invalid("allow", m))?;
        let rate = self
            .rate_limit
            .as_deref()
            .map(Rate::parse)
            .transpose()
            .map_err(|m| invalid("rate_limit", m))?;
        Ok((name, role, allow, rate))
    }
}

/// Stores a new key; answers its row and its secret, which exists nowhere else.
pub async fn create(store: &Store, input: &KeyInput) -> Result<(KeyRow, String), KeyError> {
    let (name, role, allow, rate) = input.validate()?;
    let secret = secret::generate();
    let row = NewKey {
        name: name.clone(),
        role: role.as_str().to_owned(),
        secret_sha256: secret::digest(&secret),
        allow: serde_json::to_string(&allow.to_strings()).expect("strings serialize"),
        rate_limit: rate.map(|r| r.to_string()),
        created_at: now(),
    };
    match store.insert_key(&row).await {
        Ok(row) => Ok((row, secret)),
        Err(StoreError::Conflict) => Err(KeyError::Exists(name)),
        Err(e) => Err(KeyError::Store(e)),
    }
}

/// A key as the API and the command line show it: never its secret or digest.
pub fn public(row: &KeyRow) -> KeyView {
    KeyView {
        name: row.name.clone(),
        role: row.role.clone(),
        // Written by `create` from a list of strings.
        allow: serde_json::from_str(&row.allow).unwrap_or_default(),
        rate_limit: row.rate_limit.clone(),
        created_at: row.created_at.and_utc(),
        revoked_at: row.revoked_at.map(|t| t.and_utc()),
    }
}
