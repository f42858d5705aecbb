//! `udpfloor`: the kernel's share of echoing a packet on this machine, measured with the least
//! possible user-space work, as the floor under `bench/media`'s echo figures.
//!
//! `udpfloor reflect` sends every datagram it receives straight back (blocking `recv_from` then
//! `send_to` on one socket: two system calls a packet, no readiness polling, no crypto, no
//! copy); with `--batch N` it reads up to N datagrams per `recvmmsg` (returning once one has
//! arrived) and sends them back with one `sendmmsg`, as the server's SIP transport batches. `udpfloor blast` sends the echo bench's load shape to it — `--streams` × `--kbps` of
//! `--bytes`-long datagrams, paced in 1 ms bursts like the str0m load client — counts what
//! comes back and reads the reflector's user and system CPU from `/proc/<pid>/stat` over the
//! measured window. Whatever a media server does per packet on top of this (SRTP, RTP/RTCP,
//! NACK/RTX, its event loop) is its own cost; the floor is what no server on this kernel and
//! this loopback can go below.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "The kernel floor of echoing UDP packets (bench/media/floor.sh)")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Echo every datagram back to its sender, until killed.
    Reflect {
        #[arg(long, default_value = "127.0.0.1:39999")]
        bind: SocketAddr,
        /// Datagrams per `recvmmsg`/`sendmmsg`; 1: plain `recv_from`/`send_to`.
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Send the echo bench's load to a reflector and report its CPU per echoed packet.
    Blast {
        #[arg(long, default_value = "127.0.0.1:39999")]
        to: SocketAddr,
        /// Streams (echo legs) to imitate.
        #[arg(long, default_value_t = 50)]
        streams: u64,
        /// Bitrate of each stream, kbit/s.
        #[arg(long, default_value_t = 1000)]
        kbps: u64,
        /// Payload bytes a stream's packet carries (the load client's RTP payload); the rate in
        /// packets/s follows from it, as in medialoader.
        #[arg(long, default_value_t = 1000)]
        payload: u64,
        /// Bytes in each datagram: the payload plus RTP header and SRTP tag, as on the wire.
        #[arg(long, default_value_t = 1044)]
        bytes: usize,
        /// Measured seconds, after one second of warm-up.
        #[arg(long, default_value_t = 15)]
        secs: u64,
        /// The reflector's process id.
        #[arg(long)]
        reflector_pid: u32,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().mode {
        Mode::Reflect { bind, batch } if batch > 1 => reflect_batched(bind, batch),
        Mode::Reflect { bind, .. } => reflect(bind),
        Mode::Blast {
            to,
            streams,
            kbps,
            payload,
            bytes,
            secs,
            reflector_pid,
        } => {
            if payload == 0 || streams == 0 || kbps == 0 {
                bail!("--streams, --kbps and --payload must be positive");
            }
            let packets_per_second = streams * kbps * 1000 / 8 / payload;
            blast(to, packets_per_second, bytes, secs, reflector_pid)
        }
    }
}

/// Binds a socket with room for ~100 ms of the heaviest load in each direction: loss in the
/// floor must mean the reflector could not keep up, not that a default-sized buffer overflowed
/// while a thread waited for its core.
fn bind_roomy(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    const ROOM: usize = 16 << 20;
    let socket = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
    // The forcing variants pass net.core.rmem_max/wmem_max (root, as the bench runs); the
    // plain ones are the fallback, capped by those limits.
    if setsockopt(&socket, sockopt::RcvBufForce, &ROOM).is_err() {
        let _ = setsockopt(&socket, sockopt::RcvBuf, &ROOM);
    }
    if setsockopt(&socket, sockopt::SndBufForce, &ROOM).is_err() {
        let _ = setsockopt(&socket, sockopt::SndBuf, &ROOM);
    }
    Ok(socket)
}

fn reflect(bind: SocketAddr) -> anyhow::Result<()> {
    let socket = bind_roomy(bind)?;
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, from) = socket.recv_from(&mut buf)?;
        // A full send buffer loses the packet, as it would for a server; the blaster counts it.
        let _ = socket.send_to(&buf[..len], from);
    }
}

fn reflect_batched(bind: SocketAddr, batch: usize) -> anyhow::Result<()> {
    use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
    use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
    use std::io::{IoSlice, IoSliceMut};
    use std::os::fd::AsRawFd;

    const SLOT: usize = 2048;
    let socket = bind_roomy(bind)?;
    let mut buf = vec![0u8; SLOT * batch];
    let mut received: Vec<(usize, SocketAddrAny)> = Vec::with_capacity(batch);
    loop {
        received.clear();
        {
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch, None);
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = buf
                .chunks_mut(SLOT)
                .map(|slot| [IoSliceMut::new(slot)])
                .collect();
            let messages = recvmmsg(
                socket.as_raw_fd(),
                &mut headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            )?;
            for message in messages {
                let from = message
                    .address
                    .and_then(|a| {
                        a.as_sockaddr_in()
                            .map(|v4| SocketAddr::V4((*v4).into()))
                            .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
                    })
                    .context("a datagram from a non-IP sender")?;
                received.push((message.bytes, SocketAddrAny::from(from)));
            }
        }
        let iovs: Vec<[IoSlice<'_>; 1]> = received
            .iter()
            .zip(buf.chunks(SLOT))
            .map(|((len, _), slot)| [IoSlice::new(&slot[..*len])])
            .collect();
        let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = received
            .iter()
            .map(|_| SendAncillaryBuffer::default())
            .collect();
        let mut messages: Vec<MMsgHdr<'_>> = received
            .iter()
            .zip(&iovs)
            .zip(controls.iter_mut())
            .map(|(((_, to), iov), control)| MMsgHdr::new_with_addr(to, iov, control))
            .collect();
        // What does not fit in the send buffer is lost, as for a server; the blaster counts it.
        let _ = sendmmsg(&socket, &mut messages, SendFlags::empty());
    }
}

/// (user, system) CPU seconds of a process, from /proc/<pid>/stat.
fn cpu_secs(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()? / 100.0)
    };
    // utime and stime, fields 14 and 15 of stat(5), are 11 and 12 after the command name;
    // CLK_TCK is 100 on Linux.
    Ok((field(11)?, field(12)?))
}

fn blast(
    to: SocketAddr,
    packets_per_second: u64,
    bytes: usize,
    secs: u64,
    reflector_pid: u32,
) -> anyhow::Result<()> {
    let socket = bind_roomy("127.0.0.1:0".parse()?)?;
    socket.set_nonblocking(true)?;
    let packet = vec![0x80u8; bytes];
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    let warm_up = Duration::from_secs(1);
    let end = warm_up + Duration::from_secs(secs);
    let (mut sent, mut send_failures, mut received) = (0u64, 0u64, 0u64);
    let mut window: Option<(u64, u64, (f64, f64))> = None;
    loop {
        let elapsed = start.elapsed();
        if window.is_none() && elapsed >= warm_up {
            window = Some((sent, received, cpu_secs(reflector_pid)?));
        }
        if elapsed >= end {
            break;
        }
        let due =
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX) * packets_per_second / 1_000_000;
        while sent < due {
            if socket.send_to(&packet, to).is_err() {
                send_failures += 1;
            }
            sent += 1;
        }
        while socket.recv_from(&mut buf).is_ok() {
            received += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let cpu_after = cpu_secs(reflector_pid)?;
    // Let the last burst come back before counting.
    std::thread::sleep(Duration::from_millis(50));
    while socket.recv_from(&mut buf).is_ok() {
        received += 1;
    }
    let (sent_before, received_before, cpu_before) = window.context("no measured window")?;
    let sent_window = sent - sent_before;
    let echoed = received - received_before;
    let user = cpu_after.0 - cpu_before.0;
    let system = cpu_after.1 - cpu_before.1;
    let per_packet = |s: f64| s * 1e6 / echoed.max(1) as f64;
    // Packets in flight at the window's edges can make the count exceed what was sent in it.
    let loss = (100.0 * (1.0 - echoed as f64 / sent_window.max(1) as f64)).max(0.0);
    println!(
        "floor packets_per_s={packets_per_second} sent={sent_window} echoed={echoed} loss={loss:.3}% send_failures={send_failures}"
    );
    println!(
        "floor reflector_cpu={:.2}s (user {user:.2}s, sys {system:.2}s) us_per_echoed_packet={:.1} (user {:.1}, sys {:.1})",
        user + system,
        per_packet(user + system),
        per_packet(user),
        per_packet(system)
    );
    Ok(())
}
