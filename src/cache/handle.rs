//! The cache as the rest of the gateway holds it: one handle for lookups (on the caller's
//! thread, without a message), fills, invalidations and stats, with the shared Redis tier
//! behind it when there is one. Made by starting the configured actor, so a handle never
//! lacks a part of the cache (the gateway once took four parts separately, and one of them,
//! the shared tier, could be set too late and silently ignored).

use std::sync::Arc;
use std::time::SystemTime;

use actix::prelude::*;
use serde_json::Value;

use super::actor::{CacheActor, Generation, GetStats, Invalidate, Reader, Store as Fill};
use super::key::CacheKey;
use super::shared::SharedTier;
use super::store::{CacheStats, Scope};

#[derive(Clone)]
pub struct Cache {
    actor: Addr<CacheActor>,
    reader: Reader,
    generation: Generation,
    shared: Option<SharedTier>,
}

impl Cache {
    /// Starts `actor`, configured with its limits and shared tier, and answers its handle.
    pub fn start(actor: CacheActor) -> Self {
        let (reader, generation, shared) = (actor.reader(), actor.generation(), actor.shared());
        Self {
            actor: actor.start(),
            reader,
            generation,
            shared,
        }
    }

    /// The live local entry for `key`: its value and when the upstream produced it.
    pub fn lookup(&self, key: &CacheKey) -> Option<(Arc<Value>, SystemTime)> {
        self.reader.lookup(key)
    }

    /// The invalidation counter, read before an upstream call: a fill made after an
    /// invalidation it did not see is refused.
    pub fn generation(&self) -> &Generation {
        &self.generation
    }

    /// The tier every instance shares, when Redis is configured.
    pub fn shared(&self) -> Option<&SharedTier> {
        self.shared.as_ref()
    }

    /// Keeps a result; answers whether it was kept.
    pub async fn fill(&self, fill: Fill) -> bool {
        self.actor.send(fill).await.unwrap_or(false)
    }

    /// Drops the entries of `scope`, here and in the shared tier; answers how many were
    /// dropped here, once Redis is clear too.
    pub async fn invalidate(&self, scope: Scope, reason: String) -> Result<usize, MailboxError> {
        self.actor.send(Invalidate { scope, reason }).await
    }

    pub async fn stats(&self) -> Result<CacheStats, MailboxError> {
        self.actor.send(GetStats).await
    }
}
