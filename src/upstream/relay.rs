//! What an upstream sends back during a tool call that belongs to whoever made the call:
//! progress, log messages, and its own requests for sampling and elicitation. The caller
//! (the `/mcp` endpoint) hands a [`Relay`] with the call; the session's [`Relays`] table
//! finds the relay for each message and the caller passes it on to its own client.
//!
//! Progress names its call by token. A request from the upstream names its call when it
//! comes on that call's HTTP response stream (rmcp marks it); over stdio or the GET
//! stream nothing names it, so it goes to the client of the calls in flight when they all
//! come from one client (one `/mcp` session: three parallel calls of one agent are still
//! one client; each sessionless 2026-07-28 call is a client of its own, and one parked
//! waiting for its client's input does not count), and is refused when calls of several
//! clients are in flight: sending one
//! client's prompt to another is worse than failing. Log messages never name a call; they
//! follow the same rule, and otherwise go to our own log.
//!
//! rmcp hands each notification to its own task, so one sent just before a call's result
//! may be looked up just after the result arrived. A finished call therefore stays in
//! the table, marked finished, for [`LINGER`]: notifications still find it, new requests
//! from the upstream do not.

// Sampling and logging are deprecated in 2026-07-28; clients before it still use them.
#![allow(deprecated)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::ErrorData;
use rmcp::model::{
    CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams, ElicitResult,
    LoggingMessageNotificationParam, ProgressNotificationParam, ProgressToken, RequestId,
};
use tokio::sync::{Notify, mpsc, oneshot};

/// How long a message may wait for its call's registration, which follows the send.
const REGISTRATION_GRACE: Duration = Duration::from_secs(1);
/// How long a finished call still takes its late notifications.
/// Generous: under load rmcp's notification tasks can run well after the result.
pub const LINGER: Duration = Duration::from_secs(2);

pub enum RelayItem {
    /// Progress of the call; the relay puts the caller's own token on it.
    Progress(ProgressNotificationParam),
    Log(LoggingMessageNotificationParam),
    Sample(
        CreateMessageRequestParams,
        oneshot::Sender<Result<CreateMessageResult, ErrorData>>,
    ),
    Elicit(
        ElicitRequestParams,
        oneshot::Sender<Result<ElicitResult, ErrorData>>,
    ),
}

/// Sends `request` on `peer` with `relay` taking what the upstream sends back during it:
/// the request is sent by hand, to learn its id and progress token, which tell which
/// messages belong to it.
pub async fn send_relayed(
    peer: &rmcp::Peer<rmcp::RoleClient>,
    relays: &Relays,
    request: rmcp::model::ClientRequest,
    relay: Relay,
) -> Result<rmcp::model::ServerResult, rmcp::ServiceError> {
    let registration = relays.register(relay);
    let handle = peer
        .send_request_with_option(request, rmcp::service::PeerRequestOptions::no_options())
        .await?;
    registration.sent(handle.id.clone(), handle.progress_token.clone());
    handle.await_response().await
}

/// The `_meta` key under which an upstream may name the key its request is shown to a
/// 2026-07-28 client under (see `mcp::input`); the only part of an upstream request's
/// `_meta` passed on (its progress token is its own business).
pub const INPUT_KEY_META: &str = "io.omni-bridge/inputKey";

/// The receiving end of a call's [`Relay`].
///
/// Items are boxed: tokio allocates a channel's first block of 32 slots when the channel
/// is made, every call has one, and it stays allocated while the call's entry lingers
/// (`LINGER`) after the call. Holding a `RelayItem` (about a hundred bytes) each slot made
/// that 3.4 KiB per call; at thousands of `/mcp` calls a second it held 100 MiB at once.
/// Boxed, the block is a quarter KiB, and only a message that comes is allocated.
pub type Relayed = mpsc::Receiver<Box<RelayItem>>;

/// Where one call's messages go, and which client made the call.
#[derive(Clone, Debug)]
pub struct Relay {
    tx: mpsc::Sender<Box<RelayItem>>,
    client: u64,
    /// Set while the call waits for its client's input (a parked 2026-07-28 call): it
    /// takes no unnamed request then, so it makes no other call's ambiguous.
    waiting: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    /// `client` names the caller's client (an `/mcp` session): calls with the same
    /// number may take each other's unnamed requests.
    pub fn new(tx: mpsc::Sender<Box<RelayItem>>, client: u64) -> Self {
        Self {
            tx,
            client,
            waiting: Arc::default(),
        }
    }

    /// The flag that says the call waits for its client (see the field).
    pub fn waiting(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.waiting.clone()
    }

    fn is_waiting(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues `item`, waiting for room; false if the caller has gone.
    pub async fn send(&self, item: RelayItem) -> bool {
        self.tx.send(Box::new(item)).await.is_ok()
    }

    /// Queues `item` if there is room; false if it was dropped.
    pub fn try_send(&self, item: RelayItem) -> bool {
        self.tx.try_send(Box::new(item)).is_ok()
    }
}

/// A number no other client has, for [`Relay::new`].
pub fn new_client() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

struct Entry {
    relay: Relay,
    /// The request's id and progress token, once it has been sent.
    sent: Option<(RequestId, ProgressToken)>,
    finished: bool,
}

#[derive(Default)]
struct Table {
    next: u64,
    entries: HashMap<u64, Entry>,
    by_request: HashMap<RequestId, u64>,
    by_token: HashMap<ProgressToken, u64>,
    /// Finished calls with the moment each is to be forgotten, oldest first (every call
    /// lingers as long, so finishing order is expiry order).
    lingering: VecDeque<(tokio::time::Instant, u64)>,
    /// The task that forgets the lingering calls as they expire, while there are any.
    /// One per table, not one per call: at thousands of calls a second, a task and a
    /// timer for each were a measurable share of a call's cost.
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

/// Below this many slots a table is not worth shrinking.
const SHRINK_FLOOR: usize = 256;

/// What a collection holding `len` in `room` slots shrinks to: twice what it holds, once
/// it is a quarter full. Halving at most once per quartering keeps removal amortized O(1).
fn shrunk(len: usize, room: usize) -> Option<usize> {
    (room > SHRINK_FLOOR && len * 4 < room).then_some(len * 2)
}

impl Table {
    fn remove(&mut self, n: u64) {
        if let Some(Entry {
            sent: Some((id, token)),
            ..
        }) = self.entries.remove(&n)
        {
            self.by_request.remove(&id);
            self.by_token.remove(&token);
        }
        // Every call lingers here after it ends, so at thousands of calls a second the
        // maps grow to tens of thousands of slots (megabytes), and a map never gives
        // room back by itself (see `shrunk`).
        if let Some(to) = shrunk(self.entries.len(), self.entries.capacity()) {
            self.entries.shrink_to(to);
            self.by_request.shrink_to(to);
            self.by_token.shrink_to(to);
        }
    }

    /// A relay of the one client whose calls `pick` accepts, if they are all one
    /// client's (the latest call's, which is the likeliest to be waiting).
    fn single(&self, pick: impl Fn(&Entry) -> bool) -> Option<Relay> {
        let mut found = self
            .entries
            .iter()
            .filter(|(_, e)| pick(e) && !e.relay.is_waiting());
        let (mut n, first) = found.next()?;
        let mut relay = &first.relay;
        for (m, other) in found {
            if other.relay.client != relay.client {
                return None;
            }
            if m > n {
                (n, relay) = (m, &other.relay);
            }
        }
        Some(relay.clone())
    }

    fn relay_of(&self, n: Option<&u64>) -> Option<&Entry> {
        n.and_then(|n| self.entries.get(n))
    }
}

/// The calls of one upstream session that have a caller to relay to. Cheap to clone.
#[derive(Clone, Default)]
pub struct Relays {
    table: Arc<Mutex<Table>>,
    registered: Arc<Notify>,
}

/// One call in the table, entered before its request is sent (the upstream may answer
/// faster than the sender gets to record what it sent). Marks the call finished when
/// dropped (the call ended, however it ended); the table's sweeper takes it out
/// [`LINGER`] later.
pub struct Registration {
    relays: Relays,
    n: u64,
}

impl Registration {
    /// Records the request's id and progress token once it is sent.
    pub fn sent(&self, id: RequestId, token: ProgressToken) {
        {
            let mut table = self.relays.table.lock().expect("relay table");
            table.by_request.insert(id.clone(), self.n);
            table.by_token.insert(token.clone(), self.n);
            if let Some(entry) = table.entries.get_mut(&self.n) {
                entry.sent = Some((id, token));
            }
        }
        self.relays.registered.notify_waiters();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let runtime = tokio::runtime::Handle::try_current();
        let mut table = self.relays.table.lock().expect("relay table");
        let Ok(runtime) = runtime else {
            // No runtime to wait on (the process is ending): forget it now.
            table.remove(self.n);
            return;
        };
        if let Some(entry) = table.entries.get_mut(&self.n) {
            entry.finished = true;
        }
        let expires = tokio::time::Instant::now() + LINGER;
        table.lingering.push_back((expires, self.n));
        // A sweeper that is gone (its runtime ended) is replaced, or none would come.
        if table.sweeper.as_ref().is_none_or(|s| s.is_finished()) {
            table.sweeper = Some(runtime.spawn(sweep(self.relays.table.clone())));
        }
    }
}

/// Forgets each lingering call of `table` as it expires; ends when none is left.
async fn sweep(table: Arc<Mutex<Table>>) {
    loop {
        let next = {
            let mut table = table.lock().expect("relay table");
            let now = tokio::time::Instant::now();
            while let Some(&(expires, n)) = table.lingering.front()
                && expires <= now
            {
                table.lingering.pop_front();
                table.remove(n);
            }
            if let Some(to) = shrunk(table.lingering.len(), table.lingering.capacity()) {
                table.lingering.shrink_to(to);
            }
            match table.lingering.front() {
                Some(&(expires, _)) => expires,
                None => {
                    table.sweeper = None;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}

impl Relays {
    /// Enters a call about to be sent.
    pub fn register(&self, relay: Relay) -> Registration {
        let mut table = self.table.lock().expect("relay table");
        table.next += 1;
        let n = table.next;
        let entry = Entry {
            relay,
            sent: None,
            finished: false,
        };
        table.entries.insert(n, entry);
        Registration {
            relays: self.clone(),
            n,
        }
    }

    /// A relay of the client whose calls are in flight, if they are all one client's.
    pub fn only(&self) -> Option<Relay> {
        self.table
            .lock()
            .expect("relay table")
            .single(|e| !e.finished)
    }

    /// Where a log message goes: the client of the calls in flight; with none in
    /// flight, the call that finished last (the message is one of its late ones); with
    /// several clients' calls in flight, nowhere: it cannot be told whose it is.
    pub fn for_log(&self) -> Option<Relay> {
        let table = self.table.lock().expect("relay table");
        if table.entries.values().any(|e| !e.finished) {
            table.single(|e| !e.finished)
        } else {
            table
                .entries
                .iter()
                .max_by_key(|(n, _)| **n)
                .map(|(_, e)| e.relay.clone())
        }
    }

    /// Looks `find` up, waiting briefly for a registration still on its way.
    async fn wait_for(&self, find: impl Fn(&Table) -> Option<Relay>) -> Option<Relay> {
        let deadline = tokio::time::Instant::now() + REGISTRATION_GRACE;
        loop {
            let notified = self.registered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = find(&self.table.lock().expect("relay table")) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    pub async fn for_progress(&self, token: &ProgressToken) -> Option<Relay> {
        self.wait_for(|t| t.relay_of(t.by_token.get(token)).map(|e| e.relay.clone()))
            .await
    }

    /// The relay for a request the upstream sent: its call's, when the transport says
    /// which call it came with, else the only call's.
    pub async fn for_request(&self, origin: Option<&RequestId>) -> Option<Relay> {
        match origin {
            Some(id) => {
                self.wait_for(|t| {
                    t.relay_of(t.by_request.get(id))
                        .filter(|e| !e.finished)
                        .map(|e| e.relay.clone())
                })
                .await
            }
            None => self.only(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> RequestId {
        RequestId::Number(n)
    }

    fn token(n: i64) -> ProgressToken {
        ProgressToken(RequestId::Number(n))
    }

    /// Registers call `n` as sent, made by a client of its own.
    fn sent(relays: &Relays, n: i64, t: i64, tx: mpsc::Sender<Box<RelayItem>>) -> Registration {
        sent_by(relays, n as u64, n, t, tx)
    }

    fn sent_by(
        relays: &Relays,
        client: u64,
        n: i64,
        t: i64,
        tx: mpsc::Sender<Box<RelayItem>>,
    ) -> Registration {
        let registration = relays.register(Relay::new(tx, client));
        registration.sent(id(n), token(t));
        registration
    }

    #[tokio::test]
    async fn a_log_that_beats_the_send_still_finds_its_call() {
        let relays = Relays::default();
        let (tx, _rx) = mpsc::channel(1);
        let registration = relays.register(Relay::new(tx, 1));
        // Entered, not yet sent: logs and unnamed requests already find it.
        assert!(relays.for_log().is_some());
        assert!(relays.for_request(None).await.is_some());
        registration.sent(id(1), token(1));
        assert!(relays.for_progress(&token(1)).await.is_some());
    }

    #[tokio::test]
    async fn calls_are_found_by_id_and_token_and_forgotten_when_done() {
        let relays = Relays::default();
        let (tx, _rx) = mpsc::channel(1);
        let reg = sent(&relays, 1, 7, tx);
        assert!(relays.for_request(Some(&id(1))).await.is_some());
        assert!(relays.for_progress(&token(7)).await.is_some());
        assert!(relays.only().is_some());
        drop(reg);
        // Finished: no more requests, but late messages still arrive for a while.
        assert!(relays.only().is_none());
        assert!(relays.for_progress(&token(7)).await.is_some());
        assert!(relays.for_log().is_some());
        assert!(relays.for_request(Some(&id(1))).await.is_none());
    }

    #[tokio::test]
    async fn a_finished_call_is_forgotten_after_the_linger() {
        let relays = Relays::default();
        let (tx, mut rx) = mpsc::channel(1);
        drop(sent(&relays, 1, 1, tx));
        // The table held the only sender: the channel closes once the call is forgotten.
        let closed = tokio::time::timeout(LINGER * 20, rx.recv()).await;
        assert!(matches!(closed, Ok(None)), "still held after the linger");
        assert!(relays.for_log().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_calls_gives_its_room_back_once_they_are_forgotten() {
        let relays = Relays::default();
        let (tx, _rx) = mpsc::channel(1);
        let burst: Vec<_> = (0..10_000)
            .map(|n| sent(&relays, n, n, tx.clone()))
            .collect();
        let grown = relays.table.lock().unwrap().entries.capacity();
        assert!(grown >= 10_000, "{grown}");
        drop(burst);
        // Time is paused: this sleep passes the linger at once, and the table's sweeper
        // runs when it is polled.
        tokio::time::sleep(LINGER * 2).await;
        let table = || relays.table.lock().unwrap();
        for _ in 0..1_000 {
            if table().entries.is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let table = table();
        assert!(
            table.entries.is_empty(),
            "{} calls still held",
            table.entries.len()
        );
        for capacity in [
            table.entries.capacity(),
            table.by_request.capacity(),
            table.by_token.capacity(),
            table.lingering.capacity(),
        ] {
            assert!(
                capacity <= SHRINK_FLOOR * 2,
                "{capacity} slots kept of {grown}"
            );
        }
    }

    #[tokio::test]
    async fn logs_go_to_the_call_in_flight_not_to_one_that_finished() {
        let relays = Relays::default();
        let (a, _ra) = mpsc::channel(1);
        let (b, mut rb) = mpsc::channel(1);
        drop(sent(&relays, 1, 1, a));
        let _live = sent(&relays, 2, 2, b);
        let relay = relays.for_log().unwrap();
        let log = serde_json::from_value(serde_json::json!({"level": "info", "data": "x"}));
        assert!(relay.try_send(RelayItem::Log(log.unwrap())));
        assert!(rb.try_recv().is_ok());
    }

    #[tokio::test]
    async fn a_late_log_goes_to_the_call_that_finished_last() {
        let relays = Relays::default();
        let (a, mut ra) = mpsc::channel(1);
        let (b, mut rb) = mpsc::channel(1);
        drop(sent(&relays, 1, 1, a));
        drop(sent(&relays, 2, 2, b));
        let log = serde_json::from_value(serde_json::json!({"level": "info", "data": "x"}));
        let relay = relays.for_log().unwrap();
        assert!(relay.try_send(RelayItem::Log(log.unwrap())));
        assert!(rb.try_recv().is_ok() && ra.try_recv().is_err());
    }

    #[tokio::test]
    async fn an_unnamed_request_goes_nowhere_when_several_calls_are_in_flight() {
        let relays = Relays::default();
        let (a, _ra) = mpsc::channel(1);
        let (b, _rb) = mpsc::channel(1);
        let _one = sent(&relays, 1, 1, a);
        assert!(relays.for_request(None).await.is_some());
        let _two = sent(&relays, 2, 2, b);
        assert!(relays.for_request(None).await.is_none());
        assert!(relays.for_request(Some(&id(2))).await.is_some());
    }

    #[tokio::test]
    async fn an_unnamed_request_goes_to_the_one_client_of_several_calls_in_flight() {
        let relays = Relays::default();
        let (a, mut ra) = mpsc::channel(1);
        let (b, mut rb) = mpsc::channel(1);
        let (c, _rc) = mpsc::channel(1);
        let _one = sent_by(&relays, 7, 1, 1, a);
        let _two = sent_by(&relays, 7, 2, 2, b);
        // Both calls are client 7's: its latest call takes the request.
        let log = || serde_json::from_value(serde_json::json!({"level": "info", "data": "x"}));
        let relay = relays.for_request(None).await.expect("one client");
        assert!(relay.try_send(RelayItem::Log(log().unwrap())));
        assert!(rb.try_recv().is_ok() && ra.try_recv().is_err());
        assert!(relays.for_log().is_some());
        // Another client's call makes it ambiguous again.
        let _three = sent_by(&relays, 8, 3, 3, c);
        assert!(relays.for_request(None).await.is_none());
        assert!(relays.for_log().is_none());
    }

    #[tokio::test]
    async fn a_call_waiting_for_its_client_makes_no_other_call_ambiguous() {
        let relays = Relays::default();
        let (a, _ra) = mpsc::channel(1);
        let (b, mut rb) = mpsc::channel(1);
        let parked = Relay::new(a, 1);
        let _one = relays.register(parked.clone());
        let _two = sent_by(&relays, 2, 2, 2, b);
        // Two clients' calls in flight: refused.
        assert!(relays.for_request(None).await.is_none());
        // The first waits for its client (parked): the second's request is its own.
        parked
            .waiting()
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let relay = relays
            .for_request(None)
            .await
            .expect("the one call not waiting");
        let log = serde_json::from_value(serde_json::json!({"level": "info", "data": "x"}));
        assert!(relay.try_send(RelayItem::Log(log.unwrap())));
        assert!(rb.try_recv().is_ok());
        // Resumed, it counts again.
        parked
            .waiting()
            .store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(relays.for_request(None).await.is_none());
    }

    #[tokio::test]
    async fn a_message_waits_for_the_registration_that_follows_the_send() {
        let relays = Relays::default();
        let waiting = {
            let relays = relays.clone();
            tokio::spawn(async move { relays.for_progress(&token(3)).await.is_some() })
        };
        tokio::task::yield_now().await;
        let (tx, _rx) = mpsc::channel(1);
        let _reg = sent(&relays, 3, 3, tx);
        assert!(waiting.await.unwrap());
    }
}
