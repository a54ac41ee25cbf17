//! Writes upstream events to `health_events` in batches, off every request path. The
//! channel in front of it is bounded; the bus counts what it had to drop.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::events::{Event, EventBus};
use crate::store::Store;
use crate::store::health::NewHealthEvent;

const CHANNEL: usize = 10_000;
const BATCH: usize = 256;

/// Creates the bus and starts its history writer on the current runtime.
pub fn start(store: Store, instance: String) -> EventBus {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(write_loop(store, instance, rx));
    EventBus::new(Some(tx))
}

fn row(event: &Event, instance: &str) -> Option<NewHealthEvent> {
    let server = event.server.as_ref()?;
    Some(NewHealthEvent {
        server: server.to_string(),
        instance: instance.to_owned(),
        event: event.history_name().to_owned(),
        status: event
            .data
            .get("new_status")
            .or_else(|| event.data.get("status"))
            .and_then(|s| s.as_str())
            .map(str::to_owned),
        detail: event.data.to_string(),
        created_at: event.timestamp.naive_utc(),
    })
}

async fn write_loop(store: Store, instance: String, mut rx: mpsc::Receiver<Arc<Event>>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.extend(row(&first, &instance));
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(event) => batch.extend(row(&event, &instance)),
                Err(_) => break,
            }
        }
        // Keep the batch until it is written: the store may be restarting. New events
        // wait in the bounded channel meanwhile.
        let mut delay = Duration::from_millis(100);
        while let Err(e) = store.insert_health_events(batch.clone()).await {
            log::warn!(
                "health history: write of {} events failed, retrying: {e}",
                batch.len()
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        batch.clear();
    }
}
