//! The binary itself: configuration errors, start on the embedded default, graceful stop.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_omni-bridge");

/// Kills the child if the test fails before it is reaped, so no process outlives a test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_bad_config_file_is_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("omni.toml");
    std::fs::write(
        &path,
        "[[servers]]\nname = \"web\"\ntransport = \"sse\"\nurl = \"gopher://x\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("servers[web].url"), "{stderr}");
}

#[test]
fn a_bad_environment_value_names_its_key() {
    let out = Command::new(BIN)
        .env("OMNI_BIND", "everywhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("bind"), "{stderr}");
}

/// Starts with only a data directory and a free port, answers, and stops cleanly on
/// SIGTERM with exit code 0.
#[test]
fn starts_on_sqlite_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    omni_bridge::tls::install_crypto_provider();
    let mut child = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("OMNI_LOG", "info")
        .env_remove("OMNI_DATABASE_URL")
        .env_remove("OMNI_CONFIG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs its address");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::get(format!("http://{addr}/readyz"))
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    assert!(dir.path().join("omni-bridge.db").exists());

    let kill = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = child.0.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("omni-bridge stopped")),
        "{rest:?}"
    );
}
