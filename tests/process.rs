//! The real binary under signals: SIGHUP reloads the config with no dropped query under load
//! (a bad config is rejected and the old one kept), SIGTERM drains TCP and exits 0, and a root
//! start with `[server] user = "nobody"` runs as nobody after binding.

mod kit;

use kit::process::Dockns;
use kit::*;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// dockns listens on 127.0.0.1 port 0 and reports the port it bound (see `kit::process`).
fn config(upstream: SocketAddr, extra_server: &str, extra_container: bool) -> String {
    let mut t = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n{extra_server}\n[upstream]\nservers = [\"{upstream}\"]\ntimeout_ms = 2000\nbudget_ms = 2000\n{NETWORKS}"
    );
    if extra_container {
        t.push_str("\n[[network]]\nname = \"churn\"\n[[network.container]]\nname = \"extra\"\nipv4 = [\"10.77.0.5\"]\n");
    }
    t
}

/// Starts dockns from `file` and waits until it answers `db`.
fn start(file: &Path) -> Dockns {
    let p = Dockns::serve(file, &[]);
    let addr = p.addr;
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

/// dockns's log line for a rejected reload.
fn is_reload_error(line: &serde_json::Value) -> bool {
    line["level"] == "ERROR"
        && line["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("reload"))
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
    write(&file, &config(up.addr, "", false));
    let p = start(&file);
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
        write(&file, &config(up.addr, "", add));
        p.signal(libc::SIGHUP);
        assert!(
            wait_until(Duration::from_secs(10), || has_extra() == add),
            "round {round}: reload applied (extra present = {add})"
        );
    }
    // A bad config is rejected; the old tables stay (extra is absent after 6 rounds).
    write(&file, "[server]\nlisten = [\"127.0.0.1:99999\"]\n");
    let errors_before = p.log_count(is_reload_error);
    p.signal(libc::SIGHUP);
    // The rejection is logged once the reload was tried: only then is "nothing changed" news.
    assert!(
        wait_until(Duration::from_secs(10), || p.log_count(is_reload_error)
            > errors_before),
        "the bad reload was rejected (an ERROR line naming the reload)"
    );
    assert!(!has_extra());
    assert_eq!(
        udp_ask(addr, &query(5, "db", 1, false), WAIT).map(|r| rcode(&r)),
        Some(0),
        "still serving after a bad reload"
    );
    // And a good one after it works again.
    write(&file, &config(up.addr, "", true));
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

/// `dockns serve` re-executes itself once with glibc's malloc tunables (src/main.rs
/// `tune_heap`): it must come back under its own name (operators find it with `pidof dockns`,
/// `pkill dockns` and process monitors, which read /proc/PID/comm), with the same PID, and with
/// the tunables in force; an operator's own `glibc.malloc.*` tunables are left as they are.
#[test]
fn heap_tuning_keeps_the_process_name_and_pid() {
    let up = FakeUpstream::start(Behavior::Answer);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dockns.toml");
    write(&file, &config(up.addr, "", false));
    let environ = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', "\n"))
            .unwrap_or_default()
    };
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let p = start(&file);
    let pid = p.child.id();
    assert_eq!(
        comm(pid).trim(),
        "dockns",
        "the process's name after the re-exec"
    );
    let env = environ(pid);
    assert!(
        env.lines()
            .any(|l| l.starts_with("GLIBC_TUNABLES=") && l.contains("glibc.malloc.arena_max=1")),
        "tuned heap in the environment of the process the child became:\n{env}"
    );
    drop(p);
    let mut cmd = Command::new(kit::process::BIN);
    cmd.args(["serve", "--config"])
        .arg(&file)
        .env("GLIBC_TUNABLES", "glibc.malloc.tcache_count=7");
    let own = Dockns::spawn(cmd);
    let env = environ(own.child.id());
    assert!(
        env.lines()
            .any(|l| l == "GLIBC_TUNABLES=glibc.malloc.tcache_count=7"),
        "the operator's tunables kept as given:\n{env}"
    );
    assert_eq!(comm(own.child.id()).trim(), "dockns");
}

#[test]
fn sigterm_drains_tcp_and_exits_zero() {
    // The upstream answers after 400 ms: a forwarded TCP query is in flight at SIGTERM.
    let up = FakeUpstream::start(Behavior::Late(400));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dockns.toml");
    write(&file, &config(up.addr, "", false));
    let mut p = start(&file);
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
    write(&file, &config(up.addr, "", false));
    let mut p = start(&file);
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
    if !require_root("setuid to the configured user") {
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
    write(&file, &config(up.addr, "user = \"nobody\"", false));
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let p = start(&file);
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
    if !require_root("looking up the configured user happens only as root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dockns.toml");
    write(
        &file,
        &config(
            "127.0.0.1:9".parse().unwrap(),
            "user = \"no-such-user-dockns\"",
            false,
        ),
    );
    let out = Command::new(kit::process::BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such user"), "{err}");
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The resident-memory bound stated in docs/reliability.md for a forward flood.
const FLOOD_RSS_BOUND_KB: u64 = 256 * 1024;

#[test]
fn thirty_second_flood_of_unique_forwarded_names_stays_bounded() {
    // A slow upstream (300 ms per answer): every forward slot fills and stays full.
    let up = FakeUpstream::start(Behavior::Late(300));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dockns.toml");
    write(&file, &config(up.addr, "", false));
    let p = start(&file);
    let pid = p.child.id();
    let addr = p.addr;
    let rss_start = rss_kb(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for t in 0..2u32 {
        let (stop, sent) = (stop.clone(), sent.clone());
        flood.push(std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 1500];
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let q = query(n as u16, &format!("f{t}-{n}.flood.example"), 1, false);
                let _ = sock.send_to(&q, addr);
                sent.fetch_add(1, Ordering::Relaxed);
                while sock.recv_from(&mut buf).is_ok() {}
                // About 8k queries/s per thread: a flood far beyond the forward capacity (1024 in
                // flight, 300 ms each), yet within what one UDP worker can read on a loaded
                // 2-core machine, so lost local queries would be dockns' fault, not the kernel's.
                if n % 8 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }));
    }
    let start = Instant::now();
    let mut rss_max = rss_start;
    let (mut local_ok, mut local_failed) = (0u32, 0u32);
    let quiet = udp_client("127.0.0.1");
    while start.elapsed() < Duration::from_secs(30) {
        let q = query(local_ok as u16, "db", 1, false);
        // Local names answered throughout (resends allowed, as a stub resolver does).
        let r = (0..3).find_map(|_| udp_exchange(&quiet, addr, &q, Duration::from_secs(1)));
        match r {
            Some(r) if rcode(&r) == 0 && ancount(&r) == 1 => local_ok += 1,
            _ => local_failed += 1,
        }
        rss_max = rss_max.max(rss_kb(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.join().unwrap();
    }
    let rss_end = rss_kb(pid);
    eprintln!(
        "flood: {} unique forwarded queries in 30 s; RSS start {rss_start} kB, max {rss_max} kB, end {rss_end} kB; local {local_ok} ok, {local_failed} failed",
        sent.load(Ordering::Relaxed)
    );
    assert!(sent.load(Ordering::Relaxed) > 10_000, "the flood ran");
    assert_eq!(local_failed, 0, "local names answered throughout the flood");
    assert!(
        rss_max < FLOOD_RSS_BOUND_KB,
        "RSS {rss_max} kB over the bound"
    );
}
