//! Batched datagram I/O of the media socket, through the system calls the SIP UDP transport
//! uses too ([`crate::mmsg`]: `recvmmsg`, `sendmmsg`; no `unsafe` here).
//!
//! * [`RecvBuffers`] reads up to [`RECV_BATCH`] datagrams per system call, and with them, if
//!   the socket has them on ([`enable_receive_timestamps`], `SO_TIMESTAMPNS`), the kernel's
//!   receive timestamp of each: when it arrived, not when the driver got to it. A batch read
//!   late holds datagrams that arrived milliseconds apart; the fast ingress's transport
//!   feedback must tell the sender those times (bench/NOTES.md, "Media fast ingress: kernel
//!   receive timestamps"). The stamps are on the system clock; [`arrival_from_stamp`] maps
//!   them to `Instant`s through one pair of clock readings per batch. The option turns on the
//!   kernel's stamping of every packet the host receives (a global switch, tens of ns a
//!   packet), and does so a little after it is set (deferred work): until then datagrams are
//!   stamped when read. str0m's own transport feedback (legs with bandwidth estimation) still
//!   uses read times.
//! * [`Outbox`] holds what the legs transmit during one driver turn (the echoes of a receive
//!   batch, a composite packet's copies for every receiver) and writes it with `sendmmsg`,
//!   [`SEND_BATCH`] datagrams per call. Datagrams leave in the order they were held, so each
//!   destination sees its packets in the order its leg produced them. A full socket buffer
//!   (`EAGAIN`, or a batch the kernel cut short) keeps the rest, in order, for the next time
//!   the socket is writable; while blocked the outbox holds at most [`OUTBOX_LIMIT`] datagrams
//!   and drops newer ones beyond that, as a full network queue would.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::Interest;
use tokio::net::UdpSocket;

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

/// Receive slots: datagram `i` of a batch lands in `buf[i * MAX_DATAGRAM..]`.
pub(crate) struct RecvBuffers {
    buf: Vec<u8>,
    /// Length and sender of each datagram of the last batch (`None`: not an IP address).
    received: Vec<(usize, Option<SocketAddr>)>,
    /// Read each datagram's kernel receive timestamp (the socket has them on:
    /// [`enable_receive_timestamps`]).
    stamped: bool,
    /// The kernel's stamp of each datagram of the last batch (system clock, since the epoch).
    stamps: Vec<Option<Duration>>,
    /// When each datagram of the last batch arrived, from its stamp ([`arrival_from_stamp`]);
    /// `None` without one.
    arrivals: Vec<Option<Instant>>,
    /// The latest arrival given so far: none later is put before it.
    last_arrival: Option<Instant>,
}

impl RecvBuffers {
    /// Buffers for a socket with kernel receive timestamps on (`stamped`) or off.
    pub(crate) fn new(stamped: bool) -> RecvBuffers {
        RecvBuffers {
            buf: vec![0; MAX_DATAGRAM * RECV_BATCH],
            received: Vec::with_capacity(RECV_BATCH),
            stamped,
            stamps: Vec::with_capacity(if stamped { RECV_BATCH } else { 0 }),
            arrivals: Vec::with_capacity(if stamped { RECV_BATCH } else { 0 }),
            last_arrival: None,
        }
    }

    /// How many datagrams the last [`read`](Self::read) got.
    pub(crate) fn len(&self) -> usize {
        self.received.len()
    }

    /// Datagram `i` of the last batch, its sender (`None`: not an IP address, no leg's) and
    /// when it arrived by the kernel's stamp (`None`: no stamp; the reader's clock is all
    /// there is).
    pub(crate) fn datagram(&self, i: usize) -> (&[u8], Option<SocketAddr>, Option<Instant>) {
        let (len, source) = self.received[i];
        let start = i * MAX_DATAGRAM;
        let arrival = self.arrivals.get(i).copied().flatten();
        (&self.buf[start..start + len], source, arrival)
    }

    /// Reads what the socket holds, up to [`RECV_BATCH`] datagrams. True if the batch was full
    /// (more may be waiting). A short batch means the socket ran dry: tokio is told so
    /// (`WouldBlock` inside `try_io`) and the next wake-up waits for a new datagram, without a
    /// system call that would only find the socket empty. Nothing is missed: tokio clears only
    /// the readiness it had seen before the read. Errors other than an empty socket are the
    /// socket's (ICMP reports on Linux); the caller goes on.
    pub(crate) fn read(&mut self, socket: &UdpSocket) -> std::io::Result<bool> {
        self.received.clear();
        self.stamps.clear();
        let RecvBuffers {
            buf,
            received,
            stamped,
            stamps,
            ..
        } = self;
        let result = socket.try_io(Interest::READABLE, || {
            receive(socket, buf, received, stamped.then_some(&mut *stamps))?;
            if received.len() < RECV_BATCH {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        if self.stamped {
            self.map_stamps();
        }
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The batch's stamps as `Instant`s, through one (system clock, monotonic clock) pair read
    /// now, after the batch.
    fn map_stamps(&mut self) {
        self.arrivals.clear();
        if self.stamps.is_empty() {
            return;
        }
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).ok();
        let mono = Instant::now();
        for stamp in &self.stamps {
            let arrival = stamp
                .zip(wall)
                .map(|(s, w)| arrival_from_stamp(s, w, mono, self.last_arrival));
            if arrival.is_some() {
                self.last_arrival = arrival;
            }
            self.arrivals.push(arrival);
        }
    }
}

/// A kernel stamp older than this when its batch is read says the system clock was stepped
/// forward, not that the datagram waited that long in the socket.
const MAX_STAMP_AGE: Duration = Duration::from_secs(2);

/// When a datagram stamped `stamp` by the kernel (system clock, since the Unix epoch) arrived,
/// as an `Instant`: `mono` less the stamp's age at `wall`, the system clock read together with
/// `mono` after the datagram was read. The system clock may be stepped (NTP, an operator), so
/// the result is kept within [`floor`, `mono`], `floor` being the arrival of the datagram
/// before: a step can neither put arrivals before earlier ones nor after the read. A stamp
/// older than [`MAX_STAMP_AGE`] says nothing sensible: the datagram gets `floor` (`mono` if
/// there is none).
pub(crate) fn arrival_from_stamp(
    stamp: Duration,
    wall: Duration,
    mono: Instant,
    floor: Option<Instant>,
) -> Instant {
    let floor = floor.map(|f| f.min(mono));
    // A stamp ahead of the clock (a step back since) has age 0: `mono`.
    let age = wall.saturating_sub(stamp);
    match mono.checked_sub(age).filter(|_| age <= MAX_STAMP_AGE) {
        Some(at) => floor.map_or(at, |f| at.max(f)),
        None => floor.unwrap_or(mono),
    }
}

/// Turns on kernel receive timestamps for the media socket ([`RecvBuffers::new`]'s `stamped`):
/// false where they cannot be had.
#[cfg(target_os = "linux")]
pub(crate) fn enable_receive_timestamps(socket: &UdpSocket) -> bool {
    match crate::mmsg::enable_receive_timestamps(socket) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "media socket: no kernel receive timestamps");
            false
        }
    }
}

/// [`enable_receive_timestamps`] where there is no `recvmmsg` to read them with.
#[cfg(not(target_os = "linux"))]
pub(crate) fn enable_receive_timestamps(_socket: &UdpSocket) -> bool {
    false
}

#[cfg(target_os = "linux")]
fn receive(
    socket: &UdpSocket,
    buf: &mut [u8],
    out: &mut Vec<(usize, Option<SocketAddr>)>,
    stamps: Option<&mut Vec<Option<Duration>>>,
) -> std::io::Result<()> {
    match stamps {
        Some(stamps) => {
            crate::mmsg::receive_stamped::<RECV_BATCH>(socket, buf, MAX_DATAGRAM, out, stamps)
        }
        None => crate::mmsg::receive::<RECV_BATCH>(socket, buf, MAX_DATAGRAM, out),
    }
}

/// [`receive`] one datagram at a time, where `recvmmsg` is not available (and no stamps).
#[cfg(not(target_os = "linux"))]
fn receive(
    socket: &UdpSocket,
    buf: &mut [u8],
    out: &mut Vec<(usize, Option<SocketAddr>)>,
    _stamps: Option<&mut Vec<Option<Duration>>>,
) -> std::io::Result<()> {
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
    pub(crate) fn flush(&mut self, socket: &UdpSocket, sent: impl FnMut(usize)) {
        // `try_io`: `EAGAIN` clears tokio's writable readiness, so `writable()` then waits for
        // the kernel to make room.
        self.flush_with(
            |batch| socket.try_io(Interest::WRITABLE, || send_many(socket, batch)),
            sent,
        );
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
fn send_many(socket: &UdpSocket, held: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> {
    crate::mmsg::send(socket, held.iter().map(|(to, d)| (*to, d.as_slice())))
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

    async fn read_all(rx: &UdpSocket, count: usize) -> Vec<(Vec<u8>, Option<SocketAddr>)> {
        let mut bufs = RecvBuffers::new(false);
        let mut got = Vec::new();
        while got.len() < count {
            rx.readable().await.unwrap();
            bufs.read(rx).unwrap();
            for i in 0..bufs.len() {
                let (d, from, _) = bufs.datagram(i);
                got.push((d.to_vec(), from));
            }
        }
        got
    }

    #[test]
    fn a_stamp_maps_to_the_instant_it_was_taken_and_never_back_nor_ahead() {
        let mono = Instant::now() + Duration::from_secs(100);
        let wall = Duration::from_secs(1_790_000_000);
        let ms = Duration::from_millis;
        // 30 ms old when the batch was read: 30 ms before the read.
        assert_eq!(
            arrival_from_stamp(wall - ms(30), wall, mono, None),
            mono - ms(30)
        );
        // Before the datagram before it (the clock stepped back between their stamps): at it.
        let floor = Some(mono - ms(10));
        assert_eq!(
            arrival_from_stamp(wall - ms(30), wall, mono, floor),
            mono - ms(10)
        );
        assert_eq!(
            arrival_from_stamp(wall - ms(5), wall, mono, floor),
            mono - ms(5)
        );
        // A stamp ahead of the clock read after it (the clock stepped back after it): the read.
        assert_eq!(arrival_from_stamp(wall + ms(500), wall, mono, floor), mono);
        // Older than the monotonic clock can say (a big step forward): the floor, or the read.
        let huge = Duration::from_secs(u64::MAX / 4);
        assert_eq!(
            arrival_from_stamp(Duration::ZERO, huge, mono, floor),
            mono - ms(10)
        );
        assert_eq!(arrival_from_stamp(Duration::ZERO, huge, mono, None), mono);
        // A floor after the read (not from this reader) does not put it in the future.
        assert_eq!(
            arrival_from_stamp(wall, wall, mono, Some(mono + ms(1))),
            mono
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn kernel_stamps_come_with_each_datagram_and_predate_the_read() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let plain = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(enable_receive_timestamps(&rx));
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // The kernel turns stamping on at arrival a little after the first socket asks
        // (deferred work): until then a datagram is stamped when it is read. Wait (bounded)
        // until one read 2 ms after it was sent carries an earlier stamp.
        let mut bufs = RecvBuffers::new(true);
        let mut live = false;
        for _ in 0..500 {
            tx.send_to(&[9; 8], rx.local_addr().unwrap()).unwrap();
            rx.readable().await.unwrap();
            std::thread::sleep(Duration::from_millis(2));
            bufs.read(&rx).unwrap();
            let read = Instant::now();
            if (0..bufs.len()).any(|i| {
                bufs.datagram(i)
                    .2
                    .is_some_and(|a| a + Duration::from_millis(1) <= read)
            }) {
                live = true;
                break;
            }
        }
        assert!(live, "the kernel never stamped at arrival");
        for i in 0..3u8 {
            tx.send_to(&[i; 40], rx.local_addr().unwrap()).unwrap();
            tx.send_to(&[i; 40], plain.local_addr().unwrap()).unwrap();
        }
        // All there (loopback delivers within `send_to`), then read well after: the stamps
        // say when they arrived, not when they were read.
        rx.readable().await.unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut arrivals = Vec::new();
        while arrivals.len() < 3 {
            rx.readable().await.unwrap();
            bufs.read(&rx).unwrap();
            for i in 0..bufs.len() {
                let (d, _, arrival) = bufs.datagram(i);
                assert_eq!(d, [arrivals.len() as u8; 40]);
                arrivals.push(arrival.expect("a kernel stamp"));
            }
        }
        let read = Instant::now();
        assert!(arrivals.windows(2).all(|w| w[0] <= w[1]), "{arrivals:?}");
        // All were sent before the 20 ms wait: the last stamp is well before the read.
        assert!(
            arrivals[2] + Duration::from_millis(15) <= read,
            "{arrivals:?} {read:?}"
        );
        // A socket without the option, read by buffers that ask for stamps: none.
        let mut bufs = RecvBuffers::new(true);
        let mut got = 0;
        while got < 3 {
            plain.readable().await.unwrap();
            bufs.read(&plain).unwrap();
            for i in 0..bufs.len() {
                assert_eq!(bufs.datagram(i).2, None);
                got += 1;
            }
        }
    }

    /// What a full batch costs to read with and without kernel stamps, for callgrind
    /// (bench/NOTES.md, "Media fast ingress: kernel receive timestamps"):
    /// `HUDDLE_BENCH_STAMPED=1|0 valgrind --tool=callgrind
    /// --toggle-collect='*RecvBuffers*read*' <test binary> --ignored read_cost --exact ...`.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    #[ignore = "a benchmark to run under callgrind"]
    async fn read_cost() {
        let stamped = std::env::var("HUDDLE_BENCH_STAMPED").is_ok_and(|v| v == "1");
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if stamped {
            assert!(enable_receive_timestamps(&rx));
        }
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut bufs = RecvBuffers::new(stamped);
        let mut read = 0;
        for _ in 0..500 {
            for _ in 0..RECV_BATCH {
                tx.send_to(&[7; 1000], to).unwrap();
            }
            let mut got = 0;
            while got < RECV_BATCH {
                rx.readable().await.unwrap();
                bufs.read(&rx).unwrap();
                got += bufs.len();
            }
            read += got;
        }
        eprintln!("read {read} datagrams, stamped: {stamped}");
    }

    #[tokio::test]
    async fn a_batch_goes_out_in_order_and_comes_back_in_batches() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let mut outbox = Outbox::default();
        // More than one system call's worth each way.
        let count = SEND_BATCH + RECV_BATCH + 3;
        let datagram = |i: usize| vec![i as u8; 100 + i];
        for i in 0..count {
            assert!(outbox.push(to, datagram(i)));
        }
        let mut sizes = Vec::new();
        // tokio lets `try_io` write only once the reactor has seen the socket writable; until
        // then a flush holds everything, as it does when the socket's buffer is full.
        loop {
            a.writable().await.unwrap();
            outbox.flush(&a, |n| sizes.push(n));
            if outbox.len() == 0 {
                break;
            }
            assert!(outbox.blocked());
        }
        assert_eq!(sizes, (0..count).map(|i| 100 + i).collect::<Vec<_>>());
        assert!(!outbox.blocked());
        let got = read_all(&b, count).await;
        let from = a.local_addr().unwrap();
        let expected: Vec<_> = (0..count).map(|i| (datagram(i), Some(from))).collect();
        assert_eq!(got, expected);
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
