//! The code path of `benches/docker_scale.rs`, small, so `cargo test` keeps it working: a fake
//! Docker 20.10 (API 1.41) with 200 containers on 20 networks, the real dockns binary syncing
//! with it, and 10 start events (every other one preceded by `create` and a `network connect`
//! per network, as `docker start` sends them on 20.10), each of which must make the new
//! container's `name.network.docker` answer its address. No query load and no timing assert:
//! the bench measures speed; this only checks that every step still works, with bounds that
//! are deadlines for "never", not speed targets.

mod kit;

use kit::scale::{run_events, Cpu, EventPlan, ScaleServer, World};
use std::time::Duration;

#[test]
fn scale_harness_syncs_a_fake_daemon_and_resolves_start_events() {
    let mut world = World::build(200, 20, 10);
    assert_eq!(world.containers, 200);
    assert!(
        world.endpoints > 200 && world.links > 0,
        "the mix has multi-network containers and links: {} endpoints, {} links",
        world.endpoints,
        world.links
    );
    let server = ScaleServer::start(&world, 1);
    if let Err(e) = server.wait_answers(&world.samples, Duration::from_secs(60)) {
        panic!("{e}");
    }
    // The threads the bench splits its CPU readings by are there and named.
    let names: Vec<String> = Cpu::new(server.pid)
        .threads()
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert!(
        names.iter().any(|n| Cpu::is_udp_worker(n)),
        "no UDP worker thread (udp-N) among {names:?}"
    );
    assert!(
        names.iter().any(|n| !Cpu::is_udp_worker(n)),
        "no thread but UDP workers among {names:?}"
    );
    let plan = EventPlan {
        count: 10,
        rate: 20.0,
        timeout: Duration::from_secs(10),
        poll: Duration::from_micros(500),
        stop_at: None,
        idle_ns_per_s: 0.0,
    };
    let results = run_events(&mut world, &server, &plan);
    assert_eq!(results.len(), 10, "every planned event was sent");
    assert_eq!(
        results.iter().filter(|r| r.with_connect).count(),
        5,
        "half of the events come with create and network connect"
    );
    let failed: Vec<usize> = results
        .iter()
        .filter(|r| r.latency.is_none())
        .map(|r| r.n)
        .collect();
    assert!(
        failed.is_empty(),
        "new containers {failed:?} never answered after their start events"
    );
}
