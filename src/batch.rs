//! Batched writes off the request path: a bounded channel in front, one task that drains
//! it in batches and retries a failed batch until the store takes it. While the store is
//! down, new rows wait in the channel; when that is full, the sender counts what it drops.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::StoreError;

pub const BATCH: usize = 256;

pub fn spawn_writer<T, F, Fut>(what: &'static str, mut rx: mpsc::Receiver<T>, write: F)
where
    T: Clone + Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send,
{
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(row) => batch.push(row),
                    Err(_) => break,
                }
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
}
