//! Soak driver (run by `scripts/soak.sh`): starts the real dockns binary on a free loopback
//! port with a fake upstream on loopback, drives mixed load (UDP local and forwarded names, TCP
//! on a persistent connection) while rewriting the static config and sending SIGHUP every few
//! seconds, then SIGTERMs it. Prints queries, errors, timeouts and the server's RSS at start and
//! end. Bounded in time; sends traffic only to 127.0.0.1. Exit status 1 on any error or timeout.
//!
//! Usage: soak --bin PATH [--secs N]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counters {
    queries: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    reloads: AtomicU64,
}

fn name_wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&name_wire(name));
    p.extend_from_slice(&[0, 1, 0, 1]);
    p
}

/// A fake upstream: answers every A question with 192.0.2.1 (UDP and TCP).
fn fake_upstream(stop: Arc<AtomicBool>) -> SocketAddr {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind fake upstream");
    let addr = udp.local_addr().expect("addr");
    let tcp = TcpListener::bind(addr).expect("bind fake upstream tcp");
    udp.set_read_timeout(Some(Duration::from_millis(100))).ok();
    fn answer(q: &[u8]) -> Option<Vec<u8>> {
        let mut end = 12;
        loop {
            let l = usize::from(*q.get(end)?);
            end += 1 + l;
            if l == 0 {
                break;
            }
        }
        let qend = end + 4;
        let mut r = q.get(..qend)?.to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
        r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 1]);
        Some(r)
    }
    let s2 = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !s2.load(Ordering::Relaxed) {
            if let Ok((n, src)) = udp.recv_from(&mut buf) {
                if let Some(r) = answer(&buf[..n]) {
                    let _ = udp.send_to(&r, src);
                }
            }
        }
    });
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut l = [0u8; 2];
                while c.read_exact(&mut l).is_ok() {
                    let mut m = vec![0u8; usize::from(u16::from_be_bytes(l))];
                    if c.read_exact(&mut m).is_err() {
                        return;
                    }
                    if let Some(r) = answer(&m) {
                        let mut f = (r.len() as u16).to_be_bytes().to_vec();
                        f.extend_from_slice(&r);
                        if c.write_all(&f).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn config(port: u16, upstream: SocketAddr, generation: u64) -> String {
    let mut t = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nworkers = 2\n[upstream]\nservers = [\"{upstream}\"]\n\n[[network]]\nname = \"soak\"\nsubnet = \"10.50.0.0/16\"\n"
    );
    for i in 0..50 {
        t.push_str(&format!(
            "[[network.container]]\nname = \"svc{i}\"\nipv4 = [\"10.50.0.{}\"]\naliases = [\"pool\"]\n",
            i + 10
        ));
    }
    // Churn: a changing set of extra containers.
    for j in 0..(generation % 20) {
        t.push_str(&format!(
            "[[network.container]]\nname = \"churn{j}\"\nipv4 = [\"10.50.1.{}\"]\n",
            j + 10
        ));
    }
    t
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

fn free_port() -> u16 {
    for _ in 0..50 {
        let Ok(u) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(a) = u.local_addr() else { continue };
        if TcpListener::bind(("127.0.0.1", a.port())).is_ok() {
            return a.port();
        }
    }
    eprintln!("soak: no free loopback port");
    std::process::exit(2);
}

/// Checks a reply: local names must answer, forwarded ones must carry the upstream's record.
fn good(resp: &[u8], forwarded: bool) -> bool {
    resp.len() >= 12
        && resp[3] & 0x0F == 0
        && u16::from_be_bytes([resp[6], resp[7]]) >= 1
        && (!forwarded || resp.ends_with(&[192, 0, 2, 1]))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut bin = None;
    let mut secs = 600u64;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--bin" => bin = args.get(i + 1).cloned(),
            "--secs" => secs = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(600),
            other => {
                eprintln!("soak: unknown argument {other}; usage: soak --bin PATH [--secs N]");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    let Some(bin) = bin else {
        eprintln!("soak: --bin PATH to the dockns binary is required");
        std::process::exit(2);
    };
    let stop = Arc::new(AtomicBool::new(false));
    let upstream = fake_upstream(stop.clone());
    let dir = std::env::temp_dir().join(format!("dockns-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("soak.toml");
    let port = free_port();
    let write = |generation: u64| {
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, config(port, upstream, generation)).expect("write config");
        std::fs::rename(&tmp, &file).expect("rename config");
    };
    write(0);
    let mut child = Command::new(&bin)
        .args(["serve", "--log-level", "warn", "--config"])
        .arg(&file)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!("soak: cannot start {bin}: {e}");
            std::process::exit(2)
        });
    let pid = child.id();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    // Wait until it answers.
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
    probe
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok();
    let up_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = probe.send_to(&query(1, "svc1"), server);
        let mut b = [0u8; 512];
        if probe.recv_from(&mut b).is_ok() {
            break;
        }
        if Instant::now() > up_deadline {
            eprintln!("soak: dockns did not come up on {server}");
            let _ = child.kill();
            std::process::exit(1);
        }
    }
    let rss_start = rss_kb(pid);
    println!("soak: dockns pid {pid} on {server}, upstream {upstream}, {secs}s, RSS start {rss_start} kB");
    let c = Arc::new(Counters::default());
    let end = Instant::now() + Duration::from_secs(secs);
    let mut threads = Vec::new();
    for w in 0..2u64 {
        let c = c.clone();
        threads.push(std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
            sock.set_read_timeout(Some(Duration::from_millis(100))).ok();
            let mut n: u64 = 0;
            let mut buf = [0u8; 4096];
            while Instant::now() < end {
                n += 1;
                let id = (n as u16) ^ ((w as u16) << 15);
                let (name, fwd) = match n % 10 {
                    0..=5 => (format!("svc{}", n % 50), false),
                    6 => ("pool".to_string(), false),
                    7 => (format!("svc{}.soak", n % 50), false),
                    // Forwarded: a small repeating set and a stream of unique names.
                    8 => (format!("cached{}.example", n % 100), true),
                    _ => (format!("u{w}-{n}.example"), true),
                };
                c.queries.fetch_add(1, Ordering::Relaxed);
                if sock.send_to(&query(id, &name), server).is_err() {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let deadline = Instant::now() + Duration::from_secs(3);
                let mut got = false;
                while Instant::now() < deadline {
                    if let Ok((len, _)) = sock.recv_from(&mut buf) {
                        if len >= 2 && buf[..2] == id.to_be_bytes() {
                            if !good(&buf[..len], fwd) {
                                c.errors.fetch_add(1, Ordering::Relaxed);
                            }
                            got = true;
                            break;
                        }
                    }
                }
                if !got {
                    c.timeouts.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    {
        let c = c.clone();
        threads.push(std::thread::spawn(move || {
            let connect = || {
                let s = TcpStream::connect_timeout(&server, Duration::from_secs(3)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
                Some(s)
            };
            let mut conn = connect();
            let mut n: u64 = 0;
            while Instant::now() < end {
                n += 1;
                let Some(s) = conn.as_mut() else {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                    conn = connect();
                    continue;
                };
                let fwd = n % 4 == 0;
                let name = if fwd {
                    format!("tcp{}.example", n % 500)
                } else {
                    format!("svc{}", n % 50)
                };
                let q = query(n as u16, &name);
                let mut f = (q.len() as u16).to_be_bytes().to_vec();
                f.extend_from_slice(&q);
                c.queries.fetch_add(1, Ordering::Relaxed);
                let mut l = [0u8; 2];
                let res = s
                    .write_all(&f)
                    .and_then(|_| s.read_exact(&mut l))
                    .and_then(|_| {
                        let mut m = vec![0u8; usize::from(u16::from_be_bytes(l))];
                        s.read_exact(&mut m).map(|_| m)
                    });
                match res {
                    Ok(m) if good(&m, fwd) => {}
                    Ok(_) => {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        c.timeouts.fetch_add(1, Ordering::Relaxed);
                        conn = connect();
                    }
                    Err(_) => {
                        // A busy connection closed under us is an error; reconnect.
                        c.errors.fetch_add(1, Ordering::Relaxed);
                        conn = connect();
                    }
                }
            }
        }));
    }
    // Churn: rewrite the config and SIGHUP every 2 s; report every 10 s.
    let start = Instant::now();
    let mut generation = 0u64;
    let mut last_report = Instant::now();
    while Instant::now() < end {
        std::thread::sleep(
            Duration::from_secs(2).min(end.saturating_duration_since(Instant::now())),
        );
        generation += 1;
        write(generation);
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGHUP);
        }
        c.reloads.fetch_add(1, Ordering::Relaxed);
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "soak: {:>5}s queries {} errors {} timeouts {} reloads {} RSS {} kB",
                start.elapsed().as_secs(),
                c.queries.load(Ordering::Relaxed),
                c.errors.load(Ordering::Relaxed),
                c.timeouts.load(Ordering::Relaxed),
                c.reloads.load(Ordering::Relaxed),
                rss_kb(pid)
            );
        }
    }
    for t in threads {
        let _ = t.join();
    }
    let rss_end = rss_kb(pid);
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let t = Instant::now();
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if t.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    stop.store(true, Ordering::Relaxed);
    let _ = std::fs::remove_dir_all(&dir);
    let (q, e, to) = (
        c.queries.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed),
        c.timeouts.load(Ordering::Relaxed),
    );
    println!(
        "soak: done after {}s: queries {q} ({:.0}/s) errors {e} timeouts {to} reloads {} RSS start {rss_start} kB end {rss_end} kB; exit {:?} after SIGTERM in {:?}",
        start.elapsed().as_secs(),
        q as f64 / start.elapsed().as_secs_f64(),
        c.reloads.load(Ordering::Relaxed),
        status.and_then(|s| s.code()),
        t.elapsed()
    );
    let clean_exit = status.is_some_and(|s| s.success());
    std::process::exit(if e == 0 && to == 0 && clean_exit {
        0
    } else {
        1
    });
}
