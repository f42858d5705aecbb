//! SIP over WebSocket (RFC 7118): the `sip` subprotocol handshake and the per-connection driver.
//!
//! One SIP message per WebSocket message. Text and binary messages are accepted; everything we
//! send is binary, because SIPml5 drops non-ASCII bodies that arrive in text frames (it compares
//! Content-Length in bytes with the body length in UTF-16 units). The server pings every
//! `ws_ping_interval` and closes a peer that shows no sign of life (a pong or any other frame)
//! within `ws_pong_timeout`: browsers answer pings, and SIPml5 has no keep-alive of its own.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{interval_at, sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::shared::{FlowIo, TaskCtx};
use super::stream::CloseReason;
use super::{Inbound, TransportEvent};

/// The RFC 7118 subprotocol token.
const SUBPROTOCOL: &str = "sip";

/// Per-connection read buffer; tungstenite's default (128 KiB, allocated up front) is too much
/// for thousands of mostly idle browser connections.
const READ_BUFFER: usize = 8 * 1024;

/// Bound on the polite close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

fn config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Each message goes out at once; our own queue provides the buffering.
        .write_buffer_size(0)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// Server handshake, refusing (400) a client that does not offer the `sip` subprotocol.
pub(crate) async fn accept<S>(
    io: S,
    max_message_size: usize,
) -> Result<WebSocketStream<S>, tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio_tungstenite::accept_hdr_async_with_config(io, select_sip, Some(config(max_message_size)))
        .await
}

// The signature is tungstenite's callback contract; its error type is an HTTP response.
#[allow(clippy::result_large_err)]
fn select_sip(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let offers_sip = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offers_sip {
        let mut refusal = ErrorResponse::new(Some(
            "SIP over WebSocket requires the \"sip\" subprotocol (RFC 7118)\n".to_owned(),
        ));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(response)
}

/// Drives one registered WS or WSS flow until it ends, and says why.
pub(crate) async fn serve<S>(
    mut ws: WebSocketStream<S>,
    local: std::net::SocketAddr,
    flow: FlowIo,
    ctx: &mut TaskCtx,
) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ping_interval = ctx.shared.config.ws_ping_interval;
    let pong_timeout = ctx.shared.config.ws_pong_timeout;
    let write_limit = ctx.shared.config.write_timeout;
    let FlowIo {
        id,
        transport,
        remote,
        mut queue,
        close,
    } = flow;
    let mut pings = interval_at(Instant::now() + ping_interval, ping_interval);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Set when a ping goes out with nothing heard since; cleared by any frame from the peer.
    let mut pong_deadline: Option<Instant> = None;
    // Shutdown and a local close are waited for by one future each for the whole connection,
    // not by new ones on every turn (a turn per message each way). `notify_one` keeps a permit
    // for a waiter that is not registered yet, so nothing is missed before the first poll.
    let mut shutdown = ctx.shutdown.clone();
    let stop = TaskCtx::shutdown_signal(&mut shutdown);
    tokio::pin!(stop);
    let closed = close.notified();
    tokio::pin!(closed);
    let reason = loop {
        tokio::select! {
            () = &mut stop => break CloseReason::Shutdown,
            () = &mut closed => break CloseReason::ClosedLocally,
            () = sleep_until_opt(pong_deadline) => break CloseReason::PongTimeout,
            _ = pings.tick() => {
                pong_deadline.get_or_insert(Instant::now() + pong_timeout);
                if let Err(reason) = send(&mut ws, Message::Ping(Bytes::new()), write_limit).await {
                    break reason;
                }
            }
            received = ws.next() => {
                let message = match received {
                    None => break CloseReason::PeerClosed,
                    Some(Err(e)) => break e.into(),
                    Some(Ok(message)) => message,
                };
                pong_deadline = None;
                let data = match message {
                    Message::Text(text) => Bytes::from(text),
                    Message::Binary(data) => data,
                    // tungstenite answers pings and close frames itself on the next poll; after
                    // a close the stream ends with `None`.
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {
                        continue
                    }
                };
                if data.iter().all(u8::is_ascii_whitespace) {
                    // SIP.js sends CRLFCRLF keep-alives over WebSocket and expects a CRLF back.
                    if &data[..] == b"\r\n\r\n" {
                        if let Err(reason) = send(&mut ws, Message::text("\r\n"), write_limit).await {
                            break reason;
                        }
                    }
                    continue;
                }
                let event = TransportEvent::Message(Inbound {
                    transport,
                    flow: Some(id),
                    local,
                    remote,
                    data,
                    received_at: Instant::now().into_std(),
                });
                if !ctx.deliver(event).await {
                    break CloseReason::undelivered(ctx);
                }
            }
            Some(data) = queue.recv() => {
                if let Err(reason) = send(&mut ws, Message::Binary(data), write_limit).await {
                    break reason;
                }
            }
        }
    };
    let close_frame = match &reason {
        CloseReason::Shutdown => Some(CloseCode::Away),
        CloseReason::ClosedLocally => Some(CloseCode::Normal),
        CloseReason::PongTimeout => Some(CloseCode::Policy),
        CloseReason::CoreGone => Some(CloseCode::Error),
        CloseReason::WebSocket(tungstenite::Error::Capacity(_)) => Some(CloseCode::Size),
        _ => None,
    };
    if let Some(code) = close_frame {
        let frame = CloseFrame {
            code,
            reason: "".into(),
        };
        let _ = timeout(CLOSE_TIMEOUT, ws.close(Some(frame))).await;
    }
    reason
}

async fn send<S>(
    ws: &mut WebSocketStream<S>,
    message: Message,
    limit: Duration,
) -> Result<(), CloseReason>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match super::stream::within(limit, ws.send(message)).await {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(e.into()),
        None => Err(CloseReason::WriteTimeout),
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
