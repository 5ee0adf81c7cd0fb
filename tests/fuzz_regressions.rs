//! The fuzz targets' checks (`tests/kit/fuzz.rs`, the same functions `fuzz/fuzz_targets/*.rs`
//! call) under `cargo test`: every seed in `fuzz/seeds/<target>/`, every input that once crashed
//! a target (`tests/fuzz_regressions/<target>-<what>.bin`), and a bounded, deterministic run of
//! mutated seeds per target, so the properties hold on every build even where cargo-fuzz is
//! not installed (`fuzz/run.sh` runs the real fuzzers).

use dockns::config::{Config, Overrides};
use dockns::dns::answer::{handle, Action};
use dockns::model::Snapshot;

mod kit;

use kit::fuzz::TARGETS;

/// Mutated inputs per target and test run (bounded: a few seconds in a debug build).
const MUTATIONS: usize = 20_000;

fn snapshot() -> Snapshot {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ndomain = \"docker\"\n[upstream]\nservers = [\"127.0.0.1:9\"]\n{}",
        kit::NETWORKS
    );
    let cfg = Config::from_toml(&text, &Overrides::default()).expect("config");
    Snapshot::build(&cfg.static_catalog, cfg.build.clone())
}

/// Runs `target`'s checks on `data`, naming the input when they fail.
fn replay(target: &str, what: &str, data: &[u8]) {
    let (_, check) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    if let Err(e) = std::panic::catch_unwind(|| check(data)) {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!(
            "{target} fails on {what} ({} bytes {data:02x?}): {msg}",
            data.len()
        );
    }
}

/// The files of a directory, sorted by name (empty when it does not exist).
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            let data = std::fs::read(e.path()).expect("read input");
            (e.file_name().to_string_lossy().into_owned(), data)
        })
        .collect();
    out.sort();
    out
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    files(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target),
    )
}

#[test]
fn replay_crashes_of_every_target() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut n = 0;
    for (name, data) in files(&dir) {
        let target = TARGETS
            .iter()
            .map(|(t, _)| *t)
            .find(|t| name.starts_with(&format!("{t}-")))
            .unwrap_or_else(|| panic!("{name}: not named <target>-<what>.bin"));
        replay(target, &name, &data);
        n += 1;
    }
    assert!(n >= 2, "regression inputs found: {n}");
}

#[test]
fn every_seed_passes_its_target() {
    for (target, _) in TARGETS {
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "fuzz/seeds/{target} has seeds");
        for (name, data) in &seeds {
            replay(target, &format!("seed {name}"), data);
        }
    }
}

/// xorshift64*: deterministic, so a failure names an input that fails again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four random edits of `seed`: flip a bit, set a byte to an edge value, insert, delete
/// or duplicate a run, or truncate.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(d.len() + 1);
        match rng.below(6) {
            0 if at < d.len() => d[at] ^= 1 << rng.below(8),
            1 if at < d.len() => d[at] = [0, 1, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xff][rng.below(8)],
            2 => d.insert(at, rng.next() as u8),
            3 if at < d.len() => {
                let end = (at + 1 + rng.below(8)).min(d.len());
                d.drain(at..end);
            }
            4 if at < d.len() => {
                let end = (at + 1 + rng.below(16)).min(d.len());
                let run = d[at..end].to_vec();
                d.splice(at..at, run);
            }
            _ => d.truncate(at),
        }
    }
    d
}

#[test]
fn mutated_seeds_pass_every_target() {
    for (i, (target, _)) in TARGETS.iter().enumerate() {
        let seeds = seeds(target);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
        for n in 0..MUTATIONS {
            let (name, seed) = &seeds[rng.below(seeds.len())];
            let data = mutate(&mut rng, seed);
            replay(target, &format!("mutation {n} of seed {name}"), &data);
        }
    }
}

#[test]
fn client_subnet_options_agree_on_both_paths() {
    // A well-formed ECS option (IPv4 /24) and a malformed one (empty).
    let q = |opt: &[u8]| {
        let mut p = kit::query(9, "db", 1, false);
        p[11] = 1;
        p.extend_from_slice(&[0, 0, 41, 4, 0xD0, 0, 0, 0, 0]);
        p.extend_from_slice(&(opt.len() as u16).to_be_bytes());
        p.extend_from_slice(opt);
        p
    };
    let good = q(&[0, 8, 0, 7, 0, 1, 24, 0, 10, 89, 0]);
    let bad = q(&[0, 8, 0, 0]);
    let cookie = q(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    for (what, pkt, rcode) in [
        ("valid ECS", &good, 0),
        ("empty ECS", &bad, 1),
        ("cookie", &cookie, 0),
    ] {
        let mut data = vec![0u8];
        data.extend_from_slice(pkt);
        replay("answer", what, &data);
        let snap = snapshot();
        let mut out = vec![0u8; 1232];
        let Action::Reply(n, _) = handle(
            &snap,
            "127.0.0.1".parse().unwrap(),
            None,
            pkt,
            &mut out,
            false,
        ) else {
            panic!("{what}: no reply")
        };
        assert_eq!(kit::rcode(&out[..n]), rcode, "{what}");
    }
}
