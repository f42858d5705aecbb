//! SIP over UDP: each listening socket's receiving end is a [`UdpReceiver`], which reads
//! datagrams several per system call (`recvmmsg`) and applies the rules every datagram goes
//! through (the size limit's 513, keep-alives dropped). The SIP core owns the receivers and
//! reads them itself ([`Transports::bind_with_udp`](super::Transports::bind_with_udp)): a
//! datagram is handled where it is read, with no hand-off to another task. Otherwise ([`run`],
//! for [`Transports::bind`](super::Transports::bind)) one task per socket reads it and hands
//! each datagram to the event channel. What the core sends in one turn is held in a
//! [`UdpBatch`] and goes out with one `sendmmsg` per socket. Under load several datagrams
//! arrive per wake-up (about 4.5 under SIPp): one system call per datagram each way became
//! about one per wake-up each way (bench/NOTES.md).

use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, trace};

use super::shared::{Shared, Stop, TaskCtx};
use super::{Inbound, SendError, Transport, TransportEvent};

/// Datagrams read per system call at most; a wake-up under load finds a handful. One where
/// there is no `recvmmsg`.
const RECV_BATCH: usize = if cfg!(target_os = "linux") { 16 } else { 1 };

/// Datagrams written per system call at most (one at a time where there is no `sendmmsg`).
#[cfg(target_os = "linux")]
const SEND_BATCH: usize = crate::mmsg::SEND_BATCH;
#[cfg(not(target_os = "linux"))]
const SEND_BATCH: usize = 64;

/// The receiving end of one UDP listening socket: tells when datagrams are waiting
/// ([`poll_ready`](Self::poll_ready)) and reads them in batches ([`read`](Self::read)) into a
/// buffer of its own. Each datagram is one message (RFC 3261 §18.3 framing does not apply);
/// datagrams over the size limit are answered 513, whitespace-only ones (keep-alives some
/// clients send) are dropped: only the rest reach the caller.
pub struct UdpReceiver {
    /// Tells when there is something to read (tokio's readiness).
    socket: UdpSocket,
    /// The same socket (a duplicate descriptor), read in batches: tokio's socket offers no
    /// `recvmmsg`.
    reader: std::net::UdpSocket,
    local: SocketAddr,
    max: usize,
    /// `RECV_BATCH` slots of `max + 1` bytes.
    buf: Vec<u8>,
    /// Length and sender of each datagram of the last batch.
    received: Vec<(usize, Option<SocketAddr>)>,
}

/// One datagram a [`UdpReceiver`] read, borrowed from its buffer until the next read.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// The listening socket's address.
    pub local: SocketAddr,
    /// The sender.
    pub remote: SocketAddr,
    /// The datagram's bytes.
    pub data: &'a [u8],
}

impl Datagram<'_> {
    /// The datagram as the transports hand any message to the core (its bytes copied).
    pub fn to_inbound(&self) -> Inbound {
        Inbound {
            transport: Transport::Udp,
            flow: None,
            local: self.local,
            remote: self.remote,
            data: Bytes::copy_from_slice(self.data),
            text: None,
        }
    }
}

impl std::fmt::Debug for UdpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the buffer: a megabyte of stale datagrams.
        f.debug_struct("UdpReceiver")
            .field("local", &self.local)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// The largest UDP payload (IPv6 jumbograms aside): a slot never needs more than this.
const MAX_DATAGRAM: usize = 65_535;

impl UdpReceiver {
    pub(crate) fn new(
        socket: UdpSocket,
        reader: std::net::UdpSocket,
        local: SocketAddr,
        max: usize,
    ) -> Self {
        // Each slot holds one byte more than allowed, so an oversized datagram shows up as
        // `len > max` instead of being silently truncated to a valid-looking size; no datagram
        // is larger than `MAX_DATAGRAM`, whatever `max_message_size` allows for streams.
        let max = max.min(MAX_DATAGRAM);
        Self {
            socket,
            reader,
            local,
            max,
            buf: vec![0u8; (max + 1) * RECV_BATCH],
            received: Vec::with_capacity(RECV_BATCH),
        }
    }

    /// The socket's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Ready when the socket has something to read; an error means the reactor is gone (the
    /// runtime is shutting down) and nothing will be read any more. The readiness is polled in
    /// place (one waker slot on the socket), not through a `readable()` future per wake-up,
    /// which joined and left the socket's waiter list.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.socket.poll_recv_ready(cx)
    }

    /// Reads what the socket holds (one batch, at most 16 datagrams) and gives each datagram
    /// that is a message to `each`, in order. Answers oversized ones 513 and drops keep-alives
    /// and datagrams without an IP sender. Read after [`poll_ready`](Self::poll_ready) said
    /// ready; an empty socket reads nothing.
    pub fn read(&mut self, mut each: impl FnMut(Datagram<'_>)) {
        let slot = self.max + 1;
        self.received.clear();
        let (reader, local, buf, received) =
            (&self.reader, self.local, &mut self.buf, &mut self.received);
        // `WouldBlock` makes tokio forget that the socket is readable, so the next wait is for
        // the next datagram. Besides an empty socket, that is also the right answer for a
        // batch that is not full: the read stopped because the socket ran dry (tokio does the
        // same after a short read of a stream), and checking with another system call would
        // only find it empty. Nothing is missed: tokio clears only the readiness it had seen
        // before the read, and a datagram arriving since is a newer readiness event.
        let result = self.socket.try_io(Interest::READABLE, || {
            receive(reader, local.is_ipv6(), buf, slot, received)?;
            if received.len() < RECV_BATCH {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                // Per-datagram errors (e.g. ICMP reports on some systems); the socket lives on.
                debug!(%local, error = %e, "UDP receive error");
                return;
            }
        }
        for (i, &(len, remote)) in self.received.iter().enumerate() {
            // Without a sender address there is no one to answer.
            let Some(remote) = remote else { continue };
            let start = i * slot;
            if len > self.max {
                debug!(%local, %remote, limit = self.max, "oversized UDP datagram answered 513");
                let head = &self.buf[start..start + self.max];
                if let Some(reply) = super::too_large_reply(head, remote) {
                    let _ = self.reader.send_to(&reply, remote);
                }
                continue;
            }
            let data = &self.buf[start..start + len];
            if data.iter().all(|b| b.is_ascii_whitespace()) {
                trace!(%remote, "ignoring keep-alive datagram");
                continue;
            }
            each(Datagram {
                local,
                remote,
                data,
            });
        }
    }
}

/// Reads `receiver` until shutdown, handing each datagram to the core's event channel: the
/// transports' own reader, when the caller does not read the UDP sockets itself.
pub(crate) async fn run(mut receiver: UdpReceiver, mut ctx: TaskCtx) {
    let local = receiver.local_addr();
    let mut batch = Vec::with_capacity(RECV_BATCH);
    // One shutdown future for the life of the socket, not one per wake-up, and cheap to poll
    // on each one (`Stop`).
    let mut stop = Stop::new(&ctx.shutdown);
    loop {
        // Shutdown first, then the socket: a fixed order (no random draw per wake-up), and a
        // stop is seen even while datagrams keep coming.
        let ready = tokio::select! {
            biased;
            () = &mut stop => break,
            ready = std::future::poll_fn(|cx| receiver.poll_ready(cx)) => ready,
        };
        if ready.is_err() {
            // The reactor is gone: the runtime is shutting down.
            break;
        }
        receiver.read(|datagram| batch.push(datagram.to_inbound()));
        for inbound in batch.drain(..) {
            if !ctx.deliver(TransportEvent::Message(inbound)).await {
                debug!(%local, "UDP listener stopped");
                return;
            }
        }
    }
    debug!(%local, "UDP listener stopped");
}

/// Reads what the socket (IPv6 or not: `ipv6`) holds, up to [`RECV_BATCH`] datagrams (see
/// [`crate::mmsg::receive_kept`]).
#[cfg(target_os = "linux")]
fn receive(
    socket: &std::net::UdpSocket,
    ipv6: bool,
    buf: &mut [u8],
    slot: usize,
    out: &mut Vec<(usize, Option<SocketAddr>)>,
) -> std::io::Result<()> {
    crate::mmsg::receive_kept::<RECV_BATCH>(socket, ipv6, buf, slot, out)
}

/// [`receive`] one datagram at a time, where `recvmmsg` is not available.
#[cfg(not(target_os = "linux"))]
fn receive(
    socket: &std::net::UdpSocket,
    _ipv6: bool,
    buf: &mut [u8],
    slot: usize,
    out: &mut Vec<(usize, Option<SocketAddr>)>,
) -> std::io::Result<()> {
    let (len, remote) = socket.recv_from(&mut buf[..slot])?;
    out.push((len, Some(remote)));
    Ok(())
}

/// The listening socket a datagram to `addr` is sent from, and the address as that socket
/// takes it: the one bound at `local` when there is one that can reach `addr` (the socket the
/// peer's request or REGISTER came in on, see [`Destination::UdpFrom`](super::Destination)),
/// else the first one of `addr`'s address family, else the first one.
fn route(
    shared: &Shared,
    local: Option<SocketAddr>,
    addr: SocketAddr,
) -> Result<(usize, SocketAddr), SendError> {
    // Whether a socket can reach `addr`: an IPv4 socket never reaches an IPv6 peer; an IPv6
    // one is taken to reach an IPv4 peer (dual-stack), which holds when `local` was learned
    // from that peer's own datagram. It matters only for a `local` from elsewhere.
    let reaches = |l: &SocketAddr| l.is_ipv6() || addr.is_ipv4();
    let (index, (local, _)) = local
        .and_then(|want| {
            shared
                .udp
                .iter()
                .enumerate()
                .find(|(_, (l, _))| *l == want && reaches(l))
        })
        .or_else(|| {
            shared
                .udp
                .iter()
                .enumerate()
                .find(|(_, (l, _))| l.is_ipv4() == addr.is_ipv4())
        })
        .or_else(|| shared.udp.first().map(|s| (0, s)))
        .ok_or(SendError::NoSocket(Transport::Udp))?;
    // A dual-stack IPv6 socket reaches IPv4 peers through mapped addresses.
    let addr = match (local, addr) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => addr,
    };
    Ok((index, addr))
}

/// Sends one datagram from the listening socket [`route`] picks (the one bound at `local`, if
/// any), without waiting: a full socket buffer is `WouldBlock` (the send handle is
/// non-blocking).
pub(crate) fn send(
    shared: &Shared,
    local: Option<SocketAddr>,
    addr: SocketAddr,
    data: &[u8],
) -> Result<(), SendError> {
    if shared.is_shut_down() {
        return Err(SendError::ShutDown);
    }
    let (index, addr) = route(shared, local, addr)?;
    match shared.udp[index].1.send_to(data, addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(SendError::WouldBlock),
        Err(e) => Err(SendError::Io(e)),
    }
}

/// UDP datagrams held back until [`flush`](super::TransportHandle::flush): the core's sends of
/// one turn, written with one `sendmmsg` per socket. Each carries a tag of the sender's
/// choosing (the core's: the transaction that sent it), handed back if it could not be sent.
#[derive(Debug)]
pub struct UdpBatch<T> {
    held: Vec<Held<T>>,
}

#[derive(Debug)]
struct Held<T> {
    /// Index into `Shared::udp`.
    socket: usize,
    to: SocketAddr,
    data: Bytes,
    tag: T,
    /// Set when sending it failed.
    error: Option<SendError>,
}

impl<T> Default for UdpBatch<T> {
    fn default() -> Self {
        Self { held: Vec::new() }
    }
}

impl<T> UdpBatch<T> {
    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Holds a datagram for the next [`flush`], from the socket [`route`] picks; the destination
/// is checked now.
pub(crate) fn hold<T>(
    shared: &Shared,
    batch: &mut UdpBatch<T>,
    local: Option<SocketAddr>,
    addr: SocketAddr,
    data: Bytes,
    tag: T,
) -> Result<(), SendError> {
    if shared.is_shut_down() {
        return Err(SendError::ShutDown);
    }
    let (socket, to) = route(shared, local, addr)?;
    batch.held.push(Held {
        socket,
        to,
        data,
        tag,
        error: None,
    });
    Ok(())
}

/// Sends every held datagram, in the order held, and empties the batch; `failed` gets the tag
/// and the error of each one that could not be sent.
pub(crate) fn flush<T>(
    shared: &Shared,
    batch: &mut UdpBatch<T>,
    mut failed: impl FnMut(T, SendError),
) {
    // Nearly always one socket; with both address families, each socket's datagrams go
    // together (a stable sort keeps their order).
    if batch.held.windows(2).any(|w| w[0].socket != w[1].socket) {
        batch.held.sort_by_key(|h| h.socket);
    }
    let mut start = 0;
    while start < batch.held.len() {
        let index = batch.held[start].socket;
        let end = batch.held[start..]
            .iter()
            .position(|h| h.socket != index)
            .map_or(batch.held.len(), |n| start + n);
        send_all(&shared.udp[index].1, &mut batch.held[start..end]);
        start = end;
    }
    for held in batch.held.drain(..) {
        if let Some(error) = held.error {
            failed(held.tag, error);
        }
    }
}

/// Writes `held` from one socket, recording each datagram's error. The kernel stops a batch at
/// the first datagram it cannot send; that one is retried alone so its own error is known,
/// and the rest go on (a full send buffer fails them all).
fn send_all<T>(socket: &std::net::UdpSocket, held: &mut [Held<T>]) {
    let mut next = 0;
    while next < held.len() {
        let end = held.len().min(next + SEND_BATCH);
        match send_many(socket, &held[next..end]) {
            Ok(sent) if sent > 0 => next += sent,
            Ok(_) => {
                held[next].error = Some(SendError::WouldBlock);
                next += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                for h in &mut held[next..] {
                    h.error = Some(SendError::WouldBlock);
                }
                return;
            }
            Err(e) => {
                held[next].error = Some(SendError::Io(e));
                next += 1;
            }
        }
    }
}

/// One `sendmmsg`: how many of `held` (from the first, at most [`SEND_BATCH`]) went out.
#[cfg(target_os = "linux")]
fn send_many<T>(socket: &std::net::UdpSocket, held: &[Held<T>]) -> std::io::Result<usize> {
    crate::mmsg::send(socket, held.iter().map(|h| (h.to, &h.data[..])))
}

/// [`send_many`] one datagram at a time, where `sendmmsg` is not available.
#[cfg(not(target_os = "linux"))]
fn send_many<T>(socket: &std::net::UdpSocket, held: &[Held<T>]) -> std::io::Result<usize> {
    let Some(first) = held.first() else {
        return Ok(0);
    };
    socket.send_to(&first.data, first.to).map(|_| 1)
}
