//! `omni-bridge import FILE...`: the servers of MCP client config files, put behind the
//! gateway. Every file is read and every entry checked before anything is written or
//! registered: a file with an entry the gateway cannot take stops the import with one line
//! per such entry, and nothing changes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, value};

use crate::cli::ImportArgs;
use crate::clients::files;
use crate::clients::read::{self, Entry, Environment};
use crate::registry::{REDACTED, ServerInput};

pub fn run(args: ImportArgs) -> ExitCode {
    match import(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop::Invalid(lines)) => {
            for line in &lines {
                eprintln!("omni-bridge import: {line}");
            }
            eprintln!(
                "omni-bridge import: nothing imported; fix or remove the entries above and run \
                 again"
            );
            ExitCode::from(2)
        }
        Err(Stop::Failed(e)) => {
            eprintln!("omni-bridge import: {e}");
            ExitCode::from(1)
        }
    }
}

enum Stop {
    /// The input cannot be imported as it is (exit code 2).
    Invalid(Vec<String>),
    /// Writing or registering went wrong (exit code 1).
    Failed(String),
}

impl From<String> for Stop {
    fn from(e: String) -> Self {
        Stop::Failed(e)
    }
}

/// An entry with the name it gets, and the file it came from.
struct Planned {
    entry: Entry,
    name: String,
    source: PathBuf,
}

/// What decides whether a server already there is the one being imported.
#[derive(PartialEq, Debug)]
struct Shape {
    transport: Option<String>,
    command: Option<String>,
    args: Vec<String>,
    url: Option<String>,
}

impl Shape {
    fn of(input: &ServerInput) -> Self {
        Shape {
            transport: input.transport.clone(),
            command: input.command.clone(),
            args: input.args.clone().unwrap_or_default(),
            url: input
                .url
                .as_deref()
                .map(crate::registry::secrets::redact_url_text),
        }
    }
}

fn import(args: ImportArgs) -> Result<(), Stop> {
    let environment = Environment::of_process();
    let mut problems = Vec::new();
    let mut entries = Vec::new();
    for file in &args.files {
        match read::read_file(file, &environment) {
            Ok(read) => {
                eprintln!(
                    "{}: {} server(s), read as {}",
                    file.display(),
                    read.entries.len() + read.problems.len(),
                    read.format.describe()
                );
                problems.extend(read.problems);
                entries.extend(read.entries.into_iter().map(|e| (file.clone(), e)));
            }
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return Err(Stop::Invalid(problems));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (existing, document) = match (&args.config, &args.url) {
        (Some(config), _) => {
            let document = read_config(config)?;
            (servers_in(&document, config)?, Some(document))
        }
        (None, Some(url)) => (
            runtime.block_on(registered(url, args.key.as_deref()))?,
            None,
        ),
        (None, None) => (Vec::new(), None),
    };
    let planned = plan(entries, &existing);
    if planned.is_empty() {
        eprintln!("every server is already there; nothing to do");
        return Ok(());
    }
    match (args.config, args.url) {
        (Some(config), _) => {
            let mut document = document.expect("read with the config");
            append(&mut document, &planned, false)?;
            if args.dry_run {
                print!("{}", tables(&planned, true));
                eprintln!("dry run: {} unchanged", config.display());
                return Ok(());
            }
            let backup = files::replace(&config, &document.to_string())?;
            eprintln!(
                "added {} server(s) to {}{}",
                planned.len(),
                config.display(),
                backup
                    .map(|b| format!(" (the previous file is {})", b.display()))
                    .unwrap_or_default()
            );
            Ok(())
        }
        (None, Some(url)) => {
            if args.dry_run {
                for p in &planned {
                    println!("POST {url}/api/v1/servers  {}", p.name);
                }
                eprintln!("dry run: nothing registered");
                return Ok(());
            }
            runtime.block_on(register(&url, args.key.as_deref(), &planned))
        }
        (None, None) => {
            // No destination: the entries on standard output, to append to a config file.
            print!("{}", tables(&planned, args.dry_run));
            Ok(())
        }
    }
}

/// Names every entry: its normalized name, unless that is taken (then `-2`, `-3`...).
/// An entry identical to a server already there is left out.
fn plan(entries: Vec<(PathBuf, Entry)>, existing: &[(String, Shape)]) -> Vec<Planned> {
    let mut taken: BTreeSet<String> = existing.iter().map(|(n, _)| n.clone()).collect();
    let mut planned: Vec<Planned> = Vec::new();
    for (source, mut entry) in entries {
        let base = entry
            .input
            .name
            .clone()
            .expect("read gives every entry a name");
        let shape = Shape::of(&entry.input);
        // The entry `omni-bridge connect` wrote points at a gateway: imported, a gateway
        // would list (and call) its own tools.
        if is_a_gateway(&entry) {
            eprintln!(
                "{:?}: skipped: it points a client at an omni-bridge gateway (written by \
                 omni-bridge connect)",
                entry.original
            );
            continue;
        }
        // The same server in two of the files read.
        if let Some(p) = planned.iter().find(|p| Shape::of(&p.entry.input) == shape) {
            eprintln!(
                "{:?}: the same server as {:?} of {}; imported once",
                entry.original,
                p.entry.original,
                p.source.display()
            );
            continue;
        }
        // Already imported: the same server under this name, or under the name an
        // earlier import gave it (`base-2`...).
        if let Some((there, _)) = existing
            .iter()
            .find(|(n, s)| *s == shape && same_base(n, &base))
        {
            eprintln!("{:?}: already there as {there}; skipped", entry.original);
            continue;
        }
        let name = read::unique_name(&base, &|n| taken.contains(n));
        if name != entry.original {
            let why = if name == base {
                "the registry's name rules"
            } else {
                "that name is taken"
            };
            eprintln!("{:?}: renamed to {name} ({why})", entry.original);
        }
        if !entry.ignored.is_empty() {
            eprintln!(
                "{:?}: ignored what the gateway has no use for: {}",
                entry.original,
                entry.ignored.join(", ")
            );
        }
        taken.insert(name.clone());
        entry.input.name = Some(name.clone());
        planned.push(Planned {
            entry,
            name,
            source,
        });
    }
    planned
}

/// Whether an entry is one `omni-bridge connect` writes: the `mcp-remote` bridge with the
/// gateway's key variable, or a URL entry under connect's default name ending in `/mcp`.
fn is_a_gateway(entry: &Entry) -> bool {
    let input = &entry.input;
    let bridged = input
        .env
        .as_ref()
        .is_some_and(|env| env.contains_key(crate::clients::connect::AUTH_VARIABLE));
    let named = entry.original == "omni-bridge"
        && input
            .url
            .as_deref()
            .is_some_and(|u| u.trim_end_matches('/').ends_with("/mcp"));
    bridged || named
}

/// Whether `name` is `base`, or `base-N` as [`read::unique_name`] makes it.
fn same_base(name: &str, base: &str) -> bool {
    name == base
        || name
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn read_config(path: &Path) -> Result<DocumentMut, Stop> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Stop::Failed(format!("{}: {e}", path.display()))),
    };
    text.parse::<DocumentMut>()
        .map_err(|e| Stop::Invalid(vec![format!("{}: not TOML: {e}", path.display())]))
}

/// The servers a config file declares already.
fn servers_in(document: &DocumentMut, path: &Path) -> Result<Vec<(String, Shape)>, Stop> {
    let Some(item) = document.get("servers") else {
        return Ok(Vec::new());
    };
    let Some(tables) = item.as_array_of_tables() else {
        return Err(Stop::Invalid(vec![format!(
            "{}: \"servers\" must be [[servers]] tables to add to",
            path.display()
        )]));
    };
    let text = |t: &Table, k: &str| t.get(k).and_then(Item::as_str).map(str::to_owned);
    Ok(tables
        .iter()
        .filter_map(|t| {
            let name = text(t, "name")?;
            let args = t
                .get("args")
                .and_then(Item::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let shape = Shape {
                transport: text(t, "transport"),
                command: text(t, "command"),
                args,
                url: text(t, "url")
                    .as_deref()
                    .map(crate::registry::secrets::redact_url_text),
            };
            Some((name, shape))
        })
        .collect())
}

/// Adds a `[[servers]]` table per entry, each after a comment saying where it came from.
fn append(document: &mut DocumentMut, planned: &[Planned], redact: bool) -> Result<(), Stop> {
    let servers = document
        .entry("servers")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| {
            Stop::Invalid(vec![
                "\"servers\" must be [[servers]] tables to add to".into(),
            ])
        })?;
    for p in planned {
        servers.push(table(p, redact));
    }
    Ok(())
}

/// The `[[servers]]` tables alone, as text.
fn tables(planned: &[Planned], redact: bool) -> String {
    let mut document = DocumentMut::new();
    let mut servers = ArrayOfTables::new();
    for p in planned {
        servers.push(table(p, redact));
    }
    document.insert("servers", Item::ArrayOfTables(servers));
    document.to_string()
}

fn table(p: &Planned, redact: bool) -> Table {
    let input = &p.entry.input;
    let mut t = Table::new();
    t.decor_mut().set_prefix(format!(
        "\n# imported from {} ({:?})\n",
        p.source.display(),
        p.entry.original
    ));
    t["name"] = value(&p.name);
    t["transport"] = value(input.transport.as_deref().unwrap_or_default());
    if let Some(command) = &input.command {
        t["command"] = value(command);
    }
    if let Some(args) = &input.args {
        t["args"] = value(args.iter().collect::<Array>());
    }
    let secrets = |map: &std::collections::BTreeMap<String, String>| {
        let mut inline = InlineTable::new();
        for (k, v) in map {
            inline.insert(k, if redact { REDACTED } else { v }.into());
        }
        value(inline)
    };
    if let Some(env) = &input.env {
        t["env"] = secrets(env);
    }
    if let Some(cwd) = &input.cwd {
        t["cwd"] = value(cwd);
    }
    if let Some(url) = &input.url {
        t["url"] = value(if redact {
            crate::registry::secrets::redact_url_text(url)
        } else {
            url.clone()
        });
    }
    if let Some(headers) = &input.headers {
        t["headers"] = secrets(headers);
    }
    if input.enabled == Some(false) {
        t["enabled"] = value(false);
    }
    t
}

fn http() -> Result<reqwest::Client, String> {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())
}

fn authorized(request: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
    match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    }
}

/// The error line of an API answer: `403 stdio-not-allowed: ...`.
async fn refusal(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match (
        body.pointer("/error/code").and_then(Value::as_str),
        body.pointer("/error/message").and_then(Value::as_str),
    ) {
        (Some(code), Some(message)) => format!("{} {code}: {message}", status.as_u16()),
        _ => status.to_string(),
    }
}

/// The servers a running gateway has, as this key sees them.
async fn registered(url: &str, key: Option<&str>) -> Result<Vec<(String, Shape)>, Stop> {
    let base = url.trim_end_matches('/');
    let response = authorized(http()?.get(format!("{base}/api/v1/servers")), key)
        .send()
        .await
        .map_err(|e| format!("{base}: {e}"))?;
    if !response.status().is_success() {
        return Err(Stop::Failed(format!(
            "{base}/api/v1/servers: {}",
            refusal(response).await
        )));
    }
    let body: Value = response.json().await.map_err(|e| format!("{base}: {e}"))?;
    let servers = body["servers"].as_array().cloned().unwrap_or_default();
    Ok(servers
        .iter()
        .filter_map(|s| {
            let text = |k: &str| s[k].as_str().map(str::to_owned);
            let shape = Shape {
                transport: text("transport"),
                command: text("command"),
                args: s["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                url: text("url"),
            };
            Some((text("name")?, shape))
        })
        .collect())
}

/// Registers each server; every answer is said, and any refusal fails the run.
async fn register(url: &str, key: Option<&str>, planned: &[Planned]) -> Result<(), Stop> {
    let base = url.trim_end_matches('/');
    let http = http()?;
    let mut failed = 0;
    for p in planned {
        let response = authorized(http.post(format!("{base}/api/v1/servers")), key)
            .json(&p.entry.input)
            .send()
            .await
            .map_err(|e| format!("{base}: {e}"))?;
        if response.status().is_success() {
            eprintln!("registered {}", p.name);
        } else {
            failed += 1;
            eprintln!("{}: {}", p.name, refusal(response).await);
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(Stop::Failed(format!(
            "{n} of {} server(s) were not registered",
            planned.len()
        ))),
    }
}
