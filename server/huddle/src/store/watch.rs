//! Prefix watches: the fan-out of committed writes to bounded per-watcher channels.
//!
//! Every store owns one [`WatchHub`] and calls [`WatchHub::notify`] after each commit, while it
//! still holds whatever serialises its commits, so that each watcher sees changes in commit
//! order. Delivery is `try_send` into a bounded tokio channel and never waits: a writer is never
//! held up by a reader.
//!
//! When a watcher's channel is full, the change is dropped and the watcher is marked *lagged*;
//! from then on every change for it is dropped until its reader has drained the channel, at
//! which point the reader gets [`WatchEvent::Lagged`] and the watcher is live again. The lagged
//! flag is a per-watcher mutex that writers hold while they send and the reader takes only when
//! it finds the channel empty, so `Lagged` is reported exactly at the gap: every change before it
//! was delivered, every change after it is delivered, and the ones in between are the ones a
//! rescan recovers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};

/// The default capacity of a watcher's channel, in changes.
pub const DEFAULT_WATCH_CAPACITY: usize = 1024;

/// One committed write: the key and its new value, `None` for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key written, relative to the view the watch was taken on.
    pub key: Vec<u8>,
    /// The value after the write; `None` when the key was deleted.
    pub value: Option<Vec<u8>>,
}

/// What a [`Watch`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A committed write under the watched prefix.
    Change(Change),
    /// The watcher fell behind and some changes were dropped. Every change before this marker was
    /// delivered; every change after it will be. Rescan the prefix (after receiving the marker),
    /// then keep applying changes: they carry full values, so applying one the rescan already
    /// saw is harmless.
    Lagged,
}

// One registered watcher, as writers see it.
struct Watcher {
    prefix: Vec<u8>,
    tx: mpsc::Sender<Change>,
    lagged: Arc<Mutex<bool>>,
}

#[derive(Default)]
struct HubInner {
    watchers: Mutex<BTreeMap<u64, Watcher>>,
    next_id: AtomicU64,
}

/// The registry of a store's watchers. Stores own one and feed it their commits.
pub(crate) struct WatchHub {
    inner: Arc<HubInner>,
    capacity: usize,
}

// Poisoning only says that some thread panicked while holding the lock; the maps and flags guarded
// here are valid after any panic (each update is a single insert, remove or assignment).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WatchHub {
    /// A hub whose watchers buffer up to `capacity` changes (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn subscribe(&self, prefix: &[u8]) -> Watch {
        let (tx, rx) = mpsc::channel(self.capacity);
        let lagged = Arc::new(Mutex::new(false));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.watchers).insert(
            id,
            Watcher {
                prefix: prefix.to_vec(),
                tx,
                lagged: Arc::clone(&lagged),
            },
        );
        Watch {
            rx,
            lagged,
            hub: Arc::downgrade(&self.inner),
            id,
            strip: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.inner.watchers).len()
    }

    /// Delivers committed changes, in order. The caller must hold its commit lock, so that two
    /// commits' notifications never interleave.
    pub(crate) fn notify(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let mut watchers = lock(&self.inner.watchers);
        let mut gone = Vec::new();
        for (id, w) in watchers.iter() {
            let mut lagged = lock(&w.lagged);
            for change in changes.iter().filter(|c| c.key.starts_with(&w.prefix)) {
                if *lagged {
                    break;
                }
                match w.tx.try_send(change.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        *lagged = true;
                        tracing::debug!(
                            watcher = id,
                            prefix = %String::from_utf8_lossy(&w.prefix),
                            "store watcher lagged; dropping its changes until it catches up"
                        );
                    }
                    Err(TrySendError::Closed(_)) => {
                        gone.push(*id);
                        break;
                    }
                }
            }
        }
        for id in gone {
            watchers.remove(&id);
        }
    }
}

impl fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchHub")
            .field("watchers", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// A live prefix watch, from [`Store::watch_prefix`](super::Store::watch_prefix).
///
/// Yields every write committed under the prefix after the watch was created, in commit order,
/// or [`WatchEvent::Lagged`] where some were dropped because the reader was slow (see the
/// [module docs](super)). Dropping the `Watch` unregisters it. [`Watch::recv`] returns `None`
/// once the store is gone.
pub struct Watch {
    rx: mpsc::Receiver<Change>,
    lagged: Arc<Mutex<bool>>,
    hub: Weak<HubInner>,
    id: u64,
    // Bytes to cut from the front of each key: the namespace prefix of a scoped view.
    strip: usize,
}

enum Ready {
    Event(WatchEvent),
    Empty,
    Closed,
}

impl Watch {
    /// The next event, waiting for one. `None` when the store has been dropped and every event
    /// was received.
    ///
    /// Cancel-safe: when used in `tokio::select!` and another branch wins, no event is lost.
    pub async fn recv(&mut self) -> Option<WatchEvent> {
        loop {
            match self.ready() {
                Ready::Event(e) => return Some(e),
                Ready::Closed => return None,
                Ready::Empty => {
                    if let Some(change) = self.rx.recv().await {
                        return Some(self.event(change));
                    }
                    // Closed: loop once more to report a pending Lagged before None.
                }
            }
        }
    }

    /// The next event if one is ready now, without waiting. `None` if there is none (yet), or the
    /// store is gone; [`Watch::is_closed`] tells the two apart.
    pub fn try_recv(&mut self) -> Option<WatchEvent> {
        match self.ready() {
            Ready::Event(e) => Some(e),
            Ready::Empty | Ready::Closed => None,
        }
    }

    /// Whether the store behind this watch is gone (events already queued can still be read).
    pub fn is_closed(&self) -> bool {
        self.rx.is_closed()
    }

    fn ready(&mut self) -> Ready {
        if let Ok(change) = self.rx.try_recv() {
            return Ready::Event(self.event(change));
        }
        // Writers send only while holding this lock, so under it "empty" means no change is in
        // flight, and a set flag means the gap comes exactly here.
        let mut lagged = lock(&self.lagged);
        match self.rx.try_recv() {
            Ok(change) => {
                drop(lagged);
                Ready::Event(self.event(change))
            }
            Err(_) if *lagged => {
                *lagged = false;
                Ready::Event(WatchEvent::Lagged)
            }
            Err(TryRecvError::Disconnected) => Ready::Closed,
            Err(TryRecvError::Empty) => Ready::Empty,
        }
    }

    fn event(&self, mut change: Change) -> WatchEvent {
        // The hub only delivers keys under the registered prefix, which includes the namespace.
        change.key.drain(..self.strip.min(change.key.len()));
        WatchEvent::Change(change)
    }

    /// Removes `n` more leading bytes from every key this watch reports.
    pub(crate) fn strip_more(&mut self, n: usize) {
        self.strip += n;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            lock(&hub.watchers).remove(&self.id);
        }
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("id", &self.id)
            .field("queued", &self.rx.len())
            .finish_non_exhaustive()
    }
}
