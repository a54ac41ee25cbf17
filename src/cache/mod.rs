//! The result cache for read-only tool calls: keys, the LRU with TTLs, its actor, and the
//! optional shared tier in Redis.

pub mod actor;
pub mod handle;
pub mod key;
pub mod shared;
pub mod store;

pub use actor::CacheActor;
pub use handle::Cache;
pub use key::CacheKey;
pub use shared::SharedTier;
pub use store::{CacheLimits, CacheStats, Scope};
