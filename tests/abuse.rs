//! Abuse: dockns is not an open resolver, one flooding client cannot starve others of
//! forwarding, and every resource a client can hold is bounded (in-flight forwards, TCP
//! connections; idle and read timeouts are in `hostile.rs`).
//!
//! "Outside" clients are simulated on loopback: the server runs with `allow_loopback = false`
//! and `allow = ["127.0.0.1/32"]`, so a client bound to 127.0.0.2 counts as outside, while a
//! static network with subnet 127.0.0.64/26 stands for a served container network.

mod kit;

use dockns::config::{Config, Overrides};
use kit::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const REFUSED: u8 = 5;

/// A served network on loopback: one container at 127.0.0.70, subnet 127.0.0.64/26.
const LOOPNET: &str = r#"
[[network]]
name = "loopnet"
subnet = "127.0.0.64/26"

[[network.container]]
name = "inside"
ipv4 = ["127.0.0.70"]
"#;

fn closed_access(mode: &str, ups: &[SocketAddr]) -> String {
    config_text(
        &format!("allow_loopback = false\nallow = [\"127.0.0.1/32\"]\nrefuse_mode = \"{mode}\""),
        ups,
        "timeout_ms = 500\nbudget_ms = 1000",
        LOOPNET,
    )
}

fn ask_from(from: &str, server: SocketAddr, name: &str, wait: Duration) -> Option<Vec<u8>> {
    let sock = udp_client(from);
    let q = query(0x4242, name, 1, false);
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(r) = udp_exchange(&sock, server, &q, Duration::from_millis(700)) {
            return Some(r);
        }
    }
    None
}

fn tcp_from(from: &str, server: SocketAddr, name: &str) -> std::io::Result<Vec<u8>> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into())?;
    sock.connect_timeout(&server.into(), WAIT)?;
    let mut s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(WAIT))?;
    tcp_send(&mut s, &query(0x4343, name, 1, false))?;
    tcp_recv(&mut s)
}

#[test]
fn outside_clients_are_refused() {
    let up = FakeUpstream::start(Behavior::Answer);
    let cfg =
        Config::from_toml(&closed_access("refused", &[up.addr]), &Overrides::default()).unwrap();
    let s = TestServer::from_config(cfg);
    // Allowed: the configured CIDR, a known container, anyone in a served subnet.
    for from in ["127.0.0.1", "127.0.0.70", "127.0.0.100"] {
        let r = ask_from(from, s.addr, "db", WAIT).unwrap_or_else(|| panic!("{from}: no answer"));
        assert_eq!(rcode(&r), 0, "{from} is answered");
    }
    // Outside: REFUSED for local and forwarded names, over UDP and TCP; nothing goes upstream.
    // (127.0.0.70 sees only its own network, so its "db" went upstream above.)
    let before = up.count();
    for name in ["db", "forward-me.example"] {
        let r = ask_from("127.0.0.2", s.addr, name, WAIT).expect("REFUSED, not silence");
        assert_eq!(
            (rcode(&r), ancount(&r)),
            (REFUSED, 0),
            "{name} from outside"
        );
        let r = tcp_from("127.0.0.2", s.addr, name).expect("tcp");
        assert_eq!(rcode(&r), REFUSED, "{name} from outside over TCP");
    }
    assert_eq!(
        up.count(),
        before,
        "an outside client never reaches the upstream"
    );
    // A reload that allows it takes effect at once.
    let mut cfg =
        Config::from_toml(&closed_access("refused", &[up.addr]), &Overrides::default()).unwrap();
    cfg.listen = s.server.config().listen;
    cfg.guard.allow.push("127.0.0.2/32".parse().unwrap());
    s.server.reload(cfg).expect("reload");
    let r = ask_from("127.0.0.2", s.addr, "db", WAIT).unwrap();
    assert_eq!(rcode(&r), 0, "allowed after reload");
}

#[test]
fn outside_clients_get_silence_in_drop_mode() {
    let cfg = Config::from_toml(&closed_access("drop", &[]), &Overrides::default()).unwrap();
    let s = TestServer::from_config(cfg);
    // One UDP worker reads in order: once a later allowed query is answered, the outside one
    // was handled before it, and a reply to it would already be in its socket.
    let outside = udp_client("127.0.0.2");
    outside
        .send_to(&query(0x4242, "db", 1, false), s.addr)
        .unwrap();
    let r = udp_ask(s.addr, &query(0x4343, "db", 1, false), WAIT).expect("allowed answered");
    assert_eq!(rcode(&r), 0);
    outside.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    assert!(
        outside.recv_from(&mut buf).is_err(),
        "the outside client got a reply in drop mode"
    );
    // TCP: closed without a reply.
    assert!(tcp_from("127.0.0.2", s.addr, "db").is_err());
    assert_alive(s.addr, "outside clients in drop mode");
}

#[test]
fn a_flooding_client_cannot_starve_another() {
    // A slow upstream and few forward slots: without a rate limit, the flood would hold every
    // slot and the quiet client would get REFUSED; the flooder gets SERVFAIL over its rate.
    let up = FakeUpstream::start(Behavior::Late(150));
    let s = TestServer::start(
        "max_inflight = 24\nforward_rate = 10\nforward_burst = 10\nrate_limit_loopback = true",
        &[up.addr],
        "timeout_ms = 3000\nbudget_ms = 3000",
    );
    let flood_addr = s.addr;
    let flooder = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.2:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let (mut sent, mut ok, mut refused) = (0u32, 0u32, 0u32);
        let start = Instant::now();
        let mut buf = [0u8; 1500];
        while start.elapsed() < Duration::from_secs(3) {
            for _ in 0..20 {
                let q = query(sent as u16, &format!("flood{sent}.example"), 1, false);
                let _ = sock.send_to(&q, flood_addr);
                sent += 1;
            }
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                match rcode(&buf[..n]) {
                    0 => ok += 1,
                    2 => refused += 1, // SERVFAIL: over its rate
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let drain = Instant::now();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while drain.elapsed() < Duration::from_secs(4) {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                match rcode(&buf[..n]) {
                    0 => ok += 1,
                    2 => refused += 1, // SERVFAIL: over its rate
                    _ => {}
                }
            }
        }
        (sent, ok, refused, start.elapsed())
    });
    // The quiet client, within its rate, during the flood.
    std::thread::sleep(Duration::from_millis(300));
    let quiet = udp_client("127.0.0.3");
    for i in 0..8 {
        let q = query(1000 + i, &format!("quiet{i}.example"), 1, false);
        let r = udp_exchange(&quiet, s.addr, &q, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("quiet query {i}: silence"));
        assert_eq!(rcode(&r), 0, "quiet query {i} answered during the flood");
        std::thread::sleep(Duration::from_millis(150));
    }
    let (sent, ok, refused, took) = flooder.join().unwrap();
    eprintln!("flood: sent {sent}, answered {ok}, refused {refused} in {took:?}");
    assert!(refused > 0, "the flooder was limited (SERVFAIL)");
    // Burst 10 plus 10/s for the whole run (flood and drain), with slack for timing.
    let bound = 10.0 + 10.0 * took.as_secs_f64() + 5.0;
    assert!(
        f64::from(ok) <= bound,
        "flooder got {ok} forwards, bound {bound}"
    );
    assert!(sent > 2 * ok, "most of the flood was refused");
}

#[test]
fn in_flight_forwards_are_bounded() {
    let up = FakeUpstream::start(Behavior::Late(1500));
    let s = TestServer::start(
        "max_inflight = 4",
        &[up.addr],
        "timeout_ms = 4000\nbudget_ms = 4000",
    );
    let sock = udp_client("127.0.0.1");
    for i in 0..20u16 {
        sock.send_to(&query(i, &format!("slot{i}.example"), 1, false), s.addr)
            .unwrap();
    }
    let (mut ok, mut refused) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut buf = [0u8; 1500];
    while ok + refused < 20 && Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            match rcode(&buf[..n]) {
                0 => ok += 1,
                5 => refused += 1,
                rc => panic!("unexpected rcode {rc}"),
            }
        }
    }
    assert_eq!(ok + refused, 20, "every query got a reply");
    assert!(
        ok <= 8,
        "at most the in-flight bound (4, with slack for slow sends): {ok}"
    );
    assert!(refused >= 12, "the rest REFUSED at once: {refused}");
    assert_alive(s.addr, "in-flight saturation");
}

#[test]
fn tcp_connections_are_bounded() {
    let s = TestServer::start("max_tcp_connections = 4", &[], "");
    let mut held: Vec<_> = (0..4)
        .map(|i| {
            let mut c = tcp_connect(s.addr);
            tcp_send(&mut c, &query(i, "db", 1, false)).unwrap();
            assert_eq!(rcode(&tcp_recv(&mut c).unwrap()), 0);
            c
        })
        .collect();
    // The fifth is closed without an answer.
    let mut fifth = tcp_connect(s.addr);
    let r = tcp_send(&mut fifth, &query(9, "db", 1, false)).and_then(|_| tcp_recv(&mut fifth));
    assert!(r.is_err(), "over the limit: closed");
    // UDP is unaffected.
    let r = udp_ask(s.addr, &query(10, "db", 1, false), WAIT).expect("udp");
    assert_eq!(rcode(&r), 0);
    // Free a slot: TCP works again.
    held.pop();
    assert!(
        wait_until(Duration::from_secs(10), || tcp_ask(
            s.addr,
            &query(11, "db", 1, false)
        )
        .is_ok_and(|r| rcode(&r) == 0)),
        "a freed slot is reusable"
    );
}
