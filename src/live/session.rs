//! SessionActor: one per WebSocket connection. It reads the client's frames (subscribe,
//! unsubscribe, pong), pings on a timer and closes a silent client, and deregisters from
//! the hub in one place: when it stops. Writing is done by a separate task that owns the
//! socket and drains a bounded queue, so a blocked socket never blocks the actor or the hub.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_ws::{CloseCode, CloseReason, Message, ProtocolError};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::LiveSettings;
use super::filter::{auth_key, parse_client_message};
use super::frames::FrameBudget;
use super::hub::{EventHub, Join, Leave, SetFilter};
use super::outgoing::{CloseWith, Outgoing};
use crate::auth::{Caller, KeyRing};
use crate::metrics::Metrics;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Whether the session may receive events yet.
pub enum Access {
    /// Authenticated (or the gateway runs open): who, and so the servers it may see.
    Granted(Caller),
    /// No key in the upgrade request: the first message must be `{"action": "auth",
    /// "key": ...}`, checked against these keys.
    Pending(KeyRing),
}

pub struct SessionActor {
    id: u64,
    hub: Addr<EventHub>,
    queue: mpsc::Sender<Outgoing>,
    close: Option<oneshot::Sender<CloseReason>>,
    settings: LiveSettings,
    metrics: Arc<Metrics>,
    last_heard: Instant,
    strikes: u32,
    window: (Instant, u32),
    access: Access,
    /// The frame size the client may send now (small until it authenticates).
    budget: Arc<FrameBudget>,
}

impl SessionActor {
    /// Starts the actor and its writer for an upgraded connection.
    pub fn start(
        session: actix_ws::Session,
        stream: actix_ws::MessageStream,
        hub: Addr<EventHub>,
        settings: LiveSettings,
        metrics: Arc<Metrics>,
        access: Access,
        budget: Arc<FrameBudget>,
    ) -> Addr<Self> {
        let (queue, rx) = mpsc::channel(settings.queue);
        let (close_tx, close_rx) = oneshot::channel();
        actix_rt::spawn(write_loop(session, rx, close_rx, settings.close_grace));
        let stream = stream.max_frame_size(settings.max_frame);
        SessionActor::create(move |ctx| {
            ctx.add_stream(stream);
            SessionActor {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                hub,
                queue,
                close: Some(close_tx),
                settings,
                metrics,
                last_heard: Instant::now(),
                strikes: 0,
                window: (Instant::now(), 0),
                access,
                budget,
            }
        })
    }

    fn send_json(&mut self, value: serde_json::Value, ctx: &mut Context<Self>) {
        if self
            .queue
            .try_send(Outgoing::Text(value.to_string().into()))
            .is_err()
        {
            self.close_with(CloseWith::slow_consumer(), ctx);
        }
    }

    fn error(&mut self, code: &str, message: &str, ctx: &mut Context<Self>) {
        self.send_json(
            json!({"type": "error", "timestamp": chrono::Utc::now(),
                   "data": {"code": code, "message": message}}),
            ctx,
        );
        self.strikes += 1;
        if self.strikes >= self.settings.max_strikes {
            self.metrics.ws_closed_abuse.inc();
            self.close_with(
                CloseWith::new(CloseCode::Policy, "too many invalid messages"),
                ctx,
            );
        }
    }

    /// The one place a session closes, so each close is counted once: the hub (a full
    /// queue on fan-out) and this actor (a full queue on a ping or error) may both find
    /// the same session too slow, but only the first close counts.
    fn close_with(&mut self, reason: CloseWith, ctx: &mut Context<Self>) {
        if let Some(close) = self.close.take() {
            log::debug!("ws session {} closing: {:?}", self.id, reason.0);
            if reason.0.code == CloseCode::Again {
                self.metrics.ws_dropped_slow.inc();
            }
            let _ = close.send(reason.0);
        }
        ctx.stop();
    }

    fn join(&mut self, caller: Caller, ctx: &mut Context<Self>) {
        self.hub.do_send(Join {
            id: self.id,
            queue: self.queue.clone(),
            session: ctx.address().recipient(),
            key: caller.key,
            allow: caller.allow,
        });
    }

    /// The first message of a session that has not authenticated: its key, or the end.
    fn authenticate(&mut self, text: &str, ctx: &mut Context<Self>) {
        let Access::Pending(ring) = &self.access else {
            return;
        };
        let Some(caller) = auth_key(text).and_then(|key| ring.authenticate(&key)) else {
            self.metrics.ws_closed_abuse.inc();
            return self.close_with(
                CloseWith::new(
                    CloseCode::Policy,
                    "send {\"action\": \"auth\", \"key\": ...} with a valid key first",
                ),
                ctx,
            );
        };
        self.last_heard = Instant::now();
        self.budget.set_limit(self.settings.max_frame);
        self.access = Access::Granted(caller.clone());
        self.join(caller, ctx);
    }

    /// Counts one client message; answers false when the client floods.
    fn within_rate(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window.0).as_secs() >= 1 {
            self.window = (now, 0);
        }
        self.window.1 += 1;
        self.window.1 <= self.settings.max_messages_per_second
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.metrics.session_opened();
        match &self.access {
            Access::Granted(caller) => {
                let caller = caller.clone();
                self.join(caller, ctx);
            }
            Access::Pending(_) => {
                ctx.run_later(self.settings.auth_timeout, |act, ctx| {
                    if matches!(act.access, Access::Pending(_)) {
                        act.close_with(CloseWith::new(CloseCode::Policy, "no API key sent"), ctx);
                    }
                });
            }
        }
        ctx.run_interval(self.settings.ping_interval, |act, ctx| {
            if act.last_heard.elapsed() > act.settings.ping_timeout {
                act.close_with(CloseWith::new(CloseCode::Away, "heartbeat timeout"), ctx);
                return;
            }
            act.send_json(
                json!({"type": "ping", "timestamp": chrono::Utc::now(), "data": {}}),
                ctx,
            );
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.hub.do_send(Leave { id: self.id });
        self.metrics.session_closed();
        if let Some(close) = self.close.take() {
            let _ = close.send(CloseReason {
                code: CloseCode::Normal,
                description: None,
            });
        }
    }
}

impl Handler<CloseWith> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: CloseWith, ctx: &mut Context<Self>) {
        self.close_with(msg, ctx);
    }
}

impl StreamHandler<Result<Message, ProtocolError>> for SessionActor {
    fn handle(&mut self, item: Result<Message, ProtocolError>, ctx: &mut Context<Self>) {
        let message = match item {
            Ok(message) => message,
            Err(ProtocolError::Io(_)) if self.budget.exceeded() => {
                self.metrics.ws_closed_abuse.inc();
                let reason = format!("frame larger than {} bytes", self.budget.limit());
                return self.close_with(CloseWith::new(CloseCode::Size, &reason), ctx);
            }
            Err(ProtocolError::Overflow) => {
                self.metrics.ws_closed_abuse.inc();
                return self.close_with(CloseWith::new(CloseCode::Size, "frame too large"), ctx);
            }
            Err(e) => {
                return self.close_with(CloseWith::new(CloseCode::Protocol, &e.to_string()), ctx);
            }
        };
        if !self.within_rate() {
            self.metrics.ws_closed_abuse.inc();
            return self.close_with(CloseWith::new(CloseCode::Policy, "too many messages"), ctx);
        }
        match message {
            Message::Text(text) if matches!(self.access, Access::Pending(_)) => {
                self.authenticate(&text, ctx);
            }
            Message::Text(text) => match parse_client_message(&text) {
                Ok(filter) => {
                    self.last_heard = Instant::now();
                    self.strikes = 0;
                    if let Some(filter) = filter {
                        self.hub.do_send(SetFilter {
                            id: self.id,
                            filter,
                        });
                    }
                }
                Err(reason) => self.error("invalid-message", &reason, ctx),
            },
            Message::Binary(_) => self.error("invalid-message", "binary frames are not used", ctx),
            Message::Ping(bytes) => {
                self.last_heard = Instant::now();
                let _ = self.queue.try_send(Outgoing::Pong(bytes));
            }
            Message::Pong(_) => self.last_heard = Instant::now(),
            Message::Close(_) => ctx.stop(),
            Message::Continuation(_) | Message::Nop => {}
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Owns the socket: writes queued messages in order until told to close (or the queue
/// ends), then sends the close frame. A close request wins even over a blocked write.
async fn write_loop(
    mut session: actix_ws::Session,
    mut rx: mpsc::Receiver<Outgoing>,
    mut close: oneshot::Receiver<CloseReason>,
    grace: Duration,
) {
    let reason = loop {
        tokio::select! {
            biased;
            reason = &mut close => break reason.ok(),
            next = rx.recv() => {
                let Some(item) = next else { break None };
                let sent = tokio::select! {
                    biased;
                    reason = &mut close => {
                        drop(rx);
                        let _ = tokio::time::timeout(grace, session.close(reason.ok())).await;
                        return;
                    }
                    sent = async {
                        match item {
                            Outgoing::Text(text) => session.text(&*text).await,
                            Outgoing::Pong(bytes) => session.pong(&bytes).await,
                        }
                    } => sent,
                };
                if sent.is_err() {
                    return;
                }
            }
        }
    };
    drop(rx);
    let _ = tokio::time::timeout(grace, session.close(reason)).await;
}
