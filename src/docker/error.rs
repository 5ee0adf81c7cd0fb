//! Why a request to the Docker daemon, or the event stream, failed: one typed error for the
//! watcher, each variant a one-line message naming what was being done, with the bollard error
//! as its `source()`.
//!
//! This module must not decide what a failure means for the session (that is `watch`).

use bollard::errors::Error as BollardError;
use std::time::Duration;

/// Seconds a request to the daemon may take before it counts as a failure.
pub const REQUEST_TIMEOUT_S: u64 = 20;

/// A failure of the Docker source.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Connecting to the daemon, or a request that has no context of its own, failed.
    #[error("{}", one_line(.0))]
    Daemon(#[source] BollardError),
    /// A request failed; `context` says which ("inspecting container 4c99...").
    #[error("{context}: {}", one_line(.source))]
    Api {
        /// What was being done.
        context: String,
        /// The daemon's (or the transport's) error.
        #[source]
        source: BollardError,
    },
    /// The event stream ended while a request was pending.
    #[error("the event stream ended while a request to the daemon was pending")]
    StreamEnded,
    /// The daemon closed the event stream.
    #[error("the daemon closed the event stream")]
    StreamClosed,
    /// The task reading the event stream stopped.
    #[error("event reader stopped")]
    ReaderStopped,
    /// A swarm peer (another node's dockns) could not be read.
    #[error("swarm peer {peer}: {source}")]
    Peer {
        /// The peer's address and port.
        peer: std::net::SocketAddr,
        /// Why: connection, timeout, or a document that is not one.
        #[source]
        source: std::io::Error,
    },
}

impl WatchError {
    /// A `map_err` adapter that puts `context` in front of a bollard error.
    pub fn api(context: impl Into<String>) -> impl FnOnce(BollardError) -> WatchError {
        let context = context.into();
        move |source| WatchError::Api { context, source }
    }
}

/// One line for a bollard error (its Display can span several lines).
pub fn one_line(e: &BollardError) -> String {
    e.to_string().replace('\n', " ")
}

/// Whether the daemon answered 404 (the object is gone).
pub fn is_not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Runs one request under [`REQUEST_TIMEOUT_S`] as a whole. bollard's own timeout covers only
/// the response headers, so a daemon that sends headers and then stalls the body would hold
/// the watcher forever.
pub async fn timed<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, BollardError>>,
) -> Result<T, BollardError> {
    match tokio::time::timeout(Duration::from_secs(REQUEST_TIMEOUT_S), fut).await {
        Ok(r) => r,
        Err(_) => Err(BollardError::IOError {
            err: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{what}: no complete answer within {REQUEST_TIMEOUT_S} s"),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn messages_name_the_request_and_keep_the_cause() {
        let e = WatchError::api("inspecting container abc")(BollardError::IOError {
            err: std::io::Error::other("broken\npipe"),
        });
        assert_eq!(e.to_string(), "inspecting container abc: broken pipe");
        assert!(e.source().is_some());
        assert_eq!(
            WatchError::StreamEnded.to_string(),
            "the event stream ended while a request to the daemon was pending"
        );
    }
}
