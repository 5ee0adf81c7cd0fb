//! The DNS side: wire format, the fast and slow answer paths, TCP framing, reply accounting,
//! and the UDP/TCP listeners (one UDP engine with a fixed number of threads serves them all).
//!
//! Listeners only read snapshots (see `model`) and hand upstream questions to `forward`; they
//! never write to the model. `answer::handle` is the single entry point from bytes to reply.

pub mod answer;
pub mod engine;
pub mod framing;
pub mod guard;
pub mod listen;
pub mod mmsg;
pub mod report;
pub mod slow;
pub mod stats;
pub mod tcp;
pub mod udp;
pub mod wire;
