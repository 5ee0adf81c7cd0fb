//! Abuse protection on the query path: who may ask at all, and how fast a client may make us
//! ask upstream.
//!
//! [`Guard::admit`] decides, per packet, whether a client is answered: loopback and this
//! machine's own interface addresses (unless `allow_loopback = false`: traffic the host sends to
//! a gateway address arrives from one of them, after Docker's MASQUERADE), addresses in
//! configured `allow` CIDRs, known container addresses and addresses in a served network's
//! subnet (both from the current snapshot) are; and, until the first Docker sync, the subnets of
//! a sidecar's own interfaces (so it can answer while it syncs). Everyone else gets REFUSED or
//! nothing (`refuse_mode`). It is a few comparisons against an immutable policy read through
//! `arc-swap`: no allocation, no lock. [`Guard::allow_forward`] is a per-client token bucket for
//! questions that go upstream (only those: local answers are never rate-limited; loopback and
//! this machine's own addresses are exempt by default); its table is bounded. Over the rate the
//! answer is SERVFAIL ([`Guard::OVER_RATE_RCODE`]). This module decides; it never sends anything itself.

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
    /// Forwarded questions per second per client (0 = unlimited).
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

    /// Whether `client` is answered at all. Allocation-free and lock-free.
    #[inline]
    pub fn admit(&self, snap: &Snapshot, client: IpAddr) -> Admission {
        let s = self.settings.load();
        let client = client.to_canonical();
        // Cheapest and commonest first: loopback, then containers and served subnets.
        if (s.allow_loopback && client.is_loopback())
            || snap.is_served_client(client)
            || s.allow.iter().any(|n| n.contains(&client))
            || (s.allow_loopback && self.host_addrs.load().contains(&client))
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

    /// Takes one token from `client`'s forward bucket; false when the client is over its rate.
    pub fn allow_forward(&self, client: IpAddr) -> bool {
        let s = self.settings.load();
        let client = client.to_canonical();
        if s.forward_rate == 0
            || (!s.rate_limit_loopback
                && (client.is_loopback() || self.host_addrs.load().contains(&client)))
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
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Clients currently tracked by the rate limiter.
    pub fn tracked_clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
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
            Container {
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
            },
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
            (0..10).all(|_| g.allow_forward(ip("192.0.2.10"))),
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
    fn token_bucket_limits_each_client_separately() {
        let g = Guard::new(GuardSettings {
            forward_rate: 1,
            forward_burst: 3,
            ..GuardSettings::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!((0..10).filter(|_| g.allow_forward(a)).count(), 3);
        assert!(g.allow_forward(b), "another client has its own bucket");
        assert!(
            (0..100).all(|_| g.allow_forward("127.0.0.1".parse().unwrap())),
            "loopback exempt"
        );
    }

    #[test]
    fn rate_table_is_bounded() {
        let g = Guard::new(GuardSettings {
            forward_rate: 1,
            forward_burst: 5,
            ..GuardSettings::default()
        });
        for i in 0..(MAX_TRACKED_CLIENTS as u32 * 2) {
            let ip = IpAddr::V4((0x0A00_0000 + i).into());
            g.allow_forward(ip);
        }
        assert!(g.tracked_clients() <= MAX_TRACKED_CLIENTS);
    }
}
