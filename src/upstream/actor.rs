//! UpstreamActor: one per upstream MCP server. Holds the session, the tool catalogue, the
//! probe timer and the circuit breaker. Tool calls do not pass through its mailbox: once
//! connected it puts a `Lane` (its client handle and the shared breaker) on the status
//! board, callers call on that, and it hears back only what may change its status
//! (`CallFinished`, `BreakerMoved`). Pass-through requests (`Forward`) are rare and still
//! come as messages, each a future spawned in its context.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use futures_util::future::BoxFuture;
use rmcp::ServiceError;
use rmcp::model::{
    ClientRequest, CompleteRequestParams, CompleteResult, GetPromptRequestParams, GetPromptResult,
    JsonObject, PingRequest, Prompt, ReadResourceRequestParams, ReadResourceResult, Resource,
    ResourceTemplate, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::{Peer, RoleClient};
use serde_json::json;
use tokio::sync::mpsc;

use super::breaker::{CircuitState, Transition};
use super::call_error::CallError;
use super::connect::{self, Session, SessionNote, SessionTrouble};
use super::lane::{Judged, Lane, Reports, SharedBreaker, judge};
use super::messages::{BreakerMoved, CallFinished, ChildExited, ChildUp, Shutdown};
use super::status::{BoardEntry, Offers, UpstreamStatus, derive, publish_health, publish_status};
use crate::events::{EventBus, HealthKind};
use crate::registry::{ServerName, ServerSpec};

/// After this many probes in a row fail at the transport level, the session is taken for
/// lost and ended, so that the supervisor reconnects with backoff. rmcp ends a session
/// whose stdio child exits, but its Streamable HTTP client keeps a session to a dead
/// upstream open while every request on it fails.
const LOST_AFTER_PROBES: u32 = 3;

/// How soon a probe follows one that could not reach the upstream: the loss is confirmed
/// (or dismissed) in a second or two, not in three probe intervals.
const CONFIRM_AFTER: Duration = Duration::from_millis(500);

pub struct UpstreamActor {
    spec: ServerSpec,
    /// The most one message from the upstream may hold (see `upstream::oversize`).
    message_limit: usize,
    generation: u64,
    exited: Recipient<ChildExited>,
    up: Recipient<ChildUp>,
    bus: EventBus,
    /// This server's entry of the board: changed only while it is there (see `BoardEntry`).
    board: BoardEntry,
    breaker: SharedBreaker,
    session: Option<Arc<Session>>,
    status: UpstreamStatus,
    exit_reason: Option<String>,
    was_up: bool,
    probe_in_flight: bool,
    /// The last probe failed: unhealthy until one succeeds, whatever calls do.
    probe_failing: bool,
    /// Probes in a row that could not reach the upstream at all.
    unreachable_probes: u32,
}

impl UpstreamActor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: ServerSpec,
        generation: u64,
        exited: Recipient<ChildExited>,
        up: Recipient<ChildUp>,
        bus: EventBus,
        board: BoardEntry,
        breaker: SharedBreaker,
        message_limit: usize,
    ) -> Self {
        Self {
            message_limit,
            spec,
            generation,
            exited,
            up,
            bus,
            board,
            breaker,
            session: None,
            status: UpstreamStatus::Starting,
            exit_reason: None,
            was_up: false,
            probe_in_flight: false,
            probe_failing: false,
            unreachable_probes: 0,
        }
    }

    fn name(&self) -> &ServerName {
        &self.spec.name
    }

    fn health_event(&self, kind: HealthKind, detail: serde_json::Value) {
        publish_health(&self.bus, self.name(), kind, detail);
    }

    fn set_status(&mut self, new: UpstreamStatus, reason: &str) {
        let old = self.status;
        let circuit = self.breaker.lock().state();
        self.board.update(|s| {
            s.status = new;
            s.circuit = circuit;
        });
        if old == new {
            return;
        }
        self.status = new;
        publish_status(&self.bus, self.name(), old, new, circuit, reason);
    }

    /// The status that the breaker and the last probe imply, once connected.
    fn derived_status(&self) -> UpstreamStatus {
        let breaker = self.breaker.lock();
        derive(
            self.probe_failing,
            breaker.state(),
            breaker.consecutive_failures(),
        )
    }

    fn on_transition(&mut self, transition: Transition, ctx: &mut Context<Self>) {
        // The board first: observers of the event (the /mcp catalogue) read it.
        let (circuit, failures) = {
            let breaker = self.breaker.lock();
            (breaker.state(), breaker.consecutive_failures())
        };
        self.board.update(|s| s.circuit = circuit);
        match transition {
            Transition::Opened { cooldown } => {
                self.health_event(
                    HealthKind::CircuitOpened,
                    json!({"cooldown_ms": cooldown.as_millis() as u64,
                           "consecutive_failures": failures}),
                );
                // Let a probe be the trial as soon as the cool-down ends.
                ctx.run_later(cooldown, |act, ctx| act.probe(ctx));
            }
            Transition::HalfOpened => self.health_event(HealthKind::CircuitHalfOpen, json!({})),
            Transition::Closed => self.health_event(HealthKind::CircuitClosed, json!({})),
        }
    }

    fn record(&mut self, ok: bool, error: Option<String>, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let transition = if ok {
            self.breaker.lock().record_success(now)
        } else {
            self.breaker.lock().record_failure(now)
        };
        self.recorded(transition, error, ctx);
    }

    /// What follows an outcome the breaker has counted: events, last error, status.
    fn recorded(
        &mut self,
        transition: Option<Transition>,
        error: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(t) = transition {
            self.on_transition(t, ctx);
        }
        if let Some(error) = &error {
            self.board.update(|s| s.last_error = Some(error.clone()));
        }
        if self.session.is_some() {
            let reason = error.as_deref().unwrap_or("answering");
            let new = self.derived_status();
            if self.status == UpstreamStatus::Unhealthy && new != UpstreamStatus::Unhealthy {
                self.health_event(HealthKind::Recovered, json!({}));
            }
            self.set_status(new, reason);
        }
    }

    fn exit(&mut self, reason: String, ctx: &mut Context<Self>) {
        if self.exit_reason.is_none() {
            self.exit_reason = Some(reason);
        }
        ctx.stop();
    }

    fn on_connected(&mut self, session: Session, ctx: &mut Context<Self>) {
        let info = session.info.as_ref().and_then(|i| {
            i.server_info
                .as_ref()
                .map(|s| json!({"name": s.name, "version": s.version, "protocol": i.protocol_version.to_string()}))
        });
        let offers = session
            .info
            .as_ref()
            .map_or_else(Offers::default, |i| Offers {
                resources: i.capabilities.resources.is_some(),
                prompts: i.capabilities.prompts.is_some(),
            });
        let pid = session.pid;
        let lane = Lane::new(
            self.name().to_string(),
            self.generation,
            &session,
            self.spec.timeout,
            self.breaker.clone(),
            Reports {
                finished: ctx.address().recipient(),
                moved: ctx.address().recipient(),
            },
        );
        self.session = Some(Arc::new(session));
        self.board.update(|s| {
            s.lane = Some(lane);
            s.pid = pid;
            s.server_info = info;
            s.offers = offers;
        });
        self.refresh_tools(ctx, true);
    }

    /// Re-reads the catalogue. The first time, success makes the upstream healthy.
    fn refresh_tools(&mut self, ctx: &mut Context<Self>, first: bool) {
        let Some(session) = &self.session else { return };
        let peer = session.peer.clone();
        let timeout = self.spec.timeout;
        let started = Instant::now();
        let fut = async move { connect::list_tools(&peer, timeout).await };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(tools) => {
                        let count = tools.len();
                        let tools = Arc::new(tools);
                        act.board.update(|s| {
                            s.tools = tools;
                            s.last_error = None;
                        });
                        if first {
                            act.was_up = true;
                            // The catalogue read at connect is the first probe: the page
                            // shows a latency and a last probe from the start, not one
                            // interval (up to minutes) later. Not counted by the breaker,
                            // like the connection itself.
                            let rtt = started.elapsed().as_secs_f64() * 1000.0;
                            act.board.update(|s| {
                                s.connected_since = Some(Utc::now());
                                s.last_probe_at = Some(Utc::now());
                                s.last_probe_ok = Some(true);
                                s.latency_ms = Some(rtt);
                            });
                            act.set_status(UpstreamStatus::Healthy, "connected");
                            act.health_event(HealthKind::Connected, json!({"tool_count": count}));
                            let _ = act.up.try_send(ChildUp {
                                name: act.name().clone(),
                                generation: act.generation,
                            });
                            // The first probe comes at a random point of the second
                            // half-interval to one and a half intervals, then every
                            // interval: upstreams that came up together (a start, a
                            // reload) probe spread over the interval, never all in the same
                            // second, and on average one interval after connecting.
                            let interval = act.spec.probe_interval;
                            let first = interval.mul_f64(0.5 + rand::random::<f64>());
                            ctx.run_later(first, move |act, ctx| {
                                act.probe(ctx);
                                ctx.run_interval(interval, |act, ctx| act.probe(ctx));
                            });
                        } else {
                            act.health_event(
                                HealthKind::ToolsChanged,
                                json!({"tool_count": count}),
                            );
                        }
                    }
                    Err(e) if first => act.exit(e, ctx),
                    Err(e) => {
                        log::warn!("[{}] catalogue refresh failed: {e}", act.name());
                        act.record(false, Some(e), ctx);
                    }
                }),
        );
    }

    /// One health probe (MCP ping). While the circuit is open, probes wait for the
    /// cool-down; in half-open, the probe is the trial.
    fn probe(&mut self, ctx: &mut Context<Self>) {
        if self.probe_in_flight {
            return;
        }
        let Some(peer) = self.session.as_ref().map(|s| s.peer.clone()) else {
            return;
        };
        let (verdict, transition) = self.breaker.lock().try_acquire(Instant::now());
        if let Some(t) = transition {
            self.on_transition(t, ctx);
        }
        if verdict.is_err() {
            return;
        }
        self.probe_in_flight = true;
        let timeout = self.spec.probe_timeout();
        let started = Instant::now();
        let target = super::errors::target(&self.spec);
        let name = self.name().clone();
        let fut = async move {
            match tokio::time::timeout(
                timeout,
                peer.send_request(ClientRequest::PingRequest(PingRequest::default())),
            )
            .await
            {
                Ok(Ok(_)) => Ok(started.elapsed()),
                Ok(Err(e)) => {
                    log::debug!(
                        "[{name}] ping failed: {}",
                        super::errors::with_causes(&e.to_string(), &e)
                    );
                    let shown = super::errors::for_user(&e, &target);
                    Err((
                        format!("ping failed: {shown}"),
                        connect::session_trouble(&e),
                    ))
                }
                Err(_) => Err((
                    format!("ping not answered within {} ms", timeout.as_millis()),
                    None,
                )),
            }
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.probe_in_flight = false;
            act.probe_failing = result.is_err();
            act.board.update(|s| {
                s.last_probe_at = Some(Utc::now());
                s.last_probe_ok = Some(result.is_ok());
                if let Ok(rtt) = &result {
                    s.latency_ms = Some(rtt.as_secs_f64() * 1000.0);
                }
            });
            match result {
                Ok(_) => {
                    act.unreachable_probes = 0;
                    act.record(true, None, ctx);
                }
                Err((e, trouble)) => {
                    act.health_event(HealthKind::ProbeFailed, json!({"error": e}));
                    act.record(false, Some(e.clone()), ctx);
                    act.on_probe_trouble(trouble, &e, ctx);
                }
            }
        }));
    }

    /// Decides, after a failed probe, whether the session is lost. Only a probe decides:
    /// a failed call only asks for one, so that no single call ends a healthy session.
    fn on_probe_trouble(
        &mut self,
        trouble: Option<SessionTrouble>,
        error: &str,
        ctx: &mut Context<Self>,
    ) {
        match trouble {
            None => self.unreachable_probes = 0,
            Some(SessionTrouble::Forgotten) => self.exit(
                format!(
                    "session lost: the upstream no longer knows our session \
                     (it restarted or dropped it): {error}"
                ),
                ctx,
            ),
            Some(SessionTrouble::Unreachable) => {
                self.unreachable_probes += 1;
                // With the circuit open, probes wait for each cool-down (up to minutes):
                // one that cannot reach the upstream then is enough.
                let open = self.breaker.lock().state() == CircuitState::Open;
                if self.unreachable_probes >= LOST_AFTER_PROBES || open {
                    let reason = format!(
                        "session lost: {} probe(s) in a row could not reach the upstream{}: {error}",
                        self.unreachable_probes,
                        if open { " with the circuit open" } else { "" }
                    );
                    self.exit(reason, ctx);
                } else {
                    let after = CONFIRM_AFTER.min(self.spec.probe_interval);
                    ctx.run_later(after, |act, ctx| act.probe(ctx));
                }
            }
        }
    }
}

impl Actor for UpstreamActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let spec = self.spec.clone();
        let limit = self.message_limit;
        ctx.spawn(
            async move { connect::connect(&spec, tx, limit).await }
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(session) => act.on_connected(session, ctx),
                    Err(e) => act.exit(e.to_string(), ctx),
                }),
        );
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // Only this actor's lane: a successor may already have put its own.
        let generation = self.generation;
        self.board.update(|s| {
            if s.lane
                .as_ref()
                .is_some_and(|l| l.generation() == generation)
            {
                s.lane = None;
            }
        });
        if let Some(session) = self.session.take() {
            session.close();
        }
        let reason = self.exit_reason.take().unwrap_or_else(|| "stopped".into());
        let _ = self.exited.try_send(ChildExited {
            name: self.spec.name.clone(),
            generation: self.generation,
            reason,
            was_up: self.was_up,
        });
    }
}

impl StreamHandler<SessionNote> for UpstreamActor {
    fn handle(&mut self, note: SessionNote, ctx: &mut Context<Self>) {
        match note {
            SessionNote::ToolsChanged => {
                // Said, whether or not the list turns out to differ: the cache drops the
                // server's entries on it.
                let detail = json!({"notification": "tools/list_changed"});
                publish_health(&self.bus, &self.spec.name, HealthKind::ListChanged, detail);
                self.refresh_tools(ctx, false)
            }
            SessionNote::ResourcesChanged(detail) => {
                publish_health(&self.bus, &self.spec.name, HealthKind::ListChanged, detail);
            }
            SessionNote::Ended(why) => self.exit(why, ctx),
        }
    }

    /// The note stream ends only with the actor; it must not stop it earlier.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Handler<Shutdown> for UpstreamActor {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        self.exit(msg.reason, ctx);
    }
}

impl Handler<CallFinished> for UpstreamActor {
    type Result = ();

    fn handle(&mut self, msg: CallFinished, ctx: &mut Context<Self>) {
        self.recorded(msg.transition, msg.error, ctx);
        // A call that could not reach the upstream asks a probe whether the session still
        // stands; only probes end it.
        if msg.unreachable {
            self.probe(ctx);
        }
    }
}

impl Handler<BreakerMoved> for UpstreamActor {
    type Result = ();

    fn handle(&mut self, msg: BreakerMoved, ctx: &mut Context<Self>) {
        self.on_transition(msg.transition, ctx);
    }
}

impl UpstreamActor {
    /// Runs one request on the session through the breaker and under the deadline, and
    /// feeds its outcome back to the breaker: the path of pass-through requests (tool
    /// calls take the same steps on a `Lane`).
    fn guarded<T: 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        run: impl FnOnce(Peer<RoleClient>) -> BoxFuture<'static, Result<T, ServiceError>>,
    ) -> ResponseActFuture<Self, Result<T, CallError>> {
        let server = self.name().to_string();
        let Some(session) = &self.session else {
            let status = self.status.as_str();
            return Box::pin(fut::ready(Err(CallError::NotConnected { server, status })));
        };
        let peer = session.peer.clone();
        let (verdict, transition) = self.breaker.lock().try_acquire(Instant::now());
        if let Some(t) = transition {
            self.on_transition(t, ctx);
        }
        if let Err(rejected) = verdict {
            return Box::pin(fut::ready(Err(CallError::CircuitOpen {
                server,
                retry_after: rejected.retry_after,
            })));
        }
        let timeout = self.spec.timeout;
        let call = tokio::time::timeout(timeout, run(peer));
        Box::pin(call.into_actor(self).map(move |outcome, act, ctx| {
            let Judged {
                result,
                healthy,
                unreachable,
            } = judge(&server, timeout, outcome);
            act.record(healthy, result.as_ref().err().map(ToString::to_string), ctx);
            // A call that could not reach the upstream asks a probe whether the session
            // still stands; only probes end it.
            if unreachable {
                act.probe(ctx);
            }
            result
        }))
    }
}

/// A resources or prompts request passed through from `/mcp`.
#[derive(Message)]
#[rtype(result = "Result<Forwarded, CallError>")]
pub enum Forward {
    /// Every page of `resources/list`.
    ListResources,
    /// Every page of `resources/templates/list`.
    ListResourceTemplates,
    ReadResource {
        uri: String,
    },
    /// Every page of `prompts/list`.
    ListPrompts,
    GetPrompt {
        name: String,
        arguments: Option<JsonObject>,
        /// Takes what the upstream sends during the request (its elicitation, say).
        relay: Option<super::relay::Relay>,
    },
    /// `completion/complete`, its reference already in the upstream's own names.
    Complete(CompleteRequestParams),
    Subscribe {
        uri: String,
    },
    Unsubscribe {
        uri: String,
    },
}

pub enum Forwarded {
    /// For requests whose answer is empty.
    Done,
    Completion(CompleteResult),
    Resources(Vec<Resource>),
    ResourceTemplates(Vec<ResourceTemplate>),
    Read(ReadResourceResult),
    Prompts(Vec<Prompt>),
    Prompt(GetPromptResult),
}

impl Handler<Forward> for UpstreamActor {
    type Result = ResponseActFuture<Self, Result<Forwarded, CallError>>;

    fn handle(&mut self, msg: Forward, ctx: &mut Context<Self>) -> Self::Result {
        let relays = self.session.as_ref().map(|s| s.relays.clone());
        self.guarded(ctx, move |peer| {
            Box::pin(async move {
                Ok(match msg {
                    Forward::ListResources => {
                        Forwarded::Resources(peer.list_all_resources().await?)
                    }
                    Forward::ListResourceTemplates => {
                        Forwarded::ResourceTemplates(peer.list_all_resource_templates().await?)
                    }
                    Forward::ReadResource { uri } => Forwarded::Read(
                        peer.read_resource(ReadResourceRequestParams::new(uri))
                            .await?,
                    ),
                    Forward::ListPrompts => Forwarded::Prompts(peer.list_all_prompts().await?),
                    Forward::GetPrompt {
                        name,
                        arguments,
                        relay,
                    } => {
                        let mut params = GetPromptRequestParams::new(name);
                        if let Some(arguments) = arguments {
                            params = params.with_arguments(arguments);
                        }
                        match (relay, relays) {
                            (Some(relay), Some(relays)) => {
                                let request = rmcp::model::ClientRequest::GetPromptRequest(
                                    rmcp::model::GetPromptRequest::new(params),
                                );
                                match super::relay::send_relayed(&peer, &relays, request, relay)
                                    .await?
                                {
                                    rmcp::model::ServerResult::GetPromptResult(result) => {
                                        Forwarded::Prompt(result)
                                    }
                                    _ => return Err(ServiceError::UnexpectedResponse),
                                }
                            }
                            _ => Forwarded::Prompt(peer.get_prompt(params).await?),
                        }
                    }
                    Forward::Complete(params) => {
                        Forwarded::Completion(peer.complete(params).await?)
                    }
                    #[allow(deprecated)] // legacy-only in 2026-07-28; upstreams are older
                    Forward::Subscribe { uri } => {
                        peer.subscribe(SubscribeRequestParams::new(uri)).await?;
                        Forwarded::Done
                    }
                    #[allow(deprecated)]
                    Forward::Unsubscribe { uri } => {
                        peer.unsubscribe(UnsubscribeRequestParams::new(uri)).await?;
                        Forwarded::Done
                    }
                })
            })
        })
    }
}
