//! SIP over TCP and TLS: the per-connection driver (RFC 3261 §18.3 framing, RFC 5626 keep-alive
//! pongs, idle timeout, bounded writes) and outbound connections.
//!
//! One task per connection `select!`s over shutdown, a local close request, the idle deadline,
//! the socket and the flow's write queue. Reading and writing share the task: a write is bounded
//! by `write_timeout`, after which the peer is considered gone.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use huddle_sip::framing::{Frame, FramingError, StreamDecoder};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::shared::{would_block, ConnSlot, FlowIo, Outlet, Shared, Stop, TaskCtx};
use super::{FlowId, Inbound, SendError, Transport, TransportEvent};

/// Room made in a connection's receive buffer when it runs short (the buffer is reused, never
/// zeroed): one read adds at most about this much past what the decoder has already checked
/// against the size limit.
const READ_CHUNK: usize = 8 * 1024;

/// The least room a read is given before [`READ_CHUNK`] more is made. A received message is
/// split off the buffer and kept by the core, sharing the buffer's allocation: making room
/// before every read would then allocate a fresh chunk (and its shared header) per message.
/// Reading into what is left of the chunk lets several messages share one allocation, and a
/// kept message still pins at most one chunk, as before.
const MIN_READ_ROOM: usize = 2 * 1024;

/// Makes room in `buf` for the next read (see [`MIN_READ_ROOM`]).
pub(crate) fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_READ_ROOM {
        buf.reserve(READ_CHUNK);
    }
}

/// Bound on the polite part of closing (TLS close_notify, WebSocket close frame).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a connection ended; logged, not surfaced (the core only sees `FlowClosed`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CloseReason {
    #[error("peer closed the connection")]
    PeerClosed,
    #[error("shutting down")]
    Shutdown,
    #[error("closed by the core")]
    ClosedLocally,
    #[error("idle timeout")]
    IdleTimeout,
    #[error("no pong within the timeout")]
    PongTimeout,
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("write timed out")]
    WriteTimeout,
    #[error("event receiver dropped")]
    CoreGone,
    #[error("framing error: {0}")]
    Framing(#[from] FramingError),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("WebSocket error: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("WebSocket handshake refused: {0}")]
    Handshake(&'static str),
    #[error("WebSocket {0}")]
    WsProtocol(#[from] super::ws::WsError),
    #[error("peer closed the WebSocket (status {0:?})")]
    WsPeerClose(Option<u16>),
}

impl CloseReason {
    /// After `TaskCtx::deliver` failed: shutdown or a vanished core.
    pub(crate) fn undelivered(ctx: &TaskCtx) -> Self {
        if ctx.shared.is_shut_down() {
            Self::Shutdown
        } else {
            Self::CoreGone
        }
    }
}

/// Runs `fut` (a connect or handshake) within `handshake_timeout`, giving up at shutdown.
pub(crate) async fn bounded<T, E>(
    ctx: &mut TaskCtx,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, CloseReason>
where
    E: Into<CloseReason>,
{
    let limit = ctx.shared.config.handshake_timeout;
    tokio::select! {
        r = timeout(limit, fut) => match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(CloseReason::HandshakeTimeout),
        },
        () = TaskCtx::shutdown_signal(&mut ctx.shutdown) => Err(CloseReason::Shutdown),
    }
}

/// Drives one registered TCP or TLS flow until it ends, and says why. The caller reports the
/// end (`TaskCtx::finish_flow`).
pub(crate) async fn serve<S>(
    mut io: S,
    local: SocketAddr,
    flow: FlowIo,
    ctx: &mut TaskCtx,
) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let idle = ctx.shared.config.tcp_idle_timeout;
    let write_limit = ctx.shared.config.write_timeout;
    let mut decoder = StreamDecoder::new(ctx.shared.config.max_message_size);
    let FlowIo {
        id,
        transport,
        remote,
        mut queue,
        outlet,
        close,
    } = flow;
    let mut idle_deadline = Instant::now() + idle;
    // Traffic only moves `idle_deadline`; the timer is re-armed when it fires early, so a busy
    // connection costs one timer per idle period rather than one per message.
    let idle_timer = sleep_until(idle_deadline);
    tokio::pin!(idle_timer);
    // Shutdown and a local close are waited for by one future each for the whole connection,
    // not by new ones on every turn (as in the WebSocket driver). `notify_one` keeps a permit
    // for a waiter that is not registered yet, so nothing is missed before the first poll.
    let mut stop = Stop::new(&ctx.shutdown);
    let closed = close.notified();
    tokio::pin!(closed);
    let reason = loop {
        make_room(decoder.buffer_mut());
        tokio::select! {
            () = &mut stop => break CloseReason::Shutdown,
            () = &mut closed => break CloseReason::ClosedLocally,
            () = &mut idle_timer => {
                if Instant::now() >= idle_deadline {
                    break CloseReason::IdleTimeout;
                }
                idle_timer.as_mut().reset(idle_deadline);
            }
            read = io.read_buf(decoder.buffer_mut()) => {
                match read {
                    Ok(0) => break CloseReason::PeerClosed,
                    Ok(_) => {}
                    Err(e) => break e.into(),
                }
                idle_deadline = Instant::now() + idle;
                let source = Source { transport, id, local, remote };
                if let Err(reason) =
                    drain_frames(&mut decoder, &outlet, source, ctx).await
                {
                    break reason;
                }
            }
            Some(data) = queue.recv() => {
                if let Err(reason) = write(&mut io, &data, write_limit).await {
                    break reason;
                }
                outlet.written();
                idle_deadline = Instant::now() + idle;
            }
        }
    };
    outlet.shut();
    if !matches!(reason, CloseReason::Io(_) | CloseReason::WriteTimeout) {
        // A sender may have begun a message the queue holds the rest of: finish it, so the
        // peer does not read half a message before the FIN.
        let _ = timeout(CLOSE_TIMEOUT, async {
            while let Ok(data) = queue.try_recv() {
                io.write_all(&data).await?;
            }
            io.flush().await
        })
        .await;
        // FIN, and close_notify for TLS; the peer may be gone, so bounded.
        let _ = timeout(CLOSE_TIMEOUT, io.shutdown()).await;
    }
    reason
}

/// Where a stream connection's messages come from (TCP, TLS, WS and WSS alike).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source {
    pub(crate) transport: Transport,
    pub(crate) id: FlowId,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
}

impl Source {
    /// One whole message read from this connection, for the core.
    pub(crate) fn message(&self, data: Bytes) -> TransportEvent {
        self.message_with_text(data, None)
    }

    /// [`Source::message`] with the bytes as text when the reader checked them already (a
    /// WebSocket text message).
    pub(crate) fn message_with_text(&self, data: Bytes, text: Option<Arc<str>>) -> TransportEvent {
        TransportEvent::Message(Inbound {
            transport: self.transport,
            flow: Some(self.id),
            local: self.local,
            remote: self.remote,
            data,
            text,
        })
    }
}

/// Hands every complete message to the core and answers keep-alive pings.
async fn drain_frames(
    decoder: &mut StreamDecoder,
    outlet: &Outlet,
    source: Source,
    ctx: &mut TaskCtx,
) -> Result<(), CloseReason> {
    loop {
        let frame = match decoder.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                // A declared Content-Length over the limit means the header section is here:
                // answer 513 (RFC 3261 §21.5.14) before closing, as the peer can then tell why.
                if matches!(
                    e,
                    huddle_sip::framing::FramingError::TooLarge {
                        declared: Some(_),
                        ..
                    }
                ) {
                    if let Some(reply) = super::too_large_reply(decoder.buffer_mut(), source.remote)
                    {
                        // Through the outlet, behind anything a sender began; the close
                        // writes out what is queued.
                        let _ = outlet.send(reply);
                    }
                }
                return Err(e.into());
            }
        };
        match frame {
            Frame::Message(data) => {
                if !ctx.deliver(source.message(data)).await {
                    return Err(CloseReason::undelivered(ctx));
                }
            }
            // RFC 5626 §4.4.1: a CRLFCRLF ping is answered with one CRLF. It goes through the
            // outlet, behind anything a sender began; a full queue drops it (the peer is not
            // reading, and will time out on its own).
            Frame::KeepAlive { pong_needed: true } => {
                let _ = outlet.send(Bytes::from_static(b"\r\n"));
            }
            Frame::KeepAlive { pong_needed: false } => {}
        }
    }
    Ok(())
}

pub(crate) async fn write<S>(io: &mut S, data: &[u8], limit: Duration) -> Result<(), CloseReason>
where
    S: AsyncWrite + Unpin,
{
    let written = within(limit, async {
        io.write_all(data).await?;
        io.flush().await
    })
    .await;
    match written {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(e.into()),
        None => Err(CloseReason::WriteTimeout),
    }
}

/// A plain TCP connection whose flow's senders write to the socket themselves (see
/// `shared::Outlet`): the connection task reads its own half and writes what was queued
/// through the outlet's.
#[derive(Debug)]
pub(crate) struct DirectIo {
    pub(crate) read: OwnedReadHalf,
    pub(crate) outlet: Arc<Outlet>,
}

impl AsyncRead for DirectIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for DirectIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(socket) = self.outlet.direct_socket() else {
            return Poll::Ready(Err(io::Error::other("flow has no direct socket")));
        };
        loop {
            ready!(socket.poll_write_ready(cx))?;
            match socket.try_write(buf) {
                Err(e) if would_block(&e) => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = match self.outlet.direct_socket() {
            Some(socket) => socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write),
            None => Ok(()),
        };
        Poll::Ready(result)
    }
}

/// Runs `fut` for at most `limit`; `None` when it took longer. A write almost always completes
/// on its first poll (the socket has room), and then no timer is armed at all: a timer per
/// message was a timer-wheel insertion and removal on every send.
pub(crate) async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(output) => Some(output),
        Poll::Pending => timeout(limit, fut).await.ok(),
    }
}

/// `Destination::Address` for the stream transports: an open flow to that address if there is
/// one, else (TCP, TLS) a new outbound connection whose first queued message is `data`.
pub(crate) fn send_to_address(
    shared: &Arc<Shared>,
    transport: Transport,
    addr: SocketAddr,
    data: Bytes,
) -> Result<FlowId, SendError> {
    if shared.is_shut_down() {
        return Err(SendError::ShutDown);
    }
    if let Some(sent) = shared.enqueue_to_address(transport, addr, &data) {
        return sent;
    }
    let connector = match transport {
        Transport::Tcp => None,
        Transport::Tls => Some(TlsConnector::from(
            shared
                .tls
                .client
                .clone()
                .ok_or(SendError::TlsClientNotConfigured)?,
        )),
        Transport::Udp | Transport::Ws | Transport::Wss => {
            return Err(SendError::NoConnection { transport, addr })
        }
    };
    let ctx = shared.task_ctx().ok_or(SendError::ShutDown)?;
    let slot = shared.acquire_slot().ok_or(SendError::TooManyConnections)?;
    let (id, new_flow) = shared.register_outbound(transport, addr, data)?;
    if let Some(flow) = new_flow {
        shared.runtime.spawn(outbound(flow, connector, slot, ctx));
    }
    Ok(id)
}

/// Connects an outbound flow (TCP, then TLS if `connector`), then serves it like any other.
async fn outbound(flow: FlowIo, connector: Option<TlsConnector>, slot: ConnSlot, mut ctx: TaskCtx) {
    let id = flow.id;
    let addr = flow.remote;
    let connect = async {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr()?;
        Ok::<_, io::Error>((tcp, local))
    };
    let reason = match bounded(&mut ctx, connect).await {
        Err(reason) => reason,
        Ok((tcp, local)) => match connector {
            None => serve(tcp, local, flow, &mut ctx).await,
            Some(connector) => {
                // The destination is only an address, so the certificate must name that IP.
                let name = ServerName::IpAddress(addr.ip().into());
                match bounded(&mut ctx, connector.connect(name, tcp)).await {
                    Ok(tls) => serve(tls, local, flow, &mut ctx).await,
                    Err(reason) => reason,
                }
            }
        },
    };
    debug!(flow = %id, %addr, %reason, "outbound connection closed");
    drop(slot);
    ctx.finish_flow(id).await;
}
