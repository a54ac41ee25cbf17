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
