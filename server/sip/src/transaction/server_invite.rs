//! The INVITE server transaction: RFC 3261 §17.2.1 (Figure 7) as corrected by RFC 6026 §8.5–8.7:
//! a 2xx from the TU moves it to Accepted, where INVITE retransmissions are absorbed (the TU
//! retransmits its 2xx itself), further 2xx from the TU are sent, an ACK is passed to the TU,
//! and Timer L ends it.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::build::ResponseBuilder;
use crate::message::Message;

use super::common::{after, earliest, Action, Retransmit, State};
use super::{Timer, TimerConfig, TransactionError};

#[derive(Debug)]
enum Inner {
    /// The last provisional response is re-sent for INVITE retransmissions. `guard` is the
    /// non-RFC [`Timer::Unanswered`] deadline.
    Proceeding {
        last_provisional: Option<Bytes>,
        guard: Option<Instant>,
    },
    /// The 3xx–6xx final is retransmitted on Timer G (unreliable transports, capped at T2)
    /// and for INVITE retransmissions until an ACK arrives or Timer H fires.
    Completed {
        response: Bytes,
        g: Option<Retransmit>,
        h: Instant,
    },
    /// ACK retransmissions are absorbed until Timer I fires.
    Confirmed {
        i: Instant,
    },
    /// RFC 6026: INVITE retransmissions absorbed, ACKs go to the TU, until Timer L fires.
    Accepted {
        l: Instant,
    },
    Terminated,
}

/// What happened to an ACK that matched an INVITE server transaction.
#[derive(Debug)]
#[must_use]
pub enum AckDisposition {
    /// The ACK for our non-2xx final: the transaction consumed it.
    Absorbed,
    /// Not the transaction's business (an ACK for a 2xx, RFC 6026 §8.7, or an ACK before any
    /// final response): give it to the TU.
    ToTu(Message),
}

/// One INVITE server transaction.
#[derive(Debug)]
pub struct ServerInvite {
    reliable: bool,
    inner: Inner,
}

impl ServerInvite {
    /// Enters Proceeding for a new INVITE, sending `100 Trying` when asked to. The request
    /// itself goes to the TU (the owner does that).
    pub fn start(
        request: &Message,
        reliable: bool,
        send_100: bool,
        unanswered: Option<Duration>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> ServerInvite {
        let last_provisional =
            send_100.then(|| ResponseBuilder::new(request, 100, "Trying").build());
        if let Some(trying) = &last_provisional {
            out.push(Action::Transmit(trying.clone()));
        }
        ServerInvite {
            reliable,
            inner: Inner::Proceeding {
                last_provisional,
                guard: unanswered.map(|d| after(now, d)),
            },
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.inner {
            Inner::Proceeding { .. } => State::Proceeding,
            Inner::Completed { .. } => State::Completed,
            Inner::Confirmed { .. } => State::Confirmed,
            Inner::Accepted { .. } => State::Accepted,
            Inner::Terminated => State::Terminated,
        }
    }

    /// The next instant [`ServerInvite::on_timeout`] has work to do.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.inner {
            Inner::Proceeding { guard, .. } => *guard,
            Inner::Completed { g, h, .. } => earliest(g.map(|g| g.at), Some(*h)),
            Inner::Confirmed { i } => Some(*i),
            Inner::Accepted { l } => Some(*l),
            Inner::Terminated => None,
        }
    }

    /// A retransmission of the INVITE arrived.
    pub fn on_invite(&mut self, out: &mut Vec<Action>) {
        match &self.inner {
            Inner::Proceeding {
                last_provisional: Some(r),
                ..
            }
            | Inner::Completed { response: r, .. } => out.push(Action::Transmit(r.clone())),
            _ => {}
        }
    }

    /// An ACK matched this transaction.
    pub fn on_ack(&mut self, ack: Message, timers: &TimerConfig, now: Instant) -> AckDisposition {
        match &self.inner {
            Inner::Completed { .. } => {
                let i = timers.timer_i(self.reliable);
                self.inner = if i.is_zero() {
                    Inner::Terminated
                } else {
                    Inner::Confirmed { i: after(now, i) }
                };
                AckDisposition::Absorbed
            }
            Inner::Confirmed { .. } | Inner::Terminated => AckDisposition::Absorbed,
            Inner::Proceeding { .. } | Inner::Accepted { .. } => AckDisposition::ToTu(ack),
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
        match (&mut self.inner, code) {
            (
                Inner::Proceeding {
                    last_provisional, ..
                },
                100..=199,
            ) => {
                *last_provisional = Some(response.clone());
            }
            (Inner::Proceeding { .. }, 200..=299) => {
                self.inner = Inner::Accepted {
                    l: after(now, timers.timer_l()),
                };
            }
            (Inner::Proceeding { .. }, _) => {
                self.inner = Inner::Completed {
                    g: Retransmit::start(self.reliable, now, timers.timer_g()),
                    h: after(now, timers.timer_h()),
                    response: response.clone(),
                };
            }
            // RFC 6026 §8.6: the TU's 2xx retransmissions (and other 2xx, from a forking
            // proxy's other branches) pass through the Accepted transaction.
            (Inner::Accepted { .. }, 200..=299) => {}
            (Inner::Terminated, _) => return Err(TransactionError::UnknownTransaction),
            _ => return Err(TransactionError::FinalResponseSent),
        }
        out.push(Action::Transmit(response));
        Ok(())
    }

    /// Fires every timer due at `now`.
    pub fn on_timeout(&mut self, timers: &TimerConfig, now: Instant, out: &mut Vec<Action>) {
        match &mut self.inner {
            Inner::Proceeding {
                guard: Some(guard), ..
            } if *guard <= now => {
                out.push(Action::Timeout(Timer::Unanswered));
                self.inner = Inner::Terminated;
            }
            Inner::Completed { h, .. } if *h <= now => {
                out.push(Action::Timeout(Timer::H));
                self.inner = Inner::Terminated;
            }
            Inner::Completed {
                g: Some(g),
                response,
                ..
            } if g.due(now) => {
                out.push(Action::Transmit(response.clone()));
                let t2 = timers.t2;
                g.reset(now, |i| i.saturating_mul(2).min(t2));
            }
            Inner::Confirmed { i } if *i <= now => self.inner = Inner::Terminated,
            Inner::Accepted { l } if *l <= now => self.inner = Inner::Terminated,
            _ => {}
        }
    }

    /// The transport failed to send a response (RFC 3261 §17.2.4): the owner informs the TU.
    pub fn on_transport_error(&mut self) {
        self.inner = Inner::Terminated;
    }
}
