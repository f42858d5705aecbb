//! The non-INVITE client transaction: RFC 3261 §17.1.2 (Figure 6).

use std::time::Instant;

use bytes::Bytes;

use crate::message::Message;

use super::common::{after, earliest, Action, Retransmit, State};
use super::{Timer, TimerConfig};

#[derive(Debug)]
enum Inner {
    /// Timer E doubles up to T2 (unreliable transports only); Timer F runs.
    Trying {
        e: Option<Retransmit>,
        f: Instant,
    },
    /// Timer E keeps its pending deadline, then fires every T2; Timer F runs.
    Proceeding {
        e: Option<Retransmit>,
        f: Instant,
    },
    /// Response retransmissions are absorbed until Timer K fires.
    Completed {
        k: Instant,
    },
    Terminated,
}

/// One non-INVITE client transaction.
#[derive(Debug)]
pub struct ClientNonInvite {
    /// The request's bytes, kept while Timer E may send them again, then dropped: a Completed
    /// transaction lives on for Timer K and needs nothing of it. Only the bytes: nothing but a
    /// retransmission reads a non-INVITE request again (an INVITE's is read for its CANCEL and
    /// ACK), so a proxy can start one without a parsed copy of what it forwards.
    request: Option<Bytes>,
    reliable: bool,
    inner: Inner,
}

impl ClientNonInvite {
    /// Sends the request (its bytes) and enters Trying.
    pub fn start(
        request: Bytes,
        reliable: bool,
        timers: &TimerConfig,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> ClientNonInvite {
        out.push(Action::Transmit(request.clone()));
        ClientNonInvite {
            inner: Inner::Trying {
                e: Retransmit::start(reliable, now, timers.timer_e()),
                f: after(now, timers.timer_f()),
            },
            request: Some(request),
            reliable,
        }
    }

    /// The bytes this transaction sends, until a final response arrives (or it ends).
    pub fn request(&self) -> Option<&Bytes> {
        self.request.as_ref()
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

    /// The next instant [`ClientNonInvite::on_timeout`] has work to do.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.inner {
            Inner::Trying { e, f } | Inner::Proceeding { e, f } => {
                earliest(e.map(|e| e.at), Some(*f))
            }
            Inner::Completed { k } => Some(*k),
            Inner::Terminated => None,
        }
    }

    /// A response matched this transaction.
    pub fn on_response(
        &mut self,
        response: Message,
        timers: &TimerConfig,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(code) = response.status() else {
            return;
        };
        match (&self.inner, code) {
            (Inner::Trying { e, f } | Inner::Proceeding { e, f }, 100..=199) => {
                self.inner = Inner::Proceeding { e: *e, f: *f };
                out.push(Action::Deliver(response));
            }
            (Inner::Trying { .. } | Inner::Proceeding { .. }, 200..=699) => {
                out.push(Action::Deliver(response));
                self.request = None;
                let k = timers.timer_k(self.reliable);
                self.inner = if k.is_zero() {
                    Inner::Terminated
                } else {
                    Inner::Completed { k: after(now, k) }
                };
            }
            // Retransmitted responses in Completed are absorbed.
            _ => {}
        }
    }

    /// Fires every timer due at `now`.
    pub fn on_timeout(&mut self, timers: &TimerConfig, now: Instant, out: &mut Vec<Action>) {
        let proceeding = matches!(self.inner, Inner::Proceeding { .. });
        match &mut self.inner {
            Inner::Trying { f, .. } | Inner::Proceeding { f, .. } if *f <= now => {
                out.push(Action::Timeout(Timer::F));
                self.inner = Inner::Terminated;
                self.request = None;
            }
            Inner::Trying { e: Some(e), .. } | Inner::Proceeding { e: Some(e), .. }
                if e.due(now) =>
            {
                if let Some(request) = &self.request {
                    out.push(Action::Transmit(request.clone()));
                }
                let t2 = timers.t2;
                if proceeding {
                    e.reset(now, |_| t2);
                } else {
                    e.reset(now, |i| i.saturating_mul(2).min(t2));
                }
            }
            Inner::Completed { k } if *k <= now => self.inner = Inner::Terminated,
            _ => {}
        }
    }

    /// The transport failed to send (RFC 3261 §17.1.4): the owner informs the TU.
    pub fn on_transport_error(&mut self) {
        self.inner = Inner::Terminated;
        self.request = None;
    }
}
