//! A fake Docker Engine API on a Unix socket in a temporary directory (hyper), shaped as the
//! Engine API documents it for two generations:
//!
//! - API 1.41 (Docker 20.10): `EndpointSettings.Aliases` holds the network aliases, then the
//!   short ID and the hostname, which the daemon appends on user-defined networks; there is no
//!   `DNSNames`; a container created without a name is recorded as anonymous only in its
//!   `config.v2.json` under `DockerRootDir` (`NetworkSettings.IsAnonymousEndpoint`); events
//!   carry the deprecated `status`/`id`/`from` fields beside `Type`/`Action`/`Actor`.
//! - API 1.44 (Docker 25): `DNSNames` appears (container name, aliases, short ID, hostname, in
//!   that order; its first entry names the PTR record), `Aliases` still holds the short ID.
//! - API 1.45–1.47 (Docker 26–27): `Aliases` is exactly what the user gave; `DNSNames` is the
//!   list. No more anonymous endpoints. Events without the deprecated fields.
//!
//! It serves `/_ping`, `/version`, `/info`, `/networks`, `/networks/{id}`, `/containers/json`,
//! `/containers/{id}/json` and a streaming `/events`, with or without the `/v1.xx` prefix.
//! Tests change its state and emit events; they can cut every event stream, delay every
//! answer, or hold container inspections until released. Everything stays in the temp dir.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Which Engine API generation the fake speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// Docker 20.10.
    V141,
    /// Docker 25.0.
    V144,
    /// Docker 27.5.
    V147,
}

impl Api {
    /// Every generation, oldest first.
    pub const ALL: [Api; 3] = [Api::V141, Api::V144, Api::V147];

    /// The `ApiVersion` it reports.
    pub fn version(self) -> &'static str {
        match self {
            Api::V141 => "1.41",
            Api::V144 => "1.44",
            Api::V147 => "1.47",
        }
    }

    fn engine(self) -> &'static str {
        match self {
            Api::V141 => "20.10.24",
            Api::V144 => "25.0.5",
            Api::V147 => "27.5.1",
        }
    }

    /// Whether endpoints carry `DNSNames` (and anonymous endpoints are gone).
    pub fn dns_names(self) -> bool {
        self != Api::V141
    }
}

/// A network of the fake daemon.
#[derive(Clone, Debug)]
pub struct Net {
    /// Network ID (64 hex digits).
    pub id: String,
    /// Name.
    pub name: String,
    /// IPv4 subnet, e.g. `10.201.0.0/24`.
    pub subnet: String,
    /// Gateway address.
    pub gateway: String,
    /// Internal network.
    pub internal: bool,
}

/// One endpoint of a fake container.
#[derive(Clone, Debug, Default)]
pub struct Ep {
    /// IPv4 address.
    pub ip: String,
    /// Network aliases as the user gave them.
    pub aliases: Vec<String>,
    /// Links as the daemon stores them (`target:alias`).
    pub links: Vec<String>,
}

/// A container of the fake daemon.
#[derive(Clone, Debug)]
pub struct Ctr {
    /// Full ID (64 hex digits).
    pub id: String,
    /// Name without the `/`.
    pub name: String,
    /// Hostname (`Config.Hostname`); the short ID when not given, as Docker does.
    pub hostname: String,
    /// Created without a name (the name was generated).
    pub anonymous: bool,
    /// Running.
    pub running: bool,
    /// Health status (`healthy`, `unhealthy`, `starting`), when it has a health check.
    pub health: Option<String>,
    /// Endpoints by network name.
    pub eps: BTreeMap<String, Ep>,
}

impl Ctr {
    /// The short ID.
    pub fn short(&self) -> &str {
        &self.id[..12]
    }
}

/// How the fake answers.
#[derive(Default)]
struct Faults {
    /// Added before every answer (not the event stream).
    delay: Duration,
    /// Container inspections that arrived in this epoch wait while it is set: a request stuck
    /// on a daemon that has since restarted (see [`FakeEngine::restart`]).
    hold_inspect: Option<u64>,
    /// Incremented by every restart.
    epoch: u64,
}

struct Inner {
    api: Api,
    nets: BTreeMap<String, Net>,
    ctrs: BTreeMap<String, Ctr>,
    faults: Faults,
    streams: Vec<mpsc::UnboundedSender<Bytes>>,
    /// Paths asked, in order (without the version prefix).
    requests: Vec<String>,
    counter: u64,
    /// Inspections being held right now.
    held: usize,
}

/// The fake daemon. Dropping it stops it.
pub struct FakeEngine {
    dir: tempfile::TempDir,
    /// The socket path.
    pub socket: PathBuf,
    inner: Arc<Mutex<Inner>>,
    rt: tokio::runtime::Runtime,
}

fn hex_id(seed: u64, kind: u8) -> String {
    // Deterministic, distinct, 64 hex digits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(kind);
    let mut out = String::new();
    for i in 0..4u64 {
        h ^= seed.wrapping_add(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h = h.wrapping_mul(0x100_0000_01b3);
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// The wall clock as RFC 3339 UTC with nanoseconds (the form dockerd and tracing print).
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

impl FakeEngine {
    /// Starts a fake daemon of generation `api` with no networks or containers.
    pub fn start(api: Api) -> FakeEngine {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("root/containers")).expect("state dir");
        let socket = dir.path().join("docker.sock");
        let inner = Arc::new(Mutex::new(Inner {
            api,
            nets: BTreeMap::new(),
            ctrs: BTreeMap::new(),
            faults: Faults::default(),
            streams: Vec::new(),
            requests: Vec::new(),
            counter: 0,
            held: 0,
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = {
            let _g = rt.enter();
            tokio::net::UnixListener::bind(&socket).expect("bind the fake engine socket")
        };
        let root = dir.path().join("root");
        let state = inner.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let root = root.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        let root = root.clone();
                        async move { Ok::<_, Infallible>(serve(&state, &root, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeEngine {
            dir,
            socket,
            inner,
            rt,
        }
    }

    /// `unix://<socket>`, for `[docker] endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a network (no event: call before dockns starts, or emit one).
    pub fn add_network(&self, name: &str, subnet: &str, gateway: &str) -> String {
        let mut g = self.lock();
        g.counter += 1;
        let id = hex_id(g.counter, 1);
        g.nets.insert(
            id.clone(),
            Net {
                id: id.clone(),
                name: name.into(),
                subnet: subnet.into(),
                gateway: gateway.into(),
                internal: false,
            },
        );
        id
    }

    /// Removes a network.
    pub fn remove_network(&self, id: &str) {
        self.lock().nets.remove(id);
    }

    /// Creates a running container (no event). `eps` are (network name, endpoint).
    pub fn add_container(&self, name: &str, hostname: Option<&str>, eps: &[(&str, Ep)]) -> String {
        let mut g = self.lock();
        g.counter += 1;
        let id = hex_id(g.counter, 2);
        let c = Ctr {
            id: id.clone(),
            name: name.into(),
            hostname: hostname.map_or_else(|| id[..12].to_string(), str::to_string),
            anonymous: false,
            running: true,
            health: None,
            eps: eps
                .iter()
                .map(|(n, e)| (n.to_string(), e.clone()))
                .collect(),
        };
        g.ctrs.insert(id.clone(), c);
        id
    }

    /// Creates a running container without a name (Docker generates `name`), and records it
    /// as anonymous where the daemon of this generation records it.
    pub fn add_anonymous(&self, generated: &str, eps: &[(&str, Ep)]) -> String {
        let id = self.add_container(generated, None, eps);
        self.lock().ctrs.get_mut(&id).expect("just added").anonymous = true;
        let dir = self.dir.path().join("root/containers").join(&id);
        std::fs::create_dir_all(&dir).expect("container dir");
        // What 20.10 writes (abridged); later daemons no longer write the flag.
        let anonymous = !self.lock().api.dns_names();
        let doc = json!({
            "ID": id, "Name": format!("/{generated}"),
            "NetworkSettings": {"Bridge": "", "IsAnonymousEndpoint": anonymous, "HasSwarmEndpoint": false}
        });
        std::fs::write(dir.join("config.v2.json"), doc.to_string()).expect("config.v2.json");
        id
    }

    /// Changes a container in place (no event).
    pub fn edit(&self, id: &str, f: impl FnOnce(&mut Ctr)) {
        if let Some(c) = self.lock().ctrs.get_mut(id) {
            f(c);
        }
    }

    /// Removes a container (no event).
    pub fn remove_container(&self, id: &str) {
        self.lock().ctrs.remove(id);
    }

    /// A container as the fake holds it.
    pub fn container(&self, id: &str) -> Ctr {
        self.lock()
            .ctrs
            .get(id)
            .cloned()
            .expect("no such fake container")
    }

    /// Sends an event to every open event stream, shaped for this generation.
    pub fn emit(&self, typ: &str, action: &str, actor: &str, attrs: &[(&str, &str)]) {
        let mut g = self.lock();
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let attributes: BTreeMap<&str, &str> = attrs.iter().copied().collect();
        let mut ev = json!({
            "Type": typ, "Action": action,
            "Actor": {"ID": actor, "Attributes": attributes},
            "scope": "local", "time": d.as_secs(), "timeNano": d.as_nanos() as u64
        });
        if g.api == Api::V141 && typ == "container" {
            ev["status"] = json!(action);
            ev["id"] = json!(actor);
            ev["from"] = json!("fake:latest");
        }
        let line = Bytes::from(format!("{ev}\n"));
        g.streams.retain(|s| s.send(line.clone()).is_ok());
    }

    /// A container event with the attributes Docker attaches (`name`, `image`).
    pub fn container_event(&self, action: &str, id: &str) {
        let name = self.lock().ctrs.get(id).map(|c| c.name.clone());
        let name = name.unwrap_or_default();
        self.emit(
            "container",
            action,
            id,
            &[("name", &name), ("image", "fake:latest")],
        );
    }

    /// A network event about a container (`connect`, `disconnect`).
    pub fn network_event(&self, action: &str, net_id: &str, container: &str) {
        let name = self.lock().nets.get(net_id).map(|n| n.name.clone());
        let name = name.unwrap_or_default();
        self.emit(
            "network",
            action,
            net_id,
            &[
                ("container", container),
                ("name", &name),
                ("type", "bridge"),
            ],
        );
    }

    /// Ends every open event stream (as a daemon restart does).
    pub fn cut_streams(&self) {
        self.lock().streams.clear();
    }

    /// Number of open event streams.
    pub fn open_streams(&self) -> usize {
        let mut g = self.lock();
        g.streams.retain(|s| !s.is_closed());
        g.streams.len()
    }

    /// Delays every answer but the event stream by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.lock().faults.delay = d;
    }

    /// Holds container inspections asked from now until the next [`restart`](Self::restart)
    /// (`true`), or releases them all (`false`).
    pub fn hold_inspect(&self, hold: bool) {
        let mut g = self.lock();
        g.faults.hold_inspect = hold.then_some(g.faults.epoch);
    }

    /// A daemon restart as a client sees it: every event stream ends, and requests held so far
    /// stay held (their connections hang) while new ones are answered.
    pub fn restart(&self) {
        let mut g = self.lock();
        g.faults.epoch += 1;
        g.streams.clear();
    }

    /// Whether a held inspection is waiting.
    pub fn held(&self) -> bool {
        self.lock().held > 0
    }

    /// How many requests for a path (without the version prefix) were made.
    pub fn asked(&self, path: &str) -> usize {
        self.lock().requests.iter().filter(|p| *p == path).count()
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.cut_streams();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn not_found(msg: String) -> Response<Body> {
    json_response(StatusCode::NOT_FOUND, &json!({ "message": msg }))
}

/// `/v1.47/containers/json` → `/containers/json`.
fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some(i) = rest.find('/') {
            if rest[..i].chars().all(|c| c.is_ascii_digit() || c == '.') {
                return &rest[i..];
            }
        }
    }
    path
}

async fn serve(
    state: &Arc<Mutex<Inner>>,
    root: &std::path::Path,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = strip_version(req.uri().path()).to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let (delay, epoch) = {
        let mut g = state.lock().unwrap_or_else(|e| e.into_inner());
        g.requests.push(path.clone());
        (g.faults.delay, g.faults.epoch)
    };
    if path == "/events" {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .streams
            .push(tx);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        let mut r = Response::new(StreamBody::new(stream).boxed());
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        return r;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if path.starts_with("/containers/") && path.ends_with("/json") && path != "/containers/json" {
        let mut counted = false;
        loop {
            {
                let mut g = state.lock().unwrap_or_else(|e| e.into_inner());
                if g.faults.hold_inspect != Some(epoch) {
                    if counted {
                        g.held -= 1;
                    }
                    break;
                }
                if !counted {
                    g.held += 1;
                    counted = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let g = state.lock().unwrap_or_else(|e| e.into_inner());
    let api = g.api;
    match path.as_str() {
        "/_ping" => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"OK")).boxed());
            if let Ok(v) = hyper::header::HeaderValue::from_str(api.version()) {
                r.headers_mut().insert("Api-Version", v);
            }
            r
        }
        "/version" => json_response(
            StatusCode::OK,
            &json!({
                "Platform": {"Name": "Docker Engine - Community"},
                "Version": api.engine(), "ApiVersion": api.version(),
                "MinAPIVersion": if api == Api::V141 { "1.12" } else { "1.24" },
                "GitCommit": "fake", "GoVersion": "go1.22", "Os": "linux", "Arch": "amd64",
                "KernelVersion": "6.1.0", "BuildTime": "2024-01-01T00:00:00.000000000+00:00"
            }),
        ),
        "/info" => json_response(
            StatusCode::OK,
            &json!({
                "ID": "FAKE:ENGINE", "Name": "fake-engine", "ServerVersion": api.engine(),
                "Containers": g.ctrs.len(),
                "ContainersRunning": g.ctrs.values().filter(|c| c.running).count(),
                "DockerRootDir": root.display().to_string(),
                "SystemTime": now_rfc3339(),
                "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                          "ControlAvailable": false, "Error": "", "RemoteManagers": null}
            }),
        ),
        "/networks" => json_response(
            StatusCode::OK,
            &Value::Array(
                g.nets
                    .values()
                    .map(|n| network_json(&g, n, false))
                    .collect(),
            ),
        ),
        "/containers/json" => {
            let all = query.split('&').any(|kv| kv == "all=true" || kv == "all=1");
            let list: Vec<Value> = g
                .ctrs
                .values()
                .filter(|c| all || c.running)
                .map(|c| container_summary(&g, c))
                .collect();
            json_response(StatusCode::OK, &Value::Array(list))
        }
        p if p.starts_with("/networks/") => {
            let key = &p["/networks/".len()..];
            match g
                .nets
                .values()
                .find(|n| n.id == key || n.name == key || n.id.starts_with(key))
            {
                Some(n) => json_response(StatusCode::OK, &network_json(&g, n, true)),
                None => not_found(format!("network {key} not found")),
            }
        }
        p if p.starts_with("/containers/") && p.ends_with("/json") => {
            let key = &p["/containers/".len()..p.len() - "/json".len()];
            match find_container(&g, key) {
                Some(c) => json_response(StatusCode::OK, &container_inspect(&g, c)),
                None => not_found(format!("No such container: {key}")),
            }
        }
        _ => not_found("page not found".into()),
    }
}

fn find_container<'a>(g: &'a Inner, key: &str) -> Option<&'a Ctr> {
    // By full ID first (what dockns asks): one lookup, not a scan of 10,000 containers.
    g.ctrs
        .get(key)
        .or_else(|| g.ctrs.values().find(|c| c.name == key))
        .or_else(|| {
            g.ctrs
                .values()
                .find(|c| key.len() >= 4 && c.id.starts_with(key))
        })
}

fn network_json(g: &Inner, n: &Net, with_containers: bool) -> Value {
    let mut containers = serde_json::Map::new();
    if with_containers {
        for c in g.ctrs.values().filter(|c| c.running) {
            if let Some(ep) = c.eps.get(&n.name) {
                containers.insert(
                    c.id.clone(),
                    json!({"Name": c.name, "EndpointID": hex_id(ep.ip.len() as u64, 3),
                           "MacAddress": "02:42:0a:00:00:02",
                           "IPv4Address": format!("{}/24", ep.ip), "IPv6Address": ""}),
                );
            }
        }
    }
    let mut v = json!({
        "Name": n.name, "Id": n.id, "Created": "2026-01-01T00:00:00.000000000Z",
        "Scope": "local", "Driver": "bridge", "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null,
                 "Config": [{"Subnet": n.subnet, "Gateway": n.gateway}]},
        "Internal": n.internal, "Attachable": false, "Ingress": false,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": containers, "Options": {}, "Labels": {}
    });
    if g.api == Api::V147 {
        v["EnableIPv4"] = json!(true);
    }
    v
}

/// One endpoint as `GET /containers/{id}/json` shows it in this generation.
fn endpoint_json(g: &Inner, c: &Ctr, net: &Net, ep: &Ep) -> Value {
    let user = ep.aliases.clone();
    let mut aliases = user.clone();
    let push = |list: &mut Vec<String>, s: &str| {
        if !list.iter().any(|a| a == s) {
            list.push(s.to_string());
        }
    };
    let mut v = json!({
        "IPAMConfig": null,
        "Links": if ep.links.is_empty() { Value::Null } else { json!(ep.links) },
        "NetworkID": net.id, "EndpointID": hex_id(ep.ip.len() as u64, 4),
        "Gateway": net.gateway, "IPAddress": ep.ip, "IPPrefixLen": 24,
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "MacAddress": "02:42:0a:00:00:02", "DriverOpts": null
    });
    match g.api {
        Api::V141 => {
            // daemon/container_operations.go (20.10) updateNetworkConfig.
            push(&mut aliases, c.short());
            push(&mut aliases, &c.hostname);
        }
        Api::V144 => push(&mut aliases, c.short()),
        Api::V147 => {}
    }
    v["Aliases"] = if aliases.is_empty() {
        Value::Null
    } else {
        json!(aliases)
    };
    if g.api.dns_names() {
        // daemon/container_operations.go buildEndpointDNSNames (25+).
        let mut names = vec![c.name.clone()];
        for a in user {
            push(&mut names, &a);
        }
        push(&mut names, c.short());
        push(&mut names, &c.hostname);
        v["DNSNames"] = json!(names);
    }
    v
}

fn endpoints_json(g: &Inner, c: &Ctr) -> Value {
    let mut m = serde_json::Map::new();
    for (name, ep) in &c.eps {
        if let Some(net) = g.nets.values().find(|n| &n.name == name) {
            let v = if c.running {
                endpoint_json(g, c, net, ep)
            } else {
                json!({"IPAMConfig": null, "Links": null, "Aliases": null, "NetworkID": net.id,
                       "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                       "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                       "MacAddress": "", "DriverOpts": null})
            };
            m.insert(name.clone(), v);
        }
    }
    Value::Object(m)
}

fn container_summary(g: &Inner, c: &Ctr) -> Value {
    json!({
        "Id": c.id, "Names": [format!("/{}", c.name)], "Image": "fake:latest",
        "ImageID": format!("sha256:{}", hex_id(7, 5)), "Command": "sh", "Created": 1_700_000_000,
        "Ports": [], "Labels": {}, "State": if c.running { "running" } else { "exited" },
        "Status": if c.running { "Up 1 second" } else { "Exited (0) 1 second ago" },
        "HostConfig": {"NetworkMode": c.eps.keys().next().cloned().unwrap_or_default()},
        "NetworkSettings": {"Networks": endpoints_json(g, c)}, "Mounts": []
    })
}

fn container_inspect(g: &Inner, c: &Ctr) -> Value {
    let mut state = json!({
        "Status": if c.running { "running" } else { "exited" }, "Running": c.running,
        "Paused": false, "Restarting": false, "OOMKilled": false, "Dead": false,
        "Pid": if c.running { 4242 } else { 0 }, "ExitCode": 0, "Error": "",
        "StartedAt": "2026-01-01T00:00:00.000000000Z", "FinishedAt": "0001-01-01T00:00:00Z"
    });
    if let Some(h) = &c.health {
        state["Health"] = json!({"Status": h, "FailingStreak": 0, "Log": []});
    }
    let mut settings = json!({
        "Bridge": "", "SandboxID": hex_id(9, 6), "SandboxKey": "/var/run/docker/netns/fake",
        "Ports": {}, "Networks": endpoints_json(g, c)
    });
    if g.api != Api::V147 {
        // Deprecated in 1.44, still sent by 20.10 and 25.
        for (k, v) in [
            ("HairpinMode", json!(false)),
            ("LinkLocalIPv6Address", json!("")),
            ("LinkLocalIPv6PrefixLen", json!(0)),
            ("SecondaryIPAddresses", Value::Null),
            ("SecondaryIPv6Addresses", Value::Null),
            ("EndpointID", json!("")),
            ("Gateway", json!("")),
            ("IPAddress", json!("")),
            ("IPPrefixLen", json!(0)),
            ("MacAddress", json!("")),
        ] {
            settings[k] = v;
        }
    }
    json!({
        "Id": c.id, "Created": "2026-01-01T00:00:00.000000000Z", "Path": "sh", "Args": [],
        "State": state, "Image": format!("sha256:{}", hex_id(7, 5)),
        "Name": format!("/{}", c.name), "RestartCount": 0, "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {"NetworkMode": c.eps.keys().next().cloned().unwrap_or_default(),
                       "Links": null, "Dns": [], "DnsSearch": [], "DnsOptions": []},
        "Config": {"Hostname": c.hostname, "Domainname": "", "User": "", "Env": [],
                   "Cmd": ["sh"], "Image": "fake:latest", "Labels": {}},
        "NetworkSettings": settings
    })
}

/// An address inside a /24 (`10.201.0` + `.7`).
pub fn ip(prefix: &str, host: u8) -> String {
    let s = format!("{prefix}.{host}");
    assert!(s.parse::<Ipv4Addr>().is_ok(), "{s}");
    s
}
