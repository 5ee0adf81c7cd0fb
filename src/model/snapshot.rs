//! The immutable, query-ready form of the model.
//!
//! A [`Snapshot`] is compiled from a [`Catalog`] whenever something changes and then only read.
//! It holds, for every *view* (an ordered set of networks a client can see), one hash map from
//! the lower-case wire key of a name to a [`NameEntry`], whose answer records are already encoded
//! in wire format. Answering a known name is one hash probe and a copy; rotation is a relaxed
//! atomic increment on the entry. Nothing here allocates, locks or awaits after the build.
//!
//! Scope (who sees what) is also decided here, by [`Snapshot::view_for`]: the client's own
//! container view, else the view of the network the query arrived on, else the host view.

use super::names::{endpoint_names, normalize_name, reverse_name};
use super::Catalog;
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Longest key a lookup can carry (a wire name is at most 255 bytes including the root label).
pub const MAX_KEY_LEN: usize = 255;

const TYPE_A: u16 = 1;
const TYPE_SOA: u16 = 6;
const TYPE_PTR: u16 = 12;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// Settings that shape the compiled snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildSettings {
    /// TTL of local answers, in seconds.
    pub ttl: u32,
    /// Optional zone (e.g. `docker`) under which names are also answered authoritatively.
    pub domain: Option<String>,
    /// Networks whose plain names (and `name.network`) a client outside any container sees;
    /// `None` means every network.
    pub host_view: Option<Vec<String>>,
    /// The host view also sees `name.network` (never the plain name) on every other network.
    pub host_sees_all_qualified: bool,
    /// Leave unhealthy/starting replicas out while a healthy one shares the name.
    pub health_aware: bool,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            ttl: 5,
            domain: None,
            host_view: None,
            host_sees_all_qualified: false,
            health_aware: true,
        }
    }
}

/// A set of pre-encoded resource records of one type for one owner name.
///
/// Each record starts with a compression pointer to offset 12 (the question name), so the bytes
/// are valid in any response whose question is that name, whatever its letter case.
#[derive(Debug, Default)]
pub struct RecordSet {
    bytes: Box<[u8]>,
    count: u16,
    /// Size of every record when they are all the same size (A, AAAA): rotation is possible.
    stride: u16,
}

impl RecordSet {
    /// Number of records.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Whether the set holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// All records, encoded.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Size in bytes of every record, when they are uniform (0 otherwise).
    pub fn stride(&self) -> usize {
        usize::from(self.stride)
    }

    fn from_records(records: &[Record], uniform: bool) -> RecordSet {
        let mut bytes = Vec::new();
        let mut stride = 0usize;
        for r in records {
            let before = bytes.len();
            encode_answer_rr(r, &mut bytes);
            stride = bytes.len() - before;
        }
        RecordSet {
            count: records.len() as u16,
            stride: if uniform && records.len() > 1 {
                stride as u16
            } else {
                0
            },
            bytes: bytes.into_boxed_slice(),
        }
    }
}

/// Encodes one answer record whose owner is the question name: pointer 0xC00C, then type,
/// class, TTL, RDLENGTH and the RDATA as hickory-proto encodes it.
fn encode_answer_rr(record: &Record, out: &mut Vec<u8>) {
    let mut rdata = Vec::with_capacity(16);
    {
        let mut enc = BinEncoder::new(&mut rdata);
        // Pointers would be relative to this scratch buffer: write names out in full.
        enc.set_name_encoding(NameEncoding::Uncompressed);
        // Encoding an A/AAAA/PTR/SOA into a growable buffer cannot fail.
        let _ = record.data.emit(&mut enc);
    }
    out.extend_from_slice(&[0xC0, 0x0C]);
    out.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
    out.extend_from_slice(&u16::from(record.dns_class).to_be_bytes());
    out.extend_from_slice(&record.ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
}

/// Everything answerable for one owner name on one network.
#[derive(Debug)]
pub struct NameEntry {
    /// The name as text, for tools and logs.
    pub name: Box<str>,
    /// Index of the network in [`Snapshot::networks`].
    pub network: u32,
    /// A records.
    pub a: RecordSet,
    /// AAAA records.
    pub aaaa: RecordSet,
    /// PTR record (reverse names only).
    pub ptr: RecordSet,
    rotor: AtomicU32,
}

impl NameEntry {
    /// The next rotation offset for a set of `count` records: successive calls start one record
    /// further, so successive clients start at different replicas.
    #[inline]
    pub fn next_rotation(&self, count: u16) -> usize {
        if count <= 1 {
            return 0;
        }
        (self.rotor.fetch_add(1, Ordering::Relaxed) % u32::from(count)) as usize
    }
}

/// Index of a view inside a snapshot.
pub type ViewId = u32;

/// An ordered set of networks as one client sees them, flattened into one map.
#[derive(Debug, Default)]
pub struct View {
    names: FxHashMap<Arc<[u8]>, u32>,
    /// Whether unknown names may be forwarded (at least one visible network is not internal).
    pub forward: bool,
    /// The networks this view shows, in priority order, with whether plain names are visible.
    pub networks: Vec<(u32, bool)>,
}

impl View {
    /// Number of names this view answers.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the view answers no name.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Summary of a network inside a snapshot.
#[derive(Debug, Clone)]
pub struct NetworkInfo {
    /// Network name.
    pub name: String,
    /// Internal network (no forwarding).
    pub internal: bool,
}

/// What the tables say about one question.
#[derive(Debug)]
pub enum Resolution<'s> {
    /// Local records answer it. `rotor` is set when the order rotates.
    Answer {
        /// The records.
        set: &'s RecordSet,
        /// The entry whose rotor to advance, when the set rotates.
        entry: Option<&'s NameEntry>,
    },
    /// The name is known, the type is not: NOERROR, no answers.
    NoData {
        /// Attach the zone's SOA in the authority section.
        soa: bool,
    },
    /// The name does not exist here and must not be forwarded.
    NxDomain {
        /// Attach the zone's SOA in the authority section.
        soa: bool,
    },
    /// Not ours: ask upstream.
    Forward,
}

/// An immutable, compiled answer table. See the module docs.
#[derive(Debug)]
pub struct Snapshot {
    entries: Vec<NameEntry>,
    views: Vec<View>,
    host_view: ViewId,
    client_views: FxHashMap<IpAddr, ViewId>,
    listener_views: FxHashMap<IpAddr, ViewId>,
    networks: Vec<NetworkInfo>,
    domain_key: Option<Box<[u8]>>,
    soa: RecordSet,
    soa_authority: Box<[u8]>,
    /// Subnets of every served network (clients there may use the server).
    served_subnets: Box<[ipnet::IpNet]>,
    /// Settings it was built with.
    pub settings: BuildSettings,
    /// Monotonic build counter (set by the publisher).
    pub generation: u64,
}

/// Per-network name tables during the build: plain names and `name.network`/reverse names.
#[derive(Default)]
struct NetTables {
    plain: BTreeMap<Vec<u8>, u32>,
    qualified: BTreeMap<Vec<u8>, u32>,
}

/// Accumulates the addresses of one (network, name) before health filtering.
#[derive(Default)]
struct Acc {
    text: String,
    members: Vec<(bool, Vec<IpAddr>)>,
    ptr: Option<String>,
}

impl Snapshot {
    /// An empty snapshot: answers nothing locally, forwards everything.
    pub fn empty(settings: BuildSettings) -> Snapshot {
        Snapshot::build(&Catalog::default(), settings)
    }

    /// Compiles a catalog into a snapshot.
    pub fn build(catalog: &Catalog, settings: BuildSettings) -> Snapshot {
        let ttl = settings.ttl;
        let net_names: Vec<&String> = catalog.networks.keys().collect();
        let net_index: FxHashMap<&str, u32> = net_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32))
            .collect();

        // 1. Gather (network, key) -> addresses, per container, with health.
        let mut accs: Vec<BTreeMap<Vec<u8>, Acc>> =
            (0..net_names.len()).map(|_| BTreeMap::new()).collect();
        let mut qualified_keys: Vec<BTreeMap<Vec<u8>, Vec<u8>>> =
            vec![BTreeMap::new(); net_names.len()];
        for container in catalog.containers.values() {
            let serving = container.health.is_serving();
            for ep in &container.endpoints {
                let Some(&ni) = net_index.get(ep.network.as_str()) else {
                    continue;
                };
                let addrs: Vec<IpAddr> = ep
                    .ipv4
                    .iter()
                    .map(|a| IpAddr::V4(*a))
                    .chain(ep.ipv6.iter().map(|a| IpAddr::V6(*a)))
                    .collect();
                let net_acc = &mut accs[ni as usize];
                for name in endpoint_names(container, ep) {
                    let Some(key) = normalize_name(name) else {
                        continue;
                    };
                    let acc = net_acc.entry(key.clone()).or_default();
                    if acc.text.is_empty() {
                        acc.text = name.to_ascii_lowercase();
                    }
                    acc.members.push((serving, addrs.clone()));
                    let qualified = format!("{name}.{}", ep.network);
                    if let Some(qkey) = normalize_name(&qualified) {
                        let qacc = net_acc.entry(qkey.clone()).or_default();
                        if qacc.text.is_empty() {
                            qacc.text = qualified.to_ascii_lowercase();
                        }
                        qacc.members.push((serving, addrs.clone()));
                        qualified_keys[ni as usize].insert(qkey, key.clone());
                    }
                }
                // PTR: the container's primary name on this network; the first container wins.
                let primary = container.name.strip_prefix('/').unwrap_or(&container.name);
                for ip in &addrs {
                    let rev = reverse_name(*ip);
                    if let Some(rkey) = normalize_name(&rev) {
                        let racc = net_acc.entry(rkey.clone()).or_default();
                        if racc.ptr.is_none() {
                            racc.text = rev;
                            racc.ptr = Some(format!("{primary}.{}.", ep.network));
                            qualified_keys[ni as usize].insert(rkey.clone(), rkey);
                        }
                    }
                }
            }
        }
        for svc in &catalog.services {
            let Some(&ni) = net_index.get(svc.network.as_str()) else {
                continue;
            };
            let net_acc = &mut accs[ni as usize];
            let main = if svc.vips.is_empty() {
                &svc.tasks
            } else {
                &svc.vips
            };
            for (name, addrs) in [
                (svc.name.clone(), main),
                (format!("tasks.{}", svc.name), &svc.tasks),
            ] {
                for (text, qualified) in [
                    (name.clone(), false),
                    (format!("{name}.{}", svc.network), true),
                ] {
                    let Some(key) = normalize_name(&text) else {
                        continue;
                    };
                    if qualified {
                        if let Some(plain) = normalize_name(&name) {
                            qualified_keys[ni as usize].insert(key.clone(), plain);
                        }
                    }
                    let acc = net_acc.entry(key).or_default();
                    if acc.text.is_empty() {
                        acc.text = text.to_ascii_lowercase();
                    }
                    acc.members.push((true, addrs.clone()));
                }
            }
        }

        // 2. Compile entries, per network tables.
        let mut entries = Vec::new();
        let mut tables: Vec<NetTables> = Vec::with_capacity(net_names.len());
        for (ni, net_acc) in accs.into_iter().enumerate() {
            let mut t = NetTables::default();
            for (key, acc) in net_acc {
                let entry = compile_entry(&acc, ni as u32, ttl, settings.health_aware);
                let idx = entries.len() as u32;
                entries.push(entry);
                if qualified_keys[ni].contains_key(&key) {
                    t.qualified.insert(key, idx);
                } else {
                    t.plain.insert(key, idx);
                }
            }
            tables.push(t);
        }

        let networks: Vec<NetworkInfo> = catalog
            .networks
            .values()
            .map(|n| NetworkInfo {
                name: n.name.clone(),
                internal: n.internal,
            })
            .collect();

        // 3. Views.
        let mut builder = ViewBuilder {
            tables: &tables,
            networks: &networks,
            views: Vec::new(),
            by_spec: FxHashMap::default(),
        };
        let host_spec: Vec<(u32, bool)> = {
            let plain: Vec<u32> = match &settings.host_view {
                None => (0..net_names.len() as u32).collect(),
                Some(list) => list
                    .iter()
                    .filter_map(|n| net_index.get(n.as_str()).copied())
                    .collect(),
            };
            let mut spec: Vec<(u32, bool)> = plain.iter().map(|&i| (i, true)).collect();
            if settings.host_sees_all_qualified {
                for i in 0..net_names.len() as u32 {
                    if !plain.contains(&i) {
                        spec.push((i, false));
                    }
                }
            }
            spec
        };
        let host_view = builder.view(host_spec);
        let mut client_views = FxHashMap::default();
        for container in catalog.containers.values() {
            let spec: Vec<(u32, bool)> = container
                .endpoints
                .iter()
                .filter_map(|ep| net_index.get(ep.network.as_str()).map(|&i| (i, true)))
                .collect();
            if spec.is_empty() {
                continue;
            }
            let vid = builder.view(spec);
            for ep in &container.endpoints {
                if !net_index.contains_key(ep.network.as_str()) {
                    continue;
                }
                for ip in ep.ipv4.iter().map(|a| IpAddr::V4(*a)) {
                    client_views.entry(ip).or_insert(vid);
                }
                for ip in ep.ipv6.iter().map(|a| IpAddr::V6(*a)) {
                    client_views.entry(ip).or_insert(vid);
                }
            }
        }
        let mut listener_views = FxHashMap::default();
        for net in catalog.networks.values() {
            let ni = net_index[net.name.as_str()];
            if net.listen_addrs.is_empty() {
                continue;
            }
            let vid = builder.view(vec![(ni, true)]);
            for addr in &net.listen_addrs {
                listener_views.entry(*addr).or_insert(vid);
            }
        }
        let views = builder.views;

        // 4. The zone.
        let domain_key = settings
            .domain
            .as_deref()
            .and_then(normalize_name)
            .map(Vec::into_boxed_slice);
        let (soa, soa_authority) = match settings.domain.as_deref() {
            Some(d) => build_soa(d, ttl),
            None => (RecordSet::default(), Box::default()),
        };

        let served_subnets = catalog
            .networks
            .values()
            .flat_map(|n| n.subnets.iter().copied())
            .collect();
        Snapshot {
            entries,
            views,
            host_view,
            client_views,
            listener_views,
            networks,
            domain_key,
            soa,
            soa_authority,
            served_subnets,
            settings,
            generation: 0,
        }
    }

    /// The view a query sees: the client container's networks, else the network of the address
    /// the query arrived on, else the host view.
    #[inline]
    pub fn view_for(&self, client: IpAddr, local: Option<IpAddr>) -> &View {
        let id = self
            .client_views
            .get(&client)
            .or_else(|| local.and_then(|l| self.listener_views.get(&l)))
            .copied()
            .unwrap_or(self.host_view);
        &self.views[id as usize]
    }

    /// Whether `client` is a known container address or lies in a served network's subnet
    /// (the access check in `dns::guard`). No allocation.
    #[inline]
    pub fn is_served_client(&self, client: IpAddr) -> bool {
        self.client_views.contains_key(&client)
            || self.served_subnets.iter().any(|n| n.contains(&client))
    }

    /// Which rule picked the view for a client (for `dockns query` and logs).
    pub fn scope_reason(&self, client: IpAddr, local: Option<IpAddr>) -> &'static str {
        if self.client_views.contains_key(&client) {
            "client address belongs to a known container"
        } else if local.is_some_and(|l| self.listener_views.contains_key(&l)) {
            "query arrived on a network's own address"
        } else {
            "host view (client is not a known container)"
        }
    }

    /// The host view.
    pub fn host_view(&self) -> &View {
        &self.views[self.host_view as usize]
    }

    /// The networks, by index.
    pub fn networks(&self) -> &[NetworkInfo] {
        &self.networks
    }

    /// Number of compiled name entries.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Every compiled name entry (for the admin API and tools; not used on the query path).
    pub fn entries(&self) -> &[NameEntry] {
        &self.entries
    }

    /// The entry a view answers `key` from, with the zone suffix stripped as [`Snapshot::resolve`]
    /// does (for `dockns query` explanations; not used on the query path).
    pub fn entry_for(&self, view: &View, key: &[u8]) -> Option<&NameEntry> {
        let mut lookup = key;
        if let Some(dk) = self.domain_key.as_deref() {
            if key.len() > dk.len()
                && key.ends_with(dk)
                && is_label_boundary(key, key.len() - dk.len())
            {
                lookup = &key[..key.len() - dk.len()];
            }
        }
        view.names
            .get(lookup)
            .map(|&idx| &self.entries[idx as usize])
    }

    /// Number of distinct views.
    pub fn view_count(&self) -> usize {
        self.views.len()
    }

    /// The encoded SOA record for the authority section of negative answers under the domain
    /// (owner name written out in full). Empty when no domain is configured.
    pub fn soa_authority(&self) -> &[u8] {
        &self.soa_authority
    }

    /// Decides what the tables say about `key` (lower-case wire name without the root label).
    #[inline]
    pub fn resolve<'s>(
        &'s self,
        view: &'s View,
        key: &[u8],
        qtype: u16,
        qclass: u16,
    ) -> Resolution<'s> {
        let mut lookup = key;
        let mut in_zone = false;
        if let Some(dk) = self.domain_key.as_deref() {
            if key == dk {
                if qclass != CLASS_IN {
                    return Resolution::NxDomain { soa: true };
                }
                return if qtype == TYPE_SOA {
                    Resolution::Answer {
                        set: &self.soa,
                        entry: None,
                    }
                } else {
                    Resolution::NoData { soa: true }
                };
            }
            if key.len() > dk.len()
                && key.ends_with(dk)
                && is_label_boundary(key, key.len() - dk.len())
            {
                lookup = &key[..key.len() - dk.len()];
                in_zone = true;
            }
        }
        if qclass != CLASS_IN {
            return if in_zone || !view.forward {
                Resolution::NxDomain { soa: in_zone }
            } else {
                Resolution::Forward
            };
        }
        match view.names.get(lookup) {
            Some(&idx) => {
                let entry = &self.entries[idx as usize];
                let set = match qtype {
                    TYPE_A => &entry.a,
                    TYPE_AAAA => &entry.aaaa,
                    TYPE_PTR => &entry.ptr,
                    _ => return Resolution::NoData { soa: in_zone },
                };
                if set.is_empty() {
                    Resolution::NoData { soa: in_zone }
                } else {
                    Resolution::Answer {
                        set,
                        entry: (set.stride > 0).then_some(entry),
                    }
                }
            }
            None if in_zone => Resolution::NxDomain { soa: true },
            None if view.forward => Resolution::Forward,
            None => Resolution::NxDomain { soa: false },
        }
    }
}

/// Whether `pos` is the start of a label when walking the wire name `key` from the beginning.
fn is_label_boundary(key: &[u8], pos: usize) -> bool {
    let mut i = 0usize;
    while i < pos {
        i += 1 + usize::from(key[i]);
    }
    i == pos
}

fn compile_entry(acc: &Acc, network: u32, ttl: u32, health_aware: bool) -> NameEntry {
    let any_serving = acc.members.iter().any(|(s, _)| *s);
    let mut addrs: Vec<IpAddr> = Vec::new();
    for (serving, list) in &acc.members {
        if health_aware && any_serving && !serving {
            continue;
        }
        for ip in list {
            if !addrs.contains(ip) {
                addrs.push(*ip);
            }
        }
    }
    let owner = Name::root();
    let a: Vec<Record> = addrs
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(Record::from_rdata(owner.clone(), ttl, RData::A(A(*v4)))),
            IpAddr::V6(_) => None,
        })
        .collect();
    let aaaa: Vec<Record> = addrs
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V6(v6) => Some(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::AAAA(AAAA(*v6)),
            )),
            IpAddr::V4(_) => None,
        })
        .collect();
    let ptr: Vec<Record> = acc
        .ptr
        .as_deref()
        .and_then(|target| Name::from_ascii(target).ok())
        .map(|target| Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(target))))
        .into_iter()
        .collect();
    NameEntry {
        name: acc.text.clone().into_boxed_str(),
        network,
        a: RecordSet::from_records(&a, true),
        aaaa: RecordSet::from_records(&aaaa, true),
        ptr: RecordSet::from_records(&ptr, false),
        rotor: AtomicU32::new(0),
    }
}

/// The zone's SOA: as an answer (owner = question name, pointer) and as an authority record
/// (owner written out in full, since the question may be any name under the zone).
fn build_soa(domain: &str, ttl: u32) -> (RecordSet, Box<[u8]>) {
    let domain = domain.trim_end_matches('.');
    let (Ok(zone), Ok(mname), Ok(rname)) = (
        Name::from_ascii(format!("{domain}.")),
        Name::from_ascii(format!("ns.dockns.{domain}.")),
        Name::from_ascii(format!("hostmaster.{domain}.")),
    ) else {
        return (RecordSet::default(), Box::default());
    };
    // Negative answers are cached for the SOA MINIMUM (RFC 2308): use the local TTL.
    let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, ttl);
    let record = Record::from_rdata(zone.clone(), ttl, RData::SOA(soa));
    let answer = RecordSet::from_records(std::slice::from_ref(&record), false);
    let mut authority = Vec::new();
    {
        let mut enc = BinEncoder::new(&mut authority);
        enc.set_name_encoding(NameEncoding::Uncompressed);
        let _ = record.emit(&mut enc);
    }
    (answer, authority.into_boxed_slice())
}

struct ViewBuilder<'a> {
    tables: &'a [NetTables],
    networks: &'a [NetworkInfo],
    views: Vec<View>,
    by_spec: FxHashMap<Vec<(u32, bool)>, ViewId>,
}

impl ViewBuilder<'_> {
    fn view(&mut self, spec: Vec<(u32, bool)>) -> ViewId {
        if let Some(&id) = self.by_spec.get(&spec) {
            return id;
        }
        let mut names: FxHashMap<Arc<[u8]>, u32> = FxHashMap::default();
        for &(ni, plain) in &spec {
            let t = &self.tables[ni as usize];
            if plain {
                for (k, &v) in &t.plain {
                    names.entry(Arc::from(k.as_slice())).or_insert(v);
                }
            }
            for (k, &v) in &t.qualified {
                names.entry(Arc::from(k.as_slice())).or_insert(v);
            }
        }
        let plain_nets: Vec<u32> = spec.iter().filter(|s| s.1).map(|s| s.0).collect();
        let forward = plain_nets.is_empty()
            || plain_nets
                .iter()
                .any(|&i| !self.networks[i as usize].internal);
        let id = self.views.len() as ViewId;
        self.views.push(View {
            names,
            forward,
            networks: spec.clone(),
        });
        self.by_spec.insert(spec, id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, Endpoint, Health, Network};

    fn net(name: &str, internal: bool) -> Network {
        Network {
            name: name.into(),
            id: String::new(),
            internal,
            listen_addrs: vec![],
            subnets: vec![],
        }
    }

    fn ctr(name: &str, net: &str, ip: &str, aliases: &[&str], health: Health) -> Container {
        Container {
            id: String::new(),
            name: name.into(),
            hostname: None,
            health,
            extra_names: vec![],
            endpoints: vec![Endpoint {
                network: net.into(),
                ipv4: vec![ip.parse().unwrap()],
                ipv6: vec![],
                aliases: aliases.iter().map(|s| s.to_string()).collect(),
            }],
        }
    }

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        c.networks.insert("demo".into(), net("demo", false));
        c.networks.insert("priv".into(), net("priv", true));
        for (n, ip, h) in [
            ("api-1", "10.0.0.11", Health::Healthy),
            ("api-2", "10.0.0.12", Health::Unhealthy),
            ("api-3", "10.0.0.13", Health::None),
        ] {
            c.containers
                .insert(n.into(), ctr(n, "demo", ip, &["api"], h));
        }
        c.containers.insert(
            "vault".into(),
            ctr("vault", "priv", "10.1.0.2", &[], Health::None),
        );
        c
    }

    fn key(s: &str) -> Vec<u8> {
        normalize_name(s).unwrap()
    }

    #[test]
    fn health_aware_filters_while_someone_is_healthy() {
        let s = Snapshot::build(&catalog(), BuildSettings::default());
        let v = s.host_view();
        match s.resolve(v, &key("api"), TYPE_A, CLASS_IN) {
            Resolution::Answer { set, entry } => {
                assert_eq!(set.count(), 2);
                assert!(entry.is_some());
            }
            other => panic!("{other:?}"),
        }
        let s = Snapshot::build(
            &catalog(),
            BuildSettings {
                health_aware: false,
                ..Default::default()
            },
        );
        match s.resolve(s.host_view(), &key("api"), TYPE_A, CLASS_IN) {
            Resolution::Answer { set, .. } => assert_eq!(set.count(), 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nodata_forward_and_internal() {
        let s = Snapshot::build(&catalog(), BuildSettings::default());
        let v = s.host_view();
        assert!(matches!(
            s.resolve(v, &key("api"), 15, CLASS_IN),
            Resolution::NoData { soa: false }
        ));
        assert!(matches!(
            s.resolve(v, &key("api.demo"), TYPE_AAAA, CLASS_IN),
            Resolution::NoData { .. }
        ));
        assert!(matches!(
            s.resolve(v, &key("example.com"), TYPE_A, CLASS_IN),
            Resolution::Forward
        ));
        // A client on the internal network only.
        let v = s.view_for("10.1.0.2".parse().unwrap(), None);
        assert!(!v.forward);
        assert!(matches!(
            s.resolve(v, &key("example.com"), TYPE_A, CLASS_IN),
            Resolution::NxDomain { soa: false }
        ));
        // ...and it does not see the other network.
        assert!(matches!(
            s.resolve(v, &key("api"), TYPE_A, CLASS_IN),
            Resolution::NxDomain { .. }
        ));
    }

    #[test]
    fn domain_zone_and_ptr() {
        let s = Snapshot::build(
            &catalog(),
            BuildSettings {
                domain: Some("docker".into()),
                ..Default::default()
            },
        );
        let v = s.host_view();
        assert!(matches!(
            s.resolve(v, &key("api.docker"), TYPE_A, CLASS_IN),
            Resolution::Answer { .. }
        ));
        assert!(matches!(
            s.resolve(v, &key("api.demo.docker"), TYPE_A, CLASS_IN),
            Resolution::Answer { .. }
        ));
        assert!(matches!(
            s.resolve(v, &key("nope.docker"), TYPE_A, CLASS_IN),
            Resolution::NxDomain { soa: true }
        ));
        assert!(matches!(
            s.resolve(v, &key("docker"), TYPE_SOA, CLASS_IN),
            Resolution::Answer { .. }
        ));
        // "xdocker" is not under "docker".
        assert!(matches!(
            s.resolve(v, &key("a.xdocker"), TYPE_A, CLASS_IN),
            Resolution::Forward
        ));
        match s.resolve(v, &key("11.0.0.10.in-addr.arpa"), TYPE_PTR, CLASS_IN) {
            Resolution::Answer { set, .. } => assert_eq!(set.count(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rotation_cycles() {
        let s = Snapshot::build(&catalog(), BuildSettings::default());
        let Resolution::Answer {
            set,
            entry: Some(e),
        } = s.resolve(s.host_view(), &key("api"), TYPE_A, CLASS_IN)
        else {
            panic!()
        };
        let r: Vec<usize> = (0..4).map(|_| e.next_rotation(set.count())).collect();
        assert_eq!(r, vec![0, 1, 0, 1]);
    }
}
