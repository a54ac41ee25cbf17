//! The keys in force, in memory: every request is checked here, not in the store. The
//! ring is reloaded whenever this process creates or revokes a key, and on a timer so
//! that changes made by another instance on the same database arrive too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::rate::{Bucket, Rate};
use super::secret::{constant_time_eq, digest};
use super::{AllowList, Caller, Role};
use crate::store::keys::KeyRow;
use crate::store::{Store, StoreError};

/// Default rate of each role, overridden per key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoleRates {
    pub viewer: Option<Rate>,
    pub operator: Option<Rate>,
    pub admin: Option<Rate>,
}

impl Default for RoleRates {
    fn default() -> Self {
        let hundred = Some(Rate {
            count: 100,
            per: Duration::from_secs(1),
        });
        Self {
            viewer: hundred,
            operator: hundred,
            admin: hundred,
        }
    }
}

impl RoleRates {
    fn of(&self, role: Role) -> Option<Rate> {
        match role {
            Role::Viewer => self.viewer,
            Role::Operator => self.operator,
            Role::Admin => self.admin,
        }
    }
}

struct ActiveKey {
    name: String,
    role: Role,
    digest: String,
    allow: Arc<AllowList>,
    rate: Option<Rate>,
}

impl ActiveKey {
    fn from_row(row: KeyRow) -> Result<Self, String> {
        let role = Role::parse(&row.role)?;
        let patterns: Vec<String> =
            serde_json::from_str(&row.allow).map_err(|e| format!("allow: {e}"))?;
        let allow = AllowList::parse(&patterns)?;
        let rate = row.rate_limit.as_deref().map(Rate::parse).transpose()?;
        Ok(Self {
            name: row.name,
            role,
            digest: row.secret_sha256,
            allow: Arc::new(allow),
            rate,
        })
    }
}

/// Cheap to clone; every clone sees the same keys and buckets.
#[derive(Clone)]
pub struct KeyRing {
    keys: Arc<RwLock<Vec<ActiveKey>>>,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
    rates: RoleRates,
}

impl KeyRing {
    pub fn new(rates: RoleRates) -> Self {
        Self {
            keys: Arc::default(),
            buckets: Arc::default(),
            rates,
        }
    }

    /// Replaces the keys with the store's active ones. A row that does not parse is left
    /// out and logged: it can only come from outside this program.
    pub async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let rows = store.active_keys().await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            let name = row.name.clone();
            match ActiveKey::from_row(row) {
                Ok(key) => keys.push(key),
                Err(e) => log::error!("API key '{name}' is unusable and ignored: {e}"),
            }
        }
        let names: Vec<String> = keys.iter().map(|k| k.name.clone()).collect();
        *self.keys.write().expect("key ring") = keys;
        self.buckets
            .lock()
            .expect("buckets")
            .retain(|name, _| names.contains(name));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.read().expect("key ring").is_empty()
    }

    /// The caller a presented secret belongs to. Every stored digest is compared, each
    /// in constant time, so the answer's timing says nothing about near misses.
    pub fn authenticate(&self, secret: &str) -> Option<Caller> {
        let presented = digest(secret);
        let keys = self.keys.read().expect("key ring");
        let mut found = None;
        for key in keys.iter() {
            if constant_time_eq(presented.as_bytes(), key.digest.as_bytes()) {
                found = Some(Caller {
                    key: Some(key.name.clone()),
                    role: key.role,
                    allow: key.allow.clone(),
                });
            }
        }
        found
    }

    /// Takes one request from the caller's bucket, or says how long to wait.
    pub fn admit(&self, caller: &Caller, now: Instant) -> Result<(), Duration> {
        let Some(name) = &caller.key else {
            return Ok(());
        };
        let rate = {
            let keys = self.keys.read().expect("key ring");
            let own = keys.iter().find(|k| &k.name == name).and_then(|k| k.rate);
            own.or(self.rates.of(caller.role))
        };
        let Some(rate) = rate else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().expect("buckets");
        let bucket = buckets
            .entry(name.clone())
            .or_insert_with(|| Bucket::new(rate, now));
        if bucket.rate() != rate {
            *bucket = Bucket::new(rate, now);
        }
        bucket.take(now)
    }
}
