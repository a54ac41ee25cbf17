//! The entry that points one MCP client at the gateway's `/mcp`, and its merge into the
//! client's own file, keeping everything else the file holds (comments included).

use std::path::{Path, PathBuf};

use jsonc_parser::cst::{CstInputValue, CstRootNode};

use super::read::Format;

/// The clients `omni-bridge connect` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    ClaudeCode,
    ClaudeDesktop,
    Cursor,
    VsCode,
}

/// `mcp-remote` bridges a stdio-only client to a Streamable HTTP server. A minor version
/// is pinned, so a client's next start cannot pick up an incompatible release.
pub const MCP_REMOTE: &str = "mcp-remote@0.15";
/// The variable an `mcp-remote` entry keeps its `Authorization` value in: `mcp-remote`
/// expands `${...}` in its header arguments, so the key is not an argument (arguments
/// with spaces also break some clients on Windows).
pub const AUTH_VARIABLE: &str = "OMNI_BRIDGE_AUTHORIZATION";

impl Client {
    pub const ALL: [Client; 4] = [
        Client::ClaudeCode,
        Client::ClaudeDesktop,
        Client::Cursor,
        Client::VsCode,
    ];

    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown client {text:?}: one of {}",
                    Self::ALL.map(Client::as_str).join(", ")
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Client::ClaudeCode => "claude-code",
            Client::ClaudeDesktop => "claude-desktop",
            Client::Cursor => "cursor",
            Client::VsCode => "vscode",
        }
    }

    /// The shape of the client's file.
    pub fn format(self) -> Format {
        match self {
            Client::VsCode => Format::VsCode,
            _ => Format::McpServers,
        }
    }

    /// Claude Desktop's file lists only local commands: it reaches a URL through
    /// `mcp-remote`.
    pub fn stdio_only(self) -> bool {
        self == Client::ClaudeDesktop
    }

    /// Where the client reads its servers: the project's file for Claude Code (`.mcp.json`)
    /// and VS Code (`.vscode/mcp.json`), the user's for Cursor and Claude Desktop.
    pub fn default_file(self, home: &Path, cwd: &Path) -> PathBuf {
        match self {
            Client::ClaudeCode => cwd.join(".mcp.json"),
            Client::VsCode => cwd.join(".vscode").join("mcp.json"),
            Client::Cursor => home.join(".cursor").join("mcp.json"),
            Client::ClaudeDesktop => {
                let dir = if cfg!(target_os = "macos") {
                    home.join("Library/Application Support/Claude")
                } else if cfg!(windows) {
                    std::env::var_os("APPDATA")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| home.join("AppData/Roaming"))
                        .join("Claude")
                } else {
                    std::env::var_os("XDG_CONFIG_HOME")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| home.join(".config"))
                        .join("Claude")
                };
                dir.join("claude_desktop_config.json")
            }
        }
    }
}

/// Where the gateway's MCP endpoint is, and the key the client sends (none when the
/// gateway runs without keys).
pub struct Target<'a> {
    pub mcp_url: &'a url::Url,
    pub secret: Option<&'a str>,
}

fn object(fields: Vec<(&str, CstInputValue)>) -> CstInputValue {
    CstInputValue::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn is_loopback(url: &url::Url) -> bool {
    matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
}

/// The client's entry for the gateway.
pub fn entry(client: Client, target: &Target<'_>) -> CstInputValue {
    let url = target.mcp_url.as_str();
    if client.stdio_only() {
        let mut args: Vec<CstInputValue> = vec!["-y".into(), MCP_REMOTE.into(), url.into()];
        // mcp-remote refuses plain http except on loopback unless told.
        if target.mcp_url.scheme() == "http" && !is_loopback(target.mcp_url) {
            args.push("--allow-http".into());
        }
        let mut fields = vec![("command", "npx".into())];
        if let Some(secret) = target.secret {
            args.push("--header".into());
            args.push(format!("Authorization:${{{AUTH_VARIABLE}}}").into());
            fields.push(("args", CstInputValue::Array(args)));
            fields.push((
                "env",
                object(vec![(AUTH_VARIABLE, format!("Bearer {secret}").into())]),
            ));
        } else {
            fields.push(("args", CstInputValue::Array(args)));
        }
        return object(fields);
    }
    let mut fields = Vec::new();
    // Cursor tells Streamable HTTP from the URL alone; the others want the type.
    if client != Client::Cursor {
        fields.push(("type", "http".into()));
    }
    fields.push(("url", url.into()));
    if let Some(secret) = target.secret {
        fields.push((
            "headers",
            object(vec![("Authorization", format!("Bearer {secret}").into())]),
        ));
    }
    object(fields)
}

/// `existing` (a client's file, or empty for a new one) with the entry `name` set to
/// `entry`: added, or replaced if present. Everything else stays as it was.
pub fn merge(
    existing: &str,
    client: Client,
    name: &str,
    entry: CstInputValue,
) -> Result<String, String> {
    let text = if existing.trim().is_empty() {
        "{}"
    } else {
        existing
    };
    let root =
        CstRootNode::parse(text, &Default::default()).map_err(|e| format!("not JSON: {e}"))?;
    let Some(top) = root.object_value_or_create() else {
        return Err("its top level is not an object".into());
    };
    let key = match client.format() {
        Format::McpServers => "mcpServers",
        Format::VsCode => "servers",
    };
    // VS Code's settings.json keeps its servers under "mcp"; its mcp.json at the top.
    let holder = match (client.format(), top.get(key), top.object_value("mcp")) {
        (Format::VsCode, None, Some(mcp)) => mcp,
        _ => top,
    };
    let Some(servers) = holder.object_value_or_create(key) else {
        return Err(format!("\"{key}\" is not an object"));
    };
    match servers.get(name) {
        Some(prop) => prop.set_value(entry),
        None => {
            servers.append(name, entry);
        }
    }
    let mut out = root.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> url::Url {
        url::Url::parse(url).unwrap()
    }

    #[test]
    fn a_merge_keeps_comments_and_other_servers() {
        let existing = "{\n  // my servers\n  \"mcpServers\": {\n    \"time\": {\"command\": \"uvx\"}\n  },\n  \"theme\": \"dark\"\n}\n";
        let url = target("http://127.0.0.1:8080/mcp");
        let t = Target {
            mcp_url: &url,
            secret: Some("k1"),
        };
        let merged = merge(
            existing,
            Client::ClaudeCode,
            "omni-bridge",
            entry(Client::ClaudeCode, &t),
        )
        .unwrap();
        assert!(merged.contains("// my servers"), "{merged}");
        assert!(merged.contains("\"theme\": \"dark\""), "{merged}");
        let value: serde_json::Value =
            jsonc_parser::parse_to_serde_value(&merged, &Default::default()).unwrap();
        assert_eq!(value["mcpServers"]["time"]["command"], "uvx");
        assert_eq!(value["mcpServers"]["omni-bridge"]["url"], url.as_str());
        // Again, with another key: replaced, not added twice.
        let t = Target {
            mcp_url: &url,
            secret: Some("k2"),
        };
        let again = merge(
            &merged,
            Client::ClaudeCode,
            "omni-bridge",
            entry(Client::ClaudeCode, &t),
        )
        .unwrap();
        assert_eq!(again.matches("\"omni-bridge\"").count(), 1, "{again}");
        assert!(again.contains("Bearer k2") && !again.contains("Bearer k1"));
    }

    #[test]
    fn vscode_settings_get_the_entry_under_mcp() {
        let url = target("http://127.0.0.1:8080/mcp");
        let t = Target {
            mcp_url: &url,
            secret: None,
        };
        let settings = "{\"editor.fontSize\": 14, \"mcp\": {\"servers\": {}}}";
        let merged = merge(settings, Client::VsCode, "g", entry(Client::VsCode, &t)).unwrap();
        let value: serde_json::Value =
            jsonc_parser::parse_to_serde_value(&merged, &Default::default()).unwrap();
        assert_eq!(value["mcp"]["servers"]["g"]["url"], url.as_str());
        assert!(value.get("servers").is_none(), "{merged}");
    }

    #[test]
    fn a_file_that_is_not_an_object_is_refused_not_overwritten() {
        let url = target("http://127.0.0.1:8080/mcp");
        let t = Target {
            mcp_url: &url,
            secret: None,
        };
        for bad in ["[1, 2]", "{\"mcpServers\": 3}", "{oops"] {
            assert!(
                merge(bad, Client::Cursor, "g", entry(Client::Cursor, &t)).is_err(),
                "{bad}"
            );
        }
    }

    /// Claude Desktop's entry for the gateway at `url`, without a key, as text.
    fn desktop_entry(url: &str) -> String {
        let url = target(url);
        let t = Target {
            mcp_url: &url,
            secret: None,
        };
        merge(
            "",
            Client::ClaudeDesktop,
            "g",
            entry(Client::ClaudeDesktop, &t),
        )
        .unwrap()
    }

    #[test]
    fn mcp_remote_is_told_about_plain_http_off_loopback() {
        let text = desktop_entry("http://gateway.internal:8080/mcp");
        assert!(text.contains("--allow-http"), "{text}");
        assert!(!text.contains("--header"), "{text}");
        let text = desktop_entry("http://127.0.0.1:8080/mcp");
        assert!(!text.contains("--allow-http"), "{text}");
    }
}
