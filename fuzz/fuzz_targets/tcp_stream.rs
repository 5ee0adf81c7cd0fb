//! Fuzzes DNS over TCP through the server's own framing (`dns::framing::FrameReader`, what
//! `dns/tcp.rs` reads with): the input's first four bytes choose the sizes of the reads the
//! stream arrives in, the rest is the stream. Every message the reader cuts must be exactly the
//! next length-prefixed message of the stream (RFC 1035 §4.2.2), a zero length must stop it,
//! and every reply must fit one frame.
#![no_main]
use dockns::dns::answer::{handle, Action};
use dockns::dns::framing::{FrameReader, Next};
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

/// The next message of `stream` by the RFC's rule; `Err(true)` at a zero length, `Err(false)`
/// when the stream ends before a whole message.
fn expected(stream: &[u8]) -> Result<(&[u8], &[u8]), bool> {
    if stream.len() < 2 {
        return Err(false);
    }
    let len = usize::from(u16::from_be_bytes([stream[0], stream[1]]));
    if len == 0 {
        return Err(true);
    }
    if stream.len() < 2 + len {
        return Err(false);
    }
    Ok((&stream[2..2 + len], &stream[2 + len..]))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (sizes, stream) = data.split_at(4);
    let mut reader = FrameReader::new(usize::from(sizes[0]) * 64);
    let mut out = vec![0u8; 65535];
    let (mut fed, mut turn, mut oracle) = (0usize, 0usize, stream);
    loop {
        match reader.next_frame() {
            Next::Message(m) => {
                let (want, rest) = expected(oracle).expect("a message the stream does not hold");
                let msg = &reader.bytes()[m];
                assert_eq!(msg, want);
                oracle = rest;
                let client = "127.0.0.1".parse().unwrap();
                if let Action::Reply(n, _) = handle(snap(), client, None, msg, &mut out, true) {
                    assert!((12..=65535).contains(&n));
                }
            }
            Next::Empty => {
                assert_eq!(expected(oracle).err(), Some(true));
                return;
            }
            Next::NeedMore => {
                if fed == stream.len() {
                    assert_eq!(expected(oracle).err(), Some(false));
                    return;
                }
                let space = reader.read_space();
                assert!(!space.is_empty(), "no room to read while a message is incomplete");
                let want = 1 + usize::from(sizes[1 + turn % 3]) * 16;
                let n = want.min(space.len()).min(stream.len() - fed);
                space[..n].copy_from_slice(&stream[fed..fed + n]);
                reader.filled(n);
                fed += n;
                turn += 1;
            }
        }
    }
});
