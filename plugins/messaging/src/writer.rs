//! Store writers: threads that make messages durable off the plugin's own thread, several
//! writes per disk sync (group commit).
//!
//! A store write returns only once it is on disk (an `fsync`), and each commit costs the same
//! whatever it holds, so a writer gathers: the first job it takes waits at most
//! `batch_window` (or until `batch_max` jobs are queued) for more, then every job it holds
//! goes to the host in ONE `store_batch` commit (ABI 1.3). Only then does it answer the
//! senders `202 Accepted` and raise `message.stored`, so an answer never precedes durability.
//! The plugin's thread keeps serving meanwhile, and what arrives during a commit makes the
//! next batch. On a host without `store_batch` (before ABI 1.3) each job is written alone.
//!
//! A message's writes (its put, rewrites of its progress, then its delete once done) always go
//! to the same writer, chosen by sequence number, in the order the engine decided them; a batch
//! applies them in that order.
//! A failed put is answered `500` by the writer and reported to the plugin's thread with a
//! zero-delay timer (`TOKEN_FAILED`), where the engine forgets the message.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
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
    /// How long the first job of a batch waits for more.
    pub window: Duration,
    /// Jobs in one commit at most (the batch commits as soon as it has this many).
    pub max: usize,
}

/// The writer threads.
#[derive(Debug)]
pub struct Writers {
    senders: Vec<Sender<Job>>,
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
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n {
            let (tx, rx) = channel::<Job>();
            let writer_host = host.clone();
            let writer_failed = failed.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("messaging-writer-{i}"))
                .spawn(move || {
                    while let Some(jobs) = gather_jobs(&rx, gather) {
                        commit(&writer_host, &writer_failed, jobs);
                    }
                });
            match spawned {
                Ok(thread) => {
                    senders.push(tx);
                    threads.push(thread);
                }
                Err(e) => huddle_sdk::warn!(host, "store writer {i} not started: {e}"),
            }
        }
        (!senders.is_empty()).then_some(Writers {
            senders,
            threads,
            failed,
            gather,
        })
    }

    /// Queues a write of message `seq` on its writer. A writer that is gone (it cannot be,
    /// short of a panic in the host) gets the job done here instead, synchronously.
    pub fn submit(&self, host: &Host, seq: u64, job: Job) {
        let index = usize::try_from(seq % self.senders.len() as u64).unwrap_or(0);
        if let Err(returned) = self.senders[index].send(job) {
            commit(host, &self.failed, vec![returned.0]);
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
        self.senders.clear();
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

/// The next batch: waits for a first job (`None` once every sender is gone and the queue is
/// empty), then takes what is queued and what arrives within the window, up to the maximum.
fn gather_jobs(rx: &Receiver<Job>, gather: Gather) -> Option<Vec<Job>> {
    let first = rx.recv().ok()?;
    let deadline = Instant::now() + gather.window;
    let mut jobs = vec![first];
    while jobs.len() < gather.max {
        match rx.try_recv() {
            Ok(job) => {
                jobs.push(job);
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(left) {
            Ok(job) => jobs.push(job),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(jobs)
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
                let _ = host.emit_event("message.stored", &details);
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
