//! Store writers: threads that make messages durable off the plugin's own thread, several
//! writes per disk sync (group commit).
//!
//! A store write returns only once it is on disk (an `fsync`), and each commit costs about
//! the same whatever it holds, so a writer takes everything queued for it at once (up to
//! `batch_max`) and sends it to the host in ONE `store_batch` commit (ABI 1.3). Only then does
//! it answer the senders `202 Accepted` and raise `message.stored`, so an answer never
//! precedes durability. Whatever arrives while a commit is in flight is the next batch, so
//! under load the batches grow by themselves ([`Pending`]).
//! A `batch_window` (`store_batch_window_ms`, 40 ms by default) holds a batch for more writes:
//! a commit's CPU is mostly its disk sync, whatever it holds, so fewer commits, later 202s. A
//! held batch commits before its window ends once [`QUIET`] (20 ms, or the window if shorter)
//! passed since the last write was queued ([`Hold`]): a lone write, or writes far apart, gain
//! nothing by waiting longer. A message's 202 therefore waits for a commit in flight, its
//! batch's hold and its own commit.
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

/// How long a held batch waits after the last write queued before it commits without the rest
/// of its window (never longer than the window). Under load writes come closer together than
/// this and the batch fills its window (fewer commits); a lone write waits this long, as it
/// did with the earlier 20 ms window, and a window of 20 ms or less behaves as it did before
/// the quiet spell existed.
pub const QUIET: Duration = Duration::from_millis(20);

impl Gather {
    /// The quiet spell of this window: [`QUIET`], or the window if shorter.
    pub fn quiet(&self) -> Duration {
        QUIET.min(self.window)
    }
}

/// A held batch's clock, sans IO: when it commits, given when it was taken and when the last
/// write was queued.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    start: Instant,
    deadline: Instant,
    quiet: Duration,
}

impl Hold {
    /// A batch taken at `start`.
    pub fn new(start: Instant, gather: Gather) -> Hold {
        Hold {
            start,
            deadline: start + gather.window,
            quiet: gather.quiet(),
        }
    }

    /// `None`: commit now. `Some(wait)`: look again after at most `wait` (pushes during a
    /// hold wake nobody, so the writer looks when the quiet spell or the window would end).
    /// `last_push`: when the last write was queued, if ever (one queued before `start` is
    /// in the batch and counts as `start`); `ready`: the batch can be filled, or the queue
    /// closed.
    pub fn poll(&self, now: Instant, last_push: Option<Instant>, ready: bool) -> Option<Duration> {
        if ready {
            return None;
        }
        let quiet_from = last_push.map_or(self.start, |t| t.max(self.start));
        let until = self.deadline.min(quiet_from + self.quiet);
        (until > now).then(|| until - now)
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
    /// When the last job was queued (stamped by the pushing thread, [`Pending::stamp`]).
    last_push: Option<Instant>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            jobs: VecDeque::new(),
            sleeping: false,
            fill_at: None,
            closed: false,
            last_push: None,
        }
    }
}

impl<T> Pending<T> {
    /// Notes that a job is being queued at `now` (a held batch's quiet spell starts over).
    pub fn stamp(&mut self, now: Instant) {
        self.last_push = Some(now);
    }

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
        // Held until the window ends, a quiet spell passes since the last write was queued,
        // the batch can be filled, or the queue closes; the plugin's pushes meanwhile wake
        // nobody (the writer looks when the quiet spell would end).
        let hold = Hold::new(Instant::now(), gather);
        pending.hold(&batch, gather.max);
        loop {
            let ready = pending.closed || pending.fills(&batch, gather.max);
            let Some(wait) = hold.poll(Instant::now(), pending.last_push, ready) else {
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
        let mut pending = shared.lock();
        pending.stamp(Instant::now());
        if pending.push(job) {
            drop(pending);
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
    use super::{Gather, Hold, Pending, Take, QUIET};
    use std::time::{Duration, Instant};

    /// When a batch taken at 0 commits, in virtual time: the writer looks only when `poll`
    /// says (pushes wake nobody), and sees the pushes made up to then. `pushes` in ms.
    fn commit_at(gather: Gather, pushes: &[u64]) -> u64 {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let hold = Hold::new(t0, gather);
        let mut now = t0;
        for _ in 0..1000 {
            let last_push = pushes
                .iter()
                .map(|&p| t0 + ms(p))
                .filter(|&p| p <= now)
                .max();
            match hold.poll(now, last_push, false) {
                None => return (now - t0).as_millis() as u64,
                Some(wait) => now += wait,
            }
        }
        panic!("never committed");
    }

    fn window(ms: u64) -> Gather {
        Gather {
            window: Duration::from_millis(ms),
            max: 64,
        }
    }

    #[test]
    fn a_held_batch_commits_a_quiet_spell_after_the_last_write_or_at_its_windows_end() {
        let w = window(40);
        assert_eq!(w.quiet(), QUIET);
        // A lone write waits one quiet spell.
        assert_eq!(commit_at(w, &[]), 20);
        // One more write soon after, then nothing: a quiet spell after that write, not the
        // whole window (the first version of this rule held it to 40).
        assert_eq!(commit_at(w, &[1]), 21);
        assert_eq!(commit_at(w, &[19]), 39);
        // Writes keep coming: held to the window's end, never longer.
        let steady: Vec<u64> = (1..=60).map(|i| i * 2).collect();
        assert_eq!(commit_at(w, &steady), 40);
        assert_eq!(commit_at(w, &[5, 24]), 40);
        // A write after the quiet spell ended goes to the next batch.
        assert_eq!(commit_at(w, &[5, 30]), 25);
        // A write queued before the batch was taken is in it: the spell starts at the take.
        let t0 = Instant::now();
        let hold = Hold::new(t0, w);
        let before = t0.checked_sub(Duration::from_millis(5));
        assert_eq!(hold.poll(t0, before, false), Some(QUIET));
    }

    #[test]
    fn a_filled_or_closed_batch_commits_at_once_and_early_looks_change_nothing() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let hold = Hold::new(t0, window(40));
        assert_eq!(hold.poll(t0, None, true), None, "filled or closed");
        assert_eq!(hold.poll(t0 + ms(3), Some(t0 + ms(1)), true), None);
        // Spurious wake-ups: each look answers the time left to the same commit instant.
        for look in [0, 1, 7, 20] {
            assert_eq!(
                hold.poll(t0 + ms(look), Some(t0 + ms(1)), false),
                Some(ms(21 - look))
            );
        }
        assert_eq!(hold.poll(t0 + ms(21), Some(t0 + ms(1)), false), None);
    }

    #[test]
    fn a_window_up_to_the_quiet_spell_holds_as_a_plain_window_did() {
        // 20 ms or less (an explicitly configured window): the spell is the window, so the
        // batch holds exactly the window, as before the quiet spell existed.
        for w in [1, 10, 20] {
            assert_eq!(window(w).quiet(), Duration::from_millis(w));
            assert_eq!(commit_at(window(w), &[]), w);
            assert_eq!(commit_at(window(w), &[w / 2]), w);
        }
        assert_eq!(commit_at(window(1000), &[10, 25]), 45);
        assert_eq!(commit_at(window(1000), &[100, 200]), 20);
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
