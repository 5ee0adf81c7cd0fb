//! The served domain and the reverse zones of served subnets, as DNS zones.
//!
//! Its one job is the zone-level data a [`super::Snapshot`] answers besides container names:
//! the apex SOA and NS RRsets of `domain`, its name servers `ns1.<domain>` … and their addresses, the
//! SOA serial, the empty non-terminals (RFC 8020) and the RFC 6303-style reverse zones of every
//! served subnet (which name is inside one, where its apex is). Everything is encoded once per
//! snapshot; the query-time helpers ([`reverse_zone`], [`parent_keys`], [`reverse_authority`])
//! only read and never allocate. It does not decide who sees which name (that is the views')
//! nor anything about forwarding.

use crate::wire::RecordSet;
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most name servers the apex NS RRset lists (`ns1.<domain>` … `ns8.<domain>`), so the
/// answer stays small when dockns listens on many gateways.
pub const MAX_NS: usize = 8;
/// SOA timers (refresh, retry, expire). There are no secondaries (zone transfers are refused);
/// the values are the usual recommendations so zone checkers have nothing to flag.
const REFRESH: u32 = 14_400;
const RETRY: u32 = 3_600;
const EXPIRE: u32 = 604_800;
/// RNAME of the reverse zones (RFC 6303 §3 uses `nobody.invalid.`).
const NOBODY_INVALID: &[u8] = b"\x06nobody\x07invalid\x00";

/// Wire suffixes of the reverse trees.
const V4_SUFFIX: &[u8] = b"\x07in-addr\x04arpa";
const V6_SUFFIX: &[u8] = b"\x03ip6\x04arpa";

/// The zone records of one snapshot, pre-encoded.
#[derive(Debug, Default)]
pub struct ZoneData {
    /// SOA serial these records carry.
    pub serial: u32,
    /// Apex SOA as an answer (owner = question name).
    pub soa: RecordSet,
    /// Apex SOA as an authority record (owner written out in full).
    pub soa_authority: Box<[u8]>,
    /// Apex NS RRset as an answer: `ns1.<domain>` … one name per name-server address.
    pub ns: RecordSet,
    /// The name servers: wire label (`\x03ns1`), whether the address is IPv6, and its one
    /// A or AAAA record.
    pub ns_hosts: Vec<(Box<[u8]>, bool, RecordSet)>,
    /// The SOA of any reverse zone as an answer at its apex (owner and MNAME point to the
    /// question name).
    pub reverse_soa: RecordSet,
    /// The SOA of a reverse zone as an authority record, from the TYPE field on; the owner
    /// pointer goes before it and the MNAME pointer at [`REVERSE_MNAME_AT`].
    reverse_tail: Box<[u8]>,
}

/// Offset of the MNAME pointer inside [`ZoneData::reverse_tail`] (type, class, TTL, RDLENGTH).
const REVERSE_MNAME_AT: usize = 10;
/// Size of a reverse-zone SOA authority record: owner pointer + tail.
pub const REVERSE_AUTHORITY_LEN: usize = 2 + 10 + 2 + NOBODY_INVALID.len() + 20;

fn soa_timers(serial: u32, minimum: u32) -> [u8; 20] {
    let mut t = [0u8; 20];
    for (i, v) in [serial, REFRESH, RETRY, EXPIRE, minimum].iter().enumerate() {
        t[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    t
}

impl ZoneData {
    /// Encodes the zone records: `domain` (already validated, lower case, no trailing dot) or
    /// none, the local TTL (also the negative-caching TTL, RFC 2308), the serial, and the
    /// name-server addresses (`ns1.<domain>` …, at most [`MAX_NS`]).
    pub fn build(domain: Option<&str>, ttl: u32, serial: u32, ns_addrs: &[IpAddr]) -> ZoneData {
        let mut z = ZoneData {
            serial,
            ..Default::default()
        };
        // Reverse zones (independent of the domain): owner and MNAME are the zone apex, which
        // is always a suffix of the question name, so both are compression pointers.
        let timers = soa_timers(serial, ttl);
        let rdlen = (2 + NOBODY_INVALID.len() + timers.len()) as u16;
        let mut tail = Vec::with_capacity(REVERSE_AUTHORITY_LEN - 2);
        tail.extend_from_slice(&6u16.to_be_bytes());
        tail.extend_from_slice(&1u16.to_be_bytes());
        tail.extend_from_slice(&ttl.to_be_bytes());
        tail.extend_from_slice(&rdlen.to_be_bytes());
        tail.extend_from_slice(&[0xC0, 0x0C]);
        tail.extend_from_slice(NOBODY_INVALID);
        tail.extend_from_slice(&timers);
        let mut answer = vec![0xC0, 0x0C];
        answer.extend_from_slice(&tail);
        z.reverse_soa = RecordSet::from_raw(answer, 1);
        z.reverse_tail = tail.into_boxed_slice();

        let Some(domain) = domain else {
            return z;
        };
        let domain = domain.trim_end_matches('.');
        let (Ok(zone), Ok(mname), Ok(rname)) = (
            Name::from_ascii(format!("{domain}.")),
            Name::from_ascii(format!("ns1.{domain}.")),
            Name::from_ascii(format!("hostmaster.{domain}.")),
        ) else {
            return z;
        };
        let soa = SOA::new(
            mname,
            rname,
            serial,
            REFRESH as i32,
            RETRY as i32,
            EXPIRE as i32,
            ttl,
        );
        let record = Record::from_rdata(zone.clone(), ttl, RData::SOA(soa));
        z.soa = RecordSet::from_records(std::slice::from_ref(&record), false);
        let mut authority = Vec::new();
        {
            let mut enc = BinEncoder::new(&mut authority);
            enc.set_name_encoding(NameEncoding::Uncompressed);
            let _ = record.emit(&mut enc);
        }
        z.soa_authority = authority.into_boxed_slice();
        let mut ns = Vec::new();
        for (i, ip) in ns_addrs.iter().take(MAX_NS).enumerate() {
            let label = format!("ns{}", i + 1);
            let Ok(host) = Name::from_ascii(format!("{label}.{domain}.")) else {
                continue;
            };
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            let rec = Record::from_rdata(host.clone(), ttl, data);
            let mut key = vec![label.len() as u8];
            key.extend_from_slice(label.as_bytes());
            z.ns_hosts.push((
                key.into_boxed_slice(),
                ip.is_ipv6(),
                RecordSet::from_records(std::slice::from_ref(&rec), false),
            ));
            ns.push(Record::from_rdata(zone.clone(), ttl, RData::NS(NS(host))));
        }
        z.ns = RecordSet::from_records(&ns, false);
        z
    }

    /// Writes the SOA authority record of the reverse zone whose apex starts `zone_at` bytes
    /// into the question name, into `buf`. Returns the record's length.
    #[inline]
    pub fn reverse_authority(&self, zone_at: u16, buf: &mut [u8; REVERSE_AUTHORITY_LEN]) -> usize {
        if self.reverse_tail.len() + 2 != REVERSE_AUTHORITY_LEN {
            return 0;
        }
        let ptr = (0xC000u16 | (12 + zone_at)).to_be_bytes();
        buf[..2].copy_from_slice(&ptr);
        buf[2..].copy_from_slice(&self.reverse_tail);
        buf[2 + REVERSE_MNAME_AT..4 + REVERSE_MNAME_AT].copy_from_slice(&ptr);
        REVERSE_AUTHORITY_LEN
    }
}

/// The name-server addresses (`ns1.<domain>`, …): the configured ones; else every specific listener
/// address that is not loopback (fixed listeners, gateways, sidecar addresses); else the
/// loopback listeners. Deduplicated, in order.
pub fn ns_addresses(configured: &[IpAddr], listeners: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let usable = |ip: &&IpAddr| !ip.is_unspecified();
    let picked: Vec<IpAddr> = if !configured.is_empty() {
        configured.to_vec()
    } else if listeners.iter().filter(usable).any(|ip| !ip.is_loopback()) {
        listeners
            .iter()
            .filter(usable)
            .filter(|ip| !ip.is_loopback())
            .copied()
            .collect()
    } else {
        listeners.iter().filter(usable).copied().collect()
    };
    // A set, not `out.contains`: with hundreds of gateway listeners a quadratic scan cost
    // more than the rest of a rebuild.
    let mut seen: std::collections::HashSet<IpAddr> = std::collections::HashSet::new();
    for ip in picked {
        if seen.insert(ip) {
            out.push(ip);
        }
    }
    out
}

/// The proper parent names of a wire key (no root label), nearest first: for `a.b.c`, `b.c`
/// then `c`. Used to list empty non-terminals.
pub fn parent_keys(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let len = usize::from(*key.get(at)?);
        at += 1 + len;
        (at < key.len()).then(|| &key[at..])
    })
}

/// Where a reverse name sits in the reverse zone of a served subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReverseKind {
    /// The zone apex itself.
    Apex,
    /// A complete address name (4 octet labels, or 32 nibbles).
    Address,
    /// Anything else inside the zone: between the apex and the addresses, or not an address.
    Inner,
}

/// A reverse name inside the reverse zone of a served subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReverseHit {
    /// Offset of the zone apex inside the key (and so inside the question name).
    pub zone_at: u16,
    /// Where the name sits in the zone.
    pub kind: ReverseKind,
}

/// Strict decimal octet label ("0".."255", no leading zero).
fn octet(label: &[u8]) -> Option<u8> {
    if label.is_empty() || label.len() > 3 || (label.len() > 1 && label[0] == b'0') {
        return None;
    }
    let mut v: u16 = 0;
    for &c in label {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u16::from(c - b'0');
    }
    u8::try_from(v).ok()
}

/// One lower-case hex digit label.
fn nibble(label: &[u8]) -> Option<u8> {
    match label {
        [c @ b'0'..=b'9'] => Some(c - b'0'),
        [c @ b'a'..=b'f'] => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Whether `key` (lower-case wire name, no root label) lies in the reverse zone of one of
/// `subnets`, and where. The zone of a subnet is its prefix rounded up to whole labels (octets
/// for IPv4, nibbles for IPv6), so it never claims addresses outside the subnet; of several
/// matches the most specific wins. No allocation.
pub fn reverse_zone(key: &[u8], subnets: &[ipnet::IpNet]) -> Option<ReverseHit> {
    let (v6, suffix) = if key.ends_with(V4_SUFFIX) {
        (false, V4_SUFFIX)
    } else if key.ends_with(V6_SUFFIX) {
        (true, V6_SUFFIX)
    } else {
        return None;
    };
    let end = key.len() - suffix.len();
    // Label starts, least significant first; at most 127 labels in a 255-byte name.
    let mut starts = [0u8; 128];
    let mut n = 0usize;
    let mut at = 0usize;
    while at < end {
        if n == starts.len() {
            return None;
        }
        starts[n] = at as u8;
        n += 1;
        at += 1 + usize::from(key[at]);
    }
    if at != end || n == 0 {
        return None;
    }
    let label = |i: usize| {
        let s = usize::from(starts[i]);
        &key[s + 1..s + 1 + usize::from(key[s])]
    };
    // The most significant labels that parse, as an address (zero padded).
    let width = if v6 { 32 } else { 4 };
    let mut digits = [0u8; 32];
    let mut k = 0usize;
    while k < n.min(width) {
        let parsed = if v6 {
            nibble(label(n - 1 - k))
        } else {
            octet(label(n - 1 - k))
        };
        match parsed {
            Some(d) => digits[k] = d,
            None => break,
        }
        k += 1;
    }
    let addr = if v6 {
        let mut o = [0u8; 16];
        for (i, b) in o.iter_mut().enumerate() {
            *b = (digits[2 * i] << 4) | digits[2 * i + 1];
        }
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::new(digits[0], digits[1], digits[2], digits[3]))
    };
    let bits = if v6 { 4 } else { 8 };
    let mut depth = 0usize;
    for net in subnets {
        if net.addr().is_ipv6() != v6 {
            continue;
        }
        let d = usize::from(net.prefix_len()).div_ceil(bits);
        if d == 0 || d > k || d <= depth || !net.contains(&addr) {
            continue;
        }
        depth = d;
    }
    if depth == 0 {
        return None;
    }
    let kind = if n == depth {
        ReverseKind::Apex
    } else if n == width && k == width {
        ReverseKind::Address
    } else {
        ReverseKind::Inner
    };
    Some(ReverseHit {
        zone_at: u16::from(starts[n - depth]),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::normalize_name;

    fn key(s: &str) -> Vec<u8> {
        normalize_name(s).unwrap()
    }

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn reverse_zones_round_up_to_labels() {
        let subnets = nets(&[
            "10.89.0.0/24",
            "172.18.0.0/16",
            "192.168.16.0/20",
            "fd00:89::/64",
        ]);
        let hit = |s: &str| reverse_zone(&key(s), &subnets);
        // /24: zone 0.89.10.in-addr.arpa.
        let k = key("7.0.89.10.in-addr.arpa");
        let h = hit("7.0.89.10.in-addr.arpa").unwrap();
        assert_eq!(h.kind, ReverseKind::Address);
        assert_eq!(
            &k[usize::from(h.zone_at)..],
            &key("0.89.10.in-addr.arpa")[..]
        );
        assert_eq!(hit("0.89.10.in-addr.arpa").unwrap().kind, ReverseKind::Apex);
        // Above the zone, or outside the subnet: not ours.
        assert_eq!(hit("89.10.in-addr.arpa"), None);
        assert_eq!(hit("7.1.89.10.in-addr.arpa"), None);
        // /16: zone 18.172.in-addr.arpa, with inner names.
        assert_eq!(hit("18.172.in-addr.arpa").unwrap().kind, ReverseKind::Apex);
        assert_eq!(
            hit("3.18.172.in-addr.arpa").unwrap().kind,
            ReverseKind::Inner
        );
        assert_eq!(
            hit("x.3.18.172.in-addr.arpa").unwrap().kind,
            ReverseKind::Inner
        );
        assert_eq!(
            hit("03.3.18.172.in-addr.arpa").unwrap().kind,
            ReverseKind::Inner
        );
        assert_eq!(
            hit("1.2.3.18.172.in-addr.arpa").unwrap().kind,
            ReverseKind::Inner
        );
        // /20 rounds up to /24 zones inside it only.
        assert_eq!(
            hit("17.168.192.in-addr.arpa").unwrap().kind,
            ReverseKind::Apex
        );
        assert_eq!(hit("168.192.in-addr.arpa"), None);
        assert_eq!(hit("5.32.168.192.in-addr.arpa"), None);
        // IPv6 /64: 16 nibbles.
        let full = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.8.0.0.0.0.d.f.ip6.arpa";
        let h = hit(full).unwrap();
        assert_eq!(h.kind, ReverseKind::Address);
        let k = key(full);
        assert_eq!(
            &k[usize::from(h.zone_at)..],
            &key("0.0.0.0.0.0.0.0.9.8.0.0.0.0.d.f.ip6.arpa")[..]
        );
        assert_eq!(
            hit("0.0.0.0.0.0.0.0.9.8.0.0.0.0.d.f.ip6.arpa")
                .unwrap()
                .kind,
            ReverseKind::Apex
        );
        assert_eq!(hit("0.0.0.0.0.0.0.9.8.0.0.0.0.d.f.ip6.arpa"), None);
        assert_eq!(hit("in-addr.arpa"), None);
        assert_eq!(hit("example.com"), None);
    }

    #[test]
    fn parents_nearest_first() {
        let k = key("a.b.c");
        let p: Vec<&[u8]> = parent_keys(&k).collect();
        assert_eq!(p, vec![&key("b.c")[..], &key("c")[..]]);
        assert_eq!(parent_keys(&key("c")).count(), 0);
    }

    #[test]
    fn ns_addresses_prefer_configured_then_non_loopback() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(
            ns_addresses(&[ip("10.0.0.53")], &[ip("127.0.0.1")]),
            vec![ip("10.0.0.53")]
        );
        assert_eq!(
            ns_addresses(
                &[],
                &[
                    ip("127.0.0.1"),
                    ip("0.0.0.0"),
                    ip("172.18.0.1"),
                    ip("172.18.0.1")
                ]
            ),
            vec![ip("172.18.0.1")]
        );
        assert_eq!(
            ns_addresses(&[], &[ip("127.0.0.1"), ip("::")]),
            vec![ip("127.0.0.1")]
        );
    }

    #[test]
    fn reverse_authority_points_at_the_zone() {
        let z = ZoneData::build(None, 5, 7, &[]);
        let mut buf = [0u8; REVERSE_AUTHORITY_LEN];
        assert_eq!(z.reverse_authority(9, &mut buf), REVERSE_AUTHORITY_LEN);
        assert_eq!(&buf[..4], &[0xC0, 21, 0, 6]);
        assert_eq!(&buf[12..14], &[0xC0, 21]);
        // Serial right after MNAME and RNAME.
        let s = 14 + NOBODY_INVALID.len();
        assert_eq!(&buf[s..s + 4], &7u32.to_be_bytes());
    }
}
