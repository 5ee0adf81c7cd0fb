//! The DNS side: wire format, the fast and slow answer paths, and the UDP/TCP listeners.
//!
//! Listeners only read snapshots (see `model`) and hand upstream questions to `forward`; they
//! never write to the model. `answer::handle` is the single entry point from bytes to reply.

pub mod answer;
pub mod guard;
pub mod listen;
pub mod mmsg;
pub mod slow;
pub mod stats;
pub mod tcp;
pub mod udp;
pub mod wire;
