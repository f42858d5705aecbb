//! Each leg's DTLS-SRTP keying material, captured without forking str0m, so that the host can
//! run SRTP contexts of its own next to str0m's (the forwarding fast path, bench/NOTES.md
//! "Media: a forwarding fast path outside str0m").
//!
//! # How
//!
//! str0m takes its DTLS from the process crypto provider, whose fields are `&'static dyn`
//! traits. [`install`] puts one static [`KeyTapProvider`] there (and [`provider`] hands the same
//! to every leg's `RtcConfig`, so capture does not depend on who installed a default first): its
//! `dtls_provider` delegates to aws-lc-rs's. `RtcConfig::build` creates the leg's DTLS instance
//! synchronously, so [`build`] arms a thread-local with the leg's [`KeySlot`] right around that
//! call; `new_dtls` takes it and wraps the instance in a [`KeyTapInstance`]. An `Rtc` built with
//! nothing armed (a test peer) gets aws-lc-rs's instance unwrapped.
//!
//! [`KeyTapInstance`] delegates every call. When DTLS yields `KeyingMaterial`, it copies the
//! material, the SRTP profile and its role (client = DTLS active) into the slot and returns the
//! same output, so str0m still installs its own SRTP contexts. str0m polls that output in the
//! same drain that emits `Event::Connected`, so the slot is full when the driver sees it.
//!
//! # Rekeying
//!
//! dimpl refuses DTLS 1.2 renegotiation, and an `Rtc` keeps one DTLS instance for its life, so a
//! leg normally gets one set of keys. Should a second `KeyingMaterial` come (a DTLS 1.3 key
//! update, a later dimpl), the slot's generation moves: whoever built contexts from an older
//! generation must stop using them until it has re-read the slot ([`KeySlot::generation`]).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
    SrtpProfile,
};
use str0m::crypto::{CryptoError, CryptoProvider};
use str0m::{Rtc, RtcConfig};

/// One leg's captured keys: what the driver builds its own SRTP contexts from.
pub struct LegKeys {
    /// RFC 5764 §4.2 layout: client key, server key, client salt, server salt.
    pub material: Vec<u8>,
    /// The SRTP protection profile DTLS negotiated.
    pub profile: SrtpProfile,
    /// We are the DTLS client (active): we send with the client half.
    pub dtls_client: bool,
    /// Which capture of the slot this is (1 for the first).
    pub generation: u32,
}

impl std::fmt::Debug for LegKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the material itself.
        f.debug_struct("LegKeys")
            .field("profile", &self.profile)
            .field("dtls_client", &self.dtls_client)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Where a leg's DTLS instance leaves its keys; shared by the instance (inside the `Rtc`) and
/// the driver's leg, so it lives exactly as long as both.
#[derive(Debug, Default)]
pub struct KeySlot {
    /// How many times keys were captured; 0 before the handshake.
    generation: AtomicU32,
    /// The latest keys not taken yet.
    keys: Mutex<Option<LegKeys>>,
}

impl KeySlot {
    /// How many times keys were captured (0: none yet). Contexts built from an older
    /// generation are stale.
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Acquire)
    }

    /// Takes the latest keys, if any arrived since the last take. The slot keeps no copy.
    pub fn take(&self) -> Option<LegKeys> {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Stores keys DTLS exported (the tap's job; tests call it to stand in for a rekey).
    pub(crate) fn put(&self, material: &[u8], profile: SrtpProfile, dtls_client: bool) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the lock: a reader that sees the new generation finds these keys (or a newer
        // set) when it takes.
        let generation = self
            .generation
            .load(Ordering::Relaxed)
            .wrapping_add(1)
            .max(1);
        *keys = Some(LegKeys {
            material: material.to_vec(),
            profile,
            dtls_client,
            generation,
        });
        self.generation.store(generation, Ordering::Release);
    }
}

thread_local! {
    /// The slot of the `Rtc` being built on this thread ([`build`]).
    static ARMED: RefCell<Option<Arc<KeySlot>>> = const { RefCell::new(None) };
}

/// Disarms the thread-local even if `build` panics, so a later `Rtc` never takes a stale slot.
struct Armed;

impl Armed {
    fn new(slot: Arc<KeySlot>) -> Armed {
        ARMED.with(|a| *a.borrow_mut() = Some(slot));
        Armed
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        ARMED.with(|a| a.borrow_mut().take());
    }
}

/// Builds an `Rtc` whose DTLS keys land in the returned slot.
pub fn build(config: RtcConfig, now: Instant) -> (Rtc, Arc<KeySlot>) {
    let slot = Arc::new(KeySlot::default());
    let rtc = {
        let _armed = Armed::new(slot.clone());
        config.set_crypto_provider(provider()).build(now)
    };
    (rtc, slot)
}

/// The crypto provider str0m builds with by default (aws-lc-rs).
fn base() -> &'static CryptoProvider {
    static BASE: OnceLock<CryptoProvider> = OnceLock::new();
    BASE.get_or_init(str0m::crypto::from_feature_flags)
}

/// The process's crypto provider: aws-lc-rs with DTLS tapped.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static TAPPED: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    TAPPED
        .get_or_init(|| {
            static TAP: KeyTapProvider = KeyTapProvider;
            Arc::new(CryptoProvider {
                dtls_provider: &TAP,
                ..base().clone()
            })
        })
        .clone()
}

/// Installs [`provider`] as the process default (the first install wins).
pub(crate) fn install() {
    CryptoProvider::clone(&provider()).install_process_default();
}

/// aws-lc-rs's DTLS provider, wrapping the instances of `Rtc`s built through [`build`].
#[derive(Debug)]
pub(crate) struct KeyTapProvider;

impl DtlsProvider for KeyTapProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        base().dtls_provider.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let inner = base()
            .dtls_provider
            .new_dtls(cert, now, dtls_version, mtu)?;
        Ok(match ARMED.with(|a| a.borrow_mut().take()) {
            Some(slot) => Box::new(KeyTapInstance { inner, slot }),
            None => inner,
        })
    }

    fn is_test(&self) -> bool {
        base().dtls_provider.is_test()
    }
}

/// A leg's DTLS instance: aws-lc-rs's, copying the keying material into the leg's slot.
#[derive(Debug)]
pub(crate) struct KeyTapInstance {
    inner: Box<dyn DtlsInstance>,
    slot: Arc<KeySlot>,
}

impl KeyTapInstance {
    /// Once per handshake.
    #[cold]
    #[inline(never)]
    fn capture(&self, output: &DtlsOutput<'_>) {
        if let DtlsOutput::KeyingMaterial(material, profile) = output {
            self.slot.put(material, *profile, self.inner.is_active());
        }
    }
}

impl DtlsInstance for KeyTapInstance {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        // str0m polls DTLS on every `Rtc::poll_output`, several times per packet for a leg's
        // life: the capture is kept out of line so that this stays a call and a compare.
        let output = self.inner.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(..) = &output {
            self.capture(&output);
        }
        output
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_counts_captures_and_hands_each_out_once() {
        let slot = KeySlot::default();
        assert_eq!(slot.generation(), 0);
        assert!(slot.take().is_none());
        slot.put(&[1; 56], SrtpProfile::AEAD_AES_128_GCM, false);
        assert_eq!(slot.generation(), 1);
        let keys = slot.take().expect("captured");
        assert_eq!(
            (keys.generation, keys.profile, keys.dtls_client),
            (1, SrtpProfile::AEAD_AES_128_GCM, false)
        );
        assert_eq!(keys.material, vec![1; 56]);
        assert!(slot.take().is_none(), "taken once");
        // A rekey: a new generation, the new keys.
        slot.put(&[2; 56], SrtpProfile::AEAD_AES_128_GCM, false);
        assert_eq!(slot.generation(), 2);
        assert_eq!(slot.take().map(|k| k.material[0]), Some(2));
        assert!(
            !format!("{keys:?}").contains("material"),
            "no key bytes in Debug"
        );
    }

    #[test]
    fn only_an_armed_build_is_tapped() {
        let (_rtc, slot) = build(RtcConfig::new(), Instant::now());
        assert_eq!(Arc::strong_count(&slot), 2, "the leg's DTLS holds the slot");
        ARMED.with(|a| assert!(a.borrow().is_none(), "disarmed after the build"));
        let plain = RtcConfig::new()
            .set_crypto_provider(provider())
            .build(Instant::now());
        drop(plain);
        assert_eq!(Arc::strong_count(&slot), 2);
    }
}
