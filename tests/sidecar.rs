//! The compose sidecar example (`examples/compose-sidecar/`) for real, against a real dockerd.
//! There is no compose tool here, so `compose.yaml` is translated service by service into plain
//! `docker run` commands (the translation is spelled out at each `docker run` below, and
//! `example_is_what_the_test_translates` fails when compose.yaml no longer says what is
//! translated):
//!
//! - `dns`: the offline image built from the test's dockns binary (`build-offline.sh`), with the
//!   example's `dockns.toml` mounted unchanged (`[server] sidecar = true`, `[docker]` on the
//!   socket, `domain = "docker"`, admin API on 0.0.0.0:9153), `/var/run/docker.sock` mounted
//!   read-only, uid 65532 plus the socket's group (`group_add`), read-only root, `cap_drop: ALL`,
//!   `no-new-privileges`, at the example's fixed address 10.53.0.53 on a user network with the
//!   example's subnet 10.53.0.0/24. The one difference from compose.yaml: the command gets
//!   `--upstream <fake>`, so that forwarded questions go to a stand-in upstream the test runs on
//!   that network (a static dockns that knows one outside name and answers NXDOMAIN for the
//!   rest) instead of Docker's 127.0.0.11 and the host's real resolvers.
//! - `db` (aliases `database`, `postgres`), three replicas of `web` and `app`: idle containers
//!   with the service name as network alias and the example's `resolv.conf` mounted, named the
//!   way compose names them (`<project>-web-1`, ...).
//!
//! From `app`, glibc's `getent` (the client image carries it) must resolve: `web` to the three
//! replicas' addresses as `docker inspect` reports them, `db`/`database`/`postgres`, a container
//! name, `name.network`, `name.docker` and `name.network.docker`, a forwarded name through the
//! stand-in upstream, and nothing of a network `app` is not on. Live Docker events: a fourth
//! replica started after dockns resolves within seconds, and a stopped replica disappears (from
//! `web`, by name, and as NXDOMAIN under the zone). The admin API over the network answers
//! `/v1/records` (the replicas, the sidecar's listen address) and `/metrics` (Docker connected,
//! the only upstream being the stand-in). The sidecar's process runs as uid 65532 with the
//! socket's group, no capabilities and `no_new_privs`, and the example's healthcheck (given to
//! the container as compose gives it) keeps it `healthy` through loopback.
//!
//! The admin API scopes what it shows (issue 17): the healthcheck's loopback view lists the other
//! network and its container, but `app`, admitted through the example's `[admin] allow`, reads
//! only its own network through `dockns records`, gets 404 for the other network and 403 when it
//! asks `/v1/explain` as the other network's container; the host, arriving from appnet's gateway
//! on the sidecar's appnet address, sees appnet only.
//!
//! The subnet and address are the example's own (its resolv.conf names 10.53.0.53), so the test
//! cannot run while something else uses 10.53.0.0/24 (e.g. the example itself): it fails then,
//! saying so. Skips loudly without Docker, unless DOCKNS_REQUIRE_DOCKER=1. Every network,
//! container and image carries a unique prefix and is removed by a Drop guard, even on failure.

use dockns::admin::RecordsDoc;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dockns");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/compose-sidecar");

/// compose.yaml's `ipam` subnet and the `dns` service's `ipv4_address` (resolv.conf names it).
const SUBNET: &str = "10.53.0.0/24";
const DNS_IP: &str = "10.53.0.53";
const SOCKET: &str = "/var/run/docker.sock";
/// What the stand-in upstream answers for a name nobody else knows (TEST-NET-2).
const OUTSIDE_NAME: &str = "outside.test";
const OUTSIDE_IP: &str = "198.51.100.80";
/// compose.yaml's healthcheck `test` (exec form: the image has no shell).
const HEALTHCHECK: &str = r#"["CMD", "/usr/local/bin/dockns", "health"]"#;
/// How long a start or stop may take to show in the answers ("within a few seconds").
const LIVE_BOUND: Duration = Duration::from_secs(5);

fn docker_raw(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"))
}

/// Runs docker; returns trimmed stdout, or panics with stderr.
fn docker(args: &[&str]) -> String {
    let out = docker_raw(args);
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn docker_ready() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("DOCKNS_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("DOCKNS_REQUIRE_DOCKER=1 but the Docker daemon is unreachable (`docker info` failed): start dockerd");
        }
        eprintln!("\n*** SKIPPING tests/sidecar.rs: the Docker daemon is unreachable (`docker info` failed). Set DOCKNS_REQUIRE_DOCKER=1 to make this a failure. ***\n");
    }
    ok
}

/// Removes everything the test created, whatever happened.
struct Cleanup {
    containers: Vec<String>,
    networks: Vec<String>,
    images: Vec<String>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for n in &self.networks {
            let _ = Command::new("docker").args(["network", "rm", n]).output();
        }
        for i in &self.images {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn build_image(tag: &str, extra: &str) {
    let out = Command::new("sh")
        .arg(format!("{ROOT}/contrib/image/build-offline.sh"))
        .args([BIN, tag])
        .env("EXTRA", extra)
        .output()
        .expect("run build-offline.sh");
    assert!(
        out.status.success(),
        "build-offline.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file of the example, which containers running as uid 65532 read through a bind mount.
fn example_file(name: &str) -> String {
    let path = format!("{EXAMPLE}/{name}");
    let mode = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .mode();
    assert!(
        mode & 0o004 != 0,
        "{path} is not world-readable (mode {mode:o}): the example's containers read it as uid 65532; chmod o+r it"
    );
    path
}

/// Polls `f` until it returns true; returns how long that took, or panics after `bound` with
/// `context()`.
fn wait_for(
    what: &str,
    bound: Duration,
    mut f: impl FnMut() -> bool,
    context: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "{what}: not within {bound:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// compose.yaml still says what this test translates into `docker run` flags. When this fails,
/// the example changed: update the translation in `sidecar_example_for_real` with it.
#[test]
fn example_is_what_the_test_translates() {
    let compose = std::fs::read_to_string(format!("{EXAMPLE}/compose.yaml")).unwrap();
    let lines: Vec<&str> = compose
        .lines()
        .map(|l| l.split(" #").next().unwrap_or(l).trim())
        .collect();
    for want in [
        "name: appnet",
        &format!("- subnet: {SUBNET}"),
        r#"command: ["serve", "--config", "/etc/dockns/dockns.toml"]"#,
        r#"user: "65532:65532""#,
        r#"group_add: ["${DOCKER_GID:-999}"]"#,
        "read_only: true",
        "cap_drop: [ALL]",
        r#"security_opt: ["no-new-privileges:true"]"#,
        &format!("- {SOCKET}:{SOCKET}:ro"),
        "- ./dockns.toml:/etc/dockns/dockns.toml:ro",
        &format!("ipv4_address: {DNS_IP}"),
        &format!("test: {HEALTHCHECK}"),
        "interval: 3s",
        "timeout: 2s",
        "retries: 2",
        "restart: unless-stopped",
        "aliases: [database, postgres]",
        "replicas: 3",
        "- ./resolv.conf:/etc/resolv.conf:ro",
    ] {
        assert!(
            lines.contains(&want),
            "compose.yaml no longer has the line {want:?}; update tests/sidecar.rs's translation"
        );
    }
    let resolv = std::fs::read_to_string(format!("{EXAMPLE}/resolv.conf")).unwrap();
    assert!(resolv.lines().any(|l| l == format!("nameserver {DNS_IP}")));
    let toml = std::fs::read_to_string(format!("{EXAMPLE}/dockns.toml")).unwrap();
    let cfg = dockns::config::Config::from_toml(&toml, &Default::default()).unwrap();
    assert!(cfg.sidecar && cfg.docker.is_some() && cfg.listen.is_empty());
    assert_eq!(cfg.domain.as_deref(), Some("docker"));
    assert_eq!(cfg.admin, Some("0.0.0.0:9153".parse().unwrap()));
    // The admin API: loopback (the healthcheck) and appnet admitted, only loopback sees all.
    let nets = |l: &[&str]| -> Vec<ipnet::IpNet> { l.iter().map(|n| n.parse().unwrap()).collect() };
    assert_eq!(
        cfg.admin_access.allow,
        nets(&["127.0.0.1/32", "::1/128", SUBNET])
    );
    assert_eq!(
        cfg.admin_access.full_access,
        nets(&["127.0.0.0/8", "::1/128"])
    );
    assert!(cfg.admin_access.token.is_none());
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    assert_eq!(
        cfg.docker.unwrap().endpoint.as_deref(),
        Some(&*format!("unix://{SOCKET}"))
    );
}

#[test]
fn sidecar_example_for_real() {
    if !docker_ready() {
        return;
    }
    let started = Instant::now();
    let example_toml = example_file("dockns.toml");
    let example_resolv = example_file("resolv.conf");
    let docker_gid = std::fs::metadata(SOCKET)
        .unwrap_or_else(|e| {
            panic!("{SOCKET}: {e}; the example mounts the local daemon's socket into the sidecar")
        })
        .gid()
        .to_string();

    // The compose project name: every container is `<project>-<service>-<n>`, as compose names
    // them. Lower case letters, digits and dashes: each name is also a DNS label.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let project = format!(
        "dnsdemo-{}-{}",
        std::process::id() % 100_000,
        nanos % 100_000
    );
    let c = |service: &str, n: u32| format!("{project}-{service}-{n}");
    let dir = std::env::temp_dir().join(&project);
    std::fs::create_dir_all(&dir).unwrap();
    let mut guard = Cleanup {
        containers: vec![],
        networks: vec![],
        images: vec![],
        dir: dir.clone(),
    };

    // Images: dockns alone (DOCKNS_IMAGE), and a client image with glibc's getent next to
    // dockns for the application containers (the example's postgres, nginx and alpine images
    // need a registry).
    let img = format!("{project}-img:1");
    let app_img = format!("{project}-app:1");
    guard.images.push(img.clone());
    guard.images.push(app_img.clone());
    build_image(&img, "");
    build_image(&app_img, "/usr/bin/getent");
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Config.User}}", &img]),
        "65532:65532",
        "the image runs as the non-root dockns user"
    );
    let sh = docker_raw(&["run", "--rm", "--entrypoint", "/bin/sh", &img, "-c", "true"]);
    assert!(!sh.status.success(), "the image has no shell");
    // healthcheck: compose gives the container the exec-form test; `docker run --health-cmd`
    // cannot (it always wraps the command in /bin/sh, which the image lacks), so the service's
    // image gets the same healthcheck, interval and timeout through `docker commit --change`.
    let dns_img = format!("{project}-dns:1");
    guard.images.insert(0, dns_img.clone());
    let proto = format!("{project}-proto");
    guard.containers.push(proto.clone());
    docker(&["create", "--name", &proto, &img]);
    // compose's ["CMD", args...] is the Dockerfile's `HEALTHCHECK CMD [args...]`.
    let test: Vec<String> = serde_json::from_str(HEALTHCHECK).unwrap();
    assert_eq!(test[0], "CMD");
    let exec_form = serde_json::to_string(&test[1..]).unwrap();
    docker(&[
        "commit",
        "--change",
        &format!("HEALTHCHECK --interval=3s --timeout=2s --retries=2 CMD {exec_form}"),
        &proto,
        &dns_img,
    ]);
    docker(&["rm", &proto]);

    // networks: appnet, with the example's subnet. compose.yaml names it exactly `appnet`;
    // the test gives it the project prefix so that it can always be told apart and removed.
    let net = format!("{project}-appnet");
    let out = docker_raw(&["network", "create", "--subnet", SUBNET, &net]);
    if !out.status.success() {
        let users = docker(&["network", "ls", "--format", "{{.Name}}"])
            .lines()
            .filter(|n| {
                let ours: ipnet::IpNet = SUBNET.parse().unwrap();
                let o = docker_raw(&[
                    "network",
                    "inspect",
                    "-f",
                    "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                    n,
                ]);
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|s| s.parse::<ipnet::IpNet>().ok())
                    .any(|s| s.contains(&ours.network()) || ours.contains(&s.network()))
            })
            .map(str::to_string)
            .collect::<Vec<_>>();
        panic!(
            "cannot create the example's network {SUBNET}: {}; networks overlapping it: {users:?} (is the example itself running? `docker compose down` it first)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    guard.networks.push(net.clone());
    // A network `app` is not on, with one container: its name must stay invisible to `app`.
    let othernet = format!("{project}-othernet");
    docker(&["network", "create", &othernet]);
    guard.networks.push(othernet.clone());

    let idle = dir.join("idle.toml");
    write(
        &idle,
        "# Keeps an application container alive: loopback only, never forwards.\n\
         [server]\nlisten = [\"127.0.0.1:5300\"]\n[upstream]\nservers = [\"127.0.0.1:9\"]\n",
    );
    let mount = |from: &str, at: &str| format!("{from}:{at}:ro");
    let idle_mount = mount(&idle.display().to_string(), "/etc/dockns/dockns.toml");
    let resolv_mount = mount(&example_resolv, "/etc/resolv.conf");
    let ip_of = |container: &str, network: &str| -> String {
        docker(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            container,
        ])
    };
    // An application container: its compose service name among its network aliases, the
    // example's resolv.conf, and an idle process where the example's images do real work.
    let run_app = |guard: &mut Cleanup, name: &str, network: &str, aliases: &[&str]| -> String {
        guard.containers.push(name.to_string());
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--stop-timeout",
            "2",
            "--network",
            network,
        ];
        for a in aliases {
            args.extend(["--network-alias", a]);
        }
        // The example's postgres, nginx and alpine images have no health check; the stand-in
        // image has dockns's own, which would make the replicas `starting` for a few seconds
        // (and health-aware answers leave those out while another replica is healthy).
        args.push("--no-healthcheck");
        args.extend(["-v", &resolv_mount, "-v", &idle_mount, &app_img]);
        docker(&args);
        ip_of(name, network)
    };

    // The stand-in upstream: a static dockns on the same network that knows one outside name
    // and, its only network being internal, answers NXDOMAIN for everything else without
    // forwarding. The sidecar is pointed at it instead of Docker's 127.0.0.11 (which forwards
    // to the host's real resolvers).
    let upstream_cfg = dir.join("upstream.toml");
    write(
        &upstream_cfg,
        &format!(
            "[server]\nlisten = [\"0.0.0.0:53\"]\nallow = [\"{SUBNET}\"]\n\
             [upstream]\nservers = [\"127.0.0.1:9\"]\n\
             [[network]]\nname = \"outside\"\ninternal = true\n\
             [[network.container]]\nname = \"{OUTSIDE_NAME}\"\nipv4 = [\"{OUTSIDE_IP}\"]\n"
        ),
    );
    let upstream = c("upstream", 1);
    guard.containers.push(upstream.clone());
    docker(&[
        "run",
        "-d",
        "--name",
        &upstream,
        "--network",
        &net,
        "--read-only",
        "--cap-drop",
        "ALL",
        "-v",
        &mount(
            &upstream_cfg.display().to_string(),
            "/etc/dockns/dockns.toml",
        ),
        &img,
    ]);
    let upstream_ip = ip_of(&upstream, &net);

    // services db and web (3 replicas), started before dns: the initial sync must find them.
    let db = c("db", 1);
    let db_ip = run_app(&mut guard, &db, &net, &["db", "database", "postgres"]);
    let mut web_ips = std::collections::BTreeMap::new();
    for n in 1..=3 {
        let w = c("web", n);
        let ip = run_app(&mut guard, &w, &net, &["web"]);
        web_ips.insert(w, ip);
    }
    let secret = c("secret", 1);
    run_app(&mut guard, &secret, &othernet, &[]);

    // service dns, flag by flag:
    let dns = c("dns", 1);
    guard.containers.push(dns.clone());
    let toml_mount = mount(&example_toml, "/etc/dockns/dockns.toml");
    let sock_mount = mount(SOCKET, SOCKET);
    docker(&[
        "run",
        "-d",
        "--name",
        &dns,
        "--user", // user: "65532:65532"
        "65532:65532",
        "--group-add", // group_add: ["${DOCKER_GID}"], DOCKER_GID=$(stat -c %g /var/run/docker.sock)
        &docker_gid,
        "--read-only", // read_only: true
        "--cap-drop",  // cap_drop: [ALL]
        "ALL",
        "--security-opt", // security_opt: ["no-new-privileges:true"]
        "no-new-privileges:true",
        "-v", // volumes: the socket, read-only
        &sock_mount,
        "-v", // volumes: ./dockns.toml, unchanged
        &toml_mount,
        "--network", // networks: appnet: ipv4_address: 10.53.0.53
        &net,
        "--ip",
        DNS_IP,
        "--network-alias",
        "dns",
        "--restart", // restart: unless-stopped
        "unless-stopped",
        // healthcheck: in the image (see dns_img above).
        &dns_img,
        // command: ["serve", "--config", "/etc/dockns/dockns.toml"], plus the stand-in upstream
        // (the one difference from compose.yaml; the file keeps its default, resolv.conf).
        "serve",
        "--config",
        "/etc/dockns/dockns.toml",
        "--upstream",
        &upstream_ip,
    ]);
    let logs = || {
        let o = docker_raw(&["logs", &dns]);
        format!(
            "sidecar log:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // Ready (initial Docker sync done, listeners bound): /readyz over the network, from the host.
    let admin = format!("http://{DNS_IP}:9153");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let get = |path: &str| -> (u16, String) {
        rt.block_on(dockns::cli::http_get(&admin, path))
            .unwrap_or_else(|e| panic!("GET {admin}{path}: {e}\n{}", logs()))
    };
    wait_for(
        "the sidecar to be ready",
        Duration::from_secs(60),
        || {
            matches!(
                rt.block_on(dockns::cli::http_get(&admin, "/readyz")),
                Ok((200, _))
            )
        },
        logs,
    );

    // The hardening is real: the process's credentials as the kernel sees them.
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &dns]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |key: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(field("Uid:"), ["65532"; 4], "{status}");
    assert_eq!(field("Gid:"), ["65532"; 4], "{status}");
    assert!(field("Groups:").contains(&docker_gid), "{status}");
    assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
    assert_eq!(field("NoNewPrivs:"), ["1"], "{status}");
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", &dns]),
        "true"
    );
    // The example's healthcheck command, in the sidecar as compose would run it.
    let ready = docker_raw(&["exec", &dns, "/usr/local/bin/dockns", "health"]);
    assert!(
        ready.status.success(),
        "the example's healthcheck fails: {}",
        String::from_utf8_lossy(&ready.stderr)
    );
    // `dockns records` through loopback, inside the sidecar.
    let health = docker_raw(&[
        "exec",
        &dns,
        "/usr/local/bin/dockns",
        "records",
        "--admin",
        "http://127.0.0.1:9153",
        "--json",
    ]);
    assert!(
        health.status.success(),
        "dockns records in the sidecar fails: {}",
        String::from_utf8_lossy(&health.stderr)
    );
    // Through loopback the sidecar sees every network, the one `app` is not on included.
    let full: RecordsDoc =
        serde_json::from_slice(&health.stdout).expect("dockns records prints the records");
    let other_doc = full
        .networks
        .iter()
        .find(|n| n.name == othernet)
        .unwrap_or_else(|| panic!("loopback sees {othernet}: {full:?}"));
    assert!(
        other_doc.endpoints.iter().any(|e| e.container == secret),
        "{other_doc:?}"
    );

    // service app (depends_on: dns, db, web).
    let app = c("app", 1);
    run_app(&mut guard, &app, &net, &["app"]);
    // `docker compose exec app getent ahostsv4 NAME`: the IPv4 addresses glibc returns, or None
    // when the name does not resolve.
    let getent = |db: &str, name: &str| -> Option<BTreeSet<String>> {
        let o = docker_raw(&["exec", &app, "/usr/bin/getent", db, name]);
        o.status.success().then(|| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect()
        })
    };
    let set = |ips: &[&String]| -> Option<BTreeSet<String>> {
        Some(ips.iter().map(|s| s.to_string()).collect())
    };

    // The service name answers with every replica, as Docker reports their addresses.
    let replicas: Vec<&String> = web_ips.values().collect();
    assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
    assert_eq!(getent("ahostsv4", "web"), set(&replicas), "{}", logs());
    // db and its aliases, with `getent hosts` as in the example's comment.
    for name in ["db", "database", "postgres"] {
        assert_eq!(getent("hosts", name), set(&[&db_ip]), "{name}\n{}", logs());
    }
    // A container name, name.network, name.docker, name.network.docker.
    let web2 = c("web", 2);
    let web2_ip = web_ips[&web2].clone();
    for name in [
        web2.clone(),
        format!("{web2}.{net}"),
        format!("{web2}.docker"),
        format!("{web2}.{net}.docker"),
        format!("db.{net}"),
        "db.docker".to_string(),
        format!("db.{net}.docker"),
        format!("web.{net}"),
    ] {
        let want = if name.starts_with("db.") {
            set(&[&db_ip])
        } else if name.starts_with("web.") {
            set(&replicas)
        } else {
            set(&[&web2_ip])
        };
        assert_eq!(getent("ahostsv4", &name), want, "{name}\n{}", logs());
    }
    // Not on app's network: not answered from the tables (and the stand-in upstream does not
    // know it either).
    assert_eq!(getent("ahostsv4", &secret), None, "{secret} leaked to app");
    // A name only the upstream knows: forwarded, answered.
    assert_eq!(
        getent("ahostsv4", OUTSIDE_NAME),
        set(&[&OUTSIDE_IP.to_string()]),
        "{}",
        logs()
    );

    // dockns query from inside app: the answer, and the scope dockns chose for it.
    let query = |name: &str| -> String {
        let server = format!("{DNS_IP}:53");
        let o = docker_raw(&[
            "exec",
            &app,
            "/usr/local/bin/dockns",
            "query",
            name,
            "--server",
            &server,
            "--admin",
            &admin,
        ]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let app_ip = ip_of(&app, &net);
    let out = query("web");
    assert!(
        out.contains("STATUS: NOERROR") && out.contains("answers: 3"),
        "{out}"
    );
    assert!(
        out.contains(&format!(";; SCOPE: client {app_ip}"))
            && out.contains("client address belongs to a known container"),
        "{out}"
    );
    assert!(out.contains(&format!(";; VIEW: {net};")), "{out}");

    // The admin API from app (admitted: appnet is in the example's [admin] allow): its own
    // network only, nothing of othernet's, and no explanation for another client.
    let in_app = |args: &[&str]| -> (bool, String, String) {
        let mut all = vec!["exec", app.as_str(), "/usr/local/bin/dockns"];
        all.extend(args);
        let o = docker_raw(&all);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, out, err) = in_app(&["records", "--admin", &admin, "--json"]);
    assert!(ok, "{err}");
    let seen: RecordsDoc = serde_json::from_str(&out).unwrap();
    assert_eq!(
        seen.networks
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        [net.as_str()],
        "app sees only its own network:\n{out}"
    );
    assert!(
        !out.contains(&secret) && !out.contains(&othernet),
        "othernet leaked to app:\n{out}"
    );
    let (ok, _, err) = in_app(&["records", "--admin", &admin, "--network", &othernet]);
    assert!(!ok && err.contains("HTTP 404"), "{err}");
    assert!(!err.contains(&secret), "{err}");
    let secret_ip = ip_of(&secret, &othernet);
    let (ok, out, err) = in_app(&[
        "query",
        &secret,
        "--server",
        &format!("{DNS_IP}:53"),
        "--admin",
        &admin,
        "--from",
        &secret_ip,
    ]);
    assert!(!ok && err.contains("HTTP 403"), "{out}{err}");
    assert!(
        !out.contains(&secret_ip) && !err.contains(&othernet),
        "{out}{err}"
    );

    // Live: a fourth replica started now (`docker compose up -d --scale web=4`) resolves by
    // name and joins `web` within seconds, from Docker's events alone.
    let web4 = c("web", 4);
    let web4_ip = run_app(&mut guard, &web4, &net, &["web"]);
    let mut four = replicas.clone();
    four.push(&web4_ip);
    let joined = wait_for(
        "a replica started after dockns to resolve",
        LIVE_BOUND,
        || getent("ahostsv4", &web4) == set(&[&web4_ip]) && getent("ahostsv4", "web") == set(&four),
        logs,
    );

    // A stopped replica disappears: from `web`, by name, and from the zone (authoritative
    // NXDOMAIN, not forwarded).
    docker(&["stop", &web2]);
    let three: Vec<&String> = four.iter().copied().filter(|ip| **ip != web2_ip).collect();
    let left = wait_for(
        "a stopped replica to disappear",
        LIVE_BOUND,
        || getent("ahostsv4", &web2).is_none() && getent("ahostsv4", "web") == set(&three),
        logs,
    );
    let out = query(&format!("{web2}.docker"));
    assert!(
        out.contains("STATUS: NXDOMAIN, flags: qr aa"),
        "{web2}.docker after the stop: {out}"
    );

    // The admin API over the network: the tables as JSON, and the metrics.
    let (code, body) = get("/v1/records");
    assert_eq!(code, 200, "{body}");
    let doc: RecordsDoc = serde_json::from_str(&body).unwrap();
    // The host arrives from appnet's gateway on the sidecar's appnet address: appnet's view.
    assert_eq!(
        doc.networks
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        [net.as_str()],
        "{body}"
    );
    let nd = doc
        .networks
        .iter()
        .find(|n| n.name == net)
        .unwrap_or_else(|| panic!("{net} missing from /v1/records:\n{body}"));
    assert_eq!(nd.subnets, [SUBNET], "{body}");
    assert_eq!(
        nd.listen_addrs,
        [DNS_IP.parse::<std::net::IpAddr>().unwrap()]
    );
    let endpoints: BTreeSet<&str> = nd.endpoints.iter().map(|e| e.container.as_str()).collect();
    for want in [
        c("web", 1),
        c("web", 3),
        web4.clone(),
        db.clone(),
        app.clone(),
        dns.clone(),
    ] {
        assert!(endpoints.contains(want.as_str()), "{want} missing:\n{body}");
    }
    assert!(
        !endpoints.contains(web2.as_str()),
        "stopped {web2} listed:\n{body}"
    );
    assert!(!endpoints.contains(secret.as_str()), "{body}");
    let web_doc: BTreeSet<String> = nd
        .names
        .iter()
        .find(|n| n.name == "web")
        .unwrap_or_else(|| panic!("no name web:\n{body}"))
        .addresses
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(Some(web_doc), set(&three), "{body}");

    let (code, metrics) = get("/metrics");
    assert_eq!(code, 200);
    let metric = |prefix: &str| -> Vec<(String, f64)> {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    };
    assert_eq!(
        metric("dockns_docker_connected "),
        [("dockns_docker_connected".to_string(), 1.0)],
        "{metrics}"
    );
    let container_events: f64 = metric("dockns_docker_events_total{type=\"container\"}")
        .iter()
        .map(|x| x.1)
        .sum();
    assert!(container_events >= 2.0, "{metrics}");
    // Forwarded questions went to the stand-in, and only there.
    let upstreams = metric("dockns_upstream_queries_total{");
    assert_eq!(
        upstreams.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
        [format!(
            "dockns_upstream_queries_total{{server=\"{upstream_ip}:53\"}}"
        )],
        "{metrics}"
    );
    assert!(upstreams[0].1 >= 1.0, "{metrics}");
    let answered: f64 =
        metric("dockns_queries_total{transport=\"udp\",qtype=\"A\",rcode=\"NOERROR\"}")
            .iter()
            .map(|x| x.1)
            .sum();
    assert!(answered >= 10.0, "A answers counted: {answered}\n{metrics}");

    // The healthcheck, run by Docker every 3 s through loopback, reports healthy.
    let health_of = || {
        docker(&[
            "inspect",
            "-f",
            "{{.State.Health.Status}} {{.State.Health.FailingStreak}}",
            &dns,
        ])
    };
    wait_for(
        "the sidecar's healthcheck to report healthy",
        Duration::from_secs(40),
        || health_of() == "healthy 0",
        || {
            format!(
                "health: {}\n{}",
                docker(&["inspect", "-f", "{{json .State.Health}}", &dns]),
                logs()
            )
        },
    );

    // The sidecar never crashed (no restart by its policy) along the way.
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.RestartCount}}",
            &dns
        ]),
        "true 0",
        "{}",
        logs()
    );
    eprintln!(
        "sidecar example: replica joined in {joined:?}, stopped one left in {left:?}, {:?} in all",
        started.elapsed()
    );
    drop(guard);
}

mod kit;

/// The sidecar with the example's own upstream: its resolv.conf, i.e. Docker's 127.0.0.11, which
/// answers container names from the *sidecar's* scope. Reproduces the two bugs of issue 10 with
/// a real sidecar (the example's image, dockns.toml unchanged, the socket read-only, non-root)
/// attached to two networks, `app` and `other`, and a client on `app` only:
///
/// - scope leak: a container name that exists only on `other` (also as `name.other`) must give
///   the client NXDOMAIN, as Docker gives it from the client's own scope, not the address that
///   127.0.0.11 gives the sidecar;
/// - stale after stop: after `docker stop` of that container, its dead address must not be
///   served (Docker's answer would have been cached with its 600 s TTL).
///
/// Traffic stays on the test's networks: the sidecar runs with `--dns <stand-in>` (compose
/// `dns:`), so whatever Docker's resolver inside it forwards goes to a stand-in upstream the test
/// runs on `app` (a static dockns that knows one outside name), never to the host's resolvers.
#[test]
fn sidecar_through_dockers_resolver_keeps_scope_and_forgets_stopped_containers() {
    // Also needs root: the client's questions are sent from inside its network namespace.
    if !kit::docker::docker_available() {
        return;
    }
    let lab = kit::docker::Lab::new("sidedr");
    let docker_gid = std::fs::metadata(SOCKET)
        .unwrap_or_else(|e| panic!("{SOCKET}: {e}"))
        .gid()
        .to_string();
    let dir = std::env::temp_dir().join(format!("{}-conf", lab.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir = Cleanup {
        containers: vec![],
        networks: vec![],
        images: vec![],
        dir: dir.clone(),
    };
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let img = format!("{}-img:1", lab.prefix);
    lab.track_image(&img);
    build_image(&img, "");

    let app = lab.network("app", &[]);
    let other = lab.network("other", &[]);
    let mount = |from: &Path, at: &str| format!("{}:{at}:ro", from.display());

    // The stand-in upstream on `app`, as in `sidecar_example_for_real`.
    let upstream_cfg = dir.join("upstream.toml");
    write(
        &upstream_cfg,
        &format!(
            "[server]\nlisten = [\"0.0.0.0:53\"]\nallow = [\"0.0.0.0/0\"]\n\
             [upstream]\nservers = [\"127.0.0.1:9\"]\n\
             [[network]]\nname = \"outside\"\ninternal = true\n\
             [[network.container]]\nname = \"{OUTSIDE_NAME}\"\nipv4 = [\"{OUTSIDE_IP}\"]\n"
        ),
    );
    let upstream = lab.run_image(
        "upstream",
        &img,
        &[
            "--network",
            &app,
            "--read-only",
            "--cap-drop",
            "ALL",
            "-v",
            &mount(&upstream_cfg, "/etc/dockns/dockns.toml"),
        ],
    );
    let upstream_ip = kit::docker::ip_on(&upstream, &app).to_string();

    // Containers: a peer and the client on `app`, the secret on `other` only.
    let peer = lab.run("peer", &["--network", &app]);
    let client = lab.run("client", &["--network", &app]);
    let secret = lab.run("secret", &["--network", &other]);
    let secret_ip = kit::docker::ip_on(&secret, &other);

    // The sidecar: compose.yaml's `dns` service (the example's dockns.toml unchanged, so its
    // upstream is its resolv.conf: 127.0.0.11), plus `dns: [<stand-in>]`, on both networks.
    let example_toml = example_file("dockns.toml");
    let dns = lab.run_image(
        "dns",
        &img,
        &[
            "--user",
            "65532:65532",
            "--group-add",
            &docker_gid,
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges:true",
            "-v",
            &mount(Path::new(SOCKET), SOCKET),
            "-v",
            &mount(Path::new(&example_toml), "/etc/dockns/dockns.toml"),
            "--network",
            &app,
            "--dns",
            &upstream_ip,
        ],
    );
    kit::docker::dk(&["network", "connect", &other, &dns]);
    let logs = || {
        let o = docker_raw(&["logs", &dns]);
        format!(
            "sidecar log:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let server = std::net::SocketAddr::new(kit::docker::ip_on(&dns, &app), 53);
    let pc = kit::docker::pid(&client);
    let ask =
        |name: &str| kit::docker::ask_from(pc, server, name, hickory_proto::rr::RecordType::A);
    let peer_ip = kit::docker::ip_on(&peer, &app);
    wait_for(
        "the sidecar to answer the client",
        Duration::from_secs(60),
        || {
            kit::docker::ask_from_opt(pc, server, &peer, hickory_proto::rr::RecordType::A)
                .is_some_and(|r| r.addrs() == BTreeSet::from([peer_ip]))
        },
        logs,
    );
    // The sidecar sees `other` too (it would answer the secret to a client there).
    wait_for(
        "the sidecar to know the secret container",
        Duration::from_secs(20),
        || {
            docker_raw(&[
                "exec",
                &dns,
                "/usr/local/bin/dockns",
                "records",
                "--admin",
                "http://127.0.0.1:9153",
                "--json",
            ])
            .stdout
            .windows(secret.len())
            .any(|w| w == secret.as_bytes())
        },
        logs,
    );
    // Forwarding through Docker's resolver still works for outside names.
    let r = ask(OUTSIDE_NAME);
    assert_eq!(r.answers, vec![OUTSIDE_IP.to_string()], "{r:?}\n{}", logs());

    // Scope: a name of `other` only is not the client's, whatever 127.0.0.11 tells the sidecar.
    let qualified = format!("{secret}.{other}");
    for name in [secret.as_str(), qualified.as_str()] {
        let r = ask(name);
        assert_eq!(
            (r.rcode, r.answers.len()),
            (hickory_proto::op::ResponseCode::NXDomain, 0),
            "{name} leaked to a client on {app} only (the secret is {secret_ip}): {r:?}"
        );
    }

    // Stale after stop: once the secret is gone, its address is not served either.
    kit::docker::dk(&["stop", &secret]);
    let gone = Instant::now();
    while gone.elapsed() < Duration::from_secs(3) {
        let r = ask(&secret);
        assert!(
            !r.addrs().contains(&secret_ip),
            "the stopped {secret}'s address {secret_ip} is still served: {r:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The sidecar kept running all along.
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.RestartCount}}",
            &dns
        ]),
        "true 0",
        "{}",
        logs()
    );
}
