//! Batched datagram I/O of the media socket, through the system calls the SIP UDP transport
//! uses too ([`crate::mmsg`]: `recvmmsg`, `sendmmsg`; no `unsafe` here).
//!
//! * [`RecvBuffers`] reads up to [`RECV_BATCH`] datagrams per system call.
//! * [`Outbox`] holds what the legs transmit during one driver turn (the echoes of a receive
//!   batch, a composite packet's copies for every receiver) and writes it with `sendmmsg`,
//!   [`SEND_BATCH`] datagrams per call. Datagrams leave in the order they were held, so each
//!   destination sees its packets in the order its leg produced them. A full socket buffer
//!   (`EAGAIN`, or a batch the kernel cut short) keeps the rest, in order, for the next time
//!   the socket is writable; while blocked the outbox holds at most [`OUTBOX_LIMIT`] datagrams
//!   and drops newer ones beyond that, as a full network queue would.
//! * [`MediaSocket`] is the socket itself, registered with the runtime for reading only; it
//!   waits for room to write only while the outbox is blocked.
//!
//! # Why not a `tokio::net::UdpSocket`
//!
//! tokio registers its sockets for both directions, edge-triggered. On Linux every datagram
//! the kernel has finished sending gives the socket room again (`sock_wfree`, at once on
//! loopback, at transmit completion on a NIC), which is a new writable edge: epoll wakes
//! whichever runtime worker is parked on the reactor, for a readiness nobody waits for, and
//! that worker goes back to sleep. With the driver running on one worker and the other parked,
//! a room's composite (16 receivers × ~90 packets/s) woke the idle worker about once per
//! datagram sent: more wake-ups of the media thread than every incoming datagram caused
//! (bench/NOTES.md, "Conference room (MCU): the media socket's writable wake-ups"). So the
//! socket is registered readable only, sends are plain non-blocking system calls, and
//! writability is watched — through a second descriptor of the same socket, registered
//! writable only — just while a full socket buffer holds datagrams back.

use std::collections::VecDeque;
use std::net::SocketAddr;

use tokio::io::Interest;

/// Largest datagram read.
pub(crate) const MAX_DATAGRAM: usize = 2048;
/// Datagrams read per system call at most. A wake-up at 50 echo legs finds 18–26 (bench/NOTES.md,
/// "Media: passes per echoed packet").
pub(crate) const RECV_BATCH: usize = if cfg!(target_os = "linux") { 32 } else { 1 };
/// Datagrams written per system call at most (one at a time where there is no `sendmmsg`).
#[cfg(target_os = "linux")]
pub(crate) const SEND_BATCH: usize = crate::mmsg::SEND_BATCH;
#[cfg(not(target_os = "linux"))]
pub(crate) const SEND_BATCH: usize = 64;
/// Datagrams held while the socket cannot take them; newer ones are dropped beyond this.
pub(crate) const OUTBOX_LIMIT: usize = 4096;

/// The system socket the reads and writes below work on.
#[cfg(unix)]
type Socket = std::net::UdpSocket;
#[cfg(not(unix))]
type Socket = tokio::net::UdpSocket;

/// The media socket (module docs, "Why not a `tokio::net::UdpSocket`").
#[cfg(unix)]
pub(crate) struct MediaSocket {
    /// Registered readable only: sends raise no readiness here.
    read: tokio::io::unix::AsyncFd<std::net::UdpSocket>,
    /// A second descriptor of the same socket, registered writable only, while the outbox is
    /// blocked on a full socket buffer.
    write: Option<tokio::io::unix::AsyncFd<std::net::UdpSocket>>,
}

#[cfg(unix)]
impl MediaSocket {
    /// Binds a non-blocking socket and registers it with the current runtime for reading.
    pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<MediaSocket> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        Ok(MediaSocket {
            read: register(socket, Interest::READABLE)?,
            write: None,
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.read.get_ref().local_addr()
    }

    /// Waits until a datagram may be waiting (readiness is kept until a read finds the
    /// socket empty).
    pub(crate) async fn readable(&self) -> std::io::Result<()> {
        self.read.readable().await.map(drop)
    }

    /// Waits until a blocked outbox may write again; never returns while nothing is held
    /// back (no writable registration exists then).
    pub(crate) async fn writable(&self) -> std::io::Result<()> {
        match &self.write {
            Some(w) => w.writable().await.map(drop),
            None => std::future::pending().await,
        }
    }

    /// A read: `WouldBlock` from `f` clears the readiness it was called for.
    fn try_read<R>(&self, f: impl FnOnce(&Socket) -> std::io::Result<R>) -> std::io::Result<R> {
        self.read.try_io(Interest::READABLE, f)
    }

    /// A write: straight to the socket while nothing is blocked; through the writable
    /// registration while one is (`WouldBlock` then clears its readiness, so `writable`
    /// waits for the kernel to make room).
    fn try_write<R>(&self, f: impl FnOnce(&Socket) -> std::io::Result<R>) -> std::io::Result<R> {
        match &self.write {
            Some(w) => w.try_io(Interest::WRITABLE, f),
            None => f(self.read.get_ref()),
        }
    }

    /// Watches writability while `blocked`, and only then. If the second descriptor cannot be
    /// had, the held datagrams wait for the next turn's flush instead.
    fn watch_writable(&mut self, blocked: bool) {
        if !blocked {
            self.write = None;
        } else if self.write.is_none() {
            self.write = self
                .read
                .get_ref()
                .try_clone()
                .and_then(|s| register(s, Interest::WRITABLE))
                .ok();
        }
    }
}

/// Registers a socket with the current runtime for `interest` only.
// tokio 1.54 deprecates this safe constructor because a type's `as_raw_fd` could change or
// close its descriptor behind the registration; a `std::net::UdpSocket` owns its descriptor
// and returns the same one until it is dropped (with the registration), so the call is sound
// here and needs no `unsafe`.
#[cfg(unix)]
#[allow(deprecated)]
fn register(
    socket: std::net::UdpSocket,
    interest: Interest,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::net::UdpSocket>> {
    tokio::io::unix::AsyncFd::with_interest(socket, interest)
}

/// Elsewhere, tokio's socket (registered both ways).
#[cfg(not(unix))]
pub(crate) struct MediaSocket {
    socket: tokio::net::UdpSocket,
}

#[cfg(not(unix))]
impl MediaSocket {
    pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<MediaSocket> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        Ok(MediaSocket {
            socket: tokio::net::UdpSocket::from_std(socket)?,
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub(crate) async fn readable(&self) -> std::io::Result<()> {
        self.socket.readable().await
    }

    pub(crate) async fn writable(&self) -> std::io::Result<()> {
        self.socket.writable().await
    }

    fn try_read<R>(&self, f: impl FnOnce(&Socket) -> std::io::Result<R>) -> std::io::Result<R> {
        self.socket.try_io(Interest::READABLE, || f(&self.socket))
    }

    fn try_write<R>(&self, f: impl FnOnce(&Socket) -> std::io::Result<R>) -> std::io::Result<R> {
        self.socket.try_io(Interest::WRITABLE, || f(&self.socket))
    }

    fn watch_writable(&mut self, _blocked: bool) {}
}

/// Receive slots: datagram `i` of a batch lands in `buf[i * MAX_DATAGRAM..]`.
pub(crate) struct RecvBuffers {
    buf: Vec<u8>,
    /// Length and sender of each datagram of the last batch (`None`: not an IP address).
    received: Vec<(usize, Option<SocketAddr>)>,
}

impl RecvBuffers {
    pub(crate) fn new() -> RecvBuffers {
        RecvBuffers {
            buf: vec![0; MAX_DATAGRAM * RECV_BATCH],
            received: Vec::with_capacity(RECV_BATCH),
        }
    }

    /// How many datagrams the last [`read`](Self::read) got.
    pub(crate) fn len(&self) -> usize {
        self.received.len()
    }

    /// Datagram `i` of the last batch and its sender (`None`: not an IP address, no leg's).
    pub(crate) fn datagram(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let (len, source) = self.received[i];
        let start = i * MAX_DATAGRAM;
        (&self.buf[start..start + len], source)
    }

    /// Reads what the socket holds, up to [`RECV_BATCH`] datagrams. True if the batch was full
    /// (more may be waiting). A short batch means the socket ran dry: tokio is told so
    /// (`WouldBlock` inside `try_io`) and the next wake-up waits for a new datagram, without a
    /// system call that would only find the socket empty. Nothing is missed: tokio clears only
    /// the readiness it had seen before the read. Errors other than an empty socket are the
    /// socket's (ICMP reports on Linux); the caller goes on.
    pub(crate) fn read(&mut self, socket: &MediaSocket) -> std::io::Result<bool> {
        self.received.clear();
        let RecvBuffers { buf, received } = self;
        let result = socket.try_read(|socket| {
            receive(socket, buf, received)?;
            if received.len() < RECV_BATCH {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(target_os = "linux")]
fn receive(
    socket: &Socket,
    buf: &mut [u8],
    out: &mut Vec<(usize, Option<SocketAddr>)>,
) -> std::io::Result<()> {
    crate::mmsg::receive::<RECV_BATCH>(socket, buf, MAX_DATAGRAM, out)
}

/// [`receive`] one datagram at a time, where `recvmmsg` is not available.
#[cfg(not(target_os = "linux"))]
fn receive(
    socket: &Socket,
    buf: &mut [u8],
    out: &mut Vec<(usize, Option<SocketAddr>)>,
) -> std::io::Result<()> {
    #[cfg(unix)]
    let (len, source) = socket.recv_from(&mut buf[..MAX_DATAGRAM])?;
    #[cfg(not(unix))]
    let (len, source) = socket.try_recv_from(&mut buf[..MAX_DATAGRAM])?;
    out.push((len, Some(source)));
    Ok(())
}

/// Datagrams held until [`Outbox::flush`] (module docs).
#[derive(Default)]
pub(crate) struct Outbox {
    held: VecDeque<(SocketAddr, Vec<u8>)>,
    /// The socket refused the front datagram (full buffer): wait until it is writable.
    blocked: bool,
}

impl Outbox {
    /// Holds one datagram; false if it was dropped because the outbox is full.
    pub(crate) fn push(&mut self, to: SocketAddr, datagram: Vec<u8>) -> bool {
        if self.held.len() >= OUTBOX_LIMIT {
            return false;
        }
        self.held.push_back((to, datagram));
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Datagrams are held and the last flush found the socket full.
    pub(crate) fn blocked(&self) -> bool {
        self.blocked && !self.held.is_empty()
    }

    /// Writes held datagrams in order until none is left or the socket is full; `sent` gets
    /// the size of each one that went out. A datagram the kernel refuses for another reason
    /// (an unreachable destination) is dropped and the rest go on.
    pub(crate) fn flush(&mut self, socket: &mut MediaSocket, sent: impl FnMut(usize)) {
        self.flush_with(|batch| socket.try_write(|s| send_many(s, batch)), sent);
        socket.watch_writable(self.blocked());
    }

    /// [`flush`](Self::flush) through `send`, which writes a prefix of the datagrams it is
    /// given and says how many.
    fn flush_with(
        &mut self,
        mut send: impl FnMut(&[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize>,
        mut sent: impl FnMut(usize),
    ) {
        self.blocked = false;
        while !self.held.is_empty() {
            let (front, _) = self.held.as_slices();
            // The ring buffer's front part (where it wraps, the rest comes next round).
            let batch = &front[..front.len().min(SEND_BATCH)];
            match send(batch) {
                Ok(n) if n > 0 => {
                    for (_, d) in self.held.drain(..n.min(batch.len())) {
                        sent(d.len());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return;
                }
                // Refused (or nothing written without an error): that one is dropped, as the
                // network would drop it.
                Ok(_) | Err(_) => {
                    self.held.pop_front();
                }
            }
        }
    }
}

/// One `sendmmsg`: how many of `held` (from the first, at most [`SEND_BATCH`]) went out.
#[cfg(target_os = "linux")]
fn send_many(socket: &Socket, held: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> {
    crate::mmsg::send(socket, held.iter().map(|(to, d)| (*to, d.as_slice())))
}

/// [`send_many`] one datagram at a time, where `sendmmsg` is not available.
#[cfg(not(target_os = "linux"))]
fn send_many(socket: &Socket, held: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> {
    let Some((to, d)) = held.first() else {
        return Ok(0);
    };
    #[cfg(unix)]
    let sent = socket.send_to(d, *to);
    #[cfg(not(unix))]
    let sent = socket.try_send_to(d, *to);
    sent.map(|_| 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(rx: &MediaSocket, count: usize) -> Vec<(Vec<u8>, Option<SocketAddr>)> {
        let mut bufs = RecvBuffers::new();
        let mut got = Vec::new();
        while got.len() < count {
            rx.readable().await.unwrap();
            bufs.read(rx).unwrap();
            for i in 0..bufs.len() {
                let (d, from) = bufs.datagram(i);
                got.push((d.to_vec(), from));
            }
        }
        got
    }

    fn loopback() -> MediaSocket {
        MediaSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_batch_goes_out_in_order_and_comes_back_in_batches() {
        let mut a = loopback();
        let b = loopback();
        let to = b.local_addr().unwrap();
        let mut outbox = Outbox::default();
        // More than one system call's worth each way.
        let count = SEND_BATCH + RECV_BATCH + 3;
        let datagram = |i: usize| vec![i as u8; 100 + i];
        for i in 0..count {
            assert!(outbox.push(to, datagram(i)));
        }
        let mut sizes = Vec::new();
        // Written at once: sending waits for no readiness from the runtime.
        outbox.flush(&mut a, |n| sizes.push(n));
        assert_eq!(outbox.len(), 0);
        assert_eq!(sizes, (0..count).map(|i| 100 + i).collect::<Vec<_>>());
        assert!(!outbox.blocked());
        let got = read_all(&b, count).await;
        let from = a.local_addr().unwrap();
        let expected: Vec<_> = (0..count).map(|i| (datagram(i), Some(from))).collect();
        assert_eq!(got, expected);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn writability_is_watched_only_while_the_outbox_is_blocked() {
        use futures_util::FutureExt;
        let mut a = loopback();
        // Not registered for writing: sends raise no wake-ups, and nothing waits for room.
        assert!(a.writable().now_or_never().is_none());
        a.watch_writable(true);
        // A socket with room: the registration reports it.
        a.writable().await.unwrap();
        a.watch_writable(true);
        a.writable().await.unwrap();
        a.watch_writable(false);
        assert!(a.write.is_none());
        assert!(a.writable().now_or_never().is_none());
    }

    /// A sender that takes `take[i]` datagrams on call `i` (`None`: the socket is full),
    /// recording the first byte of each.
    fn sender<'a>(
        take: &'a [Option<usize>],
        wire: &'a mut Vec<u8>,
    ) -> impl FnMut(&[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> + 'a {
        let mut call = 0;
        move |batch| {
            let step = take.get(call).copied().flatten();
            call += 1;
            match step {
                None => Err(std::io::ErrorKind::WouldBlock.into()),
                Some(n) => {
                    let n = n.min(batch.len());
                    wire.extend(batch[..n].iter().map(|(_, d)| d[0]));
                    Ok(n)
                }
            }
        }
    }

    #[test]
    fn a_full_socket_keeps_the_rest_in_order_for_the_next_flush() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut outbox = Outbox::default();
        for i in 0..10u8 {
            assert!(outbox.push(to, vec![i; 10]));
        }
        let mut wire = Vec::new();
        let mut sent = 0;
        // The kernel cuts a batch short, then the next call finds the buffer full.
        outbox.flush_with(sender(&[Some(3), Some(2), None], &mut wire), |_| sent += 1);
        assert_eq!(wire, [0, 1, 2, 3, 4]);
        assert_eq!(sent, 5);
        assert!(outbox.blocked());
        assert_eq!(outbox.len(), 5);
        // Held while blocked, after what was already waiting.
        assert!(outbox.push(to, vec![10; 10]));
        outbox.flush_with(sender(&[Some(64)], &mut wire), |_| sent += 1);
        assert_eq!(wire, (0..11).collect::<Vec<u8>>());
        assert_eq!(sent, 11);
        assert!(!outbox.blocked());
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn a_refused_datagram_is_dropped_and_the_rest_go_on() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut outbox = Outbox::default();
        for i in 0..4u8 {
            outbox.push(to, vec![i; 10]);
        }
        let mut calls = 0;
        let mut wire = Vec::new();
        outbox.flush_with(
            |batch| {
                calls += 1;
                if calls == 1 {
                    // EHOSTUNREACH-like: the front datagram fails alone.
                    return Err(std::io::ErrorKind::PermissionDenied.into());
                }
                wire.extend(batch.iter().map(|(_, d)| d[0]));
                Ok(batch.len())
            },
            |_| {},
        );
        assert_eq!(wire, [1, 2, 3]);
        assert_eq!(outbox.len(), 0);
        assert!(!outbox.blocked());
    }

    #[test]
    fn a_full_outbox_drops_newer_datagrams() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut outbox = Outbox::default();
        for _ in 0..OUTBOX_LIMIT {
            assert!(outbox.push(to, vec![0; 10]));
        }
        assert!(!outbox.push(to, vec![1; 10]));
        assert_eq!(outbox.len(), OUTBOX_LIMIT);
    }
}
