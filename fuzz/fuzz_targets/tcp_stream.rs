//! Fuzzes a TCP byte stream the way `dns/tcp.rs` consumes it: 2-byte length, message, repeat;
//! a zero length or a short message ends the connection. Every reply must fit one frame.
#![no_main]
use dockns::dns::answer::{handle, Action};
use dockns::model::Snapshot;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn snap() -> &'static Snapshot {
    static S: OnceLock<Snapshot> = OnceLock::new();
    S.get_or_init(|| {
        let cfg = dockns::config::Config::from_toml(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ndomain = \"docker\"\n[upstream]\nservers = [\"127.0.0.1:9\"]\n[[network]]\nname = \"demo\"\n[[network.container]]\nname = \"db\"\nipv4 = [\"10.89.0.2\", \"10.89.0.3\"]\n",
            &Default::default(),
        )
        .expect("fuzz config");
        Snapshot::build(&cfg.static_catalog, cfg.build.clone())
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = vec![0u8; 65535 + 2];
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if len == 0 || rest.len() < 2 + len {
            break;
        }
        let msg = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let client = "127.0.0.1".parse().unwrap();
        if let Action::Reply(n, _) = handle(snap(), client, None, msg, &mut out[2..], true) {
            assert!((12..=65535).contains(&n));
        }
    }
});
