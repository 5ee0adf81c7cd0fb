//! The `dockns` binary as a user runs it: the demo config, exit codes and one-line errors.

mod common;

use common::*;
use hickory_proto::rr::RecordType;
use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dockns");
const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml");

/// A loopback port free for both UDP and TCP right now.
fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn check_config_accepts_the_demo_and_names_the_bad_key() {
    let out = Command::new(BIN)
        .args(["check-config", DEMO])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("is valid"), "{text}");
    assert!(text.contains("127.0.0.1:5353"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = [\"127.0.0.1\"]\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[server] listen[0]") && err.contains("ADDRESS:PORT"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let out = Command::new(BIN)
        .args(["check-config", "/nonexistent/dockns.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn port_in_use_is_one_clear_line_and_exit_1() {
    let held = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let out = Command::new(BIN)
        .args(["serve", "--config", DEMO, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--upstream", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap_or_default().to_string();
    assert!(
        last.contains(&format!("cannot listen on 127.0.0.1:{port}")) && last.contains("--listen"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_config_serves_and_sigterm_exits_zero() {
    let up = fake_upstream(Behaviour::Silent).await;
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config", DEMO, "--listen", &addr.to_string()])
        .args(["--upstream", &up.addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    // Wait until it answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let q = query_bytes(1, "db", RecordType::A, None);
        if udp_raw(addr, &q, Duration::from_millis(200))
            .await
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "dockns did not come up");
    }
    // Three replicas: three successive queries start at three different addresses.
    let mut firsts = HashSet::new();
    for _ in 0..3 {
        firsts.insert(v4(&ask(addr, "api", RecordType::A).await)[0]);
    }
    assert_eq!(firsts.len(), 3);
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGTERM);
    }
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}
