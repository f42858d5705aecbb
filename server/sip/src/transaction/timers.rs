//! The deadline queue behind `poll_timeout`: a min-heap of `(deadline, transaction id)` with
//! lazy deletion. A transaction's current deadline is kept next to the transaction; a heap
//! entry whose deadline is no longer its transaction's current one is stale and skipped when it
//! surfaces. Push and pop are O(log n); stale entries are bounded by compaction.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct DeadlineQueue {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl DeadlineQueue {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        DeadlineQueue {
            heap: BinaryHeap::with_capacity(capacity),
        }
    }

    pub(crate) fn push(&mut self, at: Instant, id: u64) {
        self.heap.push(Reverse((at, id)));
    }

    /// The earliest live deadline, dropping stale entries on the way. `current(id)` is the
    /// transaction's current deadline (`None` when it has none or is gone).
    pub(crate) fn peek(&mut self, current: impl Fn(u64) -> Option<Instant>) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if current(id) == Some(at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes and returns every live entry due at `now`. A transaction can appear twice when
    /// its deadline moved away and back; the caller rechecks before firing.
    pub(crate) fn pop_due(
        &mut self,
        now: Instant,
        current: impl Fn(u64) -> Option<Instant>,
        due: &mut Vec<u64>,
    ) {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if current(id) == Some(at) {
                due.push(id);
            }
        }
    }

    /// Entries the heap holds without growing.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.heap.capacity()
    }

    /// Entries held, stale ones included.
    #[cfg(test)]
    #[allow(dead_code)] // for tests that inspect the queue
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Rebuilds the heap from the live deadlines when stale entries dominate, so memory stays
    /// proportional to the live transactions.
    pub(crate) fn compact_if_needed(
        &mut self,
        live: usize,
        deadlines: impl Iterator<Item = (u64, Instant)>,
    ) {
        if self.heap.len() > 64 && self.heap.len() > 4 * live {
            // Rebuilt in the same allocation, so a reserved capacity stays reserved.
            let mut entries = std::mem::take(&mut self.heap).into_vec();
            entries.clear();
            entries.extend(deadlines.map(|(id, at)| Reverse((at, id))));
            self.heap = BinaryHeap::from(entries);
        }
    }
}
