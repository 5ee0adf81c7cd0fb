//! Per-client upstreams on loopback (issue 10), with static containers standing in for Docker's:
//! a container's own `dns` servers answer its questions (in its order, failing over like
//! Docker), everyone else gets `[upstream] servers`; a client that sees internal networks only
//! is forwarded to its own servers inside those networks, else gets SERVFAIL at once; and with
//! Docker's resolver (127.0.0.11) as upstream, a name of a container on a network the client does
//! not see is never asked there (NXDOMAIN), while other names still are.
//!
//! Clients are the containers' own loopback addresses (127.0.1.5, ...): a query sent from a
//! socket bound there is that container's. Fake upstreams listen on loopback addresses too
//! (127.0.0.1, 127.0.2.53 inside the internal network's subnet, 127.0.0.11 for Docker's
//! resolver), each on an ephemeral port. Nothing leaves loopback.

mod kit;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use kit::aio::{start, TestServer, WAIT};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

/// A fake DNS server on a chosen loopback address: answers every A question with `answer`
/// (or stays silent when `answer` is `None`) over UDP and TCP, and records the names asked.
struct Fake {
    addr: SocketAddr,
    names: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fake {
    fn saw(&self, name: &str) -> bool {
        let n = format!("{}.", name.to_ascii_lowercase());
        self.names.lock().unwrap().contains(&n)
    }
    fn asked(&self) -> usize {
        self.names.lock().unwrap().len()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn reply(q: &Message, answer: Ipv4Addr) -> Option<Vec<u8>> {
    let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.add_queries(q.queries.clone());
    let query = q.queries.first()?;
    r.add_answer(Record::from_rdata(
        query.name().clone(),
        60,
        RData::A(A(answer)),
    ));
    r.to_vec().ok()
}

async fn fake_at(ip: &str, answer: Option<Ipv4Addr>) -> Fake {
    let ip: IpAddr = ip.parse().unwrap();
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind((ip, 0)).await.expect("bind fake udp");
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind((ip, port)).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().unwrap();
    let names = Arc::new(Mutex::new(Vec::new()));
    let n1 = names.clone();
    let t1 = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, src)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if let Some(query) = q.queries.first() {
                n1.lock()
                    .unwrap()
                    .push(query.name().to_ascii().to_ascii_lowercase());
            }
            if let Some(r) = answer.and_then(|a| reply(&q, a)) {
                let _ = udp.send_to(&r, src).await;
            }
        }
    });
    let n2 = names.clone();
    let t2 = tokio::spawn(async move {
        loop {
            let Ok((mut st, _)) = tcp.accept().await else {
                continue;
            };
            let n2 = n2.clone();
            tokio::spawn(async move {
                while let Ok(len) = st.read_u16().await {
                    let mut b = vec![0u8; usize::from(len)];
                    if st.read_exact(&mut b).await.is_err() {
                        return;
                    }
                    let Ok(q) = Message::from_vec(&b) else { return };
                    if let Some(query) = q.queries.first() {
                        n2.lock()
                            .unwrap()
                            .push(query.name().to_ascii().to_ascii_lowercase());
                    }
                    let Some(r) = answer.and_then(|a| reply(&q, a)) else {
                        continue;
                    };
                    let mut f = (r.len() as u16).to_be_bytes().to_vec();
                    f.extend_from_slice(&r);
                    if st.write_all(&f).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Fake {
        addr,
        names,
        tasks: vec![t1, t2],
    }
}

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::new(0x5151, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// Asks `server` over UDP from the client address `src` (a container's own address).
async fn ask_as(src: &str, server: SocketAddr, name: &str) -> Message {
    let sock = UdpSocket::bind((src.parse::<IpAddr>().unwrap(), 0))
        .await
        .expect("bind client");
    sock.send_to(&query(name), server).await.expect("send");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no reply for {name} from {src}"))
        .expect("recv");
    Message::from_vec(&buf[..n]).expect("decode")
}

/// Asks `server` over TCP from the client address `src`.
async fn ask_tcp_as(src: &str, server: SocketAddr, name: &str) -> Message {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src.parse().unwrap(), 0)).unwrap();
    let mut st = sock.connect(server).await.expect("connect");
    let q = query(name);
    let mut f = (q.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(&q);
    st.write_all(&f).await.unwrap();
    let fut = async {
        let len = st.read_u16().await.ok()?;
        let mut b = vec![0u8; usize::from(len)];
        st.read_exact(&mut b).await.ok()?;
        Some(b)
    };
    let b = tokio::time::timeout(WAIT, fut)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no TCP reply for {name} from {src}"));
    Message::from_vec(&b).expect("decode")
}

fn v4(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

const DEFAULT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OWN_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 55);
const ONNET_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

/// Networks `front` (127.0.1.0/24), internal `back` (127.0.2.0/24) and `side`
/// (127.0.3.0/24); `[upstream] servers = [default]`.
fn lab_toml(default: SocketAddr, own: &[SocketAddr], onnet: SocketAddr) -> String {
    let list = |l: &[SocketAddr]| -> String {
        l.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
[server]
ttl = 5

[upstream]
servers = ["{default}"]
timeout_ms = 300
budget_ms = 900

[[network]]
name = "front"
subnet = "127.0.1.0/24"

[[network.container]]
name = "own"
ipv4 = ["127.0.1.5"]
dns = [{own}]

[[network.container]]
name = "plain"
ipv4 = ["127.0.1.6"]

[[network]]
name = "back"
internal = true
subnet = "127.0.2.0/24"

[[network.container]]
name = "vault"
ipv4 = ["127.0.2.5"]
dns = ["{onnet}"]

[[network.container]]
name = "offnet"
ipv4 = ["127.0.2.6"]
dns = ["{default}"]

[[network.container]]
name = "bare"
ipv4 = ["127.0.2.7"]

[[network]]
name = "side"
subnet = "127.0.3.0/24"

[[network.container]]
name = "secret"
ipv4 = ["127.0.3.5"]
"#,
        own = list(own)
    )
}

async fn lab(default: &Fake, own: &[SocketAddr], onnet: &Fake) -> TestServer {
    start(&lab_toml(default.addr, own, onnet.addr)).await
}

/// Docker's rule: a container's own servers answer its questions, in its order (the next on
/// a timeout), over UDP and TCP; a container without servers uses the default ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containers_own_servers_answer_its_questions() {
    let default = fake_at("127.0.0.1", Some(DEFAULT_IP)).await;
    let silent = fake_at("127.0.0.1", None).await;
    let own = fake_at("127.0.0.1", Some(OWN_IP)).await;
    let onnet = fake_at("127.0.2.53", Some(ONNET_IP)).await;
    let s = lab(&default, &[silent.addr, own.addr], &onnet).await;

    let m = ask_as("127.0.1.5", s.addr, "only.own.test").await;
    assert_eq!(v4(&m), [OWN_IP], "{m:?}");
    assert!(
        silent.saw("only.own.test"),
        "its first server is tried first"
    );
    assert!(!default.saw("only.own.test"), "never the default servers");
    let m = ask_tcp_as("127.0.1.5", s.addr, "tcp.own.test").await;
    assert_eq!(v4(&m), [OWN_IP], "{m:?}");
    assert!(!default.saw("tcp.own.test"));
    // Its local names are still answered from the tables.
    let m = ask_as("127.0.1.5", s.addr, "plain").await;
    assert_eq!(v4(&m), [Ipv4Addr::new(127, 0, 1, 6)]);

    // A container without servers of its own, and a client that is no container: the default.
    for src in ["127.0.1.6", "127.0.0.1"] {
        let name = format!("q{}.default.test", src.replace('.', "-"));
        let m = ask_as(src, s.addr, &name).await;
        assert_eq!(v4(&m), [DEFAULT_IP], "{src}: {m:?}");
        assert!(!own.saw(&name) && !silent.saw(&name), "{src}");
    }
    // The same name from both: each gets its own server's answer (no shared cache entry).
    let a = ask_as("127.0.1.6", s.addr, "shared.test").await;
    let b = ask_as("127.0.1.5", s.addr, "shared.test").await;
    assert_eq!((v4(&a), v4(&b)), (vec![DEFAULT_IP], vec![OWN_IP]));
    s.stop().await;
}

/// A client that sees internal networks only: forwarded to its own server inside the internal
/// network (as Docker does), else SERVFAIL at once (current Docker; 20.10 stays silent) —
/// never the default servers, never NXDOMAIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_clients_reach_only_on_network_servers() {
    let default = fake_at("127.0.0.1", Some(DEFAULT_IP)).await;
    let own = fake_at("127.0.0.1", Some(OWN_IP)).await;
    let onnet = fake_at("127.0.2.53", Some(ONNET_IP)).await;
    let s = lab(&default, &[own.addr], &onnet).await;

    let m = ask_as("127.0.2.5", s.addr, "inside.test").await;
    assert_eq!(v4(&m), [ONNET_IP], "{m:?}");
    let m = ask_tcp_as("127.0.2.5", s.addr, "inside-tcp.test").await;
    assert_eq!(v4(&m), [ONNET_IP], "{m:?}");
    for src in ["127.0.2.6", "127.0.2.7"] {
        let t0 = Instant::now();
        let m = ask_as(src, s.addr, "outside.test").await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::ServFail,
            "{src}: {m:?}"
        );
        assert!(m.answers.is_empty());
        assert!(
            t0.elapsed() < Duration::from_millis(250),
            "{src}: SERVFAIL at once, not after an upstream timeout ({:?})",
            t0.elapsed()
        );
        let m = ask_tcp_as(src, s.addr, "outside.test").await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{src}");
        // Its own network's names still resolve; other networks' names are not its.
        let m = ask_as(src, s.addr, "vault").await;
        assert_eq!(v4(&m), [Ipv4Addr::new(127, 0, 2, 5)]);
    }
    assert_eq!(default.asked(), 0, "nothing went to the default servers");
    s.stop().await;
}

/// Docker's resolver (127.0.0.11) as the upstream answers container names from dockns's own
/// scope: such names are never asked there. A client outside the name's scope gets NXDOMAIN
/// (what Docker answers it from its own scope); other names are still forwarded, and a client
/// whose own servers are elsewhere is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_names_are_never_asked_of_dockers_resolver() {
    let docker = fake_at("127.0.0.11", Some(Ipv4Addr::new(127, 0, 3, 5))).await;
    let own = fake_at("127.0.0.1", Some(OWN_IP)).await;
    let onnet = fake_at("127.0.2.53", Some(ONNET_IP)).await;
    let s = lab(&docker, &[own.addr], &onnet).await;

    for name in [
        "secret",
        "secret.side",
        "SECRET.Side",
        "5.3.0.127.in-addr.arpa",
    ] {
        let m = ask_as("127.0.1.6", s.addr, name).await;
        assert_eq!(
            (m.metadata.response_code, m.answers.len()),
            (ResponseCode::NXDomain, 0),
            "{name}: {m:?}"
        );
        let m = ask_tcp_as("127.0.1.6", s.addr, name).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
    assert_eq!(
        docker.asked(),
        0,
        "no container name reached Docker's resolver"
    );
    // Anything else is forwarded there as before.
    let m = ask_as("127.0.1.6", s.addr, "elsewhere.test").await;
    assert_eq!(v4(&m), [Ipv4Addr::new(127, 0, 3, 5)]);
    assert!(docker.saw("elsewhere.test"));
    // A client with its own servers asks them, container name or not.
    let m = ask_as("127.0.1.5", s.addr, "secret").await;
    assert_eq!(v4(&m), [OWN_IP]);
    s.stop().await;
}
