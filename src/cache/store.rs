//! The cache itself, without an actor around it: an LRU bounded by entry count and by bytes,
//! a TTL per entry, and counters. Pure: every method that depends on time takes `now`.

use std::sync::Arc;
use std::time::Instant;

use lru::LruCache;
use serde::Serialize;

use super::key::CacheKey;

#[derive(Clone, Debug)]
pub struct CacheLimits {
    pub max_entries: usize,
    pub max_bytes: usize,
    /// An entry larger than this is never stored (a share of `max_bytes`).
    pub max_entry_bytes: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_entries: 1000,
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 8 * 1024 * 1024,
        }
    }
}

/// A stored result: the serialized `CallToolResult`, shared with every reader.
#[derive(Clone, Debug)]
pub struct Entry {
    pub server: Arc<str>,
    pub tool: Arc<str>,
    pub value: Arc<serde_json::Value>,
    pub size: usize,
    pub expires_at: Instant,
    /// When the upstream produced the value (for `Age`; a wall-clock time, since other
    /// instances share it through Redis).
    pub produced_at: std::time::SystemTime,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    pub insertions: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub invalidations: u64,
    pub too_large: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub max_entries: usize,
    pub max_bytes: usize,
    pub hit_rate: f64,
    #[serde(flatten)]
    pub counters: CacheCounters,
    /// The Redis tier's fills, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedCounts>,
    /// Calls the warmer made that filled an entry (see `warm`).
    pub warmed: u64,
}

/// What became of the fills this instance offered the shared Redis tier.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SharedCounts {
    /// Stored in Redis for every instance.
    pub stored: u64,
    /// Refused by Redis: some instance cleared the tier after the call began.
    pub refused: u64,
}

/// Which entries an invalidation drops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum Scope {
    All,
    Server { server: String },
    Tool { server: String, tool: String },
}

pub struct ResultCache {
    limits: CacheLimits,
    lru: LruCache<CacheKey, Entry>,
    bytes: usize,
    counters: CacheCounters,
}

impl ResultCache {
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            // The count bound is enforced here, not by the lru crate, so that evictions
            // are counted in one place.
            lru: LruCache::unbounded(),
            limits,
            bytes: 0,
            counters: CacheCounters::default(),
        }
    }

    /// A fresh entry, or `None` (a miss). An expired entry is dropped on the way.
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Entry> {
        match self.lru.get(key) {
            Some(entry) if entry.expires_at > now => {
                self.counters.hits += 1;
                Some(entry.clone())
            }
            Some(_) => {
                if let Some(old) = self.lru.pop(key) {
                    self.bytes -= old.size;
                }
                self.counters.expirations += 1;
                self.counters.misses += 1;
                None
            }
            None => {
                self.counters.misses += 1;
                None
            }
        }
    }

    /// Stores an entry. Answers whether it was stored (an entry over the size limit is
    /// not).
    pub fn put(&mut self, key: CacheKey, entry: Entry) -> bool {
        let size = entry.size;
        if size > self.limits.max_entry_bytes || size > self.limits.max_bytes {
            self.counters.too_large += 1;
            return false;
        }
        if let Some(old) = self.lru.pop(&key) {
            self.bytes -= old.size;
        }
        while !self.lru.is_empty()
            && (self.lru.len() >= self.limits.max_entries.max(1)
                || self.bytes + size > self.limits.max_bytes)
        {
            if let Some((_, old)) = self.lru.pop_lru() {
                self.bytes -= old.size;
                self.counters.evictions += 1;
            }
        }
        self.lru.put(key, entry);
        self.bytes += size;
        self.counters.insertions += 1;
        true
    }

    /// Drops what `scope` names; answers how many entries went.
    pub fn invalidate(&mut self, scope: &Scope) -> usize {
        let doomed: Vec<CacheKey> = self
            .lru
            .iter()
            .filter(|(_, e)| match scope {
                Scope::All => true,
                Scope::Server { server } => &*e.server == server,
                Scope::Tool { server, tool } => &*e.server == server && &*e.tool == tool,
            })
            .map(|(k, _)| *k)
            .collect();
        for key in &doomed {
            if let Some(old) = self.lru.pop(key) {
                self.bytes -= old.size;
            }
        }
        self.counters.invalidations += doomed.len() as u64;
        doomed.len()
    }

    /// Drops every expired entry; answers how many.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let expired: Vec<CacheKey> = self
            .lru
            .iter()
            .filter(|(_, e)| e.expires_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in &expired {
            if let Some(old) = self.lru.pop(key) {
                self.bytes -= old.size;
            }
        }
        self.counters.expirations += expired.len() as u64;
        expired.len()
    }

    pub fn stats(&self) -> CacheStats {
        let lookups = self.counters.hits + self.counters.misses;
        CacheStats {
            entries: self.lru.len(),
            bytes: self.bytes,
            max_entries: self.limits.max_entries,
            max_bytes: self.limits.max_bytes,
            hit_rate: if lookups == 0 {
                0.0
            } else {
                self.counters.hits as f64 / lookups as f64
            },
            counters: self.counters.clone(),
            shared: None,
            warmed: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn key(n: u32) -> CacheKey {
        CacheKey::new("s", "t", &json!({ "n": n }))
    }

    fn entry(server: &str, tool: &str, size: usize, ttl: Duration, now: Instant) -> Entry {
        Entry {
            server: server.into(),
            tool: tool.into(),
            value: Arc::new(json!({"content": []})),
            size,
            expires_at: now + ttl,
            produced_at: std::time::SystemTime::now(),
        }
    }

    fn cache(max_entries: usize, max_bytes: usize) -> ResultCache {
        ResultCache::new(CacheLimits {
            max_entries,
            max_bytes,
            max_entry_bytes: max_bytes / 2,
        })
    }

    const TTL: Duration = Duration::from_secs(300);

    #[test]
    fn miss_then_hit() {
        let now = Instant::now();
        let mut c = cache(10, 1000);
        assert!(c.get(&key(1), now).is_none());
        assert!(c.put(key(1), entry("s", "t", 10, TTL, now)));
        assert_eq!(c.get(&key(1), now).unwrap().size, 10);
        let stats = c.stats();
        assert_eq!((stats.counters.hits, stats.counters.misses), (1, 1));
        assert_eq!(stats.hit_rate, 0.5);
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let t0 = Instant::now();
        let mut c = cache(10, 1000);
        c.put(key(1), entry("s", "t", 10, Duration::from_secs(5), t0));
        assert!(c.get(&key(1), t0 + Duration::from_millis(4999)).is_some());
        assert!(c.get(&key(1), t0 + Duration::from_secs(5)).is_none());
        let stats = c.stats();
        assert_eq!(stats.counters.expirations, 1);
        assert_eq!((stats.entries, stats.bytes), (0, 0));
    }

    #[test]
    fn sweep_drops_only_expired_entries() {
        let t0 = Instant::now();
        let mut c = cache(10, 1000);
        c.put(key(1), entry("s", "t", 10, Duration::from_secs(1), t0));
        c.put(key(2), entry("s", "t", 20, Duration::from_secs(10), t0));
        assert_eq!(c.sweep(t0 + Duration::from_secs(2)), 1);
        assert_eq!(c.stats().bytes, 20);
        assert!(c.get(&key(2), t0 + Duration::from_secs(2)).is_some());
    }

    #[test]
    fn least_recently_used_goes_first_by_count() {
        let now = Instant::now();
        let mut c = cache(2, 1000);
        c.put(key(1), entry("s", "t", 1, TTL, now));
        c.put(key(2), entry("s", "t", 1, TTL, now));
        c.get(&key(1), now); // 2 is now the least recently used
        c.put(key(3), entry("s", "t", 1, TTL, now));
        assert!(c.get(&key(2), now).is_none());
        assert!(c.get(&key(1), now).is_some());
        assert!(c.get(&key(3), now).is_some());
        assert_eq!(c.stats().counters.evictions, 1);
    }

    #[test]
    fn bytes_bound_evicts_until_it_fits_and_refuses_oversized_entries() {
        let now = Instant::now();
        let mut c = cache(100, 100);
        c.put(key(1), entry("s", "t", 40, TTL, now));
        c.put(key(2), entry("s", "t", 40, TTL, now));
        c.put(key(3), entry("s", "t", 40, TTL, now));
        let stats = c.stats();
        assert_eq!(
            (stats.entries, stats.bytes, stats.counters.evictions),
            (2, 80, 1)
        );
        assert!(c.get(&key(1), now).is_none());
        assert!(
            !c.put(key(4), entry("s", "t", 51, TTL, now)),
            "over the per-entry share"
        );
        assert_eq!(c.stats().counters.too_large, 1);
        assert_eq!(c.stats().bytes, 80);
    }

    #[test]
    fn replacing_a_key_keeps_bytes_right() {
        let now = Instant::now();
        let mut c = cache(10, 1000);
        c.put(key(1), entry("s", "t", 30, TTL, now));
        c.put(key(1), entry("s", "t", 10, TTL, now));
        assert_eq!((c.stats().entries, c.stats().bytes), (1, 10));
    }

    #[test]
    fn invalidation_by_server_tool_and_all() {
        let now = Instant::now();
        let mut c = cache(10, 1000);
        let k = |s: &str, t: &str| CacheKey::new(s, t, &json!({}));
        c.put(k("a", "x"), entry("a", "x", 1, TTL, now));
        c.put(k("a", "y"), entry("a", "y", 1, TTL, now));
        c.put(k("b", "x"), entry("b", "x", 1, TTL, now));
        assert_eq!(
            c.invalidate(&Scope::Tool {
                server: "a".into(),
                tool: "x".into()
            }),
            1
        );
        assert_eq!(c.invalidate(&Scope::Server { server: "a".into() }), 1);
        assert!(c.get(&k("b", "x"), now).is_some());
        assert_eq!(c.invalidate(&Scope::All), 1);
        let stats = c.stats();
        assert_eq!(
            (stats.entries, stats.bytes, stats.counters.invalidations),
            (0, 0, 3)
        );
    }

    #[test]
    fn stats_are_exact_after_a_scripted_sequence() {
        let t0 = Instant::now();
        let mut c = cache(2, 1000);
        c.get(&key(1), t0); // miss
        c.put(key(1), entry("s", "t", 5, Duration::from_secs(1), t0));
        c.get(&key(1), t0); // hit
        c.put(key(2), entry("s", "t", 6, TTL, t0));
        c.put(key(3), entry("s", "t", 7, TTL, t0)); // evicts 1
        assert!(c.get(&key(1), t0).is_none()); // miss
        let t2 = t0 + Duration::from_secs(2);
        assert!(c.get(&key(2), t2).is_some()); // hit; 3 is now the least recently used
        c.put(key(4), entry("s", "t", 8, Duration::from_secs(1), t0)); // evicts 3
        assert!(c.get(&key(4), t2).is_none()); // expired: a miss and an expiration
        c.put(key(5), entry("s", "t", 9, Duration::from_secs(1), t0));
        assert_eq!(c.sweep(t2), 1); // 5: a second expiration
        assert_eq!(c.invalidate(&Scope::All), 1); // 2 is all that is left
        assert_eq!(
            c.stats(),
            CacheStats {
                entries: 0,
                bytes: 0,
                max_entries: 2,
                max_bytes: 1000,
                hit_rate: 0.4,
                counters: CacheCounters {
                    hits: 2,
                    misses: 3,
                    insertions: 5,
                    evictions: 2,
                    expirations: 2,
                    invalidations: 1,
                    too_large: 0,
                },
                shared: None,
                warmed: 0,
            }
        );
    }
}
