//! Criterion benches for the pieces of the query path and the snapshot build: the fast-path
//! parse, the table lookup, a full answer (`answer::handle`), a forward-cache hit as the UDP
//! worker probes it (to compare with a local answer), and a snapshot rebuild at 10,000
//! containers over 500 networks. Run with `cargo bench --bench dns`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use dockns::dns::answer::{handle, Action};
use dockns::docker::convert::NetInfo;
use dockns::docker::peers::Told;
use dockns::docker::state::State;
use dockns::docker::{DockerConfig, WatchOptions, DOCKER_SOURCE};
use dockns::forward::cache::{Cache, CacheQuestion};
use dockns::forward::reply::{self, Judgement};
use dockns::model::{
    BuildSettings, Catalog, Container, Endpoint, Health, Network, Publisher, Snapshot,
};
use dockns::wire::{parse_query, Parse, MAX_KEY_LEN};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

/// `containers` containers spread evenly over `networks` networks; network 0 is "bench" and
/// holds the names the lookups ask for (`c0001`...).
fn catalog(containers: usize, networks: usize) -> Catalog {
    let mut cat = Catalog::default();
    for n in 0..networks {
        let name = if n == 0 {
            "bench".to_string()
        } else {
            format!("n{n:03}")
        };
        cat.networks.insert(
            name.clone(),
            Network {
                name,
                id: String::new(),
                internal: false,
                listen_addrs: Vec::new(),
                subnets: Vec::new(),
            },
        );
    }
    for i in 0..containers {
        let n = i % networks;
        let net = if n == 0 {
            "bench".to_string()
        } else {
            format!("n{n:03}")
        };
        let name = format!(
            "c{:04}",
            i / networks + 1 + if n == 0 { 0 } else { 100_000 * n }
        );
        cat.containers.insert(
            name.as_str().into(),
            Arc::new(Container {
                id: String::new(),
                name,
                hostname: None,
                health: Health::None,
                extra_names: Vec::new(),
                dns: Vec::new(),
                endpoints: vec![Endpoint {
                    network: net,
                    ipv4: vec![Ipv4Addr::new(
                        10,
                        (n >> 8) as u8 + 64,
                        n as u8,
                        (i / networks) as u8 + 2,
                    )],
                    ipv6: Vec::new(),
                    aliases: Vec::new(),
                    links: Vec::new(),
                }],
                anonymous: false,
            }),
        );
    }
    cat
}

/// The Docker watcher's state holding `cat` (each network a bridge with a gateway), and
/// watcher options with gateway listeners (the default).
fn watcher_state(cat: &Catalog) -> (State, WatchOptions) {
    let mut st = State::default();
    for (i, n) in cat.networks.values().enumerate() {
        let mut network = n.clone();
        network.id = format!("id-{}", n.name);
        st.add_network(NetInfo {
            network,
            driver: "bridge".into(),
            gateways: vec![IpAddr::V4(Ipv4Addr::new(
                10,
                64 + (i >> 8) as u8,
                i as u8,
                1,
            ))],
            swarm: false,
        });
    }
    st.containers = cat.containers.clone();
    let opts = WatchOptions {
        docker: DockerConfig {
            endpoint: None,
            default_bridge: false,
            health_aware: true,
            sweep_interval: None,
        },
        gateways: true,
        sidecar: false,
        port: 53,
        own: Vec::new(),
    };
    (st, opts)
}

fn settings() -> BuildSettings {
    BuildSettings {
        host_view: Some(vec!["bench".into()]),
        ..BuildSettings::default()
    }
}

fn query(name: &str, edns: bool) -> Vec<u8> {
    dockns::bench::encode_query(name, 1, edns).expect("valid bench name")
}

fn benches(c: &mut Criterion) {
    let snap = Snapshot::build(&catalog(280, 1), settings());
    let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let q = query("c0123.bench", false);
    let qe = query("C0123.Bench", true);
    let mut key = [0u8; MAX_KEY_LEN];

    c.bench_function("parse/plain", |b| {
        b.iter(|| black_box(parse_query(black_box(&q), &mut key)))
    });
    c.bench_function("parse/edns_mixed_case", |b| {
        b.iter(|| black_box(parse_query(black_box(&qe), &mut key)))
    });

    let Parse::Query(parsed) = parse_query(&q, &mut key) else {
        panic!("bench query did not parse on the fast path")
    };
    let k = key[..parsed.key_len].to_vec();
    c.bench_function("lookup/view_and_resolve", |b| {
        b.iter(|| {
            let view = snap.view_for(black_box(client), None);
            black_box(matches!(
                snap.resolve(view, black_box(&k), 1, 1),
                dockns::model::Resolution::Answer { .. }
            ))
        })
    });

    let mut out = vec![0u8; 65535];
    assert!(matches!(
        handle(&snap, client, None, &q, &mut out, false),
        Action::Reply(..)
    ));
    c.bench_function("handle/local_a", |b| {
        b.iter(|| {
            black_box(handle(
                &snap,
                black_box(client),
                None,
                black_box(&q),
                &mut out,
                false,
            ))
        })
    });
    c.bench_function("handle/local_a_edns", |b| {
        b.iter(|| {
            black_box(handle(
                &snap,
                black_box(client),
                None,
                black_box(&qe),
                &mut out,
                false,
            ))
        })
    });
    // A forward-cache hit, as the UDP worker answers it: parse, key, one shard lock, the reply
    // rebuilt for this client (ID, question, flags, OPT, aged TTLs). 10,000 cached names.
    let metrics = std::sync::Arc::new(dockns::metrics::CacheMetrics::default());
    let fc =
        Cache::new(10_000, 32 << 20, Duration::from_secs(86_400), metrics).expect("cache enabled");
    let mut hit_q = Vec::new();
    for i in 0..10_000 {
        let q = query(&format!("host{i}.example.com"), true);
        let cq = CacheQuestion::parse(&q, 0).expect("fast path");
        let up = reply::upstream_query(0x4242, &cq.client);
        let mut r = up[..up.len() - 11].to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 2;
        r[11] = 0;
        for k in 0..2u8 {
            r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 1, 0x2C, 0, 4, 192, 0, 2, k]);
        }
        let Judgement::Accept(a) = reply::judge(0x4242, cq.client.question, &r, false, 86_400)
        else {
            panic!("bench answer not accepted")
        };
        fc.insert(&cq, &a);
        if i == 1234 {
            hit_q = q;
        }
    }
    c.bench_function("forward/cache_hit_edns", |b| {
        b.iter(|| {
            let cq = CacheQuestion::parse(black_box(&hit_q), 0).expect("parse");
            black_box(fc.probe(&cq, false, &mut out))
        })
    });

    let nx = query("nosuch.bench", false);
    c.bench_function("handle/forward_decision", |b| {
        b.iter(|| {
            black_box(handle(
                &snap,
                black_box(client),
                None,
                black_box(&nx),
                &mut out,
                false,
            ))
        })
    });

    // 10k containers / 500 networks: compile from a catalog, and publish after one change.
    let big = catalog(10_000, 500);
    let mut g = c.benchmark_group("rebuild");
    g.sample_size(20);
    g.bench_function("snapshot_10k_500", |b| {
        b.iter(|| black_box(Snapshot::build(black_box(&big), settings()).entry_count()))
    });
    // The compile step alone after one change (what delays the change becoming visible):
    // the previous snapshot's unchanged network tables are reused.
    let prev = Snapshot::build(&big, settings());
    let mut one = big.clone();
    let key77 = big.containers.keys().nth(77).expect("container").clone();
    if let Some(c) = one.containers.get_mut(&key77) {
        Arc::make_mut(c).endpoints[0].aliases = vec!["extra".into()];
    }
    g.bench_function("compile_one_change_10k_500", |b| {
        b.iter_batched(
            || (),
            |()| Snapshot::rebuild(black_box(&one), settings(), &prev, &big),
            BatchSize::SmallInput,
        )
    });
    // The same with Docker's resolver (127.0.0.11) as the default upstream, the sidecar
    // default: the set of every served name is rebuilt too (names never asked there).
    let via_docker = BuildSettings {
        default_upstreams: vec!["127.0.0.11:53".parse().expect("address")],
        ..settings()
    };
    let prev_docker = Snapshot::build(&big, via_docker.clone());
    g.bench_function("compile_one_change_10k_500_via_dockers_resolver", |b| {
        b.iter_batched(
            || (),
            |()| Snapshot::rebuild(black_box(&one), via_docker.clone(), &prev_docker, &big),
            BatchSize::SmallInput,
        )
    });
    let publisher = Publisher::new(settings());
    publisher.set_source("static", big.clone());
    let mut changed = big.clone();
    let mut flip = false;
    g.bench_function("publish_one_change_10k_500", |b| {
        // The catalog is prepared outside the timing: what is measured is what the publisher
        // does with one changed catalog (merge, incremental compile, swap, freeing the old).
        b.iter_batched(
            || {
                flip = !flip;
                if let Some(c) = changed.containers.get_mut(&key77) {
                    Arc::make_mut(c).endpoints[0].aliases = if flip {
                        vec!["extra".into()]
                    } else {
                        Vec::new()
                    };
                }
                changed.clone()
            },
            |cat| publisher.set_source("static", cat),
            BatchSize::LargeInput,
        )
    });
    // One container start (then its stop, alternately) as the Docker watcher handles it: the
    // state gains (loses) the container, the catalog to publish is derived from the state and
    // compared with the last one, and the publisher compiles and swaps it in; timed until the
    // change is visible. Gateway listeners on, the host view on every network (the defaults).
    let (mut state, opts) = watcher_state(&big);
    let publisher = Publisher::new(BuildSettings::default());
    let told = Told::default();
    let mut last = Arc::new(state.catalog(&opts, &[], &told));
    publisher.set_source(DOCKER_SOURCE, last.clone());
    let started = {
        let mut c = Container::clone(big.containers.values().nth(77).expect("container"));
        c.name = "started".into();
        c.endpoints[0].ipv4 = vec![Ipv4Addr::new(10, 64, 77, 250)];
        Arc::new(c)
    };
    let mut flip = false;
    g.bench_function("watcher_one_start_10k_500", |b| {
        b.iter(|| {
            flip = !flip;
            if flip {
                state.containers.insert("started".into(), started.clone());
            } else {
                state.containers.remove("started");
            }
            let cat = state.catalog(&opts, &[], &told);
            if *last != cat {
                last = Arc::new(cat);
                let ticket = publisher.submit_source(DOCKER_SOURCE, last.clone());
                assert!(publisher.wait_published(ticket, Duration::from_secs(10)));
            }
        })
    });
    g.finish();
}

criterion_group!(dns, benches);
criterion_main!(dns);
