//! Batched datagram I/O of the media socket: reads with `recvmmsg` (up to [`RECV_BATCH`]
//! datagrams per system call) and the datagrams of one driver turn held in an [`Outbox`] and
//! written with `sendmmsg`. Every leg sends and receives over one socket, so a wake-up under
//! load finds many datagrams each way; one system call per datagram was a large part of the
//! driver's time (the same crates as the SIP UDP transport: nix's `recvmmsg`, rustix's
//! `sendmmsg`).

use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Largest datagram read.
pub(crate) const MAX_DATAGRAM: usize = 2048;
/// Datagrams read per system call at most.
pub(crate) const RECV_BATCH: usize = 32;
/// Datagrams written per system call at most (the kernel takes up to 1024).
const SEND_BATCH: usize = 64;
/// Datagrams held before the outbox is written out even if the turn is not over.
pub(crate) const OUTBOX_LIMIT: usize = 256;

/// Receive slots: datagram `i` of a batch lands in `buf[i * MAX_DATAGRAM..]`.
pub(crate) struct RecvBuffers {
    buf: Vec<u8>,
    /// Length and sender of each datagram of the last batch.
    pub(crate) received: Vec<(usize, SocketAddr)>,
}

impl RecvBuffers {
    pub(crate) fn new() -> RecvBuffers {
        RecvBuffers {
            buf: vec![0; MAX_DATAGRAM * RECV_BATCH],
            received: Vec::with_capacity(RECV_BATCH),
        }
    }

    /// The bytes of datagram `i` of the last batch.
    pub(crate) fn datagram(&self, i: usize) -> &[u8] {
        let start = i * MAX_DATAGRAM;
        &self.buf[start..start + self.received[i].0]
    }

    /// Reads what the socket holds, up to [`RECV_BATCH`] datagrams, into the slots (and
    /// `received`). `WouldBlock` when it is empty; tokio then forgets the readiness.
    pub(crate) fn read(&mut self, socket: &UdpSocket) -> std::io::Result<()> {
        self.received.clear();
        let RecvBuffers { buf, received } = self;
        socket.try_io(Interest::READABLE, || receive(socket, buf, received))
    }
}

#[cfg(target_os = "linux")]
fn receive(
    socket: &UdpSocket,
    buf: &mut [u8],
    out: &mut Vec<(usize, SocketAddr)>,
) -> std::io::Result<()> {
    use nix::sys::socket::{
        recvmmsg, AddressFamily, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage,
    };
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    // Built per call: the headers remember the address length the kernel wrote last, so a
    // reused set would cut the next sender's address to it.
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(RECV_BATCH, None);
    let mut slots = buf.chunks_mut(MAX_DATAGRAM);
    let mut iovs: [[IoSliceMut<'_>; 1]; RECV_BATCH] =
        std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
    let results = recvmmsg(
        socket.as_raw_fd(),
        &mut headers,
        iovs.iter_mut(),
        MsgFlags::empty(),
        None,
    )?;
    for msg in results {
        let source = msg.address.and_then(|a| match a.family() {
            Some(AddressFamily::Inet) => a.as_sockaddr_in().map(|v4| SocketAddr::V4((*v4).into())),
            Some(AddressFamily::Inet6) => {
                a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
            }
            _ => None,
        });
        // A datagram without an IP sender cannot belong to a leg.
        if let Some(source) = source {
            out.push((msg.bytes, source));
        }
    }
    Ok(())
}

/// [`receive`] one datagram at a time, where `recvmmsg` is not available.
#[cfg(not(target_os = "linux"))]
fn receive(
    socket: &UdpSocket,
    buf: &mut [u8],
    out: &mut Vec<(usize, SocketAddr)>,
) -> std::io::Result<()> {
    let (len, source) = socket.try_recv_from(&mut buf[..MAX_DATAGRAM])?;
    out.push((len, source));
    Ok(())
}

/// Datagrams held until [`Outbox::flush`].
#[derive(Default)]
pub(crate) struct Outbox {
    held: Vec<(SocketAddr, Vec<u8>)>,
}

impl Outbox {
    pub(crate) fn push(&mut self, to: SocketAddr, datagram: Vec<u8>) {
        self.held.push((to, datagram));
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Writes every held datagram in order and empties the outbox; `sent` gets the size of
    /// each one that went out. As UDP does, a full socket buffer drops what does not fit.
    pub(crate) fn flush(&mut self, socket: &UdpSocket, mut sent: impl FnMut(usize)) {
        let mut next = 0;
        while next < self.held.len() {
            let end = self.held.len().min(next + SEND_BATCH);
            match send_many(socket, &self.held[next..end]) {
                Ok(n) if n > 0 => {
                    for (_, d) in &self.held[next..next + n] {
                        sent(d.len());
                    }
                    next += n;
                }
                // The kernel stops a batch at the first datagram it cannot send: that one is
                // dropped and the rest go on.
                Ok(_) | Err(_) => next += 1,
            }
        }
        self.held.clear();
    }
}

/// One `sendmmsg`: how many of `held` (from the first) went out.
#[cfg(target_os = "linux")]
fn send_many(socket: &UdpSocket, held: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> {
    use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
    use std::io::IoSlice;

    let addrs: Vec<SocketAddrAny> = held
        .iter()
        .map(|(to, _)| SocketAddrAny::from(*to))
        .collect();
    let iovs: Vec<[IoSlice<'_>; 1]> = held.iter().map(|(_, d)| [IoSlice::new(d)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = held
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
        .collect();
    Ok(sendmmsg(socket, &mut msgs, SendFlags::empty())?)
}

/// [`send_many`] one datagram at a time, where `sendmmsg` is not available.
#[cfg(not(target_os = "linux"))]
fn send_many(socket: &UdpSocket, held: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> {
    let Some((to, d)) = held.first() else {
        return Ok(0);
    };
    socket.try_send_to(d, *to).map(|_| 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_goes_out_in_order_and_comes_back_in_one_read() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let mut outbox = Outbox::default();
        for i in 0..5u8 {
            outbox.push(to, vec![i; 100 + usize::from(i)]);
        }
        let mut sizes = Vec::new();
        outbox.flush(&a, |n| sizes.push(n));
        assert_eq!(sizes, [100, 101, 102, 103, 104]);
        assert_eq!(outbox.len(), 0);
        let mut rx = RecvBuffers::new();
        let mut got = Vec::new();
        while got.len() < 5 {
            b.readable().await.unwrap();
            match rx.read(&b) {
                Ok(()) => {
                    for i in 0..rx.received.len() {
                        assert_eq!(rx.received[i].1, a.local_addr().unwrap());
                        got.push(rx.datagram(i).to_vec());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let expected: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        assert_eq!(got, expected);
    }
}
