//! The result cache for read-only tool calls: keys, the LRU with TTLs, its actor, and the
//! optional shared tier in Redis.

mod actor;
mod handle;
mod key;
mod shared;
mod store;

// The module's face: the rest of the crate (and the benchmarks) name only these.
pub use actor::{CacheActor, Store as Fill};
pub use handle::Cache;
pub use key::{CacheKey, canonical_json};
pub use shared::SharedTier;
pub use store::{CacheLimits, CacheStats, Entry, ResultCache, Scope};
