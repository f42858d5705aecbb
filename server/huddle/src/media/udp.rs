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
//! * With UDP segmentation offload (GSO, `UDP_SEGMENT`, Linux; `[media] udp_gso`), a flush's
//!   datagrams to one destination of equal size (a video frame's packets, the last may be
//!   shorter) go as one `sendmsg` the kernel splits into those datagrams ([`plan_sends`]):
//!   one pass of its UDP/IP send path for all of them instead of one each. Only the order
//!   across destinations changes. Used only where the kernel takes the socket option at start
//!   ([`probe_gso`]: an older kernel would ignore the per-send option and send one big
//!   datagram). If the very first GSO send is refused as impossible (`EIO`, `EINVAL`) offload
//!   is off for the socket; a later refusal is that route's (its path MTU or device): the
//!   send goes again one datagram at a time, and so does everything to that destination.

use std::collections::{HashMap, HashSet, VecDeque};
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

/// Whether the kernel takes UDP GSO sends on `socket` (Linux 4.18, `UDP_SEGMENT`): it accepts
/// the socket option (set to 0, the default: no segmentation unless a send asks). A kernel
/// without it would ignore the per-send option, sending a GSO send's datagrams as one, so
/// offload is used only where this says yes.
#[cfg(target_os = "linux")]
pub(crate) fn probe_gso(socket: &UdpSocket) -> bool {
    match nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::UdpGsoSegment, &0) {
        Ok(()) => true,
        Err(e) => {
            tracing::info!(error = %e, "media socket: no UDP segmentation offload (UDP_SEGMENT)");
            false
        }
    }
}

/// [`probe_gso`] where there is no UDP GSO.
#[cfg(not(target_os = "linux"))]
pub(crate) fn probe_gso(_socket: &UdpSocket) -> bool {
    false
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

type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// Destinations remembered as refusing GSO sends at most; beyond, the set starts again (each
/// then costs one more refused send).
pub(crate) const NO_GSO_DESTINATIONS: usize = 256;

/// Segments one GSO send carries at most (the kernel's `UDP_MAX_SEGMENTS` was 64 before 6.x).
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;
// A GSO send is one `sendmsg` whose segments `mmsg::send_segments` holds on the stack.
#[cfg(target_os = "linux")]
const _: () = assert!(GSO_MAX_SEGMENTS <= crate::mmsg::SEND_BATCH);
/// Bytes one GSO send carries at most: within a UDP datagram's 65,507 (IPv4) / 65,527
/// (IPv6) bytes of payload.
pub(crate) const GSO_MAX_BYTES: usize = 65_000;
/// The largest datagram sent as a GSO segment: the kernel refuses a segment that would not fit
/// the route's MTU unfragmented (1,452 bytes of UDP payload over IPv6 on a 1,500-byte link);
/// larger ones (none a WebRTC peer sends) go on their own.
pub(crate) const GSO_MAX_SEGMENT: usize = 1452;

/// One send of a flush ([`plan_sends`]): `count` datagrams to one destination, back to back in
/// the plan's order. With more than one, each but the last is `segment` bytes long and the last
/// at most that: the kernel's rule for one GSO send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlannedSend {
    pub(crate) count: usize,
    pub(crate) segment: usize,
}

/// A send being built by [`plan_sends`].
#[derive(Debug, Clone, Copy)]
struct Group {
    count: usize,
    segment: usize,
    bytes: usize,
    /// More of its destination's datagrams may join it.
    open: bool,
}

/// Scratch of [`plan_sends`], kept between flushes.
#[derive(Debug, Default)]
pub(crate) struct Planner {
    groups: Vec<Group>,
    group_of: Vec<u32>,
    /// Each destination's latest send: the only one its next datagram may join.
    latest: HashMap<SocketAddr, u32, foldhash::fast::RandomState>,
    /// Scratch of [`Outbox::plan`]: the held datagrams taken out before they go back in plan
    /// order.
    taken: Vec<Option<(SocketAddr, Vec<u8>)>>,
    starts: Vec<usize>,
}

/// Groups `datagrams` (destination, length, in the order they were produced) into the sends of
/// one flush for UDP segmentation offload (GSO), except those to `no_gso`'s destinations (the
/// kernel refused a GSO send there): a datagram joins its destination's latest send
/// if that send's datagrams are all as long as its first, this one is no longer, and the
/// kernel's limits hold ([`GSO_MAX_SEGMENTS`], [`GSO_MAX_BYTES`], [`GSO_MAX_SEGMENT`]); a shorter
/// one ends the send. So the packets of a frame to one receiver (equal sizes but the last) go
/// as one send even when the frame's copies for other receivers come between them.
///
/// Fills `order` with the datagrams' indices in send order (each send's back to back) and
/// `sends` with the sends, in the order of their first datagrams: each destination's datagrams
/// keep their order; only different destinations' may pass each other. Returns false (and
/// leaves both empty) when no send would carry more than one datagram: the order as produced is
/// then the plan.
pub(crate) fn plan_sends(
    planner: &mut Planner,
    datagrams: impl Iterator<Item = (SocketAddr, usize)>,
    no_gso: &FastSet<SocketAddr>,
    order: &mut Vec<usize>,
    sends: &mut Vec<PlannedSend>,
) -> bool {
    order.clear();
    sends.clear();
    let Planner {
        groups,
        group_of,
        latest,
        starts,
        ..
    } = planner;
    groups.clear();
    group_of.clear();
    latest.clear();
    for (to, len) in datagrams {
        let joined = latest.get(&to).copied().filter(|&g| {
            let g = &groups[g as usize];
            g.open
                && len <= g.segment
                && g.count < GSO_MAX_SEGMENTS
                && g.bytes + len <= GSO_MAX_BYTES
        });
        let g = match joined {
            Some(g) => {
                let group = &mut groups[g as usize];
                group.count += 1;
                group.bytes += len;
                // A shorter datagram can only be a send's last.
                group.open = len == group.segment;
                g
            }
            None => {
                let g = groups.len() as u32;
                groups.push(Group {
                    count: 1,
                    segment: len,
                    bytes: len,
                    open: len > 0 && len <= GSO_MAX_SEGMENT && !no_gso.contains(&to),
                });
                latest.insert(to, g);
                g
            }
        };
        group_of.push(g);
    }
    if groups.len() == group_of.len() {
        return false;
    }
    // Each send's datagrams back to back: a counting sort by send, stable within one.
    starts.clear();
    let mut at = 0;
    for g in groups.iter() {
        starts.push(at);
        at += g.count;
        sends.push(PlannedSend {
            count: g.count,
            segment: g.segment,
        });
    }
    order.resize(group_of.len(), 0);
    for (i, &g) in group_of.iter().enumerate() {
        let slot = &mut starts[g as usize];
        order[*slot] = i;
        *slot += 1;
    }
    true
}

/// Whether the kernel's refusal of a GSO send says it cannot do them on that route: `EIO`
/// (no checksum offload on the route's device, an IPsec route), `EINVAL` (the segment does not
/// fit the path's MTU). `EOPNOTSUPP`/`ENOPROTOOPT` are defensive: a kernel without
/// `UDP_SEGMENT` is found by the probe at start ([`probe_gso`]), since its `sendmsg` would
/// ignore the option rather than refuse it.
fn gso_unsupported(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        use nix::errno::Errno;
        [
            Errno::EIO,
            Errno::EINVAL,
            Errno::EOPNOTSUPP,
            Errno::ENOPROTOOPT,
        ]
        .iter()
        .any(|errno| e.raw_os_error() == Some(*errno as i32))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = e;
        true
    }
}

/// How [`Outbox::flush_with`] writes: one batch of separate datagrams, or one GSO send.
pub(crate) trait Wire {
    /// Writes a prefix of `batch` (at most [`SEND_BATCH`]), one datagram each; says how many.
    fn send_each(&mut self, batch: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize>;
    /// Writes `segments` (all to `to`, at most [`GSO_MAX_SEGMENTS`]) as one GSO send of
    /// `segment`-byte datagrams (the last may be shorter): all or none.
    fn send_segments(
        &mut self,
        to: SocketAddr,
        segments: &[(SocketAddr, Vec<u8>)],
        segment: usize,
    ) -> std::io::Result<()>;
}

/// The media socket as a [`Wire`].
struct SocketWire<'a>(&'a UdpSocket);

impl Wire for SocketWire<'_> {
    fn send_each(&mut self, batch: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> {
        // `try_io`: `EAGAIN` clears tokio's writable readiness, so `writable()` then waits for
        // the kernel to make room.
        self.0
            .try_io(Interest::WRITABLE, || send_many(self.0, batch))
    }

    fn send_segments(
        &mut self,
        to: SocketAddr,
        segments: &[(SocketAddr, Vec<u8>)],
        segment: usize,
    ) -> std::io::Result<()> {
        self.0.try_io(Interest::WRITABLE, || {
            send_gso(self.0, to, segments, segment)
        })
    }
}

/// What the outbox's segmentation offload did ([`Outbox::take_gso_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GsoCounts {
    /// GSO sends that went out.
    pub(crate) sends: u64,
    /// Datagrams they carried.
    pub(crate) datagrams: u64,
    /// GSO sends the kernel refused as impossible on their route, sent again one datagram at a
    /// time.
    pub(crate) fallbacks: u64,
}

/// Whether the outbox sends with segmentation offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gso {
    /// Sends of several datagrams to one destination go as one.
    On,
    /// Not asked for, or the kernel refused it once: one datagram at a time.
    Off,
}

/// Datagrams held until [`Outbox::flush`] (module docs).
pub(crate) struct Outbox {
    held: VecDeque<(SocketAddr, Vec<u8>)>,
    /// The socket refused the front datagram (full buffer): wait until it is writable.
    blocked: bool,
    gso: Gso,
    /// A GSO send went out once: from then on a refusal is its destination's (the route's MTU
    /// or device), not the socket's.
    gso_confirmed: bool,
    /// Destinations whose GSO sends the kernel refused (bounded, [`NO_GSO_DESTINATIONS`]):
    /// their datagrams go one at a time.
    no_gso: FastSet<SocketAddr>,
    /// GSO sends, the datagrams they carried, and the refused ones sent again one at a time,
    /// since [`Outbox::take_gso_counts`] last read them.
    gso_counts: GsoCounts,
    /// The current flush's sends, front first, as (datagrams left, segment size): parallel to
    /// the front of `held` once it is in plan order. Empty: every datagram on its own.
    plan: VecDeque<PlannedSend>,
    planner: Planner,
    order: Vec<usize>,
    sends: Vec<PlannedSend>,
}

impl Default for Outbox {
    fn default() -> Outbox {
        Outbox::new(false)
    }
}

impl Outbox {
    /// An outbox that groups each destination's datagrams into GSO sends (`gso`, Linux only)
    /// until the kernel refuses one, or sends every datagram on its own.
    pub(crate) fn new(gso: bool) -> Outbox {
        Outbox {
            held: VecDeque::new(),
            blocked: false,
            gso: if gso && cfg!(target_os = "linux") {
                Gso::On
            } else {
                Gso::Off
            },
            gso_confirmed: false,
            no_gso: FastSet::default(),
            gso_counts: GsoCounts::default(),
            plan: VecDeque::new(),
            planner: Planner::default(),
            order: Vec::new(),
            sends: Vec::new(),
        }
    }

    /// Holds one datagram; false if it was dropped because the outbox is full.
    pub(crate) fn push(&mut self, to: SocketAddr, datagram: Vec<u8>) -> bool {
        if self.held.len() >= OUTBOX_LIMIT {
            return false;
        }
        self.held.push_back((to, datagram));
        true
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Datagrams held before a turn writes them at once: a system call's worth, or with
    /// segmentation offload four (so that a frame's packets for many receivers are grouped
    /// in one flush).
    pub(crate) fn full(&self) -> bool {
        let batch = match self.gso {
            Gso::On => 4 * SEND_BATCH,
            Gso::Off => SEND_BATCH,
        };
        self.held.len() >= batch
    }

    /// What segmentation offload did since the last call.
    pub(crate) fn take_gso_counts(&mut self) -> GsoCounts {
        std::mem::take(&mut self.gso_counts)
    }

    /// Segmentation offload is (still) on.
    #[cfg(test)]
    pub(crate) fn gso(&self) -> bool {
        self.gso == Gso::On
    }

    /// Datagrams are held and the last flush found the socket full.
    pub(crate) fn blocked(&self) -> bool {
        self.blocked && !self.held.is_empty()
    }

    /// Writes held datagrams until none is left or the socket is full; `sent` gets the size of
    /// each one that went out. Each destination's datagrams leave in the order they were held;
    /// with segmentation offload a destination's run of equal-sized datagrams leaves as one
    /// send ([`plan_sends`]). A datagram the kernel refuses for another reason (an unreachable
    /// destination) is dropped and the rest go on; a GSO send so refused is tried again one
    /// datagram at a time.
    pub(crate) fn flush(&mut self, socket: &UdpSocket, sent: impl FnMut(usize)) {
        self.flush_with(&mut SocketWire(socket), sent);
    }

    /// Puts `held` in the order [`plan_sends`] gives and `plan` in step with it.
    fn plan(&mut self) {
        self.plan.clear();
        let grouped = plan_sends(
            &mut self.planner,
            self.held.iter().map(|(to, d)| (*to, d.len())),
            &self.no_gso,
            &mut self.order,
            &mut self.sends,
        );
        if !grouped {
            return;
        }
        let taken = &mut self.planner.taken;
        taken.clear();
        taken.extend(self.held.drain(..).map(Some));
        self.held
            .extend(self.order.iter().filter_map(|&i| taken[i].take()));
        self.plan.extend(self.sends.iter().copied());
    }

    /// `n` datagrams left the front of `held` (sent or dropped): `plan` follows.
    fn consumed(&mut self, mut n: usize, sent: &mut impl FnMut(usize), counted: bool) {
        for (_, d) in self.held.drain(..n.min(self.held.len())) {
            if counted {
                sent(d.len());
            }
        }
        while n > 0 {
            let Some(front) = self.plan.front_mut() else {
                break;
            };
            if front.count <= n {
                n -= front.count;
                self.plan.pop_front();
            } else {
                front.count -= n;
                n = 0;
            }
        }
    }

    /// The planned GSO send at the front (`count` datagrams) goes again as single sends.
    fn send_front_singly(&mut self, count: usize, segment: usize) {
        self.plan.pop_front();
        for _ in 0..count {
            self.plan.push_front(PlannedSend { count: 1, segment });
        }
    }

    /// [`flush`](Self::flush) through `wire`.
    pub(crate) fn flush_with(&mut self, wire: &mut impl Wire, mut sent: impl FnMut(usize)) {
        self.blocked = false;
        if self.held.is_empty() {
            return;
        }
        if self.gso == Gso::On {
            self.plan();
        } else {
            self.plan.clear();
        }
        while !self.held.is_empty() {
            let held = self.held.make_contiguous();
            let next = self.plan.front().copied();
            if let (Gso::On, Some(PlannedSend { count, segment })) = (self.gso, next) {
                if count > 1 {
                    let to = held[0].0;
                    match wire.send_segments(to, &held[..count], segment) {
                        Ok(()) => {
                            self.gso_confirmed = true;
                            self.gso_counts.sends += 1;
                            self.gso_counts.datagrams += count as u64;
                            self.consumed(count, &mut sent, true);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            self.blocked = true;
                            return;
                        }
                        // The very first GSO send refused: none will work on this socket.
                        Err(e) if gso_unsupported(&e) && !self.gso_confirmed => {
                            tracing::info!(error = %e, "media socket: no UDP segmentation offload, one datagram per send");
                            self.gso_counts.fallbacks += 1;
                            self.gso = Gso::Off;
                        }
                        // Later, a refusal is that route's (its path MTU, its device): that
                        // destination's datagrams go one at a time from here on, and these
                        // again now, as below.
                        Err(e) if gso_unsupported(&e) => {
                            tracing::debug!(error = %e, %to, "media socket: no UDP segmentation offload to this peer");
                            self.gso_counts.fallbacks += 1;
                            if self.no_gso.len() >= NO_GSO_DESTINATIONS {
                                self.no_gso.clear();
                            }
                            self.no_gso.insert(to);
                            self.send_front_singly(count, segment);
                        }
                        // Refused for another reason (an unreachable destination, no buffer
                        // memory): tried again one datagram at a time, where each refused one
                        // is dropped alone, as before offload.
                        Err(_) => self.send_front_singly(count, segment),
                    }
                    continue;
                }
            }
            // Datagrams on their own: the run of single sends at the front (all of them
            // without a plan or without offload).
            let run = match self.gso {
                Gso::On if !self.plan.is_empty() => self
                    .plan
                    .iter()
                    .take(SEND_BATCH)
                    .take_while(|s| s.count == 1)
                    .count(),
                _ => SEND_BATCH,
            };
            let batch = &held[..held.len().min(run).max(1)];
            let len = batch.len();
            match wire.send_each(batch) {
                Ok(n) if n > 0 => self.consumed(n.min(len), &mut sent, true),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return;
                }
                // Refused (or nothing written without an error): that one is dropped, as the
                // network would drop it.
                Ok(_) | Err(_) => self.consumed(1, &mut sent, false),
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

/// One GSO send of `segments` to `to`.
#[cfg(target_os = "linux")]
fn send_gso(
    socket: &UdpSocket,
    to: SocketAddr,
    segments: &[(SocketAddr, Vec<u8>)],
    segment: usize,
) -> std::io::Result<()> {
    debug_assert!(segments.iter().all(|(t, _)| *t == to));
    debug_assert!(segments.split_last().is_some_and(|(last, rest)| {
        rest.iter().all(|(_, d)| d.len() == segment) && last.1.len() <= segment
    }));
    // Planned sends keep to `GSO_MAX_SEGMENT`; a larger one is refused (and sent again one
    // datagram at a time).
    let segment = u16::try_from(segment).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    crate::mmsg::send_segments(
        socket,
        to,
        segments.iter().map(|(_, d)| d.as_slice()),
        segment,
    )
}

/// No GSO here: [`gso_unsupported`] turns it off on the first try.
#[cfg(not(target_os = "linux"))]
fn send_gso(
    _socket: &UdpSocket,
    _to: SocketAddr,
    _segments: &[(SocketAddr, Vec<u8>)],
    _segment: usize,
) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
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

    /// What the fake kernel answers a GSO send.
    #[derive(Debug, Clone, Copy)]
    enum Answer {
        Ok,
        /// The socket's buffer is full.
        Full,
        Errno(i32),
    }

    /// A [`Wire`] that records what goes out: `send_each` call `i` takes `take[i]` datagrams
    /// (`None`: the socket is full; beyond the list, all it is given); GSO sends get `gso[j]`
    /// (`Ok`, or the error; beyond the list, `Ok`).
    #[derive(Default)]
    struct Recorder {
        take: Vec<Option<usize>>,
        each_calls: usize,
        gso: Vec<Answer>,
        gso_calls: usize,
        /// Each datagram that went out: destination and first byte.
        wire: Vec<(SocketAddr, u8)>,
        /// Each GSO send that went out: destination, datagrams, segment size.
        gso_sends: Vec<(SocketAddr, usize, usize)>,
    }

    impl Wire for Recorder {
        fn send_each(&mut self, batch: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> {
            let step = self.take.get(self.each_calls).copied();
            self.each_calls += 1;
            let n = match step {
                Some(None) => return Err(std::io::ErrorKind::WouldBlock.into()),
                Some(Some(n)) => n.min(batch.len()),
                None => batch.len().min(SEND_BATCH),
            };
            self.wire
                .extend(batch[..n].iter().map(|(to, d)| (*to, d[0])));
            Ok(n)
        }

        fn send_segments(
            &mut self,
            to: SocketAddr,
            segments: &[(SocketAddr, Vec<u8>)],
            segment: usize,
        ) -> std::io::Result<()> {
            let answer = self.gso.get(self.gso_calls).copied().unwrap_or(Answer::Ok);
            self.gso_calls += 1;
            match answer {
                Answer::Ok => {}
                Answer::Full => return Err(std::io::ErrorKind::WouldBlock.into()),
                Answer::Errno(code) => return Err(std::io::Error::from_raw_os_error(code)),
            }
            assert!(segments.iter().all(|(t, _)| *t == to));
            assert!(segments.len() <= GSO_MAX_SEGMENTS);
            let (last, rest) = segments.split_last().unwrap();
            assert!(rest.iter().all(|(_, d)| d.len() == segment));
            assert!(last.1.len() <= segment);
            self.wire.extend(segments.iter().map(|(to, d)| (*to, d[0])));
            self.gso_sends.push((to, segments.len(), segment));
            Ok(())
        }
    }

    #[test]
    fn a_full_socket_keeps_the_rest_in_order_for_the_next_flush() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut outbox = Outbox::default();
        for i in 0..10u8 {
            assert!(outbox.push(to, vec![i; 10]));
        }
        let mut sent = 0;
        // The kernel cuts a batch short, then the next call finds the buffer full.
        let mut wire = Recorder {
            take: vec![Some(3), Some(2), None],
            ..Recorder::default()
        };
        outbox.flush_with(&mut wire, |_| sent += 1);
        let firsts = |w: &Recorder| w.wire.iter().map(|(_, b)| *b).collect::<Vec<u8>>();
        assert_eq!(firsts(&wire), [0, 1, 2, 3, 4]);
        assert_eq!(sent, 5);
        assert!(outbox.blocked());
        assert_eq!(outbox.len(), 5);
        // Held while blocked, after what was already waiting.
        assert!(outbox.push(to, vec![10; 10]));
        wire.take.push(Some(64));
        outbox.flush_with(&mut wire, |_| sent += 1);
        assert_eq!(firsts(&wire), (0..11).collect::<Vec<u8>>());
        assert_eq!(sent, 11);
        assert!(!outbox.blocked());
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn a_refused_datagram_is_dropped_and_the_rest_go_on() {
        /// Refuses the first call (EHOSTUNREACH-like: the front datagram fails alone).
        struct RefuseFirst(usize, Vec<u8>);
        impl Wire for RefuseFirst {
            fn send_each(&mut self, batch: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> {
                self.0 += 1;
                if self.0 == 1 {
                    return Err(std::io::ErrorKind::PermissionDenied.into());
                }
                self.1.extend(batch.iter().map(|(_, d)| d[0]));
                Ok(batch.len())
            }
            fn send_segments(
                &mut self,
                _: SocketAddr,
                _: &[(SocketAddr, Vec<u8>)],
                _: usize,
            ) -> std::io::Result<()> {
                unreachable!("no offload asked for")
            }
        }
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut outbox = Outbox::default();
        for i in 0..4u8 {
            outbox.push(to, vec![i; 10]);
        }
        let mut wire = RefuseFirst(0, Vec::new());
        outbox.flush_with(&mut wire, |_| {});
        assert_eq!(wire.1, [1, 2, 3]);
        assert_eq!(outbox.len(), 0);
        assert!(!outbox.blocked());
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A plan as datagram indices in send order and (count, segment) per send.
    type Plan = (Vec<usize>, Vec<(usize, usize)>);

    /// [`plan_sends`] of (destination port, length) pairs.
    fn plan(datagrams: &[(u16, usize)]) -> Option<Plan> {
        let mut order = Vec::new();
        let mut sends = Vec::new();
        let grouped = plan_sends(
            &mut Planner::default(),
            datagrams.iter().map(|&(p, len)| (addr(p), len)),
            &FastSet::default(),
            &mut order,
            &mut sends,
        );
        if !grouped {
            assert!(order.is_empty() && sends.is_empty());
            return None;
        }
        Some((order, sends.iter().map(|s| (s.count, s.segment)).collect()))
    }

    #[test]
    fn a_destinations_equal_sized_datagrams_go_as_one_send_and_a_shorter_one_ends_it() {
        // A frame's packets for two receivers, packet by packet (as the conference sends a
        // composite frame): each receiver's three go as one send, the shorter last included;
        // A's next packet starts a send of its own.
        let (order, sends) = plan(&[
            (1, 1000),
            (2, 1000),
            (1, 1000),
            (2, 1000),
            (1, 400),
            (2, 1000),
            (1, 1000),
        ])
        .unwrap();
        assert_eq!(order, [0, 2, 4, 1, 3, 5, 6]);
        assert_eq!(sends, [(3, 1000), (3, 1000), (1, 1000)]);
        // A longer datagram cannot be a segment of a shorter send: it starts one.
        let (order, sends) = plan(&[(1, 500), (1, 1000), (1, 1000), (1, 500), (1, 500)]).unwrap();
        assert_eq!(order, [0, 1, 2, 3, 4]);
        assert_eq!(sends, [(1, 500), (3, 1000), (1, 500)]);
        // Nothing to group: every destination once, or sizes that never repeat in a row.
        assert_eq!(plan(&[(1, 1000), (2, 1000), (3, 1000)]), None);
        assert_eq!(plan(&[(1, 100), (1, 200), (1, 300)]), None);
        assert_eq!(plan(&[]), None);
    }

    #[test]
    fn a_destination_that_refused_offload_gets_none() {
        let mut no_gso = FastSet::default();
        no_gso.insert(addr(2));
        let mut order = Vec::new();
        let mut sends = Vec::new();
        let frame = [(1, 1000), (2, 1000), (1, 1000), (2, 1000)];
        assert!(plan_sends(
            &mut Planner::default(),
            frame.iter().map(|&(p, len)| (addr(p), len)),
            &no_gso,
            &mut order,
            &mut sends,
        ));
        assert_eq!(order, [0, 2, 1, 3]);
        let sends: Vec<(usize, usize)> = sends.iter().map(|s| (s.count, s.segment)).collect();
        assert_eq!(sends, [(2, 1000), (1, 1000), (1, 1000)]);
    }

    #[test]
    fn a_turn_holds_more_before_writing_with_offload() {
        let fill = |outbox: &mut Outbox, n: usize| {
            for _ in 0..n {
                outbox.push(addr(1), vec![0; 10]);
            }
        };
        let mut plain = Outbox::new(false);
        fill(&mut plain, SEND_BATCH - 1);
        assert!(!plain.full());
        fill(&mut plain, 1);
        assert!(plain.full());
        let mut gso = Outbox::new(true);
        fill(&mut gso, SEND_BATCH);
        assert_eq!(gso.full(), !cfg!(target_os = "linux"));
        fill(&mut gso, 3 * SEND_BATCH);
        assert!(gso.full());
    }

    #[test]
    fn sends_keep_to_the_kernels_limits() {
        // At most 64 segments.
        let (_, sends) = plan(&[(1, 100); 70]).unwrap();
        assert_eq!(sends, [(64, 100), (6, 100)]);
        // At most 65,000 bytes: 46 × 1,400 = 64,400.
        let (_, sends) = plan(&[(1, 1400); 50]).unwrap();
        assert_eq!(sends, [(46, 1400), (4, 1400)]);
        // A datagram too large for a segment goes alone, as an empty one does.
        assert_eq!(plan(&[(1, GSO_MAX_SEGMENT + 1); 3]), None);
        assert_eq!(plan(&[(1, 0); 3]), None);
        let (_, sends) = plan(&[(1, GSO_MAX_SEGMENT); 3]).unwrap();
        assert_eq!(sends, [(3, GSO_MAX_SEGMENT)]);
    }

    #[test]
    fn every_destination_keeps_its_order_in_any_mix() {
        // A pseudo-random mix of destinations and sizes (xorshift): whatever the grouping,
        // the plan is a permutation, each destination's datagrams keep their order, and each
        // send is one destination's within the kernel's rules.
        let mut x = 0x2545_f491_u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..200 {
            let n = (next() % 300) as usize;
            let datagrams: Vec<(u16, usize)> = (0..n)
                .map(|_| {
                    let port = 1 + (next() % 5) as u16;
                    let len = [1000, 1000, 1000, 300, 1200, 1500][(next() % 6) as usize];
                    (port, len)
                })
                .collect();
            let Some((order, sends)) = plan(&datagrams) else {
                continue;
            };
            let mut seen = order.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
            for port in 1..=5 {
                let mine: Vec<usize> = order
                    .iter()
                    .copied()
                    .filter(|&i| datagrams[i].0 == port)
                    .collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
            }
            let mut at = 0;
            let mut firsts = Vec::new();
            for &(count, segment) in &sends {
                let members = &order[at..at + count];
                at += count;
                firsts.push(members[0]);
                let port = datagrams[members[0]].0;
                assert!(members.iter().all(|&i| datagrams[i].0 == port));
                assert!(count <= GSO_MAX_SEGMENTS);
                if count > 1 {
                    let (last, rest) = members.split_last().unwrap();
                    assert!(rest.iter().all(|&i| datagrams[i].1 == segment));
                    assert!(datagrams[*last].1 <= segment);
                    assert!(segment <= GSO_MAX_SEGMENT);
                    let bytes: usize = members.iter().map(|&i| datagrams[i].1).sum();
                    assert!(bytes <= GSO_MAX_BYTES);
                }
            }
            assert_eq!(at, n);
            assert!(firsts.windows(2).all(|w| w[0] < w[1]));
        }
    }

    /// Three receivers' copies of a four-packet frame (the last shorter), packet by packet.
    fn frame_for_three(outbox: &mut Outbox, ports: [u16; 3]) {
        for packet in 0..4u8 {
            for (r, port) in ports.iter().enumerate() {
                let len = if packet == 3 { 300 } else { 1000 };
                assert!(outbox.push(addr(*port), vec![16 * r as u8 + packet; len]));
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_frame_goes_as_one_gso_send_per_receiver_and_refusals_fall_back() {
        let ports = [1, 2, 3];
        let by_receiver = |wire: &[(SocketAddr, u8)], port: u16| -> Vec<u8> {
            wire.iter()
                .filter(|(to, _)| *to == addr(port))
                .map(|(_, b)| *b)
                .collect()
        };
        let expected = |r: u8| (0..4).map(|p| 16 * r + p).collect::<Vec<u8>>();

        // Offload works: one send per receiver.
        let mut outbox = Outbox::new(true);
        frame_for_three(&mut outbox, ports);
        let mut wire = Recorder::default();
        let mut sent = Vec::new();
        outbox.flush_with(&mut wire, |n| sent.push(n));
        assert_eq!(wire.gso_sends, ports.map(|p| (addr(p), 4, 1000)).to_vec());
        assert_eq!(wire.each_calls, 0);
        assert_eq!(sent.len(), 12);
        assert_eq!(outbox.len(), 0);
        assert!(outbox.gso());

        // The socket full at the second receiver's send: it and the rest wait, in order.
        frame_for_three(&mut outbox, ports);
        let mut wire = Recorder {
            gso: vec![Answer::Ok, Answer::Full],
            ..Recorder::default()
        };
        outbox.flush_with(&mut wire, |_| {});
        assert!(outbox.blocked());
        assert_eq!(outbox.len(), 8);
        outbox.flush_with(&mut wire, |_| {});
        assert_eq!(outbox.len(), 0);
        for (r, port) in ports.iter().enumerate() {
            assert_eq!(by_receiver(&wire.wire, *port), expected(r as u8));
        }
        assert_eq!(wire.gso_sends.len(), 3);

        // Another refusal (here: no route to the first receiver): that send is tried again
        // one datagram at a time, where the kernel refuses each (dropped alone); the others
        // go on, offload stays on.
        frame_for_three(&mut outbox, ports);
        let mut wire = Recorder {
            gso: vec![Answer::Errno(nix::libc::EHOSTUNREACH)],
            take: vec![Some(1), Some(1)],
            ..Recorder::default()
        };
        let mut sent = 0;
        outbox.flush_with(&mut wire, |_| sent += 1);
        assert_eq!(by_receiver(&wire.wire, 1), expected(0));
        assert_eq!(by_receiver(&wire.wire, 2), expected(1));
        assert_eq!(by_receiver(&wire.wire, 3), expected(2));
        assert_eq!(wire.gso_sends.len(), 2);
        assert_eq!(sent, 12);
        assert!(outbox.gso());
        frame_for_three(&mut outbox, ports);
        let mut wire = Recorder {
            gso: vec![Answer::Errno(nix::libc::EHOSTUNREACH)],
            take: vec![Some(0), Some(0), Some(0), Some(0)],
            ..Recorder::default()
        };
        outbox.flush_with(&mut wire, |_| {});
        assert!(by_receiver(&wire.wire, 1).is_empty());
        assert_eq!(by_receiver(&wire.wire, 2), expected(1));
        assert_eq!(by_receiver(&wire.wire, 3), expected(2));
        assert_eq!(outbox.len(), 0);
        assert!(outbox.gso());

        // The kernel cannot (EIO: no offload on the device): every datagram goes on its own,
        // in order, and offload stays off for good.
        for errno in [nix::libc::EIO, nix::libc::EINVAL] {
            let mut outbox = Outbox::new(true);
            frame_for_three(&mut outbox, ports);
            let mut wire = Recorder {
                gso: vec![Answer::Errno(errno)],
                ..Recorder::default()
            };
            let mut sent = 0;
            outbox.flush_with(&mut wire, |_| sent += 1);
            assert_eq!(sent, 12);
            assert!(wire.gso_sends.is_empty());
            assert_eq!(wire.gso_calls, 1);
            for (r, port) in ports.iter().enumerate() {
                assert_eq!(by_receiver(&wire.wire, *port), expected(r as u8));
            }
            assert!(!outbox.gso());
            frame_for_three(&mut outbox, ports);
            outbox.flush_with(&mut wire, |_| sent += 1);
            assert_eq!(sent, 24);
            assert_eq!(wire.gso_calls, 1);
        }

        // Offload that worked once: a refusal later is that route's (a path MTU below the
        // segment). Its datagrams go again one at a time, and that destination's from then on;
        // the others keep offload.
        let mut outbox = Outbox::new(true);
        frame_for_three(&mut outbox, ports);
        let mut wire = Recorder {
            gso: vec![Answer::Ok, Answer::Errno(nix::libc::EINVAL)],
            ..Recorder::default()
        };
        let mut sent = 0;
        outbox.flush_with(&mut wire, |_| sent += 1);
        assert_eq!(sent, 12);
        for (r, port) in ports.iter().enumerate() {
            assert_eq!(by_receiver(&wire.wire, *port), expected(r as u8));
        }
        assert_eq!(wire.gso_sends, [(addr(1), 4, 1000), (addr(3), 4, 1000)]);
        assert!(outbox.gso());
        assert_eq!(
            outbox.take_gso_counts(),
            GsoCounts {
                sends: 2,
                datagrams: 8,
                fallbacks: 1
            }
        );
        frame_for_three(&mut outbox, ports);
        let calls = wire.gso_calls;
        outbox.flush_with(&mut wire, |_| sent += 1);
        assert_eq!(sent, 24);
        assert_eq!(
            wire.gso_calls,
            calls + 2,
            "none tried to the second receiver"
        );
        assert_eq!(
            by_receiver(&wire.wire, 2),
            [expected(1), expected(1)].concat()
        );
        assert_eq!(outbox.take_gso_counts().fallbacks, 0);

        // Without offload asked for, the order as produced, in system calls' worths.
        let mut outbox = Outbox::new(false);
        frame_for_three(&mut outbox, ports);
        let mut wire = Recorder::default();
        outbox.flush_with(&mut wire, |_| {});
        assert_eq!(wire.gso_calls, 0);
        assert_eq!(wire.each_calls, 1);
        let firsts: Vec<u8> = wire.wire.iter().map(|(_, b)| *b).collect();
        assert_eq!(firsts, [0, 16, 32, 1, 17, 33, 2, 18, 34, 3, 19, 35]);
    }

    /// A kernel that answers at random (xorshift): partial batches, a full socket, refusals
    /// of single datagrams and of GSO sends (impossible on the route, or another reason).
    struct Chaos {
        x: u32,
        /// Every datagram that went out, by id, with its destination.
        out: Vec<(SocketAddr, u16)>,
        /// Every datagram the kernel refused alone (the front of a batch it refused).
        refused: Vec<u16>,
    }

    impl Chaos {
        fn next(&mut self) -> u32 {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 17;
            self.x ^= self.x << 5;
            self.x
        }
    }

    fn id(d: &[u8]) -> u16 {
        u16::from_be_bytes([d[0], d[1]])
    }

    impl Wire for Chaos {
        fn send_each(&mut self, batch: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> {
            match self.next() % 6 {
                0 => Err(std::io::ErrorKind::WouldBlock.into()),
                1 => {
                    self.refused.push(id(&batch[0].1));
                    Err(std::io::Error::from_raw_os_error(nix::libc::EHOSTUNREACH))
                }
                _ => {
                    let n = 1 + self.next() as usize % batch.len().min(SEND_BATCH);
                    self.out
                        .extend(batch[..n].iter().map(|(to, d)| (*to, id(d))));
                    Ok(n)
                }
            }
        }

        fn send_segments(
            &mut self,
            to: SocketAddr,
            segments: &[(SocketAddr, Vec<u8>)],
            segment: usize,
        ) -> std::io::Result<()> {
            assert!(segments.iter().all(|(t, _)| *t == to));
            let (last, rest) = segments.split_last().unwrap();
            assert!(rest.iter().all(|(_, d)| d.len() == segment) && last.1.len() <= segment);
            match self.next() % 8 {
                0 => Err(std::io::ErrorKind::WouldBlock.into()),
                1 => Err(std::io::Error::from_raw_os_error(nix::libc::EINVAL)),
                2 => Err(std::io::Error::from_raw_os_error(nix::libc::ENOBUFS)),
                _ => {
                    self.out.extend(segments.iter().map(|(to, d)| (*to, id(d))));
                    Ok(())
                }
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn whatever_the_kernel_answers_nothing_is_sent_twice_lost_or_reordered() {
        for seed in 1..=40u32 {
            let mut wire = Chaos {
                x: 0x9e37_79b9 ^ seed.wrapping_mul(0x85eb_ca6b),
                out: Vec::new(),
                refused: Vec::new(),
            };
            let mut outbox = Outbox::new(true);
            let mut pushed = Vec::new();
            let mut next_id = 0u16;
            let mut sent = 0usize;
            for _ in 0..60 {
                // A turn's datagrams: frames of equal packets with a shorter last, and RTCP.
                for _ in 0..(wire.next() % 40) {
                    let to = addr(1 + (wire.next() % 4) as u16);
                    let len = [1000, 1000, 1000, 400, 90][(wire.next() % 5) as usize];
                    let mut d = vec![0; len];
                    d[..2].copy_from_slice(&next_id.to_be_bytes());
                    if outbox.push(to, d) {
                        pushed.push((to, next_id));
                    }
                    next_id += 1;
                }
                outbox.flush_with(&mut wire, |_| sent += 1);
            }
            // Then a kernel that takes everything.
            let mut calm = Recorder::default();
            outbox.flush_with(&mut calm, |_| sent += 1);
            assert_eq!(outbox.len(), 0);
            let calm_ids: Vec<u16> = {
                // The calm wire kept only first bytes: replay what it sent from `pushed`.
                let seen: std::collections::HashSet<u16> = wire
                    .out
                    .iter()
                    .map(|(_, i)| *i)
                    .chain(wire.refused.iter().copied())
                    .collect();
                pushed
                    .iter()
                    .map(|(_, i)| *i)
                    .filter(|i| !seen.contains(i))
                    .collect()
            };
            assert_eq!(calm.wire.len(), calm_ids.len(), "seed {seed}");
            // Each datagram out at most once, and out or refused, never both, never neither.
            let mut out_ids: Vec<u16> = wire.out.iter().map(|(_, i)| *i).collect();
            out_ids.sort_unstable();
            let before = out_ids.len();
            out_ids.dedup();
            assert_eq!(
                out_ids.len(),
                before,
                "seed {seed}: a datagram went out twice"
            );
            assert!(
                wire.refused
                    .iter()
                    .all(|r| out_ids.binary_search(r).is_err()),
                "seed {seed}"
            );
            assert_eq!(
                wire.out.len() + wire.refused.len() + calm_ids.len(),
                pushed.len(),
                "seed {seed}"
            );
            assert_eq!(sent, wire.out.len() + calm.wire.len(), "seed {seed}");
            // Each destination's datagrams left in the order they were pushed.
            for port in 1..=4 {
                let mine: Vec<u16> = wire
                    .out
                    .iter()
                    .filter(|(to, _)| *to == addr(port))
                    .map(|(_, i)| *i)
                    .collect();
                assert!(
                    mine.windows(2).all(|w| w[0] < w[1]),
                    "seed {seed}: {mine:?}"
                );
            }
        }
    }

    /// Counts the GSO sends that went out through a real socket.
    struct Counting<'a>(SocketWire<'a>, usize);

    impl Wire for Counting<'_> {
        fn send_each(&mut self, batch: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> {
            self.0.send_each(batch)
        }
        fn send_segments(
            &mut self,
            to: SocketAddr,
            segments: &[(SocketAddr, Vec<u8>)],
            segment: usize,
        ) -> std::io::Result<()> {
            self.0.send_segments(to, segments, segment)?;
            self.1 += 1;
            Ok(())
        }
    }

    #[tokio::test]
    async fn gso_sends_arrive_as_the_datagrams_they_carry() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let receivers = [
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        ];
        let ports = receivers.each_ref().map(|r| r.local_addr().unwrap().port());
        // Where the kernel has no UDP_SEGMENT (before 4.18, some sandboxes) offload stays off
        // and the datagrams go one by one.
        let gso = probe_gso(&a);
        let mut outbox = Outbox::new(gso);
        frame_for_three(&mut outbox, ports);
        let mut wire = Counting(SocketWire(&a), 0);
        let mut sent = 0;
        loop {
            a.writable().await.unwrap();
            outbox.flush_with(&mut wire, |_| sent += 1);
            if outbox.len() == 0 {
                break;
            }
        }
        assert_eq!(sent, 12);
        // Loopback segments in software: one send per receiver.
        if gso {
            assert!(outbox.gso());
            assert_eq!(wire.1, 3);
        }
        let from = a.local_addr().unwrap();
        for (r, rx) in receivers.iter().enumerate() {
            let got = read_all(rx, 4).await;
            let expected: Vec<_> = (0..4u8)
                .map(|p| {
                    let len = if p == 3 { 300 } else { 1000 };
                    (vec![16 * r as u8 + p; len], Some(from))
                })
                .collect();
            assert_eq!(got, expected);
        }
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
