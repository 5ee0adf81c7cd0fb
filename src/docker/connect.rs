//! Reaching the daemon: which endpoint, the client for it, why connecting fails in words a
//! user can act on, how long to wait before the next attempt, and the daemon's clock.
//!
//! This module holds no state and must not follow events or publish anything (that is `watch`).

use super::error::REQUEST_TIMEOUT_S;
use super::watch::WatchOptions;
use bollard::errors::Error as BollardError;
use bollard::{ClientVersion, Docker, API_DEFAULT_VERSION};
use std::time::Duration;

/// Reconnect backoff bounds. The cap is what bounds the resync delay after a long outage
/// (the backoff never grows past it), so it stays well under a second; see `watch`'s docs.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_millis(500);

pub fn endpoint_text(opts: &WatchOptions) -> String {
    opts.docker.endpoint.clone().unwrap_or_else(|| {
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
    })
}

/// Idle connections to a Unix-socket daemon kept for reuse (the requests events trigger are
/// made one at a time).
const UNIX_POOL_IDLE: usize = 2;
/// How long an idle connection is kept.
const UNIX_POOL_IDLE_FOR: Duration = Duration::from_secs(30);

/// Opens a client for the configured endpoint (no I/O yet). It opens a connection for each
/// request (bollard's clients keep none).
pub fn client(endpoint: &str) -> Result<Docker, BollardError> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        Docker::connect_with_unix(path, REQUEST_TIMEOUT_S, API_DEFAULT_VERSION)
    } else if endpoint.starts_with('/') {
        Docker::connect_with_unix(endpoint, REQUEST_TIMEOUT_S, API_DEFAULT_VERSION)
    } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        Docker::connect_with_http(endpoint, REQUEST_TIMEOUT_S, API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_host(endpoint)
    }
}

/// A client for the configured endpoint speaking API `version` that keeps its connections
/// open between requests, for the requests events trigger (see [`unix_client`]); on a
/// `tcp://` endpoint the same as [`client`].
pub fn pooled_client(endpoint: &str, version: &ClientVersion) -> Result<Docker, BollardError> {
    match endpoint.strip_prefix("unix://") {
        Some(path) => unix_client(path, version),
        None if endpoint.starts_with('/') => unix_client(endpoint, version),
        None => client(endpoint),
    }
}

/// A client for a daemon on a Unix socket that keeps its connections open between requests.
/// bollard's own Unix client opens a new connection for every request (its pool is off): a
/// socket, a connect, an accept in the daemon, a new hyper connection task and a close, for
/// each inspection an event triggers. Here the same requests go through a hyper client whose
/// pool keeps up to [`UNIX_POOL_IDLE`] idle connections for [`UNIX_POOL_IDLE_FOR`]. The
/// daemon (Go's `net/http`) keeps HTTP/1.1 connections open; one it closes is dropped from
/// the pool when hyper sees the close, and every session (each reconnect) builds a fresh
/// client, so a restarted daemon is never asked on a connection to its previous life.
fn unix_client(path: &str, version: &ClientVersion) -> Result<Docker, BollardError> {
    if !std::path::Path::new(path).exists() {
        return Err(BollardError::SocketNotFoundError(path.to_string()));
    }
    let pool = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(UNIX_POOL_IDLE)
        .pool_idle_timeout(UNIX_POOL_IDLE_FOR)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(hyperlocal::UnixConnector);
    let pool = std::sync::Arc::new(pool);
    // bollard writes `{scheme}://{client_addr}/v1.NN/...` for a custom transport: the
    // hex-encoded socket path as the host is what hyperlocal's connector reads.
    let host: hyper::Uri = hyperlocal::Uri::new(path, "/").into();
    let authority = host.authority().map(|a| a.as_str().to_string());
    let addr = format!("unix://{}", authority.unwrap_or_default());
    Docker::connect_with_custom_transport(
        move |req: bollard::BollardRequest| {
            let pool = pool.clone();
            async move { pool.request(req).await.map_err(BollardError::from) }
        },
        Some(addr),
        REQUEST_TIMEOUT_S,
        version,
    )
}

/// For a Unix-socket endpoint, why connecting fails, in words a user can act on (bollard's
/// own error says only "client error (Connect)"). `None` for other endpoints, or when a plain
/// connect works (the failure is then further up, e.g. the API).
pub fn socket_diagnosis(endpoint: &str) -> Option<String> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.starts_with('/').then_some(endpoint))?;
    let e = std::os::unix::net::UnixStream::connect(path).err()?;
    Some(match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "no socket at {path} (is dockerd running? in a container: mount it with -v /var/run/docker.sock:{path}:ro)"
        ),
        std::io::ErrorKind::PermissionDenied => permission_text(path),
        std::io::ErrorKind::ConnectionRefused => {
            format!("nothing listens on {path} (dockerd stopped, or a stale socket file)")
        }
        _ => format!("{path}: {e}"),
    })
}

/// Why this process may not open the socket at `path`, and the fix: who owns it, who we are,
/// and the `--group-add` that grants access.
fn permission_text(path: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail; getgroups writes at most `buf.len()` entries.
    let uid = unsafe { libc::geteuid() };
    let mut buf = [0 as libc::gid_t; 64];
    let n = unsafe { libc::getgroups(buf.len() as libc::c_int, buf.as_mut_ptr()) };
    let mut groups: Vec<String> = buf[..n.max(0) as usize]
        .iter()
        .map(|g| g.to_string())
        .collect();
    let egid = unsafe { libc::getegid() }.to_string();
    if !groups.contains(&egid) {
        groups.insert(0, egid);
    }
    match std::fs::metadata(path) {
        Ok(m) => format!(
            "permission denied on {path} (owner {}:{}, mode {:o}) for uid {uid} (groups {}): give dockns the socket's group, e.g. `docker run --group-add {}` (compose: group_add: [\"{}\"]), or run it as uid 0",
            m.uid(),
            m.gid(),
            m.mode() & 0o777,
            groups.join(","),
            m.gid(),
            m.gid()
        ),
        Err(_) => format!(
            "permission denied on {path} for uid {uid} (groups {}): give dockns the socket's group (`docker run --group-add $(stat -c %g {path})`) or run it as uid 0",
            groups.join(",")
        ),
    }
}

/// The wait before the next reconnect attempt: doubling, capped at [`BACKOFF_MAX`].
pub fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(BACKOFF_MIN, BACKOFF_MAX)
}
/// Whether a negotiated API version predates `DNSNames` (1.44, Docker 25), the versions on
/// which Docker keeps anonymous containers' generated names out of DNS.
pub fn before_dns_names(v: &bollard::ClientVersion) -> bool {
    (v.major_version, v.minor_version) < (1, 44)
}

/// Parses an RFC 3339 timestamp as Docker writes it (`2026-11-22T06:01:22.981698527Z`, or with
/// a `+01:00` offset) into time since the Unix epoch; `None` for anything else or a time
/// before the epoch.
pub fn parse_rfc3339(s: &str) -> Option<Duration> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    let nanos = u64::try_from(t.unix_timestamp_nanos()).ok()?;
    Some(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_clock_parsing() {
        let t = parse_rfc3339("2026-11-22T06:01:22.981698527Z").unwrap();
        assert_eq!(t.as_secs(), 1_795_327_282);
        assert_eq!(t.subsec_nanos(), 981_698_527);
        let t = parse_rfc3339("1970-01-01T01:00:00.5+01:00").unwrap();
        assert_eq!((t.as_secs(), t.subsec_nanos()), (0, 500_000_000));
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00Z").unwrap().as_secs(),
            951_868_800
        );
        assert!(parse_rfc3339("yesterday").is_none());
        assert!(parse_rfc3339("2026-13-01T00:00:00Z").is_none());
        assert!(parse_rfc3339("").is_none());
    }

    #[test]
    fn reconnect_backoff_stays_short_however_long_the_outage() {
        let mut waits = vec![BACKOFF_MIN];
        for _ in 0..100 {
            waits.push(next_backoff(*waits.last().unwrap()));
        }
        assert_eq!(
            &waits[..4],
            &[
                Duration::from_millis(200),
                Duration::from_millis(400),
                Duration::from_millis(500),
                Duration::from_millis(500)
            ]
        );
        // 30 s of outage is about 60 attempts; the wait never exceeds half a second.
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(500)));
        assert_eq!(*waits.last().unwrap(), BACKOFF_MAX);
    }

    #[test]
    fn unreachable_endpoint_is_an_error_not_a_panic() {
        assert!(client("unix:///nonexistent/docker.sock").is_err());
        assert!(pooled_client("unix:///nonexistent/docker.sock", API_DEFAULT_VERSION).is_err());
    }

    #[test]
    fn socket_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.sock");
        let d = socket_diagnosis(&format!("unix://{}", missing.display())).unwrap();
        assert!(d.starts_with("no socket at"), "{d}");
        // A socket file nobody listens on (bound, then the listener dropped).
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let d = socket_diagnosis(stale.to_str().unwrap()).unwrap();
        assert!(d.starts_with("nothing listens on"), "{d}");
        // A live socket: no diagnosis (the problem is elsewhere).
        let live = dir.path().join("live.sock");
        let _l = std::os::unix::net::UnixListener::bind(&live).unwrap();
        assert_eq!(socket_diagnosis(live.to_str().unwrap()), None);
        assert_eq!(socket_diagnosis("tcp://127.0.0.1:2375"), None);
    }
}
