//! CacheActor: the result cache inside an actix actor. Handlers are synchronous and short;
//! nothing here awaits. It also listens to the event bus and drops an upstream's entries
//! when the upstream restarts, reloads, is reset, changes its tools, or is reconfigured or
//! removed.
//!
//! Every change to the cache (fill, invalidation, sweep) goes through the actor; a lookup
//! does not. A lookup is the whole of a cached call, and a message there and back costs two
//! cross-thread wake-ups, more than the lookup itself (the profile of cached calls at
//! concurrency 64 put the kernel's task switching at a fifth of the gateway's time). So the
//! LRU sits behind a mutex that a [`Reader`] locks for one `get`, on the caller's thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{Value, json};

use super::key::CacheKey;
use super::shared::SharedTier;
use super::store::{CacheLimits, CacheStats, Entry, ResultCache, Scope};
use crate::events::{BusNote, Event, EventBus, EventType, HealthKind};

/// Health events after which an upstream's cached results may be wrong.
const INVALIDATING_EVENTS: &[HealthKind] = &[
    HealthKind::Restarted,
    HealthKind::Reloading,
    HealthKind::Reset,
    HealthKind::ToolsChanged,
    // The upstream's own word that its tools or resources changed.
    HealthKind::ListChanged,
    HealthKind::Reconfigured,
    HealthKind::Removed,
];

/// Looks up results without a message to the actor (see the module's comment).
#[derive(Clone)]
pub struct Reader(Arc<Mutex<ResultCache>>);

impl Reader {
    /// The live entry for `key`, if any; counts a hit or a miss and refreshes its recency.
    /// The cached value and when the upstream produced it.
    pub fn lookup(&self, key: &CacheKey) -> Option<(Arc<Value>, std::time::SystemTime)> {
        lock(&self.0)
            .get(key, Instant::now())
            .map(|e| (e.value, e.produced_at))
    }
}

/// Every holder of the lock does one short synchronous step, so a poisoned lock only means
/// a panic mid-step; the cache's own invariants are kept per step, so go on with it.
fn lock(cache: &Mutex<ResultCache>) -> MutexGuard<'_, ResultCache> {
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Answers whether the entry was kept: not when it is too large, and not when an
/// invalidation happened after `generation` was read.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Store {
    pub key: CacheKey,
    pub server: String,
    pub tool: String,
    pub value: Arc<Value>,
    pub size: usize,
    pub ttl: Duration,
    /// When the upstream produced the value.
    pub produced_at: std::time::SystemTime,
    /// `Generation::current()` read before the upstream was asked.
    pub generation: u64,
}

/// Counts invalidations. A call reads it before it asks the upstream and hands it back
/// with the result: a fill whose generation is behind started before some invalidation,
/// so its result may be what was just invalidated, and it is dropped. One counter for all
/// scopes: invalidations are rare, and a dropped fill only costs the next caller a miss.
/// Readable without a message, so the uncached path gains no round trip.
#[derive(Clone, Default)]
pub struct Generation(Arc<AtomicU64>);

impl Generation {
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn advance(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Message)]
#[rtype(result = "usize")]
pub struct Invalidate {
    pub scope: Scope,
    pub reason: String,
}

#[derive(Message)]
#[rtype(result = "CacheStats")]
pub struct GetStats;

pub struct CacheActor {
    cache: Arc<Mutex<ResultCache>>,
    bus: EventBus,
    sweep_interval: Duration,
    /// The Redis tier, cleared along with this one.
    shared: Option<SharedTier>,
    warmed: Arc<std::sync::atomic::AtomicU64>,
    generation: Generation,
}

impl CacheActor {
    pub fn new(limits: CacheLimits, bus: EventBus, sweep_interval: Duration) -> Self {
        Self {
            cache: Arc::new(Mutex::new(ResultCache::new(limits))),
            bus,
            sweep_interval,
            shared: None,
            warmed: Arc::default(),
            generation: Generation::default(),
        }
    }

    /// The invalidation counter callers read before a call (see `Store`).
    pub fn generation(&self) -> Generation {
        self.generation.clone()
    }

    /// The count of entries the warmer filled, for it to add to and the stats to show.
    pub fn warmed(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.warmed.clone()
    }

    /// Lookups for callers, on their own threads.
    pub fn reader(&self) -> Reader {
        Reader(self.cache.clone())
    }

    /// The Redis tier this cache clears along with its own entries.
    pub fn shared(&self) -> Option<SharedTier> {
        self.shared.clone()
    }

    pub fn with_shared(mut self, shared: Option<SharedTier>) -> Self {
        self.shared = shared;
        self
    }

    /// Drops the entries of `scope` here; answers how many, and the clearing of the
    /// shared tier still to await (the caller's answer waits for it, so nobody is told
    /// an invalidation is done while Redis still serves the old entry).
    fn invalidate(
        &mut self,
        scope: Scope,
        reason: &str,
    ) -> (
        usize,
        Option<impl std::future::Future<Output = ()> + 'static>,
    ) {
        // Before the entries go: a fill that read the old generation is refused from now.
        self.generation.advance();
        let entries = lock(&self.cache).invalidate(&scope);
        let shared = self.shared.clone().map(|shared| {
            let scope = scope.clone();
            let generation = self.generation.clone();
            async move {
                shared.invalidate(&scope).await;
                // Again once Redis is clear: a call that read the old entry from Redis
                // while it was being cleared must not keep it here.
                generation.advance();
            }
        });
        let server = match &scope {
            Scope::Server { server } | Scope::Tool { server, .. } => {
                crate::registry::ServerName::parse(server).ok()
            }
            Scope::All => None,
        };
        let mut data = json!({"entries": entries, "reason": reason});
        if let (Value::Object(fields), Value::Object(extra)) =
            (&mut data, serde_json::to_value(&scope).unwrap_or_default())
        {
            fields.extend(extra);
        }
        self.bus
            .publish(Event::new(EventType::CacheInvalidated, server, data));
        (entries, shared)
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.sweep_interval, |act, _| {
            let dropped = lock(&act.cache).sweep(Instant::now());
            if dropped > 0 {
                log::debug!("cache sweep dropped {dropped} expired entries");
            }
        });
        ctx.add_stream(self.bus.stream());
    }
}

impl StreamHandler<BusNote> for CacheActor {
    fn handle(&mut self, note: BusNote, _ctx: &mut Context<Self>) {
        match note {
            BusNote::Event(event) => {
                let Some(kind) = event.health_kind() else {
                    return;
                };
                if let (true, Some(server)) =
                    (INVALIDATING_EVENTS.contains(&kind), event.server.as_ref())
                {
                    let scope = Scope::Server {
                        server: server.to_string(),
                    };
                    if let (_, Some(shared)) = self.invalidate(scope, kind.as_str()) {
                        actix::spawn(shared);
                    }
                }
            }
            // Missed events may have been invalidations: forget everything rather than
            // serve something stale.
            BusNote::Lagged(n) => {
                log::warn!("cache missed {n} events; dropping every entry to stay correct");
                if let (_, Some(shared)) = self.invalidate(Scope::All, "missed events") {
                    actix::spawn(shared);
                }
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Handler<Store> for CacheActor {
    type Result = bool;

    fn handle(&mut self, msg: Store, _ctx: &mut Context<Self>) -> bool {
        if msg.generation != self.generation.current() {
            log::debug!(
                "[{}] result of {} not cached: an invalidation happened during the call",
                msg.server,
                msg.tool
            );
            return false;
        }
        lock(&self.cache).put(
            msg.key,
            Entry {
                server: msg.server.into(),
                tool: msg.tool.into(),
                value: msg.value,
                size: msg.size,
                expires_at: Instant::now() + msg.ttl,
                produced_at: msg.produced_at,
            },
        )
    }
}

impl Handler<Invalidate> for CacheActor {
    type Result = ResponseFuture<usize>;

    /// Answers once the shared tier is clear too.
    fn handle(&mut self, msg: Invalidate, _ctx: &mut Context<Self>) -> Self::Result {
        let (entries, shared) = self.invalidate(msg.scope, &msg.reason);
        Box::pin(async move {
            if let Some(shared) = shared {
                shared.await;
            }
            entries
        })
    }
}

impl Handler<GetStats> for CacheActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _ctx: &mut Context<Self>) -> Self::Result {
        let mut stats = lock(&self.cache).stats();
        stats.shared = self.shared.as_ref().map(SharedTier::counts);
        stats.warmed = self.warmed.load(std::sync::atomic::Ordering::Relaxed);
        MessageResult(stats)
    }
}
