//! DNS-over-TCP framing (RFC 1035 §4.2.2, RFC 7766 §8): each message is preceded by its length
//! as two bytes, big-endian; several messages may arrive in one read (pipelining) and one
//! message may take several reads.
//!
//! [`FrameReader`] is pure: it owns a buffer the caller reads bytes into and cuts complete
//! messages out of it, with no I/O, no clock and no allocation after it is built (as
//! mini-redis separates `Frame` parsing from its `Connection`). The connection loop in `tcp.rs`
//! does the reading, the timeouts and the answering; the `tcp_stream` fuzz target drives this
//! exact code with arbitrary bytes cut at arbitrary read boundaries.

use crate::wire::MAX_MESSAGE;
use std::ops::Range;

/// Length of the length prefix.
pub const PREFIX: usize = 2;

/// What the buffered bytes hold next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A complete message, at this range of [`FrameReader::bytes`]; it stays valid until the
    /// next call to [`FrameReader::read_space`].
    Message(Range<usize>),
    /// More bytes are needed.
    NeedMore,
    /// A zero length prefix: no message can follow it (dockns closes the connection).
    Empty,
}

/// Cuts length-prefixed messages out of a byte stream.
pub struct FrameReader {
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl FrameReader {
    /// A reader whose buffer holds one largest message with its prefix plus `read_ahead`
    /// bytes, so a read can take several small pipelined messages at once.
    pub fn new(read_ahead: usize) -> FrameReader {
        FrameReader {
            buf: vec![0u8; PREFIX + MAX_MESSAGE + read_ahead].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The next message, if the buffered bytes hold a complete one (consumed by this call).
    #[inline]
    pub fn next_frame(&mut self) -> Next {
        let avail = self.end - self.start;
        if avail < PREFIX {
            return Next::NeedMore;
        }
        let len = usize::from(u16::from_be_bytes([
            self.buf[self.start],
            self.buf[self.start + 1],
        ]));
        if len == 0 {
            return Next::Empty;
        }
        if avail < PREFIX + len {
            return Next::NeedMore;
        }
        let at = self.start + PREFIX;
        self.start = at + len;
        if self.start == self.end {
            // Everything consumed: the next read starts at the front again.
            self.start = 0;
            self.end = 0;
            // The message's bytes are still in place until the next read.
        }
        Next::Message(at..at + len)
    }

    /// The buffer that [`Next::Message`] ranges point into.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Where the next read may write (never empty while no complete message is buffered).
    /// Moves a partial message to the front when the room behind it is too short for it.
    pub fn read_space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.start < PREFIX + MAX_MESSAGE {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that a read wrote `n` bytes into [`read_space`](Self::read_space).
    #[inline]
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Whether the length of the next message is known but its bytes are not all here (the
    /// client is mid-message, as opposed to idle between messages).
    #[inline]
    pub fn mid_message(&self) -> bool {
        self.end - self.start >= PREFIX
    }

    /// Whether at least the start of another message is already buffered (a pipelining client:
    /// the reply may wait in the write buffer for the next ones).
    #[inline]
    pub fn more_buffered(&self) -> bool {
        self.end - self.start >= PREFIX
    }
}

/// The length prefix for a message of `len` bytes (at most [`MAX_MESSAGE`]).
#[inline]
pub fn prefix(len: usize) -> [u8; PREFIX] {
    (len.min(MAX_MESSAGE) as u16).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in reads of `chunk` bytes; returns the messages and whether it ended
    /// with a zero length.
    fn drive(stream: &[u8], chunk: usize) -> (Vec<Vec<u8>>, bool) {
        let mut r = FrameReader::new(512);
        let mut out = Vec::new();
        let mut rest = stream;
        loop {
            match r.next_frame() {
                Next::Message(m) => out.push(r.bytes()[m].to_vec()),
                Next::Empty => return (out, true),
                Next::NeedMore => {
                    if rest.is_empty() {
                        return (out, false);
                    }
                    let space = r.read_space();
                    assert!(!space.is_empty());
                    let n = chunk.min(rest.len()).min(space.len());
                    space[..n].copy_from_slice(&rest[..n]);
                    r.filled(n);
                    rest = &rest[n..];
                }
            }
        }
    }

    fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        let mut s = Vec::new();
        for m in msgs {
            s.extend_from_slice(&prefix(m.len()));
            s.extend_from_slice(m);
        }
        s
    }

    #[test]
    fn pipelined_messages_in_any_read_sizes() {
        let big = vec![7u8; MAX_MESSAGE];
        let msgs: Vec<&[u8]> = vec![b"abc", b"d", &big, b"efghij"];
        let stream = framed(&msgs);
        for chunk in [1, 2, 3, 5, 700, 65536, stream.len()] {
            let (got, empty) = drive(&stream, chunk);
            assert!(!empty);
            assert_eq!(got.len(), 4, "chunk {chunk}");
            for (g, m) in got.iter().zip(&msgs) {
                assert_eq!(g.as_slice(), *m, "chunk {chunk}");
            }
        }
    }

    #[test]
    fn zero_length_ends_and_partial_waits() {
        // RFC 7766 gives a zero length no meaning; dockns stops reading there.
        let mut s = framed(&[b"one"]);
        s.extend_from_slice(&[0, 0]);
        s.extend_from_slice(&framed(&[b"never"]));
        assert_eq!(drive(&s, 4), (vec![b"one".to_vec()], true));
        // A length without its message, and half a length: nothing comes out.
        let mut r = FrameReader::new(0);
        r.read_space()[..3].copy_from_slice(&[0, 5, b'x']);
        r.filled(3);
        assert_eq!(r.next_frame(), Next::NeedMore);
        assert!(r.mid_message());
        let mut r = FrameReader::new(0);
        assert!(!r.mid_message());
        r.read_space()[0] = 1;
        r.filled(1);
        assert!(
            !r.mid_message() && !r.more_buffered(),
            "half a length is still idle"
        );
        assert_eq!(r.next_frame(), Next::NeedMore);
    }

    #[test]
    fn more_buffered_sees_the_next_prefix() {
        let s = framed(&[b"q1", b"q2"]);
        let mut r = FrameReader::new(64);
        r.read_space()[..s.len()].copy_from_slice(&s);
        r.filled(s.len());
        assert!(matches!(r.next_frame(), Next::Message(_)));
        assert!(r.more_buffered());
        assert!(matches!(r.next_frame(), Next::Message(m) if &r.bytes()[m.clone()] == b"q2"));
        assert!(!r.more_buffered());
    }
}
