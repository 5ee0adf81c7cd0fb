//! The upstream UDP transport: a pool of long-lived sockets on random source ports, a pending
//! table that matches replies to the questions asked, and one receiver thread.
//!
//! A forwarded question costs no task and no socket: the caller's thread (a UDP worker, or the
//! async path through a oneshot completion) picks a pool socket of the server's address family,
//! a random 16-bit ID free on that socket, records the question in that socket's pending table
//! and sends with one non-blocking `sendto`. Identical questions in flight (same de-duplication
//! key) join the first one's entry instead of asking again. The receiver thread waits on all
//! pool sockets with `epoll`, reads replies in batches (`recvmmsg`), and accepts a reply only
//! when it came from the exact address and port asked, on the socket asked from, with the ID
//! sent and the question section byte for byte as sent (letter case included, which is what
//! makes the optional 0x20 case randomisation an anti-spoofing check). Anything else is dropped
//! and counted. ICMP errors (IP_RECVERR: port or host unreachable) fail the try they name at
//! once, as a connected socket would. Every [`SWEEP`] the thread retries questions whose try timed out on the next
//! server, answers SERVFAIL when the budget is spent, and re-opens sockets on the schedule (a
//! socket is replaced after [`PoolConfig::reopen_queries`] queries or
//! [`PoolConfig::reopen_after`], whichever comes first; the old one is closed once its last
//! pending question is done), so source ports keep changing.
//!
//! This module is transport only: which servers to ask, whether an rcode counts as an answer,
//! the cache and the client's reply are the [`Policy`]'s (`forward/mod.rs`, `engine.rs`). It
//! never blocks the caller's thread and never allocates per reply on the receive side except
//! what the policy does.

use crate::mmsg::MsgBatch;
use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// How often the receiver thread looks for timed-out tries and sockets due for re-opening.
pub const SWEEP: Duration = Duration::from_millis(10);
/// Pool sockets per address family (each is one shard of the pending table).
pub const SOCKETS_PER_FAMILY: usize = 4;
/// Default re-open schedule: a socket carries at most this many queries...
pub const REOPEN_QUERIES: u64 = 1000;
/// ...and lives at most this long.
pub const REOPEN_AFTER: Duration = Duration::from_secs(10);
/// Datagrams read per `recvmmsg`.
const BATCH: usize = 32;
/// Room for any UDP reply.
const RECV_BUF: usize = 65_535;
/// De-duplication shards.
const DEDUP_SHARDS: usize = 16;
/// How long the receiver thread sleeps when nothing is in flight (a submit wakes it at once).
const IDLE_WAIT_MS: i32 = 1000;
/// The epoll token of the wake-up eventfd (socket ids start at 1).
const WAKE: u64 = 0;

/// Settings of the pool.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Per-try timeout.
    pub timeout: Duration,
    /// Total time per question.
    pub budget: Duration,
    /// Sockets per address family.
    pub sockets: usize,
    /// Re-open a socket after it carried this many queries.
    pub reopen_queries: u64,
    /// Re-open a socket after it has been open this long.
    pub reopen_after: Duration,
    /// Randomise the letter case of the upstream query name (0x20) and require it back.
    pub randomize_case: bool,
}

/// What one try came to, for the policy's health and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A reply the policy accepted.
    Answer,
    /// A reply the policy refused (SERVFAIL, REFUSED): the next server is tried.
    Refused,
    /// No matching reply within the per-try timeout.
    Timeout,
    /// The send failed.
    Io,
}

/// What the policy makes of a reply that matched a try at the transport level (the server's
/// address and port, the socket, the ID and the question bytes exactly as sent).
#[derive(Debug)]
pub enum Verdict<A> {
    /// Not the answer after all: keep waiting (counted as mismatched).
    Ignore,
    /// The answer, but broken: dropped (the policy counts it); keep waiting.
    Malformed,
    /// The server failed (SERVFAIL, REFUSED...): the next server is tried.
    Failed,
    /// The answer.
    Accept(A),
}

/// The forwarding policy the transport calls back into: `W` is a waiting client, `A` an
/// accepted answer. Implemented by the forwarder (`engine.rs`); a test double in the unit
/// tests.
pub trait Policy<W, A>: Send + Sync {
    /// A try was sent to `server`.
    fn sent(&self, server: SocketAddr);
    /// How a try at `server` ended.
    fn tried(&self, server: SocketAddr, outcome: Outcome);
    /// Judges `reply` from `server` to `query` (as sent; its question ends at `qend`).
    fn judge(&self, server: SocketAddr, query: &[u8], qend: usize, reply: &[u8]) -> Verdict<A>;
    /// The accepted answer, once per question, with the first waiter (for the cache).
    fn answered(&self, first: &W, answer: &A);
    /// Answers one waiter: with the accepted answer, or `None` when every try failed.
    fn finish(&self, waiter: W, answer: Option<&A>);
}

/// Transport counters.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Queries sent upstream.
    pub sent: AtomicU64,
    /// Replies dropped: no pending question with that ID on that socket, from another address
    /// or port than the one asked, or with another question.
    pub mismatched: AtomicU64,
    /// Client questions that joined an identical one in flight.
    pub joined: AtomicU64,
    /// Sockets re-opened on the schedule.
    pub reopened: AtomicU64,
    /// Tries that timed out.
    pub timeouts: AtomicU64,
    /// Replies that matched a try but were broken (dropped).
    pub malformed: AtomicU64,
}

struct Pending<W> {
    server: SocketAddr,
    /// The upstream query as sent (its ID and letter case included).
    query: Box<[u8]>,
    /// End of the question section in `query`.
    qend: usize,
    key: Option<Box<[u8]>>,
    servers: Box<[SocketAddr]>,
    /// Index in `servers` of the next server to try.
    next: usize,
    try_deadline: Instant,
    deadline: Instant,
    waiters: Vec<W>,
}

struct Table<W> {
    map: FxHashMap<u16, Pending<W>>,
    /// Set (under this lock) when the socket is closed: nothing may be added any more.
    closed: bool,
}

struct PoolSock<W> {
    id: u64,
    sock: UdpSocket,
    table: Mutex<Table<W>>,
    sent: AtomicU64,
    opened: Instant,
}

impl<W> PoolSock<W> {
    fn table(&self) -> MutexGuard<'_, Table<W>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a question is in flight: socket and ID.
type Loc = (u64, u16);
/// One shard of the de-duplication map: key to where the question is in flight.
type DedupShard = Mutex<FxHashMap<Box<[u8]>, Loc>>;

/// The pool. See the module docs.
pub struct Pool<W, A> {
    cfg: PoolConfig,
    v4: Box<[ArcSwap<PoolSock<W>>]>,
    v6: Box<[ArcSwap<PoolSock<W>>]>,
    /// Every open socket by id (the slots' current ones and retired ones still draining).
    open: Mutex<HashMap<u64, Arc<PoolSock<W>>>>,
    dedup: Box<[DedupShard]>,
    epfd: RawFd,
    /// An eventfd in `epfd` that wakes an idle receiver thread.
    wake: RawFd,
    /// Entries in the pending tables.
    inflight: std::sync::atomic::AtomicUsize,
    /// Set by the receiver thread before it sleeps long (nothing in flight).
    idle: AtomicBool,
    next_id: AtomicU64,
    rr: AtomicU64,
    ports: (u16, u16),
    stop: AtomicBool,
    /// Counters.
    pub stats: PoolStats,
    _answer: std::marker::PhantomData<fn() -> A>,
}

impl<W, A> Drop for Pool<W, A> {
    fn drop(&mut self) {
        // SAFETY: the pool owns both descriptors. The receiver thread, woken by the write, finds
        // the pool gone before it uses them again.
        unsafe {
            libc::write(self.wake, 1u64.to_ne_bytes().as_ptr().cast(), 8);
            libc::close(self.wake);
            libc::close(self.epfd);
        };
    }
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`), where source ports are
/// drawn: ports outside it may be wanted by servers (a listener dockns adds later included).
fn port_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|v| v.parse::<u16>().ok());
            let (lo, hi) = (it.next()??, it.next()??);
            (1024 <= lo && lo < hi).then_some((lo, hi))
        })
        .unwrap_or((32768, 60999))
}

/// Binds a UDP socket of `v6`'s family on a random port of `range` (a few tries, then any port
/// the kernel picks), non-blocking.
fn open_socket(v6: bool, range: (u16, u16)) -> io::Result<UdpSocket> {
    let ip: std::net::IpAddr = if v6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let mut last = None;
    for attempt in 0..8 {
        let port = if attempt < 7 {
            rand::random_range(range.0..=range.1)
        } else {
            0
        };
        let s = socket2::Socket::new(
            if v6 {
                socket2::Domain::IPV6
            } else {
                socket2::Domain::IPV4
            },
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if v6 {
            s.set_only_v6(true)?;
        }
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(1 << 20);
        match s.bind(&SocketAddr::new(ip, port).into()) {
            Ok(()) => {
                s.set_nonblocking(true)?;
                // ICMP errors (port or host unreachable) into the error queue, so a try at a
                // closed port fails at once, as it did with connected sockets.
                let (level, name) = if v6 {
                    (libc::SOL_IPV6, libc::IPV6_RECVERR)
                } else {
                    (libc::SOL_IP, libc::IP_RECVERR)
                };
                let one: libc::c_int = 1;
                // SAFETY: setting an int option on a socket we own.
                unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        level,
                        name,
                        (&one as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                return Ok(s.into());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port")))
}

/// Flips the case of ASCII letters of the question name at random (0x20).
fn randomize_case(query: &mut [u8]) {
    let mut at = 12;
    let mut bits: u64 = rand::random();
    let mut left = 64;
    while at < query.len() {
        let len = usize::from(query[at]);
        if len == 0 || len & 0xC0 != 0 {
            break;
        }
        let end = (at + 1 + len).min(query.len());
        for b in &mut query[at + 1..end] {
            if b.is_ascii_alphabetic() {
                if left == 0 {
                    bits = rand::random();
                    left = 64;
                }
                if bits & 1 == 1 {
                    *b ^= 0x20;
                }
                bits >>= 1;
                left -= 1;
            }
        }
        at = end;
    }
}

/// End of the question section of a query with one question (`None` if malformed).
fn question_end(q: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let len = usize::from(*q.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        at += 1 + len;
    }
    let end = at + 4;
    (end <= q.len()).then_some(end)
}

impl<W: Send + 'static, A: 'static> Pool<W, A> {
    /// Opens the sockets and starts the receiver thread, which calls back into `policy` and ends
    /// when the pool or the policy is dropped.
    pub fn start(
        cfg: PoolConfig,
        policy: Weak<dyn Policy<W, A>>,
        runtime: Option<tokio::runtime::Handle>,
    ) -> io::Result<Arc<Pool<W, A>>> {
        // SAFETY: plain system call; the descriptor is owned by the pool from here on.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain system calls on descriptors we own.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKE,
        };
        if wake < 0 || unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, wake, &mut ev) } < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: closing what we opened.
            unsafe {
                if wake >= 0 {
                    libc::close(wake);
                }
                libc::close(epfd);
            }
            return Err(e);
        }
        let n = cfg.sockets.max(1);
        let mut pool = Pool {
            cfg,
            v4: Box::new([]),
            v6: Box::new([]),
            open: Mutex::new(HashMap::new()),
            dedup: (0..DEDUP_SHARDS)
                .map(|_| Mutex::new(FxHashMap::default()))
                .collect(),
            epfd,
            wake,
            inflight: std::sync::atomic::AtomicUsize::new(0),
            idle: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            rr: AtomicU64::new(0),
            ports: port_range(),
            stop: AtomicBool::new(false),
            stats: PoolStats::default(),
            _answer: std::marker::PhantomData,
        };
        let mut v4 = Vec::new();
        for _ in 0..n {
            v4.push(ArcSwap::new(pool.new_sock(false)?));
        }
        // IPv6 may be missing on the machine: then IPv6 servers fail as I/O errors.
        let mut v6 = Vec::new();
        for _ in 0..n {
            match pool.new_sock(true) {
                Ok(s) => v6.push(ArcSwap::new(s)),
                Err(_) => break,
            }
        }
        pool.v4 = v4.into_boxed_slice();
        pool.v6 = v6.into_boxed_slice();
        let pool = Arc::new(pool);
        let weak = Arc::downgrade(&pool);
        std::thread::Builder::new()
            .name("upstream-rx".into())
            .spawn(move || {
                let _rt = runtime.as_ref().map(|h| h.enter());
                receiver(weak, policy);
            })?;
        Ok(pool)
    }

    fn new_sock(&self, v6: bool) -> io::Result<Arc<PoolSock<W>>> {
        let sock = open_socket(v6, self.ports)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: id,
        };
        // SAFETY: registering a descriptor we own with our own epoll instance.
        if unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_ADD, sock.as_raw_fd(), &mut ev) } < 0
        {
            return Err(io::Error::last_os_error());
        }
        let s = Arc::new(PoolSock {
            id,
            sock,
            table: Mutex::new(Table {
                map: FxHashMap::default(),
                closed: false,
            }),
            sent: AtomicU64::new(0),
            opened: Instant::now(),
        });
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, s.clone());
        Ok(s)
    }

    fn dedup_shard(&self, key: &[u8]) -> MutexGuard<'_, FxHashMap<Box<[u8]>, Loc>> {
        use std::hash::{BuildHasher, Hasher};
        let mut h = rustc_hash::FxBuildHasher.build_hasher();
        h.write(key);
        self.dedup[(h.finish() as usize) % DEDUP_SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Questions in flight (entries in the pending tables).
    pub fn pending(&self) -> usize {
        self.open_sockets()
            .iter()
            .map(|s| s.table().map.len())
            .sum()
    }

    /// The local addresses of the current pool sockets.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.v4
            .iter()
            .chain(self.v6.iter())
            .filter_map(|s| s.load().sock.local_addr().ok())
            .collect()
    }

    /// Asks `servers` in order (the first at once) the upstream `query` (its ID is replaced),
    /// for `waiter`. With a `key`, an identical question in flight is joined instead. Never
    /// blocks; every waiter is eventually finished through the policy, SERVFAIL included.
    pub fn submit(
        &self,
        policy: &dyn Policy<W, A>,
        query: &[u8],
        key: Option<Box<[u8]>>,
        servers: Box<[SocketAddr]>,
        waiter: W,
    ) {
        let Some(qend) = question_end(query) else {
            policy.finish(waiter, None);
            return;
        };
        let now = Instant::now();
        let Some(key) = key else {
            let p = self.pending_for(query, qend, None, servers, waiter, now);
            self.send_next(policy, p, now);
            return;
        };
        let mut dedup = self.dedup_shard(&key);
        let waiter = match dedup.get(&key) {
            Some(&(sock, id)) => match self.join(sock, id, waiter) {
                Ok(()) => {
                    self.stats.joined.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(w) => w,
            },
            None => waiter,
        };
        // The entry is placed while the shard is held, so an identical question arriving now
        // joins it.
        let p = self.pending_for(query, qend, Some(key.clone()), servers, waiter, now);
        match self.place(policy, p, now) {
            Ok(loc) => {
                dedup.insert(key, loc);
            }
            Err(p) => {
                dedup.remove(&key);
                drop(dedup);
                self.fail(policy, p.waiters);
            }
        }
    }

    fn pending_for(
        &self,
        query: &[u8],
        qend: usize,
        key: Option<Box<[u8]>>,
        servers: Box<[SocketAddr]>,
        waiter: W,
        now: Instant,
    ) -> Pending<W> {
        let mut query: Box<[u8]> = query.into();
        if self.cfg.randomize_case {
            randomize_case(&mut query[..qend]);
        }
        Pending {
            server: servers
                .first()
                .copied()
                .unwrap_or((Ipv4Addr::UNSPECIFIED, 0).into()),
            query,
            qend,
            key,
            servers,
            next: 0,
            try_deadline: now,
            deadline: now + self.cfg.budget,
            waiters: vec![waiter],
        }
    }

    /// Adds a waiter to the question in flight at `(sock, id)`; gives it back if that is gone.
    fn join(&self, sock: u64, id: u16, waiter: W) -> Result<(), W> {
        let s = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sock)
            .cloned();
        let Some(s) = s else { return Err(waiter) };
        let mut t = s.table();
        match t.map.get_mut(&id) {
            Some(p) => {
                p.waiters.push(waiter);
                Ok(())
            }
            None => Err(waiter),
        }
    }

    /// Sends `p` to its next server: where it now waits, or `p` back when no server is left
    /// within the budget (its waiters are then owed SERVFAIL).
    fn place(
        &self,
        policy: &dyn Policy<W, A>,
        mut p: Pending<W>,
        now: Instant,
    ) -> Result<Loc, Box<Pending<W>>> {
        while p.next < p.servers.len() && now < p.deadline {
            let server = p.servers[p.next];
            p.next += 1;
            p.server = server;
            p.try_deadline = (now + self.cfg.timeout).min(p.deadline);
            let slots = if server.is_ipv4() { &self.v4 } else { &self.v6 };
            if slots.is_empty() {
                policy.tried(server, Outcome::Io);
                continue;
            }
            let slot = &slots[(self.rr.fetch_add(1, Ordering::Relaxed) as usize) % slots.len()];
            loop {
                let s = slot.load_full();
                let mut t = s.table();
                if t.closed {
                    continue; // replaced just now: take the new one
                }
                let id = loop {
                    let id: u16 = rand::random();
                    if !t.map.contains_key(&id) {
                        break id;
                    }
                };
                p.query[0..2].copy_from_slice(&id.to_be_bytes());
                // Sent under the table lock, so the reply cannot be looked up before the
                // entry is in.
                if s.sock.send_to(&p.query, server).is_err() {
                    break;
                }
                t.map.insert(id, p);
                drop(t);
                self.inflight.fetch_add(1, Ordering::SeqCst);
                if self.idle.load(Ordering::SeqCst) && self.idle.swap(false, Ordering::SeqCst) {
                    // SAFETY: writing 8 bytes to our own eventfd.
                    unsafe { libc::write(self.wake, 1u64.to_ne_bytes().as_ptr().cast(), 8) };
                }
                s.sent.fetch_add(1, Ordering::Relaxed);
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                policy.sent(server);
                return Ok((s.id, id));
            }
            policy.tried(server, Outcome::Io);
        }
        Err(Box::new(p))
    }

    /// [`Pool::place`] for a question not (or no longer) in the de-duplication map under its
    /// new location; SERVFAIL when nothing is left.
    fn send_next(&self, policy: &dyn Policy<W, A>, p: Pending<W>, now: Instant) {
        if let Err(p) = self.place(policy, p, now) {
            self.fail(policy, p.waiters);
        }
    }

    /// Retries a question that left `old` (timeout or refused) and re-points its key.
    fn retry(&self, policy: &dyn Policy<W, A>, mut p: Pending<W>, old: Loc, now: Instant) {
        match p.key.take() {
            None => self.send_next(policy, p, now),
            Some(key) => {
                let mut dedup = self.dedup_shard(&key);
                let ours = dedup.get(&key) == Some(&old);
                if ours {
                    p.key = Some(key.clone());
                }
                match self.place(policy, p, now) {
                    Ok(loc) => {
                        if ours {
                            dedup.insert(key, loc);
                        }
                    }
                    Err(p) => {
                        if ours {
                            dedup.remove(&key);
                        }
                        drop(dedup);
                        self.fail(policy, p.waiters);
                    }
                }
            }
        }
    }

    fn forget(&self, key: &Option<Box<[u8]>>, loc: Loc) {
        if let Some(key) = key {
            let mut dedup = self.dedup_shard(key);
            if dedup.get(key) == Some(&loc) {
                dedup.remove(key);
            }
        }
    }

    fn fail(&self, policy: &dyn Policy<W, A>, waiters: Vec<W>) {
        for w in waiters {
            policy.finish(w, None);
        }
    }

    /// One datagram received on pool socket `s` from `from`.
    fn on_reply(&self, policy: &dyn Policy<W, A>, s: &PoolSock<W>, from: SocketAddr, reply: &[u8]) {
        if reply.len() < 12 {
            self.stats.mismatched.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let id = u16::from_be_bytes([reply[0], reply[1]]);
        let (mut p, answer) = {
            let mut t = s.table();
            let verdict = match t.map.get(&id) {
                Some(p)
                    if p.server == from
                        && reply[2] & 0x80 != 0
                        && reply[4..6] == [0, 1]
                        && reply.len() >= p.qend
                        && reply[12..p.qend] == p.query[12..p.qend] =>
                {
                    policy.judge(p.server, &p.query, p.qend, reply)
                }
                _ => Verdict::Ignore,
            };
            let answer = match verdict {
                Verdict::Ignore => {
                    drop(t);
                    self.stats.mismatched.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Verdict::Malformed => {
                    drop(t);
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Verdict::Failed => None,
                Verdict::Accept(a) => Some(a),
            };
            let Some(p) = t.map.remove(&id) else { return };
            self.inflight.fetch_sub(1, Ordering::SeqCst);
            (p, answer)
        };
        let loc = (s.id, id);
        let Some(answer) = answer else {
            policy.tried(p.server, Outcome::Refused);
            self.retry(policy, p, loc, Instant::now());
            return;
        };
        policy.tried(p.server, Outcome::Answer);
        self.forget(&p.key, loc);
        if let Some(first) = p.waiters.first() {
            policy.answered(first, &answer);
        }
        for w in p.waiters.drain(..) {
            policy.finish(w, Some(&answer));
        }
    }

    /// Reads the ICMP errors queued on `s` (IP_RECVERR): each fails the try it names (the
    /// original query's ID, sent to the address that could not be reached) at once.
    fn on_errors(&self, policy: &dyn Policy<W, A>, s: &PoolSock<W>) {
        for _ in 0..64 {
            let Some((dest, id)) = read_error(s.sock.as_raw_fd()) else {
                return;
            };
            let p = {
                let mut t = s.table();
                if t.map.get(&id).is_none_or(|p| p.server != dest) {
                    continue;
                }
                let Some(p) = t.map.remove(&id) else { continue };
                self.inflight.fetch_sub(1, Ordering::SeqCst);
                p
            };
            policy.tried(p.server, Outcome::Io);
            self.retry(policy, p, (s.id, id), Instant::now());
        }
    }

    /// Retries or fails every try past its deadline; re-opens sockets due; closes drained ones.
    fn sweep(&self, policy: &dyn Policy<W, A>, now: Instant) {
        let open = self.open_sockets();
        let mut expired = Vec::new();
        for s in &open {
            let mut t = s.table();
            if t.map.values().any(|p| p.try_deadline <= now) {
                let ids: Vec<u16> = t
                    .map
                    .iter()
                    .filter(|(_, p)| p.try_deadline <= now)
                    .map(|(&id, _)| id)
                    .collect();
                for id in ids {
                    if let Some(p) = t.map.remove(&id) {
                        self.inflight.fetch_sub(1, Ordering::SeqCst);
                        expired.push(((s.id, id), p));
                    }
                }
            }
        }
        for (loc, p) in expired {
            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            policy.tried(p.server, Outcome::Timeout);
            self.retry(policy, p, loc, now);
        }
        // Re-open on the schedule.
        for (slots, v6) in [(&self.v4, false), (&self.v6, true)] {
            for slot in slots.iter() {
                let cur = slot.load();
                let sent = cur.sent.load(Ordering::Relaxed);
                // An unused socket has revealed nothing: it is not re-opened by age.
                if sent >= self.cfg.reopen_queries
                    || (sent > 0 && now.duration_since(cur.opened) >= self.cfg.reopen_after)
                {
                    drop(cur);
                    if let Ok(s) = self.new_sock(v6) {
                        slot.store(s);
                        self.stats.reopened.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        // Close retired sockets whose last question is done.
        let current: Vec<u64> = self
            .v4
            .iter()
            .chain(self.v6.iter())
            .map(|s| s.load().id)
            .collect();
        for s in open {
            if current.contains(&s.id) {
                continue;
            }
            let mut t = s.table();
            if t.map.is_empty() {
                t.closed = true;
                drop(t);
                // SAFETY: deregistering a descriptor we own from our own epoll instance.
                unsafe {
                    libc::epoll_ctl(
                        self.epfd,
                        libc::EPOLL_CTL_DEL,
                        s.sock.as_raw_fd(),
                        std::ptr::null_mut(),
                    )
                };
                self.open
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&s.id);
            }
        }
    }
}

/// One entry of a socket's error queue: the destination of the datagram that failed and its
/// DNS ID, when the error is an ICMP one (`None` when the queue is empty).
fn read_error(fd: RawFd) -> Option<(SocketAddr, u16)> {
    loop {
        let mut payload = [0u8; 64];
        let mut control = [0u64; 64];
        let mut name = socket2::SockAddrStorage::zeroed();
        let mut iov = libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: payload.len(),
        };
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut name as *mut socket2::SockAddrStorage).cast();
        msg.msg_namelen = name.size_of();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: every pointer in `msg` points at a local buffer that outlives the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if n < 0 {
            return None;
        }
        let mut icmp = false;
        // SAFETY: walking the control messages the kernel wrote into `control`, with the
        // kernel's own CMSG macros; each data pointer is read only when the level and type say
        // it holds a sock_extended_err.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
                if (level == libc::SOL_IP && kind == libc::IP_RECVERR)
                    || (level == libc::SOL_IPV6 && kind == libc::IPV6_RECVERR)
                {
                    let e = std::ptr::read_unaligned(
                        libc::CMSG_DATA(c).cast::<libc::sock_extended_err>(),
                    );
                    icmp |= e.ee_origin == libc::SO_EE_ORIGIN_ICMP
                        || e.ee_origin == libc::SO_EE_ORIGIN_ICMP6;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        // SAFETY: the kernel wrote `msg_namelen` bytes of a socket address into `name`.
        let dest = unsafe { socket2::SockAddr::new(name, msg.msg_namelen) }.as_socket();
        if let (true, Some(dest), true) = (icmp, dest, n >= 2) {
            return Some((dest, u16::from_be_bytes([payload[0], payload[1]])));
        }
        // Not an ICMP error about one of our queries: skip it.
    }
}

/// The receiver thread: replies in batches, and the sweep.
fn receiver<W: Send + 'static, A: 'static>(
    pool_weak: Weak<Pool<W, A>>,
    policy_weak: Weak<dyn Policy<W, A>>,
) {
    let mut batch = MsgBatch::new(BATCH, RECV_BUF, true);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut socks: FxHashMap<u64, Arc<PoolSock<W>>> = FxHashMap::default();
    let mut next_sweep = Instant::now() + SWEEP;
    // After a busy round the thread polls without sleeping for a short while (as the UDP
    // workers do): a sleep and wake per reply costs more than a few empty polls.
    let mut spin_until: Option<Instant> = None;
    loop {
        let (Some(pool), Some(policy)) = (pool_weak.upgrade(), policy_weak.upgrade()) else {
            return;
        };
        if pool.stop.load(Ordering::Relaxed) {
            return;
        }
        let wait_ms = pool.wait_ms(Instant::now(), next_sweep, &mut spin_until);
        let epfd = pool.epfd;
        // Not kept alive across the wait, so dropping the forwarder is not delayed by it.
        drop(pool);
        drop(policy);
        // SAFETY: `events` is ours and sized as passed. `epfd` may be closed while we wait
        // (the pool dropped): the wait then just ends, and the upgrade below fails.
        let n =
            unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, wait_ms) };
        let (Some(pool), Some(policy)) = (pool_weak.upgrade(), policy_weak.upgrade()) else {
            return;
        };
        pool.idle.store(false, Ordering::SeqCst);
        let ready = &events[..n.max(0) as usize];
        let got = pool.drain(&*policy, ready, &mut socks, &mut batch);
        if got >= 4 {
            spin_until = Some(Instant::now() + Duration::from_micros(50));
        }
        let now = Instant::now();
        if now >= next_sweep {
            pool.sweep(&*policy, now);
            next_sweep = now + SWEEP;
            // Drop our references to sockets the sweep closed.
            let open = pool.open.lock().unwrap_or_else(|e| e.into_inner());
            socks.retain(|k, _| open.contains_key(k));
        }
    }
}

impl<W: Send + 'static, A: 'static> Pool<W, A> {
    /// How long the receiver may wait for events now: 0 while spinning after a busy round,
    /// until the next sweep while queries are in flight, else until a submit wakes it.
    fn wait_ms(&self, now: Instant, next_sweep: Instant, spin_until: &mut Option<Instant>) -> i32 {
        if spin_until.is_some_and(|t| now < t) {
            return 0;
        }
        *spin_until = None;
        self.idle.store(true, Ordering::SeqCst);
        if self.inflight.load(Ordering::SeqCst) == 0 {
            // Nothing to time out: sleep until a submit wakes us (or a while passes).
            IDLE_WAIT_MS
        } else {
            self.idle.store(false, Ordering::SeqCst);
            next_sweep
                .saturating_duration_since(now)
                .as_millis()
                .clamp(1, SWEEP.as_millis()) as i32
        }
    }

    /// The socket with id `sid`, from the receiver's copy `socks` of the open sockets
    /// (refreshed when it lacks `sid`: a socket opened since).
    fn socket_for(
        &self,
        socks: &mut FxHashMap<u64, Arc<PoolSock<W>>>,
        sid: u64,
    ) -> Option<Arc<PoolSock<W>>> {
        if let Some(s) = socks.get(&sid) {
            return Some(s.clone());
        }
        *socks = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        socks.get(&sid).cloned()
    }

    /// Handles the `ready` epoll events: the wake-up eventfd, socket errors and replies.
    /// Returns the number of datagrams read.
    fn drain(
        &self,
        policy: &dyn Policy<W, A>,
        ready: &[libc::epoll_event],
        socks: &mut FxHashMap<u64, Arc<PoolSock<W>>>,
        batch: &mut MsgBatch,
    ) -> usize {
        let mut got = 0;
        for ev in ready {
            let sid = ev.u64;
            if sid == WAKE {
                let mut b = [0u8; 8];
                // SAFETY: reading 8 bytes from our own eventfd into a local buffer.
                unsafe { libc::read(self.wake, b.as_mut_ptr().cast(), 8) };
                continue;
            }
            let Some(s) = self.socket_for(socks, sid) else {
                continue;
            };
            if ev.events & libc::EPOLLERR as u32 != 0 {
                self.on_errors(policy, &s);
            }
            let Ok(k) = batch.recv(s.sock.as_raw_fd(), BATCH, libc::MSG_DONTWAIT) else {
                continue;
            };
            got += k;
            for i in 0..k {
                let (Some(from), false) = (batch.addr(i), batch.truncated(i)) else {
                    self.stats.mismatched.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                self.on_reply(policy, &s, from, batch.packet(i));
            }
        }
        got
    }
}

impl<W, A> Pool<W, A> {
    /// Stops the receiver thread (it also stops by itself when the pool is dropped).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The open sockets, copied out so no pending table is locked under the `open` lock.
    fn open_sockets(&self) -> Vec<Arc<PoolSock<W>>> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the pool reports; waiters are numbers.
    #[derive(Default)]
    struct Recorder {
        done: Mutex<Vec<(u32, Option<Vec<u8>>)>>,
        tried: Mutex<Vec<(SocketAddr, Outcome)>>,
    }

    impl Policy<u32, Vec<u8>> for Recorder {
        fn sent(&self, _: SocketAddr) {}
        fn tried(&self, server: SocketAddr, outcome: Outcome) {
            self.tried.lock().unwrap().push((server, outcome));
        }
        fn judge(&self, _: SocketAddr, _: &[u8], _: usize, reply: &[u8]) -> Verdict<Vec<u8>> {
            match reply[3] & 0x0F {
                2 | 5 => Verdict::Failed,
                1 => Verdict::Malformed,
                _ => Verdict::Accept(reply.to_vec()),
            }
        }
        fn answered(&self, _: &u32, _: &Vec<u8>) {}
        fn finish(&self, w: u32, reply: Option<&Vec<u8>>) {
            self.done.lock().unwrap().push((w, reply.cloned()));
        }
    }

    impl Recorder {
        fn done(&self) -> Vec<(u32, Option<Vec<u8>>)> {
            self.done.lock().unwrap().clone()
        }
    }

    fn cfg() -> PoolConfig {
        PoolConfig {
            timeout: Duration::from_millis(500),
            budget: Duration::from_millis(1000),
            sockets: 2,
            reopen_queries: 1_000_000,
            reopen_after: Duration::from_secs(3600),
            randomize_case: false,
        }
    }

    type TestPool = Pool<u32, Vec<u8>>;

    fn start(cfg: PoolConfig) -> (Arc<Recorder>, Arc<TestPool>) {
        let rec = Arc::new(Recorder::default());
        let weak: Weak<dyn Policy<u32, Vec<u8>>> = Arc::downgrade(&rec) as Weak<_>;
        let pool = Pool::start(cfg, weak, None).unwrap();
        (rec, pool)
    }

    fn query(name: &str) -> Vec<u8> {
        let mut q = vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    /// A reply to `q` exactly as received (ID and question echoed).
    fn reply(q: &[u8]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r[3] = 0x80;
        r
    }

    fn upstream() -> UdpSocket {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        u
    }

    fn recv(u: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 1500];
        let (n, from) = u.recv_from(&mut buf).ok()?;
        Some((buf[..n].to_vec(), from))
    }

    fn wait_for(mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        f()
    }

    #[test]
    fn only_the_exact_reply_from_the_server_asked_is_accepted() {
        let (rec, pool) = start(cfg());
        let up = upstream();
        let server = up.local_addr().unwrap();
        pool.submit(&*rec, &query("a.test"), None, [server].into(), 7);
        let (q, from) = recv(&up).unwrap();
        let good = reply(&q);

        // The right bytes from another port of the same address: ignored.
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        other.send_to(&good, from).unwrap();
        // From the server, with another ID.
        let mut wrong_id = good.clone();
        wrong_id[0] ^= 0xFF;
        up.send_to(&wrong_id, from).unwrap();
        // From the server, right ID, another question (type AAAA, class and name the same).
        let mut wrong_q = good.clone();
        let tlen = wrong_q.len();
        wrong_q[tlen - 3] = 28;
        up.send_to(&wrong_q, from).unwrap();
        // The same name in another letter case.
        let mut wrong_case = good.clone();
        wrong_case[13] = b'A';
        up.send_to(&wrong_case, from).unwrap();
        assert!(wait_for(
            || pool.stats.mismatched.load(Ordering::Relaxed) == 4
        ));
        assert!(rec.done().is_empty(), "nothing accepted yet");

        up.send_to(&good, from).unwrap();
        assert!(wait_for(|| rec.done().len() == 1));
        assert_eq!(rec.done(), vec![(7, Some(good.clone()))]);
        assert_eq!(pool.pending(), 0);
        // A second copy of the answer is late: counted, not delivered again.
        up.send_to(&good, from).unwrap();
        assert!(wait_for(
            || pool.stats.mismatched.load(Ordering::Relaxed) == 5
        ));
        assert_eq!(rec.done().len(), 1);
    }

    #[test]
    fn identical_questions_in_flight_share_one_upstream_query() {
        let (rec, pool) = start(cfg());
        let up = upstream();
        let server = up.local_addr().unwrap();
        let q = query("shared.test");
        for w in 0..5 {
            pool.submit(
                &*rec,
                &q,
                Some(b"shared.test/A".as_slice().into()),
                [server].into(),
                w,
            );
        }
        let (sent, from) = recv(&up).unwrap();
        assert!(recv(&up).is_none(), "one query upstream for five askers");
        assert_eq!(pool.stats.joined.load(Ordering::Relaxed), 4);
        up.send_to(&reply(&sent), from).unwrap();
        assert!(wait_for(|| rec.done().len() == 5));
        let mut got: Vec<u32> = rec
            .done()
            .iter()
            .map(|(w, r)| {
                assert!(r.is_some());
                *w
            })
            .collect();
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        // Finished: the next identical question asks again.
        pool.submit(
            &*rec,
            &q,
            Some(b"shared.test/A".as_slice().into()),
            [server].into(),
            9,
        );
        assert!(recv(&up).is_some());
    }

    #[test]
    fn timed_out_questions_are_freed_and_answered_servfail() {
        let mut c = cfg();
        c.timeout = Duration::from_millis(20);
        c.budget = Duration::from_millis(50);
        let (rec, pool) = start(c);
        // Nobody answers there.
        let silent = upstream();
        let server = silent.local_addr().unwrap();
        for i in 0..300u32 {
            let name = format!("n{i}.test");
            let key: Box<[u8]> = name.as_bytes().into();
            pool.submit(&*rec, &query(&name), Some(key), [server, server].into(), i);
        }
        assert!(wait_for(|| rec.done().len() == 300), "{}", rec.done().len());
        assert!(
            rec.done().iter().all(|(_, r)| r.is_none()),
            "SERVFAIL for all"
        );
        assert_eq!(pool.pending(), 0, "no pending entry left");
        let keys: usize = pool.dedup.iter().map(|d| d.lock().unwrap().len()).sum();
        assert_eq!(keys, 0, "no de-duplication key left");
        // Each question tried both listed servers (two timeouts each) within the budget.
        assert_eq!(pool.stats.timeouts.load(Ordering::Relaxed), 600);
    }

    #[test]
    fn sockets_are_reopened_on_schedule_and_old_ones_drain() {
        let mut c = cfg();
        c.sockets = 1;
        c.reopen_queries = 2;
        let (rec, pool) = start(c);
        let up = upstream();
        let server = up.local_addr().unwrap();
        let first = pool.local_addrs();
        pool.submit(&*rec, &query("one.test"), None, [server].into(), 1);
        pool.submit(&*rec, &query("two.test"), None, [server].into(), 2);
        let (q1, from1) = recv(&up).unwrap();
        let (q2, from2) = recv(&up).unwrap();
        assert_eq!(from1, from2, "one socket until it is due");
        // Two queries carried: the next sweep opens a new socket on another port.
        assert!(wait_for(|| pool.local_addrs() != first));
        assert!(wait_for(|| pool.stats.reopened.load(Ordering::Relaxed) >= 1));
        pool.submit(&*rec, &query("three.test"), None, [server].into(), 3);
        let (q3, from3) = recv(&up).unwrap();
        assert_ne!(from3.port(), from1.port(), "a new source port");
        // Replies to the questions asked from the old socket still arrive there.
        up.send_to(&reply(&q1), from1).unwrap();
        up.send_to(&reply(&q2), from2).unwrap();
        up.send_to(&reply(&q3), from3).unwrap();
        assert!(wait_for(|| rec.done().len() == 3));
        assert!(rec.done().iter().all(|(_, r)| r.is_some()));
        // Drained: the old socket is closed (only the current one per family is open).
        let families = usize::from(!pool.v4.is_empty()) + usize::from(!pool.v6.is_empty());
        assert!(wait_for(|| pool.open.lock().unwrap().len() == families));
    }

    #[test]
    fn randomized_case_must_come_back_exactly() {
        let mut c = cfg();
        c.randomize_case = true;
        let (rec, pool) = start(c);
        let up = upstream();
        let server = up.local_addr().unwrap();
        let name = "abcdefghijklmnopqrstuvwxyz.abcdefghijklmnopqrstuvwxyz.test";
        pool.submit(&*rec, &query(name), None, [server].into(), 1);
        let (q, from) = recv(&up).unwrap();
        let asked = &q[12..q.len() - 4];
        let plain = &query(name)[12..q.len() - 4];
        assert!(asked.eq_ignore_ascii_case(plain));
        assert_ne!(asked, plain, "letter case randomised (56 letters)");
        // An upstream (or spoofer) that does not echo the case exactly is not believed.
        let mut lowered = reply(&q);
        lowered[12..q.len() - 4].copy_from_slice(plain);
        up.send_to(&lowered, from).unwrap();
        assert!(wait_for(
            || pool.stats.mismatched.load(Ordering::Relaxed) == 1
        ));
        up.send_to(&reply(&q), from).unwrap();
        assert!(wait_for(|| rec.done().len() == 1));
    }

    #[test]
    fn refused_tries_the_next_server() {
        let (rec, pool) = start(cfg());
        let (a, b) = (upstream(), upstream());
        let servers: Box<[SocketAddr]> = [a.local_addr().unwrap(), b.local_addr().unwrap()].into();
        pool.submit(&*rec, &query("x.test"), None, servers.clone(), 1);
        let (q, from) = recv(&a).unwrap();
        let mut refused = reply(&q);
        refused[3] = 0x85;
        a.send_to(&refused, from).unwrap();
        let (q, from) = recv(&b).unwrap();
        b.send_to(&reply(&q), from).unwrap();
        assert!(wait_for(|| rec.done().len() == 1));
        assert!(rec.done()[0].1.is_some());
        let tried = rec.tried.lock().unwrap().clone();
        assert_eq!(
            tried,
            vec![
                (servers[0], Outcome::Refused),
                (servers[1], Outcome::Answer)
            ]
        );
    }
}
