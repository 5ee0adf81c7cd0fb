//! The forward cache is bounded in bytes (issue 10's acceptance): with the default
//! `[upstream] cache_bytes` (32 MiB), 3,000 different forwarded answers of 16 KiB each (47 MiB
//! of answers) raise the resident memory of the process by at most 48 MiB, and the cache's own
//! accounting stays within 32 MiB. An in-process dockns forwards over TCP to a fake upstream on
//! loopback; RSS is read from /proc/self/statm. This file holds one test so that no other test
//! shares the process while it measures.

mod kit;

use kit::{encode_name, tcp_connect, tcp_recv, tcp_send, TestServer};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ANSWERS: usize = 3000;
const ANSWER_BYTES: usize = 16 * 1024;

/// Resident set size of this process, bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("resident pages");
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// A reply of exactly `ANSWER_BYTES` to query `q`: TXT records of 255-byte strings, the last one
/// shortened to fit.
fn big_answer(q: &[u8]) -> Vec<u8> {
    let mut at = 12;
    while q[at] != 0 {
        at += 1 + usize::from(q[at]);
    }
    let qend = at + 5;
    let mut r = q[..2].to_vec();
    r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]);
    r.extend_from_slice(&q[12..qend]);
    let mut n = 0u16;
    while r.len() < ANSWER_BYTES {
        let room = ANSWER_BYTES - r.len();
        if room < 13 {
            break;
        }
        let txt = (room - 13).min(255);
        r.extend_from_slice(&[0xC0, 0x0C, 0, 16, 0, 1, 0, 0, 0x0E, 0x10]);
        r.extend_from_slice(&((txt + 1) as u16).to_be_bytes());
        r.push(txt as u8);
        r.extend(std::iter::repeat_n(b'x', txt));
        n += 1;
    }
    r[6..8].copy_from_slice(&n.to_be_bytes());
    r
}

/// A TCP-only fake upstream answering every query with [`big_answer`].
fn fake_upstream(stop: Arc<AtomicBool>, asked: Arc<AtomicUsize>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            let asked = asked.clone();
            std::thread::spawn(move || {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                while let Ok(q) = tcp_recv(&mut s) {
                    asked.fetch_add(1, Ordering::Relaxed);
                    if tcp_send(&mut s, &big_answer(&q)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn txt_query(id: u16, name: &str) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&encode_name(name));
    p.extend_from_slice(&[0, 16, 0, 1]);
    p
}

#[test]
fn three_thousand_16k_answers_stay_within_the_byte_bound() {
    let stop = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    let up = fake_upstream(stop.clone(), asked.clone());
    // Default cache settings: only the upstream and its timeouts are configured.
    let s = TestServer::start("", &[up], "timeout_ms = 3000\nbudget_ms = 6000");
    let mut conn = tcp_connect(s.addr);
    let mut ask = |i: usize| {
        let q = txt_query(i as u16, &format!("big{i}.example"));
        tcp_send(&mut conn, &q).expect("send");
        let r = tcp_recv(&mut conn).expect("reply");
        assert_eq!(r[3] & 0x0F, 0, "answer {i}");
        assert!(
            r.len() >= ANSWER_BYTES - 64,
            "answer {i} is {} bytes",
            r.len()
        );
    };
    // Warm up: runtime threads, buffers, the first allocations.
    for i in 0..50 {
        ask(ANSWERS + i);
    }
    let before = rss();
    for i in 0..ANSWERS {
        ask(i);
    }
    let after = rss();
    stop.store(true, Ordering::Relaxed);
    let m = s.server.forwarder.cache_metrics();
    let (bytes, entries) = (m.bytes.get(), m.entries.get());
    let grew = after.saturating_sub(before);
    eprintln!(
        "{ANSWERS} answers of {ANSWER_BYTES} bytes: RSS {} -> {} KiB (+{} KiB); cache {entries} entries, {} KiB accounted; upstream asked {}",
        before / 1024,
        after / 1024,
        grew / 1024,
        bytes / 1024,
        asked.load(Ordering::Relaxed)
    );
    assert!(
        bytes <= dockns::config::DEFAULT_CACHE_BYTES as u64,
        "cache accounts {bytes} bytes, over the default 32 MiB"
    );
    assert!(
        (entries as usize) < ANSWERS,
        "every answer kept: the byte bound did not apply"
    );
    assert!(
        grew <= 48 << 20,
        "RSS grew by {} KiB (bound 48 MiB)",
        grew / 1024
    );
}
