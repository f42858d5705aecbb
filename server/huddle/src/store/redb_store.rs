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
//! The file carries a small metadata table with the store's layout version. A fresh (empty) file
//! gets it on first open; a redb file with tables but without it belongs to someone else and is
//! refused, as is a layout newer than this build knows.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use ::redb::{
    Builder, ConcurrencyMode, Database, DatabaseError, Durability, ReadableDatabase, ReadableTable,
    StorageError, TableDefinition, WriteTransaction,
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
        let db = builder.create(&path).map_err(|e| open_error(&path, e))?;
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
