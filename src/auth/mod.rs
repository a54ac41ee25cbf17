//! Access control: API keys with roles, per-key allow-lists over `server/tool`, and
//! per-key rate limits. The [`guard`] middleware identifies every request's caller
//! against the [`KeyRing`] and puts its [`Identity`] in the request's extensions, where the
//! handlers that filter by allow-list (tool catalogue, calls, `/mcp`, the live stream)
//! find it; each route's [`door`] then admits or refuses by the [`Access`] declared with
//! the route.

pub mod access;
pub mod allow;
pub mod boundary;
pub mod caller;
pub mod door;
pub mod guard;
pub mod keyring;
pub mod manage;
pub mod rate;
pub mod secret;

pub use access::{Access, Identity};
pub use allow::AllowList;
pub use caller::{Caller, Role};
pub use keyring::KeyRing;
