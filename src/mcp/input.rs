//! 2026-07-28 input requests: calls waiting for their client's answers.
//!
//! In MCP 2026-07-28 a server may not send its client requests. When a tool needs the
//! client's model (sampling) or its user (elicitation), the call answers with an
//! `input_required` result listing what it needs, keyed, and an opaque `requestState`;
//! the client calls again with the same tool and arguments plus `inputResponses` and
//! that state. Our upstreams speak the handshake revisions, where they send those
//! requests during the call. So the gateway keeps such a call running, parked here under
//! a fresh random token (the `requestState`: 128 bits, single use, bound to the caller's
//! key and the tool, gone after [`TTL`]), answers the client `input_required`, and when
//! the client's retry brings the answers, hands each to the upstream request waiting for
//! it and goes on waiting for the result, or for the next requests (another round).
//!
//! Parked calls live in this instance's memory: a retry that reaches another instance
//! finds no state and is refused (`-32602`), as is a forged or reused state. The
//! upstream call's own deadline keeps running while the user answers.

// Sampling is deprecated in 2026-07-28 itself; the clients that still offer it are served.
#![allow(deprecated)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmcp::ErrorData;
use rmcp::model::{
    CreateMessageResult, ElicitResult, InputRequest, InputRequests, InputResponses, Request,
};
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDropHandle;

use crate::call_failure::CallFailure;
use crate::gateway::CallOutcome;
use crate::upstream::{RelayItem, Relayed};

/// The `_meta` key under which an upstream may name the key its request is asked under
/// (`"user_name"`), so that a client can recognise it; otherwise the gateway names it.
pub use crate::upstream::INPUT_KEY_META as KEY_META;

/// Whether `key` may name an input request: 1 to 64 of `[A-Za-z0-9_.-]`.
pub fn is_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// How long a parked call waits for its client's retry.
pub const TTL: Duration = Duration::from_secs(600);

/// Parked calls one instance holds at most; past it a call needing input is refused.
pub const MAX_PARKED: usize = 10_000;

/// Parked calls of one key (or of the open gateway's anonymous callers) at most.
pub const MAX_PARKED_PER_KEY: usize = 100;

/// How a request that could wait for input ended.
pub enum Finished {
    Call(Result<CallOutcome, CallFailure>),
    Prompt(Result<crate::upstream::Forwarded, crate::upstream::CallError>),
}

/// A request in flight whose messages are read by whoever drives it.
pub struct Running {
    /// Aborts the request when dropped (the client went away, or it expired parked).
    pub outcome: AbortOnDropHandle<Finished>,
    pub relayed: Relayed,
    /// Its relay's waiting flag (see `upstream::relay::Relay`): set while parked.
    pub waiting: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Where the client's answer to one input request goes.
pub enum Reply {
    Sample(oneshot::Sender<Result<CreateMessageResult, ErrorData>>),
    Elicit(oneshot::Sender<Result<ElicitResult, ErrorData>>),
}

impl Reply {
    /// Passes the client's answer on, if it has the right shape.
    pub fn answer(self, value: serde_json::Value) -> Result<(), (Self, String)> {
        match self {
            Reply::Sample(tx) => match serde_json::from_value::<CreateMessageResult>(value) {
                Ok(result) => {
                    let _ = tx.send(Ok(result));
                    Ok(())
                }
                Err(e) => Err((Reply::Sample(tx), format!("not a sampling result: {e}"))),
            },
            Reply::Elicit(tx) => match serde_json::from_value::<ElicitResult>(value) {
                Ok(result) => {
                    let _ = tx.send(Ok(result));
                    Ok(())
                }
                Err(e) => Err((Reply::Elicit(tx), format!("not an elicitation result: {e}"))),
            },
        }
    }
}

/// An upstream request turned into an input request, with where its answer goes.
pub fn ask(item: RelayItem) -> Result<(InputRequest, Reply), Box<RelayItem>> {
    match item {
        RelayItem::Sample(params, tx) => Ok((
            InputRequest::CreateMessage(Request::new(params)),
            Reply::Sample(tx),
        )),
        RelayItem::Elicit(params, tx) => Ok((
            InputRequest::Elicitation(Request::new(params)),
            Reply::Elicit(tx),
        )),
        other => Err(Box::new(other)),
    }
}

/// A call waiting for its client's answers.
pub struct Parked {
    pub running: Running,
    /// What is still unanswered, by key.
    pub asks: BTreeMap<String, (InputRequest, Reply)>,
    /// The key and tool the call belongs to; a retry must bring the same.
    pub caller: Option<String>,
    pub tool: String,
    expires: Instant,
}

impl Parked {
    pub fn new(
        running: Running,
        asks: BTreeMap<String, (InputRequest, Reply)>,
        caller: Option<String>,
        tool: String,
    ) -> Self {
        Self {
            running,
            asks,
            caller,
            tool,
            expires: Instant::now() + TTL,
        }
    }

    /// The requests the client is to answer.
    pub fn requests(&self) -> InputRequests {
        self.asks
            .iter()
            .map(|(key, (request, _))| (key.clone(), request.clone()))
            .collect()
    }

    /// Hands the client's answers on; answers what could not be used. The keys answered
    /// leave `asks`; unknown keys are ignored, as the revision asks.
    pub fn answer(&mut self, mut responses: InputResponses) -> Result<(), ErrorData> {
        let keys: Vec<String> = self.asks.keys().cloned().collect();
        for key in keys {
            let Some(value) = responses.remove(&key) else {
                continue;
            };
            let (request, reply) = self.asks.remove(&key).expect("listed above");
            if let Err((reply, why)) = reply.answer(value) {
                self.asks.insert(key.clone(), (request, reply));
                return Err(ErrorData::invalid_params(
                    format!("inputResponses['{key}']: {why}"),
                    None,
                ));
            }
        }
        Ok(())
    }
}

/// The parked calls of this instance.
#[derive(Default)]
pub struct ParkedCalls {
    calls: Mutex<HashMap<String, Parked>>,
}

impl ParkedCalls {
    /// Parks `call`; answers its token, or why it cannot wait: too many calls wait
    /// already, or too many of its key's (one key may not take every place).
    pub fn park(&self, call: Parked) -> Result<String, String> {
        let mut calls = self.calls.lock().expect("parked lock");
        let now = Instant::now();
        calls.retain(|_, parked| parked.expires > now);
        if calls.len() >= MAX_PARKED {
            return Err(format!(
                "{MAX_PARKED} calls already wait for their clients' input, the most this \
                 gateway holds"
            ));
        }
        let same_key = calls.values().filter(|p| p.caller == call.caller).count();
        if same_key >= MAX_PARKED_PER_KEY {
            return Err(format!(
                "{MAX_PARKED_PER_KEY} calls of this key already wait for input, the most one \
                 key may have"
            ));
        }
        let token = format!("{:032x}", rand::random::<u128>());
        calls.insert(token.clone(), call);
        Ok(token)
    }

    /// Takes the call parked under `token`, if it is `caller`'s call of `tool` and has
    /// not expired. A token is good once.
    pub fn take(&self, token: &str, caller: Option<&str>, tool: &str) -> Option<Parked> {
        let mut calls = self.calls.lock().expect("parked lock");
        let parked = calls.get(token)?;
        if parked.caller.as_deref() != caller || parked.tool != tool {
            return None;
        }
        let parked = calls.remove(token)?;
        (parked.expires > Instant::now()).then_some(parked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(key: &str) -> Parked {
        let (_tx, relayed) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(std::future::pending::<Finished>());
        let running = Running {
            outcome: AbortOnDropHandle::new(task),
            relayed,
            waiting: Default::default(),
        };
        let tool = "tools/call t".to_owned();
        Parked::new(running, BTreeMap::new(), Some(key.to_owned()), tool)
    }

    #[tokio::test]
    async fn one_key_cannot_take_every_place_and_a_token_is_good_once_for_its_owner() {
        let calls = ParkedCalls::default();
        for _ in 0..MAX_PARKED_PER_KEY {
            assert!(calls.park(parked("a")).is_ok());
        }
        let refused = calls.park(parked("a")).unwrap_err();
        assert!(refused.contains("this key"), "{refused}");
        assert!(calls.park(parked("b")).is_ok());
        let token = calls.park(parked("c")).unwrap();
        assert!(calls.take(&token, Some("b"), "tools/call t").is_none());
        assert!(calls.take(&token, Some("c"), "tools/call u").is_none());
        assert!(calls.take(&token, Some("c"), "tools/call t").is_some());
        assert!(calls.take(&token, Some("c"), "tools/call t").is_none());
    }
}
