//! Nonce-count replay protection (RFC 7616 §3.4 `nc`) in bounded memory.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};

use super::nonce::{NonceId, NonceIssuer};

/// Fixed-size stand-in for a nonce string: the first 16 bytes of its SHA-256. Keeps entries small
/// and allocation-free whatever nonce a client echoes, and 128 bits make a collision between two
/// live nonces practically impossible.
type Key = [u8; 16];

/// Highest nonce count seen for a nonce used with qop. A nonce used without qop is marked with
/// `ONCE`, which no `nc` can exceed.
const ONCE: u64 = u64::MAX;

/// Remembers, per nonce, the highest `nc` accepted, so that a captured request cannot be
/// replayed while its nonce is still valid.
///
/// **Policy.** With `qop`, each request must carry a strictly higher `nc` than the last one
/// accepted for that nonce (RFC 7616 §3.4: a client increments it for every request; SIPml5 does,
/// and its requests on one WebSocket arrive in order). UDP retransmissions repeat the `nc` but are
/// absorbed by the transaction layer before they get here.
///
/// **Without `qop`** (RFC 2069 mode) there is no count, so a nonce is accepted **once**. RFC 2069
/// credentials cover only method and digest-uri, not the Contact, so a reusable nonce would let
/// anyone who saw one REGISTER bind their own Contact to the victim's AOR until the nonce expires.
/// The price is one extra `stale=true` round trip per request, paid only by clients that ignore
/// the `qop="auth"` we always offer — in practice none of ours. Kamailio offers the same trade as
/// its opt-in `one_time_nonce`; we make it the default because a registrar reachable from
/// browsers should not accept replays.
///
/// **Memory.** At most `capacity` nonces are remembered. Entries expire `ttl_secs` after their
/// first use; [`Self::for_issuer`] sets that to the issuer's lifetime plus skew, after which the
/// nonce is stale anyway. When full of live entries the oldest is dropped: that nonce loses its
/// replay protection, so size `capacity` for the nonces authenticated within one lifetime
/// (roughly clients × dialogs). Only call [`Self::accept`] after the response verified, so
/// unauthenticated traffic cannot fill the table.
#[derive(Debug)]
pub struct NonceCounts {
    /// Only nonces that verified get here (minted by us), hashed with a seeded fast hasher.
    highest: HashMap<Key, u64, foldhash::fast::RandomState>,
    // Keys in order of first use, with that time; the front is the oldest entry.
    order: VecDeque<(Key, u64)>,
    capacity: usize,
    ttl_secs: u64,
}

impl NonceCounts {
    /// Remembers up to `capacity` nonces (at least one) for `ttl_secs` after first use.
    pub fn new(capacity: usize, ttl_secs: u64) -> Self {
        Self {
            highest: HashMap::default(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl_secs,
        }
    }

    /// Remembers up to `capacity` nonces for as long as `issuer` could call them valid.
    pub fn for_issuer(issuer: &NonceIssuer, capacity: usize) -> Self {
        Self::new(
            capacity,
            issuer
                .lifetime_secs()
                .saturating_add(issuer.max_skew_secs()),
        )
    }

    /// Records a use of `nonce` with nonce count `nc` ([`Credentials::nc`](super::Credentials::nc):
    /// `None` when qop is absent) at `now_secs`; false when it is a replay.
    ///
    /// With `Some(nc)`: true iff `nc` is above every count accepted for this nonce so far (so
    /// `nc = 0` never passes). With `None`: true only for the first use of the nonce. A refused
    /// use changes nothing; answer it with a `stale=true` challenge.
    pub fn accept(&mut self, nonce: &str, nc: Option<u32>, now_secs: u64) -> bool {
        self.accept_key(key(nonce), nc, now_secs)
    }

    /// [`NonceCounts::accept`] for a nonce known by its [`NonceId`]
    /// ([`NonceIssuer::check_id`]), which needs no hashing: one SHA-256 less per authenticated
    /// request. Keep one table to one of the two methods: a nonce remembered by its text is
    /// not found by its id.
    pub fn accept_id(&mut self, id: NonceId, nc: Option<u32>, now_secs: u64) -> bool {
        self.accept_key(id.0, nc, now_secs)
    }

    fn accept_key(&mut self, key: Key, nc: Option<u32>, now_secs: u64) -> bool {
        self.expire(now_secs);
        let wanted = nc.map_or(ONCE, u64::from);
        match self.highest.entry(key) {
            Entry::Occupied(mut seen) => {
                if nc.is_none() || wanted <= *seen.get() {
                    return false;
                }
                seen.insert(wanted);
                true
            }
            Entry::Vacant(slot) => {
                if wanted == 0 {
                    return false;
                }
                slot.insert(wanted);
                self.order.push_back((key, now_secs));
                while self.order.len() > self.capacity {
                    self.evict_oldest();
                }
                true
            }
        }
    }

    /// Number of nonces remembered.
    pub fn len(&self) -> usize {
        self.highest.len()
    }

    /// True when no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.highest.is_empty()
    }

    /// The most nonces remembered at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Drops entries first used `ttl_secs` or more before `now_secs`. [`Self::accept`] does this
    /// itself; a caller may also call it from a periodic timer to give memory back when idle.
    pub fn expire(&mut self, now_secs: u64) {
        while let Some(&(_, first_used)) = self.order.front() {
            if now_secs.saturating_sub(first_used) < self.ttl_secs {
                break;
            }
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((key, _)) = self.order.pop_front() {
            self.highest.remove(&key);
        }
    }
}

fn key(nonce: &str) -> Key {
    let digest = Sha256::digest(nonce.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::NonceStatus;

    #[test]
    fn nc_must_increase() {
        let mut counts = NonceCounts::new(10, 300);
        assert!(counts.accept("n", Some(1), 0));
        assert!(!counts.accept("n", Some(1), 0), "replay");
        assert!(counts.accept("n", Some(2), 1));
        assert!(counts.accept("n", Some(5), 2), "gaps are fine");
        assert!(!counts.accept("n", Some(3), 3), "going back is not");
        assert!(!counts.accept("n", Some(5), 3));
        assert!(!counts.accept("n", None, 3), "switching to no-qop is not");
        assert!(counts.accept("n", Some(u32::MAX), 4));
        assert!(!counts.accept("n", Some(u32::MAX), 4));
        assert!(counts.accept("m", Some(1), 4), "counts are per nonce");
        assert!(!counts.accept("z", Some(0), 4), "nc starts at 1");
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn without_qop_a_nonce_is_used_once() {
        let mut counts = NonceCounts::new(10, 300);
        assert!(counts.accept("n", None, 0));
        assert!(!counts.accept("n", None, 1));
        assert!(!counts.accept("n", Some(1), 1));
        assert!(!counts.accept("n", Some(u32::MAX), 1));
    }

    #[test]
    fn entries_expire_after_ttl() {
        let mut counts = NonceCounts::new(10, 300);
        assert!(counts.accept("a", Some(1), 100));
        assert!(counts.accept("b", Some(1), 200));
        counts.expire(399);
        assert_eq!(counts.len(), 2);
        counts.expire(400);
        assert_eq!(counts.len(), 1);
        // Once forgotten, the nonce is stale at the issuer and never reaches accept() again.
        assert!(counts.accept("a", Some(1), 400));
        assert!(!counts.accept("b", Some(1), 499));
        assert!(counts.accept("b", Some(1), 500));
    }

    #[test]
    fn capacity_bounds_memory_and_evicts_oldest() {
        let mut counts = NonceCounts::new(3, 300);
        for (i, nonce) in ["a", "b", "c", "d"].into_iter().enumerate() {
            assert!(counts.accept(nonce, Some(1), i as u64));
        }
        assert_eq!(counts.len(), 3);
        assert_eq!(counts.capacity(), 3);
        assert!(!counts.accept("d", Some(1), 4));
        assert!(!counts.accept("b", Some(1), 4));
        assert!(counts.accept("a", Some(1), 4), "the oldest was forgotten");
        for i in 0..10_000u32 {
            counts.accept(&i.to_string(), Some(1), 5);
        }
        assert_eq!(counts.len(), 3);
        assert_eq!(counts.order.len(), 3);
        assert_eq!(NonceCounts::new(0, 1).capacity(), 1);
    }

    #[test]
    fn ids_are_counted_as_nonces_are() {
        let issuer = NonceIssuer::new([7; 32]);
        let a = issuer.issue(1000, "r", [1; 16]);
        let b = issuer.issue(1000, "r", [2; 16]);
        let (status, Some(id_a)) = issuer.check_id(&a, "r", 1000) else {
            panic!("no id for our own nonce");
        };
        assert_eq!(status, NonceStatus::Valid);
        let (_, id_b) = issuer.check_id(&b, "r", 1000);
        assert_ne!(Some(id_a), id_b, "each nonce its own id");
        assert_eq!(
            issuer.check_id(&a, "r", 1000).1,
            Some(id_a),
            "and always the same"
        );
        let (status, id) = issuer.check_id(&a, "r", 1000 + issuer.lifetime_secs() + 1);
        assert_eq!((status, id), (NonceStatus::Stale, Some(id_a)));
        assert_eq!(
            issuer.check_id(&a, "other", 1000),
            (NonceStatus::Invalid, None)
        );
        assert_eq!(issuer.check_id(&a, "r", 0), (NonceStatus::Invalid, None));
        assert_eq!(
            issuer.check_id("garbage", "r", 1000),
            (NonceStatus::Invalid, None)
        );

        let mut counts = NonceCounts::new(10, 300);
        assert!(counts.accept_id(id_a, Some(1), 0));
        assert!(!counts.accept_id(id_a, Some(1), 0), "replay");
        assert!(counts.accept_id(id_a, Some(2), 1));
        assert!(
            !counts.accept_id(id_a, None, 1),
            "switching to no-qop is not"
        );
        let id_b = id_b.unwrap();
        assert!(counts.accept_id(id_b, None, 1));
        assert!(!counts.accept_id(id_b, None, 2), "without qop: once");
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn for_issuer_covers_lifetime_and_skew() {
        let issuer = NonceIssuer::new([0; 32]).with_lifetime(60).with_max_skew(5);
        let mut counts = NonceCounts::for_issuer(&issuer, 8);
        assert!(counts.accept("n", Some(1), 0));
        counts.expire(64);
        assert!(!counts.is_empty());
        counts.expire(65);
        assert!(counts.is_empty());
    }
}
