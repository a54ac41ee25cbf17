//! The gateway as its users run it: the release or debug binary, spawned, with its log
//! read line by line. Used by the command-line tests and the abuse suite (which reads the
//! process's resident memory).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{TestDb, WAIT};
use omni_bridge::store::DatabaseUrl;

pub const BIN: &str = env!("CARGO_BIN_EXE_omni-bridge");

/// The gateway binary, started and listening. Killed and reaped on drop if a test fails
/// before it exits.
pub struct Gateway {
    child: Option<Child>,
    pub pid: i32,
    pub addr: SocketAddr,
    /// Its stderr (the log), line by line, from after the "listening" line.
    pub log: mpsc::Receiver<String>,
    /// The log lines before the "listening" line.
    pub startup: Vec<String>,
}

impl Gateway {
    /// Spawns `cmd` with a clean `OMNI_*` environment (plus what `cmd` sets) and waits for
    /// the line that names its address.
    pub fn start(cmd: &mut Command) -> Self {
        for var in [
            "OMNI_CONFIG",
            "OMNI_BIND",
            "OMNI_DATABASE_URL",
            "OMNI_DATA_DIR",
            "OMNI_REDIS_URL",
            "OMNI_INSECURE_NO_AUTH",
        ] {
            if !cmd.get_envs().any(|(k, _)| k == var) {
                cmd.env_remove(var);
            }
        }
        let mut child = cmd
            .env("OMNI_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let pid = child.id() as i32;
        let mut gateway = Self {
            child: Some(child),
            pid,
            addr: "0.0.0.0:0".parse().unwrap(),
            log: mpsc::channel().1,
            startup: Vec::new(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        gateway.addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("no 'listening on' line ({e}); log: {seen:#?}"));
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
            seen.push(line);
        };
        gateway.log = rx;
        gateway.startup = seen;
        // The address is logged a moment before the signal handlers are installed; once
        // the gateway answers, they are.
        let status = runtime().block_on(async {
            client()
                .get(format!("{}/readyz", gateway.base()))
                .send()
                .await
                .unwrap()
                .status()
        });
        assert_eq!(status, 200);
        gateway
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends `signal` to the process this test started (never reaped before this).
    pub fn signal(&self, signal: libc::c_int) {
        assert!(self.child.is_some(), "signal after the child was reaped");
        assert_eq!(unsafe { libc::kill(self.pid, signal) }, 0);
    }

    /// Waits for the process to exit, at most `within`; a process still running then is
    /// killed and the test fails.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("not reaped yet");
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(within) {
            Ok(status) => {
                waiter.join().unwrap();
                status.unwrap()
            }
            Err(_) => {
                // Not reaped (the waiter still waits), so the pid is still ours.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                waiter.join().unwrap();
                panic!("the gateway did not exit within {within:?}");
            }
        }
    }

    /// Waits for a log line containing `text`.
    pub fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(line) => seen.push(line),
                Err(e) => panic!("no log line with {text:?} ({e}); seen: {seen:#?}"),
            }
        }
    }

    /// A new connection is refused: nothing listens on the address any more.
    pub fn assert_refused(&self) {
        let err = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .expect_err("the address still accepts connections");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The `--database-url` of a test database (SQLite, or PostgreSQL under
/// OMNI_TEST_DATABASE_URL).
pub fn database_url(db: &TestDb) -> String {
    match &db.url {
        DatabaseUrl::Postgres(url) => url.clone(),
        DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
    }
}

/// A client that keeps no idle connection: an idle keep-alive connection would hold a
/// graceful stop until the server's keep-alive timeout.
pub fn client() -> reqwest::Client {
    omni_bridge::tls::install_crypto_provider();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Resident memory of a process, in KiB, from `/proc`.
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}
