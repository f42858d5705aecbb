//! Accept loops for the stream transports (TCP, TLS, WS, WSS): limits at accept, then one task
//! per connection that completes the handshakes, registers the flow and serves it.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::shared::{ConnSlot, FlowIo, TaskCtx};
use super::stream::{self, bounded, CloseReason, DirectIo};
use super::{ws, Transport};

/// Pause after a failed `accept` (e.g. out of file descriptors) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub(crate) async fn run(
    listener: TcpListener,
    transport: Transport,
    listen_addr: SocketAddr,
    mut ctx: TaskCtx,
) {
    let acceptor = ctx.shared.tls.server.clone().map(TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            () = TaskCtx::shutdown_signal(&mut ctx.shutdown) => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(%listen_addr, error = %e, "accept failed");
                tokio::select! {
                    () = TaskCtx::shutdown_signal(&mut ctx.shutdown) => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        // Refused connections are dropped (closed) at once, before any handshake work.
        let Some(slot) = ctx.shared.acquire_inbound_slot(peer.ip()) else {
            debug!(%peer, %transport, "connection refused: connection limit reached");
            continue;
        };
        tokio::spawn(connection(
            socket,
            peer,
            listen_addr,
            transport,
            acceptor.clone(),
            slot,
            ctx.clone(),
        ));
    }
    debug!(%listen_addr, %transport, "listener stopped");
}

async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    listen_addr: SocketAddr,
    transport: Transport,
    acceptor: Option<TlsAcceptor>,
    slot: ConnSlot,
    mut ctx: TaskCtx,
) {
    let _ = socket.set_nodelay(true);
    let local = socket.local_addr().unwrap_or(listen_addr);
    let handshake = match (transport, acceptor) {
        (Transport::Tcp, _) => {
            // Plain TCP: senders write to the socket themselves (`shared::Outlet`).
            let (read, write) = socket.into_split();
            let flow = ctx.shared.register_flow(transport, peer, Some(write));
            let io = DirectIo {
                read,
                outlet: Arc::clone(&flow.outlet),
            };
            serve_stream(io, flow, local, slot, &mut ctx).await;
            return;
        }
        (Transport::Tls, Some(acceptor)) => {
            match bounded(&mut ctx, acceptor.accept(socket)).await {
                Ok(tls) => {
                    let flow = ctx.shared.register_flow(transport, peer, None);
                    serve_stream(tls, flow, local, slot, &mut ctx).await;
                    return;
                }
                Err(reason) => reason,
            }
        }
        (Transport::Ws, _) => {
            let mut socket = socket;
            match bounded(&mut ctx, ws::accept(&mut socket)).await {
                Ok(tail) => {
                    // Plain WS: senders write whole frames to the socket themselves.
                    let (read, write) = socket.into_split();
                    let flow = ctx.shared.register_flow(transport, peer, Some(write));
                    let io = DirectIo {
                        read,
                        outlet: Arc::clone(&flow.outlet),
                    };
                    serve_ws(io, tail, flow, local, slot, &mut ctx).await;
                    return;
                }
                Err(reason) => reason,
            }
        }
        (Transport::Wss, Some(acceptor)) => {
            let handshakes = async {
                let mut tls = acceptor.accept(socket).await?;
                let tail = ws::accept(&mut tls).await?;
                Ok::<_, CloseReason>((tls, tail))
            };
            match bounded(&mut ctx, handshakes).await {
                Ok((tls, tail)) => {
                    // rustls's state is the connection task's: WSS sends always queue.
                    let flow = ctx.shared.register_flow(transport, peer, None);
                    serve_ws(tls, tail, flow, local, slot, &mut ctx).await;
                    return;
                }
                Err(reason) => reason,
            }
        }
        // `bind` refuses TLS listeners without a server config, and UDP has no listener here.
        (Transport::Tls | Transport::Wss | Transport::Udp, _) => return,
    };
    debug!(%peer, %transport, reason = %handshake, "handshake failed");
}

async fn serve_stream<S>(io: S, flow: FlowIo, local: SocketAddr, slot: ConnSlot, ctx: &mut TaskCtx)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (id, peer, transport) = (flow.id, flow.remote, flow.transport);
    debug!(flow = %id, %peer, %transport, "connection open");
    let reason = stream::serve(io, local, flow, ctx).await;
    debug!(flow = %id, %peer, %reason, "connection closed");
    // Limits are released before the core hears of the end.
    drop(slot);
    ctx.finish_flow(id).await;
}

async fn serve_ws<S>(
    io: S,
    tail: BytesMut,
    flow: FlowIo,
    local: SocketAddr,
    slot: ConnSlot,
    ctx: &mut TaskCtx,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (id, peer, transport) = (flow.id, flow.remote, flow.transport);
    debug!(flow = %id, %peer, %transport, "WebSocket open");
    let decoder = ws::Decoder::new(ctx.shared.config.max_message_size, tail);
    let reason = ws::serve(io, decoder, local, flow, ctx).await;
    debug!(flow = %id, %peer, %reason, "WebSocket closed");
    drop(slot);
    ctx.finish_flow(id).await;
}
