//! How long after `docker run -d` returns is the new container's name resolvable through
//! dockns? Runs dockns in-process (release build) against the local daemon, starts N containers
//! one by one, and after each `docker run` returns polls dockns's loopback listener (host view,
//! `name.network`) until the answer carries the container's address. Prints min / median / p90 /
//! max over the runs.
//!
//! Run: `cargo bench --bench docker_resolve` (needs a running dockerd and root).
//! `DOCKNS_BENCH_RUNS` changes the number of runs (default 21).

#[path = "../tests/kit/mod.rs"]
mod kit;

use hickory_proto::rr::RecordType;
use kit::docker::*;
use std::time::{Duration, Instant};

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    if !docker_available() {
        return;
    }
    let runs: usize = std::env::var("DOCKNS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let lab = Lab::new("bench");
    let net = lab.network("n", &[]);
    let d = Dockns::start("");
    let _ = image();
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let name = lab.name(&format!("c{i}"));
        let qname = format!("{name}.{net}");
        lab.run_named(&name, &["--network", &net]);
        let returned = Instant::now();
        // Poll until the name answers (a stale "no" costs one loopback round trip, ~0.1 ms).
        let deadline = returned + Duration::from_secs(10);
        loop {
            let r = ask(d.loopback, &qname, RecordType::A);
            if !r.answers.is_empty() {
                samples.push(returned.elapsed());
                break;
            }
            if Instant::now() > deadline {
                panic!("{name} not resolvable 10 s after docker run returned");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "docker run -> resolvable via dockns over {} runs: min {:.2} ms, median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        samples.len(),
        ms(samples[0]),
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(samples[samples.len() - 1])
    );
}
