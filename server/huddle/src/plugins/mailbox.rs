//! The queue in front of one plugin instance: everything its thread will call it with, in
//! order. The core only ever pushes without waiting: a new request is refused when
//! `queue_len` requests are already waiting (the core answers 503), and everything else
//! (responses to the plugin's requests, CANCEL/ACK, timers, watch changes, registration
//! events) is bounded where it is produced, so one FIFO keeps every ordering a plugin can see
//! (an INVITE before its CANCEL, a write before the watch change it causes).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use huddle_sdk::{RegistrationEvent, RequestId, RequestInfo, StoreChange, TimerId, TransactionId};

/// Registration events waiting for one plugin before new ones are dropped (and logged).
pub(crate) const MAX_QUEUED_REGISTRATIONS: usize = 65_536;
/// Admin requests waiting for one plugin before new ones are refused (the API answers 503).
pub(crate) const MAX_QUEUED_ADMIN: usize = 64;
/// RTP/RTCP packets waiting for one plugin before new ones are dropped: about a second of a
/// few dozen video calls. Media that waits longer is useless anyway.
pub(crate) const MAX_QUEUED_PACKETS: usize = 8192;

/// A media event for a plugin (from the media engine).
#[derive(Debug)]
pub(crate) enum MediaJob {
    /// A leg connected.
    Ready { session: u64 },
    /// A plain RTP packet on stream `mid`.
    Rtp {
        session: u64,
        mid: Box<str>,
        packet: Vec<u8>,
    },
    /// An RTCP packet (key-frame requests).
    Rtcp { session: u64, packet: Vec<u8> },
    /// A leg ended.
    Hangup {
        session: u64,
        reason: huddle_sdk::HangupReason,
    },
    /// A bandwidth estimate towards the peer.
    Bitrate { session: u64, bps: u64 },
}

/// One call to make into the plugin.
#[derive(Debug)]
pub(crate) enum Job {
    /// A request it claimed; `txn` is `None` for ACK and CANCEL. `counted` requests count
    /// against `queue_len`.
    Request {
        txn: Option<TransactionId>,
        bytes: Bytes,
        info: RequestInfo,
        counted: bool,
    },
    /// A response to a request it sent (the host's Via removed).
    Response {
        id: RequestId,
        bytes: Bytes,
        is_final: bool,
    },
    /// A timer it set fired.
    Timer { id: TimerId, token: u64 },
    /// A change under a prefix it watches.
    StoreChange(StoreChange),
    /// An address-of-record came online, went offline or changed.
    Registration(RegistrationEvent),
    /// A media event; `counted` ones count against [`MAX_QUEUED_PACKETS`].
    Media { job: MediaJob, counted: bool },
    /// An admin request (ABI 1.2), answered on `reply`.
    Admin {
        request: String,
        reply: tokio::sync::oneshot::Sender<huddle_sdk::Result<Vec<u8>>>,
    },
}

#[derive(Debug, Default)]
struct State {
    jobs: VecDeque<Job>,
    requests: usize,
    registrations: usize,
    packets: usize,
    admin: usize,
    closed: bool,
}

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Mailbox {
    state: Mutex<State>,
    ready: Condvar,
    queue_len: usize,
}

impl Mailbox {
    pub(crate) fn new(queue_len: usize) -> Self {
        Mailbox {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            queue_len: queue_len.max(1),
        }
    }

    // Only queue bookkeeping happens under this lock, never plugin code, so poisoning cannot
    // leave it half-updated.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a new request unless `queue_len` are already waiting (false: not queued).
    pub(crate) fn try_request(&self, job: Job) -> bool {
        let mut st = self.lock();
        if st.closed || st.requests >= self.queue_len {
            return false;
        }
        st.requests += 1;
        st.jobs.push_back(job);
        drop(st);
        self.ready.notify_one();
        true
    }

    /// Queues a job whose producer bounds itself. False once closed.
    pub(crate) fn push(&self, job: Job) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        st.jobs.push_back(job);
        drop(st);
        self.ready.notify_one();
        true
    }

    /// Queues a registration event unless [`MAX_QUEUED_REGISTRATIONS`] are waiting.
    pub(crate) fn push_registration(&self, event: RegistrationEvent) -> bool {
        let mut st = self.lock();
        if st.closed || st.registrations >= MAX_QUEUED_REGISTRATIONS {
            return false;
        }
        st.registrations += 1;
        st.jobs.push_back(Job::Registration(event));
        drop(st);
        self.ready.notify_one();
        true
    }

    /// Queues an admin request unless [`MAX_QUEUED_ADMIN`] are waiting. False when not queued.
    pub(crate) fn push_admin(&self, job: Job) -> bool {
        let mut st = self.lock();
        if st.closed || st.admin >= MAX_QUEUED_ADMIN {
            return false;
        }
        st.admin += 1;
        st.jobs.push_back(job);
        drop(st);
        self.ready.notify_one();
        true
    }

    /// Queues a media event; a `counted` one (a packet) is dropped when
    /// [`MAX_QUEUED_PACKETS`] are waiting. False when not queued.
    pub(crate) fn push_media(&self, job: MediaJob, counted: bool) -> bool {
        let mut st = self.lock();
        if st.closed || (counted && st.packets >= MAX_QUEUED_PACKETS) {
            return false;
        }
        if counted {
            st.packets += 1;
        }
        st.jobs.push_back(Job::Media { job, counted });
        drop(st);
        self.ready.notify_one();
        true
    }

    /// The next job, waiting for one; `None` once closed.
    pub(crate) fn next(&self) -> Option<Job> {
        let mut st = self.lock();
        loop {
            if st.closed {
                return None;
            }
            if let Some(job) = st.jobs.pop_front() {
                match &job {
                    Job::Request { counted: true, .. } => st.requests -= 1,
                    Job::Registration(_) => st.registrations -= 1,
                    Job::Media { counted: true, .. } => st.packets -= 1,
                    Job::Admin { .. } => st.admin -= 1,
                    _ => {}
                }
                return Some(job);
            }
            st = self.ready.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Stops the queue: `next` returns `None`, pushes are refused, queued jobs are dropped.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.jobs.clear();
        drop(st);
        self.ready.notify_all();
    }

    /// New requests waiting (tests; the admin API's queue depth).
    pub(crate) fn waiting_requests(&self) -> usize {
        self.lock().requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(counted: bool) -> Job {
        Job::Request {
            txn: counted.then_some(TransactionId(1)),
            bytes: Bytes::new(),
            info: RequestInfo::default(),
            counted,
        }
    }

    #[test]
    fn only_new_requests_count_against_queue_len() {
        let mb = Mailbox::new(1);
        assert!(mb.try_request(request(true)));
        assert!(!mb.try_request(request(true)), "full");
        assert!(mb.push(request(false)), "ACK/CANCEL still queue");
        assert!(mb.push(Job::Timer {
            id: TimerId(1),
            token: 0
        }));
        assert!(matches!(
            mb.next(),
            Some(Job::Request { counted: true, .. })
        ));
        assert_eq!(mb.waiting_requests(), 0);
        assert!(mb.try_request(request(true)), "room again");
        assert!(matches!(
            mb.next(),
            Some(Job::Request { counted: false, .. })
        ));
        assert!(matches!(mb.next(), Some(Job::Timer { .. })));
        mb.close();
        assert!(mb.next().is_none());
        assert!(!mb.push(request(false)));
    }

    #[test]
    fn a_waiting_thread_wakes_on_close() {
        let mb = std::sync::Arc::new(Mailbox::new(4));
        let waiter = {
            let mb = mb.clone();
            std::thread::spawn(move || mb.next().is_none())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        mb.close();
        assert!(waiter.join().unwrap());
    }
}
