//! Criterion benchmarks for the pure pieces on the hot path: cache keys (canonical JSON and
//! SHA-256), cache get and put at 1,000 and 100,000 entries, breaker decisions, and the
//! dashboard's per-upstream call counting.
//! Run: `cargo bench --bench hot_paths`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use omni_bridge::cache::{CacheKey, CacheLimits, Entry, ResultCache, canonical_json};
use omni_bridge::registry::ServerName;
use omni_bridge::traffic::{CacheUse, Traffic};
use omni_bridge::upstream::{Breaker, BreakerConfig};
use serde_json::{Value, json};

fn typical_arguments() -> Value {
    json!({
        "query": "weather in Lisbon",
        "limit": 10,
        "filters": {"lang": "en", "safe": true, "sources": ["a", "b", "c"]},
        "offset": 0,
    })
}

fn keys(c: &mut Criterion) {
    let args = typical_arguments();
    c.bench_function("canonical_json/typical", |b| {
        b.iter(|| canonical_json(black_box(&args)))
    });
    c.bench_function("cache_key/typical", |b| {
        b.iter(|| CacheKey::new(black_box("search"), black_box("lookup"), black_box(&args)))
    });
}

fn filled(n: usize) -> (ResultCache, Vec<CacheKey>) {
    let mut cache = ResultCache::new(CacheLimits {
        max_entries: n,
        max_bytes: usize::MAX / 2,
        max_entry_bytes: 1 << 20,
    });
    let value = Arc::new(json!({"content": [{"type": "text", "text": "result"}]}));
    let now = Instant::now();
    let keys: Vec<CacheKey> = (0..n)
        .map(|i| CacheKey::new("s", "t", &json!({ "i": i })))
        .collect();
    for key in &keys {
        cache.put(
            *key,
            Entry {
                server: "s".into(),
                tool: "t".into(),
                value: value.clone(),
                size: 64,
                expires_at: now + Duration::from_secs(3600),
                produced_at: std::time::SystemTime::now(),
            },
        );
    }
    (cache, keys)
}

fn cache_ops(c: &mut Criterion) {
    for n in [1_000usize, 100_000] {
        let (mut cache, keys) = filled(n);
        let now = Instant::now();
        let mut i = 0usize;
        c.bench_function(&format!("cache_get_hit/{n}"), |b| {
            b.iter(|| {
                i = (i + 7919) % keys.len();
                black_box(cache.get(&keys[i], now));
            })
        });
        let missing = CacheKey::new("s", "t", &json!({"i": "absent"}));
        c.bench_function(&format!("cache_get_miss/{n}"), |b| {
            b.iter(|| black_box(cache.get(&missing, now)))
        });
        let value = Arc::new(json!({"content": []}));
        let mut j = 0u64;
        // A full cache: every put evicts the least recently used entry.
        c.bench_function(&format!("cache_put_evicting/{n}"), |b| {
            b.iter_batched(
                || {
                    j += 1;
                    CacheKey::new("s", "t", &json!({ "new": j }))
                },
                |key| {
                    cache.put(
                        key,
                        Entry {
                            server: "s".into(),
                            tool: "t".into(),
                            value: value.clone(),
                            size: 64,
                            expires_at: now + Duration::from_secs(3600),
                            produced_at: std::time::SystemTime::now(),
                        },
                    )
                },
                BatchSize::SmallInput,
            )
        });
    }
}

fn breaker(c: &mut Criterion) {
    let mut closed = Breaker::new(BreakerConfig::default());
    let now = Instant::now();
    c.bench_function("breaker/acquire_and_succeed", |b| {
        b.iter(|| {
            let (verdict, _) = closed.try_acquire(black_box(now));
            black_box(verdict).ok();
            closed.record_success(now)
        })
    });
    let mut open = Breaker::new(BreakerConfig::default());
    for _ in 0..5 {
        open.record_failure(now);
    }
    c.bench_function("breaker/reject_while_open", |b| {
        b.iter(|| black_box(open.try_acquire(black_box(now))))
    });
}

/// What each call adds for the dashboard's charts (`traffic`), with 50 upstreams known.
fn traffic(c: &mut Criterion) {
    let traffic = Traffic::default();
    let names: Vec<ServerName> = (0..50)
        .map(|i| ServerName::parse(&format!("upstream-{i}")).unwrap())
        .collect();
    for name in &names {
        traffic.record(name, Duration::from_millis(3), true, CacheUse::Miss);
    }
    let latency = Duration::from_micros(2500);
    c.bench_function("traffic/record_call", |b| {
        b.iter(|| traffic.record(black_box(&names[7]), latency, true, CacheUse::Miss))
    });
}

criterion_group!(benches, keys, cache_ops, breaker, traffic);
criterion_main!(benches);
