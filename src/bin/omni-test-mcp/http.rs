//! HTTP serving: Streamable HTTP on `/mcp` through rmcp, and the legacy HTTP+SSE protocol
//! (2024-11-05) on `/sse` + `/messages`, which rmcp no longer ships.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rmcp::ServiceExt;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::sync::mpsc;

use crate::tools::{Shared, TestServer};

type Body = BoxBody<Bytes, Infallible>;
type Sessions = Arc<Mutex<HashMap<String, mpsc::Sender<ClientJsonRpcMessage>>>>;

type Mcp = StreamableHttpService<TestServer, LocalSessionManager>;

fn mcp_service(shared: Arc<Shared>) -> Mcp {
    StreamableHttpService::new(
        move || Ok(TestServer::new(shared.clone())),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    )
}

/// `/json/mcp`: the same tools, served without sessions and answered as plain JSON
/// bodies where rmcp can, as many servers are (a large result is then one JSON body, not
/// an SSE event).
fn json_service(shared: Arc<Shared>) -> Mcp {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true);
    StreamableHttpService::new(
        move || Ok(TestServer::new(shared.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

pub async fn serve(
    addr: &str,
    shared: Arc<Shared>,
    endpoints: Vec<Arc<Shared>>,
    required_header: Option<(String, String)>,
) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot bind {addr}: {e}"));
    let local = listener.local_addr().expect("bound address");
    // Tests read this line to learn the port.
    println!("LISTENING {local}");
    eprintln!("omni-test-mcp: serving http://{local}/mcp and http://{local}/sse");

    let mcp = mcp_service(shared.clone());
    let json = json_service(shared.clone());
    // /e/{n}/mcp: one service, and so one session table, per endpoint.
    let endpoints: Arc<Vec<Mcp>> = Arc::new(endpoints.into_iter().map(mcp_service).collect());
    let sessions: Sessions = Arc::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Small SSE writes on a kept-alive connection would otherwise wait for the
        // client's delayed ACK (40 ms) under Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let (mcp, shared, sessions) = (mcp.clone(), shared.clone(), sessions.clone());
        let (required, endpoints, json) =
            (required_header.clone(), endpoints.clone(), json.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (mcp, shared, sessions) = (mcp.clone(), shared.clone(), sessions.clone());
                let (endpoints, json) = (endpoints.clone(), json.clone());
                let required = required.clone();
                async move {
                    if let Some((name, value)) = &required {
                        let given = req
                            .headers()
                            .get(name.as_str())
                            .and_then(|v| v.to_str().ok());
                        if given != Some(value.as_str()) {
                            return Ok(plain(StatusCode::UNAUTHORIZED, "missing credentials"));
                        }
                    }
                    let path = req.uri().path().to_owned();
                    let response = match (req.method(), path.as_str()) {
                        (_, "/mcp") => mcp.handle(req).await,
                        (_, "/json/mcp") => json.handle(req).await,
                        (_, p) if p.starts_with("/e/") => match endpoint_of(p, &endpoints) {
                            Some(endpoint) => endpoint.handle(req).await,
                            None => plain(StatusCode::NOT_FOUND, "no such endpoint"),
                        },
                        (&Method::GET, "/sse") => open_sse(shared, sessions),
                        (&Method::POST, "/messages") => post_message(req, sessions).await,
                        _ => plain(StatusCode::NOT_FOUND, "not found"),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The service of `/e/{n}/mcp`.
fn endpoint_of<'a>(path: &str, endpoints: &'a [Mcp]) -> Option<&'a Mcp> {
    let n = path.strip_prefix("/e/")?.strip_suffix("/mcp")?;
    endpoints.get(n.parse::<usize>().ok()?)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(text.as_bytes())).boxed())
        .expect("static response")
}

fn sse_frame(event: &str, data: &str) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(Bytes::from(format!(
        "event: {event}\ndata: {data}\n\n"
    ))))
}

/// A rmcp transport over two channels: the SSE stream out, the POSTed messages in.
struct ChannelTransport {
    out: mpsc::Sender<ServerJsonRpcMessage>,
    inbox: mpsc::Receiver<ClientJsonRpcMessage>,
}

impl rmcp::transport::Transport<rmcp::RoleServer> for ChannelTransport {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let out = self.out.clone();
        async move { out.send(item).await.map_err(std::io::Error::other) }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        self.inbox.recv().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.inbox.close();
        Ok(())
    }
}

fn open_sse(shared: Arc<Shared>, sessions: Sessions) -> Response<Body> {
    let id = format!("{:032x}", rand::random::<u128>());
    let (in_tx, in_rx) = mpsc::channel::<ClientJsonRpcMessage>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<ServerJsonRpcMessage>(64);
    sessions.lock().unwrap().insert(id.clone(), in_tx);
    let transport = ChannelTransport {
        out: out_tx,
        inbox: in_rx,
    };
    let session_id = id.clone();
    let server_sessions = sessions.clone();
    tokio::spawn(async move {
        if let Ok(running) = TestServer::new(shared).serve(transport).await {
            let _ = running.waiting().await;
        }
        server_sessions.lock().unwrap().remove(&session_id);
    });
    let (frame_tx, frame_rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    tokio::spawn(async move {
        let endpoint = format!("/messages?sessionId={id}");
        if frame_tx
            .send(sse_frame("endpoint", &endpoint))
            .await
            .is_err()
        {
            return;
        }
        while let Some(message) = out_rx.recv().await {
            let data = serde_json::to_string(&message).expect("messages serialize");
            if frame_tx.send(sse_frame("message", &data)).await.is_err() {
                break;
            }
        }
        // The client went away: end the session.
        sessions.lock().unwrap().remove(&id);
    });
    let body = StreamBody::new(tokio_stream_from(frame_rx)).boxed();
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .expect("sse response")
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn post_message(req: Request<Incoming>, sessions: Sessions) -> Response<Body> {
    let session = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("sessionId=")))
        .map(str::to_owned);
    let Some(session) = session else {
        return plain(StatusCode::BAD_REQUEST, "sessionId missing");
    };
    let sender = sessions.lock().unwrap().get(&session).cloned();
    let Some(sender) = sender else {
        return plain(StatusCode::NOT_FOUND, "unknown session");
    };
    let Ok(body) = req.into_body().collect().await else {
        return plain(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let Ok(message) = serde_json::from_slice::<ClientJsonRpcMessage>(&body.to_bytes()) else {
        return plain(StatusCode::BAD_REQUEST, "not a JSON-RPC message");
    };
    if sender.send(message).await.is_err() {
        return plain(StatusCode::NOT_FOUND, "session ended");
    }
    plain(StatusCode::ACCEPTED, "accepted")
}
