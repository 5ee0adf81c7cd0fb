//! The immutable, query-ready form of the model.
//!
//! A [`Snapshot`] is compiled from a [`Catalog`] whenever something changes and then only read.
//! Each network compiles to its own table: a hash map from the lower-case wire key of a name to a
//! [`NameEntry`], whose answer records are already encoded in wire format. A *view* (an ordered
//! set of networks a client can see) is either one network's table or a map merged from several,
//! so a lookup is always one hash probe; answering is then a copy, and rotation a relaxed atomic
//! increment on the entry. Nothing here allocates, locks or awaits after the build.
//!
//! Rebuilds are incremental, in proportion to the change. [`Snapshot::rebuild`] finds the
//! changed containers by a diff of the persistent container maps, which skips the subtrees two
//! catalogs share (and reads a container only when its `Arc` differs), recompiles
//! only the networks they (or a changed service) touch, finding each such network's members
//! from its previous table rather than by walking every container, and reuses the other tables,
//! rotation state included. The views are patched, not assembled again: a merged view over a
//! recompiled network gets that network's keys re-pointed (views over unchanged networks are
//! shared as they are), and only the changed containers' addresses move in the client-view map.
//! The big maps a patch changes (a merged view over hundreds of networks, the client-view map)
//! are double-buffered: [`Snapshot::rebuild_reusing`] takes them from a spare, older snapshot
//! no reader holds any more and patches them in place, rather than copying the current ones.
//! Whatever a rebuild gives, a fresh [`Snapshot::build`] gives too (seeded random tests hold
//! them to it, with and without a spare); the rebuild falls back to a fresh assembly of the
//! views when the networks or the view settings change or an address two containers claim is
//! touched. With 10,000 containers
//! over 500 networks one change compiles in well under a millisecond against ~40 ms for a full
//! build (`cargo bench --bench dns -- rebuild`, docs/performance.md).
//!
//! Scope (who sees what) is also decided here, by [`Snapshot::view_for`]: the client's own
//! container view, else the view of the network the query arrived on, else the host view. A
//! container with links (`--link target:alias`) gets a view of its own whose small link map is
//! probed before the shared network tables; every other view carries no map, so the common
//! lookup pays one branch. Where a question the tables do not answer goes is decided here too
//! ([`Snapshot::unanswered`], [`Snapshot::client_servers`]): the client container's own DNS
//! servers (Docker's `--dns`), only on-network ones for internal-only clients (else SERVFAIL),
//! and never Docker's 127.0.0.11 for a name that is a container's on any served network
//! (NXDOMAIN).

use super::names::{endpoint_names, normalize_name, ptr_name, reverse_name};
use super::zone::{self, ReverseKind, ZoneData};
use super::{Catalog, Container, Endpoint, ServiceRecord};
use crate::wire::RecordSet;
use crate::wire::{CLASS_ANY, CLASS_IN, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_NS, TYPE_PTR, TYPE_SOA};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

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
    /// Name-server addresses (`[server] ns_addresses`); empty: the listeners'.
    pub ns_addresses: Vec<IpAddr>,
    /// Addresses of the fixed listeners (`[server] listen`), for the default NS addresses.
    pub listen_addresses: Vec<IpAddr>,
    /// Forward names that are not local (`[server] recursion`). Off: an authoritative-only
    /// server, RA clear on every reply and REFUSED for names outside its zones.
    pub recursion: bool,
    /// The default upstream servers (`[upstream] servers`, standing in for the Docker daemon's
    /// own): used by clients without servers of their own. Only read to know whether Docker's
    /// resolver (127.0.0.11) is among them (see [`Snapshot::unanswered`]).
    pub default_upstreams: Vec<SocketAddr>,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            ttl: 5,
            domain: None,
            host_view: None,
            host_sees_all_qualified: false,
            health_aware: true,
            ns_addresses: Vec::new(),
            listen_addresses: Vec::new(),
            recursion: true,
            default_upstreams: Vec::new(),
        }
    }
}

/// Everything answerable for one owner name on one network.
#[derive(Debug, Default)]
pub struct NameEntry {
    /// The name as text, for tools and logs.
    pub name: Box<str>,
    /// A records.
    pub a: RecordSet,
    /// AAAA records.
    pub aaaa: RecordSet,
    /// PTR record (reverse names only).
    pub ptr: RecordSet,
    /// The PTR target cannot be written as a DNS name (a label over 63 bytes, or over 255 in
    /// all): PTR questions get SERVFAIL, as current Docker answers (20.10 says nothing).
    pub ptr_unencodable: bool,
    /// The name is `name.network` or a reverse name: visible where only the network's
    /// qualified names are (see [`BuildSettings::host_sees_all_qualified`]).
    qualified: bool,
    rotor: AtomicU32,
}

impl NameEntry {
    /// A copy for the next compile of its table (its inputs did not change), rotation
    /// included.
    fn carried(&self) -> NameEntry {
        NameEntry {
            name: self.name.clone(),
            a: self.a.clone(),
            aaaa: self.aaaa.clone(),
            ptr: self.ptr.clone(),
            ptr_unencodable: self.ptr_unencodable,
            qualified: self.qualified,
            rotor: AtomicU32::new(self.rotor.load(Ordering::Relaxed)),
        }
    }

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

/// An ordered set of networks as one client sees them: one network's own map, or the maps of
/// several merged into one (first network wins), so a lookup is always one hash probe. Cloning
/// one shares its maps.
#[derive(Debug, Clone)]
pub struct View {
    names: ViewNames,
    /// The linking container's link aliases (`--link target:alias`), looked up before `names`.
    /// `None` for every view but those of containers with links, so the common lookup pays one
    /// branch on a null pointer.
    links: Option<Arc<FxHashMap<Arc<[u8]>, EntryRef>>>,
    /// The catalog key of the container whose links these are (linked views only).
    owner: Option<Arc<str>>,
    /// Whether unknown names may be forwarded (at least one visible network is not internal).
    pub forward: bool,
    /// The networks this view shows, in priority order, with whether plain names are visible
    /// (shared: copying a view for a rebuild allocates nothing).
    pub networks: Arc<[(u32, bool)]>,
    /// The empty non-terminals this view sees (see [`ViewEnts`]).
    ents: ViewEnts,
}

/// The empty non-terminals of a view (RFC 8020): parents of its names that are no name
/// themselves, and the names of its networks. Consulted only under `domain` and in the
/// reverse zones, where they answer NODATA instead of NXDOMAIN.
#[derive(Debug, Clone)]
enum ViewEnts {
    /// Exactly one network with its plain names: that network's set.
    One(u32),
    /// Several networks, merged.
    Merged(Arc<FxHashSet<Arc<[u8]>>>),
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
    /// A name in the reverse zone of a served subnet with nothing for this question: NXDOMAIN
    /// (or NODATA for an empty non-terminal, or another type), with the reverse zone's SOA.
    Reverse {
        /// NXDOMAIN rather than NODATA.
        nxdomain: bool,
        /// Offset of the reverse zone's apex inside the question name.
        zone_at: u16,
    },
    /// A class dockns holds no data in (CHAOS, HESIOD, NONE, …): REFUSED, never forwarded.
    Refused,
    /// The name is ours but its answer cannot be encoded (a PTR target that is not a valid DNS
    /// name): SERVFAIL, never forwarded.
    ServFail,
}

/// What happens to a question the tables do not answer ([`Snapshot::unanswered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// Forward it, to [`Snapshot::client_servers`] (or the default servers when `None`).
    Forward,
    /// NXDOMAIN, not forwarded: the name belongs to a container on a network the client does
    /// not see, and the upstream is Docker's resolver, which would answer it from dockns's own
    /// scope (a leak, and a stale answer cached for Docker's 600 s after the container stops).
    NxDomain,
    /// SERVFAIL at once: the client sees internal networks only and has no DNS server of its
    /// own on them (what current Docker answers).
    ServFail,
}

/// Docker's resolver address inside every container on a user-defined network.
pub const DOCKER_RESOLVER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 11));

/// Most servers Docker's resolver uses for one container (moby `maxExtDNS`).
pub const MAX_CLIENT_SERVERS: usize = 3;

/// An immutable, compiled answer table. See the module docs.
#[derive(Debug)]
pub struct Snapshot {
    /// Per-network tables, by network index (shared with other snapshots when unchanged).
    nets: Vec<Arc<NetTable>>,
    /// Network name → index into `nets` (shared while the catalog's networks are the same).
    net_index: Arc<NetIndex>,
    /// The views and the maps that pick one per address (see [`Views`]).
    routing: Views,
    /// Shared with the previous snapshot while the catalog's networks are the same.
    networks: Arc<[NetworkInfo]>,
    domain_key: Option<Box<[u8]>>,
    /// Zone records: SOA, NS, `ns1.<domain>` …, reverse-zone SOA (see `zone.rs`).
    zone: ZoneData,
    /// Name-server addresses (`ns1.<domain>`, …).
    ns_addrs: Vec<IpAddr>,
    /// Subnets of every served network (clients there may use the server).
    served_subnets: Box<[ipnet::IpNet]>,
    /// Per-container upstreams: each address of a container with DNS servers of its own → those
    /// servers (see [`Snapshot::client_servers`]). Identical lists share one allocation.
    client_upstreams: FxHashMap<IpAddr, Arc<[SocketAddr]>>,
    /// Every key of every network (names, aliases, `name.network`, reverse names), built only
    /// when some upstream in use is Docker's resolver: those names are never asked there.
    names_everywhere: Option<NameCounts>,
    /// The default upstreams include Docker's resolver (127.0.0.11).
    default_via_docker_resolver: bool,
    /// Settings it was built with.
    pub settings: BuildSettings,
    /// Monotonic build counter (set by the publisher).
    pub generation: u64,
}

/// One network's compiled name table. Shared (through an `Arc`) by successive snapshots for as
/// long as the network's inputs do not change, so a rebuild after one change recompiles only the
/// networks that change touched (see [`Snapshot::rebuild`]).
#[derive(Debug, Default)]
struct NetTable {
    /// The compiled entries; the maps below index into it. A name keeps its index when the
    /// table is recompiled (see [`table_of`]), so the merged maps of views need patching only
    /// for the names that came or went; the slot of a name that went is a tombstone (empty
    /// name, no records, in no map) until a new name takes it.
    entries: Vec<NameEntry>,
    /// A fingerprint of the inputs each entry was compiled from (see [`acc_print`]): an entry
    /// whose inputs are the same is carried over, not compiled again.
    prints: Vec<u64>,
    /// Every key of the network (plain names, `name.network` and reverse names) → entry: the
    /// whole map of a view that shows only this network.
    all: FxHashMap<Arc<[u8]>, u32>,
    /// The keys of `all` that are `name.network` or reverse names (visible even where the
    /// network's plain names are not).
    qualified: Box<[Arc<[u8]>]>,
    /// Empty non-terminals of every key, and the network's own name (see [`ViewEnts`]).
    ents: FxHashSet<Arc<[u8]>>,
    /// The part of `ents` visible where only the qualified names are.
    ents_qualified: Box<[Arc<[u8]>]>,
    /// The catalog keys of the containers attached to the network, in catalog order: where a
    /// rebuild finds this network's members without walking every container (nor looking
    /// them up: the containers that did not change since are these).
    members: Box<[(Arc<str>, Arc<Container>)]>,
}

/// Where a view's key points: an entry of one network's table.
#[derive(Debug, Clone, Copy)]
struct EntryRef {
    net: u32,
    idx: u32,
}

/// How a view finds names: one network's own map, or a map merged from several.
#[derive(Debug, Clone)]
enum ViewNames {
    /// The view shows exactly one network with its plain names: that network's map.
    One(u32),
    /// Several networks (or qualified-only ones), merged with the first network winning.
    /// Shared with the views of linking containers that see the same networks.
    Merged(Arc<FxHashMap<Arc<[u8]>, EntryRef>>),
}

/// Accumulates the addresses of one (network, name) before health filtering.
#[derive(Default)]
struct Acc {
    text: String,
    /// (Whether serving, addresses): the addresses of one endpoint are shared by its names.
    members: Vec<(bool, std::rc::Rc<[IpAddr]>)>,
    ptr: Option<String>,
    qualified: bool,
}

/// One network's inputs: the (catalog key, container, endpoint) triples attached to it, in
/// catalog order, and the services on it. Two equal inputs compile to the same table.
#[derive(Default)]
struct NetInput<'c> {
    members: Vec<(&'c Arc<str>, &'c Arc<Container>, &'c Endpoint)>,
    services: Vec<&'c ServiceRecord>,
}

#[cfg(test)]
impl NetInput<'_> {
    fn same_as(&self, other: &NetInput<'_>) -> bool {
        self.members.len() == other.members.len()
            && self.services == other.services
            && self
                .members
                .iter()
                .zip(&other.members)
                .all(|(a, b)| a.0 == b.0 && a.1 == b.1)
    }
}

/// Network name → index in the snapshot (the catalog's name order). Kept in the snapshot and
/// shared by the next one while the catalog's networks are the same map.
type NetIndex = FxHashMap<Arc<str>, u32>;

/// The [`NetIndex`] of a catalog.
fn network_index(catalog: &Catalog) -> NetIndex {
    catalog
        .networks
        .keys()
        .enumerate()
        .map(|(i, n)| (Arc::from(n.as_str()), i as u32))
        .collect()
}

/// Groups a catalog's containers and services by network (in `net_index` order), for the
/// networks whose `need` flag is set (the others stay empty).
fn group_inputs<'c>(
    catalog: &'c Catalog,
    net_index: &NetIndex,
    need: &[bool],
) -> Vec<NetInput<'c>> {
    let mut inputs: Vec<NetInput<'c>> = (0..net_index.len()).map(|_| NetInput::default()).collect();
    for (key, container) in &catalog.containers {
        for ep in &container.endpoints {
            if let Some(&ni) = net_index.get(ep.network.as_str()) {
                if need[ni as usize] {
                    inputs[ni as usize].members.push((key, container, ep));
                }
            }
        }
    }
    for svc in &catalog.services {
        if let Some(&ni) = net_index.get(svc.network.as_str()) {
            if need[ni as usize] {
                inputs[ni as usize].services.push(svc);
            }
        }
    }
    inputs
}

/// One container that differs between two catalogs: its key, the old and the new version
/// (`None`: absent on that side).
type Change<'c> = (
    &'c Arc<str>,
    Option<&'c Arc<Container>>,
    Option<&'c Arc<Container>>,
);

/// The networks whose tables going from `old` to `new` can change: every network an added,
/// removed or changed container is or was attached to, and every network whose services
/// changed; and those containers. The container maps are persistent and share what did not
/// change, so their [`imbl::OrdMap::diff`] skips every shared subtree: the work is
/// proportional to the change, not to the containers, and a container both catalogs share
/// (the same `Arc`) is not read at all.
fn dirty_networks<'c>(old: &'c Catalog, new: &'c Catalog) -> (FxHashSet<&'c str>, Vec<Change<'c>>) {
    use imbl::ordmap::DiffItem;
    let mut dirty = FxHashSet::default();
    let mut changes: Vec<Change<'c>> = Vec::new();
    let mut mark = |c: &'c Container| {
        for ep in &c.endpoints {
            dirty.insert(ep.network.as_str());
        }
    };
    for item in old.containers.diff(&new.containers) {
        match item {
            DiffItem::Add(k, c) => {
                mark(c);
                changes.push((k, None, Some(c)));
            }
            DiffItem::Remove(k, c) => {
                mark(c);
                changes.push((k, Some(c), None));
            }
            DiffItem::Update {
                old: (_, a),
                new: (k, b),
            } => {
                mark(a);
                mark(b);
                changes.push((k, Some(a), Some(b)));
            }
        }
    }
    let by_network = |c: &'c Catalog| {
        let mut m: BTreeMap<&'c str, Vec<&'c ServiceRecord>> = BTreeMap::new();
        for svc in &c.services {
            m.entry(svc.network.as_str()).or_default().push(svc);
        }
        m
    };
    let (sa, sb) = (by_network(old), by_network(new));
    for (net, list) in &sa {
        if sb.get(net) != Some(list) {
            dirty.insert(net);
        }
    }
    for net in sb.keys() {
        if !sa.contains_key(net) {
            dirty.insert(net);
        }
    }
    (dirty, changes)
}

/// Compiles one network's table from its inputs.
fn compile_network(
    network: &str,
    input: &NetInput<'_>,
    settings: &BuildSettings,
    old: Option<&NetTable>,
) -> NetTable {
    let mut accs: BTreeMap<Vec<u8>, Acc> = BTreeMap::new();
    add_member_names(&mut accs, network, input);
    add_service_names(&mut accs, network, input);
    let mut table = table_of(accs, network, settings, old);
    let mut members: Vec<(Arc<str>, Arc<Container>)> = Vec::with_capacity(input.members.len());
    for &(key, container, _) in &input.members {
        if members.last().map(|(k, _)| k) != Some(key) {
            members.push((key.clone(), container.clone()));
        }
    }
    table.members = members.into_boxed_slice();
    table
}

/// [`group_inputs`] for a rebuild: the members of a network that had a table are that table's
/// members that did not change and the changed containers now attached to it (work
/// proportional to those networks, not to every container, and no lookup by key); networks
/// new since `prev` are found by a walk over the catalog as in a fresh build.
fn group_dirty_inputs<'c>(
    catalog: &'c Catalog,
    net_index: &NetIndex,
    need: &[bool],
    prev: (&'c Snapshot, &'c Catalog),
    changes: &[Change<'c>],
) -> Vec<NetInput<'c>> {
    let (snap, old_cat) = prev;
    let mut fresh = vec![false; need.len()];
    let changed: FxHashSet<&str> = changes.iter().map(|(k, _, _)| &***k).collect();
    type Member<'c> = (&'c Arc<str>, &'c Arc<Container>);
    let mut keys: Vec<Vec<Member<'c>>> = vec![Vec::new(); need.len()];
    // Network `ni` had table `oi` in the previous snapshot (if any): its members that did not
    // change are the same containers in the new catalog.
    let mut take_old = |ni: usize, oi: Option<usize>| match oi.and_then(|oi| snap.nets.get(oi)) {
        Some(t) => keys[ni].extend(
            t.members
                .iter()
                .filter(|(k, _)| !changed.contains(&**k))
                .map(|(k, c)| (k, c)),
        ),
        None => fresh[ni] = true,
    };
    if old_cat.networks.ptr_eq(&catalog.networks) {
        // The same networks: the same indices (no name is looked at).
        for ni in (0..need.len()).filter(|&ni| need[ni]) {
            take_old(ni, Some(ni));
        }
    } else {
        let old_index: FxHashMap<&str, usize> = old_cat
            .networks
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        for (name, &ni) in net_index {
            if need[ni as usize] {
                take_old(ni as usize, old_index.get(&**name).copied());
            }
        }
    }
    for &(key, _, new) in changes {
        let Some(new) = new else { continue };
        for ep in &new.endpoints {
            if let Some(&ni) = net_index.get(ep.network.as_str()) {
                keys[ni as usize].push((key, new));
            }
        }
    }
    let mut inputs: Vec<NetInput<'c>> = if fresh.iter().any(|f| *f) {
        group_inputs(catalog, net_index, &fresh)
    } else {
        (0..need.len()).map(|_| NetInput::default()).collect()
    };
    for (ni, list) in keys.iter_mut().enumerate() {
        if !need[ni] || fresh[ni] {
            continue;
        }
        // In catalog (key) order, each container once.
        list.sort_unstable_by(|a, b| a.0.cmp(b.0));
        list.dedup_by(|a, b| a.0 == b.0);
        for &(key, container) in list.iter() {
            for ep in &container.endpoints {
                if net_index.get(ep.network.as_str()) == Some(&(ni as u32)) {
                    inputs[ni].members.push((key, container, ep));
                }
            }
        }
    }
    for svc in &catalog.services {
        if let Some(&ni) = net_index.get(svc.network.as_str()) {
            if need[ni as usize] && !fresh[ni as usize] {
                inputs[ni as usize].services.push(svc);
            }
        }
    }
    inputs
}

/// Adds the names of the network's container endpoints (plain, `name.network`, reverse).
fn add_member_names(accs: &mut BTreeMap<Vec<u8>, Acc>, network: &str, input: &NetInput<'_>) {
    for &(_, container, ep) in &input.members {
        let serving = container.health.is_serving();
        let addrs: std::rc::Rc<[IpAddr]> = ep
            .ipv4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(ep.ipv6.iter().map(|a| IpAddr::V6(*a)))
            .collect();
        for name in endpoint_names(container, ep) {
            let Some(key) = normalize_name(name) else {
                continue;
            };
            let acc = accs.entry(key).or_default();
            if acc.text.is_empty() {
                acc.text = name.to_ascii_lowercase();
            }
            acc.members.push((serving, addrs.clone()));
            let qualified = format!("{name}.{network}");
            if let Some(qkey) = normalize_name(&qualified) {
                let qacc = accs.entry(qkey).or_default();
                if qacc.text.is_empty() {
                    qacc.text = qualified.to_ascii_lowercase();
                }
                qacc.members.push((serving, addrs.clone()));
                qacc.qualified = true;
            }
        }
        // PTR: the container's primary name on this network (an anonymous container's first
        // alias); the first container wins.
        let Some(primary) = ptr_name(container, ep) else {
            continue;
        };
        for ip in addrs.iter() {
            let rev = reverse_name(*ip);
            if let Some(rkey) = normalize_name(&rev) {
                let racc = accs.entry(rkey).or_default();
                if racc.ptr.is_none() {
                    racc.text = rev;
                    racc.ptr = Some(format!("{primary}.{network}."));
                    racc.qualified = true;
                }
            }
        }
    }
}

/// Adds the names of the network's swarm services (`name`, `tasks.name`, both qualified too).
fn add_service_names(accs: &mut BTreeMap<Vec<u8>, Acc>, network: &str, input: &NetInput<'_>) {
    for svc in &input.services {
        let main = if svc.vips.is_empty() {
            &svc.tasks
        } else {
            &svc.vips
        };
        for (name, addrs) in [
            (svc.name.clone(), main),
            (format!("tasks.{}", svc.name), &svc.tasks),
        ] {
            for (text, qualified) in [(name.clone(), false), (format!("{name}.{network}"), true)] {
                let Some(key) = normalize_name(&text) else {
                    continue;
                };
                let acc = accs.entry(key).or_default();
                if acc.text.is_empty() {
                    acc.text = text.to_ascii_lowercase();
                }
                acc.members.push((true, addrs.as_slice().into()));
                acc.qualified |= qualified;
            }
        }
    }
}

/// Compiles the gathered names into the network's lookup table. With `old`, the network's
/// previous table: each name that it had keeps its index, and its entry is carried over
/// (rotation included) when its inputs are the same; new names take the slots of names that
/// went, then new ones. A table with more tombstones than live names is compiled afresh.
fn table_of(
    accs: BTreeMap<Vec<u8>, Acc>,
    network: &str,
    settings: &BuildSettings,
    old: Option<&NetTable>,
) -> NetTable {
    let old = old.filter(|o| {
        let live = o.all.len();
        o.entries.len() - live <= live.max(16)
    });
    let slots = old.map_or(0, |o| o.entries.len());
    let mut entries: Vec<Option<NameEntry>> = Vec::with_capacity(slots.max(accs.len()));
    entries.resize_with(slots, || None);
    let mut prints: Vec<u64> = vec![0; slots];
    let mut all: FxHashMap<Arc<[u8]>, u32> =
        FxHashMap::with_capacity_and_hasher(accs.len(), Default::default());
    let mut qualified = Vec::new();
    let mut added: Vec<(Vec<u8>, Acc, u64)> = Vec::new();
    let seed = print_seed();
    for (key, acc) in accs {
        let print = acc_print(&seed, &acc);
        let Some((okey, &idx)) = old.and_then(|o| o.all.get_key_value(&key[..])) else {
            added.push((key, acc, print));
            continue;
        };
        let o = old.map(|o| (&o.entries[idx as usize], o.prints[idx as usize]));
        let entry = match o {
            Some((e, p)) if p == print => e.carried(),
            _ => compile_entry(&acc, settings.ttl, settings.health_aware),
        };
        entries[idx as usize] = Some(entry);
        prints[idx as usize] = print;
        if acc.qualified {
            qualified.push(okey.clone());
        }
        all.insert(okey.clone(), idx);
    }
    let free: Vec<usize> = (0..slots).filter(|&i| entries[i].is_none()).collect();
    let mut free = free.into_iter();
    for (key, acc, print) in added {
        let entry = compile_entry(&acc, settings.ttl, settings.health_aware);
        let idx = match free.next() {
            Some(i) => {
                entries[i] = Some(entry);
                prints[i] = print;
                i
            }
            None => {
                entries.push(Some(entry));
                prints.push(print);
                entries.len() - 1
            }
        };
        let key: Arc<[u8]> = Arc::from(key);
        if acc.qualified {
            qualified.push(key.clone());
        }
        all.insert(key, idx as u32);
    }
    let mut table = NetTable {
        entries: entries.into_iter().map(|e| e.unwrap_or_default()).collect(),
        prints,
        all,
        qualified: qualified.into_boxed_slice(),
        ents: FxHashSet::default(),
        ents_qualified: Box::default(),
        members: Box::default(),
    };
    add_empty_non_terminals(&mut table, network);
    table
}

/// The keys of the fingerprints of one process (random, so that no container name can be
/// chosen to collide with another's).
fn print_seed() -> std::collections::hash_map::RandomState {
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    SEED.get_or_init(Default::default).clone()
}

/// The fingerprint of an entry's inputs: every field of its [`Acc`] (SipHash with this
/// process's random keys).
fn acc_print(seed: &std::collections::hash_map::RandomState, acc: &Acc) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = seed.build_hasher();
    acc.text.hash(&mut h);
    acc.members.hash(&mut h);
    acc.ptr.hash(&mut h);
    acc.qualified.hash(&mut h);
    h.finish()
}

/// Fills a compiled table's empty non-terminals: every parent of a key that is not a key
/// itself, and the network's own name (`<network>.<domain>` is NODATA, RFC 8020).
fn add_empty_non_terminals(table: &mut NetTable, network: &str) {
    let qualified: FxHashSet<&[u8]> = table.qualified.iter().map(|k| &k[..]).collect();
    let mut ents: FxHashSet<Arc<[u8]>> = FxHashSet::default();
    let mut ents_qualified: FxHashSet<Arc<[u8]>> = FxHashSet::default();
    for key in table.all.keys() {
        let is_qualified = qualified.contains(&key[..]);
        for parent in zone::parent_keys(key) {
            if table.all.contains_key(parent) {
                continue;
            }
            let parent: Arc<[u8]> = match ents.get(parent) {
                Some(p) => p.clone(),
                None => {
                    let p: Arc<[u8]> = Arc::from(parent);
                    ents.insert(p.clone());
                    p
                }
            };
            if is_qualified {
                ents_qualified.insert(parent);
            }
        }
    }
    if let Some(nk) = normalize_name(network) {
        if !table.all.contains_key(&nk[..]) {
            let nk: Arc<[u8]> = Arc::from(nk);
            ents.insert(nk.clone());
            ents_qualified.insert(nk);
        }
    }
    table.ents = ents;
    table.ents_qualified = ents_qualified.into_iter().collect();
}

/// The per-network tables: reused from the previous snapshot when a network's inputs are the
/// same and the settings that shape entries (TTL, health filtering) did not change, compiled
/// otherwise.
/// Also returns the containers that changed since `prev`, when it was compared with it.
fn compile_tables<'c>(
    catalog: &'c Catalog,
    settings: &BuildSettings,
    prev: Option<(&Snapshot, &'c Catalog)>,
    net_index: &NetIndex,
) -> (Vec<Arc<NetTable>>, Option<Vec<Change<'c>>>) {
    let count = net_index.len();
    let reusable = prev.filter(|(snap, _)| {
        snap.settings.ttl == settings.ttl && snap.settings.health_aware == settings.health_aware
    });
    // The networks' names by index: the previous snapshot's list while the networks are the
    // same (only the recompiled ones are read), else the catalog's.
    let same_list = prev
        .filter(|(snap, old)| {
            old.networks.ptr_eq(&catalog.networks) && snap.networks.len() == count
        })
        .map(|(snap, _)| &snap.networks[..]);
    let net_names: Vec<&str> = match same_list {
        Some(_) => Vec::new(),
        None => catalog.networks.keys().map(String::as_str).collect(),
    };
    let name_of = |ni: usize| -> &str {
        match same_list {
            Some(list) => &list[ni].name,
            None => net_names[ni],
        }
    };
    let mut reused: Vec<Option<Arc<NetTable>>> = vec![None; count];
    // The previous tables of the networks recompiled (names keep their entries' indices).
    let mut previous: Vec<Option<&NetTable>> = vec![None; count];
    let mut changes = None;
    if let Some((snap, old_cat)) = reusable {
        let (dirty, changed) = dirty_networks(old_cat, catalog);
        changes = Some(changed);
        if old_cat.networks.ptr_eq(&catalog.networks) && snap.nets.len() == reused.len() {
            // The same networks, the same indices: only the dirty ones are looked up by name.
            for (slot, table) in reused.iter_mut().zip(&snap.nets) {
                *slot = Some(table.clone());
            }
            for name in &dirty {
                if let Some(&ni) = net_index.get(*name) {
                    reused[ni as usize] = None;
                    previous[ni as usize] = snap.nets.get(ni as usize).map(|t| &**t);
                }
            }
        } else {
            for (oi, name) in old_cat.networks.keys().enumerate() {
                if dirty.contains(name.as_str()) {
                    continue;
                }
                if let (Some(&ni), Some(table)) = (net_index.get(name.as_str()), snap.nets.get(oi))
                {
                    reused[ni as usize] = Some(table.clone());
                }
            }
        }
    }
    let need: Vec<bool> = reused.iter().map(Option::is_none).collect();
    let inputs = match (reusable, &changes) {
        (Some(prev), Some(changes)) => group_dirty_inputs(catalog, net_index, &need, prev, changes),
        _ => group_inputs(catalog, net_index, &need),
    };
    let tables = reused
        .into_iter()
        .zip(previous)
        .zip(&inputs)
        .enumerate()
        .map(|(ni, ((table, old), input))| {
            table.unwrap_or_else(|| Arc::new(compile_network(name_of(ni), input, settings, old)))
        })
        .collect();
    (tables, changes)
}

/// The networks the host (and any client the tables do not know) sees: `host_view`, or all
/// of the `count` networks; plus, qualified only, the others when `host_sees_all_qualified`.
fn host_spec(settings: &BuildSettings, net_index: &NetIndex, count: usize) -> Vec<(u32, bool)> {
    let plain: Vec<u32> = match &settings.host_view {
        None => (0..count as u32).collect(),
        Some(list) => list
            .iter()
            .filter_map(|n| net_index.get(n.as_str()).copied())
            .collect(),
    };
    let mut spec: Vec<(u32, bool)> = plain.iter().map(|&i| (i, true)).collect();
    if settings.host_sees_all_qualified {
        for i in 0..count as u32 {
            if !plain.contains(&i) {
                spec.push((i, false));
            }
        }
    }
    spec
}

/// A container's addresses on served networks, in its order, each once.
fn served_ips(container: &Container, net_index: &NetIndex) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for ep in &container.endpoints {
        if !net_index.contains_key(ep.network.as_str()) {
            continue;
        }
        let all = ep
            .ipv4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(ep.ipv6.iter().map(|a| IpAddr::V6(*a)));
        for ip in all {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    ips
}

/// A container's view: its served networks in its order, plus its links (a view of its own
/// when it has any that resolve). `None` when it is on no served network.
fn container_view(
    builder: &mut ViewBuilder<'_>,
    key: &Arc<str>,
    container: &Container,
    net_index: &NetIndex,
) -> Option<ViewId> {
    let spec: Vec<(u32, bool)> = container
        .endpoints
        .iter()
        .filter_map(|ep| net_index.get(ep.network.as_str()).map(|&i| (i, true)))
        .collect();
    if spec.is_empty() {
        return None;
    }
    let mut vid = builder.view(spec);
    if container.endpoints.iter().any(|ep| !ep.links.is_empty()) {
        let links = link_overlay(container, net_index, builder.nets);
        if !links.is_empty() {
            vid = builder.linked_view(vid, links, key.clone());
        }
    }
    Some(vid)
}

/// A snapshot's views and the maps that pick one per address.
#[derive(Debug)]
struct Views {
    views: Vec<View>,
    host_view: ViewId,
    client_views: FxHashMap<IpAddr, ViewId>,
    listener_views: FxHashMap<IpAddr, ViewId>,
    /// How many addresses (client and listener; the host view counts one more) use each view:
    /// a view nobody uses any more after an incremental rebuild is left behind, emptied, until
    /// enough of them make the next rebuild assemble the views afresh (see [`Views::patch`]).
    users: Vec<u32>,
    /// Container addresses claimed by more than one container (the first in catalog order
    /// owns them): a change that touches one reassembles the client views afresh.
    contested: FxHashSet<IpAddr>,
    /// Catalog keys of the containers with links (`--link`), with the networks where they
    /// have them: those a recompiled network may give a new link view.
    linkers: FxHashMap<Arc<str>, Box<[u32]>>,
    /// The views that show each network (by network index), for the views `0..indexed`; the
    /// views added since by incremental rebuilds are looked at one by one until there are
    /// enough of them to index again (see [`ViewIndex`]).
    index: ViewIndex,
    /// This assembly's own number (unique in the process).
    id: u64,
    /// The number of the fresh assembly ([`Views::build`]) these views were patched from, in
    /// any number of steps: views of one lineage number their views alike and show the same
    /// networks.
    lineage: u64,
    /// The number of the views these were patched from in one step, with what that step did
    /// to their `client_views` (in order: `None` removes the address): the spare copy of a
    /// double buffer is brought up to date by replaying it (see [`Spare`]).
    patched_from: Option<(u64, Vec<ClientOp>)>,
}

/// One change of a client-address map: the address now uses the view (`None`: removed).
type ClientOp = (IpAddr, Option<ViewId>);

/// Numbers of view assemblies ([`Views::id`]).
static VIEWS_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_views_id() -> u64 {
    VIEWS_IDS.fetch_add(1, Ordering::Relaxed)
}

/// Merged name map of a view.
type MergedMap = FxHashMap<Arc<[u8]>, EntryRef>;

/// The spare half of a double buffer: a snapshot older than the one a rebuild starts from,
/// that no reader holds any more (see [`Snapshot::rebuild_reusing`]). The maps a rebuild
/// would copy from the previous snapshot to patch them (a view's merged map over hundreds of
/// networks, the client-address map) are taken from it instead and patched in place: the
/// merged maps from its own tables to the new ones, the client map by replaying the client
/// changes the previous snapshot made. Either is used only when it provably holds what the
/// copy would (same lineage of views; the client map only when the previous snapshot was
/// patched from this very one), else the copy is made as without a spare.
struct Spare {
    nets: Vec<Arc<NetTable>>,
    users: Vec<u32>,
    /// Each view's merged map (by view number; `None`: one network's, or unused).
    maps: Vec<Option<*const MergedMap>>,
    /// The distinct merged maps, by address (one owner each, so a map nothing else shares
    /// can be patched in place).
    owned: FxHashMap<*const MergedMap, Arc<MergedMap>>,
    client_views: Option<FxHashMap<IpAddr, ViewId>>,
    id: u64,
    /// Which of its tables differ from the new ones (by network index), once the first map is
    /// patched: the same for every view.
    changed: Option<Vec<bool>>,
}

impl Spare {
    /// Takes a snapshot apart for its maps; `None` when its views are of another lineage than
    /// `prev`'s (their numbers would not match).
    fn new(snap: Snapshot, prev: &Snapshot) -> Option<Spare> {
        let Snapshot { nets, routing, .. } = snap;
        if routing.lineage != prev.routing.lineage || nets.len() != prev.nets.len() {
            return None;
        }
        let mut owned: FxHashMap<*const MergedMap, Arc<MergedMap>> = FxHashMap::default();
        let maps = routing
            .views
            .into_iter()
            .zip(&routing.users)
            .map(|(v, &u)| match v.names {
                ViewNames::Merged(m) if u > 0 => {
                    let ptr = Arc::as_ptr(&m);
                    owned.entry(ptr).or_insert(m);
                    Some(ptr)
                }
                _ => None,
            })
            .collect();
        Some(Spare {
            nets,
            users: routing.users,
            maps,
            owned,
            client_views: Some(routing.client_views),
            id: routing.id,
            changed: None,
        })
    }

    /// View `vid`'s merged map, patched in place from this snapshot's tables to `new`, when
    /// nothing else shares it; `None` otherwise.
    fn patched_map(
        &mut self,
        vid: usize,
        spec: &[(u32, bool)],
        new: &[Arc<NetTable>],
        diffs: &mut KeyDiffs,
    ) -> Option<Arc<MergedMap>> {
        if self.users.get(vid).copied().unwrap_or(0) == 0 {
            return None;
        }
        let ptr = (*self.maps.get(vid)?)?;
        let mut map = self.owned.remove(&ptr)?;
        let m = Arc::get_mut(&mut map)?;
        let nets = &self.nets;
        let changed = self.changed.get_or_insert_with(|| {
            new.iter()
                .zip(nets)
                .map(|(a, b)| !Arc::ptr_eq(a, b))
                .collect()
        });
        patch_merged_in_place(m, spec, new, nets, changed, diffs);
        Some(map)
    }
}

/// Whether a container has links on some endpoint.
fn has_links(c: &Container) -> bool {
    c.endpoints.iter().any(|ep| !ep.links.is_empty())
}

/// The indices of the networks where a container has links (its endpoints with links).
fn link_networks(c: &Container, net_index: &NetIndex) -> Box<[u32]> {
    c.endpoints
        .iter()
        .filter(|ep| !ep.links.is_empty())
        .filter_map(|ep| net_index.get(ep.network.as_str()).copied())
        .collect()
}

/// Inputs of the views common to [`Views::build`] and [`Views::patch`].
struct ViewInputs<'a> {
    catalog: &'a Catalog,
    settings: &'a BuildSettings,
    nets: &'a [Arc<NetTable>],
    networks: &'a [NetworkInfo],
    net_index: &'a NetIndex,
}

impl Views {
    /// Assembles every view from scratch: the host view, each container address's view (the
    /// first container in catalog order that has an address owns it), each network listener's.
    fn build(i: &ViewInputs<'_>) -> Views {
        let mut builder = ViewBuilder {
            nets: i.nets,
            networks: i.networks,
            views: Vec::new(),
            by_spec: FxHashMap::default(),
        };
        let host_view = builder.view(host_spec(i.settings, i.net_index, i.catalog.networks.len()));
        let mut client_views: FxHashMap<IpAddr, ViewId> =
            FxHashMap::with_capacity_and_hasher(i.catalog.containers.len(), Default::default());
        let mut contested = FxHashSet::default();
        for (key, container) in &i.catalog.containers {
            let Some(vid) = container_view(&mut builder, key, container, i.net_index) else {
                continue;
            };
            for ip in served_ips(container, i.net_index) {
                match client_views.entry(ip) {
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(vid);
                    }
                    std::collections::hash_map::Entry::Occupied(_) => {
                        contested.insert(ip);
                    }
                }
            }
        }
        let listener_views = listener_views(&mut builder, i.catalog, i.net_index);
        let linkers = i
            .catalog
            .containers
            .iter()
            .filter(|(_, c)| has_links(c))
            .map(|(k, c)| (k.clone(), link_networks(c, i.net_index)))
            .collect();
        let index = ViewIndex::build(&builder.views, i.nets.len());
        let mut users = vec![0u32; builder.views.len()];
        users[host_view as usize] += 1;
        for vid in client_views.values().chain(listener_views.values()) {
            users[*vid as usize] += 1;
        }
        let id = next_views_id();
        Views {
            views: builder.views,
            host_view,
            client_views,
            listener_views,
            users,
            contested,
            linkers,
            index,
            id,
            lineage: id,
            patched_from: None,
        }
    }

    /// The views of `prev` brought up to date with work proportional to the change: views over
    /// a recompiled network get that network's keys patched into their merged map (the others
    /// are shared as they are), and only the addresses of the containers in `changes` move.
    /// The result is what [`Views::build`] gives, but for view numbering and the views nobody
    /// uses any more (emptied and left in place; see [`Snapshot::view_count`]). `None` when
    /// a fresh build is due: the networks or the view settings changed, many tables were
    /// recompiled, a change touches an address two containers claim, or too many unused
    /// views piled up.
    fn patch(
        i: &ViewInputs<'_>,
        prev: &Snapshot,
        prev_catalog: &Catalog,
        changes: &[Change<'_>],
        mut spare: Option<Spare>,
    ) -> Option<Views> {
        let (old, new) = (&prev.settings, i.settings);
        if old.host_view != new.host_view
            || old.host_sees_all_qualified != new.host_sees_all_qualified
            || prev.nets.len() != i.nets.len()
            || prev_catalog.networks != i.catalog.networks
        {
            return None;
        }
        let changed: Vec<bool> = i
            .nets
            .iter()
            .zip(&prev.nets)
            .map(|(a, b)| !Arc::ptr_eq(a, b))
            .collect();
        let n_changed = changed.iter().filter(|c| **c).count();
        if n_changed * 4 > i.nets.len().max(4) {
            return None;
        }
        let mut views = prev.routing.views.clone();
        let mut users = prev.routing.users.clone();
        // A container whose links point into a recompiled network is taken again too: its
        // link aliases resolve anew (a target may have come or gone).
        let mut changes: Vec<Change<'_>> = changes.to_vec();
        if n_changed > 0 {
            let candidates = prev.routing.index.showing(&changed, views.len());
            patch_views(
                i,
                prev,
                &changed,
                &candidates,
                &mut views,
                &users,
                spare.as_mut(),
            );
            // (The linkers' networks are known: only those of a recompiled network are
            // looked up.)
            let relinked: Vec<Change<'_>> = prev
                .routing
                .linkers
                .iter()
                .filter(|(_, nets)| nets.iter().any(|&n| changed[n as usize]))
                .filter_map(|(k, _)| i.catalog.containers.get_key_value(k))
                .filter(|(k, c)| {
                    prev_catalog
                        .containers
                        .get(*k)
                        .is_some_and(|old| Arc::ptr_eq(old, c))
                })
                .map(|(k, c)| (k, Some(c), Some(c)))
                .collect();
            changes.extend(relinked);
        }
        let touches_contested = |c: Option<&Arc<Container>>| {
            c.is_some_and(|c| {
                served_ips(c, i.net_index)
                    .iter()
                    .any(|ip| prev.routing.contested.contains(ip))
            })
        };
        if !prev.routing.contested.is_empty()
            && changes
                .iter()
                .any(|(_, a, b)| touches_contested(*a) || touches_contested(*b))
        {
            return None;
        }
        // The addresses of the changed containers: every old one leaves, every new one comes.
        // The map to change is the spare's brought up to date when there is one (see
        // [`Spare`]), else a copy of the previous one; what is done to it is recorded.
        let spare_clients = spare
            .as_mut()
            .and_then(|s| Some((s.id, s.client_views.take()?)));
        let mut client_views = match (spare_clients, &prev.routing.patched_from) {
            (Some((sid, mut base)), Some((from, ops))) if sid == *from => {
                for &(ip, vid) in ops {
                    match vid {
                        Some(vid) => base.insert(ip, vid),
                        None => base.remove(&ip),
                    };
                }
                base
            }
            _ => prev.routing.client_views.clone(),
        };
        let mut ops: Vec<ClientOp> = Vec::new();
        for ip in changes
            .iter()
            .filter_map(|(_, old, _)| *old)
            .flat_map(|c| served_ips(c, i.net_index))
        {
            if let Some(vid) = client_views.remove(&ip) {
                users[vid as usize] -= 1;
                ops.push((ip, None));
            }
        }
        // The views a changed container may share: a container's view shows exactly its
        // networks, so only views over those networks are candidates (found through the
        // index, not by looking at every view).
        let mut wanted = vec![false; i.nets.len()];
        for ep in changes
            .iter()
            .filter_map(|c| c.2)
            .flat_map(|c| &c.endpoints)
        {
            if let Some(&n) = i.net_index.get(ep.network.as_str()) {
                wanted[n as usize] = true;
            }
        }
        let mut by_spec: FxHashMap<Arc<[(u32, bool)]>, ViewId> = FxHashMap::default();
        for vid in prev.routing.index.showing(&wanted, views.len()) {
            let v = &views[vid as usize];
            if users[vid as usize] > 0 && v.owner.is_none() {
                by_spec.entry(v.networks.clone()).or_insert(vid);
            }
        }
        let mut builder = ViewBuilder {
            nets: i.nets,
            networks: i.networks,
            views,
            by_spec,
        };
        for (key, _, new) in &changes {
            let Some(container) = new else { continue };
            let Some(vid) = container_view(&mut builder, key, container, i.net_index) else {
                continue;
            };
            users.resize(builder.views.len(), 0);
            for ip in served_ips(container, i.net_index) {
                match client_views.entry(ip) {
                    // Claimed by another container too: the first in catalog order owns it.
                    std::collections::hash_map::Entry::Occupied(_) => return None,
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(vid);
                        users[vid as usize] += 1;
                        ops.push((ip, Some(vid)));
                    }
                }
            }
        }
        let mut views = builder.views;
        users.resize(views.len(), 0);
        let unused = users.iter().filter(|u| **u == 0).count();
        if unused > 16 && unused * 4 > views.len() {
            return None;
        }
        for (v, _) in views.iter_mut().zip(&users).filter(|(_, u)| **u == 0) {
            // Unreachable: let go of what it held.
            v.names = ViewNames::Merged(Arc::default());
            v.ents = ViewEnts::Merged(Arc::default());
            v.links = None;
        }
        let mut linkers = prev.routing.linkers.clone();
        for (key, _, new) in &changes {
            match new {
                Some(c) if has_links(c) => {
                    linkers.insert((*key).clone(), link_networks(c, i.net_index))
                }
                _ => linkers.remove(*key),
            };
        }
        let index = prev.routing.index.extended(&views, i.nets.len());
        Some(Views {
            views,
            host_view: prev.routing.host_view,
            client_views,
            listener_views: prev.routing.listener_views.clone(),
            users,
            contested: prev.routing.contested.clone(),
            linkers,
            index,
            id: next_views_id(),
            lineage: prev.routing.lineage,
            patched_from: Some((prev.routing.id, ops)),
        })
    }
}

/// The views that show each network, so that a rebuild after a change finds the views over
/// the recompiled networks without looking at every view. Views are only ever added within a
/// lineage (an unused one is emptied in place), so the index of views `0..indexed` stays
/// true; the views added after it are listed as candidates for every change.
#[derive(Debug, Clone, Default)]
struct ViewIndex {
    by_network: Arc<[Box<[ViewId]>]>,
    indexed: usize,
}

/// How many views an incremental rebuild may add before the index is built again.
const UNINDEXED_VIEWS: usize = 64;

impl ViewIndex {
    fn build(views: &[View], networks: usize) -> ViewIndex {
        let mut by_network: Vec<Vec<ViewId>> = vec![Vec::new(); networks];
        for (vid, v) in views.iter().enumerate() {
            for &(n, _) in v.networks.iter() {
                if let Some(list) = by_network.get_mut(n as usize) {
                    if list.last() != Some(&(vid as ViewId)) {
                        list.push(vid as ViewId);
                    }
                }
            }
        }
        ViewIndex {
            by_network: by_network.into_iter().map(Vec::into_boxed_slice).collect(),
            indexed: views.len(),
        }
    }

    /// This index for `views`, which extend the views it was built for: the same one while
    /// few views were added since, else built again.
    fn extended(&self, views: &[View], networks: usize) -> ViewIndex {
        if views.len() - self.indexed.min(views.len()) > UNINDEXED_VIEWS
            || self.by_network.len() != networks
        {
            ViewIndex::build(views, networks)
        } else {
            self.clone()
        }
    }

    /// The views (of `0..count`) that may show a network flagged in `changed`, in order,
    /// each once.
    fn showing(&self, changed: &[bool], count: usize) -> Vec<ViewId> {
        let mut out: Vec<ViewId> = changed
            .iter()
            .enumerate()
            .filter(|(_, c)| **c)
            .filter_map(|(n, _)| self.by_network.get(n))
            .flat_map(|list| list.iter().copied())
            .chain((self.indexed.min(count)..count).map(|v| v as ViewId))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Brings the views in use that show a recompiled network up to date: merged maps patched
/// (views sharing a map share the patched one; the spare's map patched in place when it has
/// one nothing else holds, else a copy of the previous one), merged empty non-terminals kept
/// when the recompiled networks' are the same, else recomputed. (Link aliases on a recompiled
/// network are resolved again with their container, see [`Views::patch`].)
#[allow(clippy::too_many_arguments)]
fn patch_views(
    i: &ViewInputs<'_>,
    prev: &Snapshot,
    changed: &[bool],
    candidates: &[ViewId],
    views: &mut [View],
    users: &[u32],
    mut spare: Option<&mut Spare>,
) {
    type Set = FxHashSet<Arc<[u8]>>;
    let mut maps: FxHashMap<*const MergedMap, Arc<MergedMap>> = FxHashMap::default();
    let mut diffs = KeyDiffs::default();
    let mut sets: FxHashMap<*const Set, Arc<Set>> = FxHashMap::default();
    for &vid in candidates {
        let vid = vid as usize;
        if users[vid] == 0 {
            continue;
        }
        let v = &mut views[vid];
        if !v.networks.iter().any(|&(n, _)| changed[n as usize]) {
            continue;
        }
        if let ViewNames::Merged(m) = &v.names {
            let patched = maps
                .entry(Arc::as_ptr(m))
                .or_insert_with(|| {
                    spare
                        .as_deref_mut()
                        .and_then(|s| s.patched_map(vid, &v.networks, i.nets, &mut diffs))
                        .unwrap_or_else(|| {
                            let mut out = MergedMap::clone(m);
                            patch_merged_in_place(
                                &mut out,
                                &v.networks,
                                i.nets,
                                &prev.nets,
                                changed,
                                &mut diffs,
                            );
                            Arc::new(out)
                        })
                })
                .clone();
            v.names = ViewNames::Merged(patched);
        }
        if let ViewEnts::Merged(e) = &v.ents {
            let merged = sets
                .entry(Arc::as_ptr(e))
                .or_insert_with(|| {
                    if same_ents(&v.networks, i.nets, &prev.nets, changed) {
                        e.clone()
                    } else {
                        let mut set = Set::clone(e);
                        patch_ents_in_place(&mut set, &v.networks, i.nets, &prev.nets, changed);
                        Arc::new(set)
                    }
                })
                .clone();
            v.ents = ViewEnts::Merged(merged);
        }
    }
}

/// The empty non-terminals a table shows where a view shows it (`plain`: all of them, else
/// those of its qualified names).
fn ents_of(t: &NetTable, plain: bool) -> Box<dyn Iterator<Item = &Arc<[u8]>> + '_> {
    if plain {
        Box::new(t.ents.iter())
    } else {
        Box::new(t.ents_qualified.iter())
    }
}

/// Whether a table shows `key` as an empty non-terminal where a view shows it.
fn has_ent(t: &NetTable, plain: bool, key: &[u8]) -> bool {
    if plain {
        t.ents.contains(key)
    } else {
        t.ents_qualified.iter().any(|k| &k[..] == key)
    }
}

/// Brings a view's merged empty non-terminals (the union over `spec`, see [`merged_ents`])
/// from the `old` tables to the `new` ones in place, given which networks `changed`: every
/// one a changed network now has goes in; one it no longer has goes out unless another
/// network of the spec still has it. Work in proportion to the changed networks' sets (and
/// the spec's length only for a key that went).
fn patch_ents_in_place(
    set: &mut FxHashSet<Arc<[u8]>>,
    spec: &[(u32, bool)],
    new: &[Arc<NetTable>],
    old: &[Arc<NetTable>],
    changed: &[bool],
) {
    for &(n, plain) in spec.iter().filter(|&&(n, _)| changed[n as usize]) {
        let (before, after) = (&old[n as usize], &new[n as usize]);
        for k in ents_of(after, plain) {
            if !set.contains(k) {
                set.insert(k.clone());
            }
        }
        for k in ents_of(before, plain) {
            if !has_ent(after, plain, k)
                && !spec.iter().any(|&(m, pl)| has_ent(&new[m as usize], pl, k))
            {
                set.remove(k);
            }
        }
    }
}

/// Whether every recompiled network of `spec` has the same empty non-terminals (where the
/// spec shows them) in its `new` table as in its `old` one: the view's merged set, a union of
/// them, is then unchanged (the common case: a container comes or goes, its network's name
/// and reverse zones stay).
fn same_ents(
    spec: &[(u32, bool)],
    new: &[Arc<NetTable>],
    old: &[Arc<NetTable>],
    changed: &[bool],
) -> bool {
    spec.iter()
        .filter(|&&(n, _)| changed[n as usize])
        .all(|&(n, plain)| {
            let (a, b) = (&old[n as usize], &new[n as usize]);
            if plain {
                a.ents == b.ents
            } else {
                a.ents_qualified.len() == b.ents_qualified.len() && {
                    let set: FxHashSet<&Arc<[u8]>> = a.ents_qualified.iter().collect();
                    b.ents_qualified.iter().all(|k| set.contains(k))
                }
            }
        })
}

/// The entry a network's table holds for `key` where the view shows it (`plain`: every name;
/// else only the qualified ones).
#[inline]
fn visible_in(table: &NetTable, key: &[u8], plain: bool) -> Option<u32> {
    table
        .all
        .get(key)
        .copied()
        .filter(|&idx| plain || table.entries[idx as usize].qualified)
}

/// The keys that differ between two tables of one network as a merged map sees them: names
/// that came or went, and names whose entry moved to another index (a table compiled
/// afresh) or changed its `qualified` flag. A name that kept its index needs no patch: the
/// merged map points at the index, and the new table holds the new entry there. Computed
/// once per pair of tables, however many views show the network.
#[derive(Default)]
struct KeyDiffs(FxHashMap<(*const NetTable, *const NetTable), Vec<Arc<[u8]>>>);

impl KeyDiffs {
    fn between(&mut self, before: &Arc<NetTable>, after: &Arc<NetTable>) -> &[Arc<[u8]>] {
        self.0
            .entry((Arc::as_ptr(before), Arc::as_ptr(after)))
            .or_insert_with(|| {
                let mut out: Vec<Arc<[u8]>> = Vec::new();
                if Arc::ptr_eq(before, after) {
                    return out;
                }
                for (k, &i) in &before.all {
                    let same = after.all.get(k).is_some_and(|&j| {
                        i == j
                            && before.entries[i as usize].qualified
                                == after.entries[j as usize].qualified
                    });
                    if !same {
                        out.push(k.clone());
                    }
                }
                out.extend(
                    after
                        .all
                        .keys()
                        .filter(|k| !before.all.contains_key(&k[..]))
                        .cloned(),
                );
                out
            })
    }
}

/// Brings a merged map over `spec` from the `old` tables (those it was merged or last patched
/// from) to the `new` ones, in place, given which networks `changed` between the two: only the
/// keys of changed tables are looked at. Each such key goes to the first network in the spec
/// whose (new) table shows it, as a fresh merge would put it.
fn patch_merged_in_place(
    out: &mut MergedMap,
    spec: &[(u32, bool)],
    new: &[Arc<NetTable>],
    old: &[Arc<NetTable>],
    changed: &[bool],
    diffs: &mut KeyDiffs,
) {
    // Each network's first position in the spec (a table of the networks, not a hash map:
    // the host view's spec holds every network).
    let mut pos: Vec<usize> = vec![usize::MAX; new.len()];
    for (p, &(net, _)) in spec.iter().enumerate() {
        if let Some(slot) = pos.get_mut(net as usize) {
            *slot = (*slot).min(p);
        }
    }
    for (p, &(net, plain)) in spec.iter().enumerate() {
        if !changed[net as usize] || pos[net as usize] != p {
            continue;
        }
        let (before, after) = (&old[net as usize], &new[net as usize]);
        // Only the keys whose entry reference or visibility changed (see `KeyDiffs`); the
        // others map as they did.
        for key in diffs.between(before, after).iter().cloned() {
            let owner = out.get(&key).map(|r| pos[r.net as usize]);
            match (visible_in(after, &key, plain), owner) {
                // This network shows it and comes first (or owned it already): its entry.
                (Some(idx), None) => {
                    out.insert(key, EntryRef { net, idx });
                }
                (Some(idx), Some(o)) if p <= o => {
                    out.insert(key, EntryRef { net, idx });
                }
                // It no longer shows what it owned: the next network that does, if any.
                (None, Some(o)) if o == p => {
                    let next = spec[p + 1..].iter().find_map(|&(n, pl)| {
                        visible_in(&new[n as usize], &key, pl).map(|idx| EntryRef { net: n, idx })
                    });
                    match next {
                        Some(r) => {
                            out.insert(key, r);
                        }
                        None => {
                            out.remove(&key);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The zone's name-server addresses, from the configured ones and every listening address
/// (see [`zone::ns_addresses`]).
fn zone_ns_addresses(catalog: &Catalog, settings: &BuildSettings) -> Vec<IpAddr> {
    let listeners: Vec<IpAddr> = settings
        .listen_addresses
        .iter()
        .chain(
            catalog
                .networks
                .values()
                .flat_map(|n| n.listen_addrs.iter()),
        )
        .copied()
        .collect();
    zone::ns_addresses(&settings.ns_addresses, &listeners)
}

/// The view of each per-network listener address: that network alone.
fn listener_views(
    builder: &mut ViewBuilder<'_>,
    catalog: &Catalog,
    net_index: &NetIndex,
) -> FxHashMap<IpAddr, ViewId> {
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
    listener_views
}

impl Snapshot {
    /// An empty snapshot: answers nothing locally, forwards everything.
    pub fn empty(settings: BuildSettings) -> Snapshot {
        Snapshot::build(&Catalog::default(), settings)
    }

    /// Compiles a catalog into a snapshot from scratch.
    pub fn build(catalog: &Catalog, settings: BuildSettings) -> Snapshot {
        Snapshot::compile(catalog, settings, None, None)
    }

    /// Compiles a catalog into a snapshot, reusing the tables of `prev` (which was compiled from
    /// `prev_catalog`) for every network whose inputs are unchanged. The result is identical to
    /// [`Snapshot::build`]; only the work differs. Reused entries keep their rotation state.
    pub fn rebuild(
        catalog: &Catalog,
        settings: BuildSettings,
        prev: &Snapshot,
        prev_catalog: &Catalog,
    ) -> Snapshot {
        Snapshot::compile(catalog, settings, Some((prev, prev_catalog)), None)
    }

    /// [`Snapshot::rebuild`] with `spare`, an older snapshot that no reader holds any more
    /// (typically the one `prev` replaced), as the other half of a double buffer: the maps a
    /// rebuild would copy from `prev` to patch (the merged name map of a view over many
    /// networks, the client-address map) are taken from `spare` and patched in place instead,
    /// when it provably allows (see `Spare`); what it does not allow is copied as `rebuild`
    /// does. The result is the same either way.
    pub fn rebuild_reusing(
        catalog: &Catalog,
        settings: BuildSettings,
        prev: &Snapshot,
        prev_catalog: &Catalog,
        spare: Snapshot,
    ) -> Snapshot {
        Snapshot::compile(catalog, settings, Some((prev, prev_catalog)), Some(spare))
    }

    fn compile(
        catalog: &Catalog,
        settings: BuildSettings,
        prev: Option<(&Snapshot, &Catalog)>,
        spare: Option<Snapshot>,
    ) -> Snapshot {
        let net_index: Arc<NetIndex> = match prev {
            Some((snap, old)) if old.networks.ptr_eq(&catalog.networks) => snap.net_index.clone(),
            _ => Arc::new(network_index(catalog)),
        };
        // 1. Per-network tables.
        let (nets, changes) = compile_tables(catalog, &settings, prev, &net_index);
        // The networks, their name-server addresses and subnets: the previous snapshot's
        // while the catalog's networks are the same (a comparison that skips what the two
        // persistent maps share: O(1) for the same map), else derived again.
        let same_networks = prev.filter(|(_, old)| old.networks == catalog.networks);
        let networks: Arc<[NetworkInfo]> = match same_networks {
            Some((snap, _)) => snap.networks.clone(),
            None => catalog
                .networks
                .values()
                .map(|n| NetworkInfo {
                    name: n.name.clone(),
                    internal: n.internal,
                })
                .collect(),
        };

        // 2. Views: patched from the previous snapshot's when it allows, else assembled.
        let inputs = ViewInputs {
            catalog,
            settings: &settings,
            nets: &nets,
            networks: &networks,
            net_index: &net_index,
        };
        let patched = match (prev, &changes) {
            (Some((snap, old_cat)), Some(changes)) => {
                let spare = spare.and_then(|s| Spare::new(s, snap));
                Views::patch(&inputs, snap, old_cat, changes, spare)
            }
            _ => None,
        };
        let views_patched = patched.is_some();
        let routing = patched.unwrap_or_else(|| Views::build(&inputs));

        // 3. The zone.
        let domain_key = settings
            .domain
            .as_deref()
            .and_then(normalize_name)
            .map(Vec::into_boxed_slice);
        let ns_addrs = match same_networks {
            Some((snap, _))
                if snap.settings.ns_addresses == settings.ns_addresses
                    && snap.settings.listen_addresses == settings.listen_addresses =>
            {
                snap.ns_addrs.clone()
            }
            _ => zone_ns_addresses(catalog, &settings),
        };
        let zone = ZoneData::build(settings.domain.as_deref(), settings.ttl, 1, &ns_addrs);

        let served_subnets = match same_networks {
            Some((snap, _)) => snap.served_subnets.clone(),
            None => catalog
                .networks
                .values()
                .flat_map(|n| n.subnets.iter().copied())
                .collect(),
        };
        // 4. Per-container upstreams and the names never asked of Docker's resolver.
        let client_upstreams = match (prev, &changes) {
            (Some((snap, _)), Some(changes)) if views_patched => {
                patch_client_upstreams(snap, catalog, &net_index, changes)
            }
            _ => compile_client_upstreams(catalog, &net_index, prev.map(|(snap, _)| snap)),
        };
        let default_via_docker_resolver = settings
            .default_upstreams
            .iter()
            .any(|s| s.ip() == DOCKER_RESOLVER);
        let names_everywhere = (default_via_docker_resolver
            || client_upstreams
                .values()
                .any(|l| l.iter().any(|s| s.ip() == DOCKER_RESOLVER)))
        .then(
            || match prev.and_then(|(p, _)| Some((p.names_everywhere.as_ref()?, &p.nets))) {
                Some((counts, old_nets)) => counts.update(old_nets, &nets),
                None => NameCounts::build(&nets),
            },
        );
        Snapshot {
            nets,
            net_index,
            routing,
            networks,
            domain_key,
            zone,
            ns_addrs,
            served_subnets,
            client_upstreams,
            names_everywhere,
            default_via_docker_resolver,
            settings,
            generation: 0,
        }
    }

    /// The DNS servers of the container that owns `client` (its source address), in the
    /// container's order (at most [`MAX_CLIENT_SERVERS`]); `None`: use the default servers.
    /// For a container that sees only internal networks, only its servers inside those
    /// networks' subnets (the others are unreachable from there). No allocation.
    #[inline]
    pub fn client_servers(&self, client: IpAddr) -> Option<&Arc<[SocketAddr]>> {
        self.client_upstreams.get(&client)
    }

    /// Decides what happens to a question the tables do not answer: `view` is the client's
    /// view, `key` the question's lower-case wire name. A client whose view sees only internal
    /// networks is forwarded to its own servers on those networks, else SERVFAIL; a name that
    /// is a container's on any served network is never forwarded to Docker's resolver
    /// (NXDOMAIN); everything else is forwarded. Two hash probes at most, no allocation.
    #[inline]
    pub fn unanswered(&self, client: IpAddr, view: &View, key: &[u8]) -> Unanswered {
        let own = self.client_upstreams.get(&client);
        if !view.forward && own.is_none() {
            return Unanswered::ServFail;
        }
        if let Some(names) = &self.names_everywhere {
            let via_docker = match own {
                Some(list) => list.iter().any(|s| s.ip() == DOCKER_RESOLVER),
                None => self.default_via_docker_resolver,
            };
            if via_docker && names.contains(key) {
                return Unanswered::NxDomain;
            }
        }
        Unanswered::Forward
    }

    /// The entry a view holds for `key` (already stripped of the zone), with its network index.
    #[inline]
    fn lookup(&self, view: &View, key: &[u8]) -> Option<(u32, &NameEntry)> {
        if let Some(r) = view.links.as_ref().and_then(|l| l.get(key)) {
            return Some((r.net, &self.nets[r.net as usize].entries[r.idx as usize]));
        }
        let (net, idx) = match &view.names {
            ViewNames::One(ni) => (*ni, *self.nets[*ni as usize].all.get(key)?),
            ViewNames::Merged(map) => {
                let r = map.get(key)?;
                (r.net, r.idx)
            }
        };
        Some((net, &self.nets[net as usize].entries[idx as usize]))
    }

    /// Number of names a view answers.
    pub fn view_len(&self, view: &View) -> usize {
        match &view.names {
            ViewNames::One(ni) => self.nets[*ni as usize].all.len(),
            ViewNames::Merged(map) => map.len(),
        }
    }

    /// The view a query sees: the client container's networks, else the network of the address
    /// the query arrived on, else the host view.
    #[inline]
    pub fn view_for(&self, client: IpAddr, local: Option<IpAddr>) -> &View {
        let id = self
            .routing
            .client_views
            .get(&client)
            .or_else(|| local.and_then(|l| self.routing.listener_views.get(&l)))
            .copied()
            .unwrap_or(self.routing.host_view);
        &self.routing.views[id as usize]
    }

    /// Whether `client` is the address of a known container (Docker's or a static table's): the
    /// forward rate limit gives each its own bucket (`dns::guard`). No allocation.
    #[inline]
    pub fn is_known_container(&self, client: IpAddr) -> bool {
        self.routing.client_views.contains_key(&client)
    }

    /// Whether `client` is a known container address or lies in a served network's subnet
    /// (the access check in `dns::guard`). No allocation.
    #[inline]
    pub fn is_served_client(&self, client: IpAddr) -> bool {
        self.routing.client_views.contains_key(&client)
            || self.served_subnets.iter().any(|n| n.contains(&client))
    }

    /// Which rule picked the view for a client (for `dockns query` and logs).
    pub fn scope_reason(&self, client: IpAddr, local: Option<IpAddr>) -> &'static str {
        if self.routing.client_views.contains_key(&client) {
            "client address belongs to a known container"
        } else if local.is_some_and(|l| self.routing.listener_views.contains_key(&l)) {
            "query arrived on a network's own address"
        } else {
            "host view (client is not a known container)"
        }
    }

    /// The host view.
    pub fn host_view(&self) -> &View {
        &self.routing.views[self.routing.host_view as usize]
    }

    /// The networks, by index.
    pub fn networks(&self) -> &[NetworkInfo] {
        &self.networks
    }

    /// Number of compiled name entries (one per name of each network).
    pub fn entry_count(&self) -> usize {
        self.nets.iter().map(|t| t.all.len()).sum()
    }

    /// The compiled entries of one network, by network index, in no particular order (for the
    /// admin API and tools; not used on the query path). None for an unknown index.
    pub fn network_entries(&self, network: usize) -> impl Iterator<Item = &NameEntry> {
        self.nets
            .get(network)
            .into_iter()
            .flat_map(|t| t.entries.iter())
            // The slots of names that went (see `NetTable::entries`).
            .filter(|e| !e.name.is_empty())
    }

    /// The entry a view answers `key` from, with the zone suffix stripped as [`Snapshot::resolve`]
    /// does, with the index of the network it belongs to (for `dockns query` explanations; not
    /// used on the query path).
    pub fn entry_for(&self, view: &View, key: &[u8]) -> Option<(u32, &NameEntry)> {
        let mut lookup = key;
        if let Some(dk) = self.domain_key.as_deref() {
            if key.len() > dk.len()
                && key.ends_with(dk)
                && is_label_boundary(key, key.len() - dk.len())
            {
                lookup = &key[..key.len() - dk.len()];
            }
        }
        self.lookup(view, lookup)
    }

    /// Whether `older` can serve as the spare of the next [`Snapshot::rebuild_reusing`] after
    /// this one: its views are of the same lineage (this snapshot's views were patched from
    /// its, in any number of steps). After a fresh assembly (networks or view settings
    /// changed) it cannot, and holding it would only keep the old world in memory.
    pub fn can_spare(&self, older: &Snapshot) -> bool {
        self.routing.lineage == older.routing.lineage
    }

    /// Number of distinct views in use (an incremental rebuild may leave unused ones behind,
    /// emptied, until the next fresh assembly; they are not counted).
    pub fn view_count(&self) -> usize {
        self.routing.users.iter().filter(|u| **u > 0).count()
    }

    /// The encoded SOA record for the authority section of negative answers under the domain
    /// (owner name written out in full). Empty when no domain is configured.
    pub fn soa_authority(&self) -> &[u8] {
        &self.zone.soa_authority
    }

    /// The SOA serial of the zones (1 for a fresh build; the publisher stamps each published
    /// snapshot with a larger one, see [`Snapshot::set_serial`]).
    pub fn serial(&self) -> u32 {
        self.zone.serial
    }

    /// Re-encodes the zone records with a new SOA serial.
    pub fn set_serial(&mut self, serial: u32) {
        self.zone = ZoneData::build(
            self.settings.domain.as_deref(),
            self.settings.ttl,
            serial,
            &self.ns_addrs,
        );
    }

    /// The name-server addresses (`ns1.<domain>`, …).
    pub fn ns_addresses(&self) -> &[IpAddr] {
        &self.ns_addrs
    }

    /// Writes the SOA authority record of the reverse zone at `zone_at` in the question name
    /// (see [`Resolution::Reverse`]); returns its length.
    #[inline]
    pub fn reverse_authority(
        &self,
        zone_at: u16,
        buf: &mut [u8; zone::REVERSE_AUTHORITY_LEN],
    ) -> usize {
        self.zone.reverse_authority(zone_at, buf)
    }

    /// Whether a view sees `key` as an empty non-terminal.
    fn is_empty_non_terminal(&self, view: &View, key: &[u8]) -> bool {
        match &view.ents {
            ViewEnts::One(ni) => self.nets[*ni as usize].ents.contains(key),
            ViewEnts::Merged(set) => set.contains(key),
        }
    }

    /// Questions for the zone's own names under `domain` (`lookup` is the name with the
    /// domain stripped): the name servers `ns1.<domain>` …, which win over containers of the
    /// same name.
    fn resolve_zone_name(&self, lookup: &[u8], qtype: u16) -> Option<Resolution<'_>> {
        if !lookup.starts_with(b"\x03ns") && !lookup.starts_with(b"\x04ns") {
            return None;
        }
        let (_, v6, set) = self.zone.ns_hosts.iter().find(|h| &*h.0 == lookup)?;
        Some(match (qtype, v6) {
            (TYPE_A, false) | (TYPE_AAAA, true) | (TYPE_ANY, _) => {
                Resolution::Answer { set, entry: None }
            }
            _ => Resolution::NoData { soa: true },
        })
    }

    /// The apex of `domain`: SOA, NS, ANY (the SOA, RFC 8482); NODATA for anything else.
    fn resolve_apex(&self, qtype: u16) -> Resolution<'_> {
        match qtype {
            TYPE_SOA | TYPE_ANY => Resolution::Answer {
                set: &self.zone.soa,
                entry: None,
            },
            // No name-server address known (only wildcard listeners, no `ns_addresses`): NODATA.
            TYPE_NS if !self.zone.ns.is_empty() => Resolution::Answer {
                set: &self.zone.ns,
                entry: None,
            },
            _ => Resolution::NoData { soa: true },
        }
    }

    /// A name under `domain` that no table holds: NODATA for an empty non-terminal, else
    /// NXDOMAIN; both with the SOA.
    fn resolve_zone_miss(&self, view: &View, lookup: &[u8]) -> Resolution<'_> {
        // Reverse-tree parents are empty non-terminals of the reverse zones, not of this one.
        if !lookup.ends_with(b"\x04arpa") && self.is_empty_non_terminal(view, lookup) {
            Resolution::NoData { soa: true }
        } else {
            Resolution::NxDomain { soa: true }
        }
    }

    /// Reverse names inside the reverse zone of a served subnet (RFC 6303): the PTR of a
    /// container this view sees, the zone SOA at the apex, else NODATA/NXDOMAIN with that SOA.
    /// `None` when the name is not in such a zone. Never forwarded.
    fn resolve_reverse<'s>(
        &'s self,
        view: &'s View,
        key: &[u8],
        qtype: u16,
    ) -> Option<Resolution<'s>> {
        let hit = zone::reverse_zone(key, &self.served_subnets)?;
        let nodata = Resolution::Reverse {
            nxdomain: false,
            zone_at: hit.zone_at,
        };
        let nxdomain = Resolution::Reverse {
            nxdomain: true,
            zone_at: hit.zone_at,
        };
        Some(match hit.kind {
            ReverseKind::Apex if matches!(qtype, TYPE_SOA | TYPE_ANY) => Resolution::Answer {
                set: &self.zone.reverse_soa,
                entry: None,
            },
            ReverseKind::Apex => nodata,
            ReverseKind::Address => match self.lookup(view, key) {
                Some((_, entry))
                    if matches!(qtype, TYPE_PTR | TYPE_ANY) && entry.ptr_unencodable =>
                {
                    Resolution::ServFail
                }
                Some((_, entry))
                    if matches!(qtype, TYPE_PTR | TYPE_ANY) && !entry.ptr.is_empty() =>
                {
                    Resolution::Answer {
                        set: &entry.ptr,
                        entry: None,
                    }
                }
                Some(_) => nodata,
                None => nxdomain,
            },
            ReverseKind::Inner if self.is_empty_non_terminal(view, key) => nodata,
            ReverseKind::Inner => nxdomain,
        })
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
        if qclass != CLASS_IN && qclass != CLASS_ANY {
            return Resolution::Refused;
        }
        let mut lookup = key;
        let mut in_zone = false;
        if let Some(dk) = self.domain_key.as_deref() {
            if key == dk {
                return self.resolve_apex(qtype);
            }
            if key.len() > dk.len()
                && key.ends_with(dk)
                && is_label_boundary(key, key.len() - dk.len())
            {
                lookup = &key[..key.len() - dk.len()];
                in_zone = true;
                if let Some(r) = self.resolve_zone_name(lookup, qtype) {
                    return r;
                }
            }
        }
        if !in_zone && is_arpa(key) {
            if let Some(r) = self.resolve_reverse(view, key, qtype) {
                return r;
            }
        }
        match self.lookup(view, lookup) {
            Some((_, entry)) => {
                let set = match qtype {
                    TYPE_A => &entry.a,
                    TYPE_AAAA => &entry.aaaa,
                    TYPE_PTR if entry.ptr_unencodable => return Resolution::ServFail,
                    TYPE_PTR => &entry.ptr,
                    TYPE_ANY => any_subset(entry),
                    _ => return Resolution::NoData { soa: in_zone },
                };
                if set.is_empty() {
                    Resolution::NoData { soa: in_zone }
                } else {
                    Resolution::Answer {
                        set,
                        entry: (set.stride() > 0).then_some(entry),
                    }
                }
            }
            None if in_zone => self.resolve_zone_miss(view, lookup),
            None if view.forward => Resolution::Forward,
            None => Resolution::NxDomain { soa: false },
        }
    }
}

/// The answer to QTYPE ANY for a name (RFC 8482: a subset): its A records, else its AAAA
/// records, else its PTR record.
fn any_subset(entry: &NameEntry) -> &RecordSet {
    if !entry.a.is_empty() {
        &entry.a
    } else if !entry.aaaa.is_empty() {
        &entry.aaaa
    } else {
        &entry.ptr
    }
}

/// Whether a wire key ends with the label `arpa` (a reverse name, maybe): a cheap test on
/// the hot path before anything reverse-zone related.
#[inline]
fn is_arpa(key: &[u8]) -> bool {
    match key.len().checked_sub(5) {
        Some(at) => key[at] == 4 && key[at + 1..] == *b"arpa",
        None => false,
    }
}

/// Each address of every container with DNS servers of its own → its list (the first
/// [`MAX_CLIENT_SERVERS`]); for a container whose served networks are all internal, only the
/// servers inside one of those networks' subnets, and no entry when none is. Lists are interned:
/// identical lists share one `Arc`, reused from `prev` when it had the same list, so a list
/// keeps its identity across snapshots.
fn compile_client_upstreams(
    catalog: &Catalog,
    net_index: &NetIndex,
    prev: Option<&Snapshot>,
) -> FxHashMap<IpAddr, Arc<[SocketAddr]>> {
    let mut out = FxHashMap::default();
    if catalog.containers.values().all(|c| c.dns.is_empty()) {
        return out;
    }
    let mut interned: FxHashSet<Arc<[SocketAddr]>> = prev
        .map(|p| p.client_upstreams.values().cloned().collect())
        .unwrap_or_default();
    // An address belongs to the first container (in catalog order) that has it, as in
    // `client_views`.
    let mut seen: FxHashSet<IpAddr> = FxHashSet::default();
    for c in catalog.containers.values() {
        let ips: Vec<IpAddr> = c
            .endpoints
            .iter()
            .filter(|ep| net_index.contains_key(ep.network.as_str()))
            .flat_map(|ep| {
                ep.ipv4
                    .iter()
                    .map(|a| IpAddr::V4(*a))
                    .chain(ep.ipv6.iter().map(|a| IpAddr::V6(*a)))
            })
            .filter(|ip| seen.insert(*ip))
            .collect();
        if c.dns.is_empty() || ips.is_empty() {
            continue;
        }
        let list = container_servers(c, catalog, net_index);
        if list.is_empty() {
            continue;
        }
        let arc = intern(&mut interned, list);
        for ip in ips {
            out.insert(ip, arc.clone());
        }
    }
    out
}

/// The servers of a container with DNS servers of its own, as its clients use them: the first
/// [`MAX_CLIENT_SERVERS`], only those inside a served network's subnet when every network it
/// is served on is internal. Empty: none usable.
fn container_servers(c: &Container, catalog: &Catalog, net_index: &NetIndex) -> Vec<SocketAddr> {
    let served: Vec<&super::Network> = c
        .endpoints
        .iter()
        .filter(|ep| net_index.contains_key(ep.network.as_str()))
        .filter_map(|ep| catalog.networks.get(&ep.network))
        .collect();
    if served.is_empty() {
        return Vec::new();
    }
    let internal_only = served.iter().all(|n| n.internal);
    c.dns
        .iter()
        .copied()
        .filter(|s| {
            !internal_only
                || served
                    .iter()
                    .any(|n| n.subnets.iter().any(|sn| sn.contains(&s.ip())))
        })
        .take(MAX_CLIENT_SERVERS)
        .collect()
}

/// The shared `Arc` of a server list: the interned one when an identical list exists.
fn intern(interned: &mut FxHashSet<Arc<[SocketAddr]>>, list: Vec<SocketAddr>) -> Arc<[SocketAddr]> {
    match interned.get(list.as_slice()) {
        Some(a) => a.clone(),
        None => {
            let a: Arc<[SocketAddr]> = Arc::from(list);
            interned.insert(a.clone());
            a
        }
    }
}

/// [`compile_client_upstreams`] after a change whose views were patched ([`Views::patch`]:
/// same networks, no address two containers claim is touched): the previous map with the
/// changed containers' addresses taken out and put back with their new lists.
fn patch_client_upstreams(
    prev: &Snapshot,
    catalog: &Catalog,
    net_index: &NetIndex,
    changes: &[Change<'_>],
) -> FxHashMap<IpAddr, Arc<[SocketAddr]>> {
    let touched = changes.iter().any(|(_, a, b)| {
        a.is_some_and(|c| !c.dns.is_empty()) || b.is_some_and(|c| !c.dns.is_empty())
    });
    if !touched {
        return prev.client_upstreams.clone();
    }
    let mut out = prev.client_upstreams.clone();
    for c in changes.iter().filter_map(|(_, old, _)| *old) {
        for ip in served_ips(c, net_index) {
            out.remove(&ip);
        }
    }
    let mut interned: FxHashSet<Arc<[SocketAddr]>> = out.values().cloned().collect();
    for c in changes.iter().filter_map(|(_, _, new)| *new) {
        if c.dns.is_empty() {
            continue;
        }
        let list = container_servers(c, catalog, net_index);
        if list.is_empty() {
            continue;
        }
        let arc = intern(&mut interned, list);
        for ip in served_ips(c, net_index) {
            out.insert(ip, arc.clone());
        }
    }
    out
}

/// Shards of [`NameCounts`].
const NAME_SHARDS: usize = 64;

/// One shard of [`NameCounts`]: key → number of networks that have it.
type NameShard = FxHashMap<Arc<[u8]>, u32>;

/// The union of every network's keys (shared `Arc`s, no copy of the names), as counts per key
/// (how many networks have it) in [`NAME_SHARDS`] shards shared between snapshots: a rebuild
/// after one change copies only the shards whose keys changed, not the whole set (with 10,000
/// containers a full copy would double the cost of publishing one change).
#[derive(Debug, Clone)]
struct NameCounts {
    shards: Box<[Arc<NameShard>]>,
}

/// The shard of a key: FNV-1a, independent of the maps' own hash, so that each shard's map
/// still sees well-spread hashes.
fn name_shard(key: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    (h % NAME_SHARDS as u64) as usize
}

impl NameCounts {
    /// Counts every key of every table, from scratch.
    fn build(nets: &[Arc<NetTable>]) -> NameCounts {
        let mut shards: Vec<NameShard> = (0..NAME_SHARDS).map(|_| NameShard::default()).collect();
        for t in nets {
            for k in t.all.keys() {
                *shards[name_shard(k)].entry(k.clone()).or_insert(0) += 1;
            }
        }
        NameCounts {
            shards: shards.into_iter().map(Arc::new).collect(),
        }
    }

    /// The counts for `new_nets`, from these counts for `old_nets`: the keys of every table that
    /// went away are taken out, those of every new table put in (an unchanged network shares
    /// its table, so it costs nothing); only the shards a net change touches are copied.
    fn update(&self, old_nets: &[Arc<NetTable>], new_nets: &[Arc<NetTable>]) -> NameCounts {
        let ptrs = |nets: &[Arc<NetTable>]| -> FxHashSet<*const NetTable> {
            nets.iter().map(Arc::as_ptr).collect()
        };
        let (old_ptrs, new_ptrs) = (ptrs(old_nets), ptrs(new_nets));
        let mut delta: FxHashMap<Arc<[u8]>, i64> = FxHashMap::default();
        for t in old_nets
            .iter()
            .filter(|t| !new_ptrs.contains(&Arc::as_ptr(t)))
        {
            for k in t.all.keys() {
                *delta.entry(k.clone()).or_insert(0) -= 1;
            }
        }
        for t in new_nets
            .iter()
            .filter(|t| !old_ptrs.contains(&Arc::as_ptr(t)))
        {
            for k in t.all.keys() {
                *delta.entry(k.clone()).or_insert(0) += 1;
            }
        }
        let mut shards: Vec<Arc<NameShard>> = self.shards.to_vec();
        let mut copied = [false; NAME_SHARDS];
        for (k, d) in delta.into_iter().filter(|(_, d)| *d != 0) {
            let i = name_shard(&k);
            if !copied[i] {
                shards[i] = Arc::new(NameShard::clone(&shards[i]));
                copied[i] = true;
            }
            let Some(shard) = Arc::get_mut(&mut shards[i]) else {
                continue; // just copied: the only reference
            };
            let n = i64::from(shard.get(&k).copied().unwrap_or(0)) + d;
            if n > 0 {
                shard.insert(k, u32::try_from(n).unwrap_or(u32::MAX));
            } else {
                shard.remove(&k);
            }
        }
        NameCounts {
            shards: shards.into_boxed_slice(),
        }
    }

    /// Whether some network has `key`. One hash probe.
    #[inline]
    fn contains(&self, key: &[u8]) -> bool {
        self.shards[name_shard(key)].contains_key(key)
    }

    /// Number of distinct keys (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
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

fn compile_entry(acc: &Acc, ttl: u32, health_aware: bool) -> NameEntry {
    let any_serving = acc.members.iter().any(|(s, _)| *s);
    let mut addrs: Vec<IpAddr> = Vec::new();
    for (serving, list) in &acc.members {
        if health_aware && any_serving && !serving {
            continue;
        }
        for ip in list.iter() {
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
    // A target that is not a valid DNS name (normalize_name applies RFC 1035's limits, which
    // hickory's parser does not all enforce) gets no record and answers SERVFAIL.
    let ptr_unencodable = acc
        .ptr
        .as_deref()
        .is_some_and(|t| normalize_name(t).is_none() || Name::from_ascii(t).is_err());
    let ptr: Vec<Record> = acc
        .ptr
        .as_deref()
        .filter(|_| !ptr_unencodable)
        .and_then(|target| Name::from_ascii(target).ok())
        .map(|target| Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(target))))
        .into_iter()
        .collect();
    NameEntry {
        name: acc.text.clone().into_boxed_str(),
        a: RecordSet::from_records(&a, true),
        aaaa: RecordSet::from_records(&aaaa, true),
        ptr: RecordSet::from_records(&ptr, false),
        ptr_unencodable,
        qualified: acc.qualified,
        rotor: AtomicU32::new(0),
    }
}

/// The link aliases one container sees (libnetwork's endpoint aliases): for each endpoint, in the
/// container's network order, each link's alias, plain and as `alias.<network>`, points at the
/// entry its target has on that endpoint's network. The first endpoint whose target resolves
/// wins a plain alias, as Docker walks the sandbox's endpoints; a target that is not on the
/// link's network adds nothing (Docker then does not answer the alias either).
fn link_overlay(
    container: &Container,
    net_index: &NetIndex,
    nets: &[Arc<NetTable>],
) -> FxHashMap<Arc<[u8]>, EntryRef> {
    let mut map: FxHashMap<Arc<[u8]>, EntryRef> = FxHashMap::default();
    for ep in container.endpoints.iter().filter(|ep| !ep.links.is_empty()) {
        let Some(&net) = net_index.get(ep.network.as_str()) else {
            continue;
        };
        let table = &nets[net as usize];
        for link in &ep.links {
            let Some(idx) =
                normalize_name(&link.target).and_then(|k| table.all.get(&k[..]).copied())
            else {
                continue;
            };
            for text in [link.alias.clone(), format!("{}.{}", link.alias, ep.network)] {
                if let Some(key) = normalize_name(&text) {
                    map.entry(Arc::from(key)).or_insert(EntryRef { net, idx });
                }
            }
        }
    }
    map
}

struct ViewBuilder<'a> {
    nets: &'a [Arc<NetTable>],
    networks: &'a [NetworkInfo],
    views: Vec<View>,
    by_spec: FxHashMap<Arc<[(u32, bool)]>, ViewId>,
}

impl ViewBuilder<'_> {
    fn view(&mut self, spec: Vec<(u32, bool)>) -> ViewId {
        if let Some(&id) = self.by_spec.get(spec.as_slice()) {
            return id;
        }
        let names = match spec.as_slice() {
            [(ni, true)] => ViewNames::One(*ni),
            _ => {
                let size: usize = spec
                    .iter()
                    .map(|&(ni, plain)| {
                        let t = &self.nets[ni as usize];
                        if plain {
                            t.all.len()
                        } else {
                            t.qualified.len()
                        }
                    })
                    .sum();
                let mut map: FxHashMap<Arc<[u8]>, EntryRef> =
                    FxHashMap::with_capacity_and_hasher(size, Default::default());
                for &(net, plain) in &spec {
                    let t = &self.nets[net as usize];
                    if plain {
                        for (k, &idx) in &t.all {
                            map.entry(k.clone()).or_insert(EntryRef { net, idx });
                        }
                    } else {
                        for k in t.qualified.iter() {
                            if let Some(&idx) = t.all.get(k) {
                                map.entry(k.clone()).or_insert(EntryRef { net, idx });
                            }
                        }
                    }
                }
                ViewNames::Merged(Arc::new(map))
            }
        };
        let plain_nets: Vec<u32> = spec.iter().filter(|s| s.1).map(|s| s.0).collect();
        let forward = plain_nets.is_empty()
            || plain_nets
                .iter()
                .any(|&i| !self.networks[i as usize].internal);
        let ents = match spec.as_slice() {
            [(ni, true)] => ViewEnts::One(*ni),
            _ => ViewEnts::Merged(Arc::new(merged_ents(self.nets, &spec))),
        };
        let id = self.views.len() as ViewId;
        let spec: Arc<[(u32, bool)]> = spec.into();
        self.views.push(View {
            names,
            links: None,
            owner: None,
            forward,
            networks: spec.clone(),
            ents,
        });
        self.by_spec.insert(spec, id);
        id
    }

    /// A view like `base` with a linking container's aliases in front (one per such
    /// container; the base's names are shared, not copied).
    fn linked_view(
        &mut self,
        base: ViewId,
        links: FxHashMap<Arc<[u8]>, EntryRef>,
        owner: Arc<str>,
    ) -> ViewId {
        let b = &self.views[base as usize];
        let names = match &b.names {
            ViewNames::One(ni) => ViewNames::One(*ni),
            ViewNames::Merged(map) => ViewNames::Merged(map.clone()),
        };
        let ents = match &b.ents {
            ViewEnts::One(ni) => ViewEnts::One(*ni),
            ViewEnts::Merged(set) => ViewEnts::Merged(set.clone()),
        };
        let view = View {
            names,
            links: Some(Arc::new(links)),
            owner: Some(owner),
            forward: b.forward,
            networks: b.networks.clone(),
            ents,
        };
        let id = self.views.len() as ViewId;
        self.views.push(view);
        id
    }
}

/// The empty non-terminals of a view of several networks (plain: all of a network's;
/// qualified only: those of its qualified names).
fn merged_ents(nets: &[Arc<NetTable>], spec: &[(u32, bool)]) -> FxHashSet<Arc<[u8]>> {
    let mut set = FxHashSet::default();
    for &(net, plain) in spec {
        let t = &nets[net as usize];
        if plain {
            set.extend(t.ents.iter().cloned());
        } else {
            set.extend(t.ents_qualified.iter().cloned());
        }
    }
    set
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
            dns: Vec::new(),
            endpoints: vec![Endpoint {
                network: net.into(),
                ipv4: vec![ip.parse().unwrap()],
                ipv6: vec![],
                aliases: aliases.iter().map(|s| s.to_string()).collect(),
                links: Vec::new(),
            }],
            anonymous: false,
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
                .insert(n.into(), Arc::new(ctr(n, "demo", ip, &["api"], h)));
        }
        c.containers.insert(
            "vault".into(),
            Arc::new(ctr("vault", "priv", "10.1.0.2", &[], Health::None)),
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

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Per-container upstreams (Docker's `--dns`): the client's own list in its order, at most
    /// three, shared when identical; none → the default servers.
    #[test]
    fn client_servers_follow_the_container() {
        let mut c = catalog();
        let own = vec![sa("10.0.0.53:53"), sa("192.0.2.1:53")];
        Arc::make_mut(c.containers.get_mut("api-1").unwrap()).dns = own.clone();
        Arc::make_mut(c.containers.get_mut("api-2").unwrap()).dns = own.clone();
        Arc::make_mut(c.containers.get_mut("api-3").unwrap()).dns = [
            "192.0.2.1:53",
            "192.0.2.2:53",
            "192.0.2.3:53",
            "192.0.2.4:53",
        ]
        .map(sa)
        .to_vec();
        let s = Snapshot::build(&c, BuildSettings::default());
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let l1 = s.client_servers(ip("10.0.0.11")).unwrap();
        let l2 = s.client_servers(ip("10.0.0.12")).unwrap();
        assert_eq!(&l1[..], &own[..]);
        assert!(Arc::ptr_eq(l1, l2), "identical lists share one allocation");
        assert_eq!(
            s.client_servers(ip("10.0.0.13")).unwrap().len(),
            MAX_CLIENT_SERVERS
        );
        // Not a container, or a container without servers: the default list.
        assert!(s.client_servers(ip("10.0.0.99")).is_none());
        assert!(s.client_servers(ip("10.1.0.2")).is_none());
        let v = s.view_for(ip("10.0.0.11"), None);
        assert_eq!(
            s.unanswered(ip("10.0.0.11"), v, &key("example.com")),
            Unanswered::Forward
        );
        // A rebuild keeps the same allocation for an unchanged list.
        let mut c2 = c.clone();
        c2.containers.remove("api-3");
        let s2 = Snapshot::rebuild(&c2, BuildSettings::default(), &s, &c);
        assert!(Arc::ptr_eq(
            s2.client_servers(ip("10.0.0.11")).unwrap(),
            s.client_servers(ip("10.0.0.11")).unwrap()
        ));
    }

    /// A client that sees only internal networks: forwarded to its own servers inside those
    /// networks' subnets, else SERVFAIL at once (never the default servers).
    #[test]
    fn internal_clients_use_on_network_servers_or_servfail() {
        let mut c = catalog();
        c.networks.get_mut("priv").unwrap().subnets = vec!["10.1.0.0/24".parse().unwrap()];
        let s = Snapshot::build(&c, BuildSettings::default());
        let vault: IpAddr = "10.1.0.2".parse().unwrap();
        let v = s.view_for(vault, None);
        assert_eq!(
            s.unanswered(vault, v, &key("example.com")),
            Unanswered::ServFail
        );
        // Its own servers: one off the network (unreachable from there), one on it.
        Arc::make_mut(c.containers.get_mut("vault").unwrap()).dns =
            vec![sa("192.0.2.1:53"), sa("10.1.0.53:53")];
        let s = Snapshot::build(&c, BuildSettings::default());
        let v = s.view_for(vault, None);
        assert_eq!(&s.client_servers(vault).unwrap()[..], &[sa("10.1.0.53:53")]);
        assert_eq!(
            s.unanswered(vault, v, &key("example.com")),
            Unanswered::Forward
        );
        // Only off-network servers: SERVFAIL.
        Arc::make_mut(c.containers.get_mut("vault").unwrap()).dns = vec![sa("192.0.2.1:53")];
        let s = Snapshot::build(&c, BuildSettings::default());
        let v = s.view_for(vault, None);
        assert!(s.client_servers(vault).is_none());
        assert_eq!(
            s.unanswered(vault, v, &key("example.com")),
            Unanswered::ServFail
        );
    }

    /// With Docker's resolver (127.0.0.11) as upstream, a name that is a container's on any
    /// served network is never forwarded: NXDOMAIN for a client outside its scope.
    #[test]
    fn container_names_never_go_to_dockers_resolver() {
        let c = catalog();
        let plain = Snapshot::build(&c, BuildSettings::default());
        let api: IpAddr = "10.0.0.11".parse().unwrap();
        let v = plain.view_for(api, None);
        // Without Docker's resolver: forwarded (and no set is built).
        assert!(plain.names_everywhere.is_none());
        assert_eq!(plain.unanswered(api, v, &key("vault")), Unanswered::Forward);
        let settings = BuildSettings {
            default_upstreams: vec![sa("127.0.0.11:53")],
            ..Default::default()
        };
        let s = Snapshot::build(&c, settings.clone());
        let v = s.view_for(api, None);
        assert!(matches!(
            s.resolve(v, &key("vault"), TYPE_A, CLASS_IN),
            Resolution::Forward
        ));
        for name in ["vault", "vault.priv", "2.0.1.10.in-addr.arpa", "VAULT"] {
            assert_eq!(
                s.unanswered(api, v, &normalize_name(name).unwrap()),
                Unanswered::NxDomain,
                "{name}"
            );
        }
        assert_eq!(
            s.unanswered(api, v, &key("example.com")),
            Unanswered::Forward
        );
        // A client whose own servers are elsewhere is not affected; one whose own list names
        // Docker's resolver is, even when the default list does not.
        let mut c2 = c.clone();
        Arc::make_mut(c2.containers.get_mut("api-1").unwrap()).dns = vec![sa("192.0.2.1:53")];
        Arc::make_mut(c2.containers.get_mut("api-2").unwrap()).dns = vec![sa("127.0.0.11:53")];
        let s = Snapshot::build(&c2, settings);
        let v = s.view_for(api, None);
        assert_eq!(s.unanswered(api, v, &key("vault")), Unanswered::Forward);
        let s = Snapshot::build(&c2, BuildSettings::default());
        let api2: IpAddr = "10.0.0.12".parse().unwrap();
        let v = s.view_for(api2, None);
        assert_eq!(s.unanswered(api2, v, &key("vault")), Unanswered::NxDomain);
        assert_eq!(s.unanswered(api, v, &key("vault")), Unanswered::Forward);
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
    fn zone_apex_ns_and_empty_non_terminals() {
        let mut cat = catalog();
        cat.containers.insert(
            "dotted".into(),
            Arc::new(ctr("x.y", "demo", "10.0.0.40", &[], Health::None)),
        );
        let settings = BuildSettings {
            domain: Some("docker".into()),
            ..Default::default()
        };
        // No listener address known: the apex NS is NODATA rather than an empty answer.
        let s = Snapshot::build(&cat, settings.clone());
        let v = s.host_view();
        assert!(s.ns_addresses().is_empty());
        assert!(matches!(
            s.resolve(v, &key("docker"), TYPE_NS, CLASS_IN),
            Resolution::NoData { soa: true }
        ));
        let s = Snapshot::build(
            &cat,
            BuildSettings {
                listen_addresses: vec!["0.0.0.0".parse().unwrap(), "10.0.0.53".parse().unwrap()],
                ..settings
            },
        );
        let v = s.host_view();
        assert!(matches!(
            s.resolve(v, &key("docker"), TYPE_NS, CLASS_IN),
            Resolution::Answer { .. }
        ));
        assert!(matches!(
            s.resolve(v, &key("ns1.docker"), TYPE_A, CLASS_IN),
            Resolution::Answer { .. }
        ));
        // Empty non-terminals: in the merged host view (demo + priv) and in one network's view.
        for view in [s.host_view(), s.view_for("10.1.0.2".parse().unwrap(), None)] {
            assert!(matches!(
                s.resolve(view, &key("priv.docker"), TYPE_A, CLASS_IN),
                Resolution::NoData { soa: true }
            ));
        }
        assert!(matches!(
            s.resolve(v, &key("y.docker"), TYPE_A, CLASS_IN),
            Resolution::NoData { soa: true }
        ));
        assert!(matches!(
            s.resolve(v, &key("y.demo.docker"), TYPE_A, CLASS_IN),
            Resolution::NoData { soa: true }
        ));
        // The internal network's client does not see demo's names or its empty non-terminals.
        let inner = s.view_for("10.1.0.2".parse().unwrap(), None);
        assert!(matches!(
            s.resolve(inner, &key("y.docker"), TYPE_A, CLASS_IN),
            Resolution::NxDomain { soa: true }
        ));
        // Outside the domain an empty non-terminal is not local: forwarded as before.
        assert!(matches!(
            s.resolve(v, &key("y"), TYPE_A, CLASS_IN),
            Resolution::Forward
        ));
    }

    #[test]
    fn a_recompiled_table_keeps_indices_and_carries_unchanged_entries() {
        let cat0 = catalog();
        let s0 = Snapshot::build(&cat0, BuildSettings::default());
        let demo = |s: &Snapshot| s.net_index.get("demo").map(|&i| s.nets[i as usize].clone());
        let idx = |s: &Snapshot, name: &str| demo(s).unwrap().all.get(&key(name)[..]).copied();
        let api = |s: &Snapshot| match s.resolve(s.host_view(), &key("api"), TYPE_A, CLASS_IN) {
            Resolution::Answer {
                set,
                entry: Some(e),
            } => e.next_rotation(set.count()),
            _ => panic!("api does not answer"),
        };
        assert_eq!(api(&s0), 0);
        // A container comes: the network is recompiled, its other names keep their index, and
        // `api` (same inputs) is carried over with its rotation.
        let mut cat1 = cat0.clone();
        cat1.containers.insert(
            "web".into(),
            Arc::new(ctr("web", "demo", "10.0.0.20", &[], Health::None)),
        );
        let s1 = Snapshot::rebuild(&cat1, BuildSettings::default(), &s0, &cat0);
        assert!(!Arc::ptr_eq(&demo(&s0).unwrap(), &demo(&s1).unwrap()));
        for name in [
            "api",
            "api-1",
            "api-2",
            "api-3.demo",
            "11.0.0.10.in-addr.arpa",
        ] {
            assert!(idx(&s0, name).is_some(), "{name}");
            assert_eq!(idx(&s0, name), idx(&s1, name), "{name}");
        }
        assert_eq!(api(&s1), 1, "rotation carried over");
        let fresh1 = Snapshot::build(&cat1, BuildSettings::default());
        assert!(a_of(&s1, s1.host_view(), "web").is_some());
        assert_eq!(
            a_of(&s1, s1.host_view(), "web"),
            a_of(&fresh1, fresh1.host_view(), "web")
        );
        // It goes: its slot is a tombstone, seen by no lookup and no listing.
        let s2 = Snapshot::rebuild(&cat0, BuildSettings::default(), &s1, &cat1);
        assert_eq!(a_of(&s2, s2.host_view(), "web"), None);
        let fresh = Snapshot::build(&cat0, BuildSettings::default());
        assert_eq!(s2.entry_count(), fresh.entry_count());
        let listed = |s: &Snapshot| {
            let mut v: Vec<String> = s.network_entries(0).map(|e| e.name.to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(listed(&s2), listed(&fresh));
        assert!(demo(&s2).unwrap().entries.len() > demo(&s2).unwrap().all.len());
        // Another comes and takes the free slots: the table does not grow.
        let mut cat3 = cat0.clone();
        cat3.containers.insert(
            "db".into(),
            Arc::new(ctr("db", "demo", "10.0.0.21", &[], Health::None)),
        );
        let s3 = Snapshot::rebuild(&cat3, BuildSettings::default(), &s2, &cat0);
        let fresh3 = Snapshot::build(&cat3, BuildSettings::default());
        assert!(a_of(&s3, s3.host_view(), "db").is_some());
        assert_eq!(
            a_of(&s3, s3.host_view(), "db"),
            a_of(&fresh3, fresh3.host_view(), "db")
        );
        assert_eq!(
            demo(&s3).unwrap().entries.len(),
            demo(&s1).unwrap().entries.len()
        );
        assert_eq!(listed(&s3), listed(&fresh3));
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

    fn a_of(s: &Snapshot, v: &View, name: &str) -> Option<Vec<u8>> {
        match s.resolve(v, &key(name), TYPE_A, CLASS_IN) {
            Resolution::Answer { set, .. } => Some(set.bytes().to_vec()),
            _ => None,
        }
    }

    #[test]
    fn links_are_seen_by_the_linking_container_only() {
        let mut cat = catalog();
        cat.networks.insert("other".into(), net("other", false));
        // "client" on demo and other links api-1 as "db" on demo, and "vault" (which is not on
        // demo) as "v" on demo; on "other" it links "far" as "f"; "db" also shadows the name of
        // a container on demo.
        let mut client = ctr("client", "demo", "10.0.0.99", &[], Health::None);
        client.endpoints[0].links = vec![
            crate::model::Link::parse("api-1:db").unwrap(),
            crate::model::Link::parse("vault:v").unwrap(),
            crate::model::Link::parse("api-3:api-2").unwrap(),
        ];
        client.endpoints.push(Endpoint {
            network: "other".into(),
            ipv4: vec!["10.4.0.99".parse().unwrap()],
            ipv6: vec![],
            aliases: vec![],
            links: vec![crate::model::Link::parse("far:f").unwrap()],
        });
        cat.containers.insert("client".into(), Arc::new(client));
        cat.containers.insert(
            "far".into(),
            Arc::new(ctr("far", "other", "10.4.0.7", &[], Health::None)),
        );
        cat.containers.insert(
            "peer".into(),
            Arc::new(ctr("peer", "demo", "10.0.0.98", &[], Health::None)),
        );
        let s = Snapshot::build(&cat, BuildSettings::default());
        let me = s.view_for("10.0.0.99".parse().unwrap(), None);
        let also_me = s.view_for("10.4.0.99".parse().unwrap(), None);
        let peer = s.view_for("10.0.0.98".parse().unwrap(), None);
        let api1 = a_of(&s, me, "api-1").unwrap();
        assert_eq!(a_of(&s, me, "db"), Some(api1.clone()));
        assert_eq!(a_of(&s, me, "DB.demo"), Some(api1.clone()));
        assert_eq!(
            a_of(&s, also_me, "db"),
            Some(api1),
            "every address of the container"
        );
        assert_eq!(a_of(&s, me, "f"), a_of(&s, me, "far"));
        assert_eq!(a_of(&s, me, "f.other"), a_of(&s, me, "far"));
        assert!(
            a_of(&s, me, "db.other").is_none(),
            "only on the link's network"
        );
        assert!(a_of(&s, me, "f.demo").is_none());
        // The target must be on the link's network.
        assert!(matches!(
            s.resolve(me, &key("v"), TYPE_A, CLASS_IN),
            Resolution::Forward
        ));
        // A link alias comes before an ordinary name.
        assert_eq!(a_of(&s, me, "api-2"), a_of(&s, me, "api-3"));
        assert_ne!(a_of(&s, peer, "api-2"), a_of(&s, peer, "api-3"));
        // Nobody else sees the links.
        for v in [peer, s.host_view()] {
            assert!(matches!(
                s.resolve(v, &key("db"), TYPE_A, CLASS_IN),
                Resolution::Forward
            ));
        }
        // Without links, containers on the same networks still share one view.
        let before = Snapshot::build(&catalog(), BuildSettings::default()).view_count();
        assert!(s.view_count() <= before + 3, "{} views", s.view_count());
    }

    #[test]
    fn anonymous_ptr_and_unencodable_ptr() {
        let mut cat = Catalog::default();
        cat.networks.insert("demo".into(), net("demo", false));
        let mut anon = ctr(
            "eloquent_jackson",
            "demo",
            "10.0.0.2",
            &["db", "0123456789ab"],
            Health::None,
        );
        anon.anonymous = true;
        cat.containers.insert("anon".into(), Arc::new(anon));
        let long = "x".repeat(64);
        cat.containers.insert(
            "long".into(),
            Arc::new(ctr(&long, "demo", "10.0.0.3", &["short1"], Health::None)),
        );
        let s = Snapshot::build(&cat, BuildSettings::default());
        let v = s.host_view();
        assert!(matches!(
            s.resolve(v, &key("eloquent_jackson"), TYPE_A, CLASS_IN),
            Resolution::Forward
        ));
        assert!(a_of(&s, v, "db").is_some());
        match s.resolve(v, &key("2.0.0.10.in-addr.arpa"), TYPE_PTR, CLASS_IN) {
            Resolution::Answer { set, .. } => {
                assert!(
                    set.bytes().ends_with(b"\x02db\x04demo\x00"),
                    "{:?}",
                    set.bytes()
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.resolve(v, &key("3.0.0.10.in-addr.arpa"), TYPE_PTR, CLASS_IN),
            Resolution::ServFail
        ));
        // Other types of that reverse name are still NODATA; its other names still answer.
        assert!(matches!(
            s.resolve(v, &key("3.0.0.10.in-addr.arpa"), TYPE_A, CLASS_IN),
            Resolution::NoData { .. }
        ));
        assert!(a_of(&s, v, "short1").is_some());
    }

    /// Everything a snapshot answers, in a comparable form: per view spec, key → (network
    /// name, entry name, A, AAAA, PTR bytes); plus the client and listener scopes.
    type Dump = (
        BTreeMap<
            Vec<(String, bool)>,
            BTreeMap<Vec<u8>, (String, String, Vec<u8>, Vec<u8>, Vec<u8>)>,
        >,
        BTreeMap<IpAddr, Vec<(String, bool)>>,
    );

    fn dump(s: &Snapshot) -> Dump {
        let spec = |v: &View| -> Vec<(String, bool)> {
            v.networks
                .iter()
                .map(|&(n, p)| (s.networks[n as usize].name.clone(), p))
                .collect()
        };
        let mut views = BTreeMap::new();
        for (v, _) in s
            .routing
            .views
            .iter()
            .zip(&s.routing.users)
            .filter(|(_, u)| **u > 0)
        {
            let keys: Vec<Vec<u8>> = match &v.names {
                ViewNames::One(ni) => s.nets[*ni as usize]
                    .all
                    .keys()
                    .map(|k| k.to_vec())
                    .collect(),
                ViewNames::Merged(m) => m.keys().map(|k| k.to_vec()).collect(),
            };
            let mut names = BTreeMap::new();
            for k in keys {
                let (ni, e) = s.lookup(v, &k).unwrap();
                names.insert(
                    k,
                    (
                        s.networks[ni as usize].name.clone(),
                        e.name.to_string(),
                        e.a.bytes().to_vec(),
                        e.aaaa.bytes().to_vec(),
                        e.ptr.bytes().to_vec(),
                    ),
                );
            }
            views.insert(spec(v), names);
        }
        let clients = s
            .routing
            .client_views
            .iter()
            .map(|(ip, &vid)| (*ip, spec(&s.routing.views[vid as usize])))
            .collect();
        (views, clients)
    }

    /// The served-name counts, with every key's count checked against the tables.
    fn names_dump(s: &Snapshot) -> BTreeMap<Vec<u8>, u32> {
        let counts = s.names_everywhere.as_ref().expect("names kept");
        let mut want: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        for t in &s.nets {
            for k in t.all.keys() {
                *want.entry(k.to_vec()).or_insert(0) += 1;
                assert!(counts.contains(k));
            }
        }
        assert_eq!(counts.len(), want.len());
        let got: BTreeMap<Vec<u8>, u32> = counts
            .shards
            .iter()
            .flat_map(|sh| sh.iter().map(|(k, n)| (k.to_vec(), *n)))
            .collect();
        assert_eq!(got, want);
        got
    }

    #[test]
    fn rebuild_equals_build_and_shares_unchanged_networks() {
        let mut cat = catalog();
        cat.networks.insert("third".into(), net("third", false));
        let mut multi = ctr("multi", "demo", "10.0.0.50", &["m"], Health::None);
        multi.endpoints.push(Endpoint {
            network: "third".into(),
            ipv4: vec!["10.3.0.50".parse().unwrap()],
            ipv6: vec!["fd00::50".parse().unwrap()],
            aliases: vec!["api".into()],
            links: Vec::new(),
        });
        cat.containers.insert("multi".into(), Arc::new(multi));
        cat.services.push(crate::model::ServiceRecord {
            name: "svc".into(),
            network: "third".into(),
            vips: vec!["10.3.0.2".parse().unwrap()],
            tasks: vec!["10.3.0.3".parse().unwrap(), "10.3.0.4".parse().unwrap()],
        });
        let settings = BuildSettings {
            domain: Some("docker".into()),
            host_view: Some(vec!["demo".into()]),
            host_sees_all_qualified: true,
            // Docker's resolver as upstream: the set of every served name is kept too.
            default_upstreams: vec!["127.0.0.11:53".parse().unwrap()],
            ..Default::default()
        };
        type Change = Box<dyn Fn(&mut Catalog)>;
        let changes: Vec<Change> = vec![
            Box::new(|_| {}),
            Box::new(|c| {
                Arc::make_mut(c.containers.get_mut("vault").unwrap()).name = "vault2".into()
            }),
            Box::new(|c| {
                c.containers.remove("api-1");
            }),
            Box::new(|c| {
                Arc::make_mut(c.containers.get_mut("api-2").unwrap()).health = Health::Healthy
            }),
            Box::new(|c| {
                c.networks
                    .insert("aaa-first".into(), net("aaa-first", false));
                c.containers.insert(
                    "new".into(),
                    Arc::new(ctr("new", "aaa-first", "10.9.0.2", &["api"], Health::None)),
                );
            }),
            Box::new(|c| c.services[0].tasks.pop().map(drop).unwrap_or(())),
            Box::new(|c| {
                c.networks.remove("priv");
            }),
            Box::new(|c| {
                Arc::make_mut(c.containers.get_mut("multi").unwrap()).endpoints[1].aliases =
                    vec!["z".into()]
            }),
        ];
        let mut prev_cat = cat.clone();
        let mut prev = Snapshot::build(&cat, settings.clone());
        for (step, change) in changes.iter().enumerate() {
            change(&mut cat);
            let fresh = Snapshot::build(&cat, settings.clone());
            let inc = Snapshot::rebuild(&cat, settings.clone(), &prev, &prev_cat);
            assert_eq!(dump(&fresh), dump(&inc), "step {step}");
            assert_eq!(names_dump(&fresh), names_dump(&inc), "step {step}");
            assert!(names_dump(&inc).values().all(|&n| n > 0), "step {step}");
            // Networks whose inputs did not change are shared, not recompiled.
            for (i, name) in cat.networks.keys().enumerate() {
                let old_i = prev_cat.networks.keys().position(|n| n == name);
                let unchanged = old_i.is_some_and(|o| {
                    group_inputs(&prev_cat, &network_index(&prev_cat), &[true; 8])[o]
                        .same_as(&group_inputs(&cat, &network_index(&cat), &[true; 8])[i])
                });
                let shared = old_i.is_some_and(|o| Arc::ptr_eq(&inc.nets[i], &prev.nets[o]));
                assert_eq!(shared, unchanged, "step {step}, network {name}");
            }
            prev = inc;
            prev_cat = cat.clone();
        }
        // A TTL change recompiles everything.
        let ttl = BuildSettings {
            ttl: 30,
            ..settings.clone()
        };
        let inc = Snapshot::rebuild(&cat, ttl.clone(), &prev, &prev_cat);
        assert_eq!(dump(&Snapshot::build(&cat, ttl.clone())), dump(&inc));
        assert_eq!(names_dump(&Snapshot::build(&cat, ttl)), names_dump(&inc));
        assert!(!inc
            .nets
            .iter()
            .zip(&prev.nets)
            .any(|(a, b)| Arc::ptr_eq(a, b)));
    }

    /// A small deterministic random source (xorshift64*), so that a failing sequence replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
            &from[self.below(from.len())]
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    const NETS: [&str; 5] = ["alpha", "beta", "gamma", "delta", "internal"];
    const NAMES: [&str; 6] = ["web", "db", "cache", "api", "x.y", "worker"];
    /// Few addresses, so that two containers often claim one.
    fn pool_ip(rng: &mut Rng) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, 0, 0, 2 + rng.below(10) as u8)
    }

    fn random_network(rng: &mut Rng, name: &str) -> Network {
        Network {
            name: name.into(),
            id: String::new(),
            internal: name == "internal",
            listen_addrs: if rng.chance(30) {
                vec![IpAddr::V4(std::net::Ipv4Addr::new(
                    10,
                    9,
                    rng.below(3) as u8,
                    1,
                ))]
            } else {
                vec![]
            },
            subnets: vec!["10.0.0.0/24".parse().unwrap()],
        }
    }

    fn random_container(rng: &mut Rng) -> Container {
        let mut nets: Vec<&str> = NETS.to_vec();
        let mut endpoints = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let n = nets.remove(rng.below(nets.len()));
            let links = if rng.chance(20) {
                vec![crate::model::Link::parse(&format!(
                    "{}:{}",
                    rng.pick(&NAMES),
                    rng.pick(&["l1", "l2", "web"])
                ))
                .unwrap()]
            } else {
                vec![]
            };
            endpoints.push(Endpoint {
                network: n.into(),
                ipv4: (0..rng.below(3)).map(|_| pool_ip(rng)).collect(),
                ipv6: if rng.chance(20) {
                    vec![format!("fd00::{}", rng.below(4)).parse().unwrap()]
                } else {
                    vec![]
                },
                aliases: if rng.chance(30) {
                    vec![rng.pick(&NAMES).to_string()]
                } else {
                    vec![]
                },
                links,
            });
        }
        Container {
            id: format!("{:064x}", rng.next()),
            name: rng.pick(&NAMES).to_string(),
            hostname: rng.chance(20).then(|| rng.pick(&NAMES).to_string()),
            health: *rng.pick(&[Health::None, Health::Healthy, Health::Unhealthy]),
            extra_names: vec![],
            endpoints,
            dns: if rng.chance(15) {
                vec![
                    format!("10.0.0.{}:53", 50 + rng.below(2)).parse().unwrap(),
                    "127.0.0.11:53".parse().unwrap(),
                ]
            } else {
                vec![]
            },
            anonymous: rng.chance(10),
        }
    }

    /// One random change to a catalog: a container added, replaced, removed, re-created with
    /// the same contents, or touched in one field; a network added or removed; a service.
    fn random_change(rng: &mut Rng, cat: &mut Catalog) {
        let keys: Vec<Arc<str>> = cat.containers.keys().cloned().collect();
        match rng.below(10) {
            0..=2 => {
                let key: Arc<str> = format!("k{}", rng.below(14)).into();
                cat.containers.insert(key, Arc::new(random_container(rng)));
            }
            3 if !keys.is_empty() => {
                cat.containers.remove(rng.pick(&keys));
            }
            4 if !keys.is_empty() => {
                // Same contents, new allocation: nothing changes.
                let key = rng.pick(&keys).clone();
                let copy = Container::clone(&cat.containers[&key]);
                cat.containers.insert(key, Arc::new(copy));
            }
            5 if !keys.is_empty() => {
                let c = Arc::make_mut(cat.containers.get_mut(rng.pick(&keys)).unwrap());
                c.health = *rng.pick(&[Health::None, Health::Starting, Health::Unhealthy]);
            }
            6 if !keys.is_empty() => {
                let c = Arc::make_mut(cat.containers.get_mut(rng.pick(&keys)).unwrap());
                if let Some(ep) = c.endpoints.first_mut() {
                    ep.ipv4 = vec![pool_ip(rng)];
                }
            }
            7 => {
                let n = *rng.pick(&NETS);
                if cat.networks.remove(n).is_none() {
                    cat.networks.insert(n.into(), random_network(rng, n));
                }
            }
            8 => {
                let n = *rng.pick(&NETS);
                cat.services.retain(|s| s.network != n);
                if rng.chance(60) {
                    cat.services.push(crate::model::ServiceRecord {
                        name: rng.pick(&NAMES).to_string(),
                        network: n.into(),
                        vips: vec![],
                        tasks: vec![IpAddr::V4(pool_ip(rng))],
                    });
                }
            }
            _ => {
                let key: Arc<str> = format!("k{}", rng.below(14)).into();
                cat.containers.insert(key, Arc::new(random_container(rng)));
            }
        }
    }

    /// What a snapshot answers to everyone it can tell apart: for each client address (every
    /// address of the pools, a listener address, an unknown one) the view's networks, the
    /// answer to every name a test could ask (plain, qualified, link aliases, reverse names,
    /// under the domain), the client's own servers, what happens to an unanswered name, and
    /// whether the client is known.
    fn observe(s: &Snapshot) -> Vec<String> {
        let mut clients: Vec<IpAddr> = (0..16)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i)))
            .collect();
        clients.extend((0..4).map(|i| format!("fd00::{i}").parse::<IpAddr>().unwrap()));
        let locals: Vec<Option<IpAddr>> = std::iter::once(None)
            .chain((0..2).map(|i| Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 9, i, 1)))))
            .collect();
        let mut names: Vec<String> = Vec::new();
        for n in NAMES
            .iter()
            .chain(&["l1", "l2", "tasks.web", "nothing", "y"])
        {
            names.push(n.to_string());
            names.push(format!("{n}.docker"));
            for net in NETS {
                names.push(format!("{n}.{net}"));
                names.push(format!("{n}.{net}.docker"));
            }
        }
        for net in NETS {
            names.push(net.to_string());
            names.push(format!("{net}.docker"));
        }
        for i in 0..16 {
            names.push(format!("{i}.0.0.10.in-addr.arpa"));
        }
        names.push("0.0.10.in-addr.arpa".into());
        let mut out = vec![format!("views in use: {}", s.view_count())];
        for client in &clients {
            for local in &locals {
                let v = s.view_for(*client, *local);
                let spec: Vec<&str> = v
                    .networks
                    .iter()
                    .map(|&(n, _)| s.networks[n as usize].name.as_str())
                    .collect();
                let mut line = format!(
                    "{client} via {local:?}: {spec:?} {:?} known={} servers={:?}",
                    v.networks.iter().map(|n| n.1).collect::<Vec<_>>(),
                    s.is_known_container(*client),
                    s.client_servers(*client),
                );
                for name in &names {
                    let k = key(name);
                    use std::fmt::Write;
                    let _ = write!(line, " {name}=");
                    for qtype in [TYPE_A, TYPE_PTR] {
                        let _ = match s.resolve(v, &k, qtype, CLASS_IN) {
                            Resolution::Answer { set, .. } => write!(line, "{:x?}/", set.bytes()),
                            Resolution::Forward => {
                                write!(line, "fwd {:?}/", s.unanswered(*client, v, &k))
                            }
                            other => write!(line, "{other:?}/"),
                        };
                    }
                }
                out.push(line);
            }
        }
        out
    }

    /// The two settings the seeded rebuild tests run under: a domain; a host view over two
    /// networks that sees every qualified name, with Docker's resolver as the default upstream.
    fn seeded_settings() -> [BuildSettings; 2] {
        [
            BuildSettings {
                domain: Some("docker".into()),
                ..Default::default()
            },
            BuildSettings {
                host_view: Some(vec!["alpha".into(), "internal".into()]),
                host_sees_all_qualified: true,
                default_upstreams: vec!["127.0.0.11:53".parse().unwrap()],
                ..Default::default()
            },
        ]
    }

    /// Seed `seed`'s start: its generator, one of the two settings, and a catalog with a
    /// random subset of the test networks.
    fn seeded_world(seed: u64, settings: &[BuildSettings; 2]) -> (Rng, BuildSettings, Catalog) {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut cat = Catalog::default();
        for n in NETS {
            if rng.chance(80) {
                cat.networks.insert(n.into(), random_network(&mut rng, n));
            }
        }
        (rng, settings[seed as usize % 2].clone(), cat)
    }

    /// The rule of the incremental rebuild: after any sequence of changes, `rebuild` (from the
    /// previous snapshot, views patched, tables and client views reused) gives exactly what
    /// `build` gives from scratch, for every client and every name.
    #[test]
    fn random_change_sequences_rebuild_exactly_what_build_gives() {
        let settings_list = seeded_settings();
        for seed in 1..=12u64 {
            let (mut rng, mut settings, mut cat) = seeded_world(seed, &settings_list);
            let mut prev_cat = cat.clone();
            let mut prev = Snapshot::build(&cat, settings.clone());
            for step in 0..30 {
                for _ in 0..1 + rng.below(2) {
                    random_change(&mut rng, &mut cat);
                }
                if rng.chance(3) {
                    settings = settings_list[rng.below(2)].clone();
                }
                let fresh = Snapshot::build(&cat, settings.clone());
                let inc = Snapshot::rebuild(&cat, settings.clone(), &prev, &prev_cat);
                let (f, i) = (observe(&fresh), observe(&inc));
                if f != i {
                    for (a, b) in f.iter().zip(&i) {
                        assert_eq!(a, b, "seed {seed}, step {step}");
                    }
                }
                assert_eq!(dump(&fresh), dump(&inc), "seed {seed}, step {step}");
                if fresh.names_everywhere.is_some() {
                    assert_eq!(names_dump(&fresh), names_dump(&inc), "seed {seed}");
                }
                prev = inc;
                prev_cat = cat.clone();
            }
        }
    }

    /// The double buffer: rebuilding with the snapshot before the previous one as the spare
    /// (its maps patched in place instead of copies of the previous ones) gives exactly what a
    /// fresh build gives, over seeded random changes, including steps where no spare is at
    /// hand (a reader held it) so the next spare is not the one the previous was patched from.
    #[test]
    fn double_buffered_rebuilds_give_what_build_gives() {
        let settings_list = seeded_settings();
        let host_map = |s: &Snapshot| match &s.host_view().names {
            ViewNames::Merged(m) => Some(Arc::as_ptr(m)),
            ViewNames::One(_) => None,
        };
        let mut reused = 0;
        for seed in 1..=16u64 {
            let (mut rng, mut settings, mut cat) = seeded_world(seed, &settings_list);
            let mut prev_cat = cat.clone();
            let mut prev = Snapshot::build(&cat, settings.clone());
            let mut spare: Option<Snapshot> = None;
            for step in 0..40 {
                for _ in 0..1 + rng.below(2) {
                    random_change(&mut rng, &mut cat);
                }
                if rng.chance(3) {
                    settings = settings_list[rng.below(2)].clone();
                }
                let fresh = Snapshot::build(&cat, settings.clone());
                let inc = match spare.take().filter(|_| !rng.chance(15)) {
                    Some(sp) => {
                        let before = host_map(&sp);
                        let inc =
                            Snapshot::rebuild_reusing(&cat, settings.clone(), &prev, &prev_cat, sp);
                        if before.is_some() && before == host_map(&inc) {
                            reused += 1;
                        }
                        inc
                    }
                    None => Snapshot::rebuild(&cat, settings.clone(), &prev, &prev_cat),
                };
                let (f, i) = (observe(&fresh), observe(&inc));
                if f != i {
                    for (a, b) in f.iter().zip(&i) {
                        assert_eq!(a, b, "seed {seed}, step {step}");
                    }
                }
                assert_eq!(dump(&fresh), dump(&inc), "seed {seed}, step {step}");
                assert_eq!(
                    routes(&fresh),
                    routes(&inc),
                    "client views, seed {seed}, step {step}"
                );
                spare = Some(std::mem::replace(&mut prev, inc));
                prev_cat = cat.clone();
            }
        }
        assert!(
            reused > 20,
            "the spare's host map was patched in place {reused} times"
        );
    }

    /// Each client address's view, as the networks it shows.
    fn routes(s: &Snapshot) -> BTreeMap<IpAddr, Vec<(String, bool)>> {
        s.routing
            .client_views
            .iter()
            .map(|(ip, &vid)| {
                let v = &s.routing.views[vid as usize];
                let nets = v
                    .networks
                    .iter()
                    .map(|&(n, plain)| (s.networks[n as usize].name.clone(), plain))
                    .collect();
                (*ip, nets)
            })
            .collect()
    }

    /// A change of one container patches the views instead of assembling them again: the
    /// client views of unchanged containers keep their numbers, and a view over an unchanged
    /// network is shared, not rebuilt.
    #[test]
    fn one_change_patches_the_views() {
        let mut cat = catalog();
        cat.networks.insert("other".into(), net("other", false));
        cat.containers.insert(
            "far".into(),
            Arc::new(ctr("far", "other", "10.4.0.7", &[], Health::None)),
        );
        // On two networks the change does not touch: a merged view of its own.
        let mut both = ctr("both", "other", "10.4.0.8", &[], Health::None);
        both.endpoints.push(Endpoint {
            network: "priv".into(),
            ipv4: vec!["10.1.0.8".parse().unwrap()],
            ipv6: vec![],
            aliases: vec![],
            links: vec![],
        });
        cat.containers.insert("both".into(), Arc::new(both));
        let settings = BuildSettings::default();
        let prev = Snapshot::build(&cat, settings.clone());
        let prev_cat = cat.clone();
        Arc::make_mut(cat.containers.get_mut("api-1").unwrap()).endpoints[0].aliases =
            vec!["renamed".into()];
        let inc = Snapshot::rebuild(&cat, settings, &prev, &prev_cat);
        assert_eq!(
            inc.routing.client_views, prev.routing.client_views,
            "no address moved"
        );
        let far = inc.routing.client_views[&"10.4.0.7".parse::<IpAddr>().unwrap()];
        assert!(matches!(
            inc.routing.views[far as usize].names,
            ViewNames::One(_)
        ));
        let both = inc.routing.client_views[&"10.4.0.8".parse::<IpAddr>().unwrap()] as usize;
        match (
            &prev.routing.views[both].names,
            &inc.routing.views[both].names,
        ) {
            (ViewNames::Merged(a), ViewNames::Merged(b)) => {
                assert!(
                    Arc::ptr_eq(a, b),
                    "a view over unchanged networks is shared"
                )
            }
            other => panic!("{other:?}"),
        }
        // The host view (demo, other, priv merged) was patched: it answers the new alias.
        assert!(a_of(&inc, inc.host_view(), "renamed").is_some());
        assert!(a_of(&prev, prev.host_view(), "renamed").is_none());
    }
}
