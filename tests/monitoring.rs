//! The monitoring files in `deploy/` against what the real gateway exports: every metric
//! the Grafana dashboard queries must be a series `/metrics` serves, with every label the
//! dashboard filters, groups or names a legend by. A renamed metric, a typo in the
//! dashboard, or a label that no longer exists fails here instead of as an empty panel.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{TestDb, TestServer, cached};
use reqwest::StatusCode;
use serde_json::{Value, json};

const DASHBOARD: &str = "deploy/grafana/omni-bridge-dashboard.json";
const PROMETHEUS: &str = "deploy/prometheus.yml";

/// Labels Prometheus attaches to every series it scrapes (the target's), so a dashboard
/// may filter on them although `/metrics` never shows them.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Series Prometheus makes itself for each target, with their labels.
const SCRAPE_SERIES: [&str; 1] = ["up"];

/// What the issue asks the dashboard to show, by the series that show it: calls by
/// outcome, latency histograms, cache hit rate, upstream status, circuit state,
/// WebSocket sessions, audit drops.
const REQUIRED: [&str; 8] = [
    "omni_tool_calls_total",
    "omni_tool_call_duration_seconds_bucket",
    "omni_cache_hits_total",
    "omni_cache_misses_total",
    "omni_upstream_status",
    "omni_upstream_circuit_open",
    "omni_ws_sessions",
    "omni_audit_rows_dropped_total",
];

/// PromQL functions and aggregations the dashboard may use, and Grafana's
/// `label_values`: an identifier called like a function that is not here is a typo.
const FUNCTIONS: [&str; 30] = [
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "stddev",
    "group",
    "count_values",
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "resets",
    "changes",
    "histogram_quantile",
    "clamp_min",
    "clamp_max",
    "abs",
    "round",
    "vector",
    "scalar",
    "absent",
    "max_over_time",
    "avg_over_time",
    "label_values",
];

/// Words of PromQL that are neither metrics nor functions.
const KEYWORDS: [&str; 5] = ["and", "or", "unless", "bool", "offset"];
/// Words followed by a list of label names.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// A scrape of `/metrics`: the declared families, and the label names each series name
/// was seen with.
#[derive(Debug, Default)]
struct Exposition {
    /// Family name to its `# TYPE`.
    families: BTreeMap<String, String>,
    /// Series name (as Prometheus stores it) to the labels of its samples.
    samples: BTreeMap<String, BTreeSet<String>>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    panic!("a TYPE line without a name and a type: {line}");
                };
                out.families.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let (name, labels) = parse_sample(line);
                out.samples.entry(name).or_default().extend(labels);
            }
        }
        out
    }

    /// The series names Prometheus stores for a family of this type: counters gain
    /// `_total`, histograms are only their `_bucket`, `_sum` and `_count`.
    fn series_names(&self) -> BTreeMap<String, String> {
        let mut names = BTreeMap::new();
        for (family, kind) in &self.families {
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{family}{suffix}"), family.clone());
            }
        }
        names
    }
}

/// One sample line: its series name and label names (values may hold any escaped text).
fn parse_sample(line: &str) -> (String, BTreeSet<String>) {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..end].to_owned();
    let mut labels = BTreeSet::new();
    if line[end..].starts_with('{') {
        let mut chars = line[end + 1..].chars();
        loop {
            let label: String = chars.by_ref().take_while(|c| *c != '=').collect();
            let label = label.trim_start_matches(',').trim();
            if label.is_empty() || label.starts_with('}') {
                break;
            }
            assert_eq!(chars.next(), Some('"'), "a label value is quoted: {line}");
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    _ => escaped = false,
                }
            }
            labels.insert(label.to_owned());
        }
    }
    (name, labels)
}

/// What one PromQL expression names.
#[derive(Debug, Default)]
struct Query {
    /// Each metric, with the labels its own `{...}` matchers name.
    selectors: Vec<(String, BTreeSet<String>)>,
    /// Labels of `by (...)`, `without (...)`, `on (...)` and the like.
    grouping: BTreeSet<String>,
    /// Identifiers called like functions.
    functions: BTreeSet<String>,
    /// Label values that name the scrape job (`job="..."`).
    jobs: BTreeSet<String>,
    /// What the expression cannot mean, found while reading it.
    errors: Vec<String>,
}

/// Reads the names out of a PromQL expression (with Grafana's `$variables`): enough of
/// the grammar to tell metrics from functions, keywords, label lists, strings, numbers
/// and durations; not a full parser.
fn read_promql(expr: &str) -> Query {
    let chars: Vec<char> = expr.chars().collect();
    let mut query = Query::default();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_space = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let read_ident = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && ident_char(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    let read_string = |i: &mut usize| {
        let quote = chars[*i];
        *i += 1;
        let mut text = String::new();
        while *i < chars.len() && chars[*i] != quote {
            if chars[*i] == '\\' {
                *i += 1;
            }
            if *i < chars.len() {
                text.push(chars[*i]);
            }
            *i += 1;
        }
        *i += 1;
        text
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() || "()+-*/^%,<>=!".contains(c) {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            read_string(&mut i);
        } else if c == '[' {
            // A range or subquery duration: `[5m]`, `[$__rate_interval]`.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            // A Grafana variable: `$name`, `${name}`, `$__rate_interval`.
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                read_ident(&mut i);
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                // `1e-9`: the sign belongs to the exponent.
                let exponent = (chars[i] == 'e' || chars[i] == 'E')
                    && chars.get(i + 1).is_some_and(|n| *n == '-' || *n == '+');
                i += if exponent { 2 } else { 1 };
            }
        } else if c == '{' {
            query.errors.push(format!(
                "a selector without a metric name at {i} in `{expr}` cannot be checked"
            ));
            return query;
        } else if ident_start(c) {
            let word = read_ident(&mut i);
            skip_space(&mut i);
            let next = chars.get(i).copied();
            if LABEL_LISTS.contains(&word.as_str()) {
                if next == Some('(') {
                    i += 1;
                    loop {
                        skip_space(&mut i);
                        match chars.get(i) {
                            Some(')') | None => break,
                            Some(',') => i += 1,
                            Some(_) => {
                                let label = read_ident(&mut i);
                                if label.is_empty() {
                                    query.errors.push(format!("a label list in `{expr}`"));
                                    return query;
                                }
                                query.grouping.insert(label);
                            }
                        }
                    }
                    i += 1;
                }
            } else if KEYWORDS.contains(&word.as_str()) {
            } else if next == Some('(') || FUNCTIONS.contains(&word.as_str()) {
                query.functions.insert(word);
            } else {
                let mut matchers = BTreeSet::new();
                if next == Some('{') {
                    i += 1;
                    loop {
                        skip_space(&mut i);
                        match chars.get(i) {
                            Some('}') | None => break,
                            Some(',') => i += 1,
                            Some(_) => {
                                let label = read_ident(&mut i);
                                skip_space(&mut i);
                                while i < chars.len() && "=!~".contains(chars[i]) {
                                    i += 1;
                                }
                                skip_space(&mut i);
                                if label.is_empty()
                                    || !matches!(chars.get(i), Some('"' | '\'' | '`'))
                                {
                                    query.errors.push(format!("a label matcher in `{expr}`"));
                                    return query;
                                }
                                let value = read_string(&mut i);
                                if label == "job" {
                                    query.jobs.insert(value);
                                }
                                matchers.insert(label);
                            }
                        }
                    }
                    i += 1;
                }
                query.selectors.push((word, matchers));
            }
        } else {
            query
                .errors
                .push(format!("unexpected `{c}` at {i} in `{expr}`"));
            return query;
        }
    }
    query
}

/// Every query in a dashboard: each panel target's `expr` (rows nest panels) and each
/// query variable's, as (where, expression, legend labels).
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String, BTreeSet<String>)> {
    fn walk(value: &Value, title: &str, out: &mut Vec<(String, String, BTreeSet<String>)>) {
        match value {
            Value::Object(object) => {
                let title = object.get("title").and_then(Value::as_str).unwrap_or(title);
                if let Some(expr) = object.get("expr").and_then(Value::as_str) {
                    let legend = object
                        .get("legendFormat")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let labels = legend
                        .split("{{")
                        .skip(1)
                        .filter_map(|part| part.split_once("}}"))
                        .map(|(label, _)| label.trim().to_owned())
                        .collect();
                    out.push((format!("panel \"{title}\""), expr.to_owned(), labels));
                }
                for (key, child) in object {
                    if key != "templating" {
                        walk(child, title, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, title, out)),
            _ => {}
        }
    }
    let mut out = vec![];
    walk(dashboard, "(dashboard)", &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = &variable["query"];
        let text = query["query"]
            .as_str()
            .or(query.as_str())
            .unwrap_or_default();
        let name = variable["name"].as_str().unwrap_or_default();
        // `label_values(selector, label)`: the label must be on the selector's metric.
        let (selector, label) = text
            .strip_prefix("label_values(")
            .and_then(|inner| inner.strip_suffix(')'))
            .and_then(|inner| inner.rsplit_once(','))
            .map(|(selector, label)| (selector.to_owned(), label.trim().to_owned()))
            .unwrap_or_else(|| (text.to_owned(), String::new()));
        let labels = BTreeSet::from_iter((!label.is_empty()).then_some(label));
        out.push((format!("variable ${name}"), selector, labels));
    }
    out
}

/// Everything in the dashboard that `/metrics` (and the scrape config) do not back.
fn problems(dashboard: &Value, scrape: &Exposition, prometheus_yml: &str) -> Vec<String> {
    let series = scrape.series_names();
    let mut problems = vec![];
    let mut queried = BTreeSet::new();
    let queries = dashboard_queries(dashboard);
    if queries.is_empty() {
        problems.push("the dashboard has no queries".to_owned());
    }
    for (place, expr, legend) in queries {
        let query = read_promql(&expr);
        problems.extend(query.errors.iter().map(|e| format!("{place}: {e}")));
        if query.selectors.is_empty() {
            problems.push(format!("{place}: `{expr}` names no metric"));
        }
        for function in &query.functions {
            if !FUNCTIONS.contains(&function.as_str()) {
                problems.push(format!("{place}: `{function}` is not a known function"));
            }
        }
        for job in &query.jobs {
            if !prometheus_yml
                .lines()
                .any(|l| l.trim() == format!("- job_name: {job}"))
            {
                problems.push(format!("{place}: job \"{job}\" is not in {PROMETHEUS}"));
            }
        }
        // The labels each metric of the expression really has.
        let mut labels_of = vec![];
        for (metric, matchers) in &query.selectors {
            queried.insert(metric.clone());
            let labels: BTreeSet<String> = if SCRAPE_SERIES.contains(&metric.as_str()) {
                BTreeSet::new()
            } else if !series.contains_key(metric) {
                let family = scrape.families.keys().find(|f| metric.starts_with(*f));
                problems.push(match family {
                    Some(f) => format!(
                        "{place}: `{metric}` is not a series /metrics exports \
                         ({f} is a {}: it is stored as {})",
                        scrape.families[f],
                        series
                            .iter()
                            .filter(|(_, of)| *of == f)
                            .map(|(name, _)| name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => format!("{place}: `{metric}` is not a metric /metrics exports"),
                });
                continue;
            } else if let Some(labels) = scrape.samples.get(metric) {
                labels.clone()
            } else {
                problems.push(format!(
                    "{place}: `{metric}` has no samples in this scrape, so its labels \
                     cannot be checked (the test must make the gateway produce one)"
                ));
                continue;
            };
            let has = |label: &str| TARGET_LABELS.contains(&label) || labels.contains(label);
            for label in matchers {
                if !has(label) {
                    problems.push(format!(
                        "{place}: `{metric}` has no label `{label}` (it has {labels:?})"
                    ));
                }
            }
            labels_of.push((metric.clone(), labels));
        }
        // An aggregation keeps only the labels it groups by: a legend can name no other.
        if !query.grouping.is_empty() {
            for label in legend.difference(&query.grouping) {
                problems.push(format!(
                    "{place}: the legend names `{label}`, which the aggregation drops \
                     (it keeps {:?})",
                    query.grouping
                ));
            }
        }
        for label in query.grouping.iter().chain(&legend) {
            for (metric, labels) in &labels_of {
                if !TARGET_LABELS.contains(&label.as_str()) && !labels.contains(label) {
                    problems.push(format!(
                        "{place}: groups or names by `{label}`, which `{metric}` does not have \
                         (it has {labels:?})"
                    ));
                }
            }
        }
    }
    for required in REQUIRED {
        if !queried.contains(required) {
            problems.push(format!("no panel shows `{required}`"));
        }
    }
    problems
}

fn read_repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Scrapes `/metrics` as Prometheus would with deploy/prometheus.yml: a bearer key.
async fn scrape(server: &TestServer, key: &str) -> (StatusCode, String) {
    let resp = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    if status.is_success() {
        // OpenMetrics, said as such: Prometheus then keeps each family's type.
        let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            kind.starts_with("application/openmetrics-text; version=1.0.0"),
            "{kind}"
        );
    }
    let text = resp.text().await.unwrap();
    if status.is_success() {
        assert!(
            text.ends_with("# EOF\n"),
            "an OpenMetrics text ends with # EOF"
        );
    }
    (status, text)
}

/// Replaces the first `from` in every query of the dashboard.
fn mutated(dashboard: &Value, from: &str, to: &str) -> Value {
    let text = dashboard.to_string();
    assert!(text.contains(from), "the dashboard never says {from}");
    serde_json::from_str(&text.replacen(from, to, 1)).unwrap()
}

#[tokio::test]
async fn every_metric_and_label_the_dashboard_queries_is_on_metrics() {
    let db = TestDb::new();
    let mut server = TestServer::start(db.stdio_settings()).await;
    // An upstream with a cache, one call that misses and one that hits: every family
    // with labels then has a sample to read its labels from.
    server.register_healthy(&cached("demo")).await;
    for want_cached in [false, true] {
        let (status, body) = server.call("demo", "echo", json!({"text": "x"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["cached"], want_cached, "{body}");
    }
    // The role deploy/prometheus.yml tells people to give Prometheus: admin, not less.
    let (admin, viewer) = server
        .admin_and_key(json!({"name": "viewer", "role": "viewer"}))
        .await;
    assert_eq!(scrape(&server, &viewer).await.0, StatusCode::FORBIDDEN);
    let (status, text) = scrape(&server, &admin).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let exposition = Exposition::parse(&text);
    assert!(
        exposition.samples.contains_key("omni_cache_hits_total"),
        "{text}"
    );

    let dashboard: Value = serde_json::from_str(&read_repo_file(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    let prometheus_yml = read_repo_file(PROMETHEUS);
    let found = problems(&dashboard, &exposition, &prometheus_yml);
    assert!(
        found.is_empty(),
        "{DASHBOARD} does not match /metrics:\n{}\n\n/metrics said:\n{text}",
        found.join("\n")
    );

    // The check itself catches each kind of mistake, against the same scrape.
    for (from, to, expect) in [
        // A misspelt or renamed metric.
        (
            "omni_cache_hits_total",
            "omni_cache_hit_total",
            "`omni_cache_hit_total` is not a metric",
        ),
        // A counter without the `_total` Prometheus stores it under.
        (
            "omni_tool_calls_total{",
            "omni_tool_calls{",
            "`omni_tool_calls` is not a series",
        ),
        // A histogram queried by its family name.
        (
            "omni_tool_call_duration_seconds_bucket",
            "omni_tool_call_duration_seconds",
            "is a histogram: it is stored as",
        ),
        // A label the metric does not have, as a matcher and as a grouping.
        (
            "server=~\\\"$server\\\"",
            "upstream=~\\\"$server\\\"",
            "has no label `upstream`",
        ),
        (
            "sum by (outcome)",
            "sum by (result)",
            "groups or names by `result`",
        ),
        // A legend naming a label the series do not carry, or one the sum drops.
        ("{{outcome}}", "{{status}}", "groups or names by `status`"),
        ("{{outcome}}", "{{tool}}", "the legend names `tool`"),
        // A job the scrape config does not define.
        (
            "job=\\\"omni-bridge\\\"",
            "job=\\\"omni\\\"",
            "job \"omni\"",
        ),
        // A misspelt function.
        (
            "histogram_quantile(",
            "histogram_quantil(",
            "`histogram_quantil`",
        ),
    ] {
        let broken = mutated(&dashboard, from, to);
        let found = problems(&broken, &exposition, &prometheus_yml);
        assert!(
            found.iter().any(|p| p.contains(expect)),
            "replacing {from} with {to} must be reported ({expect}); found {found:?}"
        );
    }
    // A dashboard that no longer shows what the issue asks for.
    let mut without = dashboard.clone();
    without["panels"] = json!([]);
    let found = problems(&without, &exposition, &prometheus_yml);
    assert!(
        found.iter().any(|p| p.contains("no panel shows")),
        "{found:?}"
    );
    server.stop().await;
}

#[test]
fn promql_reader_tells_metrics_from_functions_labels_strings_and_durations() {
    let query = read_promql(
        r#"histogram_quantile(0.99, sum by (server, le) (rate(omni_x_bucket{instance=~"$instance", server!="a,b}"}[$__rate_interval]))) / on(instance) group_left clamp_min(omni_y, 1e-9) > bool 0.5 offset 5m"#,
    );
    assert!(query.errors.is_empty(), "{:?}", query.errors);
    assert_eq!(
        query.selectors,
        vec![
            (
                "omni_x_bucket".to_owned(),
                BTreeSet::from(["instance".to_owned(), "server".to_owned()])
            ),
            ("omni_y".to_owned(), BTreeSet::new()),
        ]
    );
    assert_eq!(
        query.grouping,
        BTreeSet::from(["server".into(), "le".into(), "instance".into()])
    );
    assert_eq!(
        query.functions,
        BTreeSet::from([
            "histogram_quantile".into(),
            "sum".into(),
            "rate".into(),
            "clamp_min".into()
        ])
    );
    // A selector by `__name__` alone cannot be checked, so it is refused.
    assert!(!read_promql(r#"sum({__name__="omni_x"})"#).errors.is_empty());
}

#[test]
fn exposition_parser_reads_families_series_and_labels() {
    let scrape = Exposition::parse(
        "# HELP omni_a A.\n# TYPE omni_a counter\nomni_a_total{server=\"x\\\"}\",tool=\"t\"} 1\n\
         # TYPE omni_h histogram\nomni_h_bucket{le=\"0.1\"} 0\n# TYPE omni_g gauge\nomni_g 3\n# EOF\n",
    );
    assert_eq!(
        scrape.samples["omni_a_total"],
        BTreeSet::from(["server".into(), "tool".into()])
    );
    assert_eq!(
        scrape.samples["omni_h_bucket"],
        BTreeSet::from(["le".into()])
    );
    assert!(scrape.samples["omni_g"].is_empty());
    let series = scrape.series_names();
    for name in [
        "omni_a_total",
        "omni_h_bucket",
        "omni_h_sum",
        "omni_h_count",
        "omni_g",
    ] {
        assert!(series.contains_key(name), "{name}: {series:?}");
    }
    assert!(!series.contains_key("omni_a") && !series.contains_key("omni_h"));
}
