//! Abuse protection on the query path: who may ask at all, and how fast a client may make us
//! ask upstream.
//!
//! [`Guard::admit`] decides, per packet, whether a client is answered: loopback and this
//! machine's own interface addresses (unless `allow_loopback = false`: traffic the host sends to
//! a gateway address arrives from one of them, after Docker's MASQUERADE), addresses in
//! configured `allow` CIDRs, known container addresses and addresses in a served network's
//! subnet (both from the current snapshot) are; and, until the first Docker sync, the subnets of
//! a sidecar's own interfaces (so it can answer while it syncs). Everyone else gets REFUSED or
//! nothing (`refuse_mode`). [`Guard::scope_local`] makes this machine's own addresses the host
//! asking: their queries on a gateway listener get the host view, not that network's. It is a few comparisons against an immutable policy read through
//! `arc-swap`: no allocation, no lock. [`Guard::allow_forward`] limits questions that go upstream
//! (only those: local answers are never rate-limited; loopback and this machine's own addresses
//! are exempt by default) with token buckets: one per client address (the table is bounded), and
//! one more that every address of a served network's subnet which no known container owns
//! shares (a container hidden from dockns or not synced yet, or a spoofed source), so a flood
//! from many such addresses is held to one client's rate as a whole, while each known container
//! (and each `allow`ed client) keeps its own full rate. Over the rate the answer is SERVFAIL ([`Guard::OVER_RATE_RCODE`]). This module decides; it never sends anything itself.

use super::answer::{self, Action, Outcome};
use crate::model::Snapshot;
use crate::wire::rcode;
use arc_swap::ArcSwap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What to do with a client that may not use this server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefuseMode {
    /// Answer REFUSED (the client learns at once it asked the wrong server).
    #[default]
    Refused,
    /// Say nothing (costs an attacker a timeout, gives reflection nothing).
    Drop,
}

/// Access and rate settings (from `[server]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardSettings {
    /// Extra client networks that are answered.
    pub allow: Vec<IpNet>,
    /// Answer any loopback client (127.0.0.0/8, ::1).
    pub allow_loopback: bool,
    /// REFUSED or silence for everyone else.
    pub refuse_mode: RefuseMode,
    /// Forwarded questions per second per client, and for all unknown addresses of served
    /// subnets together (0 = unlimited).
    pub forward_rate: u32,
    /// Burst of forwarded questions a client may send at once.
    pub forward_burst: u32,
    /// Apply the forward rate to loopback clients too.
    pub rate_limit_loopback: bool,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            allow: Vec::new(),
            allow_loopback: true,
            refuse_mode: RefuseMode::Refused,
            forward_rate: DEFAULT_FORWARD_RATE,
            forward_burst: DEFAULT_FORWARD_BURST,
            rate_limit_loopback: false,
        }
    }
}

/// Default forwarded questions per second per client address. Sized from a measurement: a
/// program resolving 1,000 unique forwarded names a second with getaddrinfo (A and AAAA: 2,000
/// questions a second, musl or glibc) stays under half of it, so a busy container never meets
/// the limit; a runaway one is held to it.
pub const DEFAULT_FORWARD_RATE: u32 = 4_000;
/// Default burst: two seconds of the rate.
pub const DEFAULT_FORWARD_BURST: u32 = 8_000;

/// Whether a packet from a client is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Answer it.
    Allow,
    /// Answer REFUSED.
    Refuse,
    /// Say nothing.
    Drop,
}

/// Most clients tracked by the rate limiter; beyond, idle buckets are pruned (and, if none is
/// idle, the table is cleared), so memory stays bounded even under a spoofed-source flood.
pub const MAX_TRACKED_CLIENTS: usize = 65_536;
const SHARDS: usize = 16;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The guard: an access policy and the forward rate limiter. See the module docs.
pub struct Guard {
    settings: ArcSwap<GuardSettings>,
    /// This machine's own interface addresses (refreshed by the server), admitted like loopback.
    host_addrs: ArcSwap<Vec<IpAddr>>,
    /// Subnets admitted until the first Docker sync (a sidecar's own interfaces).
    provisional: ArcSwap<Vec<IpNet>>,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
    /// The bucket every client that is not a known container shares (besides its own).
    unknown: Mutex<Option<Bucket>>,
}

impl Guard {
    /// The answer to a forwarded question over the client's rate: SERVFAIL. glibc, Go and
    /// c-ares give up (or try the next server) at once on SERVFAIL as on REFUSED, but musl
    /// ignores REFUSED and waits out its whole timeout (5 s by default), while it re-sends a
    /// question that got SERVFAIL at once (twice), which the refilling bucket then answers.
    pub const OVER_RATE_RCODE: u16 = rcode::SERVFAIL;

    /// A guard with these settings.
    pub fn new(settings: GuardSettings) -> Arc<Guard> {
        Arc::new(Guard {
            settings: ArcSwap::from_pointee(settings),
            host_addrs: ArcSwap::from_pointee(Vec::new()),
            provisional: ArcSwap::from_pointee(Vec::new()),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            unknown: Mutex::new(None),
        })
    }

    /// Replaces the settings (config reload). Rate state is kept.
    pub fn set(&self, settings: GuardSettings) {
        self.settings.store(Arc::new(settings));
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<GuardSettings> {
        self.settings.load_full()
    }

    /// Sets this machine's own addresses (the host view's clients besides loopback). Called at
    /// start and whenever the interfaces may have changed; an unchanged list is not stored again.
    pub fn set_host_addrs(&self, mut addrs: Vec<IpAddr>) {
        addrs.sort();
        addrs.dedup();
        if **self.host_addrs.load() != addrs {
            self.host_addrs.store(Arc::new(addrs));
        }
    }

    /// Admits clients in `nets` until [`end_provisional`](Self::end_provisional): a sidecar's
    /// own interface subnets while its first Docker sync runs.
    pub fn set_provisional(&self, nets: Vec<IpNet>) {
        self.provisional.store(Arc::new(nets));
    }

    /// From now on only the snapshot and the settings decide (the first sync is published).
    pub fn end_provisional(&self) {
        if !self.provisional.load().is_empty() {
            self.provisional.store(Arc::new(Vec::new()));
        }
    }

    /// Whether `client` (canonical) is one of this machine's own interface addresses: the
    /// one test behind admission, the host view and the loopback rate exemption. Lock-free.
    #[inline]
    fn is_host_address(&self, client: IpAddr) -> bool {
        self.host_addrs.load().binary_search(&client).is_ok()
    }

    /// Whether `client` is answered at all. Allocation-free and lock-free.
    #[inline]
    pub fn admit(&self, snap: &Snapshot, client: IpAddr) -> Admission {
        let s = self.settings.load();
        let client = client.to_canonical();
        // Cheapest and commonest first: loopback, then containers and served subnets.
        if (s.allow_loopback && client.is_loopback())
            || snap.is_served_client(client)
            || s.allow.iter().any(|n| n.contains(&client))
            || (s.allow_loopback && self.is_host_address(client))
            || self.provisional.load().iter().any(|n| n.contains(&client))
        {
            Admission::Allow
        } else {
            match s.refuse_mode {
                RefuseMode::Refused => Admission::Refuse,
                RefuseMode::Drop => Admission::Drop,
            }
        }
    }

    /// The listener address that picks `client`'s view (scope rule 2), or `None` for the host
    /// view: a packet from this machine's own address to a gateway listener is the host asking
    /// (`dig @<gateway> name`; its source is the gateway address itself, or another host address
    /// after Docker's MASQUERADE), so it sees the host view, like loopback, not that network's.
    /// Rule 1 (a known container's own networks) still comes first in the snapshot.
    /// Allocation-free and lock-free (a binary search of the sorted host addresses).
    #[inline]
    pub fn scope_local(&self, client: IpAddr, local: Option<IpAddr>) -> Option<IpAddr> {
        let l = local?;
        let client = client.to_canonical();
        if client.is_loopback() || self.is_host_address(client) {
            None
        } else {
            Some(l)
        }
    }

    /// The reply for a client that is not admitted (REFUSED, or drop), or `None` when it is:
    /// the listeners call this before answering. Allocation-free for ordinary queries.
    #[inline]
    pub fn screen(
        &self,
        snap: &Snapshot,
        client: IpAddr,
        pkt: &[u8],
        out: &mut [u8],
        tcp: bool,
    ) -> Option<Action> {
        match self.admit(snap, client) {
            Admission::Allow => None,
            Admission::Drop => Some(Action::Drop),
            Admission::Refuse => match answer::error_response(pkt, rcode::REFUSED, out, tcp) {
                0 => Some(Action::Drop),
                n => Some(Action::Reply(n, Outcome::Error)),
            },
        }
    }

    /// Takes one token from `client`'s forward bucket, and from the shared bucket when `client`
    /// is an address of a served subnet that no known container owns; false when over the rate.
    pub fn allow_forward(&self, snap: &Snapshot, client: IpAddr) -> bool {
        let s = self.settings.load();
        let client = client.to_canonical();
        if s.forward_rate == 0
            || (!s.rate_limit_loopback && (client.is_loopback() || self.is_host_address(client)))
        {
            return true;
        }
        let rate = f64::from(s.forward_rate);
        let burst = f64::from(s.forward_burst.max(1));
        let now = Instant::now();
        let shard = &self.shards[shard_of(client)];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED_CLIENTS / SHARDS && !map.contains_key(&client) {
            // A bucket that would be full again is the same as no bucket.
            map.retain(|_, b| now.duration_since(b.last).as_secs_f64() * rate + b.tokens < burst);
            if map.len() >= MAX_TRACKED_CLIENTS / SHARDS {
                map.clear();
            }
        }
        let b = map.entry(client).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        if !take(b, now, rate, burst) {
            return false;
        }
        drop(map);
        // Only an address of a served network that no container owns shares the bucket: an
        // `allow` range or a loopback client is the operator's, and keeps its own rate.
        if snap.is_known_container(client) || !snap.is_served_client(client) {
            return true;
        }
        let mut shared = self.unknown.lock().unwrap_or_else(|e| e.into_inner());
        let b = shared.get_or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        take(b, now, rate, burst)
    }

    /// Clients currently tracked by the rate limiter.
    pub fn tracked_clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Refills `b` for the time since its last use and takes one token, if there is one.
fn take(b: &mut Bucket, now: Instant, rate: f64, burst: f64) -> bool {
    b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
    b.last = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        true
    } else {
        false
    }
}

fn shard_of(ip: IpAddr) -> usize {
    let h = match ip {
        IpAddr::V4(v4) => u32::from(v4) as u64,
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            (x as u64) ^ ((x >> 64) as u64)
        }
    };
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BuildSettings, Catalog, Container, Endpoint, Health, Network};

    fn snap() -> Snapshot {
        let mut c = Catalog::default();
        c.networks.insert(
            "n".into(),
            Network {
                name: "n".into(),
                id: String::new(),
                internal: false,
                listen_addrs: vec![],
                subnets: vec!["10.1.0.0/24".parse().unwrap()],
            },
        );
        c.networks.insert(
            "m".into(),
            Network {
                name: "m".into(),
                id: String::new(),
                internal: false,
                listen_addrs: vec![],
                subnets: vec![],
            },
        );
        c.containers.insert(
            "x".into(),
            std::sync::Arc::new(Container {
                id: String::new(),
                name: "x".into(),
                hostname: None,
                health: Health::None,
                extra_names: vec![],
                dns: Vec::new(),
                endpoints: vec![Endpoint {
                    network: "m".into(),
                    ipv4: vec!["10.2.0.5".parse().unwrap()],
                    ipv6: vec![],
                    aliases: vec![],
                    links: Vec::new(),
                }],
                anonymous: false,
            }),
        );
        Snapshot::build(&c, BuildSettings::default())
    }

    #[test]
    fn admission_rules() {
        let s = snap();
        let g = Guard::new(GuardSettings::default());
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert_eq!(g.admit(&s, ip("127.0.0.2")), Admission::Allow);
        assert_eq!(g.admit(&s, ip("::1")), Admission::Allow);
        assert_eq!(g.admit(&s, ip("10.1.0.77")), Admission::Allow, "subnet");
        assert_eq!(g.admit(&s, ip("10.2.0.5")), Admission::Allow, "container");
        assert_eq!(g.admit(&s, ip("10.2.0.6")), Admission::Refuse);
        assert_eq!(g.admit(&s, ip("192.0.2.1")), Admission::Refuse);
        g.set(GuardSettings {
            allow: vec!["192.0.2.0/24".parse().unwrap()],
            allow_loopback: false,
            refuse_mode: RefuseMode::Drop,
            ..GuardSettings::default()
        });
        assert_eq!(g.admit(&s, ip("192.0.2.1")), Admission::Allow);
        assert_eq!(g.admit(&s, ip("127.0.0.1")), Admission::Drop);
    }

    #[test]
    fn host_addresses_and_provisional_subnets() {
        let s = snap();
        let g = Guard::new(GuardSettings::default());
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert_eq!(g.admit(&s, ip("192.0.2.10")), Admission::Refuse);
        g.set_host_addrs(vec![ip("192.0.2.10")]);
        assert_eq!(g.admit(&s, ip("192.0.2.10")), Admission::Allow, "host");
        assert_eq!(
            g.admit(&s, ip("::ffff:192.0.2.10")),
            Admission::Allow,
            "IPv4-mapped host address"
        );
        assert_eq!(g.admit(&s, ip("192.0.2.11")), Admission::Refuse);
        g.set(GuardSettings {
            forward_rate: 1,
            forward_burst: 1,
            ..GuardSettings::default()
        });
        assert!(
            (0..10).all(|_| g.allow_forward(&s, ip("192.0.2.10"))),
            "host addresses are rate-exempt like loopback"
        );
        g.set_provisional(vec!["198.51.100.0/24".parse().unwrap()]);
        assert_eq!(g.admit(&s, ip("198.51.100.9")), Admission::Allow);
        g.end_provisional();
        assert_eq!(g.admit(&s, ip("198.51.100.9")), Admission::Refuse);
        g.set(GuardSettings {
            allow_loopback: false,
            ..GuardSettings::default()
        });
        assert_eq!(g.admit(&s, ip("192.0.2.10")), Admission::Refuse);
    }

    #[test]
    fn host_addresses_asking_on_a_gateway_get_the_host_view() {
        let g = Guard::new(GuardSettings::default());
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        let gw = Some(ip("172.18.0.1"));
        g.set_host_addrs(vec![ip("192.0.2.10"), ip("172.18.0.1")]);
        assert_eq!(
            g.scope_local(ip("172.18.0.1"), gw),
            None,
            "the gateway itself"
        );
        assert_eq!(
            g.scope_local(ip("192.0.2.10"), gw),
            None,
            "another host address"
        );
        assert_eq!(
            g.scope_local(ip("::ffff:192.0.2.10"), gw),
            None,
            "IPv4-mapped"
        );
        assert_eq!(g.scope_local(ip("127.0.0.1"), gw), None, "loopback");
        assert_eq!(
            g.scope_local(ip("172.18.0.5"), gw),
            gw,
            "a client on the network"
        );
        assert_eq!(g.scope_local(ip("192.0.2.10"), None), None);
    }

    #[test]
    fn token_bucket_limits_each_client_separately() {
        let s = snap();
        let g = Guard::new(GuardSettings {
            forward_rate: 1,
            forward_burst: 3,
            ..GuardSettings::default()
        });
        let a: IpAddr = "10.1.0.1".parse().unwrap();
        let known: IpAddr = "10.2.0.5".parse().unwrap();
        assert_eq!((0..10).filter(|_| g.allow_forward(&s, a)).count(), 3);
        assert_eq!(
            (0..10).filter(|_| g.allow_forward(&s, known)).count(),
            3,
            "a known container has its own bucket, untouched by unknown clients"
        );
        assert!(
            (0..100).all(|_| g.allow_forward(&s, "127.0.0.1".parse().unwrap())),
            "loopback exempt"
        );
    }

    #[test]
    fn unknown_clients_share_one_bucket() {
        let s = snap();
        let g = Guard::new(GuardSettings {
            forward_rate: 1,
            forward_burst: 3,
            ..GuardSettings::default()
        });
        // Addresses of a served subnet that no container owns, each asking once or twice.
        let passed = (1..=20u8)
            .flat_map(|i| [i, i])
            .filter(|&i| g.allow_forward(&s, IpAddr::from([10, 1, 0, i])))
            .count();
        assert_eq!(passed, 3, "the unknown addresses together get one bucket");
        assert!(
            g.allow_forward(&s, "10.2.0.5".parse().unwrap()),
            "known container"
        );
        assert!(
            (1..=3u8).all(|i| g.allow_forward(&s, IpAddr::from([192, 0, 2, i]))),
            "clients outside the served subnets (an allow range) keep their own buckets"
        );
    }

    #[test]
    fn rate_table_is_bounded() {
        let g = Guard::new(GuardSettings {
            forward_rate: 1,
            forward_burst: 5,
            ..GuardSettings::default()
        });
        let s = snap();
        for i in 0..(MAX_TRACKED_CLIENTS as u32 * 2) {
            let ip = IpAddr::V4((0x0A00_0000 + i).into());
            g.allow_forward(&s, ip);
        }
        assert!(g.tracked_clients() <= MAX_TRACKED_CLIENTS);
    }
}
