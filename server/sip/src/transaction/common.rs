//! What the four state machines share: the actions they ask of their owner, the state names,
//! and the retransmission timer.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message::Message;

use super::Timer;

/// What a state machine asks its owner to do; the machines never see destinations or queues.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Action {
    /// Send these bytes to the transaction's peer.
    Transmit(Bytes),
    /// Hand this response to the TU (client transactions only).
    Deliver(Message),
    /// The transaction timed out; the TU must hear of it.
    Timeout(Timer),
}

/// Transaction states, named as in the RFC 3261 figures 5–8 and RFC 6026 (Accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Client INVITE, request sent, nothing received.
    Calling,
    /// Non-INVITE, request sent or received, no response yet.
    Trying,
    /// A provisional response was received (client) or sent (server).
    Proceeding,
    /// A final response (3xx–6xx for INVITE, any for non-INVITE) was received or sent.
    Completed,
    /// Server INVITE: the ACK for a non-2xx final arrived.
    Confirmed,
    /// INVITE: a 2xx was received or sent (RFC 6026).
    Accepted,
    /// Done; the layer forgets the transaction.
    Terminated,
}

/// `now + d`, saturating at `now` when the sum does not fit an `Instant` (configured durations
/// are validated to at most 64 hours, so this never happens with sane clocks).
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

/// The earlier of two optional deadlines.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A retransmission timer (A, E or G): its next firing and the interval that led to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retransmit {
    pub(crate) at: Instant,
    pub(crate) interval: Duration,
}

impl Retransmit {
    /// Starts on unreliable transports only (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1).
    pub(crate) fn start(reliable: bool, now: Instant, interval: Duration) -> Option<Retransmit> {
        (!reliable).then(|| Retransmit {
            at: after(now, interval),
            interval,
        })
    }

    pub(crate) fn due(&self, now: Instant) -> bool {
        self.at <= now
    }

    /// Resets the timer with the next interval, computed from the current one.
    pub(crate) fn reset(&mut self, now: Instant, next: impl FnOnce(Duration) -> Duration) {
        self.interval = next(self.interval);
        self.at = after(now, self.interval);
    }
}
