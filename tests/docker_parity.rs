//! Docker parity II against a real daemon: links on user-defined networks (`run --link`,
//! compose-style endpoint links set through the API, `network connect --link`, restarts of
//! either side, disconnect), containers started without `--name`, and names that cannot be
//! encoded as DNS names. Every answer Docker gives locally is compared with Docker's own
//! 127.0.0.11, asked from the same client container; questions Docker would forward to the
//! host's resolver are never put to it (dockns is checked to forward them to its fake upstream,
//! as Docker would forward them).
//!
//! One test at a time (a lock); skipped loudly without Docker unless DOCKNS_REQUIRE_DOCKER=1.

mod kit;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use kit::docker::*;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const WAIT: Duration = Duration::from_secs(20);

/// dockns and Docker give the same answer to the same question from the same container.
fn same_as_docker(pid: u32, dockns: SocketAddr, name: &str, qtype: RecordType) {
    let ours = ask_from(pid, dockns, name, qtype);
    let theirs = ask_from(pid, docker_dns(), name, qtype);
    assert_eq!(
        (ours.rcode, &ours.answers),
        (theirs.rcode, &theirs.answers),
        "{name} {qtype}: dockns answered {ours:?}, Docker answered {theirs:?}"
    );
}

/// dockns does not know `name` for this client and forwards it upstream (the fake upstream
/// answers NXDOMAIN), as Docker forwards it.
fn forwarded(d: &Dockns, pid: u32, dockns: SocketAddr, name: &str) {
    let r = ask_from(pid, dockns, name, RecordType::A);
    assert_eq!(r.rcode, ResponseCode::NXDomain, "{name}: {r:?}");
    assert!(d.upstream.saw(name), "{name} was not forwarded");
}

fn addrs(list: &[IpAddr]) -> BTreeSet<IpAddr> {
    list.iter().copied().collect()
}

/// Runs a container with exactly this name on `network`; returns the name.
fn run_exact(lab: &Lab, name: &str, network: &str) -> String {
    lab.run_named(name, &["--network", network]);
    name.to_string()
}

/// Runs a container without `--name` (Docker generates one); returns its full ID.
fn run_anonymous(lab: &Lab, flags: &[&str]) -> String {
    let img = image();
    let mut args = vec!["run", "-d", "--stop-timeout", "1"];
    args.extend_from_slice(flags);
    args.push(&img);
    let id = dk(&args);
    lab.track_container(&id);
    id
}

/// Creates and starts a container through the Engine API with endpoint settings as compose
/// sends them (`NetworkingConfig.EndpointsConfig.<net>.Links`), not through the CLI.
fn create_with_endpoint_links(d: &Dockns, name: &str, network: &str, links: &[&str]) {
    let body: bollard::models::ContainerCreateBody = serde_json::from_value(serde_json::json!({
        "Image": image(),
        "HostConfig": {"NetworkMode": network},
        "NetworkingConfig": {"EndpointsConfig": {network: {"Links": links}}},
        "StopTimeout": 1
    }))
    .expect("create body");
    d.rt.block_on(async {
        let docker = bollard::Docker::connect_with_local_defaults().expect("docker client");
        let opts = bollard::query_parameters::CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        docker
            .create_container(Some(opts), body)
            .await
            .expect("create through the API");
        docker
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .expect("start through the API");
    });
}

#[test]
fn links_match_docker() {
    let _serial = serial();
    if !docker_available() {
        return;
    }
    let lab = Lab::new("links");
    let n = lab.network("n", &[]);
    let m = lab.network("m", &[]);
    let d = Dockns::start("");

    let tgt = lab.run("tgt", &["--network", &n, "--network-alias", "tgtalias"]);
    let peer = lab.run("peer", &["--network", &n]);
    let far = lab.run("far", &["--network", &m]);
    let other = lab.run("other", &["--network", &n]);
    // `--link` on a user-defined network: an alias, a link through a network alias, a link
    // whose alias is another container's name, and a link to a container that is not on n.
    let lnk = lab.run(
        "lnk",
        &[
            "--network",
            &n,
            "--link",
            &format!("{tgt}:db"),
            "--link",
            "tgtalias:viaalias",
            "--link",
            &format!("{tgt}:{peer}"),
            "--link",
            &format!("{far}:nothere"),
        ],
    );
    // `docker network connect --link`: a link on m, for m only.
    dk(&[
        "network",
        "connect",
        "--link",
        &format!("{far}:faraway"),
        &m,
        &lnk,
    ]);
    // Compose-style: endpoint links set through the API.
    let comp = lab.name("comp");
    lab.track_container(&comp);
    create_with_endpoint_links(&d, &comp, &n, &[&format!("{tgt}:api-db")]);

    let (gn, gm) = (d.on(&n), d.on(&m));
    let pl = pid(&lnk);
    let tgt_ip = ip_on(&tgt, &n);
    wait_for("dockns to know the links", WAIT, || {
        (ask_from(pl, gn, "faraway", RecordType::A).addrs() == addrs(&[ip_on(&far, &m)])
            && ask_from(pid(&comp), gn, "api-db", RecordType::A).addrs() == addrs(&[tgt_ip]))
        .then_some(())
    });

    for name in [
        "db".to_string(),
        format!("db.{n}"),
        "viaalias".into(),
        peer.clone(),
        tgt.clone(),
        "faraway".into(),
        format!("faraway.{m}"),
    ] {
        same_as_docker(pl, gn, &name, RecordType::A);
    }
    same_as_docker(pl, gm, "db", RecordType::AAAA);
    assert_eq!(
        ask_from(pl, gn, &peer, RecordType::A).addrs(),
        addrs(&[tgt_ip]),
        "a link alias comes before a container name"
    );
    same_as_docker(pid(&comp), gn, "api-db", RecordType::A);
    // The links are the linking container's alone, and only on the link's network.
    let po = pid(&other);
    for name in ["db", "viaalias", "faraway", "api-db"] {
        forwarded(&d, po, gn, name);
    }
    assert_eq!(
        ask_from(po, gn, &peer, RecordType::A).addrs(),
        addrs(&[ip_on(&peer, &n)])
    );
    forwarded(&d, pl, gn, &format!("db.{m}"));
    forwarded(&d, pl, gn, &format!("faraway.{n}"));
    // The target of "nothere" is not on n: Docker does not answer it, nor does dockns.
    forwarded(&d, pl, gn, "nothere");

    // The target restarts (its address may change): the link follows it.
    dk(&["stop", "-t", "1", &tgt]);
    let filler = lab.run("filler", &["--network", &n]);
    dk(&["start", &tgt]);
    let tgt_ip = ip_on(&tgt, &n);
    wait_for("the link to follow the restarted target", WAIT, || {
        (ask_from(pl, gn, "db", RecordType::A).addrs() == addrs(&[tgt_ip])).then_some(())
    });
    same_as_docker(pl, gn, "db", RecordType::A);
    let _ = filler;

    // The linking container restarts: its links are kept.
    dk(&["restart", "-t", "1", &lnk]);
    let pl = pid(&lnk);
    wait_for("the restarted linking container", WAIT, || {
        (ask_from(pl, gn, "db", RecordType::A).addrs() == addrs(&[tgt_ip])).then_some(())
    });
    for name in ["db", "viaalias", "faraway"] {
        same_as_docker(pl, gn, name, RecordType::A);
    }

    // Disconnected from m: the link made there is gone, the others stay.
    dk(&["network", "disconnect", &m, &lnk]);
    wait_for("the link on m to go", WAIT, || {
        (ask_from(pl, gn, "faraway", RecordType::A).rcode == ResponseCode::NXDomain).then_some(())
    });
    forwarded(&d, pl, gn, "faraway");
    same_as_docker(pl, gn, "db", RecordType::A);
}

#[test]
fn anonymous_containers_match_docker() {
    let _serial = serial();
    if !docker_available() {
        return;
    }
    let lab = Lab::new("anon");
    let n = lab.network("n", &[]);
    let d = Dockns::start("");
    let with_alias = run_anonymous(
        &lab,
        &[
            "--network",
            &n,
            "--network-alias",
            "anonalias",
            "--hostname",
            "anonhost",
        ],
    );
    let bare = run_anonymous(&lab, &["--network", &n]);
    let client = lab.run("c", &["--network", &n]);
    let gn = d.on(&n);
    let pc = pid(&client);
    let (short1, short2) = (&with_alias[..12], &bare[..12]);
    wait_for("dockns to know both", WAIT, || {
        (ask_from(pc, gn, short2, RecordType::A).answers.len() == 1
            && ask_from(pc, gn, "anonalias", RecordType::A).answers.len() == 1)
            .then_some(())
    });
    for name in [short1, "anonalias", "anonhost", short2] {
        same_as_docker(pc, gn, name, RecordType::A);
        same_as_docker(pc, gn, &format!("{name}.{n}"), RecordType::A);
    }
    // PTR: the first alias (Docker 20.10), not the generated name.
    for id in [&with_alias, &bare] {
        let rev = dockns::model::reverse_name(ip_on(id, &n));
        same_as_docker(pc, gn, &rev, RecordType::PTR);
    }
    assert_eq!(
        ask_from(
            pc,
            gn,
            &dockns::model::reverse_name(ip_on(&bare, &n)),
            RecordType::PTR
        )
        .answers,
        vec![format!("{short2}.{n}.")]
    );
    // The generated names are not in DNS: forwarded, as Docker forwards them.
    for id in [&with_alias, &bare] {
        let generated = inspect(id, "{{.Name}}").trim_start_matches('/').to_string();
        forwarded(&d, pc, gn, &generated);
        forwarded(&d, pc, gn, &format!("{generated}.{n}"));
    }
    // A named container is still answered by name.
    same_as_docker(pc, gn, &client, RecordType::A);
    // Renamed, an anonymous container is named: Docker answers the new name, and so does dockns.
    let renamed = lab.name("renamed");
    lab.track_container(&renamed);
    dk(&["rename", &bare, &renamed]);
    wait_for("the renamed container", WAIT, || {
        (ask_from(pc, gn, &renamed, RecordType::A).answers.len() == 1).then_some(())
    });
    same_as_docker(pc, gn, &renamed, RecordType::A);
    let rev = dockns::model::reverse_name(ip_on(&bare, &n));
    same_as_docker(pc, gn, &rev, RecordType::PTR);
}

#[test]
fn names_that_are_not_dns_names_match_docker() {
    let _serial = serial();
    if !docker_available() {
        return;
    }
    let lab = Lab::new("long");
    let n = lab.network("n", &[]);
    let d = Dockns::start("");
    let base = format!("{}-", lab.prefix);
    // One label of 64 bytes; one of exactly 63; and a dotted name whose labels are all short
    // but which is over 255 bytes once `.<network>.` is added (the PTR target).
    let label64 = run_exact(&lab, &format!("{base}{}", "l".repeat(64 - base.len())), &n);
    let label63 = run_exact(&lab, &format!("{base}{}", "k".repeat(63 - base.len())), &n);
    // 239 bytes: Docker 20.10 writes answers without name compression, and a longer name would
    // not fit its 512-byte UDP answer (it would answer truncated instead).
    let long_dotted = {
        let mut s = format!("{base}d");
        while s.len() < 239 {
            if 239 - s.len() >= 2 {
                s.push('.');
            }
            s.push_str(&"d".repeat(50.min(239 - s.len())));
        }
        s
    };
    assert_eq!(long_dotted.len(), 239);
    assert!(
        long_dotted.len() + n.len() + 3 > 255,
        "the PTR target {long_dotted}.{n}. must not fit in 255 bytes"
    );
    let dotted = run_exact(&lab, &long_dotted, &n);
    let client = lab.run("c", &["--network", &n]);
    let gn = d.on(&n);
    let pc = pid(&client);
    let short64 = id(&label64)[..12].to_string();
    wait_for("dockns to know them", WAIT, || {
        (ask_from(pc, gn, &short64, RecordType::A).answers.len() == 1).then_some(())
    });

    for c in [&label64, &dotted] {
        let rev = dockns::model::reverse_name(ip_on(c, &n));
        let ours = ask_from(pc, gn, &rev, RecordType::PTR);
        let theirs = ask_from_opt(pc, docker_dns(), &rev, RecordType::PTR);
        // Docker cannot write the answer: 20.10 sends nothing, current Docker SERVFAIL.
        assert!(
            theirs
                .as_ref()
                .is_none_or(|r| r.rcode == ResponseCode::ServFail),
            "{c}: Docker answered {theirs:?}"
        );
        assert_eq!(ours.rcode, ResponseCode::ServFail, "{c}: {ours:?}");
        assert!(ours.answers.is_empty());
        // Its other names still answer, as in Docker.
        let short = id(c)[..12].to_string();
        same_as_docker(pc, gn, &short, RecordType::A);
    }
    // The dotted name itself fits in a question.
    same_as_docker(pc, gn, &dotted, RecordType::A);
    // 63 bytes is a valid label: answered by both.
    let rev = dockns::model::reverse_name(ip_on(&label63, &n));
    same_as_docker(pc, gn, &rev, RecordType::PTR);
    same_as_docker(pc, gn, &label63, RecordType::A);
}
