//! Timer values (RFC 3261 §17 and Table 4, RFC 6026 §8) and the layer's limits. Everything is
//! configuration handed to [`super::TransactionLayer::new`]; nothing here is global.

use std::time::Duration;

use super::TransactionError;

/// The RFC 3261 timer names, as reported in [`super::Event::Timeout`] and used in docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timer {
    /// INVITE request retransmit interval (unreliable transports).
    A,
    /// INVITE client transaction timeout.
    B,
    /// Wait time for response retransmissions in the client INVITE Completed state.
    D,
    /// Non-INVITE request retransmit interval (unreliable transports).
    E,
    /// Non-INVITE client transaction timeout.
    F,
    /// INVITE final response retransmit interval (unreliable transports).
    G,
    /// Wait time for ACK receipt in the server INVITE Completed state.
    H,
    /// Wait time for ACK retransmissions in the server INVITE Confirmed state.
    I,
    /// Wait time for request retransmissions in the server non-INVITE Completed state.
    J,
    /// Wait time for response retransmissions in the client non-INVITE Completed state.
    K,
    /// Wait time for INVITE retransmissions in the server INVITE Accepted state (RFC 6026).
    L,
    /// Wait time for 2xx retransmissions in the client INVITE Accepted state (RFC 6026).
    M,
    /// Not an RFC timer: the TU gave a server transaction no final response within
    /// [`LayerConfig::unanswered_invite`] / [`LayerConfig::unanswered_non_invite`]. The
    /// transaction is dropped so a TU bug cannot pin its memory forever.
    Unanswered,
}

/// RFC 3261 T1, T2, T4 and the fixed part of Timer D. Every other timer is derived from these
/// (RFC 3261 Table 4, RFC 6026 §8.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate; 500 ms by default.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses; 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network; 5 s.
    pub t4: Duration,
    /// Timer D on unreliable transports: "at least 32 s" (RFC 3261 §17.1.1.2); it is not a
    /// multiple of T1, hence its own field.
    pub d_unreliable: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            d_unreliable: Duration::from_secs(32),
        }
    }
}

/// Upper bound for any configured base value: keeps `Instant + 64*T1` far from overflow.
const MAX_BASE: Duration = Duration::from_secs(3600);

fn zero_if(reliable: bool, d: Duration) -> Duration {
    if reliable {
        Duration::ZERO
    } else {
        d
    }
}

impl TimerConfig {
    /// Checks `1 ms <= T1 <= T2` and every value at most an hour. A zero T1 would make the
    /// retransmission timers fire in a loop.
    pub fn validate(&self) -> Result<(), TransactionError> {
        let ok = self.t1 >= Duration::from_millis(1)
            && self.t1 <= self.t2
            && self.t2 <= MAX_BASE
            && self.t4 <= MAX_BASE
            && self.d_unreliable <= MAX_BASE;
        if ok {
            Ok(())
        } else {
            Err(TransactionError::InvalidTimers)
        }
    }

    fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer A's first interval: T1 (then doubled at every firing, uncapped).
    pub fn timer_a(&self) -> Duration {
        self.t1
    }
    /// Timer B: 64*T1.
    pub fn timer_b(&self) -> Duration {
        self.t1x64()
    }
    /// Timer D: [`TimerConfig::d_unreliable`] on unreliable transports, zero on reliable ones.
    pub fn timer_d(&self, reliable: bool) -> Duration {
        zero_if(reliable, self.d_unreliable)
    }
    /// Timer E's first interval: T1 (then doubled up to T2; T2 once a provisional arrived).
    pub fn timer_e(&self) -> Duration {
        self.t1
    }
    /// Timer F: 64*T1.
    pub fn timer_f(&self) -> Duration {
        self.t1x64()
    }
    /// Timer G's first interval: T1 (then doubled up to T2).
    pub fn timer_g(&self) -> Duration {
        self.t1
    }
    /// Timer H: 64*T1.
    pub fn timer_h(&self) -> Duration {
        self.t1x64()
    }
    /// Timer I: T4 on unreliable transports, zero on reliable ones.
    pub fn timer_i(&self, reliable: bool) -> Duration {
        zero_if(reliable, self.t4)
    }
    /// Timer J: 64*T1 on unreliable transports, zero on reliable ones.
    pub fn timer_j(&self, reliable: bool) -> Duration {
        zero_if(reliable, self.t1x64())
    }
    /// Timer K: T4 on unreliable transports, zero on reliable ones.
    pub fn timer_k(&self, reliable: bool) -> Duration {
        zero_if(reliable, self.t4)
    }
    /// Timer L (RFC 6026): 64*T1 on every transport.
    pub fn timer_l(&self) -> Duration {
        self.t1x64()
    }
    /// Timer M (RFC 6026): 64*T1 on every transport.
    pub fn timer_m(&self) -> Duration {
        self.t1x64()
    }
}

/// Everything [`super::TransactionLayer`] is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerConfig {
    pub timers: TimerConfig,
    /// Live transactions (client and server) beyond which new requests are refused with
    /// [`TransactionError::Overloaded`] (the TU answers 503). Retransmissions of existing
    /// transactions are still handled.
    pub max_transactions: usize,
    /// Send `100 Trying` as soon as an INVITE server transaction is created (RFC 3261 §17.2.1
    /// requires it unless the TU answers within 200 ms). The 100 is built from the request
    /// without `received`/`rport`: a TU that wants them stamped turns this off and sends its
    /// own.
    pub send_100_trying: bool,
    /// Safety net, not in the RFC: a non-INVITE server transaction the TU has not answered
    /// finally after this long is dropped ([`Timer::Unanswered`]). The client gave up at Timer
    /// F (64*T1) anyway. `None` keeps it until the TU answers.
    pub unanswered_non_invite: Option<Duration>,
    /// The same safety net for INVITE server transactions. Ringing may legitimately last
    /// minutes (a proxy's Timer C is above 3 minutes), so the default is generous.
    pub unanswered_invite: Option<Duration>,
    /// Transactions the layer's tables are sized for when it is made, so that they do not
    /// grow (and copy every live entry at each doubling) while load builds up: over UDP a
    /// completed transaction stays 32 s (Timer J), so 1,000 requests a second keep about
    /// 32,000 live. Only the tables' slots are reserved (16 bytes each, touched when used).
    pub reserved_transactions: usize,
}

impl Default for LayerConfig {
    fn default() -> Self {
        LayerConfig {
            timers: TimerConfig::default(),
            max_transactions: 32_768,
            send_100_trying: true,
            unanswered_non_invite: Some(Duration::from_secs(32)),
            unanswered_invite: Some(Duration::from_secs(600)),
            reserved_transactions: 0,
        }
    }
}
