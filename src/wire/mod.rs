//! DNS bytes: the bottom layer every other part builds on.
//!
//! It holds the wire format and nothing else: the shared constants (header length, message
//! limits, record types and classes, RCODEs), the zero-allocation fast parser and the one
//! response writer (`codec`), and the slow path that lets hickory-proto judge the unusual
//! queries (`slow`). It must not import any other dockns module: the model, the forwarder and
//! the listeners all import it, never the other way round.

mod codec;
pub mod slow;

pub use codec::*;
