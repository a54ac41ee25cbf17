//! The keys in force, in memory: every request is checked here, not in the store. The
//! ring is reloaded whenever this process creates or revokes a key, on a cluster
//! announcement, and on a timer so that changes made by another instance or the command
//! line arrive too. Each reload that changes the keys in force is published
//! ([`KeyRing::subscribe`]), so live sessions of a revoked key can be ended.
//!
//! Whether the gateway runs open (no key needed) is decided here too, and only by what
//! the operator chose ([`OpenPolicy`]): a loopback bind on a store that never held a
//! key, or `--insecure-no-auth` (open whenever no key is active). Without
//! `--insecure-no-auth`, revoking every key never opens a gateway.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::allow::AllowList;
use super::caller::{Caller, Role};
use super::rate::{Bucket, Rate};
use super::secret::{constant_time_eq, digest};
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

/// When the gateway may run without keys: what the operator chose at start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenPolicy {
    /// Bound to a loopback address: open while the store has never held a key.
    pub loopback: bool,
    /// `--insecure-no-auth`: open whenever no key is active.
    pub insecure_no_auth: bool,
}

impl OpenPolicy {
    fn open(self, active: usize, ever_held_keys: bool) -> bool {
        active == 0 && (self.insecure_no_auth || (self.loopback && !ever_held_keys))
    }
}

/// The keys in force, as published to whoever ends sessions of revoked keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    pub active: Arc<HashSet<String>>,
    /// No key is needed.
    pub open: bool,
}

impl KeyState {
    /// Whether a session opened with this key (`None`: opened while open) may go on.
    pub fn admits(&self, key: Option<&str>) -> bool {
        match key {
            Some(name) => self.active.contains(name),
            None => self.open,
        }
    }
}

/// Says which mode the gateway is in: at start and whenever it changes.
fn log_mode(state: &KeyState, ever_held_keys: bool) {
    if state.open {
        log::warn!(
            "NO API KEYS: omni-bridge runs OPEN; anyone who can reach it may change servers \
             and call every tool. Create a key (omni-bridge keys create) to require keys."
        );
    } else if state.active.is_empty() && ever_held_keys {
        log::warn!(
            "every API key is revoked: omni-bridge stays CLOSED and answers 401 until a key \
             exists again (omni-bridge keys create --name NAME --role admin)"
        );
    } else {
        log::info!("API keys required ({} active)", state.active.len());
    }
}

/// Cheap to clone; every clone sees the same keys and buckets.
#[derive(Clone)]
pub struct KeyRing {
    keys: Arc<RwLock<Vec<ActiveKey>>>,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
    rates: RoleRates,
    policy: OpenPolicy,
    /// Starts closed: nothing is open before the store has been read.
    state: Arc<tokio::sync::watch::Sender<KeyState>>,
    /// Whether the store was read once (the mode is logged then, whatever it is).
    loaded: Arc<std::sync::atomic::AtomicBool>,
    /// One reload at a time: the timer, a key handler and the cluster listener all
    /// reload, and a reload that read the store before a revocation must not land after
    /// it (the key would work again, or a gateway given its first key reopen).
    reloading: Arc<tokio::sync::Mutex<()>>,
}

impl KeyRing {
    pub fn new(rates: RoleRates, policy: OpenPolicy) -> Self {
        Self {
            keys: Arc::default(),
            buckets: Arc::default(),
            rates,
            policy,
            state: Arc::new(tokio::sync::watch::channel(KeyState::default()).0),
            loaded: Arc::default(),
            reloading: Arc::default(),
        }
    }

    /// Every change of the keys in force (or of open mode), from now on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<KeyState> {
        self.state.subscribe()
    }

    /// Whether requests need no key now.
    pub fn is_open(&self) -> bool {
        self.state.borrow().open
    }

    /// Replaces the keys with the store's active ones. A row that does not parse is left
    /// out and logged: it can only come from outside this program.
    pub async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        let rows = store.active_keys().await?;
        let ever_held_keys = !rows.is_empty() || store.any_key_ever().await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            let name = row.name.clone();
            match ActiveKey::from_row(row) {
                Ok(key) => keys.push(key),
                Err(e) => log::error!("API key '{name}' is unusable and ignored: {e}"),
            }
        }
        let names: HashSet<String> = keys.iter().map(|k| k.name.clone()).collect();
        let open = self.policy.open(keys.len(), ever_held_keys);
        *self.keys.write().expect("key ring") = keys;
        self.buckets
            .lock()
            .expect("buckets")
            .retain(|name, _| names.contains(name));
        let next = KeyState {
            active: Arc::new(names),
            open,
        };
        let first = !self.loaded.swap(true, std::sync::atomic::Ordering::Relaxed);
        self.state.send_if_modified(|state| {
            if first || state.open != next.open || state.active.is_empty() != next.active.is_empty()
            {
                log_mode(&next, ever_held_keys);
            }
            if *state == next {
                return false;
            }
            *state = next;
            true
        });
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
