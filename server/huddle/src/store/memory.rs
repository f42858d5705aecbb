//! The in-memory engine: a `BTreeMap` behind a lock. Nothing survives the process; everything
//! else (atomicity, ordering, watches, limits) behaves as in the durable engines.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::error::Result;
use super::watch::{Change, WatchHub, DEFAULT_WATCH_CAPACITY};
use super::{
    check_key, check_op, check_value, scan_start, CasConflict, Op, ScanPage, Store, Watch,
    MAX_SCAN_PAGE,
};

/// A [`Store`] held in memory.
#[derive(Debug)]
pub struct MemoryStore {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    hub: WatchHub,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store whose watchers buffer [`DEFAULT_WATCH_CAPACITY`] changes.
    pub fn new() -> Self {
        Self::with_watch_capacity(DEFAULT_WATCH_CAPACITY)
    }

    /// An empty store whose watchers buffer `capacity` changes (at least 1) before they lag.
    pub fn with_watch_capacity(capacity: usize) -> Self {
        Self {
            map: RwLock::new(BTreeMap::new()),
            hub: WatchHub::new(capacity),
        }
    }

    // Every mutation below is a single map operation that completes or does not happen, so a
    // panic elsewhere cannot leave the map half-updated and poisoning can be ignored.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.read().get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key)?;
        check_value(value)?;
        let mut map = self.write();
        map.insert(key.to_vec(), value.to_vec());
        // Notified under the write lock: commit order is notification order.
        self.hub.notify(&[Change {
            key: key.to_vec(),
            value: Some(value.to_vec()),
        }]);
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let mut map = self.write();
        let existed = map.remove(key).is_some();
        if existed {
            self.hub.notify(&[Change {
                key: key.to_vec(),
                value: None,
            }]);
        }
        Ok(existed)
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
        let mut map = self.write();
        let current = map.get(key).map(Vec::as_slice);
        if current != expected {
            return Ok(Err(CasConflict {
                current: current.map(<[u8]>::to_vec),
            }));
        }
        let change = match new {
            Some(v) => {
                map.insert(key.to_vec(), v.to_vec());
                Some(Some(v))
            }
            None => map.remove(key).map(|_| None),
        };
        if let Some(value) = change {
            self.hub.notify(&[Change {
                key: key.to_vec(),
                value: value.map(<[u8]>::to_vec),
            }]);
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
        let map = self.read();
        let range = map.range::<[u8], _>((scan_start(prefix, start_after), Bound::Unbounded));
        let mut iter = range.take_while(|(k, _)| k.starts_with(prefix));
        let entries: Vec<_> = iter
            .by_ref()
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let more = iter.next().is_some();
        Ok(ScanPage { entries, more })
    }

    fn apply_batch(&self, ops: Vec<Op>) -> Result<()> {
        // Validate everything first: after this point nothing can fail, so the batch is atomic.
        ops.iter().try_for_each(check_op)?;
        let mut map = self.write();
        let mut changes = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    map.insert(key.clone(), value.clone());
                    changes.push(Change {
                        key,
                        value: Some(value),
                    });
                }
                Op::Delete { key } => {
                    if map.remove(&key).is_some() {
                        changes.push(Change { key, value: None });
                    }
                }
            }
        }
        self.hub.notify(&changes);
        Ok(())
    }

    fn watch_prefix(&self, prefix: &[u8]) -> Result<Watch> {
        // Registered under the write lock, so the watch starts exactly between two commits.
        let _map = self.write();
        Ok(self.hub.subscribe(prefix))
    }

    fn watch_count(&self) -> usize {
        self.hub.len()
    }

    // One process's memory, its watchers notified under the write lock.
    fn watches_see_every_write(&self) -> bool {
        true
    }
}
