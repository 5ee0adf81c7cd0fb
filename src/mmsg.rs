//! Batched datagram I/O: `recvmmsg`/`sendmmsg` over a fixed set of buffers, so one system call
//! moves many DNS messages.
//!
//! A [`MsgBatch`] owns its packet buffers, address slots and the kernel's header arrays; it is
//! allocated once per worker and reused for every call, so batched I/O allocates nothing. It
//! knows nothing about DNS and never interprets the bytes it moves. Linux only (the only target
//! dockns supports); every unsafe block is limited to handing the kernel pointers into the
//! batch's own, never-reallocated storage.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// A reusable batch of datagram buffers with their addresses.
pub struct MsgBatch {
    bufs: Box<[u8]>,
    buf_size: usize,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    with_addrs: bool,
}

// The raw pointers inside point only into the batch's own boxed storage.
unsafe impl Send for MsgBatch {}

impl MsgBatch {
    /// A batch of `capacity` buffers of `buf_size` bytes. With `with_addrs`, each message
    /// carries a peer address (unconnected sockets); without, the socket must be connected.
    pub fn new(capacity: usize, buf_size: usize, with_addrs: bool) -> MsgBatch {
        let capacity = capacity.max(1);
        let mut b = MsgBatch {
            bufs: vec![0u8; capacity * buf_size].into_boxed_slice(),
            buf_size,
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            addrs: vec![unsafe { std::mem::zeroed::<libc::sockaddr_storage>() }; capacity]
                .into_boxed_slice(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                capacity
            ]
            .into_boxed_slice(),
            // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
            hdrs: vec![unsafe { std::mem::zeroed::<libc::mmsghdr>() }; capacity].into_boxed_slice(),
            with_addrs,
        };
        for i in 0..capacity {
            b.iovs[i].iov_base = b.bufs[i * buf_size..].as_mut_ptr().cast();
            b.iovs[i].iov_len = buf_size;
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
            if with_addrs {
                h.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            }
        }
        b
    }

    /// Number of messages the batch holds.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// The whole buffer of message `i`, to write an outgoing message into.
    #[inline]
    pub fn buf_mut(&mut self, i: usize) -> &mut [u8] {
        let s = self.buf_size;
        &mut self.bufs[i * s..(i + 1) * s]
    }

    /// The received bytes of message `i` (valid after [`MsgBatch::recv`]).
    #[inline]
    pub fn packet(&self, i: usize) -> &[u8] {
        let s = self.buf_size;
        let n = (self.hdrs[i].msg_len as usize).min(s);
        &self.bufs[i * s..i * s + n]
    }

    /// Whether received message `i` was longer than its buffer (and so was cut).
    #[inline]
    pub fn truncated(&self, i: usize) -> bool {
        self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }

    /// Sets the length of outgoing message `i`.
    #[inline]
    pub fn set_len(&mut self, i: usize, len: usize) {
        self.iovs[i].iov_len = len.min(self.buf_size);
    }

    /// Copies the peer address of message `j` of `from` into message `i` of this batch.
    #[inline]
    pub fn copy_addr(&mut self, i: usize, from: &MsgBatch, j: usize) {
        if self.with_addrs && from.with_addrs {
            self.addrs[i] = from.addrs[j];
            self.hdrs[i].msg_hdr.msg_namelen = from.hdrs[j].msg_hdr.msg_namelen;
        }
    }

    /// The peer address of message `i` (after a receive), if it is IPv4 or IPv6.
    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        if !self.with_addrs {
            return None;
        }
        let ss = &self.addrs[i];
        match i32::from(ss.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in when the family is AF_INET; the
                // storage is large and aligned enough for it.
                let sin =
                    unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 =
                    unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Receives up to `max` messages. `flags` is passed to the kernel (e.g.
    /// `libc::MSG_WAITFORONE` to block for the first message only, `libc::MSG_DONTWAIT`).
    pub fn recv(&mut self, fd: RawFd, max: usize, flags: i32) -> io::Result<usize> {
        let n = max.min(self.capacity());
        for i in 0..n {
            self.iovs[i].iov_len = self.buf_size;
            self.hdrs[i].msg_len = 0;
            self.hdrs[i].msg_hdr.msg_flags = 0;
            if self.with_addrs {
                self.hdrs[i].msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            }
        }
        // SAFETY: every header points at this batch's own iovec, buffer and address slot,
        // which live as long as `self` and are not moved during the call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// Sends messages `from..to` (lengths set with [`MsgBatch::set_len`]); returns how many
    /// the kernel took (it may take fewer, e.g. when the socket buffer is full).
    pub fn send(&mut self, fd: RawFd, from: usize, to: usize, flags: i32) -> io::Result<usize> {
        let to = to.min(self.capacity());
        if from >= to {
            return Ok(0);
        }
        // SAFETY: as in `recv`; the kernel only reads the headers, buffers and addresses.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs[from..].as_mut_ptr(),
                (to - from) as libc::c_uint,
                flags,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// Sends messages `0..n` completely, skipping any single message the kernel rejects (a
    /// reply to an unreachable peer must not hold back the others). Returns how many went out.
    pub fn send_all(&mut self, fd: RawFd, n: usize) -> usize {
        let mut at = 0;
        let mut sent = 0;
        let mut blocked = 0;
        while at < n {
            match self.send(fd, at, n, 0) {
                Ok(0) => at += 1,
                Ok(k) => {
                    at += k;
                    sent += k;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && blocked < 3 => {
                    blocked += 1;
                    std::thread::yield_now();
                }
                Err(_) => at += 1,
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn batch_round_trip_with_addresses() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for i in 0..5u8 {
            a.send_to(&[i; 3], b.local_addr().unwrap()).unwrap();
        }
        let mut inb = MsgBatch::new(8, 512, true);
        // Blocks for the first message, then takes whatever else has already arrived.
        let got = inb.recv(b.as_raw_fd(), 8, libc::MSG_WAITFORONE).unwrap();
        assert!(got >= 1);
        assert_eq!(inb.packet(0), &[0, 0, 0]);
        assert_eq!(inb.addr(0), Some(a.local_addr().unwrap()));
        // Echo what arrived back to the sender in one sendmmsg.
        let mut out = MsgBatch::new(8, 512, true);
        for i in 0..got {
            let p = inb.packet(i).to_vec();
            out.buf_mut(i)[..p.len()].copy_from_slice(&p);
            out.set_len(i, p.len());
            out.copy_addr(i, &inb, i);
        }
        assert_eq!(out.send_all(b.as_raw_fd(), got), got);
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[0, 0, 0]);
        assert_eq!(from, b.local_addr().unwrap());
    }
}
