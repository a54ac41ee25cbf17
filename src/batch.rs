//! Batched writes off the request path: a bounded channel in front, one task that drains
//! it in batches and retries a failed batch until the store takes it. While the store is
//! down, new rows wait in the channel; when that is full, the sender counts what it drops.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::StoreError;

pub const BATCH: usize = 256;

/// How long the first row of a batch waits for company. A commit costs the store about
/// as much as dozens of rows (on SQLite a WAL append of whole pages, on PostgreSQL a round
/// trip and a flush), so under a steady trickle of calls one commit per call was a fifth
/// of the gateway's CPU; waiting this long turns the trickle into batches. Rows show up in
/// the store at most this much later.
pub const LINGER: Duration = Duration::from_millis(20);

pub fn spawn_writer<T, F, Fut>(what: &'static str, mut rx: mpsc::Receiver<T>, write: F)
where
    T: Clone + Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send,
{
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        let mut open = true;
        while open && let Some(first) = rx.recv().await {
            batch.push(first);
            open = drain(&mut rx, &mut batch);
            // Asleep, not waiting on the channel: rows sent meanwhile wake nobody. A full
            // batch goes at once, so a writer that falls behind never sleeps.
            if open && batch.len() < BATCH {
                tokio::time::sleep(LINGER).await;
                open = drain(&mut rx, &mut batch);
            }
            let mut delay = Duration::from_millis(100);
            while let Err(e) = write(batch.clone()).await {
                log::warn!(
                    "{what}: write of {} rows failed, retrying: {e}",
                    batch.len()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            batch.clear();
        }
    });
}

/// Moves what is queued into `batch`, up to `BATCH`; false once every sender is gone.
fn drain<T>(rx: &mut mpsc::Receiver<T>, batch: &mut Vec<T>) -> bool {
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(row) => batch.push(row),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Rows queued faster than they are written go out in batches of at most `BATCH`, in
    /// order, and a batch the store refuses is written again, whole, until it is taken
    /// (after the writer's first back-off, 100 ms).
    #[tokio::test]
    async fn rows_go_out_in_bounded_batches_and_a_refused_batch_is_retried() {
        let (tx, rx) = mpsc::channel(1000);
        for n in 0..600u32 {
            tx.try_send(n).unwrap();
        }
        let attempts: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let seen = attempts.clone();
        spawn_writer("test rows", rx, move |batch: Vec<u32>| {
            let (seen, done_tx) = (seen.clone(), done_tx.clone());
            async move {
                let mut seen = seen.lock().unwrap();
                seen.push(batch.clone());
                // The store refuses the very first write once.
                if seen.len() == 1 {
                    return Err(StoreError::Busy);
                }
                let _ = done_tx.send(batch.len());
                Ok(())
            }
        });
        let mut written = 0;
        while written < 600 {
            written += done_rx.recv().await.unwrap();
        }
        let attempts = attempts.lock().unwrap();
        let sizes: Vec<usize> = attempts.iter().map(Vec::len).collect();
        assert_eq!(sizes, [BATCH, BATCH, BATCH, 600 - 2 * BATCH]);
        assert_eq!(
            attempts[0], attempts[1],
            "the refused batch is retried whole"
        );
        let rows: Vec<u32> = attempts[1..].iter().flatten().copied().collect();
        assert_eq!(
            rows,
            (0..600).collect::<Vec<_>>(),
            "every row once, in order"
        );
    }

    /// A writer whose batches are sent to the returned channel as they are written.
    fn recording_writer(rx: mpsc::Receiver<u32>) -> mpsc::UnboundedReceiver<Vec<u32>> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        spawn_writer("test rows", rx, move |batch: Vec<u32>| {
            let done_tx = done_tx.clone();
            async move {
                let _ = done_tx.send(batch);
                Ok(())
            }
        });
        done_rx
    }

    /// Rows that trickle in within `LINGER` of the first are one commit, not one each;
    /// a row after that starts the next batch. (Paused clock: the timing is exact.)
    #[tokio::test(start_paused = true)]
    async fn a_trickle_of_rows_is_written_together() {
        let (tx, rx) = mpsc::channel(100);
        let mut written = recording_writer(rx);
        let started = tokio::time::Instant::now();
        tx.send(1).await.unwrap();
        tokio::time::sleep(LINGER / 4).await;
        tx.send(2).await.unwrap();
        tokio::time::sleep(LINGER / 4).await;
        tx.send(3).await.unwrap();
        assert_eq!(written.recv().await.unwrap(), [1, 2, 3]);
        assert_eq!(
            started.elapsed(),
            LINGER,
            "written when the first row's wait ran out"
        );
        tokio::time::sleep(LINGER * 2).await;
        tx.send(4).await.unwrap();
        assert_eq!(written.recv().await.unwrap(), [4]);
    }

    /// When the senders go (shutdown), what is waiting is written and the writer ends.
    #[tokio::test(start_paused = true)]
    async fn rows_waiting_when_the_senders_go_are_written_and_the_writer_ends() {
        let (tx, rx) = mpsc::channel(100);
        let mut written = recording_writer(rx);
        tx.send(1).await.unwrap();
        tokio::task::yield_now().await;
        tx.send(2).await.unwrap();
        drop(tx);
        assert_eq!(written.recv().await.unwrap(), [1, 2]);
        assert!(written.recv().await.is_none(), "the writer ended");
    }

    /// Rows that come faster than one batch per linger are written in full batches back
    /// to back: the writer sleeps only when a batch is short.
    #[tokio::test(start_paused = true)]
    async fn a_writer_behind_does_not_sleep_between_full_batches() {
        let (tx, rx) = mpsc::channel(10 * BATCH);
        for n in 0..(3 * BATCH) as u32 {
            tx.try_send(n).unwrap();
        }
        let mut written = recording_writer(rx);
        let started = tokio::time::Instant::now();
        for _ in 0..3 {
            assert_eq!(written.recv().await.unwrap().len(), BATCH);
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
