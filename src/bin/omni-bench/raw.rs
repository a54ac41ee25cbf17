//! A lean keep-alive HTTP/1.1 client for the cached-call rows: one connection per
//! concurrent caller, the request written once in advance, the answer read by its
//! `Content-Length`. A cached call costs the gateway so little that a general client
//! (reqwest: a connection pool, and a task per connection that each request hands off to)
//! spent more CPU per call than the gateway did on the same two cores, so those rows
//! measured the client. wrk, written the same way, gets about the same figures.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One open connection and the bytes read past the last answer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Sends the same POST over idle connections, opening one when none is idle.
#[derive(Clone)]
pub struct RawPost {
    addr: String,
    request: Arc<[u8]>,
    idle: Arc<Mutex<Vec<Conn>>>,
}

impl RawPost {
    pub fn new(addr: &str, path: &str, body: &str) -> Self {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        Self {
            addr: addr.to_owned(),
            request: request.into_bytes().into(),
            idle: Arc::default(),
        }
    }

    /// True when the answer was a 2xx read whole; the connection is kept only then.
    pub async fn send(&self) -> bool {
        let conn = self.idle.lock().expect("idle lock").pop();
        let mut conn = match conn {
            Some(conn) => conn,
            None => match TcpStream::connect(&self.addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    Conn {
                        stream,
                        buf: Vec::with_capacity(4096),
                    }
                }
                Err(_) => return false,
            },
        };
        if conn.stream.write_all(&self.request).await.is_err() {
            return false;
        }
        match read_answer(&mut conn).await {
            Some(status) if (200..300).contains(&status) => {
                self.idle.lock().expect("idle lock").push(conn);
                true
            }
            _ => false,
        }
    }
}

/// Reads one answer with a `Content-Length` body; its status, or None if the connection
/// broke or the answer was not one this client reads.
async fn read_answer(conn: &mut Conn) -> Option<u16> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = response.parse(&conn.buf).ok()? {
            let status = response.code?;
            let length: usize = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())?;
            while conn.buf.len() < head + length {
                read_more(conn).await?;
            }
            conn.buf.drain(..head + length);
            return Some(status);
        }
        read_more(conn).await?;
    }
}

async fn read_more(conn: &mut Conn) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match conn.stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            conn.buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
