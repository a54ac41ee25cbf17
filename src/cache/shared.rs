//! The optional second cache tier in Redis, shared by every instance: same keys and TTLs
//! as the local LRU, which stays in front of it. Redis is a convenience, never a
//! dependency: every operation has a short deadline, and a failure costs only this tier
//! (a miss, or a fill not shared), never a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;

use super::key::CacheKey;
use super::store::{Scope, SharedCounts};

/// Longest a request waits on Redis before it goes on without it.
const DEADLINE: Duration = Duration::from_millis(100);

/// Stores `ARGV[1]` under `KEYS[1]` for `ARGV[2]` ms only if the invalidation counter
/// `KEYS[2]` still reads `ARGV[3]` (absent reads 0): checked and written in one step, so
/// a fill that began before a clear by any instance can never land after it.
const PUT_IF_EPOCH: &str = "if (redis.call('GET', KEYS[2]) or '0') == ARGV[3] then \
     redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end return 0";

/// What a read of the shared tier found.
pub struct SharedRead {
    /// The shared result, how long it has left, and when the upstream produced it.
    pub hit: Option<(Arc<Value>, Duration, std::time::SystemTime)>,
    /// The tier's invalidation counter at the read, for a later [`SharedTier::put`]; None
    /// when Redis did not answer.
    pub epoch: Option<u64>,
}

#[derive(Clone)]
pub struct SharedTier {
    conn: ConnectionManager,
    /// Namespaces the keys, e.g. `omni:` (several gateways may share one Redis).
    prefix: Arc<str>,
    /// Whether the last operation worked, so that going down and coming back are each
    /// logged once rather than per request.
    up: Arc<AtomicBool>,
    /// Fills stored and refused, for the cache stats.
    stored: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

/// `*`, `?`, `[`, `]` and `\` match literally in a SCAN pattern only when escaped.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl SharedTier {
    /// Prepares the tier; the connection is made on first use, so a Redis that is down at
    /// start-up does not stop the gateway.
    pub fn new(url: &str, prefix: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(DEADLINE * 2))
            .set_response_timeout(Some(DEADLINE))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            conn,
            prefix: prefix.into(),
            up: Arc::new(AtomicBool::new(true)),
            stored: Arc::default(),
            refused: Arc::default(),
        })
    }

    fn key(&self, server: &str, tool: &str, key: &CacheKey) -> String {
        format!("{}cache:{server}:{tool}:{}", self.prefix, key.to_hex())
    }

    /// Counts clears of this tier by every instance (outside the `cache:` keys, so a clear
    /// never deletes it).
    fn epoch_key(&self) -> String {
        format!("{}cache-epoch", self.prefix)
    }

    fn note<T>(
        &self,
        what: &str,
        result: Result<Result<T, redis::RedisError>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        let outcome = match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {DEADLINE:?}")),
        };
        match outcome {
            Ok(value) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    log::info!("shared cache tier (Redis) answers again");
                }
                Some(value)
            }
            Err(e) => {
                if self.up.swap(false, Ordering::Relaxed) {
                    log::warn!(
                        "shared cache tier (Redis) unavailable ({what}: {e}); serving without it"
                    );
                }
                None
            }
        }
    }

    /// A shared result and how long it has left, if Redis holds one, and the tier's
    /// invalidation counter, read together before the upstream is asked.
    pub async fn get(&self, server: &str, tool: &str, key: &CacheKey) -> SharedRead {
        let k = self.key(server, tool, key);
        let mut conn = self.conn.clone();
        let answer: Option<(Option<Vec<u8>>, i64, Option<u64>)> = self.note(
            "get",
            tokio::time::timeout(
                DEADLINE,
                redis::pipe()
                    .get(&k)
                    .pttl(&k)
                    .get(self.epoch_key())
                    .query_async(&mut conn),
            )
            .await,
        );
        let Some((bytes, ttl_ms, epoch)) = answer else {
            return SharedRead {
                hit: None,
                epoch: None,
            };
        };
        let ttl = u64::try_from(ttl_ms)
            .ok()
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        // Stored as {"at": ms since the epoch, "v": value}; anything else is a miss.
        let hit = bytes.zip(ttl).and_then(|(bytes, ttl)| {
            let mut stored: Value = serde_json::from_slice(&bytes).ok()?;
            let at = stored.get("at")?.as_u64()?;
            let value = stored.get_mut("v")?.take();
            let produced = std::time::UNIX_EPOCH + Duration::from_millis(at);
            Some((Arc::new(value), ttl, produced))
        });
        SharedRead {
            hit,
            epoch: Some(epoch.unwrap_or(0)),
        }
    }

    /// The tier's invalidation counter now (for a fill that did not read the tier first).
    pub async fn epoch(&self) -> Option<u64> {
        let mut conn = self.conn.clone();
        let epoch: Option<Option<u64>> = self.note(
            "epoch",
            tokio::time::timeout(DEADLINE, conn.get(self.epoch_key())).await,
        );
        epoch.map(|e| e.unwrap_or(0))
    }

    /// Shares a result for `ttl`, unless the tier was cleared since `epoch` was read (the
    /// outcome is counted for the stats).
    pub async fn put(
        &self,
        (server, tool, key): (&str, &str, &CacheKey),
        (value, produced_at): (&Value, std::time::SystemTime),
        ttl: Duration,
        epoch: u64,
    ) {
        let at = produced_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let Ok(bytes) = serde_json::to_vec(&serde_json::json!({"at": at, "v": value})) else {
            return;
        };
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        let stored: Option<i64> = self.note(
            "put",
            tokio::time::timeout(
                DEADLINE,
                redis::cmd("EVAL")
                    .arg(PUT_IF_EPOCH)
                    .arg(2)
                    .arg(self.key(server, tool, key))
                    .arg(self.epoch_key())
                    .arg(bytes)
                    .arg(ms)
                    .arg(epoch)
                    .query_async(&mut conn),
            )
            .await,
        );
        let counter = match stored {
            Some(1) => &self.stored,
            Some(_) => &self.refused,
            None => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> SharedCounts {
        SharedCounts {
            stored: self.stored.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// Drops the shared entries of `scope`.
    pub async fn invalidate(&self, scope: &Scope) {
        let pattern = match scope {
            Scope::All => format!("{}cache:*", escape_glob(&self.prefix)),
            Scope::Server { server } => {
                format!(
                    "{}cache:{}:*",
                    escape_glob(&self.prefix),
                    escape_glob(server)
                )
            }
            Scope::Tool { server, tool } => format!(
                "{}cache:{}:{}:*",
                escape_glob(&self.prefix),
                escape_glob(server),
                escape_glob(tool)
            ),
        };
        let mut conn = self.conn.clone();
        // First: from here on, a fill that read the tier before this clear is refused.
        let _: Option<u64> = self.note(
            "invalidate",
            tokio::time::timeout(DEADLINE, conn.incr(self.epoch_key(), 1)).await,
        );
        let mut cursor: u64 = 0;
        // SCAN in steps, each under the deadline: a big keyspace is cleared in pieces
        // without holding Redis up.
        loop {
            let step: Option<(u64, Vec<String>)> = self.note(
                "scan",
                tokio::time::timeout(
                    DEADLINE * 10,
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut conn),
                )
                .await,
            );
            let Some((next, keys)) = step else { return };
            if !keys.is_empty() {
                let _: Option<()> = self.note(
                    "unlink",
                    tokio::time::timeout(DEADLINE * 10, conn.unlink(keys)).await,
                );
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_in_names_match_literally() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(escape_glob("plain-name"), "plain-name");
    }
}
