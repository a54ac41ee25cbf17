//! Gives memory back to the system after a burst of work. glibc's malloc keeps what was
//! freed in its arenas (one per thread that allocated, up to eight per core) for the next
//! allocation; after a load of thousands of calls a second the gateway held 113-128 MiB
//! where it idles at 26 MiB, and kept it. When the gateway has served requests and then
//! finished none for a whole interval, `malloc_trim(0)` hands the free pages of every
//! arena back. Not while requests keep finishing: trimming takes each arena's lock in
//! turn. A request still running then (a long call, an open stream) may wait on one of
//! those locks for the trim's few milliseconds.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::metrics::Metrics;

/// How long the gateway must be quiet before it trims.
pub const QUIET: Duration = Duration::from_secs(2);

/// Starts the trimming thread; it ends with the server whose `metrics` it watches.
pub fn spawn(metrics: &Arc<Metrics>) {
    let metrics = Arc::downgrade(metrics);
    let spawned = std::thread::Builder::new()
        .name("omni-trim".into())
        .spawn(move || {
            let requests = |m: &Weak<Metrics>| m.upgrade().map(|m| m.requests_total());
            let Some(mut seen) = requests(&metrics) else {
                return;
            };
            let mut trimmed = seen;
            loop {
                std::thread::sleep(QUIET);
                let Some(now) = requests(&metrics) else {
                    return;
                };
                // Quiet for a whole interval, with requests since the last trim.
                if now == seen && now != trimmed {
                    trim();
                    trimmed = now;
                }
                seen = now;
            }
        });
    if let Err(e) = spawned {
        log::warn!("memory trimming not started: {e}");
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it takes no
    // pointer of ours.
    let released = unsafe { libc::malloc_trim(0) };
    log::debug!(
        "malloc_trim: {}",
        if released == 1 {
            "memory returned"
        } else {
            "nothing to return"
        }
    );
}

/// Other allocators (musl's) return freed memory themselves, or offer no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
