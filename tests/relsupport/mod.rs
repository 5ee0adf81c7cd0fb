//! Test support for the reliability tests: an in-process dockns on an ephemeral loopback port,
//! hand-built DNS packets, UDP/TCP clients with deadlines, and fake upstream servers on loopback
//! whose behaviour (answer, dead, refuse, garbage, wrong ID, wrong question, late) can change
//! while they run. It never sends traffic anywhere but 127.0.0.0/8.
#![allow(dead_code)]

use dockns::config::{Config, Overrides};
use dockns::server::Server;
use dockns::wire::MAX_KEY_LEN;
use dockns::wire::{self, Parse};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A generous per-query deadline for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(5);

/// The static tables every reliability test serves.
pub const NETWORKS: &str = r#"
[[network]]
name = "demo"
subnet = "10.89.0.0/24"

[[network.container]]
name = "db"
ipv4 = ["10.89.0.2"]
ipv6 = ["fd00:89::2"]
aliases = ["postgres"]

[[network.container]]
name = "api-1"
ipv4 = ["10.89.0.11"]
aliases = ["api"]

[[network.container]]
name = "api-2"
ipv4 = ["10.89.0.12"]
aliases = ["api"]

[[network]]
name = "backoffice"
internal = true
subnet = "10.90.0.0/24"

[[network.container]]
name = "vault"
ipv4 = ["10.90.0.2"]
"#;

/// A config text: listen on 127.0.0.1:0, one UDP worker, the given keys, [`NETWORKS`] and
/// `extra` (more TOML tables).
pub fn config_text(
    server_keys: &str,
    upstreams: &[SocketAddr],
    upstream_keys: &str,
    extra: &str,
) -> String {
    let ups: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n{server_keys}\n\n[upstream]\nservers = [{}]\n{upstream_keys}\n{NETWORKS}\n{extra}",
        ups.join(", ")
    )
}

/// A dockns running in this process, with its own runtime.
pub struct TestServer {
    /// The server.
    pub server: Server,
    /// Its UDP/TCP address.
    pub addr: SocketAddr,
    /// The runtime it runs on (kept alive with it).
    pub rt: tokio::runtime::Runtime,
}

impl TestServer {
    /// Starts a server from `[server]` extra keys, an upstream list, and [`NETWORKS`].
    pub fn start(server_keys: &str, upstreams: &[SocketAddr], upstream_keys: &str) -> TestServer {
        let cfg = Config::from_toml(
            &config_text(server_keys, upstreams, upstream_keys, ""),
            &Overrides::default(),
        )
        .expect("test config is valid");
        TestServer::from_config(cfg)
    }

    /// Starts a server from a validated config.
    pub fn from_config(cfg: Config) -> TestServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = {
            let _g = rt.enter();
            Server::start(cfg).expect("server starts")
        };
        let addr = server.bound()[0];
        TestServer { server, addr, rt }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.rt
            .block_on(async { tokio::time::timeout(WAIT, self.server.shutdown()).await })
            .ok();
    }
}

/// Encodes a dotted name as uncompressed wire labels.
pub fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A standard query (RD set) for `name`/`qtype`, class IN, with an optional EDNS OPT record.
pub fn query(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut p = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
    p[0..2].copy_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&encode_name(name));
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    if edns {
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    }
    p
}

/// Response code (low 4 bits).
pub fn rcode(resp: &[u8]) -> u8 {
    resp[3] & 0x0F
}

/// Answer count.
pub fn ancount(resp: &[u8]) -> u16 {
    u16::from_be_bytes([resp[6], resp[7]])
}

/// Message ID.
pub fn id_of(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[0], msg[1]])
}

/// A UDP client socket on `from` (use 127.0.0.1 normally).
pub fn udp_client(from: &str) -> UdpSocket {
    let s = UdpSocket::bind(format!("{from}:0")).expect("bind client");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    s
}

/// Sends `pkt` once and waits up to `wait` for a reply with the same ID.
pub fn udp_exchange(
    sock: &UdpSocket,
    server: SocketAddr,
    pkt: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    sock.send_to(pkt, server).ok()?;
    let want = (pkt.len() >= 2).then(|| id_of(pkt));
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if n >= 12 && Some(id_of(&buf[..n])) == want => {
                return Some(buf[..n].to_vec())
            }
            Ok((n, _)) if want.is_none() && n > 0 => return Some(buf[..n].to_vec()),
            _ => {}
        }
    }
    None
}

/// Asks over UDP, resending every second (UDP may drop under load), until a reply or `wait`.
pub fn udp_ask(server: SocketAddr, pkt: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = udp_client("127.0.0.1");
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(r) = udp_exchange(&sock, server, pkt, left.min(Duration::from_secs(1))) {
            return Some(r);
        }
    }
    None
}

/// Writes one length-prefixed message.
pub fn tcp_send(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let mut f = (msg.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    s.write_all(&f)
}

/// Reads one length-prefixed message.
pub fn tcp_recv(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut l = [0u8; 2];
    s.read_exact(&mut l)?;
    let mut m = vec![0u8; usize::from(u16::from_be_bytes(l))];
    s.read_exact(&mut m)?;
    Ok(m)
}

/// A TCP connection to the server with read/write timeouts.
pub fn tcp_connect(server: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&server, WAIT).expect("tcp connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.set_write_timeout(Some(WAIT)).expect("timeout");
    s
}

/// One query over a fresh TCP connection.
pub fn tcp_ask(server: SocketAddr, pkt: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = tcp_connect(server);
    tcp_send(&mut s, pkt)?;
    tcp_recv(&mut s)
}

/// Asserts that an ordinary client still gets `db` over UDP and TCP.
pub fn assert_alive(server: SocketAddr, after: &str) {
    let q = query(0x5151, "db", 1, false);
    let r = udp_ask(server, &q, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("after {after}: no UDP answer for db"));
    assert_eq!(rcode(&r), 0, "after {after}: UDP rcode");
    assert_eq!(ancount(&r), 1, "after {after}: UDP answers");
    let r = tcp_ask(server, &q).unwrap_or_else(|e| panic!("after {after}: TCP failed: {e}"));
    assert_eq!(
        (rcode(&r), ancount(&r)),
        (0, 1),
        "after {after}: TCP answer"
    );
}

/// Polls `f` until it is true or `wait` passes.
pub fn wait_until(wait: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a fake upstream does with each query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// NOERROR; type A questions get one A record 192.0.2.1.
    Answer,
    /// Says nothing.
    Dead,
    /// REFUSED.
    Refuse,
    /// SERVFAIL.
    Servfail,
    /// Random bytes, then nothing.
    Garbage,
    /// First a reply with a wrong ID, then the real answer.
    WrongIdThenAnswer,
    /// First a reply to another question (right ID), then the real answer.
    WrongQuestionThenAnswer,
    /// The answer, after this many milliseconds.
    Late(u64),
}

/// A fake upstream DNS server on 127.0.0.1 (UDP and TCP on the same port).
pub struct FakeUpstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Queries received so far (UDP and TCP).
    pub queries: Arc<AtomicUsize>,
    /// Names asked, lower-case, in order.
    pub names: Arc<Mutex<Vec<String>>>,
    behavior: Arc<Mutex<Behavior>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The answer a fake upstream gives to `q` (must be a parseable query).
pub fn fake_answer(q: &[u8], rc: u8) -> Option<Vec<u8>> {
    let mut key = [0u8; MAX_KEY_LEN];
    let Parse::Query(p) = wire::parse_query(q, &mut key) else {
        return None;
    };
    let mut r = q[..p.qend].to_vec();
    r[2] = 0x81 | (q[2] & 0x78);
    r[3] = 0x80 | rc;
    r[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    if rc == 0 && p.qtype == 1 {
        r[7] = 1;
        r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    }
    Some(r)
}

fn qname_text(q: &[u8]) -> String {
    let mut key = [0u8; MAX_KEY_LEN];
    match wire::parse_query(q, &mut key) {
        Parse::Query(p) => {
            let mut s = String::new();
            let mut i = 0;
            let k = &key[..p.key_len];
            while i < k.len() {
                let l = usize::from(k[i]);
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(&String::from_utf8_lossy(&k[i + 1..i + 1 + l]));
                i += 1 + l;
            }
            s
        }
        _ => String::from("?"),
    }
}

/// The replies a fake upstream sends for one query, with a delay before them.
fn replies(b: Behavior, q: &[u8]) -> (Duration, Vec<Vec<u8>>) {
    let ok = fake_answer(q, 0);
    match (b, ok) {
        (_, None) => (Duration::ZERO, vec![]),
        (Behavior::Answer, Some(a)) => (Duration::ZERO, vec![a]),
        (Behavior::Dead, _) => (Duration::ZERO, vec![]),
        (Behavior::Refuse, _) => (Duration::ZERO, fake_answer(q, 5).into_iter().collect()),
        (Behavior::Servfail, _) => (Duration::ZERO, fake_answer(q, 2).into_iter().collect()),
        (Behavior::Garbage, _) => {
            let g: Vec<u8> = (0..40u8)
                .map(|i| i.wrapping_mul(37).wrapping_add(q[1]))
                .collect();
            (Duration::ZERO, vec![g])
        }
        (Behavior::WrongIdThenAnswer, Some(a)) => {
            let mut wrong = a.clone();
            wrong[0] ^= 0x5A;
            wrong[1] ^= 0xA5;
            (Duration::ZERO, vec![wrong, a])
        }
        (Behavior::WrongQuestionThenAnswer, Some(a)) => {
            // Same ID, another name of the same length: flip the case-insensitive letters to
            // other letters.
            let mut wrong = a.clone();
            if let Some(b) = wrong[13..].iter_mut().find(|b| b.is_ascii_alphabetic()) {
                *b = if b.eq_ignore_ascii_case(&b'z') {
                    b'y'
                } else {
                    b'z'
                };
            }
            (Duration::ZERO, vec![wrong, a])
        }
        (Behavior::Late(ms), Some(a)) => (Duration::from_millis(ms), vec![a]),
    }
}

impl FakeUpstream {
    /// Starts a fake upstream with the given behaviour.
    pub fn start(b: Behavior) -> FakeUpstream {
        // UDP and TCP on one port: the kernel's free UDP port may be taken for TCP (by another
        // process's connection), so retry until one is free for both.
        let (udp, tcp) = (0..100)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = std::net::TcpListener::bind(udp.local_addr().ok()?).ok()?;
                Some((udp, tcp))
            })
            .expect("fake upstream: no port free for both UDP and TCP in 100 tries");
        let addr = udp.local_addr().expect("addr");
        tcp.set_nonblocking(true).expect("nonblocking");
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let udp = Arc::new(udp);
        let behavior = Arc::new(Mutex::new(b));
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        {
            let (udp, behavior, stop, queries, names) = (
                udp.clone(),
                behavior.clone(),
                stop.clone(),
                queries.clone(),
                names.clone(),
            );
            // Delayed replies go through one sender thread (delays are constant per behaviour,
            // so FIFO order is due order): a flood does not spawn a thread per query.
            let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<Vec<u8>>, SocketAddr)>();
            let late_sock = udp.clone();
            std::thread::spawn(move || {
                while let Ok((due, rs, src)) = rx.recv() {
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    for r in rs {
                        let _ = late_sock.send_to(&r, src);
                    }
                }
            });
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, src)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    let q = buf[..n].to_vec();
                    queries.fetch_add(1, Ordering::Relaxed);
                    names.lock().unwrap().push(qname_text(&q));
                    let b = *behavior.lock().unwrap();
                    let (delay, rs) = replies(b, &q);
                    if delay.is_zero() {
                        for r in rs {
                            let _ = udp.send_to(&r, src);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    } else {
                        let _ = tx.send((Instant::now() + delay, rs, src));
                    }
                }
            }));
        }
        {
            let (behavior, stop, queries, names) = (
                behavior.clone(),
                stop.clone(),
                queries.clone(),
                names.clone(),
            );
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let (behavior, queries, names) =
                        (behavior.clone(), queries.clone(), names.clone());
                    std::thread::spawn(move || {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        while let Ok(q) = tcp_recv(&mut s) {
                            queries.fetch_add(1, Ordering::Relaxed);
                            names.lock().unwrap().push(qname_text(&q));
                            let b = *behavior.lock().unwrap();
                            let (delay, rs) = replies(b, &q);
                            std::thread::sleep(delay);
                            for r in rs {
                                if tcp_send(&mut s, &r).is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            }));
        }
        FakeUpstream {
            addr,
            queries,
            names,
            behavior,
            stop,
            threads,
        }
    }

    /// Changes what it does from now on.
    pub fn set(&self, b: Behavior) {
        *self.behavior.lock().unwrap() = b;
    }

    /// Queries received so far.
    pub fn count(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
