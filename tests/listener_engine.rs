//! The UDP listener engine (issue 14): a fixed number of threads serves any number of
//! listeners, idle workers sleep in epoll with no timeout, and removing listeners frees what
//! they registered. An in-process dockns on loopback listener addresses (127.0.1.x, the
//! stand-in for Docker network gateways), asked by a plain UDP client.
//!
//! The tests of this file share the process's thread list, so they run one at a time.

use dockns::config::{Config, Overrides};
use dockns::server::Server;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WORKERS: usize = 2;

fn start() -> Server {
    let toml = format!(
        "[server]\nworkers = {WORKERS}\n[upstream]\nservers = [\"127.0.0.1:9\"]\n\
         [[network]]\nname = \"demo\"\n[[network.container]]\nname = \"db\"\nipv4 = [\"10.89.0.2\"]\n"
    );
    let cfg = Config::from_toml(
        &toml,
        &Overrides {
            listen: vec!["127.0.0.1:0".into()],
            ..Default::default()
        },
    )
    .expect("test config");
    Server::start(cfg).expect("server starts")
}

/// `n` listener addresses on loopback (ports chosen by the kernel).
fn gateways(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + i as u8)), 0))
        .collect()
}

/// The names (comm) of this process's threads, with their ids.
fn threads() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let Ok(t) = t else { continue };
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        out.push((
            t.file_name().to_string_lossy().into_owned(),
            comm.trim().to_string(),
        ));
    }
    out
}

fn udp_threads() -> Vec<String> {
    threads()
        .into_iter()
        .filter(|(_, comm)| comm.starts_with("udp-"))
        .map(|(tid, _)| tid)
        .collect()
}

/// An A query for `db` (RFC 1035 §4.1: header, one question, no EDNS).
fn query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x02db\x00\x00\x01\x00\x01");
    q
}

/// Asks `db A` at `addr`; true when a NOERROR response with one answer and our ID came back.
fn answers(addr: SocketAddr, id: u16) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.send_to(&query(id), addr).expect("send");
    let mut buf = [0u8; 512];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => {
            n >= 12
                && from == addr
                && buf[..2] == id.to_be_bytes()
                && buf[3] & 0x0F == 0
                && buf[6..8] == [0, 1]
        }
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_count_does_not_depend_on_listener_count() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = start();
    // A new thread names itself when it starts to run: wait for the workers' names (not
    // for their number, which the assertion below checks).
    let named = Instant::now() + Duration::from_secs(5);
    while udp_threads().len() < WORKERS && Instant::now() < named {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = threads().len();
    assert_eq!(udp_threads().len(), WORKERS, "one UDP thread per worker");
    let extra = gateways(40);
    let mut bound = Vec::new();
    for a in &extra {
        bound.push(server.listeners.add(*a).expect("loopback listener binds"));
    }
    // Every listener answers, from the address it was asked on.
    for (i, b) in bound.iter().enumerate() {
        assert!(answers(*b, i as u16 + 1), "listener {b} did not answer");
    }
    assert_eq!(
        udp_threads().len(),
        WORKERS,
        "41 listeners are still served by the same {WORKERS} UDP threads"
    );
    assert_eq!(
        threads().len(),
        before,
        "no thread was started per listener"
    );
    server.shutdown().await;
}

/// On x86_64 `epoll_wait(2)` (or `epoll_pwait`) with the timeout argument; `None` when the
/// thread is not in one of those system calls.
fn epoll_timeout(tid: &str) -> Option<i32> {
    let line = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let nr: i64 = f.first()?.parse().ok()?;
    if nr != libc::SYS_epoll_wait && nr != libc::SYS_epoll_pwait {
        return None;
    }
    // Fields: number, then the arguments; the timeout is the fourth argument.
    let arg = u64::from_str_radix(f.get(4)?.trim_start_matches("0x"), 16).ok()?;
    Some(arg as u32 as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_workers_block_in_epoll_without_a_timeout() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = start();
    for a in gateways(10) {
        server.listeners.add(a).expect("loopback listener binds");
    }
    assert!(answers(server.bound()[0], 7));
    // Idle now: every UDP worker must be asleep in epoll_wait with timeout -1 (no timed
    // wake-up). A worker may still be finishing its last turn: look again for a while.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = udp_threads()
            .iter()
            .map(|t| (t.clone(), epoll_timeout(t)))
            .collect::<Vec<_>>();
        if last.len() == WORKERS && last.iter().all(|(_, t)| *t == Some(-1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "UDP workers are not blocked in epoll_wait(timeout = -1): {last:?} \
             (None: not in epoll_wait; Some(ms): a timed wait)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_listeners_frees_their_counters() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = start();
    let baseline = server.stats.live_workers();
    let extra = gateways(30);
    let mut bound = Vec::new();
    for a in &extra {
        bound.push(server.listeners.add(*a).expect("loopback listener binds"));
    }
    assert!(server.stats.live_workers() > baseline);
    for (i, b) in bound.iter().enumerate() {
        assert!(answers(*b, i as u16 + 1), "listener {b} did not answer");
    }
    let answered = server.stats.totals().udp_local;
    assert!(answered >= 30);
    for a in &extra {
        server.listeners.remove(*a);
    }
    // UDP counters go at once; a TCP listener's when its accept loop has ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats.live_workers() != baseline {
        assert!(
            Instant::now() < deadline,
            "counters of removed listeners still registered: {} live, {baseline} at start",
            server.stats.live_workers()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        server.stats.totals().udp_local,
        answered,
        "what removed listeners answered stays counted"
    );
    assert_eq!(server.listeners.addresses().len(), 1);
    assert!(
        answers(server.bound()[0], 99),
        "the remaining listener answers"
    );
    server.shutdown().await;
}

/// Sends `payload` to `to` over UDP from source port 0, through a raw socket (the kernel adds
/// the IP header; the UDP header is ours, checksum 0 = none, RFC 768).
fn send_from_port_zero(to: SocketAddr, payload: &[u8]) {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 listener expected")
    };
    // SAFETY: a plain socket(2) call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP) };
    assert!(
        fd >= 0,
        "cannot open a raw socket ({}): this test sends from UDP port 0 and needs root \
         (CAP_NET_RAW); run it as root, as .ci/run does",
        std::io::Error::last_os_error()
    );
    let mut dgram = vec![0u8, 0];
    dgram.extend_from_slice(&to.port().to_be_bytes());
    dgram.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    dgram.extend_from_slice(&[0, 0]);
    dgram.extend_from_slice(payload);
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the buffer and address outlive the call; their lengths are passed with them.
    let sent = unsafe {
        libc::sendto(
            fd,
            dgram.as_ptr().cast(),
            dgram.len(),
            0,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above, once.
    unsafe { libc::close(fd) };
    assert_eq!(sent, dgram.len() as isize, "raw send failed: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reply_to_source_port_zero() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = start();
    let addr = server.bound()[0];
    let before = server.stats.totals();
    // RFC 768: a source port of 0 means no reply is expected; the query is dropped and counted.
    send_from_port_zero(addr, &query(0x5150));
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats.totals().dropped == before.dropped {
        assert!(
            Instant::now() < deadline,
            "a query from port 0 was not counted as dropped: {:?}",
            server.stats.totals()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = server.stats.totals();
    assert_eq!(after.dropped, before.dropped + 1);
    assert_eq!(after.udp_local, before.udp_local, "nothing was answered");
    assert!(answers(addr, 1), "ordinary clients still get answers");
    server.shutdown().await;
}
