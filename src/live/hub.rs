//! EventHub: holds every live session's queue and subscription, fans each event out, and
//! emits `system_metrics` on a timer. An event is serialized once (once per allow-list for
//! `system_metrics`, which lists upstreams); each session gets a shared copy through a
//! bounded queue. A session whose queue is full is too slow: it is dropped, never waited
//! for, so one slow client cannot delay the others or grow memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::filter::Filter;
use super::outgoing::{CloseWith, Outgoing};
use super::recent::{KEPT, RecentEvents};
use crate::auth::AllowList;
use crate::cache::{Cache, CacheStats};
use crate::events::{BusNote, Event, EventBus, EventType};
use crate::metrics::{self, Metrics};
use crate::store::Store;
use crate::traffic::Traffic;
use crate::upstream::{StatusBoard, UpstreamStatus};

/// A new session: it gets `initial_status` first, then the events it subscribes to.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub id: u64,
    pub queue: mpsc::Sender<Outgoing>,
    /// Told to close when its key is revoked, it is too slow, or the server stops.
    pub session: Recipient<CloseWith>,
    /// The session's key; `None` when it joined while the gateway ran open.
    pub key: Option<String>,
    /// The servers the session's key may see; their events only.
    pub allow: Arc<AllowList>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub id: u64,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct SetFilter {
    pub id: u64,
    pub filter: Filter,
}

/// Close every session (the server is shutting down): 1001, going away.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll;

/// The keys in force changed: sessions whose key was revoked are closed (1008), and so
/// are sessions that joined open once keys are required.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RetainKeys(pub crate::auth::keyring::KeyState);

struct Member {
    queue: mpsc::Sender<Outgoing>,
    session: Recipient<CloseWith>,
    key: Option<String>,
    filter: Filter,
    allow: Arc<AllowList>,
}

pub struct EventHub {
    members: HashMap<u64, Member>,
    bus: EventBus,
    board: StatusBoard,
    metrics: Arc<Metrics>,
    cache: Cache,
    cache_stats: Option<CacheStats>,
    metrics_interval: Duration,
    /// The keys in force: a session whose key was revoked while it joined is closed.
    keys: tokio::sync::watch::Receiver<crate::auth::keyring::KeyState>,
    last_tick: (Instant, u64),
    latest_metrics: Value,
    /// Each upstream's last 15 minutes of calls (the gateway records them).
    traffic: Traffic,
    /// The newest upstream events, for `initial_status`.
    recent: RecentEvents,
    /// Where `recent` is seeded from when the hub starts.
    store: Option<Store>,
}

impl EventHub {
    pub fn new(
        bus: EventBus,
        board: StatusBoard,
        metrics: Arc<Metrics>,
        cache: Cache,
        metrics_interval: Duration,
        keys: tokio::sync::watch::Receiver<crate::auth::keyring::KeyState>,
    ) -> Self {
        Self {
            members: HashMap::new(),
            bus,
            board,
            metrics,
            cache,
            cache_stats: None,
            metrics_interval,
            keys,
            last_tick: (Instant::now(), 0),
            latest_metrics: json!({}),
            traffic: Traffic::default(),
            recent: RecentEvents::default(),
            store: None,
        }
    }

    /// Reads the calls the gateway records in `traffic`.
    pub fn with_traffic(mut self, traffic: Traffic) -> Self {
        self.traffic = traffic;
        self
    }

    /// Seeds the events shown on open from `store`'s health history.
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    fn message(kind: &str, data: Value) -> Arc<str> {
        json!({"type": kind, "timestamp": chrono::Utc::now(), "data": data})
            .to_string()
            .into()
    }

    fn initial_status(&self, allow: &AllowList) -> Arc<str> {
        // The cache numbers are there from the start: `started` waits for the first ones.
        let servers: Vec<Value> = self
            .board
            .all()
            .into_iter()
            .filter(|(name, _)| allow.allows_server(name.as_str()))
            .map(|(name, snapshot)| {
                let mut view = snapshot.to_json();
                view["call_latency_ms"] = json!(self.traffic.recent_p50_ms(&name));
                view["name"] = json!(name);
                if let Some(spec) = &snapshot.spec {
                    view["transport"] = json!(spec.transport.kind());
                    view["enabled"] = json!(spec.enabled);
                }
                view
            })
            .collect();
        Self::message(
            "initial_status",
            json!({"servers": servers, "cache": self.cache_stats,
                   "metrics": self.current_metrics(allow),
                   "events": self.recent.for_allow(allow),
                   "traffic": self.traffic.to_json(false, |name| allow.allows_server(name.as_str()))}),
        )
    }

    /// Offers `text` to one member; answers whether the member stays. A full queue asks
    /// the session to close as a slow consumer; the session counts it, once.
    fn offer(member: &Member, text: &Arc<str>) -> bool {
        match member.queue.try_send(Outgoing::Text(text.clone())) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                member.session.do_send(CloseWith::slow_consumer());
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    fn fan_out(&mut self, event: &Arc<Event>) {
        self.recent.remember(event);
        let mut texts = Texts::new(event);
        self.members.retain(|_, member| {
            let visible = event
                .server
                .as_ref()
                .is_none_or(|s| member.allow.allows_server(s.as_str()));
            !visible
                || !member.filter.accepts(event)
                || Self::offer(member, &texts.for_allow(&member.allow))
        });
    }

    /// The numbers of `system_metrics` as they are now, for a joining session that may see
    /// `allow`; the request rate is the one of the last interval.
    fn current_metrics(&self, allow: &AllowList) -> Value {
        let mut current = self.latest_metrics.clone();
        let (total, healthy) = metrics::upstream_counts(&self.board, allow);
        current["upstreams_total"] = json!(total);
        current["upstreams_healthy"] = json!(healthy);
        current["requests_total"] = json!(self.metrics.requests_total());
        current["errors_total"] = json!(self.metrics.errors_total());
        // The joining session counts.
        current["live_sessions"] = json!(self.members.len() + 1);
        current["memory_bytes"] = json!(metrics::resident_bytes());
        // The cache as it is now (the joining session had them fetched), not as of the
        // last tick: the page shows these over the older ones.
        if let Some(stats) = &self.cache_stats {
            current["cache"] = json!(stats);
            current["cache_hit_rate"] = json!(stats.hit_rate);
            current["cache_entries"] = json!(stats.entries);
        }
        current
    }

    /// Asks the cache for its numbers and publishes `system_metrics` with its answer, so
    /// the cache part is as fresh as the rest (never one interval old).
    fn tick(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(
            self.fetch_cache_stats()
                .map(|_, act, _| act.publish_metrics()),
        );
    }

    fn fetch_cache_stats(&self) -> impl ActorFuture<Self, Output = ()> + use<> {
        let cache = self.cache.clone();
        async move { cache.stats().await }
            .into_actor(self)
            .map(|stats, act, _| match stats {
                Ok(stats) => act.cache_stats = Some(stats),
                // Keep the last numbers; the page shows them rather than nothing.
                Err(e) => log::warn!("live hub: no cache stats: {e}"),
            })
    }

    fn publish_metrics(&mut self) {
        let now = Instant::now();
        let requests = self.metrics.requests_total();
        let (then, before) = self.last_tick;
        let per_second = requests.saturating_sub(before) as f64
            / now.duration_since(then).as_secs_f64().max(1e-3);
        self.last_tick = (now, requests);
        let (total, healthy) = metrics::upstream_counts(&self.board, &AllowList::default());
        self.latest_metrics = json!({
            "upstreams_total": total,
            "upstreams_healthy": healthy,
            "requests_total": requests,
            "requests_per_second": per_second,
            "errors_total": self.metrics.errors_total(),
            "cache_hit_rate": self.cache_stats.as_ref().map_or(0.0, |s| s.hit_rate),
            "cache_entries": self.cache_stats.as_ref().map_or(0, |s| s.entries),
            "cache": self.cache_stats,
            "live_sessions": self.members.len(),
            "memory_bytes": metrics::resident_bytes(),
        });
        // Per-upstream numbers that change without an event of their own (a successful
        // probe publishes nothing). `fan_out` cuts this map down to each session's
        // allow-list, so `latest_metrics` (shared by every joining session) leaves it out.
        let mut data = self.latest_metrics.clone();
        // A removed upstream's calls go with it.
        let board = &self.board;
        self.traffic
            .retain(|name| board.read(name, |_| ()).is_some());
        data["servers"] = self.server_summaries();
        data["traffic"] = self.traffic.to_json(true, |_| true);
        self.bus
            .publish(Event::new(EventType::SystemMetrics, None, data));
    }

    /// Every upstream, compactly: what the dashboard's table shows and no event carries.
    fn server_summaries(&self) -> Value {
        let servers: serde_json::Map<String, Value> = self
            .board
            .all()
            .into_iter()
            .map(|(name, s)| {
                let summary = json!({
                    "status": s.status,
                    "circuit": s.circuit,
                    "tool_count": s.tools.len(),
                    "latency_ms": s.latency_ms.map(|ms| (ms * 10.0).round() / 10.0),
                    "last_probe_at": s.last_probe_at.map(|t| {
                        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    }),
                    "restart_count": s.restart_count,
                    "call_latency_ms": self.traffic.recent_p50_ms(&name),
                });
                (name.to_string(), summary)
            })
            .collect();
        Value::Object(servers)
    }
}

/// The text of one event for each allow-list, each made at most once per fan-out.
///
/// Every event but `system_metrics` names at most one server and is either shown to a
/// session or not, so one text serves all. `system_metrics` lists every upstream: a
/// session gets only those its key's allow-list covers, with the upstream counts to match.
/// The hub filters per session (rather than the page re-fetching `/api/v1/servers` after
/// each tick) so that a thousand dashboards cost no thousand requests every interval, and
/// the allow-list is applied in the same place as for every other event.
struct Texts<'a> {
    event: &'a Event,
    /// For sessions that may see everything.
    open: Option<Arc<str>>,
    /// Per allow-list, by the address of its `Arc` (a key's sessions share one).
    restricted: HashMap<usize, Arc<str>>,
}

impl<'a> Texts<'a> {
    fn new(event: &'a Event) -> Self {
        Self {
            event,
            open: None,
            restricted: HashMap::new(),
        }
    }

    fn serialize(event: &Event) -> Arc<str> {
        serde_json::to_string(event)
            .unwrap_or_else(|_| "{}".into())
            .into()
    }

    fn for_allow(&mut self, allow: &Arc<AllowList>) -> Arc<str> {
        let per_server = self.event.kind == EventType::SystemMetrics
            && self.event.data.get("servers").is_some_and(Value::is_object);
        if !per_server || allow.0.is_empty() {
            return self
                .open
                .get_or_insert_with(|| Self::serialize(self.event))
                .clone();
        }
        let event = self.event;
        self.restricted
            .entry(Arc::as_ptr(allow) as usize)
            .or_insert_with(|| {
                let mut event = event.clone();
                restrict_to(&mut event.data, allow);
                Self::serialize(&event)
            })
            .clone()
    }
}

/// Cuts `system_metrics` data down to the upstreams `allow` covers.
fn restrict_to(data: &mut Value, allow: &AllowList) {
    if let Some(Value::Object(traffic)) = data.get_mut("traffic").and_then(|t| t.get_mut("servers"))
    {
        traffic.retain(|name, _| allow.allows_server(name));
    }
    let Some(Value::Object(servers)) = data.get_mut("servers") else {
        return;
    };
    servers.retain(|name, _| allow.allows_server(name));
    let total = servers.len();
    let healthy = servers
        .values()
        .filter(|s| UpstreamStatus::deserialize(&s["status"]).is_ok_and(UpstreamStatus::is_up))
        .count();
    data["upstreams_total"] = json!(total);
    data["upstreams_healthy"] = json!(healthy);
}

impl Actor for EventHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.add_stream(self.bus.stream());
        // Before any session joins: the history a page shows on open. A store that does
        // not answer within a second leaves it to the events from now on.
        if let Some(store) = self.store.clone() {
            let rows = async move {
                tokio::time::timeout(
                    Duration::from_secs(1),
                    store.recent_health_events(KEPT as i64),
                )
                .await
            };
            ctx.wait(rows.into_actor(self).map(|rows, act, _| match rows {
                Ok(Ok(rows)) => act.recent.seed(rows),
                Ok(Err(e)) => log::warn!("live hub: no health history to show: {e}"),
                Err(_) => log::warn!("live hub: the health history took over 1 s; not shown"),
            }));
        }
        // Nothing else (no Join) is handled before the first cache numbers are in, so
        // every `initial_status` carries them.
        ctx.wait(
            self.fetch_cache_stats()
                .map(|_, act, _| act.publish_metrics()),
        );
        ctx.run_interval(self.metrics_interval, |act, ctx| act.tick(ctx));
    }
}

impl StreamHandler<BusNote> for EventHub {
    fn handle(&mut self, note: BusNote, _ctx: &mut Context<Self>) {
        match note {
            BusNote::Event(event) => self.fan_out(&event),
            BusNote::Lagged(n) => log::warn!("live hub fell {n} events behind the bus"),
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Handler<Join> for EventHub {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        if !self.keys.borrow().admits(msg.key.as_deref()) {
            msg.session.do_send(CloseWith::revoked());
            return;
        }
        let member = Member {
            queue: msg.queue,
            session: msg.session,
            key: msg.key,
            filter: Filter::default(),
            allow: msg.allow,
        };
        // The cache's numbers as they are now, not as of the last tick. `wait` holds every
        // other message (events included) until the session is registered, so no event
        // slips in between its `initial_status` and the stream.
        ctx.wait(self.fetch_cache_stats().map(move |_, act, _| {
            if Self::offer(&member, &act.initial_status(&member.allow)) {
                act.members.insert(msg.id, member);
            }
        }));
    }
}

impl Handler<Leave> for EventHub {
    type Result = ();

    fn handle(&mut self, msg: Leave, _ctx: &mut Context<Self>) {
        self.members.remove(&msg.id);
    }
}

impl Handler<SetFilter> for EventHub {
    type Result = ();

    /// Applies the filter and confirms it, so the client knows from which message on it
    /// holds.
    fn handle(&mut self, msg: SetFilter, _ctx: &mut Context<Self>) {
        let Some(member) = self.members.get_mut(&msg.id) else {
            return;
        };
        let sorted = |set: &Option<std::collections::HashSet<String>>| {
            set.as_ref().map(|s| {
                let mut v: Vec<&String> = s.iter().collect();
                v.sort();
                json!(v)
            })
        };
        let types = msg.filter.types.as_ref().map(|t| {
            let mut v: Vec<&str> = t.iter().map(|t| t.as_str()).collect();
            v.sort();
            json!(v)
        });
        let confirmation = Self::message(
            "subscribed",
            json!({"event_types": types, "servers": sorted(&msg.filter.servers)}),
        );
        member.filter = msg.filter;
        if !Self::offer(member, &confirmation) {
            self.members.remove(&msg.id);
        }
    }
}

/// An event another instance saw (see `cluster`): for dashboards only; it changes nothing
/// here, so it does not go on this instance's bus.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Remote(pub Arc<Event>);

impl Handler<Remote> for EventHub {
    type Result = ();

    fn handle(&mut self, msg: Remote, _ctx: &mut Context<Self>) {
        self.fan_out(&msg.0);
    }
}

impl Handler<CloseAll> for EventHub {
    type Result = ();

    fn handle(&mut self, _: CloseAll, _ctx: &mut Context<Self>) {
        for (_, member) in self.members.drain() {
            member.session.do_send(CloseWith::shutting_down());
        }
    }
}

impl Handler<RetainKeys> for EventHub {
    type Result = ();

    fn handle(&mut self, msg: RetainKeys, _ctx: &mut Context<Self>) {
        let state = msg.0;
        self.members.retain(|_, member| {
            let keep = state.admits(member.key.as_deref());
            if !keep {
                member.session.do_send(CloseWith::revoked());
            }
            keep
        });
    }
}
