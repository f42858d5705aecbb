//! State shared by the handle and every transport task: the flow table, connection limits and
//! the shutdown plumbing.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use huddle_sip::idmap::IdMap;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};

use super::{
    FlowId, FlowInfo, ListenSpec, SendError, TlsContext, Transport, TransportConfig, TransportEvent,
};

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: TransportConfig,
    pub(crate) tls: TlsContext,
    pub(crate) bound: Vec<ListenSpec>,
    /// The UDP sockets with their local addresses (read once: `local_addr` is a system call,
    /// too dear for every datagram sent).
    /// The UDP sockets' send handles: each a duplicate of a listening socket, written with plain
    /// non-blocking `send_to` (see `udp::send`).
    pub(crate) udp: Vec<(SocketAddr, std::net::UdpSocket)>,
    /// Where `TransportHandle::send` spawns outbound connections, so it works from any thread.
    pub(crate) runtime: tokio::runtime::Handle,
    connections: Arc<Semaphore>,
    table: Mutex<FlowTable>,
    shutdown: watch::Sender<bool>,
    /// Taken at shutdown, so that the event receiver and the completion channel close once the
    /// tasks holding clones end.
    running: Mutex<Option<Running>>,
}

#[derive(Debug, Clone)]
struct Running {
    events: mpsc::Sender<TransportEvent>,
    done: mpsc::Sender<()>,
}

#[derive(Debug, Default)]
struct FlowTable {
    /// Ids are Huddle's own: a plain integer hash. Addresses are the peers': a seeded hasher.
    flows: IdMap<FlowId, FlowEntry>,
    by_addr: HashMap<(Transport, SocketAddr), FlowId, foldhash::fast::RandomState>,
    per_ip: HashMap<IpAddr, usize, foldhash::fast::RandomState>,
}

#[derive(Debug)]
struct FlowEntry {
    info: FlowInfo,
    outlet: Arc<Outlet>,
    close: Arc<Notify>,
}

/// The sending side of a flow, shared by whoever sends (the core, plugin threads, the
/// connection task's own pings and pongs) and the connection task that drains its queue.
///
/// With a `direct` socket (plain TCP and WS), a sender whose flow has nothing waiting writes
/// the bytes itself with one non-blocking `send`, from its own thread, as Kamailio's workers
/// do: no wake-up of the connection task per message. Whatever the socket does not take at
/// once (a full send buffer, a partial write) goes to the queue, and from then on everything
/// queues behind it until the connection task has written it all: bytes leave in the order
/// they were sent, and no frame or message is ever interleaved with another. TLS and WSS
/// (rustls's state lives in the connection task) always queue.
#[derive(Debug)]
pub(crate) struct Outlet {
    id: FlowId,
    websocket: bool,
    direct: Option<OwnedWriteHalf>,
    state: Mutex<OutletState>,
}

#[derive(Debug)]
struct OutletState {
    queue: mpsc::Sender<Bytes>,
    /// Items in the queue or being written by the connection task; direct writes only at 0.
    backlog: usize,
    /// Set by the connection task when it stops: nothing more may reach the socket.
    closed: bool,
}

impl Outlet {
    /// Sends one SIP message: a binary frame on a WebSocket, the bytes as they are otherwise.
    pub(crate) fn send(&self, data: Bytes) -> Result<(), SendError> {
        if self.websocket {
            self.send_frame(super::ws::OP_BINARY, data)
        } else {
            self.push(&[], data)
        }
    }

    /// Sends one WebSocket frame (the connection task's control frames and CRLF pongs).
    pub(crate) fn send_frame(&self, opcode: u8, data: Bytes) -> Result<(), SendError> {
        let head = super::ws::FrameHead::new(opcode, data.len());
        self.push(head.as_bytes(), data)
    }

    fn push(&self, head: &[u8], body: Bytes) -> Result<(), SendError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return Err(SendError::FlowClosing(self.id));
        }
        let item = match &self.direct {
            Some(socket) if state.backlog == 0 => {
                // On WouldBlock, or an error the connection task meets again on its own write
                // of the queued bytes (and closes the flow for), nothing was written.
                let written: usize = socket
                    .as_ref()
                    .try_write_vectored(&[IoSlice::new(head), IoSlice::new(&body)])
                    .unwrap_or_default();
                match unwritten(head, body, written) {
                    None => return Ok(()),
                    Some(rest) => rest,
                }
            }
            _ => join(head, body),
        };
        state.queue.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull(self.id),
            mpsc::error::TrySendError::Closed(_) => SendError::FlowClosing(self.id),
        })?;
        state.backlog += 1;
        Ok(())
    }

    /// The connection task wrote one queued item out completely.
    pub(crate) fn written(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.backlog = state.backlog.saturating_sub(1);
    }

    /// The connection task is ending: later sends fail with `FlowClosing`, and nothing but
    /// the task itself writes to the socket any more.
    pub(crate) fn shut(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
    }

    /// The socket for the connection task's own writes of queued bytes, when sends go direct.
    pub(crate) fn direct_socket(&self) -> Option<&tokio::net::TcpStream> {
        self.direct.as_ref().map(AsRef::as_ref)
    }
}

/// What is left of `head` + `body` after the first `written` bytes, as one buffer; `None`
/// when all of it went.
fn unwritten(head: &[u8], body: Bytes, written: usize) -> Option<Bytes> {
    if written >= head.len() + body.len() {
        None
    } else if written >= head.len() {
        Some(body.slice(written - head.len()..))
    } else {
        Some(join(&head[written..], body))
    }
}

fn join(head: &[u8], body: Bytes) -> Bytes {
    if head.is_empty() {
        return body;
    }
    let mut joined = BytesMut::with_capacity(head.len() + body.len());
    joined.put_slice(head);
    joined.put_slice(&body);
    joined.freeze()
}

/// Whether `e` means "try again later" for a non-blocking socket.
pub(crate) fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// What a task needs: the way to the core, the shutdown signal, and a completion token.
#[derive(Debug, Clone)]
pub(crate) struct TaskCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: mpsc::Sender<TransportEvent>,
    pub(crate) shutdown: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
}

/// The driver's end of a registered flow.
#[derive(Debug)]
pub(crate) struct FlowIo {
    pub(crate) id: FlowId,
    pub(crate) transport: Transport,
    pub(crate) remote: SocketAddr,
    pub(crate) queue: mpsc::Receiver<Bytes>,
    pub(crate) outlet: Arc<Outlet>,
    pub(crate) close: Arc<Notify>,
}

/// A connection's share of the limits, released on drop.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    ip: Option<(Arc<Shared>, IpAddr)>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some((shared, ip)) = self.ip.take() {
            let mut table = shared.table();
            if let Some(n) = table.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    table.per_ip.remove(&ip);
                }
            }
        }
    }
}

impl Shared {
    pub(crate) fn new(
        config: TransportConfig,
        tls: TlsContext,
        bound: Vec<ListenSpec>,
        udp: Vec<(SocketAddr, std::net::UdpSocket)>,
        events: mpsc::Sender<TransportEvent>,
        done: mpsc::Sender<()>,
    ) -> Arc<Self> {
        let permits = config.max_connections.min(Semaphore::MAX_PERMITS);
        Arc::new(Self {
            config,
            tls,
            bound,
            udp,
            runtime: tokio::runtime::Handle::current(),
            connections: Arc::new(Semaphore::new(permits)),
            table: Mutex::new(FlowTable::default()),
            shutdown: watch::Sender::new(false),
            running: Mutex::new(Some(Running { events, done })),
        })
    }

    fn table(&self) -> MutexGuard<'_, FlowTable> {
        // Critical sections never panic midway, so a poisoned table is still consistent.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A context for a new task, or `None` once shutdown has begun.
    pub(crate) fn task_ctx(self: &Arc<Self>) -> Option<TaskCtx> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        Some(TaskCtx {
            shared: Arc::clone(self),
            events: running.events,
            shutdown: self.shutdown.subscribe(),
            _done: running.done,
        })
    }

    pub(crate) fn begin_shutdown(&self) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.shutdown.send_replace(true);
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub(crate) fn local_addr_for(&self, transport: Transport) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|s| s.transport == transport)
            .map(|s| s.addr)
    }

    /// A connection slot under the global limit, without the per-IP limit (outbound).
    pub(crate) fn acquire_slot(&self) -> Option<ConnSlot> {
        let permit = Arc::clone(&self.connections).try_acquire_owned().ok()?;
        Some(ConnSlot {
            _permit: permit,
            ip: None,
        })
    }

    /// A connection slot under both the global and the per-IP limit (inbound).
    pub(crate) fn acquire_inbound_slot(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        let mut slot = self.acquire_slot()?;
        let ip = ip.to_canonical();
        let mut table = self.table();
        let n = table.per_ip.entry(ip).or_insert(0);
        if *n >= self.config.max_connections_per_ip {
            return None;
        }
        *n += 1;
        slot.ip = Some((Arc::clone(self), ip));
        Some(slot)
    }

    /// Adds a flow to the table (and the address index) and gives its driver end. With
    /// `direct`, senders write to that socket themselves when the flow has nothing waiting
    /// (see [`Outlet`]).
    pub(crate) fn register_flow(
        &self,
        transport: Transport,
        remote: SocketAddr,
        direct: Option<OwnedWriteHalf>,
    ) -> FlowIo {
        let mut table = self.table();
        self.insert_flow(&mut table, transport, remote, false, None, direct)
            .expect("no initial message, so nothing can fail")
    }

    /// Adds an outbound flow unless one to the same address exists, queueing `first` on
    /// whichever flow it is. One lock covers both, so concurrent sends to a new address open
    /// one connection. The `FlowIo` is returned only for a new flow.
    pub(crate) fn register_outbound(
        &self,
        transport: Transport,
        remote: SocketAddr,
        first: Bytes,
    ) -> Result<(FlowId, Option<FlowIo>), SendError> {
        let mut table = self.table();
        if let Some(&id) = table.by_addr.get(&(transport, remote)) {
            return table.outlet(id)?.send(first).map(|()| (id, None));
        }
        let io = self.insert_flow(&mut table, transport, remote, true, Some(first), None)?;
        Ok((io.id, Some(io)))
    }

    fn insert_flow(
        &self,
        table: &mut FlowTable,
        transport: Transport,
        remote: SocketAddr,
        outbound: bool,
        first: Option<Bytes>,
        direct: Option<OwnedWriteHalf>,
    ) -> Result<FlowIo, SendError> {
        let id = FlowId::next();
        let (queue_tx, queue_rx) = mpsc::channel(self.config.write_queue_len);
        let outlet = Arc::new(Outlet {
            id,
            websocket: transport.is_websocket(),
            direct,
            state: Mutex::new(OutletState {
                queue: queue_tx,
                backlog: 0,
                closed: false,
            }),
        });
        if let Some(first) = first {
            outlet.send(first)?;
        }
        let close = Arc::new(Notify::new());
        let entry = FlowEntry {
            info: FlowInfo {
                transport,
                remote,
                outbound,
            },
            outlet: Arc::clone(&outlet),
            close: Arc::clone(&close),
        };
        table.flows.insert(id, entry);
        table.by_addr.insert((transport, remote), id);
        self.config.connections.add(transport_index(transport), 1);
        Ok(FlowIo {
            id,
            transport,
            remote,
            queue: queue_rx,
            outlet,
            close,
        })
    }

    /// Removes a flow; later sends to it fail with `UnknownFlow`.
    pub(crate) fn unregister_flow(&self, id: FlowId) {
        let mut table = self.table();
        if let Some(entry) = table.flows.remove(&id) {
            self.config
                .connections
                .add(transport_index(entry.info.transport), -1);
            let key = (entry.info.transport, entry.info.remote);
            if table.by_addr.get(&key) == Some(&id) {
                table.by_addr.remove(&key);
            }
        }
    }

    pub(crate) fn enqueue(&self, id: FlowId, data: Bytes) -> Result<FlowId, SendError> {
        // The table is not held over a direct write's system call.
        let outlet = self.table().outlet(id)?;
        outlet.send(data).map(|()| id)
    }

    /// Queues on the open flow to `addr`, if there is one.
    pub(crate) fn enqueue_to_address(
        &self,
        transport: Transport,
        addr: SocketAddr,
        data: &Bytes,
    ) -> Option<Result<FlowId, SendError>> {
        let outlet = {
            let table = self.table();
            let id = *table.by_addr.get(&(transport, addr))?;
            table.outlet(id)
        };
        Some(outlet.and_then(|o| o.send(data.clone()).map(|()| o.id)))
    }

    pub(crate) fn close(&self, id: FlowId) -> Result<(), SendError> {
        let table = self.table();
        let entry = table.flows.get(&id).ok_or(SendError::UnknownFlow(id))?;
        // notify_one keeps a permit if the driver is not waiting right now.
        entry.close.notify_one();
        Ok(())
    }

    pub(crate) fn flow_info(&self, id: FlowId) -> Option<FlowInfo> {
        self.table().flows.get(&id).map(|e| e.info)
    }
}

impl FlowTable {
    fn outlet(&self, id: FlowId) -> Result<Arc<Outlet>, SendError> {
        self.flows
            .get(&id)
            .map(|e| Arc::clone(&e.outlet))
            .ok_or(SendError::UnknownFlow(id))
    }
}

impl TaskCtx {
    /// Resolves once shutdown has begun (immediately if it already has).
    pub(crate) async fn shutdown_signal(shutdown: &mut watch::Receiver<bool>) {
        // An error means the sender is gone, which is shutdown too.
        let _ = shutdown.wait_for(|&stop| stop).await;
    }

    /// Hands an event to the core, waiting for room; `false` if the core is gone or shutdown
    /// began meanwhile.
    pub(crate) async fn deliver(&mut self, event: TransportEvent) -> bool {
        // Room in the channel is the common case: no futures to build and drop for it (this
        // runs once per message).
        let event = match self.events.try_send(event) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(event)) => event,
        };
        tokio::select! {
            sent = self.events.send(event) => sent.is_ok(),
            () = Self::shutdown_signal(&mut self.shutdown) => false,
        }
    }

    /// Ends a flow: out of the table first, then exactly one `FlowClosed`. Waits for room in
    /// the channel even during shutdown, so the core always learns of it.
    pub(crate) async fn finish_flow(&self, id: FlowId) {
        self.shared.unregister_flow(id);
        let _ = self
            .events
            .send(TransportEvent::FlowClosed { flow: id })
            .await;
    }
}

/// Shutdown as a future that costs next to nothing to poll again while nothing was sent on the
/// watch: `select!` loops poll their stop branch on every turn, and a waiting `wait_for` costs
/// a lock round trip and two state machines per poll — about 3 % of a call's instructions
/// between the SIP core and the UDP reader (bench/NOTES.md, sipcut5). Once its waiter is
/// registered, a poll by the same task (same waker) only reads the watch's version, and polls
/// the waiter again when that moved (or the sender is gone) or the task is another.
pub(crate) struct Stop {
    /// A clone never marked seen: `has_changed` tells whether anything was sent since.
    probe: watch::Receiver<bool>,
    wait: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The waker the waiter was last registered with.
    waker: Option<Waker>,
}

impl Stop {
    /// Resolves once `shutdown` is true or its sender is gone (immediately if so already).
    pub(crate) fn new(shutdown: &watch::Receiver<bool>) -> Self {
        let mut rx = shutdown.clone();
        Self {
            probe: shutdown.clone(),
            wait: Box::pin(async move {
                // An error means the sender is gone, which is shutdown too.
                let _ = rx.wait_for(|&stop| stop).await;
            }),
            waker: None,
        }
    }
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop").finish_non_exhaustive()
    }
}

impl Future for Stop {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let registered = this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if registered && matches!(this.probe.has_changed(), Ok(false)) {
            return Poll::Pending;
        }
        match this.wait.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                if !registered {
                    this.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// The position of `transport` in [`Transport::ALL`] (the metrics' gauge index).
fn transport_index(transport: Transport) -> usize {
    Transport::ALL
        .iter()
        .position(|t| *t == transport)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(count))
    }

    fn woken(count: &Count) -> usize {
        count.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn stop_waits_for_true_and_wakes_its_task() {
        let (tx, rx) = watch::channel(false);
        let mut stop = Stop::new(&rx);
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        // Polled again and again with nothing sent: pending, no wake.
        for _ in 0..3 {
            assert!(Pin::new(&mut stop).poll(&mut cx).is_pending());
        }
        assert_eq!(woken(&count), 0);
        // A send of false wakes the task but does not stop it, and later polls still wait.
        tx.send(false).unwrap();
        assert_eq!(woken(&count), 1);
        for _ in 0..3 {
            assert!(Pin::new(&mut stop).poll(&mut cx).is_pending());
        }
        tx.send(true).unwrap();
        assert!(woken(&count) >= 2);
        assert!(Pin::new(&mut stop).poll(&mut cx).is_ready());
    }

    #[test]
    fn stop_is_ready_at_once_after_shutdown_and_when_the_sender_is_gone() {
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        // Shutdown already begun before the future was made (and seen by the receiver).
        let (tx, mut rx) = watch::channel(false);
        tx.send(true).unwrap();
        rx.borrow_and_update();
        assert!(Pin::new(&mut Stop::new(&rx)).poll(&mut cx).is_ready());
        // The sender dropped while waiting: the registered task is woken and the stop resolves.
        let (tx, rx) = watch::channel(false);
        let mut stop = Stop::new(&rx);
        assert!(Pin::new(&mut stop).poll(&mut cx).is_pending());
        drop(tx);
        assert_eq!(woken(&count), 1);
        assert!(Pin::new(&mut stop).poll(&mut cx).is_ready());
    }

    #[test]
    fn stop_polled_from_another_task_registers_that_task() {
        let (tx, rx) = watch::channel(false);
        let mut stop = Stop::new(&rx);
        let (first, first_waker) = counting_waker();
        let (second, second_waker) = counting_waker();
        assert!(Pin::new(&mut stop)
            .poll(&mut Context::from_waker(&first_waker))
            .is_pending());
        assert!(Pin::new(&mut stop)
            .poll(&mut Context::from_waker(&second_waker))
            .is_pending());
        tx.send(true).unwrap();
        assert_eq!(woken(&first), 0);
        assert_eq!(woken(&second), 1);
        assert!(Pin::new(&mut stop)
            .poll(&mut Context::from_waker(&second_waker))
            .is_ready());
    }
    use crate::transport::stream::DirectIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair on loopback with small buffers, so the server's side fills quickly.
    async fn small_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let _ = socket2::SockRef::from(&server).set_send_buffer_size(4096);
        let _ = socket2::SockRef::from(&client).set_recv_buffer_size(4096);
        (server, client)
    }

    fn outlet(direct: OwnedWriteHalf) -> (Arc<Outlet>, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(100_000);
        let outlet = Outlet {
            id: FlowId::next(),
            websocket: true,
            direct: Some(direct),
            state: Mutex::new(OutletState {
                queue: tx,
                backlog: 0,
                closed: false,
            }),
        };
        (Arc::new(outlet), rx)
    }

    fn backlog(outlet: &Outlet) -> usize {
        outlet.state.lock().unwrap().backlog
    }

    /// Message `n`: 1,000 bytes that say which one they are.
    fn numbered(n: u32) -> Bytes {
        let mut m = vec![(n % 251) as u8; 1000];
        m[..4].copy_from_slice(&n.to_be_bytes());
        Bytes::from(m)
    }

    /// Reads server frames (binary, 126-form length) until EOF, checking they are the
    /// numbered messages in order; returns how many.
    async fn read_numbered(mut client: TcpStream) -> u32 {
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.unwrap();
        let mut rest = &wire[..];
        let mut n = 0;
        while !rest.is_empty() {
            assert_eq!(rest[..2], [0x82, 126], "frame {n} starts where one must");
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            assert_eq!(
                &rest[4..4 + len],
                &numbered(n)[..],
                "frame {n} in order, whole"
            );
            rest = &rest[4 + len..];
            n += 1;
        }
        n
    }

    #[tokio::test]
    async fn direct_writes_fall_back_to_the_queue_in_order() {
        let (server, client) = small_pair().await;
        let (read, write) = server.into_split();
        let (outlet, mut queue) = outlet(write);
        // Direct writes until the socket takes only part of one (or none).
        let mut sent = 0;
        while backlog(&outlet) == 0 {
            outlet.send(numbered(sent)).unwrap();
            sent += 1;
            assert!(sent < 1_000_000, "the send buffer never filled");
        }
        assert!(sent > 0);
        // From now on everything queues behind the rest, even once the peer reads.
        let reader = tokio::spawn(read_numbered(client));
        for _ in 0..20 {
            outlet.send(numbered(sent)).unwrap();
            sent += 1;
        }
        assert_eq!(backlog(&outlet), 21);
        assert_eq!(queue.len(), 21);
        // The connection task's part, with senders still sending meanwhile.
        let mut io = DirectIo {
            read,
            outlet: Arc::clone(&outlet),
        };
        let mut extra = 0;
        while backlog(&outlet) > 0 {
            let data = queue.recv().await.unwrap();
            io.write_all(&data).await.unwrap();
            outlet.written();
            if extra < 5 {
                outlet.send(numbered(sent)).unwrap();
                sent += 1;
                extra += 1;
            }
        }
        assert!(queue.is_empty());
        // Drained: the next send is written directly again (the peer is reading).
        outlet.send(numbered(sent)).unwrap();
        sent += 1;
        io.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), sent);
    }

    #[tokio::test]
    async fn a_shut_outlet_refuses() {
        let (server, _client) = small_pair().await;
        let (_read, write) = server.into_split();
        let (outlet, _queue) = outlet(write);
        outlet.shut();
        assert!(matches!(
            outlet.send(Bytes::from_static(b"late")),
            Err(SendError::FlowClosing(_))
        ));
    }
}
