//! The DNS engine: the answer path, admission (guard) and the UDP/TCP listeners; the wire format
//! it reads and writes lives below it in `wire`.
//!
//! Listeners only read snapshots (see `model`) and hand upstream questions to `forward`; they
//! never write to the model. `answer::handle` is the single entry point from bytes to reply.

pub mod answer;
pub mod guard;
pub mod listen;
pub mod tcp;
pub mod udp;
