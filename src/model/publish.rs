//! Publishing: merges the catalogs of all sources and swaps in a freshly compiled snapshot.
//!
//! Sources (the static config, the Docker watcher) call [`Publisher::set_source`] with their
//! whole catalog; the publisher merges, compiles and atomically replaces the snapshot that the
//! listeners read through a [`SnapshotHandle`]. Compilation happens on the caller's thread, never
//! on the query path, and readers keep the old snapshot until they load the next one.
//!
//! Builds are incremental: the publisher keeps the merged catalog the current snapshot came
//! from, and the next build reuses (shares) the compiled table of every network whose
//! containers and services are unchanged, so one container change recompiles one network's
//! table, not ten thousand containers' worth. Only the views are reassembled every time.

use super::{BuildSettings, Catalog, Snapshot};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Shared, lock-free handle to the current snapshot.
pub type SnapshotHandle = Arc<ArcSwap<Snapshot>>;

struct State {
    sources: BTreeMap<&'static str, Arc<Catalog>>,
    settings: BuildSettings,
    /// The merged catalog the current snapshot was compiled from: the next build reuses the
    /// tables of every network whose inputs it shares with this one.
    built_from: Arc<Catalog>,
}

/// Owns the sources' catalogs and the current snapshot. See the module docs.
pub struct Publisher {
    handle: SnapshotHandle,
    state: Mutex<State>,
    generation: AtomicU64,
}

impl Publisher {
    /// A publisher with no source yet (an empty snapshot that forwards everything).
    pub fn new(settings: BuildSettings) -> Arc<Publisher> {
        let snapshot = Snapshot::empty(settings.clone());
        Arc::new(Publisher {
            handle: Arc::new(ArcSwap::from_pointee(snapshot)),
            state: Mutex::new(State {
                sources: BTreeMap::new(),
                settings,
                built_from: Arc::new(Catalog::default()),
            }),
            generation: AtomicU64::new(0),
        })
    }

    /// The handle listeners read from.
    pub fn handle(&self) -> SnapshotHandle {
        self.handle.clone()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.handle.load_full()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-written in a way that
        // matters (every write replaces a whole value), so recover from poisoning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces one source's catalog and publishes the result.
    pub fn set_source(&self, source: &'static str, catalog: Catalog) {
        let mut st = self.lock();
        st.sources.insert(source, Arc::new(catalog));
        self.publish(&mut st);
    }

    /// Removes a source entirely and publishes the result.
    pub fn remove_source(&self, source: &'static str) {
        let mut st = self.lock();
        if st.sources.remove(source).is_some() {
            self.publish(&mut st);
        }
    }

    /// Changes the build settings (e.g. on reload) and publishes the result.
    pub fn set_settings(&self, settings: BuildSettings) {
        let mut st = self.lock();
        st.settings = settings;
        self.publish(&mut st);
    }

    /// The merged catalog of every source, as the current snapshot was built from.
    pub fn catalog(&self) -> Catalog {
        Catalog::clone(&self.lock().built_from)
    }

    /// One source's catalog, if it has published one.
    pub fn source(&self, source: &'static str) -> Option<Catalog> {
        self.lock().sources.get(source).map(|c| Catalog::clone(c))
    }

    fn publish(&self, st: &mut State) {
        let started = std::time::Instant::now();
        let merged = merge(&st.sources);
        let prev = self.handle.load();
        let mut snapshot = Snapshot::rebuild(&merged, st.settings.clone(), &prev, &st.built_from);
        snapshot.set_serial(next_serial(prev.serial(), unix_seconds()));
        drop(prev);
        // The old catalog and snapshot are freed after the swap: a change is visible as soon
        // as it is compiled.
        let old_catalog = std::mem::replace(&mut st.built_from, merged);
        snapshot.generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (generation, entries) = (snapshot.generation, snapshot.entry_count());
        let old = self.handle.swap(Arc::new(snapshot));
        tracing::debug!(
            generation,
            entries,
            build_us = started.elapsed().as_micros() as u64,
            "snapshot published"
        );
        log_network_changes(&old, &self.handle.load());
        drop(old_catalog);
    }
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

/// One log line per network that appeared or went away between two snapshots.
fn log_network_changes(old: &Snapshot, new: &Snapshot) {
    let names =
        |s: &Snapshot| -> Vec<String> { s.networks().iter().map(|n| n.name.clone()).collect() };
    let (before, after) = (names(old), names(new));
    for n in after.iter().filter(|n| !before.contains(n)) {
        tracing::info!(network = %n, "serving network");
    }
    for n in before.iter().filter(|n| !after.contains(n)) {
        tracing::info!(network = %n, "network removed, no longer served");
    }
}

/// Merges catalogs: the first source (in name order) that defines a network wins; containers
/// are kept apart by prefixing their keys with the source name.
fn merge(sources: &BTreeMap<&'static str, Arc<Catalog>>) -> Arc<Catalog> {
    if sources.len() == 1 {
        if let Some(c) = sources.values().next() {
            return c.clone();
        }
    }
    let mut out = Catalog::default();
    for (name, cat) in sources {
        for (k, n) in &cat.networks {
            out.networks.entry(k.clone()).or_insert_with(|| n.clone());
        }
        for (k, c) in &cat.containers {
            out.containers.insert(format!("{name}/{k}"), c.clone());
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
}
