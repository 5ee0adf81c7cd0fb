//! The admin HTTP server (`[admin] listen`): `/metrics` (Prometheus text), `/healthz`,
//! `/readyz`, `/v1/records[/<network>]` (the tables as JSON) and `/v1/explain` (what a given
//! client would get for a name, and why).
//!
//! It serves HTTP/1.1 with hyper on the tokio runtime, reads the same snapshot the listeners
//! read and the counters they write, and never writes to the model: it is an observer. Its
//! documents ([`RecordsDoc`], [`ExplainDoc`]) are also what `dockns records` and `dockns query`
//! parse, so the CLI and the API cannot drift apart. Every request is bounded (header timeout,
//! connection limit); nothing a client sends can panic it.

use crate::dns::listen::{BindError, ListenerSet};
use crate::dns::stats::Stats;
use crate::forward::Forwarder;
use crate::metrics::{self, ServerMetrics, TableSizes};
use crate::model::{
    endpoint_names, normalize_name, reverse_name, Catalog, Publisher, RecordSet, Resolution,
    Snapshot,
};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// Admin connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Snapshot publisher (read only).
    pub publisher: Arc<Publisher>,
    /// Upstream pool (for its counters).
    pub forwarder: Arc<Forwarder>,
    /// Per-worker query counters.
    pub stats: Arc<Stats>,
    /// Listeners (for their count).
    pub listeners: Arc<ListenerSet>,
    /// Readiness and Docker counters.
    pub server: Arc<ServerMetrics>,
}

/// A running admin server.
pub struct AdminServer {
    /// The bound address (port resolved when 0 was asked).
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Stops accepting and waits for the accept loop to end (open connections finish their
    /// current request on their own).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn bind_error(addr: SocketAddr, e: &std::io::Error) -> BindError {
    let fix = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another process (another dockns, CoreDNS's metrics?) is using it: stop it, or set another [admin] listen address"
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: use a port such as 9153"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "no interface on this machine has that address: use 127.0.0.1 or an address this host owns"
        }
        _ => "check [admin] listen",
    };
    BindError(format!(
        "cannot listen for the admin API on {addr} (tcp): {e}; {fix}"
    ))
}

/// Binds `addr` and serves the admin API until stopped. Must be called within a tokio runtime.
pub fn start(addr: SocketAddr, state: AdminState) -> Result<AdminServer, BindError> {
    let std_listener = std::net::TcpListener::bind(addr).map_err(|e| bind_error(addr, &e))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| bind_error(addr, &e))?;
    let bound = std_listener
        .local_addr()
        .map_err(|e| bind_error(addr, &e))?;
    let listener =
        tokio::net::TcpListener::from_std(std_listener).map_err(|e| bind_error(addr, &e))?;
    let (stop, mut stop_rx) = watch::channel(false);
    let state = Arc::new(state);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = stop_rx.changed() => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, _) = tokio::select! {
                _ = stop_rx.changed() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!("admin accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!("admin connection ended: {e}");
                }
                drop(permit);
            });
        }
    });
    tracing::info!(%bound, "admin API listening (/metrics, /healthz, /readyz, /v1/records)");
    Ok(AdminServer {
        addr: bound,
        stop,
        task,
    })
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, content_type: &str, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json<T: Serialize>(status: StatusCode, doc: &T) -> Resp {
    match serde_json::to_string_pretty(doc) {
        Ok(mut s) => {
            s.push('\n');
            text(status, "application/json", s)
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the document: {e}"),
        ),
    }
}

/// The JSON error body every endpoint uses.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorDoc {
    /// What went wrong and what to do.
    pub error: String,
}

fn error(status: StatusCode, msg: String) -> Resp {
    json(status, &ErrorDoc { error: msg })
}

fn route(state: &AdminState, req: &Request<Incoming>) -> Resp {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} is not supported: the admin API is read-only, use GET",
                req.method()
            ),
        );
    }
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    match path {
        "/metrics" => text(StatusCode::OK, metrics::CONTENT_TYPE, render_metrics(state)),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            if state.server.is_synced() {
                text(
                    StatusCode::OK,
                    "text/plain",
                    format!(
                        "ready: {} listener(s) bound, tables loaded\n",
                        state.listeners.addresses().len()
                    ),
                )
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: waiting for the initial Docker sync\n".into(),
                )
            }
        }
        "/v1/records" | "/v1/records/" => json(StatusCode::OK, &records(&state.publisher, None)),
        "/v1/explain" => match explain_query(&state.publisher.snapshot(), query) {
            Ok(doc) => json(StatusCode::OK, &doc),
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        p => match p.strip_prefix("/v1/records/") {
            Some(net) => {
                let net = percent_decode(net);
                let doc = records(&state.publisher, Some(&net));
                if doc.networks.is_empty() {
                    error(
                        StatusCode::NOT_FOUND,
                        format!("no network named {net:?} is served; GET /v1/records lists them"),
                    )
                } else {
                    json(StatusCode::OK, &doc)
                }
            }
            None => error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint {p:?}; try /metrics, /healthz, /readyz, /v1/records, /v1/records/<network>, /v1/explain?name=NAME&type=A&from=IP"),
            ),
        },
    }
}

/// Table sizes of a catalog and the snapshot compiled from it.
pub fn table_sizes(catalog: &Catalog, snap: &Snapshot) -> TableSizes {
    TableSizes {
        networks: snap.networks().len() as u64,
        containers: catalog.containers.len() as u64,
        endpoints: catalog
            .containers
            .values()
            .flat_map(|c| &c.endpoints)
            .filter(|ep| catalog.networks.contains_key(&ep.network))
            .count() as u64,
        names: snap.entry_count() as u64,
        views: snap.view_count() as u64,
        generation: snap.generation,
    }
}

fn render_metrics(state: &AdminState) -> String {
    let snap = state.publisher.snapshot();
    let catalog = state.publisher.catalog();
    let queries = state.stats.detailed();
    let upstreams = state.forwarder.upstream_totals();
    metrics::render(&metrics::Inputs {
        queries: &queries,
        upstreams: &upstreams,
        forward_inflight: state.forwarder.inflight() as u64,
        cache: state.forwarder.cache_metrics(),
        server: &state.server,
        tables: table_sizes(&catalog, &snap),
        listeners: state.listeners.addresses().len() as u64,
    })
}

/// `/v1/records`: every network with its endpoints and the names it answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordsDoc {
    /// Generation of the snapshot the names come from.
    pub generation: u64,
    /// Networks in name order.
    pub networks: Vec<NetworkDoc>,
}

/// One network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkDoc {
    /// Exact name.
    pub name: String,
    /// Docker network ID (empty for static networks).
    pub id: String,
    /// Internal: unknown names are answered NXDOMAIN, never forwarded.
    pub internal: bool,
    /// Subnets.
    pub subnets: Vec<String>,
    /// Addresses dockns answers on for this network (gateway, sidecar address).
    pub listen_addrs: Vec<IpAddr>,
    /// Containers attached, in name order.
    pub endpoints: Vec<EndpointDoc>,
    /// Names answered on this network with the addresses served now (health filtering applied).
    pub names: Vec<NameDoc>,
    /// Reverse names (PTR) answered on this network.
    pub reverse: Vec<ReverseDoc>,
}

/// One container's attachment to a network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointDoc {
    /// Container name.
    pub container: String,
    /// Short container ID (empty for static entries).
    pub id: String,
    /// Health (none, healthy, starting, unhealthy).
    pub health: String,
    /// IPv4 addresses.
    pub ipv4: Vec<String>,
    /// IPv6 addresses.
    pub ipv6: Vec<String>,
    /// Names the endpoint answers to on this network (also as `name.<network>`).
    pub names: Vec<String>,
}

/// One answered name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NameDoc {
    /// The name (lower case).
    pub name: String,
    /// Addresses in A then AAAA order, before rotation.
    pub addresses: Vec<IpAddr>,
}

/// One reverse name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReverseDoc {
    /// `d.c.b.a.in-addr.arpa` or the `ip6.arpa` form.
    pub name: String,
    /// The PTR target.
    pub ptr: String,
}

/// The records of a pre-encoded set: addresses for A/AAAA, target names for PTR.
pub fn decode_set(set: &RecordSet) -> Vec<String> {
    let b = set.bytes();
    let mut out = Vec::new();
    let mut i = 0usize;
    // Each record: pointer(2) type(2) class(2) ttl(4) rdlen(2) rdata.
    while i + 12 <= b.len() {
        let rtype = u16::from_be_bytes([b[i + 2], b[i + 3]]);
        let rdlen = usize::from(u16::from_be_bytes([b[i + 10], b[i + 11]]));
        let Some(rdata) = b.get(i + 12..i + 12 + rdlen) else {
            break;
        };
        match (rtype, rdata.len()) {
            (1, 4) => out.push(IpAddr::from([rdata[0], rdata[1], rdata[2], rdata[3]]).to_string()),
            (28, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(rdata);
                out.push(IpAddr::from(a).to_string());
            }
            _ => out.push(wire_name_text(rdata)),
        }
        i += 12 + rdlen;
    }
    out
}

fn wire_name_text(mut b: &[u8]) -> String {
    let mut s = String::new();
    while let Some((&len, rest)) = b.split_first() {
        let len = usize::from(len);
        if len == 0 || len > rest.len() {
            break;
        }
        s.push_str(&String::from_utf8_lossy(&rest[..len]));
        s.push('.');
        b = &rest[len..];
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// Builds the records document, for every network or just `only`.
pub fn records(publisher: &Publisher, only: Option<&str>) -> RecordsDoc {
    let snap = publisher.snapshot();
    let catalog = publisher.catalog();
    let mut networks = Vec::new();
    for net in catalog.networks.values() {
        if only.is_some_and(|o| o != net.name) {
            continue;
        }
        let mut endpoints: Vec<EndpointDoc> = catalog
            .containers
            .values()
            .flat_map(|c| {
                c.endpoints
                    .iter()
                    .filter(|ep| ep.network == net.name)
                    .map(move |ep| EndpointDoc {
                        container: c.name.trim_start_matches('/').to_string(),
                        id: c.short_id().unwrap_or_default().to_string(),
                        health: format!("{:?}", c.health).to_lowercase(),
                        ipv4: ep.ipv4.iter().map(|a| a.to_string()).collect(),
                        ipv6: ep.ipv6.iter().map(|a| a.to_string()).collect(),
                        names: endpoint_names(c, ep)
                            .into_iter()
                            .map(str::to_string)
                            .collect(),
                    })
            })
            .collect();
        endpoints.sort_by(|a, b| a.container.cmp(&b.container).then(a.id.cmp(&b.id)));
        let index = snap.networks().iter().position(|n| n.name == net.name);
        let mut names = Vec::new();
        let mut reverse = Vec::new();
        for e in index.map_or(&[][..], |i| snap.network_entries(i)) {
            if !e.ptr.is_empty() {
                for ptr in decode_set(&e.ptr) {
                    reverse.push(ReverseDoc {
                        name: e.name.to_string(),
                        ptr,
                    });
                }
            }
            if e.a.is_empty() && e.aaaa.is_empty() {
                continue;
            }
            let addresses = decode_set(&e.a)
                .into_iter()
                .chain(decode_set(&e.aaaa))
                .filter_map(|a| a.parse().ok())
                .collect();
            names.push(NameDoc {
                name: e.name.to_string(),
                addresses,
            });
        }
        names.sort_by(|a, b| a.name.cmp(&b.name));
        reverse.sort_by(|a, b| a.name.cmp(&b.name));
        networks.push(NetworkDoc {
            name: net.name.clone(),
            id: net.id.clone(),
            internal: net.internal,
            subnets: net.subnets.iter().map(|s| s.to_string()).collect(),
            listen_addrs: net.listen_addrs.clone(),
            endpoints,
            names,
            reverse,
        });
    }
    RecordsDoc {
        generation: snap.generation,
        networks,
    }
}

/// `/v1/explain`: what the tables say about a name for a given client, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExplainDoc {
    /// The name asked (as given; for PTR of an address, the reverse name).
    pub name: String,
    /// The question type.
    pub qtype: String,
    /// The client address the scope was computed for.
    pub client: IpAddr,
    /// The address the query is taken to arrive on, if given.
    pub local: Option<IpAddr>,
    /// Which scope rule picked the view.
    pub scope: String,
    /// The networks the client sees, in priority order; `qualified only` ones only answer
    /// `name.network`.
    pub view: Vec<String>,
    /// Whether names unknown to the view are forwarded upstream.
    pub forwards_unknown: bool,
    /// `answer`, `nodata`, `nxdomain` or `forward`.
    pub result: String,
    /// A sentence saying why.
    pub why: String,
    /// The records a local answer carries (addresses or PTR targets), before rotation.
    pub answers: Vec<String>,
    /// The network whose table holds the name, when it is known.
    pub network: Option<String>,
    /// Snapshot generation.
    pub generation: u64,
}

/// Decodes `%XX` escapes and `+` in a query-string component.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn explain_query(snap: &Snapshot, query: &str) -> Result<ExplainDoc, String> {
    let mut name = None;
    let mut qtype = "A".to_string();
    let mut from = None;
    let mut local = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "name" => name = Some(v),
            "type" => qtype = v,
            "from" => from = Some(v),
            "local" => local = Some(v),
            _ => {
                return Err(format!(
                    "unknown parameter {k:?}; use name, type, from, local"
                ))
            }
        }
    }
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or("missing name: /v1/explain?name=NAME&type=A&from=IP")?;
    let parse_ip = |v: Option<String>, what: &str| -> Result<Option<IpAddr>, String> {
        v.filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|_| format!("{what}={s:?} is not an IP address"))
            })
            .transpose()
    };
    let client = parse_ip(from, "from")?.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let local = parse_ip(local, "local")?;
    explain(snap, &name, &qtype, client, local)
}

/// Explains what `client` (asking on `local`) gets for `name`/`qtype` from the tables.
pub fn explain(
    snap: &Snapshot,
    name: &str,
    qtype: &str,
    client: IpAddr,
    local: Option<IpAddr>,
) -> Result<ExplainDoc, String> {
    let rtype = hickory_proto::rr::RecordType::from_str(&qtype.to_ascii_uppercase())
        .map_err(|_| format!("type {qtype:?} is not a DNS record type (A, AAAA, PTR, MX, ...)"))?;
    let code = u16::from(rtype);
    // PTR for an address: ask for its reverse name.
    let name = match (rtype, name.parse::<IpAddr>()) {
        (hickory_proto::rr::RecordType::PTR, Ok(ip)) => reverse_name(ip),
        _ => name.to_string(),
    };
    let key = normalize_name(&name)
        .ok_or_else(|| format!("{name:?} is not a valid DNS name (empty label or too long)"))?;
    let view = snap.view_for(client, local);
    let scope = snap.scope_reason(client, local).to_string();
    let nets = snap.networks();
    let view_names: Vec<String> = view
        .networks
        .iter()
        .filter_map(|&(i, plain)| {
            nets.get(i as usize).map(|n| {
                if plain {
                    n.name.clone()
                } else {
                    format!("{} (qualified only)", n.name)
                }
            })
        })
        .collect();
    let entry = snap.entry_for(view, &key);
    let network = entry.and_then(|(ni, _)| nets.get(ni as usize).map(|n| n.name.clone()));
    let (result, why, answers) = match snap.resolve(view, &key, code, 1) {
        Resolution::Answer { set, .. } => (
            "answer",
            format!(
                "{name} is in the table of network {} which this client sees",
                network.as_deref().unwrap_or("(zone)")
            ),
            decode_set(set),
        ),
        Resolution::NoData { .. } => (
            "nodata",
            format!("{name} is known here but has no {rtype} record: NOERROR with no answers, never forwarded"),
            Vec::new(),
        ),
        Resolution::NxDomain { soa } => (
            "nxdomain",
            if soa {
                format!("{name} is under the local zone but not in this client's tables")
            } else {
                format!("{name} is not in this client's tables and its networks are internal: not forwarded")
            },
            Vec::new(),
        ),
        Resolution::Reverse { nxdomain, .. } => (
            if nxdomain { "nxdomain" } else { "nodata" },
            format!("{name} is in the reverse zone of a served subnet (RFC 6303): answered here with that zone's SOA, never forwarded"),
            Vec::new(),
        ),
        Resolution::Refused => (
            "refused",
            "dockns holds data in class IN only: REFUSED, never forwarded".to_string(),
            Vec::new(),
        ),
        Resolution::Forward => (
            "forward",
            format!("{name} is not in the tables of the networks this client sees: forwarded upstream"),
            Vec::new(),
        ),
    };
    Ok(ExplainDoc {
        name,
        qtype: rtype.to_string(),
        client,
        local,
        scope,
        view: view_names,
        forwards_unknown: view.forward,
        result: result.into(),
        why,
        answers,
        network,
        generation: snap.generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("fd00%3A%3A1"), "fd00::1");
        assert_eq!(percent_decode("a+b%"), "a b%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn wire_names() {
        assert_eq!(wire_name_text(b"\x02db\x04demo\x00"), "db.demo.");
        assert_eq!(wire_name_text(b"\x05ab"), ".");
        assert_eq!(wire_name_text(b""), ".");
    }
}
