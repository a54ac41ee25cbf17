//! Lane: a connected upstream's client handle, handed out by its actor (the actor keeps
//! the session; callers hold cloned handles). A tool call on a lane asks the breaker,
//! sends the request from the caller's own thread, and tells the actor only what may
//! change the upstream's status. Going through the actor's mailbox instead cost two
//! cross-thread hops per call, which the benchmark showed as most of what the gateway added
//! to a fast upstream (see BENCHMARKS.md).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::Recipient;
use rmcp::ServiceError;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest, ErrorCode, JsonObject,
    ServerResult,
};
use rmcp::service::{Peer, RoleClient};
use tokio_util::sync::CancellationToken;

use super::breaker::Breaker;
use super::call_error::CallError;
use super::connect::{self, Session};
use super::messages::{BreakerMoved, CallFinished};
use super::relay::{Relay, Relays};

/// The breaker of one upstream, shared by its actor (probes) and its lanes (calls).
#[derive(Clone)]
pub struct SharedBreaker(Arc<Mutex<Breaker>>);

impl SharedBreaker {
    pub fn new(breaker: Breaker) -> Self {
        Self(Arc::new(Mutex::new(breaker)))
    }

    /// Held only for one decision; never across an await.
    pub fn lock(&self) -> MutexGuard<'_, Breaker> {
        self.0.lock().expect("breaker lock")
    }
}

/// The actor's side of a lane: what a call's outcome is sent to.
pub struct Reports {
    pub finished: Recipient<CallFinished>,
    pub moved: Recipient<BreakerMoved>,
}

#[derive(Clone)]
pub struct Lane {
    inner: Arc<Inner>,
}

struct Inner {
    server: String,
    /// The actor generation that made this lane; a stopping actor clears only its own.
    generation: u64,
    peer: Peer<RoleClient>,
    relays: Relays,
    timeout: Duration,
    breaker: SharedBreaker,
    /// Where the lane tells its actor what may change the upstream's status.
    reports: Reports,
    /// Cancelled when the actor closes the session (removed, reloaded, restarting).
    closed: CancellationToken,
}

/// A call the breaker let through and that has no outcome yet. Dropped unsettled (the
/// caller went away mid-call), it gives up its place, so a half-open circuit is not left
/// waiting for a trial that will never report.
struct Admitted<'a> {
    breaker: &'a SharedBreaker,
    settled: bool,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.lock().abandon();
        }
    }
}

impl fmt::Debug for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lane({} #{})", self.inner.server, self.inner.generation)
    }
}

/// Whether a JSON-RPC error says the caller was wrong rather than the upstream broken.
fn is_callers_fault(code: ErrorCode) -> bool {
    code == ErrorCode::INVALID_PARAMS || code == ErrorCode::METHOD_NOT_FOUND
}

/// What one request's outcome means, for calls on a lane and pass-through alike.
pub struct Judged<T> {
    pub result: Result<T, CallError>,
    /// The upstream answered as it should (the breaker counts a success); an error that
    /// is the caller's fault counts too.
    pub healthy: bool,
    /// The upstream could not be reached: a probe should ask whether the session stands.
    pub unreachable: bool,
}

/// Judges the outcome of a request sent under `timeout`.
pub fn judge<T>(
    server: &str,
    timeout: Duration,
    outcome: Result<Result<T, ServiceError>, tokio::time::error::Elapsed>,
) -> Judged<T> {
    // Owned only on failure: a successful call allocates nothing here.
    let server = || server.to_owned();
    let unreachable = matches!(&outcome, Ok(Err(e)) if connect::session_trouble(e).is_some());
    let result = match outcome {
        Ok(Ok(result)) => Ok(result),
        // An answer over the limit, cut off by the transport (see `upstream::oversize`).
        Ok(Err(ServiceError::McpError(e)))
            if let Some((limit, seen)) = super::oversize::is_too_large(e.data.as_ref()) =>
        {
            Err(CallError::TooLarge {
                server: server(),
                size: seen,
                limit,
            })
        }
        Ok(Err(e)) if let Some(limit) = connect::too_large(&e) => Err(CallError::TooLarge {
            server: server(),
            size: limit + 1,
            limit: super::oversize::result_limit(limit),
        }),
        Err(_) => Err(CallError::Timeout {
            server: server(),
            timeout,
        }),
        Ok(Err(ServiceError::McpError(e))) => Err(CallError::Upstream {
            server: server(),
            code: e.code.0,
            message: e.message.to_string(),
        }),
        Ok(Err(ServiceError::TransportClosed)) => Err(CallError::Gone { server: server() }),
        Ok(Err(e)) => {
            log::debug!(
                "[{}] call failed: {}",
                server(),
                super::errors::with_causes(&e.to_string(), &e)
            );
            Err(CallError::Transport {
                server: server(),
                detail: super::errors::phrase(&e),
            })
        }
    };
    let healthy = match &result {
        // The upstream answered; the answer was too large for the gateway.
        Ok(_) | Err(CallError::TooLarge { .. }) => true,
        Err(CallError::Upstream { code, .. }) => is_callers_fault(ErrorCode(*code)),
        Err(_) => false,
    };
    Judged {
        result,
        healthy,
        unreachable,
    }
}

impl Lane {
    pub fn new(
        server: String,
        generation: u64,
        session: &Session,
        timeout: Duration,
        breaker: SharedBreaker,
        reports: Reports,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                server,
                generation,
                peer: session.peer.clone(),
                relays: session.relays.clone(),
                timeout,
                breaker,
                reports,
                closed: session.closed(),
            }),
        }
    }

    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// Calls `tool` under the breaker and the server's deadline. With a relay, the
    /// upstream's progress, logs and requests during the call go to it.
    pub async fn call_tool(
        &self,
        tool: String,
        arguments: Option<JsonObject>,
        relay: Option<Relay>,
    ) -> Result<CallToolResult, CallError> {
        let lane = &self.inner;
        let server = || lane.server.clone();
        let (verdict, moved) = lane.breaker.lock().try_acquire(Instant::now());
        if let Some(transition) = moved {
            lane.reports.moved.do_send(BreakerMoved { transition });
        }
        if let Err(rejected) = verdict {
            return Err(CallError::CircuitOpen {
                server: server(),
                retry_after: rejected.retry_after,
            });
        }
        let mut params = CallToolRequestParams::new(tool);
        if let Some(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        let mut admitted = Admitted {
            breaker: &lane.breaker,
            settled: false,
        };
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(lane.timeout, self.send(params, relay)) => outcome,
            // Its session was closed: say so now rather than wait for rmcp to wind the
            // session down (seconds). That actor and its breaker are gone: nothing to record.
            () = lane.closed.cancelled() => {
                admitted.settled = true;
                return Err(CallError::Gone { server: server() });
            }
        };
        admitted.settled = true;
        let Judged {
            result,
            healthy,
            unreachable,
        } = judge(&lane.server, lane.timeout, outcome);
        let (transition, had_failures) = {
            let mut breaker = lane.breaker.lock();
            let had_failures = breaker.consecutive_failures() > 0;
            let now = Instant::now();
            let transition = if healthy {
                breaker.record_success(now)
            } else {
                breaker.record_failure(now)
            };
            (transition, had_failures)
        };
        // A success on a clean breaker changes nothing the actor shows: no message, so
        // the common call never waits on, or queues work for, the actor's thread.
        if !healthy || had_failures || transition.is_some() {
            lane.reports.finished.do_send(CallFinished {
                error: result.as_ref().err().map(ToString::to_string),
                transition,
                unreachable,
            });
        }
        result
    }

    async fn send(
        &self,
        params: CallToolRequestParams,
        relay: Option<Relay>,
    ) -> Result<CallToolResult, ServiceError> {
        let lane = &self.inner;
        let Some(relay) = relay else {
            return lane.peer.call_tool(params).await;
        };
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        match super::relay::send_relayed(&lane.peer, &lane.relays, request, relay).await? {
            ServerResult::CallToolResult(result) => Ok(result),
            _ => Err(ServiceError::UnexpectedResponse),
        }
    }
}
