//! The non-INVITE server transaction: RFC 3261 §17.2.2 (Figure 8).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::common::{after, Action, State};
use super::{Timer, TimerConfig, TransactionError};

#[derive(Debug)]
enum Inner {
    /// Request retransmissions are absorbed. `guard` is the non-RFC [`Timer::Unanswered`].
    Trying {
        guard: Option<Instant>,
    },
    /// The last provisional is re-sent for request retransmissions.
    Proceeding {
        last_provisional: Bytes,
        guard: Option<Instant>,
    },
    /// The final response is re-sent for request retransmissions until Timer J fires.
    Completed {
        response: Bytes,
        j: Instant,
    },
    Terminated,
}

/// One non-INVITE server transaction.
#[derive(Debug)]
pub struct ServerNonInvite {
    reliable: bool,
    inner: Inner,
}

impl ServerNonInvite {
    /// Enters Trying for a new request (the owner passes the request to the TU).
    pub fn start(reliable: bool, unanswered: Option<Duration>, now: Instant) -> ServerNonInvite {
        ServerNonInvite {
            reliable,
            inner: Inner::Trying {
                guard: unanswered.map(|d| after(now, d)),
            },
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.inner {
            Inner::Trying { .. } => State::Trying,
            Inner::Proceeding { .. } => State::Proceeding,
            Inner::Completed { .. } => State::Completed,
            Inner::Terminated => State::Terminated,
        }
    }

    /// The next instant [`ServerNonInvite::on_timeout`] has work to do.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.inner {
            Inner::Trying { guard } | Inner::Proceeding { guard, .. } => *guard,
            Inner::Completed { j, .. } => Some(*j),
            Inner::Terminated => None,
        }
    }

    /// A retransmission of the request arrived.
    pub fn on_request(&mut self, out: &mut Vec<Action>) {
        match &self.inner {
            Inner::Proceeding {
                last_provisional: r,
                ..
            }
            | Inner::Completed { response: r, .. } => out.push(Action::Transmit(r.clone())),
            Inner::Trying { .. } | Inner::Terminated => {}
        }
    }

    /// The TU sends a response with status `code` (already checked to be 100–699).
    pub fn respond(
        &mut self,
        code: u16,
        response: Bytes,
        timers: &TimerConfig,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), TransactionError> {
        let guard = match &self.inner {
            Inner::Trying { guard } | Inner::Proceeding { guard, .. } => *guard,
            Inner::Completed { .. } => return Err(TransactionError::FinalResponseSent),
            Inner::Terminated => return Err(TransactionError::UnknownTransaction),
        };
        if code < 200 {
            self.inner = Inner::Proceeding {
                last_provisional: response.clone(),
                guard,
            };
        } else {
            let j = timers.timer_j(self.reliable);
            self.inner = if j.is_zero() {
                Inner::Terminated
            } else {
                Inner::Completed {
                    response: response.clone(),
                    j: after(now, j),
                }
            };
        }
        out.push(Action::Transmit(response));
        Ok(())
    }

    /// Fires every timer due at `now`.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        match &self.inner {
            Inner::Trying { guard: Some(g) } | Inner::Proceeding { guard: Some(g), .. }
                if *g <= now =>
            {
                out.push(Action::Timeout(Timer::Unanswered));
                self.inner = Inner::Terminated;
            }
            Inner::Completed { j, .. } if *j <= now => self.inner = Inner::Terminated,
            _ => {}
        }
    }

    /// The transport failed to send a response (RFC 3261 §17.2.4): the owner informs the TU.
    pub fn on_transport_error(&mut self) {
        self.inner = Inner::Terminated;
    }
}
