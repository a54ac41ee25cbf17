//! Process metrics: Prometheus families for `/metrics`, and plain counters that the live
//! dashboard's `system_metrics` reads. Series that mirror the status board and the cache
//! are set when `/metrics` is scraped, so nothing has to keep them in step. Monotonic
//! numbers are counters (exposed as `..._total`), levels are gauges.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::auth::AllowList;
use crate::cache::CacheStats;
use crate::upstream::StatusBoard;

/// The label of a server or tool the call named but the gateway does not know: client
/// text never becomes a label value, so made-up names cannot multiply the series.
pub const UNKNOWN: &str = "(unknown)";
/// The label of every call past [`MAX_CALL_SERIES`].
pub const OVERFLOW: &str = "(other)";
/// Series of the per-call families at most; each is a counter and a histogram of 12
/// buckets, so this bounds a scrape to a few megabytes whatever the catalogue holds.
pub const MAX_CALL_SERIES: usize = 5_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub server: String,
    pub tool: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub server: String,
    pub status: String,
}

type HistogramFamily = Family<CallLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs to about 26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

pub struct Metrics {
    registry: Registry,
    pub tool_calls: Family<CallLabels, Counter>,
    pub tool_call_seconds: HistogramFamily,
    upstream_status: Family<StatusLabels, Gauge>,
    upstream_circuit_open: Family<ServerLabels, Gauge>,
    upstream_restarts: Family<ServerLabels, Counter>,
    upstream_tools: Family<ServerLabels, Gauge>,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_evictions: Counter,
    cache_expirations: Counter,
    cache_invalidations: Counter,
    /// One scrape at a time: a scrape clears and refills the board's families before it
    /// encodes them, and a second scrape in between would see them half empty.
    render_lock: Mutex<()>,
    pub ws_sessions: Gauge,
    pub ws_dropped_slow: Counter,
    pub ws_closed_abuse: Counter,
    pub http_requests: Counter,
    pub http_errors: Counter,
    /// Audit rows that never reached the store, whatever the reason.
    pub audit_rows_dropped: Counter,
    /// The per-call label sets in use, for the cap.
    call_series: std::sync::RwLock<std::collections::HashSet<CallLabels>>,
    /// Calls counted under [`OVERFLOW`] because the cap was reached.
    call_series_capped: Counter,
    /// For `system_metrics`: the same numbers without going through the registry.
    requests_total: AtomicU64,
    errors_total: AtomicU64,
    live_sessions: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("omni");
        let tool_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls by server, tool and outcome",
            tool_calls.clone(),
        );
        let tool_call_seconds: HistogramFamily =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "tool_call_duration_seconds",
            "Tool call latency inside the gateway, by server, tool and outcome",
            tool_call_seconds.clone(),
        );
        let upstream_status = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "upstream_status",
            "1 for the status each upstream is in",
            upstream_status.clone(),
        );
        let upstream_circuit_open = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "upstream_circuit_open",
            "1 while an upstream's circuit is open or half-open",
            upstream_circuit_open.clone(),
        );
        let upstream_restarts = Family::<ServerLabels, Counter>::default();
        registry.register(
            "upstream_restarts",
            "Restarts of each upstream since it was registered",
            upstream_restarts.clone(),
        );
        let upstream_tools = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "upstream_tools",
            "Tools each upstream offers",
            upstream_tools.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let cache_entries = gauge(
            &mut registry,
            "cache_entries",
            "Entries in the result cache",
        );
        let cache_bytes = gauge(
            &mut registry,
            "cache_bytes",
            "Bytes held by the result cache",
        );
        let cache_hits = counter(&mut registry, "cache_hits", "Result cache hits");
        let cache_misses = counter(&mut registry, "cache_misses", "Result cache misses");
        let cache_evictions = counter(
            &mut registry,
            "cache_evictions",
            "Result cache entries evicted to stay within the limits",
        );
        let cache_expirations = counter(
            &mut registry,
            "cache_expirations",
            "Result cache entries dropped when their TTL ran out",
        );
        let cache_invalidations = counter(
            &mut registry,
            "cache_invalidations",
            "Result cache entries dropped by invalidation",
        );
        let ws_sessions = Gauge::default();
        registry.register(
            "ws_sessions",
            "Live WebSocket sessions",
            ws_sessions.clone(),
        );
        let ws_dropped_slow = Counter::default();
        registry.register(
            "ws_dropped_slow_sessions",
            "WebSocket sessions closed because they could not keep up",
            ws_dropped_slow.clone(),
        );
        let ws_closed_abuse = Counter::default();
        registry.register(
            "ws_closed_bad_clients",
            "WebSocket sessions closed for garbage, floods or oversized frames",
            ws_closed_abuse.clone(),
        );
        let http_requests = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests served",
            http_requests.clone(),
        );
        let http_errors = Counter::default();
        registry.register(
            "http_errors",
            "HTTP requests answered 5xx",
            http_errors.clone(),
        );
        let audit_rows_dropped = Counter::default();
        registry.register(
            "audit_rows_dropped",
            "tool_invocations rows that never reached the store (store down past the buffer, \
             rows the store refused, rows left at shutdown)",
            audit_rows_dropped.clone(),
        );
        let call_series_capped = counter(
            &mut registry,
            "metric_series_capped",
            "Tool calls counted under server=\"(other)\" because the per-call series reached their cap",
        );
        Self {
            registry,
            audit_rows_dropped,
            call_series: Default::default(),
            call_series_capped,
            tool_calls,
            tool_call_seconds,
            upstream_status,
            upstream_circuit_open,
            upstream_restarts,
            upstream_tools,
            cache_entries,
            cache_bytes,
            cache_hits,
            cache_misses,
            cache_evictions,
            cache_expirations,
            cache_invalidations,
            render_lock: Mutex::new(()),
            ws_sessions,
            ws_dropped_slow,
            ws_closed_abuse,
            http_requests,
            http_errors,
            requests_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
            live_sessions: AtomicI64::new(0),
        }
    }

    pub fn record_request(&self, server_error: bool) {
        self.http_requests.inc();
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        if server_error {
            self.http_errors.inc();
            self.errors_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one call. `server` and `tool` are `None` when the call named something the
    /// gateway does not know; `outcome` is one of a fixed set of codes.
    pub fn record_call(
        &self,
        server: Option<&str>,
        tool: Option<&str>,
        outcome: &str,
        seconds: f64,
    ) {
        let mut labels = CallLabels {
            server: server.unwrap_or(UNKNOWN).to_owned(),
            tool: tool.unwrap_or(UNKNOWN).to_owned(),
            outcome: outcome.to_owned(),
        };
        let known = self
            .call_series
            .read()
            .expect("call series")
            .contains(&labels);
        if !known {
            let mut series = self.call_series.write().expect("call series");
            if series.len() < MAX_CALL_SERIES {
                series.insert(labels.clone());
            } else if !series.contains(&labels) {
                self.call_series_capped.inc();
                labels.server = OVERFLOW.to_owned();
                labels.tool = OVERFLOW.to_owned();
            }
        }
        self.tool_calls.get_or_create(&labels).inc();
        self.tool_call_seconds
            .get_or_create(&labels)
            .observe(seconds);
    }

    pub fn session_opened(&self) {
        self.ws_sessions.inc();
        self.live_sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn session_closed(&self) {
        self.ws_sessions.dec();
        self.live_sessions.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn requests_total(&self) -> u64 {
        self.requests_total.load(Ordering::Relaxed)
    }

    pub fn errors_total(&self) -> u64 {
        self.errors_total.load(Ordering::Relaxed)
    }

    pub fn live_sessions(&self) -> i64 {
        self.live_sessions.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition, with board and cache series brought up to date.
    pub fn render(&self, board: &StatusBoard, cache: Option<&CacheStats>) -> String {
        // A poisoned lock only means another scrape panicked; the families are still sound.
        let _one_at_a_time = self
            .render_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Cleared so that a removed upstream's series go; refilled before anyone can encode.
        self.upstream_status.clear();
        self.upstream_circuit_open.clear();
        self.upstream_restarts.clear();
        self.upstream_tools.clear();
        for (name, snapshot) in board.all() {
            let server = name.to_string();
            self.upstream_status
                .get_or_create(&StatusLabels {
                    server: server.clone(),
                    status: snapshot.status.as_str().to_owned(),
                })
                .set(1);
            let labels = ServerLabels { server };
            let open = snapshot.circuit != crate::upstream::CircuitState::Closed;
            self.upstream_circuit_open
                .get_or_create(&labels)
                .set(i64::from(open));
            self.upstream_restarts
                .get_or_create(&labels)
                .inc_by(snapshot.restart_count);
            self.upstream_tools
                .get_or_create(&labels)
                .set(snapshot.tools.len() as i64);
        }
        if let Some(stats) = cache {
            self.cache_entries.set(stats.entries as i64);
            self.cache_bytes.set(stats.bytes as i64);
            let c = &stats.counters;
            for (counter, value) in [
                (&self.cache_hits, c.hits),
                (&self.cache_misses, c.misses),
                (&self.cache_evictions, c.evictions),
                (&self.cache_expirations, c.expirations),
                (&self.cache_invalidations, c.invalidations),
            ] {
                // The cache keeps the totals; a counter only goes up, so it takes the
                // difference (the cache's own counts never go down).
                counter.inc_by(value.saturating_sub(counter.get()));
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Counts of upstreams: total and healthy (healthy or degraded).
pub fn upstream_counts(board: &StatusBoard, allow: &AllowList) -> (usize, usize) {
    let all = board.all();
    let visible = all
        .iter()
        .filter(|(name, _)| allow.allows_server(name.as_str()));
    let (mut total, mut up) = (0, 0);
    for (_, snapshot) in visible {
        total += 1;
        up += usize::from(snapshot.status.is_up());
    }
    (total, up)
}

/// Resident memory of this process, in bytes (Linux), for `system_metrics`.
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the exposition's lines of one family's samples.
    fn samples(text: &str, family: &str) -> usize {
        text.lines().filter(|l| l.starts_with(family)).count()
    }

    /// Past the cap, a new series is counted under `(other)` and the capped counter, and
    /// the exposition stops growing; series that already exist keep their own labels.
    #[test]
    fn call_series_stop_at_the_cap() {
        let metrics = Metrics::new();
        let board = StatusBoard::default();
        for n in 0..MAX_CALL_SERIES {
            metrics.record_call(Some("demo"), Some(&format!("tool-{n}")), "ok", 0.001);
        }
        let full = metrics.render(&board, None);
        let at_cap = samples(&full, "omni_tool_calls_total{");
        assert_eq!(at_cap, MAX_CALL_SERIES);
        assert!(!full.contains(r#"omni_tool_calls_total{server="(other)""#));

        for n in 0..1_000 {
            metrics.record_call(Some("demo"), Some(&format!("new-{n}")), "ok", 0.001);
        }
        // A series that existed before the cap keeps counting under its own name.
        metrics.record_call(Some("demo"), Some("tool-0"), "ok", 0.001);
        let past = metrics.render(&board, None);
        assert_eq!(
            samples(&past, "omni_tool_calls_total{"),
            MAX_CALL_SERIES + 1
        );
        assert!(
            past.contains(
                r#"omni_tool_calls_total{server="(other)",tool="(other)",outcome="ok"} 1000"#
            ),
            "{}",
            past.lines()
                .filter(|l| l.contains("(other)"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            past.contains(r#"omni_tool_calls_total{server="demo",tool="tool-0",outcome="ok"} 2"#)
        );
        assert!(past.contains("omni_metric_series_capped_total 1000"));
    }
}
