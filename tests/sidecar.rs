//! The container image and the compose sidecar example against a real dockerd, with plain
//! `docker run` commands (no compose tool here): the offline image is built from the test's
//! dockns binary, dockns runs as a non-root sidecar on a user network the test creates, and an
//! application container resolves through it with glibc (`getent`) and `dockns query`.
//!
//! The sidecar serves the example's names from a static config with fixed addresses (`--ip`),
//! so this test checks the image and the plumbing on their own; everything else (image,
//! non-root, read-only root, network, resolv.conf, admin API over the network) is what the
//! example uses. The Docker source's sidecar mode itself is tested in `tests/docker.rs`
//! (`sidecar_listens_on_its_own_addresses`).
//!
//! Skips loudly without Docker, unless DOCKNS_REQUIRE_DOCKER=1. Every network, container and
//! image carries a unique prefix and is removed by a Drop guard, even on failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dockns");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

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

/// The static stand-in for sidecar mode: the example's names at fixed addresses.
fn sidecar_config(net: &str) -> String {
    format!(
        r#"# What the sidecar would learn from Docker, written out (static mode).
[server]
listen = ["0.0.0.0:53"]
ttl = 5

[upstream]
servers = ["127.0.0.1:9"]   # nothing there: the test never forwards on purpose
timeout_ms = 300
budget_ms = 600

[admin]
listen = "0.0.0.0:9153"

[[network]]
name = "appnet"
subnet = "{net}.0/24"

[[network.container]]
name = "db"
ipv4 = ["{net}.10"]
aliases = ["database", "postgres"]

[[network.container]]
name = "web-1"
ipv4 = ["{net}.21"]
aliases = ["web"]

[[network.container]]
name = "web-2"
ipv4 = ["{net}.22"]
aliases = ["web"]

[[network.container]]
name = "web-3"
ipv4 = ["{net}.23"]
aliases = ["web"]

[[network.container]]
name = "app"
ipv4 = ["{net}.5"]

[[network]]
name = "othernet"

[[network.container]]
name = "secret"
ipv4 = ["10.214.0.9"]
"#
    )
}

#[test]
fn sidecar_image_answers_an_app_container() {
    if !docker_ready() {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let prefix = format!("dockns-ops-{}-{}", std::process::id(), nanos % 100_000);
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let mut guard = Cleanup {
        containers: vec![],
        networks: vec![],
        images: vec![],
        dir: dir.clone(),
    };

    // Images: dockns alone, and a client image with glibc's getent next to dockns.
    let img = format!("{prefix}-img:1");
    let app_img = format!("{prefix}-app:1");
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

    // A user network with a free /24 (the test owns it; nothing else is ever addressed).
    let net_name = format!("{prefix}-appnet");
    let mut net = String::new();
    for attempt in 0..20u32 {
        let third = (std::process::id() + nanos + attempt * 37) % 200 + 20;
        let candidate = format!("10.213.{third}");
        let out = docker_raw(&[
            "network",
            "create",
            "--subnet",
            &format!("{candidate}.0/24"),
            &net_name,
        ]);
        if out.status.success() {
            net = candidate;
            break;
        }
    }
    assert!(!net.is_empty(), "could not create a test network");
    guard.networks.push(net_name.clone());

    let cfg = dir.join("dockns.toml");
    write(&cfg, &sidecar_config(&net));
    let idle = dir.join("idle.toml");
    write(
        &idle,
        "[server]\nlisten = [\"127.0.0.1:5300\"]\n[upstream]\nservers = [\"127.0.0.1:9\"]\n",
    );
    let resolv = dir.join("resolv.conf");
    write(
        &resolv,
        &format!("nameserver {net}.53\noptions ndots:0 timeout:2 attempts:2\n"),
    );
    let mount = |p: &Path, at: &str| format!("{}:{at}:ro", p.display());

    // The sidecar, as in examples/compose-sidecar: non-root, read-only root, no capabilities.
    let dns = format!("{prefix}-dns");
    guard.containers.push(dns.clone());
    docker(&[
        "run",
        "-d",
        "--name",
        &dns,
        "--network",
        &net_name,
        "--ip",
        &format!("{net}.53"),
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        "-v",
        &mount(&cfg, "/etc/dockns/dockns.toml"),
        &img,
    ]);
    // The database and three web replicas at the addresses the tables name (idle processes).
    for (name, ip, alias) in [
        ("db", "10", "database"),
        ("web-1", "21", "web"),
        ("web-2", "22", "web"),
        ("web-3", "23", "web"),
    ] {
        let c = format!("{prefix}-{name}");
        guard.containers.push(c.clone());
        docker(&[
            "run",
            "-d",
            "--name",
            &c,
            "--network",
            &net_name,
            "--ip",
            &format!("{net}.{ip}"),
            "--network-alias",
            alias,
            "-v",
            &mount(&idle, "/etc/dockns/dockns.toml"),
            &app_img,
        ]);
    }

    // Ready: poll /readyz over the network from the host.
    let admin = format!("http://{net}.53:9153");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = rt.block_on(dockns::cli::http_get(&admin, "/readyz")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar never became ready; its log:\n{}",
            String::from_utf8_lossy(&docker_raw(&["logs", &dns]).stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The application container asks through its mounted resolv.conf, like the example's app.
    let app = |entry: &str, args: &[&str]| -> Output {
        let app_name = format!("{prefix}-app");
        let ip = format!("{net}.5");
        let resolv_mount = mount(&resolv, "/etc/resolv.conf");
        let mut v = vec![
            "run",
            "--rm",
            "--name",
            &app_name,
            "--network",
            &net_name,
            "--ip",
            &ip,
            "-v",
            &resolv_mount,
            "--entrypoint",
            entry,
            &app_img,
        ];
        v.extend_from_slice(args);
        docker_raw(&v)
    };
    let getent = |args: &[&str]| -> (bool, String) {
        let o = app("/usr/bin/getent", args);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (ok, out) = getent(&["hosts", "db"]);
    assert!(ok, "getent hosts db failed");
    assert_eq!(
        out.split_whitespace().next(),
        Some(format!("{net}.10").as_str()),
        "{out}"
    );
    let (ok, out) = getent(&["hosts", "database"]);
    assert!(ok && out.starts_with(&format!("{net}.10 ")), "{out}");
    let (ok, out) = getent(&["hosts", "db.appnet"]);
    assert!(ok && out.starts_with(&format!("{net}.10 ")), "{out}");
    let (ok, out) = getent(&["ahostsv4", "web"]);
    assert!(ok, "getent ahostsv4 web failed");
    let replicas: BTreeSet<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let want: BTreeSet<String> = ["21", "22", "23"]
        .iter()
        .map(|i| format!("{net}.{i}"))
        .collect();
    assert_eq!(
        replicas,
        want.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "{out}"
    );
    // A name on a network the app is not attached to is not answered from the tables.
    let (ok, out) = getent(&["hosts", "secret"]);
    assert!(!ok, "the app must not see othernet's names: {out}");

    // dockns query from inside the app: the answer, and the scope dockns chose for it.
    let o = app(
        "/usr/local/bin/dockns",
        &[
            "query",
            "web",
            "--server",
            &format!("{net}.53"),
            "--admin",
            &admin,
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("STATUS: NOERROR") && out.contains("answers: 3"),
        "{out}"
    );
    assert!(
        out.contains(&format!(";; SCOPE: client {net}.5"))
            && out.contains("client address belongs to a known container"),
        "{out}"
    );
    assert!(out.contains(";; VIEW: appnet;"), "{out}");

    // The host reads the tables and the metrics over the network.
    let o = Command::new(BIN)
        .args(["records", "--admin", &admin, "--network", "appnet"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for c in ["db", "web-1", "web-2", "web-3", "app"] {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(c)),
            "{c} missing:\n{table}"
        );
    }
    let (status, metrics) = rt
        .block_on(dockns::cli::http_get(&admin, "/metrics"))
        .unwrap();
    assert_eq!(status, 200);
    let answered: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("dockns_queries_total{transport=\"udp\",qtype=\"A\",rcode=\"NOERROR\"}")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(answered >= 5.0, "A answers counted: {answered}\n{metrics}");

    // The sidecar never crashed along the way.
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &dns]),
        "true"
    );
    drop(guard);
}
