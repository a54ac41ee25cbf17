//! The audit log of tool calls: one `tool_invocations` row per call, written in batches off
//! the request path. Rows wait in a bounded buffer while the store is down; every row that
//! never reaches the store (the buffer overflowed, the store refused it for good, it was
//! still waiting when the gateway stopped) is counted in `omni_audit_rows_dropped_total`
//! and logged, never lost silently. A row the store refuses (a byte PostgreSQL cannot
//! hold) is written again with control characters replaced, and never blocks the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::batch::{Closing, Sink};
use crate::store::invocations::NewInvocation;
use crate::store::{DatabaseUrl, Store};

const BUFFER: usize = 10_000;

/// How long rows waiting at shutdown may take to reach the store.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<NewInvocation>,
    dropped: Arc<AtomicU64>,
    /// The same count, for Prometheus.
    dropped_metric: Counter,
    closing: Closing,
    /// Calls begun and not yet recorded: close waits for them (their futures are dropped
    /// a moment after the server stops, on the workers' threads).
    in_flight: Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>,
}

/// The row of a call in flight. [`InFlight::finish`] records the call's own row; if the
/// call's future is dropped first (the client went away, the shutdown grace ran out),
/// `cancelled()` is recorded: outcome `cancelled`, status 499. Nothing is built until one
/// of the two happens.
pub struct InFlight<'a, F: FnOnce() -> NewInvocation> {
    audit: &'a AuditLog,
    cancelled: Option<F>,
    started: std::time::Instant,
}

impl<F: FnOnce() -> NewInvocation> InFlight<'_, F> {
    pub fn finish(mut self, row: NewInvocation) {
        self.cancelled = None;
        self.audit.record(row);
    }
}

impl<F: FnOnce() -> NewInvocation> Drop for InFlight<'_, F> {
    fn drop(&mut self) {
        if let Some(cancelled) = self.cancelled.take() {
            let mut row = cancelled();
            row.duration_us = self.started.elapsed().as_micros() as i64;
            self.audit.record(row);
        }
        let (count, done) = &*self.audit.in_flight;
        if count.fetch_sub(1, Ordering::AcqRel) == 1 {
            done.notify_waiters();
        }
    }
}

/// Text with every control character replaced by U+FFFD.
fn printable(text: String) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect()
    } else {
        text
    }
}

/// A row with its text made printable: the form the store is offered once more after it
/// refused the row.
fn sanitize(row: NewInvocation) -> NewInvocation {
    NewInvocation {
        server: printable(row.server),
        tool: printable(row.tool),
        caller: row.caller.map(printable),
        outcome: printable(row.outcome),
        ..row
    }
}

impl AuditLog {
    /// Starts the writer on the current runtime. `database` is where the migrations run
    /// again if the tables go missing.
    pub fn start(store: Store, database: DatabaseUrl, dropped_metric: Counter) -> Self {
        let (tx, rx) = mpsc::channel(BUFFER);
        let dropped: Arc<AtomicU64> = Arc::default();
        let closing = Closing::new(SHUTDOWN_GRACE);
        let (count, metric) = (dropped.clone(), dropped_metric.clone());
        let sink = Sink {
            sanitize: Some(sanitize),
            repair: Some(crate::store::migrate::repair(database)),
            lost: Some(Arc::new(move |n| {
                metric.inc_by(n);
                count.fetch_add(n, Ordering::Relaxed);
            })),
            closing: Some(closing.clone()),
        };
        crate::batch::spawn_writer(
            "audit log",
            rx,
            move |batch| {
                let store = store.clone();
                async move { store.insert_invocations(batch).await }
            },
            sink,
        );
        Self {
            tx,
            dropped,
            dropped_metric,
            closing,
            in_flight: Arc::default(),
        }
    }

    /// A call begins; `cancelled` makes its row should it never finish.
    pub fn begin<F: FnOnce() -> NewInvocation>(&self, cancelled: F) -> InFlight<'_, F> {
        self.in_flight.0.fetch_add(1, Ordering::AcqRel);
        InFlight {
            audit: self,
            cancelled: Some(cancelled),
            started: std::time::Instant::now(),
        }
    }

    pub fn record(&self, row: NewInvocation) {
        if self.closing.is_closed() || self.tx.try_send(row).is_err() {
            self.dropped_metric.inc();
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                log::error!("audit log: {n} tool_invocations rows lost so far");
            }
        }
    }

    /// Waits for the calls in flight to leave their rows, writes what waits (all within
    /// [`SHUTDOWN_GRACE`]) and stops the writer; rows recorded after this are counted as
    /// dropped.
    pub async fn close(&self) {
        let (count, done) = &*self.in_flight;
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            loop {
                let notified = done.notified();
                if count.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        })
        .await;
        self.closing.close().await;
    }
}
