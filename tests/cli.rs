//! The `dockns` binary as a user runs it: the demo config, exit codes and one-line errors.

mod kit;

use hickory_proto::rr::RecordType;
use kit::aio::*;
use std::collections::HashSet;
use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_dockns");
const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml");

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
    let up = fake_upstream(Behavior::Dead).await;
    // dockns binds 127.0.0.1 port 0 itself and logs the port (no probed port to race for).
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config", DEMO, "--listen", "127.0.0.1:0"])
        .args(["--upstream", &up.addr.to_string()]);
    let mut child = kit::process::Dockns::spawn(cmd);
    let addr = child.addr;
    // Three replicas: three successive queries start at three different addresses.
    let mut firsts = HashSet::new();
    for _ in 0..3 {
        firsts.insert(v4(&ask(addr, "api", RecordType::A).await)[0]);
    }
    assert_eq!(firsts.len(), 3);
    child.signal(libc::SIGTERM);
    let (status, _) = child
        .wait_exit(Duration::from_secs(5))
        .expect("exits within 5 s of SIGTERM");
    assert!(status.success(), "{status:?}");
}
