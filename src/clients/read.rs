//! Reading a client's config file into the registry's own input type, entry by entry, so
//! that every rule of `[[servers]]` (names, URLs, commands) applies to what is imported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::placeholders::{self, Context};
use crate::registry::ServerInput;

/// A client config is a small hand-written file; anything bigger is not one.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Entries read from one file at most.
pub const MAX_ENTRIES: usize = 1_000;

/// Which of the two shapes a file has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `{"mcpServers": {...}}`: Claude Desktop, Claude Code (`.mcp.json`), Cursor.
    McpServers,
    /// `{"servers": {...}}` in `.vscode/mcp.json`, or `{"mcp": {"servers": {...}}}` in
    /// VS Code's settings.
    VsCode,
}

impl Format {
    pub fn describe(self) -> &'static str {
        match self {
            Format::McpServers => "mcpServers (Claude Desktop, Claude Code, Cursor)",
            Format::VsCode => "servers (VS Code)",
        }
    }

    /// Where the entries sit, for messages: `mcpServers.NAME`.
    fn path(self) -> &'static str {
        match self {
            Format::McpServers => "mcpServers",
            Format::VsCode => "servers",
        }
    }
}

/// One server of the file, ready for the registry's validation.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name as the file has it.
    pub original: String,
    /// Its fields in the registry's terms; `name` is the normalized one.
    pub input: ServerInput,
    /// Keys of the entry the gateway has no use for (said, not fatal).
    pub ignored: Vec<String>,
}

/// What one file holds: the entries that can be imported and, per entry, why the others
/// cannot (each a whole line: `FILE: mcpServers.NAME: reason`).
#[derive(Debug)]
pub struct FileRead {
    pub format: Format,
    pub entries: Vec<Entry>,
    pub problems: Vec<String>,
}

/// The environment and home directory an import expands placeholders with.
pub struct Environment<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    pub home: Option<PathBuf>,
}

impl Environment<'_> {
    pub fn of_process() -> Environment<'static> {
        Environment {
            var: &|name| std::env::var(name).ok(),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }
}

/// Reads `path`; an error is about the whole file (unreadable, not JSON, no server list).
pub fn read_file(path: &Path, environment: &Environment<'_>) -> Result<FileRead, String> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{shown}: {e}"))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(format!(
            "{shown}: {size} bytes; a client config is at most {MAX_FILE_BYTES}"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    parse(
        &text,
        &shown.to_string(),
        &workspace_of(&absolute),
        environment,
    )
}

/// The folder a file's `${workspaceFolder}` means: the project a `.vscode/` or `.cursor/`
/// folder belongs to, else the file's own folder.
pub fn workspace_of(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new("."));
    match dir.file_name().and_then(|n| n.to_str()) {
        Some(".vscode" | ".cursor" | ".claude") => dir.parent().unwrap_or(dir).to_owned(),
        _ => dir.to_owned(),
    }
}

/// Parses one file's text; `shown` names it in messages.
pub fn parse(
    text: &str,
    shown: &str,
    workspace: &Path,
    environment: &Environment<'_>,
) -> Result<FileRead, String> {
    let root: Value = jsonc_parser::parse_to_serde_value(text, &Default::default())
        .map_err(|e| format!("{shown}: not JSON: {e}"))?;
    let (format, servers) = find_servers(&root).ok_or_else(|| {
        format!(
            "{shown}: no server list: expected an object under \"mcpServers\" (Claude \
                 Desktop, Claude Code, Cursor) or \"servers\" (VS Code)"
        )
    })?;
    if servers.len() > MAX_ENTRIES {
        return Err(format!(
            "{shown}: {} servers; at most {MAX_ENTRIES} per file",
            servers.len()
        ));
    }
    let mut read = FileRead {
        format,
        entries: Vec::new(),
        problems: Vec::new(),
    };
    let mut keys: Vec<&String> = servers.keys().collect();
    let order = file_order(text, format);
    keys.sort_by_key(|k| order.iter().position(|o| o == *k));
    for key in keys {
        let value = &servers[key];
        let line = |reason: String| format!("{shown}: {}.{key}: {reason}", format.path());
        match entry(key, value, workspace, environment) {
            Ok(entry) => match entry.input.clone().validate() {
                Ok(_) => read.entries.push(entry),
                Err(e) => read
                    .problems
                    .push(line(format!("{}: {}", e.field, e.message))),
            },
            Err(reason) => read.problems.push(line(reason)),
        }
    }
    Ok(read)
}

/// The entries' names in the order the file has them (a parsed map sorts them): people
/// expect their servers in their own order.
fn file_order(text: &str, format: Format) -> Vec<String> {
    let Ok(root) = jsonc_parser::cst::CstRootNode::parse(text, &Default::default()) else {
        return Vec::new();
    };
    let top = root.object_value();
    let servers = match format {
        Format::McpServers => top.and_then(|t| t.object_value("mcpServers")),
        Format::VsCode => top.and_then(|t| {
            t.object_value("servers").or_else(|| {
                t.object_value("mcp")
                    .and_then(|m| m.object_value("servers"))
            })
        }),
    };
    servers
        .map(|s| s.properties())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.name()?.decoded_value().ok())
        .collect()
}

fn find_servers(root: &Value) -> Option<(Format, &Map<String, Value>)> {
    if let Some(servers) = root.get("mcpServers").and_then(Value::as_object) {
        return Some((Format::McpServers, servers));
    }
    if let Some(servers) = root.get("servers").and_then(Value::as_object) {
        return Some((Format::VsCode, servers));
    }
    root.pointer("/mcp/servers")
        .and_then(Value::as_object)
        .map(|servers| (Format::VsCode, servers))
}

/// Keys an entry may carry that mean something to the gateway.
const KNOWN: &[&str] = &[
    "command",
    "args",
    "env",
    "cwd",
    "url",
    "headers",
    "type",
    "transport",
    "disabled",
    "envFile",
];

fn entry(
    key: &str,
    value: &Value,
    workspace: &Path,
    environment: &Environment<'_>,
) -> Result<Entry, String> {
    let object = value
        .as_object()
        .ok_or("an entry must be an object with \"command\" or \"url\"")?;
    if object.contains_key("envFile") {
        return Err("\"envFile\" is not imported: copy its variables into \"env\"".into());
    }
    let string = |field: &str| -> Result<Option<String>, String> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("\"{field}\" must be a string")),
        }
    };
    let strings = |field: &str| -> Result<Option<BTreeMap<String, String>>, String> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    // Numbers and booleans are what a person meant as text.
                    Value::Number(_) | Value::Bool(_) => Ok((k.clone(), v.to_string())),
                    _ => Err(format!("\"{field}.{k}\" must be a string")),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(format!("\"{field}\" must be an object of strings")),
        }
    };
    let command = string("command")?;
    let url = string("url")?;
    let kind = string("type")?.or(string("transport")?);
    let transport = transport_of(kind.as_deref(), command.is_some(), url.is_some())?;
    let own_env = strings("env")?.unwrap_or_default();
    let cx = Context {
        env: environment.var,
        home: environment.home.as_deref(),
        workspace,
        own_env: &own_env,
    };
    let expand = |field: &str, text: &str| {
        placeholders::expand(text, &cx).map_err(|e| format!("{field}: {e}"))
    };
    let args = match object.get("args") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => expand(&format!("args[{i}]"), s),
                    Value::Number(_) | Value::Bool(_) => Ok(item.to_string()),
                    _ => Err(format!("args[{i}] must be a string")),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err("\"args\" must be a list of strings".into()),
    };
    let expand_map = |field: &str, map: BTreeMap<String, String>| {
        map.into_iter()
            .map(|(k, v)| Ok((k.clone(), expand(&format!("{field}.{k}"), &v)?)))
            .collect::<Result<BTreeMap<_, _>, String>>()
    };
    // The env values come from the importer's environment, never left as written:
    // `"GITHUB_TOKEN": "${GITHUB_TOKEN}"` means the importer's token.
    let no_own = BTreeMap::new();
    let env_cx = Context {
        env: cx.env,
        home: cx.home,
        workspace: cx.workspace,
        own_env: &no_own,
    };
    let env = match own_env.is_empty() {
        true => None,
        false => Some(
            own_env
                .iter()
                .map(|(k, v)| {
                    placeholders::expand(v, &env_cx)
                        .map(|v| (k.clone(), v))
                        .map_err(|e| format!("env.{k}: {e}"))
                })
                .collect::<Result<BTreeMap<_, _>, String>>()?,
        ),
    };
    let headers = strings("headers")?
        .map(|h| expand_map("headers", h))
        .transpose()?;
    let disabled = match object.get("disabled") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("\"disabled\" must be true or false".into()),
    };
    let input = ServerInput {
        name: Some(normalize_name(key)),
        transport: Some(transport.to_owned()),
        command: command.map(|c| expand("command", &c)).transpose()?,
        args,
        env,
        cwd: string("cwd")?.map(|c| expand("cwd", &c)).transpose()?,
        url: url.map(|u| expand("url", &u)).transpose()?,
        headers,
        enabled: disabled.then_some(false),
        ..ServerInput::default()
    };
    let ignored = object
        .keys()
        .filter(|k| !KNOWN.contains(&k.as_str()))
        .cloned()
        .collect();
    Ok(Entry {
        original: key.to_owned(),
        input,
        ignored,
    })
}

/// The registry's transport for an entry's `type` (or, without one, for what it has).
fn transport_of(kind: Option<&str>, command: bool, url: bool) -> Result<&'static str, String> {
    let transport = match kind {
        Some("stdio") => "stdio",
        Some("http" | "streamable-http" | "streamable_http" | "streamableHttp") => {
            "streamable_http"
        }
        Some("sse") => "sse",
        Some(other) => {
            return Err(format!(
                "type {other:?} is not one the gateway speaks: stdio, http (streamable-http) \
                 or sse"
            ));
        }
        None => match (command, url) {
            (true, true) => {
                return Err("has both \"command\" and \"url\"; keep one, or say \"type\"".into());
            }
            (true, false) => "stdio",
            (false, true) => "streamable_http",
            (false, false) => return Err("has neither \"command\" nor \"url\"".into()),
        },
    };
    match (transport, command, url) {
        ("stdio", false, _) => Err("type stdio needs a \"command\"".into()),
        ("stdio", true, true) => Err("type stdio takes a \"command\", not a \"url\"".into()),
        ("streamable_http" | "sse", _, false) => Err(format!("type {transport} needs a \"url\"")),
        ("streamable_http" | "sse", true, true) => Err(format!(
            "type {transport} takes a \"url\", not a \"command\""
        )),
        _ => Ok(transport),
    }
}

/// A client's server name in the registry's rules: `[a-z0-9-]`, 1 to 64 characters.
/// Letters are lowercased; every run of anything else becomes one '-'.
pub fn normalize_name(original: &str) -> String {
    let mut name = String::with_capacity(original.len().min(64));
    for c in original.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
        if name.len() >= 64 {
            break;
        }
    }
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        "server".to_owned()
    } else {
        name.to_owned()
    }
}

/// `base`, or `base-2`, `base-3`... : the first that `taken` does not hold, within 64
/// characters.
pub fn unique_name(base: &str, taken: &dyn Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_owned();
    }
    (2..)
        .map(|n| {
            let suffix = format!("-{n}");
            let keep = base.len().min(64 - suffix.len());
            format!("{}{suffix}", base[..keep].trim_end_matches('-'))
        })
        .find(|candidate| !taken(candidate))
        .expect("an unbounded range finds a free name")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, env: &[(&str, &str)]) -> Result<FileRead, String> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let var = |name: &str| env.get(name).cloned();
        let environment = Environment {
            var: &var,
            home: Some(PathBuf::from("/home/ada")),
        };
        parse(text, "f.json", Path::new("/src/p"), &environment)
    }

    #[test]
    fn names_follow_the_registry_rules() {
        assert_eq!(normalize_name("GitHub Tools"), "github-tools");
        assert_eq!(normalize_name("my_server.v2"), "my-server-v2");
        assert_eq!(normalize_name("__x__"), "x");
        assert_eq!(normalize_name("!!!"), "server");
        assert_eq!(normalize_name(&"a".repeat(100)).len(), 64);
        for original in ["Ünïcode 名前", "a__b", "-lead", &"x-".repeat(40)] {
            let name = normalize_name(original);
            crate::registry::ServerName::parse(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let taken = |n: &str| ["git", "git-2"].contains(&n);
        assert_eq!(unique_name("git", &taken), "git-3");
        assert_eq!(unique_name("time", &taken), "time");
        let long = "y".repeat(64);
        let all_taken = |n: &str| n == long;
        assert_eq!(unique_name(&long, &all_taken).len(), 64);
    }

    #[test]
    fn claude_desktop_entries_become_stdio_and_http_servers() {
        let r = read(
            r#"{"mcpServers": {
                "Filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]},
                "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}, "autoApprove": []},
                "remote": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer ${env:TOKEN}"}},
                "legacy": {"type": "sse", "url": "http://127.0.0.1:9000/sse"},
                "off": {"command": "x", "disabled": true}
            }}"#,
            &[("TOKEN", "s3cret")],
        )
        .unwrap();
        assert_eq!(r.format, Format::McpServers);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let by = |n: &str| r.entries.iter().find(|e| e.original == n).unwrap();
        let fs = by("Filesystem");
        assert_eq!(fs.input.name.as_deref(), Some("filesystem"));
        assert_eq!(fs.input.transport.as_deref(), Some("stdio"));
        assert_eq!(fs.input.args.as_ref().unwrap()[2], "/tmp");
        assert_eq!(by("time").ignored, vec!["autoApprove"]);
        assert_eq!(by("time").input.env.as_ref().unwrap()["TZ"], "UTC");
        let remote = by("remote");
        assert_eq!(remote.input.transport.as_deref(), Some("streamable_http"));
        assert_eq!(
            remote.input.headers.as_ref().unwrap()["Authorization"],
            "Bearer s3cret"
        );
        assert_eq!(by("legacy").input.transport.as_deref(), Some("sse"));
        assert_eq!(by("off").input.enabled, Some(false));
    }

    #[test]
    fn an_env_value_naming_its_own_variable_takes_the_importers_value() {
        let r = read(
            r#"{"mcpServers": {"gh": {"command": "x", "env": {"GITHUB_TOKEN": "${GITHUB_TOKEN}"}}}}"#,
            &[("GITHUB_TOKEN", "ghp_1")],
        )
        .unwrap();
        assert_eq!(
            r.entries[0].input.env.as_ref().unwrap()["GITHUB_TOKEN"],
            "ghp_1"
        );
        let r = read(
            r#"{"mcpServers": {"gh": {"command": "x", "env": {"GITHUB_TOKEN": "${GITHUB_TOKEN}"}}}}"#,
            &[],
        )
        .unwrap();
        assert!(r.problems[0].contains("GITHUB_TOKEN"), "{:?}", r.problems);
    }

    #[test]
    fn vscode_files_with_comments_are_read() {
        let r = read(
            r#"{
              // VS Code allows comments and trailing commas
              "inputs": [],
              "servers": {
                "git": {"type": "stdio", "command": "uvx", "args": ["mcp-server-git", "--repository", "${workspaceFolder}"],},
                "api": {"type": "http", "url": "http://127.0.0.1:3001/mcp"},
              },
            }"#,
            &[],
        )
        .unwrap();
        assert_eq!(r.format, Format::VsCode);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        // In the file's order, and the workspace is the project holding .vscode/.
        let names: Vec<_> = r.entries.iter().map(|e| e.original.as_str()).collect();
        assert_eq!(names, ["git", "api"]);
        assert_eq!(r.entries[0].input.args.as_ref().unwrap()[2], "/src/p");
        // In VS Code's settings, the list sits under "mcp".
        let r = read(r#"{"mcp": {"servers": {"a": {"command": "x"}}}}"#, &[]).unwrap();
        assert_eq!((r.format, r.entries.len()), (Format::VsCode, 1));
    }

    #[test]
    fn entries_it_cannot_import_are_refused_one_line_each() {
        let r = read(
            r#"{"mcpServers": {
                "empty": {},
                "ws": {"type": "websocket", "url": "ws://x"},
                "both": {"command": "x", "url": "http://127.0.0.1/mcp"},
                "prompted": {"type": "http", "url": "http://127.0.0.1/mcp", "headers": {"Authorization": "${input:token}"}},
                "unset": {"command": "x", "env": {"K": "${env:NOPE_NOT_SET}"}},
                "badurl": {"url": "gopher://x"},
                "envfile": {"command": "x", "envFile": ".env"},
                "notobject": 5,
                "good": {"command": "x"}
            }}"#,
            &[],
        )
        .unwrap();
        assert_eq!(r.entries.len(), 1, "{:?}", r.entries);
        assert_eq!(r.problems.len(), 8, "{:#?}", r.problems);
        let line = |name: &str| {
            r.problems
                .iter()
                .find(|p| p.starts_with(&format!("f.json: mcpServers.{name}: ")))
                .unwrap_or_else(|| panic!("no line for {name}: {:#?}", r.problems))
                .clone()
        };
        assert!(line("empty").contains("neither"));
        assert!(line("ws").contains("\"websocket\""));
        assert!(line("both").contains("both"));
        assert!(line("prompted").contains("${input:token}"));
        assert!(line("unset").contains("NOPE_NOT_SET"));
        assert!(line("badurl").contains("url:"));
        assert!(line("envfile").contains("envFile"));
        assert!(line("notobject").contains("object"));
    }

    #[test]
    fn a_file_that_is_not_a_client_config_says_so() {
        assert!(read("not json", &[]).unwrap_err().contains("not JSON"));
        assert!(
            read(r#"{"servers": []}"#, &[])
                .unwrap_err()
                .contains("no server list")
        );
    }
}
