//! The admin HTTP server (`[admin] listen`): `/metrics` (Prometheus text), `/healthz`,
//! `/readyz`, `/v1/records[/<network>]` (the tables as JSON) and `/v1/explain` (what a given
//! client would get for a name, and why).
//!
//! It serves HTTP/1.1 with hyper on the tokio runtime, reads the same snapshot the listeners
//! read and the counters they write, and never writes to the model: it is an observer. Its
//! documents ([`RecordsDoc`], [`ExplainDoc`]) are also what `dockns records` and `dockns query`
//! parse, so the CLI and the API cannot drift apart. Every request is bounded (header timeout,
//! connection limit); nothing a client sends can panic it.
//!
//! Access is decided per request by [`AdminAccess`], like DNS access: a client address in
//! `[admin] allow` or `full_access`, or a request carrying the bearer token of `token_file`, is
//! served; everyone else gets 403 (401 when a token is configured) on every path, with no data.
//! On top of access, scope: a client in `full_access` (default: loopback) sees every network;
//! any other client sees only what a DNS query from its address, sent to the address it reached
//! the admin API on, could resolve ([`Snapshot::view_for`]), and `/v1/explain` only for itself.
//! `/metrics` carries counts and upstream addresses, never a container or network name.
use crate::dns::guard::Guard;
use crate::dns::listen::{BindError, ListenerSet};
use crate::forward::Forwarder;
use crate::metrics::{self, ServerMetrics, TableSizes};
use crate::model::{
    endpoint_names, normalize_name, reverse_name, Catalog, Publisher, Resolution, Snapshot,
};
use crate::stats::Stats;
use crate::wire::RecordSet;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// Admin connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The default `[admin] listen` address when the section is present without one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9153";

/// Loopback, the default of `[admin] allow` and `[admin] full_access`.
pub fn loopback_nets() -> Vec<IpNet> {
    vec![
        IpNet::new_assert(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)), 8),
        IpNet::new_assert(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 128),
    ]
}

/// The bearer token of `[admin] token_file`. Its text never appears in `Debug`, in
/// `check-config` or in a log; comparison is constant-time.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Box<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_ref().ct_eq(presented))
    }

    /// The `Authorization` header value that presents this token (`Bearer <token>`), for
    /// `dockns health`. Never log it.
    pub fn authorization(&self) -> Vec<u8> {
        [b"Bearer ".as_slice(), &self.0].concat()
    }
}

/// Reads `[admin] token_file`: the token is the file's text without surrounding white space.
/// A missing, unreadable, world-readable or empty file is a one-line error naming it and the fix.
pub fn read_token(path: &Path) -> Result<Token, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "[admin] token_file {shown}: {e}; create it with a random token (e.g. `head -c 32 /dev/urandom | base64 > {shown}; chmod 600 {shown}`) or remove the key"
        )
    })?;
    if !meta.is_file() {
        return Err(format!(
            "[admin] token_file {shown} is not a regular file; point it at a file holding the token"
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(format!(
            "[admin] token_file {shown} is open to every user (mode {mode:03o}): `chmod 600 {shown}` (or 640 with a group dockns is in)"
        ));
    }
    let text = std::fs::read(path).map_err(|e| {
        format!(
            "[admin] token_file {shown}: {e}; make it readable by the user dockns runs as (e.g. chown it to that user, mode 600)"
        )
    })?;
    let token = text.trim_ascii();
    if token.is_empty() {
        return Err(format!(
            "[admin] token_file {shown} is empty: write a random token into it (e.g. `head -c 32 /dev/urandom | base64 > {shown}`)"
        ));
    }
    Ok(Token(token.into()))
}

/// Who may use the admin API and who sees every network (`[admin] allow`, `full_access`,
/// `token_file`). See the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdminAccess {
    /// Client networks served, scoped unless also in `full_access`.
    pub allow: Vec<IpNet>,
    /// Client networks served with every network's tables and any explanation.
    pub full_access: Vec<IpNet>,
    /// Where the token came from.
    pub token_file: Option<PathBuf>,
    /// The bearer token, when `token_file` is set.
    #[serde(skip)]
    pub token: Option<Token>,
}

impl Default for AdminAccess {
    fn default() -> Self {
        AdminAccess {
            allow: loopback_nets(),
            full_access: loopback_nets(),
            token_file: None,
            token: None,
        }
    }
}

/// What an admitted request may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every network; `/v1/explain` for any client.
    Full,
    /// What a DNS query from `client` sent to `local` could resolve; `/v1/explain` only for
    /// that pair.
    Client {
        /// The client's address.
        client: IpAddr,
        /// The address it reached the admin API on.
        local: IpAddr,
    },
}

/// Why a request is not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// Address not allowed and no token configured: 403.
    Forbidden,
    /// A token is configured and the request did not carry it (or carried another): 401.
    Unauthorized,
}

impl AdminAccess {
    /// Whether every network that may use the API is inside loopback (for the warning).
    fn only_loopback(&self) -> bool {
        self.allow
            .iter()
            .chain(&self.full_access)
            .all(|n| n.network().is_loopback() && n.broadcast().is_loopback())
    }

    /// The warning `check-config` and `serve` print for an admin API reachable beyond loopback
    /// that only loopback may use.
    pub fn exposure_warning(&self, listen: SocketAddr) -> Option<String> {
        (!listen.ip().is_loopback() && self.token.is_none() && self.only_loopback()).then(|| {
            format!(
                "[admin] listen = \"{listen}\" is reachable beyond loopback, but with no [admin] allow beyond loopback and no token_file only loopback clients are served (everyone else gets 403): listen on {DEFAULT_LISTEN}, or add the scrapers' network to [admin] allow, or set [admin] token_file"
            )
        })
    }

    /// Decides a request from `client` that reached us on `local` carrying `authorization`
    /// (the raw `Authorization` header, if any).
    pub fn decide(
        &self,
        client: IpAddr,
        local: IpAddr,
        authorization: Option<&[u8]>,
    ) -> Result<Scope, Denied> {
        let client = client.to_canonical();
        let local = local.to_canonical();
        // `Bearer <token>`; the scheme is case-insensitive (RFC 9110 11.1). Anything else
        // counts as a wrong token.
        let presented = authorization.map(|h| match h.split_at_checked(7) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
            _ => b"",
        });
        let token_ok = match (&self.token, presented) {
            (Some(t), Some(p)) => {
                if !t.matches(p) {
                    // A wrong token is refused even from an allowed address: the sender is
                    // misconfigured and should learn it.
                    return Err(Denied::Unauthorized);
                }
                true
            }
            _ => false,
        };
        let full = self.full_access.iter().any(|n| n.contains(&client));
        if full {
            return Ok(Scope::Full);
        }
        if token_ok || self.allow.iter().any(|n| n.contains(&client)) {
            return Ok(Scope::Client { client, local });
        }
        Err(if self.token.is_some() {
            Denied::Unauthorized
        } else {
            Denied::Forbidden
        })
    }
}

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
    /// Access and scope rules (replaced on reload).
    pub access: Arc<ArcSwap<AdminAccess>>,
    /// The DNS admission guard: `/v1/explain` scopes a client as the listeners do (this
    /// machine's own addresses get the host view, whichever listener they reached).
    pub guard: Arc<Guard>,
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
    BindError::Admin {
        addr,
        source: crate::dns::listen::owned_io_error(e),
        fix,
    }
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
            let (stream, peer) = tokio::select! {
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
            let local = match stream.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!("admin connection without a local address: {e}");
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, &req, peer, local)) }
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

fn denied(d: Denied, client: IpAddr) -> Resp {
    let mut r = match d {
        Denied::Forbidden => error(
            StatusCode::FORBIDDEN,
            format!(
                "client {client} may not use the admin API: add its network to [admin] allow (or use it from loopback)"
            ),
        ),
        Denied::Unauthorized => error(
            StatusCode::UNAUTHORIZED,
            format!(
                "client {client} may not use the admin API without the token: send `Authorization: Bearer <the text of [admin] token_file>`, or add its network to [admin] allow"
            ),
        ),
    };
    let h = r.headers_mut();
    if d == Denied::Unauthorized {
        h.insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer realm=\"dockns\""),
        );
    }
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

/// The names of the networks a scope shows, or `None` for every network.
fn visible_networks(snap: &Snapshot, scope: Scope) -> Option<BTreeSet<String>> {
    match scope {
        Scope::Full => None,
        Scope::Client { client, local } => {
            let nets = snap.networks();
            Some(
                snap.view_for(client, Some(local))
                    .networks
                    .iter()
                    .filter_map(|&(i, _)| nets.get(i as usize).map(|n| n.name.clone()))
                    .collect(),
            )
        }
    }
}

fn route(state: &AdminState, req: &Request<Incoming>, peer: SocketAddr, local: SocketAddr) -> Resp {
    // Access first: a client that may not use the API learns nothing, whatever it asks.
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let scope = match state.access.load().decide(peer.ip(), local.ip(), auth) {
        Ok(s) => s,
        Err(d) => {
            tracing::debug!(client = %peer, ?d, "admin request refused");
            return denied(d, peer.ip().to_canonical());
        }
    };
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
                let why = match state.server.docker_problem() {
                    Some(p) => format!("not ready: no initial Docker sync: {p}\n"),
                    None => "not ready: waiting for the initial Docker sync\n".into(),
                };
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", why)
            }
        }
        "/v1/records" | "/v1/records/" => {
            json(StatusCode::OK, &records_scoped(&state.publisher, None, scope))
        }
        "/v1/explain" => match explain_query(&state.publisher.snapshot(), &state.guard, query, scope) {
            Ok(doc) => json(StatusCode::OK, &doc),
            Err((status, e)) => error(status, e),
        },
        p => match p.strip_prefix("/v1/records/") {
            Some(net) => {
                let net = path_segment(net);
                let doc = records_scoped(&state.publisher, Some(&net), scope);
                if doc.networks.is_empty() {
                    // The same answer for a network that does not exist and one this client
                    // may not see: its existence is not revealed either.
                    error(
                        StatusCode::NOT_FOUND,
                        format!("no network named {net:?} is served to this client; GET /v1/records lists them"),
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
        pool: state.forwarder.pool_totals(),
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
    records_scoped(publisher, only, Scope::Full)
}

/// Builds the records document as `scope` may see it: every network, or only those a DNS
/// query from the scope's client could resolve; all of them or just `only`.
pub fn records_scoped(publisher: &Publisher, only: Option<&str>, scope: Scope) -> RecordsDoc {
    let snap = publisher.snapshot();
    let catalog = publisher.catalog();
    let visible = visible_networks(&snap, scope);
    let mut networks = Vec::new();
    for net in catalog.networks.values() {
        if only.is_some_and(|o| o != net.name)
            || visible.as_ref().is_some_and(|v| !v.contains(&net.name))
        {
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
        for e in index.into_iter().flat_map(|i| snap.network_entries(i)) {
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
    /// `answer`, `nodata`, `nxdomain`, `servfail` or `forward`.
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

/// Decodes the `%XX` escapes of a path segment (RFC 3986 §2.1; a bad escape stays as it is).
fn path_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn explain_query(
    snap: &Snapshot,
    guard: &Guard,
    query: &str,
    scope: Scope,
) -> Result<ExplainDoc, (StatusCode, String)> {
    let bad = |e: String| (StatusCode::BAD_REQUEST, e);
    let mut name = None;
    let mut qtype = "A".to_string();
    let mut from = None;
    let mut local = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let v = v.into_owned();
        match &*k {
            "name" => name = Some(v),
            "type" => qtype = v,
            "from" => from = Some(v),
            "local" => local = Some(v),
            _ => {
                return Err(bad(format!(
                    "unknown parameter {k:?}; use name, type, from, local"
                )))
            }
        }
    }
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("missing name: /v1/explain?name=NAME&type=A&from=IP".into()))?;
    let parse_ip =
        |v: Option<String>, what: &str| -> Result<Option<IpAddr>, (StatusCode, String)> {
            v.filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpAddr>()
                        .map(|ip| ip.to_canonical())
                        .map_err(|_| bad(format!("{what}={s:?} is not an IP address")))
                })
                .transpose()
        };
    let from = parse_ip(from, "from")?;
    let local = parse_ip(local, "local")?;
    let (client, local) = match scope {
        Scope::Full => (from.unwrap_or(IpAddr::from([127, 0, 0, 1])), local),
        Scope::Client {
            client,
            local: reached,
        } => {
            // A scoped client explains only its own questions: from its address, to the
            // address it reached us on.
            if from.is_some_and(|f| f != client) || local.is_some_and(|l| l != reached) {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!(
                        "client {client} may only explain its own questions (from={client}, local={reached}); the full tables are for [admin] full_access clients"
                    ),
                ));
            }
            (client, Some(reached))
        }
    };
    // As the listeners do: a packet from one of this machine's own addresses (the host asking
    // through a gateway, after Docker's NAT) gets the host view, not the gateway's network view.
    let local = guard.scope_local(client, local);
    explain(snap, &name, &qtype, client, local).map_err(bad)
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
    let entry = snap.entry_for(view, &key);
    let network = entry.and_then(|(ni, _)| nets.get(ni as usize).map(|n| n.name.clone()));
    let (result, why, answers) = verdict(snap, view, client, (&key, &name, rtype), &network);
    Ok(ExplainDoc {
        name,
        qtype: rtype.to_string(),
        client,
        local,
        scope,
        view: view_names(snap, view),
        forwards_unknown: view.forward,
        result: result.into(),
        why,
        answers,
        network,
        generation: snap.generation,
    })
}

/// The networks a view holds, by name (`(qualified only)` where plain names are not seen).
fn view_names(snap: &Snapshot, view: &crate::model::View) -> Vec<String> {
    let nets = snap.networks();
    view.networks
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
        .collect()
}

/// The result, the reason and the answers of one question (`key` the normalized form of
/// `name`) in `view`; `network` is where the name was found.
fn verdict(
    snap: &Snapshot,
    view: &crate::model::View,
    client: IpAddr,
    (key, name, rtype): (&[u8], &str, hickory_proto::rr::RecordType),
    network: &Option<String>,
) -> (&'static str, String, Vec<String>) {
    match snap.resolve(view, key, u16::from(rtype), 1) {
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
        Resolution::NxDomain { soa: true } => (
            "nxdomain",
            format!("{name} is under the local zone but not in this client's tables"),
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
        Resolution::ServFail => (
            "servfail",
            format!("{name} is known here but its {rtype} answer is not a valid DNS name (a label over 63 bytes or a name over 255): SERVFAIL, as Docker answers"),
            Vec::new(),
        ),
        Resolution::NxDomain { soa: false } | Resolution::Forward => {
            let (result, why) = explain_unanswered(snap, client, view, key, name);
            (result, why, Vec::new())
        }
    }
}

/// Where a name the tables do not answer goes for this client (per-container upstreams,
/// internal networks, Docker's resolver as upstream), as [`Snapshot::unanswered`] decides.
fn explain_unanswered(
    snap: &Snapshot,
    client: IpAddr,
    view: &crate::model::View,
    key: &[u8],
    name: &str,
) -> (&'static str, String) {
    let servers = snap.client_servers(client).map(|l| {
        l.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    });
    match snap.unanswered(client, view, key) {
        crate::model::Unanswered::Forward => (
            "forward",
            match servers {
                Some(list) => format!("{name} is not in the tables of the networks this client sees: forwarded to the client container's own DNS servers ({list})"),
                None => format!("{name} is not in the tables of the networks this client sees: forwarded upstream"),
            },
        ),
        crate::model::Unanswered::NxDomain => (
            "nxdomain",
            format!("{name} is a container's name on a network this client does not see, and its upstream is Docker's resolver 127.0.0.11, which would answer it from dockns's own scope: not forwarded"),
        ),
        crate::model::Unanswered::ServFail => (
            "servfail",
            format!("{name} is not in this client's tables, its networks are all internal and it has no DNS server of its own on them: SERVFAIL, not forwarded"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host asking through a network's gateway arrives (after Docker's NAT) from one of
    /// this machine's own addresses: the DNS listeners give it the host view, so `/v1/explain`
    /// (and `dockns query --from`) must too; an unknown client of that network keeps the
    /// network's view.
    #[test]
    fn explain_gives_host_addresses_the_host_view_on_a_gateway() {
        use crate::model::{BuildSettings, Catalog, Container, Endpoint, Health, Network};
        let gw: IpAddr = "172.30.0.1".parse().unwrap();
        let mut cat = Catalog::default();
        for (net, listen, subnet, ctr, ip) in [
            ("neta", vec![gw], "172.30.0.0/24", "only-a", "172.30.0.2"),
            ("netb", vec![], "172.31.0.0/24", "only-b", "172.31.0.2"),
        ] {
            cat.networks.insert(
                net.into(),
                Network {
                    name: net.into(),
                    id: String::new(),
                    internal: false,
                    listen_addrs: listen,
                    subnets: vec![subnet.parse().unwrap()],
                },
            );
            cat.containers.insert(
                ctr.into(),
                std::sync::Arc::new(Container {
                    id: String::new(),
                    name: ctr.into(),
                    hostname: None,
                    health: Health::None,
                    extra_names: vec![],
                    dns: Vec::new(),
                    endpoints: vec![Endpoint {
                        network: net.into(),
                        ipv4: vec![ip.parse().unwrap()],
                        ipv6: vec![],
                        aliases: vec![],
                        links: Vec::new(),
                    }],
                    anonymous: false,
                }),
            );
        }
        let snap = Snapshot::build(&cat, BuildSettings::default());
        let guard = Guard::new(Default::default());
        guard.set_host_addrs(vec!["192.0.2.10".parse().unwrap()]);
        let ask = |from: &str| {
            let q = format!("name=only-b&from={from}&local={gw}");
            explain_query(&snap, &guard, &q, Scope::Full).unwrap()
        };
        let host = ask("192.0.2.10");
        assert_eq!(host.result, "answer", "{host:?}");
        assert_eq!(host.answers, ["172.31.0.2"]);
        assert!(host.scope.starts_with("host view"), "{}", host.scope);
        let loopback = ask("127.0.0.1");
        assert_eq!(loopback.answers, ["172.31.0.2"], "{loopback:?}");
        let member = ask("172.30.0.9");
        assert_ne!(member.result, "answer", "{member:?}");
        assert_eq!(member.view, ["neta"]);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(path_segment("fd00%3A%3A1"), "fd00::1");
        assert_eq!(path_segment("%zz%4"), "%zz%4");
        assert_eq!(path_segment("%41"), "A");
        // The query string of /v1/explain: `+` is a space, bad escapes stay.
        let pairs: Vec<(String, String)> = form_urlencoded::parse(b"name=a+b%&from=fd00%3A%3A1&x")
            .into_owned()
            .collect();
        assert_eq!(
            pairs,
            [
                ("name".into(), "a b%".into()),
                ("from".into(), "fd00::1".into()),
                ("x".into(), "".into())
            ]
        );
    }

    #[test]
    fn access_decisions() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let access = AdminAccess {
            allow: vec!["10.53.0.0/24".parse().unwrap()],
            full_access: vec!["127.0.0.1/32".parse().unwrap()],
            token_file: None,
            token: Some(Token(b"tok".as_slice().into())),
        };
        let local = ip("10.53.0.53");
        let scoped = |c: &str| {
            Ok(Scope::Client {
                client: ip(c),
                local,
            })
        };
        assert_eq!(access.decide(ip("127.0.0.1"), local, None), Ok(Scope::Full));
        // An IPv4 client of a dual-stack socket arrives as ::ffff:a.b.c.d.
        assert_eq!(
            access.decide(ip("::ffff:127.0.0.1"), local, None),
            Ok(Scope::Full)
        );
        assert_eq!(
            access.decide(ip("10.53.0.7"), local, None),
            scoped("10.53.0.7")
        );
        assert_eq!(
            access.decide(ip("::ffff:10.53.0.7"), local, None),
            scoped("10.53.0.7")
        );
        let outside = ip("192.0.2.1");
        assert_eq!(
            access.decide(outside, local, None),
            Err(Denied::Unauthorized)
        );
        for good in [&b"Bearer tok"[..], b"bearer tok", b"BEARER  tok "] {
            assert_eq!(
                access.decide(outside, local, Some(good)),
                scoped("192.0.2.1")
            );
        }
        for bad in [
            &b"Bearer to"[..],
            b"Bearer tokk",
            b"Basic tok",
            b"tok",
            b"",
            b"Bearer",
        ] {
            assert_eq!(
                access.decide(outside, local, Some(bad)),
                Err(Denied::Unauthorized),
                "{}",
                String::from_utf8_lossy(bad)
            );
            // Wrong from an allowed or full address too.
            assert_eq!(
                access.decide(ip("127.0.0.1"), local, Some(bad)),
                Err(Denied::Unauthorized)
            );
        }
        let no_token = AdminAccess {
            token: None,
            ..access
        };
        assert_eq!(
            no_token.decide(outside, local, None),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            no_token.decide(outside, local, Some(b"Bearer tok")),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            format!("{:?}", Token(b"tok".as_slice().into())),
            "Token(<redacted>)"
        );
    }

    #[test]
    fn wire_names() {
        assert_eq!(wire_name_text(b"\x02db\x04demo\x00"), "db.demo.");
        assert_eq!(wire_name_text(b"\x05ab"), ".");
        assert_eq!(wire_name_text(b""), ".");
    }
}
