//! The optional second cache tier in Redis, shared by every instance: same keys and TTLs
//! as the local LRU, which stays in front of it. Redis is a convenience, never a
//! dependency: every operation has a short deadline, and a failure costs only this tier
//! (a miss, or a fill not shared), never a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;

use super::{CacheKey, Scope};

/// Longest a request waits on Redis before it goes on without it.
const DEADLINE: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct SharedTier {
    conn: ConnectionManager,
    /// Namespaces the keys, e.g. `omni:` (several gateways may share one Redis).
    prefix: Arc<str>,
    /// Whether the last operation worked, so that going down and coming back are each
    /// logged once rather than per request.
    up: Arc<AtomicBool>,
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
        })
    }

    fn key(&self, server: &str, tool: &str, key: &CacheKey) -> String {
        format!("{}cache:{server}:{tool}:{}", self.prefix, key.to_hex())
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

    /// A shared result and how long it has left, if Redis holds one.
    pub async fn get(
        &self,
        server: &str,
        tool: &str,
        key: &CacheKey,
    ) -> Option<(Arc<Value>, Duration)> {
        let k = self.key(server, tool, key);
        let mut conn = self.conn.clone();
        let answer: Option<(Option<Vec<u8>>, i64)> = self.note(
            "get",
            tokio::time::timeout(
                DEADLINE,
                redis::pipe().get(&k).pttl(&k).query_async(&mut conn),
            )
            .await,
        );
        let (Some(bytes), ttl_ms) = answer? else {
            return None;
        };
        let ttl = Duration::from_millis(u64::try_from(ttl_ms).ok().filter(|&ms| ms > 0)?);
        let value = serde_json::from_slice(&bytes).ok()?;
        Some((Arc::new(value), ttl))
    }

    /// Shares a result for `ttl`.
    pub async fn put(
        &self,
        server: &str,
        tool: &str,
        key: &CacheKey,
        value: &Value,
        ttl: Duration,
    ) {
        let Ok(bytes) = serde_json::to_vec(value) else {
            return;
        };
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let k = self.key(server, tool, key);
        let mut conn = self.conn.clone();
        let _: Option<()> = self.note(
            "put",
            tokio::time::timeout(DEADLINE, conn.pset_ex(k, bytes, ms)).await,
        );
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
