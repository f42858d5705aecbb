//! The INVITE client transaction: RFC 3261 §17.1.1 (Figure 5) as corrected by RFC 6026 §8.4,
//! where a 2xx moves the transaction to Accepted so that 2xx retransmissions and forked 2xx
//! still reach the TU until Timer M fires.

use std::time::Instant;

use bytes::Bytes;

use crate::build::ack_for_failure;
use crate::message::Message;

use super::common::{after, earliest, Action, Retransmit, State};
use super::{Timer, TimerConfig};

#[derive(Debug)]
enum Inner {
    /// Timer A (unreliable transports only) and Timer B run.
    Calling {
        a: Option<Retransmit>,
        b: Instant,
    },
    /// No timer: the TU decides when to give up (CANCEL, a proxy's Timer C).
    Proceeding,
    /// The ACK is kept to answer retransmitted finals until Timer D fires.
    Completed {
        ack: Option<Bytes>,
        d: Instant,
    },
    /// 2xx responses go to the TU (which ACKs them) until Timer M fires.
    Accepted {
        m: Instant,
    },
    Terminated,
}

/// One INVITE client transaction.
#[derive(Debug)]
pub struct ClientInvite {
    /// Kept while it may be sent again or answered with a failure (Calling, Proceeding: Timer
    /// A, a CANCEL, the ACK for a 3xx–6xx), then dropped: an Accepted or Completed transaction
    /// lives 32 s over UDP (Timers M, D) and needs only its deadline and ACK.
    request: Option<Message>,
    reliable: bool,
    inner: Inner,
}

impl ClientInvite {
    /// Sends the INVITE and enters Calling.
    pub fn start(
        request: Message,
        reliable: bool,
        timers: &TimerConfig,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> ClientInvite {
        out.push(Action::Transmit(request.raw().clone()));
        ClientInvite {
            inner: Inner::Calling {
                a: Retransmit::start(reliable, now, timers.timer_a()),
                b: after(now, timers.timer_b()),
            },
            request: Some(request),
            reliable,
        }
    }

    /// The INVITE this transaction sends, until a final response arrives (or it ends).
    pub fn request(&self) -> Option<&Message> {
        self.request.as_ref()
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.inner {
            Inner::Calling { .. } => State::Calling,
            Inner::Proceeding => State::Proceeding,
            Inner::Completed { .. } => State::Completed,
            Inner::Accepted { .. } => State::Accepted,
            Inner::Terminated => State::Terminated,
        }
    }

    /// The next instant [`ClientInvite::on_timeout`] has work to do.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.inner {
            Inner::Calling { a, b } => earliest(a.map(|a| a.at), Some(*b)),
            Inner::Completed { d, .. } => Some(*d),
            Inner::Accepted { m } => Some(*m),
            Inner::Proceeding | Inner::Terminated => None,
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
            (Inner::Calling { .. } | Inner::Proceeding, 100..=199) => {
                self.inner = Inner::Proceeding;
                out.push(Action::Deliver(response));
            }
            (Inner::Calling { .. } | Inner::Proceeding, 200..=299) => {
                self.inner = Inner::Accepted {
                    m: after(now, timers.timer_m()),
                };
                self.request = None;
                out.push(Action::Deliver(response));
            }
            (Inner::Accepted { .. }, 200..=299) => out.push(Action::Deliver(response)),
            (Inner::Calling { .. } | Inner::Proceeding, 300..=699) => {
                let ack = self
                    .request
                    .take()
                    .and_then(|request| ack_for_failure(&request, &response));
                if let Some(ack) = &ack {
                    out.push(Action::Transmit(ack.clone()));
                }
                out.push(Action::Deliver(response));
                let d = timers.timer_d(self.reliable);
                self.inner = if d.is_zero() {
                    Inner::Terminated
                } else {
                    Inner::Completed {
                        ack,
                        d: after(now, d),
                    }
                };
            }
            // A retransmitted final: the ACK was lost, send it again; the TU already knows.
            (Inner::Completed { ack: Some(ack), .. }, 300..=699) => {
                out.push(Action::Transmit(ack.clone()));
            }
            // Anything else (a late provisional, a 2xx after a failure, a failure after a
            // 2xx) carries nothing the TU can act on.
            _ => {}
        }
    }

    /// Fires every timer due at `now`.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        match &mut self.inner {
            Inner::Calling { b, .. } if *b <= now => {
                out.push(Action::Timeout(Timer::B));
                self.inner = Inner::Terminated;
                self.request = None;
            }
            Inner::Calling { a: Some(a), .. } if a.due(now) => {
                if let Some(request) = &self.request {
                    out.push(Action::Transmit(request.raw().clone()));
                }
                a.reset(now, |i| i.saturating_mul(2));
            }
            Inner::Completed { d, .. } if *d <= now => self.inner = Inner::Terminated,
            Inner::Accepted { m } if *m <= now => self.inner = Inner::Terminated,
            _ => {}
        }
    }

    /// The transport failed to send (RFC 3261 §17.1.4): the owner informs the TU.
    pub fn on_transport_error(&mut self) {
        self.inner = Inner::Terminated;
        self.request = None;
    }
}
