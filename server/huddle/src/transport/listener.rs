//! Accept loops for the stream transports (TCP, TLS, WS, WSS): limits at accept, then one task
//! per connection that completes the handshakes, registers the flow and serves it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, warn};

use super::shared::{ConnSlot, TaskCtx};
use super::stream::{self, bounded, CloseReason};
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
    let max = ctx.shared.config.max_message_size;
    let handshake = match (transport, acceptor) {
        (Transport::Tcp, _) => {
            serve_stream(socket, transport, local, peer, slot, &mut ctx).await;
            return;
        }
        (Transport::Tls, Some(acceptor)) => {
            match bounded(&mut ctx, acceptor.accept(socket)).await {
                Ok(tls) => {
                    serve_stream(tls, transport, local, peer, slot, &mut ctx).await;
                    return;
                }
                Err(reason) => reason,
            }
        }
        (Transport::Ws, _) => match bounded(&mut ctx, ws::accept(socket, max)).await {
            Ok(websocket) => {
                serve_ws(websocket, transport, local, peer, slot, &mut ctx).await;
                return;
            }
            Err(reason) => reason,
        },
        (Transport::Wss, Some(acceptor)) => {
            let handshakes = async {
                let tls = acceptor.accept(socket).await?;
                ws::accept(tls, max).await.map_err(CloseReason::from)
            };
            match bounded(&mut ctx, handshakes).await {
                Ok(websocket) => {
                    serve_ws(websocket, transport, local, peer, slot, &mut ctx).await;
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

async fn serve_stream<S>(
    io: S,
    transport: Transport,
    local: SocketAddr,
    peer: SocketAddr,
    slot: ConnSlot,
    ctx: &mut TaskCtx,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let flow = ctx.shared.register_flow(transport, peer);
    let id = flow.id;
    debug!(flow = %id, %peer, %transport, "connection open");
    let reason = stream::serve(io, local, flow, ctx).await;
    debug!(flow = %id, %peer, %reason, "connection closed");
    // Limits are released before the core hears of the end.
    drop(slot);
    ctx.finish_flow(id).await;
}

async fn serve_ws<S>(
    websocket: WebSocketStream<S>,
    transport: Transport,
    local: SocketAddr,
    peer: SocketAddr,
    slot: ConnSlot,
    ctx: &mut TaskCtx,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let flow = ctx.shared.register_flow(transport, peer);
    let id = flow.id;
    debug!(flow = %id, %peer, %transport, "WebSocket open");
    let reason = ws::serve(websocket, local, flow, ctx).await;
    debug!(flow = %id, %peer, %reason, "WebSocket closed");
    drop(slot);
    ctx.finish_flow(id).await;
}
