//! The Gateway: not an actor, a cheap handle shared by the HTTP API and the MCP endpoint.
//! It does the whole path of a tool call: resolve the server and tool, check the arguments
//! against the tool's schema, look in the cache, call the upstream through its actor (one
//! call for any number of identical concurrent misses), fill the cache, and record the call
//! in the audit log off the request path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Addr;
use rmcp::model::{JsonObject, Tool};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::audit::AuditLog;
use crate::cache::{Cache, CacheKey, Fill, Scope};
use crate::call_failure::CallFailure;
use crate::registry::{ServerName, ToolHints, ValidationError};
use crate::store::invocations::NewInvocation;
use crate::traffic::{CacheUse, Traffic};
use crate::upstream::GetUpstream;
use crate::upstream::Lane;
use crate::upstream::Relay;
use crate::upstream::{
    CallError, Forward, Forwarded, StatusBoard, UpstreamActor, UpstreamSupervisor,
};

/// About how many bytes `value` takes as JSON text, without writing it out: strings and
/// keys count their length and quotes, numbers at most 24, the rest a few bytes. Enough to
/// hold results to a limit; the transports already cap a single message (rmcp: 16 MiB),
/// so this never walks more than that.
pub fn json_size(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| json_size(v) + 1).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 4 + json_size(v))
                .sum::<usize>()
        }
    }
}

/// How a request wants the cache used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// Serve from the cache when possible; fill it on a miss.
    Use,
    /// Neither read nor write the cache.
    Bypass,
    /// Skip the read, call the upstream, and store the fresh result.
    Refresh,
}

pub struct CallOutcome {
    /// The upstream's `CallToolResult`, as JSON.
    pub result: Arc<Value>,
    pub cached: bool,
    /// For a cached answer: when the upstream produced it.
    pub produced_at: Option<std::time::SystemTime>,
    pub duration: Duration,
    /// Whether the cache was looked in (so an answer not `cached` was a miss).
    pub looked_up: bool,
}

type Flight = Arc<OnceCell<Result<Arc<Value>, CallError>>>;
/// A compiled argument schema, with the schema it was compiled from.
type CompiledSchema = (Arc<JsonObject>, Arc<jsonschema::Validator>);

struct Inner {
    /// Tells the other instances of invalidations by writes (PostgreSQL only).
    cluster: Option<crate::cluster::Cluster>,
    /// Results larger than this are refused (`upstream-result-too-large`), not passed on.
    max_result_bytes: usize,
    board: StatusBoard,
    supervisor: Addr<UpstreamSupervisor>,
    /// Lookups, fills and invalidations, with the shared tier behind it when configured.
    cache: Cache,
    default_ttl: Duration,
    audit: AuditLog,
    metrics: Arc<crate::metrics::Metrics>,
    /// Calls in flight by cache key, so identical concurrent misses share one call.
    flights: Mutex<HashMap<CacheKey, Flight>>,
    /// Compiled argument schemas, by server and tool; the schema's `Arc` tells a stale one.
    validators: Mutex<HashMap<(ServerName, String), CompiledSchema>>,
    /// The last 15 minutes of calls per upstream, for the dashboard.
    traffic: Traffic,
}

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl Gateway {
    pub fn new(
        board: StatusBoard,
        supervisor: Addr<UpstreamSupervisor>,
        cache: Cache,
        default_ttl: Duration,
        audit: AuditLog,
        metrics: Arc<crate::metrics::Metrics>,
        max_result_bytes: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                cluster: None,
                max_result_bytes,
                board,
                supervisor,
                cache,
                default_ttl,
                audit,
                metrics,
                flights: Mutex::default(),
                validators: Mutex::default(),
                traffic: Traffic::default(),
            }),
        }
    }

    /// Tells the other instances of invalidations made by writes; call before cloning.
    pub fn with_cluster(mut self, cluster: crate::cluster::Cluster) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.cluster = Some(cluster);
        }
        self
    }

    /// Counts calls in `traffic` (the live hub reads it); call before cloning.
    pub fn with_traffic(mut self, traffic: Traffic) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.traffic = traffic;
        }
        self
    }

    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    /// Calls `tool` of `server`, through the cache where its policy allows.
    pub async fn call(
        &self,
        server: &ServerName,
        tool: &str,
        arguments: Option<JsonObject>,
        mode: CacheMode,
        caller: Option<&str>,
        relay: Option<Relay>,
    ) -> Result<CallOutcome, CallFailure> {
        let started = Instant::now();
        let args = Value::Object(arguments.clone().unwrap_or_default());
        let key = CacheKey::new(server.as_str(), tool, &args);
        // If this future is dropped before the call ends (the client went away, or the
        // shutdown grace ran out), the call still leaves its row.
        let hash = key.to_hex();
        let row = |cached, outcome, status| NewInvocation {
            server: server.to_string(),
            tool: tool.to_owned(),
            caller: caller.map(str::to_owned),
            arguments_hash: hash.clone(),
            cached,
            outcome,
            status,
            duration_us: started.elapsed().as_micros() as i64,
            created_at: crate::store::now(),
        };
        let in_flight = self
            .inner
            .audit
            .begin(|| row(false, "cancelled".to_owned(), 499));
        let outcome = self
            .call_inner(server, tool, arguments, (&args, key), mode, relay)
            .await;
        let (status, label, cached) = match &outcome {
            Ok(o) if o.result.get("isError") == Some(&Value::Bool(true)) => {
                (200, "tool_error".to_owned(), o.cached)
            }
            Ok(o) => (200, "ok".to_owned(), o.cached),
            Err(e) => (e.status(), e.code().to_owned(), false),
        };
        // Names the gateway does not know stay out of the labels (see `metrics`).
        let (server_label, tool_label) = match &outcome {
            Err(CallFailure::ServerNotFound(_)) => (None, None),
            Err(CallFailure::ToolNotFound { .. }) => (Some(server.as_str()), None),
            _ => (Some(server.as_str()), Some(tool)),
        };
        self.inner.metrics.record_call(
            server_label,
            tool_label,
            &label,
            started.elapsed().as_secs_f64(),
        );
        // A name the gateway does not know gets no ring (see `traffic`).
        if server_label.is_some() {
            let cache = match &outcome {
                Ok(o) if o.cached => CacheUse::Hit,
                Ok(o) if o.looked_up => CacheUse::Miss,
                _ => CacheUse::NotAsked,
            };
            self.inner
                .traffic
                .record(server, started.elapsed(), outcome.is_ok(), cache);
        }
        in_flight.finish(row(cached, label, i64::from(status)));
        outcome.map(|mut o| {
            o.duration = started.elapsed();
            o
        })
    }

    async fn call_inner(
        &self,
        server: &ServerName,
        tool_name: &str,
        arguments: Option<JsonObject>,
        (args, key): (&Value, CacheKey),
        mode: CacheMode,
        relay: Option<Relay>,
    ) -> Result<CallOutcome, CallFailure> {
        // Before anything about the upstream is read: an invalidation after this point
        // (a reload, say) refuses this call's fill.
        let generation = self.inner.cache.generation().current();
        // Only what the call needs, all behind `Arc`s: a whole snapshot clone per call
        // would copy strings and JSON on the hot path.
        let (status, tools, spec, lane) = self
            .inner
            .board
            .read(server, |s| {
                (s.status, s.tools.clone(), s.spec.clone(), s.lane.clone())
            })
            .ok_or_else(|| CallFailure::ServerNotFound(server.to_string()))?;
        if !status.is_connected() {
            return Err(CallError::NotConnected {
                server: server.to_string(),
                status: status.as_str(),
            }
            .into());
        }
        let tool = tools.iter().find(|t| t.name == tool_name).ok_or_else(|| {
            CallFailure::ToolNotFound {
                server: server.to_string(),
                tool: tool_name.to_owned(),
            }
        })?;
        self.check_arguments(server, tool, args)?;
        let hints = ToolHints::of(tool);
        let ttl = spec
            .as_ref()
            .and_then(|spec| spec.cache_ttl_for(tool_name, hints, self.inner.default_ttl));
        let done = |result: Arc<Value>, produced_at: Option<std::time::SystemTime>| CallOutcome {
            result,
            cached: produced_at.is_some(),
            produced_at,
            duration: Duration::ZERO,
            looked_up: ttl.is_some() && mode == CacheMode::Use,
        };
        // Connected but between sessions (the actor just stopped or has not put its lane).
        let lane = lane.ok_or_else(|| CallError::NotConnected {
            server: server.to_string(),
            status: "restarting",
        })?;
        let Some(ttl) = ttl.filter(|_| mode != CacheMode::Bypass) else {
            let result = self
                .call_upstream(&lane, server, tool_name, arguments, relay)
                .await;
            // A write (a tool that is not read-only) that reached the upstream drops
            // what it may have changed, here, in Redis and on the other instances,
            // before its answer goes out. Also when it failed there: it may have written.
            let reached = !matches!(
                result,
                Err(CallError::NotConnected { .. } | CallError::CircuitOpen { .. })
            );
            if let (true, Some(spec)) = (reached, &spec)
                && let Some(what) = spec.invalidated_by(tool_name, hints)
            {
                self.invalidate_after_write(server, tool_name, what, &tools)
                    .await;
            }
            return Ok(done(result?, None));
        };
        // The shared tier's invalidation counter, read before the upstream is asked: the
        // fill is shared only if no instance cleared the tier in between.
        let mut shared_epoch = None;
        if mode == CacheMode::Use {
            if let Some((hit, produced_at)) = self.inner.cache.lookup(&key) {
                return Ok(done(hit, Some(produced_at)));
            }
            // Another instance may have it; keep it near for what is left of its TTL.
            let read = match self.inner.cache.shared() {
                Some(shared) => Some(shared.get(server.as_str(), tool_name, &key).await),
                None => None,
            };
            shared_epoch = read.as_ref().and_then(|r| r.epoch);
            if let Some((hit, left, produced_at)) = read.and_then(|r| r.hit) {
                let size = serde_json::to_string(&*hit).map_or(0, |s| s.len());
                self.inner
                    .cache
                    .fill(Fill {
                        key,
                        server: server.to_string(),
                        tool: tool_name.to_owned(),
                        value: hit.clone(),
                        size,
                        ttl: left.min(ttl),
                        produced_at,
                        generation,
                    })
                    .await;
                return Ok(done(hit, Some(produced_at)));
            }
        } else if let Some(shared) = self.inner.cache.shared() {
            shared_epoch = shared.epoch().await;
        }
        // Single flight: the first caller runs the call; the others wait for its result.
        let flight = {
            let mut flights = self.inner.flights.lock().expect("flights lock");
            flights.entry(key).or_default().clone()
        };
        let result = flight
            .get_or_init(|| async {
                // The flight's leader relays; followers only share the result.
                let result = self
                    .call_upstream(&lane, server, tool_name, arguments, relay)
                    .await?;
                if result.get("isError") != Some(&Value::Bool(true)) {
                    let produced_at = std::time::SystemTime::now();
                    let size = serde_json::to_string(&*result).map_or(0, |s| s.len());
                    let kept = self
                        .inner
                        .cache
                        .fill(Fill {
                            key,
                            server: server.to_string(),
                            tool: tool_name.to_owned(),
                            value: result.clone(),
                            size,
                            ttl,
                            produced_at,
                            generation,
                        })
                        .await;
                    // What this instance would not keep, no other instance gets either.
                    if let (Some(shared), Some(epoch), true) =
                        (self.inner.cache.shared().cloned(), shared_epoch, kept)
                    {
                        let (server, tool, value) =
                            (server.to_string(), tool_name.to_owned(), result.clone());
                        let current = self.inner.cache.generation().clone();
                        // Shared off the request path: Redis never delays an answer. Not
                        // if this instance heard of an invalidation meanwhile, and Redis
                        // itself refuses it if any instance cleared the tier since `epoch`.
                        tokio::spawn(async move {
                            if current.current() == generation {
                                let value = (&*value, produced_at);
                                shared.put((&server, &tool, &key), value, ttl, epoch).await;
                            }
                        });
                    }
                }
                Ok(result)
            })
            .await
            .clone();
        {
            let mut flights = self.inner.flights.lock().expect("flights lock");
            if flights.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                flights.remove(&key);
            }
        }
        Ok(done(result?, None))
    }

    /// Drops the entries a call of `writer` may have made stale: every entry of the server
    /// (`None`), or those of its tools that the globs name.
    async fn invalidate_after_write(
        &self,
        server: &ServerName,
        writer: &str,
        what: Option<Vec<String>>,
        tools: &[Tool],
    ) {
        let scopes: Vec<Scope> = match what {
            None => vec![Scope::Server {
                server: server.to_string(),
            }],
            Some(globs) => tools
                .iter()
                .filter(|t| globs.iter().any(|g| crate::glob::matches(g, &t.name)))
                .map(|t| Scope::Tool {
                    server: server.to_string(),
                    tool: t.name.to_string(),
                })
                .collect(),
        };
        for scope in scopes {
            let reason = format!("write: {writer}");
            let _ = self.inner.cache.invalidate(scope.clone(), reason).await;
            if let Some(cluster) = &self.inner.cluster {
                cluster
                    .announce(crate::cluster::Announcement::Invalidate { scope })
                    .await;
            }
        }
    }

    /// The actor of a connected upstream.
    async fn upstream(&self, server: &ServerName) -> Result<Addr<UpstreamActor>, CallError> {
        self.inner
            .supervisor
            .send(GetUpstream {
                name: server.clone(),
            })
            .await
            .map_err(|_| CallError::Gone {
                server: server.to_string(),
            })?
            .ok_or_else(|| CallError::NotConnected {
                server: server.to_string(),
                status: "restarting",
            })
    }

    async fn call_upstream(
        &self,
        lane: &Lane,
        server: &ServerName,
        tool: &str,
        arguments: Option<JsonObject>,
        relay: Option<Relay>,
    ) -> Result<Arc<Value>, CallError> {
        let result = lane.call_tool(tool.to_owned(), arguments, relay).await?;
        let value = serde_json::to_value(&result).unwrap_or(Value::Null);
        let size = json_size(&value);
        if size > self.inner.max_result_bytes {
            return Err(CallError::TooLarge {
                server: server.to_string(),
                size,
                limit: self.inner.max_result_bytes,
            });
        }
        Ok(Arc::new(value))
    }

    /// Passes a resources or prompts request through to one upstream (for `/mcp`); it
    /// goes through that upstream's breaker and deadline like a tool call.
    pub async fn forward(
        &self,
        server: &ServerName,
        request: Forward,
    ) -> Result<Forwarded, CallError> {
        self.upstream(server)
            .await?
            .send(request)
            .await
            .map_err(|_| CallError::Gone {
                server: server.to_string(),
            })?
    }

    /// Checks the arguments against the tool's `inputSchema`; the error names the field. A
    /// schema that does not compile is the upstream's problem: calls go through unchecked.
    fn check_arguments(
        &self,
        server: &ServerName,
        tool: &Tool,
        args: &Value,
    ) -> Result<(), CallFailure> {
        let validator = {
            let mut cache = self.inner.validators.lock().expect("validators lock");
            let slot = (server.clone(), tool.name.to_string());
            match cache.get(&slot) {
                Some((schema, v)) if Arc::ptr_eq(schema, &tool.input_schema) => Some(v.clone()),
                _ => {
                    let schema = Value::Object((*tool.input_schema).clone());
                    match jsonschema::validator_for(&schema) {
                        Ok(v) => {
                            let v = Arc::new(v);
                            // Keyed by tools upstreams declared, but tools come and go:
                            // start over rather than grow without end.
                            if cache.len() >= MAX_VALIDATORS {
                                cache.clear();
                            }
                            cache.insert(slot, (tool.input_schema.clone(), v.clone()));
                            Some(v)
                        }
                        Err(e) => {
                            log::warn!("[{server}] tool {}: unusable inputSchema: {e}", tool.name);
                            None
                        }
                    }
                }
            }
        };
        let Some(validator) = validator else {
            return Ok(());
        };
        if let Some(error) = validator.iter_errors(args).next() {
            let path = error.instance_path().to_string();
            let field = if path.is_empty() {
                "arguments".to_owned()
            } else {
                format!("arguments{}", path.replace('/', "."))
            };
            return Err(CallFailure::InvalidArguments(ValidationError::new(
                field,
                error.to_string(),
            )));
        }
        Ok(())
    }
}

/// Compiled argument schemas kept at most.
const MAX_VALIDATORS: usize = 10_000;
