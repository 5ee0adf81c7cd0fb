//! Publishing: merges the catalogs of all sources and swaps in a freshly compiled snapshot.
//!
//! Sources (the static config, the Docker watcher) hand the publisher their whole catalog, as an
//! `Arc` (containers are shared between catalogs, so handing one over copies nothing). The
//! publisher merges the sources and compiles the result on its own thread, `dockns-publish`,
//! then atomically replaces the snapshot that the listeners read through a [`SnapshotHandle`]:
//! compiling never runs on a tokio worker nor on the query path, and readers keep the old
//! snapshot until they load the next one. A catalog handed over while a compile runs waits for
//! it; several handed over meanwhile are compiled once, from the newest (each source's latest
//! catalog is what counts, never a queue of them).
//!
//! [`Publisher::submit_source`] hands a catalog over and returns at once with a ticket (the
//! Docker watcher: it keeps applying events while the compile runs); [`Publisher::set_source`]
//! and the other setters wait until their change is published (the static source, reloads,
//! tests), and [`Publisher::wait_published`] waits for a ticket. A change is visible as soon as
//! its compile ends.
//!
//! Builds are incremental: the publishing thread keeps the merged catalog the current snapshot
//! came from, and the next build reuses (shares) the compiled table of every network whose
//! containers and services are unchanged, so one container change recompiles one network's
//! table, not ten thousand containers' worth (see [`Snapshot::rebuild`]). The snapshot a publish
//! replaces is kept as the spare half of a double buffer: the next compile, once no reader
//! holds it, patches its big maps (the host view's names over every network, the client
//! addresses) in place instead of copying the current ones ([`Snapshot::rebuild_reusing`]),
//! and frees the rest; so the publisher holds two snapshots, sharing their tables. The old
//! catalog is freed on that thread too. Scrapes (`/metrics`, `/v1/records`) read the merged
//! catalog through [`Publisher::catalog`], an `Arc` loaded without a lock.

use super::{BuildSettings, Catalog, Snapshot};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Shared, lock-free handle to the current snapshot.
pub type SnapshotHandle = Arc<ArcSwap<Snapshot>>;

/// What the sources asked for; guarded by [`Shared::requests`].
struct Requests {
    sources: BTreeMap<&'static str, Arc<Catalog>>,
    settings: BuildSettings,
    /// Number of changes asked for so far (the ticket of the latest).
    asked: u64,
    /// Number of changes published so far: every ticket up to it is visible.
    published: u64,
    /// The publisher is gone: the thread ends.
    shutdown: bool,
}

/// What the publishing thread and the [`Publisher`] share.
struct Shared {
    handle: SnapshotHandle,
    /// The merged catalog the current snapshot was compiled from.
    catalog: ArcSwap<Catalog>,
    /// The snapshot the current one replaced: the spare half of the double buffer the next
    /// compile patches in place once no reader holds it (see [`Snapshot::rebuild_reusing`]).
    /// Only touched under `compiling`.
    spare: Mutex<Option<Arc<Snapshot>>>,
    requests: Mutex<Requests>,
    /// Signalled on every request (wakes the thread) and every publish (wakes the waiters).
    changed: Condvar,
    /// Held while compiling: one compile at a time, even without the thread.
    compiling: Mutex<()>,
    /// The number of changes published, for async waiters ([`Publisher::published`]).
    published: tokio::sync::watch::Sender<u64>,
    generation: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Requests> {
        // Every write replaces whole values, and a compile never runs under this lock:
        // recover from poisoning.
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Owns the sources' catalogs, the publishing thread and the current snapshot. See the module
/// docs.
pub struct Publisher {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    /// A publisher with no source yet (an empty snapshot that forwards everything), and its
    /// publishing thread.
    pub fn new(settings: BuildSettings) -> Arc<Publisher> {
        let snapshot = Snapshot::empty(settings.clone());
        let shared = Arc::new(Shared {
            handle: Arc::new(ArcSwap::from_pointee(snapshot)),
            catalog: ArcSwap::from_pointee(Catalog::default()),
            spare: Mutex::new(None),
            requests: Mutex::new(Requests {
                sources: BTreeMap::new(),
                settings,
                asked: 0,
                published: 0,
                shutdown: false,
            }),
            changed: Condvar::new(),
            compiling: Mutex::new(()),
            published: tokio::sync::watch::Sender::new(0),
            generation: AtomicU64::new(0),
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("dockns-publish".into())
            .spawn(move || run(&for_thread));
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                // Without the thread every change is compiled by the caller (see `request`).
                tracing::error!(
                    "cannot start the publishing thread ({e}); compiling on the callers' threads"
                );
                None
            }
        };
        Arc::new(Publisher { shared, thread })
    }

    /// The handle listeners read from.
    pub fn handle(&self) -> SnapshotHandle {
        self.shared.handle.clone()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.handle.load_full()
    }

    /// Replaces one source's catalog and waits until the result is published.
    pub fn set_source(&self, source: &'static str, catalog: impl Into<Arc<Catalog>>) {
        let ticket = self.submit_source(source, catalog.into());
        self.wait(ticket, None);
    }

    /// Replaces one source's catalog and returns at once, with the ticket of the change (see
    /// [`Publisher::wait_published`]); the publishing thread compiles it.
    pub fn submit_source(&self, source: &'static str, catalog: Arc<Catalog>) -> u64 {
        self.request(|r| {
            r.sources.insert(source, catalog);
            true
        })
    }

    /// Removes a source entirely and waits until the result is published.
    pub fn remove_source(&self, source: &'static str) {
        let ticket = self.request(|r| r.sources.remove(source).is_some());
        self.wait(ticket, None);
    }

    /// Changes the build settings (e.g. on reload) and waits until the result is published.
    pub fn set_settings(&self, settings: BuildSettings) {
        let ticket = self.request(|r| {
            r.settings = settings;
            true
        });
        self.wait(ticket, None);
    }

    /// Whether the change with `ticket` (or a later one) is published, waiting for it at most
    /// `timeout`.
    pub fn wait_published(&self, ticket: u64, timeout: Duration) -> bool {
        self.wait(ticket, Some(timeout))
    }

    /// Waits, without blocking the thread (for async callers such as the Docker watcher), until
    /// the change with `ticket` (or a later one) is published.
    pub async fn published(&self, ticket: u64) {
        let mut rx = self.shared.published.subscribe();
        // An error means the publisher is gone: nothing left to wait for.
        let _ = rx.wait_for(|&n| n >= ticket).await;
    }

    /// The merged catalog of every source, as the current snapshot was built from (shared,
    /// never copied; no lock).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.shared.catalog.load_full()
    }

    /// One source's latest catalog, if it has handed one over.
    pub fn source(&self, source: &'static str) -> Option<Arc<Catalog>> {
        self.shared.lock().sources.get(source).cloned()
    }

    /// Applies `change` to the requests; when it changed something, wakes the thread and
    /// returns the change's ticket (else the latest ticket).
    fn request(&self, change: impl FnOnce(&mut Requests) -> bool) -> u64 {
        let mut r = self.shared.lock();
        if change(&mut r) {
            r.asked += 1;
        }
        let ticket = r.asked;
        if self.thread.is_none() {
            // No publishing thread: compile here.
            drop(r);
            publish_pending(&self.shared);
            return ticket;
        }
        self.shared.changed.notify_all();
        ticket
    }

    /// Waits until `ticket` is published (or `timeout` passed): whether it is.
    fn wait(&self, ticket: u64, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut r = self.shared.lock();
        while r.published < ticket {
            r = match deadline {
                None => self
                    .shared
                    .changed
                    .wait(r)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.shared
                        .changed
                        .wait_timeout(r, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        true
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The publishing thread: compiles whenever something was asked that is not published yet.
fn run(shared: &Shared) {
    loop {
        {
            let mut r = shared.lock();
            while r.published == r.asked && !r.shutdown {
                r = shared.changed.wait(r).unwrap_or_else(|e| e.into_inner());
            }
            if r.shutdown {
                return;
            }
        }
        publish_pending(shared);
    }
}

/// Compiles and publishes the sources as they are now (every request asked so far), then
/// wakes the waiters. A panic in the compile is logged and leaves the previous snapshot in
/// place; the waiters are released either way.
fn publish_pending(shared: &Shared) {
    let _one = shared.compiling.lock().unwrap_or_else(|e| e.into_inner());
    let (sources, settings, ticket) = {
        let r = shared.lock();
        (r.sources.clone(), r.settings.clone(), r.asked)
    };
    let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        publish(shared, &sources, settings)
    }));
    if compiled.is_err() {
        tracing::error!("compiling the tables failed (a bug); still serving the previous ones");
    }
    let mut r = shared.lock();
    r.published = r.published.max(ticket);
    let published = r.published;
    drop(r);
    shared.changed.notify_all();
    shared.published.send_replace(published);
}

/// Merges the sources, compiles incrementally from the current snapshot and swaps the result
/// in. The old catalog is freed after the swap and the old snapshot kept as the spare: a
/// change is visible as soon as it is compiled.
fn publish(
    shared: &Shared,
    sources: &BTreeMap<&'static str, Arc<Catalog>>,
    settings: BuildSettings,
) {
    let started = Instant::now();
    let merged = merge(sources);
    let prev = shared.handle.load_full();
    let built_from = shared.catalog.load_full();
    // The spare, if no reader holds it any more (a reader that loaded it holds a counted
    // reference: arc-swap pays its debts when a snapshot is replaced).
    let spare = shared
        .spare
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .and_then(|s| Arc::try_unwrap(s).ok());
    let mut snapshot = match spare {
        Some(spare) => Snapshot::rebuild_reusing(&merged, settings, &prev, &built_from, spare),
        None => Snapshot::rebuild(&merged, settings, &prev, &built_from),
    };
    snapshot.set_serial(next_serial(prev.serial(), unix_seconds()));
    snapshot.generation = shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
    let generation = snapshot.generation;
    let new = Arc::new(snapshot);
    shared.handle.store(new.clone());
    shared.catalog.store(merged);
    // (Counting the entries reads every network's table: only when someone reads it.)
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(
            generation,
            entries = new.entry_count(),
            build_us = started.elapsed().as_micros() as u64,
            "snapshot published"
        );
    }
    log_network_changes(&prev, &new);
    drop(built_from);
    // The replaced snapshot becomes the spare only if the next compile can use it; else it
    // is freed here, as is a snapshot of a world that changed networks.
    let keep = new.can_spare(&prev).then_some(prev);
    *shared.spare.lock().unwrap_or_else(|e| e.into_inner()) = keep;
}

/// Seconds since the Unix epoch, truncated to 32 bits (0 if the clock is before 1970).
fn unix_seconds() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// The SOA serial of the next published snapshot: the time in seconds when that is larger
/// than the previous serial in RFC 1982 arithmetic (so serials survive a restart), else the
/// previous one plus one. Every publish changes it.
fn next_serial(prev: u32, now: u32) -> u32 {
    if (now.wrapping_sub(prev) as i32) > 0 {
        now
    } else {
        prev.wrapping_add(1)
    }
}

/// One log line per network that appeared or went away between two snapshots. Linear in the
/// number of networks (both lists are in name order), and nothing to do when they are the same.
fn log_network_changes(old: &Snapshot, new: &Snapshot) {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let (before, after) = (old.networks(), new.networks());
    if before.len() == after.len() && before.iter().zip(after).all(|(a, b)| a.name == b.name) {
        return;
    }
    let (mut a, mut b) = (before.iter().peekable(), after.iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => Less,
            (None, Some(_)) => Greater,
            (Some(x), Some(y)) => x.name.cmp(&y.name),
        };
        match order {
            Less => {
                if let Some(n) = a.next() {
                    tracing::info!(network = %n.name, "network removed, no longer served");
                }
            }
            Greater => {
                if let Some(n) = b.next() {
                    tracing::info!(network = %n.name, "serving network");
                }
            }
            Equal => {
                a.next();
                b.next();
            }
        }
    }
}

/// Merges catalogs: the first source (in name order) that defines a network wins; containers
/// are kept apart by prefixing their keys with the source name. Empty sources (the static
/// source of a Docker-only setup) are left out, so that a single source with content is used as
/// it is, shared: no key is rewritten and its containers keep the identity the incremental
/// compile recognises them by. The order is the same either way (source, then key).
fn merge(sources: &BTreeMap<&'static str, Arc<Catalog>>) -> Arc<Catalog> {
    let is_empty =
        |c: &Catalog| c.networks.is_empty() && c.containers.is_empty() && c.services.is_empty();
    let mut filled = sources.iter().filter(|(_, c)| !is_empty(c));
    match (filled.next(), filled.next()) {
        (None, _) => return Arc::new(Catalog::default()),
        (Some((_, only)), None) => return only.clone(),
        _ => {}
    }
    let mut out = Catalog::default();
    for (name, cat) in sources {
        for (k, n) in &cat.networks {
            out.networks.entry(k.clone()).or_insert_with(|| n.clone());
        }
        for (k, c) in &cat.containers {
            out.containers
                .insert(Arc::from(format!("{name}/{k}")), c.clone());
        }
        out.services.extend(cat.services.iter().cloned());
    }
    Arc::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_is_the_time_and_grows_on_every_publish() {
        assert_eq!(next_serial(1, 1_800_000_000), 1_800_000_000);
        assert_eq!(next_serial(1_800_000_000, 1_800_000_000), 1_800_000_001);
        // A serial ahead of the clock (many changes in one second) keeps counting.
        assert_eq!(next_serial(1_800_000_005, 1_800_000_001), 1_800_000_006);
        // RFC 1982 wrap-around.
        assert_eq!(next_serial(u32::MAX, 3), 3);

        let p = Publisher::new(BuildSettings {
            domain: Some("docker".into()),
            ..Default::default()
        });
        let mut last = p.snapshot().serial();
        for _ in 0..3 {
            p.set_source("static", Catalog::default());
            let now = p.snapshot().serial();
            assert!((now.wrapping_sub(last) as i32) > 0, "{last} -> {now}");
            last = now;
        }
    }

    /// The double buffer's spare is kept only while the next compile can use it: after a
    /// container change (views patched) the replaced snapshot stays; after a network change
    /// (views assembled afresh) it is freed at once, not held with the old world in it.
    #[test]
    fn spare_kept_only_for_patched_views() {
        use crate::model::{Container, Endpoint, Health, Network};
        let net = |name: &str| Network {
            name: name.into(),
            id: String::new(),
            internal: false,
            listen_addrs: vec![],
            subnets: vec![],
        };
        let ctr = |name: &str, ip: &str| {
            Arc::new(Container {
                id: String::new(),
                name: name.into(),
                hostname: None,
                health: Health::None,
                extra_names: vec![],
                endpoints: vec![Endpoint {
                    network: "app".into(),
                    ipv4: vec![ip.parse().unwrap()],
                    ipv6: vec![],
                    aliases: vec![],
                    links: vec![],
                }],
                dns: vec![],
                anonymous: false,
            })
        };
        let p = Publisher::new(BuildSettings::default());
        let mut cat = Catalog::default();
        cat.networks.insert("app".into(), net("app"));
        cat.networks.insert("db".into(), net("db"));
        cat.containers.insert("a".into(), ctr("a", "10.0.0.2"));
        p.set_source("static", cat.clone());
        let spare = |p: &Publisher| p.shared.spare.lock().unwrap().is_some();
        cat.containers.insert("b".into(), ctr("b", "10.0.0.3"));
        p.set_source("static", cat.clone());
        assert!(
            spare(&p),
            "a container change keeps the replaced snapshot as the spare"
        );
        cat.networks.remove("db");
        p.set_source("static", cat.clone());
        assert!(!spare(&p), "a network change frees it");
        cat.containers.remove("a");
        p.set_source("static", cat);
        assert!(spare(&p));
    }
}
