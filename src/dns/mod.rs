//! The DNS engine: the answer path, admission (guard), TCP framing, reply accounting and the
//! UDP/TCP listeners (one UDP engine with a fixed number of threads serves them all); the wire
//! format it reads and writes lives below it in `wire`.
//!
//! Listeners only read snapshots (see `model`) and hand upstream questions to `forward`; they
//! never write to the model. `answer::handle` is the single entry point from bytes to reply.

pub mod answer;
pub mod engine;
pub mod framing;
pub mod guard;
pub mod listen;
pub mod report;
pub mod tcp;
pub mod udp;
