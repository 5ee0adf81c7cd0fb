//! Deployment modes against a real dockerd (issue 13): the sidecar image answers from the moment
//! `docker start` returns and says `ready` only after its first Docker sync; a sidecar without
//! access to the Docker socket is reported unhealthy by Docker's own HEALTHCHECK and says why;
//! host mode answers the host itself through a network's gateway address.
//!
//! The sidecar runs the offline image (`contrib/image/build-offline.sh`, the test's own binary),
//! the way the README and `examples/compose-sidecar` run it. Its upstream is a second container
//! of the same image on the test's network with a static table (a stand-in: nothing leaves the
//! test's networks). Every name carries the Lab prefix and is removed even on failure. Skips
//! loudly without Docker unless DOCKNS_REQUIRE_DOCKER=1.

mod kit;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use kit::docker::*;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dockns");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SOCKET: &str = "/var/run/docker.sock";
const OUTSIDE_NAME: &str = "outside.test";
const OUTSIDE_IP: &str = "198.51.100.80";
/// The stand-in upstream's zone: every other name under it is NXDOMAIN.
const NX_ZONE: &str = "nx.test";
/// The Docker tests of this file run one at a time: their bounds are latencies (100 ms, 1 s,
/// 1.2 s, 200 ms) that a concurrent start of 150 containers on the same 2 cores would blur.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A network `prefix-net` on a free /23 of 10.0.0.0/8 (the daemon is shared: a fixed subnet may
/// be taken). Docker allocates container addresses from its first /24; the second is for fixed
/// addresses. Returns the network, its subnet, and the prefix "10.A.B+1." of the second half.
fn network_with_free_subnet(lab: &Lab) -> (String, String, String) {
    let seed = (std::process::id() as usize) % 60;
    for i in 0..60 {
        let a = 160 + (seed + i) % 60;
        let subnet = format!("10.{a}.0.0/23");
        let range = format!("10.{a}.0.0/24");
        let name = lab.name("net");
        match docker(&[
            "network",
            "create",
            "--subnet",
            &subnet,
            "--ip-range",
            &range,
            &name,
        ]) {
            Ok(_) => {
                lab.track_network(&name);
                return (name, subnet, format!("10.{a}.1."));
            }
            Err(e) if e.contains("overlaps") => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no free /23 in 10.160.0.0-10.219.255.255 for the test network");
}

/// The line dockns logs once its first Docker sync is published.
const READY: &str = "ready: initial Docker sync published";

/// The offline image of this build, for one lab (removed with it).
fn dockns_image(lab: &Lab) -> String {
    let tag = format!("{}-img:1", lab.prefix);
    lab.track_image(&tag);
    let out = std::process::Command::new("sh")
        .arg(format!("{ROOT}/contrib/image/build-offline.sh"))
        .args([BIN, &tag])
        .output()
        .expect("run build-offline.sh");
    assert!(
        out.status.success(),
        "build-offline.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tag
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p.display().to_string()
}

fn tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A stand-in upstream container on `net`: answers OUTSIDE_NAME, and NXDOMAIN (authoritative,
/// its zone) for every name under NX_ZONE, at once.
fn start_upstream(lab: &Lab, img: &str, net: &str, subnet: &str, dir: &Path) -> IpAddr {
    let cfg = write(
        dir,
        "upstream.toml",
        &format!(
            "[server]\nlisten = [\"0.0.0.0:53\"]\nallow = [\"{subnet}\"]\ndomain = \"{NX_ZONE}\"\n\
             [upstream]\nservers = [\"127.0.0.1:9\"]\n\
             [[network]]\nname = \"outside\"\ninternal = true\n\
             [[network.container]]\nname = \"{OUTSIDE_NAME}\"\nipv4 = [\"{OUTSIDE_IP}\"]\n"
        ),
    );
    let name = lab.run_image(
        "upstream",
        img,
        &[
            "--network",
            net,
            "--read-only",
            "-v",
            &format!("{cfg}:/etc/dockns/dockns.toml:ro"),
        ],
    );
    ip_on(&name, net)
}

/// One UDP question; polls every 5 ms (re-sending) until a reply or `within`.
fn poll_answer(server: SocketAddr, name: &str, within: Duration) -> Option<(Duration, Message)> {
    let start = Instant::now();
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut msg = Message::query();
    msg.metadata.id = 0x1d2e;
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let bytes = msg.to_vec().unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        let _ = sock.send_to(&bytes, server);
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if let Ok(r) = Message::from_vec(&buf[..n]) {
                if r.metadata.id == msg.metadata.id {
                    return Some((start.elapsed(), r));
                }
            }
        }
    }
    None
}

/// Asks until `name` is answered with `want` (the stand-in upstream may still be starting).
fn answered_within(server: SocketAddr, name: &str, want: &str, within: Duration, c: &str) {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < within {
        if let Some((_, r)) = poll_answer(server, name, Duration::from_millis(500)) {
            if addrs(&r) == [want] {
                return;
            }
            last = Some(r);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{name} not answered {want} within {within:?}: {last:?}\n{}",
        logs(c)
    );
}

fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn logs(c: &str) -> String {
    let o = std::process::Command::new(docker_bin())
        .args(["logs", c])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The sidecar's configuration: sidecar listeners on port 53, Docker on the socket, the admin
/// API on loopback (the HEALTHCHECK), one static name, the stand-in upstream.
fn sidecar_config(dir: &Path, upstream: IpAddr) -> String {
    write(
        dir,
        "dockns.toml",
        &format!(
            "[server]\nsidecar = true\ngateway_port = 53\n\
             [docker]\nendpoint = \"unix://{SOCKET}\"\n\
             [upstream]\nservers = [\"{upstream}\"]\ntimeout_ms = 1000\n\
             [admin]\nlisten = \"127.0.0.1:9153\"\n\
             [[network]]\nname = \"fixed\"\n\
             [[network.container]]\nname = \"pinned\"\nipv4 = [\"192.0.2.7\"]\n"
        ),
    )
}

/// The sidecar answers static and forwarded names within 100 ms of `docker start` returning,
/// with 150 other containers on the host (whose first sync takes far longer), container names
/// within 1 s, and logs `ready` only after the sync.
#[test]
fn sidecar_answers_at_once_and_is_ready_after_its_sync() {
    if !docker_available() {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("scup");
    let img = dockns_image(&lab);
    let dir = tempdir();
    let (net, subnet, fixed) = network_with_free_subnet(&lab);
    let subnet = subnet.as_str();
    let dns_ip = format!("{fixed}53");
    // Docker allocates from the lower half; the sidecar's fixed address is in the upper one.
    let upstream = start_upstream(&lab, &img, &net, subnet, dir.path());
    // 150 other containers on the host (on the test's network, so the sync inspects them all).
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let net = net.clone();
            let prefix = lab.prefix.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let name = format!("{prefix}-other{t}x{i}");
                    dk(&[
                        "run",
                        "-d",
                        "--name",
                        &name,
                        "--stop-timeout",
                        "1",
                        "--network",
                        &net,
                        &image(),
                    ]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("starting the other containers");
    }
    let cfg = sidecar_config(dir.path(), upstream);
    let gid = std::fs::metadata(SOCKET)
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m).to_string())
        .expect("the Docker socket");
    let dns = lab.name("dns");
    lab.track_container(&dns);
    let sock_mount = format!("{SOCKET}:{SOCKET}:ro");
    let cfg_mount = format!("{cfg}:/etc/dockns/dockns.toml:ro");
    dk(&[
        "create",
        "--name",
        &dns,
        "--user",
        "65532:65532",
        "--group-add",
        &gid,
        "--read-only",
        "--cap-drop",
        "ALL",
        "--network",
        &net,
        "--ip",
        &dns_ip,
        "-v",
        &sock_mount,
        "-v",
        &cfg_mount,
        &img,
    ]);
    let server = SocketAddr::new(dns_ip.parse().unwrap(), 53);
    dk(&["start", &dns]);
    let started = Instant::now();
    let (took, r) = poll_answer(server, "pinned.fixed", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no answer within 5 s\n{}", logs(&dns)));
    let first = started.elapsed();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&r), ["192.0.2.7"], "{r:?}");
    assert!(
        first <= Duration::from_millis(100),
        "first answer {first:?} (poll {took:?}) after `docker start` returned: over 100 ms\n{}",
        logs(&dns)
    );
    // A forwarded name, at once too.
    answered_within(
        server,
        OUTSIDE_NAME,
        OUTSIDE_IP,
        Duration::from_secs(2),
        &dns,
    );
    // Container names within 1 s.
    let other = format!("{}-other3x7", lab.prefix);
    let want = ip_on(&other, &net).to_string();
    let named = loop {
        if let Some((_, r)) = poll_answer(server, &other, Duration::from_millis(200)) {
            if addrs(&r) == [want.clone()] {
                break started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{other} not answered within 1 s of `docker start`\n{}",
            logs(&dns)
        );
    };
    // `ready` is logged once, after the sync, never before the listeners.
    let log = wait_for("the ready line", Duration::from_secs(10), || {
        let l = logs(&dns);
        l.contains(READY).then_some(l)
    });
    let listening = log
        .find("listening (static tables and forwarding)")
        .expect("a listening line");
    let ready = log.find(READY).unwrap();
    assert!(listening < ready, "{log}");
    assert_eq!(log.matches(READY).count(), 1, "{log}");
    // The image's health check agrees.
    let health = docker(&["exec", &dns, "/usr/local/bin/dockns", "health"]);
    assert!(health.is_ok(), "{health:?}");
    eprintln!("sidecar: first answer {first:?}, container name {named:?} after docker start");
}

/// Without access to the Docker socket: one error line with the socket, the uid and the fix;
/// `/readyz` 503 with that reason; Docker's HEALTHCHECK (the image's) reports `unhealthy`
/// within 10 s; the sidecar still answers forwarded and static names meanwhile.
#[test]
fn sidecar_without_socket_access_is_unhealthy_and_says_why() {
    if !docker_available() {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("scno");
    let img = dockns_image(&lab);
    let dir = tempdir();
    let (net, subnet, fixed) = network_with_free_subnet(&lab);
    let subnet = subnet.as_str();
    let dns_ip = format!("{fixed}53");
    let upstream = start_upstream(&lab, &img, &net, subnet, dir.path());
    let cfg = sidecar_config(dir.path(), upstream);
    let gid = std::fs::metadata(SOCKET)
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m).to_string())
        .expect("the Docker socket");
    // As the README's first snippets had it: the socket mounted, no --group-add.
    let dns = lab.run_image(
        "dns",
        &img,
        &[
            "--network",
            &net,
            "--ip",
            &dns_ip,
            "-v",
            &format!("{SOCKET}:{SOCKET}:ro"),
            "-v",
            &format!("{cfg}:/etc/dockns/dockns.toml:ro"),
        ],
    );
    let started = Instant::now();
    let server = SocketAddr::new(dns_ip.parse().unwrap(), 53);
    answered_within(
        server,
        OUTSIDE_NAME,
        OUTSIDE_IP,
        Duration::from_secs(3),
        &dns,
    );
    let status = wait_for(
        "Docker to report the sidecar unhealthy",
        Duration::from_secs(10),
        || {
            let s = inspect(&dns, "{{.State.Health.Status}}");
            (s == "unhealthy").then_some(s)
        },
    );
    let took = started.elapsed();
    assert_eq!(status, "unhealthy");
    assert!(took <= Duration::from_secs(10), "{took:?}");
    let log = logs(&dns);
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("Docker"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line:\n{log}");
    let e = errors[0];
    for want in [
        SOCKET,
        "uid 65532",
        &format!("--group-add {gid}"),
        "permission denied",
    ] {
        assert!(e.contains(want), "{want:?} missing from: {e}");
    }
    assert!(!log.contains("is dockerd running"), "{log}");
    assert!(!log.contains(READY), "never ready:\n{log}");
    // `dockns health` says why (the HEALTHCHECK's own output).
    let last = inspect(&dns, "{{json .State.Health.Log}}");
    assert!(
        last.contains("503") && last.contains("permission denied"),
        "{last}"
    );
    eprintln!("unhealthy {took:?} after start");
}

/// Host mode: the host itself asks a container name through a network's gateway address. The
/// packet leaves from one of the host's own addresses (after Docker's MASQUERADE), which is
/// answered like loopback, not REFUSED.
#[test]
fn host_resolves_through_a_gateway_address() {
    if !docker_available() {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("hgw");
    let net = lab.network("net", &[]);
    let web = lab.run("web", &["--network", &net]);
    let want = ip_on(&web, &net);
    let d = Dockns::start("");
    let gw = d.on(&net);
    let r = wait_for("the host's answer", Duration::from_secs(5), || {
        let r = ask(gw, &web, RecordType::A);
        (r.rcode != ResponseCode::NoError || !r.answers.is_empty()).then_some(r)
    });
    assert_eq!(r.rcode, ResponseCode::NoError, "{r:?}");
    assert_eq!(r.addrs().into_iter().collect::<Vec<_>>(), [want], "{r:?}");
    // And from every other address of the host too (dig -b <host address>).
    for local in dockns::docker::listeners::local_addresses() {
        let IpAddr::V4(v4) = local else { continue };
        if v4.is_loopback() {
            continue;
        }
        let sock = UdpSocket::bind((v4, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut msg = Message::query();
        msg.metadata.id = 77;
        msg.add_query(Query::query(Name::from_ascii(&web).unwrap(), RecordType::A));
        sock.send_to(&msg.to_vec().unwrap(), gw).unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("from {v4}: {e}"));
        let reply = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "from {v4}"
        );
    }
}

/// Compiles `tests/clients/lookups.c` with `cc` (musl-gcc: static) into `dir`.
fn build_lookups(cc: &str, static_link: bool, dir: &Path) -> String {
    let out = dir.join(format!("lookups-{}", cc.replace('/', "_")));
    let mut cmd = std::process::Command::new(cc);
    if static_link {
        cmd.arg("-static");
    }
    let o = cmd
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(format!("{ROOT}/tests/clients/lookups.c"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {cc}: {e}; install it (apt-get install musl-tools; .ci/run does)")
        });
    assert!(
        o.status.success(),
        "{cc} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.display().to_string()
}

/// A scratch image holding one static program at /lookups.
fn program_image(lab: &Lab, program: &str, dir: &Path) -> String {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(program, root.join("lookups")).unwrap();
    std::fs::write(root.join("etc/nsswitch.conf"), "hosts: files dns\n").unwrap();
    let tag = format!("{}-client:1", lab.prefix);
    lab.track_image(&tag);
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -cf - . | {} import --change 'ENTRYPOINT [\"/lookups\"]' - {tag}",
            root.display(),
            docker_bin()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    tag
}

/// The forward rate limit with its defaults never stalls a musl client: 300 lookups of unique
/// forwarded names at 100 a second (600 questions: musl asks A and AAAA), none over 200 ms.
/// (musl ignores REFUSED and waits out its 5 s timeout: a client over the old 100/s limit saw
/// exactly that.) The server is dockns from the image with default limits, listening on the
/// test's network; its upstream a stand-in container there.
#[test]
fn default_rate_limit_never_stalls_a_musl_client() {
    if !docker_available() {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("musl");
    let img = dockns_image(&lab);
    let dir = tempdir();
    let (net, subnet, _) = network_with_free_subnet(&lab);
    let subnet = subnet.as_str();
    let upstream = start_upstream(&lab, &img, &net, subnet, dir.path());
    let cfg = write(
        dir.path(),
        "server.toml",
        &format!(
            "[server]\nlisten = [\"0.0.0.0:53\"]\nallow = [\"{subnet}\"]\n\
             [upstream]\nservers = [\"{upstream}\"]\n"
        ),
    );
    let server = lab.run_image(
        "server",
        &img,
        &[
            "--network",
            &net,
            "-v",
            &format!("{cfg}:/etc/dockns/dockns.toml:ro"),
        ],
    );
    let server_ip = ip_on(&server, &net);
    // Up and forwarding before the client starts.
    answered_within(
        SocketAddr::new(server_ip, 53),
        OUTSIDE_NAME,
        OUTSIDE_IP,
        Duration::from_secs(5),
        &server,
    );
    let program = build_lookups("musl-gcc", true, dir.path());
    let client_img = program_image(&lab, &program, dir.path());
    let resolv = write(
        dir.path(),
        "resolv.conf",
        &format!("nameserver {server_ip}\n"),
    );
    let client = lab.name("client");
    lab.track_container(&client);
    let out = dk(&[
        "run",
        "--name",
        &client,
        "--network",
        &net,
        "-v",
        &format!("{resolv}:/etc/resolv.conf:ro"),
        &client_img,
        "300",
        "100",
        &format!("{}-u", lab.prefix),
        NX_ZONE,
        "200",
    ]);
    let summary = out.lines().last().unwrap_or_default().to_string();
    let lines = out.lines().count();
    assert_eq!(lines, 301, "300 lookups and a summary:\n{out}");
    assert!(
        summary.contains(" slow=0 "),
        "lookups over 200 ms with default limits: {summary}\n{}",
        out.lines()
            .filter(|l| l.split(' ').next().and_then(|m| m.parse::<f64>().ok()) > Some(200.0))
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("musl, 300 lookups at 100/s: {summary}");
}

/// `check-config` prints the effective configuration in the file's own keys and units, as a
/// TOML file that `check-config` accepts back and prints the same (a fixed point), for every
/// configuration shipped in the repository.
#[test]
fn check_config_output_is_a_config_that_round_trips() {
    let dir = tempdir();
    let mut files: Vec<String> = std::fs::read_dir(format!("{ROOT}/config"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(".toml"))
        .collect();
    files.push(format!("{ROOT}/examples/compose-sidecar/dockns.toml"));
    assert!(files.len() >= 3, "{files:?}");
    let check = |path: &str| -> String {
        let o = std::process::Command::new(BIN)
            .args(["check-config", path])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "check-config {path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        // The first line names the file; the rest is the configuration.
        out.split_once('\n')
            .map(|x| x.1.to_string())
            .unwrap_or_default()
    };
    for (i, f) in files.iter().enumerate() {
        let first = check(f);
        // Not the internal structures (a Duration printed as `secs = 10` / `nanos = 0`).
        for line in first.lines() {
            for internal in ["secs =", "nanos =", "static_catalog", "Some("] {
                assert!(
                    !line.trim_start().starts_with(internal) && !line.contains("Some("),
                    "{f}: internal structure {internal:?} printed:\n{first}"
                );
            }
        }
        // The keys users write, in their units.
        for key in [
            "[server]",
            "ttl = ",
            "tcp_idle_timeout_ms = ",
            "timeout_ms = ",
        ] {
            assert!(first.contains(key), "{f}: no {key:?}:\n{first}");
        }
        let again = write(dir.path(), &format!("round{i}.toml"), &first);
        let second = check(&again);
        assert_eq!(first, second, "{f}: check-config of its own output differs");
    }
}

/// High availability as docs/docker.md describes it: two sidecars on the network, each with the
/// sidecar example's dockns.toml, the client's resolv.conf naming both with the example
/// resolv.conf's options (`timeout:1 attempts:2`). After `docker stop` of the
/// first, a glibc client (getaddrinfo, A and AAAA) resolves container names in at most 1.2 s
/// per lookup, through the second.
#[test]
fn two_sidecars_fail_over_within_1_2_s_for_glibc() {
    if !docker_available() {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("ha");
    let dir = tempdir();
    let program = build_lookups("gcc", false, dir.path());
    // The dockns image, with the glibc client program (and its libraries) next to it.
    let img = format!("{}-img:1", lab.prefix);
    lab.track_image(&img);
    let out = std::process::Command::new("sh")
        .arg(format!("{ROOT}/contrib/image/build-offline.sh"))
        .args([BIN, &img])
        .env("EXTRA", &program)
        .output()
        .expect("run build-offline.sh");
    assert!(
        out.status.success(),
        "build-offline.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (net, subnet, fixed) = network_with_free_subnet(&lab);
    let subnet = subnet.as_str();
    let upstream = start_upstream(&lab, &img, &net, subnet, dir.path());
    // The sidecar example's own dockns.toml, unchanged (its upstream, the container's
    // resolv.conf, is replaced by the stand-in on the command line, as tests/sidecar.rs does).
    let cfg = format!("{ROOT}/examples/compose-sidecar/dockns.toml");
    let upstream_flag = upstream.to_string();
    let gid = std::fs::metadata(SOCKET)
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m).to_string())
        .expect("the Docker socket");
    let (first, second) = (format!("{fixed}53"), format!("{fixed}54"));
    let (first, second) = (first.as_str(), second.as_str());
    let mut sidecars = Vec::new();
    for (n, ip) in [("dns1", first), ("dns2", second)] {
        let name = lab.name(n);
        lab.track_container(&name);
        sidecars.push(name.clone());
        dk(&[
            "run",
            "-d",
            "--name",
            &name,
            "--user",
            "65532:65532",
            "--group-add",
            &gid,
            "--restart",
            "unless-stopped",
            "--network",
            &net,
            "--ip",
            ip,
            "-v",
            &format!("{SOCKET}:{SOCKET}:ro"),
            "-v",
            &format!("{cfg}:/etc/dockns/dockns.toml:ro"),
            &img,
            "serve",
            "--config",
            "/etc/dockns/dockns.toml",
            "--upstream",
            &upstream_flag,
        ]);
    }
    for i in 0..3 {
        lab.run(&format!("web{i}"), &["--network", &net]);
    }
    for (s, ip) in sidecars.iter().zip([first, second]) {
        wait_for(&format!("{s} ready"), Duration::from_secs(30), || {
            docker(&["exec", s, "/usr/local/bin/dockns", "health"]).ok()
        });
        answered_within(
            SocketAddr::new(ip.parse().unwrap(), 53),
            &format!("{}-web0.{net}", lab.prefix),
            &ip_on(&lab.name("web0"), &net).to_string(),
            Duration::from_secs(5),
            s,
        );
    }
    // The options of the example's resolv.conf (the documented failover settings), with the two
    // sidecars as name servers.
    let example = std::fs::read_to_string(format!("{ROOT}/examples/compose-sidecar/resolv.conf"))
        .expect("the example's resolv.conf");
    let options = example
        .lines()
        .find(|l| l.starts_with("options "))
        .expect("an options line in the example's resolv.conf");
    let resolv = write(
        dir.path(),
        "resolv.conf",
        &format!("nameserver {first}\nnameserver {second}\n{options}\n"),
    );
    let client = |tag: &str| -> String {
        let name = lab.name(tag);
        lab.track_container(&name);
        dk(&[
            "run",
            "--name",
            &name,
            "--network",
            &net,
            "-v",
            &format!("{resolv}:/etc/resolv.conf:ro"),
            "--entrypoint",
            &program,
            &img,
            "3",
            "2",
            &format!("{}-web", lab.prefix),
            &net,
            "1200",
        ])
    };
    let before = client("client1");
    assert!(before.contains(" slow=0 "), "{before}");
    assert!(
        before
            .lines()
            .take(3)
            .all(|l| l.split(' ').nth(1) == Some("0")),
        "{before}"
    );
    dk(&["stop", &sidecars[0]]);
    let after = client("client2");
    let rcs_ok = after
        .lines()
        .take(3)
        .all(|l| l.split(' ').nth(1) == Some("0"));
    assert!(
        rcs_ok,
        "every name resolved through the second sidecar:\n{after}"
    );
    assert!(
        after.contains(" slow=0 "),
        "a lookup took over 1.2 s with the first sidecar stopped:\n{after}"
    );
    eprintln!(
        "two sidecars, first stopped: {}",
        after.lines().last().unwrap_or_default()
    );
}

/// Every TOML snippet in README.md and docs/docker.md is a configuration dockns accepts, and
/// the README's `[admin]` excerpt is what the tested sidecar example's dockns.toml says.
#[test]
fn doc_toml_snippets_are_valid_configurations() {
    let example =
        std::fs::read_to_string(format!("{ROOT}/examples/compose-sidecar/dockns.toml")).unwrap();
    let strip = |l: &str| l.split(" #").next().unwrap_or(l).trim().to_string();
    let mut seen = 0;
    for doc in ["README.md", "docs/docker.md"] {
        let text = std::fs::read_to_string(format!("{ROOT}/{doc}")).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("```toml\n") {
            let body = &rest[start + 8..];
            let end = body.find("```").expect("closed code block");
            let snippet = &body[..end];
            rest = &body[end + 3..];
            seen += 1;
            if let Err(e) =
                dockns::config::Config::from_toml(snippet, &dockns::config::Overrides::default())
            {
                panic!("{doc}: a TOML snippet is not a valid configuration: {e}\n{snippet}");
            }
            if doc == "README.md" && snippet.starts_with("[admin]") {
                for line in snippet.lines().map(strip).filter(|l| !l.is_empty()) {
                    assert!(
                        example.lines().any(|l| strip(l) == line),
                        "README's [admin] line {line:?} is not in examples/compose-sidecar/dockns.toml"
                    );
                }
            }
        }
    }
    assert!(seen >= 2, "found {seen} TOML snippets");
}
