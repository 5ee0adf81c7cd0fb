//! The client side of `dockns records` and `dockns query`: a small HTTP GET against the admin
//! API, one DNS question to a running dockns, and the text they print.
//!
//! It only reads from a running dockns (admin API and DNS); it never touches Docker, the config
//! or the tables itself. Formatting functions are pure so tests can check the exact text.

use crate::admin::{ErrorDoc, ExplainDoc, RecordsDoc};
use bytes::Bytes;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use http_body_util::{BodyExt, Empty};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Time allowed for one HTTP request or one DNS question.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why `dockns records`, `dockns query` or `dockns health` could not do its job. Each message
/// names the cause and the fix; the underlying error is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The admin URL is not `http://...`.
    #[error("admin URL {0:?} must start with http:// (e.g. http://127.0.0.1:9153)")]
    NotHttp(String),
    /// The admin URL names no host.
    #[error("admin URL {0:?} has no host")]
    NoHost(String),
    /// No connection to the admin API.
    #[error("cannot reach the admin API at {base}: {source}; is dockns running with [admin] listen set (default 127.0.0.1:9153)? pass --admin URL otherwise")]
    AdminUnreachable {
        /// The admin URL.
        base: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed (`what` says which step, with the URL).
    #[error("{what} failed: {source}")]
    Http {
        /// The step: `HTTP handshake with URL`, `GET URL`, `reading the reply of URL`.
        what: String,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// The admin token cannot be sent in an HTTP header.
    #[error("the admin token holds characters an HTTP header cannot carry; write a token of printable ASCII (e.g. `head -c 32 /dev/urandom | base64`)")]
    BadToken,
    /// The request could not be built from the path.
    #[error("bad request path {uri:?}: {source}")]
    BadPath {
        /// The path.
        uri: String,
        /// Why.
        #[source]
        source: hyper::http::Error,
    },
    /// The admin API did not answer in time.
    #[error("the admin API at {base} did not answer within {timeout:?}")]
    AdminTimeout {
        /// The admin URL.
        base: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The admin API answered with an error.
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The `error` text of the answer (or its body).
        message: String,
    },
    /// The answer is not the document asked for.
    #[error("{url} answered something that is not a dockns document ({source}); is it a dockns admin API?")]
    NotDocument {
        /// The URL asked.
        url: String,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// `--server` is not an address.
    #[error("--server {0:?} is not ADDR or ADDR:PORT (e.g. 127.0.0.1:5353, [::1]:53)")]
    BadServer(String),
    /// The query name is not a DNS name.
    #[error("{name:?} is not a DNS name: {source}")]
    BadName {
        /// The name given.
        name: String,
        /// Why.
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// The query could not be encoded.
    #[error("cannot encode the query: {0}")]
    Encode(#[source] hickory_proto::ProtoError),
    /// The record type is not one.
    #[error("{0:?} is not a record type (A, AAAA, PTR, MX, TXT, SRV, or a number)")]
    BadType(String),
    /// A socket step of the DNS question failed (`what` says which, with the server).
    #[error("{what}: {source}")]
    Socket {
        /// The step: `cannot connect to SERVER over TCP`, `sending to SERVER failed`, ...
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server refused the UDP query (ICMP port unreachable).
    #[error("{server} refused the query ({source}): is a dockns listening there? pass --server ADDR:PORT")]
    Refused {
        /// The server.
        server: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No reply in time.
    #[error("no reply from {server} within {timeout:?}: is a dockns listening there? pass --server ADDR:PORT")]
    NoReply {
        /// The server.
        server: SocketAddr,
        /// The time allowed.
        timeout: Duration,
    },
}

/// The commands in `main.rs` report errors as text.
impl From<CliError> for String {
    fn from(e: CliError) -> String {
        e.to_string()
    }
}

/// A socket error with the step that failed.
fn socket(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
    let what = what.into();
    move |source| CliError::Socket { what, source }
}

/// Splits `http://host:port[/prefix]` into the address to connect to (port 80 when absent)
/// and the path prefix (no trailing slash).
fn split_url(url: &str) -> Result<(String, String), CliError> {
    if !url.starts_with("http://") {
        return Err(CliError::NotHttp(url.to_string()));
    }
    let parsed = url::Url::parse(url).map_err(|_| CliError::NoHost(url.to_string()))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| CliError::NoHost(url.to_string()))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let prefix = parsed.path().trim_end_matches('/');
    Ok((format!("{host}:{port}"), prefix.to_string()))
}

/// GETs `path` from the admin API at `base`; returns the status code and the body.
pub async fn http_get(base: &str, path: &str) -> Result<(u16, String), CliError> {
    http_get_authorized(base, path, None).await
}

/// [`http_get`] with an `Authorization` header (`dockns health` presents the configured
/// `[admin] token_file` token with it).
pub async fn http_get_authorized(
    base: &str,
    path: &str,
    authorization: Option<&[u8]>,
) -> Result<(u16, String), CliError> {
    let (hostport, prefix) = split_url(base)?;
    let uri = format!("{prefix}{path}");
    let http = |what: String| move |source| CliError::Http { what, source };
    let fut = async {
        let stream = tokio::net::TcpStream::connect(&hostport)
            .await
            .map_err(|source| CliError::AdminUnreachable {
                base: base.to_string(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(http(format!("HTTP handshake with {base}")))?;
        let driver = tokio::spawn(conn);
        let mut req =
            hyper::Request::get(uri.as_str()).header(hyper::header::HOST, hostport.as_str());
        if let Some(a) = authorization {
            let value =
                hyper::header::HeaderValue::from_bytes(a).map_err(|_| CliError::BadToken)?;
            req = req.header(hyper::header::AUTHORIZATION, value);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|source| CliError::BadPath {
                uri: uri.clone(),
                source,
            })?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(http(format!("GET {base}{path}")))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(http(format!("reading the reply of {base}{path}")))?
            .to_bytes();
        driver.abort();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .map_err(|_| CliError::AdminTimeout {
            base: base.to_string(),
            timeout: TIMEOUT,
        })?
}

/// GETs a JSON document; a non-200 answer becomes its `error` text.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    base: &str,
    path: &str,
) -> Result<T, CliError> {
    let (status, body) = http_get(base, path).await?;
    if status != 200 {
        let message = serde_json::from_str::<ErrorDoc>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| body.trim().to_string());
        return Err(CliError::Status {
            url: format!("{base}{path}"),
            status,
            message,
        });
    }
    serde_json::from_str(&body).map_err(|source| CliError::NotDocument {
        url: format!("{base}{path}"),
        source,
    })
}

/// Every byte but the unreserved characters of RFC 3986 (ALPHA DIGIT - . _ ~) is escaped.
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but unreserved characters (for query strings and path parts).
pub fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// Parses `ADDR[:PORT]` (`[v6]:PORT` for IPv6 with a port); the port defaults to 53.
pub fn parse_server(s: &str) -> Result<SocketAddr, CliError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| CliError::BadServer(s.to_string()))
}

/// Lays out rows as columns separated by two spaces, the first row being the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

/// The records document as two aligned tables: endpoints, then the names answered.
pub fn format_records(doc: &RecordsDoc) -> String {
    let mut eps = vec![[
        "NETWORK",
        "CONTAINER",
        "ID",
        "HEALTH",
        "IPV4",
        "IPV6",
        "NAMES",
    ]
    .map(String::from)
    .to_vec()];
    let mut names = vec![["NETWORK", "NAME", "ADDRESSES"].map(String::from).to_vec()];
    for n in &doc.networks {
        let net = if n.internal {
            format!("{} (internal)", n.name)
        } else {
            n.name.clone()
        };
        for e in &n.endpoints {
            eps.push(vec![
                net.clone(),
                e.container.clone(),
                if e.id.is_empty() {
                    "-".into()
                } else {
                    e.id.clone()
                },
                e.health.clone(),
                list(&e.ipv4),
                list(&e.ipv6),
                list(&e.names),
            ]);
        }
        for nm in &n.names {
            let addrs: Vec<String> = nm.addresses.iter().map(|a| a.to_string()).collect();
            names.push(vec![net.clone(), nm.name.clone(), list(&addrs)]);
        }
    }
    let mut out = String::new();
    if doc.networks.is_empty() {
        out.push_str("no networks are served\n");
        return out;
    }
    out.push_str(&table(&eps));
    out.push('\n');
    out.push_str(&table(&names));
    let _ = writeln!(
        out,
        "\n{} network(s), {} endpoint(s), {} name(s); snapshot generation {}",
        doc.networks.len(),
        doc.networks
            .iter()
            .map(|n| n.endpoints.len())
            .sum::<usize>(),
        doc.networks.iter().map(|n| n.names.len()).sum::<usize>(),
        doc.generation
    );
    out
}

/// The explanation as `;;` comment lines, like dig's.
pub fn format_explain(e: &ExplainDoc) -> String {
    let mut out = String::new();
    let local = e
        .local
        .map(|l| format!(", asked on {l}"))
        .unwrap_or_default();
    let _ = writeln!(out, ";; SCOPE: client {}{local}: {}", e.client, e.scope);
    let view = if e.view.is_empty() {
        "(no network)".to_string()
    } else {
        e.view.join(", ")
    };
    let _ = writeln!(
        out,
        ";; VIEW: {view}; unknown names {}",
        if e.forwards_unknown {
            "are forwarded upstream"
        } else {
            "get SERVFAIL unless the client has DNS servers of its own on them (internal networks only)"
        }
    );
    let _ = writeln!(out, ";; TABLES: {}: {}", e.result.to_uppercase(), e.why);
    if !e.answers.is_empty() {
        let _ = writeln!(out, ";; RECORDS: {}", e.answers.join(", "));
    }
    out
}

/// Builds a query for `name`/`qtype` with a random ID, RD set and EDNS (1232 bytes).
pub fn build_query(name: &str, qtype: RecordType) -> Result<Vec<u8>, CliError> {
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let qname = Name::from_ascii(&fqdn).map_err(|source| CliError::BadName {
        name: name.to_string(),
        source,
    })?;
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname, qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    msg.to_vec().map_err(CliError::Encode)
}

/// Parses a record type name (`A`, `aaaa`, `PTR`, `TYPE65`, `65`).
pub fn parse_type(s: &str) -> Result<RecordType, CliError> {
    let up = s.to_ascii_uppercase();
    if let Ok(t) = RecordType::from_str(&up) {
        return Ok(t);
    }
    up.strip_prefix("TYPE")
        .unwrap_or(&up)
        .parse::<u16>()
        .map(RecordType::from)
        .map_err(|_| CliError::BadType(s.to_string()))
}

/// A reply to `dockns query`.
pub struct Reply {
    /// The raw response.
    pub bytes: Vec<u8>,
    /// The address our query left from (the client address dockns saw, absent NAT).
    pub from: IpAddr,
    /// Round-trip time.
    pub rtt: Duration,
}

/// Sends one query to `server` over UDP or TCP and waits for the matching reply.
pub async fn ask(server: SocketAddr, query: &[u8], tcp: bool) -> Result<Reply, CliError> {
    let id = [query[0], query[1]];
    let start = Instant::now();
    let fut = async {
        if tcp {
            let mut s = tokio::net::TcpStream::connect(server)
                .await
                .map_err(socket(format!("cannot connect to {server} over TCP")))?;
            let from = s.local_addr().map_err(socket("no local address"))?.ip();
            let mut frame = (query.len() as u16).to_be_bytes().to_vec();
            frame.extend_from_slice(query);
            s.write_all(&frame)
                .await
                .map_err(socket(format!("sending to {server} failed")))?;
            loop {
                let len = s
                    .read_u16()
                    .await
                    .map_err(socket(format!("{server} closed the connection")))?;
                let mut buf = vec![0u8; usize::from(len)];
                s.read_exact(&mut buf)
                    .await
                    .map_err(socket(format!("{server} closed the connection mid-reply")))?;
                if buf.len() >= 2 && buf[..2] == id {
                    return Ok::<_, CliError>((buf, from));
                }
            }
        } else {
            let bind: SocketAddr = if server.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let s = tokio::net::UdpSocket::bind(bind)
                .await
                .map_err(socket("cannot open a UDP socket"))?;
            s.connect(server)
                .await
                .map_err(socket(format!("cannot reach {server}")))?;
            let from = s.local_addr().map_err(socket("no local address"))?.ip();
            s.send(query)
                .await
                .map_err(socket(format!("sending to {server} failed")))?;
            let mut buf = vec![0u8; 65535];
            loop {
                let n = s
                    .recv(&mut buf)
                    .await
                    .map_err(|source| CliError::Refused { server, source })?;
                if n >= 2 && buf[..2] == id {
                    buf.truncate(n);
                    return Ok::<_, CliError>((buf, from));
                }
            }
        }
    };
    let (bytes, from) =
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .map_err(|_| CliError::NoReply {
                server,
                timeout: TIMEOUT,
            })??;
    Ok(Reply {
        bytes,
        from,
        rtt: start.elapsed(),
    })
}

/// The mnemonic of a response code (`NOERROR`, `NXDOMAIN`, ... or `RCODE<n>`).
pub fn rcode_name(code: u16) -> String {
    crate::stats::RCODES
        .iter()
        .find(|(_, c)| *c == code)
        .map_or_else(|| format!("RCODE{code}"), |(n, _)| n.to_string())
}

/// A DNS reply as dig-like text: status line, then the answer and authority records.
pub fn format_reply(bytes: &[u8], server: SocketAddr, tcp: bool, rtt: Duration) -> String {
    let mut out = String::new();
    let msg = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(out, ";; unparseable reply from {server}: {e}");
            return out;
        }
    };
    let m = &msg.metadata;
    let mut flags = vec!["qr"];
    if m.authoritative {
        flags.push("aa");
    }
    if m.truncation {
        flags.push("tc");
    }
    if m.recursion_desired {
        flags.push("rd");
    }
    if m.recursion_available {
        flags.push("ra");
    }
    let _ = writeln!(
        out,
        ";; SERVER: {server} ({}), {:.1} ms",
        if tcp { "tcp" } else { "udp" },
        rtt.as_secs_f64() * 1000.0
    );
    let _ = writeln!(
        out,
        ";; STATUS: {}, flags: {}; answers: {}",
        rcode_name(u16::from(m.response_code)),
        flags.join(" "),
        msg.answers.len()
    );
    for r in &msg.answers {
        let _ = writeln!(out, "{r}");
    }
    for r in &msg.authorities {
        let _ = writeln!(out, "{r} ; authority");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:9153").unwrap(),
            ("127.0.0.1:9153".into(), "".into())
        );
        assert_eq!(
            split_url("http://localhost/dns/").unwrap(),
            ("localhost:80".into(), "/dns".into())
        );
        assert!(split_url("127.0.0.1:9153").is_err());
        assert!(split_url("http://").is_err());
    }

    #[test]
    fn tables_align() {
        let t = table(&[
            vec!["A".into(), "BB".into(), "C".into()],
            vec!["long".into(), "x".into(), "y".into()],
        ]);
        assert_eq!(t, "A     BB  C\nlong  x   y\n");
    }

    #[test]
    fn types_and_queries() {
        assert_eq!(parse_type("aaaa").unwrap(), RecordType::AAAA);
        assert_eq!(parse_type("TYPE65").unwrap(), RecordType::HTTPS);
        assert!(parse_type("nope").is_err());
        assert_eq!(parse_server("10.0.0.1").unwrap().port(), 53);
        assert_eq!(parse_server("[::1]:5353").unwrap().port(), 5353);
        assert!(parse_server("host:53").is_err());
        assert_eq!(url_encode("fd00::1 a"), "fd00%3A%3A1%20a");
        let q = build_query("api.demo", RecordType::A).unwrap();
        let m = Message::from_vec(&q).unwrap();
        assert_eq!(m.queries[0].name().to_ascii(), "api.demo.");
        assert!(build_query("a..b", RecordType::A).is_err());
    }
}
