//! Writes upstream events to `health_events` in batches, off every request path. The
//! channel in front of it is bounded; the bus counts what it had to drop.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::events::{Event, EventBus};
use crate::store::Store;
use crate::store::health::NewHealthEvent;

const CHANNEL: usize = 10_000;

/// Creates the bus and starts its history writer on the current runtime.
pub fn start(store: Store, database: crate::store::DatabaseUrl, instance: String) -> EventBus {
    let bus = EventBus::new(None).with_instance(&instance);
    let (tx, mut events) = mpsc::channel::<Arc<Event>>(CHANNEL);
    let (rows_tx, rows) = mpsc::channel(CHANNEL);
    // Events become rows first, so the writer only deals with rows.
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Some(row) = row(&event, &instance)
                && rows_tx.send(row).await.is_err()
            {
                break;
            }
        }
    });
    let sink = crate::batch::Sink {
        repair: Some(crate::store::migrate::repair(database)),
        ..Default::default()
    };
    crate::batch::spawn_writer(
        "health history",
        rows,
        move |batch| {
            let store = store.clone();
            async move { store.insert_health_events(batch).await }
        },
        sink,
    );
    bus.with_history(tx)
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
