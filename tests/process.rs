//! The real binary under signals: SIGHUP reloads the config with no dropped query under load
//! (a bad config is rejected and the old one kept), SIGTERM drains TCP and exits 0, and a root
//! start with `[server] user = "nobody"` runs as nobody after binding.

mod relsupport;

use relsupport::*;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A free loopback port for both UDP and TCP (probed, then released).
fn free_port() -> u16 {
    for _ in 0..50 {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

fn config(port: u16, upstream: SocketAddr, extra_server: &str, extra_container: bool) -> String {
    let mut t = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nworkers = 1\n{extra_server}\n[upstream]\nservers = [\"{upstream}\"]\ntimeout_ms = 2000\nbudget_ms = 2000\n{NETWORKS}"
    );
    if extra_container {
        t.push_str("\n[[network]]\nname = \"churn\"\n[[network.container]]\nname = \"extra\"\nipv4 = [\"10.77.0.5\"]\n");
    }
    t
}

struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Proc {
    fn start(file: &Path, port: u16) -> Proc {
        let child = Command::new(env!("CARGO_BIN_EXE_dockns"))
            .args(["serve", "--config"])
            .arg(file)
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dockns");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let p = Proc { child, addr };
        assert!(
            wait_until(Duration::from_secs(20), || udp_ask(
                addr,
                &query(1, "db", 1, false),
                Duration::from_millis(300)
            )
            .is_some()),
            "dockns came up"
        );
        p
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill with our own child's pid.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) },
            0
        );
    }

    fn wait_exit(&mut self, wait: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let t = Instant::now();
        while t.elapsed() < wait {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some((st, t.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &PathBuf, text: &str) {
    // Write then rename, so a reload never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn sighup_reloads_under_load_without_dropping_a_query() {
    let up = FakeUpstream::start(Behavior::Answer);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dockns.toml");
    let port = free_port();
    write(&file, &config(port, up.addr, "", false));
    let p = Proc::start(&file, port);
    let addr = p.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for worker in 0..2u16 {
        let (stop, sent, lost, bad) = (stop.clone(), sent.clone(), lost.clone(), bad.clone());
        load.push(std::thread::spawn(move || {
            let sock = udp_client("127.0.0.1");
            let mut i = 0u16;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(1);
                let (name, expect_answer) = match i % 3 {
                    0 => ("db", true),
                    1 => ("api", true),
                    _ => ("fwd.example", true),
                };
                let id = worker.wrapping_mul(30000).wrapping_add(i);
                sent.fetch_add(1, Ordering::Relaxed);
                // One send, no retry: a reload must not lose a single query.
                match udp_exchange(
                    &sock,
                    addr,
                    &query(id, name, 1, false),
                    Duration::from_secs(4),
                ) {
                    None => {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(r) if expect_answer && (rcode(&r) != 0 || ancount(&r) == 0) => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {}
                }
            }
        }));
    }
    {
        // TCP load on one persistent connection.
        let (stop, sent, lost) = (stop.clone(), sent.clone(), lost.clone());
        load.push(std::thread::spawn(move || {
            let mut c = tcp_connect(addr);
            let mut i = 0u16;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(1);
                sent.fetch_add(1, Ordering::Relaxed);
                if tcp_send(&mut c, &query(i, "postgres", 1, false)).is_err()
                    || tcp_recv(&mut c).map(|r| rcode(&r)).ok() != Some(0)
                {
                    lost.fetch_add(1, Ordering::Relaxed);
                    c = tcp_connect(addr);
                }
            }
        }));
    }

    let extra_q = query(77, "extra.churn", 1, false);
    let has_extra = || {
        // Absent, the name is forwarded and the fake upstream answers 192.0.2.1.
        udp_ask(addr, &extra_q, WAIT).is_some_and(|r| r.ends_with(&[10, 77, 0, 5]))
    };
    for round in 0..6 {
        let add = round % 2 == 0;
        write(&file, &config(port, up.addr, "", add));
        p.signal(libc::SIGHUP);
        assert!(
            wait_until(Duration::from_secs(10), || has_extra() == add),
            "round {round}: reload applied (extra present = {add})"
        );
    }
    // A bad config is rejected; the old tables stay (extra is absent after 6 rounds).
    write(&file, "[server]\nlisten = [\"127.0.0.1:99999\"]\n");
    p.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!has_extra());
    assert_eq!(
        udp_ask(addr, &query(5, "db", 1, false), WAIT).map(|r| rcode(&r)),
        Some(0),
        "still serving after a bad reload"
    );
    // And a good one after it works again.
    write(&file, &config(port, up.addr, "", true));
    p.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), has_extra),
        "good reload after a bad one"
    );

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let (sent, lost, bad) = (
        sent.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
    );
    eprintln!("reload under load: {sent} queries, {lost} lost, {bad} wrong");
    assert!(sent > 100, "the load ran: {sent}");
    assert_eq!((lost, bad), (0, 0), "no query lost or wrong across reloads");
}

#[test]
fn sigterm_drains_tcp_and_exits_zero() {
    // The upstream answers after 400 ms: a forwarded TCP query is in flight at SIGTERM.
    let up = FakeUpstream::start(Behavior::Late(400));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dockns.toml");
    let port = free_port();
    write(&file, &config(port, up.addr, "", false));
    let mut p = Proc::start(&file, port);
    let mut idle = tcp_connect(p.addr);
    let mut busy = tcp_connect(p.addr);
    tcp_send(&mut busy, &query(1, "slow.example", 1, false)).unwrap();
    assert!(wait_until(WAIT, || up.count() > 0), "forward in flight");
    p.signal(libc::SIGTERM);
    // The in-flight answer is delivered before the connection closes.
    let r = tcp_recv(&mut busy).expect("in-flight answer delivered during the drain");
    assert_eq!((rcode(&r), ancount(&r)), (0, 1));
    let (st, took) = p.wait_exit(Duration::from_secs(10)).expect("dockns exits");
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(st.success(), "exit status {st:?}");
    // Shutdown is bounded at 2 s; allow slack for a loaded machine.
    assert!(took < Duration::from_secs(4), "exit took {took:?}");
    // The idle connection was closed (EOF or reset), not left hanging.
    let mut b = [0u8; 1];
    use std::io::Read;
    assert!(matches!(idle.read(&mut b), Ok(0) | Err(_)));
}

#[test]
fn sigterm_is_bounded_by_a_dead_upstream() {
    // Forwards that never finish do not hold the exit beyond the drain bound.
    let up = FakeUpstream::start(Behavior::Dead);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dockns.toml");
    let port = free_port();
    write(&file, &config(port, up.addr, "", false));
    let mut p = Proc::start(&file, port);
    let mut conns: Vec<_> = (0..3).map(|_| tcp_connect(p.addr)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        tcp_send(c, &query(i as u16, &format!("hang{i}.example"), 1, false)).unwrap();
    }
    assert!(wait_until(WAIT, || up.count() >= 3));
    p.signal(libc::SIGTERM);
    let (st, took) = p.wait_exit(Duration::from_secs(10)).expect("dockns exits");
    eprintln!("SIGTERM with hung forwards to exit: {took:?}");
    assert!(st.success());
    assert!(took < Duration::from_secs(4), "exit took {took:?}");
}

#[test]
fn root_start_drops_to_the_configured_user() {
    if !dockns::privileges::is_root() {
        eprintln!("SKIPPED root_start_drops_to_the_configured_user: needs root to test setuid");
        return;
    }
    let nobody = dockns::privileges::lookup("nobody").expect("a nobody user");
    let up = FakeUpstream::start(Behavior::Answer);
    let dir = tempfile::tempdir().unwrap();
    // nobody must be able to read the file on SIGHUP.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let file = dir.path().join("dockns.toml");
    let port = free_port();
    write(&file, &config(port, up.addr, "user = \"nobody\"", false));
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let p = Proc::start(&file, port);
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let gid_line = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
    let uids: Vec<u32> = uid_line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let gids: Vec<u32> = gid_line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(uids, vec![nobody.uid; 4], "real, effective, saved, fs uid");
    assert_eq!(gids, vec![nobody.gid; 4], "real, effective, saved, fs gid");
    // Still answering, and forwarding, as nobody.
    let r = udp_ask(p.addr, &query(3, "db", 1, false), WAIT).unwrap();
    assert_eq!(rcode(&r), 0);
    let r = udp_ask(p.addr, &query(4, "up.example", 1, false), WAIT).unwrap();
    assert_eq!((rcode(&r), ancount(&r)), (0, 1));
}

#[test]
fn unknown_user_is_a_startup_error() {
    if !dockns::privileges::is_root() {
        eprintln!("SKIPPED unknown_user_is_a_startup_error: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dockns.toml");
    let port = free_port();
    write(
        &file,
        &config(
            port,
            "127.0.0.1:9".parse().unwrap(),
            "user = \"no-such-user-dockns\"",
            false,
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_dockns"))
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such user"), "{err}");
}
