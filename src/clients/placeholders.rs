//! `${...}` in client config files. The clients expand them when they start a server; the
//! gateway's configuration has no such syntax, so an import resolves them once, now, or
//! stops and says which one it could not resolve.
//!
//! Understood: `${env:NAME}` (VS Code, Cursor), `${NAME}` and `${NAME:-default}` (Claude
//! Code), `${userHome}`, `${workspaceFolder}`, `${workspaceFolderBasename}` and
//! `${pathSeparator}`. `${input:ID}` is a VS Code prompt: only VS Code can answer it.
//! A bare `${NAME}` in an argument or header whose NAME the entry's own `env` defines is
//! left as written: the server's process (for instance `mcp-remote`, which expands its
//! header arguments itself) sees that variable. The `env` values themselves are always
//! expanded from the environment: `"GITHUB_TOKEN": "${GITHUB_TOKEN}"` passes the
//! importer's token on.

use std::collections::BTreeMap;
use std::path::Path;

/// What expansion may read: the environment, and where the file says the workspace is.
pub struct Context<'a> {
    /// An environment variable's value, if set.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub home: Option<&'a Path>,
    pub workspace: &'a Path,
    /// The entry's own `env`: names left for the server's process to expand.
    pub own_env: &'a BTreeMap<String, String>,
}

/// Bound on one expanded value, so a placeholder-laden file cannot grow without end.
const MAX_EXPANDED: usize = 64 * 1024;

/// `text` with every placeholder resolved, or the first one that cannot be.
pub fn expand(text: &str, cx: &Context<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("an unclosed placeholder: {:?}", &rest[start..]));
        };
        let inner = &after[..end];
        match resolve(inner, cx)? {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[start..start + 3 + end]),
        }
        if out.len() > MAX_EXPANDED {
            return Err(format!("expands past {MAX_EXPANDED} bytes"));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of one placeholder (`inner` is what stands between `${` and `}`); `None` to
/// leave it as written.
fn resolve(inner: &str, cx: &Context<'_>) -> Result<Option<String>, String> {
    // `keep_own`: a bare `${NAME}` the entry's env defines, left for the server process.
    let from_env = |name: &str, default: Option<&str>, keep_own: bool| {
        if keep_own && cx.own_env.contains_key(name) {
            return Ok(None);
        }
        match (cx.env)(name) {
            Some(value) => Ok(Some(value)),
            None => default.map(|d| Some(d.to_owned())).ok_or_else(|| {
                format!("${{{inner}}} needs the environment variable {name}, which is not set")
            }),
        }
    };
    if let Some(id) = inner.strip_prefix("input:") {
        return Err(format!(
            "${{input:{id}}} is a prompt only VS Code can answer; put the value itself in the \
             file, or ${{env:NAME}} with NAME set"
        ));
    }
    if let Some(name) = inner.strip_prefix("env:") {
        return from_env(name, None, false);
    }
    match inner {
        "userHome" => cx
            .home
            .map(|home| Some(home.display().to_string()))
            .ok_or_else(|| "${userHome}: HOME is not set".to_owned()),
        "workspaceFolder" => Ok(Some(cx.workspace.display().to_string())),
        "workspaceFolderBasename" => Ok(Some(
            cx.workspace
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )),
        "pathSeparator" | "/" => Ok(Some("/".to_owned())),
        _ => {
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if is_env_name(name) {
                from_env(name, default, default.is_none())
            } else {
                Err(format!(
                    "${{{inner}}} is not a placeholder omni-bridge knows"
                ))
            }
        }
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(env: &[(&str, &str)], own: &[&str], text: &str) -> Result<String, String> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let own: BTreeMap<String, String> =
            own.iter().map(|k| (k.to_string(), String::new())).collect();
        let lookup = |name: &str| env.get(name).cloned();
        let cx = Context {
            env: &lookup,
            home: Some(Path::new("/home/ada")),
            workspace: Path::new("/src/project"),
            own_env: &own,
        };
        expand(text, &cx)
    }

    #[test]
    fn each_syntax_resolves_from_its_source() {
        assert_eq!(
            with(&[("TOKEN", "t1")], &[], "Bearer ${env:TOKEN}").unwrap(),
            "Bearer t1"
        );
        assert_eq!(with(&[("TOKEN", "t2")], &[], "${TOKEN}").unwrap(), "t2");
        assert_eq!(with(&[], &[], "${PORT:-8080}").unwrap(), "8080");
        assert_eq!(with(&[("PORT", "9")], &[], "${PORT:-8080}").unwrap(), "9");
        assert_eq!(
            with(
                &[],
                &[],
                "${userHome}/x:${workspaceFolder}:${workspaceFolderBasename}"
            )
            .unwrap(),
            "/home/ada/x:/src/project:project"
        );
        assert_eq!(
            with(&[], &[], "no placeholders").unwrap(),
            "no placeholders"
        );
    }

    #[test]
    fn what_cannot_be_resolved_is_named() {
        let e = with(&[], &[], "${env:MISSING}").unwrap_err();
        assert!(e.contains("MISSING") && e.contains("not set"), "{e}");
        let e = with(&[], &[], "${input:api-key}").unwrap_err();
        assert!(
            e.contains("${input:api-key}") && e.contains("VS Code"),
            "{e}"
        );
        let e = with(&[], &[], "${command:pick}").unwrap_err();
        assert!(e.contains("not a placeholder"), "{e}");
        assert!(with(&[], &[], "${open").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn a_name_of_the_entrys_own_env_is_left_for_the_server() {
        assert_eq!(
            with(
                &[("AUTH", "from-shell")],
                &["AUTH"],
                "Authorization:${AUTH}"
            )
            .unwrap(),
            "Authorization:${AUTH}"
        );
        // Only the bare form: ${env:NAME} is the client's to expand, so it is expanded now.
        assert!(with(&[], &["AUTH"], "${env:AUTH}").is_err());
        assert_eq!(
            with(&[("AUTH", "a")], &["AUTH"], "${env:AUTH}").unwrap(),
            "a"
        );
    }

    #[test]
    fn expansion_is_bounded() {
        let big = "x".repeat(40 * 1024);
        let e = with(&[("BIG", &big)], &[], "${BIG}${BIG}").unwrap_err();
        assert!(e.contains("bytes"), "{e}");
    }
}
