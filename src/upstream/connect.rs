//! Opening an MCP client session to one upstream over its transport, through rmcp. Sessions
//! run on a dedicated multi-thread runtime: rmcp spawns its tasks (and child processes) on
//! the current runtime, and they must outlive whichever actix worker happened to start
//! them, and must not share one thread with every other upstream.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use process_wrap::tokio::{ChildWrapper, CommandWrap, ProcessGroup};
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
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::{ClientHandler, Peer, RoleClient, ServiceExt};
use rmcp::{ErrorData, ServiceError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::errors::{self, with_causes};
use super::relay::{INPUT_KEY_META, Relay, RelayItem, Relays};
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
    /// The upstream said its resources changed (`list_changed`, or an update of one):
    /// results read from them may be stale.
    ResourcesChanged(serde_json::Value),
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

/// `params` with the key the upstream named for its request (rmcp moves `_meta` to the
/// context; see [`INPUT_KEY_META`]) back in them, and nothing else of its `_meta`.
fn with_meta<P>(params: P, context: &RequestContext<RoleClient>) -> P
where
    P: serde::Serialize + serde::de::DeserializeOwned,
{
    let Some(key) = context.meta.0.get(INPUT_KEY_META) else {
        return params;
    };
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::to_value(&params) else {
        return params;
    };
    fields.insert("_meta".to_owned(), serde_json::json!({INPUT_KEY_META: key}));
    serde_json::from_value(serde_json::Value::Object(fields)).unwrap_or(params)
}

/// Sends `item` to the caller and waits for its client's answer.
async fn ask<T>(
    relay: Relay,
    item: impl FnOnce(oneshot::Sender<Result<T, ErrorData>>) -> RelayItem,
) -> Result<T, ErrorData> {
    let (tx, rx) = oneshot::channel();
    let gone = || ErrorData::internal_error("the caller went away", None);
    if !relay.send(item(tx)).await {
        return Err(gone());
    }
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
        let params = with_meta(params, &context);
        ask(relay, |reply| RelayItem::Sample(params, reply)).await
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let relay = relay_for(&self.relays, &context).await?;
        let params = with_meta(params, &context);
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

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let detail = serde_json::json!({"notification": "resources/list_changed"});
        let _ = self.notes.send(SessionNote::ResourcesChanged(detail));
    }

    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let detail = serde_json::json!({"notification": "resources/updated", "uri": params.uri});
        let _ = self.notes.send(SessionNote::ResourcesChanged(detail));
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

    /// Cancelled when the session is closed: calls in flight on it end at once.
    pub fn closed(&self) -> CancellationToken {
        self.cancel.clone()
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
    limit: usize,
) -> Result<Session, ConnectError> {
    let spec = spec.clone();
    let timeout = spec.timeout;
    upstream_runtime()
        .spawn(async move {
            tokio::time::timeout(timeout, connect_inner(spec, notes, limit))
                .await
                .map_err(|_| ConnectError::Timeout(timeout))?
        })
        .await
        .map_err(|e| ConnectError::Transport(format!("connect task failed: {e}")))?
}

async fn connect_inner(
    spec: ServerSpec,
    notes: mpsc::UnboundedSender<SessionNote>,
    limit: usize,
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
    let mut exit = None;
    let target = errors::target(&spec);
    let running = match &spec.transport {
        Transport::Stdio {
            command,
            args,
            env,
            cwd,
        } => {
            let transport = spawn_child(&spec.name, command, args, env, cwd.as_deref(), limit)?;
            pid = transport.id();
            let note = transport.exit.clone();
            exit = Some(note.clone());
            handshake(
                transport,
                client(ProtocolVersion::V_2025_06_18),
                &cancel,
                &target,
            )
            .await
            .map_err(|e| {
                // A process that ended during the handshake says how.
                match note.lock().expect("exit note lock").take() {
                    Some(how) => ConnectError::Handshake(format!("{how}: {target}")),
                    None => e,
                }
            })?
        }
        Transport::StreamableHttp { url, headers } => {
            let custom: HashMap<_, _> = header_pairs(headers)?.into_iter().collect();
            let mut config =
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(custom);
            config.max_concurrent_requests = 256;
            // A body or event over the limit fails the request with "too large" (read
            // as `upstream-result-too-large`), and rmcp stops reading it there.
            config.max_json_response_size = limit;
            config.max_sse_event_size = limit;
            // An upstream that forgot our session (HTTP 404) restarted: rmcp would quietly
            // open a new session under the old one, keeping a catalogue, server info and
            // restart count that may no longer hold. The actor ends the session instead,
            // and the supervisor reconnects in the open.
            config = config.reinit_on_expired_session(false);
            config.retry_config = Arc::new(BriefResume);
            let http = http_client(carries_secrets(url, headers))?;
            let transport = StreamableHttpClientTransport::with_client(
                super::limited_http::LimitedHttp(http),
                config,
            );
            handshake(
                transport,
                client(ProtocolVersion::V_2025_06_18),
                &cancel,
                &target,
            )
            .await?
        }
        Transport::Sse { url, headers } => {
            let map: http::HeaderMap = header_pairs(headers)?.into_iter().collect();
            let http = http_client(carries_secrets(url, headers))?;
            let name = spec.name.to_string();
            let transport =
                LegacySseTransport::connect(http, url.clone(), map, spec.timeout, name, limit)
                    .await
                    .map_err(|e| ConnectError::Transport(e.to_string()))?;
            // The legacy transport belongs to the 2024-11-05 protocol.
            handshake(
                transport,
                client(ProtocolVersion::V_2024_11_05),
                &cancel,
                &target,
            )
            .await?
        }
    };
    let peer = running.peer().clone();
    let info = peer.peer_info();
    watch(running, notes, pid, exit);
    Ok(Session {
        peer,
        info,
        pid,
        relays,
        cancel,
    })
}

/// Runs the MCP `initialize` handshake over `transport` as `client`. A failure reads as
/// a short phrase and `target` (see `upstream::errors`); its whole chain goes to the log.
async fn handshake<T, E, A>(
    transport: T,
    client: GatewayClient,
    cancel: &CancellationToken,
    target: &str,
) -> Result<RunningService<RoleClient, GatewayClient>, ConnectError>
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let server = client.server.clone();
    client
        .serve_with_ct(transport, cancel.clone())
        .await
        .map_err(|e| {
            log::warn!(
                "[{server}] handshake with {target} failed: {}",
                with_causes(&e.to_string(), &e)
            );
            ConnectError::Handshake(errors::for_user(&e, target))
        })
}

/// Reports the end of the session, whatever ends it. For stdio, `group` is the child's
/// process group, killed once the session is over.
fn watch(
    running: RunningService<RoleClient, GatewayClient>,
    notes: mpsc::UnboundedSender<SessionNote>,
    group: Option<u32>,
    exit: Option<ExitNote>,
) {
    tokio::spawn(async move {
        let why = match running.waiting().await {
            Ok(QuitReason::Cancelled) => "session closed by the gateway".to_owned(),
            Ok(QuitReason::Closed) => exit
                .and_then(|note| note.lock().expect("exit note lock").take())
                .unwrap_or_else(|| "connection closed by the upstream".to_owned()),
            Ok(other) => format!("session ended: {other:?}"),
            Err(e) => format!("session task failed: {e}"),
        };
        // rmcp's graceful stdio shutdown closes stdin and waits for the child alone; when
        // the child exits by itself, its group is never killed, and helpers it started
        // would live on as orphans. The group id cannot be reused while a member lives.
        if let Some(group) = group {
            kill_group(group);
        }
        let _ = notes.send(SessionNote::Ended(why));
    });
}

/// SIGKILL to every process left in the group. An empty group is nothing to do.
fn kill_group(group: u32) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    if group > 1 {
        // SAFETY: killpg only sends a signal; ESRCH (the group is empty) is expected.
        unsafe {
            libc::killpg(group, libc::SIGKILL);
        }
    }
}

/// What a failed request says about the session itself, beyond the one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionTrouble {
    /// The transport could not carry the request: connection refused or reset, closed.
    /// Once may be a blip; several in a row mean the upstream is gone.
    Unreachable,
    /// The upstream answered that it does not know our session (Streamable HTTP 404): it
    /// restarted or dropped the session, which can never work again.
    Forgotten,
}

/// Classifies a failed request. `None`: the upstream answered (an MCP error), or it did
/// not answer in time, neither of which says the session is lost.
pub fn session_trouble(error: &ServiceError) -> Option<SessionTrouble> {
    if too_large(error).is_some() {
        return None;
    }
    match error {
        ServiceError::TransportClosed => Some(SessionTrouble::Unreachable),
        ServiceError::TransportSend(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e.error.as_ref());
            while let Some(current) = source {
                if let Some(StreamableHttpError::SessionExpired) =
                    current.downcast_ref::<StreamableHttpError<reqwest::Error>>()
                {
                    return Some(SessionTrouble::Forgotten);
                }
                source = current.source();
            }
            Some(SessionTrouble::Unreachable)
        }
        _ => None,
    }
}

/// If a request failed because the upstream's answer was over the limit (rmcp's
/// Streamable HTTP client refuses the JSON body or the SSE event and stops reading it):
/// the limit. That is the answer's fault, not the session's. rmcp's event error is
/// private, so it is known by its text.
pub fn too_large(error: &ServiceError) -> Option<usize> {
    let ServiceError::TransportSend(e) = error else {
        return None;
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e.error.as_ref());
    while let Some(current) = source {
        if let Some(StreamableHttpError::ResponseBodyTooLarge { max_size }) =
            current.downcast_ref::<StreamableHttpError<reqwest::Error>>()
        {
            return Some(*max_size);
        }
        let text = current.to_string();
        if let Some(rest) = text.split("SSE event exceeded the maximum size of ").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            return Some(digits.parse().unwrap_or_default());
        }
        source = current.source();
    }
    None
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

/// Whether requests to `url` carry secrets: configured headers, or credentials in the URL.
fn carries_secrets(url: &url::Url, headers: &std::collections::BTreeMap<String, String>) -> bool {
    !headers.is_empty() || !url.username().is_empty() || url.password().is_some()
}

/// How many redirects one request may follow (reqwest's default).
const MAX_REDIRECTS: usize = 10;

/// A redirect to another origin than the request's, refused because the request carries
/// secrets that were given for its origin only.
#[derive(Debug, thiserror::Error)]
#[error(
    "upstream redirected to another origin ({from} -> {to}); refused so its configured \
     headers and credentials stay with their origin"
)]
pub struct CrossOriginRedirect {
    pub from: String,
    pub to: String,
}

/// The redirects a client to an upstream follows. With `secrets` (configured headers or
/// URL credentials), only redirects within the origin the request was sent to: reqwest
/// itself drops only `Authorization` and cookies on a cross-origin hop, and would carry
/// a custom header such as `X-Api-Key` along.
pub fn redirect_policy(secrets: bool) -> reqwest::redirect::Policy {
    if !secrets {
        return reqwest::redirect::Policy::limited(MAX_REDIRECTS);
    }
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt
            .previous()
            .first()
            .map(crate::registry::secrets::origin_of);
        let next = crate::registry::secrets::origin_of(attempt.url());
        match first {
            Some(from) if from != next => attempt.error(CrossOriginRedirect { from, to: next }),
            _ if attempt.previous().len() >= MAX_REDIRECTS => {
                attempt.error(format!("too many redirects (more than {MAX_REDIRECTS})"))
            }
            _ => attempt.follow(),
        }
    })
}

/// How rmcp resumes a Streamable HTTP stream that broke: a few quick tries, then the
/// stream fails. rmcp's default tries forever (1 s, doubling), so a call whose upstream
/// died mid-answer waited out its whole timeout (30 s by default) before the gateway
/// said anything; found by schemathesis calling the test server's `crash` tool. An
/// upstream that is only slow to answer is unaffected: this counts reconnections, not
/// waiting.
#[derive(Debug)]
struct BriefResume;

impl BriefResume {
    const TRIES: usize = 3;
    const FIRST: Duration = Duration::from_millis(250);
}

impl rmcp::transport::common::client_side_sse::SseRetryPolicy for BriefResume {
    fn retry(&self, tries: usize) -> Option<Duration> {
        (tries < Self::TRIES).then(|| Self::FIRST * 2u32.pow(tries as u32))
    }
}

/// The HTTP client upstreams are reached with: one per redirect policy for the whole
/// process, built once. A client's construction reads the system's trusted roots; built
/// per upstream, 1,000 of them took seconds of start-up on their own. Sharing also shares
/// the connection pool, which is keyed by host, and carries nothing of one upstream's:
/// headers go with each request.
fn http_client(secrets: bool) -> Result<reqwest::Client, ConnectError> {
    static CLIENTS: std::sync::OnceLock<[Result<reqwest::Client, String>; 2]> =
        std::sync::OnceLock::new();
    let clients = CLIENTS.get_or_init(|| [build_http_client(false), build_http_client(true)]);
    clients[usize::from(secrets)]
        .clone()
        .map_err(|e| ConnectError::Transport(format!("http client: {e}")))
}

fn build_http_client(secrets: bool) -> Result<reqwest::Client, String> {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .redirect(redirect_policy(secrets))
        // A redirect target has no business with the upstream's URL (its query may hold
        // a token).
        .referer(false)
        .build()
        .map_err(|e| e.to_string())
}

/// Starts the child in a process group of its own, so that killing the group takes its
/// helpers too, and with the parent-death signal set so it cannot outlive the gateway.
fn spawn_child(
    server: &ServerName,
    command: &str,
    args: &[String],
    env: &std::collections::BTreeMap<String, String>,
    cwd: Option<&str>,
    limit: usize,
) -> Result<ChildTransport, ConnectError> {
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
    wrap.command_mut()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_failed = |error: String| ConnectError::Spawn {
        command: command.to_owned(),
        error,
    };
    let mut child = wrap.spawn().map_err(|e| {
        log::warn!("[{server}] cannot start '{command}': {e}");
        spawn_failed(errors::phrase(&e))
    })?;
    let (Some(stdin), Some(stdout)) = (
        child.inner_mut().stdin().take(),
        child.inner_mut().stdout().take(),
    ) else {
        return Err(spawn_failed("its pipes could not be opened".to_owned()));
    };
    if let Some(stderr) = child.inner_mut().stderr().take() {
        tokio::spawn(drain_stderr(server.clone(), stderr));
    }
    let lines = super::oversize::Lines::new(stdout, server.as_str(), limit);
    // rmcp's own cap (16 MiB) would drop a longer line without a word; ours has already
    // replaced every line over `limit`.
    let transport = AsyncRwTransport::new_client(lines, stdin).with_max_line_length(limit + 2);
    Ok(ChildTransport {
        child,
        transport,
        exit: ExitNote::default(),
    })
}

/// How a stdio upstream's process ended, once its output has: `exited with code 3`,
/// `killed by signal 9`. Filled by the transport, read by whoever reports the end.
pub type ExitNote = Arc<std::sync::Mutex<Option<String>>>;

/// How long the transport waits, once the child's output has ended, for the child to be
/// reaped (it closes its output as it exits; the status follows within moments).
const EXIT_STATUS_WAIT: Duration = Duration::from_millis(200);

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("process exited with code {code}"),
        (None, Some(signal)) => format!("process killed by signal {signal}"),
        (None, None) => "process ended".to_owned(),
    }
}

/// A stdio upstream: its process, and the transport over its pipes, whose output has
/// every line over the limit replaced (see `upstream::oversize`). The process is killed
/// when this is dropped (`kill_on_drop`); `watch` kills its group when the session ends.
struct ChildTransport {
    child: Box<dyn ChildWrapper>,
    transport: AsyncRwTransport<RoleClient, super::oversize::Lines<ChildStdout>, ChildStdin>,
    exit: ExitNote,
}

impl ChildTransport {
    fn id(&self) -> Option<u32> {
        self.child.id()
    }
}

impl rmcp::transport::Transport<RoleClient> for ChildTransport {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: rmcp::service::TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.transport.send(item)
    }

    async fn receive(&mut self) -> Option<rmcp::service::RxJsonRpcMessage<RoleClient>> {
        let message = self.transport.receive().await;
        if message.is_none() {
            // The output ended: say how the process did, for `last_error` and the events.
            // Only the leader is waited for; `watch` kills the rest of the group.
            let waited =
                tokio::time::timeout(EXIT_STATUS_WAIT, self.child.inner_mut().wait()).await;
            if let Ok(Ok(status)) = waited {
                *self.exit.lock().expect("exit note lock") = Some(describe_exit(status));
            }
        }
        message
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        // Closing stdin asks the child to end; `watch` kills what is left of its group.
        self.transport.close().await
    }
}

/// The longest stderr line logged whole; the rest of a longer line is dropped.
const MAX_STDERR_LINE: usize = 8 * 1024;

/// Logs the child's stderr line by line, always draining it: a child blocked on a full
/// stderr pipe would hang. Memory stays bounded however long a line runs.
async fn drain_stderr(server: ServerName, stderr: impl tokio::io::AsyncRead + Unpin) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::with_capacity(256);
    // Inside an overlong line whose start was logged: drop bytes until its end.
    let mut skipping = false;
    loop {
        line.clear();
        let limit = (MAX_STDERR_LINE + 1) as u64;
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let cut = line.len() > MAX_STDERR_LINE && line.last() != Some(&b'\n');
        if !skipping {
            let text = String::from_utf8_lossy(&line[..line.len().min(MAX_STDERR_LINE)]);
            let text = text.trim_end_matches(['\n', '\r']);
            let more = if cut { "... (line cut)" } else { "" };
            log::info!(target: "omni_bridge::upstream::stderr", "[{server}] {text}{more}");
        }
        skipping = cut || (skipping && line.last() != Some(&b'\n'));
    }
}

/// Fetches the whole catalogue, following pagination.
pub async fn list_tools(peer: &Peer<RoleClient>, timeout: Duration) -> Result<Vec<Tool>, String> {
    let peer = peer.clone();
    upstream_runtime()
        .spawn(async move {
            tokio::time::timeout(timeout, peer.list_all_tools())
                .await
                .map_err(|_| format!("tools/list did not answer within {timeout:?}"))?
                .map_err(|e| {
                    log::debug!("tools/list failed: {}", with_causes(&e.to_string(), &e));
                    format!("tools/list failed: {}", errors::phrase(&e))
                })
        })
        .await
        .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use std::any::TypeId;

    use rmcp::transport::DynamicTransportError;

    use super::*;

    fn send_error(error: impl std::error::Error + Send + Sync + 'static) -> ServiceError {
        ServiceError::TransportSend(DynamicTransportError::from_parts(
            "test",
            TypeId::of::<()>(),
            Box::new(error),
        ))
    }

    #[test]
    fn transport_failures_are_told_from_answers_and_timeouts() {
        let expired = StreamableHttpError::<reqwest::Error>::SessionExpired;
        assert_eq!(
            session_trouble(&send_error(expired)),
            Some(SessionTrouble::Forgotten)
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            session_trouble(&send_error(StreamableHttpError::<reqwest::Error>::Io(
                refused
            ))),
            Some(SessionTrouble::Unreachable)
        );
        assert_eq!(
            session_trouble(&ServiceError::TransportClosed),
            Some(SessionTrouble::Unreachable)
        );
        let answered = ServiceError::McpError(ErrorData::internal_error("no", None));
        assert_eq!(session_trouble(&answered), None);
        let slow = ServiceError::Timeout {
            timeout: Duration::from_secs(1),
        };
        assert_eq!(session_trouble(&slow), None);
    }
}
