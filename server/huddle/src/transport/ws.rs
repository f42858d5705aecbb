//! SIP over WebSocket (RFC 7118): the `sip` subprotocol handshake, the framing (RFC 6455 §5)
//! and the per-connection driver.
//!
//! One SIP message per WebSocket message. Text and binary messages are accepted; everything we
//! send is binary, because SIPml5 drops non-ASCII bodies that arrive in text frames (it compares
//! Content-Length in bytes with the body length in UTF-16 units). The server pings every
//! `ws_ping_interval` and closes a peer that shows no sign of life (a pong or any other bytes)
//! within `ws_pong_timeout`: browsers answer pings, and SIPml5 has no keep-alive of its own.
//!
//! The framing is Huddle's own after tungstenite's handshake parsing: frames are encoded where
//! a message is sent, so that on plain WS the sender writes them straight to the socket when
//! the flow has nothing waiting (see `shared::Outlet`), and decoded in place in one reused read
//! buffer, every whole frame of a read at once. Server frames are unmasked and unfragmented;
//! client frames must be masked (else close 1002), fragments are reassembled within
//! `max_message_size` (else close 1009), text messages must be UTF-8 (else close 1007).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{interval_at, sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{create_response, write_response, Request};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};

use super::shared::{FlowIo, Outlet, Stop, TaskCtx};
use super::stream::{make_room, write, CloseReason, Source};

/// The RFC 7118 subprotocol token.
const SUBPROTOCOL: &str = "sip";

/// Bound on the HTTP upgrade request (browsers send cookies; 16 KiB is generous).
const MAX_HANDSHAKE: usize = 16 * 1024;

/// Bound on the polite close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Close status codes (RFC 6455 §7.4.1).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_BAD_DATA: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_ERROR: u16 = 1011;

/// The header of one unmasked, final server frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameHead {
    bytes: [u8; 10],
    len: u8,
}

impl FrameHead {
    pub(crate) fn new(opcode: u8, payload_len: usize) -> Self {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | opcode;
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if let Ok(short) = u16::try_from(payload_len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        Self { bytes, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A broken rule of RFC 6455 on the client's side; the connection closes with its code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WsError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("message over the size limit")]
    TooLarge,
    #[error("text that is not UTF-8")]
    BadUtf8,
}

impl WsError {
    fn close_code(&self) -> u16 {
        match self {
            Self::Protocol(_) => CLOSE_PROTOCOL,
            Self::TooLarge => CLOSE_TOO_BIG,
            Self::BadUtf8 => CLOSE_BAD_DATA,
        }
    }
}

/// What the client said, frame by frame, with data messages reassembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WsEvent {
    /// A whole text or binary message; a text message's `text` (up to `TEXT_HANDOVER_MAX`
    /// bytes, keep-alives aside) is its bytes as text, checked to be UTF-8 here, which the SIP
    /// parser takes instead of checking them again; `data` is then the same allocation.
    Message {
        data: Bytes,
        text: Option<Arc<str>>,
    },
    Ping(Bytes),
    Pong,
    /// The client's close, with its status code if it gave one.
    Close(Option<u16>),
}

/// Sans-IO decoder of client frames.
#[derive(Debug)]
pub(crate) struct Decoder {
    buf: BytesMut,
    max: usize,
    /// A fragmented message being reassembled: text or not, and the parts so far.
    partial: Option<(bool, BytesMut)>,
}

impl Decoder {
    /// `initial` is what arrived behind the handshake.
    pub(crate) fn new(max_message_size: usize, initial: BytesMut) -> Self {
        Self {
            buf: initial,
            max: max_message_size,
            partial: None,
        }
    }

    /// The read buffer, with room for one more read.
    pub(crate) fn buffer_for_read(&mut self) -> &mut BytesMut {
        make_room(&mut self.buf);
        &mut self.buf
    }

    /// The next event from the bytes read so far; `Ok(None)` until more arrive. A frame
    /// longer than the limit fails as soon as its header is here, so the buffer never holds
    /// more than one frame within the limit plus one read.
    pub(crate) fn next_event(&mut self) -> Result<Option<WsEvent>, WsError> {
        loop {
            let Some((head_len, payload_len)) = self.frame_lengths()? else {
                return Ok(None);
            };
            let b0 = self.buf[0];
            let fin = b0 & 0x80 != 0;
            let opcode = b0 & 0x0F;
            let control = opcode & 0x08 != 0;
            if control && (!fin || payload_len > 125) {
                return Err(WsError::Protocol("fragmented or long control frame"));
            }
            if !control {
                let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len());
                if so_far as u64 + payload_len > self.max as u64 {
                    return Err(WsError::TooLarge);
                }
            }
            // Within the limit (or ≤ 125), so this fits in usize.
            let payload_len = payload_len as usize;
            if self.buf.len() < head_len + payload_len {
                return Ok(None);
            }
            let mut key = [0u8; 4];
            key.copy_from_slice(&self.buf[head_len - 4..head_len]);
            self.buf.advance(head_len);
            let mut payload = self.buf.split_to(payload_len);
            unmask(&mut payload, key);
            match opcode {
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        return Err(WsError::Protocol("new message inside a fragmented one"));
                    }
                    let text = opcode == OP_TEXT;
                    if fin {
                        return message(payload, text).map(Some);
                    }
                    self.partial = Some((text, payload));
                }
                OP_CONTINUATION => {
                    let Some((text, mut parts)) = self.partial.take() else {
                        return Err(WsError::Protocol("continuation without a message"));
                    };
                    parts.unsplit(payload);
                    if fin {
                        return message(parts, text).map(Some);
                    }
                    self.partial = Some((text, parts));
                }
                OP_PING => return Ok(Some(WsEvent::Ping(payload.freeze()))),
                OP_PONG => return Ok(Some(WsEvent::Pong)),
                OP_CLOSE => return close_status(&payload).map(|c| Some(WsEvent::Close(c))),
                _ => return Err(WsError::Protocol("reserved opcode")),
            }
        }
    }

    /// The header's length and the payload's, once the header is here.
    fn frame_lengths(&self) -> Result<Option<(usize, u64)>, WsError> {
        let buf = &self.buf[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        if buf[0] & 0x70 != 0 {
            return Err(WsError::Protocol("reserved bits set without an extension"));
        }
        if buf[1] & 0x80 == 0 {
            return Err(WsError::Protocol("unmasked client frame"));
        }
        let (len_bytes, payload_len) = match buf[1] & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (2, u64::from(u16::from_be_bytes([b[0], b[1]]))),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(b);
                    (8, u64::from_be_bytes(n))
                }
                None => return Ok(None),
            },
            n => (0, u64::from(n)),
        };
        let head_len = 2 + len_bytes + 4;
        if buf.len() < head_len {
            return Ok(None);
        }
        Ok(Some((head_len, payload_len)))
    }
}

/// Text messages up to this size are handed to the parser as text, in one allocation that is
/// also their bytes; larger ones (an INVITE with browser SDP) go as bytes. Copying a message
/// spares the parser's UTF-8 check and copy of the header section: ~270 instructions less for
/// a 630-byte WS REGISTER, but ~280 more for a 3.4 KB INVITE, whose body the parser neither
/// checks nor copies (bench/NOTES.md, sipcut4).
const TEXT_HANDOVER_MAX: usize = 1024;

/// A text message's allocation as the bytes of a `Bytes`: the message holds one buffer, and
/// the parser knows the bytes are the text by their address.
struct SharedText(Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn message(data: BytesMut, text: bool) -> Result<WsEvent, WsError> {
    if !text {
        return Ok(WsEvent::Message {
            data: data.freeze(),
            text: None,
        });
    }
    let checked = std::str::from_utf8(&data).map_err(|_| WsError::BadUtf8)?;
    // Keep-alives (CRLFCRLF), which the reader drops, and large messages: bytes as they came.
    if data.len() > TEXT_HANDOVER_MAX || checked.bytes().all(|b| b.is_ascii_whitespace()) {
        return Ok(WsEvent::Message {
            data: data.freeze(),
            text: None,
        });
    }
    let text: Arc<str> = Arc::from(checked);
    Ok(WsEvent::Message {
        data: Bytes::from_owner(SharedText(Arc::clone(&text))),
        text: Some(text),
    })
}

/// The status code of a close frame's payload (RFC 6455 §5.5.1, §7.4).
fn close_status(payload: &[u8]) -> Result<Option<u16>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::Protocol("one-byte close payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let known = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !known {
                return Err(WsError::Protocol("close code not allowed on the wire"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(WsError::BadUtf8);
            }
            Ok(Some(code))
        }
    }
}

fn unmask(payload: &mut [u8], key: [u8; 4]) {
    let word = u32::from_ne_bytes(key);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

/// Server handshake: reads the upgrade request and answers 101 with the `sip` subprotocol, or
/// 400 to a client that does not offer it (or sends no valid upgrade). Returns whatever arrived
/// behind the request, for the decoder.
pub(crate) async fn accept<S>(io: &mut S) -> Result<BytesMut, CloseReason>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(1024);
    let (used, request) = loop {
        match Request::try_parse(&buf) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) if buf.len() < MAX_HANDSHAKE => {}
            Ok(None) => {
                refuse(io, "upgrade request too long\n").await;
                return Err(CloseReason::Handshake("upgrade request too long"));
            }
            Err(e) => {
                refuse(io, "bad upgrade request\n").await;
                return Err(e.into());
            }
        }
        buf.reserve(1024);
        if io.read_buf(&mut buf).await? == 0 {
            return Err(CloseReason::PeerClosed);
        }
    };
    if !offers_sip(&request) {
        refuse(
            io,
            "SIP over WebSocket requires the \"sip\" subprotocol (RFC 7118)\n",
        )
        .await;
        return Err(CloseReason::Handshake("no sip subprotocol"));
    }
    let mut response = match create_response(&request) {
        Ok(response) => response,
        Err(e) => {
            refuse(io, "bad upgrade request\n").await;
            return Err(e.into());
        }
    };
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let mut out = Vec::with_capacity(256);
    write_response(&mut out, &response)?;
    io.write_all(&out).await?;
    io.flush().await?;
    buf.advance(used);
    Ok(buf)
}

fn offers_sip(request: &Request) -> bool {
    request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL)
}

/// A 400 with `why` as its body; the connection closes after it anyway.
async fn refuse<S: AsyncWrite + Unpin>(io: &mut S, why: &str) {
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{why}",
        why.len()
    );
    let _ = io.write_all(response.as_bytes()).await;
    let _ = io.flush().await;
}

/// Drives one registered WS or WSS flow until it ends, and says why. `decoder` holds what
/// arrived behind the handshake. Reads, pings, timeouts and the close handshake are the
/// connection task's; sends go through the flow's outlet (written here only when queued).
pub(crate) async fn serve<S>(
    mut io: S,
    mut decoder: Decoder,
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
        outlet,
        close,
    } = flow;
    let mut pings = interval_at(Instant::now() + ping_interval, ping_interval);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Set when a ping goes out with nothing heard since; cleared by any bytes from the peer.
    let mut pong_deadline: Option<Instant> = None;
    // Shutdown and a local close are waited for by one future each for the whole connection,
    // not by new ones on every turn (a turn per message each way). `notify_one` keeps a permit
    // for a waiter that is not registered yet, so nothing is missed before the first poll.
    let mut stop = Stop::new(&ctx.shutdown);
    let closed = close.notified();
    tokio::pin!(closed);
    let source = Source {
        transport,
        id,
        local,
        remote,
    };
    let reason = loop {
        tokio::select! {
            () = &mut stop => break CloseReason::Shutdown,
            () = &mut closed => break CloseReason::ClosedLocally,
            () = sleep_until_opt(pong_deadline) => {
                // After a stall longer than the timeout, the deadline and bytes that arrived
                // meanwhile are ready together and `select!` picks at random: those bytes are
                // the sign of life the deadline waits for, so look before closing.
                let Some(read) = io.read_buf(decoder.buffer_for_read()).now_or_never() else {
                    break CloseReason::PongTimeout;
                };
                pong_deadline = None;
                if let Err(reason) = after_read(read, &mut decoder, &outlet, source, ctx).await {
                    break reason;
                }
            }
            _ = pings.tick() => {
                pong_deadline.get_or_insert(Instant::now() + pong_timeout);
                // A full queue means the peer is not reading: the pong deadline then decides.
                let _ = outlet.send_frame(OP_PING, Bytes::new());
            }
            read = io.read_buf(decoder.buffer_for_read()) => {
                pong_deadline = None;
                if let Err(reason) = after_read(read, &mut decoder, &outlet, source, ctx).await {
                    break reason;
                }
            }
            Some(data) = queue.recv() => {
                if let Err(reason) = write(&mut io, &data, write_limit).await {
                    break reason;
                }
                outlet.written();
            }
        }
    };
    outlet.shut();
    if let Some(payload) = close_payload(&reason) {
        let head = FrameHead::new(OP_CLOSE, payload.len());
        // Whatever is queued goes first: it may be the rest of a frame a sender began.
        let _ = timeout(CLOSE_TIMEOUT, async {
            while let Ok(data) = queue.try_recv() {
                io.write_all(&data).await?;
            }
            io.write_all(head.as_bytes()).await?;
            io.write_all(&payload).await?;
            io.flush().await?;
            io.shutdown().await
        })
        .await;
    }
    reason
}

/// What a read of the peer's bytes leads to: the end of the connection, or its messages
/// handed on ([`drain_events`]).
async fn after_read(
    read: std::io::Result<usize>,
    decoder: &mut Decoder,
    outlet: &Outlet,
    source: Source,
    ctx: &mut TaskCtx,
) -> Result<(), CloseReason> {
    match read {
        Ok(0) => Err(CloseReason::PeerClosed),
        Ok(_) => drain_events(decoder, outlet, source, ctx).await,
        Err(e) => Err(e.into()),
    }
}

/// Hands every whole message read so far to the core and answers pings and keep-alives.
async fn drain_events(
    decoder: &mut Decoder,
    outlet: &Outlet,
    source: Source,
    ctx: &mut TaskCtx,
) -> Result<(), CloseReason> {
    loop {
        let (data, text) = match decoder.next_event()? {
            None => return Ok(()),
            Some(WsEvent::Message { data, text }) => (data, text),
            Some(WsEvent::Ping(payload)) => {
                let _ = outlet.send_frame(OP_PONG, payload);
                continue;
            }
            Some(WsEvent::Pong) => continue,
            Some(WsEvent::Close(code)) => return Err(CloseReason::WsPeerClose(code)),
        };
        if data.iter().all(u8::is_ascii_whitespace) {
            // SIP.js sends CRLFCRLF keep-alives over WebSocket and expects a CRLF back.
            if &data[..] == b"\r\n\r\n" {
                let _ = outlet.send_frame(OP_TEXT, Bytes::from_static(b"\r\n"));
            }
            continue;
        }
        if !ctx.deliver(source.message_with_text(data, text)).await {
            return Err(CloseReason::undelivered(ctx));
        }
    }
}

/// The close frame's payload to end with, if the connection is still fit for one.
fn close_payload(reason: &CloseReason) -> Option<Bytes> {
    let code = match reason {
        CloseReason::Shutdown => CLOSE_AWAY,
        CloseReason::ClosedLocally => CLOSE_NORMAL,
        CloseReason::PongTimeout => CLOSE_POLICY,
        CloseReason::CoreGone => CLOSE_ERROR,
        CloseReason::WsProtocol(e) => e.close_code(),
        // The reply to the peer's close echoes its code (RFC 6455 §5.5.1).
        CloseReason::WsPeerClose(None) => return Some(Bytes::new()),
        CloseReason::WsPeerClose(Some(code)) => *code,
        _ => return None,
    };
    Some(Bytes::copy_from_slice(&code.to_be_bytes()))
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a browser sends it: masked with `key`.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let head = FrameHead::new(opcode, payload.len());
        let mut out = head.as_bytes().to_vec();
        if !fin {
            out[0] &= 0x7F;
        }
        out[1] |= 0x80;
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    fn decoder_with(max: usize, bytes: &[u8]) -> Decoder {
        Decoder::new(max, BytesMut::from(bytes))
    }

    fn all_events(decoder: &mut Decoder) -> Result<Vec<WsEvent>, WsError> {
        let mut events = Vec::new();
        while let Some(e) = decoder.next_event()? {
            events.push(e);
        }
        Ok(events)
    }

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn frame_heads_use_the_shortest_length() {
        assert_eq!(FrameHead::new(OP_BINARY, 5).as_bytes(), [0x82, 5]);
        assert_eq!(FrameHead::new(OP_BINARY, 125).as_bytes(), [0x82, 125]);
        assert_eq!(FrameHead::new(OP_TEXT, 126).as_bytes(), [0x81, 126, 0, 126]);
        assert_eq!(
            FrameHead::new(OP_BINARY, 65_535).as_bytes(),
            [0x82, 126, 0xff, 0xff]
        );
        assert_eq!(
            FrameHead::new(OP_BINARY, 65_536).as_bytes(),
            [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn several_frames_in_one_read_and_a_frame_split_over_reads() {
        let mut wire = client_frame(true, OP_TEXT, b"REGISTER one", KEY);
        wire.extend(client_frame(true, OP_BINARY, &[0xff; 300], KEY));
        let third = client_frame(true, OP_BINARY, b"three", [1, 2, 3, 4]);
        wire.extend_from_slice(&third[..4]);
        let mut d = decoder_with(4096, &wire);
        assert_eq!(
            all_events(&mut d).unwrap(),
            [
                WsEvent::Message {
                    data: Bytes::from_static(b"REGISTER one"),
                    text: Some(Arc::from("REGISTER one"))
                },
                WsEvent::Message {
                    data: Bytes::from(vec![0xff; 300]),
                    text: None
                },
            ]
        );
        d.buffer_for_read().extend_from_slice(&third[4..]);
        assert_eq!(
            d.next_event().unwrap(),
            Some(WsEvent::Message {
                data: Bytes::from_static(b"three"),
                text: None
            })
        );
        assert_eq!(d.next_event().unwrap(), None);
    }

    #[test]
    fn kept_messages_share_the_read_chunk_until_it_runs_short() {
        // Messages read one per read and all kept (as the core keeps requests in its
        // transactions): each is a slice of the same chunk, no fresh buffer per read, until
        // the chunk runs short (stream::make_room); then a new one, the kept ones intact.
        let payload = [b'x'; 500];
        let frame = client_frame(true, OP_BINARY, &payload, KEY);
        let mut d = Decoder::new(65_536, BytesMut::new());
        let mut kept: Vec<Bytes> = Vec::new();
        let mut fresh_chunks = 0;
        for _ in 0..40 {
            d.buffer_for_read().extend_from_slice(&frame);
            let Some(WsEvent::Message { data, .. }) = d.next_event().unwrap() else {
                panic!("no message");
            };
            let follows = kept
                .last()
                .is_some_and(|last| data.as_ptr() as usize == last.as_ptr() as usize + frame.len());
            if !follows {
                fresh_chunks += 1;
            }
            kept.push(data);
        }
        assert!(kept.iter().all(|m| m[..] == payload[..]));
        // 40 frames of 508 bytes: 40 fresh chunks before, 4 (about 8 KiB each) now.
        assert!(
            fresh_chunks <= 5,
            "{fresh_chunks} fresh chunks for 40 reads"
        );
    }

    #[test]
    fn fragments_are_reassembled_with_control_frames_between() {
        let mut wire = client_frame(false, OP_TEXT, b"REGI", KEY);
        wire.extend(client_frame(true, OP_PING, b"hi", KEY));
        wire.extend(client_frame(false, OP_CONTINUATION, b"STER ", KEY));
        wire.extend(client_frame(true, OP_CONTINUATION, b"sip:x", KEY));
        let mut d = decoder_with(4096, &wire);
        assert_eq!(
            all_events(&mut d).unwrap(),
            [
                WsEvent::Ping(Bytes::from_static(b"hi")),
                WsEvent::Message {
                    data: Bytes::from_static(b"REGISTER sip:x"),
                    text: Some(Arc::from("REGISTER sip:x"))
                },
            ]
        );
    }

    #[test]
    fn broken_fragment_sequences_are_protocol_errors() {
        let lone = client_frame(true, OP_CONTINUATION, b"x", KEY);
        assert!(matches!(
            decoder_with(100, &lone).next_event(),
            Err(WsError::Protocol(_))
        ));
        let mut nested = client_frame(false, OP_BINARY, b"a", KEY);
        nested.extend(client_frame(true, OP_BINARY, b"b", KEY));
        assert!(matches!(
            all_events(&mut decoder_with(100, &nested)),
            Err(WsError::Protocol(_))
        ));
        let fragmented_ping = client_frame(false, OP_PING, b"", KEY);
        assert!(matches!(
            decoder_with(100, &fragmented_ping).next_event(),
            Err(WsError::Protocol(_))
        ));
        let long_ping = client_frame(true, OP_PING, &[0; 126], KEY);
        assert!(matches!(
            decoder_with(1000, &long_ping).next_event(),
            Err(WsError::Protocol(_))
        ));
        let reserved = client_frame(true, 0x3, b"", KEY);
        assert!(matches!(
            decoder_with(100, &reserved).next_event(),
            Err(WsError::Protocol(_))
        ));
        let mut rsv = client_frame(true, OP_TEXT, b"x", KEY);
        rsv[0] |= 0x40;
        assert!(matches!(
            decoder_with(100, &rsv).next_event(),
            Err(WsError::Protocol(_))
        ));
    }

    #[test]
    fn unmasked_client_frame_closes_with_1002() {
        let unmasked = [0x81, 2, b'h', b'i'];
        let err = decoder_with(100, &unmasked).next_event().unwrap_err();
        assert_eq!(err.close_code(), 1002);
        let reason = CloseReason::WsProtocol(err);
        assert_eq!(close_payload(&reason).unwrap()[..], 1002u16.to_be_bytes());
    }

    #[test]
    fn oversize_fails_at_the_header_and_across_fragments() {
        // Only the header of a frame over the limit has arrived: refused before buffering it.
        let big = client_frame(true, OP_BINARY, &[0; 5000], KEY);
        let err = decoder_with(4096, &big[..8]).next_event().unwrap_err();
        assert_eq!(err, WsError::TooLarge);
        assert_eq!(err.close_code(), 1009);
        // A 64-bit length that does not fit anywhere.
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&KEY);
        assert_eq!(
            decoder_with(4096, &huge).next_event(),
            Err(WsError::TooLarge)
        );
        // Each fragment fits, together they do not.
        let mut parts = client_frame(false, OP_BINARY, &[0; 3000], KEY);
        parts.extend(client_frame(true, OP_CONTINUATION, &[0; 3000], KEY));
        assert_eq!(
            all_events(&mut decoder_with(4096, &parts)),
            Err(WsError::TooLarge)
        );
        // Exactly the limit is fine.
        let exact = client_frame(true, OP_BINARY, &[7; 4096], KEY);
        assert!(decoder_with(4096, &exact).next_event().unwrap().is_some());
    }

    #[test]
    fn small_text_messages_are_their_texts_allocation_others_stay_bytes() {
        let small = "REGISTER sip:h SIP/2.0\r\nl: 0\r\n\r\n".to_owned();
        let limit = "x".repeat(TEXT_HANDOVER_MAX);
        let large = "y".repeat(TEXT_HANDOVER_MAX + 1);
        for (payload, handed_over) in [
            (small.as_str(), true),
            (limit.as_str(), true),
            (large.as_str(), false),
            ("\r\n\r\n", false),
        ] {
            let wire = client_frame(true, OP_TEXT, payload.as_bytes(), KEY);
            let Some(WsEvent::Message { data, text }) =
                decoder_with(65_536, &wire).next_event().unwrap()
            else {
                panic!("no message");
            };
            assert_eq!(&data[..], payload.as_bytes());
            match text {
                Some(text) => {
                    assert!(handed_over, "{}", payload.len());
                    assert_eq!(&*text, payload);
                    // One buffer: the bytes are the text's.
                    assert_eq!(data.as_ptr(), text.as_ptr());
                }
                None => assert!(!handed_over, "{}", payload.len()),
            }
        }
        // Binary stays bytes whatever it holds.
        let wire = client_frame(true, OP_BINARY, small.as_bytes(), KEY);
        let event = decoder_with(65_536, &wire).next_event().unwrap();
        assert!(matches!(event, Some(WsEvent::Message { text: None, .. })));
    }

    #[test]
    fn text_must_be_utf8() {
        let bad = client_frame(true, OP_TEXT, &[0xC3, 0x28], KEY);
        let err = decoder_with(100, &bad).next_event().unwrap_err();
        assert_eq!(err.close_code(), 1007);
        // Binary may hold anything.
        let binary = client_frame(true, OP_BINARY, &[0xC3, 0x28], KEY);
        assert!(decoder_with(100, &binary).next_event().is_ok());
    }

    #[test]
    fn ping_pong_and_close() {
        let mut wire = client_frame(true, OP_PING, b"p", KEY);
        wire.extend(client_frame(true, OP_PONG, b"", KEY));
        wire.extend(client_frame(
            true,
            OP_CLOSE,
            &[0x03, 0xE8, b'b', b'y', b'e'],
            KEY,
        ));
        let mut d = decoder_with(100, &wire);
        assert_eq!(
            all_events(&mut d).unwrap(),
            [
                WsEvent::Ping(Bytes::from_static(b"p")),
                WsEvent::Pong,
                WsEvent::Close(Some(1000))
            ]
        );
        // The reply echoes the code; an empty close gets an empty one.
        assert_eq!(
            close_payload(&CloseReason::WsPeerClose(Some(1000))).unwrap()[..],
            [0x03, 0xE8]
        );
        assert!(close_payload(&CloseReason::WsPeerClose(None))
            .unwrap()
            .is_empty());
        let empty = client_frame(true, OP_CLOSE, b"", KEY);
        assert_eq!(
            decoder_with(100, &empty).next_event().unwrap(),
            Some(WsEvent::Close(None))
        );
        for bad in [&[0x03][..], &[0x03, 0xED], &[0x00, 0x01]] {
            let frame = client_frame(true, OP_CLOSE, bad, KEY);
            assert!(matches!(
                decoder_with(100, &frame).next_event(),
                Err(WsError::Protocol(_))
            ));
        }
    }

    #[test]
    fn unmask_matches_the_byte_by_byte_rule() {
        for len in 0..19 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut masked = data.clone();
            unmask(&mut masked, KEY);
            let expected: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ KEY[i % 4])
                .collect();
            assert_eq!(masked, expected);
        }
    }
}
