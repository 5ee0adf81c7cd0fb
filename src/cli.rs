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

/// Splits `http://host:port[/prefix]` into the address to connect to and the path prefix.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("admin URL {url:?} must start with http:// (e.g. http://127.0.0.1:9153)")
    })?;
    let (hostport, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if hostport.is_empty() {
        return Err(format!("admin URL {url:?} has no host"));
    }
    let hostport = if hostport.contains(':') && !hostport.ends_with(']') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    Ok((hostport, prefix.to_string()))
}

/// GETs `path` from the admin API at `base`; returns the status code and the body.
pub async fn http_get(base: &str, path: &str) -> Result<(u16, String), String> {
    http_get_authorized(base, path, None).await
}

/// [`http_get`] with an `Authorization` header (`dockns health` presents the configured
/// `[admin] token_file` token with it).
pub async fn http_get_authorized(
    base: &str,
    path: &str,
    authorization: Option<&[u8]>,
) -> Result<(u16, String), String> {
    let (hostport, prefix) = split_url(base)?;
    let uri = format!("{prefix}{path}");
    let fut = async {
        let stream = tokio::net::TcpStream::connect(&hostport).await.map_err(|e| {
            format!("cannot reach the admin API at {base}: {e}; is dockns running with [admin] listen set (default 127.0.0.1:9153)? pass --admin URL otherwise")
        })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake with {base} failed: {e}"))?;
        let driver = tokio::spawn(conn);
        let mut req =
            hyper::Request::get(uri.as_str()).header(hyper::header::HOST, hostport.as_str());
        if let Some(a) = authorization {
            let value = hyper::header::HeaderValue::from_bytes(a).map_err(|_| {
                "the admin token holds characters an HTTP header cannot carry; write a token of printable ASCII (e.g. `head -c 32 /dev/urandom | base64`)".to_string()
            })?;
            req = req.header(hyper::header::AUTHORIZATION, value);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("bad request path {uri:?}: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("GET {base}{path} failed: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the reply of {base}{path} failed: {e}"))?
            .to_bytes();
        driver.abort();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .map_err(|_| format!("the admin API at {base} did not answer within {TIMEOUT:?}"))?
}

/// GETs a JSON document; a non-200 answer becomes its `error` text.
pub async fn get_json<T: serde::de::DeserializeOwned>(base: &str, path: &str) -> Result<T, String> {
    let (status, body) = http_get(base, path).await?;
    if status != 200 {
        let msg = serde_json::from_str::<ErrorDoc>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| body.trim().to_string());
        return Err(format!("{base}{path}: HTTP {status}: {msg}"));
    }
    serde_json::from_str(&body).map_err(|e| {
        format!("{base}{path} answered something that is not a dockns document ({e}); is it a dockns admin API?")
    })
}

/// Percent-encodes everything but unreserved characters (for query strings and path parts).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Parses `ADDR[:PORT]` (`[v6]:PORT` for IPv6 with a port); the port defaults to 53.
pub fn parse_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| {
            format!("--server {s:?} is not ADDR or ADDR:PORT (e.g. 127.0.0.1:5353, [::1]:53)")
        })
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
pub fn build_query(name: &str, qtype: RecordType) -> Result<Vec<u8>, String> {
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let qname = Name::from_ascii(&fqdn).map_err(|e| format!("{name:?} is not a DNS name: {e}"))?;
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname, qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    msg.to_vec()
        .map_err(|e| format!("cannot encode the query: {e}"))
}

/// Parses a record type name (`A`, `aaaa`, `PTR`, `TYPE65`, `65`).
pub fn parse_type(s: &str) -> Result<RecordType, String> {
    let up = s.to_ascii_uppercase();
    if let Ok(t) = RecordType::from_str(&up) {
        return Ok(t);
    }
    up.strip_prefix("TYPE")
        .unwrap_or(&up)
        .parse::<u16>()
        .map(RecordType::from)
        .map_err(|_| {
            format!("{s:?} is not a record type (A, AAAA, PTR, MX, TXT, SRV, or a number)")
        })
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
pub async fn ask(server: SocketAddr, query: &[u8], tcp: bool) -> Result<Reply, String> {
    let id = [query[0], query[1]];
    let start = Instant::now();
    let fut = async {
        if tcp {
            let mut s = tokio::net::TcpStream::connect(server)
                .await
                .map_err(|e| format!("cannot connect to {server} over TCP: {e}"))?;
            let from = s
                .local_addr()
                .map_err(|e| format!("no local address: {e}"))?
                .ip();
            let mut frame = (query.len() as u16).to_be_bytes().to_vec();
            frame.extend_from_slice(query);
            s.write_all(&frame)
                .await
                .map_err(|e| format!("sending to {server} failed: {e}"))?;
            loop {
                let len = s
                    .read_u16()
                    .await
                    .map_err(|e| format!("{server} closed the connection: {e}"))?;
                let mut buf = vec![0u8; usize::from(len)];
                s.read_exact(&mut buf)
                    .await
                    .map_err(|e| format!("{server} closed the connection mid-reply: {e}"))?;
                if buf.len() >= 2 && buf[..2] == id {
                    return Ok::<_, String>((buf, from));
                }
            }
        } else {
            let bind: SocketAddr = if server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .map_err(|_| "bad bind address".to_string())?;
            let s = tokio::net::UdpSocket::bind(bind)
                .await
                .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
            s.connect(server)
                .await
                .map_err(|e| format!("cannot reach {server}: {e}"))?;
            let from = s
                .local_addr()
                .map_err(|e| format!("no local address: {e}"))?
                .ip();
            s.send(query)
                .await
                .map_err(|e| format!("sending to {server} failed: {e}"))?;
            let mut buf = vec![0u8; 65535];
            loop {
                let n = s.recv(&mut buf).await.map_err(|e| {
                    format!("{server} refused the query ({e}): is a dockns listening there? pass --server ADDR:PORT")
                })?;
                if n >= 2 && buf[..2] == id {
                    buf.truncate(n);
                    return Ok::<_, String>((buf, from));
                }
            }
        }
    };
    let (bytes, from) = tokio::time::timeout(TIMEOUT, fut)
        .await
        .map_err(|_| format!("no reply from {server} within {TIMEOUT:?}: is a dockns listening there? pass --server ADDR:PORT"))??;
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
