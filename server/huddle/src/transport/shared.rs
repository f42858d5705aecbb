//! State shared by the handle and every transport task: the flow table, connection limits and
//! the shutdown plumbing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use huddle_sip::idmap::IdMap;
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
    queue: mpsc::Sender<Bytes>,
    close: Arc<Notify>,
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

    /// Adds a flow to the table (and the address index) and gives its driver end.
    pub(crate) fn register_flow(&self, transport: Transport, remote: SocketAddr) -> FlowIo {
        let mut table = self.table();
        self.insert_flow(&mut table, transport, remote, false, None)
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
            return table.enqueue(id, first).map(|()| (id, None));
        }
        let io = self.insert_flow(&mut table, transport, remote, true, Some(first))?;
        Ok((io.id, Some(io)))
    }

    fn insert_flow(
        &self,
        table: &mut FlowTable,
        transport: Transport,
        remote: SocketAddr,
        outbound: bool,
        first: Option<Bytes>,
    ) -> Result<FlowIo, SendError> {
        let id = FlowId::next();
        let (queue_tx, queue_rx) = mpsc::channel(self.config.write_queue_len);
        if let Some(first) = first {
            queue_tx
                .try_send(first)
                .map_err(|_| SendError::QueueFull(id))?;
        }
        let close = Arc::new(Notify::new());
        let entry = FlowEntry {
            info: FlowInfo {
                transport,
                remote,
                outbound,
            },
            queue: queue_tx,
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
        self.table().enqueue(id, data).map(|()| id)
    }

    /// Queues on the open flow to `addr`, if there is one.
    pub(crate) fn enqueue_to_address(
        &self,
        transport: Transport,
        addr: SocketAddr,
        data: &Bytes,
    ) -> Option<Result<FlowId, SendError>> {
        let table = self.table();
        let id = *table.by_addr.get(&(transport, addr))?;
        Some(table.enqueue(id, data.clone()).map(|()| id))
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
    fn enqueue(&self, id: FlowId, data: Bytes) -> Result<(), SendError> {
        let entry = self.flows.get(&id).ok_or(SendError::UnknownFlow(id))?;
        entry.queue.try_send(data).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull(id),
            mpsc::error::TrySendError::Closed(_) => SendError::FlowClosing(id),
        })
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

/// The position of `transport` in [`Transport::ALL`] (the metrics' gauge index).
fn transport_index(transport: Transport) -> usize {
    Transport::ALL
        .iter()
        .position(|t| *t == transport)
        .unwrap_or(0)
}
