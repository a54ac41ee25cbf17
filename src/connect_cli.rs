//! `omni-bridge connect CLIENT`: the entry that points an MCP client at this gateway's
//! `/mcp`, printed, or merged into the client's own file (see `clients::connect`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::auth::manage::KeyInput;
use crate::cli::ConnectArgs;
use crate::clients::connect::{self, Client, Target};
use crate::clients::{files, read};

pub fn run(args: ConnectArgs) -> ExitCode {
    match connect(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omni-bridge connect: {e}");
            ExitCode::from(2)
        }
    }
}

fn connect(args: ConnectArgs) -> Result<(), String> {
    let client = Client::parse(&args.client)?;
    if args.name.is_empty() || args.name.len() > 64 || args.name.chars().any(char::is_control) {
        return Err(format!(
            "--name {:?}: 1 to 64 characters, no control characters",
            args.name
        ));
    }
    let mcp_url = mcp_url(&args)?;
    let file = match &args.file {
        Some(file) => file.clone(),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .ok_or("HOME is not set: say where the client's file is with --file")?;
            let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
            client.default_file(&home, &cwd)
        }
    };
    let shown = file.display();
    let existing = match (args.write, std::fs::metadata(&file)) {
        (false, _) => String::new(),
        (true, Ok(meta)) if meta.len() > read::MAX_FILE_BYTES => {
            return Err(format!(
                "{shown}: {} bytes; too big for a client config",
                meta.len()
            ));
        }
        (true, Ok(_)) => std::fs::read_to_string(&file).map_err(|e| format!("{shown}: {e}"))?,
        (true, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        (true, Err(e)) => return Err(format!("{shown}: {e}")),
    };
    // The merge is tried, and read back with the same rules an import uses, before a key
    // is made for it: a file that cannot take the entry leaves no key behind.
    let merged_with = |secret: Option<&str>| -> Result<String, String> {
        let target = Target {
            mcp_url: &mcp_url,
            secret,
        };
        let entry = connect::entry(client, &target);
        let merged = connect::merge(&existing, client, &args.name, entry)
            .map_err(|e| format!("{shown}: {e}"))?;
        let back = read::parse(
            &merged,
            &shown.to_string(),
            &read::workspace_of(&file),
            &read::Environment::of_process(),
        )?;
        let points_here = |e: &read::Entry| {
            e.input.url.as_deref() == Some(mcp_url.as_str())
                || e.input.args.iter().flatten().any(|a| a == mcp_url.as_str())
        };
        if !back
            .entries
            .iter()
            .any(|e| e.original == args.name && points_here(e))
        {
            return Err(format!(
                "{shown}: the merged file does not read back with the entry; left unchanged"
            ));
        }
        Ok(merged)
    };
    if args.write {
        merged_with(Some("checking"))?;
    }
    let secret = match (&args.key, &args.api_key) {
        (Some(name), _) => Some(crate::keys_cli::with_store(&args.store, async |store| {
            let input = KeyInput {
                name: Some(name.clone()),
                role: Some("operator".into()),
                allow: Vec::new(),
                rate_limit: None,
            };
            crate::keys_cli::create(store, &input).await
        })?),
        (None, Some(secret)) => Some(secret.clone()),
        (None, None) => {
            eprintln!(
                "note: no key; this entry works only while the gateway runs without keys \
                 (--key NAME creates one for this client)"
            );
            None
        }
    };
    if let Some(secret) = &secret
        && (secret.is_empty() || secret.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err("the key must be one word of visible characters".into());
    }
    if !args.write {
        let target = Target {
            mcp_url: &mcp_url,
            secret: secret.as_deref(),
        };
        let text = connect::merge("", client, &args.name, connect::entry(client, &target))?;
        print!("{text}");
        eprintln!("add this to {shown} (or run again with --write to merge it there)");
        return Ok(());
    }
    let merged = merged_with(secret.as_deref())?;
    let backup = files::replace(&file, &merged)?;
    match backup {
        Some(backup) => eprintln!(
            "wrote {} to {shown} (the previous file is {})",
            args.name,
            backup.display()
        ),
        None => eprintln!("wrote {} to {shown}", args.name),
    }
    if secret.is_some() && matches!(client, Client::ClaudeCode | Client::VsCode) {
        eprintln!("note: {shown} now holds an API key; keep it out of version control");
    }
    Ok(())
}

/// The gateway's `/mcp` as the client reaches it: `--url` (with or without the path), or
/// the address the gateway binds, a wildcard bind read as loopback.
fn mcp_url(args: &ConnectArgs) -> Result<url::Url, String> {
    let base = match &args.url {
        Some(url) => url.clone(),
        None => {
            let settings = crate::config::resolve(&args.store).map_err(|e| e.to_string())?;
            let mut bind = settings.bind;
            if bind.ip().is_unspecified() {
                bind.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
            format!("http://{bind}")
        }
    };
    let mut url = url::Url::parse(&base).map_err(|e| format!("--url {base:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("--url {base:?}: an http:// or https:// address"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "--url {base:?}: no credentials in the URL; the key goes in a header"
        ));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    if path.ends_with("/mcp") {
        url.set_path(&path);
    } else {
        url.set_path(&format!("{path}/mcp"));
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}
