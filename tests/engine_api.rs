//! The Docker watcher against a fake Engine API (tests/kit/engine.rs) speaking API 1.41
//! (Docker 20.10), 1.44 (Docker 25) and 1.47 (Docker 27): the initial sync with every kind of
//! name (aliases without the short ID, `DNSNames`, links, anonymous containers), every event
//! kind the watcher handles, a cut event stream followed by a resync, and a daemon that answers
//! slowly or holds a request across its own restart. Expected answers come from the Engine API
//! documentation and moby's code for each version (see docs/docker.md, "Docker versions"); every
//! question is answered by dockns's own `answer::handle` for a given client address, with no
//! network traffic at all.

mod kit;

use dockns::config::{Config, Overrides};
use dockns::dns::answer::{handle, Action};
use dockns::docker::DockerWatcher;
use dockns::server::Server;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use kit::engine::{Api, Ep, FakeEngine};
use std::time::{Duration, Instant};

/// dockns watching a fake engine, without listeners of its own beyond loopback.
struct Dns {
    rt: tokio::runtime::Runtime,
    server: Server,
    watcher: DockerWatcher,
}

impl Dns {
    fn start(endpoint: &str) -> Dns {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ngateways = false\nworkers = 1\n\
             [upstream]\nservers = [\"127.0.0.1:9\"]\n\
             [docker]\nendpoint = \"{endpoint}\"\nsweep_interval_s = 0\n"
        );
        let cfg = Config::from_toml(&text, &Overrides::default()).expect("config");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = rt.block_on(async { Server::start(cfg) }).expect("server");
        let watcher = {
            let _g = rt.enter();
            server.watch_docker().expect("docker configured")
        };
        Dns {
            rt,
            server,
            watcher,
        }
    }

    fn wait_sync(&self, api: Api) {
        let status = self.watcher.status();
        wait(api, "the first sync", Duration::from_secs(30), || {
            status.syncs() > 0
        });
    }

    /// What dockns does with a question from `client`.
    fn ask(&self, client: &str, name: &str, qtype: RecordType) -> Ans {
        let snap = self.server.publisher.snapshot();
        let mut msg = Message::query();
        msg.metadata.id = 0x1234;
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
        let pkt = msg.to_vec().expect("query");
        let mut out = vec![0u8; 4096];
        let client = client.parse().expect("client address");
        match handle(&snap, client, None, &pkt, &mut out, false) {
            Action::Forward => Ans::Forward,
            Action::Drop => Ans::Dropped,
            Action::Reply(n, _) => {
                let r = Message::from_vec(&out[..n]).expect("reply");
                let mut answers: Vec<String> = r
                    .answers
                    .iter()
                    .map(|rr| match &rr.data {
                        RData::A(a) => a.0.to_string(),
                        RData::PTR(p) => p.0.to_ascii().to_ascii_lowercase(),
                        other => other.to_string(),
                    })
                    .collect();
                answers.sort();
                Ans::Reply(r.metadata.response_code, answers)
            }
        }
    }

    /// The A records a client gets (empty when forwarded or not answered).
    fn a(&self, client: &str, name: &str) -> Vec<String> {
        match self.ask(client, name, RecordType::A) {
            Ans::Reply(ResponseCode::NoError, a) => a,
            _ => Vec::new(),
        }
    }

    fn ptr(&self, client: &str, ip: &str) -> Ans {
        let rev = dockns::model::reverse_name(ip.parse().expect("ip"));
        self.ask(client, &rev, RecordType::PTR)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.watcher.stop();
        let l = self.server.listeners.clone();
        self.rt.block_on(async move { l.stop_all().await });
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ans {
    Forward,
    Dropped,
    Reply(ResponseCode, Vec<String>),
}

fn wait(api: Api, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "API {}: timed out after {timeout:?} waiting for {what}",
            api.version()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ep(ip: &str, aliases: &[&str], links: &[&str]) -> Ep {
    Ep {
        ip: ip.into(),
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        links: links.iter().map(|s| s.to_string()).collect(),
    }
}

fn v(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

const W: Duration = Duration::from_secs(10);

#[test]
fn initial_sync_in_every_api_generation() {
    for api in Api::ALL {
        let fe = FakeEngine::start(api);
        fe.add_network("app", "10.201.0.0/24", "10.201.0.1");
        fe.add_network("back", "10.202.0.0/24", "10.202.0.1");
        let web = fe.add_container(
            "web",
            Some("web.example"),
            &[
                ("app", ep("10.201.0.10", &["api"], &[])),
                ("back", ep("10.202.0.10", &[], &[])),
            ],
        );
        let db = fe.add_container(
            "db",
            None,
            &[("app", ep("10.201.0.11", &["database"], &["web:frontend"]))],
        );
        let anon = fe.add_anonymous(
            "eloquent_jackson",
            &[("app", ep("10.201.0.12", &["anonalias"], &[]))],
        );
        fe.add_container("client", None, &[("app", ep("10.201.0.50", &[], &[]))]);
        let d = Dns::start(&fe.endpoint());
        d.wait_sync(api);
        let c = "10.201.0.50";
        let web_short = fe.container(&web).short().to_string();
        let db_short = fe.container(&db).short().to_string();
        let anon_short = fe.container(&anon).short().to_string();
        let ctx = format!("API {}", api.version());
        for name in [
            "web",
            "api",
            "web.example",
            &web_short,
            "web.app",
            "api.app",
        ] {
            assert_eq!(d.a(c, name), v(&["10.201.0.10"]), "{ctx}: {name}");
        }
        for name in ["db", "database", &db_short] {
            assert_eq!(d.a(c, name), v(&["10.201.0.11"]), "{ctx}: {name}");
        }
        assert_eq!(
            d.ask(c, "web.back", RecordType::A),
            Ans::Forward,
            "{ctx}: not on back"
        );
        assert_eq!(
            d.ptr(c, "10.201.0.10"),
            Ans::Reply(ResponseCode::NoError, v(&["web.app."])),
            "{ctx}"
        );
        // The link: db's alone.
        assert_eq!(d.a("10.201.0.11", "frontend"), v(&["10.201.0.10"]), "{ctx}");
        assert_eq!(
            d.a("10.201.0.11", "frontend.app"),
            v(&["10.201.0.10"]),
            "{ctx}"
        );
        assert_eq!(d.ask(c, "frontend", RecordType::A), Ans::Forward, "{ctx}");
        // The anonymous container: its aliases and short ID always; its generated name and
        // PTR depend on the generation.
        for name in ["anonalias", anon_short.as_str()] {
            assert_eq!(d.a(c, name), v(&["10.201.0.12"]), "{ctx}: {name}");
        }
        if api.dns_names() {
            assert_eq!(d.a(c, "eloquent_jackson"), v(&["10.201.0.12"]), "{ctx}");
            assert_eq!(
                d.ptr(c, "10.201.0.12"),
                Ans::Reply(ResponseCode::NoError, v(&["eloquent_jackson.app."])),
                "{ctx}"
            );
        } else {
            assert_eq!(
                d.ask(c, "eloquent_jackson", RecordType::A),
                Ans::Forward,
                "{ctx}"
            );
            assert_eq!(
                d.ptr(c, "10.201.0.12"),
                Ans::Reply(ResponseCode::NoError, v(&["anonalias.app."])),
                "{ctx}"
            );
        }
        assert!(
            fe.asked("/version") >= 1 && fe.asked("/events") >= 1,
            "{ctx}"
        );
    }
}

#[test]
fn every_event_kind_in_every_api_generation() {
    for api in Api::ALL {
        let fe = FakeEngine::start(api);
        let app = fe.add_network("app", "10.201.0.0/24", "10.201.0.1");
        let back = fe.add_network("back", "10.202.0.0/24", "10.202.0.1");
        fe.add_container("client", None, &[("app", ep("10.201.0.50", &[], &[]))]);
        fe.add_container("client-b", None, &[("back", ep("10.202.0.50", &[], &[]))]);
        let d = Dns::start(&fe.endpoint());
        d.wait_sync(api);
        let (c, cb) = ("10.201.0.50", "10.202.0.50");
        let gone = |name: &str| d.ask(c, name, RecordType::A) == Ans::Forward;

        // start (with the connect event Docker sends before it)
        let late = fe.add_container("late", None, &[("app", ep("10.201.0.20", &[], &[]))]);
        fe.network_event("connect", &app, &late);
        fe.container_event("start", &late);
        wait(api, "start", W, || d.a(c, "late") == v(&["10.201.0.20"]));
        // rename
        fe.edit(&late, |x| x.name = "renamed".into());
        fe.container_event("rename", &late);
        wait(api, "rename", W, || {
            d.a(c, "renamed") == v(&["10.201.0.20"]) && gone("late")
        });
        // health_status
        let p1 = fe.add_container("p1", None, &[("app", ep("10.201.0.21", &["pool"], &[]))]);
        let p2 = fe.add_container("p2", None, &[("app", ep("10.201.0.22", &["pool"], &[]))]);
        for p in [&p1, &p2] {
            fe.edit(p, |x| x.health = Some("healthy".into()));
            fe.container_event("start", p);
        }
        wait(api, "two healthy replicas", W, || {
            d.a(c, "pool") == v(&["10.201.0.21", "10.201.0.22"])
        });
        fe.edit(&p2, |x| x.health = Some("unhealthy".into()));
        fe.container_event("health_status: unhealthy", &p2);
        wait(api, "health_status", W, || {
            d.a(c, "pool") == v(&["10.201.0.21"])
        });
        // die, stop, kill: gone; start: back
        for action in ["die", "stop", "kill"] {
            fe.edit(&late, |x| x.running = false);
            fe.container_event(action, &late);
            wait(api, action, W, || gone("renamed"));
            fe.edit(&late, |x| x.running = true);
            fe.container_event("start", &late);
            wait(api, "start again", W, || {
                d.a(c, "renamed") == v(&["10.201.0.20"])
            });
        }
        // restart with a new address
        fe.edit(&late, |x| {
            if let Some(e) = x.eps.get_mut("app") {
                e.ip = "10.201.0.23".into();
            }
        });
        fe.container_event("restart", &late);
        wait(api, "restart", W, || {
            d.a(c, "renamed") == v(&["10.201.0.23"])
        });
        // pause, unpause, update, oom: the container is inspected again
        for action in ["pause", "unpause", "update", "oom"] {
            let alias = format!("al-{action}");
            fe.edit(&late, |x| {
                if let Some(e) = x.eps.get_mut("app") {
                    e.aliases = vec![alias.clone()];
                }
            });
            fe.container_event(action, &late);
            wait(api, action, W, || d.a(c, &alias) == v(&["10.201.0.23"]));
        }
        // network connect / disconnect
        fe.edit(&late, |x| {
            x.eps.insert(
                "back".into(),
                ep("10.202.0.23", &["joined"], &["client-b:cbee"]),
            );
        });
        fe.network_event("connect", &back, &late);
        wait(api, "connect", W, || {
            d.a(cb, "joined") == v(&["10.202.0.23"])
        });
        assert_eq!(
            d.a("10.202.0.23", "cbee"),
            v(&["10.202.0.50"]),
            "connect --link"
        );
        assert_eq!(
            d.a("10.201.0.23", "cbee"),
            v(&["10.202.0.50"]),
            "same container"
        );
        fe.edit(&late, |x| {
            x.eps.remove("back");
        });
        fe.network_event("disconnect", &back, &late);
        wait(api, "disconnect", W, || {
            d.ask(cb, "joined", RecordType::A) == Ans::Forward
        });
        assert_eq!(d.ask(c, "cbee", RecordType::A), Ans::Forward);
        // network create / destroy
        let third = fe.add_network("third", "10.203.0.0/24", "10.203.0.1");
        fe.emit(
            "network",
            "create",
            &third,
            &[("name", "third"), ("type", "bridge")],
        );
        let has = |n: &str| d.server.publisher.catalog().networks.contains_key(n);
        wait(api, "network create", W, || has("third"));
        fe.remove_network(&third);
        fe.emit(
            "network",
            "destroy",
            &third,
            &[("name", "third"), ("type", "bridge")],
        );
        wait(api, "network destroy", W, || !has("third"));
        // destroy
        fe.remove_container(&late);
        fe.container_event("destroy", &late);
        wait(api, "destroy", W, || gone("renamed"));
        assert!(d.watcher.status().events() >= 20, "API {}", api.version());
    }
}

#[test]
fn stream_cut_then_resync_with_links_in_every_api_generation() {
    for api in Api::ALL {
        let fe = FakeEngine::start(api);
        fe.add_network("app", "10.201.0.0/24", "10.201.0.1");
        fe.add_container("client", None, &[("app", ep("10.201.0.50", &[], &[]))]);
        let old = fe.add_container("old", None, &[("app", ep("10.201.0.10", &[], &[]))]);
        let keep = fe.add_container(
            "keep",
            None,
            &[("app", ep("10.201.0.11", &["keepalias"], &[]))],
        );
        let d = Dns::start(&fe.endpoint());
        d.wait_sync(api);
        let c = "10.201.0.50";
        assert_eq!(d.a(c, "old"), v(&["10.201.0.10"]));
        let status = d.watcher.status();
        let syncs = status.syncs();
        // Changes the watcher hears nothing about, then the stream is cut.
        fe.remove_container(&old);
        fe.add_container("new", None, &[("app", ep("10.201.0.12", &[], &[]))]);
        fe.add_container(
            "linker",
            None,
            &[("app", ep("10.201.0.14", &[], &["new:newlink"]))],
        );
        fe.edit(&keep, |x| {
            if let Some(e) = x.eps.get_mut("app") {
                e.aliases = vec!["keep2".into()];
            }
        });
        let cut = Instant::now();
        fe.cut_streams();
        wait(api, "a resync", W, || {
            status.syncs() > syncs && status.connected()
        });
        let took = cut.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "API {}: resync took {took:?}",
            api.version()
        );
        assert_eq!(d.a(c, "new"), v(&["10.201.0.12"]));
        assert_eq!(d.ask(c, "old", RecordType::A), Ans::Forward);
        assert_eq!(d.ask(c, "keepalias", RecordType::A), Ans::Forward);
        assert_eq!(d.a(c, "keep2"), v(&["10.201.0.11"]));
        assert_eq!(d.a("10.201.0.14", "newlink"), v(&["10.201.0.12"]));
        assert_eq!(d.ask(c, "newlink", RecordType::A), Ans::Forward);
        wait(api, "a new event stream", W, || fe.open_streams() == 1);
        // Events flow again.
        let late = fe.add_container("late", None, &[("app", ep("10.201.0.13", &[], &[]))]);
        fe.container_event("start", &late);
        wait(api, "an event after the resync", W, || {
            d.a(c, "late") == v(&["10.201.0.13"])
        });
    }
}

#[test]
fn slow_daemon_in_every_api_generation() {
    for api in Api::ALL {
        // Every answer takes 300 ms: the sync and the events still go through.
        let fe = FakeEngine::start(api);
        fe.add_network("app", "10.201.0.0/24", "10.201.0.1");
        fe.add_container("client", None, &[("app", ep("10.201.0.50", &[], &[]))]);
        for i in 0..5u8 {
            fe.add_container(
                &format!("s{i}"),
                None,
                &[("app", ep(&format!("10.201.0.{}", 10 + i), &[], &[]))],
            );
        }
        fe.set_delay(Duration::from_millis(300));
        let d = Dns::start(&fe.endpoint());
        d.wait_sync(api);
        let c = "10.201.0.50";
        assert_eq!(d.a(c, "s4"), v(&["10.201.0.14"]));
        let late = fe.add_container("late", None, &[("app", ep("10.201.0.30", &[], &[]))]);
        fe.container_event("start", &late);
        wait(api, "an event on a slow daemon", W, || {
            d.a(c, "late") == v(&["10.201.0.30"])
        });
        fe.set_delay(Duration::ZERO);

        // An inspection hangs, then the daemon restarts: the hung request (which only the 20 s
        // request timeout would end) must not hold up the reconnect.
        let status = d.watcher.status();
        let syncs = status.syncs();
        fe.hold_inspect(true);
        let stuck = fe.add_container("stuck", None, &[("app", ep("10.201.0.31", &[], &[]))]);
        fe.container_event("start", &stuck);
        wait(api, "the inspection to hang", W, || fe.held());
        let restarted = Instant::now();
        fe.restart();
        wait(api, "a resync after the restart", W, || {
            status.syncs() > syncs && status.connected()
        });
        let took = restarted.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "API {}: the reconnect waited {took:?} on a hung request",
            api.version()
        );
        assert_eq!(d.a(c, "stuck"), v(&["10.201.0.31"]));
        fe.hold_inspect(false);
    }
}

/// Events already queued together are applied with one inspection per container, and nothing
/// they say is lost. Docker 20.10 reports one `docker run` as `create`, a `network connect`
/// per network, then `start`: queued behind an inspection in progress, the three events of a
/// container on two networks must cost one inspection of it, not three. Coalescing must keep
/// what the events mean in order: a restart (`die` then `start`, with a new address) is seen,
/// a container started then stopped before the watcher looked is not served, and a stop that
/// follows a start the watcher already applied is not skipped as a repeat.
#[test]
fn events_queued_together_cost_one_inspection_and_keep_their_order() {
    for api in Api::ALL {
        let fe = FakeEngine::start(api);
        let app = fe.add_network("app", "10.201.0.0/24", "10.201.0.1");
        let back = fe.add_network("back", "10.202.0.0/24", "10.202.0.1");
        fe.add_container("client", None, &[("app", ep("10.201.0.50", &[], &[]))]);
        fe.add_container("client-b", None, &[("back", ep("10.202.0.50", &[], &[]))]);
        let busy = fe.add_container("busy", None, &[("app", ep("10.201.0.40", &[], &[]))]);
        let z = fe.add_container("z", None, &[("app", ep("10.201.0.41", &[], &[]))]);
        let d = Dns::start(&fe.endpoint());
        d.wait_sync(api);
        let c = "10.201.0.50";
        let gone = |name: &str| d.ask(c, name, RecordType::A) == Ans::Forward;
        assert_eq!(d.a(c, "z"), v(&["10.201.0.41"]));

        // The watcher waits on one inspection while the next events queue up behind it.
        fe.hold_inspect(true);
        fe.container_event("health_status: healthy", &busy);
        wait(api, "the watcher to wait on an inspection", W, || fe.held());
        // x: `docker run --network app` then `docker network connect back`, as 20.10 says it.
        let x = fe.add_container(
            "x",
            None,
            &[
                ("app", ep("10.201.0.20", &[], &[])),
                ("back", ep("10.202.0.20", &[], &[])),
            ],
        );
        fe.container_event("create", &x);
        fe.network_event("connect", &app, &x);
        fe.network_event("connect", &back, &x);
        fe.container_event("start", &x);
        // y: started, then stopped before the watcher got to it.
        let y = fe.add_container("y", None, &[("app", ep("10.201.0.21", &[], &[]))]);
        fe.container_event("start", &y);
        fe.edit(&y, |r| r.running = false);
        fe.container_event("die", &y);
        fe.container_event("stop", &y);
        // z: restarted with a new address.
        fe.edit(&z, |r| {
            if let Some(e) = r.eps.get_mut("app") {
                e.ip = "10.201.0.42".into();
            }
        });
        fe.container_event("die", &z);
        fe.container_event("start", &z);
        // Let the stream deliver them all before the watcher moves on.
        std::thread::sleep(Duration::from_millis(300));
        fe.hold_inspect(false);

        wait(api, "x on both networks", W, || {
            d.a(c, "x") == v(&["10.201.0.20"]) && d.a("10.202.0.50", "x") == v(&["10.202.0.20"])
        });
        wait(api, "z's new address", W, || {
            d.a(c, "z") == v(&["10.201.0.42"])
        });
        assert!(gone("y"), "API {}: y was stopped", api.version());
        let inspections = fe.asked(&format!("/containers/{x}/json"));
        assert_eq!(
            inspections,
            1,
            "API {}: create + 2 connects + start queued together inspected x {inspections} times",
            api.version()
        );

        // A stop right after a start the watcher applied is applied too (no repeat filter).
        let w = fe.add_container("w", None, &[("app", ep("10.201.0.22", &[], &[]))]);
        fe.container_event("start", &w);
        wait(api, "w", W, || d.a(c, "w") == v(&["10.201.0.22"]));
        fe.edit(&w, |r| r.running = false);
        fe.container_event("die", &w);
        wait(api, "w to stop", W, || gone("w"));
    }
}
