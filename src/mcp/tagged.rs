//! rmcp's in-memory session manager, with the ids of the requests a session sends its
//! client (sampling, elicitation) made unique among instances.
//!
//! When several instances serve one session (`mcp::records`), each runs its own copy of
//! it, and rmcp numbers a session's requests to the client from 0 in each copy: two
//! instances could ask the client two things under one id, and the client's answer,
//! POSTed to whichever instance the balancer picks, would not say which instance asked.
//! So in a cluster each request id leaves as `"<n>@<origin>"` (the origin names this
//! start of this instance), the answer under that id comes back as `n` to the copy that
//! asked, and the bridge sends an answer naming another origin to it (see [`addressee`]).
//! A gateway alone keeps rmcp's plain numbers.

use std::sync::Arc;

use futures_util::Stream;
use rmcp::RoleServer;
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, NumberOrString, ServerJsonRpcMessage, ServerNotification,
};
use rmcp::transport::Transport;
use rmcp::transport::WorkerTransport;
use rmcp::transport::common::server_side_http::ServerSseMessage;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionWorker,
};
use rmcp::transport::streamable_http_server::{RestoreOutcome, SessionId, SessionManager};

/// The session manager `/mcp` runs: rmcp's local one, whose transports tag request ids.
pub struct TaggedSessions {
    pub inner: Arc<LocalSessionManager>,
    /// This start's origin, in a cluster; `None` alone.
    tag: Option<Arc<str>>,
}

impl TaggedSessions {
    pub fn new(inner: Arc<LocalSessionManager>, tag: Option<Arc<str>>) -> Self {
        Self { inner, tag }
    }

    fn wrap(&self, transport: WorkerTransport<LocalSessionWorker>, session: SessionId) -> Tagged {
        Tagged {
            inner: transport,
            tag: self.tag.clone(),
            session,
        }
    }
}

/// The session an `initialize` came in, as its handler finds it among the message's
/// extensions.
#[derive(Clone)]
pub struct SessionOf(pub SessionId);

/// A session's transport that tags the ids of the requests it sends.
pub struct Tagged {
    inner: WorkerTransport<LocalSessionWorker>,
    tag: Option<Arc<str>>,
    session: SessionId,
}

fn tagged(id: &NumberOrString, tag: &str) -> NumberOrString {
    match id {
        NumberOrString::Number(n) => NumberOrString::String(format!("{n}@{tag}").into()),
        other => other.clone(),
    }
}

/// The origin an answer's id names and the number it had there, if it is a tagged id.
pub fn untag(id: &str) -> Option<(i64, &str)> {
    let (n, origin) = id.split_once('@')?;
    Some((n.parse().ok()?, origin))
}

/// The origin a client's message is an answer for, when it answers a tagged request.
pub fn addressee(message: &serde_json::Value) -> Option<&str> {
    if message.get("method").is_some() {
        return None;
    }
    untag(message.get("id")?.as_str()?).map(|(_, origin)| origin)
}

impl Transport<RoleServer> for Tagged {
    type Error = <WorkerTransport<LocalSessionWorker> as Transport<RoleServer>>::Error;

    fn send(
        &mut self,
        mut item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        if let Some(tag) = &self.tag {
            match &mut item {
                ServerJsonRpcMessage::Request(request) => request.id = tagged(&request.id, tag),
                // Withdrawing a request names it as the client knows it.
                ServerJsonRpcMessage::Notification(notification) => {
                    if let ServerNotification::CancelledNotification(cancelled) =
                        &mut notification.notification
                        && let Some(id) = &mut cancelled.params.request_id
                    {
                        *id = tagged(id, tag);
                    }
                }
                _ => {}
            }
        }
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        let mut message = self.inner.receive().await?;
        if let Some(tag) = &self.tag {
            let id = match &mut message {
                ClientJsonRpcMessage::Response(response) => Some(&mut response.id),
                ClientJsonRpcMessage::Error(error) => error.id.as_mut(),
                _ => None,
            };
            if let Some(id) = id
                && let NumberOrString::String(text) = id
                && let Some((n, origin)) = untag(text)
                && origin == &**tag
            {
                *id = NumberOrString::Number(n);
            }
        }
        // The handler learns its session's id from the `initialize` it is handed (a fresh
        // one, or a restore's replay).
        if let ClientJsonRpcMessage::Request(request) = &mut message
            && matches!(request.request, ClientRequest::InitializeRequest(_))
        {
            message.insert_extension(SessionOf(self.session.clone()));
        }
        Some(message)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

impl SessionManager for TaggedSessions {
    type Error = <LocalSessionManager as SessionManager>::Error;
    type Transport = Tagged;

    async fn create_session(&self) -> Result<(SessionId, Tagged), Self::Error> {
        let (id, transport) = self.inner.create_session().await?;
        let transport = self.wrap(transport, id.clone());
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_stream(id, message).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.resume(id, last_event_id).await
    }

    async fn restore_session(&self, id: SessionId) -> Result<RestoreOutcome<Tagged>, Self::Error> {
        Ok(match self.inner.restore_session(id.clone()).await? {
            RestoreOutcome::Restored(transport) => {
                RestoreOutcome::Restored(self.wrap(transport, id))
            }
            RestoreOutcome::AlreadyPresent => RestoreOutcome::AlreadyPresent,
            _ => RestoreOutcome::NotSupported,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tagged_id_names_its_origin_and_number() {
        let id = tagged(&NumberOrString::Number(7), "inst-a-0f0f0f0f");
        let NumberOrString::String(text) = &id else {
            panic!("{id:?}")
        };
        assert_eq!(untag(text), Some((7, "inst-a-0f0f0f0f")));
        assert_eq!(
            addressee(&json!({"jsonrpc": "2.0", "id": &**text, "result": {}})),
            Some("inst-a-0f0f0f0f")
        );
        // A request of the client's, or an id that is not ours, names nobody.
        assert_eq!(
            addressee(&json!({"jsonrpc": "2.0", "id": "1@x", "method": "ping"})),
            None
        );
        for id in [json!(3), json!("abc"), json!("x@y")] {
            assert_eq!(addressee(&json!({"id": id, "result": {}})), None, "{id}");
        }
    }
}
