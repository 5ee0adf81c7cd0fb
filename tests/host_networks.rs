//! Host mode on many real Docker networks (issue 14): the dockns binary with `gateways = true`
//! follows 40 user-defined bridge networks this test creates (explicit subnets, unique prefix),
//! answers on every gateway with the address `docker inspect` gives, keeps its thread count when
//! the networks come, and after 30 of them are removed with `docker network rm` has closed their
//! gateway sockets and its `/metrics` counts only the listeners it still has.
//!
//! Traffic goes only to the gateways of the networks created here (this host's addresses) and
//! to loopback. Everything is removed even when the test fails (kit `Lab`); without Docker it
//! is skipped loudly, unless DOCKNS_REQUIRE_DOCKER=1 (CI) makes that a failure.

mod kit;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use kit::docker::*;
use kit::process::Dockns as Process;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

const NETWORKS: usize = 40;
const REMOVED: usize = 30;
/// Containers; container K is on every network I with I % CONTAINERS == K.
const CONTAINERS: usize = 4;
const WORKERS: usize = 2;
const WAIT: Duration = Duration::from_secs(30);
/// Threads dockns may gain while the networks come (far fewer than the networks).
const SLACK: usize = 4;

/// Creates the networks `prefix-nI` with subnets 10.B.I.0/24 and gateways 10.B.I.1, for the
/// first B in 10.242-10.249 that neither this host nor Docker uses yet (the daemon is shared).
fn create_networks(lab: &Lab) -> Vec<(String, Ipv4Addr)> {
    let local = dockns::docker::listeners::local_addresses();
    for b in 242u8..=249 {
        let block: ipnet::Ipv4Net = format!("10.{b}.0.0/16").parse().unwrap();
        if local.iter().any(|a| match a {
            IpAddr::V4(v4) => block.contains(v4),
            IpAddr::V6(_) => false,
        }) {
            continue;
        }
        let net = |i: usize| (lab.name(&format!("n{i}")), Ipv4Addr::new(10, b, i as u8, 1));
        let (first, gw) = net(0);
        let created = docker(&[
            "network",
            "create",
            "--subnet",
            &format!("10.{b}.0.0/24"),
            "--gateway",
            &gw.to_string(),
            &first,
        ]);
        match created {
            Ok(_) => lab.track_network(&first),
            Err(e) if e.contains("overlap") => continue,
            Err(e) => panic!("{e}"),
        }
        let rest: Vec<(String, Ipv4Addr)> = (1..NETWORKS).map(net).collect();
        // Four creators at a time; each network is tracked before it is created.
        std::thread::scope(|s| {
            for chunk in rest.chunks(NETWORKS.div_ceil(4)) {
                s.spawn(move || {
                    for (name, gw) in chunk {
                        lab.track_network(name);
                        dk(&[
                            "network",
                            "create",
                            "--subnet",
                            &format!("10.{b}.{}.0/24", gw.octets()[2]),
                            "--gateway",
                            &gw.to_string(),
                            name,
                        ]);
                    }
                });
            }
        });
        return (0..NETWORKS).map(net).collect();
    }
    panic!("no free 10.B.0.0/16 for B in 242..=249 (used by this host or Docker)");
}

/// `address:port` as /proc/net/{udp,tcp} print a local IPv4 address: the address as its
/// in-memory 32-bit word in hex, the port in hex.
fn proc_net_key(addr: SocketAddr) -> String {
    let IpAddr::V4(ip) = addr.ip() else {
        unreachable!("IPv4 gateways only")
    };
    format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        addr.port()
    )
}

/// Sockets of this network namespace bound to `addr` in /proc/net/`table` (udp or tcp; for
/// tcp, listening sockets only: state 0A).
fn sockets_on(table: &str, addr: SocketAddr) -> usize {
    let key = proc_net_key(addr);
    std::fs::read_to_string(format!("/proc/net/{table}"))
        .unwrap_or_else(|e| panic!("/proc/net/{table}: {e}"))
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&key.as_str()) && (table == "udp" || f.get(3) == Some(&"0A"))
        })
        .count()
}

fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("dockns's /proc status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads: line")
}

/// GET `path` from the admin API at `admin` (one request per connection), the body.
fn get(admin: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).expect("admin API");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: dockns\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("admin reply");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{path}: {head}"
    );
    body.to_string()
}

/// The value of a sample with no labels in a Prometheus text page.
fn gauge(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{page}"))
}

/// TCP listening sockets on `port` on any address (dockns's gateway listeners, its own and
/// those of other networks on the shared daemon).
fn tcp_listeners_on_port(port: u16) -> usize {
    let suffix = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .expect("/proc/net/tcp")
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1).is_some_and(|a| a.ends_with(&suffix)) && f.get(3) == Some(&"0A")
        })
        .count()
}

#[test]
fn host_mode_follows_forty_networks_and_their_removal() {
    if !docker_available() {
        return;
    }
    let lab = Lab::new("hn");
    let upstream = FakeUpstream::start(Behavior::NXDOMAIN);
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("dockns.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ngateways = true\ngateway_port = {port}\nworkers = {WORKERS}\n\
             [upstream]\nservers = [\"{}\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[docker]\nsweep_interval_s = 0\n",
            upstream.addr
        ),
    )
    .expect("write config");
    let dockns = Process::serve(&config, &[]);
    let pid = dockns.child.id();
    let admin: SocketAddr = wait_for("the admin API's address in the log", WAIT, || {
        dockns
            .log()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("admin API listening"))
            })
            .find_map(|v| v["fields"]["bound"].as_str()?.parse().ok())
    });
    wait_for("dockns to sync with Docker", WAIT, || {
        get(admin, "/metrics")
            .contains("\ndockns_ready 1")
            .then_some(())
    });
    let threads_before = threads(pid);
    let metrics_before = get(admin, "/metrics");

    let nets = create_networks(&lab);
    let gateway = |i: usize| SocketAddr::new(IpAddr::V4(nets[i].1), port);
    // Container K starts on network K and joins the others of its share, one sequence per
    // container, the containers in parallel.
    let containers: Vec<String> = (0..CONTAINERS)
        .map(|k| lab.run(&format!("c{k}"), &["--network", &nets[k].0]))
        .collect();
    std::thread::scope(|s| {
        for (k, c) in containers.iter().enumerate() {
            let nets = &nets;
            s.spawn(move || {
                for (net, _) in nets.iter().skip(k + CONTAINERS).step_by(CONTAINERS) {
                    dk(&["network", "connect", net, c]);
                }
            });
        }
    });

    // Every gateway answers CONTAINER.NETWORK (the host view) with the address Docker gives
    // that container on that network.
    for (i, (net, _)) in nets.iter().enumerate() {
        let c = &containers[i % CONTAINERS];
        let want: BTreeSet<IpAddr> = [ip_on(c, net)].into();
        let name = format!("{c}.{net}");
        let got = wait_for(&format!("{name} A at {}", gateway(i)), WAIT, || {
            ask_reply(gateway(i), &name, RecordType::A)
                .ok()
                .filter(|r| r.rcode == ResponseCode::NoError && r.addrs() == want)
        });
        assert_eq!(got.addrs(), want);
        assert_eq!(
            sockets_on("udp", gateway(i)),
            WORKERS,
            "one UDP socket per worker on {}",
            gateway(i)
        );
    }
    // A few threads may come and go (the runtime's blocking pool); one per listener, or per
    // worker and listener, may not. Issue 14's bound: 2 x CPUs + 16.
    let threads_with = threads(pid);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        threads_with <= threads_before + SLACK && threads_with <= 2 * cpus + 16,
        "dockns had {threads_before} threads before the {NETWORKS} networks and {threads_with} \
         with them: the thread count must not follow the listeners"
    );
    let metrics_with = get(admin, "/metrics");
    eprintln!(
        "{NETWORKS} networks: threads {threads_before} before, {threads_with} with them; \
         /metrics {} bytes before, {} with them",
        metrics_before.len(),
        metrics_with.len()
    );

    // Remove the last REMOVED networks (their containers disconnected first).
    let (kept, gone) = nets.split_at(NETWORKS - REMOVED);
    std::thread::scope(|s| {
        for (k, c) in containers.iter().enumerate() {
            let nets = &nets;
            s.spawn(move || {
                for (i, (net, _)) in nets.iter().enumerate().skip(k).step_by(CONTAINERS) {
                    if i >= NETWORKS - REMOVED {
                        dk(&["network", "disconnect", net, c]);
                    }
                }
            });
        }
    });
    let mut rm = vec!["network", "rm"];
    rm.extend(gone.iter().map(|(n, _)| n.as_str()));
    dk(&rm);

    // Their gateway sockets (UDP, one per worker, and the TCP listener) are closed ...
    for i in NETWORKS - REMOVED..NETWORKS {
        wait_for(
            &format!("the sockets on {} to close", gateway(i)),
            WAIT,
            || {
                (sockets_on("udp", gateway(i)) == 0 && sockets_on("tcp", gateway(i)) == 0)
                    .then_some(())
            },
        );
    }
    // ... the kept ones still answer ...
    for (i, (net, _)) in kept.iter().enumerate() {
        let c = &containers[i % CONTAINERS];
        let reply = ask(gateway(i), &format!("{c}.{net}"), RecordType::A);
        assert_eq!(
            reply.addrs(),
            [ip_on(c, net)].into(),
            "{net} after the removal"
        );
        assert_eq!(sockets_on("udp", gateway(i)), WORKERS);
    }
    // ... and /metrics counts the listeners that are left (one per TCP listening socket on the
    // gateway port, which includes other networks of the shared daemon, plus the loopback one)
    // and is back to its size before the networks came (within 25%: counters have grown).
    let metrics_after = wait_for("dockns_listeners to match the sockets", WAIT, || {
        let page = get(admin, "/metrics");
        (gauge(&page, "dockns_listeners") == tcp_listeners_on_port(port) as u64 + 1).then_some(page)
    });
    assert!(
        gauge(&metrics_with, "dockns_listeners")
            >= gauge(&metrics_after, "dockns_listeners") + REMOVED as u64,
        "dockns_listeners went from {} to {} after removing {REMOVED} networks",
        gauge(&metrics_with, "dockns_listeners"),
        gauge(&metrics_after, "dockns_listeners")
    );
    for (_, gw) in gone {
        assert!(
            !metrics_after.contains(&gw.to_string()),
            "/metrics still names removed gateway {gw}"
        );
    }
    assert!(
        metrics_after.len() * 4 <= metrics_before.len() * 5,
        "/metrics was {} bytes before the networks, {} with them and {} after their removal",
        metrics_before.len(),
        metrics_with.len(),
        metrics_after.len()
    );
    assert!(threads(pid) <= threads_before + SLACK);
}
