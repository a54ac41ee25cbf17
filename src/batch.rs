//! Batched writes off the request path: a bounded channel in front, one task that drains
//! it in batches. While the store is down (busy, unreachable) a batch is retried whole
//! until the store takes it, and new rows wait in the channel; when that is full, the
//! sender counts what it drops. A batch the store *refuses* (a row it cannot hold, a
//! table that went missing) never blocks the rows behind it: missing tables are created
//! again ([`Sink::repair`]), and otherwise the batch is split until the refused row is
//! alone, which is written once more in a sanitized form or dropped, counted and logged.
//! At close ([`Closing`]), what is waiting gets a bounded attempt; the rest is counted.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::store::StoreError;

pub const BATCH: usize = 256;

/// How long the first row of a batch waits for company. A commit costs the store about
/// as much as dozens of rows (on SQLite a WAL append of whole pages, on PostgreSQL a round
/// trip and a flush), so under a steady trickle of calls one commit per call was a fifth
/// of the gateway's CPU; waiting this long turns the trickle into batches. Rows show up in
/// the store at most this much later.
pub const LINGER: Duration = Duration::from_millis(20);

pub use crate::store::migrate::Repair;

/// What the writer does besides writing: all optional.
pub struct Sink<T> {
    /// A row's form with anything a store may refuse (control characters) taken out.
    pub sanitize: Option<fn(T) -> T>,
    /// Creates missing tables again (runs the migrations).
    pub repair: Option<Repair>,
    /// Called with each count of rows that never reached the store.
    pub lost: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// Cancelled when the writer should write what waits, within `grace`, and end.
    pub closing: Option<Closing>,
}

impl<T> Default for Sink<T> {
    fn default() -> Self {
        Self {
            sanitize: None,
            repair: None,
            lost: None,
            closing: None,
        }
    }
}

/// Ends a writer: [`Closing::close`] asks, waits until it is done.
#[derive(Clone)]
pub struct Closing {
    token: CancellationToken,
    grace: Duration,
    done: Arc<tokio::sync::Mutex<Option<oneshot::Receiver<()>>>>,
    done_tx: Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>,
}

impl Closing {
    pub fn new(grace: Duration) -> Self {
        let (tx, rx) = oneshot::channel();
        Self {
            token: CancellationToken::new(),
            grace,
            done: Arc::new(tokio::sync::Mutex::new(Some(rx))),
            done_tx: Arc::new(std::sync::Mutex::new(Some(tx))),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Asks the writer to finish and waits for it (at most its grace and a moment more).
    pub async fn close(&self) {
        self.token.cancel();
        if let Some(done) = self.done.lock().await.take() {
            let _ = tokio::time::timeout(self.grace + Duration::from_secs(1), done).await;
        }
    }

    fn finished(&self) {
        if let Some(tx) = self.done_tx.lock().expect("closing").take() {
            let _ = tx.send(());
        }
    }
}

/// How the writer treats a failed write.
enum Failure {
    /// The store is down or busy: the same rows will do later.
    Transient,
    /// A table is gone (the database was dropped and made again).
    MissingTable,
    /// The store will never take these rows as they are.
    Refused,
}

fn classify(e: &StoreError) -> Failure {
    match e {
        StoreError::Busy | StoreError::Unavailable(_) => Failure::Transient,
        e if e.is_missing_table() => Failure::MissingTable,
        _ => Failure::Refused,
    }
}

/// Writes one batch: transient failures are retried (until `deadline`, which closing
/// sets if it comes first); refused rows are split out, sanitized once, or dropped.
/// Answers how many rows were lost.
async fn write_batch<T, F, Fut>(
    what: &str,
    rows: Vec<T>,
    write: &F,
    sink: &Sink<T>,
    mut deadline: Option<tokio::time::Instant>,
) -> u64
where
    T: Clone + Send,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    // A stack of pieces still to write, so one bad row costs log2(BATCH) extra writes.
    let mut pieces = vec![(rows, false)];
    let mut lost = 0;
    let mut delay = Duration::from_millis(100);
    let mut repaired = false;
    let closing = sink.closing.as_ref();
    while let Some((piece, sanitized)) = pieces.pop() {
        if deadline.is_none()
            && let Some(closing) = closing.filter(|c| c.is_closed())
        {
            deadline = Some(tokio::time::Instant::now() + closing.grace);
        }
        let result = write(piece.clone()).await;
        let Err(e) = result else { continue };
        match classify(&e) {
            Failure::Transient | Failure::MissingTable
                if deadline.is_some_and(|d| tokio::time::Instant::now() + delay > d) =>
            {
                log::error!(
                    "{what}: {} rows not written before the deadline: {e}",
                    piece.len()
                );
                lost += piece.len() as u64;
            }
            Failure::Transient => {
                log::warn!(
                    "{what}: write of {} rows failed, retrying: {e}",
                    piece.len()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                pieces.push((piece, sanitized));
            }
            Failure::MissingTable => {
                match (&sink.repair, repaired) {
                    (Some(repair), false) => {
                        log::warn!("{what}: a table is missing ({e}); running the migrations");
                        if let Err(e) = repair().await {
                            log::error!("{what}: migrations failed: {e}");
                        }
                        repaired = true;
                    }
                    _ => {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        repaired = false;
                    }
                }
                pieces.push((piece, sanitized));
            }
            Failure::Refused if piece.len() > 1 => {
                let mut first = piece;
                let second = first.split_off(first.len() / 2);
                pieces.push((second, sanitized));
                pieces.push((first, sanitized));
            }
            Failure::Refused => match (sink.sanitize, sanitized) {
                (Some(sanitize), false) => {
                    log::warn!("{what}: the store refused a row ({e}); writing it sanitized");
                    pieces.push((piece.into_iter().map(sanitize).collect(), true));
                }
                _ => {
                    log::error!("{what}: the store refused a row, which is dropped: {e}");
                    lost += 1;
                }
            },
        }
    }
    lost
}

/// Starts the writer: rows from `rx`, written by `write`, with what `sink` adds.
pub fn spawn_writer<T, F, Fut>(
    what: &'static str,
    mut rx: mpsc::Receiver<T>,
    write: F,
    sink: Sink<T>,
) where
    T: Clone + Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send,
{
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        let closing = sink.closing.clone();
        let token = closing
            .as_ref()
            .map(|c| c.token.clone())
            .unwrap_or_default();
        let report = |n: u64| {
            if n > 0
                && let Some(lost) = &sink.lost
            {
                lost(n);
            }
        };
        loop {
            let first = tokio::select! {
                biased;
                _ = token.cancelled() => break,
                first = rx.recv() => first,
            };
            let Some(first) = first else { break };
            batch.push(first);
            let mut open = drain(&mut rx, &mut batch);
            // Asleep, not waiting on the channel: rows sent meanwhile wake nobody. A full
            // batch goes at once, so a writer that falls behind never sleeps.
            if open && batch.len() < BATCH {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = tokio::time::sleep(LINGER) => {}
                }
                open = drain(&mut rx, &mut batch);
            }
            if token.is_cancelled() {
                break;
            }
            let rows = std::mem::take(&mut batch);
            report(write_batch(what, rows, &write, &sink, None).await);
            if !open {
                break;
            }
        }
        // Closing (or every sender gone): what waits gets one bounded attempt.
        rx.close();
        while let Some(row) = rx.recv().await {
            batch.push(row);
        }
        if !batch.is_empty() {
            let grace = closing.as_ref().map_or(Duration::from_secs(5), |c| c.grace);
            let deadline = tokio::time::Instant::now() + grace;
            let total = batch.len();
            let mut lost = 0;
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(BATCH));
                let chunk = std::mem::replace(&mut batch, rest);
                lost += write_batch(what, chunk, &write, &sink, Some(deadline)).await;
            }
            if lost > 0 {
                log::error!("{what}: {lost} of {total} rows waiting at shutdown were not written");
            }
            report(lost);
        }
        if let Some(closing) = closing {
            closing.finished();
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
        spawn_writer(
            "test rows",
            rx,
            move |batch: Vec<u32>| {
                let (seen, done_tx) = (seen.clone(), done_tx.clone());
                async move {
                    let mut seen = seen.lock().unwrap();
                    seen.push(batch.clone());
                    // The store is busy for the very first write.
                    if seen.len() == 1 {
                        return Err(StoreError::Busy);
                    }
                    let _ = done_tx.send(batch.len());
                    Ok(())
                }
            },
            Sink::default(),
        );
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
        spawn_writer(
            "test rows",
            rx,
            move |batch: Vec<u32>| {
                let done_tx = done_tx.clone();
                async move {
                    let _ = done_tx.send(batch);
                    Ok(())
                }
            },
            Sink::default(),
        );
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

    type Written = std::future::Ready<Result<(), StoreError>>;
    type Taken = Arc<Mutex<Vec<u32>>>;

    /// A store that refuses any batch holding an odd number, and (sanitized) takes a row
    /// made even; answers what it took, and every batch it was offered.
    fn picky_store() -> (impl Fn(Vec<u32>) -> Written + Send + Sync + 'static, Taken) {
        let taken: Arc<Mutex<Vec<u32>>> = Arc::default();
        let store = taken.clone();
        let write = move |batch: Vec<u32>| {
            if batch.iter().any(|n| n % 2 == 1) {
                return std::future::ready(Err(StoreError::Corrupt("odd".into())));
            }
            store.lock().unwrap().extend(batch);
            std::future::ready(Ok(()))
        };
        (write, taken)
    }

    /// One row the store refuses never holds up the others: the batch is split, the bad
    /// row is written sanitized, every other row is written, and later rows flow on.
    #[tokio::test(start_paused = true)]
    async fn a_refused_row_is_split_out_and_sanitized() {
        let (tx, rx) = mpsc::channel(1000);
        let (write, taken) = picky_store();
        let lost: Arc<Mutex<u64>> = Arc::default();
        let counted = lost.clone();
        let closing = Closing::new(Duration::from_secs(1));
        spawn_writer(
            "test rows",
            rx,
            write,
            Sink {
                sanitize: Some(|n| n + 1),
                lost: Some(Arc::new(move |n| *counted.lock().unwrap() += n)),
                closing: Some(closing.clone()),
                ..Sink::default()
            },
        );
        for n in [2, 4, 7, 8, 10] {
            tx.send(n).await.unwrap();
        }
        tokio::time::sleep(LINGER * 2).await;
        tx.send(12).await.unwrap();
        closing.close().await;
        let mut taken = taken.lock().unwrap().clone();
        taken.sort();
        assert_eq!(taken, [2, 4, 8, 8, 10, 12]);
        assert_eq!(*lost.lock().unwrap(), 0);
    }

    /// Without a sanitized form, the refused row is dropped and counted, and only it.
    #[tokio::test(start_paused = true)]
    async fn a_row_refused_for_good_is_dropped_and_counted() {
        let (tx, rx) = mpsc::channel(1000);
        let (write, taken) = picky_store();
        let lost: Arc<Mutex<u64>> = Arc::default();
        let counted = lost.clone();
        let closing = Closing::new(Duration::from_secs(1));
        spawn_writer(
            "test rows",
            rx,
            write,
            Sink {
                lost: Some(Arc::new(move |n| *counted.lock().unwrap() += n)),
                closing: Some(closing.clone()),
                ..Sink::default()
            },
        );
        for n in [2, 3, 4, 5, 6] {
            tx.send(n).await.unwrap();
        }
        tokio::time::sleep(LINGER * 2).await;
        closing.close().await;
        assert_eq!(*taken.lock().unwrap(), [2, 4, 6]);
        assert_eq!(*lost.lock().unwrap(), 2);
    }

    /// At close, rows a down store cannot take within the grace are counted, not lost
    /// silently, and the writer ends.
    #[tokio::test(start_paused = true)]
    async fn rows_a_down_store_holds_at_close_are_counted() {
        let (tx, rx) = mpsc::channel(1000);
        let lost: Arc<Mutex<u64>> = Arc::default();
        let counted = lost.clone();
        let closing = Closing::new(Duration::from_secs(2));
        spawn_writer(
            "test rows",
            rx,
            |_batch: Vec<u32>| std::future::ready(Err(StoreError::Unavailable("down".into()))),
            Sink {
                lost: Some(Arc::new(move |n| *counted.lock().unwrap() += n)),
                closing: Some(closing.clone()),
                ..Sink::default()
            },
        );
        for n in 0..300 {
            tx.send(n).await.unwrap();
        }
        // Let the writer take its first batch into its retries, then close.
        tokio::time::sleep(LINGER * 2).await;
        let started = tokio::time::Instant::now();
        closing.close().await;
        assert!(started.elapsed() <= Duration::from_secs(3));
        assert_eq!(*lost.lock().unwrap(), 300);
    }

    /// A missing table is made again (the migrations run) and the same rows are written.
    #[tokio::test(start_paused = true)]
    async fn a_missing_table_is_repaired_and_the_rows_written() {
        let (tx, rx) = mpsc::channel(10);
        let table = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (exists, created) = (table.clone(), table.clone());
        let taken: Arc<Mutex<Vec<u32>>> = Arc::default();
        let store = taken.clone();
        let closing = Closing::new(Duration::from_secs(1));
        spawn_writer(
            "test rows",
            rx,
            move |batch: Vec<u32>| {
                let result = if exists.load(std::sync::atomic::Ordering::SeqCst) {
                    store.lock().unwrap().extend(batch);
                    Ok(())
                } else {
                    Err(StoreError::Query(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::Unknown,
                        Box::new("relation \"rows\" does not exist".to_owned()),
                    )))
                };
                std::future::ready(result)
            },
            Sink {
                repair: Some(Arc::new(move || {
                    created.store(true, std::sync::atomic::Ordering::SeqCst);
                    Box::pin(std::future::ready(Ok(())))
                })),
                closing: Some(closing.clone()),
                ..Sink::default()
            },
        );
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        tokio::time::sleep(LINGER * 2).await;
        closing.close().await;
        assert_eq!(*taken.lock().unwrap(), [1, 2]);
    }
}
