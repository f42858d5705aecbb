//! Store writers: threads that make messages durable off the plugin's own thread, several
//! writes per disk sync (group commit).
//!
//! A store write returns only once it is on disk (an `fsync`), and each commit costs about
//! the same whatever it holds, so a writer takes everything queued for it at once (up to
//! `batch_max`) and sends it to the host in ONE `store_batch` commit (ABI 1.3). Only then does
//! it answer the senders `202 Accepted` and raise `message.stored`, so an answer never
//! precedes durability. Whatever arrives while a commit is in flight is the next batch: a
//! lone write commits at once, and under load the batches grow by themselves ([`Pending`]).
//! A `batch_window` (`store_batch_window_ms`, 40 ms by default) holds a batch for more writes:
//! a commit's CPU is mostly its disk sync, whatever it holds, so fewer commits, later 202s. A
//! batch commits before its window ends once half the window passes with no new write
//! ([`Gather::quiet`]): a lone write, or writes far apart, gain nothing by waiting longer.
//! The plugin's thread keeps serving meanwhile. On a host without `store_batch` (before ABI
//! 1.3) each job is written alone.
//!
//! A message's writes (its put, rewrites of its progress, then its delete once done) always go
//! to the same writer, chosen by sequence number, in the order the engine decided them; a batch
//! applies them in that order.
//! A failed put is answered `500` by the writer and reported to the plugin's thread with a
//! zero-delay timer (`TOKEN_FAILED`), where the engine forgets the message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use huddle_sdk::{BatchOp, Error, Host, Request};

/// The timer token that says "some puts failed: collect them".
pub const TOKEN_FAILED: u64 = 5;

/// One write.
#[derive(Debug)]
pub enum Job {
    /// Make a message durable, then answer its sender 202 (if it still waits) and raise its
    /// `message.stored` event.
    Put {
        /// The message.
        seq: u64,
        /// Its store key.
        key: Vec<u8>,
        /// Its record.
        value: Vec<u8>,
        /// The sender's request, answered 202 once the write is durable (boxed: a request is
        /// large next to a delete).
        reply: Option<Box<Request>>,
        /// The `message.stored` event's details (JSON), raised once durable.
        event: Option<String>,
    },
    /// Rewrite a stored message's record (its delivery progress), or write a batch of
    /// history; a failure is logged: the previous record stays, which at worst repeats the
    /// message to a device after a restart (or loses that history).
    Rewrite {
        /// Its store key.
        key: Vec<u8>,
        /// Its record.
        value: Vec<u8>,
    },
    /// Delete a delivered or expired message.
    Delete {
        /// Its store key.
        key: Vec<u8>,
    },
}

impl Job {
    fn op(&self) -> BatchOp<'_> {
        match self {
            Job::Put { key, value, .. } | Job::Rewrite { key, value } => {
                BatchOp::Put { key, value }
            }
            Job::Delete { key } => BatchOp::Delete { key },
        }
    }
}

/// How writers gather jobs into commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gather {
    /// How long a batch smaller than `max` waits for more after its first job at most (it
    /// commits earlier after a [`Gather::quiet`] spell with no new job; zero: it takes what
    /// is queued and commits at once, the batches then follow the load).
    pub window: Duration,
    /// Jobs in one commit at most (the batch commits as soon as it has this many).
    pub max: usize,
}

impl Gather {
    /// How long a held batch waits for a next write before it commits without the rest of
    /// its window: half the window. Under load writes come closer together than that and the
    /// batch fills its window (fewer commits); a lone write, or writes further apart, wait
    /// this long, not the whole window. (A quarter was tried: at 50 stored messages/s it
    /// committed each message alone, +35 % CPU per message for 8 ms off the 202.)
    pub fn quiet(&self) -> Duration {
        self.window / 2
    }
}

/// How a writer found its queue when it came for work: the sans-IO core of a writer, which
/// the thread driving it ([`Writers`]) only locks, waits on and wakes.
#[derive(Debug, PartialEq, Eq)]
pub enum Take<T> {
    /// Everything that was queued (up to the maximum), in order: commit it.
    Batch(Vec<T>),
    /// Nothing queued: sleep until [`Pending::push`] says to wake.
    Sleep,
    /// Nothing queued and no more will come: stop.
    Done,
}

/// One writer's queue. The plugin's thread pushes; the writer takes everything queued at
/// once, commits it, answers it, and comes back: what arrived during a commit is the next
/// batch. So a batch holds one write when writes are rare and grows with the load by itself,
/// and no write waits for a timer. A push tells its caller to wake the writer only when the
/// writer sleeps, so a busy writer costs its feeders no system call.
#[derive(Debug)]
pub struct Pending<T> {
    jobs: VecDeque<T>,
    sleeping: bool,
    /// The writer holds a batch for its window and wants waking only once this many jobs
    /// are queued (they fill the batch).
    fill_at: Option<usize>,
    closed: bool,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            jobs: VecDeque::new(),
            sleeping: false,
            fill_at: None,
            closed: false,
        }
    }
}

impl<T> Pending<T> {
    /// Queues `job`; `true` when the writer must be woken: it sleeps (once: the next pushes
    /// say `false` until it sleeps again), or it holds a batch that this job fills.
    pub fn push(&mut self, job: T) -> bool {
        self.jobs.push_back(job);
        let fills = self.fill_at == Some(self.jobs.len());
        std::mem::take(&mut self.sleeping) || fills
    }

    /// What the writer does next: up to `max` queued jobs, oldest first; or sleep (it is then
    /// marked sleeping); or stop, once closed and drained.
    pub fn take(&mut self, max: usize) -> Take<T> {
        if self.jobs.is_empty() {
            if self.closed {
                return Take::Done;
            }
            self.sleeping = true;
            return Take::Sleep;
        }
        let n = self.jobs.len().min(max.max(1));
        self.sleeping = false;
        Take::Batch(self.jobs.drain(..n).collect())
    }

    /// The writer holds `batch` for its window: no wake-ups until enough jobs are queued to
    /// fill it to `max` (or the queue is closed).
    pub fn hold(&mut self, batch: &[T], max: usize) {
        self.sleeping = false;
        self.fill_at = Some(max.saturating_sub(batch.len()).max(1));
    }

    /// Ends a hold: up to `max - batch.len()` queued jobs onto `batch`, oldest first.
    pub fn top_up(&mut self, batch: &mut Vec<T>, max: usize) {
        self.fill_at = None;
        let n = self.jobs.len().min(max.saturating_sub(batch.len()));
        batch.extend(self.jobs.drain(..n));
    }

    /// Whether the writer holding a batch has enough queued to fill it to `max`.
    pub fn fills(&self, batch: &[T], max: usize) -> bool {
        batch.len() + self.jobs.len() >= max
    }

    /// No more pushes: the writer drains the queue, then stops. `true` when it sleeps and
    /// must be woken to see it.
    pub fn close(&mut self) -> bool {
        self.closed = true;
        std::mem::take(&mut self.sleeping) || self.fill_at.is_some()
    }

    /// Jobs queued.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

/// A writer's queue as its thread and the plugin's thread share it.
#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending<Job>>,
    wake: Condvar,
    /// The writer thread ended without draining (a panic): writes are done by the caller.
    dead: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending<Job>> {
        // Poisoning carries no meaning: the queue is changed in whole steps.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch, waiting for one; `None` once closed and drained. With a window, a
    /// batch smaller than the maximum waits up to the window for more after its first job.
    fn next_batch(&self, gather: Gather) -> Option<Vec<Job>> {
        let mut pending = self.lock();
        let mut batch = loop {
            match pending.take(gather.max) {
                Take::Batch(batch) => break batch,
                Take::Done => return None,
                Take::Sleep => {
                    pending = self
                        .wake
                        .wait(pending)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        };
        if gather.window.is_zero() {
            return Some(batch);
        }
        // Held until the window ends, a quiet spell passes with no new write, the batch can
        // be filled, or the queue closes; the plugin's pushes meanwhile wake nobody (the
        // writer looks at the queue once per quiet spell).
        let start = Instant::now();
        let deadline = start + gather.window;
        let quiet = gather.quiet();
        let mut quiet_until = start + quiet;
        let mut seen = pending.len();
        pending.hold(&batch, gather.max);
        loop {
            if pending.closed || pending.fills(&batch, gather.max) {
                break;
            }
            let now = Instant::now();
            if pending.len() > seen {
                seen = pending.len();
                quiet_until = now + quiet;
            }
            let Some(wait) = hold_wait(now, deadline, quiet_until) else {
                break;
            };
            pending = self
                .wake
                .wait_timeout(pending, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        pending.top_up(&mut batch, gather.max);
        Some(batch)
    }
}

/// How long a writer holding a batch waits before it looks again, or `None` to commit now:
/// at the window's end (`deadline`), or once a quiet spell passed with no new write
/// (`quiet_until`, moved on each time the queue grew).
pub fn hold_wait(now: Instant, deadline: Instant, quiet_until: Instant) -> Option<Duration> {
    let until = deadline.min(quiet_until);
    (until > now).then(|| until - now)
}

/// Marks a writer dead if its thread unwinds, so that writes are not queued to nobody.
struct DeadOnUnwind<'a>(&'a Shared);

impl Drop for DeadOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.dead.store(true, Ordering::Release);
        }
    }
}

/// The writer threads.
#[derive(Debug)]
pub struct Writers {
    queues: Vec<Arc<Shared>>,
    threads: Vec<JoinHandle<()>>,
    failed: Arc<Mutex<Vec<u64>>>,
    gather: Gather,
}

impl Writers {
    /// Starts `n` writers using `host`; `None` when no thread could be started (the plugin
    /// then writes on its own thread).
    pub fn start(host: &Host, n: usize, gather: Gather) -> Option<Writers> {
        let gather = Gather {
            window: gather.window,
            max: gather.max.max(1),
        };
        let failed = Arc::new(Mutex::new(Vec::new()));
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n {
            let shared = Arc::new(Shared::default());
            let writer_shared = shared.clone();
            let writer_host = host.clone();
            let writer_failed = failed.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("messaging-writer-{i}"))
                .spawn(move || {
                    let _dead = DeadOnUnwind(&writer_shared);
                    while let Some(jobs) = writer_shared.next_batch(gather) {
                        commit(&writer_host, &writer_failed, jobs);
                    }
                });
            match spawned {
                Ok(thread) => {
                    queues.push(shared);
                    threads.push(thread);
                }
                Err(e) => huddle_sdk::warn!(host, "store writer {i} not started: {e}"),
            }
        }
        (!queues.is_empty()).then_some(Writers {
            queues,
            threads,
            failed,
            gather,
        })
    }

    /// Queues a write of message `seq` on its writer. A writer that is gone (it cannot be,
    /// short of a panic in the host) gets the job done here instead, synchronously.
    pub fn submit(&self, host: &Host, seq: u64, job: Job) {
        let index = usize::try_from(seq % self.queues.len() as u64).unwrap_or(0);
        let shared = &self.queues[index];
        if shared.dead.load(Ordering::Acquire) {
            commit(host, &self.failed, vec![job]);
            return;
        }
        if shared.lock().push(job) {
            shared.wake.notify_one();
        }
    }

    /// How the writers gather.
    pub fn gather(&self) -> Gather {
        self.gather
    }

    /// Messages whose put failed since the last call.
    pub fn take_failed(&self) -> Vec<u64> {
        std::mem::take(&mut *self.failed.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Lets every writer finish its queue, then joins them.
    pub fn stop(&mut self) {
        for shared in &self.queues {
            if shared.lock().close() {
                shared.wake.notify_one();
            }
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Commits `jobs` (one batch, split when the host finds it too large, or one by one on a host
/// without batches), then answers and reports each.
fn commit(host: &Host, failed: &Mutex<Vec<u64>>, jobs: Vec<Job>) {
    let ops: Vec<BatchOp<'_>> = jobs.iter().map(Job::op).collect();
    let outcome = match write(host, &ops) {
        Ok(()) => Ok(()),
        Err(Error::NotSupported) => {
            drop(ops);
            for job in jobs {
                let result = match job.op() {
                    BatchOp::Put { key, value } => host.store().put(key, value),
                    BatchOp::Delete { key } => host.store().delete(key).map(|_| ()),
                };
                finish(host, failed, job, &result);
            }
            return;
        }
        Err(e) => Err(e),
    };
    drop(ops);
    for job in jobs {
        finish(host, failed, job, &outcome);
    }
}

/// One commit of `ops`; halves and retries when the host says the batch is too large (its
/// `[store]` limits may be below the plugin's `store_batch_max`). The halves are committed in
/// order, so a message's writes still land in order.
fn write(host: &Host, ops: &[BatchOp<'_>]) -> huddle_sdk::Result<()> {
    match host.store().apply_batch(ops) {
        Err(Error::TooLarge) if ops.len() > 1 => {
            let (first, second) = ops.split_at(ops.len() / 2);
            write(host, first)?;
            write(host, second)
        }
        other => other,
    }
}

/// What follows the write of one job: the 202 and the event, or the 500 and the report.
fn finish(host: &Host, failed: &Mutex<Vec<u64>>, job: Job, result: &huddle_sdk::Result<()>) {
    match (job, result) {
        (
            Job::Put {
                seq, reply, event, ..
            },
            Ok(()),
        ) => {
            if let Some(request) = reply {
                if let Err(e) = host.reply(&request, 202, "Accepted - Stored For Delivery") {
                    huddle_sdk::debug!(host, "202 for message {seq} not sent: {e}");
                }
            }
            if let Some(details) = event {
                // Best effort by design: a host without events (before ABI 1.2) has none.
                let _ = host.emit_event(crate::EVENT_STORED, &details);
            }
        }
        (Job::Put { seq, reply, .. }, Err(e)) => {
            huddle_sdk::error!(host, "storing message {seq} failed: {e}");
            if let Some(request) = reply {
                let _ = host.reply(
                    &request,
                    500,
                    "Server Internal Error - Message Store Failed",
                );
            }
            failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(seq);
            let _ = host.set_timer(Duration::ZERO, TOKEN_FAILED);
        }
        (Job::Rewrite { key, .. }, Err(e)) => {
            huddle_sdk::warn!(
                host,
                "rewriting {} failed: {e}",
                String::from_utf8_lossy(&key)
            );
        }
        (Job::Delete { key }, Err(e)) => {
            huddle_sdk::warn!(
                host,
                "deleting {} failed: {e}",
                String::from_utf8_lossy(&key)
            );
        }
        (Job::Rewrite { .. } | Job::Delete { .. }, Ok(())) => {}
    }
}

#[cfg(test)]
mod pending_tests {
    use super::{hold_wait, Gather, Pending, Take};
    use std::time::{Duration, Instant};

    #[test]
    fn a_held_batch_commits_at_its_windows_end_or_after_a_quiet_spell_whichever_comes_first() {
        let gather = Gather {
            window: Duration::from_millis(40),
            max: 64,
        };
        assert_eq!(gather.quiet(), Duration::from_millis(20));
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let deadline = t0 + gather.window;
        // Just taken: the writer looks again once a quiet spell is over.
        assert_eq!(hold_wait(t0, deadline, t0 + gather.quiet()), Some(ms(20)));
        // Writes kept coming (the quiet spell moved on each time): held to the window's end.
        assert_eq!(hold_wait(t0 + ms(35), deadline, t0 + ms(45)), Some(ms(5)));
        assert_eq!(hold_wait(deadline, deadline, t0 + ms(45)), None);
        // Nothing came for a quiet spell: committed before the window ends.
        assert_eq!(hold_wait(t0 + ms(10), deadline, t0 + ms(10)), None);
        assert_eq!(hold_wait(t0 + ms(22), deadline, t0 + ms(20)), None);
        // No window: nothing is held.
        let none = Gather {
            window: Duration::ZERO,
            max: 64,
        };
        assert_eq!(hold_wait(t0, t0, t0 + none.quiet()), None);
    }

    #[test]
    fn an_idle_writer_is_woken_once_and_takes_everything_queued_in_order() {
        let mut q = Pending::default();
        assert_eq!(q.take(8), Take::Sleep);
        assert!(q.push(1), "the sleeping writer must be woken");
        assert!(!q.push(2), "already being woken");
        assert!(!q.push(3));
        assert_eq!(q.take(8), Take::Batch(vec![1, 2, 3]));
        assert!(q.is_empty());
    }

    #[test]
    fn writes_arriving_during_a_commit_make_the_next_batch_without_a_wake() {
        let mut q = Pending::default();
        assert_eq!(q.take(8), Take::Sleep);
        assert!(q.push(1));
        assert_eq!(q.take(8), Take::Batch(vec![1]));
        // The writer commits batch [1]; meanwhile:
        assert!(!q.push(2), "a committing writer needs no wake");
        assert!(!q.push(3));
        assert_eq!(q.take(8), Take::Batch(vec![2, 3]));
        assert_eq!(q.take(8), Take::Sleep);
        assert!(q.push(4), "asleep again");
    }

    #[test]
    fn a_batch_stops_at_the_maximum_and_the_rest_follows() {
        let mut q = Pending::default();
        for i in 0..5 {
            q.push(i);
        }
        assert_eq!(q.take(2), Take::Batch(vec![0, 1]));
        assert_eq!(q.take(2), Take::Batch(vec![2, 3]));
        assert_eq!(q.take(0), Take::Batch(vec![4]), "a maximum of 0 means 1");
    }

    #[test]
    fn a_held_batch_is_woken_only_when_it_can_be_filled_then_topped_up_to_the_maximum() {
        let mut q = Pending::default();
        q.push(1);
        let Take::Batch(mut batch) = q.take(3) else {
            panic!("one queued");
        };
        q.hold(&batch, 3);
        assert!(!q.push(2), "a held batch is not woken per write");
        assert!(!q.fills(&batch, 3));
        assert!(q.push(3), "this one fills the batch: wake the writer");
        assert!(!q.push(4));
        assert!(q.fills(&batch, 3));
        q.top_up(&mut batch, 3);
        assert_eq!(batch, vec![1, 2, 3]);
        assert_eq!(q.len(), 1, "the rest makes the next batch");
        assert_eq!(q.take(3), Take::Batch(vec![4]));
    }

    #[test]
    fn closing_wakes_a_writer_holding_a_batch() {
        let mut q = Pending::default();
        q.push(1);
        let Take::Batch(batch) = q.take(8) else {
            panic!("one queued");
        };
        q.hold(&batch, 8);
        assert!(q.close());
    }

    #[test]
    fn a_closed_queue_is_drained_before_the_writer_stops() {
        let mut q = Pending::default();
        q.push(1);
        assert!(!q.close(), "a busy writer sees the close on its next take");
        assert_eq!(q.take(8), Take::Batch(vec![1]));
        assert_eq!(q.take(8), Take::Done);
        let mut idle: Pending<u8> = Pending::default();
        assert_eq!(idle.take(8), Take::Sleep);
        assert!(idle.close(), "a sleeping writer must be woken to stop");
        assert_eq!(idle.take(8), Take::Done);
    }
}
