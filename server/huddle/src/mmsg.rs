//! Batched datagram system calls shared by the SIP UDP transport and the media socket:
//! `recvmmsg` through nix and `sendmmsg` through rustix (their safe wrappers; no `unsafe`
//! here). Linux only: elsewhere the callers read and write one datagram at a time.
//!
//! The media socket also reads each datagram's kernel receive timestamp ([`receive_stamped`],
//! `SO_TIMESTAMPNS`, enabled by [`enable_receive_timestamps`]); the SIP transport reads no
//! control messages.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use arrayvec::ArrayVec;
use nix::sys::socket::{
    recvmmsg, setsockopt, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, MultiHeaders,
    SockaddrLike, SockaddrStorage,
};
use nix::sys::time::TimeSpec;
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
    // kernel wrote last, so a set reused for a socket of another family would cut the next
    // sender's address to it (see `receive_kept`).
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(N, None);
    receive_with::<N>(socket, &mut headers, buf, slot, out, None)
}

/// A set of `recvmmsg` headers kept for one address family and batch size.
struct Kept {
    ipv6: bool,
    batch: usize,
    headers: MultiHeaders<SockaddrStorage>,
}

thread_local! {
    /// Headers kept between [`receive_kept`] calls on this thread. (nix's headers are not
    /// `Send`, so an async task could not hold them across an `await`: they are borrowed only
    /// within one `receive_kept` call, never across an `await`, by whichever task reads the
    /// SIP UDP sockets — the core on the SIP thread, or `udp::run`.)
    static KEPT: std::cell::RefCell<Vec<Kept>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`receive`] with the message headers kept on this thread from one call to the next instead
/// of built per call (two allocations and `N` headers filled in). `ipv6` is the socket's
/// address family: the kernel leaves in each header the length of the address it wrote,
/// which for a UDP socket is its family's (`sockaddr_in`, or `sockaddr_in6` also for IPv4
/// senders to a dual-stack socket) whatever the sender, so a set is reused only for sockets of
/// one family, where that length is always the right one.
pub(crate) fn receive_kept<const N: usize>(
    socket: &impl AsFd,
    ipv6: bool,
    buf: &mut [u8],
    slot: usize,
    out: &mut Vec<(usize, Option<SocketAddr>)>,
) -> std::io::Result<()> {
    KEPT.with_borrow_mut(|kept| {
        let index = match kept.iter().position(|k| k.ipv6 == ipv6 && k.batch == N) {
            Some(i) => i,
            None => {
                kept.push(Kept {
                    ipv6,
                    batch: N,
                    headers: MultiHeaders::preallocate(N, None),
                });
                kept.len() - 1
            }
        };
        receive_with::<N>(socket, &mut kept[index].headers, buf, slot, out, None)
    })
}

/// One `recvmmsg` into `headers`; with `stamps`, each datagram's kernel receive timestamp is
/// read from its control messages too (the headers must have room for them).
fn receive_with<const N: usize>(
    socket: &impl AsFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    buf: &mut [u8],
    slot: usize,
    out: &mut Vec<(usize, Option<SocketAddr>)>,
    mut stamps: Option<&mut Vec<Option<Duration>>>,
) -> std::io::Result<()> {
    let mut slots = buf.chunks_mut(slot);
    let mut iovs: [[IoSliceMut<'_>; 1]; N] =
        std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
    let results = recvmmsg(
        socket.as_fd().as_raw_fd(),
        headers,
        iovs.iter_mut(),
        MsgFlags::empty(),
        None,
    )?;
    for msg in results {
        if let Some(stamps) = stamps.as_deref_mut() {
            stamps.push(msg.cmsgs().ok().and_then(|mut cmsgs| {
                cmsgs.find_map(|c| match c {
                    ControlMessageOwned::ScmTimestampns(ts) => since_epoch(ts),
                    _ => None,
                })
            }));
        }
        out.push((msg.bytes, msg.address.and_then(ip_address)));
    }
    Ok(())
}

/// The sender's address, if it is an IP one.
fn ip_address(a: SockaddrStorage) -> Option<SocketAddr> {
    match a.family() {
        Some(AddressFamily::Inet) => a.as_sockaddr_in().map(|v4| SocketAddr::V4((*v4).into())),
        Some(AddressFamily::Inet6) => a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())),
        _ => None,
    }
}

/// Asks the kernel to stamp each datagram `socket` receives (`SO_TIMESTAMPNS`: the system
/// clock, nanoseconds, taken when the datagram entered the stack), for [`receive_stamped`].
pub(crate) fn enable_receive_timestamps(socket: &impl AsFd) -> std::io::Result<()> {
    Ok(setsockopt(socket, sockopt::ReceiveTimestampns, &true)?)
}

/// [`receive`] with each datagram's kernel receive timestamp (`SO_TIMESTAMPNS`, see
/// [`enable_receive_timestamps`]), as the time since the Unix epoch on the system clock,
/// appended to `stamps` (one for each entry appended to `out`): `None` when the datagram
/// carries none (the option is off, or the control message did not fit). The headers and
/// their control-message space are built per call: the kernel writes the length it used back
/// into each header, and nix does not reset it, so a kept set could shrink the next call's
/// space.
pub(crate) fn receive_stamped<const N: usize>(
    socket: &impl AsFd,
    buf: &mut [u8],
    slot: usize,
    out: &mut Vec<(usize, Option<SocketAddr>)>,
    stamps: &mut Vec<Option<Duration>>,
) -> std::io::Result<()> {
    let mut headers =
        MultiHeaders::<SockaddrStorage>::preallocate(N, Some(nix::cmsg_space!(TimeSpec)));
    receive_with::<N>(socket, &mut headers, buf, slot, out, Some(stamps))
}

/// A kernel timestamp as the time since the Unix epoch (`None` before it).
fn since_epoch(ts: TimeSpec) -> Option<Duration> {
    let secs = u64::try_from(ts.tv_sec()).ok()?;
    let nanos = u32::try_from(ts.tv_nsec())
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    Some(Duration::new(secs, nanos))
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

/// One `sendmsg` of `segments` to `to` as a single UDP GSO send (`UDP_SEGMENT`, Linux 4.18):
/// the kernel sends them as separate datagrams, each `segment` bytes but the last (which may be
/// shorter), running the UDP/IP send path once for all of them. The caller keeps to the
/// kernel's limits (at most [`SEND_BATCH`] segments here, else `InvalidInput`; 64 KiB in all;
/// `segment` within the route's MTU) and has checked that the kernel knows `UDP_SEGMENT` (one
/// before 4.18 ignores the option and sends one big datagram). `EIO` or `EINVAL` say the route
/// cannot do it (no checksum offload on its device, a path MTU below the segment): send the
/// datagrams one by one instead. A send the kernel reports shorter than the segments is `EIO`.
pub(crate) fn send_segments<'a>(
    socket: &impl AsFd,
    to: SocketAddr,
    segments: impl IntoIterator<Item = &'a [u8]>,
    segment: u16,
) -> std::io::Result<()> {
    let mut iovs = ArrayVec::<IoSlice<'_>, SEND_BATCH>::new();
    let mut total = 0;
    for s in segments {
        iovs.try_push(IoSlice::new(s))
            .map_err(|_| std::io::ErrorKind::InvalidInput)?;
        total += s.len();
    }
    let addr = SockaddrStorage::from(to);
    let gso = [nix::sys::socket::ControlMessage::UdpGsoSegments(&segment)];
    let n = nix::sys::socket::sendmsg(
        socket.as_fd().as_raw_fd(),
        &iovs,
        &gso,
        MsgFlags::empty(),
        Some(&addr),
    )?;
    // UDP sends all or nothing: anything else is a stack to send one datagram at a time to.
    if n != total {
        return Err(nix::errno::Errno::EIO.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// Reads the one datagram `to` will hold, with kept headers or fresh ones.
    fn read_one(to: &UdpSocket, kept: bool) -> (Vec<u8>, Option<SocketAddr>) {
        // Wait (blocking) until it is there, then read it the way the SIP task does.
        to.set_nonblocking(false).unwrap();
        to.peek_from(&mut [0u8; 1]).unwrap();
        to.set_nonblocking(true).unwrap();
        let ipv6 = to.local_addr().unwrap().is_ipv6();
        let mut buf = vec![0u8; 64 * 4];
        let mut out = Vec::new();
        if kept {
            receive_kept::<4>(to, ipv6, &mut buf, 64, &mut out).unwrap();
        } else {
            receive::<4>(to, &mut buf, 64, &mut out).unwrap();
        }
        assert_eq!(out.len(), 1, "{out:?}");
        let (len, from) = out[0];
        (buf[..len].to_vec(), from)
    }

    #[test]
    fn kept_headers_give_every_socket_its_senders_full_address() {
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Without IPv6 there is one family, and nothing to mix up.
        let Ok(v6) = UdpSocket::bind("[::1]:0") else {
            eprintln!("no IPv6 loopback here: only one address family to read");
            return;
        };
        // Dual-stack (whatever the system's default): IPv4 senders arrive as IPv4-mapped IPv6
        // addresses.
        let dual = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).unwrap();
        dual.set_only_v6(false).unwrap();
        dual.bind(&"[::]:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let dual = UdpSocket::from(dual);
        let from4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from6 = UdpSocket::bind("[::1]:0").unwrap();
        let (a4, a6) = (from4.local_addr().unwrap(), from6.local_addr().unwrap());
        let dual_port = dual.local_addr().unwrap().port();
        let mapped = SocketAddr::new(
            match a4.ip() {
                std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped().into(),
                std::net::IpAddr::V6(ip) => ip.into(),
            },
            a4.port(),
        );
        // Alternating families on one thread, each read twice (the second with the set the
        // first left behind), kept and fresh headers alike: an IPv6 address read with a set
        // an IPv4 socket had used would come out cut to the IPv4 length.
        for round in 0..2u8 {
            for kept in [true, false] {
                from4
                    .send_to(&[1, round], v4.local_addr().unwrap())
                    .unwrap();
                assert_eq!(read_one(&v4, kept), (vec![1, round], Some(a4)));
                from6
                    .send_to(&[2, round], v6.local_addr().unwrap())
                    .unwrap();
                assert_eq!(read_one(&v6, kept), (vec![2, round], Some(a6)));
                from4
                    .send_to(&[3, round], ("127.0.0.1", dual_port))
                    .unwrap();
                assert_eq!(read_one(&dual, kept), (vec![3, round], Some(mapped)));
                from6.send_to(&[4, round], ("::1", dual_port)).unwrap();
                assert_eq!(read_one(&dual, kept), (vec![4, round], Some(a6)));
            }
        }
    }

    #[test]
    fn a_kept_set_reads_full_batches_and_short_ones() {
        let to = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = from.local_addr().unwrap();
        to.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 8 * 4];
        for count in [4usize, 1, 3, 4] {
            for i in 0..count {
                from.send_to(&[i as u8; 5], to.local_addr().unwrap())
                    .unwrap();
            }
            let mut out = Vec::new();
            // Everything sent is read, in order, at most four per call.
            while out.len() < count {
                let before = out.len();
                to.set_nonblocking(false).unwrap();
                to.peek_from(&mut [0u8; 1]).unwrap();
                to.set_nonblocking(true).unwrap();
                receive_kept::<4>(&to, false, &mut buf, 8, &mut out).unwrap();
                for (j, &(len, addr)) in out.iter().enumerate().skip(before) {
                    assert_eq!(len, 5);
                    assert_eq!(addr, Some(sender));
                    let slot = (j - before) * 8;
                    assert_eq!(buf[slot..slot + 5], [j as u8; 5]);
                }
            }
            assert_eq!(out.len(), count);
        }
    }
}
