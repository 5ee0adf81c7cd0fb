//! Pre-encoded answer records: the bytes a snapshot stores once and every response copies.
//!
//! A [`RecordSet`] is built when a snapshot is compiled (never per query) and read by the
//! response writer in `codec`, which rotates uniform sets (A, AAAA) without re-encoding. This
//! module only encodes records; which records a name has is the model's business.

use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

/// A set of pre-encoded resource records of one type for one owner name.
///
/// Each record starts with a compression pointer to offset 12 (the question name), so the bytes
/// are valid in any response whose question is that name, whatever its letter case.
#[derive(Debug, Default, Clone)]
pub struct RecordSet {
    bytes: Box<[u8]>,
    count: u16,
    /// Size of every record when they are all the same size (A, AAAA): rotation is possible.
    stride: u16,
}

impl RecordSet {
    /// Number of records.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Whether the set holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// All records, encoded.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Size in bytes of every record, when they are uniform (0 otherwise).
    pub fn stride(&self) -> usize {
        usize::from(self.stride)
    }

    /// A set from already encoded records (each owned by the question name).
    pub fn from_raw(bytes: Vec<u8>, count: u16) -> RecordSet {
        RecordSet {
            bytes: bytes.into_boxed_slice(),
            count,
            stride: 0,
        }
    }

    /// A set encoding `records` (each owned by the question name, so each starts with a pointer
    /// to offset 12); `uniform` sets (A, AAAA) record their common size so answers can rotate.
    pub fn from_records(records: &[Record], uniform: bool) -> RecordSet {
        let mut bytes = Vec::new();
        let mut stride = 0usize;
        for r in records {
            let before = bytes.len();
            encode_answer_rr(r, &mut bytes);
            stride = bytes.len() - before;
        }
        RecordSet {
            count: records.len() as u16,
            stride: if uniform && records.len() > 1 {
                stride as u16
            } else {
                0
            },
            bytes: bytes.into_boxed_slice(),
        }
    }
}

/// Encodes one answer record whose owner is the question name: pointer 0xC00C, then type,
/// class, TTL, RDLENGTH and the RDATA as hickory-proto encodes it.
fn encode_answer_rr(record: &Record, out: &mut Vec<u8>) {
    let mut rdata = Vec::with_capacity(16);
    {
        let mut enc = BinEncoder::new(&mut rdata);
        // Pointers would be relative to this scratch buffer: write names out in full.
        enc.set_name_encoding(NameEncoding::Uncompressed);
        // Encoding an A/AAAA/PTR/SOA into a growable buffer cannot fail.
        let _ = record.data.emit(&mut enc);
    }
    out.extend_from_slice(&[0xC0, 0x0C]);
    out.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
    out.extend_from_slice(&u16::from(record.dns_class).to_be_bytes());
    out.extend_from_slice(&record.ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
}
