//! Fuzzes `answer::handle` (fast path with slow fallback) and `answer::handle_slow` on the same
//! packet against two identical snapshots: never panics, every reply is a well-formed response
//! header within the transport's size limit, and the two paths give identical bytes.
#![no_main]
use dockns::dns::answer::{handle, handle_slow, Action};
use dockns::model::Snapshot;
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::sync::OnceLock;

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:0"]
domain = "docker"
[upstream]
servers = ["127.0.0.1:9"]
[[network]]
name = "demo"
subnet = "10.89.0.0/24"
[[network.container]]
name = "db"
ipv4 = ["10.89.0.2"]
ipv6 = ["fd00:89::2"]
aliases = ["postgres"]
[[network.container]]
name = "api-1"
ipv4 = ["10.89.0.11"]
aliases = ["api"]
[[network.container]]
name = "api-2"
ipv4 = ["10.89.0.12"]
aliases = ["api"]
[[network]]
name = "backoffice"
internal = true
[[network.container]]
name = "vault"
ipv4 = ["10.90.0.2"]
"#;

fn snaps() -> &'static (Snapshot, Snapshot) {
    static S: OnceLock<(Snapshot, Snapshot)> = OnceLock::new();
    S.get_or_init(|| {
        let cfg = dockns::config::Config::from_toml(CONFIG, &Default::default())
            .expect("fuzz config");
        (
            Snapshot::build(&cfg.static_catalog, cfg.build.clone()),
            Snapshot::build(&cfg.static_catalog, cfg.build.clone()),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, pkt)) = data.split_first() else {
        return;
    };
    let tcp = sel & 1 != 0;
    let client: IpAddr = match (sel >> 1) & 3 {
        0 => "127.0.0.1".parse().unwrap(),
        1 => "10.89.0.2".parse().unwrap(),
        2 => "10.90.0.2".parse().unwrap(),
        _ => "::1".parse().unwrap(),
    };
    let (fast, slow) = snaps();
    let mut a = vec![0u8; 65535];
    let mut b = vec![0u8; 65535];
    let fa = handle(fast, client, None, pkt, &mut a, tcp);
    let sa = handle_slow(slow, client, None, pkt, &mut b, tcp);
    if let Action::Reply(n, _) = fa {
        assert!(n >= 12 && n <= if tcp { 65535 } else { 1232 });
        assert_eq!(&a[..2], &pkt[..2], "ID echoed");
        assert!(a[2] & 0x80 != 0, "QR set");
    }
    match (fa, sa) {
        (Action::Reply(n, _), Action::Reply(m, _)) => assert_eq!(&a[..n], &b[..m]),
        (x, y) => assert_eq!(x, y),
    }
});
