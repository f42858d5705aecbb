//! Batched datagram system calls shared by the SIP UDP transport and the media socket:
//! `recvmmsg` through nix and `sendmmsg` through rustix (their safe wrappers; no `unsafe`
//! here). Linux only: elsewhere the callers read and write one datagram at a time.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

use arrayvec::ArrayVec;
use nix::sys::socket::{
    recvmmsg, AddressFamily, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage,
};
use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};

/// Datagrams written per `sendmmsg` at most (the kernel takes up to 1024).
pub(crate) const SEND_BATCH: usize = 64;

/// Reads what `socket` holds, up to `N` datagrams in one `recvmmsg`, datagram `i` into
/// `buf[i * slot..]`, appending `(length, sender)` for each to `out` (the sender is `None` if
/// it is not an IP address). `WouldBlock` when the socket is empty.
pub(crate) fn receive<const N: usize>(
    socket: &impl AsFd,
    buf: &mut [u8],
    slot: usize,
    out: &mut Vec<(usize, Option<SocketAddr>)>,
) -> std::io::Result<()> {
    // Built per call (two small allocations): the headers remember the address length the
    // kernel wrote last, so a reused set would cut the next sender's address to it.
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(N, None);
    let mut slots = buf.chunks_mut(slot);
    let mut iovs: [[IoSliceMut<'_>; 1]; N] =
        std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
    let results = recvmmsg(
        socket.as_fd().as_raw_fd(),
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
        out.push((msg.bytes, source));
    }
    Ok(())
}

/// One `sendmmsg` of the first [`SEND_BATCH`] of `datagrams` (destination, bytes): how many
/// went out. The message headers and what they point to are built on the stack, filled in
/// place: `Vec`s would cost allocations for every batch, and an `ArrayVec` returned from
/// `collect` is copied whole (its full capacity) on the way out.
pub(crate) fn send<'a>(
    socket: &impl AsFd,
    datagrams: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
) -> std::io::Result<usize> {
    let mut addrs = ArrayVec::<SocketAddrAny, SEND_BATCH>::new();
    let mut iovs = ArrayVec::<[IoSlice<'_>; 1], SEND_BATCH>::new();
    let mut controls = ArrayVec::<SendAncillaryBuffer<'_, '_, '_>, SEND_BATCH>::new();
    for (to, data) in datagrams.into_iter().take(SEND_BATCH) {
        addrs.push(SocketAddrAny::from(to));
        iovs.push([IoSlice::new(data)]);
        controls.push(SendAncillaryBuffer::default());
    }
    let mut msgs = ArrayVec::<MMsgHdr<'_>, SEND_BATCH>::new();
    for ((addr, iov), control) in addrs.iter().zip(&iovs).zip(controls.iter_mut()) {
        msgs.push(MMsgHdr::new_with_addr(addr, iov, control));
    }
    Ok(sendmmsg(socket, &mut msgs, SendFlags::empty())?)
}
