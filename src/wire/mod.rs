//! DNS bytes: the bottom layer every other part builds on.
//!
//! It holds the wire format and nothing else: the shared constants (header length, message
//! limits, record types and classes, RCODEs), the zero-allocation fast parser and the one
//! response writer (`codec`), the pre-encoded answer records a snapshot stores (`records`), the
//! error reply every layer sends (`error_reply`), and the slow path that lets hickory-proto
//! judge the unusual queries (`slow`). It must not import any other dockns module: the model,
//! the forwarder and the listeners all import it, never the other way round.

mod codec;
mod error_reply;
mod records;
pub mod slow;

pub use codec::*;
pub use error_reply::error_response;
pub use records::RecordSet;

/// Longest key a lookup can carry (a wire name is at most 255 bytes including the root label).
pub const MAX_KEY_LEN: usize = 255;

/// Record type A (RFC 1035).
pub const TYPE_A: u16 = 1;
/// Record type NS (RFC 1035).
pub const TYPE_NS: u16 = 2;
/// Record type SOA (RFC 1035).
pub const TYPE_SOA: u16 = 6;
/// Record type PTR (RFC 1035).
pub const TYPE_PTR: u16 = 12;
/// Record type AAAA (RFC 3596).
pub const TYPE_AAAA: u16 = 28;
/// Pseudo-record type OPT (EDNS, RFC 6891).
pub const TYPE_OPT: u16 = 41;
/// Question type ANY (RFC 1035 `*`, RFC 8482).
pub const TYPE_ANY: u16 = 255;
/// Class IN.
pub const CLASS_IN: u16 = 1;
/// Question class ANY.
pub const CLASS_ANY: u16 = 255;
