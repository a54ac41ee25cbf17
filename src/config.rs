//! Settings from three places, most specific first: flags, then `OMNI_*` environment
//! variables (both through clap), then the TOML file, then defaults. Every mistake is
//! reported as one line naming the key and the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::keyring::RoleRates;
use crate::auth::rate::Rate;
use crate::cache::CacheLimits;
use crate::cli::ServeArgs;
use crate::duration;
use crate::live::LiveSettings;
use crate::mcp::McpSettings;
use crate::registry::{ServerInput, ServerSpec};
use crate::store::{DatabaseUrl, StoreOptions};
pub use crate::upstream::DEFAULT_MAX_RESULT_BYTES;
use crate::upstream::UpstreamSettings;

pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./data";

/// The settings the server runs with, fully resolved and validated.
#[derive(Clone, Debug)]
pub struct Settings {
    pub bind: SocketAddr,
    pub database: DatabaseUrl,
    pub data_dir: PathBuf,
    pub log: String,
    /// Whether `POST /api/v1/servers` may register stdio servers (local processes).
    pub allow_stdio_via_api: bool,
    /// How long in-flight requests may run on after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// Largest accepted request body.
    pub body_limit: usize,
    /// How long a request body may take to arrive (408 after).
    pub body_timeout: Duration,
    /// Largest tool result passed on from an upstream.
    pub max_result_bytes: usize,
    pub store: StoreOptions,
    /// Upstreams declared in the file.
    pub servers: Vec<ServerSpec>,
    /// What the configuration said that still works but should change (logged at start).
    pub warnings: Vec<String>,
    /// Breaker and restart tuning for every upstream.
    pub upstreams: UpstreamSettings,
    /// This process's name in shared history (host and process id by default).
    pub instance: String,
    pub cache: CacheSettings,
    pub live: LiveSettings,
    pub mcp: McpSettings,
    pub auth: AuthSettings,
}

/// Access control settings.
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    /// Run open on a non-loopback address when no keys exist (refused otherwise).
    pub insecure_no_auth: bool,
    pub rates: RoleRates,
    /// Browser origins allowed besides the gateway's own (`scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// `Host` values accepted besides loopback names (`name` or `name:port`); checked
    /// when bound to loopback or when not empty.
    pub allowed_hosts: Vec<String>,
}

/// The result cache's bounds and timers.
#[derive(Clone, Debug)]
pub struct CacheSettings {
    /// redis://… of the shared tier, if any.
    pub redis_url: Option<String>,
    /// Namespace of this gateway's keys in Redis.
    pub redis_prefix: String,
    pub limits: CacheLimits,
    pub default_ttl: Duration,
    pub sweep_interval: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_prefix: "omni:".into(),
            limits: CacheLimits::default(),
            default_ttl: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(60),
        }
    }
}

/// `host-pid`: tells instances apart in a shared store.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}

impl Settings {
    /// Settings for tests and embedding: defaults, with the given database.
    pub fn with_database(database: DatabaseUrl) -> Self {
        Self {
            bind: "127.0.0.1:0".parse().expect("literal address"),
            database,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            log: "info".into(),
            allow_stdio_via_api: false,
            shutdown_timeout: Duration::from_secs(30),
            body_limit: 1024 * 1024,
            body_timeout: crate::deadline::BODY_DEADLINE,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            store: StoreOptions::default(),
            servers: Vec::new(),
            warnings: Vec::new(),
            upstreams: UpstreamSettings::default(),
            instance: default_instance(),
            cache: CacheSettings::default(),
            live: LiveSettings::default(),
            mcp: McpSettings::default(),
            auth: AuthSettings::default(),
        }
    }
}

/// A configuration mistake: which key, from where, and why.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The TOML file's shape. Unknown keys are errors, so a typo never passes unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<String>,
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
    log: Option<String>,
    allow_stdio_via_api: Option<bool>,
    shutdown_timeout: Option<String>,
    body_limit: Option<u64>,
    body_timeout: Option<String>,
    max_result_bytes: Option<u64>,
    database_max_connections: Option<u64>,
    restart_base_delay: Option<String>,
    restart_max_delay: Option<String>,
    restart_max: Option<u64>,
    restart_window: Option<String>,
    breaker_threshold: Option<u64>,
    breaker_cooldown: Option<String>,
    breaker_max_cooldown: Option<String>,
    instance: Option<String>,
    cache_max_entries: Option<u64>,
    cache_max_bytes: Option<u64>,
    cache_max_entry_bytes: Option<u64>,
    cache_ttl: Option<String>,
    cache_sweep_interval: Option<String>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    live_metrics_interval: Option<String>,
    live_ping_interval: Option<String>,
    live_ping_timeout: Option<String>,
    live_queue: Option<u64>,
    mcp_page_size: Option<u64>,
    mcp_max_sessions: Option<u64>,
    mcp_session_idle: Option<String>,
    mcp_response: Option<String>,
    /// Until 0.x these applied to `/mcp` only, under their `mcp_` names.
    #[serde(alias = "mcp_allowed_origins")]
    allowed_origins: Option<Vec<String>>,
    #[serde(alias = "mcp_allowed_hosts")]
    allowed_hosts: Option<Vec<String>>,
    rate_limit_viewer: Option<String>,
    rate_limit_operator: Option<String>,
    rate_limit_admin: Option<String>,
    #[serde(default)]
    servers: Vec<ServerInput>,
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        // toml's message spans several lines with a caret diagram; keep the first and the
        // location, so the report stays one line.
        let message = e.message().to_owned();
        let key = match e.span() {
            Some(span) => {
                let line = text[..span.start].matches('\n').count() + 1;
                format!("{} line {line}", path.display())
            }
            None => path.display().to_string(),
        };
        ConfigError::new(key, message)
    })
}

/// Resolves the settings from the parsed command line (which already holds the
/// environment) and the file it names.
pub fn resolve(args: &ServeArgs) -> Result<Settings, ConfigError> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let upstreams = upstream_settings(&file)?;
    let mut cache = cache_settings(&file)?;
    cache.redis_url = args.redis_url.clone().or(file.redis_url.clone());
    if let Some(url) = &cache.redis_url
        && !(url.starts_with("redis://") || url.starts_with("rediss://"))
    {
        return Err(ConfigError::new(
            "redis_url",
            format!("'{url}' is not redis://HOST:PORT"),
        ));
    }
    if let Some(prefix) = &file.redis_prefix {
        cache.redis_prefix = prefix.clone();
    }
    let live = live_settings(&file)?;
    let mcp = mcp_settings(&file)?;
    for origin in file.allowed_origins.iter().flatten() {
        let ok = url::Url::parse(origin)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        if !ok {
            return Err(ConfigError::new(
                "allowed_origins",
                format!("'{origin}' is not an origin such as https://app.example.com"),
            ));
        }
    }
    for host in file.allowed_hosts.iter().flatten() {
        let ok = !host.is_empty()
            && host.len() <= 255
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !ok {
            return Err(ConfigError::new(
                "allowed_hosts",
                format!("'{host}' is not a host name or name:port"),
            ));
        }
    }
    let mut auth = AuthSettings {
        insecure_no_auth: args.insecure_no_auth,
        rates: RoleRates::default(),
        allowed_origins: file.allowed_origins.clone().unwrap_or_default(),
        allowed_hosts: file.allowed_hosts.clone().unwrap_or_default(),
    };
    for (key, text, slot) in [
        (
            "rate_limit_viewer",
            &file.rate_limit_viewer,
            &mut auth.rates.viewer,
        ),
        (
            "rate_limit_operator",
            &file.rate_limit_operator,
            &mut auth.rates.operator,
        ),
        (
            "rate_limit_admin",
            &file.rate_limit_admin,
            &mut auth.rates.admin,
        ),
    ] {
        match text.as_deref() {
            None => {}
            Some("none") => *slot = None,
            Some(t) => *slot = Some(Rate::parse(t).map_err(|m| ConfigError::new(key, m))?),
        }
    }
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let bind_text = args
        .bind
        .clone()
        .or(file.bind)
        .unwrap_or_else(|| DEFAULT_BIND.to_owned());
    let bind = bind_text.parse::<SocketAddr>().map_err(|_| {
        ConfigError::new(
            "bind",
            format!("'{bind_text}' is not an address and port such as 127.0.0.1:8080"),
        )
    })?;
    let database = match args.database_url.clone().or(file.database_url) {
        Some(text) => DatabaseUrl::parse(&text).map_err(|m| ConfigError::new("database_url", m))?,
        None => DatabaseUrl::default_in(&data_dir),
    };
    let shutdown_timeout = match file.shutdown_timeout {
        Some(text) => duration::parse_within(&text, Duration::ZERO, Duration::from_secs(3600))
            .map_err(|m| ConfigError::new("shutdown_timeout", m))?,
        None => Duration::from_secs(30),
    };
    let body_limit = match file.body_limit {
        Some(0) => return Err(ConfigError::new("body_limit", "must be at least 1 byte")),
        Some(n) => usize::try_from(n).map_err(|_| ConfigError::new("body_limit", "too large"))?,
        None => 1024 * 1024,
    };
    let body_timeout = match file.body_timeout {
        Some(text) => {
            duration::parse_within(&text, Duration::from_millis(100), Duration::from_secs(3600))
                .map_err(|m| ConfigError::new("body_timeout", m))?
        }
        None => crate::deadline::BODY_DEADLINE,
    };
    let max_result_bytes = match file.max_result_bytes {
        Some(n) if !(1024..=16 * 1024 * 1024).contains(&n) => {
            return Err(ConfigError::new(
                "max_result_bytes",
                "must be between 1024 and 16777216 (the transports' own cap on one message)",
            ));
        }
        Some(n) => n as usize,
        None => DEFAULT_MAX_RESULT_BYTES,
    };
    let mut store = StoreOptions::default();
    if let Some(n) = file.database_max_connections {
        if n == 0 || n > 1024 {
            return Err(ConfigError::new(
                "database_max_connections",
                "must be between 1 and 1024",
            ));
        }
        store.max_connections = n as usize;
    }
    let mut servers = Vec::with_capacity(file.servers.len());
    let mut warnings = Vec::new();
    for (i, input) in file.servers.into_iter().enumerate() {
        let overrides = input.tools.iter().flatten();
        let auto = std::iter::once(("cache".to_owned(), &input.cache))
            .chain(overrides.map(|(tool, o)| (format!("tools.{tool}.cache"), &o.cache)));
        let label = input.name.clone().unwrap_or_else(|| format!("#{i}"));
        for (key, value) in auto {
            if value.as_deref() == Some("auto") {
                warnings.push(format!(
                    "servers[{label}].{key}: \"auto\" is now called \"read-only\"; the old \
                     name still works. Note that nothing is cached unless asked for (the \
                     default is \"never\")"
                ));
            }
        }
        let spec = input
            .validate()
            .map_err(|e| ConfigError::new(format!("servers[{label}].{}", e.field), e.message))?;
        if servers.iter().any(|s: &ServerSpec| s.name == spec.name) {
            return Err(ConfigError::new(
                format!("servers[{label}].name"),
                "declared twice",
            ));
        }
        let prefix = |s: &ServerSpec| {
            crate::registry::names::effective_prefix(s.name.as_str(), s.tool_prefix.as_deref())
                .map(str::to_owned)
        };
        if let Some(other) = servers
            .iter()
            .find(|s| prefix(s).is_some() && prefix(s) == prefix(&spec))
        {
            return Err(ConfigError::new(
                format!("servers[{label}].tool_prefix"),
                format!(
                    "'{}' is already the tool prefix of server '{}'",
                    prefix(&spec).unwrap_or_default(),
                    other.name
                ),
            ));
        }
        servers.push(spec);
    }
    Ok(Settings {
        bind,
        database,
        data_dir,
        log: args
            .log
            .clone()
            .or(file.log)
            .unwrap_or_else(|| "info".into()),
        allow_stdio_via_api: file.allow_stdio_via_api.unwrap_or(false),
        shutdown_timeout,
        body_limit,
        body_timeout,
        max_result_bytes,
        store,
        servers,
        warnings,
        upstreams,
        instance: file.instance.unwrap_or_else(default_instance),
        cache,
        live,
        mcp,
        auth,
    })
}

fn mcp_settings(file: &FileConfig) -> Result<McpSettings, ConfigError> {
    let mut out = McpSettings::default();
    let count = |key: &str, value: Option<u64>, max: u64| match value {
        Some(n) if n == 0 || n > max => Err(ConfigError::new(
            key,
            format!("must be between 1 and {max}"),
        )),
        Some(n) => Ok(Some(n as usize)),
        None => Ok(None),
    };
    if let Some(n) = count("mcp_page_size", file.mcp_page_size, 10_000)? {
        out.page_size = n;
    }
    if let Some(n) = count("mcp_max_sessions", file.mcp_max_sessions, 1_000_000)? {
        out.max_sessions = n;
    }
    if let Some(text) = &file.mcp_session_idle {
        out.session_idle = duration::parse_within(
            text,
            Duration::from_millis(100),
            Duration::from_secs(86_400),
        )
        .map_err(|m| ConfigError::new("mcp_session_idle", m))?;
    }
    if let Some(text) = &file.mcp_response {
        out.response = crate::mcp::answer::ResponseMode::parse(text)
            .map_err(|m| ConfigError::new("mcp_response", m))?;
    }
    Ok(out)
}

fn live_settings(file: &FileConfig) -> Result<LiveSettings, ConfigError> {
    let mut out = LiveSettings::default();
    let day = Duration::from_secs(86_400);
    let ms = Duration::from_millis(10);
    for (key, text, slot) in [
        (
            "live_metrics_interval",
            &file.live_metrics_interval,
            &mut out.metrics_interval,
        ),
        (
            "live_ping_interval",
            &file.live_ping_interval,
            &mut out.ping_interval,
        ),
        (
            "live_ping_timeout",
            &file.live_ping_timeout,
            &mut out.ping_timeout,
        ),
    ] {
        if let Some(text) = text {
            *slot = duration::parse_within(text, ms, day).map_err(|m| ConfigError::new(key, m))?;
        }
    }
    if let Some(n) = file.live_queue {
        if n == 0 || n > 1_000_000 {
            return Err(ConfigError::new(
                "live_queue",
                "must be between 1 and 1000000",
            ));
        }
        out.queue = n as usize;
    }
    Ok(out)
}

fn cache_settings(file: &FileConfig) -> Result<CacheSettings, ConfigError> {
    let mut out = CacheSettings::default();
    let count = |key: &str, value: Option<u64>, max: u64| -> Result<Option<usize>, ConfigError> {
        match value {
            Some(n) if n == 0 || n > max => Err(ConfigError::new(
                key,
                format!("must be between 1 and {max}"),
            )),
            Some(n) => Ok(Some(n as usize)),
            None => Ok(None),
        }
    };
    if let Some(n) = count("cache_max_entries", file.cache_max_entries, 100_000_000)? {
        out.limits.max_entries = n;
    }
    if let Some(n) = count("cache_max_bytes", file.cache_max_bytes, 1 << 40)? {
        out.limits.max_bytes = n;
        out.limits.max_entry_bytes = n / 8;
    }
    if let Some(n) = count("cache_max_entry_bytes", file.cache_max_entry_bytes, 1 << 40)? {
        out.limits.max_entry_bytes = n;
    }
    let day = Duration::from_secs(86_400);
    if let Some(text) = &file.cache_ttl {
        out.default_ttl = duration::parse_within(text, Duration::from_millis(1), 7 * day)
            .map_err(|m| ConfigError::new("cache_ttl", m))?;
    }
    if let Some(text) = &file.cache_sweep_interval {
        out.sweep_interval = duration::parse_within(text, Duration::from_millis(10), day)
            .map_err(|m| ConfigError::new("cache_sweep_interval", m))?;
    }
    Ok(out)
}

fn upstream_settings(file: &FileConfig) -> Result<UpstreamSettings, ConfigError> {
    let mut out = UpstreamSettings::default();
    let dur = |key: &str, text: &Option<String>, min: Duration, max: Duration| {
        text.as_deref()
            .map(|t| duration::parse_within(t, min, max).map_err(|m| ConfigError::new(key, m)))
            .transpose()
    };
    let ms = Duration::from_millis(1);
    let day = Duration::from_secs(86_400);
    if let Some(d) = dur("restart_base_delay", &file.restart_base_delay, ms, day)? {
        out.restart.base_delay = d;
    }
    if let Some(d) = dur("restart_max_delay", &file.restart_max_delay, ms, day)? {
        out.restart.max_delay = d;
    }
    if let Some(d) = dur("restart_window", &file.restart_window, ms, day)? {
        out.restart.window = d;
        out.restart.stable_after = d;
    }
    if let Some(n) = file.restart_max {
        if n == 0 || n > 10_000 {
            return Err(ConfigError::new(
                "restart_max",
                "must be between 1 and 10000",
            ));
        }
        out.restart.max_restarts = n as usize;
    }
    if out.restart.max_delay < out.restart.base_delay {
        return Err(ConfigError::new(
            "restart_max_delay",
            "must not be below restart_base_delay",
        ));
    }
    if let Some(n) = file.breaker_threshold {
        if n == 0 || n > 10_000 {
            return Err(ConfigError::new(
                "breaker_threshold",
                "must be between 1 and 10000",
            ));
        }
        out.breaker.failure_threshold = n as u32;
    }
    if let Some(d) = dur("breaker_cooldown", &file.breaker_cooldown, ms, day)? {
        out.breaker.base_cooldown = d;
    }
    if let Some(d) = dur("breaker_max_cooldown", &file.breaker_max_cooldown, ms, day)? {
        out.breaker.max_cooldown = d;
    }
    if out.breaker.max_cooldown < out.breaker.base_cooldown {
        return Err(ConfigError::new(
            "breaker_max_cooldown",
            "must not be below breaker_cooldown",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn args_for(f: &tempfile::NamedTempFile) -> ServeArgs {
        ServeArgs {
            config: Some(f.path().to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_with_nothing_given() {
        let s = resolve(&ServeArgs::default()).unwrap();
        assert_eq!(s.bind.to_string(), DEFAULT_BIND);
        assert_eq!(
            s.database,
            DatabaseUrl::Sqlite(PathBuf::from("./data/omni-bridge.db"))
        );
        assert!(!s.allow_stdio_via_api);
    }

    #[test]
    fn allowed_hosts_and_origins_keep_their_old_mcp_names() {
        for (hosts, origins) in [
            ("allowed_hosts", "allowed_origins"),
            ("mcp_allowed_hosts", "mcp_allowed_origins"),
        ] {
            let f = file(&format!(
                "{hosts} = [\"gw.internal\", \"proxy:8443\"]\n{origins} = [\"https://app.example\"]\n"
            ));
            let s = resolve(&args_for(&f)).unwrap();
            assert_eq!(s.auth.allowed_hosts, ["gw.internal", "proxy:8443"]);
            assert_eq!(s.auth.allowed_origins, ["https://app.example"]);
        }
        let f = file("allowed_hosts = [\"bad host/\"]\n");
        assert_eq!(resolve(&args_for(&f)).unwrap_err().key, "allowed_hosts");
    }

    #[test]
    fn the_old_cache_name_auto_works_and_warns() {
        let f = file(
            "[[servers]]\nname = \"t\"\ntransport = \"stdio\"\ncommand = \"x\"\ncache = \"auto\"\n",
        );
        let s = resolve(&args_for(&f)).unwrap();
        assert_eq!(s.servers[0].cache, crate::registry::CachePolicy::ReadOnly);
        assert_eq!(s.warnings.len(), 1);
        assert!(
            s.warnings[0].starts_with("servers[t].cache:"),
            "{:?}",
            s.warnings
        );
        let f = file("[[servers]]\nname = \"t\"\ntransport = \"stdio\"\ncommand = \"x\"\n");
        let s = resolve(&args_for(&f)).unwrap();
        assert_eq!(s.servers[0].cache, crate::registry::CachePolicy::Never);
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn flags_beat_the_file() {
        let f = file("bind = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/omni-file\"\n");
        let mut args = args_for(&f);
        assert_eq!(resolve(&args).unwrap().bind.port(), 9000);
        args.bind = Some("127.0.0.1:9100".into());
        let s = resolve(&args).unwrap();
        assert_eq!(s.bind.port(), 9100);
        assert_eq!(s.data_dir, PathBuf::from("/tmp/omni-file"));
    }

    #[test]
    fn servers_from_the_file_are_validated_by_key() {
        let f = file(
            "[[servers]]\nname = \"time\"\ntransport = \"stdio\"\ncommand = \"python3\"\n\
             [[servers]]\nname = \"web\"\ntransport = \"sse\"\nurl = \"ftp://x\"\n",
        );
        let err = resolve(&args_for(&f)).unwrap_err();
        assert_eq!(err.key, "servers[web].url");
        assert!(
            err.to_string()
                .starts_with("configuration error: servers[web].url:")
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let f = file("bnd = \"127.0.0.1:1\"\n");
        let err = resolve(&args_for(&f)).unwrap_err();
        assert!(err.message.contains("bnd"), "{err}");
        assert!(err.key.ends_with("line 1"), "{err}");
        let f = file("bind = \"nowhere\"\n");
        assert_eq!(resolve(&args_for(&f)).unwrap_err().key, "bind");
        let f = file("database_url = \"mysql://x\"\n");
        assert_eq!(resolve(&args_for(&f)).unwrap_err().key, "database_url");
        let f = file("shutdown_timeout = \"30\"\n");
        assert_eq!(resolve(&args_for(&f)).unwrap_err().key, "shutdown_timeout");
    }

    #[test]
    fn duplicate_server_names_are_refused() {
        let f = file(
            "[[servers]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\n\
             [[servers]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"y\"\n",
        );
        assert_eq!(resolve(&args_for(&f)).unwrap_err().key, "servers[a].name");
    }

    #[test]
    fn a_missing_file_is_a_config_error() {
        let args = ServeArgs {
            config: Some("/nonexistent/omni.toml".into()),
            ..Default::default()
        };
        assert_eq!(resolve(&args).unwrap_err().key, "config");
    }
}
