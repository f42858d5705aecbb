//! The queue in front of one plugin instance: everything its thread will call it with, in
//! order. The core only ever pushes without waiting: a new request is refused when
//! `queue_len` requests are already waiting (the core answers 503), and everything else
//! (responses to the plugin's requests, CANCEL/ACK, timers, watch changes, registration
//! events) is bounded where it is produced, so one FIFO keeps every ordering a plugin can see
//! (an INVITE before its CANCEL, a write before the watch change it causes).
//!
//! Hand-offs cost system calls, so the instance's thread takes everything queued at once
//! (one lock per batch, not per job), a push notifies only when that thread sleeps, and the
//! SIP core notifies once at the end of its turn ([`HeldWakes`]) rather than at each push.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use huddle_sdk::{RegistrationEvent, RequestId, RequestInfo, StoreChange, TimerId, TransactionId};
use huddle_sip::Message;

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
        /// Parsed: its index goes to the plugin with the bytes (ABI 1.9).
        request: Arc<Message>,
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
    /// The instance's thread waits on `ready` and no push has woken it since: the next push
    /// notifies. While the thread runs, pushes only queue (a notify is a system call).
    sleeping: bool,
    /// Closed by a graceful stop: what is queued is still handed out until then.
    drain_until: Option<Instant>,
}

impl State {
    /// Closed gracefully and its deadline not passed yet.
    fn draining(&self) -> bool {
        self.drain_until.is_some_and(|t| Instant::now() < t)
    }
}

/// The queue and what its taking thread sleeps on; shared with the list of wake-ups a core
/// turn owes ([`HeldWakes`]).
#[derive(Debug)]
struct Signal {
    state: Mutex<State>,
    ready: Condvar,
}

impl Signal {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

thread_local! {
    /// While a [`HeldWakes`] lives on this thread: the queues its pushes woke, to notify when
    /// it ends.
    static OWED: RefCell<Option<Vec<Arc<Signal>>>> = const { RefCell::new(None) };
}

/// Notifies `signal`'s sleeping thread now, or at the end of this thread's [`HeldWakes`].
fn wake_or_defer(signal: &Arc<Signal>) {
    let deferred = OWED.with(|owed| match owed.borrow_mut().as_mut() {
        Some(list) => {
            list.push(signal.clone());
            true
        }
        None => false,
    });
    if !deferred {
        signal.ready.notify_one();
    }
}

/// Holds back the wake-ups of plugin threads that this thread's pushes cause until it is
/// dropped: the SIP core holds one over each turn (a batch of datagrams, commands or timers),
/// so a plugin thread is woken once per turn with every job of the turn queued, not once per
/// job. Pushes from other threads are not held (a push only owes a wake-up when the taking
/// thread sleeps, so one owed by a turn covers what other threads push meanwhile).
#[derive(Debug)]
pub(crate) struct HeldWakes {
    /// False for a hold begun inside another: the outer one wakes.
    outer: bool,
}

impl HeldWakes {
    /// Starts holding on this thread.
    pub(crate) fn begin() -> HeldWakes {
        let outer = OWED.with(|owed| {
            let mut owed = owed.borrow_mut();
            let outer = owed.is_none();
            owed.get_or_insert_with(Vec::new);
            outer
        });
        HeldWakes { outer }
    }
}

impl Drop for HeldWakes {
    fn drop(&mut self) {
        if !self.outer {
            return;
        }
        let owed = OWED
            .with(|owed| owed.borrow_mut().take())
            .unwrap_or_default();
        for signal in owed {
            signal.ready.notify_one();
        }
    }
}

/// See the [module docs](self).
///
/// One thread takes jobs ([`Mailbox::next_batch`]); the bounded kinds are counted from their
/// push until that thread has taken them out of its batch to call the plugin, so a batch
/// taken but not yet called still counts against `queue_len`.
#[derive(Debug)]
pub(crate) struct Mailbox {
    signal: Arc<Signal>,
    queue_len: usize,
    closed: AtomicBool,
    // Raised under `state` (so two producers cannot both pass a bound), lowered without it by
    // the taking thread.
    requests: AtomicUsize,
    registrations: AtomicUsize,
    packets: AtomicUsize,
    admin: AtomicUsize,
}

impl Mailbox {
    pub(crate) fn new(queue_len: usize) -> Self {
        Mailbox {
            signal: Arc::new(Signal {
                state: Mutex::new(State::default()),
                ready: Condvar::new(),
            }),
            queue_len: queue_len.max(1),
            closed: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            registrations: AtomicUsize::new(0),
            packets: AtomicUsize::new(0),
            admin: AtomicUsize::new(0),
        }
    }

    // Only queue bookkeeping happens under this lock, never plugin code, so poisoning cannot
    // leave it half-updated.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.signal.lock()
    }

    /// Queues `job` if open and, when `bound` is given, fewer than its limit of that kind are
    /// waiting (the count is raised). Wakes the taking thread only if it sleeps.
    fn queue(&self, job: Job, bound: Option<(&AtomicUsize, usize)>) -> bool {
        let mut st = self.lock();
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        if let Some((count, limit)) = bound {
            if count.load(Ordering::Relaxed) >= limit {
                return false;
            }
            count.fetch_add(1, Ordering::Relaxed);
        }
        st.jobs.push_back(job);
        let wake = std::mem::take(&mut st.sleeping);
        drop(st);
        if wake {
            wake_or_defer(&self.signal);
        }
        true
    }

    /// Queues a job the plugin need not see at once (the 2xx of a request whose caller the
    /// host answered for it, ABI 1.6) without waking the taking thread: it comes along with
    /// the next job that does wake it. `Some(true)` when that thread sleeps with it queued:
    /// then the caller owes it a wake-up by a deadline ([`Mailbox::wake_if_waiting`]).
    /// `None` once closed.
    pub(crate) fn push_unhurried(&self, job: Job) -> Option<bool> {
        let mut st = self.lock();
        if self.closed.load(Ordering::Relaxed) {
            return None;
        }
        st.jobs.push_back(job);
        Some(st.sleeping)
    }

    /// Wakes the taking thread if it still sleeps with jobs queued (an unhurried job's
    /// deadline passed and nothing else woke it).
    pub(crate) fn wake_if_waiting(&self) {
        let mut st = self.lock();
        let wake = st.sleeping && !st.jobs.is_empty();
        if wake {
            st.sleeping = false;
        }
        drop(st);
        if wake {
            wake_or_defer(&self.signal);
        }
    }

    /// Queues a new request unless `queue_len` are already waiting (false: not queued).
    pub(crate) fn try_request(&self, job: Job) -> bool {
        self.queue(job, Some((&self.requests, self.queue_len)))
    }

    /// Queues a job whose producer bounds itself. False once closed.
    pub(crate) fn push(&self, job: Job) -> bool {
        self.queue(job, None)
    }

    /// Queues a registration event unless [`MAX_QUEUED_REGISTRATIONS`] are waiting.
    pub(crate) fn push_registration(&self, event: RegistrationEvent) -> bool {
        self.queue(
            Job::Registration(event),
            Some((&self.registrations, MAX_QUEUED_REGISTRATIONS)),
        )
    }

    /// Queues an admin request unless [`MAX_QUEUED_ADMIN`] are waiting. False when not queued.
    pub(crate) fn push_admin(&self, job: Job) -> bool {
        self.queue(job, Some((&self.admin, MAX_QUEUED_ADMIN)))
    }

    /// Queues a media event; a `counted` one (a packet) is dropped when
    /// [`MAX_QUEUED_PACKETS`] are waiting. False when not queued.
    pub(crate) fn push_media(&self, job: MediaJob, counted: bool) -> bool {
        let bound = counted.then_some((&self.packets, MAX_QUEUED_PACKETS));
        self.queue(Job::Media { job, counted }, bound)
    }

    /// The next job for the taking thread, in push order: from `batch` (jobs it took
    /// earlier), else everything queued is moved into `batch` under one lock, waiting for a
    /// job when there is none. `None` once closed (what `batch` held is dropped), or, after
    /// [`Mailbox::close_after_queued`], once what was queued is handed out or its deadline
    /// has passed.
    pub(crate) fn next_batch(&self, batch: &mut VecDeque<Job>) -> Option<Job> {
        if batch.is_empty() {
            let mut st = self.lock();
            loop {
                if self.closed.load(Ordering::Relaxed) && (!st.draining() || st.jobs.is_empty()) {
                    st.jobs.clear();
                    return None;
                }
                if !st.jobs.is_empty() {
                    std::mem::swap(&mut st.jobs, batch);
                    break;
                }
                st.sleeping = true;
                st = self
                    .signal
                    .ready
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        } else if self.closed.load(Ordering::Relaxed) && !self.lock().draining() {
            batch.clear();
            return None;
        }
        let job = batch.pop_front()?;
        let count = match &job {
            Job::Request { counted: true, .. } => Some(&self.requests),
            Job::Registration(_) => Some(&self.registrations),
            Job::Media { counted: true, .. } => Some(&self.packets),
            Job::Admin { .. } => Some(&self.admin),
            _ => None,
        };
        if let Some(count) = count {
            count.fetch_sub(1, Ordering::Relaxed);
        }
        Some(job)
    }

    /// The next job, waiting for one; `None` once closed (one job at a time: tests).
    #[cfg(test)]
    pub(crate) fn next(&self) -> Option<Job> {
        let mut one = VecDeque::new();
        let job = self.next_batch(&mut one)?;
        // Put back what came along, in order, ahead of anything pushed since.
        let mut st = self.lock();
        while let Some(rest) = one.pop_back() {
            st.jobs.push_front(rest);
        }
        drop(st);
        Some(job)
    }

    /// Stops the queue gracefully: pushes are refused, but what is queued is still handed out
    /// until `deadline` (answers the core passed on before it stopped: a delivered message
    /// the plugin has not yet marked delivered would be delivered again after a restart).
    pub(crate) fn close_after_queued(&self, deadline: Instant) {
        let mut st = self.lock();
        self.closed.store(true, Ordering::Relaxed);
        st.drain_until = Some(deadline);
        drop(st);
        self.signal.ready.notify_all();
    }

    /// Stops the queue: `next_batch` returns `None`, pushes are refused, queued jobs are
    /// dropped.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        self.closed.store(true, Ordering::Relaxed);
        st.jobs.clear();
        drop(st);
        self.signal.ready.notify_all();
    }

    /// New requests waiting (tests; the admin API's queue depth).
    pub(crate) fn waiting_requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(counted: bool) -> Job {
        Job::Request {
            txn: counted.then_some(TransactionId(1)),
            request: Arc::new(
                Message::parse(Bytes::from_static(
                    b"OPTIONS sip:a@x SIP/2.0\r\nContent-Length: 0\r\n\r\n",
                ))
                .unwrap(),
            ),
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
    fn a_batch_keeps_push_order_and_counts_until_taken() {
        let mb = Mailbox::new(2);
        assert!(mb.try_request(request(true)));
        assert!(mb.push(Job::Timer {
            id: TimerId(7),
            token: 0
        }));
        assert!(mb.try_request(request(true)));
        let mut batch = VecDeque::new();
        assert!(matches!(
            mb.next_batch(&mut batch),
            Some(Job::Request { counted: true, .. })
        ));
        assert_eq!(batch.len(), 2, "the rest came along in the same take");
        assert_eq!(
            mb.waiting_requests(),
            1,
            "a request taken into the batch but not called still counts"
        );
        assert!(mb.try_request(request(true)), "one slot is free again");
        assert!(
            !mb.try_request(request(true)),
            "queue_len holds across batch and queue"
        );
        assert!(matches!(
            mb.next_batch(&mut batch),
            Some(Job::Timer { id: TimerId(7), .. })
        ));
        assert!(matches!(
            mb.next_batch(&mut batch),
            Some(Job::Request { counted: true, .. })
        ));
        assert!(batch.is_empty());
        assert!(
            matches!(
                mb.next_batch(&mut batch),
                Some(Job::Request { counted: true, .. })
            ),
            "pushed during the batch, taken after it"
        );
        assert_eq!(mb.waiting_requests(), 0);
        assert!(mb.push(request(false)));
        mb.close();
        assert!(mb.next_batch(&mut batch).is_none());
    }

    #[test]
    fn a_sleeping_thread_wakes_on_push() {
        let mb = std::sync::Arc::new(Mailbox::new(4));
        let taker = {
            let mb = mb.clone();
            std::thread::spawn(move || {
                let mut batch = VecDeque::new();
                let mut tokens = Vec::new();
                while let Some(job) = mb.next_batch(&mut batch) {
                    if let Job::Timer { token, .. } = job {
                        tokens.push(token);
                    }
                    if tokens.len() == 3 {
                        break;
                    }
                }
                tokens
            })
        };
        for token in 0..3 {
            // Whether the thread sleeps or runs at each push, every job reaches it.
            std::thread::sleep(std::time::Duration::from_millis(5));
            assert!(mb.push(Job::Timer {
                id: TimerId(token),
                token
            }));
        }
        assert_eq!(taker.join().unwrap(), vec![0, 1, 2]);
    }

    /// Waits (bounded) until the mailbox's taker sleeps with nothing queued.
    fn until_asleep(mb: &Mailbox) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            {
                let state = mb.lock();
                if state.sleeping && state.jobs.is_empty() {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the taker never slept"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_held_push_wakes_the_sleeping_thread_when_the_hold_ends() {
        let mb = Arc::new(Mailbox::new(4));
        let taker = {
            let mb = mb.clone();
            std::thread::spawn(move || {
                let mut batch = VecDeque::new();
                let first = mb.next_batch(&mut batch);
                (first.is_some(), batch.len())
            })
        };
        until_asleep(&mb);
        let owed = || OWED.with(|o| o.borrow().as_ref().map(Vec::len));
        let hold = HeldWakes::begin();
        let inner = HeldWakes::begin();
        for token in 0..2 {
            assert!(mb.push(Job::Timer {
                id: TimerId(token),
                token
            }));
        }
        drop(inner);
        assert_eq!(
            owed(),
            Some(1),
            "one wake-up owed, not made, for both pushes"
        );
        drop(hold);
        assert_eq!(owed(), None);
        let (got, rest) = taker.join().unwrap();
        assert!(got);
        assert_eq!(rest, 1, "woken once with both jobs queued");
    }

    #[test]
    fn an_unhurried_job_waits_for_the_next_wake_or_its_deadline() {
        let mb = Arc::new(Mailbox::new(4));
        let taker = {
            let mb = mb.clone();
            std::thread::spawn(move || {
                let mut batch = VecDeque::new();
                let mut tokens = Vec::new();
                while let Some(job) = mb.next_batch(&mut batch) {
                    if let Job::Timer { token, .. } = job {
                        tokens.push((token, batch.len()));
                    }
                    if tokens.len() == 4 {
                        break;
                    }
                }
                tokens
            })
        };
        let timer = |token| Job::Timer {
            id: TimerId(token),
            token,
        };
        until_asleep(&mb);
        assert_eq!(mb.push_unhurried(timer(0)), Some(true), "a wake-up is owed");
        assert!(mb.lock().sleeping, "not woken by it");
        assert!(mb.push(timer(1)), "an ordinary push wakes it");
        until_asleep(&mb);
        assert_eq!(mb.push_unhurried(timer(2)), Some(true));
        mb.wake_if_waiting();
        until_asleep(&mb);
        mb.wake_if_waiting();
        assert!(mb.lock().sleeping, "nothing queued: not woken");
        assert!(mb.push(timer(3)));
        let got = taker.join().unwrap();
        assert_eq!(
            got,
            vec![(0, 1), (1, 0), (2, 0), (3, 0)],
            "the unhurried job came along with the next one, in order"
        );
        mb.close();
        assert_eq!(mb.push_unhurried(timer(4)), None);
    }

    #[test]
    fn a_graceful_close_hands_out_what_was_queued_until_its_deadline() {
        let mb = Mailbox::new(4);
        assert!(mb.push(request(false)));
        assert!(mb.push(request(false)));
        mb.close_after_queued(Instant::now() + std::time::Duration::from_secs(60));
        assert!(!mb.push(request(false)), "closed to new jobs");
        let mut batch = VecDeque::new();
        let mut got = Vec::new();
        while let Some(job) = mb.next_batch(&mut batch) {
            got.push(job);
        }
        assert_eq!(got.len(), 2, "both queued jobs, then the end");

        let late = Mailbox::new(4);
        assert!(late.push(request(false)));
        assert!(late.push(request(false)));
        let mut batch = VecDeque::new();
        assert!(late.next_batch(&mut batch).is_some());
        late.close_after_queued(Instant::now());
        assert!(
            late.next_batch(&mut batch).is_none(),
            "past the deadline the rest is dropped"
        );
        assert!(batch.is_empty());
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
