//! The aggregate catalogue `/mcp` serves: every live upstream's tools under their exposed
//! names, and which upstreams offer resources and prompts. The [`CatalogueActor`] rebuilds
//! it from the status board after every upstream event and publishes it on a `watch`
//! channel, so a `tools/list` reads a finished list and every session learns of a change
//! (for `notifications/tools/list_changed`) from one place.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use actix::prelude::*;
use rmcp::model::Tool;
use tokio::sync::watch;

use crate::events::{BusNote, EventBus};
use crate::registry::ServerName;
use crate::registry::names;
use crate::upstream::CircuitState;
use crate::upstream::{Snapshot, StatusBoard};

/// One upstream tool as `/mcp` shows it.
#[derive(Debug)]
pub struct ExposedTool {
    pub server: ServerName,
    /// The upstream's own name, which the call uses.
    pub upstream_name: String,
    /// The upstream's definition with `name` set to the exposed name.
    pub tool: Tool,
}

/// An upstream tool that is not exposed, and why; shown by `GET /api/v1/tools` and logged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Withheld {
    pub server: ServerName,
    pub tool: String,
    /// The name it would have had, when it has one (a collision).
    pub exposed: Option<String>,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Catalogue {
    /// Live tools in a stable order: by server, then the upstream's own order.
    pub tools: Vec<Arc<ExposedTool>>,
    by_name: HashMap<Arc<str>, usize>,
    /// Tools withheld from every upstream, live or not.
    pub withheld: Vec<Withheld>,
    /// Upstreams whose tools are offered now.
    pub live: Vec<ServerName>,
    /// Live upstreams that offer resources, with their effective prefix.
    pub resources: Vec<(ServerName, Option<String>)>,
    /// Live upstreams that offer prompts, with their effective prefix.
    pub prompts: Vec<(ServerName, Option<String>)>,
    /// Changes whenever anything a client could list changes.
    pub fingerprint: u64,
    /// Which server holds each exposed name, live or not: the next build keeps it with
    /// that server when another server comes to claim it too.
    owners: HashMap<Arc<str>, ServerName>,
    /// Each registered server's part, for the next build to keep what did not change.
    parts: HashMap<ServerName, Arc<Part>>,
    /// Every registered server, live or not.
    registered: HashSet<ServerName>,
}

/// One upstream's tools as the catalogue names them: made once per tool list and prefix.
#[derive(Debug)]
struct Part {
    /// The list this part was made from; held, so its address cannot be reused by another.
    tools: Arc<Vec<Tool>>,
    prefix: Option<String>,
    /// Each tool whose name can be exposed, under that name, in the upstream's order.
    named: Vec<(Arc<str>, Arc<ExposedTool>)>,
    /// The tools whose names cannot be exposed, and why.
    unnamed: Vec<Withheld>,
}

impl Part {
    fn new(server: &ServerName, tools: &Arc<Vec<Tool>>, prefix: Option<String>) -> Self {
        let mut named = Vec::with_capacity(tools.len());
        let mut unnamed = vec![];
        for tool in tools.iter() {
            match names::expose(prefix.as_deref(), &tool.name) {
                Ok(exposed) => {
                    let mut shown = tool.clone();
                    shown.name = exposed.clone().into();
                    let tool = ExposedTool {
                        server: server.clone(),
                        upstream_name: tool.name.to_string(),
                        tool: shown,
                    };
                    named.push((Arc::from(exposed), Arc::new(tool)));
                }
                Err(reason) => unnamed.push(Withheld {
                    server: server.clone(),
                    tool: tool.name.to_string(),
                    exposed: None,
                    reason,
                }),
            }
        }
        Self {
            tools: tools.clone(),
            prefix,
            named,
            unnamed,
        }
    }

    fn is_for(&self, tools: &Arc<Vec<Tool>>, prefix: &Option<String>) -> bool {
        Arc::ptr_eq(&self.tools, tools) && &self.prefix == prefix
    }
}

/// Whether an upstream's tools are offered: connected and the circuit not open.
fn is_live(s: &Snapshot) -> bool {
    s.status.is_connected() && s.circuit != CircuitState::Open && s.spec.is_some()
}

fn prefix_of(name: &ServerName, s: &Snapshot) -> Option<String> {
    let configured = s.spec.as_ref().and_then(|spec| spec.tool_prefix.as_deref());
    names::effective_prefix(name.as_str(), configured).map(str::to_owned)
}

impl Catalogue {
    /// Builds the catalogue. Collisions are judged over every upstream whose tools are
    /// known, live or not, so that a colliding pair does not flap as one goes down. A
    /// name claimed by several servers stays with the server that held it in `previous`
    /// (first come: a server added later never takes a name away from clients that use
    /// it); the others' tools of that name are withheld. When none held it (both arrived
    /// in the same rebuild), all of them are withheld.
    pub fn build(board: &BTreeMap<ServerName, Snapshot>, previous: &Catalogue) -> Self {
        // Each upstream's part (its names and exposed copies) is kept while its tool list
        // and prefix are the same: after one upstream changed, only its part is made
        // again; the rest of a rebuild moves pointers (measured in BENCHMARKS.md).
        let parts: HashMap<ServerName, Arc<Part>> = board
            .iter()
            .map(|(server, snap)| {
                let prefix = prefix_of(server, snap);
                let part = match previous.parts.get(server) {
                    Some(part) if part.is_for(&snap.tools, &prefix) => part.clone(),
                    _ => Arc::new(Part::new(server, &snap.tools, prefix)),
                };
                (server.clone(), part)
            })
            .collect();
        let mut claims: HashMap<&str, Vec<(&ServerName, &str)>> = HashMap::new();
        let mut withheld = vec![];
        for (server, part) in board.keys().map(|s| (s, &parts[s])) {
            withheld.extend(part.unnamed.iter().cloned());
            for (exposed, tool) in &part.named {
                claims
                    .entry(exposed)
                    .or_default()
                    .push((server, &tool.upstream_name));
            }
        }
        // Who keeps each claimed name: its only claimant, or the one that held it.
        let mut owners: HashMap<Arc<str>, ServerName> = HashMap::with_capacity(claims.len());
        for (server, part) in board.keys().map(|s| (s, &parts[s])) {
            for (exposed, _) in &part.named {
                let keeper = match claims[&**exposed].as_slice() {
                    [_] => Some(server),
                    several => previous
                        .owners
                        .get(&**exposed)
                        .and_then(|held| several.iter().find(|(s, _)| *s == held))
                        .map(|(s, _)| *s),
                };
                if keeper == Some(server) {
                    owners.insert(exposed.clone(), server.clone());
                }
            }
        }
        let mut out = Catalogue {
            registered: board.keys().cloned().collect(),
            ..Catalogue::default()
        };
        let mut hasher = DefaultHasher::new();
        for (server, snap) in board {
            if !is_live(snap) {
                continue;
            }
            let part = &parts[server];
            out.live.push(server.clone());
            if snap.offers.resources {
                out.resources.push((server.clone(), part.prefix.clone()));
            }
            if snap.offers.prompts {
                out.prompts.push((server.clone(), part.prefix.clone()));
            }
            // The same list `Arc` means the same definitions; a refresh replaces it.
            (
                server,
                part.prefix.as_deref(),
                Arc::as_ptr(&snap.tools) as usize,
                snap.offers,
            )
                .hash(&mut hasher);
            for (exposed, tool) in &part.named {
                if owners.get(exposed) != Some(server) {
                    continue;
                }
                out.by_name.insert(exposed.clone(), out.tools.len());
                out.tools.push(tool.clone());
            }
        }
        let mut collisions: Vec<_> = claims.iter().filter(|(_, c)| c.len() > 1).collect();
        collisions.sort();
        for (exposed, claimants) in collisions {
            let keeper = owners.get(*exposed);
            for (server, tool) in claimants {
                if keeper == Some(*server) {
                    continue;
                }
                let others: Vec<String> = claimants
                    .iter()
                    .filter(|(s, t)| (s, t) != (server, tool))
                    .map(|(s, t)| format!("{s}/{t}"))
                    .collect();
                let reason = match keeper {
                    Some(keeper) => format!(
                        "exposed name '{exposed}' is already server '{keeper}''s, which had it \
                         first; set tool_prefix on one of them"
                    ),
                    None => format!(
                        "exposed name '{exposed}' collides with {}; set tool_prefix on one of them",
                        others.join(", ")
                    ),
                };
                withheld.push(Withheld {
                    server: (*server).clone(),
                    tool: (*tool).to_owned(),
                    exposed: Some((*exposed).to_owned()),
                    reason,
                });
            }
        }
        withheld.sort_by(|a, b| (&a.server, &a.tool).cmp(&(&b.server, &b.tool)));
        out.withheld = withheld;
        // Who holds a contested name is part of what clients see.
        let mut held: Vec<_> = owners
            .iter()
            .filter(|(name, _)| claims[&***name].len() > 1)
            .collect();
        held.sort();
        held.hash(&mut hasher);
        out.fingerprint = hasher.finish();
        out.owners = owners;
        out.parts = parts;
        out
    }

    /// Whether `server` is registered, whatever its state.
    pub fn is_registered(&self, server: &ServerName) -> bool {
        self.registered.contains(server)
    }

    pub fn get(&self, exposed: &str) -> Option<&Arc<ExposedTool>> {
        self.by_name.get(exposed).map(|&i| &self.tools[i])
    }
}

/// The names a server's tools would be exposed under that another server already
/// claims, for refusing a registration. `tools` are the candidate's known tools (an
/// update of a connected server has them; a new server has none yet).
pub fn collisions_with(
    board: &BTreeMap<ServerName, Snapshot>,
    candidate: &ServerName,
    prefix: Option<&str>,
    tools: &[Tool],
) -> Vec<String> {
    let prefix = names::effective_prefix(candidate.as_str(), prefix);
    let mut found = vec![];
    for (server, snap) in board {
        if server == candidate {
            continue;
        }
        let theirs = prefix_of(server, snap);
        if let (Some(mine), Some(theirs)) = (prefix, theirs.as_deref())
            && mine == theirs
        {
            found.push(format!(
                "prefix '{mine}' is already used by server '{server}'"
            ));
            continue;
        }
        for tool in tools {
            let Ok(mine) = names::expose(prefix, &tool.name) else {
                continue;
            };
            if snap
                .tools
                .iter()
                .any(|t| names::expose(theirs.as_deref(), &t.name).as_deref() == Ok(&mine))
            {
                found.push(format!("'{mine}' is already exposed by server '{server}'"));
            }
        }
    }
    found
}

/// How long upstream events gather before one rebuild answers them all. A rebuild reads
/// every upstream's tools, and each upstream sends several events as it comes up: built
/// per event, 1,000 upstreams of 20 tools took minutes to come up (the work grew with the
/// square of their number); gathered, a burst costs one rebuild per window, and `/mcp`
/// sees a change at most this much later.
const GATHER: std::time::Duration = std::time::Duration::from_millis(25);

/// Keeps the catalogue current. Readers hold a `watch::Receiver` from [`Self::spawn`].
pub struct CatalogueActor {
    board: StatusBoard,
    bus: EventBus,
    tx: watch::Sender<Arc<Catalogue>>,
    /// A rebuild is scheduled and will see every event until it runs.
    pending: bool,
}

impl CatalogueActor {
    pub fn spawn(board: StatusBoard, bus: EventBus) -> watch::Receiver<Arc<Catalogue>> {
        let first = Catalogue::build(&board.all(), &Catalogue::default());
        let (tx, rx) = watch::channel(Arc::new(first));
        CatalogueActor {
            board,
            bus,
            tx,
            pending: false,
        }
        .start();
        rx
    }

    fn rebuild(&mut self) {
        let current = self.tx.borrow().clone();
        let next = Catalogue::build(&self.board.all(), &current);
        if next.fingerprint == current.fingerprint && next.withheld == current.withheld {
            return;
        }
        for w in next
            .withheld
            .iter()
            .filter(|w| !current.withheld.contains(w))
        {
            log::warn!("/mcp does not expose {}/{}: {}", w.server, w.tool, w.reason);
        }
        self.tx.send_replace(Arc::new(next));
    }
}

impl Actor for CatalogueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.add_stream(self.bus.stream());
        // Upstreams that connected before this actor subscribed.
        self.rebuild();
    }
}

impl StreamHandler<BusNote> for CatalogueActor {
    fn handle(&mut self, note: BusNote, ctx: &mut Context<Self>) {
        // Only upstream events can change the catalogue; metrics ticks and cache
        // invalidations cannot. Missed events: rebuilding from the board catches up all
        // the same.
        let relevant = match &note {
            BusNote::Event(e) => e.server.is_some(),
            BusNote::Lagged(_) => true,
        };
        if relevant && !self.pending {
            self.pending = true;
            ctx.run_later(GATHER, |actor, _| {
                actor.pending = false;
                actor.rebuild();
            });
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ServerInput;
    use crate::upstream::UpstreamStatus;
    use rmcp::model::JsonObject;

    fn tool(name: &str) -> Tool {
        Tool::new(name.to_owned(), "d", Arc::new(JsonObject::new()))
    }

    fn snap(name: &str, prefix: Option<&str>, status: UpstreamStatus, tools: &[&str]) -> Snapshot {
        let spec = ServerInput {
            name: Some(name.into()),
            transport: Some("stdio".into()),
            command: Some("x".into()),
            tool_prefix: prefix.map(str::to_owned),
            ..Default::default()
        }
        .validate()
        .unwrap();
        Snapshot {
            spec: Some(Arc::new(spec)),
            status,
            tools: Arc::new(tools.iter().map(|t| tool(t)).collect()),
            ..Default::default()
        }
    }

    fn board(entries: Vec<Snapshot>) -> BTreeMap<ServerName, Snapshot> {
        entries
            .into_iter()
            .map(|s| (s.spec.as_ref().unwrap().name.clone(), s))
            .collect()
    }

    fn names(c: &Catalogue) -> Vec<&str> {
        c.tools.iter().map(|t| &*t.tool.name).collect()
    }

    /// A rebuild after one upstream changed makes only that upstream's part again: the
    /// others' exposed tools are the same allocations as before.
    #[test]
    fn a_rebuild_remakes_only_what_changed() {
        use UpstreamStatus::Healthy;
        let first = board(vec![
            snap("a", None, Healthy, &["x", "y"]),
            snap("b", None, Healthy, &["z"]),
        ]);
        let before = Catalogue::build(&first, &Catalogue::default());
        let mut second = first.clone();
        second.insert(
            ServerName::parse("b").unwrap(),
            snap("b", None, Healthy, &["z", "w"]),
        );
        let after = Catalogue::build(&second, &before);
        assert_eq!(names(&after), ["a__x", "a__y", "b__z", "b__w"]);
        let same = |name: &str| Arc::ptr_eq(before.get(name).unwrap(), after.get(name).unwrap());
        assert!(same("a__x") && same("a__y"), "a's part was made again");
        assert!(
            !same("b__z"),
            "b's part was kept although its tools changed"
        );
        assert_ne!(before.fingerprint, after.fingerprint);
        // A new prefix is a new part, under the new names.
        let mut third = second.clone();
        third.insert(
            ServerName::parse("a").unwrap(),
            Snapshot {
                spec: snap("a", Some("p"), Healthy, &[]).spec,
                ..second[&ServerName::parse("a").unwrap()].clone()
            },
        );
        let renamed = Catalogue::build(&third, &after);
        assert_eq!(names(&renamed), ["p__x", "p__y", "b__z", "b__w"]);
    }

    #[test]
    fn live_tools_are_prefixed_and_down_ones_left_out() {
        use UpstreamStatus::*;
        let b = board(vec![
            snap("a", None, Healthy, &["x", "y"]),
            snap("b", Some(""), Degraded, &["z"]),
            snap("c", Some("see"), Restarting, &["w"]),
        ]);
        let c = Catalogue::build(&b, &Catalogue::default());
        assert_eq!(names(&c), ["a__x", "a__y", "z"]);
        assert_eq!(c.get("a__y").unwrap().upstream_name, "y");
        assert!(c.get("see__w").is_none());
    }

    #[test]
    fn an_open_circuit_hides_the_tools_and_changes_the_fingerprint() {
        let mut s = snap("a", None, UpstreamStatus::Unhealthy, &["x"]);
        let before = Catalogue::build(&board(vec![s.clone()]), &Catalogue::default());
        s.circuit = CircuitState::Open;
        let after = Catalogue::build(&board(vec![s]), &before);
        assert_eq!(names(&before), ["a__x"]);
        assert!(after.tools.is_empty());
        assert_ne!(before.fingerprint, after.fingerprint);
    }

    #[test]
    fn a_server_added_later_never_takes_a_name_already_exposed() {
        use UpstreamStatus::*;
        // `b` exposes `echo` first; `a` (sorted before it) arrives later with its own.
        let first = Catalogue::build(
            &board(vec![snap("b", Some(""), Healthy, &["echo"])]),
            &Catalogue::default(),
        );
        let both = board(vec![
            snap("a", Some(""), Healthy, &["echo", "only-a"]),
            snap("b", Some(""), Healthy, &["echo"]),
        ]);
        let next = Catalogue::build(&both, &first);
        assert_eq!(next.get("echo").unwrap().server.as_str(), "b");
        assert_eq!(names(&next), ["only-a", "echo"]);
        let withheld: Vec<_> = next
            .withheld
            .iter()
            .map(|w| (w.server.as_str(), &*w.tool))
            .collect();
        assert_eq!(withheld, [("a", "echo")]);
        assert!(
            next.withheld[0].reason.contains("server 'b'"),
            "{:?}",
            next.withheld
        );
        // It stays `b`'s while `b` is down, and through later rebuilds.
        let b_down = board(vec![
            snap("a", Some(""), Healthy, &["echo", "only-a"]),
            snap("b", Some(""), Restarting, &["echo"]),
        ]);
        let later = Catalogue::build(&b_down, &next);
        assert_eq!(names(&later), ["only-a"]);
        let again = Catalogue::build(&both, &later);
        assert_eq!(again.get("echo").unwrap().server.as_str(), "b");
        // When `b` stops claiming it, `a` gets it.
        let b_gone = board(vec![snap("a", Some(""), Healthy, &["echo", "only-a"])]);
        let after = Catalogue::build(&b_gone, &again);
        assert_eq!(after.get("echo").unwrap().server.as_str(), "a");
    }

    #[test]
    fn colliding_names_are_withheld_on_both_sides_even_when_one_is_down() {
        use UpstreamStatus::*;
        let b = board(vec![
            snap("a", Some(""), Healthy, &["echo", "only-a"]),
            snap("b", Some(""), Restarting, &["echo"]),
        ]);
        // Both arrive in one build: neither had the name first.
        let c = Catalogue::build(&b, &Catalogue::default());
        assert_eq!(names(&c), ["only-a"]);
        let reasons: Vec<_> = c
            .withheld
            .iter()
            .map(|w| (w.server.as_str(), &*w.tool))
            .collect();
        assert_eq!(reasons, [("a", "echo"), ("b", "echo")]);
        assert!(c.withheld[0].reason.contains("b/echo"));
    }

    #[test]
    fn registration_collisions_name_the_other_server() {
        let b = board(vec![snap("a", Some("p"), UpstreamStatus::Healthy, &["x"])]);
        let new = ServerName::parse("n").unwrap();
        assert_eq!(collisions_with(&b, &new, None, &[]), Vec::<String>::new());
        assert!(collisions_with(&b, &new, Some("p"), &[])[0].contains("server 'a'"));
        let found = collisions_with(&b, &new, Some(""), &[tool("p__x")]);
        assert!(found[0].contains("'p__x'"), "{found:?}");
    }
}
