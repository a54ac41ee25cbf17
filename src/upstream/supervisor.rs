//! UpstreamSupervisor: our own supervisor (actix's `Supervised` neither re-creates an actor
//! nor backs off). It owns one slot per registered server, starts an [`UpstreamActor`] for
//! each enabled one, restarts it with backoff when it stops, gives up (`failed`) on a crash
//! loop, and reconciles the running children with the registry in the store.
//!
//! Every child carries a generation number. A child's exit is acted on only if it is still
//! the slot's current generation, so exits of children the supervisor itself replaced or
//! removed are ignored.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use chrono::Utc;
use rmcp::model::Tool;
use serde_json::json;

use super::actor::UpstreamActor;
use super::breaker::{Breaker, CircuitState};
use super::lane::SharedBreaker;
use super::messages::{ChildExited, ChildUp, Shutdown};
use super::restart::{Decision, RestartState};
use super::settings::UpstreamSettings;
use super::status::{StatusBoard, UpstreamStatus, publish_health, publish_status};
use crate::events::{EventBus, HealthKind};
use crate::registry::{ServerName, ServerSpec};
use crate::store::{Store, StoreError};

/// Re-read the registry and make the running children match it.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Reconcile;

/// Re-read one server's registry entry and make its child match it: what an API change of
/// that one server needs. A whole [`Reconcile`] per registration read and compared every
/// entry, so registering 1,000 servers one after another did work growing with the square
/// of their number.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct ReconcileOne(pub ServerName);

/// An operator's reset: forget the restart history and start the server now.
#[derive(Message)]
#[rtype(result = "Result<(), SupervisorError>")]
pub struct Reset {
    pub name: ServerName,
}

/// Reconnect now (a fresh session and catalogue), without counting it as a crash.
#[derive(Message)]
#[rtype(result = "Result<(), SupervisorError>")]
pub struct Reload {
    pub name: ServerName,
}

/// The actor serving a server, if it runs.
#[derive(Message)]
#[rtype(result = "Option<Addr<UpstreamActor>>")]
pub struct GetUpstream {
    pub name: ServerName,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no server named '{0}'")]
    NotFound(ServerName),
    #[error("server '{0}' is disabled")]
    Disabled(ServerName),
}

enum Child {
    Running {
        addr: Addr<UpstreamActor>,
        generation: u64,
    },
    Waiting {
        generation: u64,
        timer: SpawnHandle,
    },
    Failed,
    Disabled,
}

struct Slot {
    spec: ServerSpec,
    restart: RestartState,
    restart_count: u64,
    child: Child,
}

pub struct UpstreamSupervisor {
    store: Store,
    bus: EventBus,
    board: StatusBoard,
    settings: UpstreamSettings,
    slots: HashMap<ServerName, Slot>,
    next_generation: u64,
}

impl UpstreamSupervisor {
    pub fn new(
        store: Store,
        bus: EventBus,
        board: StatusBoard,
        settings: UpstreamSettings,
    ) -> Self {
        Self {
            store,
            bus,
            board,
            settings,
            slots: HashMap::new(),
            next_generation: 1,
        }
    }

    fn set_status(&self, name: &ServerName, new: UpstreamStatus, reason: &str) {
        let old = self.board.update(name, |s| {
            let old = s.status;
            s.status = new;
            if !new.is_connected() && new != UpstreamStatus::Starting {
                s.tools = Arc::<Vec<Tool>>::default();
                s.pid = None;
                s.connected_since = None;
                s.circuit = CircuitState::Closed;
            }
            old
        });
        if old != new {
            publish_status(&self.bus, name, old, new, CircuitState::Closed, reason);
        }
    }

    fn start_child(&mut self, name: &ServerName, ctx: &mut Context<Self>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let addr = UpstreamActor::new(
            slot.spec.clone(),
            generation,
            ctx.address().recipient(),
            ctx.address().recipient(),
            self.bus.clone(),
            self.board.entry(&slot.spec.name),
            SharedBreaker::new(Breaker::new(self.settings.breaker.clone())),
            self.settings.message_limit,
        )
        .start();
        slot.child = Child::Running { addr, generation };
        let restarts = slot.restart_count;
        self.board.update(name, |s| {
            s.restart_count = restarts;
            s.next_restart_at = None;
        });
    }

    /// Stops whatever runs or waits in the slot; its exit will be ignored.
    fn stop_child(&mut self, name: &ServerName, reason: &str, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        match std::mem::replace(&mut slot.child, Child::Disabled) {
            Child::Running { addr, .. } => addr.do_send(Shutdown {
                reason: reason.to_owned(),
            }),
            Child::Waiting { timer, .. } => {
                ctx.cancel_future(timer);
            }
            Child::Failed | Child::Disabled => {}
        }
    }

    fn apply(&mut self, specs: Vec<ServerSpec>, ctx: &mut Context<Self>) {
        let mut seen = HashSet::new();
        for spec in specs {
            seen.insert(spec.name.clone());
            self.apply_one(spec, ctx);
        }
        let gone: Vec<ServerName> = self
            .slots
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.forget(&name, ctx);
        }
    }

    /// Makes one server's child match its registry entry.
    fn apply_one(&mut self, spec: ServerSpec, ctx: &mut Context<Self>) {
        let name = spec.name.clone();
        match self.slots.get(&name) {
            Some(slot) if slot.spec == spec => return,
            Some(_) => {
                self.stop_child(&name, "its registry entry changed", ctx);
                let slot = self.slots.get_mut(&name).expect("present");
                slot.spec = spec;
                slot.restart.reset();
                publish_health(&self.bus, &name, HealthKind::Reconfigured, json!({}));
            }
            None => {
                self.slots.insert(
                    name.clone(),
                    Slot {
                        spec,
                        restart: RestartState::default(),
                        restart_count: 0,
                        child: Child::Disabled,
                    },
                );
                self.board.update(&name, |_| ());
                publish_health(&self.bus, &name, HealthKind::Registered, json!({}));
            }
        }
        let spec = Arc::new(self.slots[&name].spec.clone());
        self.board.update(&name, |s| s.spec = Some(spec));
        if self.slots[&name].spec.enabled {
            self.set_status(&name, UpstreamStatus::Starting, "starting");
            self.start_child(&name, ctx);
        } else {
            self.set_status(&name, UpstreamStatus::Disabled, "disabled in the registry");
        }
    }

    /// Stops and forgets a server that left the registry.
    fn forget(&mut self, name: &ServerName, ctx: &mut Context<Self>) {
        if !self.slots.contains_key(name) {
            return;
        }
        self.stop_child(name, "removed from the registry", ctx);
        self.slots.remove(name);
        self.board.remove(name);
        publish_health(&self.bus, name, HealthKind::Removed, json!({}));
    }

    fn restart_now(&mut self, name: &ServerName, generation: u64, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        if !matches!(slot.child, Child::Waiting { generation: g, .. } if g == generation) {
            return;
        }
        slot.restart_count += 1;
        let count = slot.restart_count;
        self.set_status(name, UpstreamStatus::Starting, "restarting");
        publish_health(
            &self.bus,
            name,
            HealthKind::Restarted,
            json!({"restart_count": count}),
        );
        self.start_child(name, ctx);
    }
}

impl Actor for UpstreamSupervisor {
    type Context = Context<Self>;
}

impl Handler<Reconcile> for UpstreamSupervisor {
    type Result = AtomicResponse<Self, Result<(), StoreError>>;

    /// Atomic: reconciles run one at a time, each on a fresh read of the registry, so the
    /// last one always leaves the children matching the store.
    fn handle(&mut self, _: Reconcile, _ctx: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(
            async move { store.list_servers().await }
                .into_actor(self)
                .map(|listed, act, ctx| {
                    let servers = listed?;
                    act.apply(servers.into_iter().map(|s| s.spec).collect(), ctx);
                    Ok(())
                }),
        ))
    }
}

impl Handler<ReconcileOne> for UpstreamSupervisor {
    type Result = AtomicResponse<Self, Result<(), StoreError>>;

    /// Atomic like [`Reconcile`], so a whole reconcile and this one never interleave.
    fn handle(
        &mut self,
        ReconcileOne(name): ReconcileOne,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let store = self.store.clone();
        let read = name.clone();
        AtomicResponse::new(Box::pin(
            async move { store.get_server(&read).await }
                .into_actor(self)
                .map(move |found, act, ctx| {
                    match found? {
                        Some(stored) => act.apply_one(stored.spec, ctx),
                        None => act.forget(&name, ctx),
                    }
                    Ok(())
                }),
        ))
    }
}

impl Handler<ChildUp> for UpstreamSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildUp, _ctx: &mut Context<Self>) {
        if let Some(slot) = self.slots.get_mut(&msg.name)
            && matches!(slot.child, Child::Running { generation, .. } if generation == msg.generation)
        {
            slot.restart.mark_up(Instant::now());
        }
    }
}

impl Handler<ChildExited> for UpstreamSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(&msg.name) else {
            return;
        };
        if !matches!(slot.child, Child::Running { generation, .. } if generation == msg.generation)
        {
            return;
        }
        let name = msg.name;
        log::warn!("[{name}] upstream stopped: {}", msg.reason);
        let decision = slot.restart.on_exit(
            &self.settings.restart,
            Instant::now(),
            rand::random::<f64>(),
        );
        let restarts = slot.restart_count;
        publish_health(
            &self.bus,
            &name,
            HealthKind::Exited,
            json!({"reason": msg.reason, "was_up": msg.was_up}),
        );
        self.board
            .update(&name, |s| s.last_error = Some(msg.reason.clone()));
        match decision {
            Decision::Restart { delay, attempt } => {
                let generation = self.next_generation;
                self.next_generation += 1;
                let target = name.clone();
                let timer = ctx.run_later(delay, move |act, ctx| {
                    act.restart_now(&target, generation, ctx)
                });
                if let Some(slot) = self.slots.get_mut(&name) {
                    slot.child = Child::Waiting { generation, timer };
                }
                let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                self.board.update(&name, |s| s.next_restart_at = Some(at));
                self.set_status(&name, UpstreamStatus::Restarting, &msg.reason);
                publish_health(
                    &self.bus,
                    &name,
                    HealthKind::RestartScheduled,
                    json!({"delay_ms": delay.as_millis() as u64, "attempt": attempt,
                           "reason": msg.reason}),
                );
            }
            Decision::GiveUp => {
                if let Some(slot) = self.slots.get_mut(&name) {
                    slot.child = Child::Failed;
                }
                self.set_status(&name, UpstreamStatus::Failed, "restart intensity exceeded");
                publish_health(
                    &self.bus,
                    &name,
                    HealthKind::Failed,
                    json!({"reason": msg.reason, "restart_count": restarts,
                           "max_restarts": self.settings.restart.max_restarts,
                           "window_ms": self.settings.restart.window.as_millis() as u64}),
                );
            }
        }
    }
}

impl UpstreamSupervisor {
    /// An operator's restart: replaces whatever runs now with a fresh child. A reset
    /// also forgets the restart history (and so clears `failed`).
    fn restart_by_operator(
        &mut self,
        name: &ServerName,
        event: HealthKind,
        reason: &str,
        forget_history: bool,
        ctx: &mut Context<Self>,
    ) -> Result<(), SupervisorError> {
        let slot = self
            .slots
            .get(name)
            .ok_or_else(|| SupervisorError::NotFound(name.clone()))?;
        if !slot.spec.enabled {
            return Err(SupervisorError::Disabled(name.clone()));
        }
        self.stop_child(name, reason, ctx);
        if forget_history && let Some(slot) = self.slots.get_mut(name) {
            slot.restart.reset();
        }
        publish_health(&self.bus, name, event, json!({}));
        self.set_status(name, UpstreamStatus::Starting, reason);
        self.start_child(name, ctx);
        Ok(())
    }
}

impl Handler<Reset> for UpstreamSupervisor {
    type Result = Result<(), SupervisorError>;

    fn handle(&mut self, msg: Reset, ctx: &mut Context<Self>) -> Self::Result {
        self.restart_by_operator(
            &msg.name,
            HealthKind::Reset,
            "reset by an operator",
            true,
            ctx,
        )
    }
}

impl Handler<Reload> for UpstreamSupervisor {
    type Result = Result<(), SupervisorError>;

    fn handle(&mut self, msg: Reload, ctx: &mut Context<Self>) -> Self::Result {
        self.restart_by_operator(
            &msg.name,
            HealthKind::Reloading,
            "reloaded by an operator",
            false,
            ctx,
        )
    }
}

impl Handler<GetUpstream> for UpstreamSupervisor {
    type Result = Option<Addr<UpstreamActor>>;

    fn handle(&mut self, msg: GetUpstream, _ctx: &mut Context<Self>) -> Self::Result {
        match &self.slots.get(&msg.name)?.child {
            Child::Running { addr, .. } => Some(addr.clone()),
            _ => None,
        }
    }
}
