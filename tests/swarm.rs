//! A real two-node swarm (`scripts/swarm2.sh`: two dockerd in two network namespaces, a
//! manager and a worker, an attachable overlay `sw-ov`), a dockns sidecar on the overlay on each
//! node watching its own node's socket, and client containers on both nodes. Every question is
//! asked from inside a client container to Docker's 127.0.0.11 and to the node's dockns, after
//! each step: create, scale, rolling update, a task killed on the worker, a node-local container
//! started and stopped, a container attached to and detached from the overlay. The answers must
//! be equal; the time from Docker's answer changing to dockns's matching it is printed.
//!
//! Some names no Engine API of the asking node shows (the aliases, hostname and short ID of a
//! container on another node; on a worker also service aliases and remote task short IDs:
//! Docker gossips them between nodes): dockns has them from the dockns on the other node
//! (src/docker/peers.rs). They must be equal too; the test counts them ("API-blind"). Only one
//! swarm can exist on the machine (fixed namespaces and subnets): the test holds a lock file and
//! always takes the swarm down, even when it fails.

mod kit;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const OV: &str = "sw-ov";
const DNS_IP: [&str; 2] = ["10.210.200.201", "10.210.200.202"];
const LOCK: &str = "/run/lock/dockns-swarm2.lock";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The log of the dockns sidecar on `node` (it logs to stderr).
fn sidecar_log(node: usize) -> String {
    let sock = format!("unix:///run/docker-sw{}.sock", node + 1);
    Command::new("docker")
        .args(["-H", &sock, "logs", "dockns"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout)
        })
        .unwrap_or_default()
}

/// `docker -H <node's socket> args...`; node 0 is the manager, node 1 the worker.
fn dn(node: usize, args: &[&str]) -> Result<String, String> {
    let sock = format!("unix:///run/docker-sw{}.sock", node + 1);
    let out = Command::new("docker")
        .arg("-H")
        .arg(&sock)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("docker: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker -H {sock} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn d(node: usize, args: &[&str]) -> String {
    dn(node, args).unwrap_or_else(|e| panic!("{e}"))
}

/// PATH with the system python (which has dnspython) first, as the script needs.
fn sys_path() -> String {
    format!(
        "/usr/bin:/usr/sbin:/bin:/sbin:{}",
        std::env::var("PATH").unwrap_or_default()
    )
}

fn script(cmd: &str) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join("scripts/swarm2.sh"))
        .arg(cmd)
        .current_dir(repo())
        .env("PATH", sys_path())
        // DOCKNS_SWARM_BIN runs another build (e.g. an older one, to see this test fail).
        .env(
            "DOCKNS_BIN",
            std::env::var("DOCKNS_SWARM_BIN").unwrap_or(env!("CARGO_BIN_EXE_dockns").into()),
        )
        .env(
            "DOCKNS_BUILD",
            repo().join("contrib/image/build-offline.sh"),
        )
        .stdin(Stdio::null())
        .output()
        .expect("running scripts/swarm2.sh")
}

/// Why the swarm cannot run here, if it cannot.
fn missing_requirement() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, dockerd)".into());
    }
    for tool in [
        "dockerd",
        "containerd",
        "docker",
        "nsenter",
        "ip",
        "iptables",
    ] {
        let found = Command::new("bash")
            .args(["-c", &format!("command -v {tool}")])
            .env("PATH", sys_path())
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} not found"));
        }
    }
    let py = Command::new("/usr/bin/python3")
        .args(["-c", "import dns.message"])
        .output();
    if !py.is_ok_and(|o| o.status.success()) {
        return Some(
            "/usr/bin/python3 without dnspython (apt-get install python3-dnspython)".into(),
        );
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox missing (apt-get install busybox-static)".into());
    }
    None
}

/// The swarm for the duration of the test: holds the machine-wide lock, and takes everything
/// down when dropped (also when the test panics).
struct Swarm {
    _lock: std::fs::File,
    cfg: tempfile::TempDir,
}

impl Swarm {
    fn up() -> Swarm {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .expect("lock file");
        // SAFETY: flock on an open descriptor; blocks until the other holder is done.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {LOCK}");
        if Path::new("/run/sw-swarm").exists() {
            eprintln!("swarm test: a swarm from an earlier run is up; taking it down first");
            script("down");
        }
        let sw = Swarm {
            _lock: lock,
            cfg: tempfile::tempdir().expect("tempdir"),
        };
        let t0 = Instant::now();
        let out = script("up");
        assert!(
            out.status.success(),
            "swarm2.sh up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("sw-dockns:1"),
            "sw-dockns:1 was not built: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "swarm test: two-node swarm up in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        sw
    }

    /// A dockns sidecar on the overlay on `node`, watching that node's own socket.
    fn sidecar(&self, node: usize) {
        let cfg = self.cfg.path().join("dockns.toml");
        std::fs::write(
            &cfg,
            "[server]\nsidecar = true\ngateway_port = 53\nttl = 5\n\n[docker]\nendpoint = \"unix:///var/run/docker.sock\"\nsweep_interval_s = 5\n\n[upstream]\nservers = [\"10.209.0.1\"]\n",
        )
        .expect("config");
        let sock = format!("/run/docker-sw{}.sock:/var/run/docker.sock:ro", node + 1);
        let cfg_mount = format!("{}:/etc/dockns/dockns.toml:ro", cfg.display());
        // The same name on both nodes: that is how the sidecars find each other (see
        // src/docker/peers.rs).
        let name = "dockns";
        d(
            node,
            &[
                "run",
                "-d",
                "--name",
                name,
                "--user",
                "0",
                "--no-healthcheck",
                "--network",
                OV,
                "--ip",
                DNS_IP[node],
                "-v",
                &sock,
                "-v",
                &cfg_mount,
                "sw-dockns:1",
            ],
        );
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for node in 0..2 {
            let log = sidecar_log(node);
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            eprintln!(
                "swarm test: dockns on node {} log tail:\n{}",
                node + 1,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let out = script("down");
        if !out.status.success() {
            eprintln!(
                "swarm test: swarm2.sh down reported: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// How a question relates to what the asking node's API can show.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Answered from the API of any node (names, `name.network`, services, tasks, PTR).
    Seen,
    /// An alias, hostname or short ID of a container on the other node; or (workers) a
    /// service alias or a task's short ID: Docker has it from its gossip, dockns from its
    /// peer on the other node.
    Blind,
}

/// The questions for the swarm's current state, as asked from `node`: every service, alias,
/// task, container, short ID, hostname, `name.network` and PTR on the overlay.
fn questions(node: usize) -> BTreeMap<String, Kind> {
    let mut q = BTreeMap::new();
    let manager = node == 0;
    for svc in d(0, &["service", "ls", "--format", "{{.Name}}"]).lines() {
        for n in [
            svc.to_string(),
            format!("tasks.{svc}"),
            format!("{svc}.{OV}"),
        ] {
            q.insert(n, Kind::Seen);
        }
        let aliases = d(
            0,
            &[
                "service",
                "inspect",
                svc,
                "--format",
                "{{range .Spec.TaskTemplate.Networks}}{{range .Aliases}}{{.}} {{end}}{{end}}",
            ],
        );
        for a in aliases.split_whitespace() {
            let kind = if manager { Kind::Seen } else { Kind::Blind };
            for n in [a.to_string(), format!("tasks.{a}"), format!("{a}.{OV}")] {
                q.insert(n, kind);
            }
        }
    }
    for owner in 0..2 {
        let ids = d(owner, &["ps", "-q", "--filter", &format!("network={OV}")]);
        for id in ids.lines() {
            let fmt = format!(
                "{{{{.Name}}}}|{{{{.Config.Hostname}}}}|{{{{index .Config.Labels \"com.docker.swarm.task.id\"}}}}|{{{{with index .NetworkSettings.Networks \"{OV}\"}}}}{{{{.IPAddress}}}}|{{{{range .Aliases}}}}{{{{.}}}} {{{{end}}}}{{{{end}}}}"
            );
            let Ok(line) = dn(owner, &["inspect", "-f", &fmt, id]) else {
                continue;
            };
            let f: Vec<&str> = line.split('|').collect();
            if f.len() < 5 || f[3].is_empty() {
                continue;
            }
            let name = f[0].trim_start_matches('/');
            let task = !f[2].is_empty() && f[2] != "<no value>";
            if name.starts_with("cl") {
                continue;
            }
            q.insert(name.to_string(), Kind::Seen);
            q.insert(format!("{name}.{OV}"), Kind::Seen);
            q.insert(format!("PTR:{}", f[3]), Kind::Seen);
            let remote = owner != node;
            let short_kind = if !remote || (manager && task) {
                Kind::Seen
            } else {
                Kind::Blind
            };
            q.insert(id[..12].to_string(), short_kind);
            let other = if remote { Kind::Blind } else { Kind::Seen };
            for a in f[4].split_whitespace().chain([f[1]]) {
                if !a.is_empty() && a != &id[..12] {
                    q.entry(a.to_string()).or_insert(other);
                }
            }
        }
    }
    q.insert("external.test".into(), Kind::Seen);
    q.insert("nothing-here".into(), Kind::Seen);
    q
}

/// Asks every question from the client container on `node`: name → (Docker, dockns).
fn ask(node: usize, names: &[String]) -> BTreeMap<String, (String, String)> {
    let pid = d(
        node,
        &[
            "inspect",
            "-f",
            "{{.State.Pid}}",
            &format!("cl{}", node + 1),
        ],
    );
    let servers = format!("127.0.0.11,{}", DNS_IP[node]);
    let mut child = Command::new("nsenter")
        .args([
            "-n",
            "-t",
            &pid,
            "/usr/bin/python3",
            "/run/sw-swarm/ask.py",
            &servers,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("nsenter ask.py");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(names.join("\n").as_bytes())
        .expect("questions");
    drop(input);
    let out = child.wait_with_output().expect("ask.py");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ask.py output");
    let mut res = BTreeMap::new();
    for n in names {
        let row = &v[n.as_str()];
        let get = |s: &str| row[s].as_str().unwrap_or("?").to_string();
        res.insert(n.clone(), (get("127.0.0.11"), get(DNS_IP[node])));
    }
    res
}

/// After a step: asks until both nodes' dockns match Docker and Docker has been stable for
/// 3 s; returns the largest lag between a change of Docker's answer and dockns's matching it.
fn converge(step: &str, asked: &mut [BTreeMap<String, Kind>; 2]) -> Duration {
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    // Per node: name → (Docker's answer, when it was first seen so, whether dockns matched it
    // since).
    let mut seen: [BTreeMap<String, (String, Instant, bool)>; 2] = Default::default();
    let mut stable_since = Instant::now();
    // Names asked after earlier steps stay asked (a stopped container must go away).
    let refresh = |asked: &mut [BTreeMap<String, Kind>; 2]| {
        for (node, a) in asked.iter_mut().enumerate() {
            for (n, k) in questions(node) {
                a.entry(n).or_insert(k);
            }
        }
        asked.clone()
    };
    let mut qs = refresh(asked);
    let mut listed = Instant::now();
    loop {
        // The question lists take ~1 s of docker calls: read them again every 3 s, and ask
        // the known ones in between (a round of questions takes ~0.3 s).
        if listed.elapsed() > Duration::from_secs(3) {
            qs = refresh(asked);
            listed = Instant::now();
        }
        let mut bad = Vec::new();
        for node in 0..2 {
            let names: Vec<String> = qs[node].keys().cloned().collect();
            let now = Instant::now();
            for (n, (dk, dn)) in ask(node, &names) {
                let first = !seen[node].contains_key(&n);
                let e = seen[node]
                    .entry(n.clone())
                    .or_insert_with(|| (dk.clone(), now, first && dk == dn));
                if e.0 != dk {
                    *e = (dk.clone(), now, false);
                    stable_since = now;
                }
                if dk == dn && !e.2 {
                    let lag = now.saturating_duration_since(e.1);
                    if lag > Duration::from_secs(2) {
                        eprintln!(
                            "swarm test: {step}: node {}: {n} ({:?}) matched Docker's {dk:?} {:.2} s after it changed",
                            node + 1,
                            qs[node][&n],
                            lag.as_secs_f64()
                        );
                    }
                    worst = worst.max(lag);
                    e.2 = true;
                }
                if dk != dn {
                    bad.push(format!(
                        "node {}: {n}: docker {dk:?} dockns {dn:?}",
                        node + 1
                    ));
                }
            }
        }
        if bad.is_empty() && stable_since.elapsed() >= Duration::from_secs(3) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "{step}: dockns still differs from Docker after 40 s:\n{}",
            bad.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let count = |k: Kind| {
        qs.iter()
            .flat_map(|q| q.values())
            .filter(|v| **v == k)
            .count()
    };
    eprintln!(
        "swarm test: {step}: both nodes equal to Docker on {} questions ({} of them API-blind: told by the peer dockns); largest lag seen {:.2} s",
        count(Kind::Seen) + count(Kind::Blind),
        count(Kind::Blind),
        worst.as_secs_f64()
    );
    worst
}

/// Watches one question from the client container on `node` while a step runs: asks Docker's
/// 127.0.0.11 and dockns every 20 ms until both give the same answer, unchanged for 3 s (at
/// most 40 s), and returns how long after Docker's last change dockns's last change came
/// (negative: dockns was first), with both final answers.
struct Probe(std::thread::JoinHandle<(f64, String, String)>);

const PROBE_PY: &str = r#"
import sys, time, dns.message, dns.query, dns.rcode
name, servers = sys.argv[1], sys.argv[2].split(",")
def ask(s):
    try:
        r = dns.query.udp(dns.message.make_query(name, "A"), s, timeout=0.5)
        return dns.rcode.to_text(r.rcode()) + " " + " ".join(sorted(str(rd) for rr in r.answer for rd in rr))
    except Exception as e:
        return "(%s)" % type(e).__name__
last = [ask(s) for s in servers]
print("ready", flush=True)
t0 = time.monotonic(); changed = [t0, t0]
while True:
    now = time.monotonic()
    for i, s in enumerate(servers):
        a = ask(s)
        if a != last[i]:
            last[i] = a; changed[i] = time.monotonic()
    if last[0] == last[1] and now - max(changed) >= 3 or now - t0 > 40:
        break
    time.sleep(0.02)
print("%.3f\t%s\t%s" % (changed[1] - changed[0], last[0].strip(), last[1].strip()))
"#;

impl Probe {
    fn start(node: usize, name: &str) -> Probe {
        let pid = d(
            node,
            &[
                "inspect",
                "-f",
                "{{.State.Pid}}",
                &format!("cl{}", node + 1),
            ],
        );
        let servers = format!("127.0.0.11,{}", DNS_IP[node]);
        let name = name.to_string();
        let mut child = Command::new("nsenter")
            .args([
                "-n",
                "-t",
                &pid,
                "/usr/bin/python3",
                "-c",
                PROBE_PY,
                &name,
                &servers,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("nsenter probe");
        // The answers before the step are read when it says "ready".
        let mut out = std::io::BufReader::new(child.stdout.take().expect("probe stdout"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).expect("probe ready");
        assert_eq!(line.trim(), "ready", "probe for {name}");
        Probe(std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut text);
            let _ = child.wait();
            let f: Vec<&str> = text.trim().split('\t').collect();
            let lag = f.first().and_then(|l| l.parse().ok()).unwrap_or(f64::NAN);
            let at = |i: usize| f.get(i).map(|s| s.to_string()).unwrap_or_default();
            (lag, at(1), at(2))
        }))
    }

    /// The lag in seconds; panics when the two final answers differ.
    fn lag(self, what: &str) -> f64 {
        let (lag, docker, dockns) = self.0.join().expect("probe thread");
        assert_eq!(docker, dockns, "{what}: final answers differ");
        eprintln!("swarm test: {what}: Docker {docker:?}; dockns followed {lag:+.2} s after Docker's last change");
        lag
    }
}

fn wait_tasks(svc: &str, n: usize) {
    let t0 = Instant::now();
    loop {
        let running = d(
            0,
            &[
                "service",
                "ps",
                svc,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.CurrentState}}",
            ],
        );
        if running.lines().filter(|l| l.starts_with("Running")).count() == n {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{svc}: {running}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_node_swarm_answers_as_docker_on_every_node() {
    if let Some(why) = missing_requirement() {
        kit::skip(&format!("the two-node swarm cannot run: {why}"));
        return;
    }
    let sw = Swarm::up();
    let spread = "spread=node.labels.sw.node";
    let bb = "sw-bb:1";
    let mut lags = Vec::new();
    let mut probes: Vec<(&str, f64)> = Vec::new();
    let mut asked: [BTreeMap<String, Kind>; 2] = Default::default();
    // Create: a VIP and a dnsrr service with aliases, tasks on both nodes, standalone containers
    // with aliases and a hostname on both, dockns and a client on each node.
    for node in 0..2 {
        sw.sidecar(node);
        d(
            node,
            &[
                "run",
                "-d",
                "--name",
                &format!("cl{}", node + 1),
                "--network",
                OV,
                bb,
                "sleep",
                "1d",
            ],
        );
    }
    d(
        0,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "--network",
            &format!("name={OV},alias=webalias"),
            "--placement-pref",
            spread,
            bb,
            "sleep",
            "1d",
        ],
    );
    d(
        0,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "rr",
            "--endpoint-mode",
            "dnsrr",
            "--replicas",
            "2",
            "--network",
            &format!("name={OV},alias=rralias"),
            "--placement-pref",
            spread,
            bb,
            "sleep",
            "1d",
        ],
    );
    d(
        0,
        &[
            "run",
            "-d",
            "--name",
            "c1",
            "--network",
            OV,
            "--network-alias",
            "c1a",
            bb,
            "sleep",
            "1d",
        ],
    );
    d(
        1,
        &[
            "run",
            "-d",
            "--name",
            "c2",
            "--network",
            OV,
            "--network-alias",
            "c2a",
            "--hostname",
            "c2host",
            bb,
            "sleep",
            "1d",
        ],
    );
    wait_tasks("web", 2);
    wait_tasks("rr", 2);
    lags.push(("create", converge("create", &mut asked)));

    // Each step: a probe on the question it changes, asked on the node where the change is
    // remote (or on both), then every question on both nodes.
    let p = Probe::start(1, "tasks.web");
    d(0, &["service", "scale", "-d", "web=4"]);
    probes.push((
        "scale web 2 -> 4: tasks.web on the worker",
        p.lag("scale: tasks.web, worker"),
    ));
    lags.push(("scale web 2 -> 4", converge("scale web 2 -> 4", &mut asked)));
    wait_tasks("web", 4);

    let p = Probe::start(1, "tasks.web");
    d(
        0,
        &[
            "service",
            "update",
            "-d",
            "--force",
            "--update-parallelism",
            "2",
            "web",
        ],
    );
    probes.push((
        "rolling update: tasks.web on the worker",
        p.lag("rolling update: tasks.web, worker"),
    ));
    lags.push(("rolling update", converge("rolling update", &mut asked)));
    wait_tasks("web", 4);

    let victim = d(
        1,
        &[
            "ps",
            "-q",
            "--filter",
            "label=com.docker.swarm.service.name=web",
        ],
    );
    let victim = victim
        .lines()
        .next()
        .expect("a web task on the worker")
        .to_string();
    let p = Probe::start(0, "tasks.web");
    d(1, &["kill", &victim]);
    probes.push((
        "task killed on the worker: tasks.web on the manager",
        p.lag("task killed: tasks.web, manager"),
    ));
    lags.push((
        "task killed on the worker",
        converge("task killed on the worker", &mut asked),
    ));

    let (p1, p2) = (Probe::start(0, "c3a"), Probe::start(1, "c3"));
    d(
        0,
        &[
            "run",
            "-d",
            "--name",
            "c3",
            "--network",
            OV,
            "--network-alias",
            "c3a",
            bb,
            "sleep",
            "1d",
        ],
    );
    probes.push((
        "container start on the manager: c3a there",
        p1.lag("start: c3a, manager"),
    ));
    probes.push((
        "container start on the manager: c3 on the worker",
        p2.lag("start: c3, worker"),
    ));
    lags.push((
        "local container start",
        converge("local container start", &mut asked),
    ));
    let (p1, p2) = (Probe::start(0, "c3a"), Probe::start(1, "c3"));
    d(0, &["stop", "-t", "0", "c3"]);
    probes.push((
        "container stop on the manager: c3a there",
        p1.lag("stop: c3a, manager"),
    ));
    probes.push((
        "container stop on the manager: c3 on the worker",
        p2.lag("stop: c3, worker"),
    ));
    lags.push((
        "local container stop",
        converge("local container stop", &mut asked),
    ));

    d(1, &["run", "-d", "--name", "c4", bb, "sleep", "1d"]);
    let (p1, p2) = (Probe::start(0, "c4a"), Probe::start(1, "c4"));
    d(1, &["network", "connect", "--alias", "c4a", OV, "c4"]);
    probes.push((
        "attach on the worker: c4a on the manager",
        p1.lag("attach: c4a, manager"),
    ));
    probes.push((
        "attach on the worker: c4 there",
        p2.lag("attach: c4, worker"),
    ));
    lags.push((
        "attach on the worker",
        converge("attach on the worker", &mut asked),
    ));
    let (p1, p2) = (Probe::start(0, "c4a"), Probe::start(1, "c4"));
    d(1, &["network", "disconnect", OV, "c4"]);
    probes.push((
        "detach on the worker: c4a on the manager",
        p1.lag("detach: c4a, manager"),
    ));
    probes.push((
        "detach on the worker: c4 there",
        p2.lag("detach: c4, worker"),
    ));
    lags.push((
        "detach on the worker",
        converge("detach on the worker", &mut asked),
    ));

    eprintln!("swarm test: convergence, dockns's last change after Docker's (20 ms probes):");
    for (what, lag) in &probes {
        eprintln!("  {what:55} {lag:+.2} s");
    }
    eprintln!("swarm test: whole-table rounds (every question, ~0.5 s a round): largest lag seen");
    for (step, lag) in &lags {
        eprintln!("  {step:28} {:.2} s", lag.as_secs_f64());
    }
    // The sidecars swept every 5 s all along: the polled swarm records are never "drift".
    for node in 0..2 {
        let log = sidecar_log(node);
        assert!(log.contains("tables synced"), "node {}: {log}", node + 1);
        assert!(
            !log.contains("found drift"),
            "node {}: a sweep reported drift:\n{log}",
            node + 1
        );
    }
    drop(sw);
}
