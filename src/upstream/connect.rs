//! Opening an MCP client session to one upstream over its transport, through rmcp. Sessions
//! run on a dedicated multi-thread runtime: rmcp spawns its tasks (and child processes) on
//! the current runtime, and they must outlive whichever actix worker happened to start
//! them, and must not share one thread with every other upstream.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use process_wrap::tokio::{CommandWrap, ProcessGroup};
use rmcp::ErrorData;
use rmcp::model::{
    ClientCapabilities, ClientConfig, Implementation, ProtocolVersion, ServerPeerInfo, Tool,
};
#[allow(deprecated)] // sampling and logging are relayed for clients before 2026-07-28
use rmcp::model::{
    CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams, ElicitResult,
    LoggingMessageNotificationParam, ProgressNotificationParam,
};
use rmcp::service::{
    InboundStreamOrigin, NotificationContext, QuitReason, RequestContext, RunningService,
};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, Peer, RoleClient, ServiceExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::relay::{Relay, RelayItem, Relays};
use super::sse::LegacySseTransport;
use crate::registry::{ServerName, ServerSpec, Transport};

pub fn upstream_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("omni-upstream")
            .enable_all()
            .build()
            .expect("the upstream runtime starts")
    })
}

/// What a session tells its actor, besides call results.
#[derive(Debug)]
pub enum SessionNote {
    ToolsChanged,
    Ended(String),
}

/// The client side of our sessions: identifies omni-bridge and forwards list changes.
#[derive(Clone)]
struct GatewayClient {
    notes: mpsc::UnboundedSender<SessionNote>,
    protocol: ProtocolVersion,
    relays: Relays,
    server: ServerName,
}

/// The relay of the call an upstream request belongs to, or why there is none.
async fn relay_for(
    relays: &Relays,
    context: &RequestContext<RoleClient>,
) -> Result<Relay, ErrorData> {
    let origin = match context.extensions.get::<InboundStreamOrigin>() {
        Some(InboundStreamOrigin::OutboundRequest(id)) => Some(id),
        _ => None,
    };
    relays.for_request(origin).await.ok_or_else(|| {
        ErrorData::invalid_request(
            "omni-bridge cannot tell which of its clients this request is for \
             (none, or several, have calls in flight)",
            None,
        )
    })
}

/// Sends `item` to the caller and waits for its client's answer.
async fn ask<T>(
    relay: Relay,
    item: impl FnOnce(oneshot::Sender<Result<T, ErrorData>>) -> RelayItem,
) -> Result<T, ErrorData> {
    let (tx, rx) = oneshot::channel();
    let gone = || ErrorData::internal_error("the caller went away", None);
    relay.send(item(tx)).await.map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?
}

#[allow(deprecated)] // sampling and logging: deprecated in 2026-07-28, used before it
impl ClientHandler for GatewayClient {
    fn get_info(&self) -> ClientConfig {
        // Sampling and elicitation are relayed to the client that made the call.
        let capabilities: ClientCapabilities =
            serde_json::from_value(serde_json::json!({"sampling": {}, "elicitation": {}}))
                .unwrap_or_default();
        ClientConfig::new(
            capabilities,
            Implementation::new("omni-bridge", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(self.protocol.clone())
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let relay = relay_for(&self.relays, &context).await?;
        ask(relay, |reply| RelayItem::Sample(params, reply)).await
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let relay = relay_for(&self.relays, &context).await?;
        ask(relay, |reply| RelayItem::Elicit(params, reply)).await
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(relay) = self.relays.for_progress(&params.progress_token).await {
            // A full queue drops progress rather than hold the session up.
            let _ = relay.try_send(RelayItem::Progress(params));
        }
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        match self.relays.for_log() {
            Some(relay) => {
                let _ = relay.try_send(RelayItem::Log(params));
            }
            None => log::info!(
                "[{}] upstream log {:?}: {}",
                self.server,
                params.level,
                params.data
            ),
        }
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.notes.send(SessionNote::ToolsChanged);
    }
}

/// A live session. Dropping it (or calling `close`) ends the session and, for stdio, kills
/// the child's whole process group.
pub struct Session {
    pub peer: Peer<RoleClient>,
    pub info: Option<Arc<ServerPeerInfo>>,
    pub pid: Option<u32>,
    /// Calls in flight whose callers take progress, logs and requests.
    pub relays: Relays,
    cancel: CancellationToken,
}

impl Session {
    pub fn close(&self) {
        self.cancel.cancel();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot start '{command}': {error}")]
    Spawn { command: String, error: String },
    #[error("{0}")]
    Transport(String),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Connects and completes the MCP handshake within the spec's timeout. Session notes
/// (list changes, the end of the session) go to `notes`.
pub async fn connect(
    spec: &ServerSpec,
    notes: mpsc::UnboundedSender<SessionNote>,
) -> Result<Session, ConnectError> {
    let spec = spec.clone();
    let timeout = spec.timeout;
    upstream_runtime()
        .spawn(async move {
            tokio::time::timeout(timeout, connect_inner(spec, notes))
                .await
                .map_err(|_| ConnectError::Timeout(timeout))?
        })
        .await
        .map_err(|e| ConnectError::Transport(format!("connect task failed: {e}")))?
}

async fn connect_inner(
    spec: ServerSpec,
    notes: mpsc::UnboundedSender<SessionNote>,
) -> Result<Session, ConnectError> {
    let cancel = CancellationToken::new();
    let relays = Relays::default();
    let client = |protocol| GatewayClient {
        notes: notes.clone(),
        protocol,
        relays: relays.clone(),
        server: spec.name.clone(),
    };
    let mut pid = None;
    let running = match &spec.transport {
        Transport::Stdio {
            command,
            args,
            env,
            cwd,
        } => {
            let transport = spawn_child(&spec.name, command, args, env, cwd.as_deref())?;
            pid = transport.id();
            handshake(transport, client(ProtocolVersion::V_2025_06_18), &cancel).await?
        }
        Transport::StreamableHttp { url, headers } => {
            let custom: HashMap<_, _> = header_pairs(headers)?.into_iter().collect();
            let mut config =
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(custom);
            config.max_concurrent_requests = 256;
            let transport = StreamableHttpClientTransport::with_client(http_client()?, config);
            handshake(transport, client(ProtocolVersion::V_2025_06_18), &cancel).await?
        }
        Transport::Sse { url, headers } => {
            let map: http::HeaderMap = header_pairs(headers)?.into_iter().collect();
            let transport =
                LegacySseTransport::connect(http_client()?, url.clone(), map, spec.timeout)
                    .await
                    .map_err(|e| ConnectError::Transport(e.to_string()))?;
            // The legacy transport belongs to the 2024-11-05 protocol.
            handshake(transport, client(ProtocolVersion::V_2024_11_05), &cancel).await?
        }
    };
    let peer = running.peer().clone();
    let info = peer.peer_info();
    watch(running, notes);
    Ok(Session {
        peer,
        info,
        pid,
        relays,
        cancel,
    })
}

/// Runs the MCP `initialize` handshake over `transport` as `client`.
async fn handshake<T, E, A>(
    transport: T,
    client: GatewayClient,
    cancel: &CancellationToken,
) -> Result<RunningService<RoleClient, GatewayClient>, ConnectError>
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    client
        .serve_with_ct(transport, cancel.clone())
        .await
        .map_err(|e| ConnectError::Handshake(e.to_string()))
}

/// Reports the end of the session, whatever ends it.
fn watch(
    running: RunningService<RoleClient, GatewayClient>,
    notes: mpsc::UnboundedSender<SessionNote>,
) {
    tokio::spawn(async move {
        let why = match running.waiting().await {
            Ok(QuitReason::Cancelled) => "session closed by the gateway".to_owned(),
            Ok(QuitReason::Closed) => "connection closed by the upstream".to_owned(),
            Ok(other) => format!("session ended: {other:?}"),
            Err(e) => format!("session task failed: {e}"),
        };
        let _ = notes.send(SessionNote::Ended(why));
    });
}

/// The configured headers as HTTP types (validated at registration; checked again here
/// because stored data is not trusted blindly).
fn header_pairs(
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, ConnectError> {
    headers
        .iter()
        .map(|(key, value)| {
            let name = http::HeaderName::from_bytes(key.as_bytes())
                .map_err(|e| ConnectError::Transport(format!("header {key}: {e}")))?;
            let value = http::HeaderValue::from_str(value)
                .map_err(|_| ConnectError::Transport(format!("header {key}: bad value")))?;
            Ok((name, value))
        })
        .collect()
}

fn http_client() -> Result<reqwest::Client, ConnectError> {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| ConnectError::Transport(format!("http client: {e}")))
}

/// Starts the child in a process group of its own, so that killing the group takes its
/// helpers too, and with the parent-death signal set so it cannot outlive the gateway.
fn spawn_child(
    server: &ServerName,
    command: &str,
    args: &[String],
    env: &std::collections::BTreeMap<String, String>,
    cwd: Option<&str>,
) -> Result<TokioChildProcess, ConnectError> {
    let mut wrap = CommandWrap::with_new(command, |cmd| {
        cmd.args(args);
        // The gateway's own settings (a database URL with its password) are not the
        // child's business.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OMNI_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        cmd.kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    wrap.wrap(ProcessGroup::leader());
    let (transport, stderr) = TokioChildProcess::builder(wrap)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ConnectError::Spawn {
            command: command.to_owned(),
            error: e.to_string(),
        })?;
    if let Some(stderr) = stderr {
        let server = server.clone();
        // Always drained, line by line: a child blocked on a full stderr pipe would hang.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log::info!(target: "omni_bridge::upstream::stderr", "[{server}] {line}");
            }
        });
    }
    Ok(transport)
}

/// Fetches the whole catalogue, following pagination.
pub async fn list_tools(peer: &Peer<RoleClient>, timeout: Duration) -> Result<Vec<Tool>, String> {
    let peer = peer.clone();
    upstream_runtime()
        .spawn(async move {
            tokio::time::timeout(timeout, peer.list_all_tools())
                .await
                .map_err(|_| format!("tools/list did not answer within {timeout:?}"))?
                .map_err(|e| format!("tools/list failed: {e}"))
        })
        .await
        .map_err(|e| e.to_string())?
}
