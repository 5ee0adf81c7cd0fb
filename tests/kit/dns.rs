//! DNS messages for tests, built and read in one place with hickory-proto, and blocking UDP/TCP
//! clients with deadlines. Tests that need bytes hickory would not write (bad headers, odd
//! flags) start from [`query`] and change bytes; every reply is read with [`parse`] or the
//! header accessors here.
//!
//! It must not send anything but to the address a test gives it, and must not retry a query
//! unless the helper says it does ([`udp_ask`] resends, as a stub resolver does).

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// A generous per-query deadline for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(5);

/// The EDNS payload size [`query`] advertises when asked for EDNS (RFC 9715's 1232).
pub const EDNS_PAYLOAD: u16 = 1232;

/// A standard query message: ID `id`, RD set, class IN, optional EDNS payload size.
pub fn query_msg(id: u16, name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let qname = Name::from_ascii(name).unwrap_or_else(|e| panic!("test name {name:?}: {e}"));
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(qname, qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

/// [`query_msg`], encoded.
pub fn query_bytes(id: u16, name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    query_msg(id, name, qtype, edns)
        .to_vec()
        .expect("encode test query")
}

/// A standard query by type number, with an OPT record of [`EDNS_PAYLOAD`] bytes when `edns`.
pub fn query(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    query_bytes(
        id,
        name,
        RecordType::from(qtype),
        edns.then_some(EDNS_PAYLOAD),
    )
}

/// A dotted name as uncompressed wire labels (for hand-made packets hickory would refuse).
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

/// Decodes a reply; panics with the cause when it is not a DNS message.
pub fn parse(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap_or_else(|e| panic!("reply is not a DNS message: {e}"))
}

/// Response code (the header's low 4 bits; no EDNS extension).
pub fn rcode(resp: &[u8]) -> u8 {
    resp[3] & 0x0F
}

/// Answer count from the header.
pub fn ancount(resp: &[u8]) -> u16 {
    u16::from_be_bytes([resp[6], resp[7]])
}

/// Message ID.
pub fn id_of(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[0], msg[1]])
}

/// The IPv4 answers, in order.
pub fn v4(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// A reply, reduced to what tests compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Response code.
    pub rcode: ResponseCode,
    /// Answer data as text (addresses, PTR targets), sorted.
    pub answers: Vec<String>,
    /// Answer data in the order received.
    pub ordered: Vec<String>,
}

impl Reply {
    /// Reduces a reply to the records of type `qtype`.
    pub fn of(m: &Message, qtype: RecordType) -> Reply {
        let ordered: Vec<String> = m
            .answers
            .iter()
            .filter(|r| r.record_type() == qtype)
            .map(|r| match &r.data {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                RData::PTR(p) => p.0.to_ascii().to_ascii_lowercase(),
                other => other.to_string(),
            })
            .collect();
        let mut answers = ordered.clone();
        answers.sort();
        Reply {
            rcode: m.metadata.response_code,
            answers,
            ordered,
        }
    }

    /// The answers as addresses.
    pub fn addrs(&self) -> BTreeSet<IpAddr> {
        self.answers.iter().filter_map(|a| a.parse().ok()).collect()
    }

    /// NOERROR with no answers.
    pub fn is_nodata(&self) -> bool {
        self.rcode == ResponseCode::NoError && self.answers.is_empty()
    }
}

/// Asks `server` over UDP from an unspecified address of its family, three tries of 1.5 s,
/// and reduces the reply (see [`Reply`]).
pub fn ask_reply(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Reply, String> {
    let id = (Instant::now().elapsed().subsec_nanos() & 0xffff) as u16 ^ 0x5a5a;
    let bytes = query_msg(id, name, qtype, None)
        .to_vec()
        .map_err(|e| e.to_string())?;
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    for _ in 0..3 {
        sock.send_to(&bytes, server).map_err(|e| e.to_string())?;
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let reply = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
        if reply.metadata.id != id {
            continue;
        }
        return Ok(Reply::of(&reply, qtype));
    }
    Err(format!("no reply from {server} for {name} {qtype}"))
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

/// Polls `f` until it returns Some; panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(40));
    }
}
