//! WebSocket fan-out measurement with a minimal client of our own (the handshake, then
//! unmasked server frames): N idle sessions, then one event at a time, timing how long
//! until the last session has it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Opens a session and returns its stream, past the 101 answer.
async fn open(addr: &str) -> std::io::Result<BufReader<TcpStream>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut reader = BufReader::new(stream);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(reader.read_u8().await?);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other("upgrade refused"));
    }
    Ok(reader)
}

/// Reads one frame's payload (server frames are not masked).
async fn frame(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u8, Vec<u8>)> {
    let b0 = reader.read_u8().await?;
    let b1 = reader.read_u8().await?;
    let len = match b1 & 0x7f {
        126 => u64::from(reader.read_u16().await?),
        127 => reader.read_u64().await?,
        n => u64::from(n),
    };
    let mut payload = vec![0; len as usize];
    reader.read_exact(&mut payload).await?;
    Ok((b0 & 0x0f, payload))
}

pub struct FanOut {
    pub sessions: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub rss_per_session_bytes: f64,
    /// The gateway's resident memory with every session open.
    pub rss_kib: u64,
}

/// Opens `sessions` WebSockets, then triggers `rounds` cache invalidations one at a time
/// and times each from the trigger to its arrival at the last session.
pub async fn measure(
    addr: &str,
    http: &reqwest::Client,
    gateway_pid: u32,
    sessions: usize,
    rounds: usize,
    rss: impl Fn(u32) -> u64,
) -> FanOut {
    let before = rss(gateway_pid);
    let received = Arc::new(AtomicUsize::new(0));
    let all_in = Arc::new(Notify::new());
    let mut tasks = Vec::with_capacity(sessions);
    let opened = Arc::new(AtomicUsize::new(0));
    let all_open = Arc::new(Notify::new());
    for _ in 0..sessions {
        let (addr, received, all_in) = (addr.to_owned(), received.clone(), all_in.clone());
        let (opened, all_open) = (opened.clone(), all_open.clone());
        let mut reader = open(&addr).await.expect("session opens");
        tasks.push(tokio::spawn(async move {
            // initial_status first.
            let _ = frame(&mut reader).await;
            if opened.fetch_add(1, Ordering::SeqCst) + 1 == sessions {
                all_open.notify_one();
            }
            while let Ok((opcode, payload)) = frame(&mut reader).await {
                if opcode == 0x8 {
                    break;
                }
                if payload.windows(17).any(|w| w == b"cache_invalidated")
                    && received.fetch_add(1, Ordering::SeqCst) + 1 == sessions
                {
                    all_in.notify_one();
                }
            }
        }));
    }
    if opened.load(Ordering::SeqCst) < sessions {
        all_open.notified().await;
    }
    // Let the gateway settle before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss(gateway_pid);
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        received.store(0, Ordering::SeqCst);
        let waiter = all_in.notified();
        tokio::pin!(waiter);
        waiter.as_mut().enable();
        let start = Instant::now();
        let resp = http
            .delete(format!("http://{addr}/api/v1/cache"))
            .send()
            .await
            .expect("invalidation");
        assert!(resp.status().is_success());
        tokio::time::timeout(Duration::from_secs(60), waiter)
            .await
            .expect("every session got the event");
        times.push(start.elapsed());
    }
    for task in tasks {
        task.abort();
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    FanOut {
        sessions,
        p50: at(0.5),
        p99: at(0.99),
        rss_per_session_bytes: (after.saturating_sub(before) * 1024) as f64 / sessions as f64,
        rss_kib: after,
    }
}
