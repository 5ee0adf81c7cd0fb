//! The one fake upstream DNS server: UDP and TCP on one 127.0.0.1 port, a behaviour the test
//! picks and may change while it runs, and counters of what it was asked.
//!
//! It must not listen anywhere but loopback, and must not report a port it does not hold: it
//! binds UDP on port 0, then TCP on the same number, and when that TCP port is taken it binds a
//! new pair (both sockets are kept for its whole life).

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The address [`Behavior::Answer`] answers with.
pub const ANSWER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// What a fake upstream does with each query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// NOERROR; an A question gets one A record [`ANSWER_IP`], TTL 60.
    Answer,
    /// NOERROR; an A question gets one A record with this address, TTL 60.
    AnswerWith(Ipv4Addr),
    /// Says nothing.
    Dead,
    /// This response code and no records.
    Rcode(ResponseCode),
    /// 40 bytes of garbage, then nothing.
    Garbage,
    /// First a reply with a wrong ID (A 6.6.6.6), then the real answer.
    WrongIdThenAnswer,
    /// First a reply to another question (right ID, A 6.6.6.7), then the real answer.
    WrongQuestionThenAnswer,
    /// Both of those bogus replies, then the real answer.
    WrongIdAndQuestionThenAnswer,
    /// Over UDP: TC set and no records; over TCP: this many A records (192.0.2.0, .1, ...).
    TruncateUdp(usize),
    /// The answer, after this many milliseconds.
    Late(u64),
    /// The answer with the question's name lower-cased (an upstream that does not echo the
    /// letter case it was asked in).
    AnswerLowercased,
}

impl Behavior {
    /// REFUSED.
    pub const REFUSE: Behavior = Behavior::Rcode(ResponseCode::Refused);
    /// SERVFAIL.
    pub const SERVFAIL: Behavior = Behavior::Rcode(ResponseCode::ServFail);
    /// NXDOMAIN.
    pub const NXDOMAIN: Behavior = Behavior::Rcode(ResponseCode::NXDomain);
}

/// Counters shared with the server threads.
#[derive(Default)]
struct Seen {
    /// Queries received (UDP and TCP, parseable or not).
    hits: AtomicUsize,
    /// Queries received over TCP.
    tcp_hits: AtomicUsize,
    /// Names asked, lower case, without the trailing dot, in order.
    names: Mutex<Vec<String>>,
    /// Source address and bytes of every UDP query.
    udp: Mutex<Vec<(SocketAddr, Vec<u8>)>>,
}

/// A fake upstream DNS server on 127.0.0.1 (UDP and TCP on the same port).
pub struct FakeUpstream {
    /// Its address (UDP and TCP).
    pub addr: SocketAddr,
    seen: Arc<Seen>,
    behavior: Arc<Mutex<Behavior>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// One reply: `q` answered with `rc`; an A question answered NOERROR gets `a` records.
fn answer(q: &Message, rc: ResponseCode, a: &[Ipv4Addr], tc: bool) -> Vec<u8> {
    let mut r = Message::response(q.metadata.id, OpCode::Query);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.checking_disabled = q.metadata.checking_disabled;
    r.metadata.recursion_available = true;
    r.metadata.response_code = rc;
    r.metadata.truncation = tc;
    r.add_queries(q.queries.clone());
    if let Some(e) = &q.edns {
        let mut ne = Edns::new();
        ne.set_max_payload(e.max_payload());
        r.set_edns(ne);
    }
    if let Some(question) = q.queries.first() {
        if rc == ResponseCode::NoError && question.query_type() == RecordType::A {
            for ip in a {
                r.add_answer(Record::from_rdata(
                    question.name().clone(),
                    60,
                    RData::A(A(*ip)),
                ));
            }
        }
    }
    r.to_vec().expect("encode fake reply")
}

/// The replies to one query over UDP or TCP, with the delay before them.
fn replies(b: Behavior, raw: &[u8], tcp: bool) -> (Duration, Vec<Vec<u8>>) {
    let Ok(q) = Message::from_vec(raw) else {
        return (Duration::ZERO, vec![]);
    };
    let now = Duration::ZERO;
    let ok = |ip: Ipv4Addr| answer(&q, ResponseCode::NoError, &[ip], false);
    match b {
        Behavior::Answer => (now, vec![ok(ANSWER_IP)]),
        Behavior::AnswerWith(ip) => (now, vec![ok(ip)]),
        Behavior::Dead => (now, vec![]),
        Behavior::Rcode(rc) => (now, vec![answer(&q, rc, &[], false)]),
        Behavior::Garbage => {
            let seed = raw.get(1).copied().unwrap_or(0);
            let g = (0..40u8)
                .map(|i| i.wrapping_mul(37).wrapping_add(seed))
                .collect();
            (now, vec![g])
        }
        Behavior::WrongIdThenAnswer => (now, vec![wrong_id(&q), ok(ANSWER_IP)]),
        Behavior::WrongQuestionThenAnswer => (now, vec![wrong_question(&q), ok(ANSWER_IP)]),
        Behavior::WrongIdAndQuestionThenAnswer => {
            (now, vec![wrong_id(&q), wrong_question(&q), ok(ANSWER_IP)])
        }
        Behavior::TruncateUdp(n) if tcp => {
            let ips: Vec<Ipv4Addr> = (0..n).map(|i| Ipv4Addr::new(192, 0, 2, i as u8)).collect();
            (now, vec![answer(&q, ResponseCode::NoError, &ips, false)])
        }
        Behavior::TruncateUdp(_) => (now, vec![answer(&q, ResponseCode::NoError, &[], true)]),
        Behavior::Late(ms) => (Duration::from_millis(ms), vec![ok(ANSWER_IP)]),
        Behavior::AnswerLowercased => {
            let mut lower = q.clone();
            for question in &mut lower.queries {
                let name = question.name().to_lowercase();
                question.set_name(name);
            }
            (
                now,
                vec![answer(&lower, ResponseCode::NoError, &[ANSWER_IP], false)],
            )
        }
    }
}

/// A reply to `q` with another ID and the address 6.6.6.6.
fn wrong_id(q: &Message) -> Vec<u8> {
    let mut other = q.clone();
    other.metadata.id = q.metadata.id ^ 0x5AA5;
    answer(
        &other,
        ResponseCode::NoError,
        &[Ipv4Addr::new(6, 6, 6, 6)],
        false,
    )
}

/// A reply with `q`'s ID to another question, with the address 6.6.6.7.
fn wrong_question(q: &Message) -> Vec<u8> {
    let mut other = q.clone();
    other.queries = vec![Query::query(
        Name::from_ascii("another-question.example.").expect("name"),
        RecordType::A,
    )];
    answer(
        &other,
        ResponseCode::NoError,
        &[Ipv4Addr::new(6, 6, 6, 7)],
        false,
    )
}

/// The question's name, lower case, without the trailing dot ("?" when unreadable).
fn qname(raw: &[u8]) -> String {
    Message::from_vec(raw)
        .ok()
        .and_then(|m| m.queries.first().map(|q| q.name().to_ascii()))
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_else(|| "?".into())
}

/// UDP on port 0 and TCP on the same number, both held; a new pair when the TCP port is taken.
fn bind_pair() -> (UdpSocket, TcpListener) {
    let mut last = None;
    for _ in 0..1000 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("fake upstream: bind UDP 127.0.0.1:0");
        let addr = udp.local_addr().expect("fake upstream: UDP address");
        match TcpListener::bind(addr) {
            Ok(tcp) => return (udp, tcp),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => panic!("fake upstream: bind TCP {addr}: {e}"),
        }
    }
    panic!("fake upstream: no UDP port free for TCP too in 1000 pairs (last: {last:?})");
}

impl FakeUpstream {
    /// Starts a fake upstream with the given behaviour.
    pub fn start(b: Behavior) -> FakeUpstream {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("addr");
        tcp.set_nonblocking(true).expect("nonblocking");
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let udp = Arc::new(udp);
        let behavior = Arc::new(Mutex::new(b));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let mut threads = Vec::new();
        // Delayed replies go through one sender thread (delays are constant per behaviour, so
        // FIFO order is due order): a flood does not spawn a thread per query.
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
        {
            let (behavior, stop, seen) = (behavior.clone(), stop.clone(), seen.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, src)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    let q = &buf[..n];
                    seen.hits.fetch_add(1, Ordering::SeqCst);
                    seen.names.lock().unwrap().push(qname(q));
                    seen.udp.lock().unwrap().push((src, q.to_vec()));
                    let b = *behavior.lock().unwrap();
                    let (delay, rs) = replies(b, q, false);
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
            let (behavior, stop, seen) = (behavior.clone(), stop.clone(), seen.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let (behavior, seen) = (behavior.clone(), seen.clone());
                    std::thread::spawn(move || {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        while let Ok(q) = super::dns::tcp_recv(&mut s) {
                            seen.hits.fetch_add(1, Ordering::SeqCst);
                            seen.tcp_hits.fetch_add(1, Ordering::SeqCst);
                            seen.names.lock().unwrap().push(qname(&q));
                            let b = *behavior.lock().unwrap();
                            let (delay, rs) = replies(b, &q, true);
                            std::thread::sleep(delay);
                            for r in rs {
                                if super::dns::tcp_send(&mut s, &r).is_err() {
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
            seen,
            behavior,
            stop,
            threads,
        }
    }

    /// Changes what it does from now on.
    pub fn set(&self, b: Behavior) {
        *self.behavior.lock().unwrap() = b;
    }

    /// Queries received so far (UDP and TCP).
    pub fn count(&self) -> usize {
        self.seen.hits.load(Ordering::SeqCst)
    }

    /// Queries received over TCP so far.
    pub fn tcp_count(&self) -> usize {
        self.seen.tcp_hits.load(Ordering::SeqCst)
    }

    /// Names asked so far, lower case, without the trailing dot, in order.
    pub fn names(&self) -> Vec<String> {
        self.seen.names.lock().unwrap().clone()
    }

    /// (query ID, source port) of every UDP query so far.
    pub fn sources(&self) -> Vec<(u16, u16)> {
        self.seen
            .udp
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, q)| q.len() >= 2)
            .map(|(src, q)| (u16::from_be_bytes([q[0], q[1]]), src.port()))
            .collect()
    }

    /// Source address and bytes of every UDP query so far.
    pub fn udp_queries(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.seen.udp.lock().unwrap().clone()
    }

    /// Whether a name (any case, with or without the trailing dot) was asked.
    pub fn saw(&self, name: &str) -> bool {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        self.seen.names.lock().unwrap().contains(&n)
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
