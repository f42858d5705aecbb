//! Branches of the core's `select!` that cost next to nothing to poll while nothing happened:
//! the loop polls every branch on every turn, and most are idle on most turns. Under a UDP
//! load the stream transports' event channel and the plugins' command channel are nearly
//! always empty (an empty tokio `mpsc` poll is ~190 instructions: the coop budget, the block
//! list twice, the waker registration); under a WebSocket load the UDP sockets are never
//! readable (a readiness poll that finds nothing takes the socket's waiter lock, ~150: 1.5 % of
//! a WS MESSAGE, bench/NOTES.md, sipcut6). `transport::Stop` does the same for the shutdown
//! watch by its version number instead (a watch has one; these have nothing to compare but a
//! wake).
//!
//! [`QuietWake`] polls with a waker of its own, which records that it was woken before waking
//! the task. Once a poll returned `Pending` (so that waker is registered), later polls by the
//! same task only read that record, and poll again once it was woken: by a send, by the last
//! sender going away, by the socket becoming readable or the reactor shutting down.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::mpsc;

/// The waker the channel holds: marks itself woken, then wakes the task.
#[derive(Debug, Default)]
struct Mark {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Mark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

/// A waker of its own for something polled on every turn of one task: while what it was
/// registered with has not woken it since a poll returned `Pending`, a poll by the same task
/// returns `Pending` without polling it again.
#[derive(Debug)]
pub(crate) struct QuietWake {
    mark: Arc<Mark>,
    /// `mark` as a waker, handed to what is polled.
    waker: Waker,
    /// The task waker `mark` wakes (a copy, compared without the lock).
    task: Option<Waker>,
    /// The last poll returned `Pending`: `waker` is registered, and until `mark` is woken
    /// nothing changed.
    waiting: bool,
    /// Polls that went through to what is polled (tests check the quiet path is taken).
    #[cfg(test)]
    full_polls: usize,
}

impl QuietWake {
    pub(crate) fn new() -> Self {
        let mark = Arc::new(Mark::default());
        Self {
            waker: Waker::from(Arc::clone(&mark)),
            mark,
            task: None,
            waiting: false,
            #[cfg(test)]
            full_polls: 0,
        }
    }

    /// `poll` with this waker, unless nothing woke it since it last returned `Pending` (see
    /// the type's docs). `poll` must register the waker it is given whenever it returns
    /// `Pending`, as every `poll_*` of tokio does.
    pub(crate) fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let same_task = self.task.as_ref().is_some_and(|t| t.will_wake(cx.waker()));
        if self.waiting && same_task && !self.mark.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        if !same_task {
            let task = cx.waker().clone();
            *self
                .mark
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(task.clone());
            self.task = Some(task);
        }
        // Cleared before polling: a wake from now on marks it again (a poll that returns
        // `Pending` has registered `waker` and looked once more after).
        self.mark.woken.store(false, Ordering::Release);
        #[cfg(test)]
        {
            self.full_polls += 1;
        }
        let polled = poll(&mut Context::from_waker(&self.waker));
        self.waiting = polled.is_pending();
        polled
    }
}

/// An [`mpsc::Receiver`] whose empty polls are cheap (see the module docs).
#[derive(Debug)]
pub(crate) struct QuietReceiver<T> {
    rx: mpsc::Receiver<T>,
    wake: QuietWake,
}

impl<T> QuietReceiver<T> {
    pub(crate) fn new(rx: mpsc::Receiver<T>) -> Self {
        Self {
            rx,
            wake: QuietWake::new(),
        }
    }

    /// As [`mpsc::Receiver::poll_recv`].
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let rx = &mut self.rx;
        self.wake.poll(cx, |cx| rx.poll_recv(cx))
    }

    /// As [`mpsc::Receiver::recv`].
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// As [`mpsc::Receiver::try_recv`]. It leaves `waiting` alone: tokio's `try_recv`, when
    /// it finds a send in progress, swaps the channel's registered waker for one of its own,
    /// but wakes the registered one (`Mark`) first, so the next poll goes to the channel
    /// (tokio 1.54 `sync/mpsc/chan.rs`; re-check on a tokio upgrade).
    pub(crate) fn try_recv(&mut self) -> Result<T, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(count))
    }

    fn woken(count: &Count) -> usize {
        count.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_send_wakes_the_task_and_is_received() {
        let (tx, rx) = mpsc::channel(4);
        let mut rx = QuietReceiver::new(rx);
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(rx.poll_recv(&mut cx).is_pending());
        }
        assert_eq!(woken(&count), 0);
        tx.try_send(1).unwrap();
        assert_eq!(woken(&count), 1);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(1)));
        // Two sends while the receiver is not waiting: both come, then it waits again.
        tx.try_send(2).unwrap();
        tx.try_send(3).unwrap();
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(2)));
        assert_eq!(rx.try_recv(), Ok(3));
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.try_send(4).unwrap();
        assert!(woken(&count) >= 2);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(4)));
    }

    #[test]
    fn empty_polls_by_the_same_task_do_not_reach_the_channel() {
        let (tx, rx) = mpsc::channel(4);
        let mut rx = QuietReceiver::new(rx);
        let (_count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..5 {
            assert!(rx.poll_recv(&mut cx).is_pending());
        }
        assert_eq!(
            rx.wake.full_polls, 1,
            "one poll registers, the rest are quiet"
        );
        tx.try_send(1).unwrap();
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(rx.wake.full_polls, 2);
        // Empty again: one full poll registers, then quiet again (the woken mark was cleared).
        for _ in 0..5 {
            assert!(rx.poll_recv(&mut cx).is_pending());
        }
        assert_eq!(rx.wake.full_polls, 3);
    }

    #[test]
    fn the_last_sender_going_away_ends_it() {
        let (tx, rx) = mpsc::channel::<u8>(4);
        let mut rx = QuietReceiver::new(rx);
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(tx);
        assert_eq!(woken(&count), 1);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn another_task_polling_is_the_one_woken() {
        let (tx, rx) = mpsc::channel(4);
        let mut rx = QuietReceiver::new(rx);
        let (first, first_waker) = counting_waker();
        let (second, second_waker) = counting_waker();
        assert!(rx
            .poll_recv(&mut Context::from_waker(&first_waker))
            .is_pending());
        assert!(rx
            .poll_recv(&mut Context::from_waker(&second_waker))
            .is_pending());
        tx.try_send(7).unwrap();
        assert_eq!(woken(&first), 0);
        assert_eq!(woken(&second), 1);
        assert_eq!(
            rx.poll_recv(&mut Context::from_waker(&second_waker)),
            Poll::Ready(Some(7))
        );
    }

    /// A smoke test: it would catch a lost wake-up (the mark cleared after the channel's poll
    /// instead of before) only if a send fell into that window, by chance.
    #[tokio::test]
    async fn sends_from_another_thread_all_arrive() {
        let (tx, rx) = mpsc::channel(8);
        let mut rx = QuietReceiver::new(rx);
        let sender = std::thread::spawn(move || {
            for i in 0..10_000u32 {
                tx.blocking_send(i).unwrap();
            }
        });
        let mut recv = pin!(async {
            let mut next = 0;
            while let Some(i) = rx.recv().await {
                assert_eq!(i, next);
                next += 1;
            }
            next
        });
        let got = tokio::time::timeout(std::time::Duration::from_secs(20), &mut recv)
            .await
            .expect("every message in time");
        assert_eq!(got, 10_000);
        sender.join().unwrap();
    }

    #[tokio::test]
    async fn a_socket_becoming_readable_wakes_the_task() {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut wake = QuietWake::new();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(wake
                .poll(&mut cx, |cx| socket.poll_recv_ready(cx))
                .is_pending());
        }
        peer.send_to(b"x", socket.local_addr().unwrap()).unwrap();
        // The reactor runs while this task waits for the wake (bounded).
        let mut waited = 0;
        while woken(&count) == 0 {
            waited += 1;
            assert!(waited < 10_000, "never woken");
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            wake.poll(&mut cx, |cx| socket.poll_recv_ready(cx)),
            Poll::Ready(Ok(()))
        ));
    }
}
