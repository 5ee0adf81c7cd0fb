//! The one test kit of every integration test (and of the Docker bench): DNS messages built and
//! read in one place ([`dns`], on hickory-proto), one fake upstream ([`upstream`]), dockns in
//! this process ([`server`], [`aio`]) or as the real binary ([`process`]), a real Docker daemon
//! ([`docker`]) or a fake Engine API ([`engine`]), the Docker path at scale against that fake
//! ([`scale`]), the fuzz targets' checks ([`fuzz`]), and visible skips ([`skip`]).
//!
//! It must not send traffic anywhere but loopback and the networks and containers a test
//! created, must not bind a port it probed and released (every socket it reports is bound and
//! kept, or bound by dockns itself on port 0), and must not let a test that did not run pass
//! silently: a missing requirement is fatal under `DOCKNS_REQUIRE_DOCKER=1` and a recorded,
//! printed skip otherwise.
//!
//! Each test file compiles it with `mod kit;` and imports what it uses; the sync helpers are
//! re-exported here, the async ones live in [`aio`].
#![allow(dead_code, unused_imports)]

pub mod aio;
pub mod dns;
pub mod docker;
pub mod engine;
pub mod fuzz;
pub mod process;
pub mod scale;
pub mod server;
pub mod skip;
pub mod upstream;

pub use dns::*;
pub use server::*;
pub use skip::{require_root, skip};
pub use upstream::{Behavior, FakeUpstream};
