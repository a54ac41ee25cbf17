//! The audit log of tool calls: one `tool_invocations` row per call, written in batches off
//! the request path. Rows wait in a bounded buffer while the store is down; if it
//! overflows, the loss is counted and logged, never silent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::store::Store;
use crate::store::invocations::NewInvocation;

const BUFFER: usize = 10_000;

#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<NewInvocation>,
    dropped: Arc<AtomicU64>,
    /// The same count, for Prometheus.
    dropped_metric: Counter,
}

impl AuditLog {
    /// Starts the writer on the current runtime.
    pub fn start(store: Store, dropped_metric: Counter) -> Self {
        let (tx, rx) = mpsc::channel(BUFFER);
        crate::batch::spawn_writer("audit log", rx, move |batch| {
            let store = store.clone();
            async move { store.insert_invocations(batch).await }
        });
        Self {
            tx,
            dropped: Arc::default(),
            dropped_metric,
        }
    }

    pub fn record(&self, row: NewInvocation) {
        if self.tx.try_send(row).is_err() {
            self.dropped_metric.inc();
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                log::error!("audit buffer full: {n} tool_invocations rows lost so far");
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
