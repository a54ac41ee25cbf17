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

/// Trims once more at each of this many quiet intervals after the first, when the work
/// before was a burst (`BURST`): what a call leaves behind is freed in the seconds after
/// it (its relay lingers 2 s, an idle keep-alive connection closes after 5 s), and what
/// is freed after a trim would otherwise stay in the arenas until the next burst has come
/// and gone. One run of omni-bench each: 1.53x and 1.56x idle 5 s after the load, where
/// one trim left 1.60x.
const AFTERMATH: u32 = 3;

/// Requests since the last trim that make a burst. A health probe or a metrics scrape
/// every few seconds is not one, and gets the single trim it got before.
const BURST: u64 = 100;

/// Starts the trimming thread; it ends with the server whose `metrics` it watches.
pub fn spawn(metrics: &Arc<Metrics>) {
    let metrics = Arc::downgrade(metrics);
    let spawned = std::thread::Builder::new()
        .name("omni-trim".into())
        .spawn(move || {
            let requests = |m: &Weak<Metrics>| m.upgrade().map(|m| m.requests_total());
            let Some(seen) = requests(&metrics) else {
                return;
            };
            let mut spells = Spells::new(seen);
            loop {
                std::thread::sleep(QUIET);
                let Some(now) = requests(&metrics) else {
                    return;
                };
                if spells.tick(now) {
                    trim();
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("memory trimming not started: {e}");
    }
}

/// When to trim, from the request count read once per `QUIET` interval.
struct Spells {
    /// The count at the last reading.
    seen: u64,
    /// The count at the last first trim of a quiet spell.
    trimmed: u64,
    /// Trims still due in this quiet spell (see `AFTERMATH`).
    due: u32,
}

impl Spells {
    fn new(count: u64) -> Self {
        Self {
            seen: count,
            trimmed: count,
            due: 0,
        }
    }

    /// Whether to trim now, the count being `now`.
    fn tick(&mut self, now: u64) -> bool {
        let quiet = now == self.seen;
        self.seen = now;
        if !quiet {
            self.due = 0;
            false
        } else if now != self.trimmed {
            // Quiet for a whole interval, with requests since the last trim.
            let burst = now.saturating_sub(self.trimmed) >= BURST;
            self.due = if burst { AFTERMATH } else { 0 };
            self.trimmed = now;
            true
        } else if self.due > 0 {
            self.due -= 1;
            true
        } else {
            false
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The trims of `counts`, read one interval apart.
    fn trims(counts: &[u64]) -> Vec<bool> {
        let mut spells = Spells::new(0);
        counts.iter().map(|&now| spells.tick(now)).collect()
    }

    #[test]
    fn a_burst_is_trimmed_then_trimmed_again_while_quiet() {
        let n = BURST;
        assert_eq!(
            trims(&[n, n, n, n, n, n, n]),
            [false, true, true, true, true, false, false]
        );
    }

    #[test]
    fn a_few_requests_get_one_trim() {
        assert_eq!(
            trims(&[3, 3, 3, 3, 4, 4, 4]),
            [false, true, false, false, false, true, false]
        );
    }

    #[test]
    fn requests_end_the_trims_of_a_spell() {
        let n = BURST;
        assert_eq!(
            trims(&[n, n, n, n + 1, n + 1, n + 1]),
            [false, true, true, false, true, false]
        );
    }

    #[test]
    fn nothing_is_trimmed_before_any_request() {
        assert_eq!(trims(&[0, 0, 0]), [false, false, false]);
    }
}
