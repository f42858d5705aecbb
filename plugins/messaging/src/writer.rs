//! Store writers: a few threads that make messages durable off the plugin's own thread.
//!
//! A store write returns only once it is on disk (an `fsync`), so one thread writing one
//! message at a time tops out at the disk's sync rate. Several writers calling the store at
//! once let the host's store share each `fsync` among them (group commit), and the plugin's
//! thread keeps serving meanwhile. A writer answers the sender `202 Accepted` itself, right
//! after its write returned, so the answer never precedes durability.
//!
//! A message's writes (its put, rewrites of its progress, then its delete once done) always go to the same writer,
//! chosen by sequence number, so they reach the store in the order the engine decided them.
//! A failed put is answered `500` by the writer and reported to the plugin's thread with a
//! zero-delay timer (`TOKEN_FAILED`), where the engine forgets the message.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use huddle_sdk::{Host, Request};

/// The timer token that says "some puts failed: collect them".
pub const TOKEN_FAILED: u64 = 5;

/// One write.
#[derive(Debug)]
pub enum Job {
    /// Make a message durable, then answer its sender 202 (if it still waits).
    Put {
        /// The message.
        seq: u64,
        /// Its store key.
        key: Vec<u8>,
        /// Its record.
        value: Vec<u8>,
        /// The sender's request, answered 202 once the write returned (boxed: a request is
        /// large next to a delete).
        reply: Option<Box<Request>>,
    },
    /// Rewrite a stored message's record (its delivery progress); a failure is logged: the
    /// previous record stays, which at worst repeats the message to a device after a restart.
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

/// The writer threads.
#[derive(Debug)]
pub struct Writers {
    senders: Vec<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    failed: Arc<Mutex<Vec<u64>>>,
}

impl Writers {
    /// Starts `n` writers using `host`; `None` when no thread could be started (the plugin
    /// then writes on its own thread).
    pub fn start(host: &Host, n: usize) -> Option<Writers> {
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
                    while let Ok(job) = rx.recv() {
                        run(&writer_host, &writer_failed, job);
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
        })
    }

    /// Queues a write of message `seq` on its writer. A writer that is gone (it cannot be,
    /// short of a panic in the host) gets the job done here instead, synchronously.
    pub fn submit(&self, host: &Host, seq: u64, job: Job) {
        let index = usize::try_from(seq % self.senders.len() as u64).unwrap_or(0);
        if let Err(returned) = self.senders[index].send(job) {
            run(host, &self.failed, returned.0);
        }
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

fn run(host: &Host, failed: &Mutex<Vec<u64>>, job: Job) {
    match job {
        Job::Put {
            seq,
            key,
            value,
            reply,
        } => match host.store().put(&key, &value) {
            Ok(()) => {
                if let Some(request) = reply {
                    if let Err(e) = host.reply(&request, 202, "Accepted - Stored For Delivery") {
                        huddle_sdk::debug!(host, "202 for message {seq} not sent: {e}");
                    }
                }
            }
            Err(e) => {
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
        },
        Job::Rewrite { key, value } => {
            if let Err(e) = host.store().put(&key, &value) {
                huddle_sdk::warn!(
                    host,
                    "rewriting {} failed: {e}",
                    String::from_utf8_lossy(&key)
                );
            }
        }
        Job::Delete { key } => {
            if let Err(e) = host.store().delete(&key) {
                huddle_sdk::warn!(
                    host,
                    "deleting {} failed: {e}",
                    String::from_utf8_lossy(&key)
                );
            }
        }
    }
}
