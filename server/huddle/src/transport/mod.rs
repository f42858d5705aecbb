//! SIP transports: UDP, TCP, TLS, WS and WSS listeners and connections (RFC 3261 §18,
//! RFC 7118), as a thin layer between sockets and the SIP core.
//!
//! # Shape
//!
//! [`Transports::bind`] opens every [`ListenSpec`] and returns three things:
//! - [`Transports`], which owns the tasks: [`local_addrs`](Transports::local_addrs) (tests bind to
//!   port 0), [`local_addr_for`](Transports::local_addr_for) (what the core writes in its Via
//!   sent-by and Record-Route) and [`shutdown`](Transports::shutdown);
//! - a [`TransportHandle`], cheap to clone, with a non-blocking [`send`](TransportHandle::send)
//!   and [`close`](TransportHandle::close);
//! - the receiving end of a bounded channel of [`TransportEvent`]s: each whole SIP message read
//!   from the network ([`Inbound`]), and [`TransportEvent::FlowClosed`] once per ended connection.
//!
//! [`Transports::bind_with_udp`] does the same but starts no UDP tasks: it also returns each UDP
//! socket's receiving end ([`UdpReceiver`]), which the SIP core reads itself, so that a datagram
//! is handled in the task that read it (no event, no channel hand-off, no second task woken).
//!
//! Tasks follow mini-redis (`server.rs`, `shutdown.rs`): one accept loop per listener, one task per
//! connection (and, with [`Transports::bind`], one per UDP socket; the server reads its UDP
//! sockets in the core instead), a semaphore bounding connections, a `watch` channel
//! announcing shutdown, and a completion channel whose closing tells [`Transports::shutdown`]
//! that every task has ended.
//!
//! # Flows
//!
//! Every stream connection (inbound or outbound, TCP, TLS, WS or WSS) is a flow with a
//! process-unique [`FlowId`] that is never reused. Messages read from it carry that id; the
//! core sends back over the same connection with [`Destination::Flow`] (a browser's Contact is
//! unreachable, its connection is all there is). When the connection ends, for whatever reason,
//! the flow leaves the table first (later sends fail with [`SendError::UnknownFlow`]) and then
//! exactly one [`TransportEvent::FlowClosed`] is sent, so the registrar can drop its bindings.
//! UDP has no flows: datagrams carry `flow: None`; replies go to [`Destination::UdpFrom`] (from
//! the socket the peer's datagram came to), or [`Destination::Address`] for a peer not heard
//! from.
//!
//! # Back-pressure and bounds
//!
//! - Reading waits while the event channel is full, so a slow core slows its peers down rather
//!   than growing memory; UDP datagrams then queue in (and overflow from) the kernel.
//! - Each flow has a bounded write queue; [`TransportHandle::send`] never waits: a full queue
//!   is [`SendError::QueueFull`]. On plain TCP and WS inbound flows, a send to a flow with
//!   nothing queued is written to the socket at once, from the sender's thread, with one
//!   non-blocking system call (no wake-up of the connection task); whatever the socket does not
//!   take goes to the queue, and later sends queue behind it until the connection task has
//!   written it out, so bytes keep their order and frames are never interleaved. TLS and WSS
//!   always queue (the TLS session belongs to the connection task).
//! - Every wait on the network is bounded: handshakes (TLS, WebSocket, outbound connect) by
//!   `handshake_timeout`, writes by `write_timeout`, silent TCP/TLS connections by
//!   `tcp_idle_timeout`, WebSocket peers by server pings (`ws_ping_interval` and
//!   `ws_pong_timeout`: SIPml5 sends no keep-alives of its own).
//! - Stream messages are framed by [`huddle_sip::framing`]; a framing error (including a message
//!   over `max_message_size`) closes the connection, after a `513 Message Too Large` when the
//!   declared Content-Length shows the header section arrived whole. An oversized UDP datagram
//!   is answered 513 from its first `max_message_size` bytes (see `too_large_reply`).
//!
//! # The event receiver
//!
//! The core must keep draining the receiver (or drop it) until it yields `None`, which happens
//! after shutdown once every task has ended: connection tasks wait for room in the channel,
//! including to deliver `FlowClosed`.

mod config;
mod listener;
mod shared;
mod spec;
mod stream;
mod tls;
mod udp;
mod ws;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

pub use config::{ConfigError, TransportConfig};
pub(crate) use shared::Stop;
pub use spec::{ListenSpec, ParseListenSpecError};
pub use tls::{
    client_config_with_roots, generate_self_signed, load_tls_config, TlsContext, TlsError,
};
pub use udp::{Datagram, UdpBatch, UdpReceiver};

use shared::Shared;

/// Receive buffer asked for on every UDP socket (see [`Transports::bind`]).
const UDP_RECV_BUFFER: usize = 4 << 20;

/// A SIP transport, as named in a Via header (RFC 3261 §18, RFC 7118 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS over TCP.
    Tls,
    /// SIP over WebSocket (RFC 7118).
    Ws,
    /// SIP over secure WebSocket (RFC 7118).
    Wss,
}

impl Transport {
    /// Every transport.
    pub const ALL: [Transport; 5] = [Self::Udp, Self::Tcp, Self::Tls, Self::Ws, Self::Wss];

    /// The Via transport token: `UDP`, `TCP`, `TLS`, `WS` or `WSS`.
    pub fn via_token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
            Self::Ws => "WS",
            Self::Wss => "WSS",
        }
    }

    /// The lower-case name used in config strings and `transport=` URI parameters.
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }

    /// Parses a Via token or `transport=` value, case-insensitively.
    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.via_token().eq_ignore_ascii_case(token))
    }

    /// Everything but UDP: no retransmissions needed (RFC 3261 §17.1.1.2).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Self::Udp)
    }

    /// TLS and WSS.
    pub fn is_secure(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }

    /// WS and WSS.
    pub fn is_websocket(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_token())
    }
}

/// One stream connection, unique for the life of the process: ids are never reused, so a stale
/// id can only miss, never reach another peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(u64);

static NEXT_FLOW: AtomicU64 = AtomicU64::new(1);

impl FlowId {
    fn next() -> Self {
        Self(NEXT_FLOW.fetch_add(1, Ordering::Relaxed))
    }

    /// The raw value, e.g. to put in a flow token.
    pub fn get(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from [`get`](Self::get); an id that was never issued just finds no flow.
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow#{}", self.0)
    }
}

/// One SIP message as it arrived: a UDP datagram, one framed message from a TCP/TLS stream, or
/// one WebSocket message. Not parsed.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The transport it came over.
    pub transport: Transport,
    /// The connection, for stream transports; `None` for UDP.
    pub flow: Option<FlowId>,
    /// Our address: the connection's local address, or the UDP socket's bound address.
    pub local: SocketAddr,
    /// The peer's address (what RFC 3261 §18.2.1 `received`/`rport` report).
    pub remote: SocketAddr,
    /// The message bytes.
    pub data: Bytes,
    /// The same bytes as text, when the transport checked them to be UTF-8 already (a WebSocket
    /// text message): the parser takes it instead of checking the header section again.
    pub text: Option<Arc<str>>,
}

/// What the transports tell the core.
#[derive(Debug, Clone)]
pub enum TransportEvent {
    /// A whole SIP message arrived.
    Message(Inbound),
    /// A connection ended (peer close, error, timeout, [`TransportHandle::close`] or shutdown).
    /// Sent exactly once per flow, after the flow stopped accepting sends.
    FlowClosed {
        /// The flow that ended.
        flow: FlowId,
    },
}

/// Where to send a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Over exactly this connection, or not at all.
    Flow(FlowId),
    /// To an address. UDP: sent from the first listening socket of the same address family
    /// (a peer we have heard from goes [`UdpFrom`](Self::UdpFrom) instead). TCP/TLS: over an
    /// existing connection to that address, else over a new outbound one. WS/WSS: only over an
    /// existing connection (browsers cannot be dialled).
    Address {
        /// The transport to use.
        transport: Transport,
        /// The peer address.
        addr: SocketAddr,
    },
    /// Over UDP to `addr`, from the listening socket bound at `local`: the one the peer's
    /// request (or the REGISTER of its binding) came in on. A response leaves from the address
    /// its request arrived at (RFC 3581 §4, amending RFC 3261 §18.2.2); a request to a binding
    /// from the address the binding was registered at is NAT practice (RFC 5626's flows): a
    /// client that checks the source, or a NAT that let the client's datagram out, drops
    /// anything from another address. Sent as [`Address`](Self::Address) is when no socket is
    /// bound at `local` (any more).
    UdpFrom {
        /// The listening socket's bound address ([`Inbound::local`]).
        local: SocketAddr,
        /// The peer address.
        addr: SocketAddr,
    },
}

/// Why [`TransportHandle::send`] or [`TransportHandle::close`] refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No such flow: it never existed or has closed.
    #[error("{0} does not exist or has closed")]
    UnknownFlow(FlowId),
    /// The flow is closing and takes no more messages.
    #[error("{0} is closing")]
    FlowClosing(FlowId),
    /// The flow's write queue is full: the peer is not reading fast enough.
    #[error("write queue of {0} is full")]
    QueueFull(FlowId),
    /// The UDP socket's send buffer is full.
    #[error("UDP send buffer full")]
    WouldBlock,
    /// No listener of this transport (and address family) to send from.
    #[error("no {0} socket to send from for this address family")]
    NoSocket(Transport),
    /// WS/WSS peers cannot be dialled and there is no open connection to this address.
    #[error("no {transport} connection to {addr}")]
    NoConnection {
        /// The requested transport.
        transport: Transport,
        /// The requested address.
        addr: SocketAddr,
    },
    /// Outbound TLS needs [`TlsContext::client`].
    #[error("outbound TLS is not configured")]
    TlsClientNotConfigured,
    /// The connection limit is reached, no new outbound connection.
    #[error("connection limit reached")]
    TooManyConnections,
    /// The transports are shut down.
    #[error("transports are shut down")]
    ShutDown,
    /// The operating system refused the UDP send.
    #[error("UDP send failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why [`Transports::bind`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A socket could not be bound.
    #[error("cannot listen on {spec}: {source}")]
    Bind {
        /// The listener that failed.
        spec: ListenSpec,
        /// The OS error.
        source: std::io::Error,
    },
    /// A TLS or WSS listener without a server certificate (neither in [`TlsContext::server`]
    /// nor as `tls_cert`/`tls_key` in the config).
    #[error("{0} needs a TLS certificate and key (tls_cert, tls_key)")]
    TlsNotConfigured(ListenSpec),
    /// The certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What a flow is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    /// The flow's transport.
    pub transport: Transport,
    /// The peer address.
    pub remote: SocketAddr,
    /// True if we opened the connection.
    pub outbound: bool,
}

/// Owns the transport tasks. Dropping it starts shutdown (like [`shutdown`](Self::shutdown)
/// without waiting for the tasks).
#[derive(Debug)]
pub struct Transports {
    shared: Arc<Shared>,
    done: mpsc::Receiver<()>,
}

impl Transports {
    /// Binds every listener, then starts their tasks. Binding happens before anything runs, so
    /// an error leaves nothing behind.
    pub async fn bind(
        specs: &[ListenSpec],
        config: TransportConfig,
        tls: TlsContext,
    ) -> Result<(Transports, TransportHandle, mpsc::Receiver<TransportEvent>), TransportError> {
        let (transports, handle, events, udp) = Self::bind_with_udp(specs, config, tls).await?;
        for receiver in udp {
            if let Some(ctx) = transports.shared.task_ctx() {
                tokio::spawn(udp::run(receiver, ctx));
            }
        }
        Ok((transports, handle, events))
    }

    /// [`bind`](Self::bind), except that no task reads the UDP sockets: their receiving ends
    /// come back to the caller, who reads them (the SIP core does, so that a datagram is
    /// handled where it is read: no event, no channel, no second task woken per datagram).
    /// Messages of the other transports and `FlowClosed` still come on the channel. The caller
    /// stops reading at shutdown by dropping the receivers.
    pub async fn bind_with_udp(
        specs: &[ListenSpec],
        config: TransportConfig,
        tls: TlsContext,
    ) -> Result<
        (
            Transports,
            TransportHandle,
            mpsc::Receiver<TransportEvent>,
            Vec<UdpReceiver>,
        ),
        TransportError,
    > {
        config.validate()?;
        let mut tls = tls;
        if tls.server.is_none() {
            if let Some(spec) = specs.iter().find(|s| s.transport.is_secure()) {
                match (&config.tls_cert, &config.tls_key) {
                    (Some(cert), Some(key)) => tls.server = Some(load_tls_config(cert, key)?),
                    _ => return Err(TransportError::TlsNotConfigured(*spec)),
                }
            }
        }

        let mut udp = Vec::new();
        let mut udp_senders = Vec::new();
        let mut tcp = Vec::new();
        let mut bound = Vec::new();
        for spec in specs {
            let bind_err = |source| TransportError::Bind {
                spec: *spec,
                source,
            };
            let local = if spec.transport == Transport::Udp {
                let socket = UdpSocket::bind(spec.addr).await.map_err(bind_err)?;
                // Room for bursts while the SIP thread is busy or preempted: the default
                // (~200 KB, a few hundred datagrams) overflowed under load on a busy machine,
                // and every drop costs a retransmission 500 ms later. The kernel caps this
                // at net.core.rmem_max; failing to raise it is not an error.
                let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(UDP_RECV_BUFFER);
                let local = socket.local_addr().map_err(bind_err)?;
                // Sends bypass tokio's readiness tracking, which reports a fresh socket as
                // not writable until its reactor has run once: the core's first sends (e.g.
                // a plugin's NOTIFYs queued during start-up) would fail with WouldBlock
                // although the kernel has room. The duplicate shares the socket's
                // non-blocking file description.
                let sender = socket2::SockRef::from(&socket)
                    .try_clone()
                    .map_err(bind_err)?;
                sender.set_nonblocking(true).map_err(bind_err)?;
                // The reader's handle for `recvmmsg`, which tokio's socket does not offer; tokio
                // still tells when there is something to read (see `UdpReceiver`).
                let reader = sender.try_clone().map_err(bind_err)?;
                udp_senders.push((local, std::net::UdpSocket::from(sender)));
                udp.push((socket, std::net::UdpSocket::from(reader)));
                local
            } else {
                let listener = TcpListener::bind(spec.addr).await.map_err(bind_err)?;
                let local = listener.local_addr().map_err(bind_err)?;
                tcp.push((spec.transport, listener, local));
                local
            };
            bound.push(ListenSpec {
                transport: spec.transport,
                addr: local,
            });
        }

        let max = config.max_message_size;
        let udp = udp
            .into_iter()
            .zip(&udp_senders)
            .map(|((socket, reader), (local, _))| UdpReceiver::new(socket, reader, *local, max))
            .collect();
        let (events_tx, events_rx) = mpsc::channel(config.event_queue_len);
        let (done_tx, done_rx) = mpsc::channel(1);
        let shared = Shared::new(config, tls, bound, udp_senders, events_tx, done_tx);
        for (transport, listener, local) in tcp {
            if let Some(ctx) = shared.task_ctx() {
                tokio::spawn(listener::run(listener, transport, local, ctx));
            }
        }
        let handle = TransportHandle {
            shared: Arc::clone(&shared),
        };
        Ok((
            Transports {
                shared,
                done: done_rx,
            },
            handle,
            events_rx,
            udp,
        ))
    }

    /// Every listener with its actual bound address (port 0 resolved).
    pub fn local_addrs(&self) -> &[ListenSpec] {
        &self.shared.bound
    }

    /// The first listener's address for `transport`, for Via sent-by and Record-Route. An
    /// unspecified address (`0.0.0.0`) is returned as is; the core substitutes its public name.
    pub fn local_addr_for(&self, transport: Transport) -> Option<SocketAddr> {
        self.shared.local_addr_for(transport)
    }

    /// Another handle for sending.
    pub fn handle(&self) -> TransportHandle {
        TransportHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops accepting, closes every connection and waits until every task has ended. Each
    /// open flow still produces its `FlowClosed`, so keep draining the event receiver meanwhile.
    pub async fn shutdown(mut self) {
        self.shared.begin_shutdown();
        // Nobody sends on this channel: `None` means every task dropped its sender.
        while self.done.recv().await.is_some() {}
    }
}

impl Drop for Transports {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
    }
}

/// Sends SIP messages and closes flows. Cheap to clone; every method returns at once.
#[derive(Debug, Clone)]
pub struct TransportHandle {
    shared: Arc<Shared>,
}

impl TransportHandle {
    /// Queues `data` for `dest` without waiting. Returns the flow it went to (`None` for UDP),
    /// which for a new outbound TCP/TLS connection is a flow that is still connecting: if the
    /// connection fails, its `FlowClosed` follows. Errors mean nothing was queued.
    pub fn send(&self, dest: Destination, data: Bytes) -> Result<Option<FlowId>, SendError> {
        match dest {
            Destination::Flow(flow) => self.shared.enqueue(flow, data).map(Some),
            Destination::Address {
                transport: Transport::Udp,
                addr,
            } => udp::send(&self.shared, None, addr, &data).map(|()| None),
            Destination::UdpFrom { local, addr } => {
                udp::send(&self.shared, Some(local), addr, &data).map(|()| None)
            }
            Destination::Address { transport, addr } => {
                stream::send_to_address(&self.shared, transport, addr, data).map(Some)
            }
        }
    }

    /// Like [`send`](Self::send), except that a UDP datagram is held in `batch` until
    /// [`flush`](Self::flush) (its destination is checked now): the datagrams of one core turn
    /// then go out with one system call. `tag` comes back if sending it fails.
    pub fn send_batched<T>(
        &self,
        batch: &mut UdpBatch<T>,
        dest: Destination,
        data: Bytes,
        tag: T,
    ) -> Result<Option<FlowId>, SendError> {
        match dest {
            Destination::Address {
                transport: Transport::Udp,
                addr,
            } => udp::hold(&self.shared, batch, None, addr, data, tag).map(|()| None),
            Destination::UdpFrom { local, addr } => {
                udp::hold(&self.shared, batch, Some(local), addr, data, tag).map(|()| None)
            }
            dest => self.send(dest, data),
        }
    }

    /// Sends what `batch` holds, in order, and empties it; `failed` gets the tag and the error
    /// of each datagram that could not be sent.
    pub fn flush<T>(&self, batch: &mut UdpBatch<T>, failed: impl FnMut(T, SendError)) {
        udp::flush(&self.shared, batch, failed);
    }

    /// Closes a flow. Messages already queued may not go out. Its `FlowClosed` follows.
    pub fn close(&self, flow: FlowId) -> Result<(), SendError> {
        self.shared.close(flow)
    }

    /// What a live flow is connected to.
    pub fn flow_info(&self, flow: FlowId) -> Option<FlowInfo> {
        self.shared.flow_info(flow)
    }

    /// Every listener with its actual bound address.
    pub fn local_addrs(&self) -> &[ListenSpec] {
        &self.shared.bound
    }

    /// The first listener's address for `transport`.
    pub fn local_addr_for(&self, transport: Transport) -> Option<SocketAddr> {
        self.shared.local_addr_for(transport)
    }
}

/// The `513 Message Too Large` for a message refused for its size, built from the header
/// section that did arrive (a truncated datagram, or a stream's buffered head). `None` when
/// that is not a request with the headers a response needs, or is an ACK.
pub(crate) fn too_large_reply(head: &[u8], remote: SocketAddr) -> Option<Bytes> {
    use huddle_sip::build::{ResponseBuilder, Source};
    use huddle_sip::message::HeaderName;
    let msg = huddle_sip::Message::parse(Bytes::copy_from_slice(head)).ok()?;
    let method = msg.method()?;
    let complete = [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ]
    .iter()
    .all(|h| msg.header_count(h) > 0);
    if !complete || *method == huddle_sip::Method::Ack {
        return None;
    }
    let ip = remote.ip().to_string();
    Some(
        ResponseBuilder::new(&msg, 513, "Message Too Large")
            .source(Source {
                ip: &ip,
                port: remote.port(),
            })
            .build(),
    )
}
