//! What every `/mcp` session's handler shares: the gateway, the tool catalogue, and the
//! routing table of what upstreams offer besides tools. Resources, resource templates and
//! prompts are listed from the upstreams when a client asks; each listing settles which
//! upstream holds each URI and name (first come: a server added later never takes one
//! away) and remembers it, so that a read, a get or a subscription goes to the right
//! upstream.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use tokio::sync::watch;

use super::catalogue::Catalogue;
use super::copies::Copies;
use super::input;
use super::records::Records;
use super::subscriptions::Subscriptions;
use crate::gateway::Gateway;
use crate::registry::ServerName;
use crate::registry::names;
use crate::upstream::{CallError, Forward, Forwarded};

/// Which of the catalogue's lists of live upstreams a listing asks (`resources` or
/// `prompts`): each upstream there with its prefix.
type Offering = fn(&Catalogue) -> &Vec<(ServerName, Option<String>)>;

/// What every session's handler shares.
pub struct Shared {
    pub gateway: Gateway,
    pub catalogue: watch::Receiver<Arc<Catalogue>>,
    /// Tools per `tools/list` page.
    pub page_size: usize,
    /// Where the last listings found each resource URI and each exposed prompt name, so
    /// that a read or get goes to the right upstream.
    routes: Mutex<Routes>,
    /// Which session is subscribed to which resource.
    pub subscriptions: Arc<Subscriptions>,
    /// 2026-07-28 calls waiting for their clients' input.
    pub parked: input::ParkedCalls,
    /// The handshake-era sessions held here.
    pub copies: Copies,
    /// Their records, in a cluster.
    pub records: Option<Arc<Records>>,
}

#[derive(Default)]
struct Routes {
    resources: HashMap<String, ServerName>,
    /// URI template prefixes (the text before the first `{`) by server.
    templates: Vec<(String, ServerName)>,
    /// Which server holds each URI template, for the first-come rule.
    template_owners: HashMap<String, ServerName>,
    prompts: HashMap<String, (ServerName, String)>,
    /// What the last listings left out because another server had it first.
    withheld: Vec<Shadowed>,
}

/// A resource URI, URI template or prompt name that two upstreams offer: the server that
/// offered it first keeps it, the other's is left out of listings (and logged once).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Shadowed {
    /// `resource`, `resource_template` or `prompt`.
    pub kind: &'static str,
    /// The URI, the template, or the exposed prompt name.
    pub name: String,
    pub server: ServerName,
    pub kept_by: ServerName,
}

/// Settles names that several servers offer, first come: `claims` are (name, server) in
/// listing order; each name stays with the server `held` says had it, while that server
/// still offers it or is `away` (registered, but not in this listing: down, or its
/// listing failed), else goes to the first claimant. A name kept by a server that is
/// away is offered by no one until it is back, as its tools are. Answers each name's
/// owner, and the copies of the others as [`Shadowed`] of `kind`.
fn settle<'a>(
    kind: &'static str,
    claims: impl IntoIterator<Item = (&'a str, &'a ServerName)>,
    held: impl Fn(&str) -> Option<&'a ServerName>,
    away: impl Fn(&ServerName) -> bool,
) -> (HashMap<String, ServerName>, Vec<Shadowed>) {
    let mut by_name: HashMap<&str, Vec<&ServerName>> = HashMap::new();
    for (name, server) in claims {
        by_name.entry(name).or_default().push(server);
    }
    let mut owners = HashMap::new();
    let mut shadowed = vec![];
    for (name, claimants) in by_name {
        let kept_by = held(name)
            .filter(|h| claimants.contains(h) || away(h))
            .unwrap_or(claimants[0]);
        for other in claimants.iter().filter(|c| **c != kept_by) {
            shadowed.push(Shadowed {
                kind,
                name: name.to_owned(),
                server: (*other).clone(),
                kept_by: kept_by.clone(),
            });
        }
        owners.insert(name.to_owned(), kept_by.clone());
    }
    (owners, shadowed)
}

impl Routes {
    /// Replaces the withheld entries of `kind`, logging only those not withheld before.
    fn shadow(&mut self, kind: &'static str, mut now: Vec<Shadowed>) {
        // `withheld` is kept sorted: a lookup is a binary search, not a scan.
        for s in now
            .iter()
            .filter(|s| self.withheld.binary_search(s).is_err())
        {
            log::warn!(
                "[{}] {} '{}' is also offered by server '{}', which had it first; left out",
                s.server,
                s.kind.replace('_', " "),
                s.name,
                s.kept_by
            );
        }
        self.withheld.retain(|s| s.kind != kind);
        self.withheld.append(&mut now);
        self.withheld.sort();
    }
}

impl Shared {
    /// What the last listings left out because another upstream offered it first.
    pub fn shadowed(&self) -> Vec<Shadowed> {
        self.routes.lock().expect("routes lock").withheld.clone()
    }

    pub fn new(
        gateway: Gateway,
        catalogue: watch::Receiver<Arc<Catalogue>>,
        page_size: usize,
        records: Option<Arc<Records>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            gateway,
            catalogue,
            page_size: page_size.max(1),
            routes: Mutex::default(),
            subscriptions: Arc::default(),
            parked: input::ParkedCalls::default(),
            copies: Copies::default(),
            records,
        })
    }

    /// Subscribes session `client` to `uri` of `server`: only the first subscriber asks
    /// the upstream; the rest share its subscription.
    pub async fn subscribe(
        &self,
        server: &ServerName,
        uri: &str,
        client: u64,
        peer: &rmcp::Peer<rmcp::RoleServer>,
    ) -> Result<(), CallError> {
        if self.subscriptions.add(server, uri, client, peer.clone()) {
            let forward = Forward::Subscribe {
                uri: uri.to_owned(),
            };
            if let Err(e) = self.gateway.forward(server, forward).await {
                self.subscriptions.remove(server, uri, client);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The upstream is told only when no session wants the URI any more.
    pub async fn unsubscribe(
        &self,
        server: &ServerName,
        uri: &str,
        client: u64,
    ) -> Result<(), CallError> {
        if self.subscriptions.remove(server, uri, client) {
            let forward = Forward::Unsubscribe {
                uri: uri.to_owned(),
            };
            self.gateway.forward(server, forward).await?;
        }
        Ok(())
    }
}

impl Shared {
    /// For `settle`: whether a server is away from a listing: registered, and either not
    /// live (down, its circuit open, disabled) or asked and failing to answer. A live
    /// server that was not asked (it no longer offers the capability) is not away: what
    /// it held goes to the next claimant.
    fn away(
        &self,
        asked: Offering,
        lists: &[(ServerName, Option<String>, Forwarded)],
    ) -> impl Fn(&ServerName) -> bool + use<> {
        let answered: HashSet<ServerName> = lists.iter().map(|(s, ..)| s.clone()).collect();
        let catalogue = self.catalogue.borrow().clone();
        let asked: HashSet<ServerName> = asked(&catalogue).iter().map(|(s, _)| s.clone()).collect();
        move |s| {
            catalogue.is_registered(s)
                && !answered.contains(s)
                && (asked.contains(s) || !catalogue.live.contains(s))
        }
    }

    pub(super) fn resource_route(&self, uri: &str) -> Option<ServerName> {
        let routes = self.routes.lock().expect("routes lock");
        routes.resources.get(uri).cloned().or_else(|| {
            routes
                .templates
                .iter()
                .filter(|(stem, _)| !stem.is_empty() && uri.starts_with(stem.as_str()))
                .max_by_key(|(stem, _)| stem.len())
                .map(|(_, server)| server.clone())
        })
    }

    /// Lists every live upstream's resources (an upstream that fails is left out, not
    /// the whole list) and remembers which upstream holds each URI.
    pub(super) async fn refresh_resources(&self) -> Vec<(ServerName, rmcp::model::Resource)> {
        let lists = self
            .ask_all(
                |c| &c.resources,
                || Forward::ListResources,
                "resources/list",
            )
            .await;
        let away = self.away(|c| &c.resources, &lists);
        // Every claim, in listing order; then each URI goes to its keeper. URIs stay the
        // upstreams' own, so a client can use what it already knows.
        let mut claims: Vec<(ServerName, Option<String>, rmcp::model::Resource)> = vec![];
        for (server, prefix, got) in lists {
            if let Forwarded::Resources(list) = got {
                claims.extend(
                    list.into_iter()
                        .map(|r| (server.clone(), prefix.clone(), r)),
                );
            }
        }
        let mut routes = self.routes.lock().expect("routes lock");
        let previous = std::mem::take(&mut routes.resources);
        let (owners, shadowed) = settle(
            "resource",
            claims.iter().map(|(server, _, r)| (r.uri.as_str(), server)),
            |uri| previous.get(uri),
            &away,
        );
        let mut resources = vec![];
        let mut seen = std::collections::HashSet::new();
        for (server, prefix, mut r) in claims {
            // Once per URI: an upstream listing one URI twice shows it once.
            if owners.get(&r.uri) != Some(&server) || !seen.insert(r.uri.clone()) {
                continue;
            }
            r.name = names::label(prefix.as_deref(), &r.name);
            resources.push((server, r));
        }
        routes.resources = owners;
        routes.shadow("resource", shadowed);
        drop(routes);
        resources
    }

    pub(super) async fn refresh_templates(
        &self,
    ) -> Vec<(ServerName, rmcp::model::ResourceTemplate)> {
        let lists = self
            .ask_all(
                |c| &c.resources,
                || Forward::ListResourceTemplates,
                "resources/templates/list",
            )
            .await;
        let away = self.away(|c| &c.resources, &lists);
        let mut claims: Vec<(ServerName, Option<String>, rmcp::model::ResourceTemplate)> = vec![];
        for (server, prefix, got) in lists {
            if let Forwarded::ResourceTemplates(list) = got {
                claims.extend(
                    list.into_iter()
                        .map(|t| (server.clone(), prefix.clone(), t)),
                );
            }
        }
        let mut routes = self.routes.lock().expect("routes lock");
        let previous = std::mem::take(&mut routes.template_owners);
        let (owners, shadowed) = settle(
            "resource_template",
            claims
                .iter()
                .map(|(server, _, t)| (t.uri_template.as_str(), server)),
            |template| previous.get(template),
            &away,
        );
        let mut templates = vec![];
        let mut stems = vec![];
        let mut seen = std::collections::HashSet::new();
        for (server, prefix, mut t) in claims {
            if owners.get(&t.uri_template) != Some(&server) || !seen.insert(t.uri_template.clone())
            {
                continue;
            }
            let stem = t.uri_template.split('{').next().unwrap_or_default();
            stems.push((stem.to_owned(), server.clone()));
            t.name = names::label(prefix.as_deref(), &t.name);
            templates.push((server, t));
        }
        routes.templates = stems;
        routes.template_owners = owners;
        routes.shadow("resource_template", shadowed);
        drop(routes);
        templates
    }

    /// Sends one request to every live upstream in `servers` at once; answers what each
    /// said, with its effective prefix. An upstream that fails is logged and left out, so
    /// one broken upstream never fails a whole listing.
    async fn ask_all(
        &self,
        servers: impl Fn(&Catalogue) -> &Vec<(ServerName, Option<String>)>,
        request: impl Fn() -> Forward,
        what: &str,
    ) -> Vec<(ServerName, Option<String>, Forwarded)> {
        let catalogue = self.catalogue.borrow().clone();
        let asked = servers(&catalogue).iter().map(|(server, prefix)| {
            let forward = request();
            async move {
                let got = self.gateway.forward(server, forward).await;
                (server.clone(), prefix.clone(), got)
            }
        });
        let mut answers = vec![];
        for (server, prefix, got) in join_all(asked).await {
            match got {
                Ok(answer) => answers.push((server, prefix, answer)),
                Err(e) => log::warn!("[{server}] {what} failed: {e}"),
            }
        }
        answers
    }

    pub(super) fn prompt_route(&self, name: &str) -> Option<(ServerName, String)> {
        self.routes
            .lock()
            .expect("routes lock")
            .prompts
            .get(name)
            .cloned()
    }

    pub(super) async fn refresh_prompts(&self) -> Vec<(ServerName, rmcp::model::Prompt)> {
        let lists = self
            .ask_all(|c| &c.prompts, || Forward::ListPrompts, "prompts/list")
            .await;
        let away = self.away(|c| &c.prompts, &lists);
        let mut claims = vec![];
        for (server, prefix, got) in lists {
            if let Forwarded::Prompts(list) = got {
                for p in list {
                    claims.push((server.clone(), names::label(prefix.as_deref(), &p.name), p));
                }
            }
        }
        let mut routes = self.routes.lock().expect("routes lock");
        let previous = std::mem::take(&mut routes.prompts);
        let (owners, shadowed) = settle(
            "prompt",
            claims
                .iter()
                .map(|(server, exposed, _)| (exposed.as_str(), server)),
            |exposed| previous.get(exposed).map(|(server, _)| server),
            &away,
        );
        let mut prompts = vec![];
        let mut found = HashMap::new();
        // Names kept by a server that is away stay its own, to route to when it is back.
        for (exposed, owner) in &owners {
            if let Some(route) = previous.get(exposed).filter(|(s, _)| s == owner && away(s)) {
                found.insert(exposed.clone(), route.clone());
            }
        }
        for (server, exposed, mut p) in claims {
            if owners.get(&exposed) != Some(&server) || found.contains_key(&exposed) {
                continue;
            }
            found.insert(exposed.clone(), (server.clone(), p.name.clone()));
            p.name = exposed;
            prompts.push((server, p));
        }
        routes.prompts = found;
        routes.shadow("prompt", shadowed);
        drop(routes);
        prompts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First come holds while the first server is down or its listing failed, and ends
    /// only when it stops offering the name or leaves the registry.
    #[test]
    fn a_name_stays_with_its_first_server_while_that_one_is_away() {
        let (a, b) = (
            ServerName::parse("a").unwrap(),
            ServerName::parse("b").unwrap(),
        );
        let both = [("file:///x", &b), ("file:///x", &a)];
        // No one held it: the first in listing order.
        let (owners, shadowed) = settle("resource", both, |_| None, |_| false);
        assert_eq!(owners["file:///x"], b);
        assert_eq!((shadowed.len(), &shadowed[0].server), (1, &a));
        // Held by a: a keeps it, wherever it is listed.
        let (owners, _) = settle("resource", both, |_| Some(&a), |_| false);
        assert_eq!(owners["file:///x"], a);
        // a is away (registered, not in this listing): still a's; b's copy is left out.
        let only_b = [("file:///x", &b)];
        let (owners, shadowed) = settle("resource", only_b, |_| Some(&a), |s| *s == a);
        assert_eq!(owners["file:///x"], a);
        assert_eq!((shadowed.len(), &shadowed[0].kept_by), (1, &a));
        // a answered without it, or left the registry: b takes it.
        let (owners, shadowed) = settle("resource", only_b, |_| Some(&a), |_| false);
        assert_eq!(owners["file:///x"], b);
        assert!(shadowed.is_empty());
    }
}
