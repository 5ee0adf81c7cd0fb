//! dockns: a fast, observable DNS server for containers.
//!
//! It keeps per-network tables of container names (from Docker or a static config), answers
//! them authoritatively over UDP and TCP with rotating A/AAAA records, and forwards everything
//! else upstream. The modules below are listed bottom-up, as the data flows: a module imports
//! only modules listed before it (checked by the tests in `layout.rs`; the generated graph is
//! in README's "Architecture"): sources ([`statics`], [`docker`]) → [`model::Publisher`] →
//! immutable [`model::Snapshot`] → [`dns`] listeners, with [`forward`] for the rest.

#![warn(missing_docs)]

// Bottom: DNS bytes, addresses, batched datagram I/O, per-worker query counters, table
// housekeeping.
pub mod addr;
pub mod mmsg;
pub mod room;
pub mod stats;
pub mod wire;

// The other counters and their rendering; the model (catalog, publisher, snapshot).
pub mod metrics;
pub mod model;

// The static source of names; the forwarder.
pub mod forward;
pub mod statics;

// The DNS engine: answers, admission, listeners.
pub mod dns;

// The admin API; the Docker source (it also adds and removes the engine's listeners).
pub mod admin;
pub mod docker;

// Settings, privileges, wiring.
pub mod config;
pub mod privileges;
pub mod server;

// Client side: never starts a server.
pub mod bench;
pub mod cli;

#[cfg(test)]
mod layout;
