//! SIP over UDP: one task per socket reads datagrams; sends go straight out of the socket.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tracing::{debug, trace};

use super::shared::{Shared, TaskCtx};
use super::{Inbound, SendError, Transport, TransportEvent};

/// Reads datagrams until shutdown. Each datagram is one message (RFC 3261 §18.3 framing does
/// not apply); datagrams over the size limit, and whitespace-only ones (keep-alives some
/// clients send), are dropped.
pub(crate) async fn run(socket: Arc<UdpSocket>, mut ctx: TaskCtx) {
    let max = ctx.shared.config.max_message_size;
    let Ok(local) = socket.local_addr() else {
        return;
    };
    // One byte more than allowed, so an oversized datagram shows up as `n > max` instead of
    // being silently truncated to a valid-looking size.
    let mut buf = vec![0u8; max + 1];
    // One shutdown future for the life of the socket, not one per datagram.
    let mut shutdown = ctx.shutdown.clone();
    let stop = TaskCtx::shutdown_signal(&mut shutdown);
    tokio::pin!(stop);
    loop {
        let received = tokio::select! {
            () = &mut stop => break,
            r = socket.recv_from(&mut buf) => r,
        };
        let (n, remote) = match received {
            Ok(r) => r,
            Err(e) => {
                // Per-datagram errors (e.g. ICMP reports on some systems); the socket lives on.
                debug!(%local, error = %e, "UDP receive error");
                continue;
            }
        };
        if n > max {
            debug!(%local, %remote, limit = max, "oversized UDP datagram answered 513");
            if let Some(reply) = super::too_large_reply(&buf[..max], remote) {
                let _ = socket.try_send_to(&reply, remote);
            }
            continue;
        }
        let data = &buf[..n];
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            trace!(%remote, "ignoring keep-alive datagram");
            continue;
        }
        let event = TransportEvent::Message(Inbound {
            transport: Transport::Udp,
            flow: None,
            local,
            remote,
            data: Bytes::copy_from_slice(data),
            received_at: tokio::time::Instant::now().into_std(),
        });
        if !ctx.deliver(event).await {
            break;
        }
    }
    debug!(%local, "UDP listener stopped");
}

/// Sends one datagram from a listening socket of the destination's address family, without
/// waiting: a full socket buffer is `WouldBlock` (the send handle is non-blocking).
pub(crate) fn send(shared: &Shared, addr: SocketAddr, data: &[u8]) -> Result<(), SendError> {
    if shared.is_shut_down() {
        return Err(SendError::ShutDown);
    }
    let (local, socket) = shared
        .udp
        .iter()
        .find(|(l, _)| l.is_ipv4() == addr.is_ipv4())
        .or_else(|| shared.udp.first())
        .ok_or(SendError::NoSocket(Transport::Udp))?;
    // A dual-stack IPv6 socket reaches IPv4 peers through mapped addresses.
    let addr = match (local, addr) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => addr,
    };
    match socket.send_to(data, addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(SendError::WouldBlock),
        Err(e) => Err(SendError::Io(e)),
    }
}
