//! dockns: a fast, observable DNS server for containers.
//!
//! It keeps per-network tables of container names (from Docker or a static config), answers
//! them authoritatively over UDP and TCP with rotating A/AAAA records, and forwards everything
//! else upstream. See "Architecture" in the README for the data flow: sources → [`model::Publisher`] →
//! immutable [`model::Snapshot`] → [`dns`] listeners, with [`forward`] for the rest.

#![warn(missing_docs)]

pub mod addr;
pub mod admin;
pub mod bench;
pub mod cli;
pub mod config;
pub mod dns;
pub mod docker;
pub mod forward;
#[cfg(test)]
mod layout;
pub mod metrics;
pub mod mmsg;
pub mod model;
pub mod privileges;
pub mod server;
pub mod statics;
pub mod stats;
pub mod wire;
