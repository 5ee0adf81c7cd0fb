//! Inputs that once crashed a fuzz target (`fuzz/`), replayed with the same checks the target
//! makes. Files in `tests/fuzz_regressions/` are named `<target>-<what>.bin`; their first byte is
//! the target's selector byte (transport and client), the rest the packet.

use dockns::config::{Config, Overrides};
use dockns::dns::answer::{handle, handle_slow, Action};
use dockns::model::Snapshot;
use std::net::IpAddr;

mod kit;

fn snapshots() -> (Snapshot, Snapshot) {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ndomain = \"docker\"\n[upstream]\nservers = [\"127.0.0.1:9\"]\n{}",
        kit::NETWORKS
    );
    let cfg = Config::from_toml(&text, &Overrides::default()).expect("config");
    (
        Snapshot::build(&cfg.static_catalog, cfg.build.clone()),
        Snapshot::build(&cfg.static_catalog, cfg.build.clone()),
    )
}

/// The `answer` target's checks: both paths agree, replies are well-formed.
fn answer_target(data: &[u8]) -> Result<(), String> {
    let Some((&sel, pkt)) = data.split_first() else {
        return Ok(());
    };
    let tcp = sel & 1 != 0;
    let client: IpAddr = match (sel >> 1) & 3 {
        0 => "127.0.0.1".parse().unwrap(),
        1 => "10.89.0.2".parse().unwrap(),
        2 => "10.90.0.2".parse().unwrap(),
        _ => "::1".parse().unwrap(),
    };
    let (fast, slow) = snapshots();
    let mut a = vec![0u8; 65535];
    let mut b = vec![0u8; 65535];
    let fa = handle(&fast, client, None, pkt, &mut a, tcp);
    let sa = handle_slow(&slow, client, None, pkt, &mut b, tcp);
    if let Action::Reply(n, _) = fa {
        if n < 12 || a[..2] != pkt[..2] || a[2] & 0x80 == 0 {
            return Err(format!("malformed reply {:?}", &a[..n]));
        }
    }
    match (fa, sa) {
        (Action::Reply(n, _), Action::Reply(m, _)) if a[..n] == b[..m] => Ok(()),
        (x, y) if x == y && !matches!(x, Action::Reply(..)) => Ok(()),
        (x, y) => Err(format!("fast {x:?} != slow {y:?}")),
    }
}

#[test]
fn replay_answer_crashes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz_regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("answer-") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        answer_target(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        n += 1;
    }
    assert!(n >= 2, "regression inputs found: {n}");
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
        answer_target(&data).unwrap_or_else(|e| panic!("{what}: {e}"));
        let (snap, _) = snapshots();
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
