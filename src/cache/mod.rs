//! The result cache for read-only tool calls: keys, the LRU with TTLs, and its actor.

pub mod actor;
pub mod key;
pub mod store;

pub use actor::CacheActor;
pub use key::CacheKey;
pub use store::{CacheLimits, CacheStats, Scope};
