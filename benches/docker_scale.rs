//! Docker events at scale (issue 14): what a container start costs dockns when it already
//! serves 10,000 containers on 500 networks, under full query load.
//!
//! A fake Docker 20.10 (API 1.41, tests/kit/engine.rs) holds the world (tests/kit/scale.rs:
//! compose-style projects, one network each, service aliases, some containers on two or three
//! networks, a few links); the release `dockns` runs as a child process watching it (loopback
//! listener on a free port, `workers` = CPUs, a dead loopback upstream, `domain = "docker"`, no
//! sweep) and the bench waits until a sample of names answers. Then ROUNDS rounds of two
//! phases of DUR seconds each (interleaved, as the machine's load drifts):
//!
//! - phase A: dnsperf on local names, no events: queries/s A, and the CPU rate of dockns's
//!   threads other than the UDP workers (the idle rate subtracted below);
//! - phase B: the same load while start events arrive (RATE per second, EVENTS in all, split
//!   over the rounds): each is a new container in the fake, then Docker's events for it (every
//!   other one as `docker start` sends them on 20.10: `create`, `network connect` per network,
//!   `start`; the others a `start` alone). For each: the time from the first event written to
//!   the first NOERROR answer with the new address (a probe socket asks every POLL_US), and the
//!   CPU time of the non-UDP threads (`/proc/PID/task/TID/schedstat`) from just before it to
//!   just before the next one, minus the idle rate. An event waits for the previous one to be
//!   resolvable, so a slow dockns gets fewer events. Queries/s B ÷ A (median of the rounds'
//!   ratios) is the drop in answers. The mean per event is also split by thread name (the
//!   tokio threads `dockns` against the compile's `dockns-publish`; idle rate not subtracted).
//!
//! Prints one table (and JSON with `--json`, on stdout, the table then going to stderr).
//! Run: `cargo bench --bench docker_scale` (`-- --json` for JSON); needs dnsperf
//! (`apt-get install dnsperf`). Env knobs, defaults in brackets: DOCKNS_SCALE_CONTAINERS
//! [10000], DOCKNS_SCALE_NETWORKS [500], DOCKNS_SCALE_DUR (seconds per phase) [6],
//! DOCKNS_SCALE_ROUNDS [5], DOCKNS_SCALE_EVENTS [300], DOCKNS_SCALE_RATE (events/s) [20],
//! DOCKNS_SCALE_POLL_US [500], DOCKNS_SCALE_TIMEOUT_MS (per event) [5000],
//! DOCKNS_SCALE_WORKERS [CPUs], DOCKNS_SCALE_CLIENTS (dnsperf -c) [8], DOCKNS_SCALE_INFLIGHT
//! (dnsperf -q) [500], DOCKNS_SCALE_LOAD (0: no dnsperf, the phases run without query load, to
//! measure an event's own cost on a quiet server) [1], DOCKNS_SCALE_SYNC_TIMEOUT_S [300], DOCKNS_SCALE_JSON (also write the
//! JSON to this file), DOCKNS_SCALE_BIN (another dockns binary to measure; the commit shown is
//! then this checkout's, not the binary's). Bounded: ROUNDS × 2 phases of DUR seconds plus the
//! sync and 3 s (about 70 s at the defaults). Loopback only.

#[path = "../tests/kit/mod.rs"]
mod kit;

use kit::scale::*;
use serde_json::json;
use std::str::FromStr;
use std::time::{Duration, Instant};

fn knob<T: FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("docker_scale: {key}={v:?} is not a valid value; unset it or fix it");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

fn ms(ns: f64) -> f64 {
    ns / 1e6
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.3}"))
}

fn describe_commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; `cargo test --benches` runs this without it.
    if !args.iter().any(|a| a == "--bench") {
        println!("docker_scale: a benchmark; run it with `cargo bench --bench docker_scale`");
        return;
    }
    let as_json = args.iter().any(|a| a == "--json");
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let containers: usize = knob("DOCKNS_SCALE_CONTAINERS", 10_000);
    let networks: usize = knob("DOCKNS_SCALE_NETWORKS", 500);
    let dur: u64 = knob("DOCKNS_SCALE_DUR", 6);
    let rounds: usize = knob("DOCKNS_SCALE_ROUNDS", 5);
    let events: usize = knob("DOCKNS_SCALE_EVENTS", 300);
    let rate: f64 = knob("DOCKNS_SCALE_RATE", 20.0);
    let poll_us: u64 = knob("DOCKNS_SCALE_POLL_US", 500);
    let timeout_ms: u64 = knob("DOCKNS_SCALE_TIMEOUT_MS", 5000);
    let workers: usize = knob("DOCKNS_SCALE_WORKERS", cpus);
    let clients: u32 = knob("DOCKNS_SCALE_CLIENTS", 8);
    let inflight: u32 = knob("DOCKNS_SCALE_INFLIGHT", 500);
    let loaded: u8 = knob("DOCKNS_SCALE_LOAD", 1);
    let sync_timeout: u64 = knob("DOCKNS_SCALE_SYNC_TIMEOUT_S", 300);
    let json_file: Option<String> = std::env::var("DOCKNS_SCALE_JSON").ok();
    let bin: String = knob("DOCKNS_SCALE_BIN", kit::process::BIN.to_string());
    if loaded != 0 {
        if let Err(e) = dnsperf_available() {
            eprintln!("docker_scale: {e}");
            std::process::exit(1);
        }
    }
    let load = |queries: &std::path::Path, addr| match loaded {
        0 => start_no_load(dur),
        _ => start_load(addr, queries, dur, clients, inflight),
    };
    if dur < 3 || rate <= 0.0 {
        eprintln!(
            "docker_scale: DOCKNS_SCALE_DUR must be at least 3 s and DOCKNS_SCALE_RATE above 0"
        );
        std::process::exit(2);
    }

    let say = |s: String| eprintln!("# {s}");
    say(format!(
        "building a fake Docker 20.10 with {containers} containers on {networks} networks"
    ));
    let mut world = World::build(containers, networks, events);
    let work = tempfile::tempdir().expect("temp dir");
    let queries = work.path().join("queries.txt");
    world.write_queries(&queries);
    say(format!("starting dockns ({bin}), workers = {workers}"));
    let server = ScaleServer::start_bin(&world, workers, std::path::Path::new(&bin));
    let synced = match server.wait_answers(&world.samples, Duration::from_secs(sync_timeout)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("docker_scale: {e}");
            std::process::exit(1);
        }
    };
    say(format!(
        "synced: {} sample names answer, {:.1} s after the start",
        world.samples.len(),
        synced.as_secs_f64()
    ));
    // Let the sync's last publish settle.
    std::thread::sleep(Duration::from_secs(1));
    let rss_synced = server.rss_kib();
    let cpu = Cpu::new(server.pid);
    let thread_names: Vec<String> = cpu.threads().into_iter().map(|(_, n)| n).collect();
    // The non-UDP threads with no load and no events at all.
    let q0 = cpu.sample();
    std::thread::sleep(Duration::from_secs(2));
    let q1 = cpu.sample();
    let quiet_rate = q1.other_since(&q0).0.max(0) as f64 / q1.secs_since(&q0).max(1e-9);

    let mut rounds_out = Vec::new();
    let mut results: Vec<EventResult> = Vec::new();
    // Phase B's non-UDP CPU over every event window, minus the idle rate, summed.
    let mut b_other_net = 0f64;
    // The same (idle rate not subtracted) split by thread name: the tokio threads (`dockns`:
    // event stream, inspections, state, hand-over) and the others (`dockns-publish`: the
    // compile), to tell the two halves of an event's cost apart.
    let mut b_by_name: std::collections::BTreeMap<String, u64> = Default::default();
    for r in 0..rounds {
        say(format!(
            "round {}/{rounds}, phase A: dnsperf for {dur} s, no events",
            r + 1
        ));
        let a0 = cpu.sample();
        let load_a = Load::wait(load(&queries, server.addr)).unwrap_or_else(|e| {
            eprintln!("docker_scale: phase A: {e}");
            std::process::exit(1)
        });
        let a1 = cpu.sample();
        let idle_rate = a1.other_since(&a0).0.max(0) as f64 / a1.secs_since(&a0).max(1e-9);
        let want = events / rounds + usize::from(r < events % rounds);
        say(format!(
            "round {}/{rounds}, phase B: dnsperf for {dur} s, {want} start events at {rate}/s at most",
            r + 1
        ));
        let b_start = Instant::now();
        let child = load(&queries, server.addr);
        std::thread::sleep(Duration::from_millis(500));
        let plan = EventPlan {
            count: want,
            rate,
            timeout: Duration::from_millis(timeout_ms),
            poll: Duration::from_micros(poll_us),
            stop_at: Some(b_start + Duration::from_secs(dur) - Duration::from_millis(700)),
            idle_ns_per_s: idle_rate,
        };
        let b0 = cpu.sample();
        let got = run_events(&mut world, &server, &plan);
        let b1 = cpu.sample();
        let load_b = Load::wait(child).unwrap_or_else(|e| {
            eprintln!("docker_scale: phase B: {e}");
            std::process::exit(1)
        });
        let b2 = cpu.sample();
        b_other_net += b1.other_since(&b0).0 as f64 - idle_rate * b1.secs_since(&b0);
        for (tid, name) in cpu.threads() {
            if let (Some(&then), Some(&now)) = (b0.other.get(&tid), b1.other.get(&tid)) {
                *b_by_name.entry(name).or_default() += now.saturating_sub(then);
            }
        }
        let per_answer =
            |udp: u64, l: &Load| (l.completed > 0).then(|| udp as f64 / 1e3 / l.completed as f64);
        rounds_out.push(Round {
            udp_us_a: per_answer(a1.udp_ns - a0.udp_ns, &load_a),
            udp_us_b: per_answer(b2.udp_ns - b0.udp_ns, &load_b),
            a: load_a,
            b: load_b,
            idle_rate,
            events: got.len(),
            rss_kib: server.rss_kib(),
        });
        results.extend(got);
    }
    let rss_after = server.rss_kib();
    let threads_after = server.threads();

    let lat: Vec<u64> = results
        .iter()
        .filter_map(|r| r.latency.map(|d| d.as_nanos() as u64))
        .collect();
    let failed = results.iter().filter(|r| r.latency.is_none()).count();
    let cpu_all: Vec<i64> = results.iter().map(|r| r.cpu_ns).collect();
    let cpu_res: Vec<i64> = results.iter().map(|r| r.cpu_to_resolvable_ns).collect();
    let part = |connect: bool| -> (Option<f64>, Option<f64>) {
        let l: Vec<u64> = results
            .iter()
            .filter(|r| r.with_connect == connect)
            .filter_map(|r| r.latency.map(|d| d.as_nanos() as u64))
            .collect();
        let c: Vec<i64> = results
            .iter()
            .filter(|r| r.with_connect == connect)
            .map(|r| r.cpu_ns)
            .collect();
        (
            quantile(&l, 0.5).map(|v| ms(v as f64)),
            quantile(&c, 0.5).map(|v| ms(v as f64)),
        )
    };
    let (lat_conn, cpu_conn) = part(true);
    let (lat_start, cpu_start) = part(false);
    let q = |v: &[u64], p: f64| quantile(v, p).map(|x| ms(x as f64));
    let qi = |v: &[i64], p: f64| quantile(v, p).map(|x| ms(x as f64));
    // Every event window's CPU minus the idle rate, per event: a mean that no window
    // boundary can shift.
    let b_mean = (!results.is_empty()).then(|| ms(b_other_net / results.len() as f64));
    let by_name: Vec<(String, f64)> = b_by_name
        .iter()
        .map(|(name, ns)| (name.clone(), ms(*ns as f64 / results.len().max(1) as f64)))
        .collect();
    let exited: usize = results.iter().map(|r| r.exited_threads).sum();
    // Queries/s: each B against the A just before it (the machine's load drifts), median.
    let ratios: Vec<u64> = rounds_out
        .iter()
        .filter(|r| r.a.qps > 0.0)
        .map(|r| (r.b.qps / r.a.qps * 1e6) as u64)
        .collect();
    let ratio = quantile(&ratios, 0.5).map_or(0.0, |v| v as f64 / 1e6);
    let med = |f: &dyn Fn(&Round) -> f64| {
        let v: Vec<u64> = rounds_out.iter().map(|r| (f(r) * 1e3) as u64).collect();
        quantile(&v, 0.5).map_or(0.0, |x| x as f64 / 1e3)
    };
    let qps_a = med(&|r| r.a.qps);
    let qps_b = med(&|r| r.b.qps);
    let idle_rate = med(&|r| r.idle_rate);
    let commit = if bin == kit::process::BIN {
        describe_commit()
    } else {
        format!("{} of this checkout, binary {bin}", describe_commit())
    };
    let version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();

    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let lat_med = q(&lat, 0.5);
    let cpu_med = qi(&cpu_all, 0.5);
    let mut table = String::new();
    let mut line = |s: String| {
        table.push_str(&s);
        table.push('\n');
    };
    line(format!(
        "Docker events at {} containers ({} endpoints, {} links) on {} networks: fake Docker 20.10 \
         (API 1.41); {version}, commit {commit}; workers {workers}, {cpus} CPUs; {}, {rounds} \
         rounds of {dur} s without then with events",
        world.containers,
        world.endpoints,
        world.links,
        networks,
        match loaded {
            0 => "NO query load (DOCKNS_SCALE_LOAD=0)".to_string(),
            _ => format!("dnsperf -c {clients} -q {inflight}"),
        }
    ));
    line(format!(
        "sync: {} sample names answered {:.1} s after the start; RSS {} MiB after the sync, {} \
         MiB at the end; threads {threads_after} ({})",
        world.samples.len(),
        synced.as_secs_f64(),
        rss_synced / 1024,
        rss_after / 1024,
        summarize_threads(&thread_names)
    ));
    line(String::new());
    line("| measurement | median | p90 | target |".into());
    line("|---|---:|---:|---|".into());
    line(format!(
        "| event → resolvable, ms | {} | {} | median ≤ 10 ms: {} |",
        fmt_ms(lat_med),
        fmt_ms(q(&lat, 0.9)),
        verdict(lat_med.is_some_and(|v| v <= 10.0) && failed == 0)
    ));
    line(format!(
        "| CPU per event (non-UDP threads), ms | {} | {} | median ≤ 1 ms: {} |",
        fmt_ms(cpu_med),
        fmt_ms(qi(&cpu_all, 0.9)),
        verdict(cpu_med.is_some_and(|v| v <= 1.0))
    ));
    line(format!(
        "| CPU per event until resolvable, ms | {} | {} | |",
        fmt_ms(qi(&cpu_res, 0.5)),
        fmt_ms(qi(&cpu_res, 0.9))
    ));
    line(format!(
        "| `create` + `network connect` + `start`: resolvable / CPU, ms | {} / {} | | |",
        fmt_ms(lat_conn),
        fmt_ms(cpu_conn)
    ));
    line(format!(
        "| `start` alone: resolvable / CPU, ms | {} / {} | | |",
        fmt_ms(lat_start),
        fmt_ms(cpu_start)
    ));
    line(String::new());
    line(
        "| round | A: queries/s (lost) | B: queries/s (lost) | B ÷ A | UDP µs/answer A, B | events | RSS MiB |"
            .into(),
    );
    line("|---|---:|---:|---:|---:|---:|---:|".into());
    let us = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.2}"));
    for (i, r) in rounds_out.iter().enumerate() {
        line(format!(
            "| {} | {:.0} ({}) | {:.0} ({}) | {:.3} | {}, {} | {} | {} |",
            i + 1,
            r.a.qps,
            r.a.lost,
            r.b.qps,
            r.b.lost,
            if r.a.qps > 0.0 {
                r.b.qps / r.a.qps
            } else {
                0.0
            },
            us(r.udp_us_a),
            us(r.udp_us_b),
            r.events,
            r.rss_kib / 1024
        ));
    }
    line(String::new());
    let odd: Vec<&str> = rounds_out
        .iter()
        .flat_map(|r| [r.a.rcodes.as_str(), r.b.rcodes.as_str()])
        .filter(|c| !c.starts_with("NOERROR") || c.contains(','))
        .collect();
    line(format!(
        "queries/s B ÷ A, median of the rounds: {ratio:.3} (target ≥ 0.90: {}); medians A {qps_a:.0}, \
         B {qps_b:.0}; response codes: {}; events: {} sent, {failed} not resolvable within \
         {timeout_ms} ms; mean CPU per event over phase B: {} ms ({}); non-UDP threads without \
         events: {:.1} µs/s under load (subtracted), {:.1} µs/s with no load{}",
        verdict(ratio >= 0.9),
        if odd.is_empty() {
            "all NOERROR".to_string()
        } else {
            odd.join("; ")
        },
        results.len(),
        fmt_ms(b_mean),
        by_name
            .iter()
            .map(|(name, v)| format!("{name} threads {v:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        idle_rate / 1e3,
        quiet_rate / 1e3,
        if exited > 0 {
            format!("; {exited} threads exited inside event windows (their CPU there is missing)")
        } else {
            String::new()
        }
    ));

    let doc = json!({
        "commit": commit,
        "version": version,
        "containers": world.containers,
        "endpoints": world.endpoints,
        "links": world.links,
        "networks": networks,
        "workers": workers,
        "cpus": cpus,
        "dur_s": dur,
        "rounds": rounds,
        "dnsperf": {"clients": clients, "inflight": inflight, "load": loaded != 0},
        "sync_s": synced.as_secs_f64(),
        "rss_kib": {"synced": rss_synced, "end": rss_after},
        "threads": threads_after,
        "events": {
            "sent": results.len(),
            "failed": failed,
            "rate_per_s": rate,
            "timeout_ms": timeout_ms,
            "poll_us": poll_us,
            "exited_threads": exited,
        },
        "resolvable_ms": {"median": lat_med, "p90": q(&lat, 0.9),
                          "with_connect_median": lat_conn, "start_only_median": lat_start},
        "cpu_per_event_ms": {"median": cpu_med, "p90": qi(&cpu_all, 0.9), "mean": b_mean,
                             "mean_by_thread_name": by_name.iter().cloned()
                                 .collect::<std::collections::BTreeMap<String, f64>>(),
                             "to_resolvable_median": qi(&cpu_res, 0.5),
                             "to_resolvable_p90": qi(&cpu_res, 0.9),
                             "with_connect_median": cpu_conn, "start_only_median": cpu_start},
        "idle_other_us_per_s": {"loaded": idle_rate / 1e3, "quiet": quiet_rate / 1e3},
        "qps": {"a_median": qps_a, "b_median": qps_b, "ratio": ratio,
                "rounds": rounds_out.iter().map(|r| json!({
                    "a": r.a.qps, "b": r.b.qps, "lost_a": r.a.lost, "lost_b": r.b.lost,
                    "rcodes_a": r.a.rcodes, "rcodes_b": r.b.rcodes,
                    "udp_us_per_answer_a": r.udp_us_a, "udp_us_per_answer_b": r.udp_us_b,
                    "events": r.events, "idle_other_us_per_s": r.idle_rate / 1e3,
                    "rss_kib": r.rss_kib,
                })).collect::<Vec<_>>()},
        "targets_met": {
            "cpu_per_event": cpu_med.is_some_and(|v| v <= 1.0),
            "resolvable": lat_med.is_some_and(|v| v <= 10.0) && failed == 0,
            "qps_ratio": ratio >= 0.9,
        },
    });
    let text = serde_json::to_string_pretty(&doc).expect("JSON");
    if let Some(path) = &json_file {
        if let Err(e) = std::fs::write(path, format!("{text}\n")) {
            eprintln!("docker_scale: cannot write {path}: {e}");
        }
    }
    if as_json {
        eprint!("{table}");
        println!("{text}");
    } else {
        print!("{table}");
    }
}

/// `dockns ×3, udp-N ×2, upstream-rx` from the thread names.
fn summarize_threads(names: &[String]) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for n in names {
        let key = if Cpu::is_udp_worker(n) {
            "udp-N".to_string()
        } else {
            n.clone()
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| {
            if *v > 1 {
                format!("{k} ×{v}")
            } else {
                k.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One round: phase A, then phase B.
struct Round {
    a: Load,
    b: Load,
    /// Non-UDP CPU rate in phase A, ns/s.
    idle_rate: f64,
    /// UDP workers' CPU per answer, µs.
    udp_us_a: Option<f64>,
    udp_us_b: Option<f64>,
    /// Events sent in phase B.
    events: usize,
    /// dockns's RSS at the end of the round.
    rss_kib: u64,
}
