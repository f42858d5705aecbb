//! The host's state store: one key-value store that the registrar, the host and every plugin
//! share, behind the [`Store`] trait so that the engine can change without touching its users.
//!
//! Two engines implement it today: [`RedbStore`] (an embedded redb file; the default) and
//! [`MemoryStore`] (no disk: for deployments that want none, and for tests). A Redis engine is
//! meant to join them; nothing in the trait names an engine type, and engine errors reach callers
//! only as the boxed `source` of a [`StoreError`].
//!
//! # Keyspaces
//!
//! Keys are byte strings ordered bytewise. The keyspace is divided by prefix, each a
//! [`Namespace`]:
//!
//! | prefix | owner | others |
//! |---|---|---|
//! | `location/<aor>/<binding>` | the registrar: one [`crate::registrar::BindingRecord`] per binding (contact, transport, address, `flow` for connection-bound ones, expiry), written back once per `[registrar] persist_interval_ms` (1 s by default) | plugins and the proxy read and watch |
//! | `credentials/…` | the host (digest credentials) | nobody |
//! | `plugin/<name>/…` | the plugin `<name>` | other plugins may read and watch what it documents |
//!
//! A [`Scoped`] view confines its holder to one namespace: its keys are relative to the prefix,
//! so nothing outside can be named, and a read-only view refuses writes. Plugins only ever get
//! scoped views. Plugin names are checked ([`Namespace::plugin`]) so that one plugin's prefix can
//! never contain another's.
//!
//! Values are opaque bytes to the store; by convention they are [`Record`]s (a format byte and a
//! JSON body), so that a restart or an upgrade reads what an older build wrote and a downgrade
//! refuses, rather than misreads, what a newer one wrote.
//!
//! # Operations
//!
//! Every operation is atomic and linearizable on one store: [`Store::put`], [`Store::delete`],
//! [`Store::compare_and_swap`] (`expected: None` means "must be absent", `new: None` means
//! "delete"), and [`Store::apply_batch`], which commits several puts and deletes in one
//! transaction (the registrar writes all bindings of a REGISTER at once). [`Store::scan_prefix`]
//! returns one bounded page (at most [`MAX_SCAN_PAGE`] entries) and says whether there is more;
//! [`scan_pages`] walks a prefix page by page. Pages are separate reads: a write between two
//! pages may or may not show up in the later one.
//!
//! # Calling from async code
//!
//! The methods are synchronous, because redb is. A redb write waits for `fsync` (around a
//! millisecond or more), so call it from tokio with `tokio::task::spawn_blocking` (clone the
//! `Arc<dyn Store>` into the closure), or from a dedicated thread. Reads, and every
//! [`MemoryStore`] call, are short and may run on a runtime thread.
//!
//! # Watches
//!
//! [`Store::watch_prefix`] returns a [`Watch`] that yields a [`Change`] (key and new value, `None`
//! for a delete) for every write committed under the prefix after the watch was created, in commit
//! order. A batch yields one change per effective operation, in the batch's order; deleting an
//! absent key and a failed compare-and-swap yield nothing.
//!
//! Each watch has a bounded channel ([`DEFAULT_WATCH_CAPACITY`] changes unless configured).
//! Writers never wait for a watcher. When a watcher's channel is full, its changes are dropped
//! until the reader has drained everything queued; the reader then receives
//! [`WatchEvent::Lagged`]: every change before the marker was delivered and every change after it
//! will be, and the reader must rescan the prefix to learn what was dropped. So a slow watcher
//! costs bounded memory and never blocks the SIP core. Dropping the `Watch` unregisters it; when
//! the store is dropped, `recv` returns `None`.
//!
//! Watches see the writes made through this store handle (and any [`Scoped`] views of it). A
//! distributed engine will deliver other nodes' writes through the same interface, later than
//! they return there; [`Store::watches_see_every_write`] says whether a handle is the only
//! writer, so that something kept in memory by a watch is exact.
//!
//! # Durability
//!
//! [`RedbStore`] commits every write with immediate durability: once a call returns `Ok`, the
//! write survives `kill -9` and power loss (tested by killing a writer process and checking
//! every acknowledged key). [`apply_batch`](Store::apply_batch) amortises the `fsync` over many
//! writes (the registrar writes its bindings back as one durable batch per interval, see
//! `registrar`'s module docs). The one exception is
//! [`apply_batch_deferred`](Store::apply_batch_deferred), for state written behind that may be
//! visible before it is durable: durable with the next durable commit or
//! [`sync`](Store::sync). Opening a file that is damaged, or not a Huddle store, fails with an error naming the
//! path and writes nothing to it.
//!
//! # Measuring throughput
//!
//! `cargo test --release -p huddle --test store_bench -- --ignored --nocapture` prints puts per
//! second for each engine: single puts, and batches of 100. It asserts nothing about time; use it
//! to compare before and after a change on the same machine.

mod error;
mod memory;
mod namespace;
mod record;
mod redb_store;
mod watch;

pub use error::{EngineError, NameFault, Result, StoreError};
pub use memory::MemoryStore;
pub use namespace::{Access, Namespace, Scoped, MAX_PLUGIN_NAME_LEN};
pub use record::Record;
pub use redb_store::{RedbOptions, RedbStore};
pub use watch::{Change, Watch, WatchEvent, DEFAULT_WATCH_CAPACITY};

use std::fmt;

/// The longest key the store accepts, in bytes, including any namespace prefix.
pub const MAX_KEY_LEN: usize = 4 * 1024;
/// The longest value the store accepts, in bytes.
pub const MAX_VALUE_LEN: usize = 4 * 1024 * 1024;
/// The most entries one [`Store::scan_prefix`] call returns, whatever limit is asked for.
pub const MAX_SCAN_PAGE: usize = 1024;

/// One key and its value, as scans return them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The answer to a failed [`Store::compare_and_swap`]: the value actually found (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasConflict {
    /// The key's current value, `None` if the key is absent.
    pub current: Option<Vec<u8>>,
}

impl fmt::Display for CasConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.current {
            Some(v) => write!(
                f,
                "compare-and-swap conflict: the key holds {} bytes",
                v.len()
            ),
            None => f.write_str("compare-and-swap conflict: the key is absent"),
        }
    }
}

impl std::error::Error for CasConflict {}

/// One write in an [`Store::apply_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Remove `key` if present.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl Op {
    /// A put.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A delete.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Op::Delete { key: key.into() }
    }

    /// The key this operation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// One page of a prefix scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Entries in key order.
    pub entries: Vec<Entry>,
    /// Whether more entries under the prefix follow the last one returned.
    pub more: bool,
}

impl ScanPage {
    /// The `start_after` argument that continues this scan, or `None` when the scan is complete.
    pub fn resume_after(&self) -> Option<&[u8]> {
        if self.more {
            self.entries.last().map(|(k, _)| k.as_slice())
        } else {
            None
        }
    }
}

/// The host's state store. See the [module docs](self) for keyspaces, watch semantics and
/// durability.
///
/// Object-safe, shared as `Arc<dyn Store>`. The methods block (on disk I/O for [`RedbStore`]);
/// from async code, call writes through `tokio::task::spawn_blocking`.
pub trait Store: Send + Sync + fmt::Debug {
    /// The value at `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Sets `key` to `value`. Durable when it returns (for a durable engine).
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()>;

    /// Removes `key`; `true` if it was present.
    fn delete(&self, key: &[u8]) -> Result<bool>;

    /// Atomically replaces `key`'s value with `new` if it currently equals `expected`.
    /// `expected: None` requires the key to be absent; `new: None` deletes it. A mismatch is not
    /// an error of the store: it is the inner `Err`, carrying the value found.
    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), CasConflict>>;

    /// Up to `min(limit, MAX_SCAN_PAGE)` entries whose keys start with `prefix`, in key order,
    /// beginning after `start_after` (or at the start of the prefix). Continue with
    /// [`ScanPage::resume_after`], or use [`scan_pages`].
    fn scan_prefix(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage>;

    /// Commits all of `ops`, in order, in one transaction: all of them or none.
    fn apply_batch(&self, ops: Vec<Op>) -> Result<()>;

    /// [`Store::apply_batch`] for state written behind (the registrar's bindings): readers and
    /// watchers see the commit at once, as any other, but the engine may leave it to the next
    /// durable commit or [`Store::sync`] to reach the disk (a crash before that loses it).
    /// Durable by default.
    fn apply_batch_deferred(&self, ops: Vec<Op>) -> Result<()> {
        self.apply_batch(ops)
    }

    /// Makes every commit of [`Store::apply_batch_deferred`] so far durable. Nothing to do by
    /// default.
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// Watches every write committed under `prefix` from now on. See the module docs.
    fn watch_prefix(&self, prefix: &[u8]) -> Result<Watch>;

    /// How many watches are registered on this store (for metrics and tests).
    fn watch_count(&self) -> usize;

    /// Whether this handle's watches see every write to the store: nothing but this handle
    /// writes it (no other process, no other node), and a write's watchers are notified before
    /// the write returns. Then a copy of a prefix kept by a watch, drained before each use, is
    /// exact for every write completed before that use (the host's account set for
    /// `user_exists` relies on it). `false` by default: an engine shared with other writers
    /// says nothing, and such copies read the store instead.
    fn watches_see_every_write(&self) -> bool {
        false
    }
}

/// Walks every entry under `prefix`, one page of at most `page_size` entries per item, so that a
/// huge prefix is never held in memory at once. Stops after the first error.
pub fn scan_pages<'s>(store: &'s dyn Store, prefix: &[u8], page_size: usize) -> ScanPages<'s> {
    ScanPages {
        store,
        prefix: prefix.to_vec(),
        after: None,
        page_size: page_size.max(1),
        done: false,
    }
}

/// The iterator of [`scan_pages`].
#[derive(Debug)]
pub struct ScanPages<'s> {
    store: &'s dyn Store,
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
    page_size: usize,
    done: bool,
}

impl Iterator for ScanPages<'_> {
    type Item = Result<Vec<Entry>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let page = match self
            .store
            .scan_prefix(&self.prefix, self.after.as_deref(), self.page_size)
        {
            Ok(page) => page,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        self.after = page.resume_after().map(<[u8]>::to_vec);
        self.done = self.after.is_none();
        if page.entries.is_empty() {
            return None;
        }
        Some(Ok(page.entries))
    }
}

// Limits shared by the engines, checked on full keys.
fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::KeyTooLarge {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(StoreError::ValueTooLarge {
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

fn check_op(op: &Op) -> Result<()> {
    check_key(op.key())?;
    if let Op::Put { value, .. } = op {
        check_value(value)?;
    }
    Ok(())
}

// Where a prefix scan starts: after `start_after` when that lies at or beyond the prefix,
// otherwise at the prefix itself.
fn scan_start<'a>(prefix: &'a [u8], start_after: Option<&'a [u8]>) -> std::ops::Bound<&'a [u8]> {
    use std::ops::Bound;
    match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    }
}
