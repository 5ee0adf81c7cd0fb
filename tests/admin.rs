//! The admin API of an in-process dockns (DNS and admin both on 127.0.0.1:0): exact metric
//! counts after a known mix of queries, `/v1/records` following reloads, readiness, errors, and
//! the `records` / `query` subcommands of the real binary talking to it.

mod kit;

use dockns::admin::{ExplainDoc, RecordsDoc};
use dockns::cli::{get_json, http_get};
use hickory_proto::op::{Edns, ResponseCode};
use hickory_proto::rr::RecordType;
use kit::aio::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dockns");
const ADMIN: &str = "\n[admin]\nlisten = \"127.0.0.1:0\"\n";

fn base(ts: &TestServer) -> String {
    format!("http://{}", ts.server.admin_addr().expect("admin runs"))
}

/// Parses the exposition text into `name{labels}` → value, checking every line's shape.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (k, v) = line.rsplit_once(' ').expect("sample line has a value");
        let v: f64 = v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(m.insert(k.to_string(), v).is_none(), "duplicate sample {k}");
    }
    m
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("missing sample {key}; have {:#?}", m.keys()))
}

fn queries_total(m: &BTreeMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("dockns_queries_total{"))
        .map(|(_, v)| v)
        .sum()
}

/// Scrapes until `done` holds (at most 3 s), then returns the last scrape.
async fn scrape_until(
    ts: &TestServer,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let m = scrape(ts).await;
        if done(&m) || std::time::Instant::now() > until {
            return m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn scrape(ts: &TestServer) -> BTreeMap<String, f64> {
    let (status, body) = http_get(&base(ts), "/metrics").await.expect("scrape");
    assert_eq!(status, 200);
    parse_metrics(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_mix_of_queries_exactly() {
    let silent = fake_upstream(Behavior::Dead).await;
    let good = fake_upstream(Behavior::AnswerWith("192.0.2.7".parse().unwrap())).await;
    let ts = start(&(demo_toml(&[silent.addr, good.addr], "") + ADMIN)).await;
    let a = ts.addr;

    for _ in 0..5 {
        assert_eq!(v4(&ask(a, "api", RecordType::A).await).len(), 3);
    }
    for _ in 0..2 {
        ask(a, "db.demo", RecordType::AAAA).await;
    }
    for _ in 0..3 {
        let r = ask(a, "nope.docker", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    ask(a, "api", RecordType::MX).await;
    // Forwarded: the first waits for the silent upstream to time out, then the good one answers;
    // the second comes from the forward cache ([upstream] cache_size defaults to 10000).
    for _ in 0..2 {
        let r = ask(a, "example.com", RecordType::A).await;
        assert_eq!(
            v4(&r),
            vec!["192.0.2.7".parse::<std::net::Ipv4Addr>().unwrap()]
        );
    }
    for _ in 0..2 {
        ask_tcp(a, "web", RecordType::A).await;
    }
    ask_tcp(a, "example.org", RecordType::TXT).await;
    // EDNS version 1: BADVERS, an extended rcode that lives in the OPT record.
    let mut q =
        hickory_proto::op::Message::from_vec(&query_bytes(7, "api", RecordType::A, None)).unwrap();
    let mut e = Edns::new();
    e.set_version(1);
    q.set_edns(e);
    let r = udp_raw(a, &q.to_vec().unwrap(), WAIT)
        .await
        .expect("BADVERS reply");
    assert_eq!(r[3] & 0x0F, 0);
    // Not a DNS message: dropped without reply.
    assert!(
        udp_raw(a, b"\x01\x02\x03", std::time::Duration::from_millis(300))
            .await
            .is_none()
    );

    // Every reply above was received, so it was counted (replies are counted before they are
    // sent); scrape until all 17 show, in case a scrape races a worker's counter update.
    let m = scrape_until(&ts, |m| queries_total(m) >= 17.0).await;
    let q = |t: &str, qt: &str, rc: &str| {
        format!("dockns_queries_total{{transport=\"{t}\",qtype=\"{qt}\",rcode=\"{rc}\"}}")
    };
    assert_eq!(get(&m, &q("udp", "A", "NOERROR")), 7.0);
    assert_eq!(get(&m, &q("udp", "AAAA", "NOERROR")), 2.0);
    assert_eq!(get(&m, &q("udp", "A", "NXDOMAIN")), 3.0);
    assert_eq!(get(&m, &q("udp", "MX", "NOERROR")), 1.0);
    assert_eq!(get(&m, &q("udp", "A", "BADVERS")), 1.0);
    assert_eq!(get(&m, &q("tcp", "A", "NOERROR")), 2.0);
    assert_eq!(get(&m, &q("tcp", "TXT", "NOERROR")), 1.0);
    assert_eq!(queries_total(&m), 17.0, "no other reply was counted");

    assert_eq!(get(&m, "dockns_answers_total{source=\"local\"}"), 14.0);
    assert_eq!(get(&m, "dockns_answers_total{source=\"upstream\"}"), 2.0);
    assert_eq!(get(&m, "dockns_answers_total{source=\"cache\"}"), 1.0);
    assert_eq!(
        get(&m, "dockns_answer_duration_seconds_count{source=\"local\"}"),
        14.0
    );
    assert_eq!(
        get(
            &m,
            "dockns_answer_duration_seconds_bucket{source=\"upstream\",le=\"+Inf\"}"
        ),
        2.0
    );
    // The first forward waited out a 300 ms upstream timeout.
    assert!(
        get(
            &m,
            "dockns_answer_duration_seconds_sum{source=\"upstream\"}"
        ) >= 0.3
    );
    assert!(
        get(
            &m,
            "dockns_answer_duration_seconds_bucket{source=\"upstream\",le=\"0.25\"}"
        ) <= 2.0
    );
    assert_eq!(get(&m, "dockns_forwarded_total"), 3.0);
    assert_eq!(get(&m, "dockns_dropped_total"), 1.0);
    assert_eq!(get(&m, "dockns_refused_total"), 0.0);
    assert_eq!(get(&m, "dockns_rate_limited_total"), 0.0);

    let (s, g) = (silent.addr.to_string(), good.addr.to_string());
    let up = |name: &str, server: &str| format!("{name}{{server=\"{server}\"}}");
    // Both uncached forwards (example.com over UDP, example.org over TCP) timed out on the
    // silent server first: two failures, fewer than health::DEAD_AFTER (3), so it still counts
    // as up (one lost packet must not move traffic).
    assert_eq!(get(&m, &up("dockns_upstream_queries_total", &s)), 2.0);
    assert_eq!(get(&m, &up("dockns_upstream_timeouts_total", &s)), 2.0);
    assert_eq!(get(&m, &up("dockns_upstream_up", &s)), 1.0);
    assert_eq!(get(&m, &up("dockns_upstream_queries_total", &g)), 2.0);
    assert_eq!(get(&m, &up("dockns_upstream_timeouts_total", &g)), 0.0);
    assert_eq!(get(&m, &up("dockns_upstream_up", &g)), 1.0);
    assert_eq!(
        get(
            &m,
            &format!("dockns_upstream_errors_total{{server=\"{g}\",kind=\"io\"}}")
        ),
        0.0
    );

    // Tables: 2 networks; 3 api + db + web + 40 many + vault = 46 containers, one endpoint each.
    let snap = ts.server.publisher.snapshot();
    assert_eq!(get(&m, "dockns_networks"), 2.0);
    assert_eq!(get(&m, "dockns_containers"), 46.0);
    assert_eq!(get(&m, "dockns_endpoints"), 46.0);
    assert_eq!(get(&m, "dockns_names"), snap.entry_count() as f64);
    assert!(snap.entry_count() > 46 * 2);
    assert_eq!(get(&m, "dockns_listeners"), 1.0);
    assert_eq!(get(&m, "dockns_ready"), 1.0);
    assert_eq!(get(&m, "dockns_cache_enabled"), 1.0);
    assert!(
        !m.keys().any(|k| k.starts_with("dockns_docker_")),
        "no Docker source configured"
    );

    // The classic totals agree with the detailed counters.
    let t = ts.server.stats.totals();
    assert_eq!(
        (t.udp_local, t.tcp_local, t.errors, t.forwarded),
        (11, 2, 1, 3)
    );
    ts.stop().await;
}

fn static_toml(containers: &[(&str, &str, &str)], extra_net: bool) -> String {
    let mut s = String::from(
        "[server]\nttl = 5\n\n[upstream]\nservers = [\"127.0.0.1:9\"]\n\n[[network]]\nname = \"appnet\"\nsubnet = \"10.77.0.0/24\"\n",
    );
    for (name, ip, alias) in containers {
        s.push_str(&format!(
            "\n[[network.container]]\nname = \"{name}\"\nipv4 = [\"{ip}\"]\naliases = [\"{alias}\"]\n"
        ));
    }
    if extra_net {
        s.push_str("\n[[network]]\nname = \"batch\"\ninternal = true\n\n[[network.container]]\nname = \"worker\"\nipv4 = [\"10.78.0.5\"]\nhealth = \"unhealthy\"\n");
    }
    s + ADMIN
}

fn names_of(doc: &RecordsDoc, net: &str) -> BTreeMap<String, Vec<String>> {
    doc.networks
        .iter()
        .find(|n| n.name == net)
        .unwrap_or_else(|| panic!("network {net} missing"))
        .names
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                n.addresses.iter().map(|a| a.to_string()).collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_follow_reloads() {
    let ts = start(&static_toml(
        &[
            ("web-1", "10.77.0.2", "web"),
            ("db", "10.77.0.3", "postgres"),
        ],
        false,
    ))
    .await;
    let b = base(&ts);
    let doc: RecordsDoc = get_json(&b, "/v1/records").await.unwrap();
    assert_eq!(doc.networks.len(), 1);
    let net = &doc.networks[0];
    assert_eq!(net.name, "appnet");
    let eps: Vec<(&str, &str)> = net
        .endpoints
        .iter()
        .map(|e| (e.container.as_str(), e.ipv4[0].as_str()))
        .collect();
    assert_eq!(eps, vec![("db", "10.77.0.3"), ("web-1", "10.77.0.2")]);
    assert_eq!(net.endpoints[0].names, vec!["db", "postgres"]);
    let names = names_of(&doc, "appnet");
    assert_eq!(names["web"], vec!["10.77.0.2"]);
    assert_eq!(names["postgres.appnet"], vec!["10.77.0.3"]);
    assert_eq!(names.len(), 8, "{names:?}");
    assert_eq!(net.reverse.len(), 2);
    assert_eq!(net.reverse[0].name, "2.0.77.10.in-addr.arpa");
    assert_eq!(net.reverse[0].ptr, "web-1.appnet.");
    let (status, body) = http_get(&b, "/v1/records/batch").await.unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("no network named \\\"batch\\\""), "{body}");

    // A second replica, db gone, a new internal network with an unhealthy container.
    let new = config(&static_toml(
        &[("web-1", "10.77.0.2", "web"), ("web-2", "10.77.0.4", "web")],
        true,
    ));
    ts.server.reload(new).expect("reload");
    let doc: RecordsDoc = get_json(&b, "/v1/records").await.unwrap();
    assert_eq!(
        doc.networks
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        vec!["appnet", "batch"]
    );
    let names = names_of(&doc, "appnet");
    assert_eq!(names["web"], vec!["10.77.0.2", "10.77.0.4"]);
    assert!(!names.contains_key("db") && !names.contains_key("postgres"));
    let batch: RecordsDoc = get_json(&b, "/v1/records/batch").await.unwrap();
    assert_eq!(batch.networks.len(), 1);
    assert!(batch.networks[0].internal);
    assert_eq!(batch.networks[0].endpoints[0].health, "unhealthy");
    // The only replica is unhealthy: it is still answered (health filtering keeps the last one).
    assert_eq!(names_of(&batch, "batch")["worker"], vec!["10.78.0.5"]);
    // The DNS side agrees with the document.
    let r = ask(ts.addr, "web", RecordType::A).await;
    let mut got: Vec<String> = v4(&r).iter().map(|a| a.to_string()).collect();
    got.sort();
    assert_eq!(got, names["web"]);
    let m = scrape(&ts).await;
    assert_eq!(get(&m, "dockns_networks"), 2.0);
    assert_eq!(get(&m, "dockns_endpoints"), 3.0);
    assert_eq!(
        get(&m, "dockns_snapshot_generation"),
        ts.server.publisher.snapshot().generation as f64
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_reports_scope_and_result() {
    let ts = start(&(demo_toml(&[], "") + ADMIN)).await;
    let b = base(&ts);
    let host: ExplainDoc = get_json(&b, "/v1/explain?name=api&type=A").await.unwrap();
    assert_eq!(host.result, "answer");
    assert_eq!(host.answers, vec!["10.89.0.11", "10.89.0.12", "10.89.0.13"]);
    assert_eq!(host.network.as_deref(), Some("demo"));
    assert!(host.scope.starts_with("host view"), "{}", host.scope);
    // vault sits on the internal network only: it cannot see api, and nothing is forwarded
    // (no DNS server of its own: SERVFAIL, as the server answers it).
    let vault: ExplainDoc = get_json(&b, "/v1/explain?name=api&from=10.90.0.2")
        .await
        .unwrap();
    assert_eq!(vault.result, "servfail");
    assert_eq!(vault.view, vec!["backoffice"]);
    assert!(!vault.forwards_unknown);
    assert!(vault.scope.contains("known container"), "{}", vault.scope);
    let ptr: ExplainDoc = get_json(&b, "/v1/explain?name=10.89.0.2&type=ptr")
        .await
        .unwrap();
    assert_eq!(ptr.name, "2.0.89.10.in-addr.arpa");
    assert_eq!(ptr.answers, vec!["db.demo."]);
    let nodata: ExplainDoc = get_json(&b, "/v1/explain?name=web&type=TXT").await.unwrap();
    assert_eq!(nodata.result, "nodata");
    let fwd: ExplainDoc = get_json(&b, "/v1/explain?name=example.com").await.unwrap();
    assert_eq!(fwd.result, "forward");
    for (path, want) in [
        ("/v1/explain", 400),
        ("/v1/explain?name=a&type=BOGUS", 400),
        ("/v1/explain?name=a&from=not-an-ip", 400),
        ("/v1/explain?name=a..b", 400),
        ("/v1/explain?bad=1", 400),
        ("/nope", 404),
        ("/healthz", 200),
        ("/readyz", 200),
    ] {
        let (status, body) = http_get(&b, path).await.unwrap();
        assert_eq!(status, want, "{path}: {body}");
    }
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_docker_sync() {
    let toml =
        demo_toml(&[], "") + ADMIN + "\n[docker]\nendpoint = \"unix:///nonexistent/docker.sock\"\n";
    let ts = start(&toml).await;
    let b = base(&ts);
    let (status, body) = http_get(&b, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("initial Docker sync"));
    assert_eq!(http_get(&b, "/healthz").await.unwrap().0, 200);
    ts.server.metrics.docker.event_applied("container");
    ts.server.metrics.docker.reconnected();
    ts.server.metrics.docker.resynced(3);
    ts.server.metrics.set_synced();
    assert_eq!(http_get(&b, "/readyz").await.unwrap().0, 200);
    let m = scrape(&ts).await;
    assert_eq!(get(&m, "dockns_ready"), 1.0);
    assert_eq!(
        get(&m, "dockns_docker_events_total{type=\"container\"}"),
        1.0
    );
    assert_eq!(get(&m, "dockns_docker_reconnects_total"), 1.0);
    assert_eq!(get(&m, "dockns_docker_resync_drift_total"), 3.0);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_in_use_is_one_clear_line() {
    let ts = start(&(demo_toml(&[], "") + ADMIN)).await;
    let taken = ts.server.admin_addr().unwrap();
    let toml = demo_toml(&[], "") + &format!("\n[admin]\nlisten = \"{taken}\"\n");
    let err = match dockns::server::Server::start(config(&toml)) {
        Ok(_) => panic!("second admin bind on {taken} succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.starts_with(&format!("cannot listen for the admin API on {taken} (tcp)")),
        "{err}"
    );
    assert!(
        err.contains("[admin] listen") && !err.contains('\n'),
        "{err}"
    );
    ts.stop().await;
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run dockns");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_query_subcommands_talk_to_a_running_dockns() {
    let good = fake_upstream(Behavior::AnswerWith("192.0.2.9".parse().unwrap())).await;
    let ts = start(&(demo_toml(&[good.addr], "") + ADMIN)).await;
    let b = base(&ts);
    let dns: SocketAddr = ts.addr;
    let (b2, server) = (b.clone(), dns.to_string());
    let outs = tokio::task::spawn_blocking(move || {
        vec![
            run(&["records", "--admin", &b2, "--network", "backoffice"]),
            run(&["records", "--admin", &b2, "--json"]),
            run(&["query", "api", "--server", &server, "--admin", &b2]),
            run(&[
                "query",
                "api",
                "--server",
                &server,
                "--admin",
                &b2,
                "--from",
                "10.90.0.2",
            ]),
            run(&[
                "query",
                "example.com",
                "--server",
                &server,
                "--admin",
                &b2,
                "--from",
                "10.89.0.3",
                "--tcp",
            ]),
            run(&["records", "--admin", &b2, "--network", "nope"]),
            run(&[
                "query",
                "api",
                "--server",
                &server,
                "--admin",
                "http://127.0.0.1:9",
            ]),
        ]
    })
    .await
    .unwrap();

    let (ok, out, err) = &outs[0];
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "NETWORK",
            "CONTAINER",
            "ID",
            "HEALTH",
            "IPV4",
            "IPV6",
            "NAMES"
        ]
    );
    assert!(
        lines[1].starts_with("backoffice (internal)  vault"),
        "{out}"
    );
    // Columns are aligned: the IPV4 column starts at the same offset in header and row.
    assert_eq!(lines[0].find("IPV4"), lines[1].find("10.90.0.2"), "{out}");
    assert!(
        out.contains("1 network(s), 1 endpoint(s), 2 name(s)"),
        "{out}"
    );

    let (ok, out, _) = &outs[1];
    assert!(ok);
    let doc: RecordsDoc = serde_json::from_str(out).expect("--json prints the document");
    assert_eq!(doc.networks.len(), 2);

    let (ok, out, err) = &outs[2];
    assert!(ok, "{err}");
    assert!(
        out.contains(";; STATUS: NOERROR, flags: qr aa rd ra; answers: 3"),
        "{out}"
    );
    assert!(out.contains("IN A 10.89.0.1"), "{out}");
    assert!(out.contains(";; SCOPE: client 127.0.0.1"), "{out}");
    assert!(out.contains("host view"), "{out}");
    assert!(out.contains(";; TABLES: ANSWER"), "{out}");

    let (ok, out, err) = &outs[3];
    assert!(ok, "{err}");
    assert!(out.contains("as client 10.90.0.2"), "{out}");
    assert!(
        out.contains("client address belongs to a known container"),
        "{out}"
    );
    assert!(
        out.contains(";; VIEW: backoffice; unknown names get SERVFAIL"),
        "{out}"
    );
    assert!(out.contains(";; TABLES: SERVFAIL"), "{out}");

    let (ok, out, err) = &outs[4];
    assert!(ok, "{err}");
    assert!(out.contains(";; TABLES: FORWARD"), "{out}");
    assert!(out.contains("(tcp)"), "{out}");
    assert!(out.contains("IN A 192.0.2.9"), "{out}");

    let (ok, _, err) = &outs[5];
    assert!(!ok);
    assert!(
        err.contains("HTTP 404") && err.contains("no network named"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // Admin unreachable: the live answer still prints, with a note instead of the scope.
    let (ok, out, _) = &outs[6];
    assert!(ok);
    assert!(
        out.contains("answers: 3") && out.contains(";; no scope explanation: cannot reach"),
        "{out}"
    );
    ts.stop().await;
}

#[test]
fn every_subcommand_has_examples_and_a_version() {
    for sub in ["serve", "check-config", "records", "query"] {
        let (ok, out, _) = run(&[sub, "--help"]);
        assert!(ok, "{sub} --help");
        assert!(
            out.contains("Example"),
            "{sub} --help has no examples:\n{out}"
        );
    }
    let (ok, out, _) = run(&["--version"]);
    assert!(ok && out.starts_with("dockns "), "{out}");
}

// ---- Access and scope (issue 17) ----
//
// Static networks whose container addresses are loopback addresses stand in for containers:
// `front` (web 127.0.1.2, api 127.0.1.3) and `vault` (treasury 127.0.1.10, ledger 127.0.1.11). A
// client socket bound to one of those addresses is that container asking; 127.0.0.2 is a
// loopback address that is neither allowed nor a container.

const FRONT_WEB: &str = "127.0.1.2";
const BACK_DB: &str = "127.0.1.10";
const STRANGER: &str = "127.0.0.2";

fn scoped_toml(admin: &str) -> String {
    format!(
        "[server]\nttl = 5\n[upstream]\nservers = [\"127.0.0.1:9\"]\n\
         [[network]]\nname = \"front\"\n\
         [[network.container]]\nname = \"web\"\nipv4 = [\"{FRONT_WEB}\"]\n\
         [[network.container]]\nname = \"api\"\nipv4 = [\"127.0.1.3\"]\n\
         [[network]]\nname = \"vault\"\n\
         [[network.container]]\nname = \"treasury\"\nipv4 = [\"{BACK_DB}\"]\n\
         [[network.container]]\nname = \"ledger\"\nipv4 = [\"127.0.1.11\"]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{admin}"
    )
}

/// Every name of the `vault` network that a leak would show.
const BACK_NAMES: [&str; 4] = ["vault", "treasury", "ledger", "127.0.1.1"];

/// One GET over a fresh connection whose source address is `from`; status, headers, body.
async fn get_from(
    from: &str,
    admin: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    let mut s = tokio::time::timeout(WAIT, sock.connect(admin))
        .await
        .expect("connect in time")
        .expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: dockns\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("reply in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP reply");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_ascii_lowercase(), body.to_string())
}

async fn records_from(from: &str, admin: SocketAddr, token: Option<&str>) -> RecordsDoc {
    let (status, _, body) = get_from(from, admin, "/v1/records", token).await;
    assert_eq!(status, 200, "{from}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn net_names(doc: &RecordsDoc) -> Vec<&str> {
    doc.networks.iter().map(|n| n.name.as_str()).collect()
}

const EVERY_PATH: [&str; 8] = [
    "/metrics",
    "/healthz",
    "/readyz",
    "/v1/records",
    "/v1/records/vault",
    "/v1/explain?name=treasury",
    "/v1/explain?name=treasury&from=127.0.1.10",
    "/nope",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_is_not_allowed_gets_nothing_from_any_path() {
    let ts = start(&scoped_toml(
        "allow = [\"127.0.1.0/24\"]\nfull_access = [\"127.0.0.1\"]\n",
    ))
    .await;
    let admin = ts.server.admin_addr().unwrap();
    for path in EVERY_PATH {
        let (status, head, body) = get_from(STRANGER, admin, path, None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(head.contains("connection: close"), "{path}: {head}");
        assert!(
            body.contains("[admin] allow") && !BACK_NAMES.iter().any(|n| body.contains(n)),
            "{path}: {body}"
        );
        // The same paths from loopback (full access) are served.
        let (status, _, body) = get_from("127.0.0.1", admin, path, None).await;
        assert_eq!(
            status,
            if path == "/nope" { 404 } else { 200 },
            "{path}: {body}"
        );
    }
    // Not even a method error: refused before anything else is looked at.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(STRANGER.parse().unwrap(), 0))
        .unwrap();
    let mut s = sock.connect(admin).await.unwrap();
    s.write_all(b"POST /v1/records HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("the refusal closes the connection")
        .unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_container_sees_only_its_own_networks() {
    let ts = start(&scoped_toml(
        "allow = [\"127.0.1.0/24\"]\nfull_access = [\"127.0.0.1\"]\n",
    ))
    .await;
    let admin = ts.server.admin_addr().unwrap();

    // Loopback (full access): both networks, and explanations for any client.
    assert_eq!(
        net_names(&records_from("127.0.0.1", admin, None).await),
        ["front", "vault"]
    );
    let (status, _, body) = get_from(
        "127.0.0.1",
        admin,
        &format!("/v1/explain?name=ledger&from={BACK_DB}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let doc: ExplainDoc = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (doc.result.as_str(), doc.view.clone()),
        ("answer", vec!["vault".to_string()])
    );

    // web (front only): front's tables, nothing of vault's.
    let doc = records_from(FRONT_WEB, admin, None).await;
    assert_eq!(net_names(&doc), ["front"]);
    let body = serde_json::to_string(&doc).unwrap();
    for leak in ["vault", "treasury", "ledger", "127.0.1.1"] {
        assert!(!body.contains(leak), "{leak} leaked to web: {body}");
    }
    let names: Vec<&str> = doc.networks[0]
        .names
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert!(
        names.contains(&"api") && names.contains(&"web.front"),
        "{names:?}"
    );
    // vault, asked by name, is as unknown as a network that does not exist.
    let (status, _, body) = get_from(FRONT_WEB, admin, "/v1/records/vault", None).await;
    assert_eq!(status, 404, "{body}");
    let (status404, _, body404) = get_from(FRONT_WEB, admin, "/v1/records/nosuch", None).await;
    assert_eq!(status404, 404);
    assert_eq!(body.replace("vault", "X"), body404.replace("nosuch", "X"));
    assert_eq!(
        get_from(FRONT_WEB, admin, "/v1/records/front", None)
            .await
            .0,
        200
    );

    // Explain: for itself only. Its own question about treasury is not answered from vault's table.
    let (status, _, body) = get_from(FRONT_WEB, admin, "/v1/explain?name=treasury", None).await;
    assert_eq!(status, 200, "{body}");
    let own: ExplainDoc = serde_json::from_str(&body).unwrap();
    assert_eq!(own.client.to_string(), FRONT_WEB);
    assert_eq!(own.view, ["front"]);
    assert_ne!(own.result, "answer");
    assert!(own.answers.is_empty() && own.network.is_none(), "{body}");
    let (status, _, body) = get_from(
        FRONT_WEB,
        admin,
        &format!("/v1/explain?name=api&from={FRONT_WEB}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for other in [
        format!("/v1/explain?name=treasury&from={BACK_DB}"),
        "/v1/explain?name=treasury&from=127.0.0.1".to_string(),
        "/v1/explain?name=treasury&local=127.0.0.9".to_string(),
    ] {
        let (status, _, body) = get_from(FRONT_WEB, admin, &other, None).await;
        assert_eq!(status, 403, "{other}: {body}");
        assert!(
            !BACK_NAMES.iter().skip(1).any(|n| body.contains(n)),
            "{other}: {body}"
        );
    }

    // treasury (vault only): the mirror image.
    assert_eq!(
        net_names(&records_from(BACK_DB, admin, None).await),
        ["vault"]
    );

    // /metrics, from anyone admitted: counts, never a name.
    let (status, _, metrics) = get_from(FRONT_WEB, admin, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("dockns_networks 2"), "{metrics}");
    for name in [
        "front", "vault", "\"web", "api", "treasury", "ledger", "127.0.1.",
    ] {
        assert!(!metrics.contains(name), "/metrics names {name}:\n{metrics}");
    }
    ts.stop().await;
}

fn token_file(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_admits_a_scraper_and_a_wrong_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = token_file(dir.path(), "token", "s3cret-first\n", 0o600);
    let admin_keys = |p: &std::path::Path| {
        format!(
            "allow = [\"127.0.0.1\"]\nfull_access = [\"127.0.0.1\"]\ntoken_file = \"{}\"\n",
            p.display()
        )
    };
    let ts = start(&scoped_toml(&admin_keys(&path))).await;
    let admin = ts.server.admin_addr().unwrap();

    for token in [
        None,
        Some("wrong"),
        Some("s3cret-firs"),
        Some("s3cret-first-and-more"),
    ] {
        for path in EVERY_PATH {
            let (status, head, body) = get_from(STRANGER, admin, path, token).await;
            assert_eq!(status, 401, "{path} with {token:?}: {body}");
            assert!(head.contains("www-authenticate: bearer"), "{head}");
            assert!(!BACK_NAMES.iter().any(|n| body.contains(n)), "{body}");
        }
    }
    // A wrong token is refused even from an address that may come without one.
    assert_eq!(
        get_from("127.0.0.1", admin, "/metrics", Some("wrong"))
            .await
            .0,
        401
    );
    let (status, _, metrics) = get_from(STRANGER, admin, "/metrics", Some("s3cret-first")).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("dockns_ready 1"), "{metrics}");
    // The token opens the door, it does not widen the scope: a container with it still sees
    // only its own network.
    assert_eq!(
        get_from(FRONT_WEB, admin, "/v1/records", None).await.0,
        401,
        "web is not in allow"
    );
    assert_eq!(
        net_names(&records_from(FRONT_WEB, admin, Some("s3cret-first")).await),
        ["front"]
    );
    let (status, _, _) = get_from(
        FRONT_WEB,
        admin,
        &format!("/v1/explain?name=treasury&from={BACK_DB}"),
        Some("s3cret-first"),
    )
    .await;
    assert_eq!(status, 403);

    // A reload (SIGHUP) reads the file again: the new token works, the old one no longer does.
    token_file(dir.path(), "token", "s3cret-second", 0o600);
    ts.server
        .reload(config(&scoped_toml(&admin_keys(&path))))
        .expect("reload");
    assert_eq!(
        get_from(STRANGER, admin, "/metrics", Some("s3cret-first"))
            .await
            .0,
        401
    );
    assert_eq!(
        get_from(STRANGER, admin, "/metrics", Some("s3cret-second"))
            .await
            .0,
        200
    );
    ts.stop().await;
}

#[test]
fn bad_token_files_are_one_line_errors_naming_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");
    let open = token_file(dir.path(), "open", "tok", 0o644);
    let empty = token_file(dir.path(), "empty", " \n", 0o600);
    for (path, fix) in [
        (&missing, "head -c 32 /dev/urandom"),
        (&open, "chmod 600"),
        (&empty, "is empty"),
    ] {
        let toml = scoped_toml(&format!("token_file = \"{}\"\n", path.display()));
        let e = dockns::config::Config::from_toml(&toml, &Default::default())
            .expect_err("a bad token file is an error")
            .to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains(fix) && !e.contains('\n'),
            "{e}"
        );
    }
    let good = token_file(dir.path(), "good", "tok\n", 0o640);
    let toml = scoped_toml(&format!("token_file = \"{}\"\n", good.display()));
    let cfg = dockns::config::Config::from_toml(&toml, &Default::default()).unwrap();
    // The token never appears in what check-config prints.
    let printed = toml::to_string_pretty(&cfg).unwrap();
    assert!(
        printed.contains("token_file") && !printed.contains("tok\""),
        "{printed}"
    );
    assert!(!format!("{cfg:?}").contains("\"tok\""));
}

#[test]
fn admin_defaults_and_the_check_config_warning() {
    let cfg = dockns::config::Config::from_toml("[admin]\n", &Default::default()).unwrap();
    assert_eq!(cfg.admin, Some("127.0.0.1:9153".parse().unwrap()));
    assert!(cfg.warnings().is_empty());
    let e = dockns::config::Config::from_toml("[admin]\nallow = [\"nope\"]", &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("[admin] allow[0]"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let check = |admin: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            format!("[server]\nlisten = [\"127.0.0.1:5353\"]\n[admin]\n{admin}"),
        )
        .unwrap();
        run(&["check-config", p.to_str().unwrap()])
    };
    let (ok, _, err) = check("listen = \"0.0.0.0:9153\"\n");
    assert!(ok, "{err}");
    assert!(
        err.contains("warning")
            && err.contains("reachable beyond loopback")
            && err.lines().count() == 1,
        "{err}"
    );
    for quiet in [
        "listen = \"127.0.0.1:9153\"\n",
        "listen = \"0.0.0.0:9153\"\nallow = [\"127.0.0.1\", \"10.53.0.0/24\"]\n",
    ] {
        let (ok, _, err) = check(quiet);
        assert!(ok && err.is_empty(), "{quiet}: {err}");
    }
    let tok = token_file(dir.path(), "t", "x", 0o600);
    let (ok, _, err) = check(&format!(
        "listen = \"0.0.0.0:9153\"\ntoken_file = \"{}\"\n",
        tok.display()
    ));
    assert!(ok && err.is_empty(), "{err}");
}
