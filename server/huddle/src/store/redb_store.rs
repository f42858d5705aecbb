//! The embedded engine: one redb file, one table of byte keys to byte values.
//!
//! Every write is one redb write transaction committed with `Durability::Immediate`, so it is on
//! disk when the call returns (except `apply_batch_deferred`: `Durability::None`, on disk with
//! the next immediate commit). redb runs one write transaction at a time; we additionally hold our
//! own commit lock from the start of the transaction until its watchers are notified, so that
//! notification order is commit order.
//!
//! Puts and deletes are **group-committed**: callers that arrive while a commit is running
//! queue their operation, and the next caller to find no commit running (the leader) writes
//! every queued operation in one transaction and one `fsync`, then wakes the others. Each call
//! still returns only once its own write is durable; under concurrency the `fsync` is shared
//! (the messaging plugin's store writers rely on this for its `202 Accepted`s).
//!
//! The file grows through [`ZeroedGrowth`], redb's file backend writing zeros into the space
//! the file grows by ahead of redb's first writes there: on ext4 a commit into a hole made its
//! `fdatasync` allocate blocks and write the extent and inode blocks synchronously, each commit,
//! for as long as the file grows (bench/NOTES.md, branch msgstore, 2026-11-28).
//!
//! The file carries a small metadata table with the store's layout version. A fresh (empty) file
//! gets it on first open; a redb file with tables but without it belongs to someone else and is
//! refused, as is a layout newer than this build knows.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use ::redb::{
    BackendError, Builder, ConcurrencyMode, Database, DatabaseError, Durability, ReadableDatabase,
    ReadableTable, StorageBackend, StorageError, TableDefinition, WriteTransaction,
};

use super::error::{EngineError, Result, StoreError};
use super::watch::{Change, WatchHub, DEFAULT_WATCH_CAPACITY};
use super::{
    check_key, check_op, check_value, scan_start, CasConflict, Op, ScanPage, Store, Watch,
    MAX_SCAN_PAGE,
};

const KV: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("huddle_kv");
const META: TableDefinition<'static, &str, u64> = TableDefinition::new("huddle_meta");
const LAYOUT_KEY: &str = "layout_version";
/// The layout this build writes: the tables above.
const LAYOUT_VERSION: u64 = 1;

/// How to open a [`RedbStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedbOptions {
    /// redb's page cache, in bytes. Default 64 MiB.
    pub cache_size: usize,
    /// Each watcher's channel capacity, in changes. Default [`DEFAULT_WATCH_CAPACITY`].
    pub watch_capacity: usize,
    /// Verify every page checksum when opening (reads the whole file once). Default `true`:
    /// it turns a file damaged outside redb into [`StoreError::Corrupt`] at open instead of a
    /// failure, or a panic inside redb, later.
    pub check_integrity_on_open: bool,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            cache_size: 64 * 1024 * 1024,
            watch_capacity: DEFAULT_WATCH_CAPACITY,
            check_integrity_on_open: true,
        }
    }
}

/// A [`Store`] in a redb file. One handle per file: a second open, from this process or another,
/// fails with [`StoreError::AlreadyOpen`].
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    commit: Mutex<()>,
    hub: WatchHub,
    group: Group,
}

/// Puts and deletes waiting for, or in, a group commit.
#[derive(Debug, Default)]
struct Group {
    state: Mutex<GroupState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct GroupState {
    /// Operations not yet taken by a leader, with their tickets, in arrival order.
    queue: Vec<(u64, Op)>,
    /// A leader is committing a batch.
    leader: bool,
    next_ticket: u64,
    /// Outcomes of committed batches, by ticket: whether the key existed before (for deletes),
    /// or the error text (the engine's error cannot be cloned to every caller).
    results: HashMap<u64, std::result::Result<bool, String>>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

fn engine(e: impl Into<::redb::Error>) -> EngineError {
    Box::new(e.into())
}

fn backend<E: Into<::redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Backend {
        operation,
        source: engine(e),
    }
}

impl RedbStore {
    /// Opens the store at `path` with default options, creating the file if it does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &RedbOptions::default())
    }

    /// Opens the store at `path`, creating the file if it does not exist.
    pub fn open_with(path: impl AsRef<Path>, options: &RedbOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut builder = Builder::new();
        builder
            // One writer, this process: `huddle user` and any other opener are refused while
            // the server runs (`AlreadyOpen`), which `watches_see_every_write` promises and the
            // host's account set (`plugins/services.rs`, `Accounts`) relies on. redb's
            // default, said because of that.
            .set_concurrency_mode(ConcurrencyMode::ExclusiveWriter)
            .set_cache_size(options.cache_size)
            .set_check_integrity_on_open(options.check_integrity_on_open);
        // What `Builder::create` does, with the growth written as zeros (`ZeroedGrowth`).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(ZeroedGrowth::new)
            .map_err(|e| open_error(&path, e.into()))?;
        let db = builder
            .create_with_backend(file)
            .map_err(|e| open_error(&path, e))?;
        init_layout(&db, &path)?;
        tracing::info!(path = %path.display(), "state store opened");
        Ok(Self {
            db,
            path,
            commit: Mutex::new(()),
            hub: WatchHub::new(options.watch_capacity),
            group: Group::default(),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    // Poisoning of the commit lock carries no meaning: it guards no data, and a write
    // transaction that was in flight when a thread panicked was dropped, which aborts it.
    fn lock_commit(&self) -> MutexGuard<'_, ()> {
        self.commit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin_write(&self) -> Result<WriteTransaction> {
        // Immediate is redb's default; say it, since acknowledged writes depend on it.
        self.begin_write_with(Durability::Immediate)
    }

    fn begin_write_with(&self, durability: Durability) -> Result<WriteTransaction> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(backend("begin a write transaction"))?;
        txn.set_durability(durability)
            .map_err(backend("set durability"))?;
        Ok(txn)
    }

    /// One transaction with every op of `ops`, committed with `durability`.
    fn apply_batch_with(&self, ops: Vec<Op>, durability: Durability) -> Result<()> {
        ops.iter().try_for_each(check_op)?;
        if ops.is_empty() {
            return Ok(());
        }
        let _commit = self.lock_commit();
        // An error below drops `txn` uncommitted, which aborts it: the batch is all or nothing.
        let txn = self.begin_write_with(durability)?;
        let mut changes = Vec::with_capacity(ops.len());
        {
            let mut table = txn.open_table(KV).map_err(backend("open the table"))?;
            for op in ops {
                match op {
                    Op::Put { key, value } => {
                        table
                            .insert(key.as_slice(), value.as_slice())
                            .map_err(backend("write a key"))?;
                        changes.push(Change {
                            key,
                            value: Some(value),
                        });
                    }
                    Op::Delete { key } => {
                        let removed = table
                            .remove(key.as_slice())
                            .map_err(backend("delete a key"))?
                            .is_some();
                        if removed {
                            changes.push(Change { key, value: None });
                        }
                    }
                }
            }
        }
        self.commit(txn, &changes)
    }

    fn commit(&self, txn: WriteTransaction, changes: &[Change]) -> Result<()> {
        txn.commit().map_err(backend("commit a write"))?;
        self.hub.notify(changes);
        Ok(())
    }

    // Poisoning carries no meaning here either: the state is updated in whole steps.
    fn lock_group(&self) -> MutexGuard<'_, GroupState> {
        self.group
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `op` for the next group commit and returns once it is durable: whether the key
    /// existed before (meaningful for deletes). See the module docs.
    fn grouped(&self, op: Op) -> Result<bool> {
        let mut st = self.lock_group();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push((ticket, op));
        loop {
            if let Some(outcome) = st.results.remove(&ticket) {
                return outcome.map_err(|text| StoreError::Backend {
                    operation: "group commit",
                    source: text.into(),
                });
            }
            if st.leader {
                st = self
                    .group
                    .done
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            st.leader = true;
            let batch = std::mem::take(&mut st.queue);
            drop(st);
            // A panic inside the engine must not leave the leader flag set (every later writer
            // would wait forever): it fails this batch instead.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.commit_batch(&batch)
            }))
            .unwrap_or_else(|_| {
                Err(StoreError::Backend {
                    operation: "group commit",
                    source: "panic while committing".into(),
                })
            });
            st = self.lock_group();
            match outcome {
                Ok(existed) => {
                    for ((t, _), e) in batch.iter().zip(existed) {
                        st.results.insert(*t, Ok(e));
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    for (t, _) in &batch {
                        st.results.insert(*t, Err(text.clone()));
                    }
                }
            }
            st.leader = false;
            self.group.done.notify_all();
        }
    }

    /// One transaction for a batch of puts and deletes; whether each key existed before.
    fn commit_batch(&self, batch: &[(u64, Op)]) -> Result<Vec<bool>> {
        let _commit = self.lock_commit();
        let txn = self.begin_write()?;
        let mut changes = Vec::with_capacity(batch.len());
        let mut existed = Vec::with_capacity(batch.len());
        {
            let mut table = txn.open_table(KV).map_err(backend("open the table"))?;
            for (_, op) in batch {
                match op {
                    Op::Put { key, value } => {
                        let old = table
                            .insert(key.as_slice(), value.as_slice())
                            .map_err(backend("write a key"))?;
                        existed.push(old.is_some());
                        changes.push(Change {
                            key: key.clone(),
                            value: Some(value.clone()),
                        });
                    }
                    Op::Delete { key } => {
                        let removed = table
                            .remove(key.as_slice())
                            .map_err(backend("delete a key"))?
                            .is_some();
                        existed.push(removed);
                        if removed {
                            changes.push(Change {
                                key: key.clone(),
                                value: None,
                            });
                        }
                    }
                }
            }
        }
        if changes.is_empty() {
            // Only deletes of absent keys: no commit, no fsync, no event.
            txn.abort().map_err(backend("abort a write"))?;
        } else {
            self.commit(txn, &changes)?;
        }
        Ok(existed)
    }
}

/// Bytes of zeros written ahead of redb's writes into space the file grew by (see
/// [`ZeroedGrowth`]).
const ZERO_CHUNK: u64 = 1 << 20;
/// A write this far past the zeroed part of the grown space is not worth the zeros in between:
/// the rest of that growth is left as it is. With it, one write adds at most two chunks of
/// zeros to its commit.
const MAX_ZERO_GAP: u64 = ZERO_CHUNK;

/// redb's file backend, except that the space the file grows by is written with zeros ahead of
/// redb's first writes into it, a chunk ([`ZERO_CHUNK`]) at a time.
///
/// redb grows its file with `set_len`: on ext4 the new space is a hole, so each page redb then
/// writes there makes the commit's `fdatasync` allocate blocks (as unwritten extents, converted
/// once written) and write the inode and extent blocks synchronously, two more device writes
/// and waits per commit while the file grows (and an offline message store grows all the
/// time). Written zeros take that cost once per chunk; redb's later writes land on allocated,
/// written blocks and its `fdatasync` is its pages and the device flush. What the file holds is
/// unchanged: the zeros are written only where it reads as zeros, into space added by
/// `set_len` that redb has not written yet (everything from `zeroed` to `end`), in front of or
/// around redb's own write, never over it; they are made durable with redb's next sync, like
/// its own writes. Nothing is zeroed ahead at open: the file is taken as it is.
#[derive(Debug)]
struct ZeroedGrowth {
    file: ::redb::backends::FileBackend,
    grown: Mutex<Grown>,
}

/// The space added by the last growths: `zeroed..end` has not been written since.
#[derive(Debug)]
struct Grown {
    zeroed: u64,
    end: u64,
}

impl ZeroedGrowth {
    fn new(file: std::fs::File) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(ZeroedGrowth {
            // Infallible in this redb (its `DatabaseError` is for older APIs).
            file: ::redb::backends::FileBackend::new(file)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            grown: Mutex::new(Grown {
                zeroed: len,
                end: len,
            }),
        })
    }

    fn grown(&self) -> MutexGuard<'_, Grown> {
        // Updated in whole steps: a poisoned value is still a consistent one.
        self.grown.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_zeros(&self, from: u64, to: u64) -> std::io::Result<()> {
        // In the zero-filled data segment: costs no memory until read, and then the zero page.
        static ZEROS: [u8; ZERO_CHUNK as usize] = [0; ZERO_CHUNK as usize];
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZERO_CHUNK);
            // `n` is at most the buffer's length.
            self.file.write(at, &ZEROS[..n as usize])?;
            at += n;
        }
        Ok(())
    }
}

impl StorageBackend for ZeroedGrowth {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut grown = self.grown();
        let old = self.file.len()?;
        self.file.set_len(len)?;
        if len > old {
            // Only `old..len` is known to be unwritten (`end` is the length whenever
            // `zeroed..end` is not empty, since every length change comes through here).
            if grown.zeroed >= grown.end || grown.end != old {
                grown.zeroed = old;
            }
            grown.end = len;
        } else {
            grown.end = grown.end.min(len);
            grown.zeroed = grown.zeroed.min(len);
        }
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let end = offset.saturating_add(data.len() as u64);
        let mut grown = self.grown();
        if end > grown.zeroed && offset < grown.end {
            if offset > grown.zeroed.saturating_add(MAX_ZERO_GAP) {
                grown.zeroed = grown.end;
            } else {
                let to = end
                    .div_ceil(ZERO_CHUNK)
                    .saturating_mul(ZERO_CHUNK)
                    .min(grown.end);
                if offset > grown.zeroed {
                    self.write_zeros(grown.zeroed, offset)?;
                }
                self.write_zeros(end, to)?;
                grown.zeroed = to.max(end);
            }
        }
        drop(grown);
        self.file.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

fn open_error(path: &Path, e: DatabaseError) -> StoreError {
    let path = path.to_path_buf();
    match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen { path },
        DatabaseError::UpgradeRequired(format) => StoreError::UpgradeRequired { path, format },
        DatabaseError::Storage(StorageError::Corrupted(_)) => StoreError::Corrupt {
            path,
            source: engine(e),
        },
        // redb reports a file that is not a database as an InvalidData I/O error, and one cut
        // short inside its header as UnexpectedEof.
        DatabaseError::Storage(StorageError::Io(ref io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            StoreError::Corrupt {
                path,
                source: engine(e),
            }
        }
        e => StoreError::Open {
            path,
            source: engine(e),
        },
    }
}

// Checks the layout version, writing it (and creating the table) into a fresh file.
fn init_layout(db: &Database, path: &Path) -> Result<()> {
    let open = |e: EngineError| StoreError::Open {
        path: path.to_path_buf(),
        source: e,
    };
    let mut txn = db.begin_write().map_err(|e| open(engine(e)))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| open(engine(e)))?;
    let has_tables = txn
        .list_tables()
        .map_err(|e| open(engine(e)))?
        .next()
        .is_some();
    {
        let mut meta = txn.open_table(META).map_err(|e| open(engine(e)))?;
        let found = meta
            .get(LAYOUT_KEY)
            .map_err(|e| open(engine(e)))?
            .map(|v| v.value());
        match found {
            Some(v) if v > LAYOUT_VERSION => {
                return Err(StoreError::LayoutVersion {
                    path: path.to_path_buf(),
                    found: v,
                    supported: LAYOUT_VERSION,
                })
            }
            Some(_) => {}
            None if has_tables => {
                return Err(StoreError::Foreign {
                    path: path.to_path_buf(),
                })
            }
            None => {
                meta.insert(LAYOUT_KEY, LAYOUT_VERSION)
                    .map_err(|e| open(engine(e)))?;
            }
        }
    }
    txn.open_table(KV).map_err(|e| open(engine(e)))?;
    txn.commit().map_err(|e| open(engine(e)))
}

impl Store for RedbStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let txn = self
            .db
            .begin_read()
            .map_err(backend("begin a read transaction"))?;
        let table = txn.open_table(KV).map_err(backend("open the table"))?;
        let value = table.get(key).map_err(backend("read a key"))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key)?;
        check_value(value)?;
        self.grouped(Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        })
        .map(|_| ())
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        self.grouped(Op::Delete { key: key.to_vec() })
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), CasConflict>> {
        check_key(key)?;
        if let Some(v) = new {
            check_value(v)?;
        }
        let _commit = self.lock_commit();
        let txn = self.begin_write()?;
        let change = {
            let mut table = txn.open_table(KV).map_err(backend("open the table"))?;
            let current = table
                .get(key)
                .map_err(backend("read a key"))?
                .map(|v| v.value().to_vec());
            if current.as_deref() != expected {
                drop(table);
                txn.abort().map_err(backend("abort a write"))?;
                return Ok(Err(CasConflict { current }));
            }
            match new {
                Some(v) => {
                    table.insert(key, v).map_err(backend("write a key"))?;
                    Some(Change {
                        key: key.to_vec(),
                        value: Some(v.to_vec()),
                    })
                }
                // Expected and found a value: delete it. Expected and found absence: no-op.
                None if current.is_some() => {
                    table.remove(key).map_err(backend("delete a key"))?;
                    Some(Change {
                        key: key.to_vec(),
                        value: None,
                    })
                }
                None => None,
            }
        };
        match change {
            Some(change) => self.commit(txn, &[change])?,
            None => txn.abort().map_err(backend("abort a write"))?,
        }
        Ok(Ok(()))
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage> {
        let limit = limit.min(MAX_SCAN_PAGE);
        let txn = self
            .db
            .begin_read()
            .map_err(backend("begin a read transaction"))?;
        let table = txn.open_table(KV).map_err(backend("open the table"))?;
        let range = table
            .range::<&[u8]>((scan_start(prefix, start_after), Bound::Unbounded))
            .map_err(backend("scan a prefix"))?;
        let mut entries = Vec::new();
        let mut more = false;
        for item in range {
            let (k, v) = item.map_err(backend("scan a prefix"))?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            if entries.len() == limit {
                more = true;
                break;
            }
            entries.push((k.to_vec(), v.value().to_vec()));
        }
        Ok(ScanPage { entries, more })
    }

    fn apply_batch(&self, ops: Vec<Op>) -> Result<()> {
        self.apply_batch_with(ops, Durability::Immediate)
    }

    // redb's non-durable commit: visible at once, no fsync, no freed-page bookkeeping on disk;
    // the next durable commit (anyone's, or `sync`) persists it with everything before it.
    fn apply_batch_deferred(&self, ops: Vec<Op>) -> Result<()> {
        self.apply_batch_with(ops, Durability::None)
    }

    fn sync(&self) -> Result<()> {
        let _commit = self.lock_commit();
        self.begin_write()?
            .commit()
            .map_err(backend("commit a write"))
    }

    fn watch_prefix(&self, prefix: &[u8]) -> Result<Watch> {
        // Registered under the commit lock, so the watch starts exactly between two commits.
        let _commit = self.lock_commit();
        Ok(self.hub.subscribe(prefix))
    }

    fn watch_count(&self) -> usize {
        self.hub.len()
    }

    // The file is opened `ExclusiveWriter` (`open_with`): no other process writes it while
    // this handle lives, and every commit notifies the hub before it returns.
    fn watches_see_every_write(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt;

    use ::redb::StorageBackend;

    use super::{ZeroedGrowth, MAX_ZERO_GAP, ZERO_CHUNK};

    /// The file reads exactly as a plain file would after the same lengths and writes (a model
    /// in memory), whatever order redb writes the grown space in: growth, shrinking, writes
    /// behind, inside and far ahead of the zeroed part, across its end.
    #[test]
    fn a_file_grown_with_zeros_reads_as_one_grown_with_set_len() {
        let dir = tempfile::tempdir().unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below.max(1)
        };
        for round in 0..4 {
            let path = dir.path().join(format!("f{round}"));
            let file = std::fs::File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            let backend = ZeroedGrowth::new(file).unwrap();
            let mut model: Vec<u8> = Vec::new();
            for step in 0..300u64 {
                match next(10) {
                    0 | 1 => {
                        let len = model.len() as u64 + next(3 * ZERO_CHUNK) + 1;
                        backend.set_len(len).unwrap();
                        model.resize(len as usize, 0);
                    }
                    2 if step % 7 == 0 => {
                        let len = next(model.len() as u64 + 1);
                        backend.set_len(len).unwrap();
                        model.truncate(len as usize);
                    }
                    _ if !model.is_empty() => {
                        let len = model.len() as u64;
                        // Mostly near the end of what was written, sometimes anywhere or far on.
                        let at = match next(4) {
                            0 => next(len),
                            _ => len.saturating_sub(next(MAX_ZERO_GAP + ZERO_CHUNK)),
                        };
                        let n = (next(3 * 4096) + 1).min(len - at);
                        let byte = (step % 251 + 1) as u8;
                        backend.write(at, &vec![byte; n as usize]).unwrap();
                        model[at as usize..(at + n) as usize].fill(byte);
                    }
                    _ => {}
                }
                assert_eq!(backend.len().unwrap(), model.len() as u64);
            }
            let mut read = vec![0u8; model.len()];
            backend.read(0, &mut read).unwrap();
            assert!(read == model, "round {round}: contents differ");
            assert_eq!(std::fs::read(&path).unwrap(), model);
        }
    }

    /// Two threads writing interleaved pages of grown space (redb flushes from one thread,
    /// but reads and writes may come from several): every page holds its writer's bytes, the
    /// zeros never land on a page written by the other thread.
    #[test]
    fn concurrent_writes_into_grown_space_keep_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let backend = std::sync::Arc::new(ZeroedGrowth::new(file).unwrap());
        let pages = 3 * ZERO_CHUNK / 4096;
        backend.set_len(pages * 4096).unwrap();
        let threads: Vec<_> = (0..2u64)
            .map(|t| {
                let backend = backend.clone();
                std::thread::spawn(move || {
                    for page in (t..pages).step_by(2) {
                        backend.write(page * 4096, &[t as u8 + 1; 4096]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let read = std::fs::read(&path).unwrap();
        for (page, bytes) in read.chunks(4096).enumerate() {
            let want = (page % 2) as u8 + 1;
            assert!(bytes.iter().all(|b| *b == want), "page {page}");
        }
    }

    /// The point of it: redb's first write into grown space leaves the chunk around it
    /// allocated on disk (a hole before), so later writes there allocate nothing.
    #[cfg(unix)]
    #[test]
    fn grown_space_is_allocated_around_the_first_write_into_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::create_new(&path).unwrap();
        let backend = ZeroedGrowth::new(file).unwrap();
        backend.set_len(4 * ZERO_CHUNK).unwrap();
        let blocks = || std::fs::metadata(&path).unwrap().blocks() * 512;
        if blocks() >= ZERO_CHUNK {
            // A file system without holes: nothing to see here.
            return;
        }
        backend.write(4096, &[7; 4096]).unwrap();
        backend.sync_data().unwrap();
        if blocks() < 8192 {
            // Zeros stored as nothing (compression): the file system saves the allocation itself.
            return;
        }
        assert!(blocks() >= ZERO_CHUNK, "the first chunk is written whole");
        assert!(blocks() < 2 * ZERO_CHUNK, "and no more");
    }
}
