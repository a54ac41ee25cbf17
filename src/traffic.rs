//! The last 15 minutes of each upstream's calls, in memory, for the dashboard's charts:
//! calls, errors, cache hits and misses, and a latency histogram per 10-second bucket.
//!
//! Bounded: a fixed ring of [`BUCKETS`] buckets per upstream (13,680 bytes each, see
//! [`RING_BYTES`]), made on its first call and dropped when the upstream leaves the board
//! (the live hub prunes on every tick). Only names on the board are recorded, so a caller
//! cannot grow the map with names of its own. Nothing is persisted: a restart starts
//! empty.
//!
//! Recording takes a read lock on the map and the upstream's own mutex for a few
//! additions; nothing on the call path waits for a reader longer than that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::registry::ServerName;

/// Seconds one bucket covers.
pub const BUCKET_SECS: u64 = 10;
/// Buckets kept per upstream: 15 minutes.
pub const BUCKETS: usize = 90;
/// Latency bins: bin 0 holds up to 0.1 ms, bin i up to 0.1 ms × 1.5^i; the last bin holds
/// everything slower (from about 19 s). A percentile read from them is within ±23 %.
const LATENCY_BINS: usize = 32;
const FIRST_BOUND_MS: f64 = 0.1;
const BIN_RATIO: f64 = 1.5;

/// Memory of one upstream's ring.
pub const RING_BYTES: usize = std::mem::size_of::<Ring>();
// The bound the module documents, checked when it compiles.
const _: () = assert!(RING_BYTES <= 14 * 1024);

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Which 10-second slot since the epoch this bucket holds; an older one is stale.
    slot: u64,
    calls: u32,
    errors: u32,
    hits: u32,
    misses: u32,
    /// Calls that reached the upstream, by latency bin (cache hits are not counted).
    latency: [u32; LATENCY_BINS],
}

struct Ring {
    buckets: [Bucket; BUCKETS],
}

/// How one call used the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Miss,
    /// Not cacheable, or the caller asked to bypass or refresh.
    NotAsked,
}

/// Every upstream's ring. Cheap to clone.
#[derive(Clone, Default)]
pub struct Traffic {
    rings: Arc<RwLock<HashMap<ServerName, Arc<Mutex<Ring>>>>>,
}

fn slot_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / BUCKET_SECS
}

fn bin_of(elapsed: Duration) -> usize {
    let ms = elapsed.as_secs_f64() * 1000.0;
    if ms <= FIRST_BOUND_MS {
        return 0;
    }
    let bin = ((ms / FIRST_BOUND_MS).ln() / BIN_RATIO.ln()).ceil() as usize;
    bin.min(LATENCY_BINS - 1)
}

/// The middle (geometric) of a bin, in ms.
fn bin_middle(bin: usize) -> f64 {
    let upper = FIRST_BOUND_MS * BIN_RATIO.powi(bin as i32);
    if bin == 0 {
        upper / 2.0
    } else {
        (upper * upper / BIN_RATIO).sqrt()
    }
}

/// The `q` quantile (0..1) of a histogram, or `None` when it is empty.
fn quantile(bins: &[u32; LATENCY_BINS], q: f64) -> Option<f64> {
    let total: u64 = bins.iter().map(|&n| u64::from(n)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (bin, &n) in bins.iter().enumerate() {
        seen += u64::from(n);
        if seen >= rank {
            return Some((bin_middle(bin) * 100.0).round() / 100.0);
        }
    }
    None
}

impl Ring {
    fn new() -> Self {
        Self {
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// The bucket of `slot`, emptied first if it still holds an older slot.
    fn bucket(&mut self, slot: u64) -> &mut Bucket {
        let bucket = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if bucket.slot != slot {
            *bucket = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        bucket
    }

    /// The buckets of the slots `from..=to` that saw calls, oldest first.
    fn between(&self, from: u64, to: u64) -> Vec<Bucket> {
        let mut found: Vec<Bucket> = self
            .buckets
            .iter()
            .filter(|b| b.slot >= from && b.slot <= to && b.calls > 0)
            .copied()
            .collect();
        found.sort_by_key(|b| b.slot);
        found
    }
}

fn bucket_json(bucket: &Bucket) -> Value {
    json!({
        "t": bucket.slot * BUCKET_SECS,
        "calls": bucket.calls,
        "errors": bucket.errors,
        "hits": bucket.hits,
        "misses": bucket.misses,
        "p50_ms": quantile(&bucket.latency, 0.5),
        "p99_ms": quantile(&bucket.latency, 0.99),
    })
}

impl Traffic {
    /// Counts one finished call of `server`.
    pub fn record(&self, server: &ServerName, elapsed: Duration, ok: bool, cache: CacheUse) {
        self.record_at(slot_of(SystemTime::now()), server, elapsed, ok, cache);
    }

    fn record_at(
        &self,
        slot: u64,
        server: &ServerName,
        elapsed: Duration,
        ok: bool,
        cache: CacheUse,
    ) {
        let ring = self
            .rings
            .read()
            .expect("traffic lock")
            .get(server)
            .cloned();
        let ring = ring.unwrap_or_else(|| {
            self.rings
                .write()
                .expect("traffic lock")
                .entry(server.clone())
                .or_insert_with(|| Arc::new(Mutex::new(Ring::new())))
                .clone()
        });
        let mut ring = ring.lock().expect("traffic ring lock");
        let bucket = ring.bucket(slot);
        bucket.calls += 1;
        if !ok {
            bucket.errors += 1;
        }
        match cache {
            CacheUse::Hit => bucket.hits += 1,
            CacheUse::Miss => bucket.misses += 1,
            CacheUse::NotAsked => {}
        }
        if cache != CacheUse::Hit {
            bucket.latency[bin_of(elapsed)] += 1;
        }
    }

    /// Drops the rings of upstreams `keep` does not name (removed from the registry).
    pub fn retain(&self, keep: impl Fn(&ServerName) -> bool) {
        self.rings
            .write()
            .expect("traffic lock")
            .retain(|name, _| keep(name));
    }

    /// How many upstreams have a ring.
    pub fn len(&self) -> usize {
        self.rings.read().expect("traffic lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The median latency of `server`'s calls that reached it in the last minute.
    pub fn recent_p50_ms(&self, server: &ServerName) -> Option<f64> {
        self.recent_p50_at(slot_of(SystemTime::now()), server)
    }

    fn recent_p50_at(&self, now: u64, server: &ServerName) -> Option<f64> {
        let ring = self
            .rings
            .read()
            .expect("traffic lock")
            .get(server)
            .cloned()?;
        let ring = ring.lock().expect("traffic ring lock");
        let mut merged = [0u32; LATENCY_BINS];
        // The bucket under way and the full ones before it, a minute in all.
        for bucket in ring.between(now.saturating_sub(60 / BUCKET_SECS - 1), now) {
            for (sum, n) in merged.iter_mut().zip(bucket.latency) {
                *sum += n;
            }
        }
        quantile(&merged, 0.5)
    }

    /// The whole window (`recent: false`) or its last two buckets (`recent: true`: the
    /// one filling now and the one just closed), for the upstreams `allowed` admits:
    /// `{"bucket_seconds", "window_seconds", "servers": {name: [bucket, ...]}}`, each
    /// bucket `{"t" (its start, Unix seconds), "calls", "errors", "hits", "misses",
    /// "p50_ms", "p99_ms"}`, oldest first, buckets without calls left out.
    pub fn to_json(&self, recent: bool, allowed: impl Fn(&ServerName) -> bool) -> Value {
        self.to_json_at(slot_of(SystemTime::now()), recent, allowed)
    }

    fn to_json_at(&self, now: u64, recent: bool, allowed: impl Fn(&ServerName) -> bool) -> Value {
        let from = now.saturating_sub(if recent { 1 } else { BUCKETS as u64 - 1 });
        let rings: Vec<(ServerName, Arc<Mutex<Ring>>)> = self
            .rings
            .read()
            .expect("traffic lock")
            .iter()
            .filter(|(name, _)| allowed(name))
            .map(|(name, ring)| (name.clone(), ring.clone()))
            .collect();
        let servers: serde_json::Map<String, Value> = rings
            .into_iter()
            .map(|(name, ring)| {
                let buckets = ring.lock().expect("traffic ring lock").between(from, now);
                let buckets: Vec<Value> = buckets.iter().map(bucket_json).collect();
                (name.to_string(), Value::Array(buckets))
            })
            .collect();
        json!({
            "bucket_seconds": BUCKET_SECS,
            "window_seconds": BUCKET_SECS * BUCKETS as u64,
            "servers": servers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ServerName {
        ServerName::parse(text).unwrap()
    }

    #[test]
    fn calls_land_in_their_bucket_with_their_cache_use_and_latency() {
        let traffic = Traffic::default();
        let a = name("a");
        for ms in [1, 2, 3, 4, 100] {
            traffic.record_at(1000, &a, Duration::from_millis(ms), true, CacheUse::Miss);
        }
        traffic.record_at(1000, &a, Duration::from_micros(5), true, CacheUse::Hit);
        traffic.record_at(
            1001,
            &a,
            Duration::from_millis(7),
            false,
            CacheUse::NotAsked,
        );
        let all = traffic.to_json_at(1001, false, |_| true);
        let buckets = all["servers"]["a"].as_array().unwrap();
        assert_eq!(buckets.len(), 2);
        let first = &buckets[0];
        assert_eq!(first["t"], 1000 * BUCKET_SECS);
        assert_eq!(
            (first["calls"].as_u64(), first["hits"].as_u64()),
            (Some(6), Some(1))
        );
        assert_eq!(
            (first["misses"].as_u64(), first["errors"].as_u64()),
            (Some(5), Some(0))
        );
        // The hit is not a latency of the upstream's: the median of 1, 2, 3, 4, 100 ms.
        let p50 = first["p50_ms"].as_f64().unwrap();
        assert!((3.0 / 1.25..=3.0 * 1.25).contains(&p50), "{p50}");
        let p99 = first["p99_ms"].as_f64().unwrap();
        assert!((100.0 / 1.25..=100.0 * 1.25).contains(&p99), "{p99}");
        assert_eq!(buckets[1]["errors"], 1);
    }

    #[test]
    fn the_window_is_fifteen_minutes_and_a_slot_is_reused_when_it_comes_round() {
        let traffic = Traffic::default();
        let a = name("a");
        let ok =
            |slot| traffic.record_at(slot, &a, Duration::from_millis(1), true, CacheUse::NotAsked);
        ok(10);
        ok(10 + BUCKETS as u64 - 1);
        let window = traffic.to_json_at(10 + BUCKETS as u64 - 1, false, |_| true);
        assert_eq!(window["servers"]["a"].as_array().unwrap().len(), 2);
        // One bucket later the oldest is out of the window, then overwritten.
        ok(10 + BUCKETS as u64);
        let window = traffic.to_json_at(10 + BUCKETS as u64, false, |_| true);
        let buckets = window["servers"]["a"].as_array().unwrap();
        assert_eq!(buckets.len(), 2);
        assert_eq!(buckets[1]["calls"], 1, "the reused slot starts from zero");
        let recent = traffic.to_json_at(10 + BUCKETS as u64, true, |_| true);
        assert_eq!(recent["servers"]["a"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn the_recent_median_covers_the_last_minute_only() {
        let traffic = Traffic::default();
        let a = name("a");
        traffic.record_at(100, &a, Duration::from_millis(500), true, CacheUse::Miss);
        traffic.record_at(200, &a, Duration::from_millis(2), true, CacheUse::Miss);
        let p50 = traffic.recent_p50_at(200, &a).unwrap();
        assert!(p50 < 3.0, "{p50}");
        assert_eq!(traffic.recent_p50_at(300, &a), None);
        // A minute is this bucket and the five before it, no more.
        let b = name("b");
        traffic.record_at(194, &b, Duration::from_millis(2), true, CacheUse::Miss);
        assert_eq!(traffic.recent_p50_at(200, &b), None);
        traffic.record_at(195, &b, Duration::from_millis(2), true, CacheUse::Miss);
        assert!(traffic.recent_p50_at(200, &b).is_some());
    }

    #[test]
    fn removed_and_hidden_upstreams_are_left_out() {
        let traffic = Traffic::default();
        for server in ["a", "b"] {
            traffic.record_at(5, &name(server), Duration::ZERO, true, CacheUse::Hit);
        }
        let only_a = traffic.to_json_at(5, false, |n| n.as_str() == "a");
        assert_eq!(only_a["servers"].as_object().unwrap().len(), 1);
        traffic.retain(|n| n.as_str() == "b");
        assert_eq!(traffic.len(), 1);
        assert!(traffic.to_json_at(5, false, |_| true)["servers"]["a"].is_null());
    }
}
